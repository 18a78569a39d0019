// SPDX-License-Identifier: Apache-2.0
/// \file
/// SVD references in double (Eigen). Eigen appears only here and in other reference/host code.
#include "schatten/reference/polar.hpp"

#include <Eigen/Dense>
#include <Eigen/SVD>
#include <cmath>
#include <limits>

namespace schatten::reference {
namespace {

template <class T>
bool to_eigen(const MatrixRef<const T>& a, Eigen::MatrixXd& m) {
  m.resize(a.rows, a.cols);
  for (index_t i = 0; i < a.rows; ++i)
    for (index_t j = 0; j < a.cols; ++j) {
      const double v = static_cast<double>(a(i, j));
      if (!std::isfinite(v)) return false;
      m(i, j) = v;
    }
  return true;
}

template <class T>
Status check(const MatrixRef<const T>& a) {
  if (a.memory != MemoryKind::host) return Status::unsupported;
  if (schatten::detail::check_layout(BatchedMatrixRef<const T>(a), false))
    return Status::invalid_argument;
  return Status::ok;
}

template <class T>
Status polar_impl(const MatrixRef<const T>& a, const MatrixRef<T>& q, double tol) {
  if (Status s = check(a); s != Status::ok) return s;
  if (Status s = check(MatrixRef<const T>(q)); s != Status::ok) return s;
  if (schatten::detail::check_layout(BatchedMatrixRef<T>(q), true) || a.rows != q.rows ||
      a.cols != q.cols)
    return Status::invalid_argument;
  if (a.empty()) return Status::ok;
  Eigen::MatrixXd m;
  if (!to_eigen(a, m)) return Status::non_finite_input;
  Eigen::BDCSVD<Eigen::MatrixXd> svd(m, Eigen::ComputeThinU | Eigen::ComputeThinV);
  const Eigen::VectorXd& s = svd.singularValues();
  // Default: numerical rank at the precision of the data (a float matrix's "zero" singular
  // values are float rounding, ~ε_float·σ_max).
  if (tol < 0) tol = static_cast<double>(std::max(a.rows, a.cols)) * std::numeric_limits<T>::epsilon();
  const double cut = tol * (s.size() ? s(0) : 0.0);
  Eigen::VectorXd sign(s.size());
  for (Eigen::Index i = 0; i < s.size(); ++i) sign(i) = s(i) > cut ? 1.0 : 0.0;
  const Eigen::MatrixXd p = svd.matrixU() * sign.asDiagonal() * svd.matrixV().transpose();
  for (index_t i = 0; i < q.rows; ++i)
    for (index_t j = 0; j < q.cols; ++j) q(i, j) = static_cast<T>(p(i, j));
  return Status::ok;
}

template <class T>
Status singular_values_impl(const MatrixRef<const T>& a, std::vector<double>& sigma) {
  if (Status s = check(a); s != Status::ok) return s;
  if (a.empty()) { sigma.clear(); return Status::ok; }
  Eigen::MatrixXd m;
  if (!to_eigen(a, m)) return Status::non_finite_input;
  Eigen::BDCSVD<Eigen::MatrixXd> svd(m);
  const Eigen::VectorXd& s = svd.singularValues();
  sigma.assign(s.data(), s.data() + s.size());
  return Status::ok;
}

}  // namespace

Status polar(MatrixRef<const double> a, MatrixRef<double> q, double tol) {
  return polar_impl(a, q, tol);
}
Status polar(MatrixRef<const float> a, MatrixRef<float> q, double tol) {
  return polar_impl(a, q, tol);
}
Status singular_values(MatrixRef<const double> a, std::vector<double>& s) {
  return singular_values_impl(a, s);
}
Status singular_values(MatrixRef<const float> a, std::vector<double>& s) {
  return singular_values_impl(a, s);
}

}  // namespace schatten::reference
