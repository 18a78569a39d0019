// SPDX-License-Identifier: Apache-2.0
/// \file
/// Coefficient schedules and their presets (algorithms.md §1.2, §2.3).
#include "schatten/kernels/coefficients.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <mutex>
#include <stdexcept>
#include <utility>
#include <vector>

#include "schatten/kernels/polar_express_coefficients.hpp"

namespace schatten {

bool CoefficientSchedule::covers(int iterations) const {
  if (iterations <= 0) return true;
  if (steps.empty()) return false;
  return tail != ScheduleTail::error || static_cast<std::size_t>(iterations) <= steps.size();
}

const OddQuintic& CoefficientSchedule::at(int t) const {
  const std::size_t n = steps.size();
  const std::size_t i = static_cast<std::size_t>(t);
  if (i < n) return steps[i];
  switch (tail) {
    case ScheduleTail::repeat_last:
      return steps.back();
    case ScheduleTail::cycle:
      return steps[i % n];
    case ScheduleTail::error:
      break;
  }
  throw std::out_of_range("CoefficientSchedule::at: iteration beyond an exact-length table");
}

double Normalization::scale(const std::vector<double>& sigma) const {
  if (kind == Kind::none) return 1.0;
  if (kind == Kind::aol) return std::numeric_limits<double>::quiet_NaN();  // not a function of σ
  double top = 0.0;
  for (double s : sigma)
    top = std::max(top, std::fabs(s));
  double sum = 0.0;
  for (double s : sigma) {
    const double r = top > 0.0 ? s / top : 0.0, r2 = r * r;
    sum += kind == Kind::schatten4 ? r2 * r2 : r2;
  }
  const double norm = top * (kind == Kind::schatten4 ? std::sqrt(std::sqrt(sum)) : std::sqrt(sum));
  return safety * norm + eps;
}

double CoefficientSchedule::apply(double x, int iterations) const {
  for (int t = 0; t < iterations; ++t)
    x = at(t)(x);
  return x;
}

namespace {

/// The coefficients of a schedule's first `iterations` rows, (a, b, c) after (a, b, c), read in
/// place: max_abs() looks its cache up with this, so that a lookup allocates nothing (the
/// kernels call it on every call with an output factor, spectral_power's polynomial method).
struct RowCoefficients {
  const CoefficientSchedule* schedule;
  int iterations;
  std::size_t size() const { return 3 * static_cast<std::size_t>(std::max(iterations, 0)); }
  double operator[](std::size_t i) const {
    const OddQuintic& q = schedule->at(static_cast<int>(i / 3));
    return i % 3 == 0 ? q.a : i % 3 == 1 ? q.b : q.c;
  }
};

/// Lexicographic order of coefficient sequences (std::vector's operator<), across the stored
/// keys and RowCoefficients.
struct CoefficientsLess {
  using is_transparent = void;
  template <class A, class B>
  bool operator()(const A& a, const B& b) const {
    const std::size_t n = std::min(a.size(), b.size());
    for (std::size_t i = 0; i < n; ++i) {
      if (a[i] < b[i]) return true;
      if (b[i] < a[i]) return false;
    }
    return a.size() < b.size();
  }
};

}  // namespace

double CoefficientSchedule::max_abs(int iterations) const {
  // The key is the coefficients of the rows applied, so equal tables share an entry whatever
  // their names, and a changed table never reuses a stale one.
  const RowCoefficients rows{this, iterations};
  static std::mutex mutex;
  static std::map<std::vector<double>, double, CoefficientsLess> cache;
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (auto it = cache.find(rows); it != cache.end()) return it->second;
  }
  std::vector<double> key(rows.size());
  for (std::size_t i = 0; i < key.size(); ++i)
    key[i] = rows[i];
  double bound = 0.0;
  for (int i = 0; i <= 4096; ++i) {
    bound = std::max(bound, std::fabs(apply(i / 4096.0, iterations)));
    bound = std::max(bound, std::fabs(apply(std::pow(10.0, -8.0 * i / 4096.0), iterations)));
  }
  std::lock_guard<std::mutex> lock(mutex);
  cache.emplace(std::move(key), bound);
  return bound;
}

namespace schedules {
namespace {
CoefficientSchedule fixed(const char* name, OddQuintic p) {
  CoefficientSchedule s;
  s.name = name;
  s.steps = {p};
  return s;
}

CoefficientSchedule table(const char* name, std::vector<OddQuintic> rows, ScheduleTail tail) {
  CoefficientSchedule s;
  s.name = name;
  s.steps = std::move(rows);
  s.tail = tail;
  return s;
}

CoefficientSchedule generated(const char* name, const PolarExpressParams& params, double safety) {
  CoefficientSchedule s;
  s.name = name;
  if (polar_express_coefficients(params, s.steps) != Status::ok)
    throw std::logic_error("schatten: invalid built-in Polar Express parameters");
  s.normalization.safety = safety;
  return s;
}
}  // namespace

CoefficientSchedule keller_jordan() {
  // [V] KellerJordan/Muon muon.py, Moonlight, torch.optim.Muon DEFAULT_A/B/C, optax.
  return fixed("keller_jordan", {3.4445, -4.7750, 2.0315});
}

CoefficientSchedule classical_quintic() {
  return fixed("classical_quintic", {15.0 / 8.0, -10.0 / 8.0, 3.0 / 8.0});
}

CoefficientSchedule classical_cubic() { return fixed("classical_cubic", {1.5, -0.5, 0.0}); }

CoefficientSchedule you_jiacheng() {
  // [T] NoahAmsel/gram-newton-schulz coefficients.py (YOU_COEFFICIENTS), citing the author.
  CoefficientSchedule s;
  s.name = "you_jiacheng";
  s.steps = {{4.0848, -6.8946, 2.9270},
             {3.9505, -6.3029, 2.6377},
             {3.7418, -5.5913, 2.3037},
             {2.8769, -3.1427, 1.2046},
             {2.8366, -3.0525, 1.2012}};
  return s;
}

CoefficientSchedule polar_express() {
  // [V] reference default optimal_composition(1e-3, 10, 1e-2, 0.02), norm ‖X‖_F·1.01;
  // generated once (tests check it against the published table to 1e-12).
  static const CoefficientSchedule s =
      generated("polar_express", PolarExpressParams{1e-3, 10, 1e-2, 0.02, 5}, 1.01);
  return s;
}

CoefficientSchedule polar_express_5() {
  // [V] modded-nanogpt table, [C] = optimal_composition(1e-3, 5, 2e-2, 0.02), norm ‖X‖_F·1.02.
  static const CoefficientSchedule s =
      generated("polar_express_5", PolarExpressParams{1e-3, 5, 2e-2, 0.02, 5}, 1.02);
  return s;
}

CoefficientSchedule smuon_muadam() {
  // [V] deel-ai-papers/schatten-muon 749ba8d muadam.py: NS_COEFFS = optimal_composition(l=1e-3,
  // num_iters=5, safety_factor_eps=1e-2, cushion=0.03), X/(‖X‖_F + 1e-7).
  static const CoefficientSchedule s =
      generated("smuon_muadam", PolarExpressParams{1e-3, 5, 1e-2, 0.03, 5}, 1.0);
  return s;
}

CoefficientSchedule cans() {
  // [T] NVIDIA-NeMo/Emerging-Optimizers muon_utils.py "cans" (commit fd77292), citing CANS,
  // arXiv 2506.10935 (Remez with an adaptive interval); repeat-last as there.
  return table("cans",
               {{8.4703, -25.1081, 18.6293},
                {4.1828, -3.1087, 0.5806},
                {3.9619, -2.9541, 0.5630},
                {3.2866, -2.4647, 0.5074},
                {2.2737, -1.6447, 0.4162}},
               ScheduleTail::repeat_last);
}

CoefficientSchedule deepseek_v4() {
  // [T] Emerging-Optimizers "deepseekv4" (commit fd77292), citing the DeepSeek-V4 report:
  // Keller Jordan's row 8 times, then (2, −1.5, 0.5) twice (p(1) = 1, p'(1) = 0); repeat-last.
  std::vector<OddQuintic> rows(8, keller_jordan().steps[0]);
  rows.push_back({2.0, -1.5, 0.5});
  rows.push_back({2.0, -1.5, 0.5});
  return table("deepseek_v4", std::move(rows), ScheduleTail::repeat_last);
}

CoefficientSchedule cubic5() {
  // [T] Emerging-Optimizers "cubic5" (commit fd77292), citing arXiv 2606.00371: cubic rows
  // (c = 0, so each step costs two GEMMs), fitted for a relaxed band with lower bound 7e-3;
  // an exact 5-step table (the reference refuses other step counts), hence tail error.
  return table("cubic5",
               {{3.3656576, -3.3420992, 0.0},
                {2.5744352, -1.4957376, 0.0},
                {2.5368962, -1.4312570, 0.0},
                {2.4418906, -1.2764040, 0.0},
                {2.2230472, -0.9630650, 0.0}},
               ScheduleTail::error);
}

CoefficientSchedule kaon(int steps) {
  // [T] algorithms.md §4b.2: X ← 4.1 (I − X Xᵀ)² X, i.e. p(x) = 4.1x − 8.2x³ + 4.1x⁵, five
  // times from X₀ = A/‖A‖_F, output divided by 1.175 (> max p = 1.17349 on [0, 1]) so that
  // every singular value lands in [0, 0.9987]. The division is folded into the last row.
  if (steps < 1) throw std::invalid_argument("schedules::kaon: steps must be >= 1");
  constexpr OddQuintic map{4.1, -8.2, 4.1};
  constexpr double scale = 1.0 / 1.175;
  CoefficientSchedule s;
  s.name = "kaon";
  s.steps.assign(static_cast<std::size_t>(steps), map);
  s.steps.back() = {map.a * scale, map.b * scale, map.c * scale};
  s.tail = ScheduleTail::error;
  return s;
}

std::vector<std::string> names() {
  return {"keller_jordan",
          "classical_quintic",
          "classical_cubic",
          "you_jiacheng",
          "polar_express",
          "polar_express_5",
          "smuon_muadam",
          "cans",
          "deepseek_v4",
          "cubic5",
          "kaon"};
}

bool by_name(const std::string& name, CoefficientSchedule& out) {
  if (name == "keller_jordan")
    out = keller_jordan();
  else if (name == "classical_quintic")
    out = classical_quintic();
  else if (name == "classical_cubic")
    out = classical_cubic();
  else if (name == "you_jiacheng")
    out = you_jiacheng();
  else if (name == "polar_express")
    out = polar_express();
  else if (name == "polar_express_5")
    out = polar_express_5();
  else if (name == "smuon_muadam")
    out = smuon_muadam();
  else if (name == "cans")
    out = cans();
  else if (name == "deepseek_v4")
    out = deepseek_v4();
  else if (name == "cubic5")
    out = cubic5();
  else if (name == "kaon")
    out = kaon();
  else
    return false;
  return true;
}
}  // namespace schedules

}  // namespace schatten
