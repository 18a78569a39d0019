// SPDX-License-Identifier: Apache-2.0
/// \file
/// Example (compiled and run by the tests): record a training run for offline replay. A
/// 64-256-256-10 ReLU MLP on the handwritten digits of data/digits.csv (two hidden layers: the
/// second hidden matrix, 256 × 256, is square, so that a Muon step costs far more than reading
/// its gradient; train_mlp.cpp's 64-128-10 MLP has only 128 × 64) is trained with Muon (fc1,
/// fc2) + AdamW (biases, head), and every step's gradients, the initial parameters, the
/// input-activation Gram of fc1 and the loss are appended to an HDF5 recording
/// (docs/replay-format.md) with schatten::io::Recorder. data/replay/digits_mlp.h5 is this
/// program's output (data/make_digits_recording.sh):
///   example_record_digits data/digits.csv data/replay/digits_mlp.h5 16
/// Usage: example_record_digits DIGITS_CSV OUT.h5 [STEPS]
#include <schatten/io/recording.hpp>
#include <schatten/schatten.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "digits_mlp.hpp"

namespace {
using schatten::index_t;
namespace opt = schatten::optim;

constexpr index_t kIn = 64, kHidden = 256, kOut = 10;

// The digits and their reader are train_mlp.cpp's (digits_mlp.hpp); the model here is larger.
using digits::Data;
using digits::dense;
using digits::dense_relu;
using digits::load;
using digits::softmax_cross_entropy;

/// The model's parameters, in the order of `specs()`.
struct Mlp {
  std::vector<float> w1 = std::vector<float>(kHidden * kIn), b1 = std::vector<float>(kHidden),
                     w2 = std::vector<float>(kHidden * kHidden), b2 = std::vector<float>(kHidden),
                     w3 = std::vector<float>(kOut * kHidden), b3 = std::vector<float>(kOut);
  static std::vector<opt::ParamSpec> specs() {
    return {{"fc1.weight", {kHidden, kIn}},     {"fc1.bias", {kHidden}},
            {"fc2.weight", {kHidden, kHidden}}, {"fc2.bias", {kHidden}},
            {"head.weight", {kOut, kHidden}},   {"head.bias", {kOut}}};
  }
  std::vector<float*> pointers() {
    return {w1.data(), b1.data(), w2.data(), b2.data(), w3.data(), b3.data()};
  }
};

/// Given dout (n) at the ReLU output `out` of a layer W (n × m) with input `in`: accumulates the
/// gradients of W and b and, when `din` is non-null, writes the gradient of the input (m).
void dense_relu_back(const std::vector<float>& w, const float* in, const float* out, float* dout, index_t n,
                     index_t m, float* gw, float* gb, float* din) {
  if (din) std::fill(din, din + m, 0.0f);
  for (index_t i = 0; i < n; ++i) {
    if (out[i] <= 0.0f) continue;
    const float d = dout[i];
    gb[i] += d;
    for (index_t j = 0; j < m; ++j) {
      gw[i * m + j] += d * in[j];
      if (din) din[j] += d * w[i * m + j];
    }
  }
}

/// Mean cross-entropy over rows [0, n) of a batch and its gradient (ReLU hidden layers).
double loss_and_grad(Mlp& m, const float* x, const int* y, index_t n, Mlp* g) {
  if (g) *g = Mlp{};
  std::vector<float> h1(kHidden), h2(kHidden), d1(kHidden), d2(kHidden), p(kOut);
  double loss = 0.0;
  for (index_t s = 0; s < n; ++s) {
    const float* xs = x + s * kIn;
    dense_relu(m.w1, m.b1, xs, kHidden, kIn, h1.data());
    dense_relu(m.w2, m.b2, h1.data(), kHidden, kHidden, h2.data());
    dense(m.w3, m.b3, h2.data(), kOut, kHidden, p.data());
    loss += softmax_cross_entropy(p.data(), y[s], n, g ? p.data() : nullptr);  // p ← dz with g
    if (!g) continue;
    std::fill(d2.begin(), d2.end(), 0.0f);
    for (index_t k = 0; k < kOut; ++k) {
      const float dz = p[k];
      g->b3[k] += dz;
      for (index_t i = 0; i < kHidden; ++i) {
        g->w3[k * kHidden + i] += dz * h2[i];
        d2[i] += dz * m.w3[k * kHidden + i];
      }
    }
    dense_relu_back(m.w2, h1.data(), h2.data(), d2.data(), kHidden, kHidden, g->w2.data(), g->b2.data(),
                    d1.data());
    dense_relu_back(m.w1, xs, h1.data(), d1.data(), kHidden, kIn, g->w1.data(), g->b1.data(), nullptr);
  }
  return loss / double(n);
}

/// Σ_b x_b x_bᵀ / B over a batch of inputs (64 × 64): the Gram of fc1's input activations.
void input_gram(const float* x, index_t n, std::vector<float>& g) {
  g.assign(kIn * kIn, 0.0f);
  for (index_t s = 0; s < n; ++s)
    for (index_t i = 0; i < kIn; ++i)
      for (index_t j = 0; j < kIn; ++j)
        g[i * kIn + j] += x[s * kIn + i] * x[s * kIn + j];
  for (float& v : g)
    v /= float(n);
}
}  // namespace

int main(int argc, char** argv) {
  schatten::Runtime runtime(argc, argv);
  if (argc < 3) {
    std::fprintf(stderr, "usage: example_record_digits DIGITS_CSV OUT.h5 [STEPS]\n");
    return 2;
  }
  const int steps = argc > 3 ? std::atoi(argv[3]) : 16;
  Data d;
  if (!load(argv[1], d) || steps < 1) {
    std::fprintf(stderr, "cannot read %s (or bad STEPS)\n", argv[1]);
    return 1;
  }
  Mlp m;  // He initialisation as in train_mlp.cpp, zero biases
  schatten::Rng rng(2026);
  for (float& w : m.w1)
    w = float(rng.normal() * std::sqrt(2.0 / kIn));
  for (float& w : m.w2)
    w = float(rng.normal() * std::sqrt(2.0 / kHidden));
  for (float& w : m.w3)
    w = float(rng.normal() * std::sqrt(2.0 / kHidden));

  const auto specs = Mlp::specs();
  opt::AdamWOptions aw;
  aw.lr = opt::Schedule::constant(3e-3);
  aw.weight_decay = 0.0;
  auto o = opt::partition(specs, opt::propose_labels(specs), opt::route("muon", opt::muon()),
                          opt::route("adamw", opt::adamw(aw)));
  if (!o.init()) return 1;

  namespace io = schatten::io;
  io::RecordingInfo info;
  info.model =
      "64-256-256-10 ReLU MLP on data/digits.csv, batches of 128 in file order, init seed 2026; trained "
      "with muon (fc1.weight, fc2.weight) + adamw lr 3e-3 wd 0 (the rest)";
  info.producer = "docs/examples/record_digits.cpp, schatten " SCHATTEN_VERSION_STRING;
  for (const auto& s : specs) {
    io::RecordedParam p;
    p.name = s.name;
    p.shape = s.shape;
    p.has_initial = true;
    p.has_act_gram = s.name == "fc1.weight";  // fc2's and head's (256 × 256) would add 80 %
    info.params.push_back(p);
  }
  io::RecorderOptions ro;
  // No gzip: it would shrink the file by a third (border pixels are always 0: fc1's gradient and
  // Gram have zero columns) but inflating costs more than the optimizer math of this small model
  // (docs/benchmarks/cpu-replay.md). Default chunking: several steps per chunk for the small
  // tensors, so that a replay reads many steps per HDF5 call.
  ro.gzip_level = 0;
  ro.overwrite = true;
  io::Recorder rec;
  std::string err;
  if (rec.create(argv[2], info, ro, &err) != schatten::Status::ok) {
    std::fprintf(stderr, "%s\n", err.c_str());
    return 1;
  }
  const Mlp init = m;
  const index_t batch = 128;
  std::vector<float> gram;
  double first = 0, last = 0;
  for (int t = 0; t < steps; ++t) {
    const index_t start = (t * batch) % (d.n - batch);
    const float* x = d.x.data() + start * kIn;
    Mlp g;
    const double loss = loss_and_grad(m, x, d.y.data() + start, batch, &g);
    input_gram(x, batch, gram);
    io::StepData sd;
    sd.loss = loss;
    for (float* q : g.pointers())
      sd.grads.push_back(q);
    sd.act_grams = {gram.data(), nullptr, nullptr, nullptr, nullptr, nullptr};
    sd.initial = {init.w1.data(), init.b1.data(), init.w2.data(),
                  init.b2.data(), init.w3.data(), init.b3.data()};
    if (rec.append(sd, &err) != schatten::Status::ok) {
      std::fprintf(stderr, "%s\n", err.c_str());
      return 1;
    }
    // The optimizer consumes its gradient buffers, so it steps after the recorder has written.
    if (!o.step(m.pointers(), g.pointers())) return 1;
    if (t == 0) first = loss;
    last = loss;
  }
  if (rec.close(&err) != schatten::Status::ok) {
    std::fprintf(stderr, "%s\n", err.c_str());
    return 1;
  }
  std::printf("recorded %d steps to %s (loss %.4f -> %.4f)\n", steps, argv[2], first, last);
  return last < 0.5 * first ? 0 : 1;
}
