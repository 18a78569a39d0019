// SPDX-License-Identifier: Apache-2.0
/// \file
/// Fitting the rational approximations of x^α used by spectral_power() (the library's own
/// offline solver, run on first use and cached).
#include <Eigen/Dense>

#include <cmath>
#include <map>
#include <mutex>
#include <tuple>

#include "schatten/kernels/spectral_power.hpp"

namespace schatten {

double RationalPower::operator()(double x) const {
  if (form == Form::filtered_inverse) return x / ((x + floor) * (x + floor));
  double s = 0.0;
  for (std::size_t j = 0; j < poles.size(); ++j)
    s += weights[j] * (form == Form::shifted_ratio ? x / (x + poles[j]) : 1.0 / (x + poles[j]));
  if (form == Form::filtered_stieltjes) s *= x / (x + floor);
  return s;
}

namespace {

std::vector<double> log_grid(double lo, double hi, int n) {
  std::vector<double> x(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i)
    x[static_cast<std::size_t>(i)] = lo * std::pow(hi / lo, double(i) / double(n - 1));
  return x;
}

/// Least-squares weights for fixed poles, relative error; returns the max relative error on
/// the check grid (unfiltered part).
double fit_weights(RationalPower& r, const std::vector<double>& fit_x, const std::vector<double>& check_x) {
  const Eigen::Index n = static_cast<Eigen::Index>(fit_x.size()),
                     p = static_cast<Eigen::Index>(r.poles.size());
  auto basis = [&](double x, std::size_t j) {
    return r.form == RationalPower::Form::shifted_ratio ? x / (x + r.poles[j]) : 1.0 / (x + r.poles[j]);
  };
  Eigen::MatrixXd m(n, p);
  Eigen::VectorXd rhs = Eigen::VectorXd::Ones(n);
  for (Eigen::Index i = 0; i < n; ++i) {
    const double x = fit_x[static_cast<std::size_t>(i)], inv_target = std::pow(x, -r.alpha);
    for (Eigen::Index j = 0; j < p; ++j)
      m(i, j) = basis(x, static_cast<std::size_t>(j)) * inv_target;
  }
  const Eigen::VectorXd w = m.colPivHouseholderQr().solve(rhs);
  r.weights.assign(w.data(), w.data() + p);
  double worst = 0.0;
  for (double x : check_x) {
    double s = 0.0;
    for (Eigen::Index j = 0; j < p; ++j)
      s += w(j) * basis(x, static_cast<std::size_t>(j));
    const double err = std::fabs(s * std::pow(x, -r.alpha) - 1.0);
    if (!(err <= worst)) worst = err;  // (a NaN error is kept: std::max would drop it)
  }
  return std::isfinite(worst) ? worst : 1e300;
}

Status fit(double alpha, double floor, double tol, RationalPower& out) {
  RationalPower best;
  best.alpha = alpha;
  best.floor = floor;
  if (alpha == -1.0) {  // exact: x⁻¹ · (x/(x + φ))², filtered twice so that g(0) = 0
    best.form = RationalPower::Form::filtered_inverse;
    out = best;
    return Status::ok;
  }
  best.form = alpha > 0 ? RationalPower::Form::shifted_ratio : RationalPower::Form::filtered_stieltjes;
  best.fit_error = 1e300;
  const std::vector<double> fit_x = log_grid(floor, rational_fit_top, 400),
                            check_x = log_grid(floor, rational_fit_top, 4000);
  for (int n = 3; n <= 24; ++n) {
    // Pole range [floor·10^{−a}, 10^{b}]: searched, since the best range depends on α and n.
    // a ≤ 1 keeps every pole ≥ floor/10, which bounds the gain below the floor: for x < floor,
    // g(x) ≤ about 20·x·floor^{α−1} (the test checks ≤ 20 at tolerance 1e-3, measured ≤ 14
    // there; 20.4 at tolerance 1e-5, α = −0.99: docs/kernels/spectral_power.md).
    for (int ia = 0; ia <= 4; ++ia) {
      for (int ib = -4; ib <= 12; ++ib) {
        RationalPower r = best;
        const double lo = floor * std::pow(10.0, -0.25 * ia), hi = std::pow(10.0, 0.25 * ib);
        if (!(hi > lo)) continue;
        r.poles = log_grid(lo, hi, n);
        r.fit_error = fit_weights(r, fit_x, check_x);
        if (r.fit_error < best.fit_error) best = r;
      }
    }
    if (best.fit_error <= tol) break;
  }
  out = best;
  return best.fit_error <= tol ? Status::ok : Status::not_converged;
}

}  // namespace

const char* check_spectral_power_options(const SpectralPowerOptions& o) {
  if (!(o.alpha >= -1.0 && o.alpha <= 1.0)) return "alpha must lie in [-1, 1]";
  if (o.method != SpectralPowerMethod::rational && o.method != SpectralPowerMethod::polynomial)
    return "unknown spectral power method";
  if (o.method == SpectralPowerMethod::polynomial) {
    if (!(o.alpha >= 0.0)) return "the polynomial method needs alpha in [0, 1] (use rational for alpha < 0)";
    if (!known_precision(o.polynomial_compute)) return kUnknownPrecision;
    if (!polynomial_power_steps_tabulated(o.polynomial_steps))
      return "polynomial_steps must be 5, 6 or 8 (the tabulated schedules)";
  }
  if (!(o.floor >= rational_smallest_floor && o.floor < 1.0)) return "floor must lie in [1e-300, 1)";
  if (!(o.tolerance >= 1e-8 && o.tolerance <= 0.1)) return "tolerance must lie in [1e-8, 0.1]";
  return check_qdwh_options(o.qdwh);
}

PolarOptions polynomial_clip_polar_options() {
  PolarOptions o;
  o.method = PolarMethod::polar_express;
  o.iterations = 8;
  return o;
}

const char* check_spectral_clip_options(const SpectralClipOptions& o) {
  if (!std::isfinite(o.lower)) return "lower must be finite (a value <= 0 means no lower bound)";
  if (!(o.upper > 0.0)) return "upper must be positive (+infinity means no upper bound)";
  if (!(o.lower <= o.upper)) return "lower must not exceed upper";
  if (!(o.floor >= 0.0 && o.floor < 1.0)) return "floor must lie in [0, 1)";
  if (!(o.blend >= 0.0 && o.blend <= 1.0)) return "blend must lie in [0, 1]";
  if (o.method == SpectralClipMethod::polynomial) {
    if (o.polar.method != PolarMethod::newton_schulz && o.polar.method != PolarMethod::polar_express)
      return "the polynomial spectral clip needs polar.method newton_schulz or polar_express";
    if (const char* msg = check_polar_options(o.polar)) return msg;
    if (resolved_schedule(o.polar).normalization.kind != Normalization::Kind::frobenius)
      return "the polynomial spectral clip needs a schedule with Frobenius normalisation";
    if (o.polar.dual_norm_scale) return "the polynomial spectral clip has no dual_norm_scale";
    return nullptr;
  }
  if (o.method != SpectralClipMethod::qdwh) return "unknown spectral clip method";
  return check_qdwh_options(o.qdwh);
}

Status detail::cached_rational_power(double alpha, double floor, double tolerance,
                                     const RationalPower*& out) {
  const bool ok = std::isfinite(alpha) && alpha >= -1.0 && alpha < 1.0 && alpha != 0.0 &&
                  std::isfinite(floor) && floor >= rational_smallest_floor && floor < 1.0 &&
                  std::isfinite(tolerance) && tolerance >= 1e-8 && tolerance <= 0.1;
  if (!ok) return Status::invalid_argument;
  // A map's entries never move, so a pointer to one stays valid as the cache grows.
  static std::mutex mutex;
  static std::map<std::tuple<double, double, double>, std::pair<Status, RationalPower>> cache;
  const auto key = std::make_tuple(alpha, floor, tolerance);
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (auto it = cache.find(key); it != cache.end()) {
      out = &it->second.second;
      return it->second.first;
    }
  }
  // The fit and the cache's node allocate: an exhausted heap is out_of_memory (nothing cached,
  // `out` untouched), never an exception out of a function that returns a status.
  return schatten::detail::status_guard([&] {
    RationalPower r;
    const Status s = fit(alpha, floor, tolerance, r);
    std::lock_guard<std::mutex> lock(mutex);
    // (Or another thread's entry.)
    const auto it = cache.emplace(key, std::make_pair(s, std::move(r))).first;
    out = &it->second.second;
    return it->second.first;
  });
}

Status rational_power_approximation(double alpha, double floor, double tolerance, RationalPower& out) {
  const RationalPower* cached = nullptr;
  const Status s = detail::cached_rational_power(alpha, floor, tolerance, cached);
  if (cached == nullptr) return s;
  // The copy allocates (poles, weights): made aside and moved in, so that a failure leaves `out`
  // as it was.
  return schatten::detail::status_guard([&] {
    RationalPower copy = *cached;
    out = std::move(copy);
    return s;
  });
}

}  // namespace schatten
