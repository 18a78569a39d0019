// SPDX-License-Identifier: Apache-2.0
/// \file
/// schatten-mlp-rules: the adaptive rules on a real (minibatch) training run, the measurement
/// behind DF-Muon's curvature fit and schatten_muon's `without_statistics` default (docs/optim.md,
/// DF-Muon and "Without statistics"; docs/benchmarks/cpu-mlp-rules.md).
///
/// The 64-128-10 MLP of docs/examples/train_mlp.cpp (digits_mlp.hpp) is trained from N seeded
/// initialisations for S batches of 128, the rule under test on its two weight matrices and AdamW
/// (lr 3e-3, no decay) on the biases. Two tables:
///  1. Muon (lr = the cap) and DA-, SC- and DF-Muon (η_max = the cap) at caps 0.02, 0.1 and 1.
///  2. schatten_muon at its defaults (lr 0.02) three ways: with each layer's activation Gram fed
///     on its criterion steps (accumulate_activations), and without Grams, keeping p (the
///     default) or assuming whitened inputs.
/// Printed per row: the full-data loss after training (smallest, median, largest over the seeds)
/// and the smallest training-set accuracy. A run whose step fails or whose loss is not finite
/// counts as diverged (loss inf). Serial and deterministic: the same build prints the same
/// tables.
///
///   schatten-mlp-rules [--data data/digits.csv] [--seeds N] [--steps S]
#include <schatten/optim/schatten_p.hpp>
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

/// Adds this batch's layer inputs to the activation Grams of the layers whose criterion runs at
/// the coming step (nothing for rules without statistics).
template <class Optimizer>
bool feed_grams(Optimizer& o, const Mlp& m, const float* x, index_t batch) {
  if (opt::activations_wanted(o, "fc1.weight") &&
      opt::accumulate_activations(o, "fc1.weight", schatten::MatrixRef<const float>(x, batch, kIn)) !=
          schatten::Status::ok)
    return false;
  if (opt::activations_wanted(o, "head.weight")) {
    std::vector<float> h(static_cast<std::size_t>(batch * kHidden));
    for (index_t s = 0; s < batch; ++s)
      hidden_layer(m, x + s * kIn, h.data() + s * kHidden);
    if (opt::accumulate_activations(o, "head.weight",
                                    schatten::MatrixRef<const float>(h.data(), batch, kHidden)) !=
        schatten::Status::ok)
      return false;
  }
  return true;
}

/// Trains from the initialisation of `seed` (as the example's: N(0, 2/fan_in) weights, zero
/// biases) with `rule` on the matrices for `steps` batches, feeding activation Grams when `grams`;
/// the full-data loss and accuracy.
template <class Rule>
Outcome train(const Rule& rule, const Data& d, std::uint64_t seed, int steps, bool grams) {
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
    const float* x = d.x.data() + start * kIn;
    if (grams && !feed_grams(o, m, x, batch)) return {kDiverged, 0.0};
    Mlp g;
    const double loss = loss_and_grad(m, x, d.y.data() + start, batch, &g);
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
void row(const char* name, const char* setting, const Rule& rule, const Data& d, int seeds, int steps,
         bool grams = false) {
  std::vector<double> loss;
  double worst_accuracy = 1.0;
  for (int s = 1; s <= seeds; ++s) {
    const Outcome r = train(rule, d, std::uint64_t(s), steps, grams);
    loss.push_back(r.loss);
    worst_accuracy = std::min(worst_accuracy, r.accuracy);
  }
  std::sort(loss.begin(), loss.end());
  std::printf("| %-13s | %-25s | %10.4g | %10.4g | %10.4g | %8.4f |\n", name, setting, loss.front(),
              loss[loss.size() / 2], loss.back(), worst_accuracy);
  std::fflush(stdout);
}

void header() {
  std::printf(
      "| rule          | setting                   |   smallest |     median |    largest | min acc. |\n");
  std::printf(
      "|---------------|---------------------------|-----------:|-----------:|-----------:|---------:|\n");
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
                   "schatten-mlp-rules: bad argument '%s'\n"
                   "usage: schatten-mlp-rules [--data data/digits.csv] [--seeds 1..10000] "
                   "[--steps 1..1000000]\n",
                   argv[i]);
      return 2;
    }
  }
  Data d;
  if (!load(path, d) || d.n <= 128) {
    std::fprintf(stderr, "schatten-mlp-rules: cannot read %s (run from the repository root)\n", path.c_str());
    return 1;
  }
  std::printf(
      "digits MLP 64-128-10, %lld samples, batches of 128, %d steps, seeds 1-%d; full-data loss "
      "after training\n\n",
      static_cast<long long>(d.n), steps, seeds);
  header();
  for (double cap : {0.02, 0.1, 1.0}) {
    char setting[32];
    std::snprintf(setting, sizeof setting, "cap %g", cap);
    opt::MuonOptions mo;
    mo.lr = opt::Schedule::constant(cap);
    row("muon", setting, opt::muon(mo), d, seeds, steps);
    opt::DaMuonOptions da;
    da.eta_max = cap;
    row("da_muon", setting, opt::da_muon(da), d, seeds, steps);
    opt::ScMuonOptions sc;
    sc.eta_max = cap;
    row("sc_muon", setting, opt::sc_muon(sc), d, seeds, steps);
    opt::DfMuonOptions df;
    df.eta_max = cap;
    row("df_muon", setting, opt::df_muon(df), d, seeds, steps);
  }
  std::printf("\n");
  header();
  opt::SchattenMuonOptions so;
  row("schatten_muon", "Grams fed", opt::schatten_muon(so), d, seeds, steps, true);
  row("schatten_muon", "no Grams, keep_p", opt::schatten_muon(so), d, seeds, steps);
  so.without_statistics = opt::SchattenPDirection::WithoutStatistics::assume_whitened;
  row("schatten_muon", "no Grams, assume_whitened", opt::schatten_muon(so), d, seeds, steps);
  return 0;
}
