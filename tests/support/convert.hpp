// SPDX-License-Identifier: Apache-2.0
/// \file
/// Moving test matrices between Eigen (double, the oracle side) and plain row-major arrays.
#pragma once

#include <Eigen/Dense>

#include <vector>

#include "schatten/core/types.hpp"

namespace schatten::test {

template <class T>
std::vector<T> to_row_major(const Eigen::MatrixXd& m) {
  std::vector<T> v(static_cast<std::size_t>(m.size()));
  for (Eigen::Index i = 0; i < m.rows(); ++i)
    for (Eigen::Index j = 0; j < m.cols(); ++j)
      v[static_cast<std::size_t>(i * m.cols() + j)] = static_cast<T>(m(i, j));
  return v;
}

template <class T>
Eigen::MatrixXd from_row_major(const T* p, index_t rows, index_t cols) {
  Eigen::MatrixXd m(rows, cols);
  for (index_t i = 0; i < rows; ++i)
    for (index_t j = 0; j < cols; ++j)
      m(i, j) = static_cast<double>(p[i * cols + j]);
  return m;
}

/// Round a double matrix to T and back: the exact input a T kernel sees.
template <class T>
Eigen::MatrixXd rounded(const Eigen::MatrixXd& m) {
  return m.unaryExpr([](double x) { return static_cast<double>(static_cast<T>(x)); });
}

}  // namespace schatten::test
