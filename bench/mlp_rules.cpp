// SPDX-License-Identifier: Apache-2.0
/// \file
/// schatten-mlp-rules: the adaptive rules on real (minibatch) training runs, the measurement
/// behind DF-Muon's curvature fit and schatten_muon's `without_statistics` default (docs/optim.md,
/// DF-Muon and "Without statistics"; docs/benchmarks/cpu-mlp-rules.md).
///
/// Two models (`--model`):
///  - `digits` (the default): the 64-128-10 MLP of docs/examples/train_mlp.cpp (digits_mlp.hpp),
///    batches of 128 taken in order, 300 steps; the rule under test on its two weight matrices,
///    AdamW (lr 3e-3, no decay) on the biases. Reported: the full-data loss after training and
///    the smallest training-set accuracy.
///  - `charlm`: the character-level MLP language model of bench/char_mlp.hpp (two hidden matrices,
///    512 × 192 and 512 × 512), 256 windows drawn at random per step, 1000 steps; the rule on the
///    two hidden matrices, AdamW (lr 3e-3, no decay) on the embedding, the output layer and the
///    biases. Reported: the training text's loss and the held-out file's, in nats per character.
///
/// Two tables for each:
///  1. Muon (lr = the cap) and DA-, SC- and DF-Muon (η_max = the cap) at caps 0.02, 0.1 and 1
///     (charlm: also AdamW on every parameter, lr 3e-3, as the reference without a matrix rule,
///     and Muon with lr 0.02 decaying linearly to 0 over the run, the scheduled reference).
///  2. schatten_muon at its defaults (lr 0.02) three ways: with each layer's activation Gram fed
///     on its criterion steps (accumulate_activations), and without Grams, keeping p (the
///     default) or assuming whitened inputs; and with p fixed at the SGD end (1.02). Then the
///     range of p the criterion chose per matrix in the runs with Grams.
///  3. (only when asked) schatten_muon at a fixed p = 10, and each matrix in turn at fixed p in
///     {1.02, 1.5, 2, 3, 5, 7} with the others at 10: the per-layer optimum to set the
///     criterion's choices against. Without a moment (the preset's default) every p steps the
///     same length (SchattenPDirection::pin_factor), so the rows compare directions alone.
///  4. (only when asked) step length alone: each matrix in turn at p = 10's direction with the
///     step each p of table 3 (and 10) took under algorithms.md §4a.4's literal pin,
///     √min(r, c)·κ^{1/p} (what the rule did without a moment until 2026-12-06, and does with
///     one): the learning rate scaled by κ^{1/p}, the others at the preset's step. A
///     learning-rate sweep of one matrix at p = 10: the step-length half of what table 3 mixed
///     under that pin (docs/benchmarks/cpu-mlp-rules.md, "Direction or step length?"; its rows
///     had the other matrix at that pin's p = 10 step, κ^{1/10}·√min(r, c)).
/// `--table 1`, `2`, `3` or `4` prints that one alone. For the digits, `--whiten` ZCA-whitens the
/// inputs first, which gives fc1 inputs of a far higher stable rank (printed) and changes what
/// the hidden layer feeds the output layer, and `--full-grams` feeds the criterion the Grams of
/// all 1797 inputs (and their hidden activations) instead of the batch's.
/// Printed per row: the loss (smallest, median, largest over the seeds), the worst of the
/// second figure, and each matrix's p (schatten_muon) or last η (DF-Muon) at the end. A run
/// whose step fails or whose loss is not finite counts as diverged (loss inf). `--per-seed` adds
/// a line per row with each seed's two figures, for paired ratios between rows; `--weight-decay
/// λ` gives the matrix rules of table 1 or 2 decoupled weight decay λ. Serial and
/// deterministic: the same build on the same machine prints the same tables (another CPU's BLAS
/// kernels round differently, and the runs at the larger caps amplify that).
///
///   schatten-mlp-rules [--model digits|charlm]
///                      [--data data/digits.csv [--whiten] [--full-grams] | --text DIR]
///                      [--seeds N] [--steps S] [--table 1|2|3|4] [--per-seed]
///                      [--weight-decay L (with --table 1 or 2)]
#include <schatten/optim/schatten_p.hpp>
#include <schatten/schatten.hpp>

#include <Eigen/Dense>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../docs/examples/digits_mlp.hpp"
#include "char_mlp.hpp"

namespace {
using schatten::index_t;
namespace opt = schatten::optim;

constexpr double kDiverged = std::numeric_limits<double>::infinity();

/// `--per-seed`: each table row is followed by a line with every seed's loss and second figure,
/// for paired comparisons between rows (the same seed draws the same initialisation and batches
/// in every row).
bool per_seed = false;

/// `--weight-decay λ` (tables 1 and 2): the decoupled weight decay of the matrix rules under
/// test, Muon's and schatten_muon's W ← (1 − lr·λ)W − lr·D and DA/SC/DF-Muon's, taken by their
/// own step η_t (step_size.hpp). The AdamW side (biases, embedding, output layer) and the AdamW
/// reference keep none.
double matrix_decay = 0.0;

/// The state of training after the last step: the task's loss and its second figure, and the
/// rule's own step parameter per matrix where it has one: schatten_muon's p, DF-Muon's η of the
/// last step (empty for the other rules).
struct Outcome {
  double loss = kDiverged, other = 0.0;
  const char* end_name = "";
  std::vector<double> end;
};

/// Adds X (rows × cols) to `param`'s activation Gram when its criterion runs at the coming step.
template <class Optimizer>
bool feed_gram(Optimizer& o, const char* param, const float* x, index_t rows, index_t cols) {
  return !opt::activations_wanted(o, param) ||
         opt::accumulate_activations(o, param, schatten::MatrixRef<const float>(x, rows, cols)) ==
             schatten::Status::ok;
}

/// The stable rank ‖A‖²_F/‖A‖²_op of rows × cols inputs A (row-major), from their Gram AᵀA:
/// what schatten_muon's criterion weighs against the gradient's nuclear rank
/// (docs/surrogate/schatten_p.md).
double stable_rank(const float* a, index_t rows, index_t cols) {
  const Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> m(a, rows,
                                                                                                  cols);
  const Eigen::MatrixXd gram = m.cast<double>().transpose() * m.cast<double>();
  const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eig(gram, Eigen::EigenvaluesOnly);
  return eig.eigenvalues().maxCoeff() > 0.0 ? gram.trace() / eig.eigenvalues().maxCoeff() : 0.0;
}

/// ZCA-whitens the digits' inputs in place: x ← V·diag((λ + ε)^(−½))·Vᵀ·(x − μ), with μ and
/// Σ = V·diag(λ)·Vᵀ the mean and covariance of the whole set, so that the inputs' covariance
/// becomes about the identity: the "whitened activations" for which the criterion prefers the
/// SGD end. ε = 1e-2·tr Σ/64 [P] keeps the directions of tiny variance (border pixels that are
/// almost always 0; three are always 0 and stay 0) from being blown up to unit variance: with
/// it the covariance's eigenvalues are λ/(λ + ε), about 1 for the strong directions.
void whiten(digits::Data& d) {
  const index_t n = d.n, m = digits::kIn;
  Eigen::Map<Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> x(d.x.data(), n, m);
  const Eigen::RowVectorXd mu = x.cast<double>().colwise().mean();
  const Eigen::MatrixXd centred = x.cast<double>().rowwise() - mu;
  const Eigen::MatrixXd cov = centred.transpose() * centred / double(n);
  const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eig(cov);
  const double eps = 1e-2 * cov.trace() / double(m);
  const Eigen::VectorXd scale = (eig.eigenvalues().array() + eps).rsqrt();
  const Eigen::MatrixXd zca = eig.eigenvectors() * scale.asDiagonal() * eig.eigenvectors().transpose();
  x = (centred * zca).cast<float>();
}

/// The digits MLP (docs/examples/digits_mlp.hpp).
struct Digits {
  using Model = digits::Mlp;
  static constexpr const char* kName = "digits MLP 64-128-10";
  static constexpr const char* kLoss = "full-data loss";
  static constexpr const char* kOther = "min acc.";  // the smallest training-set accuracy
  static constexpr bool kOtherHigherIsBetter = true;
  static constexpr int kSteps = 300;
  static constexpr index_t kBatch = 128;
  const digits::Data& d;
  bool full_grams = false;  ///< the Grams of the whole set's inputs instead of the batch's

  static std::vector<std::string> groups() { return {"matrix", "adamw", "matrix", "adamw"}; }
  /// As the example's: N(0, 2/fan_in) weights, zero biases.
  static void init(Model& m, schatten::Rng& rng) {
    for (float& w : m.w1)
      w = float(rng.normal() * std::sqrt(2.0 / digits::kIn));
    for (float& w : m.w2)
      w = float(rng.normal() * std::sqrt(2.0 / digits::kHidden));
  }
  /// Batch t (in order, wrapping): its loss and gradient, after feeding the Grams when `grams`;
  /// NaN when a Gram is refused.
  template <class Optimizer>
  double batch(Optimizer& o, Model& m, int t, schatten::Rng&, bool grams, Model& g) const {
    const index_t start = (index_t(t) * kBatch) % (d.n - kBatch);
    const float* x = d.x.data() + start * digits::kIn;
    if (grams) {
      const index_t n = full_grams ? d.n : kBatch;
      const float* xs = full_grams ? d.x.data() : x;
      std::vector<float> h(static_cast<std::size_t>(n * digits::kHidden));
      for (index_t s = 0; s < n; ++s)
        digits::hidden_layer(m, xs + s * digits::kIn, h.data() + s * digits::kHidden);
      if (!feed_gram(o, "fc1.weight", xs, n, digits::kIn) ||
          !feed_gram(o, "head.weight", h.data(), n, digits::kHidden))
        return std::numeric_limits<double>::quiet_NaN();
    }
    return digits::loss_and_grad(m, x, d.y.data() + start, kBatch, &g);
  }
  Outcome evaluate(Model& m) const {
    Outcome r;
    r.loss = digits::loss_and_grad(m, d.x.data(), d.y.data(), d.n, nullptr);
    r.other = digits::accuracy(m, d);
    return r;
  }
};

/// The character-level MLP language model (bench/char_mlp.hpp).
struct CharLm {
  using Model = charlm::Model;
  static constexpr const char* kName = "character-level MLP LM 8x24-512-512-128";
  static constexpr const char* kLoss = "training-text loss";
  static constexpr const char* kOther = "held-out";  // the largest held-out loss
  static constexpr bool kOtherHigherIsBetter = false;
  static constexpr int kSteps = 1000;
  static constexpr index_t kBatch = 256;
  const charlm::Text& text;

  static std::vector<std::string> groups() { return Model::groups(); }
  static void init(Model& m, schatten::Rng& rng) { m.init(rng); }
  /// kBatch windows drawn uniformly from the training text; the Grams (the concatenated
  /// embeddings into fc1, the first hidden layer into fc2) are fed from the forward pass.
  template <class Optimizer>
  double batch(Optimizer& o, Model& m, int, schatten::Rng& rng, bool grams, Model& g) const {
    const auto windows = static_cast<std::uint64_t>(text.train.size() - charlm::kContext);
    std::vector<index_t> starts(kBatch);
    for (index_t& s : starts)
      s = index_t(rng.next() % windows);
    charlm::Activations a;
    const double loss = charlm::loss_and_grad(m, text.train, starts, a, &g);
    if (grams && (!feed_gram(o, "fc1.weight", a.x.data(), kBatch, charlm::kIn) ||
                  !feed_gram(o, "fc2.weight", a.h1.data(), kBatch, charlm::kHidden)))
      return std::numeric_limits<double>::quiet_NaN();
    return loss;
  }
  Outcome evaluate(Model& m) const {
    Outcome r;
    r.loss = charlm::loss(m, text.train);
    r.other = charlm::loss(m, text.held_out);
    return r;
  }
};

/// One matrix taken out of the rule under test and given schatten_muon with a fixed p instead
/// (tables 3 and 4): its index in the model's parameters, or −1 for none, and its learning rate
/// and auxiliary Adam's lr times `scale`. κ = η_a ρ_a √max(r, c)/η keeps its value, so the step
/// is `scale` times the default's, in the same direction (include/schatten/optim/schatten_p.hpp).
struct Sweep {
  int matrix = -1;
  double p = 10.0;
  double scale = 1.0;
};

/// Trains `task`'s model from the initialisation of `seed` with `rule` on its matrices (every
/// parameter when `everything`) and AdamW (lr 3e-3, no decay) on the rest, for `steps` batches,
/// feeding activation Grams when `grams`; `sweep.matrix`, when set, gets schatten_muon at the
/// fixed `sweep.p` (lr 0.02·`sweep.scale`) instead of `rule`.
template <class Task, class Rule>
Outcome train(const Task& task, const Rule& rule, std::uint64_t seed, int steps, bool grams, bool everything,
              const Sweep& sweep) {
  typename Task::Model m;
  schatten::Rng rng(seed);
  Task::init(m, rng);
  opt::AdamWOptions aw;
  aw.lr = opt::Schedule::constant(3e-3);
  aw.weight_decay = 0.0;
  std::vector<std::string> groups = Task::groups();
  if (everything) std::fill(groups.begin(), groups.end(), "matrix");
  opt::SchattenMuonOptions fixed;
  fixed.adaptive = false;
  fixed.p = sweep.p;
  fixed.lr = opt::Schedule::constant(fixed.lr.peak * sweep.scale);
  fixed.adam_lr *= sweep.scale;
  if (sweep.matrix >= 0) groups[static_cast<std::size_t>(sweep.matrix)] = "swept";
  auto o =
      opt::partition(Task::Model::specs(), groups, opt::route("matrix", rule),
                     opt::route("adamw", opt::adamw(aw)), opt::route("swept", opt::schatten_muon(fixed)));
  if (!o.init()) return {};
  for (int t = 0; t < steps; ++t) {
    typename Task::Model g;
    const double loss = task.batch(o, m, t, rng, grams, g);
    if (!std::isfinite(loss) || !o.step(m.pointers(), g.pointers())) return {};
  }
  Outcome r = task.evaluate(m);
  if (!std::isfinite(r.loss)) return {};
  // schatten_muon's p per matrix, else DF-Muon's η of the last step (docs/optim.md).
  auto end = opt::schatten_p_values(o);
  r.end_name = "p";
  if (end.empty()) {
    end = opt::state_scalars(o, "eta");
    r.end_name = "η";
  }
  for (const auto& named : end)
    r.end.push_back(named.second);
  return r;
}

/// A whole decimal number in [lo, hi], or -1.
long parse_count(const char* s, long lo, long hi) {
  errno = 0;
  char* end = nullptr;
  const long v = std::strtol(s, &end, 10);
  return errno == 0 && end != s && *end == '\0' && v >= lo && v <= hi ? v : -1;
}

/// One table row over seeds 1…seeds: the loss's smallest, median and largest, the worst of the
/// second figure and, when the rule has one, each matrix's p or η at the end (smallest–largest).
template <class Task, class Rule>
void row(const Task& task, const char* name, const char* setting, const Rule& rule, int seeds, int steps,
         bool grams = false, bool everything = false, const Sweep& sweep = {}) {
  std::vector<double> loss;
  std::string seed_line = "  per seed (loss, " + std::string(Task::kOther) + "):";
  double worst = Task::kOtherHigherIsBetter ? kDiverged : -kDiverged;
  std::vector<std::pair<double, double>> end;
  const char* end_name = "";
  for (int s = 1; s <= seeds; ++s) {
    const Outcome r = train(task, rule, std::uint64_t(s), steps, grams, everything, sweep);
    loss.push_back(r.loss);
    const double other = r.loss == kDiverged ? (Task::kOtherHigherIsBetter ? 0.0 : kDiverged) : r.other;
    worst = Task::kOtherHigherIsBetter ? std::min(worst, other) : std::max(worst, other);
    char v[96];
    std::snprintf(v, sizeof v, " %d: %.6g %.6g;", s, r.loss, other);
    seed_line += v;
    if (!r.end.empty()) end_name = r.end_name;
    end.resize(std::max(end.size(), r.end.size()), {kDiverged, -kDiverged});
    for (std::size_t i = 0; i < r.end.size(); ++i)
      end[i] = {std::min(end[i].first, r.end[i]), std::max(end[i].second, r.end[i])};
  }
  std::sort(loss.begin(), loss.end());
  std::printf("| %-13s | %-25s | %10.4g | %10.4g | %10.4g | %8.4g |", name, setting, loss.front(),
              loss[loss.size() / 2], loss.back(), worst);
  std::string at_end = end.empty() ? "" : end_name;
  for (std::size_t i = 0; i < end.size(); ++i) {
    char v[64];
    std::snprintf(v, sizeof v, end[i].first == end[i].second ? "%s %.3g" : "%s %.3g–%.3g", i == 0 ? "" : ",",
                  end[i].first, end[i].second);
    at_end += v;
  }
  std::printf(" %s |\n", at_end.c_str());
  if (per_seed) std::printf("%s\n", seed_line.c_str());
  std::fflush(stdout);
}

/// The table's header; the last column holds schatten_muon's p and DF-Muon's η at the end of
/// training, per matrix (smallest–largest over the seeds).
template <class Task>
void header() {
  std::printf(
      "| rule          | setting                   |   smallest |     median |    largest | %8s | at the end "
      "|\n",
      Task::kOther);
  std::printf(
      "|---------------|---------------------------|-----------:|-----------:|-----------:|---------:|---|"
      "\n");
}

/// The rows a task adds before the rules under test, as references: none for the digits, whose
/// tables compare the rules with Muon at the same cap.
void reference_rows(const Digits&, int, int) {}
/// The language model's: AdamW on every parameter, and Muon with the decay that DF-Muon's
/// falling η resembles, at its usual peak (the tuned-schedule reference; it needs the run's
/// length in advance).
void reference_rows(const CharLm& task, int seeds, int steps) {
  opt::AdamWOptions aw;
  aw.lr = opt::Schedule::constant(3e-3);
  aw.weight_decay = 0.0;
  row(task, "adamw", "lr 3e-3, every parameter", opt::adamw(aw), seeds, steps, false, true);
  opt::MuonOptions mo;
  mo.lr = opt::Schedule::linear_decay(0.02, 0, steps);
  mo.weight_decay = matrix_decay;
  row(task, "muon", "lr 0.02 linear to 0", opt::muon(mo), seeds, steps);
}

/// Table 1: Muon and the distance-aware rules at three caps, after the task's references.
template <class Task>
void table_caps(const Task& task, int seeds, int steps) {
  if (matrix_decay != 0.0)
    std::printf(
        "weight decay %g on the matrix rules' routes (muon, da_muon, sc_muon, df_muon), none on adamw's\n\n",
        matrix_decay);
  header<Task>();
  reference_rows(task, seeds, steps);
  for (double cap : {0.02, 0.1, 1.0}) {
    char setting[32];
    std::snprintf(setting, sizeof setting, "cap %g", cap);
    opt::MuonOptions mo;
    mo.lr = opt::Schedule::constant(cap);
    mo.weight_decay = matrix_decay;
    row(task, "muon", setting, opt::muon(mo), seeds, steps);
    opt::DaMuonOptions da;
    da.eta_max = cap;
    da.weight_decay = matrix_decay;
    row(task, "da_muon", setting, opt::da_muon(da), seeds, steps);
    opt::ScMuonOptions sc;
    sc.eta_max = cap;
    sc.weight_decay = matrix_decay;
    row(task, "sc_muon", setting, opt::sc_muon(sc), seeds, steps);
    opt::DfMuonOptions df;
    df.eta_max = cap;
    df.weight_decay = matrix_decay;
    row(task, "df_muon", setting, opt::df_muon(df), seeds, steps);
  }
}

/// The p the criterion chose for each matrix (by shape) at its steps with statistics, over all
/// the runs of a row: the smallest, the largest, and how many choices were below p_max.
struct Choices {
  struct Range {
    double lo = HUGE_VAL, hi = -HUGE_VAL;
    int count = 0, below = 0;
  };
  std::map<std::pair<index_t, index_t>, Range> by_shape;
  void add(const opt::PCriterionEvent& e, double p_max) {
    if (!e.had_statistics) return;
    Range& r = by_shape[{e.rows, e.cols}];
    r.lo = std::min(r.lo, e.p);
    r.hi = std::max(r.hi, e.p);
    ++r.count;
    if (e.p < p_max) ++r.below;
  }
  void print() const {
    std::printf("criterion choices with Grams fed, every run:");
    for (const auto& [shape, r] : by_shape)
      std::printf(" %lld x %lld: p %.3g-%.3g, %d of %d below the top;", static_cast<long long>(shape.first),
                  static_cast<long long>(shape.second), r.lo, r.hi, r.below, r.count);
    std::printf("\n");
  }
};

/// Table 2: schatten_muon with and without the activation statistics, then the criterion's
/// choices in the runs with them.
template <class Task>
void table_statistics(const Task& task, int seeds, int steps) {
  header<Task>();
  opt::SchattenMuonOptions so;
  so.weight_decay = matrix_decay;
  auto choices = std::make_shared<Choices>();
  so.on_criterion = [choices, top = so.criterion.p_max](const opt::PCriterionEvent& e) {
    choices->add(e, top);
  };
  row(task, "schatten_muon", "Grams fed", opt::schatten_muon(so), seeds, steps, true);
  so.on_criterion = nullptr;
  row(task, "schatten_muon", "no Grams, keep_p", opt::schatten_muon(so), seeds, steps);
  so.without_statistics = opt::SchattenPDirection::WithoutStatistics::assume_whitened;
  row(task, "schatten_muon", "no Grams, assume_whitened", opt::schatten_muon(so), seeds, steps);
  // The SGD end of the range held for the whole run: the other end from keep_p's p = 10.
  opt::SchattenMuonOptions low;
  low.adaptive = false;
  low.p = 1.02;
  low.weight_decay = matrix_decay;
  row(task, "schatten_muon", "fixed p 1.02", opt::schatten_muon(low), seeds, steps);
  choices->print();
}

/// What a row of tables 3 and 4 changes in one matrix, against p = 10 on every matrix. Under
/// §4a.4's literal pin a fixed p steps ‖Δ‖_F = √min(r, c)·κ^{1/p} (times lr), shorter the lower
/// p is (κ < 1 at the defaults); the preset without a moment steps √min(r, c) at every p.
enum class Change {
  both,  ///< table 3: p's direction at the preset's step length (p = 10's, without a moment)
  step,  ///< table 4: p = 10's direction at the literal pin's step for p (lr scaled by κ^{1/p})
};

/// Tables 3 and 4: schatten_muon at a fixed p = 10 on every matrix, then each matrix in turn at
/// each p of {1.02, 1.5, 2, 3, 5, 7} (table 4: and 10) with the others at 10, changing what
/// `changes` lists.
/// Table 3 ({both}) gives each layer's best fixed p, to set the criterion's choices (table 2)
/// against; not a joint optimum: the layers' best p need not combine. Table 4 ({step}) changes
/// the step length alone, as §4a.4's literal pin would for each p.
template <class Task>
void table_fixed_p(const Task& task, int seeds, int steps, const std::vector<Change>& changes) {
  header<Task>();
  opt::SchattenMuonOptions ten;
  ten.adaptive = false;
  row(task, "schatten_muon", "fixed p 10", opt::schatten_muon(ten), seeds, steps);
  const std::vector<opt::ParamSpec> specs = Task::Model::specs();
  const std::vector<std::string> groups = Task::groups();
  const opt::SchattenPDirection defaults;  // the preset's κ: same lr, adam_lr, β₁, noisy
  for (std::size_t i = 0; i < groups.size(); ++i) {
    if (groups[i] != "matrix") continue;
    const opt::BlockShape shape = opt::flatten(specs[i].shape);
    const double kappa = defaults.kappa(shape.rows, shape.cols);
    const char* name = specs[i].name.c_str();
    for (const Change change : changes) {
      for (double p : {1.02, 1.5, 2.0, 3.0, 5.0, 7.0, 10.0}) {
        if (change == Change::both && p == ten.p) continue;  // the first row
        const double shorter = std::pow(kappa, 1.0 / p);     // the literal pin's step for p / the preset's
        Sweep sweep{static_cast<int>(i), p, 1.0};
        char setting[64];
        if (change == Change::both) {
          std::snprintf(setting, sizeof setting, "%s p %g", name, p);
        } else {
          std::snprintf(setting, sizeof setting, "%s p10 at %g", name, p);
          sweep = Sweep{static_cast<int>(i), ten.p, shorter};
        }
        row(task, "schatten_muon", setting, opt::schatten_muon(ten), seeds, steps, false, false, sweep);
      }
    }
  }
}

/// The tables of the file comment: 1 and 2 when `which` is 0, else table `which` alone.
template <class Task>
void tables(const Task& task, int seeds, int steps, int which) {
  if (which == 0 || which == 1) table_caps(task, seeds, steps);
  if (which == 0) std::printf("\n");
  if (which == 0 || which == 2) table_statistics(task, seeds, steps);
  if (which == 3) table_fixed_p(task, seeds, steps, {Change::both});
  if (which == 4) table_fixed_p(task, seeds, steps, {Change::step});
}

const char* const kUsage =
    "usage: schatten-mlp-rules [--model digits|charlm] [--data data/digits.csv [--whiten] "
    "[--full-grams] | --text DIR] "
    "[--seeds 1..10000] [--steps 1..1000000] [--table 1|2|3|4] [--per-seed] "
    "[--weight-decay L (with --table 1 or 2)] [--help]\n";

int usage(const char* arg) {
  std::fprintf(stderr, "schatten-mlp-rules: bad argument '%s'\n%s", arg, kUsage);
  return 2;
}
}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)  // before Kokkos, which would print its own help first
    if (!std::strcmp(argv[i], "--help") || !std::strcmp(argv[i], "-h")) {
      std::fputs(kUsage, stdout);
      return 0;
    }
  schatten::Runtime runtime(argc, argv);
  std::string model = "digits", data = "data/digits.csv", text_dir = "/usr/share/common-licenses";
  int seeds = 10, steps = 0, table = 0;
  bool whitened = false, full_grams = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    long v = 0;
    if (a == "--model" && has_value &&
        (std::string(argv[i + 1]) == "digits" || std::string(argv[i + 1]) == "charlm")) {
      model = argv[++i];
    } else if (a == "--data" && has_value) {
      data = argv[++i];
    } else if (a == "--text" && has_value) {
      text_dir = argv[++i];
    } else if (a == "--seeds" && has_value && (v = parse_count(argv[++i], 1, 10000)) > 0) {
      seeds = int(v);
    } else if (a == "--steps" && has_value && (v = parse_count(argv[++i], 1, 1000000)) > 0) {
      steps = int(v);
    } else if (a == "--table" && has_value && (v = parse_count(argv[++i], 1, 4)) > 0) {
      table = int(v);
    } else if (a == "--per-seed") {
      per_seed = true;
    } else if (a == "--weight-decay" && has_value) {
      char* end = nullptr;
      const char* text = argv[++i];
      matrix_decay = std::strtod(text, &end);
      if (end == text || *end != '\0' || !(matrix_decay >= 0.0 && matrix_decay < 1e3)) return usage(text);
    } else if (a == "--whiten") {
      whitened = true;
    } else if (a == "--full-grams") {
      full_grams = true;
    } else {
      return usage(argv[i]);
    }
  }
  if (matrix_decay != 0.0 && table != 1 && table != 2)
    return usage("--weight-decay (tables 1 and 2 only: add --table 1 or --table 2)");
  if (whitened && model != "digits") return usage("--whiten");
  if (full_grams && model != "digits") return usage("--full-grams");
  if (model == "charlm") {
    charlm::Text text;
    if (!charlm::load(text_dir, text)) {
      std::fprintf(stderr,
                   "schatten-mlp-rules: cannot read a text of two files of 4096+ characters from %s\n",
                   text_dir.c_str());
      return 1;
    }
    const CharLm task{text};
    steps = steps > 0 ? steps : CharLm::kSteps;
    std::printf(
        "%s, %s: %zu training characters, %zu held out (%s), FNV-1a %016llx; batches of %lld windows, %d "
        "steps, "
        "seeds 1-%d; %s and the largest held-out loss (nats per character) after training\n\n",
        CharLm::kName, text_dir.c_str(), text.train.size(), text.held_out.size(), text.held_out_name.c_str(),
        static_cast<unsigned long long>(text.hash), static_cast<long long>(CharLm::kBatch), steps, seeds,
        CharLm::kLoss);
    tables(task, seeds, steps, table);
    return 0;
  }
  digits::Data d;
  if (!digits::load(data, d) || d.n <= Digits::kBatch) {
    std::fprintf(stderr, "schatten-mlp-rules: cannot read %s (run from the repository root)\n", data.c_str());
    return 1;
  }
  if (whitened) whiten(d);
  const Digits task{d, full_grams};
  steps = steps > 0 ? steps : Digits::kSteps;
  std::printf("%s, %lld samples%s, batches of %lld, %d steps, seeds 1-%d; %s after training\n", Digits::kName,
              static_cast<long long>(d.n), whitened ? " (ZCA-whitened)" : "",
              static_cast<long long>(Digits::kBatch), steps, seeds, Digits::kLoss);
  // What the criterion weighs for fc1: its inputs' stable rank over the set and over a batch.
  std::printf("stable rank of the inputs (of %lld): %.1f over the set, %.1f over the first batch\n\n",
              static_cast<long long>(digits::kIn), stable_rank(d.x.data(), d.n, digits::kIn),
              stable_rank(d.x.data(), Digits::kBatch, digits::kIn));
  tables(task, seeds, steps, table);
  return 0;
}
