// SPDX-License-Identifier: Apache-2.0
/// \file
/// The portable half of 16-bit iteration (backends/kokkos/.../portable_gemm.hpp): the software
/// bf16/fp16 conversions against Eigen's independent ones and against the definition of rounding
/// to nearest, and portable_gemm against products formed in double, in both of its loop forms
/// (the host's, and the device's, run here on the CPU).
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "schatten/core/fp16.hpp"
#include "schatten/core/random.hpp"
#include "schatten/kokkos/detail/batched.hpp"
#include "support/float_bits.hpp"
#include "support/seed.hpp"

#include <Eigen/Core>

namespace kernels_test_portable_gemm {  // this file's scope in a unity build (tests/CMakeLists.txt)

using namespace schatten;
using namespace schatten::kokkos::detail;
using schatten::test::bits;
using schatten::test::case_seed;
using schatten::test::from_bits;
using Exec = Kokkos::DefaultHostExecutionSpace;

namespace {
std::uint16_t eigen_fp16(float x) { return Eigen::numext::bit_cast<std::uint16_t>(Eigen::half(x)); }
float eigen_fp16_value(std::uint16_t h) {
  return static_cast<float>(Eigen::numext::bit_cast<Eigen::half>(h));
}
bool fp16_is_nan(std::uint16_t h) { return (h & 0x7C00u) == 0x7C00u && (h & 0x3FFu) != 0; }

/// A batch of C = α op(A) op(B) + β C, column-major with padding: leading dimensions above the
/// rows and the matrices a gap apart, operands N(0, 1) (C filled with NaN when `nan_c`).
template <class T>
struct GemmCase {
  using S = scalar_t<T>;
  int m, n, k, batch;
  bool ta, tb;
  int lda, ldb, ldc;
  std::int64_t sa, sb, sc;
  std::vector<T> a, b, c;
  GemmCase(int m_, int n_, int k_, int batch_, bool ta_, bool tb_, bool nan_c, Rng& rng)
      : m(m_),
        n(n_),
        k(k_),
        batch(batch_),
        ta(ta_),
        tb(tb_),
        lda((ta ? k : m) + 3),
        ldb((tb ? n : k) + 1),
        ldc(m + 2),
        sa(std::int64_t(lda) * (ta ? m : k) + 5),
        sb(std::int64_t(ldb) * (tb ? k : n) + 2),
        sc(std::int64_t(ldc) * n + 7),
        a(static_cast<std::size_t>(sa * batch)),
        b(static_cast<std::size_t>(sb * batch)),
        c(static_cast<std::size_t>(sc * batch)) {
    for (T& x : a)
      x = static_cast<T>(rng.normal());
    for (T& x : b)
      x = static_cast<T>(rng.normal());
    for (T& x : c)
      x = static_cast<T>(nan_c ? std::nan("") : rng.normal());
  }
  /// Where op(A)(i, l), op(B)(l, j) and C(i, j) of matrix `mat` are stored.
  std::size_t at_a(int mat, int i, int l) const {
    return static_cast<std::size_t>(mat * sa + (ta ? l + std::int64_t(i) * lda : i + std::int64_t(l) * lda));
  }
  std::size_t at_b(int mat, int l, int j) const {
    return static_cast<std::size_t>(mat * sb + (tb ? j + std::int64_t(l) * ldb : l + std::int64_t(j) * ldb));
  }
  std::size_t at_c(int mat, int i, int j) const {
    return static_cast<std::size_t>(mat * sc + i + std::int64_t(j) * ldc);
  }
  /// portable_gemm on the host space, in the host or the device loop form, on C in place.
  void run(bool host_loops, S alpha, S beta, int team) {
    if (host_loops)
      portable_gemm<Exec, T, true>(Exec(), ta, tb, m, n, k, alpha, {a.data(), lda, sa}, {b.data(), ldb, sb},
                                   beta, {c.data(), ldc, sc}, batch, team);
    else
      portable_gemm<Exec, T, false>(Exec(), ta, tb, m, n, k, alpha, {a.data(), lda, sa}, {b.data(), ldb, sb},
                                    beta, {c.data(), ldc, sc}, batch, team);
    Exec().fence();
  }
  /// portable_sym_product of op(A) = A (ta false) or Aᵀ (ta true), m × k, on C in place (m = n).
  void run_sym(bool host_loops, S alpha, S beta, int team) {
    if (host_loops)
      portable_sym_product<Exec, T, true>(Exec(), ta, m, k, alpha, {a.data(), lda, sa}, beta,
                                          {c.data(), ldc, sc}, batch, team);
    else
      portable_sym_product<Exec, T, false>(Exec(), ta, m, k, alpha, {a.data(), lda, sa}, beta,
                                           {c.data(), ldc, sc}, batch, team);
    Exec().fence();
  }
};

/// Checks that r is x rounded to nearest, ties to even, in a 16-bit format whose finite
/// values `value` widens exactly and whose largest finite pattern is `max_bits`: r is no farther
/// from x than either neighbouring pattern, and of those at the same distance the even one.
template <class Widen>
void check_nearest(double x, std::uint16_t r, Widen value, std::uint16_t max_bits) {
  CAPTURE(x);
  CAPTURE(r);
  const std::uint16_t mag = r & 0x7FFFu;
  if (mag > max_bits) {  // ±∞: only beyond the largest finite value plus half its gap
    const double top = value(max_bits), gap = top - value(static_cast<std::uint16_t>(max_bits - 1));
    CHECK(std::fabs(x) >= top + gap / 2);
    return;
  }
  const double v = value(r) * 1.0;
  const double d = std::fabs(x - v);
  // Neighbours of r in magnitude (the sign follows x; zero's neighbour below is zero itself).
  for (int step : {-1, 1}) {
    const int nm = static_cast<int>(mag) + step;
    if (nm < 0 || nm > max_bits) continue;
    const double w = value(static_cast<std::uint16_t>((r & 0x8000u) | static_cast<std::uint16_t>(nm)));
    const double dw = std::fabs(x - w);
    CHECK(d <= dw);
    if (d == dw) CHECK((mag & 1u) == 0);  // a tie goes to the even pattern
  }
}
}  // namespace

TEST_SUITE("kernels.portable_gemm") {
  TEST_CASE("fp16 conversions agree with Eigen::half: every pattern widened, floats rounded") {
    // fp16_to_float is exact: every one of the 2¹⁶ patterns (NaNs as NaNs).
    for (std::uint32_t h = 0; h < 0x10000u; ++h) {
      const auto p = static_cast<std::uint16_t>(h);
      const float mine = fp16_to_float(p), theirs = eigen_fp16_value(p);
      if (fp16_is_nan(p)) {
        CHECK(std::isnan(mine));
      } else {
        CHECK(bits(mine) == bits(theirs));
        CHECK(fp16_round(mine) == p);  // and back
      }
    }
    // fp16_round against Eigen's float_to_half_rtne: at every exponent from below fp16's
    // subnormals to beyond its range, every 1023rd mantissa (1023 is prime to the 2¹³ period of
    // the 13 dropped bits, so they take every residue: ties, and values on both sides of them),
    // and random patterns over the whole float range.
    std::uint64_t checked = 0;
    for (std::uint32_t e = 90; e <= 145; ++e)
      for (std::uint32_t m = 0; m < (1u << 23); m += 0x3FFu) {
        for (std::uint32_t sign : {0u, 0x80000000u}) {
          const float x = from_bits(sign | (e << 23) | m);
          if (fp16_round(x) != eigen_fp16(x)) FAIL_CHECK("fp16_round(" << x << ") differs from Eigen");
          ++checked;
        }
      }
    const std::uint64_t seed = case_seed("fp16_round");
    CAPTURE(seed);
    Rng rng(seed);
    for (int i = 0; i < 1000000; ++i) {
      const float x = from_bits(static_cast<std::uint32_t>(rng.next()));
      const std::uint16_t mine = fp16_round(x);
      if (std::isnan(x)) {
        CHECK(fp16_is_nan(mine));
        CHECK((mine & 0x8000u) == ((bits(x) >> 16) & 0x8000u));
      } else if (mine != eigen_fp16(x)) {
        FAIL_CHECK("fp16_round(" << x << ") differs from Eigen");
      }
      ++checked;
    }
    MESSAGE(checked << " floats rounded to fp16 as Eigen rounds them");
    CHECK(fp16_round(kFp16Max) == 0x7BFFu);
    CHECK(fp16_to_float(0x7BFFu) == kFp16Max);
    CHECK(fp16_round(65519.996f) == 0x7BFFu);  // just below 65504 + 16: the largest fp16
    CHECK(fp16_round(65520.0f) == 0x7C00u);    // the tie goes to even, which is ∞
    CHECK(fp16_round(-std::numeric_limits<float>::infinity()) == 0xFC00u);
    CHECK(fp16_round(0x1p-25f) == 0u);           // half the smallest subnormal: tie to even 0
    CHECK(fp16_round(0x1.000002p-25f) == 1u);    // just above it: the smallest subnormal
    CHECK(fp16_round(0x1.ff8p-15f) == 0x03FFu);  // the largest subnormal, 2⁻¹⁴ − 2⁻²⁴
    CHECK(fp16_round(0x1.ffcp-15f) == 0x0400u);  // the tie above it goes to the smallest normal
  }

  TEST_CASE("double to bf16 and fp16: rounded once, to nearest, ties to even") {
    const std::uint64_t seed = case_seed("double_to_16");
    CAPTURE(seed);
    Rng rng(seed);
    const auto bf16_value = [](std::uint16_t h) { return static_cast<double>(bf16_to_float(h)); };
    const auto fp16_value = [](std::uint16_t h) { return static_cast<double>(fp16_to_float(h)); };
    for (int i = 0; i < 20000; ++i) {
      // Random doubles over fp16's range and beyond (2^-30 … 2^20) and over bf16's.
      const double x16 =
          (rng.uniform() < 0.5 ? -1 : 1) * std::ldexp(1.0 + rng.uniform(), -30 + int(rng.next() % 50));
      check_nearest(x16, fp16_from_double(x16), fp16_value, 0x7BFFu);
      const double xb =
          (rng.uniform() < 0.5 ? -1 : 1) * std::ldexp(1.0 + rng.uniform(), -140 + int(rng.next() % 270));
      check_nearest(xb, bf16_from_double(xb), bf16_value, 0x7F7Fu);
    }
    // Near the ties, where rounding through a float to nearest would round twice: a double just
    // above (below) the midpoint of two neighbours, by less than half a float unit, becomes the
    // midpoint itself as a float, which then goes to the even neighbour; correct rounding takes
    // the upper (lower) one. Checked on both formats for every 97th pattern.
    int double_rounding_cases = 0;
    const auto near_ties = [&](std::uint32_t max_bits, auto value, auto from_double, auto round_float) {
      for (std::uint32_t h = 0x0001u; h < max_bits; h += 97) {
        const double lo = value(static_cast<std::uint16_t>(h)), hi = value(static_cast<std::uint16_t>(h + 1));
        const double mid = (lo + hi) / 2, tiny = std::ldexp(mid, -40);
        CHECK(std::uint32_t(from_double(mid + tiny)) == h + 1);
        CHECK(std::uint32_t(from_double(mid - tiny)) == h);
        CHECK(std::uint32_t(from_double(mid)) == ((h & 1u) ? h + 1 : h));
        if (std::uint32_t(round_float(static_cast<float>(mid + tiny))) != h + 1) ++double_rounding_cases;
      }
    };
    near_ties(0x7BFFu, fp16_value, fp16_from_double, fp16_round);
    near_ties(0x7F7Fu, bf16_value, bf16_from_double, bf16_round);
    // The rounding through a float to nearest is wrong at every even lower neighbour: the test
    // above would catch a conversion written that way.
    MESSAGE(double_rounding_cases << " near-tie doubles that a float in between would round wrongly");
    CHECK(double_rounding_cases > 100);
    CHECK(fp16_from_double(1e300) == 0x7C00u);
    CHECK(bf16_from_double(-1e300) == 0xFF80u);
    CHECK(bf16_from_double(1e-300) == 0u);  // far below bf16's smallest subnormal 2^-133
    CHECK(fp16_is_nan(fp16_from_double(std::nan(""))));
    // Rounding to odd: of the two floats around an inexact x, the one with an odd last bit.
    const float ro = float_round_to_odd(0.1), below = from_bits(bits(0.1f) - 1);  // 0.1f > 0.1
    CHECK((bits(ro) & 1u) == 1u);
    CHECK((ro == 0.1f || ro == below));
    CHECK(float_round_to_odd(0.5) == 0.5f);  // exact: unchanged
  }

  TEST_CASE_TEMPLATE("portable_gemm against products in double, host and device loop forms", T, float, double,
                     Bf16, Fp16) {
    using S = scalar_t<T>;
    // Element-wise bound: the exact product of the stored inputs, rounded in S along a sum of k
    // products (|error| ≤ γ_k·(|α||A||B| + |β||C|), γ_k ≈ k·u_S for k·u_S ≪ 1; Higham, Accuracy
    // and Stability, §3.5), then once to T (relative u_T, or at most half T's smallest subnormal,
    // η_T, where the result is below T's normal range: fp16's 2⁻¹⁴ is within reach of these
    // inputs). Twice both, for the scalar α·acc and β·C steps, which the bound's (k + 2) covers.
    const double u_s = std::is_same<S, double>::value ? 0x1p-53 : 0x1p-24;
    const double u_t = std::is_same<T, Bf16>::value ? 0x1p-8 : std::is_same<T, Fp16>::value ? 0x1p-11 : u_s;
    const double eta_t = std::is_same<T, Fp16>::value   ? 0x1p-25
                         : std::is_same<T, Bf16>::value ? 0x1p-134
                                                        : 0.0;
    const std::uint64_t seed = case_seed("portable_gemm");
    CAPTURE(seed);
    Rng rng(seed);
    struct Shape {
      int m, n, k;
    };
    // Tile edges: 32 and 64 (device form), 128 (host form), exceeded; a k = 0 product.
    for (const Shape& sh :
         {Shape{1, 1, 1}, Shape{37, 45, 29}, Shape{33, 129, 17}, Shape{130, 70, 33}, Shape{5, 7, 0}})
      for (bool ta : {false, true})
        for (bool tb : {false, true})
          for (bool host_loops : {true, false})
            for (double beta : {0.0, -0.75}) {
              const int m = sh.m, n = sh.n, k = sh.k, batch = 3;
              CAPTURE(m);
              CAPTURE(n);
              CAPTURE(k);
              CAPTURE(ta);
              CAPTURE(tb);
              CAPTURE(host_loops);
              CAPTURE(beta);
              // beta = 0: C holds NaN, which must not reach the result.
              GemmCase<T> g(m, n, k, batch, ta, tb, beta == 0.0, rng);
              const std::vector<T> c0 = g.c;
              // Teams of every thread of the host space (2 with OpenMP on two cores, 1 on Serial):
              // the device form's loops then share a tile between threads, as on a GPU.
              const double alpha = 1.5;
              g.run(host_loops, S(alpha), S(beta), Exec().concurrency());
              double worst = 0.0;
              bool untouched_padding = true;
              for (int mat = 0; mat < batch; ++mat)
                for (int j = 0; j < n; ++j)
                  for (int i = 0; i < g.ldc; ++i) {
                    const std::size_t at = g.at_c(mat, i, j);
                    if (i >= m) {  // padding rows: never written
                      untouched_padding = untouched_padding && std::memcmp(&g.c[at], &c0[at], sizeof(T)) == 0;
                      continue;
                    }
                    double exact = 0.0, mag = 0.0;
                    for (int l = 0; l < k; ++l) {
                      const double p = static_cast<double>(g.a[g.at_a(mat, i, l)]) *
                                       static_cast<double>(g.b[g.at_b(mat, l, j)]);
                      exact += p;
                      mag += std::fabs(p);
                    }
                    const double old = beta == 0.0 ? 0.0 : static_cast<double>(c0[at]);
                    exact = alpha * exact + beta * old;
                    const double bound =
                        (1 + u_t) * (k + 2) * u_s * (std::fabs(alpha) * mag + std::fabs(beta * old)) +
                        u_t * std::fabs(exact) + eta_t + 1e-300;
                    const double got = static_cast<double>(g.c[at]);
                    worst = std::max(worst, std::fabs(got - exact) / bound);
                  }
              CHECK(untouched_padding);
              CHECK(worst <= 1.0);  // NaN from an unread C would fail here
            }
  }

  TEST_CASE_TEMPLATE("portable_gemm gives the bits of the plain loop, in both forms and every type", T, float,
                     double, Bf16, Fp16) {
    // The kernel's contract (portable_gemm.hpp): each entry's sum starts at 0 and adds its
    // products in the order of the inner index, in the scalar type, whatever the tiles, the
    // blocks of entries a thread keeps in registers, or the team; then T(α·sum + β·C). So the
    // plain triple loop below gives the same bits: an exact oracle, not a tolerance. (No FMA
    // contraction on this host build: g++ contracts only with -ffp-contract=fast and an FMA
    // target.) The shapes cross every tile (32, 64, 128) and block (4, 8) edge and end the inner
    // dimension inside a slab of 16.
    using S = scalar_t<T>;
    const std::uint64_t seed = case_seed("portable_gemm_bits");
    CAPTURE(seed);
    Rng rng(seed);
    struct Shape {
      int m, n, k;
    };
    for (const Shape& sh : {Shape{1, 1, 1}, Shape{65, 33, 17}, Shape{129, 130, 40}, Shape{7, 200, 3}})
      for (bool ta : {false, true})
        for (bool tb : {false, true})
          for (bool host_loops : {true, false}) {
            const int m = sh.m, n = sh.n, k = sh.k, batch = 2;
            CAPTURE(m);
            CAPTURE(n);
            CAPTURE(k);
            CAPTURE(ta);
            CAPTURE(tb);
            CAPTURE(host_loops);
            GemmCase<T> g(m, n, k, batch, ta, tb, false, rng);
            const S alpha = S(1.25), beta = S(-0.5);
            std::vector<T> want = g.c;
            for (int mat = 0; mat < batch; ++mat)
              for (int j = 0; j < n; ++j)
                for (int i = 0; i < m; ++i) {
                  S sum = S(0);
                  for (int l = 0; l < k; ++l)
                    sum += static_cast<S>(g.a[g.at_a(mat, i, l)]) * static_cast<S>(g.b[g.at_b(mat, l, j)]);
                  T& out = want[g.at_c(mat, i, j)];
                  out = static_cast<T>(alpha * sum + beta * static_cast<S>(out));
                }
            // The kernel's own team size (0) for half the shapes, every host thread for the rest.
            g.run(host_loops, alpha, beta, (m + n) % 2 == 0 ? 0 : Exec().concurrency());
            CHECK(std::memcmp(g.c.data(), want.data(), g.c.size() * sizeof(T)) == 0);
          }
  }

  TEST_CASE_TEMPLATE("portable_sym_product: the plain loop's bits on and below the diagonal, mirrored above",
                     T, float, double, Bf16, Fp16) {
    // C = α op(A) op(A)ᵀ + β C: each entry on or below the diagonal is what the plain loop (and
    // portable_gemm) gives it, bit for bit (same order of sums), and the entry above the
    // diagonal is its mirror. C's strict upper triangle holds NaN on entry: a kernel that read it
    // (β ≠ 0) or left it unwritten would fail. With β = 0, C is all NaN. The sizes cross every
    // tile of both forms (32, 64, 128), so that tiles above the diagonal are skipped and
    // diagonal tiles are partly above it; padding rows must stay untouched.
    using S = scalar_t<T>;
    const std::uint64_t seed = case_seed("portable_sym_product");
    CAPTURE(seed);
    Rng rng(seed);
    for (const int n : {1, 65, 130, 200})
      for (const int k : {17, 40})
        for (bool trans : {false, true})
          for (bool host_loops : {true, false})
            for (double beta : {0.0, -0.5}) {
              const int batch = 2;
              CAPTURE(n);
              CAPTURE(k);
              CAPTURE(trans);
              CAPTURE(host_loops);
              CAPTURE(beta);
              GemmCase<T> g(n, n, k, batch, trans, !trans, beta == 0.0, rng);  // g.b unused: B = op(A)ᵀ
              for (int mat = 0; mat < batch; ++mat)
                for (int j = 0; j < n; ++j)
                  for (int i = 0; i < j; ++i)
                    g.c[g.at_c(mat, i, j)] = static_cast<T>(std::nan(""));
              const std::vector<T> c0 = g.c;
              const S alpha = S(0.75);
              g.run_sym(host_loops, alpha, S(beta), (n + k) % 2 == 0 ? 0 : Exec().concurrency());
              bool exact = true, untouched_padding = true;
              for (int mat = 0; mat < batch; ++mat)
                for (int j = 0; j < n; ++j)
                  for (int i = 0; i < g.ldc; ++i) {
                    if (i >= n) {
                      const std::size_t at = g.at_c(mat, i, j);
                      untouched_padding = untouched_padding && std::memcmp(&g.c[at], &c0[at], sizeof(T)) == 0;
                      continue;
                    }
                    const int r = i >= j ? i : j, q = i >= j ? j : i;  // the entry's lower twin
                    S sum = S(0);
                    for (int l = 0; l < k; ++l)
                      sum += static_cast<S>(g.a[g.at_a(mat, r, l)]) * static_cast<S>(g.a[g.at_a(mat, q, l)]);
                    S v = alpha * sum;
                    if (beta != 0.0) v += S(beta) * static_cast<S>(c0[g.at_c(mat, r, q)]);
                    const T want = static_cast<T>(v);
                    exact = exact && std::memcmp(&g.c[g.at_c(mat, i, j)], &want, sizeof(T)) == 0;
                  }
              CHECK(exact);
              CHECK(untouched_padding);
            }
  }

  TEST_CASE("which products go to portable_gemm") {
    // The software 16-bit types always; float and double on the host never (the host BLAS).
    CHECK(portable_batched<Exec, Bf16>(1, 4096, 4096, 4096));
    CHECK(portable_batched<Exec, Fp16>(3, 8, 8, 8));
    CHECK_FALSE(portable_batched<Exec, float>(256, 64, 64, 64));
    CHECK_FALSE(portable_batched<Exec, double>(1, 64, 64, 64));
    CHECK_FALSE(has_vendor_batched_gemm<Exec>());  // the host: one BLAS call per matrix
    // Symmetric products on one triangle: the software 16-bit types at every size (the portable
    // kernel); float and double through the host's SYRK.
    CHECK(sym_product_on_one_triangle<Exec, Bf16>(1, 8, 8));
    CHECK(sym_product_on_one_triangle<Exec, Fp16>(4, 2048, 100));
    CHECK(sym_product_on_one_triangle<Exec, float>(4, 64, 64) == has_syrk<Exec, float>());
  }

  TEST_CASE_TEMPLATE("batched.hpp's device loops, run on the CPU, agree with its host loops", T, float,
                     double) {
    // The element loops of batched.hpp have a host form (column blocks, 16 × 16 tiles) and a
    // device form (a tiled MDRange, one thread per element), which only a GPU build would run.
    // Here both run on the CPU (HostLoops): for_each_element visits every element of the box
    // once in either form, reduce_matrix gives the same sum and maximum, and symmetrize and
    // fill_upper give the same bits (each element is the same one operation in either form).
    // Shapes straddle the tiles (32 on the device, 16 and 128 on the host) and include 1 × 1.
    const std::uint64_t seed = case_seed("batched device loops");
    CAPTURE(seed);
    Rng rng(seed);
    for (const auto& box : {std::array<index_t, 3>{1, 1, 1}, {33, 70, 3}, {64, 64, 2}, {130, 17, 1}}) {
      const index_t rows = box[0], cols = box[1], batch = box[2];
      CAPTURE(rows);
      CAPTURE(cols);
      for (const bool host_loops : {true, false}) {
        CAPTURE(host_loops);
        Kokkos::View<int***, Kokkos::LayoutLeft, Exec::memory_space> visits("visits", rows, cols, batch);
        const auto count = KOKKOS_LAMBDA(index_t i, index_t j, index_t b) {
          Kokkos::atomic_add(&visits(i, j, b), 1);
        };
        if (host_loops)
          for_each_element_as<true>(Exec(), "test", rows, cols, batch, count);
        else
          for_each_element_as<false>(Exec(), "test", rows, cols, batch, count);
        Kokkos::fence();
        int wrong = 0;
        for (index_t b = 0; b < batch; ++b)
          for (index_t j = 0; j < cols; ++j)
            for (index_t i = 0; i < rows; ++i)
              wrong += visits(i, j, b) != 1;
        CHECK(wrong == 0);
        // f(i, j) = i·cols + j + 1: integers, exact in double whatever the order of the sum.
        for (const bool cols_contiguous : {true, false}) {
          double sum = 0.0, top = 0.0;
          const auto add = KOKKOS_LAMBDA(index_t i, index_t j, double& acc) {
            acc += double(i * cols + j + 1);
          };
          const auto max = KOKKOS_LAMBDA(index_t i, index_t j, double& acc) {
            acc = kmax(acc, double(i * cols + j + 1));
          };
          if (host_loops) {
            reduce_matrix_as<true>(Exec(), "test", rows, cols, cols_contiguous, add,
                                   Kokkos::Sum<double>(sum));
            reduce_matrix_as<true>(Exec(), "test", rows, cols, cols_contiguous, max,
                                   Kokkos::Max<double>(top));
          } else {
            reduce_matrix_as<false>(Exec(), "test", rows, cols, cols_contiguous, add,
                                    Kokkos::Sum<double>(sum));
            reduce_matrix_as<false>(Exec(), "test", rows, cols, cols_contiguous, max,
                                    Kokkos::Max<double>(top));
          }
          const double n = double(rows * cols);
          CHECK(sum == n * (n + 1) / 2);
          CHECK(top == n);
        }
      }
      // reduce_per_matrix in its two forms (one launch per matrix, or one team per matrix in a
      // single launch, the form of a launch-bound batch on a device): the same exact integer
      // sums and maxima per matrix, and on N(0, 1) values the same maxima and sums that agree
      // to rounding (n·u·Σ|v|, the bound of any summation order).
      for (const bool cols_contiguous : {true, false}) {
        CAPTURE(cols_contiguous);
        using Doubles = Kokkos::View<double*, Exec::memory_space>;
        Doubles sums[2] = {Doubles("sums", batch), Doubles("sums", batch)},
                tops[2] = {Doubles("tops", batch), Doubles("tops", batch)};
        Kokkos::View<double***, Kokkos::LayoutLeft, Exec::memory_space> v("v", rows, cols, batch);
        for (index_t b = 0; b < batch; ++b)
          for (index_t j = 0; j < cols; ++j)
            for (index_t i = 0; i < rows; ++i)
              v(i, j, b) = rng.normal();
        for (const bool integers : {true, false}) {
          CAPTURE(integers);
          const auto add = KOKKOS_LAMBDA(index_t i, index_t j, index_t b, double& acc) {
            acc += integers ? double((b * rows + i) * cols + j + 1) : v(i, j, b);
          };
          const auto max = KOKKOS_LAMBDA(index_t i, index_t j, index_t b, double& acc) {
            acc = kmax(acc, integers ? double((b * rows + i) * cols + j + 1) : kmath::fabs(v(i, j, b)));
          };
          using Mem = Exec::memory_space;
          reduce_per_matrix_as<PerMatrix::sum, false, Mem>(Exec(), "test", rows, cols, batch, cols_contiguous,
                                                           add, sums[0].data());
          reduce_per_matrix_as<PerMatrix::sum, true, Mem>(Exec(), "test", rows, cols, batch, cols_contiguous,
                                                          add, sums[1].data());
          reduce_per_matrix_as<PerMatrix::max, false, Mem>(Exec(), "test", rows, cols, batch, cols_contiguous,
                                                           max, tops[0].data());
          reduce_per_matrix_as<PerMatrix::max, true, Mem>(Exec(), "test", rows, cols, batch, cols_contiguous,
                                                          max, tops[1].data());
          Kokkos::fence();
          const double n = double(rows * cols);
          for (index_t b = 0; b < batch; ++b) {
            CAPTURE(b);
            double abs_sum = 0.0, top = 0.0;
            for (index_t j = 0; j < cols; ++j)
              for (index_t i = 0; i < rows; ++i) {
                abs_sum += std::fabs(v(i, j, b));
                top = std::max(top, std::fabs(v(i, j, b)));
              }
            if (integers) {  // 1 + n·b … n·(b + 1): exact in double whatever the order
              CHECK(sums[0](b) == n * (n + 1) / 2 + n * n * double(b));
              CHECK(tops[0](b) == n * double(b + 1));
            } else {
              CHECK(tops[0](b) == top);
              CHECK(std::fabs(sums[0](b) - sums[1](b)) <= n * 0x1p-53 * abs_sum);
            }
            if (integers) CHECK(sums[1](b) == sums[0](b));
            CHECK(tops[1](b) == tops[0](b));
          }
        }
      }
      // symmetrize and fill_upper on rows × rows matrices, N(0, 1) entries.
      const index_t k = rows;
      std::vector<T> start(static_cast<std::size_t>(k * k * batch));
      for (T& x : start)
        x = static_cast<T>(rng.normal());
      std::vector<T> host_sym = start, device_sym = start, host_fill = start, device_fill = start;
      const auto mat = [&](std::vector<T>& v) { return Mat3<T, Kokkos::HostSpace>(v.data(), k, k, batch); };
      symmetrize<Exec, T, Kokkos::HostSpace, true>(Exec(), mat(host_sym));
      symmetrize<Exec, T, Kokkos::HostSpace, false>(Exec(), mat(device_sym));
      fill_upper<Exec, T, Kokkos::HostSpace, true>(Exec(), mat(host_fill));
      fill_upper<Exec, T, Kokkos::HostSpace, false>(Exec(), mat(device_fill));
      Kokkos::fence();
      CHECK(host_sym == device_sym);
      CHECK(host_fill == device_fill);
      // And they do what they say: symmetric, the mean / the lower triangle mirrored.
      const std::size_t last = static_cast<std::size_t>(k * k * batch - 1);  // (k−1, k−1) of the last
      CHECK(device_sym[last] == start[last]);
      if (k > 1) {  // (0, 1) of matrix 0: the mean of (0, 1) and (1, 0); fill: (1, 0)
        CHECK(device_sym[k] == static_cast<T>((scalar_t<T>(start[k]) + scalar_t<T>(start[1])) / 2));
        CHECK(device_sym[1] == device_sym[k]);
        CHECK(device_fill[k] == start[1]);
        CHECK(device_fill[1] == start[1]);
      }
    }
  }
}

}  // namespace kernels_test_portable_gemm
