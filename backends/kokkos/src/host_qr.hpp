// SPDX-License-Identifier: Apache-2.0
/// \file
/// Private: the thin Householder QR of a tall device panel, on the host in double (Eigen). The
/// range finder of randomized.cpp orthonormalises its m × l panels (l ≤ m, l small) with it, the
/// power iteration of low_rank.cpp with its variant that drops columns at a floor.
#pragma once

#include <Eigen/Dense>

#include <Kokkos_Core.hpp>

#include <cmath>
#include <utility>
#include <vector>

#include "schatten/core/types.hpp"

namespace schatten::kokkos::detail {

/// The columns of a rank-2 LayoutLeft view `a` (rows ≥ cols, default execution space) in double
/// on the host, and the host mirror they came through (written back by store()).
template <class View>
struct HostPanel {
  decltype(Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), std::declval<const View&>())) h;
  Eigen::MatrixXd m;
  explicit HostPanel(const View& a)
      : h(Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), a)),
        m(static_cast<index_t>(a.extent(0)), static_cast<index_t>(a.extent(1))) {
    for (index_t j = 0; j < m.cols(); ++j)
      for (index_t i = 0; i < m.rows(); ++i)
        m(i, j) = static_cast<double>(h(i, j));
  }
  /// a ← q (rows × cols), rounded to a's type.
  void store(const View& a, const Eigen::MatrixXd& q) {
    using T = typename View::non_const_value_type;
    for (index_t j = 0; j < q.cols(); ++j)
      for (index_t i = 0; i < q.rows(); ++i)
        h(i, j) = static_cast<T>(q(i, j));
    Kokkos::deep_copy(a, h);
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

/// orthonormalise() for a panel whose columns may be dropped: column j is dropped when `keep[j]`
/// is 0 on entry, or when the norm of its part orthogonal to the kept columns before it is at
/// most its bound
///   limit[j] + Σ_{i kept, i < j} |R_ij|·limit[i]/|R_ii|,
/// where limit[i] is the size the caller allows rounding in column i. The sum is what the kept
/// columns' own rounding can leak into column j: a kept column i is tilted from its exact
/// direction by about limit[i]/|R_ii|, and taking it out of column j leaves |R_ij| times that
/// tilt behind, in a direction that is not in the exact columns' span. A dropped column of `a`
/// becomes zero and `keep[j]` 0; the kept columns get the Q of the thin QR of the kept columns
/// alone (up to signs), so a later column is orthogonalised against the kept columns only.
/// (Dropping column j after an ordinary QR would leave the later columns orthogonal to its
/// direction, which may hold a real part of the panel's range, just too little of it in column
/// j: the kept basis would then miss that part.) Returns those norms (|R_jj| of that QR for a
/// kept column).
///
/// Cost: orthonormalise()'s Householder QR (Eigen's, blocked) and O(cols²) for the bounds; that
/// QR is the answer when no column is dropped or only the last. Otherwise the QR is redone
/// left-looking, one column at a time, skipping the dropped ones (Eigen's unblocked reflector
/// kernels): about 4·rows·(kept columns before j) flops for column j and 2·rows·kept² for Q.
/// Cheap when few columns are kept; at worst (an early drop, every other column kept) the whole
/// call took 1.5 to 2.8 times the blocked QR alone (1024 × 64 to 8192 × 512, 2026-12-02).
template <class View>
std::vector<double> orthonormalise_dropping(const View& a, const std::vector<double>& limit,
                                            std::vector<char>& keep) {
  HostPanel<View> panel(a);
  Eigen::MatrixXd& m = panel.m;
  const index_t r = m.rows(), l = m.cols();
  std::vector<double> norms(static_cast<std::size_t>(l));
  std::vector<double> tilt;  // limit_i/|R_ii| of the kept columns, in order
  // Column j's bound, from its coefficients on the kept columns before it (r_of(i): R of the
  // i-th kept column and j).
  const auto bound = [&](std::size_t j, const auto& r_of) {
    double b = limit[j];
    for (std::size_t i = 0; i < tilt.size(); ++i)
      b += std::abs(r_of(static_cast<index_t>(i))) * tilt[i];
    return b;
  };
  {
    const Eigen::HouseholderQR<Eigen::MatrixXd> qr(m);
    index_t first_drop = l;
    for (index_t j = 0; j < l && first_drop == l; ++j) {
      const std::size_t jj = static_cast<std::size_t>(j);
      norms[jj] = std::abs(qr.matrixQR()(j, j));
      if (!(keep[jj] && norms[jj] > bound(jj, [&](index_t i) { return qr.matrixQR()(i, j); })))
        first_drop = j;
      else
        tilt.push_back(limit[jj] / norms[jj]);
    }
    if (first_drop >= l - 1) {  // the QR of the kept columns is this one's
      Eigen::MatrixXd q = qr.householderQ() * Eigen::MatrixXd::Identity(r, l);
      if (first_drop == l - 1) {
        q.col(l - 1).setZero();
        keep[static_cast<std::size_t>(l - 1)] = 0;
      }
      panel.store(a, q);
      return norms;
    }
  }
  tilt.clear();
  Eigen::MatrixXd reflectors(r, l);  // column c: the essential part of reflector c, below row c
  std::vector<double> tau;
  std::vector<index_t> slot(static_cast<std::size_t>(l), -1);  // kept column j → its reflector
  Eigen::VectorXd work(l);
  for (index_t j = 0; j < l; ++j) {  // in place: m's columns become R's and the reflectors' input
    const std::size_t jj = static_cast<std::size_t>(j);
    const index_t c = static_cast<index_t>(tau.size());  // reflectors so far
    auto col = m.col(j);
    for (index_t i = 0; i < c; ++i)
      col.tail(r - i).applyHouseholderOnTheLeft(reflectors.col(i).tail(r - i - 1), tau[std::size_t(i)],
                                                work.data());
    norms[jj] = col.tail(r - c).norm();
    if (!(keep[jj] && norms[jj] > bound(jj, [&](index_t i) { return col(i); }))) {
      keep[jj] = 0;
      continue;
    }
    double t = 0.0, beta = 0.0;
    Eigen::VectorXd essential(r - c - 1);
    col.tail(r - c).makeHouseholder(essential, t, beta);
    reflectors.col(c).tail(r - c - 1) = essential;
    tau.push_back(t);
    tilt.push_back(limit[jj] / norms[jj]);
    slot[jj] = c;
  }
  // Q = H_0 H_1 … H_{c−1} applied to the first c columns of the identity; a kept column j takes
  // column slot[j], a dropped one zero.
  const index_t kept = static_cast<index_t>(tau.size());
  Eigen::MatrixXd basis = Eigen::MatrixXd::Identity(r, kept);
  for (index_t i = kept; i-- > 0;)
    basis.bottomRows(r - i).applyHouseholderOnTheLeft(reflectors.col(i).tail(r - i - 1), tau[std::size_t(i)],
                                                      work.data());
  Eigen::MatrixXd q = Eigen::MatrixXd::Zero(r, l);
  for (index_t j = 0; j < l; ++j)
    if (slot[static_cast<std::size_t>(j)] >= 0) q.col(j) = basis.col(slot[static_cast<std::size_t>(j)]);
  panel.store(a, q);
  return norms;
}

}  // namespace schatten::kokkos::detail
