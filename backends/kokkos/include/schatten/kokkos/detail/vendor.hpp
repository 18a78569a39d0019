// SPDX-License-Identifier: Apache-2.0
/// \file
/// The vendor layer: the calls to the vendor libraries (cuBLAS, cuSOLVER) that the library makes
/// itself rather than through Kokkos Kernels: those Kokkos Kernels has no vendor path for, and
/// those whose Kokkos Kernels path is not safe from several host threads. Everything
/// vendor-specific lives here, behind the backend's macros.
///
/// CUDA: GEMMs on 16-bit storage (bf16, fp16) with fp32 accumulation through cublasGemmEx
/// (Kokkos Kernels 4.6 has no cuBLAS path for these types). Inputs and output in the 16-bit
/// type, alpha/beta and the accumulation in fp32 (CUBLAS_COMPUTE_32F): the result is rounded to
/// 16 bits once per GEMM. Tensor cores are used by cuBLAS where the shapes allow.
/// CUDA, fp32/fp64: column-major GEMMs and TRSMs through cuBLAS here rather than through
/// Kokkos Kernels' cuBLAS path, which points one process-wide handle at the caller's stream
/// before every call: two host threads on two streams would race on it. Every cuBLAS and
/// cuSOLVER call of the library takes the handle of its own stream (cublas_handle(),
/// cusolver_handle(); queue_scratch.hpp says why), bound to the stream once. Same routines
/// and arguments as Kokkos Kernels' TPL (cublasGemmEx in fp32/fp64 compute is cublasSgemm /
/// cublasDgemm), except that Kokkos Kernels' dot-product kernel for tiny transposed products
/// (fewer than 1600 output entries) is not used. Not yet run on a GPU.
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
#include <utility>

#if defined(KOKKOS_ENABLE_CUDA)
#include <cublas_v2.h>
#include <cusolverDn.h>
#define SCHATTEN_HAVE_LOWP_GEMM 1
#define SCHATTEN_HAVE_CUDA_BLAS 1
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

/// The queue key of a CUDA execution-space instance (queue_scratch.hpp): its stream.
inline const void* queue_key(const Kokkos::Cuda& space) { return space.cuda_stream(); }

/// The stream whose queue key is `key`.
inline cudaStream_t stream_of(const void* key) { return static_cast<cudaStream_t>(const_cast<void*>(key)); }

/// The handle of `space`'s stream from a process-wide QueueHandles registry (queue_scratch.hpp
/// says why one per stream): made by `create` on the stream's first call, which binds it to that
/// stream, and destroyed by `destroy` when Kokkos finalises. One registry per instantiation.
template <class Handle, Handle (*create)(const void*), void (*destroy)(Handle)>
Handle stream_handle(const Kokkos::Cuda& space) {
  using Handles = QueueHandles<Handle>;
  static Handles& handles = []() -> Handles& {
    // Never destroyed (it would run after CUDA is torn down): the hook destroys the handles.
    auto* p = new Handles(create, destroy);
    Kokkos::push_finalize_hook([p] { p->clear(); });
    return *p;
  }();
  return handles.get(queue_key(space));
}

/// A cuBLAS handle bound to the stream whose queue key is `key` (throws on failure).
inline cublasHandle_t make_cublas_handle(const void* key) {
  cublasHandle_t h = nullptr;
  if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) throw std::runtime_error("schatten: cublasCreate failed");
  if (cublasSetStream(h, stream_of(key)) != CUBLAS_STATUS_SUCCESS) {
    cublasDestroy(h);
    throw std::runtime_error("schatten: cublasSetStream failed");
  }
  return h;
}
inline void free_cublas_handle(cublasHandle_t h) { cublasDestroy(h); }

/// The cuBLAS handle of `space`'s stream, bound to it once (cublasSetStream, never changed
/// afterwards). Each handle keeps cuBLAS's own workspace.
inline cublasHandle_t cublas_handle(const Kokkos::Cuda& space) {
  return stream_handle<cublasHandle_t, make_cublas_handle, free_cublas_handle>(space);
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
  cublasHandle_t h = cublas_handle(space);
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

/// C = alpha op(A) op(B) + beta C for column-major views (LayoutLeft) of any cublas_types type,
/// enqueued on `space`'s stream; 16-bit storage accumulates in fp32.
template <class AV, class BV, class CV>
void gemm(const Kokkos::Cuda& space, const char* trans_a, const char* trans_b,
          scalar_t<typename CV::non_const_value_type> alpha, const AV& a, const BV& b,
          scalar_t<typename CV::non_const_value_type> beta, const CV& c) {
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
  cublasHandle_t h = cublas_handle(space);
  const cublasOperation_t t = no_trans ? CUBLAS_OP_N : CUBLAS_OP_T;
  cublasStatus_t s;
  if constexpr (std::is_same<T, float>::value)
    s = cublasSsyrk(h, CUBLAS_FILL_MODE_LOWER, t, n, k, &alpha, a, lda, &beta, c, ldc);
  else
    s = cublasDsyrk(h, CUBLAS_FILL_MODE_LOWER, t, n, k, &alpha, a, lda, &beta, c, ldc);
  if (s != CUBLAS_STATUS_SUCCESS) throw std::runtime_error("schatten: cublas syrk failed");
}

/// op(A) X = alpha B (side "L") or X op(A) = alpha B (side "R") for column-major float/double,
/// B m × n overwritten with X (cublasStrsm / cublasDtrsm, BLAS's ?trsm arguments), enqueued on
/// `space`'s stream. Cost: m²n flops (side "L") or mn² (side "R").
template <class T>
void trsm(const Kokkos::Cuda& space, const char* side, const char* uplo, const char* trans, const char* diag,
          int m, int n, T alpha, const T* a, int lda, T* b, int ldb) {
  static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value,
                "cuBLAS TRSM: float or double");
  if (m == 0 || n == 0) return;
  cublasHandle_t h = cublas_handle(space);
  const cublasSideMode_t sd = (side[0] == 'L' || side[0] == 'l') ? CUBLAS_SIDE_LEFT : CUBLAS_SIDE_RIGHT;
  const cublasFillMode_t ul =
      (uplo[0] == 'L' || uplo[0] == 'l') ? CUBLAS_FILL_MODE_LOWER : CUBLAS_FILL_MODE_UPPER;
  const cublasDiagType_t dg = (diag[0] == 'U' || diag[0] == 'u') ? CUBLAS_DIAG_UNIT : CUBLAS_DIAG_NON_UNIT;
  cublasStatus_t s;
  if constexpr (std::is_same<T, float>::value)
    s = cublasStrsm(h, sd, ul, op(trans), dg, m, n, &alpha, a, lda, b, ldb);
  else
    s = cublasDtrsm(h, sd, ul, op(trans), dg, m, n, &alpha, a, lda, b, ldb);
  if (s != CUBLAS_STATUS_SUCCESS) throw std::runtime_error("schatten: cublas trsm failed");
}

/// A cuSOLVER dense handle bound to the stream whose queue key is `key` (throws on failure).
inline cusolverDnHandle_t make_cusolver_handle(const void* key) {
  cusolverDnHandle_t h = nullptr;
  if (cusolverDnCreate(&h) != CUSOLVER_STATUS_SUCCESS)
    throw std::runtime_error("schatten: cusolverDnCreate failed");
  if (cusolverDnSetStream(h, stream_of(key)) != CUSOLVER_STATUS_SUCCESS) {
    cusolverDnDestroy(h);
    throw std::runtime_error("schatten: cusolverDnSetStream failed");
  }
  return h;
}
inline void free_cusolver_handle(cusolverDnHandle_t h) { cusolverDnDestroy(h); }

/// The cuSOLVER dense handle of `space`'s stream, bound to it once, as cublas_handle().
inline cusolverDnHandle_t cusolver_handle(const Kokkos::Cuda& space) {
  return stream_handle<cusolverDnHandle_t, make_cusolver_handle, free_cusolver_handle>(space);
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

/// A Cholesky factorisation enqueued by potrf_lower(): the device address of its info word, and
/// the lease of the stream's solver scratch that holds it.
struct PotrfCall {
  int* info;
  QueueScratch<Kokkos::CudaSpace>::Lease scratch;
};

/// In-place Cholesky A = L Lᵀ of the lower triangle of an n × n column-major matrix
/// (cusolverDnSpotrf / Dpotrf, LAPACK's ?potrf semantics), enqueued on `space`'s stream. Returns
/// a device pointer to the info word, LAPACK's info (0, or j > 0 when the leading j × j minor is
/// not positive definite), with the lease of the buffer that holds it: the word is valid while
/// the lease is held, and the caller keeps it until it has enqueued its read of info (one kernel
/// on the same stream, together with its own checks), so that another host thread's call on the
/// same stream waits. Nothing is read back here. The info word and the workspace
/// (?potrf_bufferSize) live in the stream's solver scratch: allocated on the first call (and when
/// a larger n needs more), then reused without a fence, since the stream orders this call after
/// the previous user of the buffer. Cost: n³/3 flops.
template <class T>
PotrfCall potrf_lower(const Kokkos::Cuda& space, int n, T* a, int lda) {
  static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value,
                "cuSOLVER potrf: float or double");
  cusolverDnHandle_t h = cusolver_handle(space);
  int lwork = 0;
  cusolverStatus_t s;
  if constexpr (std::is_same<T, float>::value)
    s = cusolverDnSpotrf_bufferSize(h, CUBLAS_FILL_MODE_LOWER, n, a, lda, &lwork);
  else
    s = cusolverDnDpotrf_bufferSize(h, CUBLAS_FILL_MODE_LOWER, n, a, lda, &lwork);
  if (s != CUSOLVER_STATUS_SUCCESS) throw std::runtime_error("schatten: cuSOLVER potrf_bufferSize failed");
  const std::size_t work_bytes = static_cast<std::size_t>(lwork > 0 ? lwork : 1) * sizeof(T);
  auto lease =
      solver_scratch().lease(queue_key(space), solver_info_bytes + work_bytes, [&space] { space.fence(); });
  auto* base = static_cast<unsigned char*>(lease.data);
  int* info = reinterpret_cast<int*>(base);
  T* work = reinterpret_cast<T*>(base + solver_info_bytes);
  if constexpr (std::is_same<T, float>::value)
    s = cusolverDnSpotrf(h, CUBLAS_FILL_MODE_LOWER, n, a, lda, work, lwork, info);
  else
    s = cusolverDnDpotrf(h, CUBLAS_FILL_MODE_LOWER, n, a, lda, work, lwork, info);
  if (s != CUSOLVER_STATUS_SUCCESS) throw std::runtime_error("schatten: cuSOLVER potrf failed");
  return PotrfCall{info, std::move(lease)};
}

}  // namespace vendor
#endif

}  // namespace schatten::kokkos::detail
