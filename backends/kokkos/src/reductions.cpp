// SPDX-License-Identifier: Apache-2.0
/// \file
/// Plain-array entry points of the reductions (frobenius_inner) on the default execution space.
#include <cmath>
#include <exception>
#include <new>
#include <vector>

#include "plain_io.hpp"
#include "schatten/kernels/inner_product.hpp"
#include "schatten/kokkos/detail/batched.hpp"

namespace schatten {
namespace kokkos::detail {
namespace {

/// Σ (a_ij·sa)(b_ij·sb) of matrix k, in double (one reduction, waited for). Named functions
/// here and below, not lambdas: nvcc does not allow device lambdas inside lambdas, nor inside
/// generic ones.
template <class V>
double scaled_inner(const V& va, const V& vb, index_t k, bool cols_contiguous, double sa, double sb) {
  double s = 0.0;
  reduce_matrix(
      DefaultExec(), "schatten::frobenius_inner", va.extent(1), va.extent(2), cols_contiguous,
      KOKKOS_LAMBDA(index_t i, index_t j, double& acc) {
        acc += (static_cast<double>(va(k, i, j)) * sa) * (static_cast<double>(vb(k, i, j)) * sb);
      },
      Kokkos::Sum<double>(s));
  return s;
}

/// max |v_ij| of matrix k in double, +∞ for a NaN or ±Inf entry (one reduction, waited for).
template <class V>
double largest_magnitude(const V& v, index_t k, bool cols_contiguous) {
  double m = 0.0;
  reduce_matrix(
      DefaultExec(), "schatten::frobenius_inner_max", v.extent(1), v.extent(2), cols_contiguous,
      KOKKOS_LAMBDA(index_t i, index_t j, double& acc) { acc = kmax(acc, abs_or_inf(v(k, i, j))); },
      Kokkos::Max<double>(m));
  return m;
}

/// The sums of a validated call. A named function, not a lambda: nvcc does not allow device
/// lambdas inside lambdas.
template <class T>
Status inner_sums(const BatchedMatrixRef<const T>& a, const BatchedMatrixRef<const T>& b, double* out,
                  schatten::Workspace* workspace) {
  CallWorkspace ws(workspace);
  DeviceIO<T> ia(a, ws.staging()), ib(b, ws.staging());
  const auto va = ia.input();
  const auto vb = ib.input();
  const bool cols_contiguous = va.stride(2) == 1 && vb.stride(2) == 1;
  std::vector<double> sums(static_cast<std::size_t>(a.batch), 0.0);
  for (index_t k = 0; k < a.batch; ++k) {
    double s = scaled_inner(va, vb, k, cols_contiguous, 1.0, 1.0);
    if (!std::isfinite(s)) {
      // A NaN/Inf entry (0·Inf = NaN included), or finite double entries whose products or
      // partial sums overflow (1e200·1e200) while ⟨A, B⟩ itself may be representable (0 for
      // 1e200·[1, 1] and 1e200·[1, −1]). Only then: one max pass over each, and the sum again
      // of 2^−ea·A and 2^−eb·B (exact powers of two; max|a|·2^−ea ∈ [½, 1), so no product or
      // partial sum exceeds rows·cols), ⟨A, B⟩ = 2^(ea+eb)·that, out_of_range beyond DBL_MAX.
      const double ma = largest_magnitude(va, k, cols_contiguous),
                   mb = largest_magnitude(vb, k, cols_contiguous);
      if (!std::isfinite(ma) || !std::isfinite(mb)) return Status::non_finite_input;
      int ea = 0, eb = 0;
      std::frexp(ma, &ea);
      std::frexp(mb, &eb);
      s = std::ldexp(scaled_inner(va, vb, k, cols_contiguous, std::ldexp(1.0, -ea), std::ldexp(1.0, -eb)),
                     ea + eb);
      if (!std::isfinite(s)) return Status::out_of_range;
    }
    sums[static_cast<std::size_t>(k)] = s;
  }
  for (std::size_t k = 0; k < sums.size(); ++k)
    out[k] = sums[k];
  return Status::ok;
}

template <class T>
Status inner_plain(const BatchedMatrixRef<const T>& a, const BatchedMatrixRef<const T>& b, double* out,
                   schatten::Workspace* workspace) {
  schatten::detail::ensure_runtime();
  if (check_plain(a, false) || check_plain(b, false)) return Status::invalid_argument;
  if (a.batch != b.batch || a.rows != b.rows || a.cols != b.cols) return Status::invalid_argument;
  if (a.batch > 0 && out == nullptr) return Status::invalid_argument;
  return status_guard([&] { return inner_sums<T>(a, b, out, workspace); });
}

}  // namespace
}  // namespace kokkos::detail

Status frobenius_inner(BatchedMatrixRef<const float> a, BatchedMatrixRef<const float> b, double* out,
                       Workspace* workspace) {
  return kokkos::detail::inner_plain<float>(a, b, out, workspace);
}
Status frobenius_inner(BatchedMatrixRef<const double> a, BatchedMatrixRef<const double> b, double* out,
                       Workspace* workspace) {
  return kokkos::detail::inner_plain<double>(a, b, out, workspace);
}

}  // namespace schatten
