// SPDX-License-Identifier: Apache-2.0
/// \file
/// Batched dense primitives the kernels are written with: GEMM through KokkosBlas, and the
/// element-wise loops around it. Matrices of a batch are stored as one column-major View
/// (rows, cols, batch) so every matrix is contiguous and BLAS-ready.
#pragma once

#include <Kokkos_Core.hpp>

#include <type_traits>

#include "schatten/core/types.hpp"
#include "schatten/kernels/polar.hpp"
#include "schatten/kokkos/detail/compat.hpp"
#include "schatten/kokkos/detail/portable_gemm.hpp"
#include "schatten/kokkos/workspace.hpp"

namespace schatten::kokkos::detail {

/// Working matrices of a batch: element (i, j) of matrix b is m(i, j, b).
template <class T, class Mem>
using Mat3 = Kokkos::View<T***, Kokkos::LayoutLeft, Mem, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;

/// One column-major matrix (possibly a sub-block with a leading dimension).
template <class T, class Mem>
using Mat2 = Kokkos::View<T**, Kokkos::LayoutLeft, Mem, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;

/// User matrices of a batch with arbitrary strides: element (i, j) of matrix b is s(b, i, j).
template <class T, class Mem>
using Strided3 = Kokkos::View<T***, Kokkos::LayoutStride, Mem, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;

/// Carves a rows × cols × batch working array out of an arena (null data when only counting).
template <class T, class Mem>
Mat3<T, Mem> carve(Arena& arena, index_t rows, index_t cols, index_t batch) {
  T* p = arena.take<T>(Arena::box(rows, cols, batch));
  return Mat3<T, Mem>(p, rows, cols, batch);
}

/// f(i, j, b) for every element of a rows × cols × batch box. On the host a work item is a
/// block of 16 columns of one matrix, visited in row blocks of 128 with the inner loop over i:
/// when the other operand is row-major (a transposing copy) the 16 columns share its cache lines
/// and both sides stay in L1 (block sizes tunable: 64-byte lines, float and double). Device
/// spaces use a tiled MDRange instead. Both visit the same (i, j, b) set. for_each_element()
/// picks the form from Exec; for_each_element_as<HostLoops>() is told it, so that a test runs
/// the device form on the CPU (as portable_gemm's HostLoops).
template <bool HostLoops, class Exec, class F>
void for_each_element_as(const Exec& space, const char* label, index_t rows, index_t cols, index_t batch,
                         const F& f) {
  if constexpr (HostLoops) {
    constexpr index_t jb = 16, ib = 128;
    const index_t col_blocks = (cols + jb - 1) / jb;
    Kokkos::parallel_for(
        kernel_label(label),
        Kokkos::RangePolicy<Exec, Kokkos::IndexType<index_t>>(space, 0, col_blocks * batch),
        KOKKOS_LAMBDA(index_t w) {
          const index_t j0 = (w % col_blocks) * jb, b = w / col_blocks;
          const index_t j1 = kmin(j0 + jb, cols);
          for (index_t i0 = 0; i0 < rows; i0 += ib) {
            const index_t i1 = kmin(i0 + ib, rows);
            for (index_t j = j0; j < j1; ++j)
              for (index_t i = i0; i < i1; ++i)
                f(i, j, b);
          }
        });
  } else {
    // Tiles of 32 × 32 keep a transposing read and its write in cache (tunable).
    using Policy = Kokkos::MDRangePolicy<Exec, Kokkos::Rank<3, Kokkos::Iterate::Left, Kokkos::Iterate::Left>,
                                         Kokkos::IndexType<index_t>>;
    Kokkos::parallel_for(
        kernel_label(label), Policy(space, {0, 0, 0}, {rows, cols, batch}, {32, 32, 1}),
        KOKKOS_LAMBDA(index_t i, index_t j, index_t b) { f(i, j, b); });
  }
}
template <class Exec, class F>
void for_each_element(const Exec& space, const char* label, index_t rows, index_t cols, index_t batch,
                      const F& f) {
  for_each_element_as<runs_on_host<Exec>>(space, label, rows, cols, batch, f);
}

/// Reduction of f(i, j, acc) over a rows × cols matrix with a Kokkos reducer. On the host the
/// inner loop runs over j when `cols_contiguous` (row-major data), else over i; on a device, a
/// tiled MDRange. reduce_matrix_as<HostLoops>(): as for for_each_element_as.
template <bool HostLoops, class Exec, class F, class Reducer>
void reduce_matrix_as(const Exec& space, const char* label, index_t rows, index_t cols, bool cols_contiguous,
                      const F& f, const Reducer& reducer) {
  using value_type = typename Reducer::value_type;
  if constexpr (HostLoops) {
    const index_t outer = cols_contiguous ? rows : cols, inner = cols_contiguous ? cols : rows;
    launch_reduce(
        kernel_label(label), Kokkos::RangePolicy<Exec, Kokkos::IndexType<index_t>>(space, 0, outer),
        KOKKOS_LAMBDA(index_t o, value_type & acc) {
          for (index_t k = 0; k < inner; ++k) {
            if (cols_contiguous)
              f(o, k, acc);
            else
              f(k, o, acc);
          }
        },
        reducer);
  } else {
    using Policy = Kokkos::MDRangePolicy<Exec, Kokkos::Rank<2, Kokkos::Iterate::Left, Kokkos::Iterate::Left>,
                                         Kokkos::IndexType<index_t>>;
    launch_reduce(
        kernel_label(label), Policy(space, {0, 0}, {rows, cols}, {32, 32}),
        KOKKOS_LAMBDA(index_t i, index_t j, value_type & acc) { f(i, j, acc); }, reducer);
  }
}
template <class Exec, class F, class Reducer>
void reduce_matrix(const Exec& space, const char* label, index_t rows, index_t cols, bool cols_contiguous,
                   const F& f, const Reducer& reducer) {
  reduce_matrix_as<runs_on_host<Exec>>(space, label, rows, cols, cols_contiguous, f, reducer);
}

/// A device double as the result of a reduction: the reduction is queued, not waited for.
template <class Mem>
using ResultView = Kokkos::View<double, Mem, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;

/// The two reductions of reduce_per_matrix(): a sum or a maximum.
enum class PerMatrix { sum, max };

/// results[b] ← Σ or max over (i, j) of the values f(i, j, b, acc) adds to acc (acc += v, or
/// acc = max(acc, v)), for every matrix b of a rows × cols × batch box; `results` is batch doubles
/// in `Mem`, written on `space` and not waited for. Two forms:
/// - per matrix (`OneLaunch` false): one reduce_matrix() per matrix, batch launches. On the host
///   the sums run in memory order, so a batch gives the bits of separate calls.
/// - one launch (`OneLaunch` true): a team per matrix, whose threads reduce the matrix's
///   elements in memory order (consecutive threads read consecutive elements) and whose first
///   thread stores the result. Another summation order: sums agree with the per-matrix form to
///   rounding, maxima exactly. On Serial (team size 1) the sum runs in memory order.
/// reduce_per_matrix() takes the one-launch form for a launch-bound batch on a device
/// (launch_bound_batch(): every dimension ≤ kLaunchBoundDim, below), where the batch launches of
/// the per-matrix form, microseconds each, would cost more than the reductions themselves (the
/// normalisation of a batch of 126 small matrices, anchors.md c.7); the per-matrix form
/// elsewhere, where a launch is cheap (the host) or a matrix fills the device on its own.
template <PerMatrix Kind, bool OneLaunch, class Mem, class Exec, class F>
void reduce_per_matrix_as(const Exec& space, const char* label, index_t rows, index_t cols, index_t batch,
                          bool cols_contiguous, const F& f, double* results) {
  // Plain ifs, not if constexpr: nvcc refuses an extended lambda that first captures a variable
  // inside an if-constexpr branch (both branches compile for every Kind and OneLaunch).
  if (OneLaunch) {
    using Team = Kokkos::TeamPolicy<Exec, Kokkos::IndexType<index_t>>;
    const index_t n = rows * cols;
    launch_team_for(
        kernel_label(label), Team(space, batch, Kokkos::AUTO),
        KOKKOS_LAMBDA(const typename Team::member_type& t) {
          const index_t b = t.league_rank();
          const auto element = [&](index_t e, double& acc) {
            const index_t i = cols_contiguous ? e / cols : e % rows,
                          j = cols_contiguous ? e % cols : e / rows;
            f(i, j, b, acc);
          };
          double r = 0.0;
          if (Kind == PerMatrix::sum)
            Kokkos::parallel_reduce(Kokkos::TeamThreadRange(t, n), element, r);
          else
            Kokkos::parallel_reduce(Kokkos::TeamThreadRange(t, n), element, Kokkos::Max<double>(r));
          if (t.team_rank() == 0) results[b] = r;
        });
  } else {
    for (index_t b = 0; b < batch; ++b) {
      const auto one = KOKKOS_LAMBDA(index_t i, index_t j, double& acc) { f(i, j, b, acc); };
      if (Kind == PerMatrix::sum)
        reduce_matrix(space, label, rows, cols, cols_contiguous, one,
                      Kokkos::Sum<double, Mem>(ResultView<Mem>(results + b)));
      else
        reduce_matrix(space, label, rows, cols, cols_contiguous, one,
                      Kokkos::Max<double, Mem>(ResultView<Mem>(results + b)));
    }
  }
}

/// True for the element types whose GEMMs only portable_gemm computes: the software 16-bit
/// storage of bf16/fp16 iteration outside CUDA (portable_gemm.hpp).
template <class T>
constexpr bool portable_storage = std::is_same<T, Bf16>::value || std::is_same<T, Fp16>::value;

/// The largest dimension (m, n and k) of a batched product that counts as launch-bound on a
/// device [P]: a 512 × 512 × 512 GEMM is about 0.27 GFLOP, microseconds on a current GPU, of the
/// order of a kernel launch. A batch of such products runs as one launch for all its matrices,
/// even at more flops: one portable_gemm on a device without a vendor batched GEMM (HIP), and on
/// CUDA one strided-batched GEMM for a symmetric product, in place of a SYRK per matrix (cuBLAS
/// has no batched SYRK). Larger products keep one vendor call per matrix. Not measured on a GPU
/// yet (issue #7).
inline constexpr index_t kLaunchBoundDim = 512;

/// True for a batch of several products m × n × k on a device, all dimensions at most
/// kLaunchBoundDim (above).
template <class Exec>
bool launch_bound_batch(index_t batch, index_t m, index_t n, index_t k) {
  return !runs_on_host<Exec> && batch > 1 && kmax(m, kmax(n, k)) <= kLaunchBoundDim;
}

/// reduce_per_matrix_as() in the form for Exec and the box: one launch for a launch-bound batch
/// on a device, one launch per matrix otherwise.
template <PerMatrix Kind, class Mem, class Exec, class F>
void reduce_per_matrix(const Exec& space, const char* label, index_t rows, index_t cols, index_t batch,
                       bool cols_contiguous, const F& f, double* results) {
  if (launch_bound_batch<Exec>(batch, rows, cols, 1))
    reduce_per_matrix_as<Kind, true, Mem>(space, label, rows, cols, batch, cols_contiguous, f, results);
  else
    reduce_per_matrix_as<Kind, false, Mem>(space, label, rows, cols, batch, cols_contiguous, f, results);
}

/// True where the vendor layer has a batched GEMM for Exec (cuBLAS' strided-batched GEMM).
template <class Exec>
constexpr bool has_vendor_batched_gemm() {
#if defined(SCHATTEN_HAVE_CUDA_BATCHED_GEMM)
  return std::is_same<Exec, Kokkos::Cuda>::value;
#else
  return false;
#endif
}

/// True when batched_gemm computes a batch of `batch` products m × n × k with one portable_gemm
/// launch: always for the software 16-bit types, and for several small matrices on a device
/// space without a vendor batched GEMM.
template <class Exec, class T>
bool portable_batched(index_t batch, index_t m, index_t n, index_t k) {
  if constexpr (portable_storage<T>)
    return true;
  else
    return !has_vendor_batched_gemm<Exec>() && launch_bound_batch<Exec>(batch, m, n, k);
}

/// The operand of portable_gemm or the vendor's batched GEMM for a column-major view of rank 2
/// (one matrix) or 3 (matrices stride(2) apart); read_operand() gives the read-only one (A, B).
template <class V>
StridedOperand<typename V::value_type> strided_operand(const V& v) {
  return {v.data(), leading_dim(v), V::rank == 3 ? static_cast<std::int64_t>(v.stride(2)) : 0};
}
template <class V>
StridedOperand<typename V::const_value_type> read_operand(const V& v) {
  const auto o = strided_operand(v);
  return {o.data, o.ld, o.stride};
}

/// C[b] = alpha op(A[b]) op(B[b]) + beta C[b] for every b. On CUDA a batch of several matrices
/// is one cublasGemmStridedBatchedEx launch (vendor.hpp); where portable_batched() says so, one
/// portable_gemm launch (software 16-bit storage; small matrices on HIP); otherwise, and for a
/// single matrix, one KokkosBlas call per matrix (host BLAS, cuBLAS or rocBLAS behind Kokkos
/// Kernels).
template <class Exec, class T, class Mem>
void batched_gemm(const Exec& space, const char* trans_a, const char* trans_b, scalar_t<T> alpha,
                  const Mat3<T, Mem>& a, const Mat3<T, Mem>& b, scalar_t<T> beta, const Mat3<T, Mem>& c) {
  const index_t batch = c.extent(2);
  const bool na = trans_a[0] == 'N' || trans_a[0] == 'n';
  const int m = static_cast<int>(c.extent(0)), n = static_cast<int>(c.extent(1));
  const int k = static_cast<int>(na ? a.extent(1) : a.extent(0));
  if constexpr (!has_vendor_batched_gemm<Exec>() || portable_storage<T>) {  // cuBLAS's types: not compiled
    if (portable_batched<Exec, T>(batch, m, n, k)) {
      const bool nb = trans_b[0] == 'N' || trans_b[0] == 'n';
      portable_gemm<Exec, T>(space, !na, !nb, m, n, k, alpha, read_operand(a), read_operand(b), beta,
                             strided_operand(c), static_cast<int>(batch));
      return;
    }
  }
#if defined(SCHATTEN_HAVE_CUDA_BATCHED_GEMM)
  if constexpr (std::is_same<Exec, Kokkos::Cuda>::value) {
    if (batch > 1) {
      vendor::gemm_strided<T>(space, trans_a, trans_b, m, n, k, alpha, read_operand(a), read_operand(b), beta,
                              strided_operand(c), static_cast<int>(batch));
      return;
    }
  }
#endif
  if constexpr (!portable_storage<T>)  // (those returned above: no BLAS knows them)
    for (index_t i = 0; i < batch; ++i) {
      gemm(space, trans_a, trans_b, alpha, Kokkos::subview(a, Kokkos::ALL, Kokkos::ALL, i),
           Kokkos::subview(b, Kokkos::ALL, Kokkos::ALL, i), beta,
           Kokkos::subview(c, Kokkos::ALL, Kokkos::ALL, i));
    }
}

/// C ← [C] + beta·A + alpha·I on square matrices (the bracket when `accumulate`).
/// One pass over C and A; with accumulate = false C's old contents are not read. The arithmetic
/// runs in scalar_t<T> (float for 16-bit storage), rounded to T once on the store.
template <class Exec, class T, class Mem>
void add_scaled_identity(const Exec& space, const Mat3<T, Mem>& c, bool accumulate, scalar_t<T> beta,
                         const Mat3<T, Mem>& a, scalar_t<T> alpha) {
  using S = scalar_t<T>;
  for_each_element(
      space, "schatten::add_scaled_identity", c.extent(0), c.extent(1), c.extent(2),
      KOKKOS_LAMBDA(index_t i, index_t j, index_t b) {
        S v = beta * static_cast<S>(a(i, j, b));
        if (i == j) v += alpha;
        c(i, j, b) = static_cast<T>(accumulate ? static_cast<S>(c(i, j, b)) + v : v);
      });
}

/// C ← C + alpha·I on every square matrix of the batch (touches the diagonal only).
template <class Exec, class T, class Mem>
void add_diagonal(const Exec& space, const Mat3<T, Mem>& c, scalar_t<T> alpha) {
  using S = scalar_t<T>;
  const index_t k = c.extent(0);
  Kokkos::parallel_for(
      kernel_label("schatten::add_diagonal"),
      Kokkos::RangePolicy<Exec, Kokkos::IndexType<index_t>>(space, 0, k * static_cast<index_t>(c.extent(2))),
      KOKKOS_LAMBDA(index_t ib) {
        T& d = c(ib % k, ib % k, ib / k);
        d = static_cast<T>(static_cast<S>(d) + alpha);
      });
}

/// dst ← src (same shape; both contiguous, so this is a memcpy on the host).
template <class Exec, class T, class Mem>
void copy(const Exec& space, const Mat3<T, Mem>& dst, const Mat3<T, Mem>& src) {
  Kokkos::deep_copy(space, dst, src);
}

/// C ← (C + Cᵀ)/2 for every square matrix of the batch, the mean formed in scalar_t<T>.
/// Host: a work item is one row of 16 × 16 tiles of one matrix; each tile pair (I, J), (J, I)
/// is read into local arrays before it is averaged and written back, which avoids the
/// cache-set conflicts of walking a power-of-two leading dimension across columns (3.4× faster
/// than the plain loop at k = 1024 on this machine). Device: one thread per upper element, the
/// same arithmetic (the same bits). `HostLoops` picks the form (for_each_element_as).
template <class Exec, class T, class Mem, bool HostLoops = runs_on_host<Exec>>
void symmetrize(const Exec& space, const Mat3<T, Mem>& c) {
  using S = scalar_t<T>;
  const index_t k = c.extent(0);
  if constexpr (HostLoops) {
    constexpr index_t tb = 16;
    const index_t tiles = (k + tb - 1) / tb;
    Kokkos::parallel_for(
        kernel_label("schatten::symmetrize"),
        Kokkos::RangePolicy<Exec, Kokkos::IndexType<index_t>>(space, 0,
                                                              tiles * static_cast<index_t>(c.extent(2))),
        KOKKOS_LAMBDA(index_t w) {
          const index_t i0 = (w % tiles) * tb, b = w / tiles, i1 = kmin(i0 + tb, k);
          T upper[tb][tb], lower[tb][tb];
          for (index_t j0 = i0; j0 < k; j0 += tb) {
            const index_t j1 = kmin(j0 + tb, k);
            for (index_t j = j0; j < j1; ++j)
              for (index_t i = i0; i < i1; ++i)
                upper[j - j0][i - i0] = c(i, j, b);
            for (index_t i = i0; i < i1; ++i)
              for (index_t j = j0; j < j1; ++j)
                lower[i - i0][j - j0] = c(j, i, b);
            for (index_t j = j0; j < j1; ++j)
              for (index_t i = i0; i < i1; ++i) {
                if (j0 == i0 && j <= i) continue;
                const T v = static_cast<T>(
                    (static_cast<S>(upper[j - j0][i - i0]) + static_cast<S>(lower[i - i0][j - j0])) / S(2));
                c(i, j, b) = v;
                c(j, i, b) = v;
              }
          }
        });
  } else {
    for_each_element_as<false>(
        space, "schatten::symmetrize", k, k, c.extent(2), KOKKOS_LAMBDA(index_t i, index_t j, index_t b) {
          if (j <= i) return;
          const T v = static_cast<T>((static_cast<S>(c(i, j, b)) + static_cast<S>(c(j, i, b))) / S(2));
          c(i, j, b) = v;
          c(j, i, b) = v;
        });
  }
}

/// C(i, j) ← C(j, i) for j > i on every square matrix of the batch: the upper triangle becomes
/// the mirror of the lower one (after a SYRK that wrote only the lower triangle).
/// Host: the tiling of symmetrize() (16 × 16 tile pairs through a local array). Device: one
/// thread per upper element. `HostLoops` picks the form (for_each_element_as).
template <class Exec, class T, class Mem, bool HostLoops = runs_on_host<Exec>>
void fill_upper(const Exec& space, const Mat3<T, Mem>& c) {
  const index_t k = c.extent(0);
  if constexpr (HostLoops) {
    constexpr index_t tb = 16;
    const index_t tiles = (k + tb - 1) / tb;
    Kokkos::parallel_for(
        kernel_label("schatten::fill_upper"),
        Kokkos::RangePolicy<Exec, Kokkos::IndexType<index_t>>(space, 0,
                                                              tiles * static_cast<index_t>(c.extent(2))),
        KOKKOS_LAMBDA(index_t w) {
          const index_t i0 = (w % tiles) * tb, b = w / tiles, i1 = kmin(i0 + tb, k);
          T lower[tb][tb];
          for (index_t j0 = i0; j0 < k; j0 += tb) {
            const index_t j1 = kmin(j0 + tb, k);
            for (index_t i = i0; i < i1; ++i)
              for (index_t j = j0; j < j1; ++j)
                lower[i - i0][j - j0] = c(j, i, b);
            for (index_t j = j0; j < j1; ++j)
              for (index_t i = i0; i < i1; ++i)
                if (j > i) c(i, j, b) = lower[i - i0][j - j0];
          }
        });
  } else {
    for_each_element_as<false>(
        space, "schatten::fill_upper", k, k, c.extent(2), KOKKOS_LAMBDA(index_t i, index_t j, index_t b) {
          if (j > i) c(i, j, b) = c(j, i, b);
        });
  }
}

/// C = alpha op(A) op(B) + beta C for one matrix (column-major views): gemm() (compat.hpp), or
/// portable_gemm for the software 16-bit types, which no BLAS knows.
template <class Exec, class AV, class BV, class CV>
void matrix_gemm(const Exec& space, const char* trans_a, const char* trans_b,
                 scalar_t<typename CV::non_const_value_type> alpha, const AV& a, const BV& b,
                 scalar_t<typename CV::non_const_value_type> beta, const CV& c) {
  using T = typename CV::non_const_value_type;
  if constexpr (portable_storage<T>) {
    const bool ta = !(trans_a[0] == 'N' || trans_a[0] == 'n'), tb = !(trans_b[0] == 'N' || trans_b[0] == 'n');
    portable_gemm<Exec, T>(space, ta, tb, static_cast<int>(c.extent(0)), static_cast<int>(c.extent(1)),
                           static_cast<int>(ta ? a.extent(0) : a.extent(1)), alpha, read_operand(a),
                           read_operand(b), beta, strided_operand(c), 1);
  } else {
    gemm(space, trans_a, trans_b, alpha, a, b, beta, c);
  }
}

/// True when a symmetric product with an n × n result computes only one triangle in Exec for T: a
/// vendor SYRK (has_syrk), else GEMM row panels where symmetric_panels_pay(n) (polar.hpp).
template <class Exec, class T>
bool has_symmetric_kernel(index_t n) {
  return has_syrk<Exec, T>() || symmetric_panels_pay(n);
}

/// Lower triangle of C ← alpha op(A) op(A)ᵀ + beta C for one matrix (trans "N": A Aᵀ, A n × k;
/// "T": Aᵀ A, A k × n) by the GEMM row panels of symmetric_panel_shapes (polar.hpp): panel p is
/// one GEMM of C[p·b : e, 0 : e], about (N + 1)/(2N) of a full GEMM's flops for N panels. Any
/// type and backend (16-bit storage through the vendor GEMM). The upper triangle of the diagonal
/// tiles is written too (by the panel GEMMs), the rest of the strict upper triangle is neither
/// read nor written: callers fill it from the lower one. beta ≠ 0 reads C[p·b : e, 0 : e] only.
template <class Exec, class T, class Mem>
void sym_lower_by_panels(const Exec& space, bool no_trans, scalar_t<T> alpha, const Mat2<T, Mem>& a,
                         scalar_t<T> beta, const Mat2<T, Mem>& c) {
  const index_t n = c.extent(0), b = kSymmetricPanelRows;
  const index_t k = no_trans ? a.extent(1) : a.extent(0);
  for (index_t p0 = 0; p0 < n; p0 += b) {
    const index_t e = kmin(p0 + b, n);
    const auto cp = Kokkos::subview(c, Kokkos::make_pair(p0, e), Kokkos::make_pair(index_t(0), e));
    if (no_trans)  // C[p0:e, 0:e] = A[p0:e, :] A[0:e, :]ᵀ
      matrix_gemm(space, "N", "T", alpha,
                  Kokkos::subview(a, Kokkos::make_pair(p0, e), Kokkos::make_pair(index_t(0), k)),
                  Kokkos::subview(a, Kokkos::make_pair(index_t(0), e), Kokkos::make_pair(index_t(0), k)),
                  beta, cp);
    else  // C[p0:e, 0:e] = A[:, p0:e]ᵀ A[:, 0:e]
      matrix_gemm(space, "T", "N", alpha,
                  Kokkos::subview(a, Kokkos::make_pair(index_t(0), k), Kokkos::make_pair(p0, e)),
                  Kokkos::subview(a, Kokkos::make_pair(index_t(0), k), Kokkos::make_pair(index_t(0), e)),
                  beta, cp);
  }
}

/// True when batched_sym_product computes a batch of `batch` symmetric n × n products with inner
/// dimension `inner` on one triangle: portable_sym_product wherever the full products would be
/// one portable_gemm (portable_batched: the software 16-bit types; a launch-bound batch on HIP),
/// else a vendor SYRK or GEMM row panels per matrix (has_symmetric_kernel), except in a
/// launch-bound batch on a device, whose full products are one vendor batched GEMM (CUDA).
template <class Exec, class T>
bool sym_product_on_one_triangle(index_t batch, index_t n, index_t inner) {
  return portable_batched<Exec, T>(batch, n, n, inner) ||
         (has_symmetric_kernel<Exec, T>(n) && !launch_bound_batch<Exec>(batch, n, n, inner));
}

/// C[b] ← alpha op(A[b]) op(A[b])ᵀ + beta C[b] for every b, a symmetric k × k result (trans "N":
/// A Aᵀ; "T": Aᵀ A). With `symmetric`, where sym_product_on_one_triangle says so, the lower
/// triangle only, mirrored into the upper one, so C is exactly symmetric; beta ≠ 0 then reads
/// only C's lower triangle (and, with panels, the diagonal tiles):
/// - where the full products would go to portable_gemm (16-bit storage outside CUDA, a
///   launch-bound batch on HIP): one portable_sym_product launch for the whole batch, about half
///   the flops (the tiles on and below the diagonal) and no separate fill;
/// - else per matrix a vendor SYRK (half the flops) or GEMM row panels (sym_lower_by_panels),
///   then fill_upper.
/// Otherwise the full products, as batched_gemm.
template <class Exec, class T, class Mem>
void batched_sym_product(const Exec& space, bool symmetric, const char* trans, scalar_t<T> alpha,
                         const Mat3<T, Mem>& a, scalar_t<T> beta, const Mat3<T, Mem>& c) {
  const bool no_trans = trans[0] == 'N' || trans[0] == 'n';
  const index_t n = c.extent(0), inner = no_trans ? a.extent(1) : a.extent(0), batch = c.extent(2);
  if (symmetric && sym_product_on_one_triangle<Exec, T>(batch, n, inner)) {
    if constexpr (!has_vendor_batched_gemm<Exec>() || portable_storage<T>) {  // cuBLAS's types: not compiled
      if (portable_batched<Exec, T>(batch, n, n, inner)) {
        portable_sym_product<Exec, T>(space, !no_trans, static_cast<int>(n), static_cast<int>(inner), alpha,
                                      read_operand(a), beta, strided_operand(c), static_cast<int>(batch));
        return;
      }
    }
    if constexpr (!portable_storage<T>) {  // (those returned above)
      for (index_t i = 0; i < batch; ++i) {
        const auto ai = Kokkos::subview(a, Kokkos::ALL, Kokkos::ALL, i);
        const auto ci = Kokkos::subview(c, Kokkos::ALL, Kokkos::ALL, i);
        if constexpr (has_syrk<Exec, T>())
          syrk_lower(space, no_trans ? "N" : "T", alpha, ai, beta, ci);
        else
          sym_lower_by_panels(space, no_trans, alpha, Mat2<T, Mem>(ai), beta, Mat2<T, Mem>(ci));
      }
      fill_upper(space, c);
      return;
    }
  }
  batched_gemm(space, no_trans ? "N" : "T", no_trans ? "T" : "N", alpha, a, a, beta, c);
}

/// C[b] ← alpha A[b]² + beta C[b] for exactly symmetric A[b]: A² = A Aᵀ by the symmetric kernel
/// (with `symmetric`, where sym_product_on_one_triangle says so; see batched_sym_product), else
/// one GEMM(N, N) per matrix or batch.
template <class Exec, class T, class Mem>
void batched_square(const Exec& space, bool symmetric, scalar_t<T> alpha, const Mat3<T, Mem>& a,
                    scalar_t<T> beta, const Mat3<T, Mem>& c) {
  const index_t n = c.extent(0);
  if (symmetric && sym_product_on_one_triangle<Exec, T>(c.extent(2), n, n))
    batched_sym_product(space, true, "N", alpha, a, beta, c);
  else
    batched_gemm(space, "N", "N", alpha, a, a, beta, c);
}

}  // namespace schatten::kokkos::detail
