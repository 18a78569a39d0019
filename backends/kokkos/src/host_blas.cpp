// SPDX-License-Identifier: Apache-2.0
/// \file
/// Host BLAS entries that Kokkos Kernels does not wrap: SYRK for the symmetric products of the
/// polar iterations (compat.hpp syrk_lower). The Fortran BLAS is the one Kokkos Kernels' BLAS TPL
/// links; LP64 integers, no hidden string lengths (one-character arguments), as Kokkos Kernels
/// declares its own BLAS entries.
#include "schatten/kokkos/detail/compat.hpp"

#if defined(SCHATTEN_HAVE_HOST_SYRK)
extern "C" {
void ssyrk_(const char* uplo, const char* trans, const int* n, const int* k, const float* alpha,
            const float* a, const int* lda, const float* beta, float* c, const int* ldc);
void dsyrk_(const char* uplo, const char* trans, const int* n, const int* k, const double* alpha,
            const double* a, const int* lda, const double* beta, double* c, const int* ldc);
}

namespace schatten::kokkos::detail {

void host_syrk(const char* uplo, const char* trans, int n, int k, float alpha, const float* a, int lda,
               float beta, float* c, int ldc) {
  ssyrk_(uplo, trans, &n, &k, &alpha, a, &lda, &beta, c, &ldc);
}

void host_syrk(const char* uplo, const char* trans, int n, int k, double alpha, const double* a, int lda,
               double beta, double* c, int ldc) {
  dsyrk_(uplo, trans, &n, &k, &alpha, a, &lda, &beta, c, &ldc);
}

}  // namespace schatten::kokkos::detail
#endif
