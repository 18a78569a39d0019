// SPDX-License-Identifier: Apache-2.0
/// \file
/// polynomial_power_schedule(): the tabulated Newton–Schulz schedules whose composite
/// approximates x^α (docs/kernels/spectral_power.md, "Polynomial method"; the table comes from
/// src/kernels/fit_power_schedules.py).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <mutex>
#include <tuple>
#include <utility>

#include "schatten/kernels/spectral_power.hpp"

namespace schatten {
namespace {

#include "power_schedule_table.inc"

constexpr double kAlphaStep = 0.01;  // the table's spacing in α (fit_power_schedules.py)
constexpr double kLower = 1e-3;      // the fitted interval [kLower, 1]
constexpr int kCheckPoints = 4000;   // log-spaced points on which log_error is measured
/// The normalisation's safety factor when the schedule iterates in bf16 or fp16: ν = 1.01·‖A‖_F,
/// so a rank-one-dominated input starts at x₀ ≤ 1/1.01 instead of the interval's end x = 1,
/// where the 5- and 6-step composites are steepest (|f′(1)| up to 8190 and 1905 over the table,
/// against at most 132 and 16 at 1/1.01) and amplify the 16-bit rounding of the first images
/// (without it bf16 returned top singular values off by factors up to 3700). The margin of
/// Polar Express's reference normalisation ‖X‖_F·1.01, for the same bf16 rounding
/// (algorithms.md §2.2). [P] library choice; measured in docs/kernels/spectral_power.md, "In 16
/// bits". In fp32/fp64 the slope costs u·|f′| ≤ 1e-3 and the safety stays 1 (the fitted
/// normalisation).
constexpr double kSixteenBitSafety = 1.01;

/// The table row of exponent α ∈ [0, 1]: the nearest multiple of kAlphaStep, j = round(α / step).
std::size_t row_index(double alpha) { return static_cast<std::size_t>(std::lround(alpha / kAlphaStep)); }
/// The exponent row j was fitted for: j·step (at most 1).
double row_alpha(std::size_t j) { return std::min(1.0, static_cast<double>(j) * kAlphaStep); }

template <std::size_t N, std::size_t W>
const double* row_of(const double (&table)[N][W], double alpha) {
  return table[std::min(row_index(alpha), N - 1)];
}

/// max over kCheckPoints log-spaced x ∈ [kLower, 1] of |log f(x) − α log x| (∞ if f(x) ≤ 0).
double measure_log_error(const CoefficientSchedule& s, double alpha, int steps) {
  double worst = 0.0;
  const double l0 = std::log(kLower);
  for (int i = 0; i < kCheckPoints; ++i) {
    const double lx = l0 * (1.0 - double(i) / double(kCheckPoints - 1));
    const double f = s.apply(std::exp(lx), steps);
    if (!(f > 0.0)) return HUGE_VAL;
    worst = std::max(worst, std::abs(std::log(f) - alpha * lx));
  }
  return worst;
}

}  // namespace

double PowerSchedule::relative_error() const { return std::expm1(log_error); }

namespace {

/// The tabulated coefficient rows of `steps` steps nearest to α, or nullptr when there is no
/// table for `steps`: the one list of supported step counts.
const double* table_row(int steps, double alpha) {
  switch (steps) {
    case 5:
      return row_of(kPowerRows5, alpha);
    case 6:
      return row_of(kPowerRows6, alpha);
    case 8:
      return row_of(kPowerRows8, alpha);
    default:
      return nullptr;
  }
}

// The error measurement (4000·T polynomial evaluations) is cached per (α, T): an optimizer asks
// for the same (α, T) every step. Bounded: cleared when it holds 4096 entries. A lookup
// allocates nothing.
struct LogErrorCache {
  std::mutex mutex;
  std::map<std::pair<double, int>, double> entries;
};
LogErrorCache& log_errors() {
  static LogErrorCache cache;
  return cache;
}

bool cached_log_error(double alpha, int steps, double& out) {
  LogErrorCache& c = log_errors();
  std::lock_guard<std::mutex> lock(c.mutex);
  const auto it = c.entries.find(std::make_pair(alpha, steps));
  if (it == c.entries.end()) return false;
  out = it->second;
  return true;
}

void store_log_error(double alpha, int steps, double log_error) {
  LogErrorCache& c = log_errors();
  std::lock_guard<std::mutex> lock(c.mutex);
  if (c.entries.size() >= 4096) c.entries.clear();
  c.entries.emplace(std::make_pair(alpha, steps), log_error);
}

}  // namespace

bool polynomial_power_steps_tabulated(int steps) { return table_row(steps, 0.0) != nullptr; }

namespace {
/// polynomial_power_schedule() for a tabulated row, into `out` (moved in last).
Status build_power_schedule(double alpha, int steps, const double* rows, PowerSchedule& out) {
  PowerSchedule r;
  r.alpha = alpha;
  r.lower = kLower;
  char name[64];
  std::snprintf(name, sizeof name, "power(alpha=%.6g, steps=%d)", alpha, steps);
  r.schedule.name = name;
  r.schedule.tail = ScheduleTail::error;
  r.schedule.normalization = Normalization{};  // Frobenius, safety 1, eps 0: the fit assumes σ ≤ ‖A‖_F
  for (int t = 0; t < steps; ++t)
    r.schedule.steps.push_back(OddQuintic{rows[3 * t], rows[3 * t + 1], rows[3 * t + 2]});
  if (!cached_log_error(alpha, steps, r.log_error)) {
    r.log_error = measure_log_error(r.schedule, alpha, steps);
    store_log_error(alpha, steps, r.log_error);
  }
  out = std::move(r);
  return Status::ok;
}

/// polynomial_power_polar_options() for checked options, into `out` (moved in last).
Status build_power_polar_options(const SpectralPowerOptions& options, PolarOptions& out,
                                 double* relative_error) {
  PowerSchedule ps;
  if (const Status s = polynomial_power_schedule(options.alpha, options.polynomial_steps, ps);
      s != Status::ok)
    return s;
  const double error = ps.relative_error();
  PolarOptions po;
  po.method = PolarMethod::newton_schulz;
  po.schedule = std::move(ps.schedule);
  po.iterations = options.polynomial_steps;
  po.compute = options.polynomial_compute;
  po.symmetric_gram = options.symmetric_gram;
  // x = σ/ν then lies in [lower, 1/1.01] for σ ∈ [lower·ν, ‖A‖_F], inside the fitted interval:
  // the band `error` still holds there, and the kernel's output factor is ν^α.
  if (sixteen_bit(po.compute)) po.schedule.normalization.safety = kSixteenBitSafety;
  if (relative_error != nullptr) *relative_error = error;
  out = std::move(po);
  return Status::ok;
}
}  // namespace

Status polynomial_power_schedule(double alpha, int steps, PowerSchedule& out) {
  if (!(alpha >= 0.0 && alpha <= 1.0)) return Status::invalid_argument;
  const double* rows = table_row(steps, alpha);
  if (rows == nullptr) return Status::invalid_argument;
  // The schedule's rows and name and the cache's node allocate: an exhausted heap is
  // out_of_memory with `out` untouched (it is moved in last), never an exception.
  return schatten::detail::status_guard([&] { return build_power_schedule(alpha, steps, rows, out); });
}

Status polynomial_power_polar_options(const SpectralPowerOptions& options, PolarOptions& out,
                                      double* relative_error) {
  if (options.method != SpectralPowerMethod::polynomial || check_spectral_power_options(options) != nullptr)
    return Status::invalid_argument;
  // PolarOptions and the schedule allocate: out_of_memory, `out` untouched (moved in last).
  return schatten::detail::status_guard(
      [&] { return build_power_polar_options(options, out, relative_error); });
}

namespace detail {

Status cached_polynomial_power_polar_options(const SpectralPowerOptions& options, const PolarOptions*& out,
                                             double* relative_error) {
  if (options.method != SpectralPowerMethod::polynomial || check_spectral_power_options(options) != nullptr ||
      !(options.alpha >= 0.0 && options.alpha <= 1.0))
    return Status::invalid_argument;
  const double* rows = table_row(options.polynomial_steps, options.alpha);
  if (rows == nullptr) return Status::invalid_argument;
  double log_error = 0.0;
  if (relative_error != nullptr && !cached_log_error(options.alpha, options.polynomial_steps, log_error)) {
    PowerSchedule ps;  // measures and caches the requested α's error (allocates: first use only)
    if (const Status s = polynomial_power_schedule(options.alpha, options.polynomial_steps, ps);
        s != Status::ok)
      return s;
    log_error = ps.log_error;
  }
  // The options depend on α only through its tabulated row, so one entry per row, compute
  // precision and SYRK use (at most 3 · 101 · 5 · 2), built by polynomial_power_polar_options
  // at the row's own α and never erased, so that the pointers stay valid.
  static std::mutex mutex;
  static std::map<std::tuple<const double*, int, bool>, PolarOptions> built;
  const auto key =
      std::make_tuple(rows, static_cast<int>(options.polynomial_compute), options.symmetric_gram);
  const PolarOptions* found = nullptr;
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (const auto it = built.find(key); it != built.end()) found = &it->second;
  }
  if (found == nullptr) {
    // The options and the map's node allocate (first use of a row only): out_of_memory on an
    // exhausted heap, `out` left alone, never an exception.
    const Status st = schatten::detail::status_guard([&] {
      SpectralPowerOptions row = options;
      row.alpha = row_alpha(row_index(options.alpha));
      PolarOptions po;
      if (const Status s = polynomial_power_polar_options(row, po); s != Status::ok) return s;
      std::lock_guard<std::mutex> lock(mutex);
      found = &built.emplace(key, std::move(po)).first->second;
      return Status::ok;
    });
    if (st != Status::ok) return st;
  }
  out = found;
  if (relative_error != nullptr) *relative_error = std::expm1(log_error);
  return Status::ok;
}

}  // namespace detail

double polynomial_power_iterate_bound(const SpectralPowerOptions& options) {
  if (options.method != SpectralPowerMethod::polynomial) return HUGE_VAL;
  SpectralPowerOptions o = options;
  o.alpha = 0.5;  // a valid exponent for the check; the loop below sets each tabulated one
  if (check_spectral_power_options(o) != nullptr) return HUGE_VAL;
  // Cached per (steps, compute): the bound depends on nothing else (the schedules are tabulated,
  // and polar_iterate_bound reads only the rounding margin of the compute precision besides).
  static std::mutex mutex;
  static std::map<std::pair<int, int>, double> cache;
  const auto key = std::make_pair(o.polynomial_steps, static_cast<int>(o.polynomial_compute));
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (auto it = cache.find(key); it != cache.end()) return it->second;
  }
  try {
    double bound = 0.0;
    const std::size_t rows = row_index(1.0);
    for (std::size_t j = 0; j <= rows && bound < HUGE_VAL; ++j) {
      o.alpha = row_alpha(j);
      PolarOptions po;
      if (polynomial_power_polar_options(o, po) != Status::ok) return HUGE_VAL;
      bound = std::max(bound, polar_iterate_bound(po));
    }
    std::lock_guard<std::mutex> lock(mutex);
    cache.emplace(key, bound);
    return bound;
  } catch (const std::exception&) {
    // An exhausted heap (PolarOptions, the cache's node): no bound known, none cached.
    return HUGE_VAL;
  }
}

}  // namespace schatten
