// SPDX-License-Identifier: Apache-2.0
/// \file
/// The SVD references against matrices built from known factors.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>

#include "schatten/reference/polar.hpp"
#include "support/convert.hpp"
#include "support/oracle.hpp"
#include "support/seed.hpp"
#include "support/spectra.hpp"

using namespace schatten;
using namespace schatten::test;

TEST_SUITE("reference") {
TEST_CASE("reference::polar returns U V^T of a prescribed factorisation") {
  for (auto [r, c] : {std::pair<index_t, index_t>{30, 30}, {20, 45}, {45, 20}}) {
    Rng rng(case_seed("reference", static_cast<std::uint64_t>(r * 100 + c)));
    const index_t k = std::min(r, c);
    const Eigen::MatrixXd u = random_orthonormal(r, k, rng), v = random_orthonormal(c, k, rng);
    const std::vector<double> s = geometric(k, 1e-8);
    Eigen::VectorXd sv = Eigen::Map<const Eigen::VectorXd>(s.data(), k);
    const Eigen::MatrixXd a = u * sv.asDiagonal() * v.transpose();
    Eigen::MatrixXd q(r, c);
    REQUIRE(reference::polar(MatrixRef<const double>::col_major(a.data(), r, c),
                             MatrixRef<double>::col_major(q.data(), r, c)) == Status::ok);
    // σ_min = 1e-8: U Vᵀ is determined to about ε/σ_min relative to the gaps (here ≥ 1e-8·0.4).
    CHECK(spectral_norm(q - u * v.transpose()) <= 1e-6);
    std::vector<double> got;
    REQUIRE(reference::singular_values(MatrixRef<const double>::col_major(a.data(), r, c), got) == Status::ok);
    // BDCSVD is backward stable: absolute error a small multiple of ε·σ_max.
    for (index_t i = 0; i < k; ++i)
      CHECK(std::fabs(got[static_cast<std::size_t>(i)] - s[static_cast<std::size_t>(i)]) <= 64 * 2.2e-16);
  }
}

TEST_CASE("reference::polar of a rank-deficient matrix is the partial isometry on its range") {
  const index_t r = 25, c = 18, rank = 7;
  Rng rng(case_seed("reference_rank"));
  const Eigen::MatrixXd u = random_orthonormal(r, rank, rng), v = random_orthonormal(c, rank, rng);
  const Eigen::MatrixXd a = u * v.transpose() * 3.0;
  std::vector<float> af = to_row_major<float>(a), qf(af.size());
  REQUIRE(reference::polar(MatrixRef<const float>(af.data(), r, c), MatrixRef<float>(qf.data(), r, c)) ==
          Status::ok);
  CHECK(spectral_norm(from_row_major(qf.data(), r, c) - u * v.transpose()) <= 1e-5);  // float rounding
}

TEST_CASE("reference: bad input gives a status and leaves q untouched") {
  std::vector<double> a(12, 1.0), q(12, -7.0);
  a[5] = std::numeric_limits<double>::quiet_NaN();
  CHECK(reference::polar(MatrixRef<const double>(a.data(), 3, 4), MatrixRef<double>(q.data(), 3, 4)) ==
        Status::non_finite_input);
  CHECK(reference::polar(MatrixRef<const double>(a.data(), 3, 4), MatrixRef<double>(q.data(), 4, 3)) ==
        Status::invalid_argument);
  for (double x : q) CHECK(x == -7.0);
  std::vector<double> s;
  CHECK(reference::singular_values(MatrixRef<const double>(a.data(), 3, 4), s) == Status::non_finite_input);
}
}
