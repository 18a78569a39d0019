// SPDX-License-Identifier: Apache-2.0
/// \file
/// How closely a batched call must reproduce separate calls, per build.
///
/// Host builds run a batch as the per-matrix BLAS calls of separate calls, so the results are
/// bit for bit equal. On CUDA a batch of several matrices is one strided-batched cuBLAS GEMM
/// (backends/kokkos/.../vendor.hpp), and cuBLAS may pick another kernel, with another summation
/// order, than for one matrix. On other devices (HIP) a batch of small matrices is one
/// portable_gemm launch (portable_gemm.hpp) where one matrix is a Kokkos Kernels GEMM. The
/// results then agree only to rounding (docs/kernels/polar.md, "Determinism").
#pragma once

#include <Kokkos_Core.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <type_traits>

namespace schatten::test {

/// True where a batch gives bit for bit the results of separate calls (see the file comment).
inline bool batches_bitwise() {
  return std::is_same<Kokkos::DefaultExecutionSpace::memory_space, Kokkos::HostSpace>::value;
}

/// The batched values `got` against the separate-call values `want`, n of each: bit for bit
/// where batches_bitwise(), else ‖got − want‖_F ≤ rel · ‖want‖_F, with `rel` a relative rounding
/// bound that the caller takes from the rounding analysis of its kernel (tolerances.hpp). A NaN
/// on either side never agrees.
template <class T>
bool agree_as_batch(const T* got, const T* want, std::size_t n, double rel) {
  if (batches_bitwise()) return std::equal(got, got + n, want);
  double diff2 = 0.0, norm2 = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    const double g = static_cast<double>(got[i]), w = static_cast<double>(want[i]);
    if (std::isnan(g) || std::isnan(w)) return false;
    diff2 += (g - w) * (g - w);
    norm2 += w * w;
  }
  return std::sqrt(diff2) <= rel * std::sqrt(norm2);
}

}  // namespace schatten::test
