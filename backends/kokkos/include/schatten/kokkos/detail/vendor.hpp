// SPDX-License-Identifier: Apache-2.0
/// \file
/// The vendor layer: the few calls that Kokkos Kernels does not route to the vendor library.
/// Everything vendor-specific lives here, behind the backend's macros.
///
/// CUDA: GEMMs on 16-bit storage (bf16, fp16) with fp32 accumulation through cublasGemmEx
/// (Kokkos Kernels 4.6 has no cuBLAS path for these types). Inputs and output in the 16-bit
/// type, alpha/beta and the accumulation in fp32 (CUBLAS_COMPUTE_32F): the result is rounded to
/// 16 bits once per GEMM. Tensor cores are used by cuBLAS where the shapes allow.
/// CUDA, every type: a batch of same-shape GEMMs in one cublasGemmStridedBatchedEx call, so that
/// a batch of small matrices costs one launch instead of one per matrix (issue #7, item 3).
/// fp32 uses CUBLAS_COMPUTE_32F (no TF32, as cublasSgemm by default), fp64 CUBLAS_COMPUTE_64F.
/// CUDA, fp32/fp64: Cholesky (cusolverDnSpotrf/Dpotrf) for QDWH's k × k factorisations, in
/// place of the blocked Kokkos Cholesky whose serial 64 × 64 diagonal blocks are launch- and
/// latency-bound on a GPU (docs/benchmarks/gpu-h200-first-cuda-build.md: QDWH 10× slower than
/// JAX at 4096², which calls cuSOLVER). Compiled with nvcc 13.0, not yet run on a GPU.
/// CUDA, fp32/fp64: SYRK (cublasSsyrk/Dsyrk) for the symmetric products X Xᵀ and A² of the polar
/// iterations (compat.hpp syrk_lower); compiled with nvcc 13.0 against Kokkos 4.6.01 (commit
/// 37630f3, docs/benchmarks/gpu-h200-first-cuda-build.md), not yet run on a GPU.
/// HIP: no vendor calls. KokkosBlas::gemm reaches rocBLAS when Kokkos Kernels was built with its
/// rocBLAS TPL; 16-bit iteration, batched GEMM and SYRK through rocBLAS (rocblas_gemm_ex,
/// rocblas_gemm_strided_batched_ex, rocblas_ssyrk) would go here and are not written: Debian
/// ships no rocBLAS to compile them against (docs/benchmarks/hip-compile.md). In their place
/// portable_gemm.hpp (a Kokkos team GEMM) runs the 16-bit iteration and batches of small
/// matrices on HIP, as it does on every build without the CUDA path.
#pragma once

#include <Kokkos_Core.hpp>

#include "schatten/kokkos/detail/queue_scratch.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <type_traits>

#if defined(KOKKOS_ENABLE_CUDA)
#include <cublas_v2.h>
#include <cusolverDn.h>
#define SCHATTEN_HAVE_LOWP_GEMM 1
#define SCHATTEN_HAVE_CUDA_POTRF 1
#define SCHATTEN_HAVE_CUDA_SYRK 1
#define SCHATTEN_HAVE_CUDA_BATCHED_GEMM 1
#endif

namespace schatten::kokkos::detail {

/// The type of the scalars (GEMM alpha/beta, element-wise coefficients) for a compute type:
/// the type itself, except for 16-bit storage types, whose arithmetic runs in float.
template <class T>
struct scalar_of {
  using type = T;
};
#if defined(SCHATTEN_HAVE_LOWP_GEMM)
template <>
struct scalar_of<Kokkos::Experimental::bhalf_t> {
  using type = float;
};
template <>
struct scalar_of<Kokkos::Experimental::half_t> {
  using type = float;
};
#endif
template <class T>
using scalar_t = typename scalar_of<T>::type;

/// True for the 16-bit storage types, whose arithmetic runs in float: Kokkos' bhalf_t / half_t
/// on CUDA (the vendor GEMM) and the software Bf16 / Fp16 everywhere (portable_gemm.hpp).
template <class T>
constexpr bool is_lowp = !std::is_same<scalar_t<T>, T>::value;

/// One column-major operand of a batch of same-shape matrices: the first matrix, its leading
/// dimension (≥ its rows) and the distance between consecutive matrices (0 for one matrix).
template <class T>
struct StridedOperand {
  T* data;
  int ld;
  std::int64_t stride;
};

/// Leading dimension of a column-major view (LayoutLeft, rank 2 or 3): the distance between its
/// columns, at least max(rows, 1) as BLAS, cuBLAS and cuSOLVER require (an empty view has stride 0).
template <class V>
int leading_dim(const V& v) {
  return static_cast<int>(std::max<std::size_t>(v.stride(1), std::max<std::size_t>(v.extent(0), 1)));
}

#if defined(SCHATTEN_HAVE_LOWP_GEMM)
namespace vendor {

/// One cuBLAS handle per process, created on first use and destroyed when Kokkos finalises.
inline cublasHandle_t cublas_handle() {
  static cublasHandle_t handle = [] {
    cublasHandle_t h = nullptr;
    if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) throw std::runtime_error("schatten: cublasCreate failed");
    Kokkos::push_finalize_hook([h] { cublasDestroy(h); });
    return h;
  }();
  return handle;
}

/// cuBLAS storage and compute types for a storage type T: 16-bit storage accumulates in fp32.
template <class T>
struct cublas_types;
template <>
struct cublas_types<float> {
  static constexpr cudaDataType_t data = CUDA_R_32F;
  static constexpr cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
};
template <>
struct cublas_types<double> {
  static constexpr cudaDataType_t data = CUDA_R_64F;
  static constexpr cublasComputeType_t compute = CUBLAS_COMPUTE_64F;
};
template <>
struct cublas_types<Kokkos::Experimental::bhalf_t> {
  static constexpr cudaDataType_t data = CUDA_R_16BF;
  static constexpr cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
};
template <>
struct cublas_types<Kokkos::Experimental::half_t> {
  static constexpr cudaDataType_t data = CUDA_R_16F;
  static constexpr cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
};

inline cublasOperation_t op(const char* t) {
  return (t[0] == 'N' || t[0] == 'n') ? CUBLAS_OP_N : CUBLAS_OP_T;
}

/// C[b] = alpha op(A[b]) op(B[b]) + beta C[b] for b < batch, C[b] m × n, enqueued on `space`'s
/// stream: cublasGemmEx for one matrix, one cublasGemmStridedBatchedEx for several. alpha and
/// beta have the compute type's precision (scalar_t<T>). Cost: 2mnk flops per matrix, one launch.
template <class T>
void gemm_strided(const Kokkos::Cuda& space, const char* trans_a, const char* trans_b, int m, int n, int k,
                  scalar_t<T> alpha, StridedOperand<const T> a, StridedOperand<const T> b, scalar_t<T> beta,
                  StridedOperand<T> c, int batch) {
  if (m == 0 || n == 0 || batch == 0) return;
  using Types = cublas_types<T>;
  cublasHandle_t h = cublas_handle();
  cublasSetStream(h, space.cuda_stream());
  const cublasStatus_t s =
      batch == 1 ? cublasGemmEx(h, op(trans_a), op(trans_b), m, n, k, &alpha, a.data, Types::data, a.ld,
                                b.data, Types::data, b.ld, &beta, c.data, Types::data, c.ld, Types::compute,
                                CUBLAS_GEMM_DEFAULT)
                 : cublasGemmStridedBatchedEx(h, op(trans_a), op(trans_b), m, n, k, &alpha, a.data,
                                              Types::data, a.ld, a.stride, b.data, Types::data, b.ld,
                                              b.stride, &beta, c.data, Types::data, c.ld, c.stride, batch,
                                              Types::compute, CUBLAS_GEMM_DEFAULT);
  if (s != CUBLAS_STATUS_SUCCESS) throw std::runtime_error("schatten: cuBLAS GEMM failed");
}

/// C = alpha op(A) op(B) + beta C for 16-bit column-major views (LayoutLeft), fp32 accumulation.
template <class AV, class BV, class CV>
void gemm_lowp(const Kokkos::Cuda& space, const char* trans_a, const char* trans_b, float alpha, const AV& a,
               const BV& b, float beta, const CV& c) {
  using T = typename CV::non_const_value_type;
  const int k = static_cast<int>(op(trans_a) == CUBLAS_OP_N ? a.extent(1) : a.extent(0));
  gemm_strided<T>(space, trans_a, trans_b, static_cast<int>(c.extent(0)), static_cast<int>(c.extent(1)), k,
                  alpha, {a.data(), leading_dim(a), 0}, {b.data(), leading_dim(b), 0}, beta,
                  {c.data(), leading_dim(c), 0}, 1);
}

/// Lower triangle of C = alpha op(A) op(A)ᵀ + beta C (cublasSsyrk / cublasDsyrk), column-major,
/// enqueued on `space`'s stream. The argument order is BLAS's ?syrk (host_blas.cpp), fed the same
/// values by compat.hpp syrk_lower. Compiled with nvcc, not yet run on a GPU.
template <class T>
void syrk_lower(const Kokkos::Cuda& space, bool no_trans, int n, int k, T alpha, const T* a, int lda, T beta,
                T* c, int ldc) {
  static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value,
                "cuBLAS SYRK: float or double");
  cublasHandle_t h = cublas_handle();
  cublasSetStream(h, space.cuda_stream());
  const cublasOperation_t t = no_trans ? CUBLAS_OP_N : CUBLAS_OP_T;
  cublasStatus_t s;
  if constexpr (std::is_same<T, float>::value)
    s = cublasSsyrk(h, CUBLAS_FILL_MODE_LOWER, t, n, k, &alpha, a, lda, &beta, c, ldc);
  else
    s = cublasDsyrk(h, CUBLAS_FILL_MODE_LOWER, t, n, k, &alpha, a, lda, &beta, c, ldc);
  if (s != CUBLAS_STATUS_SUCCESS) throw std::runtime_error("schatten: cublas syrk failed");
}

/// One cuSOLVER dense handle per process, created on first use, destroyed when Kokkos finalises.
inline cusolverDnHandle_t cusolver_handle() {
  static cusolverDnHandle_t handle = [] {
    cusolverDnHandle_t h = nullptr;
    if (cusolverDnCreate(&h) != CUSOLVER_STATUS_SUCCESS)
      throw std::runtime_error("schatten: cusolverDnCreate failed");
    Kokkos::push_finalize_hook([h] { cusolverDnDestroy(h); });
    return h;
  }();
  return handle;
}

/// The cuSOLVER scratch of every CUDA stream (queue_scratch.hpp), freed when Kokkos finalises.
inline QueueScratch<Kokkos::CudaSpace>& solver_scratch() {
  static QueueScratch<Kokkos::CudaSpace>& scratch = []() -> QueueScratch<Kokkos::CudaSpace>& {
    // Never destroyed (a View must not be freed after Kokkos::finalize): the hook empties it.
    auto* s = new QueueScratch<Kokkos::CudaSpace>(memory_label("sch::cusolver"));
    Kokkos::push_finalize_hook([s] { s->clear(); });
    return *s;
  }();
  return scratch;
}

/// Bytes before the workspace in a solver scratch buffer: the info word, padded so that the
/// workspace keeps cudaMalloc's 256-byte alignment.
inline constexpr std::size_t solver_info_bytes = 256;

/// In-place Cholesky A = L Lᵀ of the lower triangle of an n × n column-major matrix
/// (cusolverDnSpotrf / Dpotrf, LAPACK's ?potrf semantics), enqueued on `space`'s stream. Returns
/// a device pointer to the info word, LAPACK's info (0, or j > 0 when the leading j × j minor is
/// not positive definite), valid until the next solver call on the same stream; nothing is read
/// back here: the caller reads info once, in a kernel on the same stream, together with its own
/// checks. The info word and the workspace (?potrf_bufferSize) live in the stream's solver
/// scratch: allocated on the first call (and when a larger n needs more), then reused without a
/// fence, since the stream orders this call after the previous user of the buffer. Cost: n³/3
/// flops.
template <class T>
int* potrf_lower(const Kokkos::Cuda& space, int n, T* a, int lda) {
  static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value,
                "cuSOLVER potrf: float or double");
  cusolverDnHandle_t h = cusolver_handle();
  cusolverDnSetStream(h, space.cuda_stream());
  int lwork = 0;
  cusolverStatus_t s;
  if constexpr (std::is_same<T, float>::value)
    s = cusolverDnSpotrf_bufferSize(h, CUBLAS_FILL_MODE_LOWER, n, a, lda, &lwork);
  else
    s = cusolverDnDpotrf_bufferSize(h, CUBLAS_FILL_MODE_LOWER, n, a, lda, &lwork);
  if (s != CUSOLVER_STATUS_SUCCESS) throw std::runtime_error("schatten: cuSOLVER potrf_bufferSize failed");
  const std::size_t work_bytes = static_cast<std::size_t>(lwork > 0 ? lwork : 1) * sizeof(T);
  auto* base = static_cast<unsigned char*>(
      solver_scratch().get(space.cuda_stream(), solver_info_bytes + work_bytes, [&space] { space.fence(); }));
  int* info = reinterpret_cast<int*>(base);
  T* work = reinterpret_cast<T*>(base + solver_info_bytes);
  if constexpr (std::is_same<T, float>::value)
    s = cusolverDnSpotrf(h, CUBLAS_FILL_MODE_LOWER, n, a, lda, work, lwork, info);
  else
    s = cusolverDnDpotrf(h, CUBLAS_FILL_MODE_LOWER, n, a, lda, work, lwork, info);
  if (s != CUSOLVER_STATUS_SUCCESS) throw std::runtime_error("schatten: cuSOLVER potrf failed");
  return info;
}

}  // namespace vendor
#endif

}  // namespace schatten::kokkos::detail
