// SPDX-License-Identifier: Apache-2.0
/// \file
/// Coefficient schedules of the Newton–Schulz family: per-iteration odd polynomials, their
/// matching input normalisation, and the published presets.
///
/// A Newton–Schulz step with coefficients (a, b, c) maps X to a X + b (X Xᵀ) X + c (X Xᵀ)² X,
/// which applies the odd polynomial p(σ) = a σ + b σ³ + c σ⁵ to every singular value of X and
/// keeps the singular vectors (algorithms.md §1.2). A schedule composes such steps; the composite
/// scalar map p_T ∘ … ∘ p_1 decides how close the result is to the polar factor U Vᵀ.
#pragma once

#include <string>
#include <vector>

namespace schatten {

/// p(x) = a x + b x³ + c x⁵ (c = 0 gives a cubic).
struct OddQuintic {
  double a = 0.0;
  double b = 0.0;
  double c = 0.0;
  /// Evaluates p at x (Horner in x²).
  constexpr double operator()(double x) const {
    const double x2 = x * x;
    return x * (a + x2 * (b + x2 * c));
  }
  friend constexpr bool operator==(const OddQuintic& l, const OddQuintic& r) {
    return l.a == r.a && l.b == r.b && l.c == r.c;
  }
};

/// What a schedule does when asked for more iterations than it has rows.
enum class ScheduleTail {
  repeat_last,  ///< keep applying the last row (fixed tuples, Polar Express tables)
  cycle,        ///< start again from the first row
  error         ///< refuse (Status::invalid_argument): the table has an exact length
};

/// How the input is scaled before the first step. The polynomials assume σ_max(X) ≤ 1.
struct Normalization {
  enum class Kind {
    frobenius,  ///< X ← A / (safety · ‖A‖_F + eps); ‖A‖_F ≥ σ_max(A), so σ_max(X) ≤ 1/safety
    none,       ///< X ← A: the caller guarantees σ_max(A) ≤ 1 (e.g. its own Schatten-4 scaling)
    /// X ← A / (safety · ‖A‖_S4 + eps) with ‖A‖_S4 = (Σ σ_i⁴)^{1/4} = ‖A Aᵀ‖_F^{1/2}. Still
    /// ‖A‖_S4 ≥ σ_max(A), so σ_max(X) ≤ 1/safety, but ‖A‖_S4 ≤ ‖A‖_F (equal for rank one, k^{1/4}
    /// times smaller for a flat spectrum of k values), so the small singular values start
    /// larger and fewer steps reach the same accuracy (SMuon's normalisation, algorithms.md
    /// §4a.3; optax's Schatten-4 pre-scaling, anchors.md b1). Newton–Schulz family only (QDWH
    /// ignores the schedule). Cost: none in GEMMs — the norm comes from the first step's Gram,
    /// which that step reuses — plus one pass over the Gram and one over X, and one more host
    /// read-back per call (docs/conventions.md "Normalisation and its epsilon").
    schatten4,
    /// Almost-orthogonal-layer (AOL) row scaling: X ← D A with d_i = 1/(safety·√r_i + eps) and
    /// r_i = Σ_j |(A Aᵀ)_ij| along the short side of A (its rows when rows ≤ cols, else its
    /// columns: X ← A D from Aᵀ A). The Schur test gives σ_max(D A) ≤ 1/safety without any norm
    /// estimate, and D A starts its small singular values much further along than A/‖A‖_F.
    /// **It changes the target:** the iteration approaches the polar factor of D A, which equals
    /// polar(A) only when D is a multiple of I (rows of equal weight and equal coupling); the
    /// rows (columns) of the update are re-weighted. Turbo-Muon's pre-conditioning (Boissin et
    /// al., arXiv 2512.04632) and optax's `preconditioning='aol'` (anchors.md b1), which use it
    /// to drop one Newton–Schulz step; optax clips r_i at eps where this adds eps to √r_i (the
    /// same for every row with r_i ≫ eps²). Newton–Schulz family only (QDWH ignores the
    /// schedule). Cost: no extra GEMM (D comes from the first step's Gram, which that step
    /// reuses as D G D), one pass over the Gram for the row sums and one over X and the Gram;
    /// no host read-back (docs/kernels/polar.md "AOL pre-scaling").
    aol
  };
  Kind kind = Kind::frobenius;
  /// Multiplier of the norm (> 0). 1.01 / 1.02 in the Polar Express references: a margin for
  /// rounding of the normalisation in low precision (algorithms.md §2.2).
  double safety = 1.0;
  /// Absolute term added to the scaled norm (≥ 0). Default 0: the library computes the norm in
  /// double with rescaling and maps an all-zero input to zero explicitly, so no epsilon is needed
  /// to avoid 0/0. The references use 1e-7 (Keller Jordan, PyTorch), 1e-8 (optax), 1e-6
  /// (modded-nanogpt Polar Express); with it, inputs of norm ≲ eps come out shrunk instead of
  /// orthogonalised (the silent failure of anchors.md c.6). Set it to reproduce a reference.
  double eps = 0.0;

  /// ν, the number the kernel divides a matrix with singular values `sigma` by: safety·‖A‖ + eps
  /// with ‖A‖_F = (Σσ²)^{1/2} or ‖A‖_S4 = (Σσ⁴)^{1/4}, or 1 for `none`; so the iteration starts
  /// from σ_i/ν. In double, rescaled by max σ (no overflow); for predictions of the scalar map
  /// (benchmarks, docs), not used by the kernel itself, which computes the norm from the matrix.
  /// NaN for `aol`, whose row scaling depends on the singular vectors too, not only on σ.
  double scale(const std::vector<double>& sigma) const;
};

/// The most polynomial steps polar() runs and a generated schedule holds
/// (PolarOptions::iterations, kaon()'s steps, PolarExpressParams::steps).
inline constexpr int kPolarMaxIterations = 1000;

/// A sequence of odd polynomials plus the normalisation it was designed for.
struct CoefficientSchedule {
  std::string name;               ///< preset name, or free text for user tables
  std::vector<OddQuintic> steps;  ///< row t is applied at iteration t (0-based)
  ScheduleTail tail = ScheduleTail::repeat_last;
  Normalization normalization{};

  /// True when the schedule can run `iterations` steps (always, unless tail == error or the
  /// table is empty).
  bool covers(int iterations) const;
  /// Row used at iteration t (0-based). Precondition: covers(t + 1).
  const OddQuintic& at(int t) const;
  /// The composite scalar map applied to a singular value x of the *normalised* input:
  /// p_{T-1}(…p_0(x)). Exact double arithmetic; predicts what the matrix iteration does to σ.
  double apply(double x, int iterations) const;
  /// max |apply(x, iterations)| over x ∈ [0, 1], sampled on 4097 equispaced and 4097
  /// log-spaced points (1e-8 … 1), which resolve the equioscillation of the published tables
  /// (a value between samples can exceed it slightly: callers that need a bound add a margin).
  /// Bounds the spectral norm of the iteration's output for a normalised input (σ_max ≤ 1).
  /// The polynomial spectral clip scales its sign functions with it. Cached per rows used and
  /// iterations (thread-safe; about 0.3 ms for 8 steps when not cached).
  double max_abs(int iterations) const;
};

/// Published and classical schedules (algorithms.md §1.2, §2.3; anchors.md (e)).
namespace schedules {
/// Keller Jordan's quintic (3.4445, −4.7750, 2.0315), repeated; Frobenius normalisation.
/// [V] KellerJordan/Muon, Moonlight, torch.optim.Muon, optax. Converges into the band
/// [0.68, 1.13] for σ ∈ [1e-2, 1], not to 1 (p(1) = 0.701).
CoefficientSchedule keller_jordan();
/// Classical quintic Newton–Schulz (15/8, −10/8, 3/8): converges to 1 (p(1) = 1, p'(1) = 0)
/// but lifts small singular values slowly (slope 15/8 at 0).
CoefficientSchedule classical_quintic();
/// Classical cubic Newton–Schulz (3/2, −1/2, 0), also the standard "polish" step.
CoefficientSchedule classical_cubic();
/// You Jiacheng's 5-row table [T] (as reproduced in NoahAmsel/gram-newton-schulz
/// coefficients.py, citing the author's post); repeat-last.
CoefficientSchedule you_jiacheng();
/// The Polar Express reference default: optimal_composition(l = 1e-3, T = 10, safety 1e-2,
/// cushion 0.02), computed by polar_express_coefficients(); normalisation ‖A‖_F · 1.01;
/// repeat-last after row 10 [V] NoahAmsel/PolarExpress (`PolarExpress(G, steps)`).
CoefficientSchedule polar_express();
/// The 5-step Polar Express table deployed in modded-nanogpt / nanochat:
/// optimal_composition(l = 1e-3, T = 5, safety 2e-2, cushion 0.02), normalisation ‖A‖_F · 1.02.
/// [V] table, [C] reproduced by our generator.
CoefficientSchedule polar_express_5();
/// The 5-step table of the SMuon repository's MuAdam (deel-ai-papers/schatten-muon 749ba8d,
/// smuon/optimizers/muadam.py): optimal_composition(l = 1e-3, T = 5, safety 1e-2, cushion 0.03),
/// normalisation ‖A‖_F (safety 1; the preset adds its ε = 1e-7). [V] parameters, [C] rows
/// computed by our generator (first row 8.1583, −22.5325, 16.1437, algorithms.md §2.3).
CoefficientSchedule smuon_muadam();
/// CANS (Grishina et al., arXiv 2506.10935): 5 rows from Remez with an adaptive interval, as
/// tabulated (4 decimals) in NVIDIA-NeMo/Emerging-Optimizers [T]; ‖A‖_F normalisation,
/// repeat-last. 5 steps map [1e-3, 1] into [0.884, 1.120] (docs/kernels/coefficients.md).
CoefficientSchedule cans();
/// DeepSeek-V4's hybrid schedule as tabulated in Emerging-Optimizers [T]: Keller Jordan's row
/// 8 times (fast lift of small σ), then (2, −1.5, 0.5) twice (p(1) = 1, p'(1) = 0: a polish that
/// converges); ‖A‖_F normalisation, repeat-last. 10 steps map [1e-3, 1] into [1, 1.00054].
CoefficientSchedule deepseek_v4();
/// The relaxed cubic 5-step schedule (arXiv 2606.00371) as tabulated in Emerging-Optimizers
/// [T]: five cubic rows (c = 0: two GEMMs per step instead of three), fitted for the band above
/// 7e-3; tail `error` (exactly 5 steps, as the reference insists). 5 steps map [7e-3, 1] into
/// [0.774, 1.300].
CoefficientSchedule cubic5();
/// Kaon's chaotic-map random spectrum [T] (algorithms.md §4b.2, two consistent third-party
/// implementations of the paper's pseudocode): `steps` rows of p(x) = 4.1·x(1 − x²)²
/// = 4.1x − 8.2x³ + 4.1x⁵, the last one divided by 1.175 (the output scale), tail `error`.
/// With Frobenius normalisation the singular values land in [0, 0.9987] (max p = 4.1·(1/√5)·(4/5)²
/// = 1.17349 at 1/√5); the singular vectors are those of the input. Not an orthogonalisation:
/// the map is chaotic on [0, 1.1735], so the spectrum is deterministic but scrambled.
CoefficientSchedule kaon(int steps = 5);
/// Looks a preset up by its name ("keller_jordan", "classical_quintic", "classical_cubic",
/// "you_jiacheng", "polar_express", "polar_express_5", "cans", "deepseek_v4", "cubic5", "kaon").
/// Returns false for an unknown name.
bool by_name(const std::string& name, CoefficientSchedule& out);
/// The names accepted by by_name(), in a stable order.
std::vector<std::string> names();
}  // namespace schedules

}  // namespace schatten
