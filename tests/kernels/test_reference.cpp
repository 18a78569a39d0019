// SPDX-License-Identifier: Apache-2.0
/// \file
/// The SVD references against matrices built from known factors.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "schatten/reference/polar.hpp"
#include "support/convert.hpp"
#include "support/oracle.hpp"
#include "support/seed.hpp"
#include "support/spectra.hpp"

namespace kernels_test_reference {  // this file's scope in a unity build (tests/CMakeLists.txt)

using namespace schatten;
using namespace schatten::test;

TEST_SUITE("reference") {
  namespace {
  struct Factored {
    Eigen::MatrixXd a, u, v;
  };
  Factored factored(index_t r, index_t c, const std::vector<double>& sigma, std::uint64_t seed) {
    const index_t k = std::min(r, c);
    std::vector<double> u, v;
    Factored f{Eigen::MatrixXd(r, c), {}, {}};
    REQUIRE(reference::matrix_with_spectrum(MatrixRef<double>::col_major(f.a.data(), r, c), sigma, seed, &u,
                                            &v) == Status::ok);
    f.u = from_row_major(u.data(), r, k);
    f.v = from_row_major(v.data(), c, k);
    return f;
  }
  }  // namespace

  TEST_CASE("matrix_with_spectrum: orthonormal factors and the prescribed spectrum") {
    const std::vector<double> s = geometric(12, 1e-4, 3.0);
    const Factored f = factored(20, 12, s, case_seed("mws"));
    CHECK((f.u.transpose() * f.u - Eigen::MatrixXd::Identity(12, 12)).norm() <= 1e-13);
    CHECK((f.v.transpose() * f.v - Eigen::MatrixXd::Identity(12, 12)).norm() <= 1e-13);
    const Eigen::VectorXd sv = Eigen::Map<const Eigen::VectorXd>(s.data(), 12);
    CHECK((f.a - f.u * sv.asDiagonal() * f.v.transpose()).norm() <= 1e-13);
    // Reproducible for a seed, different for another.
    const Factored g = factored(20, 12, s, case_seed("mws"));
    CHECK(g.a == f.a);
    CHECK(factored(20, 12, s, case_seed("mws", 1)).a != f.a);
    std::vector<double> out(6);
    CHECK(reference::matrix_with_spectrum(MatrixRef<double>(out.data(), 2, 3), {1.0}, 1) ==
          Status::invalid_argument);
  }

  TEST_CASE("reference::polar returns U V^T of a prescribed factorisation") {
    for (auto [r, c] : {std::pair<index_t, index_t>{30, 30}, {20, 45}, {45, 20}}) {
      const index_t k = std::min(r, c);
      const std::vector<double> s = geometric(k, 1e-8);
      const Factored f = factored(r, c, s, case_seed("reference", static_cast<std::uint64_t>(r * 100 + c)));
      Eigen::MatrixXd q(r, c);
      REQUIRE(reference::polar(MatrixRef<const double>::col_major(f.a.data(), r, c),
                               MatrixRef<double>::col_major(q.data(), r, c)) == Status::ok);
      // σ_min = 1e-8: U Vᵀ is determined to about ε/σ_min relative to the gaps (here ≥ 1e-8·0.4).
      CHECK(spectral_norm(q - f.u * f.v.transpose()) <= 1e-6);
      std::vector<double> got;
      REQUIRE(reference::singular_values(MatrixRef<const double>::col_major(f.a.data(), r, c), got) ==
              Status::ok);
      // BDCSVD is backward stable: absolute error a small multiple of ε·σ_max.
      for (index_t i = 0; i < k; ++i)
        CHECK(std::fabs(got[static_cast<std::size_t>(i)] - s[static_cast<std::size_t>(i)]) <= 64 * 2.2e-16);
    }
  }

  TEST_CASE("reference::polar of a rank-deficient matrix is the partial isometry on its range") {
    const index_t r = 25, c = 18, rank = 7;
    std::vector<double> s(18, 0.0);
    std::fill(s.begin(), s.begin() + rank, 3.0);
    const Factored f = factored(r, c, s, case_seed("reference_rank"));
    const Eigen::MatrixXd ur = f.u.leftCols(rank), vr = f.v.leftCols(rank);
    std::vector<float> af = to_row_major<float>(f.a), qf(af.size());
    REQUIRE(reference::polar(MatrixRef<const float>(af.data(), r, c), MatrixRef<float>(qf.data(), r, c)) ==
            Status::ok);
    CHECK(spectral_norm(from_row_major(qf.data(), r, c) - ur * vr.transpose()) <= 1e-5);  // float rounding
  }

  TEST_CASE("reference: bad input gives a status and leaves q untouched") {
    std::vector<double> a(12, 1.0), q(12, -7.0);
    a[5] = std::numeric_limits<double>::quiet_NaN();
    CHECK(reference::polar(MatrixRef<const double>(a.data(), 3, 4), MatrixRef<double>(q.data(), 3, 4)) ==
          Status::non_finite_input);
    CHECK(reference::polar(MatrixRef<const double>(a.data(), 3, 4), MatrixRef<double>(q.data(), 4, 3)) ==
          Status::invalid_argument);
    for (double x : q)
      CHECK(x == -7.0);
    std::vector<double> s;
    CHECK(reference::singular_values(MatrixRef<const double>(a.data(), 3, 4), s) == Status::non_finite_input);
  }
}

}  // namespace kernels_test_reference
