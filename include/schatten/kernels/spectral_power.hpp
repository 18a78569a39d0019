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
/// with x = σ/α̂ and φ = floor · α̂, where α̂ ≈ ‖A‖₂ is QDWH's scale (1.02 × a power-iteration
/// estimate, between 0.938 and 1.02 of ‖A‖₂: docs/kernels/qdwh.md). The weights and poles are
/// fitted by the library itself (rational_power_approximation) on [floor, rational_fit_top],
/// which holds x = σ_max/α̂ ≤ 1/0.938 = 1.066, and the rational stage runs in double.
#pragma once

#include <vector>

#include "schatten/core/matrix_ref.hpp"
#include "schatten/core/status.hpp"
#include "schatten/core/types.hpp"
#include "schatten/core/workspace.hpp"
#include "schatten/kernels/coefficients.hpp"
#include "schatten/kernels/polar.hpp"
#include "schatten/kernels/qdwh.hpp"

namespace schatten {

/// The top of the interval the rational approximations are fitted on, [floor, 1.1]: above 1,
/// since x = σ/α̂ reaches 1.066 when QDWH's σ_max estimate is at its documented worst (8 % low,
/// docs/kernels/qdwh.md). A fit to 1 alone measured relative errors up to 1.4e-3 at x ≤ 1.1 for a
/// tolerance of 1e-3 (α = 0.25, floor 1e-6): the top singular values missed the tolerance.
inline constexpr double rational_fit_top = 1.1;

/// The smallest floor of the rational approximations: the fit's pole grid spans
/// [floor/10, 10³], whose ratio 10⁴/floor overflows double below ~5.6e-305 (a subnormal floor
/// gave NaN weights reported as a fit with error 0). Far below the floors the fit reaches with
/// 24 poles (about 1e-30 at tolerance 1e-3; smaller ones are not_converged).
inline constexpr double rational_smallest_floor = 1e-300;

/// A rational approximation g(x) ≈ x^α on [floor, rational_fit_top] in one of the forms above.
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
  /// max over [floor, rational_fit_top] of |Σ-part(x)/x^α − 1| (without the filter), measured
  /// on 4000 log-spaced points when the fit was made.
  double fit_error = 0.0;
  /// g(x), filter included.
  double operator()(double x) const;
};

/// Fits g for x^α on [floor, rational_fit_top] with relative error ≤ tolerance (before the
/// filter): poles geometric on [floor·10^{−a}, 10^{b}] with a ∈ [0, 1] and b ∈ [−1, 3] searched
/// on a grid, weights by linear least squares in relative error on 400 log-spaced points, the
/// number of poles increased from 3 until the error, measured on 4000 points, is at most
/// `tolerance`.
/// Below the floor g is never an amplification: g(x) ≤ about 20·x·floor^{α−1} for x < floor
/// (all poles are ≥ floor/10; measured up to 20.4, docs/kernels/spectral_power.md), and g(0) = 0.
/// Deterministic; results are cached per (α, floor, tolerance). Typical sizes: 8–10 poles for
/// tolerance 1e-3 and floor 1e-5.
/// Returns invalid_argument unless α ∈ [−1, 0) ∪ (0, 1), rational_smallest_floor ≤ floor < 1 and
/// 1e-8 ≤ tolerance ≤ 0.1; not_converged if 24 poles are not enough (out is then the best fit);
/// out_of_memory when an allocation fails (out untouched; no exception leaves the call).
Status rational_power_approximation(double alpha, double floor, double tolerance, RationalPower& out);

namespace detail {
/// rational_power_approximation() without the copy: `out` points at the cached fit (it lives
/// until the program ends), so that the kernels read it without allocating on the host after
/// its first use. Same statuses; `out` is left alone on invalid_argument.
Status cached_rational_power(double alpha, double floor, double tolerance, const RationalPower*& out);
}  // namespace detail

/// A Newton–Schulz coefficient schedule whose composite scalar map approximates x^α
/// (docs/kernels/spectral_power.md, "Polynomial method"): with Frobenius normalisation
/// x = σ/‖A‖_F ∈ (0, 1], the T odd quintics p_{T−1} ∘ … ∘ p_0 give f(x) with
///   e^{−log_error} ≤ f(x)/x^α ≤ e^{log_error}   for x ∈ [lower, 1],
/// and f(x) = (∏_t a_t)·x + O(x³) below: tiny singular values are mapped linearly (rolled off,
/// never amplified like x^α). f is not monotone between the equioscillation points. Running it
/// costs exactly what Newton–Schulz with T steps costs (the same kernel).
struct PowerSchedule {
  CoefficientSchedule schedule;  ///< T rows, tail error, Frobenius normalisation (safety 1)
  double alpha = 0.5;
  double lower = 1e-3;            ///< the fitted interval is [lower, 1] (of σ/‖A‖_F)
  double log_error = 0.0;         ///< max |log f(x) − α log x| on 4000 log-spaced points of [lower, 1]
  double relative_error() const;  ///< e^{log_error} − 1: the worst |f/x^α − 1|
};

/// The schedule for x^α with T = `steps` quintic steps, T ∈ {5, 6, 8}, α ∈ [0, 1]: the rows of
/// the nearest tabulated exponent α_j ∈ {0, 0.01, …, 1}, fitted offline by
/// src/kernels/fit_power_schedules.py (minimax in log x^α on [1e-3, 1], continuation from the
/// identity at α = 1 and back from α = 0). log_error is measured against the requested α, so it
/// includes |α − α_j|·ln 1000 ≤ 0.035 from the rounding. [P] library choice (algorithms.md §4a.3
/// asks for minimax-polynomial kernels). Bands (tests/kernels/test_spectral_power.cpp checks them
/// on a 0.0025 grid of α): see docs/kernels/spectral_power.md; for comparison Muon's own NS5
/// (Keller Jordan) maps [1e-3, 1] into [0.47, 1.20], log error 0.47 about its best constant.
/// Returns invalid_argument for other α or T, out_of_memory when an allocation fails (out
/// untouched; no exception leaves the call). Deterministic; cheap (the error is measured on
/// 4000 points once per (α, T), then cached).
Status polynomial_power_schedule(double alpha, int steps, PowerSchedule& out);
/// True when polynomial_power_schedule() has a table for `steps` quintic steps (5, 6, 8).
bool polynomial_power_steps_tabulated(int steps);

/// How spectral_power() computes U g(Σ) Vᵀ.
enum class SpectralPowerMethod {
  rational,   ///< QDWH + rational function (see the file comment): relative error ≤ tolerance
  polynomial  ///< Newton–Schulz with polynomial_power_schedule(α, polynomial_steps): the cost of
              ///< NS with that many steps, error within the schedule's band, 0 ≤ α ≤ 1 only
};

/// Options of spectral_power(). Every field has a default.
struct SpectralPowerOptions {
  /// The exponent α ∈ [−1, 1]: 1 returns A, 0 the polar factor (QDWH), α < 0 the inverted spectrum.
  double alpha = 0.5;
  /// rational (accurate, default) or polynomial (cheap, 0 ≤ α ≤ 1; floor, tolerance and qdwh
  /// are then unused).
  SpectralPowerMethod method = SpectralPowerMethod::rational;
  /// polynomial: quintic steps T ∈ {5, 6, 8} (5 costs one Muon NS5 orthogonalisation).
  int polynomial_steps = 5;
  /// polynomial: the iteration precision and SYRK use, as PolarOptions::compute and
  /// PolarOptions::symmetric_gram (bf16/fp16 on every build). bf16/fp16 normalise by ν = 1.01·‖A‖_F
  /// (see spectral_power()). Prefer fp16 to bf16: on inputs whose ‖A‖₂ is close to ‖A‖_F, the top
  /// singular value stayed within e^0.031 (fp16) and e^0.09 (bf16, T ≤ 6) of the band (fit_error)
  /// over every tabulated α on the measured inputs, inside it at α ∈ {0.1, 0.25, 0.5, 0.75} for
  /// fp16 and for bf16 with T = 5; bf16 with T = 8 up to e^0.74 outside, and fp16 with T = 8 up
  /// to e^0.18 on rank-one rows (docs/kernels/spectral_power.md, "In 16 bits").
  Precision polynomial_compute = Precision::automatic;
  bool symmetric_gram = true;
  /// φ/‖A‖₂ (rational_smallest_floor ≤ floor < 1; ‖A‖₂ stands for QDWH's scale α̂, within [0.938,
  /// 1.02]·‖A‖₂, as in the file comment): singular values below φ = floor·‖A‖₂ are rolled off
  /// towards zero instead of being raised to α (never amplified into noise): there g(σ) ≤
  /// about 20·σ·φ^{α−1}, and zero singular values give zero. Above φ the output is within
  /// `tolerance` of σ^α (relative), plus φ/σ for α < 0 (the filter x/(x + φ); 1e-3 at
  /// σ = 1e-3·‖A‖₂ with the default), and 2φ/σ for α = −1 (filtered twice so that g(0) = 0).
  double floor = 1e-6;
  /// Relative accuracy of the rational approximation on [floor, 1]·‖A‖₂ (fitted on
  /// [floor, rational_fit_top]·α̂, which holds it whatever QDWH's scale α̂ within its bounds).
  /// When 24 poles cannot reach it (tolerances near 1e-8 with a small floor: α = 0.5 at
  /// floor 1e-6 reaches 2e-7), spectral_power() still writes the output with the best fit and
  /// reports Status::not_converged, with SpectralPowerReport::fit_error the accuracy reached.
  double tolerance = 1e-3;
  /// The polar decomposition inside; its compute precision is the iteration precision. The
  /// rational stage (k × k) always runs in double.
  QdwhOptions qdwh{};
};

struct SpectralPowerReport {
  Status status = Status::ok;
  const char* message = "";
  int qdwh_iterations = 0;   ///< largest over the batch
  int poles = 0;             ///< shifted solves per matrix (0 for α ∈ {0, 1}; the filter adds one)
  double fit_error = 0.0;    ///< of the rational approximation (> tolerance: not_converged), or
                             ///< the polynomial's relative_error()
  int polynomial_steps = 0;  ///< Newton–Schulz steps of the polynomial method (0: rational)
  index_t bad_item = -1;
  explicit operator bool() const noexcept { return status == Status::ok; }
};

/// out[b] = U g(Σ) Vᵀ ≈ U Σ^α Vᵀ for every matrix of a batch (see the file comment).
///
/// Preconditions, bad input and memory: as polar(); an output entry beyond the output type's
/// range → out_of_range with bad_item (nothing written). Cost per matrix (m = max, k = min):
/// QDWH (qdwh.hpp) + 2mk² for H + per pole k³/3 (Cholesky) + 2k³ (solves) + k² + 2mk² for
/// U_p g(H), + 2k³ for α < 0 (the filter's product S(H)·H, or at α = −1 its second solve). Accuracy
/// (tests/kernels/test_spectral_power.cpp): relative error of every output singular value ≤ 1e-2 in float for
/// σ/σ_max ∈ [1e-3, 1] and α ∈ {0.75, 0.5, 0.25, 0.1, −1/3, −1/2} (measured: ≤ 1.2e-3 at 80×120, 150×64 and
/// 512²). Determinism: as polar(). Synchronous.
///
/// method polynomial: out = ν^α · U f(Σ/ν) Vᵀ with ν = ‖A‖_F (1.01·‖A‖_F when
/// polynomial_compute is bf16 or fp16: a margin for 16-bit rounding at x = 1, where the
/// composites are steepest; docs/kernels/spectral_power.md "In 16 bits") and f the schedule of
/// polynomial_power_schedule(α, polynomial_steps), run by the Newton–Schulz kernel (polar()'s
/// cost for T steps, 3 GEMMs per step, plus one scaling pass folded into the store). Every output
/// singular value is σ^α·e^{±log_error} for σ ∈ [1e-3·ν, ν]; below, f is linear (roll-off). α = 1
/// returns A, α = 0 the schedule's polar approximation (not QDWH). α < 0 → invalid_argument.
SpectralPowerReport spectral_power(BatchedMatrixRef<const float> a, BatchedMatrixRef<float> out,
                                   const SpectralPowerOptions& options = {}, Workspace* workspace = nullptr);
SpectralPowerReport spectral_power(BatchedMatrixRef<const double> a, BatchedMatrixRef<double> out,
                                   const SpectralPowerOptions& options = {}, Workspace* workspace = nullptr);

/// Checks options without touching data: nullptr when valid, else a static message.
const char* check_spectral_power_options(const SpectralPowerOptions& options);

/// The Newton–Schulz options the polynomial method of spectral_power() runs for `options`: method
/// newton_schulz, the schedule of polynomial_power_schedule(options.alpha,
/// options.polynomial_steps) as many iterations, options.polynomial_compute (bf16 or fp16 also set
/// the normalisation's safety to 1.01) and options.symmetric_gram. The one construction behind the
/// kernel, its workspace (polar_workspace_bytes of `out`; the schedule's coefficients size nothing,
/// so any α gives the same bytes) and polynomial_power_iterate_bound(). With `relative_error`, also
/// the schedule's PowerSchedule::relative_error() (what SpectralPowerReport::fit_error reports),
/// from the same lookup. invalid_argument for options that check_spectral_power_options() refuses
/// or whose method is not polynomial, out_of_memory when an allocation fails (out and
/// *relative_error untouched either way).
Status polynomial_power_polar_options(const SpectralPowerOptions& options, PolarOptions& out,
                                      double* relative_error = nullptr);

namespace detail {
/// polynomial_power_polar_options() without the copy: `out` points at options built once per
/// tabulated row, compute precision and symmetric_gram (they live until the program ends; the
/// schedule's name is the row's exponent), and `relative_error` is the requested α's, cached
/// per (α, steps). So spectral_power() makes no host allocation after its first call for an α
/// (a workspace kept). Same statuses (out_of_memory included, never an exception); `out` is left
/// alone on an error.
Status cached_polynomial_power_polar_options(const SpectralPowerOptions& options, const PolarOptions*& out,
                                             double* relative_error = nullptr);
}  // namespace detail

/// A bound on the singular values of every iterate of the polynomial method, for any finite input
/// and any exponent α ∈ [0, 1], before the output's scaling by ν^α (ν = ‖A‖_F, or 1.01·‖A‖_F in 16
/// bits): the largest polar_iterate_bound() over the tabulated schedules of
/// options.polynomial_steps (the exponents 0, 0.01, …, 1, which are all the method runs), with
/// options.polynomial_compute's rounding margin. So every output singular value is at most ν^α
/// times this bound. HUGE_VAL when the options are not the polynomial method's, some schedule has
/// no bound, or an allocation fails (then not cached; no exception leaves the call). A rule that
/// lets α vary (SchattenPDirection: α = 1/p with p chosen per layer) uses it to promise a finite
/// output whatever α its criterion picks. Cost: the first call per (steps, compute) evaluates 101
/// schedules (their error measurement included, cached); later calls look it up.
double polynomial_power_iterate_bound(const SpectralPowerOptions& options);

/// How spectral_clip() computes U clip(Σ) Vᵀ.
enum class SpectralClipMethod {
  qdwh,       ///< QDWH and sign functions by QDWH in double: working precision (the default)
  polynomial  ///< Newton–Schulz only (GEMMs in the iteration precision, bf16/fp16 too): the
              ///< polar factor and the sign functions by SpectralClipOptions::polar's schedule,
              ///< accurate within its band (Emerging-Optimizers' method)
};

/// The Newton–Schulz options of the polynomial spectral clip: Polar Express, 8 steps (the
/// step count of Emerging-Optimizers' spectral_clip, anchors.md b1).
PolarOptions polynomial_clip_polar_options();

/// Options of spectral_clip(). Every field has a default: the "hardcap" σ ↦ min(σ, 1).
struct SpectralClipOptions {
  /// Singular values below `lower` are raised to it; `lower` ≤ 0 means no lower bound.
  double lower = 0.0;
  /// Singular values above `upper` are lowered to it; +∞ means no upper bound. upper > 0 and
  /// upper ≥ lower.
  double upper = 1.0;
  /// With a lower bound: singular values below φ = floor·‖A‖₂ are left as they are instead of
  /// being raised (their singular vectors are set by rounding, so raising them would add
  /// arbitrary directions; exact zeros of a rank-deficient A stay zero). Around φ the
  /// transition spans the sign function's resolution. 0: raise everything (zeros then along an
  /// arbitrary orthonormal completion, as an SVD would choose). floor ∈ [0, 1); costs one more
  /// k × k sign function.
  double floor = 1e-6;
  /// The polar decomposition A = U_p H (its compute precision is the iteration precision of
  /// U_p); the sign functions of the k × k shifted factors always run in double.
  QdwhOptions qdwh{};
  /// qdwh (working precision, the default) or polynomial (GEMMs only; `floor` and `qdwh` are then
  /// unused, see spectral_clip()).
  SpectralClipMethod method = SpectralClipMethod::qdwh;
  /// polynomial: the Newton–Schulz iteration of the polar factor and of every sign function —
  /// method newton_schulz or polar_express, schedule (Frobenius normalisation), iterations,
  /// compute precision, symmetric_gram. Default polynomial_clip_polar_options().
  PolarOptions polar = polynomial_clip_polar_options();
  /// c ∈ [0, 1]: out = (1 − c)·A + c·U clip(Σ) Vᵀ, every singular value moved the fraction c of
  /// the way to its clipped value, σ ↦ σ + c·(clip(σ) − σ), with A's singular vectors. With
  /// lower = 0 and upper = β this is Emerging-Optimizers' spectral_clipped_weight_decay(X, β, c)
  /// (leloykun's "spectral clipped weight decay"): singular values above β shrink towards β by
  /// the fraction c per call, those below are untouched. 1 (the default): the clip itself. Costs
  /// one more read of A, folded into the last pass (A may alias out).
  double blend = 1.0;
};

/// out[b] = U clip(Σ) Vᵀ, clip(σ) = max(lower, min(σ, upper)), for every matrix of a batch:
/// spectral clipping (and, with lower = 0, the spectral "hardcap" of NVIDIA-NeMo's
/// Emerging-Optimizers, after leloykun's spectral-clipping note), computed without an SVD.
/// With options.blend = c < 1, out[b] = (1 − c)·A_b + c·U clip(Σ) Vᵀ (its spectral clipped
/// weight decay for lower = 0); the accuracy figures below then scale by c.
///
/// Method [P] (docs/kernels/spectral_power.md, "Spectral clipping"): QDWH gives A = U_p H with
/// H = V Σ Vᵀ (the short side's symmetric factor, formed in double); with the projectors
/// R = ½(sign(H − φI) − sign(H − lI)) onto [φ, l) and M = ½(I − sign(y − uI)) onto y < u
/// (sign(X) the polar factor of the symmetric X, by QDWH in double),
///   y = H + R(lI − H)R,   clip = uI + M(y − uI)M·M,   out = U_p·clip,
/// y = H without a lower bound (the hardcap: one sign function), clip = y without an upper one.
/// φ = floor·‖A‖₂: with a lower bound, singular values below it are kept (floor 0: φ = 0).
/// The projectors' rounding enters squared in the directions they remove, so a singular value
/// clipped to u lands on u to working precision relative to u however far above u it lies; a
/// cap more than 2^32 below ‖A‖ is reached in stages (one more sign function each).
///
/// Preconditions, bad input and memory: as polar(); a NaN or infinite `lower` (≤ 0 is no lower
/// bound), an `upper` that is NaN or ≤ 0, or lower > upper is invalid_argument. Cost per matrix
/// (m = max, k = min): QDWH (qdwh.hpp) + 2mk² for H + per bound (and for the floor) one QDWH of
/// a k × k matrix in double, 4k³ flops for the lower bound's two products and 6k³ for the
/// upper's three (and per extra stage), + 2mk² for U_p·clip.
/// Accuracy (tests/kernels/test_spectral_power.cpp): u_iᵀ out v_i within 1e-12·σ_max of
/// clip(σ_i) in double and 1e-5·σ_max in float (measured 6e-16 and 6.2e-8 at k = 64 and 80), the
/// singular vectors those of A (leakage between directions 5.1e-15 and 1.4e-6 of σ_max·√k);
/// singular values within rounding of a bound land on it. Clipped directions land on u within
/// 1e-12·u (double) and 1e-5·u (float) for any ‖A‖/u (measured 4.4e-16 and 7.1e-8 up to
/// 1e300 and 1e30), and their coupling to kept ones is ε·u. Singular values below u are
/// themselves known only to ε·‖A‖ (the input's rounding): that is their accuracy.
/// Determinism: as polar(). Synchronous.
///
/// method polynomial [P] (docs/kernels/spectral_power.md, "Polynomial clipping"): projectors as
/// above, each polished by g(P) = P²(2I − P) (y = lI + (H − lI)g(P_l), clip = uI + (y − uI)g(M)),
/// with Newton–Schulz (options.polar) for the polar factor O = U f(Σ/ν) Vᵀ
/// (ν = safety·‖A‖_F + eps) and for each sign function, whose input H₀ − tI (t = bound/ν) is
/// scaled by 1/(1.05·max(t, B − t)), B = max_{[0,1]} |f| ≥ ‖H₀‖₂; GEMMs only, in the iteration
/// precision (bf16/fp16 included). Cost: 1 + (number of bounds) Newton–Schulz runs (m × n,
/// then k × k) + 4mk² + 6k³ per bound. Accuracy: the schedule's; with the default (Polar
/// Express, 8 steps) |u_iᵀ out v_i − clip(σ_i)| ≤ 3e-5·‖A‖_F for σ_i and the bounds in
/// [1e-3, 1]·‖A‖_F (measured 2.6e-5); a schedule that does not converge to 1 (Keller Jordan's,
/// Polar Express with 5 steps) is off by O(0.1)·‖A‖_F. Singular values below ~1e-3·ν are
/// neither kept nor raised (f's roll-off); exact zeros stay zero. Singular values 3β and more
/// above a cap β land within 1e-5·β of it (measured 2.4e-6, caps down to 1e-6·‖A‖_F; the sign
/// error enters squared). `floor` and `qdwh` are unused.
SpectralPowerReport spectral_clip(BatchedMatrixRef<const float> a, BatchedMatrixRef<float> out,
                                  const SpectralClipOptions& options = {}, Workspace* workspace = nullptr);
SpectralPowerReport spectral_clip(BatchedMatrixRef<const double> a, BatchedMatrixRef<double> out,
                                  const SpectralClipOptions& options = {}, Workspace* workspace = nullptr);

/// Checks options without touching data: nullptr when valid, else a static message.
const char* check_spectral_clip_options(const SpectralClipOptions& options);

/// Options of schatten_norm(): the floor and tolerance of the rational stage and QDWH's options.
struct SchattenNormOptions {
  double floor = 1e-7;
  /// Relative accuracy of g ≈ x^{q−⌊q⌋} on [floor, 1]·‖A‖₂, hence of Σσ^q (the norm's: about
  /// tolerance/q). 1e-5: the smallest that 24 poles reach for every fractional part at the
  /// default floor (measured on a 0.001 grid: all 999 reach 1e-5; at 1e-6, the default until
  /// 2026-12-05, 415 fell short, by up to 5e-6, and the norm was returned as if accurate).
  double tolerance = 1e-5;
  QdwhOptions qdwh{};
};

/// ‖A_b‖_{S_q} = (Σ σ_i^q)^{1/q} for every matrix of a batch, q ∈ (0, ∞], into norms[b].
/// Without an SVD: q = 2 (and any q for one row or column) from the entries; q = ∞ as
/// √λ₁(AᵀA), the Gram of the short side formed in double (for float input too, whatever
/// qdwh.compute) and its largest eigenvalue bracketed by Rayleigh quotients below and Cholesky
/// factorisations of τI − AᵀA above to a relative width 8·max(k, 8)·2⁻⁵³, whatever the gap
/// σ₁ − σ₂ (within 1e-13 of the SVD's at k = 50, equal top singular values and gaps from 0.1 down
/// to 1e-12 alike; docs/kernels/spectral_power.md "Schatten norms"; cost 2mk² + about k³/3 per
/// factorisation, 2–3 of them for a Gaussian matrix, at most about 60; a bracket still open after
/// 100 → not_converged with its lower end written);
/// otherwise through the identity Σσ^q = ⟨A, U Σ^{q−1} Vᵀ⟩ = tr(H^q) (algorithms.md 4b.1, 5.4;
/// q = 1 is the nuclear norm tr(H) = ⟨A, polar(A)⟩), with H from QDWH and
/// H^q = H^{⌊q⌋}·g(H), g the rational approximation of the fractional power (no filter), H^{⌊q⌋}
/// by repeated squaring (about 2·log₂ q GEMMs of k × k, any q up to DBL_MAX) with each product
/// divided by its trace and the logarithms kept, so that Σσ^q neither underflows (large q) nor
/// its 1/q-th power overflows (small q) on the way to a representable norm. Singular
/// values below floor·‖A‖₂ are rolled off (their contribution is at most about 20·k·floor^q·‖A‖₂^q:
/// the roll-off factor is measured, up to 20.4 at this tolerance; spectral_power()).
/// A norm beyond the largest double (q = 1 of 1e308·I₈) → out_of_range, `norms` untouched.
/// A tolerance the rational fit cannot reach with 24 poles (1e-8 at the default floor) →
/// not_converged with the norms written from the best fit, as spectral_power() does (its error:
/// rational_power_approximation()'s RationalPower::fit_error for q − ⌊q⌋); so does a QDWH that
/// reaches QdwhOptions::max_iterations (the norms from its last iterate).
Status schatten_norm(BatchedMatrixRef<const float> a, double q, double* norms,
                     const SchattenNormOptions& options = {}, Workspace* workspace = nullptr);
Status schatten_norm(BatchedMatrixRef<const double> a, double q, double* norms,
                     const SchattenNormOptions& options = {}, Workspace* workspace = nullptr);

}  // namespace schatten
