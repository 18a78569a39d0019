// SPDX-License-Identifier: Apache-2.0
/// \file
/// QDWH: the polar decomposition A = U_p H by the QR-based dynamically weighted Halley
/// iteration (Nakatsukasa, Bai, Gygi 2010; Nakatsukasa, Higham 2013), converged to working
/// precision in at most 6 iterations in double for condition numbers up to 1e16.
#pragma once

#include <algorithm>
#include <vector>

#include "schatten/core/matrix_ref.hpp"
#include "schatten/core/status.hpp"
#include "schatten/core/types.hpp"
#include "schatten/core/workspace.hpp"

namespace schatten {

/// Options of qdwh(). Every field has a default.
struct QdwhOptions {
  /// Iteration precision: automatic (= the input's), fp32 or fp64.
  Precision compute = Precision::automatic;
  /// l₀, a lower bound of σ_min(A)/α (α ≥ ‖A‖₂ the scaling). < 0: estimated from a shifted
  /// Cholesky-QR of A/α and inverse iteration (costs about one QR-type iteration, saves up to
  /// two); 0: the unit roundoff of the compute precision (JAX's worst-case choice; 6 iterations
  /// in double); > 0: this value, raised to kQdwhSmallestLowerBound (1e-300 counts as 2⁻⁵⁸).
  /// A given l₀ is the caller's statement of which singular values matter: those below l₀·α
  /// are not waited for. They grow about threefold per iteration and catch up while the iterate
  /// still moves (a geometric spectrum with l₀ = 0.5 for κ = 1e6: 15 iterations against 5;
  /// not_converged once that passes max_iterations), but a few small ones among converged
  /// values move it too little for the stopping rule to see, and stay short of 1 with status ok
  /// (one at 1e-8·α with l₀ = 0.5 ends at 6e-7 in double). So pass a value that is a lower bound
  /// of the directions you need (1e-3 for gradient matrices whose directions below 1e-3·α are
  /// noise, algorithms.md §3.3 [P]), else leave the estimate.
  /// In fp32 l₀ is raised to at least 1e-3 so that the Cholesky-QR steps stay stable
  /// (docs/kernels/qdwh.md); the singular values between the bound (given or estimated, not
  /// below the QR's noise level (m + k)·u_f) and 1e-3 are then waited for: the stopping rule
  /// follows the image of that bound (extra Halley steps: 8 iterations instead of 4 for a
  /// 300 × 200 matrix with σ_min/σ_max = 1e-5).
  double lower_bound = -1.0;
  /// Iteration cap (each iteration is one QR-type or Cholesky-type step), 1 … 100. Reaching it
  /// returns Status::not_converged with the iterate written. Default 16 [P], where JAX's is 10
  /// (algorithms.md §3.4): a converging run needs at most 6 in double, and the margin is for an
  /// l₀ that is too large (above: 15 iterations for κ = 1e6 at l₀ = 0.5).
  int max_iterations = 16;
  /// Finish with one Newton–Schulz step U ← (3U − U UᵀU)/2 (JAX, Elemental).
  bool polish = true;
  /// Also report max_b ‖U_b U_bᵀ − I‖_F / √k (one more Gram GEMM per matrix).
  bool compute_orthogonality_error = false;
  /// Return ⟨A, U⟩·U = tr(H)·U instead of U, the dual-norm scaling of PolarOptions (polar.hpp):
  /// ‖A‖_* · polar(A), PolarGrad's update. One read of A and U more; nothing is written when
  /// the product would overflow the output type (Status::out_of_range).
  bool dual_norm_scale = false;
};

/// Result of qdwh(). Outputs are written when status is ok or not_converged.
struct QdwhReport {
  Status status = Status::ok;
  const char* message = "";
  int iterations = 0;                 ///< largest number of QDWH iterations over the batch (polish excluded)
  int qr_iterations = 0;              ///< of which QR-based (c_k > 100)
  double lower_bound = 0;             ///< smallest l₀ used over the batch
  index_t bad_item = -1;              ///< first matrix with NaN/Inf, or that failed
  double orthogonality_error = -1.0;  ///< when requested
  explicit operator bool() const noexcept { return status == Status::ok; }
};

/// The smallest lower bound QDWH iterates from: 2⁻⁵⁸ = u/64 in double, the l₀ its estimate uses
/// when σ_min is at the rounding level (docs/kernels/qdwh.md; 6 iterations from it). A smaller
/// l > 0 carries no more information (a singular value below 2⁻⁵⁸·α is rounding in double), and
/// the weights' l⁴ underflows below ~1e-77 (NaN weights), so qdwh_weights() raises l to it.
inline constexpr double kQdwhSmallestLowerBound = 0x1p-58;

/// The weights of one QDWH iteration for the current lower bound l ∈ (0, 1]
/// (algorithms.md §3.1 [V]): d = (4(1−l²)/l⁴)^{1/3},
/// a = √(1+d) + ½√(8 − 4d + 8(2−l²)/(l²√(1+d))), b = (a−1)²/4, c = a + b − 1, and the next bound
/// l' = l(a + b l²)/(1 + c l²), for l raised to kQdwhSmallestLowerBound. Returns (3, 1, 3)
/// (Halley) once |1 − l| ≤ 5ε (double), and for l ≤ 0 or NaN.
struct QdwhWeights {
  double a = 3, b = 1, c = 3, next_lower = 1;
  /// The step's map of one singular value, f(x) = x(a + b x²)/(1 + c x²), capped at 1: the
  /// image of x ∈ [0, 1] after one iteration with these weights (next_lower = image(l)). f is
  /// increasing on [0, 1], so the image of a lower bound is a lower bound of the next iterate.
  double image(double x) const { return std::min(1.0, x * (a + b * x * x) / (1.0 + c * x * x)); }
};
QdwhWeights qdwh_weights(double l);
/// Iterations until |1 − l| ≤ 5u from l₀ (u = unit roundoff): the count exact arithmetic predicts.
int qdwh_predicted_iterations(double l0, double unit_roundoff);

/// Polar decomposition of every matrix of a batch: u[b] = U_p with a[b] = U_p H.
///
/// Math: X₀ = A/α with α ≈ 1.02·‖A‖₂ (power iteration); X_{k+1} = X_k (a I + b XᵀX)(I + c XᵀX)⁻¹
/// with dynamic weights from l_k. While c_k > 100 the step uses the inverse-free QR form
/// [√c X; I] = [Q₁; Q₂] R, X ← (b/c) X + (a − b/c)/√c · Q₁Q₂ᵀ, with the QR computed by shifted
/// Cholesky-QR3 (Fukaya et al. 2020: stable while κ([√c X; I]) ≤ √(1+c) stays below about
/// u⁻¹/√(11 mn)); afterwards the Cholesky form X ← (b/c) X + (a − b/c) X (I + cXᵀX)⁻¹.
/// Stops when |1 − l_k| ≤ 5u and ‖X_k − X_{k−1}‖_F/√k ≤ (5u)^{1/3} (Elemental's rule), and,
/// when l₀ was raised above the bound (fp32, or a restart after a breakdown), when the bound's
/// image under the same maps is within 5u of 1 too; when the bound is at the QR's noise level
/// (rank-deficient A), the image of u within 5u of 1 stands in for the dx test; then polishes.
/// The transpose trick applies (iterates on the k × k Gram, k = min(rows, cols)).
/// Cost per matrix (m = max, k = min): QR step ≈ 11mk² + 8k³, Cholesky step ≈ 4mk² + k³/3,
/// l₀ estimate ≈ 8mk² + k³, polish 4mk²; see qdwh_gemm_shapes(). Memory: 4mk + 3k² + O(m).
/// Accuracy (double): ‖A − U H‖/‖A‖ and ‖UᵀU − I‖ of order k·u for κ up to 1e16
/// (tests/kernels/test_qdwh.cpp). Rank-deficient A: U is the partial isometry's on the range of
/// A; directions whose singular values rounding made (about u·‖A‖₂ and below) are lifted, to 1
/// in double and to between 0 and 1 in fp32 (docs/kernels/qdwh.md, "Float: rank-deficient
/// inputs"); only exact zero columns or rows stay zero. In fp32, singular values between the
/// bound and the raised l₀ = 1e-3 converge through extra Halley steps (QdwhOptions::lower_bound).
/// Determinism: as polar(). Synchronous.
/// Bad input: NaN/Inf → non_finite_input (nothing written); all-zero matrices give zero; any
/// finite input is normalised without overflow (docs/conventions.md, Precision); an h entry
/// beyond the output type's range → out_of_range with bad_item (nothing written).
/// \param h optional output (k × k per matrix): the symmetric factor on the short side,
///          A = U_p H when rows ≥ cols and A = H U_p when rows < cols; pass an empty batch
///          (data == nullptr) not to compute it (saves one GEMM).
QdwhReport qdwh(BatchedMatrixRef<const float> a, BatchedMatrixRef<float> u, const QdwhOptions& options = {},
                Workspace* workspace = nullptr, BatchedMatrixRef<float> h = {});
QdwhReport qdwh(BatchedMatrixRef<const double> a, BatchedMatrixRef<double> u, const QdwhOptions& options = {},
                Workspace* workspace = nullptr, BatchedMatrixRef<double> h = {});

/// Checks options without touching data: nullptr when valid, else a static message.
const char* check_qdwh_options(const QdwhOptions& options);

/// One operation of a kernel's cost model, C (m × n) from an inner dimension k, `count` times.
/// GEMM: 2mnk flops. TRSM (triangular k = m or n): mnk flops. Cholesky of m × m: m³/3 flops.
/// SYRK (symmetric C = A Aᵀ, m = n, one triangle computed): mnk = m²k flops, half a GEMM (the
/// diagonal's extra mk is not counted).
enum class OpKind { gemm, trsm, cholesky, syrk };
struct GemmShape {
  index_t m = 0, n = 0, k = 0;
  int count = 0;
  OpKind kind = OpKind::gemm;
  double flops() const {
    const double base = double(m) * double(n) * double(k) * count;
    return kind == OpKind::gemm ? 2.0 * base : kind == OpKind::cholesky ? base / 3.0 : base;
  }
};

/// Σ flops() of a list of operations (a cost model's total).
inline double total_flops(const std::vector<GemmShape>& ops) {
  double f = 0.0;
  for (const GemmShape& g : ops)
    f += g.flops();
  return f;
}

/// The dense operations of QDWH on one rows × cols matrix with the given numbers of QR-type and
/// Cholesky-type iterations (the l₀ estimate and the polish included when requested), as
/// executed by the Kokkos implementation; vector operations of the estimators are left out.
std::vector<GemmShape> qdwh_gemm_shapes(index_t rows, index_t cols, int qr_iterations,
                                        int cholesky_iterations, bool estimate_lower_bound, bool polish);

}  // namespace schatten
