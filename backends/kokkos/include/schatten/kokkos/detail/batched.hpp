// SPDX-License-Identifier: Apache-2.0
/// \file
/// Batched dense primitives the kernels are written with: GEMM through KokkosBlas, and the
/// element-wise loops around it. Matrices of a batch are stored as one column-major View
/// (rows, cols, batch) so every matrix is contiguous and BLAS-ready.
#pragma once

#include <Kokkos_Core.hpp>

#include "schatten/core/types.hpp"
#include "schatten/kokkos/detail/compat.hpp"
#include "schatten/kokkos/workspace.hpp"

namespace schatten::kokkos::detail {

/// Working matrices of a batch: element (i, j) of matrix b is m(i, j, b).
template <class T, class Mem>
using Mat3 = Kokkos::View<T***, Kokkos::LayoutLeft, Mem, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;

/// User matrices of a batch with arbitrary strides: element (i, j) of matrix b is s(b, i, j).
template <class T, class Mem>
using Strided3 =
    Kokkos::View<T***, Kokkos::LayoutStride, Mem, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;

/// Carves a rows × cols × batch working array out of an arena (null data when only counting).
template <class T, class Mem>
Mat3<T, Mem> carve(Arena& arena, index_t rows, index_t cols, index_t batch) {
  T* p = arena.take<T>(static_cast<std::size_t>(rows * cols * batch));
  return Mat3<T, Mem>(p, rows, cols, batch);
}

/// Iteration policies. Tiles of 32 × 32 keep both a strided read and a contiguous write in
/// cache when a loop transposes (tunable; chosen for 64-byte lines and float/double).
template <class Exec>
using Policy2 = Kokkos::MDRangePolicy<Exec, Kokkos::Rank<2, Kokkos::Iterate::Left, Kokkos::Iterate::Left>,
                                      Kokkos::IndexType<index_t>>;
template <class Exec>
using Policy3 = Kokkos::MDRangePolicy<Exec, Kokkos::Rank<3, Kokkos::Iterate::Left, Kokkos::Iterate::Left>,
                                      Kokkos::IndexType<index_t>>;

template <class Exec>
Policy2<Exec> policy2(const Exec& space, index_t n0, index_t n1) {
  return Policy2<Exec>(space, {0, 0}, {n0, n1}, {32, 32});
}
template <class Exec>
Policy3<Exec> policy3(const Exec& space, index_t n0, index_t n1, index_t n2) {
  return Policy3<Exec>(space, {0, 0, 0}, {n0, n1, n2}, {32, 32, 1});
}

/// C[b] = alpha op(A[b]) op(B[b]) + beta C[b] for every b. One BLAS call per matrix.
// TODO(#7): one strided-batched GEMM call on GPUs (cuBLAS / rocBLAS) through the vendor layer.
template <class Exec, class T, class Mem>
void batched_gemm(const Exec& space, const char* trans_a, const char* trans_b, T alpha,
                  const Mat3<T, Mem>& a, const Mat3<T, Mem>& b, T beta, const Mat3<T, Mem>& c) {
  for (index_t i = 0; i < static_cast<index_t>(c.extent(2)); ++i) {
    gemm(space, trans_a, trans_b, alpha, Kokkos::subview(a, Kokkos::ALL, Kokkos::ALL, i),
         Kokkos::subview(b, Kokkos::ALL, Kokkos::ALL, i), beta,
         Kokkos::subview(c, Kokkos::ALL, Kokkos::ALL, i));
  }
}

/// C ← [C] + beta·A + alpha·I on square matrices (the bracket when `accumulate`).
/// One pass over C and A; with accumulate = false C's old contents are not read.
template <class Exec, class T, class Mem>
void add_scaled_identity(const Exec& space, const Mat3<T, Mem>& c, bool accumulate, T beta,
                         const Mat3<T, Mem>& a, T alpha) {
  Kokkos::parallel_for(
      "schatten::add_scaled_identity", policy3(space, c.extent(0), c.extent(1), c.extent(2)),
      KOKKOS_LAMBDA(index_t i, index_t j, index_t b) {
        T v = beta * a(i, j, b);
        if (i == j) v += alpha;
        c(i, j, b) = accumulate ? c(i, j, b) + v : v;
      });
}

/// C ← (C + Cᵀ)/2 for every square matrix of the batch.
template <class Exec, class T, class Mem>
void symmetrize(const Exec& space, const Mat3<T, Mem>& c) {
  Kokkos::parallel_for(
      "schatten::symmetrize", policy3(space, c.extent(0), c.extent(1), c.extent(2)),
      KOKKOS_LAMBDA(index_t i, index_t j, index_t b) {
        if (j <= i) return;
        const T v = (c(i, j, b) + c(j, i, b)) / T(2);
        c(i, j, b) = v;
        c(j, i, b) = v;
      });
}

}  // namespace schatten::kokkos::detail
