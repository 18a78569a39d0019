// SPDX-License-Identifier: Apache-2.0
/// \file
/// Backend-independent parts of polar(): option checks, default schedules and the cost model.
#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <tuple>

#include "schatten/kernels/polar.hpp"

namespace schatten {

const char* to_string(PolarMethod m) noexcept {
  switch (m) {
    case PolarMethod::newton_schulz:
      return "newton_schulz";
    case PolarMethod::polar_express:
      return "polar_express";
    case PolarMethod::gram_newton_schulz:
      return "gram_newton_schulz";
    case PolarMethod::qdwh:
      return "qdwh";
  }
  return "unknown_method";
}

const CoefficientSchedule& resolved_schedule(const PolarOptions& o) {
  if (!o.schedule.steps.empty()) return o.schedule;
  // Built on first use (thread-safe), then only read: check_polar_options(), which the rules'
  // noexcept check() calls on every step, must not allocate (an allocation failure there would
  // terminate the program).
  static const CoefficientSchedule keller_jordan = schedules::keller_jordan();
  static const CoefficientSchedule polar_express = schedules::polar_express();
  return o.method == PolarMethod::newton_schulz ? keller_jordan : polar_express;
}

namespace {
// Builds both defaults while the program starts (this file's dynamic initialisation), so that
// no later call is the first: a first call inside a rule's noexcept check() could otherwise meet
// an exhausted heap and terminate. The function-local statics keep any order of initialisation
// safe (a user's static object may call polar() earlier; it then builds them itself).
[[maybe_unused]] const bool kDefaultSchedulesBuilt = (resolved_schedule(PolarOptions{}), true);
}  // namespace

const PolarOptions* detail::cached_kaon_options(int steps) {
  constexpr int kCached = 16;
  if (steps < 1 || steps > kCached) return nullptr;
  static const std::array<PolarOptions, kCached> table = [] {
    std::array<PolarOptions, kCached> t;
    for (int i = 0; i < kCached; ++i)
      t[static_cast<std::size_t>(i)] = kaon_options(i + 1);
    return t;
  }();
  return &table[static_cast<std::size_t>(steps - 1)];
}

const char* check_polar_options(const PolarOptions& o) {
  if (!known_precision(o.compute)) return kUnknownPrecision;
  if (o.method == PolarMethod::qdwh) return check_qdwh_options(o.qdwh);
  if (o.iterations < 0 || o.iterations > kPolarMaxIterations) return "iterations must lie in [0, 1000]";
  if (o.method != PolarMethod::newton_schulz && o.method != PolarMethod::polar_express &&
      o.method != PolarMethod::gram_newton_schulz)
    return "unknown polar method";
  const CoefficientSchedule& s = resolved_schedule(o);
  // (An unknown tail made CoefficientSchedule::at() throw past the rows: internal_error from
  // polar(), and std::terminate from a noexcept caller of polar_iterate_bound().)
  if (s.tail != ScheduleTail::repeat_last && s.tail != ScheduleTail::cycle && s.tail != ScheduleTail::error)
    return "unknown schedule tail";
  if (!s.covers(o.iterations)) return "the schedule has fewer rows than iterations (tail = error)";
  for (const OddQuintic& p : s.steps)
    if (!std::isfinite(p.a) || !std::isfinite(p.b) || !std::isfinite(p.c))
      return "schedule coefficients must be finite";
  const Normalization& n = s.normalization;
  if (n.kind != Normalization::Kind::frobenius && n.kind != Normalization::Kind::none &&
      n.kind != Normalization::Kind::schatten4 && n.kind != Normalization::Kind::aol)
    return "unknown normalization kind";
  if (!(std::isfinite(n.safety) && n.safety > 0.0)) return "normalization.safety must be > 0";
  if (!(std::isfinite(n.eps) && n.eps >= 0.0)) return "normalization.eps must be >= 0";
  if (o.method == PolarMethod::gram_newton_schulz)
    for (int r : o.gram_restarts)
      if (r < 1) return "gram_restarts entries must be >= 1";
  return nullptr;
}

namespace {
/// True when polar() iterates in a 16-bit precision (bf16 or fp16).
bool iterates_in_16_bits(const PolarOptions& o) { return sixteen_bit(o.compute); }
/// True when Gram Newton–Schulz rebuilds its iterate before iteration t (gram_restarts; t ≥ 1).
bool gram_restart_before(const PolarOptions& o, int t) {
  return t > 0 && std::find(o.gram_restarts.begin(), o.gram_restarts.end(), t) != o.gram_restarts.end();
}
/// max |p(x)| over x ∈ [0, s]: at s or at an interior extreme, x² a root of
/// p′(x) = a + 3b x² + 5c x⁴ (p is odd, p(0) = 0).
double sup_abs(const OddQuintic& p, double s) {
  double best = std::fabs(p(s));
  auto at_square = [&](double y) {
    if (y > 0.0 && y < s * s) best = std::max(best, std::fabs(p(std::sqrt(y))));
  };
  if (p.c == 0.0) {
    if (p.b != 0.0) at_square(-p.a / (3.0 * p.b));
  } else {
    const double disc = 9.0 * p.b * p.b - 20.0 * p.a * p.c;
    if (disc >= 0.0) {
      const double r = std::sqrt(disc);
      at_square((-3.0 * p.b + r) / (10.0 * p.c));
      at_square((-3.0 * p.b - r) / (10.0 * p.c));
    }
  }
  return best;
}
}  // namespace

double polar_iterate_bound(const PolarOptions& o) {
  if (check_polar_options(o) != nullptr || o.method == PolarMethod::qdwh) return HUGE_VAL;
  const CoefficientSchedule& s = resolved_schedule(o);
  if (s.normalization.kind == Normalization::Kind::none) return HUGE_VAL;
  const double widen = 1.0 + (iterates_in_16_bits(o) ? 0x1p-8 : 0x1p-20);
  double sigma = widen / s.normalization.safety, factor = 1.0, peak = sigma;
  for (int t = 0; t < o.iterations; ++t) {
    const OddQuintic& p = s.at(t);
    const double s2 = sigma * sigma;
    const double per_sigma = std::fabs(p.a) + std::fabs(p.b) * s2 + std::fabs(p.c) * s2 * s2;
    if (!(sigma * per_sigma <= kPolarTermLimit)) return HUGE_VAL;
    if (o.method == PolarMethod::gram_newton_schulz) {
      if (gram_restart_before(o, t)) factor = 1.0;
      factor *= per_sigma;
      if (!(factor <= 1e30)) return HUGE_VAL;
    }
    sigma = widen * sup_abs(p, sigma);
    peak = std::max(peak, sigma);
  }
  return peak;
}

std::vector<GemmShape> symmetric_panel_shapes(index_t n, index_t k) {
  std::vector<GemmShape> shapes;
  const index_t b = kSymmetricPanelRows;
  if (!symmetric_panels_pay(n)) return shapes;
  for (index_t p0 = 0; p0 < n; p0 += b) {
    const index_t e = std::min(p0 + b, n);
    shapes.push_back({e - p0, e, k, 1, OpKind::gemm});
  }
  return shapes;
}

std::vector<GemmShape> polar_gemm_shapes(index_t rows, index_t cols, const PolarOptions& o) {
  const index_t k = std::min(rows, cols), n = std::max(rows, cols);
  std::map<std::tuple<index_t, index_t, index_t, int>, int> count;
  auto add = [&](index_t m, index_t nn, index_t kk, int c = 1, OpKind kind = OpKind::gemm) {
    count[{m, nn, kk, static_cast<int>(kind)}] += c;
  };
  if (k > 0 && !check_polar_options(o)) {
    const CoefficientSchedule& s = resolved_schedule(o);
    const int T = o.iterations;
    // Symmetric products (kk × kk from inner dimension `inner`), as batched_sym_product runs
    // them: a vendor SYRK for fp32/fp64 (host BLAS, cuBLAS; the Kokkos backend's has_syrk,
    // assumed whatever the device); for 16-bit iteration the portable kernel's triangle, a
    // "SYRK" here (every build but CUDA), or on CUDA GEMM row panels when kk is large enough
    // (symmetric_panel_shapes), else one GEMM.
    const bool lowp = iterates_in_16_bits(o);
    auto add_sym = [&](index_t kk, index_t inner, int c = 1) {
      if (!o.symmetric_gram) return add(kk, kk, inner, c);
      if (!lowp || detail::lowp_symmetric_on_one_triangle()) return add(kk, kk, inner, c, OpKind::syrk);
      const std::vector<GemmShape> panels = symmetric_panel_shapes(kk, inner);
      if (panels.empty()) return add(kk, kk, inner, c);
      for (const GemmShape& g : panels)
        add(g.m, g.n, g.k, c);
    };
    // Mirrors the loops of backends/kokkos/include/schatten/kokkos/detail/polar_impl.hpp.
    if (o.method == PolarMethod::qdwh) {
      // Data-dependent: assume the iteration count exact arithmetic predicts for the given
      // l₀, or for l₀ = 2⁻⁵² when it is estimated at run time (the worst case in double).
      const double l0 = o.qdwh.lower_bound > 0.0 ? o.qdwh.lower_bound : 0x1p-52;
      int qr = 0, chol = 0;
      double l = l0;
      for (int t = 0; t < qdwh_predicted_iterations(l0, 0x1p-52); ++t) {
        const QdwhWeights w = qdwh_weights(l);
        (w.c > 100.0 ? qr : chol)++;
        l = w.next_lower;
      }
      for (const GemmShape& g :
           qdwh_gemm_shapes(rows, cols, qr, chol, o.qdwh.lower_bound < 0.0, o.qdwh.polish))
        add(g.m, g.n, g.k, g.count, g.kind);
    } else if (o.method == PolarMethod::gram_newton_schulz) {
      auto restart = [&](int t) { return gram_restart_before(o, t); };
      if (T > 0) {
        add_sym(k, n);  // R = X Xᵀ
        for (int t = 0; t < T; ++t) {
          if (restart(t)) {
            add(k, n, k);
            add_sym(k, n);
          }                                                   // X ← Q X, R = X Xᵀ
          if (s.at(t).c != 0.0) add_sym(k, k);                // R²
          if (t > 0 && !restart(t)) add(k, k, k);             // Q Z
          if (t + 1 < T && !restart(t + 1)) add(k, k, k, 2);  // R ← (aI+Z) R (aI+Z)
        }
        add(k, n, k);  // Q X
      }
    } else {
      for (int t = 0; t < T; ++t) {
        add_sym(k, n);                        // A = X Xᵀ
        if (s.at(t).c != 0.0) add_sym(k, k);  // A²
        add(k, n, k);                         // B X
      }
    }
    // polar() reports the orthogonality when either flag asks (dispatch.hpp); the QDWH one was
    // not counted here (audit of 2026-12-07).
    if (o.compute_orthogonality_error ||
        (o.method == PolarMethod::qdwh && o.qdwh.compute_orthogonality_error)) {
      if (o.method == PolarMethod::qdwh)
        add(k, k, n);
      else
        add_sym(k, n);
    }
  }
  std::vector<GemmShape> shapes;
  for (const auto& [key, c] : count)
    shapes.push_back(
        {std::get<0>(key), std::get<1>(key), std::get<2>(key), c, static_cast<OpKind>(std::get<3>(key))});
  return shapes;
}

double polar_flops(index_t rows, index_t cols, const PolarOptions& o) {
  return total_flops(polar_gemm_shapes(rows, cols, o));
}

}  // namespace schatten
