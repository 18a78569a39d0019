// SPDX-License-Identifier: Apache-2.0
/// \file
/// dense_svd(): the single instantiation of Eigen::BDCSVD<Eigen::MatrixXd> (dense_svd.hpp).
#include "reference/dense_svd.hpp"

#include <Eigen/SVD>

namespace schatten::detail {

DenseSvd dense_svd(const Eigen::MatrixXd& a, bool vectors) {
  const unsigned flags = vectors ? (Eigen::ComputeThinU | Eigen::ComputeThinV) : 0u;
  const Eigen::BDCSVD<Eigen::MatrixXd> svd(a, flags);
  DenseSvd out;
  out.sigma = svd.singularValues();
  if (vectors) {
    out.u = svd.matrixU();
    out.v = svd.matrixV();
  }
  return out;
}

}  // namespace schatten::detail
