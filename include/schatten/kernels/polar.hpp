// SPDX-License-Identifier: Apache-2.0
/// \file
/// Polar factor (orthogonalisation) of matrices given as plain arrays: Newton–Schulz with any
/// coefficient schedule, Polar Express, Gram Newton–Schulz.
///
/// For A = U Σ Vᵀ (thin SVD) the polar factor is U Vᵀ. The iterative methods here return
/// U s(Σ) Vᵀ where s is the composite scalar map of their schedule applied to the normalised
/// singular values: close to U Vᵀ only as far as s(σ) is close to 1 (see each schedule's band).
/// Exact U Vᵀ comes from schatten::reference::polar (SVD, double).
#pragma once

#include <cstddef>
#include <new>
#include <utility>
#include <vector>

#include "schatten/core/matrix_ref.hpp"
#include "schatten/core/status.hpp"
#include "schatten/core/types.hpp"
#include "schatten/core/workspace.hpp"
#include "schatten/kernels/coefficients.hpp"
#include "schatten/kernels/qdwh.hpp"

namespace schatten {

/// The orthogonalisation algorithms.
enum class PolarMethod {
  newton_schulz,       ///< X ← a X + b (XXᵀ)X + c (XXᵀ)²X per step; default Keller Jordan schedule
  polar_express,       ///< the same iteration with a Polar Express schedule (default)
  gram_newton_schulz,  ///< the same polynomials, iterated on the k×k Gram XXᵀ (wide matrices)
  qdwh                 ///< QR-based dynamically weighted Halley: converged U Vᵀ (qdwh.hpp)
};

/// Name of a method ("newton_schulz", ...).
const char* to_string(PolarMethod m) noexcept;

/// Options of polar(). Set fields by name; every field has a default.
struct PolarOptions {
  PolarMethod method = PolarMethod::polar_express;
  /// Number of polynomial steps T (0 … kPolarMaxIterations = 1000). 0 returns the normalised input.
  int iterations = 5;
  /// Coefficients and normalisation. Left empty (no rows), the method's default is used:
  /// newton_schulz → schedules::keller_jordan(); polar_express and gram_newton_schulz →
  /// schedules::polar_express().
  CoefficientSchedule schedule{};
  /// Gram Newton–Schulz: iterations (0-based, ≥ 1) before which the iterate is rebuilt from X
  /// (X ← Q X, R ← X Xᵀ, Q ← I); entries ≥ iterations have no effect. Restarts stop the loss
  /// of accuracy of the accumulated Gram factors. Default {2} [V] NoahAmsel/gram-newton-schulz.
  std::vector<int> gram_restarts{2};
  /// Precision of the iteration: automatic (= the input's), fp32 or fp64; bf16 or fp16 for
  /// newton_schulz and polar_express (16-bit storage of the iterate and of every GEMM result,
  /// fp32 accumulation and fp32 scalar arithmetic, normalisation computed in double from the
  /// input; docs/kernels/polar.md "16-bit iteration"): cuBLAS on CUDA, a portable Kokkos GEMM on
  /// every other build (on a CPU an emulation of the GPU's numerics, slower than fp32). The
  /// error at a singular value x well above u is of order u·|f(x)| + 0.1·u·x·|f′(x)| for the
  /// schedule's composite f and the unit roundoff u (null and tiny directions come out as noise
  /// of up to 0.25 in bf16, 0.03 in fp16: the rounding lifted by f's slope at 0); with Polar
  /// Express on inputs whose ‖A‖₂ is close to ‖A‖_F, up to 10 % of the top direction in bf16 and
  /// under 1 % in fp16 for k ≥ 16, about twice that for a short side of a few rows
  /// (docs/kernels/polar.md, "Where 16 bits cost most"). Other methods: bf16/fp16 →
  /// Status::unsupported.
  Precision compute = Precision::automatic;
  /// Options of PolarMethod::qdwh (which ignores iterations, schedule and gram_restarts).
  QdwhOptions qdwh{};
  /// Also compute ‖Q Qᵀ − I‖_F / √k (k = min(rows, cols)), the root-mean-square of 1 − s_i², for
  /// every matrix; PolarReport::orthogonality_error gets the largest. Costs one extra Gram GEMM.
  bool compute_orthogonality_error = false;
  /// Form the symmetric products (the Gram X Xᵀ and A² of Newton–Schulz / Polar Express, R = X Xᵀ
  /// and R² of Gram Newton–Schulz, the orthogonality report's Gram) on one triangle: a SYRK (half
  /// their flops) where the build has one for the compute type and memory (host BLAS and cuBLAS,
  /// fp32/fp64); in bf16/fp16 outside CUDA, and for batches of small matrices on HIP, the
  /// portable kernel's tiles on and below the diagonal (51–56 % of the flops, one launch);
  /// else, for k ≥ 2·kSymmetricPanelRows, GEMM row panels (about 53–75 % of the flops:
  /// bf16/fp16 on CUDA, HIP). Results differ from the GEMM path by rounding only
  /// (docs/kernels/polar.md, "Symmetric products"). false: GEMMs everywhere.
  bool symmetric_gram = true;
  /// Return ⟨A, Q⟩·Q instead of Q, per matrix, with ⟨A, Q⟩ = Σ_ij a_ij q_ij = tr(AᵀQ)
  /// accumulated in double. For the exact polar factor ⟨A, U Vᵀ⟩ = Σσ_i = ‖A‖_*, the dual of the
  /// spectral norm, so the output is the steepest-descent step under the spectral norm scaled by
  /// the dual norm ("Old Optimizer, New Norm", Bernstein & Newhouse 2024; PolarGrad; optax's
  /// `muon(adaptive=True)`, algorithms.md §1.1). With a polynomial method Q is the computed
  /// factor, so ⟨A, Q⟩ = Σσ_i f(σ_i/ν) exactly as optax computes it. Cost: one more read of the
  /// input and the iterate and one read-back; the factor is applied in the store pass (in
  /// double). Nothing is written when the scaled output would overflow the output type
  /// (Status::out_of_range, the matrix in bad_item). Also for PolarMethod::qdwh.
  bool dual_norm_scale = false;
};

/// Result of polar(). Outputs are written only when status is ok, and by method qdwh also when it
/// is not_converged (QDWH's last iterate, as qdwh() writes it).
struct PolarReport {
  Status status = Status::ok;
  /// Static text explaining a non-ok status ("" when ok).
  const char* message = "";
  /// Polynomial steps applied.
  int iterations = 0;
  /// First matrix of the batch that made the call fail (non-finite input), else −1.
  index_t bad_item = -1;
  /// Largest ‖Q Qᵀ − I‖_F / √k over the batch when requested, else −1.
  double orthogonality_error = -1.0;
  explicit operator bool() const noexcept { return status == Status::ok; }
};

/// Polar factor of every matrix of a batch: q[b] ≈ polar(a[b]).
///
/// PolarMethod::qdwh runs qdwh() (converged U Vᵀ; its report's iterations land in
/// PolarReport::iterations); everything below describes the Newton–Schulz family.
///
/// Math: each a[b] (rows × cols) is scaled by the schedule's normalisation and iterated on its
/// k × k Gram (k = min(rows, cols), the transpose trick of algorithms.md §0); the result is
/// U s(Σ/ν) Vᵀ with ν the normalisation and s = schedule.apply(·, T). No data is transposed in
/// memory: a row-major matrix is iterated as the column-major storage of its transpose.
/// Preconditions: a and q have the same batch, rows and cols; q does not overlap itself; q may
/// alias a exactly (in-place). Host or device memory (see MatrixRef).
/// Cost per matrix and step (Newton–Schulz, Polar Express): 3 GEMMs, 4k²n + 2k³ flops
/// (2k²n + 2k²n only when c = 0). Gram Newton–Schulz: 2k²n once, ≤ 8k³ per step, 4k²n per
/// restart (3k²n with the symmetric Gram; it said 2k²n until 2026-12-07) and 2k²n at the end
/// (docs/kernels/polar.md). polar_flops() gives the exact count. Memory: polar_workspace_bytes().
/// Accuracy: exact arithmetic gives U s(Σ/ν) Vᵀ; rounding adds about T·(∏ slopes)·ε relative
/// error on the small singular values (docs/kernels/polar.md has the table).
/// Determinism: bit-for-bit reproducible on the CPU for the same input layout, BLAS and thread
/// count. Row-major and column-major copies of one matrix are iterated in opposite
/// orientations and agree to rounding, not bit for bit.
/// Synchronous: returns when q is written (device work is fenced).
/// Bad input: NaN/Inf anywhere → Status::non_finite_input, bad_item set, q untouched. An
/// all-zero matrix gives an all-zero q. Empty matrices are fine (nothing to do). Options whose
/// iterates have no bound (polar_iterate_bound() = HUGE_VAL: no normalisation, a safety below 1,
/// a schedule steep beyond its interval) are checked after the iteration: an iterate that
/// overflowed (Inf/NaN) or an output beyond the output type → Status::out_of_range, bad_item set,
/// q untouched (one max-reduction per matrix; none with a bound). Gram Newton–Schulz, whose
/// rounding is amplified by its accumulated factors, is checked against its bound: an iterate
/// entry beyond polar_iterate_bound() (NaN included; float, ill-conditioned input, few restarts)
/// → Status::breakdown, bad_item set, q untouched (one max-reduction and one wait per call).
/// References: Jordan et al., Muon (2024); Amsel et al., arXiv:2505.16932 (Polar Express);
/// Dao lab / Amsel et al., Gram Newton–Schulz (2026).
PolarReport polar(BatchedMatrixRef<const float> a, BatchedMatrixRef<float> q,
                  const PolarOptions& options = {}, Workspace* workspace = nullptr);
PolarReport polar(BatchedMatrixRef<const double> a, BatchedMatrixRef<double> q,
                  const PolarOptions& options = {}, Workspace* workspace = nullptr);

/// Newton–Schulz with the given schedule (shorthand for polar() with method newton_schulz).
/// `A` and `Q` are anything polar() accepts (MatrixRef or BatchedMatrixRef of float/double).
template <class A, class Q>
PolarReport newton_schulz(const A& a, const Q& q, const CoefficientSchedule& schedule, int iterations = 5,
                          Workspace* workspace = nullptr) {
  PolarOptions o;
  o.method = PolarMethod::newton_schulz;
  o.schedule = schedule;
  o.iterations = iterations;
  return polar(a, q, o, workspace);
}

/// Gram Newton–Schulz with the given schedule and restarts.
template <class A, class Q>
PolarReport gram_newton_schulz(const A& a, const Q& q, const CoefficientSchedule& schedule,
                               int iterations = 5, std::vector<int> restarts = {2},
                               Workspace* workspace = nullptr) {
  PolarOptions o;
  o.method = PolarMethod::gram_newton_schulz;
  o.schedule = schedule;
  o.iterations = iterations;
  o.gram_restarts = std::move(restarts);
  return polar(a, q, o, workspace);
}

/// The polar() options of kaon(): Newton–Schulz with schedules::kaon(steps), `steps`
/// iterations, the default normalisation. steps ≥ 1 (schedules::kaon throws otherwise).
inline PolarOptions kaon_options(int steps = 5) {
  PolarOptions o;
  o.method = PolarMethod::newton_schulz;
  o.schedule = schedules::kaon(steps);
  o.iterations = steps;
  return o;
}

namespace detail {
/// kaon_options(steps) for 1 ≤ steps ≤ 16, built once per process on first use (thread-safe; a
/// std::bad_alloc then leaves the table to be built by a later call), so that kaon() allocates
/// nothing on the host in steady state; nullptr for other steps.
const PolarOptions* cached_kaon_options(int steps);
/// True when 16-bit iteration (bf16/fp16) on the default execution space forms its symmetric
/// products on one triangle at every size (the portable kernel of every build but CUDA), false
/// where it uses the vendor's 16-bit GEMM, in row panels from k = 2·kSymmetricPanelRows (CUDA:
/// cuBLAS has no 16-bit SYRK). The cost model (polar_gemm_shapes) follows it.
bool lowp_symmetric_on_one_triangle();
}  // namespace detail

/// Kaon's random spectrum (schedules::kaon(steps), 1 ≤ steps ≤ kPolarMaxIterations): U s(Σ/‖A‖_F)
/// Vᵀ with the chaotic map s = p⁵/1.175, p(x) = 4.1x(1 − x²)²; singular vectors kept, singular
/// values scrambled into [0, 0.9987]. Same cost as Newton–Schulz (3 GEMMs per step). The SVD
/// variant with seeded uniform singular values is schatten::reference::kaon_spectrum.
template <class A, class Q>
PolarReport kaon(const A& a, const Q& q, int steps = 5, Workspace* workspace = nullptr) {
  // (Checked before the schedule is built: steps = INT_MAX once asked for 51 GB of rows, then
  // out_of_memory, where polar() refuses the iteration count.)
  if (steps < 1 || steps > kPolarMaxIterations) {
    PolarReport r;
    r.status = Status::invalid_argument;
    r.message = "kaon: steps must lie in [1, 1000]";
    return r;
  }
  try {
    // The options hold vectors (the schedule's rows): an allocation failure is reported as
    // polar() reports its own, which polar() itself never throws.
    if (const PolarOptions* o = detail::cached_kaon_options(steps)) return polar(a, q, *o, workspace);
    return polar(a, q, kaon_options(steps), workspace);
  } catch (const std::bad_alloc&) {
    PolarReport r;
    r.status = Status::out_of_memory;
    r.message = "kaon: allocation failed";
    return r;
  }
}

/// True when this build can run polar() with `method` iterating in precision `p` (fp32, fp64
/// and automatic always; bf16/fp16 for newton_schulz and polar_express, on every build; never
/// for a value that is not known_precision()).
bool precision_supported(Precision p, PolarMethod method);

/// The schedule polar() will use for these options (the method's default when none is set):
/// options.schedule itself, or a default built once per process (so that checks and kernel
/// calls read it without allocating). The reference lives as long as `options`, or forever.
const CoefficientSchedule& resolved_schedule(const PolarOptions& options);

/// Checks options without touching data: nullptr when valid, else a static message.
const char* check_polar_options(const PolarOptions& options);

/// The largest `terms` bound polar_iterate_bound() accepts for one polynomial step (below).
inline constexpr double kPolarTermLimit = 1e4;

/// A bound on the singular values of every iterate of polar(), its output included, for any
/// finite input, or HUGE_VAL where none is known: QDWH, no normalisation (the input's own
/// scale), options that check_polar_options() refuses, or a schedule that could grow an iterate
/// past kPolarTermLimit. In exact arithmetic it is a proof: the normalisation gives
/// σ ≤ s₀ = 1/safety (every kind divides by a norm ≥ σ_max; eps only shrinks it), and step t
/// maps σ ≤ s to |p_t(σ)| ≤ sup over [0, s] of |p_t| (closed form: p_t is odd, so its extremes
/// lie at s and at the roots in [0, s²] of p_t′ as a quadratic in x²). For rounding, each s is
/// widened by 2⁻²⁰ (16 units of fp32 rounding; 2⁻⁸ when iterating in bf16/fp16) — a margin, not
/// a proof: a schedule that is steep beyond its design interval amplifies it (CANS: its first
/// row maps 1 to 1.99 with slope 26, and a widening of 1.5·10⁻⁵ per step already gives 6 after
/// five steps, 2⁻⁸ gives no bound at all, so CANS in bf16 gets none). Every step's three terms
/// must also stay below kPolarTermLimit, s·(|a| + |b|s² + |c|s⁴) ≤ 10⁴, which leaves a factor
/// 6.5 to fp16's range and 10³⁴ to fp32's for whatever the margin misses; Gram Newton–Schulz
/// also needs the factor it accumulates between restarts, ∏(|a| + |b|s² + |c|s⁴), below 10³⁰.
/// For Gram Newton–Schulz the bound holds in exact arithmetic only: the rounding of X Xᵀ is
/// amplified by that factor, and polar() checks its output against the bound (breakdown
/// beyond it). Every schedule the library ships has a bound in fp32 (Keller Jordan's: 1.2024; Kaon's: 1.1735;
/// CANS's: 1.99; tests/kernels/test_coefficients.cpp). A rule that calls polar() uses it to
/// promise a finite output (optim/transforms.hpp, polar_total_on_finite). Cost: O(iterations)
/// scalar work plus resolved_schedule().
double polar_iterate_bound(const PolarOptions& options);

/// Rows per panel of the symmetric products built from vendor GEMMs, used where no vendor SYRK
/// serves the compute type and device (bf16/fp16 on CUDA; fp32/fp64 on HIP and on a host build
/// without BLAS; the software 16-bit types use the portable kernel's triangle instead,
/// portable_sym_product in detail/portable_gemm.hpp). C = α op(A) op(A)ᵀ
/// (n × n, inner dimension k) is computed as N = ⌈n/b⌉ row panels, b = kSymmetricPanelRows.
/// Panel p is one GEMM of C[p·b : e, 0 : e] with e = min((p+1)·b, n), so the lower triangle
/// costs about (N + 1)/(2N) of the full GEMM's 2n²k flops: 75 % at N = 2, 56 % at N = 8, 53 %
/// at N = 16. Used only when n ≥ 2b; smaller products stay one GEMM, since there a panel
/// would save little and cost extra launches. b = 512 keeps every panel GEMM at least
/// 512 × 512 × k, a size vendor GEMMs run near their peak rate. [P] docs/kernels/polar.md,
/// "Symmetric products".
inline constexpr index_t kSymmetricPanelRows = 512;

/// True when an n × n symmetric product is split into those panels: n ≥ 2·kSymmetricPanelRows.
/// The kernels (batched.hpp) and the cost model (symmetric_panel_shapes) both ask this.
inline constexpr bool symmetric_panels_pay(index_t n) { return n >= 2 * kSymmetricPanelRows; }

/// The GEMMs of that panel decomposition for an n × n symmetric product with inner dimension k:
/// one entry per panel (m = its rows, n = e, k). Empty when n < 2·kSymmetricPanelRows, where
/// one plain GEMM is used.
std::vector<GemmShape> symmetric_panel_shapes(index_t n, index_t k);

/// The dense operations (GemmShape, qdwh.hpp) polar() performs for one rows × cols matrix,
/// merged by shape; GEMMs only for the Newton–Schulz family. The kernel's floor is the sum of
/// their times at the machine's rates (bench/ uses this). For QDWH the iteration count is
/// data-dependent: the model assumes the count predicted for options.qdwh.lower_bound (or for
/// l₀ = 2⁻⁵² when it is estimated).
std::vector<GemmShape> polar_gemm_shapes(index_t rows, index_t cols, const PolarOptions& options);
/// Total flops of those operations for one rows × cols matrix (element-wise work is not counted).
double polar_flops(index_t rows, index_t cols, const PolarOptions& options);

/// Scratch bytes polar() needs for `batch` matrices of rows × cols in the given compute
/// precision (automatic = fp32 here; pass the input's precision for exact figures).
std::size_t polar_workspace_bytes(index_t rows, index_t cols, index_t batch, const PolarOptions& options,
                                  Precision input = Precision::fp32);

}  // namespace schatten
