// SPDX-License-Identifier: Apache-2.0
/// \file
/// Kaon's random spectra (algorithms.md §4b.2): the chaotic-map schedule run by polar() against
/// an SVD oracle in double, and the seeded-uniform SVD variant.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <vector>

#include "schatten/core/random.hpp"
#include "schatten/kernels/polar.hpp"
#include "schatten/reference/polar.hpp"
#include "support/convert.hpp"
#include "support/oracle.hpp"
#include "support/seed.hpp"
#include "support/spectra.hpp"

namespace kernels_test_kaon {  // this file's scope in a unity build (tests/CMakeLists.txt)

using namespace schatten;
using namespace schatten::test;

namespace {
/// The map of the paper's pseudocode, written out independently of schedules::kaon().
double kaon_map(double x) { return 4.1 * x * (1.0 - x * x) * (1.0 - x * x); }

/// Output of 5 chaotic steps on the Frobenius-normalised spectrum, divided by 1.175.
double kaon_composite(double x, int steps) {
  for (int t = 0; t < steps; ++t)
    x = kaon_map(x);
  return x / 1.175;
}

/// Largest |off-diagonal| and smallest diagonal entry of Uᵀ Q V: Q keeps the singular vectors
/// of the input exactly when Uᵀ Q V is diagonal.
std::pair<double, double> off_diagonal(const Svd& d, const Eigen::MatrixXd& q) {
  const Eigen::MatrixXd m = d.u.transpose() * q * d.v;
  double off = 0.0, mindiag = std::numeric_limits<double>::infinity();
  for (Eigen::Index i = 0; i < m.rows(); ++i)
    for (Eigen::Index j = 0; j < m.cols(); ++j)
      if (i == j)
        mindiag = std::min(mindiag, m(i, j));
      else
        off = std::max(off, std::fabs(m(i, j)));
  return {off, mindiag};
}

template <class T>
Eigen::MatrixXd run_kaon(const Eigen::MatrixXd& a, int steps = 5) {
  std::vector<T> in = to_row_major<T>(a), out(in.size());
  const PolarReport r = kaon(MatrixRef<const T>(in.data(), a.rows(), a.cols()),
                             MatrixRef<T>(out.data(), a.rows(), a.cols()), steps);
  REQUIRE(r.status == Status::ok);
  CHECK(r.iterations == steps);
  return from_row_major(out.data(), a.rows(), a.cols());
}
}  // namespace

TEST_SUITE("kernels.kaon") {
  TEST_CASE("kaon schedule: the scalar map peaks at 1.17349 and the output lies in [0 0.9987]") {
    const CoefficientSchedule s = schedules::kaon();
    REQUIRE(s.steps.size() == 5);
    CHECK(s.tail == ScheduleTail::error);
    CHECK(s.normalization.kind == Normalization::Kind::frobenius);
    CHECK(s.normalization.safety == 1.0);
    // max over [0, 1] of 4.1 x (1 − x²)² is at x = 1/√5 (derivative (1 − x²)(1 − 5x²) = 0).
    const double peak = kaon_map(1.0 / std::sqrt(5.0));
    CHECK(peak == doctest::Approx(1.17349).epsilon(1e-5));
    double lo = 1.0, hi = 0.0, worst = 0.0;
    for (int i = 0; i <= 100000; ++i) {
      const double x = i / 100000.0;
      const double y = s.apply(x, 5);
      lo = std::min(lo, y);
      hi = std::max(hi, y);
      // The library's folded rows against the oracle: relative rounding of five steps whose
      // slopes are ≤ 4.1 in size, i.e. ≤ 4.1⁵ · 1e-16 ≈ 1e-13 (absolute, values ≤ 1).
      worst = std::max(worst, std::fabs(y - kaon_composite(x, 5)));
    }
    CHECK(worst <= 1e-12);
    CHECK(lo >= 0.0);
    CHECK(hi <= peak / 1.175 + 1e-15);
    CHECK(hi >= 0.998);  // the chaotic orbit reaches the top of the range on a fine grid
    CHECK_THROWS_AS(schedules::kaon(0), std::invalid_argument);
    CHECK(schedules::kaon(3).steps.size() == 3);
  }

  TEST_CASE("kaon on matrices: matches the SVD oracle in double and keeps the singular vectors") {
    // 120 × 170, singular values a log grid of [1e-3, 1]. In double every singular value goes
    // through five steps whose slope is at most |p'(0)| = 4.1, so rounding of O(n ε) grows by at
    // most 4.1⁵ ≈ 1.2e3: 1e-9 relative is a generous bound (observed ~1e-12).
    SpectrumCase sc{"kaon_grid", 120, 170, geometric(120, 1e-3)};
    const std::uint64_t seed = case_seed("kaon_grid");
    CAPTURE(seed);
    const Eigen::MatrixXd a = make_matrix(sc, seed);
    const Eigen::MatrixXd q = run_kaon<double>(a);
    const std::vector<PolyStep> rows{{4.1, -8.2, 4.1},
                                     {4.1, -8.2, 4.1},
                                     {4.1, -8.2, 4.1},
                                     {4.1, -8.2, 4.1},
                                     {4.1 / 1.175, -8.2 / 1.175, 4.1 / 1.175}};
    const Eigen::MatrixXd want = predicted_polynomial_output(a, rows, 5, 1.0, 0.0);
    CHECK(relative_error(q, want) <= 1e-9);
    CHECK(spectral_norm(q) <= 0.99872 + 1e-9);
    const Svd d = svd(a);
    const auto [off, mindiag] = off_diagonal(d, q);
    CHECK(off <= 1e-10);
    CHECK(mindiag >= -1e-10);
    // It is not an orthogonalisation: the output spectrum is spread over the range.
    const Svd dq = svd(q);
    CHECK(dq.s.maxCoeff() - dq.s.minCoeff() >= 0.5);
  }

  TEST_CASE("kaon in float: singular vectors kept and spectrum in range (values differ: chaotic)") {
    // The map is chaotic, so float rounding (6e-8) amplified by up to 4.1⁵ moves individual
    // singular values by up to ~1e-3 against the double orbit; what must hold in float is the
    // structure: ‖Q‖₂ ≤ 0.9987 (+ a few float ulps of the norm) and Uᵀ Q V diagonal to float
    // accuracy times the growth (1e-4·‖Q‖).
    SpectrumCase sc{"kaon_float", 96, 64, geometric(64, 1e-2)};
    const std::uint64_t seed = case_seed("kaon_float");
    CAPTURE(seed);
    const Eigen::MatrixXd a = make_matrix(sc, seed);
    const Eigen::MatrixXd q = run_kaon<float>(a);
    CHECK(spectral_norm(q) <= 0.99872 + 1e-5);
    const auto [off, mindiag] = off_diagonal(svd(a), q);
    CHECK(off <= 1e-3);
    CHECK(mindiag >= -1e-3);
  }

  TEST_CASE("kaon: bad input leaves the output untouched") {
    Eigen::MatrixXd a = Eigen::MatrixXd::Ones(8, 6);
    a(3, 2) = std::numeric_limits<double>::quiet_NaN();
    std::vector<double> in = to_row_major<double>(a), out(in.size(), 7.0);
    const PolarReport r = kaon(MatrixRef<const double>(in.data(), 8, 6), MatrixRef<double>(out.data(), 8, 6));
    CHECK(r.status == Status::non_finite_input);
    CHECK(std::all_of(out.begin(), out.end(), [](double x) { return x == 7.0; }));
    CHECK(kaon(MatrixRef<const double>(in.data(), 8, 6), MatrixRef<double>(out.data(), 8, 6), 0).status ==
          Status::invalid_argument);
    // More steps than polar() runs: invalid_argument before the schedule is built (INT_MAX once
    // allocated 51 GB of rows first, then gave out_of_memory or took the machine's memory).
    for (const int steps : {kPolarMaxIterations + 1, std::numeric_limits<int>::max()})
      CHECK(
          kaon(MatrixRef<const double>(in.data(), 8, 6), MatrixRef<double>(out.data(), 8, 6), steps).status ==
          Status::invalid_argument);
    CHECK(std::all_of(out.begin(), out.end(), [](double x) { return x == 7.0; }));
    // A zero matrix maps to zero (its Frobenius norm is zero: no 0/0).
    std::vector<double> zero(48, 0.0);
    REQUIRE(kaon(MatrixRef<const double>(zero.data(), 8, 6), MatrixRef<double>(out.data(), 8, 6)).status ==
            Status::ok);
    CHECK(std::all_of(out.begin(), out.end(), [](double x) { return x == 0.0; }));
  }

  TEST_CASE("reference kaon_spectrum: seeded uniform singular values over the input's vectors") {
    SpectrumCase sc{"kaon_ref", 40, 30, geometric(30, 1e-4)};
    sc.sigma[29] = 0.0;  // one null direction: gets a zero singular value, not noise
    const std::uint64_t seed = case_seed("kaon_ref");
    CAPTURE(seed);
    const Eigen::MatrixXd a = make_matrix(sc, seed);
    std::vector<double> in = to_row_major<double>(a), o1(in.size()), o2(in.size()), o3(in.size());
    MatrixRef<const double> ar(in.data(), 40, 30);
    REQUIRE(reference::kaon_spectrum(ar, MatrixRef<double>(o1.data(), 40, 30), 11) == Status::ok);
    REQUIRE(reference::kaon_spectrum(ar, MatrixRef<double>(o2.data(), 40, 30), 11) == Status::ok);
    REQUIRE(reference::kaon_spectrum(ar, MatrixRef<double>(o3.data(), 40, 30), 12) == Status::ok);
    CHECK(o1 == o2);  // deterministic in the seed
    CHECK(o1 != o3);
    const Eigen::MatrixXd q = from_row_major(o1.data(), 40, 30);
    const Svd dq = svd(q);
    CHECK(dq.s(0) == doctest::Approx(1.0).epsilon(1e-12));  // divided by the maximum draw
    CHECK(dq.s(29) <= 1e-12);                               // the null direction stays null
    CHECK(dq.s(28) > 0.0);
    const auto [off, mindiag] = off_diagonal(svd(a), q);
    (void)mindiag;
    // Uᵀ Q V restricted to the 29 nonzero directions is diagonal (the null pair is arbitrary).
    CHECK(off <= 1e-10);
    // The values are the library's Rng stream from the seed, in order of decreasing σ, divided
    // by the largest of the k draws: check both outputs against the stream directly.
    Rng rng(11);
    std::vector<double> draws(30);
    for (double& x : draws)
      x = rng.uniform();
    const double top = *std::max_element(draws.begin(), draws.end());
    std::vector<double> want_a(draws.begin(), draws.begin() + 29);  // null direction → 0
    want_a.push_back(0.0);
    std::vector<double> want_b = draws;
    for (auto* w : {&want_a, &want_b}) {
      for (double& x : *w)
        x /= top;
      std::sort(w->begin(), w->end(), std::greater<>());
    }
    SpectrumCase sc2{"kaon_ref2", 40, 30, geometric(30, 1e-1)};
    const Eigen::MatrixXd b = make_matrix(sc2, seed + 1);
    std::vector<double> inb = to_row_major<double>(b), ob(inb.size());
    REQUIRE(reference::kaon_spectrum(MatrixRef<const double>(inb.data(), 40, 30),
                                     MatrixRef<double>(ob.data(), 40, 30), 11) == Status::ok);
    const Svd db = svd(from_row_major(ob.data(), 40, 30));
    for (int i = 0; i < 30; ++i) {
      CAPTURE(i);
      CHECK(std::fabs(dq.s(i) - want_a[static_cast<std::size_t>(i)]) <= 1e-12);
      CHECK(std::fabs(db.s(i) - want_b[static_cast<std::size_t>(i)]) <= 1e-12);
    }
  }
}

}  // namespace kernels_test_kaon
