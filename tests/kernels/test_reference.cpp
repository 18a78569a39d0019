// SPDX-License-Identifier: Apache-2.0
/// \file
/// The SVD references against matrices built from known factors.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include <Eigen/SVD>

#include "reference/dense_svd.hpp"  // internal (src/): the library's one dense SVD
#include "schatten/core/random.hpp"
#include "schatten/reference/polar.hpp"
#include "support/allocations.hpp"
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

  TEST_CASE("dense_svd: every path gives the prescribed factorisation") {
    // Each path started directly: σ to 64·ε·σ_max (backward stability; σ_max = 1), U Σ Vᵀ = a and
    // orthonormal factors to 1e-13 (measured ≤ 2e-15 here). Wide and tall, full rank and with
    // three exact zeros among σ. A failed check passes the call on to a later path. On full-rank
    // input that is rare (BDCSVD failed on none of 10 000 such matrices, measured 2026-12-01, but
    // at seed 328 of the sweep its result for the column-reversed 23 × 37 had σ off by 8.8e-5 and
    // a residual of 1.8e-3, and Jacobi answered), so the started BDCSVD path must be kept in at
    // least one of the two full-rank shapes: the reversed-columns path, whose V must have its
    // rows put back, is tested here, where a wrong V would show as a fall through to Jacobi every
    // time. With zeros BDCSVD may fail (1 in 10 000 of these), and a later path may then answer.
    using schatten::detail::SvdPath;
    int kept[2] = {0, 0};  // full-rank calls that kept the started divide-and-conquer / reversed path
    for (const auto& shape : {std::pair<index_t, index_t>{37, 23}, {23, 37}}) {
      for (int zeros : {0, 3}) {
        const index_t r = shape.first, c = shape.second, k = std::min(r, c);  // CAPTURE: no bindings
        CAPTURE(r);
        CAPTURE(zeros);
        std::vector<double> s = geometric(k, 1e-6);
        std::fill(s.end() - zeros, s.end(), 0.0);
        const Factored f =
            factored(r, c, s, case_seed("dense_svd_paths", static_cast<std::uint64_t>(r * 10 + zeros)));
        for (SvdPath path : {SvdPath::divide_and_conquer, SvdPath::reversed_columns, SvdPath::jacobi}) {
          const int path_i = static_cast<int>(path);
          CAPTURE(path_i);
          const schatten::detail::DenseSvd d = schatten::detail::dense_svd(f.a, true, path);
          CHECK(static_cast<int>(d.path) >= path_i);
          if (zeros == 0 && path != SvdPath::jacobi) {
            kept[path_i] += d.path == path ? 1 : 0;
            if (d.path != path)
              MESSAGE("full rank, path " << path_i << " fell through to " << static_cast<int>(d.path));
          }
          REQUIRE(d.sigma.size() == k);
          REQUIRE(d.u.rows() == r);
          REQUIRE(d.v.rows() == c);
          for (index_t i = 0; i < k; ++i)
            CHECK(std::fabs(d.sigma(i) - s[static_cast<std::size_t>(i)]) <= 64 * 2.2e-16);
          CHECK((d.u * d.sigma.asDiagonal() * d.v.transpose() - f.a).norm() <= 1e-13);
          CHECK((d.u.transpose() * d.u - Eigen::MatrixXd::Identity(k, k)).norm() <= 1e-13);
          CHECK((d.v.transpose() * d.v - Eigen::MatrixXd::Identity(k, k)).norm() <= 1e-13);
          const schatten::detail::DenseSvd values = schatten::detail::dense_svd(f.a, false, path);
          CHECK(values.u.size() == 0);
          CHECK(values.v.size() == 0);
          CHECK((values.sigma - d.sigma).norm() == 0.0);
        }
      }
    }
    CHECK(kept[0] >= 1);
    CHECK(kept[1] >= 1);
  }

  TEST_CASE("dense_svd: inputs that Eigen 3.4.0's BDCSVD gets wrong come out right") {
    // B = QᵀA of a randomized SVD: A 150 × 90 of rank 12 (σ_i = 0.7^i), Ω 90 × 20 Gaussian, Q from
    // the Householder QR of A Ω; B (20 × 90) has the 12 σ_i and 8 zeros. For these fixed seeds
    // (7 of the first 6000 of this construction, found 2026-12-01 from a seed sweep of the
    // randomized SVD test; src/reference/dense_svd.hpp) Eigen 3.4.0's BDCSVD returned some σ_i
    // off by 0.5 % to 22 %. dense_svd must give them to 1e-12 relative (healthy runs of this
    // construction: ≤ 6e-15). How many needed a fallback is printed: all 7 with Debian 12's
    // Eigen on the machine that found them; a fixed Eigen, or another summation order in its
    // products, may need none, and the check of the values still holds.
    int fallbacks = 0;
    for (std::uint64_t s : {364, 679, 2347, 2901, 3143, 3151, 3743}) {
      const std::uint64_t seed = 1000003ull * s + 17;
      CAPTURE(seed);
      std::vector<double> sigma(90, 0.0);
      for (int i = 0; i < 12; ++i)
        sigma[static_cast<std::size_t>(i)] = std::pow(0.7, i);
      const Eigen::MatrixXd a = make_matrix(SpectrumCase{"bdcsvd", 150, 90, sigma}, seed);
      Eigen::MatrixXd omega(90, 20);
      Rng rng(seed);
      for (Eigen::Index j = 0; j < 20; ++j)
        for (Eigen::Index i = 0; i < 90; ++i)
          omega(i, j) = rng.normal();
      const Eigen::HouseholderQR<Eigen::MatrixXd> qr(Eigen::MatrixXd(a * omega));
      const Eigen::MatrixXd q = qr.householderQ() * Eigen::MatrixXd::Identity(150, 20);
      const Eigen::MatrixXd b = q.transpose() * a;
      const schatten::detail::DenseSvd d = schatten::detail::dense_svd(b, false);
      fallbacks += d.path != schatten::detail::SvdPath::divide_and_conquer;
      for (int i = 0; i < 12; ++i)
        CHECK(d.sigma(i) == doctest::Approx(sigma[static_cast<std::size_t>(i)]).epsilon(1e-12));
      // The public reference that calls it, on the same matrix.
      std::vector<double> got;
      REQUIRE(reference::singular_values(MatrixRef<const double>::col_major(b.data(), 20, 90), got) ==
              Status::ok);
      CHECK(got[11] == doctest::Approx(sigma[11]).epsilon(1e-12));
    }
    MESSAGE("dense_svd: " << fallbacks << " of 7 known BDCSVD failures took a fallback path");
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

  TEST_CASE("reference: an exhausted heap is out_of_memory with the outputs untouched") {
    // Finding 82: the oracles return a status but let std::bad_alloc escape, and
    // matrix_with_spectrum wrote its matrix before its factors' vectors. Each call runs with its
    // k-th host allocation refused (operator new: the vectors; Eigen's own are not seen),
    // k = 1, 2, … until it meets none, and must then equal a plain call.
    const std::vector<double> sigma = geometric(6, 1e-2, 2.0);
    std::vector<double> a(8 * 6);
    REQUIRE(reference::matrix_with_spectrum(MatrixRef<double>(a.data(), 8, 6), sigma, case_seed("ref oom")) ==
            Status::ok);
    const MatrixRef<const double> ar(a.data(), 8, 6);
    const auto sweep = [](const char* what, auto&& call, auto&& untouched) {
      CAPTURE(what);
      std::int64_t k = 1;
      for (;; ++k) {
        CAPTURE(k);
        const auto r = schatten::test::refusing_allocation(k, call);
        REQUIRE_FALSE(r.threw);
        if (!r.refused) {
          CHECK(r.result == Status::ok);
          break;
        }
        CHECK(r.result == Status::out_of_memory);
        CHECK(untouched());
      }
      return k - 1;  // the refusals met
    };
    std::vector<double> sv = {-1.0};
    CHECK(sweep(
              "singular_values", [&] { return reference::singular_values(ar, sv); },
              [&] { return sv == std::vector<double>{-1.0}; }) > 0);
    CHECK(sv.size() == 6);
    double norm = -1.0;
    CHECK(sweep(
              "schatten_norm", [&] { return reference::schatten_norm(ar, 3.0, norm); },
              [&] { return norm == -1.0; }) > 0);
    std::vector<double> q(a.size(), -7.0);
    CHECK(sweep(
              "kaon_spectrum",
              [&] { return reference::kaon_spectrum(ar, MatrixRef<double>(q.data(), 8, 6), 5); },
              [&] { return std::all_of(q.begin(), q.end(), [](double x) { return x == -7.0; }); }) > 0);
    std::vector<double> out(a.size(), -7.0), u = {-1.0}, v = {-1.0};
    CHECK(sweep(
              "matrix_with_spectrum",
              [&] {
                return reference::matrix_with_spectrum(MatrixRef<double>(out.data(), 8, 6), sigma, 3, &u, &v);
              },
              [&] {
                return std::all_of(out.begin(), out.end(), [](double x) { return x == -7.0; }) &&
                       u == std::vector<double>{-1.0} && v == std::vector<double>{-1.0};
              }) > 0);
    CHECK(u.size() == 8 * 6);
    CHECK(v.size() == 6 * 6);
  }
}

}  // namespace kernels_test_reference
