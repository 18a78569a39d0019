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
    double s = 0.0;
    reduce_matrix(
        DefaultExec(), "schatten::frobenius_inner", a.rows, a.cols, cols_contiguous,
        KOKKOS_LAMBDA(index_t i, index_t j, double& acc) {
          acc += static_cast<double>(va(k, i, j)) * static_cast<double>(vb(k, i, j));
        },
        Kokkos::Sum<double>(s));
    // A NaN/Inf entry makes the sum NaN or ±Inf (0·Inf = NaN included).
    if (!std::isfinite(s)) return Status::non_finite_input;
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
  if (schatten::detail::check_layout(a, false) || schatten::detail::check_layout(b, false))
    return Status::invalid_argument;
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
