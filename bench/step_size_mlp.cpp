// SPDX-License-Identifier: Apache-2.0
/// \file
/// schatten-step-size-mlp: the step-size rules on a real (minibatch) training run, the measurement
/// behind DF-Muon's curvature fit (docs/optim.md, DF-Muon; docs/benchmarks/cpu-step-size-mlp.md).
/// The 64-128-10 MLP of docs/examples/train_mlp.cpp (digits_mlp.hpp) is trained from N seeded
/// initialisations with each of Muon (lr = the cap), DA-, SC- and DF-Muon (η_max = the cap) on its
/// two weight matrices and AdamW (lr 3e-3, no decay) on the biases, for S batches of 128, at caps
/// 0.02, 0.1 and 1. Printed per rule and cap: the full-data loss after training (smallest,
/// median, largest over the seeds) and the smallest accuracy. A run whose step fails or whose loss
/// is not finite counts as diverged (loss inf). Serial and deterministic: the same build prints the
/// same table.
///
///   schatten-step-size-mlp [--data data/digits.csv] [--seeds N] [--steps S]
#include <schatten/schatten.hpp>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include "../docs/examples/digits_mlp.hpp"

namespace {
using namespace digits;

struct Outcome {
  double loss, accuracy;
};

/// Trains from the initialisation of `seed` (as the example's: N(0, 2/fan_in) weights, zero
/// biases) with `rule` on the matrices for `steps` batches; the full-data loss and accuracy.
template <class Rule>
Outcome train(const Rule& rule, const Data& d, std::uint64_t seed, int steps) {
  Mlp m;
  schatten::Rng rng(seed);
  for (float& w : m.w1)
    w = float(rng.normal() * std::sqrt(2.0 / kIn));
  for (float& w : m.w2)
    w = float(rng.normal() * std::sqrt(2.0 / kHidden));
  opt::AdamWOptions aw;
  aw.lr = opt::Schedule::constant(3e-3);
  aw.weight_decay = 0.0;
  auto o = opt::partition(Mlp::specs(), {"matrix", "adamw", "matrix", "adamw"}, opt::route("matrix", rule),
                          opt::route("adamw", opt::adamw(aw)));
  constexpr double kDiverged = std::numeric_limits<double>::infinity();
  if (!o.init()) return {kDiverged, 0.0};
  const index_t batch = 128;
  for (int t = 0; t < steps; ++t) {
    const index_t start = (index_t(t) * batch) % (d.n - batch);
    Mlp g;
    const double loss = loss_and_grad(m, d.x.data() + start * kIn, d.y.data() + start, batch, &g);
    if (!std::isfinite(loss) || !o.step(m.pointers(), g.pointers())) return {kDiverged, 0.0};
  }
  const double loss = loss_and_grad(m, d.x.data(), d.y.data(), d.n, nullptr);
  return {std::isfinite(loss) ? loss : kDiverged, accuracy(m, d)};
}

/// A whole decimal number in [lo, hi], or -1.
long parse_count(const char* s, long lo, long hi) {
  errno = 0;
  char* end = nullptr;
  const long v = std::strtol(s, &end, 10);
  return errno == 0 && end != s && *end == '\0' && v >= lo && v <= hi ? v : -1;
}

template <class Rule>
void row(const char* name, double cap, const Rule& rule, const Data& d, int seeds, int steps) {
  std::vector<double> loss;
  double worst_accuracy = 1.0;
  for (int s = 1; s <= seeds; ++s) {
    const Outcome r = train(rule, d, std::uint64_t(s), steps);
    loss.push_back(r.loss);
    worst_accuracy = std::min(worst_accuracy, r.accuracy);
  }
  std::sort(loss.begin(), loss.end());
  std::printf("| %-7s | %4g | %10.4g | %10.4g | %10.4g | %8.4f |\n", name, cap, loss.front(),
              loss[loss.size() / 2], loss.back(), worst_accuracy);
  std::fflush(stdout);
}
}  // namespace

int main(int argc, char** argv) {
  schatten::Runtime runtime(argc, argv);
  std::string path = "data/digits.csv";
  int seeds = 10, steps = 300;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    long v = 0;
    if (a == "--data" && has_value) {
      path = argv[++i];
    } else if (a == "--seeds" && has_value && (v = parse_count(argv[++i], 1, 10000)) > 0) {
      seeds = int(v);
    } else if (a == "--steps" && has_value && (v = parse_count(argv[++i], 1, 1000000)) > 0) {
      steps = int(v);
    } else {
      std::fprintf(stderr,
                   "schatten-step-size-mlp: bad argument '%s'\n"
                   "usage: schatten-step-size-mlp [--data data/digits.csv] [--seeds 1..10000] "
                   "[--steps 1..1000000]\n",
                   argv[i]);
      return 2;
    }
  }
  Data d;
  if (!load(path, d) || d.n <= 128) {
    std::fprintf(stderr, "schatten-step-size-mlp: cannot read %s (run from the repository root)\n",
                 path.c_str());
    return 1;
  }
  std::printf(
      "digits MLP 64-128-10, %lld samples, batches of 128, %d steps, seeds 1-%d; full-data loss "
      "after training\n\n",
      static_cast<long long>(d.n), steps, seeds);
  std::printf("| rule    |  cap |   smallest |     median |    largest | min acc. |\n");
  std::printf("|---------|-----:|-----------:|-----------:|-----------:|---------:|\n");
  for (double cap : {0.02, 0.1, 1.0}) {
    opt::MuonOptions mo;
    mo.lr = opt::Schedule::constant(cap);
    row("muon", cap, opt::muon(mo), d, seeds, steps);
    opt::DaMuonOptions da;
    da.eta_max = cap;
    row("da_muon", cap, opt::da_muon(da), d, seeds, steps);
    opt::ScMuonOptions sc;
    sc.eta_max = cap;
    row("sc_muon", cap, opt::sc_muon(sc), d, seeds, steps);
    opt::DfMuonOptions df;
    df.eta_max = cap;
    row("df_muon", cap, opt::df_muon(df), d, seeds, steps);
  }
  return 0;
}
