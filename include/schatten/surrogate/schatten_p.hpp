// SPDX-License-Identifier: Apache-2.0
/// \file
/// The data-driven choice of the Schatten exponent p per layer (algorithms.md §4a.2; the
/// random-feature regression surrogate of the SMuon paper, after Davis & Drusvyatskiy).
///
/// Surrogate: the layer's loss is L(W) = (1/2n)‖W A − Y‖²_F with A the layer's inputs (features
/// × n samples), so L(W + δW) = L + ⟨G, δW⟩ + (1/2n)‖δW A‖²_F exactly. The update of SMuon with
/// exponent p (p ∈ [1, ∞): 1 is SGD, ∞ is Muon) is D_p = U Σ^{1/p} Vᵀ of the momentum M̃ = U Σ Vᵀ,
/// and the best decrease along D_p is ⟨G, D_p⟩² / (2‖D_p A‖²_F / n). The three criteria bound
/// or evaluate that decrease with the statistics one can afford:
///
///   exact            J(p) = ‖G‖_{S_{1+1/p}} / ‖A‖_{S_{k(p)}},  k(p) = 2(p+1)/(p−1)
///                    (Hölder: ‖δW A‖_F ≤ ‖δW‖_{S_{p+1}} ‖A‖_{S_k}; the guaranteed decrease of
///                    the ideal step is J²/2 up to n);
///   exact_momentum   f(p) = (Σ C_i σ_i^{1/p})² / (‖A‖²_{S_{k(p)}} (Σ σ_i^{(p+1)/p})^{2/(p+1)}),
///                    σ = σ(M̃), C_i = u_iᵀ G v_i (the default: the decrease of the update the
///                    optimizer actually takes, with Hölder's bound for the curvature);
///   exact_tightness  N(p)²/D(p), N = Σ C_i σ_i^{1/p}, D = Σ B_i σ_i^{2/p}, B_i = v_iᵀ (AᵀA) v_i
///                    (= ⟨G, D_p⟩² / ‖D_p A‖²_F exactly: no Hölder slack).
///
/// Global scalings of G, M̃ and A cancel in every argmax, so the Gram's normalisation (1/n,
/// number of ranks) is irrelevant. A negative ⟨G, D_p⟩ is no decrease at all: such p score −∞
/// (the reference squares the numerator; [P], docs/surrogate/schatten_p.md).
///
/// Which p wins (the Davis–Drusvyatskiy comparison of the endpoints, exact criterion):
/// J(∞)²/J(1)² = (‖G‖²_* / ‖G‖²_F) / (‖A‖²_F / ‖A‖²_op). Muon's end wins when the gradient has a
/// high nuclear rank AND the activations a low stable rank (ill-conditioned, few dominant
/// directions); a rank-one gradient, or whitened activations (stable rank d_in ≥ rank G), favour
/// the SGD end. docs/surrogate/schatten_p.md works the cases out.
#pragma once

#include <cstdint>
#include <vector>

#include "schatten/core/buffer.hpp"
#include "schatten/core/matrix_ref.hpp"
#include "schatten/core/status.hpp"

namespace schatten::surrogate {

/// The criterion (algorithms.md §4a.2; the SMuon repository's names).
enum class PCriterion { exact, exact_momentum, exact_tightness };
const char* to_string(PCriterion c) noexcept;

/// How the spectra are measured.
enum class SpectrumMethod {
  automatic,   ///< exact when the side (min(m, n) for M̃, d_in for the Gram) ≤ exact_limit
  exact,       ///< host SVD / symmetric eigensolver (Eigen, double): O(m n min(m, n)), O(d³)
  randomized,  ///< randomized SVD of the top k + the tail model (below)
};

/// Options of the criterion. Defaults: algorithms.md §6 ([V] schatten-muon configs) and the
/// [P] choices of docs/surrogate/schatten_p.md.
struct PCriterionOptions {
  PCriterion criterion = PCriterion::exact_momentum;
  double p_min = 1.02;  ///< [V]
  double p_max = 10.0;  ///< [V]
  /// β of the bias-corrected EMA of the smoothed statistics over criterion runs ([V] 0.99; the
  /// bias correction is [P]: the first run uses its own measurement, the n-th a weighted mean).
  double ema = 0.99;
  SpectrumMethod spectrum = SpectrumMethod::automatic;
  index_t exact_limit = 512;         ///< automatic's threshold ([V]: eigvalsh when d ≤ 512)
  double randomized_fraction = 0.1;  ///< k = ⌊fraction · side⌋ ([V] 0.1: the reference's int()) …
  index_t randomized_min_rank = 8;   ///< … at least this …
  index_t randomized_max_rank = 64;  ///< … and at most this ([P]: bounds the cost on wide layers)
  int power_iterations = 2;          ///< [V] for M̃ and G
  /// For the Gram AᵀA, whose eigenvalues decay as σ(A)²: one subspace iteration on it gains as
  /// much as two on A ([P]).
  int gram_power_iterations = 1;
  std::uint64_t seed = 0;  ///< of the randomized SVD's test matrices
  int grid = 24;           ///< log-spaced scan of [p_min, p_max] ([P])
  /// golden-section refinement, in log p ([P] §4a.2); at least 1e-12·log p_max (below a few
  /// ulps of log p the search could not shrink its interval any further)
  double tolerance = 1e-3;
};

/// Returns nullptr when the options are valid, else a static message naming the field.
const char* check_criterion_options(const PCriterionOptions& o) noexcept;

/// The most evaluations of log_objective that maximise_p() makes with these options:
/// grid + 2·(2 + ⌈log(w/tolerance)/log φ⌉), w = log(p_max/p_min)/(grid − 1) the scan step (each
/// golden-section search evaluates its 2 starting points, then one per iteration). 48 for the
/// defaults; 0 for invalid options.
int maximise_p_evaluations(const PCriterionOptions& o) noexcept;

/// One layer's measured spectra, full length (the tail model fills what a randomized SVD did
/// not compute). Vectors are in the order of σ (decreasing).
struct LayerSpectra {
  std::vector<double> sigma;    ///< σ(M̃) (exact_momentum, exact_tightness) or σ(G) (exact); r = min(m, n)
  std::vector<double> align;    ///< C_i = u_iᵀ G v_i (momentum criteria; empty for exact)
  std::vector<double> gram_b;   ///< B_i = v_iᵀ (AᵀA) v_i (exact_tightness; empty otherwise)
  std::vector<double> sigma_a;  ///< σ(A) = √λ(AᵀA), decreasing; d_in values
  bool modelled_tail = false;   ///< some values come from the tail model
};

/// Measures a layer. `momentum` (m × n, the expected Nesterov momentum M̃, unused by `exact`) and
/// `gradient` (m × n) are host matrices, `gram` the d_in × d_in activation Gram AᵀA with d_in = n
/// (host), or an empty matrix: then the activations are taken as whitened (σ(A) = 1, [P] — what
/// the criterion can say without statistics).
///
/// Tail model ([V] uniform variant, extended [P]): with the top k values of a randomized SVD,
/// the r − k missing σ share the residual energy ‖M̃‖²_F − Σσ² equally (σ_t, capped at σ_k); their
/// alignments share ⟨G, M̃⟩ − Σ C_i σ_i (exact: Σ_all C_i σ_i = ⟨G, M̃⟩); B_i of the missing
/// directions share tr(AᵀA) − Σ B_i over the n − k directions not computed; the Gram's missing
/// eigenvalues share tr(AᵀA) − Σ λ. Cost: see SpectrumMethod; randomized: (2q+2) GEMMs of m n l;
/// the alignments: GEMMs G·V (m n k) and, for exact_tightness, (AᵀA)·V (n² k) in double.
/// Errors (out unchanged): invalid options or shapes that disagree → invalid_argument; NaN/Inf →
/// non_finite_input; a spectrum beyond the range its arithmetic holds (the randomized SVD's float
/// GEMMs on entries near FLT_MAX) → out_of_range; an eigensolver that does not converge →
/// breakdown; the host heap exhausted (a std::bad_alloc of the spectra or Eigen's matrices,
/// caught) → out_of_memory. ok promises finite spectra.
Status measure_spectra(MatrixRef<const float> momentum, MatrixRef<const float> gradient,
                       MatrixRef<const float> gram, const PCriterionOptions& options, LayerSpectra& out);

/// log of the criterion's objective at p (> 1; p = ∞ is not accepted, use p_max), −∞ when the
/// update does not descend (Σ C_i σ_i^{1/p} ≤ 0), the spectra are empty or zero, or σ(A) has no
/// positive finite value (no activation statistics: a zero Gram, or one with no positive
/// eigenvalue, says nothing about the curvature; every criterion then reports no descent). Never
/// +∞ or NaN. Values σ ≤ 1e-7·σ_max are dropped ([V] drops σ ≤ 1e-7). Cost O(r + d_in) powers;
/// no allocation.
double log_objective(PCriterion criterion, double p, const LayerSpectra& spectra);

/// The maximiser's answer.
struct PChoice {
  double p = 0.0;              ///< argmax over [p_min, p_max] (unchanged input p when !descends)
  double log_objective = 0.0;  ///< at p
  int evaluations = 0;         ///< of log_objective
  bool descends = false;       ///< some p has a finite objective
  /// exact_tightness only (reported, not applied): η*(p)/η*(∞), η* = N/(2D) ([V]), clipped to
  /// [0.5, 2]; 1 otherwise. N and D are evaluated on σ/σ_max, like the objective, so the value
  /// does not change when M̃ is rescaled [P]; the reference's raw σ(M̃) gives σ_max^{−1/p} times
  /// this (before the clip).
  double step_multiplier = 1.0;
};

/// Maximises log_objective over p ∈ [p_min, p_max]: a scan of `grid` log-spaced points, then
/// golden-section search in log p on the two intervals around the best point to `tolerance`
/// ([P]: the scan makes it robust to several local maxima; at most maximise_p_evaluations()
/// evaluations, whatever the rounding). When no p descends, or the options are invalid, returns
/// `previous` with descends = false. No allocation.
PChoice maximise_p(const LayerSpectra& spectra, const PCriterionOptions& options, double previous);

/// Bias-corrected EMA of the smoothed statistics across criterion runs (β = options.ema):
/// exact smooths σ(G) and σ(A); exact_momentum C and σ(A) ([V]: not σ(M̃)); exact_tightness C,
/// B and σ(A). `store` holds the raw EMAs (float, as checkpointed), `runs` the number of runs so
/// far (before this one); `spectra` is replaced by the bias-corrected averages. Vectors of
/// another length than the store, or runs < 0, are an invalid_argument; an EMA that would not be
/// a finite float (a value beyond FLT_MAX, or NaN/∞ in a value or the store) is out_of_range:
/// nothing changed either way, so a store never holds ∞. No allocation.
struct SmoothedStatistics {  // host buffers (the optimizer state that holds them)
  FloatBuffer* sigma = nullptr;
  FloatBuffer* align = nullptr;
  FloatBuffer* gram_b = nullptr;
  FloatBuffer* sigma_a = nullptr;
};
Status smooth_spectra(LayerSpectra& spectra, const SmoothedStatistics& store, std::int64_t runs,
                      const PCriterionOptions& options);

}  // namespace schatten::surrogate
