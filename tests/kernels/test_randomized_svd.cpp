// SPDX-License-Identifier: Apache-2.0
/// \file
/// randomized_singular_values() against the prescribed spectrum (and the SVD oracle).
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "schatten/kernels/randomized_svd.hpp"
#include "support/convert.hpp"
#include "support/oracle.hpp"
#include "support/seed.hpp"
#include "support/spectra.hpp"

using namespace schatten;
using namespace schatten::test;

TEST_SUITE("kernels.randomized_svd") {
  TEST_CASE("exact to rounding when the rank is at most the sample size") {
    // Rank 12 inside a 150 × 90 matrix, l = 20 samples: the range finder captures the whole
    // range, so the estimates are the singular values to rounding (1e-10 relative in double).
    std::vector<double> sigma(90, 0.0);
    for (int i = 0; i < 12; ++i)
      sigma[static_cast<std::size_t>(i)] = std::pow(0.7, i);
    SpectrumCase sc{"rsvd_lowrank", 150, 90, sigma};
    const std::uint64_t seed = case_seed("rsvd_lowrank");
    CAPTURE(seed);
    const std::vector<double> a = to_row_major<double>(make_matrix(sc, seed));
    RandomizedSvdOptions o;
    o.rank = 12;
    o.oversampling = 8;
    o.power_iterations = 0;
    o.seed = seed;
    std::vector<double> got;
    REQUIRE(randomized_singular_values(MatrixRef<const double>(a.data(), 150, 90), got, o) == Status::ok);
    REQUIRE(got.size() == 12);
    for (int i = 0; i < 12; ++i)
      CHECK(got[static_cast<std::size_t>(i)] ==
            doctest::Approx(sigma[static_cast<std::size_t>(i)]).epsilon(1e-10));
  }

  TEST_CASE_TEMPLATE("power iterations recover the top of a slowly decaying spectrum", T, float, double) {
    // σ_i = 1/(i + 1) (the slow decay of gradient spectra), 300 × 200, rank 20, l = 28, q = 2.
    // The relative underestimate is of order (σ_{l+1}/σ_i)^{2q+1} = ((i + 1)/29)^5: ≤ 1.5e-2 for
    // i < 10; in float the GEMMs add ~1e-6. Tolerance 2e-2 on the first 10 values.
    std::vector<double> sigma(200);
    for (int i = 0; i < 200; ++i)
      sigma[static_cast<std::size_t>(i)] = 1.0 / (i + 1);
    SpectrumCase sc{"rsvd_slow", 300, 200, sigma};
    const std::uint64_t seed = case_seed("rsvd_slow");
    CAPTURE(seed);
    const std::vector<T> a = to_row_major<T>(make_matrix(sc, seed));
    RandomizedSvdOptions o;
    o.rank = 20;
    o.seed = seed;
    std::vector<double> got;
    REQUIRE(randomized_singular_values(MatrixRef<const T>(a.data(), 300, 200), got, o) == Status::ok);
    for (int i = 0; i < 10; ++i) {
      CAPTURE(i);
      const double want = sigma[static_cast<std::size_t>(i)];
      CHECK(std::fabs(got[static_cast<std::size_t>(i)] - want) <= 2e-2 * want);
      CHECK(got[static_cast<std::size_t>(i)] <= want * (1 + 1e-5));  // never above (up to rounding)
    }
    for (int i = 1; i < 20; ++i)
      CHECK(got[static_cast<std::size_t>(i)] <= got[static_cast<std::size_t>(i - 1)]);
    // Without power iterations the same sample is visibly worse on σ_10: the iterations matter.
    o.power_iterations = 0;
    std::vector<double> rough;
    REQUIRE(randomized_singular_values(MatrixRef<const T>(a.data(), 300, 200), rough, o) == Status::ok);
    CHECK(std::fabs(rough[9] - sigma[9]) > std::fabs(got[9] - sigma[9]));
  }

  TEST_CASE("bad input and options are refused and leave the output alone") {
    std::vector<double> a(6 * 4, 1.0), out = {42.0};
    RandomizedSvdOptions o;
    o.rank = 5;  // > min(6, 4)
    CHECK(randomized_singular_values(MatrixRef<const double>(a.data(), 6, 4), out, o) ==
          Status::invalid_argument);
    o.rank = 2;
    o.power_iterations = -1;
    CHECK(randomized_singular_values(MatrixRef<const double>(a.data(), 6, 4), out, o) ==
          Status::invalid_argument);
    o.power_iterations = 1;
    a[7] = std::numeric_limits<double>::quiet_NaN();
    CHECK(randomized_singular_values(MatrixRef<const double>(a.data(), 6, 4), out, o) ==
          Status::non_finite_input);
    CHECK(out == std::vector<double>{42.0});
    a[7] = 1.0;  // rank one: σ₁ = √24, σ₂ = 0
    REQUIRE(randomized_singular_values(MatrixRef<const double>(a.data(), 6, 4), out, o) == Status::ok);
    CHECK(out[0] == doctest::Approx(std::sqrt(24.0)));
    CHECK(std::fabs(out[1]) <= 1e-12);
  }
}
