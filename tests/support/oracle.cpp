// SPDX-License-Identifier: Apache-2.0
/// \file
/// Test oracles (double precision, Eigen).
#include "support/oracle.hpp"

#include <Eigen/SVD>
#include <algorithm>
#include <cmath>
#include <limits>

namespace schatten::test {

double composite(const std::vector<PolyStep>& steps, double x, int iterations) {
  for (int t = 0; t < iterations; ++t) {
    const PolyStep& p = steps[std::min<std::size_t>(static_cast<std::size_t>(t), steps.size() - 1)];
    x = p.a * x + p.b * x * x * x + p.c * x * x * x * x * x;
  }
  return x;
}

Svd svd(const Eigen::MatrixXd& a) {
  Eigen::JacobiSVD<Eigen::MatrixXd> j(a, Eigen::ComputeThinU | Eigen::ComputeThinV);
  return {j.matrixU(), j.matrixV(), j.singularValues()};
}

Eigen::MatrixXd spectral_map(const Svd& d, const std::function<double(double)>& f) {
  Eigen::VectorXd fs(d.s.size());
  for (Eigen::Index i = 0; i < d.s.size(); ++i)
    fs(i) = f(d.s(i));
  return d.u * fs.asDiagonal() * d.v.transpose();
}

double clipped(double sigma, double lower, double upper) {
  double v = sigma;
  if (v > upper) v = upper;
  if (lower > 0.0 && v < lower) v = lower;
  return v;
}

namespace {
/// ν = safety·‖a‖ + eps from the singular values (1 for Norm::none).
double scale(const Eigen::VectorXd& sigma, double safety, double eps, Norm norm) {
  if (norm == Norm::none) return 1.0;
  double sum = 0.0;
  for (Eigen::Index i = 0; i < sigma.size(); ++i) {
    const double s2 = sigma(i) * sigma(i);
    sum += norm == Norm::schatten4 ? s2 * s2 : s2;
  }
  return safety * (norm == Norm::schatten4 ? std::sqrt(std::sqrt(sum)) : std::sqrt(sum)) + eps;
}
}  // namespace

Eigen::MatrixXd predicted_polynomial_output(const Eigen::MatrixXd& a, const std::vector<PolyStep>& steps,
                                            int iterations, double safety, double eps, Norm norm) {
  return predicted_polynomial_output(svd(a), steps, iterations, safety, eps, norm);
}

Eigen::MatrixXd predicted_polynomial_output(const Svd& d, const std::vector<PolyStep>& steps, int iterations,
                                            double safety, double eps, Norm norm) {
  const double nu = scale(d.s, safety, eps, norm);
  return spectral_map(d, [&](double s) { return composite(steps, s / nu, iterations); });
}

double predicted_band_deviation(const Eigen::MatrixXd& a, const std::vector<PolyStep>& steps, int iterations,
                                double safety, double eps, Norm norm) {
  const Svd d = svd(a);
  const double nu = scale(d.s, safety, eps, norm);
  double worst = 0.0;
  for (Eigen::Index i = 0; i < d.s.size(); ++i)
    worst = std::max(worst, std::fabs(composite(steps, d.s(i) / nu, iterations) - 1.0));
  return worst;
}

Eigen::MatrixXd aol_prescale(const Eigen::MatrixXd& a, double safety, double eps) {
  const bool rows = a.rows() <= a.cols();
  const Eigen::MatrixXd g = rows ? Eigen::MatrixXd(a * a.transpose()) : Eigen::MatrixXd(a.transpose() * a);
  Eigen::VectorXd d(g.rows());
  for (Eigen::Index i = 0; i < g.rows(); ++i) {
    const double r = g.row(i).cwiseAbs().sum();
    d(i) = r > 0.0 ? 1.0 / (safety * std::sqrt(r) + eps) : 0.0;
  }
  return rows ? Eigen::MatrixXd(d.asDiagonal() * a) : Eigen::MatrixXd(a * d.asDiagonal());
}

double spectral_norm(const Eigen::MatrixXd& m) {
  if (m.size() == 0) return 0.0;
  Eigen::JacobiSVD<Eigen::MatrixXd> j(m);
  return j.singularValues()(0);
}

double orthogonality_error(const Eigen::MatrixXd& q) {
  const Eigen::MatrixXd g =
      q.rows() <= q.cols() ? Eigen::MatrixXd(q * q.transpose()) : Eigen::MatrixXd(q.transpose() * q);
  return spectral_norm(g - Eigen::MatrixXd::Identity(g.rows(), g.cols()));
}

double relative_error(const Eigen::MatrixXd& a, const Eigen::MatrixXd& b) {
  return (a - b).norm() / std::max(b.norm(), std::numeric_limits<double>::min());
}

}  // namespace schatten::test
