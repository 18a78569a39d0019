// SPDX-License-Identifier: Apache-2.0
/// \file
/// The few Kokkos / Kokkos Kernels API differences between 3.4 (Debian) and 4.x, in one place
/// (../shared/docs/kokkos.md, "Writing code that compiles on Kokkos 3.4 and 4.x").
#pragma once

#include <KokkosBlas3_gemm.hpp>
#include <KokkosBlas3_trsm.hpp>
#include <Kokkos_Core.hpp>

#include <cmath>
#include <limits>
#include <type_traits>

#include "schatten/kokkos/detail/vendor.hpp"

namespace schatten::kokkos::detail {

#if KOKKOS_VERSION >= 30700
namespace kmath = ::Kokkos;
#else
namespace kmath = ::Kokkos::Experimental;
#endif

/// Kokkos::min/max are absent in 3.4.
template <class T>
KOKKOS_INLINE_FUNCTION constexpr T kmax(T a, T b) {
  return a < b ? b : a;
}
template <class T>
KOKKOS_INLINE_FUNCTION constexpr T kmin(T a, T b) {
  return b < a ? b : a;
}

/// |x| as double for a finite x, +infinity for NaN and +-Inf. A Max-reduction of this value is
/// the max-abs of a finite matrix and +infinity exactly when the matrix has a non-finite entry.
template <class T>
KOKKOS_INLINE_FUNCTION double abs_or_inf(T x) {
  const double d = static_cast<double>(x);
  // __builtin_huge_val(): +infinity in host and device code (numeric_limits is host-only
  // constexpr, which nvcc warns about in device code).
  return kmath::isfinite(d) ? kmath::fabs(d) : __builtin_huge_val();
}

/// C = alpha op(A) op(B) + beta C through KokkosBlas (so BLAS / cuBLAS / rocBLAS do the work),
/// or through the vendor layer for 16-bit storage (vendor.hpp: fp32 accumulation).
/// All three views must share one layout: mixed layouts fall back to a slow native kernel.
/// Kokkos Kernels 3.4 has no execution-space argument; 4.x enqueues on `space`.
template <class Exec, class AV, class BV, class CV>
void gemm(const Exec& space, const char* trans_a, const char* trans_b,
          scalar_t<typename CV::non_const_value_type> alpha, const AV& a, const BV& b,
          scalar_t<typename CV::non_const_value_type> beta, const CV& c) {
  static_assert(std::is_same<typename AV::array_layout, typename CV::array_layout>::value &&
                    std::is_same<typename BV::array_layout, typename CV::array_layout>::value,
                "schatten: gemm operands must share one layout to reach BLAS");
  if constexpr (is_lowp<typename CV::non_const_value_type>) {
#if defined(SCHATTEN_HAVE_LOWP_GEMM)
    vendor::gemm_lowp(space, trans_a, trans_b, alpha, a, b, beta, c);
#endif
  } else {
#if KOKKOS_VERSION >= 40000
    KokkosBlas::gemm(space, trans_a, trans_b, alpha, a, b, beta, c);
#else
    (void)space;
    KokkosBlas::gemm(trans_a, trans_b, alpha, a, b, beta, c);
#endif
  }
}

/// Triangular solve with many right-hand sides through KokkosBlas (BLAS / cuBLAS trsm):
/// op(A) X = alpha B (side "L") or X op(A) = alpha B (side "R"); B is overwritten with X.
template <class Exec, class AV, class BV>
void trsm(const Exec& space, const char* side, const char* uplo, const char* trans, const char* diag,
          typename BV::const_value_type alpha, const AV& a, const BV& b) {
  static_assert(std::is_same<typename AV::array_layout, typename BV::array_layout>::value,
                "schatten: trsm operands must share one layout to reach BLAS");
#if KOKKOS_VERSION >= 40000
  KokkosBlas::trsm(space, side, uplo, trans, diag, alpha, a, b);
#else
  (void)space;
  KokkosBlas::trsm(side, uplo, trans, diag, alpha, a, b);
#endif
}

}  // namespace schatten::kokkos::detail
