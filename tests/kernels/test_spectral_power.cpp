// SPDX-License-Identifier: Apache-2.0
/// \file
/// spectral_power(), its rational approximations, the floor, and Schatten norms, against SVD
/// oracles in double.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "schatten/kernels/spectral_power.hpp"
#include "schatten/reference/polar.hpp"
#include "support/allocations.hpp"
#include "support/batching.hpp"
#include "support/convert.hpp"
#include "support/methods.hpp"
#include "support/oracle.hpp"
#include "support/seed.hpp"
#include "support/spectra.hpp"

namespace kernels_test_spectral_power {  // this file's scope in a unity build (tests/CMakeLists.txt)

using namespace schatten;
using namespace schatten::test;

namespace {

/// Independent evaluation of a rational approximation from its poles and weights
/// (docs/kernels/spectral_power.md, written from the formulas, not from RationalPower::operator()).
double eval_rational(const RationalPower& r, double x) {
  if (r.alpha == -1.0) return x / ((x + r.floor) * (x + r.floor));
  double s = 0.0;
  for (std::size_t j = 0; j < r.poles.size(); ++j)
    s += r.alpha > 0 ? r.weights[j] * x / (x + r.poles[j]) : r.weights[j] / (x + r.poles[j]);
  return r.alpha > 0 ? s : s * x / (x + r.floor);
}

/// The composite of the schedule's odd quintics at x, written from the formula
/// x ← x(a + b x² + c x⁴) (not CoefficientSchedule::apply).
double composite(const CoefficientSchedule& s, double x) {
  for (const OddQuintic& q : s.steps)
    x = x * (q.a + x * x * (q.b + x * x * q.c));
  return x;
}

/// The documented log-error bands of polynomial_power_schedule (docs/kernels/spectral_power.md),
/// rounding of α to the table's 0.01 grid included.
double power_band(int steps) { return steps == 5 ? 0.42 : steps == 6 ? 0.26 : 0.12; }

struct Factored {
  Eigen::MatrixXd a, u, v;
  std::vector<double> sigma;
};

Factored factored(index_t r, index_t c, std::vector<double> sigma, std::uint64_t seed) {
  const index_t k = std::min(r, c);
  std::vector<double> u, v;
  Factored f{Eigen::MatrixXd(r, c), {}, {}, sigma};
  REQUIRE(reference::matrix_with_spectrum(MatrixRef<double>::col_major(f.a.data(), r, c), sigma, seed, &u,
                                          &v) == Status::ok);
  f.u = from_row_major(u.data(), r, k);
  f.v = from_row_major(v.data(), c, k);
  return f;
}

/// The spectral map the options select: spectral_power() or spectral_clip().
template <class T>
SpectralPowerReport apply_map(BatchedMatrixRef<const T> a, BatchedMatrixRef<T> out,
                              const SpectralPowerOptions& o) {
  return spectral_power(a, out, o);
}
template <class T>
SpectralPowerReport apply_map(BatchedMatrixRef<const T> a, BatchedMatrixRef<T> out,
                              const SpectralClipOptions& o) {
  return spectral_clip(a, out, o);
}

/// The map applied to one matrix in T; the call must succeed.
template <class T, class Options>
Eigen::MatrixXd run_map(const Eigen::MatrixXd& a, const Options& o, SpectralPowerReport* rep = nullptr) {
  std::vector<T> in = to_row_major<T>(a), out(in.size());
  const SpectralPowerReport r = apply_map<T>(MatrixRef<const T>(in.data(), a.rows(), a.cols()),
                                             MatrixRef<T>(out.data(), a.rows(), a.cols()), o);
  REQUIRE(r.status == Status::ok);
  if (rep) *rep = r;
  return from_row_major(out.data(), a.rows(), a.cols());
}

/// A zero matrix gives zero, and a batch [0, a] equals the single call on a: bit for bit on the
/// host, and for the rational method everywhere (it runs QDWH matrix by matrix). On CUDA the
/// polynomial method's batch is one strided-batched GEMM per product (batching.hpp): the kernel
/// runs in double, another summation order moves each product by ≤ k·u (k ≤ 12 here,
/// u = 1.1e-16), and the composite map amplifies that by at most its largest slope, ≤ 1e3 (the
/// slope at 0 is F(1e-3)/1e-3 ≤ (1e-3)^(α-1) ≤ 1e3 for α ≥ 0): ≤ 5·12·u·1e3 ≈ 7e-12 over 5
/// steps, below the 1e-10 used, while a batching error (wrong matrix, lost scale) is O(1).
/// (The same holds for spectral_clip(), which runs QDWH matrix by matrix on every build.)
template <class Options>
void check_zero_and_batch(const Eigen::MatrixXd& a, const Options& o) {
  const index_t r = a.rows(), c = a.cols();
  std::vector<double> z(static_cast<std::size_t>(2 * r * c), 0.0), zo(z.size(), 1.0);
  const std::vector<double> m = to_row_major<double>(a);
  std::copy(m.begin(), m.end(), z.begin() + r * c);
  REQUIRE(apply_map<double>(BatchedMatrixRef<const double>(z.data(), 2, r, c),
                            BatchedMatrixRef<double>(zo.data(), 2, r, c), o)
              .status == Status::ok);
  for (index_t i = 0; i < r * c; ++i)
    CHECK(zo[static_cast<std::size_t>(i)] == 0.0);
  std::vector<double> one(static_cast<std::size_t>(r * c));
  REQUIRE(apply_map<double>(MatrixRef<const double>(m.data(), r, c), MatrixRef<double>(one.data(), r, c), o)
              .status == Status::ok);
  CHECK(agree_as_batch(zo.data() + r * c, one.data(), one.size(), 1e-10));
}

/// A non-finite entry (NaN by default) in the second matrix of a float batch of two:
/// non_finite_input naming matrix 1, and nothing written.
template <class Options>
void check_non_finite_refused(index_t r, index_t c, const Options& o,
                              float bad = std::numeric_limits<float>::quiet_NaN()) {
  std::vector<float> a(static_cast<std::size_t>(2 * r * c), 0.5f), out(a.size(), -5.0f);
  a[static_cast<std::size_t>(r * c + 3)] = bad;
  const SpectralPowerReport rep = apply_map<float>(BatchedMatrixRef<const float>(a.data(), 2, r, c),
                                                   BatchedMatrixRef<float>(out.data(), 2, r, c), o);
  CHECK(rep.status == Status::non_finite_input);
  CHECK(rep.bad_item == 1);
  for (float x : out)
    CHECK(x == -5.0f);
}

/// σ + c·(clip(σ) − σ) with clip(σ) for these options (support/oracle.hpp) and c = o.blend: the
/// singular value of (1 − c)·A + c·U clip(Σ) Vᵀ.
double clipped(double sigma, const SpectralClipOptions& o) {
  return sigma + o.blend * (schatten::test::clipped(sigma, o.lower, o.upper) - sigma);
}

/// What the polynomial spectral clip returns for a singular value σ in exact arithmetic, from
/// the formulas of docs/kernels/spectral_power.md ("Polynomial clipping"), written here
/// independently of the kernel: x = σ/ν, h = x·f(x), per bound t = β/ν (capped at 2B) the sign
/// f(c(h − t)) with c = 1/(1.05·max(t, B − t)), B = max |f| on [0, 1] (dense sampling here), the
/// projectors p_l = ½(1 + s_l) and m_u = ½(1 − s_u) polished by g(p) = p²(2 − p), y = t_l +
/// (h − t_l)·g(p_l), clip = t_u + (y − t_u)·g(m_u) (y = t_l for a capped lower bound, clip = y
/// for a capped upper one), output ν·f(x)·clip (× t_l/2B when the lower bound was capped); with
/// a blend c, (1 − c)·σ + c·(that).
struct PolynomialClipImage {
  std::vector<PolyStep> rows;  ///< the schedule's rows in the oracle's type (support/methods.hpp)
  int steps;
  double nu, bound;
  SpectralClipOptions o;
  PolynomialClipImage(const SpectralClipOptions& opt, double fro)
      : rows(oracle_steps(opt.polar)), steps(opt.polar.iterations), o(opt) {
    const Normalization nz = resolved_schedule(opt.polar).normalization;
    nu = nz.safety * fro + nz.eps;
    bound = 0.0;
    for (int i = 0; i <= 100000; ++i)
      bound = std::max(bound, std::fabs(f(i / 100000.0)));
  }
  /// The composite map (support/oracle.hpp, repeat-last past the table).
  double f(double x) const { return schatten::test::composite(rows, x, steps); }
  double operator()(double sigma) const {
    const double x = sigma / nu, fx = f(x), h = x * fx, cap = 2 * bound;
    const bool lower = o.lower > 0, upper = std::isfinite(o.upper);
    const double tl_raw = o.lower / nu, tl = std::min(tl_raw, cap), tu = std::min(o.upper / nu, cap);
    auto sign = [&](double t) { return f((h - t) / (1.05 * std::max(t, bound - t))); };
    auto g = [](double p) { return p * p * (2 - p); };  // the projector's polish
    const double y = !lower ? h : tl == cap ? tl : tl + (h - tl) * g(0.5 * (1 + sign(tl)));
    const double clip = !upper || tu == cap ? y : tu + (y - tu) * g(0.5 * (1 - sign(tu)));
    const double image = nu * fx * clip * (lower && tl_raw > cap ? tl_raw / cap : 1.0);
    return (1.0 - o.blend) * sigma + o.blend * image;
  }
};

/// Bounds of a spectral_clip test case, and its SpectralClipOptions::blend.
struct ClipBounds {
  double lower, upper, blend = 1.0;
};

/// The clip tests' cases: for each shape (80 × 120, 150 × 64) and each bound pair, a matrix with
/// the prescribed spectrum geometric(k, ratio, 3.7) (seeded from `name`, the shape and the
/// pair's index) and the options with those bounds and `method`; body(f, o) checks one case.
template <class Body>
void for_each_clip_case(const char* name, const std::vector<ClipBounds>& cases, double ratio,
                        SpectralClipMethod method, const Body& body) {
  for (std::uint64_t which = 0; which < cases.size(); ++which) {
    for (const auto& shape : {std::pair<index_t, index_t>{80, 120}, {150, 64}}) {
      const index_t r = shape.first, c = shape.second;  // not a binding: CAPTURE's lambda uses it
      const double lower = cases[which].lower, upper = cases[which].upper, blend = cases[which].blend;
      CAPTURE(lower);
      CAPTURE(upper);
      CAPTURE(blend);
      CAPTURE(r);
      const std::uint64_t seed = case_seed(name, static_cast<std::uint64_t>(r) + 1000 * which);
      CAPTURE(seed);
      SpectralClipOptions o;
      o.lower = lower;
      o.upper = upper;
      o.blend = blend;
      o.method = method;
      body(factored(r, c, geometric(std::min(r, c), ratio, 3.7), seed), o);
    }
  }
}

}  // namespace

TEST_SUITE("kernels.spectral_power") {
  TEST_CASE("rational approximations of x^alpha meet their tolerance on [floor 1]") {
    for (double alpha : {0.75, 0.5, 0.25, 0.1, 0.9, 0.02, -1.0 / 3, -0.5, -0.9, -1.0}) {
      CAPTURE(alpha);
      RationalPower r;
      REQUIRE(rational_power_approximation(alpha, 1e-6, 1e-3, r) == Status::ok);
      if (alpha != -1.0) CHECK(r.poles.size() <= 12);
      // Little cancellation between the terms: Σ|w_j b_j(x)| ≤ 100·|g(x)| on [floor, 1], so the
      // double-precision rational stage loses at most 2 digits to it.
      double worst_cancel = 0.0;
      for (int i = 0; i <= 2000; ++i) {
        const double x = 1e-6 * std::pow(1e6, i / 2000.0);
        double sum_abs = 0.0, sum = 0.0;
        for (std::size_t j = 0; j < r.poles.size(); ++j) {
          const double b = alpha > 0 ? x / (x + r.poles[j]) : 1.0 / (x + r.poles[j]);
          sum_abs += std::fabs(r.weights[j] * b);
          sum += r.weights[j] * b;
        }
        if (!r.poles.empty()) worst_cancel = std::max(worst_cancel, sum_abs / std::fabs(sum));
      }
      CHECK(worst_cancel <= 100.0);
      double worst = 0.0;
      for (int i = 0; i <= 20000; ++i) {
        const double x = 1e-6 * std::pow(1e6, i / 20000.0);
        const double g = eval_rational(r, x);
        CHECK(g == doctest::Approx(r(x)).epsilon(1e-12));
        // Relative error of g against x^α: the fit (≤ 1e-3) plus, for α < 0, the filter
        // deviation φ/x (2φ/x for α = −1) — at most 2e-3 from x = 1e-3 on, the range.
        if (x >= 1e-3) worst = std::max(worst, std::fabs(g / std::pow(x, alpha) - 1.0));
      }
      CHECK(worst <= 3e-3);
      // Below the floor nothing is amplified: g(x) ≤ about 20·x·floor^{α−1} (documented, measured:
      // ≤ 20 at this tolerance, 1e-3; 20.4 at 1e-5).
      for (double x : {9e-7, 3e-7, 1e-7, 1e-9, 1e-11, 1e-15})
        CHECK(eval_rational(r, x) <= 20 * x * std::pow(1e-6, alpha - 1));
      CHECK(eval_rational(r, 0.0) == 0.0);
    }
    RationalPower r;
    CHECK(rational_power_approximation(0.0, 1e-6, 1e-3, r) == Status::invalid_argument);
    CHECK(rational_power_approximation(1.5, 1e-6, 1e-3, r) == Status::invalid_argument);
    CHECK(rational_power_approximation(0.5, 0.0, 1e-3, r) == Status::invalid_argument);
    CHECK(rational_power_approximation(0.5, 1e-6, 0.5, r) == Status::invalid_argument);
  }

  TEST_CASE("rational approximations: a floor below 1e-300 is refused, not fitted with NaN weights") {
    // A subnormal floor (4.9e-324) overflowed the fit's pole grid (ratio 10⁴/floor): NaN
    // weights, whose NaN error std::max dropped, so the fit was reported ok with fit_error 0;
    // spectral_power() then refused a finite input as out_of_range. Now floors below
    // rational_smallest_floor are invalid_argument (nothing written), and at that floor the fit
    // is finite and honestly not_converged (24 poles reach ~1e-30 at most).
    RationalPower r;
    for (const double floor : {4.9e-324, 1e-310, 1e-301}) {
      CAPTURE(floor);
      CHECK(rational_power_approximation(0.5, floor, 1e-3, r) == Status::invalid_argument);
      SpectralPowerOptions o;
      o.floor = floor;
      CHECK(check_spectral_power_options(o) != nullptr);
      std::vector<double> a = {1.0, 0.0, 0.0, 0.0, 0.5, 0.0}, out(6, -3.0);
      CHECK(spectral_power(MatrixRef<const double>(a.data(), 2, 3), MatrixRef<double>(out.data(), 2, 3), o)
                .status == Status::invalid_argument);
      CHECK(std::all_of(out.begin(), out.end(), [](double x) { return x == -3.0; }));
      SchattenNormOptions no;
      no.floor = floor;
      double norm = -1.0;
      CHECK(schatten_norm(MatrixRef<const double>(a.data(), 2, 3), 1.5, &norm, no) ==
            Status::invalid_argument);
      CHECK(norm == -1.0);
    }
    REQUIRE(rational_power_approximation(0.5, rational_smallest_floor, 1e-3, r) == Status::not_converged);
    CHECK(r.fit_error > 1e-3);
    CHECK(r.fit_error <= 1e300);
    for (std::size_t j = 0; j < r.poles.size(); ++j) {
      CHECK(std::isfinite(r.poles[j]));
      CHECK(std::isfinite(r.weights[j]));
    }
  }

  TEST_CASE("rational fits and power schedules on an exhausted heap: out_of_memory, never an exception") {
    // rational_power_approximation(), polynomial_power_schedule() and
    // polynomial_power_polar_options() return a status, but let std::bad_alloc escape (the fit,
    // the rows, the caches' nodes); polynomial_power_iterate_bound() too. Every host allocation
    // of a first call (a key no other test uses) is refused in turn (the fit's ~1700 every 97th,
    // each attempt refits from scratch): no exception, out_of_memory, the output untouched.
    RationalPower untouched;
    untouched.alpha = -7.0;
    std::int64_t k = 1;
    for (;; k += k < 8 ? 1 : 97) {
      RationalPower r = untouched;
      const auto at =
          refusing_allocation(k, [&] { return rational_power_approximation(0.4321, 2e-5, 1.5e-3, r); });
      CHECK_FALSE(at.threw);
      if (!at.refused) {
        CHECK(at.result == Status::ok);
        CHECK(r.alpha == 0.4321);
        break;
      }
      CHECK(at.result == Status::out_of_memory);
      CHECK(r.alpha == -7.0);
      CHECK(r.poles.empty());
    }
    CHECK(k > 8);  // the fit allocates, so the sweep saw refusals
    for (k = 1;; ++k) {
      PowerSchedule ps;
      ps.alpha = -7.0;
      const auto at = refusing_allocation(k, [&] { return polynomial_power_schedule(0.4321, 6, ps); });
      CHECK_FALSE(at.threw);
      if (!at.refused) break;
      CHECK(at.result == Status::out_of_memory);
      CHECK(ps.alpha == -7.0);
    }
    SpectralPowerOptions so;
    so.method = SpectralPowerMethod::polynomial;
    so.alpha = 0.4322;
    so.polynomial_steps = 8;
    for (k = 1;; ++k) {
      PolarOptions po;
      po.iterations = -7;
      const auto at = refusing_allocation(k, [&] { return polynomial_power_polar_options(so, po); });
      CHECK_FALSE(at.threw);
      if (!at.refused) break;
      CHECK(at.result == Status::out_of_memory);
      CHECK(po.iterations == -7);
    }
    so.polynomial_compute = Precision::fp16;
    for (k = 1;; ++k) {
      const auto at = refusing_allocation(k, [&] { return polynomial_power_iterate_bound(so); });
      CHECK_FALSE(at.threw);
      if (!at.refused) break;
    }
  }

  TEST_CASE_TEMPLATE("spectral_power reaches 1e-2 relative accuracy in float on [1e-3 1] (issue #3)", T,
                     float, double) {
    // Every singular direction of the output is compared with σ_i^α: u_iᵀ out v_i / σ_i^α − 1,
    // and the leakage between directions ‖Uᵀ out V − diag‖_F relative to ‖diag‖. The target is
    // 1e-2 in float; the approximation tolerance (1e-3) and floor (1e-6) are the defaults, so
    // the expected error is ~2e-3 (fit + filter) plus rounding of QDWH (k·ε of its precision).
    const double target = 1e-2;
    for (double alpha : {0.75, 0.5, 0.25, 0.1, -1.0 / 3, -0.5}) {
      for (const auto& shape : {std::pair<index_t, index_t>{80, 120}, {150, 64}}) {
        const index_t r = shape.first, c = shape.second;  // not a binding: CAPTURE's lambda uses it
        CAPTURE(alpha);
        CAPTURE(r);
        const index_t k = std::min(r, c);
        const double scale = 3.7;  // not normalised: the output must be in the units of A
        std::vector<double> sigma = geometric(k, 1e-3, scale);
        const std::uint64_t seed =
            case_seed("spectral_power", static_cast<std::uint64_t>(r + 1000 * (alpha + 2)));
        CAPTURE(seed);
        const Factored f = factored(r, c, sigma, seed);
        SpectralPowerOptions o;
        o.alpha = alpha;
        const Eigen::MatrixXd out = run_map<T>(rounded<T>(f.a), o);
        const Eigen::MatrixXd d = f.u.transpose() * out * f.v;
        double worst = 0.0;
        Eigen::MatrixXd want = Eigen::MatrixXd::Zero(k, k);
        for (index_t i = 0; i < k; ++i) {
          want(i, i) = std::pow(sigma[static_cast<std::size_t>(i)], alpha);
          worst = std::max(worst, std::fabs(d(i, i) / want(i, i) - 1.0));
        }
        CHECK(worst <= target);
        CHECK((d - want).norm() / want.norm() <= target);
        // And against the SVD reference of the (rounded) input, as one matrix.
        std::vector<double> ad = to_row_major<double>(rounded<T>(f.a)), ref(ad.size());
        REQUIRE(reference::spectral_power(MatrixRef<const double>(ad.data(), r, c),
                                          MatrixRef<double>(ref.data(), r, c), alpha) == Status::ok);
        CHECK(relative_error(out, from_row_major(ref.data(), r, c)) <= target);
      }
    }
  }

  TEST_CASE(
      "spectral_power special exponents: 1 copies and 0 is the polar factor and -1 the filtered inverse") {
    const index_t r = 40, c = 30;
    const std::vector<double> sigma = geometric(30, 1e-2, 2.0);
    const Factored f = factored(r, c, sigma, case_seed("special_alpha"));
    SpectralPowerOptions o;
    o.alpha = 1.0;
    SpectralPowerReport rep;
    CHECK(run_map<double>(f.a, o, &rep) == f.a);
    CHECK(rep.qdwh_iterations == 0);
    o.alpha = 0.0;
    CHECK((run_map<double>(f.a, o) - f.u * f.v.transpose()).norm() <= 1e-12);
    o.alpha = -1.0;
    o.floor = 1e-3;
    const Eigen::MatrixXd inv = run_map<double>(f.a, o, &rep);
    CHECK(rep.poles == 1);
    // g(σ) = σ/(σ + φ)² with φ = floor·α̂, where QDWH's scale α̂ (1.02 × its σ_max estimate) lies
    // in [0.938, 1.02]·‖A‖₂ (docs/kernels/qdwh.md) and is not reported. So: each direction's value
    // g_i = u_iᵀ out v_i, with no leakage between directions (double: measured 6e-15 relative,
    // seeds 1–3, 258 and the default; checked at 1e-9); φ̂ solved from the smallest σ (2e-2,
    // where g moves most with φ) within that range; and every g_i that of the same φ̂ (1e-9). A
    // wrong form is far off: at σ = 2e-2, φ's whole range moves g by 1.5 %, a single filter
    // 1/(σ + φ) is 10 % off and 1/σ 21 %. (At seed 258 of 330 a single-pass σ_max estimate
    // stopped at σ₂ = 0.853·σ_max, so α̂ was 0.87·‖A‖₂; linalg.hpp's second pass fixed that. The
    // check before, written for α̂ = 1.02·‖A‖₂, had caught it as a 2 % error.)
    Eigen::VectorXd g(30);
    for (index_t i = 0; i < 30; ++i)
      g(i) = f.u.col(i).dot(inv * f.v.col(i));
    CHECK(relative_error(inv, f.u * g.asDiagonal() * f.v.transpose()) <= 1e-9);
    const double smin = sigma[29], phi = std::sqrt(smin / g(29)) - smin;
    CAPTURE(phi);
    CHECK(phi >= 1e-3 * 2.0 * 0.938);
    CHECK(phi <= 1e-3 * 2.0 * 1.02 * (1 + 1e-9));
    for (index_t i = 0; i < 30; ++i) {
      CAPTURE(i);
      CHECK(g(i) == doctest::Approx(sigma[i] / ((sigma[i] + phi) * (sigma[i] + phi))).epsilon(1e-9));
    }
  }

  TEST_CASE("spectral_power: a tolerance the rational fit cannot reach is not_converged, output written") {
    // tolerance = 1e-8 is accepted ([1e-8, 0.1]) but 24 poles reach only ~2e-7 (α = 0.5) and
    // ~1e-6 (α = 0.1) with the default floor; the call once said ok while missing the tolerance
    // by 2.6× and 13.6×. Now: not_converged (status.hpp: output still written), fit_error > the
    // tolerance, and the output is U g(Σ) Vᵀ within fit_error of σ^α (checked against the
    // exact factors, σ ∈ [1e-4, 1] ≫ floor; QDWH adds ~1e-15, far below fit_error).
    const index_t r = 60, c = 40;
    const Factored f = factored(r, c, geometric(40, 1e-4, 1.0), case_seed("power_tolerance"));
    const std::vector<double> in = to_row_major<double>(f.a);
    for (const double alpha : {0.5, 0.1}) {
      CAPTURE(alpha);
      SpectralPowerOptions o;
      o.alpha = alpha;
      o.tolerance = 1e-8;
      std::vector<double> out(in.size(), -3.0);
      const SpectralPowerReport rep =
          spectral_power(MatrixRef<const double>(in.data(), r, c), MatrixRef<double>(out.data(), r, c), o);
      CHECK(rep.status == Status::not_converged);
      CHECK(rep.fit_error > o.tolerance);
      const Eigen::MatrixXd d = f.u.transpose() * from_row_major(out.data(), r, c) * f.v;
      for (index_t i = 0; i < 40; ++i) {
        const double s = f.sigma[static_cast<std::size_t>(i)];
        CHECK(std::fabs(d(i, i) / std::pow(s, alpha) - 1.0) <= rep.fit_error);
      }
      o.tolerance = 1e-5;  // reachable: ok as before
      CHECK(spectral_power(MatrixRef<const double>(in.data(), r, c), MatrixRef<double>(out.data(), r, c), o)
                .status == Status::ok);
    }
  }

  TEST_CASE("spectral_power alpha < 0 in float: an output beyond FLT_MAX is refused, nothing written") {
    // σ ∈ [1e-40, 1e-34] (entries ~1e-35, finite floats): σ^−1 up to 1e40 > FLT_MAX ≈ 3.4e38.
    // It once wrote ±Inf with ok. Now out_of_range, the output untouched; α = −0.5 (σ^α ≤ 1e20)
    // is still computed, within the documented float accuracy (1e-2 relative per singular value,
    // σ/σ_max ≥ 1e-3 here: the first 10 of 20, against the exact factors).
    const index_t r = 30, c = 20;
    const Factored f = factored(r, c, geometric(20, 1e-6, 1e-34), case_seed("power_negative_overflow"));
    const std::vector<float> in = to_row_major<float>(f.a);
    SpectralPowerOptions o;
    o.alpha = -1.0;
    std::vector<float> out(in.size(), -7.0f);
    const SpectralPowerReport rep =
        spectral_power(MatrixRef<const float>(in.data(), r, c), MatrixRef<float>(out.data(), r, c), o);
    CHECK(rep.status == Status::out_of_range);
    CHECK(rep.bad_item == 0);
    CHECK(std::all_of(out.begin(), out.end(), [](float x) { return x == -7.0f; }));
    o.alpha = -0.5;
    REQUIRE(spectral_power(MatrixRef<const float>(in.data(), r, c), MatrixRef<float>(out.data(), r, c), o)
                .status == Status::ok);
    const Eigen::MatrixXd d = f.u.transpose() * from_row_major(out.data(), r, c) * f.v;
    for (index_t i = 0; i < 10; ++i) {
      const double s = f.sigma[static_cast<std::size_t>(i)];
      CHECK(std::fabs(d(i, i) / std::pow(s, -0.5) - 1.0) <= 1e-2);
    }
  }

  TEST_CASE("spectral_power floor: zero and noise-level singular values are never amplified") {
    const index_t r = 60, c = 40;
    std::vector<double> sigma(40, 0.0);
    for (index_t i = 0; i < 20; ++i)
      sigma[static_cast<std::size_t>(i)] = std::pow(10.0, -0.1 * i);  // [0.013, 1]
    for (index_t i = 20; i < 30; ++i)
      sigma[static_cast<std::size_t>(i)] = 1e-9;  // noise
    const Factored f = factored(r, c, sigma, case_seed("floor"));
    for (double alpha : {0.5, -0.5, -1.0}) {
      CAPTURE(alpha);
      SpectralPowerOptions o;
      o.alpha = alpha;
      const Eigen::MatrixXd out = run_map<double>(f.a, o);
      const Eigen::MatrixXd d = f.u.transpose() * out * f.v;
      // φ = floor·α̂ with α̂ = 1.02·‖A‖₂ (QDWH's scale); the roll-off g(σ) ≤ about 20·σ·φ^{α−1}
      // replaces σ^α = 3e-5 (α = .5), 3e4 (α = −.5), 1e9 (α = −1) for the noise directions.
      const double phi = 1e-6 * 1.02;
      for (index_t i = 20; i < 30; ++i)
        CHECK(std::fabs(d(i, i)) <= 20 * 1e-9 * std::pow(phi, alpha - 1));
      // Exactly zero singular values (≈ 1e-16 after rounding A): 20·1e-16·φ^{α−1}, and the
      // rounding of the rational stage, κ(H + φI)·u·‖g(H)‖ ≈ 1e6·2e-16·‖g‖.
      const double gmax = d.diagonal().head(20).cwiseAbs().maxCoeff();
      for (index_t i = 30; i < 40; ++i)
        CHECK(std::fabs(d(i, i)) <= 20 * 1e-16 * std::pow(phi, alpha - 1) + 1e-8 * gmax);
      for (index_t i = 0; i < 20; ++i)
        CHECK(d(i, i) == doctest::Approx(std::pow(sigma[i], alpha)).epsilon(2e-3));
    }
  }

  TEST_CASE("spectral_power bad input and batches") {
    const index_t r = 12, c = 9;
    check_non_finite_refused(r, c, SpectralPowerOptions{}, std::numeric_limits<float>::infinity());
    std::vector<float> a(2 * r * c, 0.5f), out(a.size(), -5.0f);
    SpectralPowerOptions bad;
    bad.alpha = 1.5;
    CHECK(spectral_power(MatrixRef<const float>(a.data(), r, c), MatrixRef<float>(out.data(), r, c), bad)
              .status == Status::invalid_argument);
    bad = {};
    bad.floor = 0.0;
    CHECK(spectral_power(MatrixRef<const float>(a.data(), r, c), MatrixRef<float>(out.data(), r, c), bad)
              .status == Status::invalid_argument);
    // Zero matrix → zero; a batch equals separate calls.
    SpectralPowerOptions o;
    o.alpha = -0.5;
    check_zero_and_batch(factored(r, c, geometric(9, 1e-2), case_seed("batch_power")).a, o);
  }

  TEST_CASE_TEMPLATE("Schatten-q norms from the identities agree with the SVD", T, float, double) {
    const index_t r = 70, c = 50;
    const Factored f = factored(r, c, geometric(50, 1e-3, 5.0), case_seed("schatten_norm"));
    const std::vector<T> a = to_row_major<T>(f.a);
    const std::vector<double> ad(a.begin(), a.end());
    // Double: the rational stage's tolerance (1e-5 relative in Σσ^q, so 1e-5/q in the norm)
    // bounds the error; float: QDWH's k·ε_f. q = 1.001 and 2.004: fractional parts whose fit
    // missed the old default tolerance (1e-6). q = ∞ works in double for both: 1e-13 (the next
    // test case says why).
    for (double q : {0.5, 1.0, 1.001, 1.5, 2.0, 2.004, 3.0, 4.5, std::numeric_limits<double>::infinity()}) {
      CAPTURE(q);
      const double tol = std::isinf(q) ? 1e-13 : sizeof(T) == 8 ? 1e-5 / std::min(q, 1.0) : 1e-4;
      double got = 0.0, want = 0.0;
      REQUIRE(schatten_norm(MatrixRef<const T>(a.data(), r, c), q, &got) == Status::ok);
      REQUIRE(reference::schatten_norm(MatrixRef<const double>(ad.data(), r, c), q, want) == Status::ok);
      CHECK(got == doctest::Approx(want).epsilon(tol));
    }
    double n = 0;
    CHECK(schatten_norm(MatrixRef<const T>(a.data(), r, c), 0.0, &n) == Status::invalid_argument);
    CHECK(schatten_norm(MatrixRef<const T>(a.data(), r, c), -1.0, &n) == Status::invalid_argument);
  }
  TEST_CASE_TEMPLATE("schatten_norm(q = ∞) is accurate to 1e-13 whatever the gap σ₁ − σ₂", T, float, double) {
    // q = ∞ was power iteration on AᵀA until 2026-12-08: an underestimate whose error followed
    // the gap (2.1e-6 at σ₂ = 0.9999σ₁, 1.7e-8 to 2.1e-6 in float), always with ok. Now
    // ‖A‖₂² = λ₁(AᵀA) is bracketed by Rayleigh quotients and Cholesky factorisations of
    // τI − AᵀA (largest_eigenvalue) in double, for float input too. The oracle: the SVD in
    // double of the same (widened) entries. Tolerance 1e-13: the bracket's width δ = 8ku in λ₁
    // (4ku = 2.2e-14 in σ₁ at k = 50), the Gram's rounding in double (at most about m·u = 8e-15
    // relative for σ₁) and the SVD's own (a few k·u).
    const index_t m = 70, k = 50;
    SchattenNormOptions fp32;
    fp32.qdwh.compute = Precision::fp32;  // (unused by q = ∞: the same bits)
    const double inf = std::numeric_limits<double>::infinity();
    std::vector<T> batch;
    std::vector<double> singles;
    for (const double gap : {1e-1, 1e-2, 1e-4, 1e-6, 1e-9, 1e-12, 0.0}) {
      CAPTURE(gap);
      std::vector<double> sigma = geometric(k, 1e-3, 0.9);
      sigma[0] = 1.0;
      sigma[1] = 1.0 - gap;
      const std::uint64_t seed =
          case_seed("schatten_norm_inf", static_cast<std::uint64_t>(-std::log10(gap + 1e-300)));
      CAPTURE(seed);
      const Factored f = factored(m, k, sigma, seed);
      for (const bool wide : {false, true}) {
        CAPTURE(wide);
        const Eigen::MatrixXd e = wide ? Eigen::MatrixXd(f.a.transpose()) : f.a;
        const index_t r = e.rows(), c = e.cols();
        const std::vector<T> a = to_row_major<T>(e);
        const std::vector<double> ad(a.begin(), a.end());
        double got = -1.0, want = 0.0, got32 = -1.0;
        REQUIRE(schatten_norm(MatrixRef<const T>(a.data(), r, c), inf, &got) == Status::ok);
        REQUIRE(reference::schatten_norm(MatrixRef<const double>(ad.data(), r, c), inf, want) == Status::ok);
        CHECK(std::fabs(got / want - 1.0) <= 1e-13);
        REQUIRE(schatten_norm(BatchedMatrixRef<const T>(MatrixRef<const T>(a.data(), r, c)), inf, &got32,
                              fp32) == Status::ok);
        CHECK(got32 == got);
        if (!wide) {
          batch.insert(batch.end(), a.begin(), a.end());
          singles.push_back(got);
        }
      }
    }
    // A batch gives each matrix's norm as alone, bit for bit (the same work in the same order).
    std::vector<double> norms(singles.size(), -1.0);
    REQUIRE(schatten_norm(BatchedMatrixRef<const T>(batch.data(), static_cast<index_t>(singles.size()), m, k),
                          inf, norms.data()) == Status::ok);
    CHECK(norms == singles);
    // One column or one row: its single singular value is its Frobenius norm, for every q.
    const std::vector<T> col = {T(3), T(0), T(-4)};
    for (const double q : {0.5, 1.0, 3.0, inf}) {
      CAPTURE(q);
      double n = -1.0;
      REQUIRE(schatten_norm(MatrixRef<const T>(col.data(), 3, 1), q, &n) == Status::ok);
      CHECK(n == 5.0);
      REQUIRE(schatten_norm(MatrixRef<const T>(col.data(), 1, 3), q, &n) == Status::ok);
      CHECK(n == 5.0);
    }
  }

  TEST_CASE("schatten_norm: a tolerance the rational fit cannot reach is not_converged, norms written") {
    // The norm once came back ok with the best fit, whatever it reached. Tolerance 1e-8 at the
    // default floor: 24 poles reach about 1e-6 for these fractional parts. Now not_converged,
    // with the norms written as before: within the fit's error (relative in Σσ^q, so
    // fit_error/q in the norm) of the SVD's, plus 1e-12 for QDWH and the sums.
    const index_t r = 40, c = 30;
    const Factored f = factored(r, c, geometric(30, 1e-3, 2.0), case_seed("schatten_norm_tolerance"));
    const std::vector<double> a = to_row_major<double>(f.a);
    for (const double q : {1.5, 0.1}) {
      CAPTURE(q);
      SchattenNormOptions o;
      o.tolerance = 1e-8;
      RationalPower best;
      REQUIRE(rational_power_approximation(q - std::floor(q), o.floor, o.tolerance, best) ==
              Status::not_converged);
      CHECK(best.fit_error > o.tolerance);
      double got = -1.0, want = 0.0;
      CHECK(schatten_norm(BatchedMatrixRef<const double>(MatrixRef<const double>(a.data(), r, c)), q, &got,
                          o) == Status::not_converged);
      REQUIRE(reference::schatten_norm(MatrixRef<const double>(a.data(), r, c), q, want) == Status::ok);
      CHECK(std::fabs(got / want - 1.0) <= best.fit_error / q + 1e-12);
      o.tolerance = 1e-5;  // reachable: ok
      CHECK(schatten_norm(BatchedMatrixRef<const double>(MatrixRef<const double>(a.data(), r, c)), q, &got,
                          o) == Status::ok);
    }
    // q = 3 has no fractional part, hence no fit: any tolerance is ok.
    SchattenNormOptions o;
    o.tolerance = 1e-8;
    double got = 0.0;
    CHECK(schatten_norm(BatchedMatrixRef<const double>(MatrixRef<const double>(a.data(), r, c)), 3.0, &got,
                        o) == Status::ok);
  }

  TEST_CASE("schatten_norm: a QDWH that reaches max_iterations is not_converged, as spectral_power's") {
    // schatten_norm ignored QDWH's not_converged and returned ok where spectral_power() reported
    // not_converged on the same matrix (kernel audit of 2026-12-07). Forced here with
    // max_iterations = 1 (κ = 1e3 needs 4): both report not_converged and both write their
    // outputs; with the default cap both are ok.
    const index_t r = 20, c = 12;
    const Factored f = factored(r, c, geometric(12, 1e-3, 1.0), case_seed("schatten_norm_qdwh_cap"));
    const std::vector<double> a = to_row_major<double>(f.a);
    std::vector<double> out(a.size(), -7.0);
    for (const int cap : {1, 16}) {
      CAPTURE(cap);
      const Status want = cap == 1 ? Status::not_converged : Status::ok;
      SchattenNormOptions o;
      o.qdwh.max_iterations = cap;
      double got = -1.0;
      CHECK(schatten_norm(BatchedMatrixRef<const double>(MatrixRef<const double>(a.data(), r, c)), 1.0, &got,
                          o) == want);
      CHECK(got > 0.0);
      SpectralPowerOptions po;
      po.qdwh.max_iterations = cap;
      CHECK(spectral_power(MatrixRef<const double>(a.data(), r, c), MatrixRef<double>(out.data(), r, c), po)
                .status == want);
      CHECK(out[0] != -7.0);
    }
  }

  TEST_CASE("schatten_norm at extreme q: no underflow of the sum, no overflow of its root, no hang") {
    // Σσ^q of A/‖A‖ underflowed for large q (σ(H₀) ≈ 0.98: 0.98^40000 < 1e-308; at q = 4e4 the
    // norm came back 1.3e-3 high, at larger q zero), ⌊q⌋ was cast to int (q = 3e9, 1e300:
    // undefined, a wrong norm with ok) and cost ⌊q⌋ GEMMs; (Σσ^q)^(1/q) overflowed for small q
    // although the norm, 2^(1/q)·σ of a tiny matrix, is representable. Prescribed spectrum
    // (σ, σ/3, 0, …) in a 6 × 9 matrix, norm = σ·(1 + 3^-q)^(1/q) in closed form.
    const index_t r = 6, c = 9;
    const Factored f =
        factored(r, c, {1.0, 1.0 / 3.0, 0.0, 0.0, 0.0, 0.0}, case_seed("schatten_norm_extreme_q"));
    const std::vector<double> a = to_row_major<double>(f.a);
    // Large q: the norm is σ_max to QDWH's rounding of H (O(k·u)) and the log-domain root
    // (≤ 2.3e-13); 1e-10 is far above both and far below the old 1.3e-3.
    for (const double q : {400.0, 4e4, 1e6 + 0.5, 3e9, 1e300}) {
      CAPTURE(q);
      double got = -1.0;
      REQUIRE(schatten_norm(BatchedMatrixRef<const double>(MatrixRef<const double>(a.data(), r, c)), q,
                            &got) == Status::ok);
      CHECK(got == doctest::Approx(std::pow(1.0 + std::pow(3.0, -q), 1.0 / q)).epsilon(1e-10));
    }
    // Small q of a tiny matrix with equal singular values σ: the norm is 2^(1/q)·σ = 2^1100·1e-300
    // ≈ 1.4e31, while (Σσ_i(H₀)^q)^(1/q) alone is ~2^1100 > DBL_MAX. Accuracy: the fit's relative
    // error in Σσ^q (tolerance 1e-5) raised to 1/q = 1100, ≤ 1.1 %; 2 % is checked.
    const Factored g =
        factored(r, c, {1e-300, 1e-300, 0.0, 0.0, 0.0, 0.0}, case_seed("schatten_norm_small_q"));
    const std::vector<double> b = to_row_major<double>(g.a);
    const double q = 1.0 / 1100.0;
    double got = -1.0;
    REQUIRE(schatten_norm(BatchedMatrixRef<const double>(MatrixRef<const double>(b.data(), r, c)), q, &got) ==
            Status::ok);
    CHECK(got == doctest::Approx(std::ldexp(1e-300, 1100)).epsilon(0.02));
  }

  TEST_CASE("polynomial power schedules stay within their documented bands for every alpha") {
    for (int steps : {5, 6, 8}) {
      double worst_all = 0.0;
      for (int ia = 0; ia <= 400; ++ia) {
        const double alpha = ia / 400.0;  // a 0.0025 grid: between and on the table's nodes
        CAPTURE(steps);
        CAPTURE(alpha);
        PowerSchedule ps;
        REQUIRE(polynomial_power_schedule(alpha, steps, ps) == Status::ok);
        REQUIRE(ps.schedule.steps.size() == static_cast<std::size_t>(steps));
        CHECK(ps.schedule.tail == ScheduleTail::error);
        CHECK(ps.schedule.normalization.kind == Normalization::Kind::frobenius);
        CHECK(ps.schedule.normalization.safety == 1.0);
        CHECK(ps.relative_error() == doctest::Approx(std::expm1(ps.log_error)));
        // On a grid of its own (10007 points, not the 4000 of the measurement), the composite
        // stays within the band, and the reported error matches what we see to 1e-2.
        double worst = 0.0;
        for (int i = 0; i <= 10006; ++i) {
          const double x = std::pow(1e-3, 1.0 - i / 10006.0);
          const double f = composite(ps.schedule, x);
          REQUIRE(f > 0.0);
          worst = std::max(worst, std::fabs(std::log(f) - alpha * std::log(x)));
        }
        CHECK(worst <= power_band(steps));
        CHECK(worst == doctest::Approx(ps.log_error).epsilon(1e-2));
        worst_all = std::max(worst_all, worst);
        // Below the fitted interval the map is linear with slope ∏a_t: tiny singular values are
        // rolled off, never amplified like x^α, and never change sign.
        double slope = 1.0;
        for (const OddQuintic& q : ps.schedule.steps)
          slope *= q.a;
        CHECK(slope > 0.0);
        for (double x : {1e-6, 1e-9, 1e-12})
          CHECK(composite(ps.schedule, x) == doctest::Approx(slope * x).epsilon(1e-4));
        // Nowhere on [0, 1] does the map leave [0, 2]: no sign flips, no blow-up.
        for (int i = 0; i <= 2000; ++i) {
          const double f = composite(ps.schedule, i / 2000.0);
          CHECK(f >= 0.0);
          CHECK(f <= 2.0);
        }
        // Safe in low precision: the fit bounds every coefficient by 30 and every intermediate
        // image on [0, 1] by 3 (fit_power_schedules.py, on 301 points of [0, 1]; 5 % slack for
        // this denser grid).
        double biggest_coef = 0.0, biggest_image = 0.0;
        for (const OddQuintic& q : ps.schedule.steps)
          biggest_coef = std::max({biggest_coef, std::fabs(q.a), std::fabs(q.b), std::fabs(q.c)});
        for (int i = 0; i <= 2000; ++i) {
          double y = i / 2000.0;
          for (const OddQuintic& q : ps.schedule.steps) {
            y = y * (q.a + y * y * (q.b + y * y * q.c));
            biggest_image = std::max(biggest_image, std::fabs(y));
          }
        }
        CHECK(biggest_coef <= 30.0);
        CHECK(biggest_image <= 3 * 1.05);
      }
      MESSAGE("steps " << steps << ": worst log error over alpha " << worst_all);
    }
    PowerSchedule ps;
    CHECK(polynomial_power_schedule(-0.1, 5, ps) == Status::invalid_argument);
    CHECK(polynomial_power_schedule(1.01, 5, ps) == Status::invalid_argument);
    CHECK(polynomial_power_schedule(std::nan(""), 5, ps) == Status::invalid_argument);
    CHECK(polynomial_power_schedule(0.5, 4, ps) == Status::invalid_argument);
    CHECK(polynomial_power_schedule(0.5, 7, ps) == Status::invalid_argument);
    // α = 1 is the identity, exactly.
    REQUIRE(polynomial_power_schedule(1.0, 5, ps) == Status::ok);
    CHECK(ps.log_error <= 1e-12);  // log(exp(x)) rounding only
  }

  TEST_CASE_TEMPLATE("spectral_power polynomial method keeps the singular vectors and follows its schedule",
                     T, float, double) {
    // Prescribed spectra in [1e-2, 1]·3.7 (so σ/‖A‖_F ≥ 1e-3, inside the fitted interval). The
    // output's singular directions are compared with (1) the exact image ν^α f(σ_i/ν) of the
    // schedule in double — the kernel's own error, rounding only — and (2) σ_i^α, within the
    // schedule's band. Rounding: the composite amplifies the iteration's rounding by at most its
    // slope product (∏a_t ≲ 200 here) at the small singular values, so float allows 2e-2 per
    // direction on the image (measured ≤ 4e-3) and double 1e-8.
    const double tol = sizeof(T) == 4 ? 2e-2 : 1e-8;
    for (int steps : {5, 8}) {
      for (double alpha : {0.9, 0.5, 1.0 / 3.0, 0.1}) {
        for (const auto& shape : {std::pair<index_t, index_t>{80, 120}, {150, 64}}) {
          const index_t r = shape.first, c = shape.second;
          CAPTURE(steps);
          CAPTURE(alpha);
          CAPTURE(r);
          const index_t k = std::min(r, c);
          const std::vector<double> sigma = geometric(k, 1e-2, 3.7);
          const std::uint64_t seed =
              case_seed("polynomial_power", static_cast<std::uint64_t>(r + 1000 * steps + 1e5 * alpha));
          CAPTURE(seed);
          const Factored f = factored(r, c, sigma, seed);
          const Eigen::MatrixXd a = rounded<T>(f.a);
          SpectralPowerOptions o;
          o.alpha = alpha;
          o.method = SpectralPowerMethod::polynomial;
          o.polynomial_steps = steps;
          SpectralPowerReport rep;
          const Eigen::MatrixXd out = run_map<T>(a, o, &rep);
          PowerSchedule ps;
          REQUIRE(polynomial_power_schedule(alpha, steps, ps) == Status::ok);
          CHECK(rep.polynomial_steps == steps);
          CHECK(rep.qdwh_iterations == 0);
          CHECK(rep.fit_error == ps.relative_error());
          const double nu = a.norm();
          const Eigen::MatrixXd d = f.u.transpose() * out * f.v;
          Eigen::MatrixXd image = Eigen::MatrixXd::Zero(k, k);
          double worst_image = 0.0, worst_band = 0.0;
          for (index_t i = 0; i < k; ++i) {
            const double s = sigma[static_cast<std::size_t>(i)];
            image(i, i) = std::pow(nu, alpha) * composite(ps.schedule, s / nu);
            worst_image = std::max(worst_image, std::fabs(d(i, i) / image(i, i) - 1.0));
            worst_band = std::max(worst_band, std::fabs(std::log(d(i, i) / std::pow(s, alpha))));
          }
          CHECK(worst_image <= tol);
          CHECK((d - image).norm() / image.norm() <= tol);
          CHECK(worst_band <= ps.log_error + 2 * tol);
        }
      }
    }
  }

  TEST_CASE("spectral_power polynomial method: special exponents and refusals and batches") {
    const index_t r = 12, c = 9;
    const Factored f = factored(r, c, geometric(9, 1e-2, 2.0), case_seed("polynomial_special"));
    SpectralPowerOptions o;
    o.method = SpectralPowerMethod::polynomial;
    o.alpha = 1.0;
    SpectralPowerReport rep;
    CHECK(run_map<double>(f.a, o, &rep) == f.a);  // α = 1: a validated copy
    o.alpha = 0.0;  // the α = 0 row: an approximate polar factor within the band
    const Eigen::MatrixXd q = run_map<double>(f.a, o, &rep);
    const Eigen::MatrixXd d = f.u.transpose() * q * f.v;
    for (index_t i = 0; i < 9; ++i)
      CHECK(std::fabs(std::log(d(i, i))) <= std::log1p(rep.fit_error) + 1e-12);
    std::vector<float> a(2 * r * c, 0.5f), out(a.size(), -5.0f);
    for (double alpha : {-0.5, 1.5}) {
      o.alpha = alpha;
      const SpectralPowerReport b =
          spectral_power(MatrixRef<const float>(a.data(), r, c), MatrixRef<float>(out.data(), r, c), o);
      CHECK(b.status == Status::invalid_argument);
      CHECK(std::string(b.message).size() > 0);
    }
    o.alpha = 0.5;
    for (int steps : {0, 4, 7, 9}) {
      o.polynomial_steps = steps;
      CHECK(spectral_power(MatrixRef<const float>(a.data(), r, c), MatrixRef<float>(out.data(), r, c), o)
                .status == Status::invalid_argument);
    }
    for (float x : out)  // nothing was written by any refused call
      CHECK(x == -5.0f);
    o.polynomial_steps = 5;
    check_non_finite_refused(r, c, o);
    // Zero matrix → zero; a batch equals separate calls bit for bit.
    check_zero_and_batch(f.a, o);
  }

  TEST_CASE(
      "polynomial_power_iterate_bound holds every tabulated schedule, and the shared options are the "
      "kernel's") {
    // The bound is the largest polar_iterate_bound() over the 101 schedules of T steps. It must
    // hold every intermediate image p_t ∘ … ∘ p_0(x) of every schedule on x ∈ [0, 1] (scanned
    // here in double on 2001 points per schedule, written from the formula), and it stays
    // within 3·(1 + 2⁻²⁰)^T: the fit caps every intermediate image at 3
    // (docs/kernels/spectral_power.md), and polar_iterate_bound widens each step by 2⁻²⁰.
    for (const int steps : {5, 6, 8}) {
      CAPTURE(steps);
      SpectralPowerOptions o;
      o.method = SpectralPowerMethod::polynomial;
      o.polynomial_steps = steps;
      const double bound = polynomial_power_iterate_bound(o);
      CHECK(bound <= 3.0 * std::pow(1.0 + 0x1p-20, steps) + 1e-12);
      double seen = 0.0;
      for (int j = 0; j <= 100; ++j) {
        PowerSchedule ps;
        REQUIRE(polynomial_power_schedule(0.01 * j, steps, ps) == Status::ok);
        for (int i = 0; i <= 2000; ++i) {
          double x = i / 2000.0;
          for (const OddQuintic& q : ps.schedule.steps) {
            x = x * (q.a + x * x * (q.b + x * x * q.c));
            seen = std::max(seen, std::fabs(x));
          }
        }
      }
      CAPTURE(seen);
      CHECK(seen <= bound);
      CHECK(seen >= 0.99 * bound);  // and tight: some schedule's images reach it
    }
    SpectralPowerOptions rational;
    CHECK(polynomial_power_iterate_bound(rational) == HUGE_VAL);
    // polynomial_power_polar_options() is what spectral_power() runs: ν^α times polar() with
    // those options gives the kernel's output to rounding (the kernel folds ν^α into its store
    // pass, here it multiplies afterwards: one rounding of double per entry, so 1e-12 of the
    // norm is ample while a different schedule or step count is off by O(1)), and refuses what
    // the kernel refuses.
    const index_t r = 20, c = 14;
    const Factored f = factored(r, c, geometric(14, 1e-2, 3.0), case_seed("polynomial_polar_options"));
    SpectralPowerOptions o;
    o.method = SpectralPowerMethod::polynomial;
    o.alpha = 0.3;
    PolarOptions po;
    double fit = -1.0;
    REQUIRE(polynomial_power_polar_options(o, po, &fit) == Status::ok);
    CHECK(po.method == PolarMethod::newton_schulz);
    CHECK(po.iterations == 5);
    // The schedule's band, as polynomial_power_schedule() gives it and the kernel reports it.
    PowerSchedule ps;
    REQUIRE(polynomial_power_schedule(o.alpha, o.polynomial_steps, ps) == Status::ok);
    CHECK(fit == ps.relative_error());
    CHECK(fit > 0.0);
    const std::vector<double> in = to_row_major<double>(f.a);
    std::vector<double> q(in.size());
    REQUIRE(polar(MatrixRef<const double>(in.data(), r, c), MatrixRef<double>(q.data(), r, c), po).status ==
            Status::ok);
    const Eigen::MatrixXd expected = std::pow(f.a.norm(), o.alpha) * from_row_major(q.data(), r, c);
    CHECK((run_map<double>(f.a, o) - expected).norm() <= 1e-12 * expected.norm());
    {
      // In 16 bits the options normalise by ν = 1.01·‖A‖_F and the kernel scales by ν^α: the same
      // iterate's bits, then one float rounding of the product (1e-6 is ample), while the
      // factor of ‖A‖_F^α instead would be off by 1 − 1.01^−0.3 = 3e-3.
      SpectralPowerOptions o16 = o;
      o16.polynomial_compute = Precision::fp16;
      PolarOptions po16;
      REQUIRE(polynomial_power_polar_options(o16, po16) == Status::ok);
      CHECK(po16.schedule.normalization.safety == 1.01);
      const std::vector<float> in16 = to_row_major<float>(f.a);
      std::vector<float> q16(in16.size());
      REQUIRE(
          polar(MatrixRef<const float>(in16.data(), r, c), MatrixRef<float>(q16.data(), r, c), po16).status ==
          Status::ok);
      const Eigen::MatrixXd a16 = rounded<float>(f.a);
      const Eigen::MatrixXd expected16 =
          std::pow(1.01 * a16.norm(), o.alpha) * from_row_major(q16.data(), r, c);
      CHECK((run_map<float>(a16, o16) - expected16).norm() <= 1e-6 * expected16.norm());
    }
    {
      std::vector<double> out(in.size());
      const SpectralPowerReport rep =
          spectral_power(MatrixRef<const double>(in.data(), r, c), MatrixRef<double>(out.data(), r, c), o);
      REQUIRE(rep.status == Status::ok);
      CHECK(rep.fit_error == fit);
    }
    const PolarOptions untouched = po;
    o.alpha = -0.5;  // refused by the polynomial method
    CHECK(polynomial_power_polar_options(o, po, &fit) == Status::invalid_argument);
    CHECK(fit == ps.relative_error());  // untouched
    o.alpha = 0.5;
    o.polynomial_steps = 7;
    CHECK(polynomial_power_polar_options(o, po) == Status::invalid_argument);
    o.polynomial_steps = 5;
    o.method = SpectralPowerMethod::rational;
    CHECK(polynomial_power_polar_options(o, po) == Status::invalid_argument);
    CHECK(po.schedule.steps.size() == untouched.schedule.steps.size());
    CHECK(po.iterations == untouched.iterations);
  }

  TEST_CASE_TEMPLATE("spectral_clip gives U clip(S) V^T against the SVD oracle", T, float, double) {
    // Prescribed spectra (3.7 down to 3.7e-3, geometric) and bounds that cut into them from
    // above (the hardcap), from both sides, from below only, and a degenerate [2, 2]. Each
    // singular direction is compared with clip(σ_i): u_iᵀ out v_i − clip(σ_i), relative to σ_max,
    // the leakage between directions ‖Uᵀ out V − diag‖_F, and the whole matrix against the
    // double SVD oracle U clip(Σ) Vᵀ of the (rounded) input. Tolerances: QDWH is backward stable
    // (U_p orthogonal to ~k·ε of its precision) and H and the sign functions are in double, so
    // the error is ~k·ε·σ_max. tol = 1e-12 in double (measured at 80 × 120 and 150 × 64: worst
    // diagonal 6e-16·σ_max, leakage 6e-15·σ_max·√k, whole matrix 6e-14 relative) and 1e-5 in
    // float (float's U_p: 7e-8, 1.3e-6, 6.7e-6); the whole matrix is checked at 10·tol. A wrong
    // bound, sign or lost scale is O(0.1) or more. The last two cases blend: (1 − c)·A + c·clip(A),
    // a hardcap with c = 0.3 (Emerging-Optimizers' spectral clipped weight decay) and a two-sided
    // clip with c = 0.6; a blend that is dropped or inverted is off by ≥ 0.4·|clip(σ) − σ|.
    const double tol = std::is_same<T, float>::value ? 1e-5 : 1e-12;
    const double inf = std::numeric_limits<double>::infinity();
    for_each_clip_case(
        "spectral_clip",
        {{0.0, 1.0}, {-1.0, 0.3}, {0.05, 1.0}, {0.5, inf}, {2.0, 2.0}, {0.0, 1.0, 0.3}, {0.05, 1.0, 0.6}},
        1e-3, SpectralClipMethod::qdwh, [&](const Factored& f, const SpectralClipOptions& o) {
          const index_t k = static_cast<index_t>(f.sigma.size());
          SpectralPowerReport rep;
          const Eigen::MatrixXd out = run_map<T>(rounded<T>(f.a), o, &rep);
          CHECK(rep.qdwh_iterations >= 1);
          const Eigen::MatrixXd d = f.u.transpose() * out * f.v;
          Eigen::MatrixXd want = Eigen::MatrixXd::Zero(k, k);
          double worst = 0.0;
          for (index_t i = 0; i < k; ++i) {
            want(i, i) = clipped(f.sigma[static_cast<std::size_t>(i)], o);
            worst = std::max(worst, std::fabs(d(i, i) - want(i, i)));
          }
          CHECK(worst <= tol * 3.7);
          CHECK((d - want).norm() <= tol * 3.7 * std::sqrt(double(k)));
          const Svd ref = svd(rounded<T>(f.a));
          CHECK(relative_error(out, spectral_map(ref, [&](double x) { return clipped(x, o); })) <= tol * 10);
        });
  }

  TEST_CASE("spectral_clip polynomial method: the scalar map of the default stays in its band") {
    // Dense sweep of the exact-arithmetic image (PolynomialClipImage, independent of the kernel)
    // against clip(σ): σ ∈ [1e-3, 1]·‖A‖_F (1001 log-spaced), bounds β ∈ [1e-3, 1]·‖A‖_F (51
    // log-spaced) as a hardcap [0, β], a lower bound [β, ∞) and a two-sided [β, 3β]. The
    // documented band of the default (Polar Express, 8 steps) is 3e-5·‖A‖_F (measured 2.6e-5;
    // 2.2e-5 with the unpolished identity); with the first 5 rows only the signs have not
    // converged and the error is O(0.1)·‖A‖_F. Singular values 3β and more above a hardcap land
    // on it relative to it: within 1e-5·β (measured 2.4e-6; 1.2e-3 with the identity, whose sign
    // error enters once, not squared).
    const double inf = std::numeric_limits<double>::infinity();
    for (int steps : {8, 5}) {
      CAPTURE(steps);
      double worst = 0.0, worst_capped = 0.0;
      for (int kind = 0; kind < 3; ++kind)
        for (int ib = 0; ib <= 200; ib += 4) {
          const double beta = std::pow(10.0, -3.0 + 3.0 * ib / 200.0);
          SpectralClipOptions o;
          o.method = SpectralClipMethod::polynomial;
          o.polar.iterations = steps;
          o.lower = kind == 0 ? 0.0 : beta;
          o.upper = kind == 0 ? beta : kind == 1 ? inf : 3 * beta;
          const PolynomialClipImage image(o, 1.0);
          for (int ix = 0; ix <= 2000; ix += 2) {
            const double sigma = std::pow(10.0, -3.0 + 3.0 * ix / 2000.0);
            const double e = std::fabs(image(sigma) - clipped(sigma, o));
            worst = std::max(worst, e);
            if (kind == 0 && sigma >= 3 * beta) worst_capped = std::max(worst_capped, e / beta);
          }
        }
      if (steps == 8) {
        CHECK(worst <= 3e-5);
        CHECK(worst_capped <= 1e-5);
      } else {
        CHECK(worst >= 0.1);
      }
    }
  }

  TEST_CASE_TEMPLATE("spectral_clip polynomial method follows its scalar map", T, float, double) {
    // Prescribed spectra (3.7 down to 3.7e-2) and the bounds of the QDWH test. Each singular
    // direction is compared with the exact image of the method (PolynomialClipImage): the
    // kernel's own error, rounding only. In double the iteration's rounding (~1e-16) passes
    // through maps whose slopes are bounded on these spectra (σ/ν ≥ 4e-3): 1e-12·σ_max allows
    // for it (measured ≤ 1.1e-15, 1.3e-14 for the bounds 50–60 whose output is 50/σ_max times
    // larger); in float 2e-5·σ_max (measured 8.5e-8 on the diagonal, 9.5e-7 for 50–60, and
    // 4.9e-7·√k leakage, 1.3e-5·√k for 50–60: O's rounding times the output's scale, the same
    // with the unpolished identity). Then against clip(σ) itself within the documented band
    // (3e-5·‖A‖_F) plus the rounding tolerance; a wrong shift, scale, sign or orientation is
    // O(0.01) or more. The last case blends (c = 0.3, a hardcap: the spectral clipped weight
    // decay), its oracle (1 − c)·σ plus c times the image.
    const double tol = std::is_same<T, float>::value ? 2e-5 : 1e-12;
    const double inf = std::numeric_limits<double>::infinity();
    for_each_clip_case(
        "clip_polynomial",
        {{0.0, 1.0}, {0.05, 1.0}, {0.5, inf}, {2.0, 2.0}, {-1.0, 0.3}, {50.0, 60.0}, {0.0, 0.4, 0.3}}, 1e-2,
        SpectralClipMethod::polynomial, [&](const Factored& f, const SpectralClipOptions& o) {
          const index_t k = static_cast<index_t>(f.sigma.size());
          SpectralPowerReport rep;
          const Eigen::MatrixXd a = rounded<T>(f.a);
          const Eigen::MatrixXd out = run_map<T>(a, o, &rep);
          CHECK(rep.polynomial_steps == 8);
          CHECK(rep.qdwh_iterations == 0);
          const PolynomialClipImage image(o, a.norm());
          const Eigen::MatrixXd d = f.u.transpose() * out * f.v;
          Eigen::MatrixXd want = Eigen::MatrixXd::Zero(k, k);
          double worst_image = 0.0, worst_clip = 0.0;
          for (index_t i = 0; i < k; ++i) {
            const double s = f.sigma[static_cast<std::size_t>(i)];
            want(i, i) = image(s);
            worst_image = std::max(worst_image, std::fabs(d(i, i) - want(i, i)));
            worst_clip = std::max(worst_clip, std::fabs(d(i, i) - clipped(s, o)));
          }
          CHECK(worst_image <= tol * 3.7);
          CHECK((d - want).norm() <= 10 * tol * 3.7 * std::sqrt(double(k)));
          CHECK(worst_clip <= 3e-5 * a.norm() + tol * 3.7);
        });
  }

  TEST_CASE("polynomial spectral_power in 16 bits at the top of the interval: its band, plus rounding") {
    // A rank-one-dominated input (σ = 1, then 1e-3 × 63) puts σ₁/‖A‖_F at 1, the end of the
    // fitted interval, where the composites of 5 and 6 steps are steepest (|f′(1)| up to 8190)
    // and 16-bit iteration costs most (docs/kernels/spectral_power.md, "In 16 bits"). So 16-bit
    // iteration normalises by ν = 1.01·‖A‖_F: x₀ = σ₁/ν ≈ 0.99 lies inside the interval, where
    // the slopes are at most 132. The value uᵀ·out·v along the top singular vectors is compared
    // with σ₁^α = 1 as L = |log(uᵀ·out·v)|, against the band's E (SpectralPowerReport::fit_error
    // = e^E − 1, a promise in exact arithmetic):
    //  - at α ∈ {0.1, 0.25, 0.5, 0.75}, fp16 with T = 5, 6, 8 and bf16 with T = 5 stay inside:
    //    L ≤ E. Measured over 1000 seeds at most 0.88·E (fp16) and 0.91·E (bf16). With ν = ‖A‖_F
    //    (the code before 2026-12-06), over 100 seeds, fp16 left the band in 9 of the 12 cases
    //    (up to 1.29·E: f(1) is an end point of the minimax fit, at the band's edge), bf16 in 3
    //    of 4 (up to 2.16·E);
    //  - on a grid of α from 0.02 to 0.96, L ≤ E + ρ, ρ the 16-bit rounding's share: 0.06 in
    //    fp16 (T = 5, 6, 8) and 0.2 in bf16 (T = 5, 6). Measured over α = 0.01 … 0.99 and 20
    //    seeds at most E + 0.031 (fp16) and E + 0.089 (bf16); before, E + 0.073 (fp16) and
    //    E + 8.2 (bf16, T = 6 at α = 0.02: the top singular value off by a factor of more than 3700).
    // bf16 with T = 8 is not checked: its intermediate images round too coarsely (up to E + 0.74
    // near α = 0.88, with or without the margin), which is why fp16 is the documented choice.
    const index_t r = 64, c = 192;
    std::vector<double> sigma(static_cast<std::size_t>(r), 1e-3);
    sigma[0] = 1.0;
    for (std::uint64_t input = 0; input < 4; ++input) {  // 4 inputs: 2 s in all (Release)
      const std::uint64_t seed = case_seed("power_lowp_top", input);
      CAPTURE(seed);
      const Factored f = factored(r, c, sigma, seed);
      const Eigen::MatrixXd a = rounded<float>(f.a);
      for (const Precision p : {Precision::fp16, Precision::bf16})
        for (const int steps : {5, 6, 8}) {
          if (p == Precision::bf16 && steps == 8) continue;
          for (const double alpha : {0.02, 0.05, 0.1, 0.15, 0.25, 0.3, 0.5, 0.75, 0.9, 0.96}) {
            const std::string precision = to_string(p);
            CAPTURE(precision);
            CAPTURE(steps);
            CAPTURE(alpha);
            SpectralPowerOptions o;
            o.method = SpectralPowerMethod::polynomial;
            o.polynomial_steps = steps;
            o.alpha = alpha;
            o.polynomial_compute = p;
            PolarOptions po;
            double band = 0.0;
            REQUIRE(polynomial_power_polar_options(o, po, &band) == Status::ok);
            CHECK(resolved_schedule(po).normalization.safety == 1.01);
            const double e = std::log1p(band);
            const double l = std::fabs(std::log(f.u.col(0).dot(run_map<float>(a, o) * f.v.col(0))));
            CHECK(l <= e + (p == Precision::fp16 ? 0.06 : 0.2));
            const bool representative = alpha == 0.1 || alpha == 0.25 || alpha == 0.5 || alpha == 0.75;
            if (representative && (p == Precision::fp16 || steps == 5)) CHECK(l <= e);
          }
        }
    }
    // fp32 keeps the fitted normalisation (its rounding costs u·|f′| ≤ 1e-3 at x = 1).
    SpectralPowerOptions o;
    o.method = SpectralPowerMethod::polynomial;
    o.polynomial_compute = Precision::fp32;
    PolarOptions po;
    REQUIRE(polynomial_power_polar_options(o, po) == Status::ok);
    CHECK(resolved_schedule(po).normalization.safety == 1.0);
  }

  TEST_CASE("spectral_clip polynomial method in bf16 and fp16 where supported") {
    // 16-bit storage with fp32 accumulation (cuBLAS on CUDA, the portable 16-bit GEMM on every
    // other build, the CPU included): every GEMM result is rounded to 16 bits once, as in
    // polar()'s low-precision test (test_polar_api.cpp), whose bound for the polar factor is 0.12
    // (bf16) and 0.015 (fp16) relative. The clip adds one sign function and three k × k products
    // per bound; the output is checked against the exact image of the method (double oracle),
    // relative (Frobenius). A lost scale, a wrong shift or a wrong orientation is O(1). Measured
    // on the CPU (kernel of fed7fda): bf16 0.011 and 0.012, fp16 0.0014 and 0.0016, and at most
    // 0.0124 and 0.0016 over the seeds 1–60. Checked at 0.05 and 0.007, 4× that: the CPU's
    // portable GEMM rounds as cuBLAS does (polar() alone measures 0.078 in bf16 there and on an
    // H200 alike), and the margin is for other GPUs' GEMM kernels.
    REQUIRE(precision_supported(Precision::bf16, PolarMethod::polar_express));
    const index_t r = 96, c = 160, k = 96;
    const std::vector<double> sigma = geometric(k, 1e-2, 3.7);
    const std::uint64_t seed = case_seed("clip_polynomial_lowp");
    CAPTURE(seed);
    const Factored f = factored(r, c, sigma, seed);
    const Eigen::MatrixXd a = rounded<float>(f.a);
    for (Precision p : {Precision::bf16, Precision::fp16}) {
      for (double lower : {0.0, 0.05}) {
        const std::string precision = to_string(p);
        CAPTURE(precision);
        CAPTURE(lower);
        SpectralClipOptions o;
        o.method = SpectralClipMethod::polynomial;
        o.polar.compute = p;
        o.lower = lower;
        o.upper = 1.0;
        const Eigen::MatrixXd out = run_map<float>(a, o);
        const PolynomialClipImage image(o, a.norm());
        Eigen::VectorXd want(k);
        for (index_t i = 0; i < k; ++i)
          want(i) = image(sigma[static_cast<std::size_t>(i)]);
        const double err = relative_error(out, f.u * want.asDiagonal() * f.v.transpose());
        MESSAGE(precision << " lower " << lower << ": relative error " << err);
        CHECK(err <= (p == Precision::bf16 ? 0.05 : 0.007));
      }
    }
  }

  TEST_CASE_TEMPLATE("spectral_clip polynomial method: outputs at the top of the type's range are checked", T,
                     float, double) {
    // The clipped output f·w is at most f·cap·bound; only pre-scaled inputs (max|a| outside
    // [2^-511, 2^511]) had their stores checked, so a result at the type's largest value that
    // 16-bit rounding carried past it was stored as ∞ with ok (audit of 2026-12-07: I₈ clipped
    // to [max, max] in bf16; [max] clipped below at 1 in fp16). Now such a call either writes
    // finite values with ok or refuses with out_of_range and writes nothing.
    const double top = static_cast<double>(std::numeric_limits<T>::max());
    const auto run = [&](std::vector<T> a, index_t n, double lower, double upper, Precision p) {
      SpectralClipOptions o;
      o.method = SpectralClipMethod::polynomial;
      o.polar.compute = p;
      o.lower = lower;
      o.upper = upper;
      std::vector<T> q(a.size(), T(-7));
      const SpectralPowerReport rep =
          spectral_clip(MatrixRef<const T>(a.data(), n, n), MatrixRef<T>(q.data(), n, n), o);
      if (rep.status == Status::ok) {
        for (T x : q)
          CHECK(std::isfinite(x));
      } else {
        CHECK(rep.status == Status::out_of_range);
        CHECK(q == std::vector<T>(q.size(), T(-7)));
      }
    };
    std::vector<T> identity(64, T(0));
    for (int i = 0; i < 8; ++i)
      identity[static_cast<std::size_t>(i * 9)] = T(1);
    for (Precision p : {Precision::bf16, Precision::fp16}) {
      CAPTURE(to_string(p));
      run(identity, 8, top, top, p);
      run(std::vector<T>{std::numeric_limits<T>::max()}, 1, 1.0, HUGE_VAL, p);
    }
  }

  TEST_CASE_TEMPLATE("spectral_clip polynomial method: a cap far below the spectrum lands near the cap", T,
                     float, double) {
    // Every σ (3.7 … 0.37) lies 37 to 3700 times above the cap, so the output is u·O. The
    // identity ½[H₀ + uI − sign(H₀ − uI)(H₀ − uI)] is linear in the sign, whose error δ (the
    // schedule's residual where the sign should be ±1, plus rounding) came
    // back as δ·σ: 4.4e-4 of the cap at u = 1e-2 and 4.5e-3 at 1e-3, in double and float
    // (kernel of bae90e0). The polished projector u + (y − u)·g(m), g(m) = m²(2 − m), leaves
    // 2δ²·σ: measured 2.4e-6 of the cap in both types, what the exact-arithmetic map gives over
    // the band test's grid (2.4e-6), and leakage 3e-6 (float; every product's entries are of
    // the cap's order, so float rounds relative to it) and 6e-15 (double). Checked at 1e-5 and
    // 1e-5 / 1e-12.
    const index_t r = 40, c = 64;
    const Factored f = factored(r, c, geometric(40, 0.1, 3.7), case_seed("clip_polynomial_far_below"));
    const Eigen::MatrixXd a = rounded<T>(f.a);
    for (const double u : {1e-2, 1e-3}) {
      CAPTURE(u);
      SpectralClipOptions o;
      o.method = SpectralClipMethod::polynomial;
      o.upper = u;
      const Eigen::MatrixXd d = f.u.transpose() * run_map<T>(a, o) * f.v / u;
      CHECK((d.diagonal().array() - 1.0).abs().maxCoeff() <= 1e-5);
      CHECK((d - Eigen::MatrixXd(d.diagonal().asDiagonal())).norm() <= (sizeof(T) == 4 ? 1e-5 : 1e-12));
    }
  }

  TEST_CASE("spectral_clip polynomial method in 16 bits: a cap far below the spectrum lands near the cap") {
    // The float/double test's matrix and caps, iterated in bf16 and fp16 (fp32 accumulation;
    // the portable 16-bit GEMM on the CPU, cuBLAS on CUDA). Each product rounds its result to 16
    // bits, relative to its largest entries. With the identity those were of σ's order and
    // their rounding, times the sign, reached the clipped values; with the polished projectors
    // the products that survive in a clipped direction are of the cap's order. Measured on the
    // CPU in units of the cap (largest |d_ii − 1|, off-diagonal Frobenius norm), polished
    // (kernel of fed7fda) against the identity (a5bd330):
    //   bf16 u = 1e-2: 4.5e-3, 4.4e-2 against 9.0e-2, 1.2;  u = 1e-3: 7.0e-2, 0.23 against 1.0, 14;
    //   fp16 u = 1e-2: 4.9e-4, 5.0e-3 against 2.8e-2, 0.27; u = 1e-3: 1.1e-3, 9.3e-3 against 0.65, 3.0.
    // Checked at about 4× the polished figures (room for another GPU's GEMM kernels, as in
    // polar()'s 16-bit test); every identity figure fails its check. Over the seeds 1–100
    // (SCHATTEN_SEED) the largest figure was half its bound.
    REQUIRE(precision_supported(Precision::bf16, PolarMethod::polar_express));
    const index_t r = 40, c = 64;
    const Factored f = factored(r, c, geometric(40, 0.1, 3.7), case_seed("clip_polynomial_far_below"));
    const Eigen::MatrixXd a = rounded<float>(f.a);
    struct Case {
      Precision p;
      double u, diagonal, leakage;
    };
    const Case cases[] = {{Precision::bf16, 1e-2, 2e-2, 0.2},
                          {Precision::bf16, 1e-3, 0.3, 1.0},
                          {Precision::fp16, 1e-2, 2e-3, 2e-2},
                          {Precision::fp16, 1e-3, 5e-3, 4e-2}};
    for (const Case& cs : cases) {
      const std::string precision = to_string(cs.p);
      CAPTURE(precision);
      CAPTURE(cs.u);
      SpectralClipOptions o;
      o.method = SpectralClipMethod::polynomial;
      o.polar.compute = cs.p;
      o.upper = cs.u;
      const Eigen::MatrixXd d = f.u.transpose() * run_map<float>(a, o) * f.v / cs.u;
      CHECK((d.diagonal().array() - 1.0).abs().maxCoeff() <= cs.diagonal);
      CHECK((d - Eigen::MatrixXd(d.diagonal().asDiagonal())).norm() <= cs.leakage);
    }
  }

  TEST_CASE("spectral_clip polynomial method: zeros, scale, refusals and batches") {
    const index_t r = 40, c = 30;
    std::vector<double> deficient = geometric(30, 1e-2, 2.0);
    for (index_t i = 25; i < 30; ++i)
      deficient[static_cast<std::size_t>(i)] = 0.0;
    const Factored g = factored(r, c, deficient, case_seed("clip_polynomial_rank"));
    SpectralClipOptions o;
    o.method = SpectralClipMethod::polynomial;
    o.lower = 0.5;
    o.upper = 1.0;
    // Exact zeros (rounding-level after forming A) stay at the rounding level: the polar
    // approximation maps them through f(x) ≈ (∏a_t)·x, never raises them to the lower bound.
    const Eigen::MatrixXd d = g.u.transpose() * run_map<double>(g.a, o) * g.v;
    for (index_t i = 0; i < 25; ++i)
      CHECK(std::fabs(d(i, i) - clipped(deficient[static_cast<std::size_t>(i)], o)) <= 3e-5 * g.a.norm());
    for (index_t i = 25; i < 30; ++i)
      CHECK(std::fabs(d(i, i)) <= 1e-10);
    // Scale: A·1e-30 and A·1e30 clip as A does relative to bounds scaled alike; a lower bound
    // above 2B·ν (1e40 here) goes through the capped shift and the output factor: β·O.
    for (double s : {1e-30, 1e30}) {
      CAPTURE(s);
      SpectralClipOptions os = o;
      os.lower = 0.5 * s;
      os.upper = 1.0 * s;
      CHECK(relative_error(run_map<double>(g.a * s, os) / s, run_map<double>(g.a, o)) <= 1e-12);
    }
    SpectralClipOptions high = o;
    high.lower = high.upper = 1e40;
    PolarOptions po = o.polar;
    std::vector<double> m = to_row_major<double>(g.a), q(m.size());
    REQUIRE(polar(MatrixRef<const double>(m.data(), r, c), MatrixRef<double>(q.data(), r, c), po).status ==
            Status::ok);
    CHECK(relative_error(run_map<double>(g.a, high) / 1e40, from_row_major(q.data(), r, c)) <= 1e-12);
    // Refusals: nothing is written.
    std::vector<float> a(2 * r * c, 0.5f), out(a.size(), -5.0f);
    struct Bad {
      const char* message;
      PolarOptions polar;
    };
    std::vector<Bad> bad(5, Bad{"", polynomial_clip_polar_options()});
    bad[0] = {"polar.method", bad[0].polar};
    bad[0].polar.method = PolarMethod::qdwh;
    bad[1] = {"polar.method", bad[1].polar};
    bad[1].polar.method = PolarMethod::gram_newton_schulz;
    bad[2] = {"Frobenius", bad[2].polar};
    bad[2].polar.schedule = schedules::polar_express();
    bad[2].polar.schedule.normalization.kind = Normalization::Kind::aol;
    bad[3] = {"dual_norm_scale", bad[3].polar};
    bad[3].polar.dual_norm_scale = true;
    bad[4] = {"iterations", bad[4].polar};
    bad[4].polar.iterations = -1;
    for (const Bad& b : bad) {
      CAPTURE(b.message);
      SpectralClipOptions ob = o;
      ob.polar = b.polar;
      const char* msg = check_spectral_clip_options(ob);
      REQUIRE(msg != nullptr);
      CHECK(std::string(msg).find(b.message) != std::string::npos);
      CHECK(spectral_clip(MatrixRef<const float>(a.data(), r, c), MatrixRef<float>(out.data(), r, c), ob)
                .status == Status::invalid_argument);
    }
    SpectralClipOptions lowp = o;
    lowp.polar.compute = Precision::bf16;
    if (!precision_supported(Precision::bf16, PolarMethod::polar_express))
      CHECK(spectral_clip(MatrixRef<const float>(a.data(), r, c), MatrixRef<float>(out.data(), r, c), lowp)
                .status == Status::unsupported);
    for (float x : out)  // nothing was written by any refused call
      CHECK(x == -5.0f);
    check_non_finite_refused(r, c, o);
    check_zero_and_batch(g.a, o);
  }

  TEST_CASE_TEMPLATE("spectral_clip: an upper bound far above the spectrum leaves A as it is", T, float,
                     double) {
    // T_u = u − |H₀ − uI| cancelled to the rounding of u: a hardcap of 1e20 on a matrix of norm ~1
    // returned zero with ok, and the default hardcap (1) of a 1e-300·B double matrix zero, of a
    // 1e-310·B one out_of_range (u/‖A‖ = ∞). Every σ is below the bound, so the output is A, to
    // the clip's documented accuracy (1e-12·σ_max in double, 1e-5 in float), here in Frobenius
    // norm relative to A (k = 12 singular values: √12 times those).
    const index_t r = 12, c = 20;
    const Factored f = factored(r, c, geometric(12, 1e-2, 1.5), case_seed("clip_far_upper"));
    const double tol = sizeof(T) == 8 ? 4e-12 : 4e-5;
    for (const double upper : {1e20, 1e300}) {
      CAPTURE(upper);
      SpectralClipOptions o;
      o.upper = upper;
      CHECK(relative_error(run_map<T>(f.a, o), f.a) <= tol);
      o.lower = 0.5;  // raises the lower ones, the upper bound still clips nothing
      const Eigen::MatrixXd d = f.u.transpose() * run_map<T>(f.a, o) * f.v;
      for (index_t i = 0; i < r; ++i)
        CHECK(std::fabs(d(i, i) - std::max(0.5, f.sigma[static_cast<std::size_t>(i)])) <= 1.5 * tol);
    }
    if (sizeof(T) == 8) {
      for (const double scale : {1e-300, 1e-310}) {
        CAPTURE(scale);
        const Eigen::MatrixXd a = f.a * scale;  // (1e-310: subnormal entries, rounded)
        const Eigen::MatrixXd out = run_map<double>(a, SpectralClipOptions{});
        CHECK(relative_error(out, a) <= (scale > 1e-305 ? tol : 1e-9));
      }
    }
  }

  TEST_CASE("spectral_clip: a lower bound below the floor leaves the values between them as they are") {
    // clip(σ) = max(lower, min(σ, upper)), and the floor keeps the values below φ = floor·‖A‖₂
    // as they are instead of raising them (spectral_power.hpp). With lower < φ there is nothing to
    // raise, but the lower stage's projector ½(sign(H₀ − φI) − sign(H₀ − lI)) is −I on [l, φ),
    // and H₀ + R(lI − H₀)R set those values to l: σ = 5e-7 came back 1e-8 with ok (kernel audit
    // of 2026-12-07, docs/reliability.md). Double (1e-12·σ_max, the clip's accuracy; the defect
    // is 5e-7), spectrum (1, 0.5, 1e-4, 5e-7, 1e-9), lower 1e-8 and the default floor 1e-6:
    // every direction keeps its σ. And lower 1e-3 above the floor still raises the values
    // between them (1e-4 → 1e-3) and keeps those below it.
    const index_t r = 5, c = 8;
    const std::vector<double> sigma = {1.0, 0.5, 1e-4, 5e-7, 1e-9};
    const Factored f = factored(r, c, sigma, case_seed("clip_lower_below_floor"));
    const double tol = 1e-12;
    for (const double lower : {1e-8, 1e-3}) {
      CAPTURE(lower);
      SpectralClipOptions o;
      o.lower = lower;
      o.upper = std::numeric_limits<double>::infinity();
      SpectralPowerReport rep;
      const Eigen::MatrixXd d = f.u.transpose() * run_map<double>(f.a, o, &rep) * f.v;
      REQUIRE(rep.status == Status::ok);
      const double phi = o.floor * sigma[0];
      for (index_t i = 0; i < r; ++i) {
        const double s_i = sigma[static_cast<std::size_t>(i)];
        CAPTURE(s_i);
        CHECK(std::fabs(d(i, i) - (s_i < phi ? s_i : std::max(lower, s_i))) <= tol);
      }
    }
  }

  TEST_CASE_TEMPLATE("spectral_clip: a cap far below the spectrum lands on the cap, relative to it", T, float,
                     double) {
    // clip = uI + M(H − uI)M·M with M = ½(I − sign(H − uI)) (docs/kernels/spectral_power.md):
    // where σ ≫ u, M's component is the sign's rounding δ, so the clipped directions carry δ²·σ
    // instead of the δ·σ of ½[H + uI − sign(H − uI)(H − uI)], and caps more than 2³² below the
    // spectrum are reached in stages. The old form returned 1 ± ε·σ: 1 ± 1.8e-11 at S = 1e6 in
    // double, 1 ± 3.1e-3 at 1e14, 5e283 at 1e300. Here every σ lies in S·[1, 1.5] and u = 1,
    // so the output is polar(A) = U Vᵀ: each direction within tol of 1 and the leakage within
    // tol·√k, tol the clip's accuracy relative to the cap (1e-12 in double, 1e-5 in float: H
    // and the signs are double, U_p is T, so float's error is ε_f·u). Measured: 4.4e-16 in
    // double at every S (S = 1e300 takes 32 stages), 7.1e-8 in float.
    const index_t r = 12, c = 20;
    const double tol = sizeof(T) == 8 ? 1e-12 : 1e-5;
    const std::vector<double> scales = sizeof(T) == 8 ? std::vector<double>{1e6, 1e14, 1e20, 1e100, 1e300}
                                                      : std::vector<double>{1e6, 1e14, 1e30};
    for (const double scale : scales) {
      CAPTURE(scale);
      std::vector<double> sigma = geometric(12, 1 / 1.5, 1.5);
      for (double& x : sigma)
        x *= scale;
      const Factored f =
          factored(r, c, sigma, case_seed("clip_far_below", static_cast<std::uint64_t>(std::log10(scale))));
      const Eigen::MatrixXd d = f.u.transpose() * run_map<T>(rounded<T>(f.a), SpectralClipOptions{}) * f.v;
      CHECK((d - Eigen::MatrixXd::Identity(r, r)).cwiseAbs().maxCoeff() <= tol);
      CHECK((d - Eigen::MatrixXd::Identity(r, r)).norm() <= tol * std::sqrt(double(r)));
    }
    // Half the spectrum far above the cap, half below it (0.3 … 0.01). The small singular values
    // of the rounded input are themselves uncertain by its rounding, ε·‖A‖ (1e-8 at S = 1e8 in
    // double, 6e-4 at 1e4 in float): kept within 100·ε·S (measured 9.5e-9 and 1.8e-4), while the
    // clipped ones land on u = 1 within tol (measured 4.4e-16 and 5.4e-8). A two-sided clip
    // [0.5, 1] (floor 0: raise every small one) likewise.
    const double scale = sizeof(T) == 8 ? 1e8 : 1e4, eps = std::numeric_limits<T>::epsilon();
    std::vector<double> sigma = geometric(6, 1 / 1.5, 1.5 * scale);
    for (const double x : geometric(6, 0.01 / 0.3, 0.3))
      sigma.push_back(x);
    const Factored f = factored(r, c, sigma, case_seed("clip_far_below_mixed"));
    for (const double lower : {0.0, 0.5}) {
      CAPTURE(lower);
      SpectralClipOptions o;
      o.lower = lower;
      o.floor = 0.0;
      const Eigen::MatrixXd d = f.u.transpose() * run_map<T>(rounded<T>(f.a), o) * f.v;
      for (index_t i = 0; i < r; ++i) {
        CAPTURE(i);
        const double want = clipped(sigma[static_cast<std::size_t>(i)], o);
        CHECK(std::fabs(d(i, i) - want) <= (i < 6 ? tol : 100 * eps * scale));
      }
      CHECK((d.topLeftCorner(6, 6) - Eigen::MatrixXd::Identity(6, 6)).norm() <= tol * std::sqrt(6.0));
      // Between a clipped and a kept direction the clip's derivative is (u − σ_j)/(σ_i − σ_j) ≈ u/S,
      // so the input's rounding moves that coupling by ε·u only: within tol·6 over the 6 × 6 block
      // (measured 7e-16 in double; 2.3e-9, ε·S/5, when the cap's product kept the rounding of
      // (y − uI)M in its rows, M(y − uI)M without the last ·M; float 7.7e-7, its U_p's rounding).
      CHECK(d.topRightCorner(6, 6).norm() <= 6 * tol);
      CHECK(d.bottomLeftCorner(6, 6).norm() <= 6 * tol);
    }
  }

  TEST_CASE("spectral_clip: bounds 1e300 away from the matrix's scale give bound·polar(A)") {
    // Bounds in the units of H₀ (A/‖A‖) under- or overflowed as doubles: a clip into
    // [1e-300, 1e-300] of a 1e300·B matrix returned 0 with ok (floor 0) and entries of 1e283
    // with ok (the default floor); a lower bound of 1e10 (or 1e300) on a 1e-300·B matrix was
    // out_of_range although the output, 1e10·polar(A), is a double. The bounds are now held as
    // m·2^p, and the powers of two go to the output's exponent. Every σ of B (1.5 … 0.015) is
    // above the default floor (1e-6·‖A‖₂), so each case is bound·U Vᵀ: every direction within
    // 1e-12 relative, the leakage within 1e-12·bound·√k (the clip's accuracy, as above).
    const index_t r = 12, c = 20;
    const Factored f = factored(r, c, geometric(12, 1e-2, 1.5), case_seed("clip_far_scales"));
    const double inf = std::numeric_limits<double>::infinity();
    struct Case {
      double scale, lower, upper, floor, want;
    };
    for (const Case& k : {Case{1e-300, 1e300, 1e300, 1e-6, 1e300}, Case{1e-300, 1e10, inf, 1e-6, 1e10},
                          Case{1e-300, 1e300, inf, 0.0, 1e300}, Case{1.0, 1e300, inf, 1e-6, 1e300},
                          Case{1e300, 1e-300, 1e-300, 0.0, 1e-300}, Case{1e300, 1e-300, 1e-300, 1e-6, 1e-300},
                          Case{1e300, 0.0, 1e-300, 1e-6, 1e-300}}) {
      CAPTURE(k.scale);
      CAPTURE(k.lower);
      CAPTURE(k.upper);
      CAPTURE(k.floor);
      SpectralClipOptions o;
      o.lower = k.lower;
      o.upper = k.upper;
      o.floor = k.floor;
      const Eigen::MatrixXd d = f.u.transpose() * run_map<double>(f.a * k.scale, o) * f.v / k.want;
      CHECK((d - Eigen::MatrixXd::Identity(r, r)).cwiseAbs().maxCoeff() <= 1e-12);
      CHECK((d - Eigen::MatrixXd::Identity(r, r)).norm() <= 1e-12 * std::sqrt(double(r)));
    }
  }

  TEST_CASE("spectral_clip edge cases: no bounds copies, zeros stay zero, bounds on singular values") {
    const index_t r = 40, c = 30;
    std::vector<double> sigma = geometric(30, 1e-2, 2.0);
    const Factored f = factored(r, c, sigma, case_seed("clip_edges"));
    SpectralClipOptions o;
    o.lower = 0.0;
    o.upper = std::numeric_limits<double>::infinity();
    SpectralPowerReport rep;
    CHECK(run_map<double>(f.a, o, &rep) == f.a);  // the identity map: a validated copy
    CHECK(rep.qdwh_iterations == 0);
    // Bounds that coincide with singular values: the eigenvalue of H − tI is ~0 there and its
    // sign indeterminate, but |λ| is, so those directions land on the bound within rounding.
    o.lower = sigma[20];
    o.upper = sigma[5];
    Eigen::MatrixXd d = f.u.transpose() * run_map<double>(f.a, o) * f.v;
    for (index_t i = 0; i < 30; ++i)
      CHECK(std::fabs(d(i, i) - clipped(sigma[static_cast<std::size_t>(i)], o)) <= 1e-12);
    // Rank-deficient: exact zeros (rounding-level after forming A, ~1e-16·‖A‖) lie below the
    // floor (1e-6·‖A‖₂ by default) and stay at the rounding level, while the others are raised;
    // a noise level (1e-9) below the floor is kept as it is. With floor = 0 every direction is
    // raised, the null space along some orthonormal completion: the output's singular values
    // are then all ≥ lower (checked on the SVD of the output, which needs no directions).
    std::vector<double> deficient = sigma;
    for (index_t i = 22; i < 25; ++i)
      deficient[static_cast<std::size_t>(i)] = 1e-9;
    for (index_t i = 25; i < 30; ++i)
      deficient[static_cast<std::size_t>(i)] = 0.0;
    const Factored g = factored(r, c, deficient, case_seed("clip_rank"));
    o.lower = 0.5;
    o.upper = 1.0;
    d = g.u.transpose() * run_map<double>(g.a, o) * g.v;
    for (index_t i = 0; i < 22; ++i)
      CHECK(std::fabs(d(i, i) - clipped(deficient[static_cast<std::size_t>(i)], o)) <= 1e-10);
    for (index_t i = 22; i < 25; ++i)  // kept: 1e-9 within the sign function's transition
      CHECK(std::fabs(d(i, i) - 1e-9) <= 1e-11);
    for (index_t i = 25; i < 30; ++i)
      CHECK(std::fabs(d(i, i)) <= 1e-12);
    o.floor = 0.0;
    const Svd raised = svd(run_map<double>(g.a, o));
    CHECK(raised.s.minCoeff() >= 0.5 - 1e-10);
    CHECK(raised.s.maxCoeff() <= 1.0 + 1e-10);
    o.floor = 1e-6;
    // Scale: A·1e-30 and A·1e30 clip as A does relative to bounds scaled alike.
    for (double s : {1e-30, 1e30}) {
      CAPTURE(s);
      SpectralClipOptions os;
      os.lower = 0.05 * s;
      os.upper = 1.0 * s;
      SpectralClipOptions o1;
      o1.lower = 0.05;
      const Eigen::MatrixXd big = run_map<double>(f.a * s, os) / s;
      CHECK(relative_error(big, run_map<double>(f.a, o1)) <= 1e-12);
    }
  }

  TEST_CASE("double at the ends of the range: spectral maps and norms scale with A") {
    // ‖A‖_F > DBL_MAX (2^1023·B) and subnormal entries (2^-1040·B) once gave zeros or NaN with
    // ok (docs/conventions.md: no overflow or underflow for any finite input). The scales are
    // powers of two and the reference runs on the same matrix brought back to ~1 (ref_in), so
    // both compute one map of one matrix: they differ by QDWH's rounding (O(k·u) backward
    // error) as amplified by the map; 1e-9 is far above that and far below an O(1) failure.
    const index_t r = 12, c = 20;
    const Factored f = factored(r, c, geometric(12, 1e-2, 1.5), case_seed("double_range_maps"));
    for (const int e : {1023, -1040}) {
      CAPTURE(e);
      Eigen::MatrixXd a(r, c), a_ref(r, c);
      for (index_t i = 0; i < r; ++i)
        for (index_t j = 0; j < c; ++j) {
          a(i, j) = std::ldexp(f.a(i, j), e);  // (rounded where subnormal)
          a_ref(i, j) = std::ldexp(a(i, j), -e);
        }
      if (e > 0) REQUIRE(std::isinf(a.norm()));  // ‖A‖_F beyond DBL_MAX
      for (const double alpha : {0.5, -0.5}) {
        CAPTURE(alpha);
        SpectralPowerOptions o;
        o.alpha = alpha;
        const double unit = std::exp2(alpha * e);  // U Σ^α Vᵀ scales by 2^(α·e)
        CHECK(relative_error(run_map<double>(a, o) / unit, run_map<double>(a_ref, o)) <= 1e-9);
        if (alpha > 0) {
          o.method = SpectralPowerMethod::polynomial;
          CHECK(relative_error(run_map<double>(a, o) / unit, run_map<double>(a_ref, o)) <= 1e-9);
        }
      }
      for (const SpectralClipMethod m : {SpectralClipMethod::qdwh, SpectralClipMethod::polynomial}) {
        SpectralClipOptions o, os;  // bounds in the units of A
        o.method = os.method = m;
        o.lower = 0.05;
        o.upper = 0.5;
        os.lower = std::ldexp(0.05, e);
        os.upper = std::ldexp(0.5, e);
        const Eigen::MatrixXd out =
            run_map<double>(a, os).unaryExpr([e](double x) { return std::ldexp(x, -e); });
        CHECK(relative_error(out, run_map<double>(a_ref, o)) <= 1e-9);
      }
    }
    // Schatten norms of c·I₈: ‖·‖_q = c·8^(1/q). Beyond DBL_MAX: out_of_range, nothing written.
    const index_t n = 8;
    for (const double scale : {1e308, 1e-310}) {
      CAPTURE(scale);
      std::vector<double> a(static_cast<std::size_t>(n * n), 0.0);
      for (index_t i = 0; i < n; ++i)
        a[static_cast<std::size_t>(i * n + i)] = scale;
      const double v = a[0];  // (1e-310 rounded to a subnormal)
      for (const double q : {1.0, 2.0, 3.0, std::numeric_limits<double>::infinity()}) {
        CAPTURE(q);
        double norm = -1.0;
        const Status st =
            schatten_norm(BatchedMatrixRef<const double>(MatrixRef<const double>(a.data(), n, n)), q, &norm);
        const double want = v * std::pow(8.0, 1.0 / q);  // (computed in long form: 8^(1/q) ≤ 8)
        if (scale > 1.0 && q < 20.0) {                   // 1e308·8^(1/q) > DBL_MAX for q ≤ 3
          CHECK(st == Status::out_of_range);
          CHECK(norm == -1.0);
        } else {
          REQUIRE(st == Status::ok);
          // q = ∞: λ₁(I₈/8) bracketed to 8·8u (largest_eigenvalue); the others QDWH's 1e-9.
          CHECK(norm == doctest::Approx(want).epsilon(std::isinf(q) ? 1e-14 : 1e-9));
        }
      }
      // α = −1 of 1e-310·I₈ is 1e310·I₈: not representable, refused before writing.
      if (scale < 1.0) {
        SpectralPowerOptions o;
        o.alpha = -1.0;
        std::vector<double> out(a.size(), -3.0);
        const SpectralPowerReport rep =
            spectral_power(MatrixRef<const double>(a.data(), n, n), MatrixRef<double>(out.data(), n, n), o);
        CHECK(rep.status == Status::out_of_range);
        CHECK(std::all_of(out.begin(), out.end(), [](double x) { return x == -3.0; }));
      }
    }
  }

  TEST_CASE("spectral_clip with a blend: partial overlap of input and output is refused, in place works") {
    // The blend re-reads A in the store pass, so an output shifted 3 rows into the input's array
    // read rows already overwritten (ok, but O(1) wrong). docs/conventions.md allows the exact
    // alias only: the partial overlap is invalid_argument with nothing written, for both
    // methods; the exact alias gives the separate call's result bit for bit (same work, same
    // order, on one input).
    const index_t r = 24, c = 16;
    const Factored f = factored(r, c, geometric(16, 1e-2, 3.0), case_seed("clip_overlap"));
    const std::vector<double> a = to_row_major<double>(f.a);
    for (const SpectralClipMethod m : {SpectralClipMethod::qdwh, SpectralClipMethod::polynomial}) {
      SpectralClipOptions o;
      o.method = m;
      o.upper = 2.0;
      o.blend = 0.3;
      std::vector<double> ref(a.size());
      REQUIRE(spectral_clip(MatrixRef<const double>(a.data(), r, c), MatrixRef<double>(ref.data(), r, c), o)
                  .status == Status::ok);
      std::vector<double> buf(static_cast<std::size_t>((r + 3) * c), 0.0);
      std::copy(a.begin(), a.end(), buf.begin());
      const std::vector<double> before = buf;
      const SpectralPowerReport rep = spectral_clip(MatrixRef<const double>(buf.data(), r, c),
                                                    MatrixRef<double>(buf.data() + 3 * c, r, c), o);
      CHECK(rep.status == Status::invalid_argument);
      CHECK(buf == before);
      std::vector<double> io = a;
      REQUIRE(spectral_clip(MatrixRef<const double>(io.data(), r, c), MatrixRef<double>(io.data(), r, c), o)
                  .status == Status::ok);
      CHECK(io == ref);
    }
  }

  TEST_CASE("spectral_clip bad input, options and batches") {
    const index_t r = 12, c = 9;
    check_non_finite_refused(r, c, SpectralClipOptions{});
    std::vector<float> a(2 * r * c, 0.5f), out(a.size(), -5.0f);
    const double nan = std::numeric_limits<double>::quiet_NaN(),
                 inf = std::numeric_limits<double>::infinity();
    struct Bad {
      double lower, upper;
      const char* message;
      double blend = 1.0;
    };
    for (const Bad& b : {Bad{nan, 1.0, "lower must be finite"}, Bad{-inf, 1.0, "lower must be finite"},
                         Bad{0.0, 0.0, "upper must be positive"}, Bad{0.0, nan, "upper must be positive"},
                         Bad{2.0, 1.0, "lower must not exceed upper"}, Bad{0.0, 1.0, "floor must lie"},
                         Bad{0.0, 1.0, "blend must lie", -0.1}, Bad{0.0, 1.0, "blend must lie", 1.5},
                         Bad{0.0, 1.0, "blend must lie", nan}}) {
      const std::string message = b.message;  // CAPTURE prints a const char* as a pointer
      CAPTURE(message);
      SpectralClipOptions o;
      o.lower = b.lower;
      o.upper = b.upper;
      if (message == "floor must lie") o.floor = 1.0;
      o.blend = b.blend;
      const char* msg = check_spectral_clip_options(o);
      REQUIRE(msg != nullptr);
      CHECK(std::string(msg).find(b.message) != std::string::npos);
      CHECK(spectral_clip(MatrixRef<const float>(a.data(), r, c), MatrixRef<float>(out.data(), r, c), o)
                .status == Status::invalid_argument);
    }
    SpectralClipOptions q;
    q.qdwh.max_iterations = 0;
    CHECK(check_spectral_clip_options(q) != nullptr);
    for (float x : out)  // nothing was written by any refused call
      CHECK(x == -5.0f);
    SpectralClipOptions o;
    o.lower = 0.1;
    o.upper = 0.8;
    check_zero_and_batch(factored(r, c, geometric(9, 1e-2), case_seed("batch_clip")).a, o);
  }
}

}  // namespace kernels_test_spectral_power
