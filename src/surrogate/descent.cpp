// SPDX-License-Identifier: Apache-2.0
/// \file
/// Descent diagnostics (algorithms.md §4b.3) and the random-feature least-squares model.
/// The inner products run on the execution space through frobenius_inner(); the model is
/// host-side double algebra (Eigen, as in the reference layer).
#include "schatten/surrogate/descent.hpp"

#include <Eigen/Dense>

#include <cmath>
#include <limits>

#include "schatten/kernels/inner_product.hpp"
#include "schatten/reference/polar.hpp"

namespace schatten::surrogate {
namespace {

template <class T>
bool same_shape(const MatrixRef<T>& a, const MatrixRef<T>& b) {
  return a.rows == b.rows && a.cols == b.cols;
}

DescentDiagnostics failed(Status s, const char* msg) {
  DescentDiagnostics d;
  d.status = s;
  d.message = msg;
  return d;
}

template <class T>
DescentDiagnostics diagnostics_impl(const MatrixRef<const T>& g, const MatrixRef<const T>& gb,
                                    const MatrixRef<const T>& d, const MatrixRef<const T>& hd) {
  if (!same_shape(g, gb) || !same_shape(g, d) || !same_shape(g, hd))
    return failed(Status::invalid_argument, "g, g_batch, d and hd must have the same shape");
  DescentDiagnostics r;
  const MatrixRef<const T>* lhs[3] = {&g, &gb, &d};
  const MatrixRef<const T>* rhs[3] = {&d, &d, &hd};
  double* dst[3] = {&r.full_dot, &r.batch_dot, &r.curvature};
  for (int k = 0; k < 3; ++k) {
    const Status s =
        frobenius_inner(BatchedMatrixRef<const T>(*lhs[k]), BatchedMatrixRef<const T>(*rhs[k]), dst[k]);
    if (s != Status::ok)
      return failed(s, s == Status::non_finite_input ? "NaN or Inf in g, g_batch, d or hd"
                                                     : "invalid matrix reference (null data or bad strides)");
  }
  if (r.batch_dot == 0.0 || !(r.curvature > 0.0)) {
    r.status = Status::breakdown;
    r.message =
        r.batch_dot == 0.0 ? "<g_batch, d> = 0: alignment undefined" : "<d, H d> <= 0: no minimiser along d";
    return r;
  }
  // γ and φ from their definitions; η* and the decrease in the forms that avoid cancelling
  // ⟨G̃, D⟩ (mathematically equal to γφ/⟨G̃, D⟩ and γ²φ/2).
  r.alignment = r.full_dot / r.batch_dot;
  r.potential = r.batch_dot * r.batch_dot / r.curvature;
  r.optimal_step = r.full_dot / r.curvature;
  r.best_decrease = 0.5 * r.full_dot * r.full_dot / r.curvature;
  return r;
}

template <class T>
DescentDiagnostics diagnostics_hvp(const MatrixRef<const T>& g, const MatrixRef<const T>& gb,
                                   const MatrixRef<const T>& d, const HessianVectorProduct<T>& hvp) {
  if (!hvp) return failed(Status::invalid_argument, "empty Hessian-vector product");
  if (!same_shape(g, gb) || !same_shape(g, d))
    return failed(Status::invalid_argument, "g, g_batch and d must have the same shape");
  std::vector<T> buf(static_cast<std::size_t>(d.rows * d.cols), T(0));
  const MatrixRef<T> hd(buf.data(), d.rows, d.cols);
  if (const Status s = hvp(d, hd); s != Status::ok) return failed(s, "the Hessian-vector product failed");
  return diagnostics_impl<T>(g, gb, d, MatrixRef<const T>(hd));
}

using RowMat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// Copies a host matrix reference (any strides) into an Eigen matrix; false if an entry is not
/// finite.
bool load(const MatrixRef<const double>& m, Eigen::MatrixXd& out) {
  out.resize(m.rows, m.cols);
  for (index_t i = 0; i < m.rows; ++i)
    for (index_t j = 0; j < m.cols; ++j) {
      const double x = m(i, j);
      if (!std::isfinite(x)) return false;
      out(i, j) = x;
    }
  return true;
}

void store(const Eigen::MatrixXd& m, const MatrixRef<double>& out) {
  for (index_t i = 0; i < out.rows; ++i)
    for (index_t j = 0; j < out.cols; ++j)
      out(i, j) = m(i, j);
}

Eigen::Map<const RowMat> view(const std::vector<double>& v, index_t r, index_t c) {
  return Eigen::Map<const RowMat>(v.data(), r, c);
}

/// E = W − W* for a host matrix w of the teacher's shape; false if w has a NaN/Inf.
bool residual(const MatrixRef<const double>& w, const std::vector<double>& teacher, Eigen::MatrixXd& e) {
  if (!load(w, e)) return false;
  e -= view(teacher, w.rows, w.cols);
  return true;
}

/// Checks one argument matrix of the model: shape, layout of an output.
Status check_arg(const MatrixRef<const double>& m, index_t r, index_t c) {
  if (m.rows != r || m.cols != c || (m.data == nullptr && r * c > 0)) return Status::invalid_argument;
  return Status::ok;
}
Status check_out(const MatrixRef<double>& m, index_t r, index_t c) {
  if (m.rows != r || m.cols != c) return Status::invalid_argument;
  if (schatten::detail::check_layout(BatchedMatrixRef<double>(m), true)) return Status::invalid_argument;
  if (m.memory != MemoryKind::host) return Status::invalid_argument;
  return Status::ok;
}

}  // namespace

DescentDiagnostics descent_diagnostics(MatrixRef<const float> g, MatrixRef<const float> g_batch,
                                       MatrixRef<const float> d, MatrixRef<const float> hd) {
  return diagnostics_impl<float>(g, g_batch, d, hd);
}
DescentDiagnostics descent_diagnostics(MatrixRef<const double> g, MatrixRef<const double> g_batch,
                                       MatrixRef<const double> d, MatrixRef<const double> hd) {
  return diagnostics_impl<double>(g, g_batch, d, hd);
}
DescentDiagnostics descent_diagnostics(MatrixRef<const float> g, MatrixRef<const float> g_batch,
                                       MatrixRef<const float> d, const HessianVectorProduct<float>& hvp) {
  return diagnostics_hvp<float>(g, g_batch, d, hvp);
}
DescentDiagnostics descent_diagnostics(MatrixRef<const double> g, MatrixRef<const double> g_batch,
                                       MatrixRef<const double> d, const HessianVectorProduct<double>& hvp) {
  return diagnostics_hvp<double>(g, g_batch, d, hvp);
}

Status RandomFeatureModel::create(MatrixRef<const double> teacher, MatrixRef<const double> covariance,
                                  RandomFeatureModel& out) {
  const index_t r = teacher.rows, c = teacher.cols;
  if (r <= 0 || c <= 0 || covariance.rows != c || covariance.cols != c) return Status::invalid_argument;
  if (teacher.data == nullptr || covariance.data == nullptr) return Status::invalid_argument;
  if (teacher.memory != MemoryKind::host || covariance.memory != MemoryKind::host)
    return Status::invalid_argument;
  Eigen::MatrixXd w, s;
  if (!load(teacher, w) || !load(covariance, s)) return Status::non_finite_input;
  // Symmetric to relative 1e-12 of its largest entry: Σ built in floating point as Q Λ Qᵀ is
  // symmetric to a few ulps; anything larger is a caller's mistake.
  const double scale = s.cwiseAbs().maxCoeff();
  if ((s - s.transpose()).cwiseAbs().maxCoeff() > 1e-12 * scale) return Status::invalid_argument;
  const Eigen::MatrixXd sym = 0.5 * (s + s.transpose());
  Eigen::LLT<Eigen::MatrixXd> llt(sym);
  if (llt.info() != Eigen::Success) return Status::invalid_argument;
  RandomFeatureModel m;
  m.rows_ = r;
  m.cols_ = c;
  m.teacher_.resize(static_cast<std::size_t>(r * c));
  m.sigma_.resize(static_cast<std::size_t>(c * c));
  m.chol_.resize(static_cast<std::size_t>(c * c));
  Eigen::Map<RowMat>(m.teacher_.data(), r, c) = w;
  Eigen::Map<RowMat>(m.sigma_.data(), c, c) = sym;
  Eigen::Map<RowMat>(m.chol_.data(), c, c) = llt.matrixL().toDenseMatrix();
  out = std::move(m);
  return Status::ok;
}

Status RandomFeatureModel::random(index_t rows, index_t cols, const std::vector<double>& eigenvalues,
                                  std::uint64_t seed, RandomFeatureModel& out) {
  if (rows <= 0 || cols <= 0 || static_cast<index_t>(eigenvalues.size()) != cols)
    return Status::invalid_argument;
  for (double l : eigenvalues)
    if (!std::isfinite(l)) return Status::non_finite_input;
  for (double l : eigenvalues)
    if (!(l > 0.0)) return Status::invalid_argument;
  // Q: the left factor of a cols × cols matrix with a prescribed spectrum (Haar from the seed).
  std::vector<double> q, unused(static_cast<std::size_t>(cols * cols));
  const Status s = reference::matrix_with_spectrum(MatrixRef<double>(unused.data(), cols, cols), eigenvalues,
                                                   seed, &q, nullptr);
  if (s != Status::ok) return s;
  const Eigen::Map<const RowMat> qm = view(q, cols, cols);
  Eigen::VectorXd lam(cols);
  for (index_t i = 0; i < cols; ++i)
    lam(i) = eigenvalues[static_cast<std::size_t>(i)];
  RowMat sigma = qm * lam.asDiagonal() * qm.transpose();
  sigma = 0.5 * (sigma + sigma.transpose()).eval();
  // Teacher from a stream independent of Q's (seed + 1 through splitmix64 is decorrelated).
  Rng rng(seed + 0x9E3779B97F4A7C15ULL);
  RowMat w(rows, cols);
  const double sd = 1.0 / std::sqrt(static_cast<double>(cols));
  for (index_t i = 0; i < rows; ++i)
    for (index_t j = 0; j < cols; ++j)
      w(i, j) = sd * rng.normal();
  return create(MatrixRef<const double>(w.data(), rows, cols),
                MatrixRef<const double>(sigma.data(), cols, cols), out);
}

double RandomFeatureModel::loss(MatrixRef<const double> w) const {
  Eigen::MatrixXd e;
  if (check_arg(w, rows_, cols_) != Status::ok || !residual(w, teacher_, e))
    return std::numeric_limits<double>::quiet_NaN();
  // ½ tr(E Σ Eᵀ) = ½ Σ_ij (E Σ)_ij E_ij.
  return 0.5 * (e * view(sigma_, cols_, cols_)).cwiseProduct(e).sum();
}

Status RandomFeatureModel::gradient(MatrixRef<const double> w, MatrixRef<double> g) const {
  if (check_arg(w, rows_, cols_) != Status::ok || check_out(g, rows_, cols_) != Status::ok)
    return Status::invalid_argument;
  Eigen::MatrixXd e;
  if (!residual(w, teacher_, e)) return Status::non_finite_input;
  store(e * view(sigma_, cols_, cols_), g);
  return Status::ok;
}

Status RandomFeatureModel::batch_gradient(MatrixRef<const double> w, index_t batch, Rng& rng,
                                          MatrixRef<double> g) const {
  if (batch <= 0 || check_arg(w, rows_, cols_) != Status::ok || check_out(g, rows_, cols_) != Status::ok)
    return Status::invalid_argument;
  Eigen::MatrixXd e;
  if (!residual(w, teacher_, e)) return Status::non_finite_input;
  Eigen::MatrixXd z(cols_, batch);
  for (index_t k = 0; k < batch; ++k)
    for (index_t j = 0; j < cols_; ++j)
      z(j, k) = rng.normal();
  const Eigen::MatrixXd x = view(chol_, cols_, cols_) * z;  // columns ~ N(0, Σ)
  // E Σ̂_b = ((E X) Xᵀ) / b: two products of cost rows·cols·b instead of forming Σ̂_b.
  store((e * x) * x.transpose() / static_cast<double>(batch), g);
  return Status::ok;
}

Status RandomFeatureModel::hessian_vector(MatrixRef<const double> d, MatrixRef<double> hd) const {
  if (check_arg(d, rows_, cols_) != Status::ok || check_out(hd, rows_, cols_) != Status::ok)
    return Status::invalid_argument;
  Eigen::MatrixXd dm;
  if (!load(d, dm)) return Status::non_finite_input;
  store(dm * view(sigma_, cols_, cols_), hd);
  return Status::ok;
}

DescentDiagnostics RandomFeatureModel::diagnostics(MatrixRef<const double> w, MatrixRef<const double> d,
                                                   MatrixRef<const double> g_batch) const {
  if (rows_ == 0) return failed(Status::invalid_argument, "empty model");
  if (check_arg(w, rows_, cols_) != Status::ok || check_arg(d, rows_, cols_) != Status::ok ||
      check_arg(g_batch, rows_, cols_) != Status::ok)
    return failed(Status::invalid_argument, "w, d and g_batch must be rows x cols of the model");
  std::vector<double> g(static_cast<std::size_t>(rows_ * cols_));
  if (const Status s = gradient(w, MatrixRef<double>(g.data(), rows_, cols_)); s != Status::ok)
    return failed(s, "NaN or Inf in w");
  return descent_diagnostics(
      MatrixRef<const double>(g.data(), rows_, cols_), g_batch, d,
      HessianVectorProduct<double>(
          [this](MatrixRef<const double> dd, MatrixRef<double> hd) { return hessian_vector(dd, hd); }));
}

}  // namespace schatten::surrogate
