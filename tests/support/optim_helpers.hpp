// SPDX-License-Identifier: Apache-2.0
/// \file
/// Helpers of the optimizer suites: double matrices for the oracles, float buffers for the
/// rules, running a rule over a gradient sequence, and the error measure of a trajectory.
#pragma once

#include <Eigen/Dense>

#include <cstdint>
#include <vector>

#include "schatten/core/random.hpp"
#include "schatten/optim/rule.hpp"
#include "support/seed.hpp"

namespace schatten::test {

using Mat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

inline Mat gaussian_mat(index_t r, index_t c, std::uint64_t seed, double scale = 1.0) {
  Rng rng(seed);
  Mat m(r, c);
  for (index_t i = 0; i < r; ++i)
    for (index_t j = 0; j < c; ++j)
      m(i, j) = scale * rng.normal();
  return m;
}
inline std::vector<float> to_float_buffer(const Mat& m) {
  std::vector<float> v(static_cast<std::size_t>(m.size()));
  for (index_t i = 0; i < m.rows(); ++i)
    for (index_t j = 0; j < m.cols(); ++j)
      v[static_cast<std::size_t>(i * m.cols() + j)] = static_cast<float>(m(i, j));
  return v;
}
inline Mat buffer_to_mat(const std::vector<float>& v, index_t r, index_t c) {
  Mat m(r, c);
  for (index_t i = 0; i < r; ++i)
    for (index_t j = 0; j < c; ++j)
      m(i, j) = v[static_cast<std::size_t>(i * c + j)];
  return m;
}
/// Options `o` of a preset with its momentum (first moment) stored in bf16 (`mu_storage`,
/// docs/optim.md "State precision").
template <class O>
O bf16_state(O o) {
  o.mu_storage = Precision::bf16;
  return o;
}
/// The same with stochastic rounding of the stored values.
template <class O>
O bf16_stochastic_state(O o) {
  o.mu_storage = StateStorage::bf16_stochastic();
  return o;
}
/// The data pointers of host arrays, one per parameter (what Partition::step takes).
inline std::vector<float*> pointers(std::vector<std::vector<float>>& arrays) {
  std::vector<float*> p;
  for (auto& a : arrays)
    p.push_back(a.data());
  return p;
}
/// `steps` Gaussian gradients of scale 0.1, seeded from the case name.
inline std::vector<Mat> gradient_sequence(index_t r, index_t c, int steps, const char* name) {
  std::vector<Mat> g;
  for (int t = 0; t < steps; ++t)
    g.push_back(gaussian_mat(r, c, case_seed(name, static_cast<std::uint64_t>(t)), 0.1));
  return g;
}
/// Runs `rule` for grads.size() steps from w0 (float), returning the final parameter.
template <class R>
Mat run_rule_from(const R& rule, const Mat& w0, const std::vector<Mat>& grads) {
  const index_t r = w0.rows(), c = w0.cols();
  std::vector<float> w = to_float_buffer(w0);
  auto state = rule.init({r, c});
  for (const Mat& g : grads) {
    std::vector<float> u = to_float_buffer(g);
    if (rule.update(optim::Block(u.data(), r, c), state, optim::ConstBlock(w.data(), r, c)) != Status::ok)
      return Mat();
    optim::apply_updates(MatrixRef<float>(w.data(), r, c), MatrixRef<const float>(u.data(), r, c));
  }
  return buffer_to_mat(w, r, c);
}
/// Relative Frobenius error of the accumulated change W_T − W_0 (what the optimizer did).
inline double trajectory_error(const Mat& got, const Mat& want, const Mat& w0) {
  if (got.size() == 0) return 1e300;
  return (got - want).norm() / (want - w0).norm();
}

}  // namespace schatten::test
