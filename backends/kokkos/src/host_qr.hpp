// SPDX-License-Identifier: Apache-2.0
/// \file
/// Private: the thin Householder QR of a tall device panel, on the host in double (Eigen). The
/// range finder of randomized.cpp orthonormalises its m × l panels (l ≤ m, l small) with it; the
/// power iteration of low_rank.cpp uses the in-place variant that drops columns at a floor.
#pragma once

#include <Eigen/Dense>

#include <Kokkos_Core.hpp>

#include <cmath>
#include <utility>
#include <vector>

#include "schatten/core/types.hpp"
#include "schatten/kokkos/detail/memory.hpp"

namespace schatten::kokkos::detail {

/// The columns of a contiguous rank-2 LayoutLeft view `a` (rows ≥ cols, default execution
/// space) in double on the host, and the host access they came through (HostMatrix, memory.hpp:
/// `a` itself where the host reads it; written back by store()).
template <class View>
struct HostPanel {
  HostMatrix<View> h;
  Eigen::MatrixXd m;
  explicit HostPanel(const View& a)
      : h(a, true), m(static_cast<index_t>(a.extent(0)), static_cast<index_t>(a.extent(1))) {
    for (index_t j = 0; j < m.cols(); ++j)
      for (index_t i = 0; i < m.rows(); ++i)
        m(i, j) = static_cast<double>(h.view(i, j));
  }
  /// a ← q (rows × cols), rounded to a's type.
  void store(const View& a, const Eigen::MatrixXd& q) {
    using T = typename View::non_const_value_type;
    for (index_t j = 0; j < q.cols(); ++j)
      for (index_t i = 0; i < q.rows(); ++i)
        h.view(i, j) = static_cast<T>(q(i, j));
    h.store(a);
  }
};

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
  HostPanel<View> panel(a);
  const index_t r = panel.m.rows(), l = panel.m.cols();
  const Eigen::HouseholderQR<Eigen::MatrixXd> qr(panel.m);
  panel.store(a, qr.householderQ() * Eigen::MatrixXd::Identity(r, l));
  std::vector<double> diag(static_cast<std::size_t>(l));
  for (index_t j = 0; j < l; ++j)
    diag[static_cast<std::size_t>(j)] = std::abs(qr.matrixQR()(j, j));
  return diag;
}

/// The thin QR, in place, of the rows × cols column-major panel `a` (double, contiguous,
/// rows ≥ cols), whose columns may be dropped (`limit` and `keep`: one entry per column): column
/// j is dropped when `keep[j]` is 0 on entry, or when the norm of its part orthogonal to the kept
/// columns before it (|R_jj|) is at most its bound
///   limit[j] + Σ_{i kept, i < j} |R_ij|·limit[i]/|R_ii|,
/// where limit[i] is the size the caller allows rounding in column i. The sum is what the kept
/// columns' own rounding can leak into column j: a kept column i is tilted from its exact direction
/// by about limit[i]/|R_ii|, and taking it out of column j leaves |R_ij| times that tilt behind, in
/// a direction that is not in the exact columns' span. On return a dropped column of `a` is zero
/// and `keep[j]` 0, and the kept columns hold the Q of the thin QR of the kept columns alone, with
/// the signs that make R's diagonal positive (the unique thin QR, so that the Cholesky QR of
/// low_rank.cpp gives the same Q to rounding), so a later column is orthogonalised against the kept
/// columns only. (Dropping column j after an ordinary QR would leave the later columns orthogonal
/// to its direction, which may hold a real part of the panel's range, just too little of it in
/// column j: the kept basis would then miss that part.) Q is orthonormal to double rounding
/// whatever the panel's conditioning; with every limit 0 and every column kept it is the thin QR's
/// Q with R_jj > 0 (Householder's R_jj = β_j, whose sign is −sign of the column's leading entry, is
/// made positive by negating Q's column j: Q R = (Q S)(S R), S = diag(±1)).
///
/// Method: unblocked Householder, right-looking (each new reflector is applied at once to the
/// columns after its own, with Eigen's reflector kernels), the kept columns' reflectors moved
/// left over the dropped ones as they are made; then Q formed in place from them, last reflector
/// first (LAPACK's dorg2r), its columns with β < 0 negated (the sign of β rides on the sign bit of
/// the reflector's `tilt`, which is otherwise ≥ 0), and the kept columns moved back to their
/// places. It allocates nothing: `tau`, `tilt` and `work` are `cols` doubles each of the caller's
/// (the low-rank step's host scratch). Cost: about 2·rows·kept² flops for the QR and as many for Q,
/// at the speed of matrix-vector products (Eigen's blocked QR is faster on large panels: against
/// its QR and Q together, 0.7 to 2.9 times its time from 1024 × 64 to 4096 × 1024, 1.5 at 3072 ×
/// 768; a panel with every other column dropped, 3072 × 768, 0.71 s; 2-core machine, g++ -O2,
/// 2026-12-04). It replaced a blocked QR followed, when a column before the last was dropped, by a
/// left-looking redo, which Eigen's temporaries made allocate per call.
inline void householder_dropping(double* data, index_t rows, index_t cols, const double* limit, char* keep,
                                 double* tau, double* tilt, double* work) {
  Eigen::Map<Eigen::MatrixXd> a(data, rows, cols);
  const index_t r = rows, l = cols;
  index_t c = 0;  // reflectors so far, in columns [0, c)
  for (index_t j = 0; j < l; ++j) {
    auto col = a.col(j);  // its R coefficients on the kept columns in rows [0, c), the rest below
    const double norm = col.tail(r - c).norm();
    double bound = limit[j];
    for (index_t i = 0; i < c; ++i)
      bound += std::abs(col(i) * tilt[i]);
    if (!(keep[j] && norm > bound)) {
      keep[j] = 0;
      continue;
    }
    if (c != j) a.col(c) = a.col(j);  // over a dropped column
    double beta = 0.0;
    a.col(c).tail(r - c).makeHouseholderInPlace(tau[c], beta);  // R_cc = β
    tilt[c] = std::copysign(limit[j] / norm, beta);             // (the sign: R's diagonal below)
    if (j + 1 < l)
      a.block(c, j + 1, r - c, l - j - 1).applyHouseholderOnTheLeft(a.col(c).tail(r - c - 1), tau[c], work);
    ++c;
  }
  // Q's first c columns: H_0 ⋯ H_{c−1} applied to the identity's, in place, last reflector first.
  for (index_t i = c; i-- > 0;) {
    if (i + 1 < c)
      a.block(i, i + 1, r - i, c - i - 1).applyHouseholderOnTheLeft(a.col(i).tail(r - i - 1), tau[i], work);
    a.col(i).tail(r - i - 1) *= -tau[i];
    a(i, i) = 1.0 - tau[i];
    a.col(i).head(i).setZero();
  }
  for (index_t i = 0; i < c; ++i)  // R_ii = β_i < 0: negate Q's column i (and so R's row i)
    if (std::signbit(tilt[i])) a.col(i) *= -1.0;
  // Kept column j takes Q's column (kept columns before j); from the right, so that no column
  // is overwritten before it moves.
  for (index_t j = l; j-- > 0;) {
    if (keep[j]) {
      if (--c != j) a.col(j) = a.col(c);
    } else {
      a.col(j).setZero();
    }
  }
}

}  // namespace schatten::kokkos::detail
