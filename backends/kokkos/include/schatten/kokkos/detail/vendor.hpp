// SPDX-License-Identifier: Apache-2.0
/// \file
/// The vendor layer: the few calls that Kokkos Kernels does not route to the vendor library.
/// Everything vendor-specific lives here, behind the backend's macros.
///
/// CUDA: GEMMs on 16-bit storage (bf16, fp16) with fp32 accumulation through cublasGemmEx
/// (Kokkos Kernels 4.6 has no cuBLAS path for these types). Inputs and output in the 16-bit
/// type, alpha/beta and the accumulation in fp32 (CUBLAS_COMPUTE_32F): the result is rounded to
/// 16 bits once per GEMM. Tensor cores are used by cuBLAS where the shapes allow.
/// CUDA, fp32/fp64: SYRK (cublasSsyrk/Dsyrk) for the symmetric products X Xᵀ and A² of the polar
/// iterations (compat.hpp syrk_lower); compiled with nvcc 13.0 against Kokkos 4.6.01 (commit
/// 37630f3, docs/benchmarks/gpu-h200-first-cuda-build.md), not yet run on a GPU.
/// HIP (rocblas_gemm_ex, rocblas_ssyrk) would go here as well; it is not written yet (issue #7).
#pragma once

#include <Kokkos_Core.hpp>

#include <stdexcept>
#include <type_traits>

#if defined(KOKKOS_ENABLE_CUDA)
#include <cublas_v2.h>
#define SCHATTEN_HAVE_LOWP_GEMM 1
#define SCHATTEN_HAVE_CUDA_SYRK 1
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

/// True for the 16-bit storage types that go through the vendor GEMM.
template <class T>
constexpr bool is_lowp = !std::is_same<scalar_t<T>, T>::value;

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

template <class T>
constexpr cudaDataType_t cuda_type() {
  return std::is_same<T, Kokkos::Experimental::bhalf_t>::value ? CUDA_R_16BF : CUDA_R_16F;
}

inline cublasOperation_t op(const char* t) {
  return (t[0] == 'N' || t[0] == 'n') ? CUBLAS_OP_N : CUBLAS_OP_T;
}

/// C = alpha op(A) op(B) + beta C, column-major 16-bit views (LayoutLeft), fp32 accumulation,
/// enqueued on `space`'s stream.
template <class AV, class BV, class CV>
void gemm_lowp(const Kokkos::Cuda& space, const char* trans_a, const char* trans_b, float alpha, const AV& a,
               const BV& b, float beta, const CV& c) {
  using T = typename CV::non_const_value_type;
  const int m = static_cast<int>(c.extent(0)), n = static_cast<int>(c.extent(1));
  const int k = static_cast<int>(op(trans_a) == CUBLAS_OP_N ? a.extent(1) : a.extent(0));
  if (m == 0 || n == 0) return;
  auto ld = [](const auto& v) { return static_cast<int>(v.stride(1) > 0 ? v.stride(1) : 1); };
  cublasHandle_t h = cublas_handle();
  cublasSetStream(h, space.cuda_stream());
  const cublasStatus_t s = cublasGemmEx(
      h, op(trans_a), op(trans_b), m, n, k, &alpha, a.data(), cuda_type<T>(), ld(a), b.data(), cuda_type<T>(),
      ld(b), &beta, c.data(), cuda_type<T>(), ld(c), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  if (s != CUBLAS_STATUS_SUCCESS) throw std::runtime_error("schatten: cublasGemmEx failed");
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

}  // namespace vendor
#endif

}  // namespace schatten::kokkos::detail
