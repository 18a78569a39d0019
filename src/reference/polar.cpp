// SPDX-License-Identifier: Apache-2.0
/// \file
/// SVD references in double (Eigen). Eigen appears only here and in other reference/host code.
#include "schatten/reference/polar.hpp"

#include <Eigen/Dense>
#include <cmath>
#include <limits>

#include "reference/dense_svd.hpp"
#include "schatten/core/random.hpp"

namespace schatten::reference {
namespace {

/// The public functions run through detail::status_guard (core/status.hpp): a std::bad_alloc
/// of Eigen's matrices or the vectors is out_of_memory. Every one writes its outputs after its
/// last allocation, so nothing is written then.
using schatten::detail::status_guard;

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
  if (schatten::detail::check_layout(BatchedMatrixRef<const T>(a), false)) return Status::invalid_argument;
  return Status::ok;
}

/// U f(i, σ_i) Vᵀ (singular values in decreasing order) with singular values ≤ tol·σ_max mapped
/// to 0 (tol < 0: max(r, c)·ε of T).
template <class T, class F>
Status spectral_map_impl(const MatrixRef<const T>& a, const MatrixRef<T>& q, double tol, F&& f) {
  if (Status s = check(a); s != Status::ok) return s;
  if (Status s = check(MatrixRef<const T>(q)); s != Status::ok) return s;
  if (schatten::detail::check_layout(BatchedMatrixRef<T>(q), true) || a.rows != q.rows || a.cols != q.cols)
    return Status::invalid_argument;
  if (a.empty()) return Status::ok;
  Eigen::MatrixXd m;
  if (!to_eigen(a, m)) return Status::non_finite_input;
  const schatten::detail::DenseSvd svd = schatten::detail::dense_svd(m, true);
  const Eigen::VectorXd& s = svd.sigma;
  // Default: numerical rank at the precision of the data (a float matrix's "zero" singular
  // values are float rounding, ~ε_float·σ_max).
  if (tol < 0) tol = static_cast<double>(std::max(a.rows, a.cols)) * std::numeric_limits<T>::epsilon();
  const double cut = tol * (s.size() ? s(0) : 0.0);
  Eigen::VectorXd fs(s.size());
  for (Eigen::Index i = 0; i < s.size(); ++i)
    fs(i) = s(i) > cut ? f(static_cast<std::size_t>(i), s(i)) : 0.0;
  const Eigen::MatrixXd p = svd.u * fs.asDiagonal() * svd.v.transpose();
  for (index_t i = 0; i < q.rows; ++i)
    for (index_t j = 0; j < q.cols; ++j)
      q(i, j) = static_cast<T>(p(i, j));
  return Status::ok;
}

template <class T>
Status polar_impl(const MatrixRef<const T>& a, const MatrixRef<T>& q, double tol) {
  return spectral_map_impl(a, q, tol, [](std::size_t, double) { return 1.0; });
}

template <class T>
Status spectral_power_impl(const MatrixRef<const T>& a, const MatrixRef<T>& q, double alpha, double tol) {
  if (!(alpha >= -1.0 && alpha <= 1.0)) return Status::invalid_argument;
  return spectral_map_impl(a, q, tol, [alpha](std::size_t, double s) { return std::pow(s, alpha); });
}

template <class T>
Status singular_values_impl(const MatrixRef<const T>& a, std::vector<double>& sigma) {
  if (Status s = check(a); s != Status::ok) return s;
  if (a.empty()) {
    sigma.clear();
    return Status::ok;
  }
  Eigen::MatrixXd m;
  if (!to_eigen(a, m)) return Status::non_finite_input;
  const Eigen::VectorXd s = schatten::detail::dense_svd(m, false).sigma;
  std::vector<double> values(s.data(), s.data() + s.size());
  sigma.swap(values);  // (assign could reallocate after clearing)
  return Status::ok;
}

Eigen::MatrixXd haar_orthonormal(index_t rows, index_t k, Rng& rng) {
  Eigen::MatrixXd g(rows, k);
  for (index_t j = 0; j < k; ++j)
    for (index_t i = 0; i < rows; ++i)
      g(i, j) = rng.normal();
  Eigen::HouseholderQR<Eigen::MatrixXd> qr(g);
  Eigen::MatrixXd q = qr.householderQ() * Eigen::MatrixXd::Identity(rows, k);
  // Q·diag(sign(diag R)) makes the factor unique and Haar-distributed (Mezzadri 2007).
  const Eigen::MatrixXd& r = qr.matrixQR();
  for (index_t j = 0; j < k; ++j)
    if (r(j, j) < 0) q.col(j) = -q.col(j);
  return q;
}

std::vector<double> to_row_major(const Eigen::MatrixXd& m) {
  std::vector<double> out(static_cast<std::size_t>(m.size()));
  for (Eigen::Index i = 0; i < m.rows(); ++i)
    for (Eigen::Index j = 0; j < m.cols(); ++j)
      out[static_cast<std::size_t>(i * m.cols() + j)] = m(i, j);
  return out;
}

Status matrix_with_spectrum_unguarded(MatrixRef<double> out, const std::vector<double>& sigma,
                                      std::uint64_t seed, std::vector<double>* u, std::vector<double>* v) {
  if (out.memory != MemoryKind::host) return Status::unsupported;
  if (schatten::detail::check_layout(BatchedMatrixRef<double>(out), true) ||
      static_cast<index_t>(sigma.size()) != std::min(out.rows, out.cols))
    return Status::invalid_argument;
  for (double s : sigma)
    if (!std::isfinite(s)) return Status::non_finite_input;
  const index_t k = std::min(out.rows, out.cols);
  Rng rng(seed);
  const Eigen::MatrixXd uu = haar_orthonormal(out.rows, k, rng);
  const Eigen::MatrixXd vv = haar_orthonormal(out.cols, k, rng);
  const Eigen::VectorXd s = Eigen::Map<const Eigen::VectorXd>(sigma.data(), k);
  const Eigen::MatrixXd a = uu * s.asDiagonal() * vv.transpose();
  std::vector<double> u_rows = u ? to_row_major(uu) : std::vector<double>(),
                      v_rows = v ? to_row_major(vv) : std::vector<double>();
  for (index_t i = 0; i < out.rows; ++i)
    for (index_t j = 0; j < out.cols; ++j)
      out(i, j) = a(i, j);
  if (u) u->swap(u_rows);
  if (v) v->swap(v_rows);
  return Status::ok;
}
}  // namespace

Status matrix_with_spectrum(MatrixRef<double> out, const std::vector<double>& sigma, std::uint64_t seed,
                            std::vector<double>* u, std::vector<double>* v) {
  return status_guard([&] { return matrix_with_spectrum_unguarded(out, sigma, seed, u, v); });
}

Status polar(MatrixRef<const double> a, MatrixRef<double> q, double tol) {
  return status_guard([&] { return polar_impl(a, q, tol); });
}
Status polar(MatrixRef<const float> a, MatrixRef<float> q, double tol) {
  return status_guard([&] { return polar_impl(a, q, tol); });
}
Status spectral_power(MatrixRef<const double> a, MatrixRef<double> q, double alpha, double tol) {
  return status_guard([&] { return spectral_power_impl(a, q, alpha, tol); });
}
Status spectral_power(MatrixRef<const float> a, MatrixRef<float> q, double alpha, double tol) {
  return status_guard([&] { return spectral_power_impl(a, q, alpha, tol); });
}

namespace {
template <class T>
Status kaon_impl(const MatrixRef<const T>& a, const MatrixRef<T>& q, std::uint64_t seed, double tol) {
  const index_t k = std::min(a.rows, a.cols);
  Rng rng(seed);
  std::vector<double> s(static_cast<std::size_t>(k));
  double top = 0.0;
  for (double& x : s) {
    x = rng.uniform();
    top = std::max(top, x);
  }
  return spectral_map_impl(a, q, tol, [&](std::size_t i, double) { return top > 0 ? s[i] / top : 0.0; });
}
}  // namespace

Status kaon_spectrum(MatrixRef<const double> a, MatrixRef<double> q, std::uint64_t seed, double tol) {
  return status_guard([&] { return kaon_impl(a, q, seed, tol); });
}
Status kaon_spectrum(MatrixRef<const float> a, MatrixRef<float> q, std::uint64_t seed, double tol) {
  return status_guard([&] { return kaon_impl(a, q, seed, tol); });
}

namespace {
template <class T>
Status schatten_norm_impl(const MatrixRef<const T>& a, double q, double& norm) {
  if (!(q > 0.0)) return Status::invalid_argument;
  std::vector<double> s;
  if (Status st = singular_values(a, s); st != Status::ok) return st;
  if (s.empty()) {
    norm = 0.0;
    return Status::ok;
  }
  if (std::isinf(q)) {
    norm = s.front();
    return Status::ok;
  }
  // Σ σ^q scaled by σ_max to avoid overflow/underflow.
  const double top = s.front();
  double sum = 0.0;
  if (top > 0.0)
    for (double x : s)
      sum += std::pow(x / top, q);
  norm = top * std::pow(sum, 1.0 / q);
  return Status::ok;
}
}  // namespace

Status schatten_norm(MatrixRef<const double> a, double q, double& norm) {
  return status_guard([&] { return schatten_norm_impl(a, q, norm); });
}
Status schatten_norm(MatrixRef<const float> a, double q, double& norm) {
  return status_guard([&] { return schatten_norm_impl(a, q, norm); });
}

Status singular_values(MatrixRef<const double> a, std::vector<double>& s) {
  return status_guard([&] { return singular_values_impl(a, s); });
}
Status singular_values(MatrixRef<const float> a, std::vector<double>& s) {
  return status_guard([&] { return singular_values_impl(a, s); });
}

}  // namespace schatten::reference
