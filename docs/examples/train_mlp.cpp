// SPDX-License-Identifier: Apache-2.0
/// \file
/// Example (compiled and run by the tests): embed schatten's optimizers in a small C++ training
/// loop. A 64-128-10 MLP on the handwritten digits of data/digits.csv is trained three times from
/// the same initialisation — once with AdamW on every parameter, once with Muon on the hidden
/// matrix and AdamW on the biases and the output head (the routing propose_labels() suggests),
/// and once more so with the momentum and AdamW's first moment stored in bf16 (`mu_storage`,
/// half their memory; docs/optim.md "State precision") — and the loss curves are printed.
/// Usage: example_train_mlp [path/to/digits.csv]
#include <schatten/schatten.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {
using schatten::index_t;
namespace opt = schatten::optim;

constexpr index_t kIn = 64, kHidden = 128, kOut = 10;

struct Data {
  std::vector<float> x;  // n × 64, pixels scaled to [0, 1]
  std::vector<int> y;
  index_t n = 0;
};

bool load(const std::string& path, Data& d) {
  std::ifstream f(path);
  for (std::string line; std::getline(f, line);) {
    if (line.empty() || line[0] == '#') continue;
    std::stringstream ss(line);
    std::string v;
    std::getline(ss, v, ',');
    d.y.push_back(std::stoi(v));
    for (index_t j = 0; j < kIn && std::getline(ss, v, ','); ++j)
      d.x.push_back(std::stof(v) / 16.0f);
    ++d.n;
  }
  return d.n > 0 && d.x.size() == static_cast<std::size_t>(d.n * kIn);
}

/// The model's parameters, in the order of `specs()`.
struct Mlp {
  std::vector<float> w1 = std::vector<float>(kHidden * kIn), b1 = std::vector<float>(kHidden),
                     w2 = std::vector<float>(kOut * kHidden), b2 = std::vector<float>(kOut);
  static std::vector<opt::ParamSpec> specs() {
    return {{"fc1.weight", {kHidden, kIn}},
            {"fc1.bias", {kHidden}},
            {"head.weight", {kOut, kHidden}},
            {"head.bias", {kOut}}};
  }
  std::vector<float*> pointers() { return {w1.data(), b1.data(), w2.data(), b2.data()}; }
};

/// Mean cross-entropy over rows [0, n) of a batch and its gradient (ReLU hidden layer).
double loss_and_grad(Mlp& m, const float* x, const int* y, index_t n, Mlp* g) {
  if (g) *g = Mlp{};
  std::vector<float> h(kHidden), p(kOut);
  double loss = 0.0;
  for (index_t s = 0; s < n; ++s) {
    const float* xs = x + s * kIn;
    for (index_t i = 0; i < kHidden; ++i) {
      float a = m.b1[i];
      for (index_t j = 0; j < kIn; ++j)
        a += m.w1[i * kIn + j] * xs[j];
      h[i] = std::max(a, 0.0f);
    }
    float top = -1e30f;
    for (index_t k = 0; k < kOut; ++k) {
      float z = m.b2[k];
      for (index_t i = 0; i < kHidden; ++i)
        z += m.w2[k * kHidden + i] * h[i];
      p[k] = z;
      top = std::max(top, z);
    }
    double sum = 0.0;
    for (index_t k = 0; k < kOut; ++k)
      sum += std::exp(double(p[k] - top));
    loss += std::log(sum) - double(p[y[s]] - top);
    if (!g) continue;
    for (index_t k = 0; k < kOut; ++k) {  // dz = softmax − onehot, averaged over the batch
      const float dz = float((std::exp(double(p[k] - top)) / sum - (k == y[s] ? 1.0 : 0.0)) / double(n));
      g->b2[k] += dz;
      for (index_t i = 0; i < kHidden; ++i)
        g->w2[k * kHidden + i] += dz * h[i];
      p[k] = dz;
    }
    for (index_t i = 0; i < kHidden; ++i) {
      if (h[i] <= 0.0f) continue;
      float dh = 0.0f;
      for (index_t k = 0; k < kOut; ++k)
        dh += p[k] * m.w2[k * kHidden + i];
      g->b1[i] += dh;
      for (index_t j = 0; j < kIn; ++j)
        g->w1[i * kIn + j] += dh * xs[j];
    }
  }
  return loss / double(n);
}

double accuracy(Mlp& m, const Data& d) {
  index_t right = 0;
  std::vector<float> h(kHidden);
  for (index_t s = 0; s < d.n; ++s) {
    const float* xs = d.x.data() + s * kIn;
    for (index_t i = 0; i < kHidden; ++i) {
      float a = m.b1[i];
      for (index_t j = 0; j < kIn; ++j)
        a += m.w1[i * kIn + j] * xs[j];
      h[i] = std::max(a, 0.0f);
    }
    int best = 0;
    float bz = -1e30f;
    for (index_t k = 0; k < kOut; ++k) {
      float z = m.b2[k];
      for (index_t i = 0; i < kHidden; ++i)
        z += m.w2[k * kHidden + i] * h[i];
      if (z > bz) bz = z, best = int(k);
    }
    right += best == d.y[s];
  }
  return double(right) / double(d.n);
}

/// Trains a copy of `init` with `o` for `steps` mini-batches of 128; returns the loss curve.
template <class Opt>
std::vector<double> train(Opt& o, Mlp m, const Data& d, int steps, Mlp& out) {
  std::vector<double> curve;
  const index_t batch = 128;
  for (int t = 0; t < steps; ++t) {
    const index_t start = (t * batch) % (d.n - batch);
    Mlp g;
    curve.push_back(loss_and_grad(m, d.x.data() + start * kIn, d.y.data() + start, batch, &g));
    const opt::StepReport r = o.step(m.pointers(), g.pointers());
    if (!r) {
      std::fprintf(stderr, "step %d failed: %s\n", t, r.message);
      return {};
    }
  }
  out = m;
  return curve;
}
}  // namespace

int main(int argc, char** argv) {
  schatten::Runtime runtime(argc, argv);
  const std::string path = argc > 1 ? argv[1] : "data/digits.csv";
  Data d;
  if (!load(path, d)) {
    std::fprintf(stderr, "cannot read %s (run from the repository root)\n", path.c_str());
    return 1;
  }
  // The same initialisation for both runs: N(0, 2/fan_in) weights, zero biases, from a seed.
  Mlp init;
  schatten::Rng rng(2026);
  for (float& w : init.w1)
    w = float(rng.normal() * std::sqrt(2.0 / kIn));
  for (float& w : init.w2)
    w = float(rng.normal() * std::sqrt(2.0 / kHidden));

  const auto specs = Mlp::specs();
  opt::AdamWOptions aw;
  aw.lr = opt::Schedule::constant(3e-3);
  aw.weight_decay = 0.0;
  auto adamw_only = opt::partition(specs, std::vector<std::string>(specs.size(), "adamw"),
                                   opt::route("adamw", opt::adamw(aw)));
  opt::MuonOptions mo;  // Keller Jordan's defaults (lr 0.02, NS5)
  auto muon_mix = opt::partition(specs, opt::propose_labels(specs), opt::route("muon", opt::muon(mo)),
                                 opt::route("adamw", opt::adamw(aw)));
  // The same optimizers with 16-bit momentum storage (arithmetic stays float).
  opt::MuonOptions mo16 = mo;
  mo16.mu_storage = schatten::Precision::bf16;
  opt::AdamWOptions aw16 = aw;
  aw16.mu_storage = schatten::Precision::bf16;
  auto muon_bf16 = opt::partition(specs, opt::propose_labels(specs), opt::route("muon", opt::muon(mo16)),
                                  opt::route("adamw", opt::adamw(aw16)));
  if (!adamw_only.init() || !muon_mix.init() || !muon_bf16.init()) return 1;
  std::printf("routing with propose_labels():");
  for (std::size_t i = 0; i < specs.size(); ++i)
    std::printf(" %s->%s", specs[i].name.c_str(), muon_mix.labels()[i].c_str());
  std::printf("\n");

  const int steps = 150;
  Mlp final_a, final_m, final_b;
  const std::vector<double> a = train(adamw_only, init, d, steps, final_a);
  const std::vector<double> m = train(muon_mix, init, d, steps, final_m);
  const std::vector<double> b = train(muon_bf16, init, d, steps, final_b);
  if (a.empty() || m.empty() || b.empty()) return 1;
  std::printf("%6s %12s %12s %12s\n", "step", "AdamW", "Muon+AdamW", "bf16 state");
  for (int t = 0; t < steps; t += 10)
    std::printf("%6d %12.4f %12.4f %12.4f\n", t, a[t], m[t], b[t]);
  std::printf("%6d %12.4f %12.4f %12.4f\n", steps - 1, a.back(), m.back(), b.back());
  const double acc_a = accuracy(final_a, d), acc_m = accuracy(final_m, d), acc_b = accuracy(final_b, d);
  std::printf("training-set accuracy after %d steps: AdamW %.3f, Muon+AdamW %.3f, with bf16 state %.3f\n",
              steps, acc_a, acc_m, acc_b);
  // All must have learned (chance is 0.1, the initial loss about ln 10 ≈ 2.3).
  const auto learned = [](double acc, const std::vector<double>& curve) {
    return acc > 0.8 && curve.back() < 0.5 * curve.front();
  };
  return learned(acc_a, a) && learned(acc_m, m) && learned(acc_b, b) ? 0 : 1;
}
