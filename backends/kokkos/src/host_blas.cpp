// SPDX-License-Identifier: Apache-2.0
/// \file
/// Host BLAS entries called directly: SYRK for the symmetric products of the polar iterations
/// (compat.hpp syrk_lower; Kokkos Kernels does not wrap it), GEMM and TRSM (compat.hpp gemm,
/// trsm: without Kokkos Kernels' per-call profiling label). The Fortran BLAS is the one Kokkos
/// Kernels' BLAS TPL links; LP64 integers, no hidden string lengths (one-character arguments), as
/// Kokkos Kernels declares its own BLAS entries.
#include "schatten/kokkos/detail/compat.hpp"

#if defined(SCHATTEN_HAVE_HOST_BLAS)
extern "C" {
void ssyrk_(const char* uplo, const char* trans, const int* n, const int* k, const float* alpha,
            const float* a, const int* lda, const float* beta, float* c, const int* ldc);
void dsyrk_(const char* uplo, const char* trans, const int* n, const int* k, const double* alpha,
            const double* a, const int* lda, const double* beta, double* c, const int* ldc);
void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
            const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
            const float* beta, float* c, const int* ldc);
void dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
            const double* alpha, const double* a, const int* lda, const double* b, const int* ldb,
            const double* beta, double* c, const int* ldc);
void strsm_(const char* side, const char* uplo, const char* transa, const char* diag, const int* m,
            const int* n, const float* alpha, const float* a, const int* lda, float* b, const int* ldb);
void dtrsm_(const char* side, const char* uplo, const char* transa, const char* diag, const int* m,
            const int* n, const double* alpha, const double* a, const int* lda, double* b, const int* ldb);
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

void host_gemm(const char* trans_a, const char* trans_b, int m, int n, int k, float alpha, const float* a,
               int lda, const float* b, int ldb, float beta, float* c, int ldc) {
  sgemm_(trans_a, trans_b, &m, &n, &k, &alpha, a, &lda, b, &ldb, &beta, c, &ldc);
}

void host_gemm(const char* trans_a, const char* trans_b, int m, int n, int k, double alpha, const double* a,
               int lda, const double* b, int ldb, double beta, double* c, int ldc) {
  dgemm_(trans_a, trans_b, &m, &n, &k, &alpha, a, &lda, b, &ldb, &beta, c, &ldc);
}

void host_trsm(const char* side, const char* uplo, const char* trans, const char* diag, int m, int n,
               float alpha, const float* a, int lda, float* b, int ldb) {
  strsm_(side, uplo, trans, diag, &m, &n, &alpha, a, &lda, b, &ldb);
}

void host_trsm(const char* side, const char* uplo, const char* trans, const char* diag, int m, int n,
               double alpha, const double* a, int lda, double* b, int ldb) {
  dtrsm_(side, uplo, trans, diag, &m, &n, &alpha, a, &lda, b, &ldb);
}

}  // namespace schatten::kokkos::detail
#endif
