// SPDX-License-Identifier: Apache-2.0
/// \file
/// Descent diagnostics (algorithms.md §4b.3) and the random-feature least-squares model.
/// The inner products run on the execution space through frobenius_inner(); the model is
/// host-side double algebra (Eigen, as in the reference layer).
#include "schatten/surrogate/descent.hpp"

#include <Eigen/Dense>

#include <cmath>
#include <limits>
#include <new>
#include <stdexcept>
#include <type_traits>

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

/// ⟨a, b⟩ of host matrices in long double (x86: 64-bit mantissa, exponent range ±4932), for
/// double inputs whose double products leave the double range.
long double long_inner(const MatrixRef<const double>& a, const MatrixRef<const double>& b) {
  long double s = 0.0L;
  for (index_t i = 0; i < a.rows; ++i)
    for (index_t j = 0; j < a.cols; ++j)
      s += static_cast<long double>(a(i, j)) * static_cast<long double>(b(i, j));
  return s;
}

/// True when a double result holds the value x: finite, and 0 only when x is 0 (a nonzero
/// value below the smallest normal double has lost its precision or become 0).
bool representable(long double x) {
  const long double m = x < 0 ? -x : x;
  return m == 0.0L || (m <= static_cast<long double>(std::numeric_limits<double>::max()) &&
                       m >= static_cast<long double>(std::numeric_limits<double>::min()));
}

/// The ratios of r from its inner products (in R: double, or long double when the double sums
/// were degenerate), or breakdown / out_of_range (the header) with the ratios left 0.
template <class R>
void ratios(DescentDiagnostics& r, R full, R batch, R curv) {
  if (batch == R(0) || !(curv > R(0))) {
    r.status = Status::breakdown;
    r.message =
        batch == R(0) ? "<g_batch, d> = 0: alignment undefined" : "<d, H d> <= 0: no minimiser along d";
    return;
  }
  // γ and φ from their definitions; η* and the decrease in the forms that avoid cancelling
  // ⟨G̃, D⟩ (mathematically equal to γφ/⟨G̃, D⟩ and γ²φ/2).
  const R v[4] = {full / batch, batch * batch / curv, full / curv, R(0.5) * full * full / curv};
  for (const R x : v)
    if (!representable(static_cast<long double>(x))) {
      r.status = Status::out_of_range;
      r.message =
          "a ratio (alignment, potential, optimal step or decrease) is beyond the double range; "
          "rescale g, g_batch, d or hd";
      return;
    }
  r.alignment = double(v[0]);
  r.potential = double(v[1]);
  r.optimal_step = double(v[2]);
  r.best_decrease = double(v[3]);
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
  // Double inputs on the host can be recomputed in long double (below).
  const bool widen = std::is_same<T, double>::value && g.memory == MemoryKind::host &&
                     gb.memory == MemoryKind::host && d.memory == MemoryKind::host &&
                     hd.memory == MemoryKind::host;
  bool overflow = false;
  for (int k = 0; k < 3; ++k) {
    const Status s =
        frobenius_inner(BatchedMatrixRef<const T>(*lhs[k]), BatchedMatrixRef<const T>(*rhs[k]), dst[k]);
    // NaN/Inf (non_finite_input) or an inner product beyond the double range (out_of_range):
    // the host pass below tells which, and long double may still represent the product.
    if ((s == Status::non_finite_input || s == Status::out_of_range) && widen) {
      overflow = true;
      continue;
    }
    if (s == Status::out_of_memory) return failed(s, "out of memory staging the inner products");
    if (s != Status::ok)
      return failed(s, s == Status::non_finite_input ? "NaN or Inf in g, g_batch, d or hd"
                       : s == Status::out_of_range
                           ? "an inner product is beyond the double range; rescale g, g_batch, d or hd"
                           : "invalid matrix reference (null data or bad strides)");
  }
  // Float inputs: every product is exact in double and no sum of them leaves its range, so the
  // double sums decide. Double inputs on the host: products may underflow (1e-200·1e-200) or a
  // sum overflow, so where the double results are degenerate the long-double sums decide (one
  // more host pass over the four inputs, only then; where long double is no wider than double
  // an underflow stays a breakdown, as on device memory).
  if constexpr (std::is_same<T, double>::value) {
    const bool degenerate = overflow || r.full_dot == 0.0 || r.batch_dot == 0.0 || !(r.curvature > 0.0) ||
                            std::abs(r.full_dot) < std::numeric_limits<double>::min() ||
                            std::abs(r.batch_dot) < std::numeric_limits<double>::min() ||
                            std::abs(r.curvature) < std::numeric_limits<double>::min();
    if (widen && degenerate) {
      for (const MatrixRef<const T>* m : {&g, &gb, &d, &hd})
        for (index_t i = 0; i < m->rows; ++i)
          for (index_t j = 0; j < m->cols; ++j)
            if (!std::isfinite((*m)(i, j)))
              return failed(Status::non_finite_input, "NaN or Inf in g, g_batch, d or hd");
      const long double wide[3] = {long_inner(g, d), long_inner(gb, d), long_inner(d, hd)};
      for (const long double x : wide)
        if (!representable(x))
          return failed(Status::out_of_range,
                        "an inner product is beyond the double range (overflow or underflow); rescale g, "
                        "g_batch, d or hd");
      r.full_dot = double(wide[0]);
      r.batch_dot = double(wide[1]);
      r.curvature = double(wide[2]);
      ratios<long double>(r, wide[0], wide[1], wide[2]);
      return r;
    }
    if (overflow)
      return failed(Status::non_finite_input,
                    "NaN or Inf in g, g_batch, d or hd, or an inner product beyond the double range");
  }
  ratios<double>(r, r.full_dot, r.batch_dot, r.curvature);
  return r;
}

template <class T>
DescentDiagnostics diagnostics_hvp(const MatrixRef<const T>& g, const MatrixRef<const T>& gb,
                                   const MatrixRef<const T>& d, const HessianVectorProduct<T>& hvp) {
  if (!hvp) return failed(Status::invalid_argument, "empty Hessian-vector product");
  if (!same_shape(g, gb) || !same_shape(g, d))
    return failed(Status::invalid_argument, "g, g_batch and d must have the same shape");
  // The buffer for H d is sized from d: its layout is checked first (a negative dimension, null
  // data, more elements than an array can hold), so that no size is taken from a bad reference.
  for (const MatrixRef<const T>* m : {&g, &gb, &d})
    if (schatten::detail::check_layout(BatchedMatrixRef<const T>(*m), false) != nullptr)
      return failed(Status::invalid_argument, "invalid matrix reference (null data or bad strides)");
  try {
    std::vector<T> buf(static_cast<std::size_t>(d.rows * d.cols), T(0));
    const MatrixRef<T> hd(buf.data(), d.rows, d.cols);
    if (const Status s = hvp(d, hd); s != Status::ok) return failed(s, "the Hessian-vector product failed");
    return diagnostics_impl<T>(g, gb, d, MatrixRef<const T>(hd));
  } catch (const std::bad_alloc&) {
    return failed(Status::out_of_memory, "out of memory for the Hessian-vector product's buffer");
  } catch (const std::length_error&) {
    return failed(Status::out_of_memory, "out of memory for the Hessian-vector product's buffer");
  }
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

namespace {

/// f() with allocation failures (Eigen's and std::vector's: bad_alloc, or length_error for a
/// size beyond any array) as out_of_memory: the model's methods throw nothing.
template <class F>
Status no_throw(const F& f) {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory;
  } catch (const std::length_error&) {
    return Status::out_of_memory;
  }
}

/// Writes m into out when every entry is finite, else out_of_range (a product of finite values
/// beyond the double range, e.g. w = ±1e308) with out unchanged.
Status store_finite(const Eigen::MatrixXd& m, const MatrixRef<double>& out) {
  if (!m.allFinite()) return Status::out_of_range;
  store(m, out);
  return Status::ok;
}

}  // namespace

Status RandomFeatureModel::create(MatrixRef<const double> teacher, MatrixRef<const double> covariance,
                                  RandomFeatureModel& out) {
  const index_t r = teacher.rows, c = teacher.cols;
  if (r <= 0 || c <= 0 || covariance.rows != c || covariance.cols != c) return Status::invalid_argument;
  if (teacher.data == nullptr || covariance.data == nullptr) return Status::invalid_argument;
  if (teacher.memory != MemoryKind::host || covariance.memory != MemoryKind::host)
    return Status::invalid_argument;
  return no_throw([&] {
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
  });
}

Status RandomFeatureModel::random(index_t rows, index_t cols, const std::vector<double>& eigenvalues,
                                  std::uint64_t seed, RandomFeatureModel& out) {
  if (rows <= 0 || cols <= 0 || static_cast<index_t>(eigenvalues.size()) != cols)
    return Status::invalid_argument;
  for (double l : eigenvalues)
    if (!std::isfinite(l)) return Status::non_finite_input;
  for (double l : eigenvalues)
    if (!(l > 0.0)) return Status::invalid_argument;
  return no_throw([&] {
    // Q: the left factor of a cols × cols matrix with a prescribed spectrum (Haar from the seed).
    std::vector<double> q, unused(static_cast<std::size_t>(cols) * static_cast<std::size_t>(cols));
    const Status s = reference::matrix_with_spectrum(MatrixRef<double>(unused.data(), cols, cols),
                                                     eigenvalues, seed, &q, nullptr);
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
  });
}

double RandomFeatureModel::loss(MatrixRef<const double> w) const {
  constexpr double nan = std::numeric_limits<double>::quiet_NaN();
  if (check_arg(w, rows_, cols_) != Status::ok) return nan;
  try {
    Eigen::MatrixXd e;
    if (!residual(w, teacher_, e)) return nan;
    // ½ tr(E Σ Eᵀ) = ½ Σ_ij (E Σ)_ij E_ij ≥ 0 (Σ positive definite): a NaN or ∞ here is a
    // product beyond the double range (E Σ's ∞ − ∞), whose true value is huge: +∞.
    const double f = 0.5 * (e * view(sigma_, cols_, cols_)).cwiseProduct(e).sum();
    return std::isnan(f) ? std::numeric_limits<double>::infinity() : f;
  } catch (const std::bad_alloc&) {
    return nan;
  }
}

Status RandomFeatureModel::gradient(MatrixRef<const double> w, MatrixRef<double> g) const {
  if (check_arg(w, rows_, cols_) != Status::ok || check_out(g, rows_, cols_) != Status::ok)
    return Status::invalid_argument;
  return no_throw([&] {
    Eigen::MatrixXd e;
    if (!residual(w, teacher_, e)) return Status::non_finite_input;
    return store_finite(e * view(sigma_, cols_, cols_), g);
  });
}

Status RandomFeatureModel::batch_gradient(MatrixRef<const double> w, index_t batch, Rng& rng,
                                          MatrixRef<double> g) const {
  if (batch <= 0 || check_arg(w, rows_, cols_) != Status::ok || check_out(g, rows_, cols_) != Status::ok)
    return Status::invalid_argument;
  const Rng start = rng;  // restored on failure: nothing changes then
  const Status s = no_throw([&] {
    Eigen::MatrixXd e;
    if (!residual(w, teacher_, e)) return Status::non_finite_input;
    Eigen::MatrixXd z(cols_, batch);
    for (index_t k = 0; k < batch; ++k)
      for (index_t j = 0; j < cols_; ++j)
        z(j, k) = rng.normal();
    const Eigen::MatrixXd x = view(chol_, cols_, cols_) * z;  // columns ~ N(0, Σ)
    // E Σ̂_b = ((E X) Xᵀ) / b: two products of cost rows·cols·b instead of forming Σ̂_b.
    return store_finite((e * x) * x.transpose() / static_cast<double>(batch), g);
  });
  if (s != Status::ok) rng = start;
  return s;
}

Status RandomFeatureModel::hessian_vector(MatrixRef<const double> d, MatrixRef<double> hd) const {
  if (check_arg(d, rows_, cols_) != Status::ok || check_out(hd, rows_, cols_) != Status::ok)
    return Status::invalid_argument;
  return no_throw([&] {
    Eigen::MatrixXd dm;
    if (!load(d, dm)) return Status::non_finite_input;
    return store_finite(dm * view(sigma_, cols_, cols_), hd);
  });
}

DescentDiagnostics RandomFeatureModel::diagnostics(MatrixRef<const double> w, MatrixRef<const double> d,
                                                   MatrixRef<const double> g_batch) const {
  if (rows_ == 0) return failed(Status::invalid_argument, "empty model");
  if (check_arg(w, rows_, cols_) != Status::ok || check_arg(d, rows_, cols_) != Status::ok ||
      check_arg(g_batch, rows_, cols_) != Status::ok)
    return failed(Status::invalid_argument, "w, d and g_batch must be rows x cols of the model");
  std::vector<double> g;
  if (no_throw([&] {
        g.resize(static_cast<std::size_t>(rows_ * cols_));
        return Status::ok;
      }) != Status::ok)
    return failed(Status::out_of_memory, "out of memory for the model's gradient");
  if (const Status s = gradient(w, MatrixRef<double>(g.data(), rows_, cols_)); s != Status::ok)
    return failed(s, s == Status::non_finite_input ? "NaN or Inf in w"
                     : s == Status::out_of_range   ? "the model's gradient at w is beyond the double range"
                                                   : "out of memory for the model's gradient");
  return descent_diagnostics(
      MatrixRef<const double>(g.data(), rows_, cols_), g_batch, d,
      HessianVectorProduct<double>(
          [this](MatrixRef<const double> dd, MatrixRef<double> hd) { return hessian_vector(dd, hd); }));
}

}  // namespace schatten::surrogate
