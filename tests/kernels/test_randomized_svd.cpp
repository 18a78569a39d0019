// SPDX-License-Identifier: Apache-2.0
/// \file
/// randomized_singular_values() against the prescribed spectrum (and the SVD oracle).
#include <doctest/doctest.h>

#include <Kokkos_Core.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "schatten/core/buffer.hpp"
#include "schatten/core/random.hpp"
#include "schatten/kernels/gram.hpp"
#include "schatten/kernels/randomized_svd.hpp"
#include "support/convert.hpp"
#include "support/kokkos_allocations.hpp"
#include "support/oracle.hpp"
#include "support/seed.hpp"
#include "support/spectra.hpp"

namespace kernels_test_randomized_svd {  // this file's scope in a unity build (tests/CMakeLists.txt)

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

  TEST_CASE("singular vectors reconstruct a matrix whose rank fits the sample") {
    // Rank 10 in 120 × 70, l = 18: A = U diag(σ) Vᵀ to rounding, U and V orthonormal (1e-10).
    std::vector<double> sigma(70, 0.0);
    for (int i = 0; i < 10; ++i)
      sigma[static_cast<std::size_t>(i)] = 1.0 + 0.5 * (9 - i);
    SpectrumCase sc{"rsvd_vectors", 120, 70, sigma};
    const std::uint64_t seed = case_seed("rsvd_vectors");
    CAPTURE(seed);
    const Eigen::MatrixXd am = make_matrix(sc, seed);
    const std::vector<double> a = to_row_major<double>(am);
    RandomizedSvdOptions o;
    o.rank = 10;
    o.seed = seed;
    LowRankSvd r;
    REQUIRE(randomized_svd(MatrixRef<const double>(a.data(), 120, 70), r, o) == Status::ok);
    REQUIRE(r.u.size() == 120 * 10);
    REQUIRE(r.v.size() == 70 * 10);
    const Eigen::Map<const Eigen::MatrixXd> u(r.u.data(), 120, 10), v(r.v.data(), 70, 10);
    const Eigen::Map<const Eigen::VectorXd> s(r.sigma.data(), 10);
    CHECK((u.transpose() * u - Eigen::MatrixXd::Identity(10, 10)).norm() <= 1e-10);
    CHECK((v.transpose() * v - Eigen::MatrixXd::Identity(10, 10)).norm() <= 1e-10);
    CHECK((u * s.asDiagonal() * v.transpose() - am).norm() <= 1e-10 * am.norm());
    // float input: the same to float rounding (GEMMs in float, 1e-5 relative with margin).
    const std::vector<float> af = to_row_major<float>(am);
    LowRankSvd rf;
    REQUIRE(randomized_svd(MatrixRef<const float>(af.data(), 120, 70), rf, o) == Status::ok);
    const Eigen::Map<const Eigen::MatrixXd> uf(rf.u.data(), 120, 10), vf(rf.v.data(), 70, 10);
    const Eigen::Map<const Eigen::VectorXd> sf(rf.sigma.data(), 10);
    CHECK((uf * sf.asDiagonal() * vf.transpose() - am).norm() <= 1e-5 * am.norm());
  }

  TEST_CASE("double at the ends of the range: sigma scales with A, vectors do not") {
    // Rank 5 in 50 × 30, l = 10: exact to rounding (above). Scaled by 2^±600 (~1e±180) and
    // 2^±1000 the host QRs once squared overflowing or underflowing panels: NaN or O(1)-wrong σ
    // with ok. The scales are powers of two, so σ/scale and the vectors must agree with the
    // unscaled call to rounding (1e-10 relative, as above). σ beyond DBL_MAX: out_of_range.
    std::vector<double> sigma(30, 0.0);
    for (int i = 0; i < 5; ++i)
      sigma[static_cast<std::size_t>(i)] = std::ldexp(1.0, -i);  // 1, 0.5, …, 0.0625
    const std::uint64_t seed = case_seed("rsvd_scale");
    const Eigen::MatrixXd am = make_matrix(SpectrumCase{"rsvd_scale", 50, 30, sigma}, seed);
    RandomizedSvdOptions o;
    o.rank = 5;
    o.oversampling = 5;
    o.power_iterations = 1;  // (the power products see the scale too)
    o.seed = seed;
    const std::vector<double> a = to_row_major<double>(am);
    LowRankSvd ref;
    REQUIRE(randomized_svd(MatrixRef<const double>(a.data(), 50, 30), ref, o) == Status::ok);
    for (const int e : {600, -600, 1000, -1000}) {
      CAPTURE(e);
      std::vector<double> as(a);
      for (double& x : as)
        x = std::ldexp(x, e);
      std::vector<double> got;
      REQUIRE(randomized_singular_values(MatrixRef<const double>(as.data(), 50, 30), got, o) == Status::ok);
      LowRankSvd r;
      REQUIRE(randomized_svd(MatrixRef<const double>(as.data(), 50, 30), r, o) == Status::ok);
      for (int i = 0; i < 5; ++i) {
        CHECK(std::ldexp(got[static_cast<std::size_t>(i)], -e) == doctest::Approx(sigma[i]).epsilon(1e-10));
        CHECK(std::ldexp(r.sigma[static_cast<std::size_t>(i)], -e) ==
              doctest::Approx(sigma[i]).epsilon(1e-10));
      }
      const Eigen::Map<const Eigen::MatrixXd> u(r.u.data(), 50, 5), u0(ref.u.data(), 50, 5);
      CHECK((u - u0).norm() <= 1e-10);
    }
    // 1.5·2^1024·A: finite entries (REQUIRE'd below: max|a| < 2/3 here) but σ_max = 1.5·2^1024,
    // 50 % beyond DBL_MAX. Not 2^1024·A: DBL_MAX = 2^1024·(1 − 2⁻⁵³), so an estimate of σ_max = 1
    // rounded 1 ulp low fits the range (ok, correctly), which seed 1945 found.
    std::vector<double> big(a);
    for (double& x : big)
      x = std::ldexp(1.5 * x, 1024);
    REQUIRE(std::all_of(big.begin(), big.end(), [](double x) { return std::isfinite(x); }));
    std::vector<double> untouched{-1.0};
    CHECK(randomized_singular_values(MatrixRef<const double>(big.data(), 50, 30), untouched, o) ==
          Status::out_of_range);
    CHECK(untouched == std::vector<double>{-1.0});
  }

  TEST_CASE("entries near DBL_MAX: the products are of a scaled copy, not of the GEMM's alpha") {
    // 2^−s·A was the GEMMs' alpha, which BLAS may apply after forming A·Ω (OpenBLAS does): with
    // entries near DBL_MAX the sums overflowed, and σ of ones(2, 3)·1e308 (√6·1e308 > DBL_MAX)
    // came back as 0.021·1e308 with ok. Now that is out_of_range, and a representable spectrum
    // near the top, diag(1.7e308, 1e308), is exact to rounding (rank ≤ l: 1e-10 as above).
    RandomizedSvdOptions o;
    o.rank = 2;
    std::vector<double> ones(6, 1e308), out{-1.0};
    CHECK(randomized_singular_values(MatrixRef<const double>(ones.data(), 2, 3), out, o) ==
          Status::out_of_range);
    CHECK(out == std::vector<double>{-1.0});
    const std::vector<double> d = {1.7e308, 0.0, 0.0, 0.0, -1e308, 0.0};
    for (const bool transposed : {false, true}) {  // in place (row-major) and copied (column-major)
      CAPTURE(transposed);
      const MatrixRef<const double> a = transposed ? MatrixRef<const double>::col_major(d.data(), 3, 2)
                                                   : MatrixRef<const double>(d.data(), 2, 3);
      REQUIRE(randomized_singular_values(a, out, o) == Status::ok);
      REQUIRE(out.size() == 2);
      CHECK(out[0] == doctest::Approx(1.7e308).epsilon(1e-10));
      CHECK(out[1] == doctest::Approx(1e308).epsilon(1e-10));
    }
  }

  TEST_CASE("oversampling beyond the matrix: l = min(rank + p, min(rows, cols)) without overflow") {
    // rank + p overflowed index_t for p near its maximum (undefined behaviour; the call then
    // failed with out_of_memory). Any p ≥ min(rows, cols) − rank gives l = min(rows, cols).
    std::vector<double> a(20 * 12);
    Rng rng(case_seed("rsvd_oversampling"));
    for (double& x : a)
      x = rng.normal();
    RandomizedSvdOptions o;
    o.rank = 3;
    o.oversampling = 9;  // l = 12 = min(rows, cols)
    std::vector<double> want, got;
    REQUIRE(randomized_singular_values(MatrixRef<const double>(a.data(), 20, 12), want, o) == Status::ok);
    for (const index_t p :
         {index_t(10), std::numeric_limits<index_t>::max() - 2, std::numeric_limits<index_t>::max()}) {
      CAPTURE(p);
      o.oversampling = p;
      REQUIRE(randomized_singular_values(MatrixRef<const double>(a.data(), 20, 12), got, o) == Status::ok);
      CHECK(got == want);
    }
  }

  TEST_CASE("gram_accumulate adds the Gram of the inputs and refuses bad input") {
    const index_t tokens = 37, d = 11;
    const Eigen::MatrixXd x =
        make_matrix(SpectrumCase{"gram_x", tokens, d, geometric(d, 1e-2)}, case_seed("gram_x"));
    const std::vector<float> xf = to_row_major<float>(x);
    std::vector<float> g(d * d, 0.0f);
    const MatrixRef<const float> xr(xf.data(), tokens, d);
    REQUIRE(gram_accumulate(xr, MatrixRef<float>(g.data(), d, d)) == Status::ok);
    REQUIRE(gram_accumulate(xr, MatrixRef<float>(g.data(), d, d)) == Status::ok);
    const Eigen::MatrixXd want = 2.0 * x.transpose() * x;
    for (index_t i = 0; i < d; ++i)
      for (index_t j = 0; j < d; ++j) {  // float sums of 37 terms: 1e-6 relative to the largest entry
        CHECK(std::abs(g[i * d + j] - want(i, j)) <= 1e-5 * want.cwiseAbs().maxCoeff());
        CHECK(g[i * d + j] == g[j * d + i]);  // one triangle computed, the other copied
      }
    // With a Workspace kept for the calls: the same bits, and no memory allocated after the
    // first call (the probe counts what Kokkos and the library report to Kokkos Tools).
    {
      Workspace ws;
      std::vector<float> gw(d * d, 0.0f);
      REQUIRE(gram_accumulate(xr, MatrixRef<float>(gw.data(), d, d), &ws) == Status::ok);
      schatten::test::KokkosAllocationProbe probe;
      REQUIRE(gram_accumulate(xr, MatrixRef<float>(gw.data(), d, d), &ws) == Status::ok);
      if (probe.active()) CHECK(probe.count() == 0);
      CHECK(gw == g);
    }
    // A strided host Gram (leading dimension d + 2) is copied element by element, a contiguous
    // one flat: the same computation, the same bits.
    std::vector<float> strided(static_cast<std::size_t>(d * (d + 2)), 0.0f);
    for (index_t i = 0; i < d; ++i)
      strided[i * (d + 2) + d] = strided[i * (d + 2) + d + 1] = -1.0f;  // padding
    const MatrixRef<float> sref = MatrixRef<float>::row_major(strided.data(), d, d, d + 2);
    REQUIRE(gram_accumulate(xr, sref) == Status::ok);
    REQUIRE(gram_accumulate(xr, sref) == Status::ok);
    for (index_t i = 0; i < d; ++i)
      for (index_t j = 0; j < d + 2; ++j)  // the padding is not touched
        CHECK(strided[i * (d + 2) + j] == (j < d ? g[i * d + j] : -1.0f));
    // A Gram in device memory (an optimizer's statistics) is updated in place by the same
    // computation: the same bits as the host Gram on every build.
    using DeviceMem = Kokkos::DefaultExecutionSpace::memory_space;
    Kokkos::View<float*, DeviceMem> dg("schatten::test::gram", static_cast<std::size_t>(d * d));
    const MatrixRef<float> dgram(dg.data(), d, d, MemoryKind::device);
    REQUIRE(gram_accumulate(xr, dgram) == Status::ok);
    REQUIRE(gram_accumulate(xr, dgram) == Status::ok);
    const auto hdg = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), dg);
    CHECK(std::equal(g.begin(), g.end(), hdg.data()));
    CHECK(gram_accumulate(xr, MatrixRef<float>::row_major(dg.data(), d, d, d + 1, MemoryKind::device)) ==
          Status::invalid_argument);  // device Grams are contiguous
    const std::vector<float> before = g;
    CHECK(gram_accumulate(MatrixRef<const float>(xf.data(), tokens, d - 1),
                          MatrixRef<float>(g.data(), d, d)) == Status::invalid_argument);
    // x strided (row stride d + 3): copied into xᵀ first, where a contiguous x is read in place
    // as xᵀ column-major. The same matrix reaches the same symmetric product: the same bits.
    const index_t ld = d + 3;
    std::vector<float> xs(static_cast<std::size_t>(tokens * ld), -7.0f);  // padding never read
    for (index_t i = 0; i < tokens; ++i)
      std::copy_n(xf.data() + i * d, d, xs.data() + i * ld);
    const MatrixRef<const float> xsr = MatrixRef<const float>::row_major(xs.data(), tokens, d, ld);
    std::vector<float> gs(d * d, 0.0f);
    REQUIRE(gram_accumulate(xsr, MatrixRef<float>(gs.data(), d, d)) == Status::ok);
    REQUIRE(gram_accumulate(xsr, MatrixRef<float>(gs.data(), d, d)) == Status::ok);
    CHECK(gs == g);
    // With a Workspace, the copy of a strided x (and, on a GPU build, the host image of a strided
    // Gram) is kept too: no allocation after the first call, the same bits.
    {
      Workspace ws;
      std::vector<float> gws(static_cast<std::size_t>(d * (d + 2)), 0.0f);
      const MatrixRef<float> gwr = MatrixRef<float>::row_major(gws.data(), d, d, d + 2);
      REQUIRE(gram_accumulate(xsr, gwr, &ws) == Status::ok);
      schatten::test::KokkosAllocationProbe probe;
      REQUIRE(gram_accumulate(xsr, gwr, &ws) == Status::ok);
      if (probe.active()) CHECK_MESSAGE(probe.count() == 0, std::string(probe.last_label()));
      for (index_t i = 0; i < d; ++i)
        for (index_t j = 0; j < d; ++j)
          CHECK(gws[static_cast<std::size_t>(i * (d + 2) + j)] == g[static_cast<std::size_t>(i * d + j)]);
    }
    // NaN or ±Inf anywhere in x, contiguous (no pass over x: it reaches G's diagonal, which the
    // check reads) or strided (refused by the copy): non_finite_input, the Gram unchanged.
    const float inf = std::numeric_limits<float>::infinity();
    for (const float v : {std::numeric_limits<float>::quiet_NaN(), inf, -inf})
      for (const index_t at : {index_t(0), index_t(5), tokens * d / 2 + 3, tokens * d - 1}) {
        CAPTURE(v);
        CAPTURE(at);
        std::vector<float> bad = xf, bad_s = xs;
        bad[static_cast<std::size_t>(at)] = v;
        bad_s[static_cast<std::size_t>((at / d) * ld + at % d)] = v;
        CHECK(gram_accumulate(MatrixRef<const float>(bad.data(), tokens, d),
                              MatrixRef<float>(g.data(), d, d)) == Status::non_finite_input);
        CHECK(gram_accumulate(MatrixRef<const float>::row_major(bad_s.data(), tokens, d, ld),
                              MatrixRef<float>(g.data(), d, d)) == Status::non_finite_input);
        CHECK(g == before);
      }
    std::vector<float> huge(xf.size(), 3e19f);  // (3e19)² · 37 overflows float
    CHECK(gram_accumulate(MatrixRef<const float>(huge.data(), tokens, d), MatrixRef<float>(g.data(), d, d)) ==
          Status::non_finite_input);
    CHECK(g == before);
  }

  TEST_CASE("gram_accumulate: x and gram overlapping partially are refused, x = gram works") {
    // The aliasing rule of every kernel (matrix_ref.hpp, detail::check_aliasing) was not applied:
    // a gram overlapping x partially was accepted. Now invalid_argument, both arrays unchanged.
    std::vector<float> buf = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    const std::vector<float> before = buf;
    CHECK(gram_accumulate(MatrixRef<const float>(buf.data(), 3, 2), MatrixRef<float>(buf.data() + 4, 2, 2)) ==
          Status::invalid_argument);
    CHECK(gram_accumulate(MatrixRef<const float>(buf.data() + 1, 2, 2), MatrixRef<float>(buf.data(), 2, 2)) ==
          Status::invalid_argument);
    CHECK(buf == before);
    // In place, x = gram (tokens = d_in, one layout): gram + gramᵀgram, from the gram on entry.
    std::vector<float> g = {1, 2, 2, 5};  // symmetric
    REQUIRE(gram_accumulate(MatrixRef<const float>(g.data(), 2, 2), MatrixRef<float>(g.data(), 2, 2)) ==
            Status::ok);
    CHECK(g == std::vector<float>{1 + 5, 2 + 12, 2 + 12, 5 + 29});
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

  TEST_CASE_TEMPLATE("a contiguous A is read in place, other strides copied: the same values", T, float,
                     double) {
    // A contiguous row-major A is already Aᵀ column-major, the GEMMs' operand, and is read in
    // place; a padded A (row stride n + 3) and a column-major A are copied into Aᵀ first. The
    // GEMMs then see the same matrix in the same order: the same bits (σ and the vectors).
    const index_t m = 64, n = 40;
    const std::uint64_t seed = case_seed("rsvd_strides");
    CAPTURE(seed);
    const std::vector<double> sigma = geometric(n, 1e-3);
    const Eigen::MatrixXd am = make_matrix(SpectrumCase{"rsvd_strides", m, n, sigma}, seed);
    const std::vector<T> a = to_row_major<T>(am);
    const index_t ld = n + 3;
    std::vector<T> padded(static_cast<std::size_t>(m * ld), T(-7));  // padding never read
    std::vector<T> colmajor(static_cast<std::size_t>(m * n));
    for (index_t i = 0; i < m; ++i)
      for (index_t j = 0; j < n; ++j) {
        padded[static_cast<std::size_t>(i * ld + j)] = a[static_cast<std::size_t>(i * n + j)];
        colmajor[static_cast<std::size_t>(j * m + i)] = a[static_cast<std::size_t>(i * n + j)];
      }
    const MatrixRef<const T> contiguous(a.data(), m, n);
    const MatrixRef<const T> views[] = {MatrixRef<const T>::row_major(padded.data(), m, n, ld),
                                        MatrixRef<const T>::strided(colmajor.data(), m, n, 1, m)};
    RandomizedSvdOptions o;
    o.rank = 6;
    o.seed = seed;
    LowRankSvd want;
    // A first call makes the allocations Kokkos makes once per process (its reduction scratch),
    // so that the counts below are the calls' own.
    REQUIRE(randomized_svd(contiguous, want, o) == Status::ok);
    std::int64_t in_place_allocations = -1;
    {
      schatten::test::KokkosAllocationProbe probe;
      REQUIRE(randomized_svd(contiguous, want, o) == Status::ok);
      if (probe.active()) in_place_allocations = probe.count();
    }
    // The values themselves: σ_{i+1}/σ_i = 0.838, l = 14, q = 2, so the underestimate is of
    // order (σ_15/σ_6)^5 = 3.5e-4 (HMT 2011 §10.4); 1e-2 leaves room for the bound's constants.
    for (std::size_t i = 0; i < 6; ++i)
      CHECK(want.sigma[i] == doctest::Approx(sigma[i]).epsilon(1e-2));
    for (const MatrixRef<const T>& v : views) {
      CAPTURE(v.row_stride);
      LowRankSvd got;
      schatten::test::KokkosAllocationProbe probe;
      REQUIRE(randomized_svd(v, got, o) == Status::ok);
      // The copy is one allocation more than the in-place call makes (Ω, Y and Kokkos' own),
      // where the kernels read host memory. A GPU build stages both packed, then reads in place.
      if (probe.active() && in_place_allocations >= 0 && memory::kernels_access(MemoryKind::host))
        CHECK(probe.count() > in_place_allocations);
      CHECK(got.sigma == want.sigma);
      CHECK(got.u == want.u);
      CHECK(got.v == want.v);
    }
    // NaN or ±Inf anywhere: non_finite_input on both paths (in place: the pass that looks for
    // them; copied: the copy), the output untouched.
    const T inf = std::numeric_limits<T>::infinity();
    for (const T bad_value : {std::numeric_limits<T>::quiet_NaN(), inf, -inf})
      for (const index_t at : {index_t(0), index_t(7), m * n / 2 + 1, m * n - 1}) {
        CAPTURE(at);
        std::vector<T> bad = a, bad_padded = padded;
        bad[static_cast<std::size_t>(at)] = bad_value;
        bad_padded[static_cast<std::size_t>((at / n) * ld + at % n)] = bad_value;
        std::vector<double> out = {42.0};
        CHECK(randomized_singular_values(MatrixRef<const T>(bad.data(), m, n), out, o) ==
              Status::non_finite_input);
        CHECK(randomized_singular_values(MatrixRef<const T>::row_major(bad_padded.data(), m, n, ld), out,
                                         o) == Status::non_finite_input);
        CHECK(out == std::vector<double>{42.0});
      }
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

}  // namespace kernels_test_randomized_svd
