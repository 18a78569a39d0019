// SPDX-License-Identifier: Apache-2.0
/// \file
/// Private: the thin Householder QR of a tall device panel, on the host in double (Eigen). The
/// range finder of randomized.cpp and the power iteration of low_rank.cpp orthonormalise their
/// m × l panels (l ≤ m, l small) with it.
#pragma once

#include <Eigen/Dense>

#include <Kokkos_Core.hpp>

#include <cmath>
#include <vector>

#include "schatten/core/types.hpp"

namespace schatten::kokkos::detail {

/// Replaces the columns of `a` (a rank-2 LayoutLeft view, rows ≥ cols, on the default
/// execution space) by an orthonormal basis of their span: copy to the host, thin Householder QR
/// in double, copy back. Q is orthonormal to double rounding (then rounded to T) whatever a's
/// rank: the columns past a's numerical rank complete the basis in directions that the
/// Householder reflectors of a's rounding choose. Returns |R_jj| of a = Q R (unpivoted: |R_jj| is
/// the norm of the part of column j orthogonal to columns 0 … j−1), which tells those columns
/// apart. Cost: 2·rows·cols²·(1 − cols/(3·rows)) host flops, and rows·cols elements across the
/// bus each way on a GPU.
template <class View>
std::vector<double> orthonormalise(const View& a) {
  using T = typename View::non_const_value_type;
  auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), a);
  const index_t r = static_cast<index_t>(a.extent(0)), l = static_cast<index_t>(a.extent(1));
  Eigen::MatrixXd m(r, l);
  for (index_t j = 0; j < l; ++j)
    for (index_t i = 0; i < r; ++i)
      m(i, j) = static_cast<double>(h(i, j));
  Eigen::HouseholderQR<Eigen::MatrixXd> qr(m);
  const Eigen::MatrixXd q = qr.householderQ() * Eigen::MatrixXd::Identity(r, l);
  for (index_t j = 0; j < l; ++j)
    for (index_t i = 0; i < r; ++i)
      h(i, j) = static_cast<T>(q(i, j));
  Kokkos::deep_copy(a, h);
  std::vector<double> diag(static_cast<std::size_t>(l));
  for (index_t j = 0; j < l; ++j)
    diag[static_cast<std::size_t>(j)] = std::abs(qr.matrixQR()(j, j));
  return diag;
}

}  // namespace schatten::kokkos::detail
