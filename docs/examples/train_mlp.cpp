// SPDX-License-Identifier: Apache-2.0
/// \file
/// Example (compiled and run by the tests): embed schatten's optimizers in a small C++ training
/// loop. A 64-128-10 MLP on the handwritten digits of data/digits.csv is trained three times from
/// the same initialisation — once with AdamW on every parameter, once with Muon on the hidden
/// matrix and AdamW on the biases and the output head (the routing propose_labels() suggests),
/// and once more so with the momentum and AdamW's first moment stored in bf16 (`mu_storage`,
/// half their memory; docs/optim.md "State precision") — and the loss curves are printed.
/// The model, its data and its gradient are in digits_mlp.hpp beside this file.
/// Usage: example_train_mlp [path/to/digits.csv]
#include <schatten/schatten.hpp>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "digits_mlp.hpp"

namespace {
using namespace digits;

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
