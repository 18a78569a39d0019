// SPDX-License-Identifier: Apache-2.0
/// \file
/// dense_svd(): the single instantiation of Eigen's BDCSVD<MatrixXd> (dense_svd.hpp), with the
/// check of its result and the two fallbacks.
#include "reference/dense_svd.hpp"

#include <Eigen/SVD>

#include <algorithm>
#include <limits>

namespace schatten::detail {
namespace {

constexpr unsigned kThin = Eigen::ComputeThinU | Eigen::ComputeThinV;

/// The check of dense_svd.hpp: residual on the side whose factor is square, and both factors
/// orthonormal, all to τ = 100·ε·max(m, n). NaN anywhere fails it.
bool passes(const Eigen::MatrixXd& a, const DenseSvd& s) {
  const Eigen::Index m = a.rows(), n = a.cols(), r = s.sigma.size();
  const double tau = 100.0 * std::numeric_limits<double>::epsilon() * static_cast<double>(std::max(m, n));
  const double residual = m >= n ? (a * s.v - s.u * s.sigma.asDiagonal()).norm()
                                 : (s.u.transpose() * a - s.sigma.asDiagonal() * s.v.transpose()).norm();
  const Eigen::MatrixXd eye = Eigen::MatrixXd::Identity(r, r);
  return residual <= tau * a.norm() && (s.u.transpose() * s.u - eye).norm() <= tau &&
         (s.v.transpose() * s.v - eye).norm() <= tau;
}

template <class Svd>
DenseSvd take(const Svd& svd, SvdPath path) {
  DenseSvd out;
  out.sigma = svd.singularValues();
  out.u = svd.matrixU();
  out.v = svd.matrixV();
  out.path = path;
  return out;
}

}  // namespace

DenseSvd dense_svd(const Eigen::MatrixXd& a, bool vectors, SvdPath first) {
  DenseSvd out;
  bool done = false;
  if (first == SvdPath::divide_and_conquer) {
    out = take(Eigen::BDCSVD<Eigen::MatrixXd>(a, kThin), SvdPath::divide_and_conquer);
    done = passes(a, out);
  }
  if (!done && first != SvdPath::jacobi) {
    out = take(Eigen::BDCSVD<Eigen::MatrixXd>(a.rowwise().reverse(), kThin), SvdPath::reversed_columns);
    out.v = out.v.colwise().reverse().eval();  // rows of V′ back in a's column order
    done = passes(a, out);
  }
  if (!done) out = take(Eigen::JacobiSVD<Eigen::MatrixXd>(a, kThin), SvdPath::jacobi);
  if (!vectors) {
    out.u.resize(0, 0);
    out.v.resize(0, 0);
  }
  return out;
}

}  // namespace schatten::detail
