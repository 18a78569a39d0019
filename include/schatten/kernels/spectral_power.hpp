// SPDX-License-Identifier: Apache-2.0
/// \file
/// Spectral reshaping U Σ^α Vᵀ for α ∈ [−1, 1] without an SVD (Schatten-p Muon uses α = 1/p,
/// Freon α = 1 − 2c), Schatten-q norms, and the rational approximations behind them.
///
/// Method [P] (docs/kernels/spectral_power.md): QDWH gives A = U_p H with H = V Σ Vᵀ accurate
/// to working precision (backward stable), then U Σ^α Vᵀ = U_p g(H) with g a rational function
/// of H evaluated by shifted Cholesky solves (real positive shifts: every system is SPD):
///   0 < α < 1:  g(x) = Σ_j w_j x/(x + t_j) ≈ x^α,
///   −1 < α < 0: g(x) = [Σ_j w_j/(x + t_j)] · x/(x + φ) ≈ x^α,
///   α = −1:     g(x) = x/(x + φ)²,
/// with φ = floor · ‖A‖₂. The weights and poles are fitted by the library itself
/// (rational_power_approximation), and the rational stage runs in double.
#pragma once

#include <vector>

#include "schatten/core/matrix_ref.hpp"
#include "schatten/core/status.hpp"
#include "schatten/core/types.hpp"
#include "schatten/core/workspace.hpp"
#include "schatten/kernels/qdwh.hpp"

namespace schatten {

/// A rational approximation g(x) ≈ x^α on [floor, 1] in one of the forms above.
struct RationalPower {
  enum class Form {
    shifted_ratio,       ///< Σ w_j x/(x + t_j)                        (0 < α < 1)
    filtered_stieltjes,  ///< [Σ w_j/(x + t_j)]·x/(x + floor)   (−1 < α < 0)
    filtered_inverse     ///< x/(x + floor)²                       (α = −1)
  };
  Form form = Form::shifted_ratio;
  double alpha = 0.5;
  double floor = 1e-6;
  std::vector<double> poles;    ///< t_j > 0
  std::vector<double> weights;  ///< w_j
  /// max over [floor, 1] of |Σ-part(x)/x^α − 1| (without the filter), measured on 4000
  /// log-spaced points when the fit was made.
  double fit_error = 0.0;
  /// g(x), filter included.
  double operator()(double x) const;
};

/// Fits g for x^α on [floor, 1] with relative error ≤ tolerance (before the filter): poles
/// geometric on [floor·10^{−a}, 10^{b}] with a ∈ [0, 1] and b ∈ [−1, 3] searched on a grid,
/// weights by linear least squares in relative error on 400 log-spaced points, the number of
/// poles increased from 3 until the error, measured on 4000 points, is at most `tolerance`.
/// Below the floor g is never an amplification: g(x) ≤ 20·x·floor^{α−1} for x < floor (all
/// poles are ≥ floor/10), and g(0) = 0. Deterministic; results are cached per (α, floor,
/// tolerance). Typical sizes: 8–10 poles for tolerance 1e-3 and floor 1e-5.
/// Returns invalid_argument unless α ∈ [−1, 0) ∪ (0, 1), 0 < floor < 1 and
/// 1e-8 ≤ tolerance ≤ 0.1; not_converged if 24 poles are not enough (out is then the best fit).
Status rational_power_approximation(double alpha, double floor, double tolerance, RationalPower& out);

/// Options of spectral_power(). Every field has a default.
struct SpectralPowerOptions {
  /// The exponent α ∈ [−1, 1]: 1 returns A, 0 the polar factor (QDWH), α < 0 the inverted spectrum.
  double alpha = 0.5;
  /// φ/‖A‖₂ (0 < floor < 1): singular values below φ = floor·‖A‖₂ are rolled off towards zero
  /// instead of being raised to α (never amplified into noise): there g(σ) ≤ 20·σ·φ^{α−1}, and
  /// zero singular values give zero. Above φ the output is within `tolerance` of σ^α (relative),
  /// plus φ/σ for α < 0 (the filter x/(x + φ); 1e-3 at σ = 1e-3·‖A‖₂ with the default), and
  /// 2φ/σ for α = −1 (filtered twice so that g(0) = 0).
  double floor = 1e-6;
  /// Relative accuracy of the rational approximation on [floor, 1]·‖A‖₂.
  double tolerance = 1e-3;
  /// The polar decomposition inside; its compute precision is the iteration precision. The
  /// rational stage (k × k) always runs in double.
  QdwhOptions qdwh{};
};

struct SpectralPowerReport {
  Status status = Status::ok;
  const char* message = "";
  int qdwh_iterations = 0;  ///< largest over the batch
  int poles = 0;            ///< shifted solves per matrix (0 for α ∈ {0, 1}; the filter adds one)
  double fit_error = 0.0;   ///< of the rational approximation
  index_t bad_item = -1;
  explicit operator bool() const noexcept { return status == Status::ok; }
};

/// out[b] = U g(Σ) Vᵀ ≈ U Σ^α Vᵀ for every matrix of a batch (see the file comment).
///
/// Preconditions, bad input and memory: as polar(). Cost per matrix (m = max, k = min):
/// QDWH (qdwh.hpp) + 2mk² for H + per pole k³/3 (Cholesky) + 2k³ (solves) + k² + 2mk² for
/// U_p g(H). Accuracy (tests/kernels/test_spectral_power.cpp): relative error of every output
/// singular value ≤ 1e-2 in float for σ/σ_max ∈ [1e-3, 1] and α ∈ {0.75, 0.5, 0.25, 0.1,
/// −1/3, −1/2} (measured: ≤ 1.2e-3 at 80×120, 150×64 and 512²). Determinism: as polar(). Synchronous.
SpectralPowerReport spectral_power(BatchedMatrixRef<const float> a, BatchedMatrixRef<float> out,
                                   const SpectralPowerOptions& options = {}, Workspace* workspace = nullptr);
SpectralPowerReport spectral_power(BatchedMatrixRef<const double> a, BatchedMatrixRef<double> out,
                                   const SpectralPowerOptions& options = {}, Workspace* workspace = nullptr);

/// Checks options without touching data: nullptr when valid, else a static message.
const char* check_spectral_power_options(const SpectralPowerOptions& options);

/// Options of schatten_norm(): the floor and tolerance of the rational stage and QDWH's options.
struct SchattenNormOptions {
  double floor = 1e-7;
  double tolerance = 1e-6;
  QdwhOptions qdwh{};
};

/// ‖A_b‖_{S_q} = (Σ σ_i^q)^{1/q} for every matrix of a batch, q ∈ (0, ∞], into norms[b].
/// Without an SVD: q = 2 from the entries; q = ∞ by power iteration (relative accuracy 1e-10);
/// otherwise through the identity Σσ^q = ⟨A, U Σ^{q−1} Vᵀ⟩ = tr(H^q) (algorithms.md 4b.1, 5.4;
/// q = 1 is the nuclear norm tr(H) = ⟨A, polar(A)⟩), with H from QDWH and
/// H^q = H^{⌊q⌋}·g(H), g the rational approximation of the fractional power (no filter). Singular
/// values below floor·‖A‖₂ are rolled off (their contribution is at most 20·k·floor^q·‖A‖₂^q).
Status schatten_norm(BatchedMatrixRef<const float> a, double q, double* norms,
                     const SchattenNormOptions& options = {}, Workspace* workspace = nullptr);
Status schatten_norm(BatchedMatrixRef<const double> a, double q, double* norms,
                     const SchattenNormOptions& options = {}, Workspace* workspace = nullptr);

}  // namespace schatten
