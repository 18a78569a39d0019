// SPDX-License-Identifier: Apache-2.0
/// \file
/// Dense primitives beyond GEMM that the QDWH and spectral-power kernels need, on Kokkos:
/// blocked Cholesky, the "tall" operations of an iterate in either memory orientation,
/// fused update-and-difference passes, and cheap extreme-singular-value estimators.
/// All work stays in the execution space; only scalars (norms, failure flags) reach the host.
#pragma once

#include <Kokkos_Core.hpp>

#include <algorithm>
#include <cmath>
#include <vector>

#include "schatten/core/random.hpp"
#include "schatten/core/types.hpp"
#include "schatten/kokkos/detail/batched.hpp"
#include "schatten/kokkos/detail/compat.hpp"

namespace schatten::kokkos::detail {

/// Matrix b of a batch.
template <class T, class Mem>
Mat2<T, Mem> item(const Mat3<T, Mem>& m, index_t b) {
  return Kokkos::subview(m, Kokkos::ALL, Kokkos::ALL, b);
}

/// Rows [r0, r1) × columns [c0, c1) of a matrix, as a BLAS-ready view with the parent's
/// leading dimension.
template <class T, class Mem>
Mat2<T, Mem> block(const Mat2<T, Mem>& m, index_t r0, index_t r1, index_t c0, index_t c1) {
  return Kokkos::subview(m, Kokkos::make_pair(r0, r1), Kokkos::make_pair(c0, c1));
}

/// Unblocked Cholesky of a small diagonal block, in place (lower triangle), by one work item:
/// the panel is at most 64 × 64, so a single thread is cheap next to the GEMM updates. Column
/// oriented (right-looking inside the block), so the inner loops are contiguous.
/// Returns false when a pivot is not positive (or not finite): the block is not numerically SPD.
template <class Exec, class T, class Mem>
bool potf2_lower(const Exec& space, const Mat2<T, Mem>& a) {
  const index_t n = a.extent(0);
  int failed = 0;
  launch_reduce(
      kernel_label("schatten::potf2"), Kokkos::RangePolicy<Exec>(space, 0, 1),
      KOKKOS_LAMBDA(int, int& flag) {
        for (index_t j = 0; j < n; ++j) {
          const T d = a(j, j);
          if (!(d > T(0))) {  // also catches NaN
            flag = 1;
            return;
          }
          const T ljj = kmath::sqrt(d);
          a(j, j) = ljj;
          for (index_t i = j + 1; i < n; ++i)
            a(i, j) /= ljj;
          for (index_t c = j + 1; c < n; ++c) {
            const T f = a(c, j);
            for (index_t i = c; i < n; ++i)
              a(i, c) -= a(i, j) * f;
          }
        }
      },
      Kokkos::Sum<int>(failed));  // Sum starts at 0 (Max would start at INT_MIN)
  return failed == 0;
}

/// True when cholesky_lower() hands the factorisation to the vendor library: cuSOLVER for
/// float/double on CUDA (vendor.hpp). Elsewhere the blocked Kokkos Cholesky below runs.
template <class Exec, class T>
constexpr bool has_vendor_potrf() {
#if defined(SCHATTEN_HAVE_CUDA_POTRF)
  return std::is_same<Exec, Kokkos::Cuda>::value &&
         (std::is_same<T, float>::value || std::is_same<T, double>::value);
#else
  return false;
#endif
}

/// In-place Cholesky A = L Lᵀ of a symmetric positive definite k × k matrix (lower triangle
/// read and overwritten with L; the strict upper triangle of the diagonal blocks is used as
/// scratch). Left-looking blocked algorithm: for each block column, one GEMM with all previous
/// columns (k³/3 flops in total, the same as LAPACK's potrf), a 64 × 64 diagonal block by
/// potf2_lower, and a TRSM for the panel below. As fast as OpenBLAS's dpotrf on this machine
/// (5.7 ms vs 6.5 ms at k = 1024, 36 ms for both at 2048). With has_vendor_potrf (CUDA), one
/// cusolverDn?potrf instead, then one check of its info word and of L's diagonal (positive and
/// finite); its workspace is the stream's kept solver scratch (vendor.hpp), so that a
/// steady-state call allocates nothing and synchronises once (the check's reduction). Returns
/// false when A is not numerically positive definite (A is then garbage).
template <class Exec, class T, class Mem>
bool cholesky_lower(const Exec& space, const Mat2<T, Mem>& a) {
  const index_t k = a.extent(0);
#if defined(SCHATTEN_HAVE_CUDA_POTRF)
  if constexpr (has_vendor_potrf<Exec, T>()) {
    if (k == 0) return true;
    // Held until the check below is enqueued (and, as a reduction, done): see potrf_lower.
    const auto call = vendor::potrf_lower(space, static_cast<int>(k), a.data(), leading_dim(a));
    const int* info = call.info;
    int failed = 0;
    launch_reduce(
        kernel_label("schatten::potrf_check"),
        Kokkos::RangePolicy<Exec, Kokkos::IndexType<index_t>>(space, 0, k),
        KOKKOS_LAMBDA(index_t j, int& flag) {
          if (*info != 0 || !(a(j, j) > T(0)) || !kmath::isfinite(a(j, j))) flag = 1;
        },
        Kokkos::Sum<int>(failed));  // as in potf2_lower: Sum starts at 0
    return failed == 0;
  }
#endif
  constexpr index_t nb = 64;  // tunable: the diagonal block is serial, the rest BLAS-3
  for (index_t j = 0; j < k; j += nb) {
    const index_t j1 = kmin(j + nb, k);
    if (j > 0)  // A[j:k, j:j1] −= A[j:k, 0:j] A[j:j1, 0:j]ᵀ
      gemm(space, "N", "T", T(-1), block(a, j, k, 0, j), block(a, j, j1, 0, j), T(1), block(a, j, k, j, j1));
    const auto a11 = block(a, j, j1, j, j1);
    if (!potf2_lower(space, a11)) return false;
    if (j1 < k) trsm(space, "R", "L", "T", "N", T(1), a11, block(a, j1, k, j, j1));  // A21 L11⁻ᵀ
  }
  return true;
}

/// dst ← src (same shape).
template <class Exec, class T, class Mem>
void copy(const Exec& space, const Mat2<T, Mem>& dst, const Mat2<T, Mem>& src) {
  Kokkos::deep_copy(space, dst, src);
}

/// C ← alpha·I (k × k).
template <class Exec, class T, class Mem>
void set_identity(const Exec& space, const Mat2<T, Mem>& c, T alpha) {
  const index_t k = c.extent(0);
  Kokkos::parallel_for(
      kernel_label("schatten::set_identity"),
      Kokkos::RangePolicy<Exec, Kokkos::IndexType<index_t>>(space, 0, k), KOKKOS_LAMBDA(index_t j) {
        for (index_t i = 0; i < k; ++i)
          c(i, j) = i == j ? alpha : T(0);
      });
}

/// C ← C + alpha·I.
template <class Exec, class T, class Mem>
void add_identity(const Exec& space, const Mat2<T, Mem>& c, T alpha) {
  Kokkos::parallel_for(
      kernel_label("schatten::add_identity"),
      Kokkos::RangePolicy<Exec, Kokkos::IndexType<index_t>>(space, 0, c.extent(0)),
      KOKKOS_LAMBDA(index_t i) { c(i, i) += alpha; });
}

/// x ← beta·x + gamma·y (same shape), returning ‖x_new − x_old‖_F in double (fused, one pass).
template <class Exec, class T, class Mem>
double update_and_difference(const Exec& space, const Mat2<T, Mem>& x, double beta, double gamma,
                             const Mat2<T, Mem>& y) {
  const index_t rows = x.extent(0);
  double ssq = 0.0;
  launch_reduce(
      kernel_label("schatten::update_and_difference"),
      Kokkos::RangePolicy<Exec, Kokkos::IndexType<index_t>>(space, 0, x.extent(1)),
      KOKKOS_LAMBDA(index_t j, double& acc) {
        for (index_t i = 0; i < rows; ++i) {
          const T old = x(i, j);
          const T v = static_cast<T>(beta * static_cast<double>(old) + gamma * static_cast<double>(y(i, j)));
          x(i, j) = v;
          const double d = static_cast<double>(v) - static_cast<double>(old);
          acc += d * d;
        }
      },
      Kokkos::Sum<double>(ssq));
  return std::sqrt(ssq);
}

/// x ← alpha·x.
template <class Exec, class T, class Mem>
void scale(const Exec& space, const Mat2<T, Mem>& x, T alpha) {
  const index_t rows = x.extent(0);
  Kokkos::parallel_for(
      kernel_label("schatten::scale"),
      Kokkos::RangePolicy<Exec, Kokkos::IndexType<index_t>>(space, 0, x.extent(1)), KOKKOS_LAMBDA(index_t j) {
        for (index_t i = 0; i < rows; ++i)
          x(i, j) *= alpha;
      });
}

/// ‖x‖_F in double.
template <class Exec, class T, class Mem>
double frobenius(const Exec& space, const Mat2<T, Mem>& x) {
  const index_t rows = x.extent(0);
  double ssq = 0.0;
  launch_reduce(
      kernel_label("schatten::frobenius"),
      Kokkos::RangePolicy<Exec, Kokkos::IndexType<index_t>>(space, 0, x.extent(1)),
      KOKKOS_LAMBDA(index_t j, double& acc) {
        for (index_t i = 0; i < rows; ++i)
          acc += static_cast<double>(x(i, j)) * static_cast<double>(x(i, j));
      },
      Kokkos::Sum<double>(ssq));
  return std::sqrt(ssq);
}

/// max |x_ij| in double, +∞ when x holds NaN or ±Inf (abs_or_inf): the finiteness test of a
/// whole matrix, in one read.
template <class Exec, class T, class Mem>
double max_abs(const Exec& space, const Mat2<T, Mem>& x) {
  const index_t rows = x.extent(0);
  double worst = 0.0;
  launch_reduce(
      kernel_label("schatten::max_abs"),
      Kokkos::RangePolicy<Exec, Kokkos::IndexType<index_t>>(space, 0, x.extent(1)),
      KOKKOS_LAMBDA(index_t j, double& acc) {
        for (index_t i = 0; i < rows; ++i)
          acc = kmax(acc, abs_or_inf(x(i, j)));
      },
      Kokkos::Max<double>(worst));
  return worst;
}

/// tr(x) in double (square x).
template <class Exec, class T, class Mem>
double trace(const Exec& space, const Mat2<T, Mem>& x) {
  double s = 0.0;
  launch_reduce(
      kernel_label("schatten::trace"),
      Kokkos::RangePolicy<Exec, Kokkos::IndexType<index_t>>(space, 0, x.extent(0)),
      KOKKOS_LAMBDA(index_t i, double& acc) { acc += static_cast<double>(x(i, i)); }, Kokkos::Sum<double>(s));
  return s;
}

/// ⟨x, y⟩_F in double.
template <class Exec, class T, class Mem>
double inner(const Exec& space, const Mat2<T, Mem>& x, const Mat2<T, Mem>& y) {
  const index_t rows = x.extent(0);
  double s = 0.0;
  launch_reduce(
      kernel_label("schatten::inner"),
      Kokkos::RangePolicy<Exec, Kokkos::IndexType<index_t>>(space, 0, x.extent(1)),
      KOKKOS_LAMBDA(index_t j, double& acc) {
        for (index_t i = 0; i < rows; ++i)
          acc += static_cast<double>(x(i, j)) * static_cast<double>(y(i, j));
      },
      Kokkos::Sum<double>(s));
  return s;
}

// ---------------------------------------------------------------------------------------------
// An iterate X in the "tall" convention of algorithms.md §3 (m × k, m ≥ k, Gram XᵀX) is stored
// as W = X (right = true, W tall) or W = Xᵀ (right = false, W wide). These helpers apply the
// tall-convention operation to W in place or into another W-shaped buffer.

/// X L⁻ᵀ (L lower k × k): W ← W L⁻ᵀ (tall) or W ← L⁻¹ W (wide), times alpha.
template <class Exec, class T, class Mem>
void x_times_inv_lt(const Exec& space, bool right, T alpha, const Mat2<T, Mem>& l, const Mat2<T, Mem>& w) {
  if (right)
    trsm(space, "R", "L", "T", "N", alpha, l, w);
  else
    trsm(space, "L", "L", "N", "N", alpha, l, w);
}

/// X L⁻¹ (L lower): W ← W L⁻¹ (tall) or W ← L⁻ᵀ W (wide).
template <class Exec, class T, class Mem>
void x_times_inv_l(const Exec& space, bool right, T alpha, const Mat2<T, Mem>& l, const Mat2<T, Mem>& w) {
  if (right)
    trsm(space, "R", "L", "N", "N", alpha, l, w);
  else
    trsm(space, "L", "L", "T", "N", alpha, l, w);
}

/// The k × k Gram XᵀX of one iterate: WᵀW (tall) or W Wᵀ (wide), times alpha, plus beta·G.
template <class Exec, class T, class Mem>
void gram2(const Exec& space, bool right, T alpha, const Mat2<T, Mem>& w, T beta, const Mat2<T, Mem>& g) {
  if (right)
    gemm(space, "T", "N", alpha, w, w, beta, g);
  else
    gemm(space, "N", "T", alpha, w, w, beta, g);
}

/// out ← alpha·X S + beta·out with S symmetric k × k: W S (tall) or S W (wide).
template <class Exec, class T, class Mem>
void x_times_sym(const Exec& space, bool right, T alpha, const Mat2<T, Mem>& w, const Mat2<T, Mem>& s, T beta,
                 const Mat2<T, Mem>& out) {
  if (right)
    gemm(space, "N", "N", alpha, w, s, beta, out);
  else
    gemm(space, "N", "N", alpha, s, w, beta, out);
}

/// out ← alpha·X Mᵀ + beta·out for a general k × k M: W Mᵀ (tall) or M W (wide).
template <class Exec, class T, class Mem>
void x_times_transpose(const Exec& space, bool right, T alpha, const Mat2<T, Mem>& w, const Mat2<T, Mem>& m,
                       T beta, const Mat2<T, Mem>& out) {
  if (right)
    gemm(space, "N", "T", alpha, w, m, beta, out);
  else
    gemm(space, "N", "N", alpha, m, w, beta, out);
}

/// g ← alpha·Xᵀ Y + beta·g for two iterates (k × k): W_xᵀ W_y (tall) or W_x W_yᵀ (wide).
template <class Exec, class T, class Mem>
void x_transpose_times(const Exec& space, bool right, T alpha, const Mat2<T, Mem>& wx, const Mat2<T, Mem>& wy,
                       T beta, const Mat2<T, Mem>& g) {
  if (right)
    gemm(space, "T", "N", alpha, wx, wy, beta, g);
  else
    gemm(space, "N", "T", alpha, wx, wy, beta, g);
}

// ---------------------------------------------------------------------------------------------
// Extreme singular values. Vectors are k × 1 and n × 1 column views.

/// v(:, 0) ← value(), value(), … (doubles drawn on the host in row order, converted to T):
/// written in place when the host reads v's memory, else staged through the workspace's host
/// scratch (HostScalars::bytes, which grows only when a call needs more than the calls before).
/// So it allocates nothing on the host: never on a CPU build, in a steady state on a GPU build.
template <class Exec, class T, class Mem, class F>
void upload_vector(const Exec& space, HostScalars& host, const Mat2<T, Mem>& v, F&& value) {
  const std::size_t n = v.extent(0);
  if constexpr (Kokkos::SpaceAccessibility<Kokkos::HostSpace, Mem>::accessible) {
    (void)host;
    fence_on(space);  // (kernels queued on v)
    for (std::size_t i = 0; i < n; ++i)
      v(static_cast<index_t>(i), 0) = static_cast<T>(value());
  } else {
    host.reserve(0, n * sizeof(T));
    T* h = reinterpret_cast<T*>(host.byte_data());
    for (std::size_t i = 0; i < n; ++i)
      h[i] = static_cast<T>(value());
    Kokkos::deep_copy(
        space, Kokkos::subview(v, Kokkos::ALL, 0),
        Kokkos::View<const T*, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>(h, n));
    fence_on(space);
  }
}

/// Estimate of σ_max(X) by power iteration on XᵀX, in two passes from fixed pseudo-random starts
/// (reproducible). Each pass stops when its estimate changes by < `tol` relative or after
/// `max_steps`. The first starts from a positive vector (never orthogonal to v₁ by symmetry);
/// the second from one with pseudo-random signs, kept orthogonal to the first pass's final
/// vector a: power iteration on P XᵀX P with P = I − a aᵀ. A start nearly orthogonal to v₁ can
/// hold one pass on a plateau at σ₂ long enough for its steps to change by less than `tol`
/// (seen: 0.853·σ_max for a geometric spectrum with σ₂/σ₁ = 0.853, tests/kernels/
/// test_spectral_power.cpp at seed 258; the Schatten-∞ norm would have been σ₂). The second pass
/// then finds σ₁ in the complement of a, so the result fails only when both starts are nearly
/// orthogonal to v₁. Both passes' estimates ‖XᵀX v‖^{1/2} (unit v) are ≤ σ_max, so their maximum
/// approaches σ_max from below, as (σ₂/σ₁)^{2t}: a few per cent low after 30 steps when σ₂/σ₁ is
/// close to 1; callers add a margin (qdwh_impl.hpp). Returns 0 for a zero matrix. `vk` and `va`
/// are k × 1 (the iterate, and the first pass's vector), `vn` is n × 1; the starts go through
/// `host` (upload_vector).
/// Cost: 4mk flops per step (two matrix-vector products as GEMMs with one column), at most
/// 2·max_steps steps; the second pass adds two inner products and updates of k-vectors per step.
template <class Exec, class T, class Mem>
double sigma_max_estimate(const Exec& space, bool right, const Mat2<T, Mem>& w, const Mat2<T, Mem>& vk,
                          const Mat2<T, Mem>& va, const Mat2<T, Mem>& vn, HostScalars& host,
                          double tol = 1e-4, int max_steps = 30) {
  const index_t k = vk.extent(0);
  // v ← v − (aᵀv)·a
  const auto project_out_a = [&] { update_and_difference(space, vk, 1.0, -inner(space, va, vk), va); };
  // The start, deflated when asked, then v/‖v‖; false when nothing is left.
  const auto deflate_and_normalise = [&](bool deflate) {
    if (deflate) project_out_a();
    const double n = frobenius(space, vk);
    if (!(n > 0.0) || !std::isfinite(n)) return false;
    scale(space, vk, static_cast<T>(1.0 / n));
    return true;
  };
  // One pass from the start in vk: its estimate, vk its final unit vector (0 if none).
  const auto pass = [&](bool deflate) {
    double est = 0.0;
    if (!deflate_and_normalise(deflate)) return 0.0;
    for (int it = 0; it < max_steps; ++it) {
      // vn = X v; vk = Xᵀ vn  (tall: W v, Wᵀ vn; wide: Wᵀ v, W vn)
      if (right) {
        gemm(space, "N", "N", T(1), w, vk, T(0), vn);
        gemm(space, "T", "N", T(1), w, vn, T(0), vk);
      } else {
        gemm(space, "T", "N", T(1), w, vk, T(0), vn);
        gemm(space, "N", "N", T(1), w, vn, T(0), vk);
      }
      // ‖P XᵀX v‖ with ‖v‖ = 1 (P = I on the first pass): at most σ₁²
      if (deflate) project_out_a();
      const double lambda = frobenius(space, vk);
      if (!(lambda > 0.0) || !std::isfinite(lambda)) return est;
      scale(space, vk, static_cast<T>(1.0 / lambda));
      const double next = std::sqrt(lambda);
      const bool done = std::fabs(next - est) <= tol * next;
      est = next;
      if (done) break;
    }
    return est;
  };
  Rng rng(0x5c4a77e2u + static_cast<std::uint64_t>(k));
  upload_vector(space, host, vk, [&] { return 1.0 + 0.5 * rng.uniform(); });  // positive
  const double first = pass(false);
  // A first pass that found nothing (X = 0, or X v = 0 for the positive v) leaves no vector to
  // deflate: the second pass then runs on XᵀX itself.
  const bool deflate = first > 0.0;
  if (deflate) copy(space, va, vk);
  upload_vector(space, host, vk, [&] {  // pseudo-random signs
    const double sign = rng.uniform() < 0.5 ? -1.0 : 1.0;
    return sign * (1.0 + 0.5 * rng.uniform());
  });
  return std::max(first, pass(deflate));
}

/// largest_eigenvalue()'s result: λ₁ ∈ [lower, upper] (up to rounding, below), `value` = lower.
struct CertifiedEigenvalue {
  double value = 0.0;
  double lower = 0.0, upper = 0.0;
  int factorizations = 0;  ///< Cholesky factorisations tried
  bool certified = false;  ///< upper ≤ lower·(1 + δ) was reached
};

/// The relative width δ = 8·max(k, 8)·2⁻⁵³ to which largest_eigenvalue() closes its bracket
/// (7.1e-15 up to k = 8, 9.1e-13 at k = 1024): above the backward error of a Cholesky
/// factorisation of τI − G, about k·2⁻⁵³·τ in practice (Higham, "Accuracy and Stability of
/// Numerical Algorithms", 2nd ed., §10.1), so that a τ that far above λ₁ factors. [P]
inline double certified_eigenvalue_width(index_t k) {
  return 8.0 * static_cast<double>(std::max<index_t>(k, 8)) * 0x1p-53;
}

/// λ₁(G), the largest eigenvalue of a symmetric positive semi-definite k × k matrix G in double,
/// with a certificate that does not depend on the gap λ₁ − λ₂ (schatten_norm's q = ∞:
/// ‖A‖₂² = λ₁(AᵀA)). It keeps a bracket [ℓ, u] ∋ λ₁ and closes it to u ≤ ℓ·(1 + δ)
/// (certified_eigenvalue_width):
/// - lower bounds: tr(G)/k (the mean eigenvalue), and Rayleigh quotients ρ = vᵀGv ≤ λ₁ of unit
///   vectors: from power iteration (at most `power_steps` products G v from a fixed positive
///   start, stopping when a step changes ρ by < δ/4 relative), then from inverse iteration
///   v ← (τI − G)⁻¹v after each successful factorisation (at most `inverse_steps`, stopping
///   likewise; τ > λ₁, so the eigenvalue nearest τ is λ₁ and they converge to v₁ as
///   ((τ − λ₁)/(τ − λ₂))^t, at once when τ is much closer to λ₁ than λ₂ is);
/// - upper bounds: tr(G)·(1 + δ), and every τ for which the Cholesky factorisation of τI − G
///   succeeds (τI − G is positive definite exactly when τ > λ₁); a factorisation that fails
///   raises ℓ to τ instead;
/// - the next τ: after the power iteration and after each success, max(ℓ·(1 + δ), ρ + ‖Gv − ρv‖)
///   (the residual is about √((λ₁ − ρ)(λ₁ − λ₂)) ≥ λ₁ − ρ once v leans on v₁: a guess just above
///   λ₁, or the bracket's closing step once ρ has converged); after a failure ℓ·(1 + s) with s
///   16 times the last step (τ/ℓ − 1, or s) and growing so on; never above √(ℓu). Failures alone
///   make it a search up from ℓ that turns into a bisection of log λ, so the bracket closes
///   whatever the gap, in at most about log₁₆(1/δ) + log₂(ln(k)/δ) ≈ 60 factorisations.
/// Measured (tests/kernels/test_linalg.cpp, k = 60, 60 random eigenbases each): 1 factorisation
/// for equal top eigenvalues, 2 for a gap of 10 % or an exact double one, 2–3 for the Gram of a
/// Gaussian matrix (k = 60 and 300, numpy replay); 3.5 on average and at most 9 for a 1 % gap,
/// 5–9 on average and at most 30 for gaps of 1e-4 to 1e-10 and a cluster of ten within 1e-8
/// (the worst: a start nearly orthogonal to v₁, whose power iteration settles on λ₂).
/// Rounding: G is taken as given (the caller's rounding in forming it is not seen). A success
/// certifies τ > λ₁ less the factorisation's backward error, a failure λ₁ > τ less it; both are
/// within δ's margin, so `value` (= ℓ) is within about δ of λ₁ relative, and usually within the
/// rounding of a Rayleigh quotient (a few 2⁻⁵³·k).
/// Cost: ≤ (power_steps + 1)·2k² flops, then per factorisation k³/3 + 10k² (two solves, one
/// product); at most `max_factorizations` (beyond: ℓ returned, `certified` false). Each step
/// reads scalars back to the host. Scratch: v, w (k × 1) and fac (k × k), all overwritten; G is
/// only read (both triangles by the products, the lower by the factorisations). G = 0 → 0,
/// certified; a non-finite trace → not certified.
template <class Exec, class Mem>
CertifiedEigenvalue largest_eigenvalue(const Exec& space, const Mat2<double, Mem>& g,
                                       const Mat2<double, Mem>& v, const Mat2<double, Mem>& w,
                                       const Mat2<double, Mem>& fac, HostScalars& host, int power_steps = 200,
                                       int max_factorizations = 100, int inverse_steps = 8) {
  const index_t k = g.extent(0);
  CertifiedEigenvalue r;
  const double tr = k == 0 ? 0.0 : trace(space, g);
  if (!std::isfinite(tr)) return r;
  if (!(tr > 0.0)) {  // G = 0 (positive semi-definite with a zero trace)
    r.certified = true;
    return r;
  }
  const double delta = certified_eigenvalue_width(k);
  double lo = k == 1 ? tr : tr / static_cast<double>(k), hi = k == 1 ? tr : tr * (1.0 + delta);
  const auto closed = [&] { return hi <= lo * (1.0 + delta); };
  Rng rng(0x1e5a3c7du + static_cast<std::uint64_t>(k));
  const auto restart = [&] {  // a fixed positive start, unit length
    upload_vector(space, host, v, [&] { return 1.0 + 0.5 * rng.uniform(); });
    scale(space, v, 1.0 / frobenius(space, v));
  };
  const auto rayleigh = [&] {  // w ← G v; vᵀGv (v of unit length)
    gemm(space, "N", "N", 1.0, g, v, 0.0, w);
    return inner(space, v, w);
  };
  double guess = 0.0;       // ρ + ‖Gv − ρv‖ of the current v (0: none)
  const auto probe = [&] {  // ℓ ← max(ℓ, ρ), and the guess
    guess = 0.0;
    const double rho = rayleigh();
    if (!std::isfinite(rho)) return;
    lo = std::max(lo, std::min(rho, hi));
    update_and_difference(space, w, 1.0, -rho, v);  // w ← G v − ρ v
    const double residual = frobenius(space, w);
    if (std::isfinite(residual)) guess = rho + residual;
  };
  if (!closed()) {
    restart();
    double last = 0.0;
    for (int t = 0; t < power_steps; ++t) {
      const double rho = rayleigh();
      const double n = frobenius(space, w);
      if (!std::isfinite(rho) || !(n > 0.0) || !std::isfinite(n)) break;  // (G v = 0)
      lo = std::max(lo, std::min(rho, hi));
      copy(space, v, w);
      scale(space, v, 1.0 / n);
      if (std::fabs(rho - last) <= 0.25 * delta * rho) break;
      last = rho;
    }
    probe();
  }
  double s = delta;
  while (!closed() && r.factorizations < max_factorizations) {
    const double tau =
        std::min(guess > 0.0 ? std::max(lo * (1.0 + delta), guess) : lo * (1.0 + s), std::sqrt(lo * hi));
    copy(space, fac, g);
    scale(space, fac, -1.0);
    add_identity(space, fac, tau);
    ++r.factorizations;
    if (!cholesky_lower(space, fac)) {  // λ₁ ≥ τ
      s = 16.0 * std::max(guess > 0.0 ? delta : s, tau / lo - 1.0);
      lo = tau;
      guess = 0.0;
      continue;
    }
    hi = tau;  // λ₁ < τ
    s = delta;
    double last = lo;
    for (int j = 0; j < inverse_steps; ++j) {  // v ← (τI − G)⁻¹v = L⁻ᵀL⁻¹v, unit length
      trsm(space, "L", "L", "N", "N", 1.0, fac, v);
      trsm(space, "L", "L", "T", "N", 1.0, fac, v);
      const double n = frobenius(space, v);
      if (!(n > 0.0) || !std::isfinite(n)) {
        restart();
        break;
      }
      scale(space, v, 1.0 / n);
      const double rho = rayleigh();
      if (!std::isfinite(rho)) break;
      lo = std::max(lo, std::min(rho, hi));
      if (closed() || lo - last <= 0.25 * delta * lo) break;
      last = lo;
    }
    probe();
  }
  r.value = r.lower = lo;
  r.upper = hi;
  r.certified = closed();
  return r;
}

}  // namespace schatten::kokkos::detail
