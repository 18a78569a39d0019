// SPDX-License-Identifier: Apache-2.0
/// \file
/// Frobenius inner products, alignment / descent potential (algorithms.md §4b.3) and the
/// random-feature least-squares model, checked against finite differences, exact line searches
/// and independent double oracles.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "schatten/kernels/inner_product.hpp"
#include "schatten/reference/polar.hpp"
#include "schatten/surrogate/descent.hpp"
#include "support/convert.hpp"
#include "support/sanitizers.hpp"
#include "support/seed.hpp"
#include "support/spectra.hpp"

namespace surrogate_test_descent {  // this file's scope in a unity build (tests/CMakeLists.txt)

using namespace schatten;
using namespace schatten::test;
using schatten::surrogate::DescentDiagnostics;
using schatten::surrogate::RandomFeatureModel;

namespace {
using Vec = std::vector<double>;

Vec gaussian(index_t n, std::uint64_t seed, double scale = 1.0) {
  Rng rng(seed);
  Vec v(static_cast<std::size_t>(n));
  for (double& x : v)
    x = scale * rng.normal();
  return v;
}

double dot(const Vec& a, const Vec& b) {
  long double s = 0;  // oracle: long double accumulation
  for (std::size_t i = 0; i < a.size(); ++i)
    s += static_cast<long double>(a[i]) * b[i];
  return static_cast<double>(s);
}

Vec axpy(const Vec& w, double eta, const Vec& d) {  // w − η d
  Vec r(w);
  for (std::size_t i = 0; i < r.size(); ++i)
    r[i] -= eta * d[i];
  return r;
}

MatrixRef<const double> cref(const Vec& v, index_t r, index_t c) {
  return MatrixRef<const double>(v.data(), r, c);
}
MatrixRef<double> ref(Vec& v, index_t r, index_t c) { return MatrixRef<double>(v.data(), r, c); }

/// A random model with covariance eigenvalues geometric in [1e-2, 1] (κ(Σ) = 100), and a
/// student W = W* + noise.
struct Setup {
  index_t r = 24, c = 40;
  RandomFeatureModel m;
  Vec w;
  explicit Setup(const char* name) {
    const std::uint64_t seed = case_seed(name);
    MESSAGE("case seed " << seed);
    REQUIRE(RandomFeatureModel::random(r, c, geometric(c, 1e-2), seed, m) == Status::ok);
    w = m.teacher();
    const Vec noise = gaussian(r * c, seed + 7, 0.3);
    for (std::size_t i = 0; i < w.size(); ++i)
      w[i] += noise[i];
  }
  Vec grad(const Vec& x) const {
    Vec g(x.size());
    REQUIRE(m.gradient(cref(x, r, c), ref(g, r, c)) == Status::ok);
    return g;
  }
};
}  // namespace

TEST_SUITE("surrogate.descent") {
  TEST_CASE("frobenius_inner: batched and strided against a long-double oracle") {
    const index_t b = 3, r = 17, c = 29;
    const Vec a = gaussian(b * r * c, case_seed("inner_a")), x = gaussian(b * r * c, case_seed("inner_b"));
    // a as row-major batches, x as the same matrices stored column-major.
    Vec xc(x.size());
    for (index_t k = 0; k < b; ++k)
      for (index_t i = 0; i < r; ++i)
        for (index_t j = 0; j < c; ++j)
          xc[static_cast<std::size_t>(k * r * c + j * r + i)] =
              x[static_cast<std::size_t>(k * r * c + i * c + j)];
    const BatchedMatrixRef<const double> ar(a.data(), b, r, c);
    const BatchedMatrixRef<const double> xr =
        BatchedMatrixRef<const double>::strided(xc.data(), b, r, c, r * c, 1, r);
    double out[3] = {};
    REQUIRE(frobenius_inner(ar, xr, out) == Status::ok);
    for (index_t k = 0; k < b; ++k) {
      const Vec ak(a.begin() + k * r * c, a.begin() + (k + 1) * r * c),
          xk(x.begin() + k * r * c, x.begin() + (k + 1) * r * c);
      // double sum of r·c = 493 products of size O(1): error ≤ 493 · 2⁻⁵³ · Σ|a x| ≈ 3e-14 · Σ|a x|.
      CHECK(std::fabs(out[k] - dot(ak, xk)) <= 1e-12);
    }
    // float inputs: products exact in double, the same bound.
    std::vector<float> af(a.begin(), a.end()), xf(x.begin(), x.end());
    double outf[3] = {};
    REQUIRE(frobenius_inner(BatchedMatrixRef<const float>(af.data(), b, r, c),
                            BatchedMatrixRef<const float>(xf.data(), b, r, c), outf) == Status::ok);
    const Vec ad(af.begin(), af.begin() + r * c), xd(xf.begin(), xf.begin() + r * c);
    CHECK(std::fabs(outf[0] - dot(ad, xd)) <= 1e-12);
    // Bad input: nothing written.
    Vec bad = a;
    bad[5] = std::numeric_limits<double>::infinity();
    double keep[3] = {7, 7, 7};
    CHECK(frobenius_inner(BatchedMatrixRef<const double>(bad.data(), b, r, c), ar, keep) ==
          Status::non_finite_input);
    CHECK(keep[0] == 7);
    CHECK(frobenius_inner(ar, BatchedMatrixRef<const double>(a.data(), b, c, r), keep) ==
          Status::invalid_argument);
    CHECK(frobenius_inner(ar, ar, nullptr) == Status::invalid_argument);
    CHECK(keep[2] == 7);
  }

  TEST_CASE("random-feature model: gradient and Hessian-vector product match finite differences") {
    Setup s("rf_fd");
    const Vec g = s.grad(s.w);
    const Vec v = gaussian(s.r * s.c, case_seed("rf_fd_dir"));
    // f is quadratic, so the central difference is exact up to rounding: with h = 1e-3 and
    // f = O(1), cancellation costs ~1e-16/1e-3 = 1e-13 relative to ⟨G, v⟩ = O(10).
    const double h = 1e-3;
    const double fd =
        (s.m.loss(cref(axpy(s.w, -h, v), s.r, s.c)) - s.m.loss(cref(axpy(s.w, h, v), s.r, s.c))) / (2 * h);
    CHECK(fd == doctest::Approx(dot(g, v)).epsilon(1e-8));
    // The gradient is affine: (G(W + h v) − G(W)) / h = v Σ = H v exactly up to rounding.
    const Vec g1 = s.grad(axpy(s.w, -h, v));
    Vec hv(v.size());
    REQUIRE(s.m.hessian_vector(cref(v, s.r, s.c), ref(hv, s.r, s.c)) == Status::ok);
    double worst = 0, top = 0;
    for (std::size_t i = 0; i < hv.size(); ++i) {
      worst = std::max(worst, std::fabs((g1[i] - g[i]) / h - hv[i]));
      top = std::max(top, std::fabs(hv[i]));
    }
    CHECK(worst <= 1e-9 * top);
    // f(W*) = 0 and f ≥ 0.
    CHECK(s.m.loss(cref(s.m.teacher(), s.r, s.c)) == 0.0);
    CHECK(s.m.loss(cref(s.w, s.r, s.c)) > 0.0);
  }

  TEST_CASE("diagnostics: the quadratic model is exact and eta* is the exact line search") {
    Setup s("rf_line");
    const Vec g = s.grad(s.w);
    Vec d(g.size());
    // Spectral descent: D = polar(G) (exact, from the SVD reference).
    REQUIRE(reference::polar(cref(g, s.r, s.c), ref(d, s.r, s.c)) == Status::ok);
    const DescentDiagnostics dg = s.m.diagnostics(cref(s.w, s.r, s.c), cref(d, s.r, s.c), cref(g, s.r, s.c));
    REQUIRE(dg.status == Status::ok);
    CHECK(dg.alignment == doctest::Approx(1.0).epsilon(1e-14));  // G̃ = G
    // ⟨G, polar(G)⟩ is the nuclear norm of G (algorithms.md 4b.1), from the SVD reference.
    double nuclear = 0;
    REQUIRE(reference::schatten_norm(cref(g, s.r, s.c), 1.0, nuclear) == Status::ok);
    CHECK(dg.full_dot == doctest::Approx(nuclear).epsilon(1e-12));
    const double f0 = s.m.loss(cref(s.w, s.r, s.c));
    for (double eta : {0.01, 0.1, dg.optimal_step, 3.0}) {
      CAPTURE(eta);
      const double df = s.m.loss(cref(axpy(s.w, eta, d), s.r, s.c)) - f0;
      // Exact identity for a quadratic; rounding of f = O(1) sums: 1e-12 absolute.
      CHECK(std::fabs(df - dg.model_change(eta)) <= 1e-12 * std::max(1.0, f0));
    }
    const double f_star =
        s.m.loss(cref(s.w, s.r, s.c)) - s.m.loss(cref(axpy(s.w, dg.optimal_step, d), s.r, s.c));
    CHECK(f_star == doctest::Approx(dg.best_decrease).epsilon(1e-10));
    for (double t : {0.99, 1.01})
      CHECK(s.m.loss(cref(axpy(s.w, t * dg.optimal_step, d), s.r, s.c)) > f0 - f_star);
    // The identities between the reported quantities.
    CHECK(dg.optimal_step == doctest::Approx(dg.alignment * dg.potential / dg.batch_dot).epsilon(1e-13));
    CHECK(dg.best_decrease == doctest::Approx(dg.alignment * dg.alignment * dg.potential / 2).epsilon(1e-13));
  }

  TEST_CASE("mini-batch gradient is unbiased and alignment approaches 1 with the batch size") {
    Setup s("rf_batch");
    const Vec g = s.grad(s.w);
    const std::uint64_t seed = case_seed("rf_batch_rng");
    CAPTURE(seed);
    Rng rng(seed);
    const int n = 400;
    const index_t b = 8;
    Vec mean(g.size(), 0.0), gb(g.size());
    for (int t = 0; t < n; ++t) {
      REQUIRE(s.m.batch_gradient(cref(s.w, s.r, s.c), b, rng, ref(gb, s.r, s.c)) == Status::ok);
      for (std::size_t i = 0; i < mean.size(); ++i)
        mean[i] += gb[i] / n;
    }
    // E‖E x xᵀ − E Σ‖²_F = tr(EΣEᵀ) tr Σ + tr(EΣ²Eᵀ) for x ~ N(0, Σ) (Isserlis), so the mean of
    // n·b samples has E‖mean − G‖² = that / (n b). Over r·c = 960 coordinates the squared error
    // concentrates near its mean; 3× the expectation is far in the tail.
    const Eigen::Map<const Eigen::Matrix<double, -1, -1, Eigen::RowMajor>> sig(s.m.covariance().data(), s.c,
                                                                               s.c);
    Eigen::Matrix<double, -1, -1, Eigen::RowMajor> e(s.r, s.c);
    for (index_t i = 0; i < s.r; ++i)
      for (index_t j = 0; j < s.c; ++j)
        e(i, j) =
            s.w[static_cast<std::size_t>(i * s.c + j)] - s.m.teacher()[static_cast<std::size_t>(i * s.c + j)];
    const double expected =
        ((e * sig * e.transpose()).trace() * sig.trace() + (e * sig * sig * e.transpose()).trace()) / (n * b);
    double err = 0;
    for (std::size_t i = 0; i < g.size(); ++i)
      err += (mean[i] - g[i]) * (mean[i] - g[i]);
    CHECK(err <= 3 * expected);
    CHECK(err >= expected / 3);  // the samples really are random: not the exact gradient
    // Alignment of the batch gradient itself (D = G̃): γ = ⟨G, G̃⟩/‖G̃‖² is < 1 for small batches
    // (noise inflates ‖G̃‖) and tends to 1 for large ones.
    auto gamma = [&](index_t batch) {
      REQUIRE(s.m.batch_gradient(cref(s.w, s.r, s.c), batch, rng, ref(gb, s.r, s.c)) == Status::ok);
      const DescentDiagnostics dg =
          s.m.diagnostics(cref(s.w, s.r, s.c), cref(gb, s.r, s.c), cref(gb, s.r, s.c));
      REQUIRE(dg.status == Status::ok);
      return dg.alignment;
    };
    CHECK(gamma(2) < 0.8);
    CHECK(gamma(20000) == doctest::Approx(1.0).epsilon(0.05));
  }

  TEST_CASE("diagnostics: callback and matrix forms agree with float inputs and degenerate and bad input") {
    Setup s("rf_forms");
    const Vec g = s.grad(s.w);
    Rng rng(case_seed("rf_forms_rng"));
    Vec gb(g.size()), hd(g.size());
    REQUIRE(s.m.batch_gradient(cref(s.w, s.r, s.c), 16, rng, ref(gb, s.r, s.c)) == Status::ok);
    const Vec d = gb;  // SGD direction
    REQUIRE(s.m.hessian_vector(cref(d, s.r, s.c), ref(hd, s.r, s.c)) == Status::ok);
    const auto m1 = surrogate::descent_diagnostics(cref(g, s.r, s.c), cref(gb, s.r, s.c), cref(d, s.r, s.c),
                                                   cref(hd, s.r, s.c));
    const auto m2 = s.m.diagnostics(cref(s.w, s.r, s.c), cref(d, s.r, s.c), cref(gb, s.r, s.c));
    REQUIRE(m1.status == Status::ok);
    REQUIRE(m2.status == Status::ok);
    CHECK(m1.alignment == m2.alignment);
    CHECK(m1.potential == m2.potential);
    // Against the definitions with the long-double oracle.
    CHECK(m1.alignment == doctest::Approx(dot(g, d) / dot(gb, d)).epsilon(1e-12));
    CHECK(m1.potential == doctest::Approx(dot(gb, d) * dot(gb, d) / dot(d, hd)).epsilon(1e-12));
    // Float inputs agree to float rounding of the inputs (relative 1e-6 on O(1) ratios).
    std::vector<float> gf(g.begin(), g.end()), gbf(gb.begin(), gb.end()), df(d.begin(), d.end()),
        hdf(hd.begin(), hd.end());
    const auto mf = surrogate::descent_diagnostics(
        MatrixRef<const float>(gf.data(), s.r, s.c), MatrixRef<const float>(gbf.data(), s.r, s.c),
        MatrixRef<const float>(df.data(), s.r, s.c), MatrixRef<const float>(hdf.data(), s.r, s.c));
    REQUIRE(mf.status == Status::ok);
    CHECK(mf.alignment == doctest::Approx(m1.alignment).epsilon(1e-5));
    CHECK(mf.potential == doctest::Approx(m1.potential).epsilon(1e-5));
    // Degenerate: D = 0 → breakdown, inner products reported, ratios 0.
    const Vec zero(g.size(), 0.0);
    const auto z = s.m.diagnostics(cref(s.w, s.r, s.c), cref(zero, s.r, s.c), cref(gb, s.r, s.c));
    CHECK(z.status == Status::breakdown);
    CHECK(z.alignment == 0.0);
    CHECK(z.optimal_step == 0.0);
    // Negative curvature from a caller's Hessian: breakdown, not a negative "optimal" step.
    const auto neg = surrogate::descent_diagnostics(
        cref(g, s.r, s.c), cref(gb, s.r, s.c), cref(d, s.r, s.c),
        surrogate::HessianVectorProduct<double>([](MatrixRef<const double> x, MatrixRef<double> y) {
          for (index_t i = 0; i < x.rows; ++i)
            for (index_t j = 0; j < x.cols; ++j)
              y(i, j) = -x(i, j);
          return Status::ok;
        }));
    CHECK(neg.status == Status::breakdown);
    CHECK(neg.curvature < 0.0);
    CHECK(neg.potential == 0.0);
    // A failing callback's status is passed on; an empty one is invalid.
    const auto fail = surrogate::descent_diagnostics(
        cref(g, s.r, s.c), cref(gb, s.r, s.c), cref(d, s.r, s.c),
        surrogate::HessianVectorProduct<double>(
            [](MatrixRef<const double>, MatrixRef<double>) { return Status::out_of_memory; }));
    CHECK(fail.status == Status::out_of_memory);
    CHECK(surrogate::descent_diagnostics(cref(g, s.r, s.c), cref(gb, s.r, s.c), cref(d, s.r, s.c),
                                         surrogate::HessianVectorProduct<double>())
              .status == Status::invalid_argument);
    // NaN and shape errors.
    Vec bad = g;
    bad[3] = std::numeric_limits<double>::quiet_NaN();
    CHECK(surrogate::descent_diagnostics(cref(bad, s.r, s.c), cref(gb, s.r, s.c), cref(d, s.r, s.c),
                                         cref(hd, s.r, s.c))
              .status == Status::non_finite_input);
    CHECK(s.m.diagnostics(cref(bad, s.r, s.c), cref(d, s.r, s.c), cref(gb, s.r, s.c)).status ==
          Status::non_finite_input);
    CHECK(surrogate::descent_diagnostics(cref(g, s.r, s.c), cref(gb, s.r, s.c), cref(d, s.c, s.r),
                                         cref(hd, s.r, s.c))
              .status == Status::invalid_argument);
    CHECK(std::isnan(s.m.loss(cref(bad, s.r, s.c))));
  }

  TEST_CASE("diagnostics and the model: bad sizes, allocation failures and the double range") {
    // Audit findings 6 and 7. Prescribed data, no randomness.
    const Vec ones(4, 1.0);
    const auto hvp_id =
        surrogate::HessianVectorProduct<double>([](MatrixRef<const double> x, MatrixRef<double> y) {
          for (index_t i = 0; i < x.rows; ++i)
            for (index_t j = 0; j < x.cols; ++j)
              y(i, j) = x(i, j);
          return Status::ok;
        });
    // 6: the callback form sized its buffer from the shape before checking it: −1 × 4 threw
    // std::length_error, null data at 2^31 × 2^31 too. Now refused before allocating, and an
    // allocation beyond memory (a valid layout of 2^62 elements) is out_of_memory.
    const MatrixRef<const double> negative(ones.data(), -1, 4);
    CHECK(surrogate::descent_diagnostics(negative, negative, negative, hvp_id).status ==
          Status::invalid_argument);
    const index_t big = index_t(1) << 31;
    const MatrixRef<const double> null_big(nullptr, big, big);
    CHECK(surrogate::descent_diagnostics(null_big, null_big, null_big, hvp_id).status ==
          Status::invalid_argument);
    const auto huge =
        MatrixRef<const double>::strided(ones.data(), big, big, 0, 0);  // every entry is ones[0]
    const DescentDiagnostics oom = surrogate::descent_diagnostics(huge, huge, huge, hvp_id);
    CHECK(oom.status == Status::out_of_memory);
    // 7: ratios beyond the double range were reported as ∞ with status ok: γ = ⟨G,D⟩/⟨G̃,D⟩ =
    // (1e200·1e100)/(1e-200·1e100) = 1e400.
    const Vec g(4, 1e200), gb(4, 1e-200), d(4, 1e100), hd(4, 1e-250);
    const DescentDiagnostics wide =
        surrogate::descent_diagnostics(cref(g, 2, 2), cref(gb, 2, 2), cref(d, 2, 2), cref(hd, 2, 2));
    CHECK(wide.status == Status::out_of_range);
    for (double x : {wide.alignment, wide.potential, wide.optimal_step, wide.best_decrease})
      CHECK(x == 0.0);
    // ... and products that underflow (1e-200·1e-200 = 1e-400) were a spurious breakdown.
    const Vec tiny(4, 1e-200);
    const DescentDiagnostics under = surrogate::descent_diagnostics(cref(tiny, 2, 2), cref(tiny, 2, 2),
                                                                    cref(tiny, 2, 2), cref(tiny, 2, 2));
    CHECK(under.status == Status::out_of_range);
    CHECK(std::string(under.message).find("double range") != std::string::npos);
    // A true zero ⟨G̃, D⟩ is still a breakdown.
    const Vec zero(4, 0.0);
    CHECK(
        surrogate::descent_diagnostics(cref(ones, 2, 2), cref(zero, 2, 2), cref(ones, 2, 2), cref(ones, 2, 2))
            .status == Status::breakdown);
    // The model: W = 1e308 is finite, but (W − W*)Σ = 1.9e308 is not (the gradient came back ∞
    // or NaN with status ok). Now out_of_range with g unchanged, and the loss +∞.
    RandomFeatureModel m;
    const Vec teacher(2, 0.0), cov = {1.0, 0.9, 0.9, 1.0};
    REQUIRE(RandomFeatureModel::create(cref(teacher, 1, 2), cref(cov, 2, 2), m) == Status::ok);
    const Vec w = {1e308, -1e308};
    Vec out(2, 7.0);
    CHECK(m.gradient(cref(w, 1, 2), ref(out, 1, 2)) == Status::ok);  // 1e308 − 0.9e308: finite
    const Vec w2 = {1e308, 1e308};
    out = {7.0, 7.0};
    CHECK(m.gradient(cref(w2, 1, 2), ref(out, 1, 2)) == Status::out_of_range);
    CHECK(out == Vec{7.0, 7.0});
    CHECK(m.hessian_vector(cref(w2, 1, 2), ref(out, 1, 2)) == Status::out_of_range);
    CHECK(m.loss(cref(w2, 1, 2)) == std::numeric_limits<double>::infinity());
    CHECK(m.diagnostics(cref(w2, 1, 2), cref(ones, 1, 2), cref(ones, 1, 2)).status == Status::out_of_range);
    // Allocation failures: batch 2^40 (cols·2^40 doubles) and a model with cols = 2^23 (cols²
    // doubles, 512 TiB: beyond any address space) threw std::bad_alloc. Not under ASan, whose
    // allocator aborts requests beyond 1 TiB (support/sanitizers.hpp).
    if (schatten::test::kAddressSanitizer) return;
    Rng rng(1);
    const Rng rng_before = rng;
    out = {7.0, 7.0};
    CHECK(m.batch_gradient(cref(teacher, 1, 2), index_t(1) << 40, rng, ref(out, 1, 2)) ==
          Status::out_of_memory);
    CHECK(out == Vec{7.0, 7.0});
    CHECK(rng.next() == Rng(rng_before).next());
    RandomFeatureModel unchanged = m;
    CHECK(RandomFeatureModel::random(1, index_t(1) << 23, Vec(std::size_t(1) << 23, 1.0), 1, unchanged) ==
          Status::out_of_memory);
    CHECK(unchanged.covariance() == m.covariance());
  }

  TEST_CASE("random-feature model: create rejects bad covariances and leaves the model unchanged") {
    Setup s("rf_create");
    RandomFeatureModel m = s.m;
    const index_t c = 3;
    Vec t(2 * c, 0.5);
    Vec nonsym = {2, 1, 0, 0.5, 2, 0, 0, 0, 2};
    Vec indefinite = {1, 2, 0, 2, 1, 0, 0, 0, 1};
    Vec good = {2, 1, 0, 1, 2, 0, 0, 0, 2};
    CHECK(RandomFeatureModel::create(cref(t, 2, c), cref(nonsym, c, c), m) == Status::invalid_argument);
    CHECK(RandomFeatureModel::create(cref(t, 2, c), cref(indefinite, c, c), m) == Status::invalid_argument);
    CHECK(RandomFeatureModel::create(cref(t, 2, c), cref(good, 2, 2), m) == Status::invalid_argument);
    good[4] = std::numeric_limits<double>::infinity();
    CHECK(RandomFeatureModel::create(cref(t, 2, c), cref(good, c, c), m) == Status::non_finite_input);
    CHECK(m.rows() == s.r);  // unchanged
    CHECK(m.teacher() == s.m.teacher());
    CHECK(RandomFeatureModel::random(2, 3, {1.0, 0.0, 1.0}, 1, m) == Status::invalid_argument);
    CHECK(RandomFeatureModel::random(2, 3, {1.0, 1.0}, 1, m) == Status::invalid_argument);
    good[4] = 2;
    REQUIRE(RandomFeatureModel::create(cref(t, 2, c), cref(good, c, c), m) == Status::ok);
    // f(W) = ½ tr(E Σ Eᵀ) with E = −W* = −0.5 everywhere: ½ · 2 rows · 0.25 · (sum of Σ = 8).
    Vec w(2 * c, 0.0);
    CHECK(m.loss(cref(w, 2, c)) == doctest::Approx(0.5 * 2 * 0.25 * 8));
  }
}

}  // namespace surrogate_test_descent
