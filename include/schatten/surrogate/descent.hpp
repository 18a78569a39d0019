// SPDX-License-Identifier: Apache-2.0
/// \file
/// Alignment and descent potential of an update (algorithms.md §4b.3), and the random-feature
/// least-squares model in which they are computed exactly.
///
/// For a loss f at W, a full-batch gradient G, a mini-batch gradient G̃, an update D (the step is
/// W ← W − η D) and the Hessian H, the second-order model along D is
///
///     f(W − η D) ≈ f(W) − η ⟨G, D⟩ + (η²/2) ⟨D, H D⟩.
///
/// Writing it with the quantities an optimizer controls,
///     alignment          γ = ⟨G, D⟩ / ⟨G̃, D⟩             (how much of the batch signal is real),
///     descent potential  φ = ⟨G̃, D⟩² / ⟨D, H D⟩         (how far the curvature lets D go),
/// the model becomes f − η γ ⟨G̃, D⟩ + (η²/2) ⟨G̃, D⟩²/φ, minimised by η* = γ φ / ⟨G̃, D⟩
/// (= ⟨G, D⟩ / ⟨D, H D⟩) with decrease γ² φ / 2 (= ⟨G, D⟩² / (2 ⟨D, H D⟩)).
/// For a quadratic loss the model is exact.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "schatten/core/matrix_ref.hpp"
#include "schatten/core/random.hpp"
#include "schatten/core/status.hpp"

namespace schatten::surrogate {

/// The diagnostics of one update. Inner products are accumulated in double.
struct DescentDiagnostics {
  /// ok; invalid_argument (shapes differ, a negative dimension, null data); non_finite_input
  /// (NaN/Inf in an input or in the Hessian-vector product, or — device memory — an inner
  /// product beyond the double range); breakdown when ⟨G̃, D⟩ = 0 or ⟨D, H D⟩ ≤ 0: the inner
  /// products are still reported, the ratios (γ, φ, η*, best decrease) are set to 0 because the
  /// quadratic model has no finite minimiser along D (or γ is undefined); out_of_range when an
  /// inner product (double inputs on the host: recomputed in long double, where it is wider than
  /// double as on x86-64, when the double sums are 0, subnormal or ∞, so that an underflow is
  /// not taken for a breakdown) or a ratio is beyond the double range (e.g. γ = 1e400): the
  /// ratios are 0 then, never ∞; out_of_memory when the callback form cannot allocate H d. Any
  /// other status of a caller's Hessian-vector product is passed through. Float inputs cannot
  /// reach out_of_range.
  Status status = Status::ok;
  const char* message = "";
  double full_dot = 0.0;       ///< ⟨G, D⟩
  double batch_dot = 0.0;      ///< ⟨G̃, D⟩
  double curvature = 0.0;      ///< ⟨D, H D⟩
  double alignment = 0.0;      ///< γ = ⟨G, D⟩ / ⟨G̃, D⟩
  double potential = 0.0;      ///< φ = ⟨G̃, D⟩² / ⟨D, H D⟩
  double optimal_step = 0.0;   ///< η* = γ φ / ⟨G̃, D⟩ = ⟨G, D⟩ / ⟨D, H D⟩
  double best_decrease = 0.0;  ///< γ² φ / 2 = ⟨G, D⟩² / (2 ⟨D, H D⟩)

  /// The model's change f(W − η D) − f(W) = −η ⟨G, D⟩ + (η²/2) ⟨D, H D⟩.
  double model_change(double eta) const { return -eta * full_dot + 0.5 * eta * eta * curvature; }
};

/// Diagnostics from the full-batch gradient `g`, the mini-batch gradient `g_batch`, the update
/// `d` and the Hessian-vector product `hd` = H d, all of one shape, in any strides and memory
/// kind (three Frobenius inner products: 3 reads of rows·cols, no allocation on the host).
DescentDiagnostics descent_diagnostics(MatrixRef<const float> g, MatrixRef<const float> g_batch,
                                       MatrixRef<const float> d, MatrixRef<const float> hd);
DescentDiagnostics descent_diagnostics(MatrixRef<const double> g, MatrixRef<const double> g_batch,
                                       MatrixRef<const double> d, MatrixRef<const double> hd);

/// A caller's Hessian-vector product: writes H d into `hd` (host memory, d's shape, row-major)
/// and returns ok, or a status that is passed on.
template <class T>
using HessianVectorProduct = std::function<Status(MatrixRef<const T> d, MatrixRef<T> hd)>;

/// As above, with H d computed by `hvp` into a host buffer this call allocates (rows·cols),
/// after checking the references (invalid_argument before any allocation).
DescentDiagnostics descent_diagnostics(MatrixRef<const float> g, MatrixRef<const float> g_batch,
                                       MatrixRef<const float> d, const HessianVectorProduct<float>& hvp);
DescentDiagnostics descent_diagnostics(MatrixRef<const double> g, MatrixRef<const double> g_batch,
                                       MatrixRef<const double> d, const HessianVectorProduct<double>& hvp);

/// The random-feature (teacher–student) least-squares model of algorithms.md §4b.3:
/// f(W) = ½ E‖(W − W*) x‖², x ~ N(0, Σ), for W, W* of shape rows × cols and Σ (cols × cols,
/// symmetric positive definite). With E = W − W*:
///     f(W) = ½ tr(E Σ Eᵀ),   G = E Σ,   H D = D Σ,
///     G̃ = E Σ̂_b with Σ̂_b = (1/b) Σ_k x_k x_kᵀ, x_k = L z_k, Σ = L Lᵀ, z_k ~ N(0, I)
/// (an unbiased mini-batch gradient). Host memory, double precision; every method costs one or
/// two products of a rows × cols matrix with a cols × cols (or cols × b) one. The built-in case
/// of descent_diagnostics(): everything is exact, so the second-order model is the loss itself.
class RandomFeatureModel {
 public:
  RandomFeatureModel() = default;

  /// A model from an explicit teacher W* (rows × cols) and covariance Σ (cols × cols). Errors:
  /// empty or mismatched shapes → invalid_argument; NaN/Inf → non_finite_input; Σ not symmetric
  /// (relative 1e-12) or not positive definite (Cholesky fails) → invalid_argument. On error
  /// `out` is unchanged.
  static Status create(MatrixRef<const double> teacher, MatrixRef<const double> covariance,
                       RandomFeatureModel& out);
  /// A random instance: W* with iid N(0, 1/cols) entries and Σ = Q diag(eigenvalues) Qᵀ with a
  /// Haar-distributed orthogonal Q, both from `seed`. eigenvalues.size() = cols, all > 0. Both
  /// factories throw nothing: an allocation that fails (cols² doubles, several times) →
  /// out_of_memory, `out` unchanged.
  static Status random(index_t rows, index_t cols, const std::vector<double>& eigenvalues, std::uint64_t seed,
                       RandomFeatureModel& out);

  index_t rows() const { return rows_; }
  index_t cols() const { return cols_; }
  /// W* (row-major) and Σ (row-major).
  const std::vector<double>& teacher() const { return teacher_; }
  const std::vector<double>& covariance() const { return sigma_; }

  /// f(W). w: rows × cols. NaN when w is of another shape, contains NaN/Inf or memory runs out;
  /// +∞ when f is beyond the double range (finite w near ±DBL_MAX).
  double loss(MatrixRef<const double> w) const;
  /// g = (W − W*) Σ. The methods below throw nothing and leave their output unchanged on error:
  /// a shape or layout mismatch → invalid_argument; NaN/Inf in the input → non_finite_input; a
  /// result beyond the double range (finite inputs near ±DBL_MAX) → out_of_range; an
  /// allocation that fails → out_of_memory.
  Status gradient(MatrixRef<const double> w, MatrixRef<double> g) const;
  /// g = (W − W*) Σ̂_b with `batch` fresh samples from `rng` (advances it by batch·cols normals;
  /// on error it is left as it was). Allocates cols·batch doubles twice.
  Status batch_gradient(MatrixRef<const double> w, index_t batch, Rng& rng, MatrixRef<double> g) const;
  /// hd = D Σ.
  Status hessian_vector(MatrixRef<const double> d, MatrixRef<double> hd) const;
  /// descent_diagnostics() at W for update D, with the exact G and H D of the model and the
  /// caller's mini-batch gradient (pass the full gradient to get γ = 1).
  DescentDiagnostics diagnostics(MatrixRef<const double> w, MatrixRef<const double> d,
                                 MatrixRef<const double> g_batch) const;

 private:
  index_t rows_ = 0, cols_ = 0;
  std::vector<double> teacher_, sigma_, chol_;  // row-major; chol_ = L (lower)
};

}  // namespace schatten::surrogate
