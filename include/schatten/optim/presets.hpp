// SPDX-License-Identifier: Apache-2.0
/// \file
/// Optimizer presets as chains of rules, with the defaults of algorithms.md §6 (docs/optim.md
/// lists every default and its source). All produce updates to be ADDED to the parameter.
#pragma once

#include <utility>

#include "schatten/optim/chain.hpp"
#include "schatten/optim/transforms.hpp"

namespace schatten::optim {

/// torch.optim.SGD: g ← g + λ W (L2, coupled: before momentum); with momentum μ > 0 the sum form
/// b ← μ b + g (dampening 0), Nesterov g + μ b; then −lr. Defaults: lr 1e-3, no momentum.
/// `mu_storage`: the buffer in fp32 or bf16 (TraceMomentum; docs/optim.md "State precision").
struct SgdOptions {
  Schedule lr = Schedule::constant(1e-3);
  double momentum = 0.0;
  bool nesterov = false;
  double weight_decay = 0.0;
  StateStorage mu_storage = Precision::fp32;
};
inline auto sgd(const SgdOptions& o = {}) {
  return chain(AddDecayedWeights{o.weight_decay},
               TraceMomentum{o.momentum, o.nesterov, TraceMomentum::Form::sum, false, o.mu_storage},
               ScaleByLearningRate{o.lr});
}

/// torch.optim.AdamW: W ← W − lr·(m̂/(√v̂ + ε) + λ W). Defaults (torch): lr 1e-3, betas
/// (0.9, 0.999), eps 1e-8, weight decay 1e-2. `mu_storage`: the first moment in fp32 or bf16
/// (optax's mu_dtype; ScaleByAdam, docs/optim.md "State precision"); v stays fp32.
struct AdamWOptions {
  Schedule lr = Schedule::constant(1e-3);
  double b1 = 0.9, b2 = 0.999, eps = 1e-8;
  double weight_decay = 1e-2;
  StateStorage mu_storage = Precision::fp32;
};
inline auto adamw(const AdamWOptions& o = {}) {
  // One fused pass (AdamWUpdate) = chain(ScaleByAdam, AddDecayedWeights, ScaleByLearningRate).
  return chain(AdamWUpdate{o.b1, o.b2, o.eps, o.weight_decay, o.lr, o.mu_storage});
}

/// Lion (Chen et al. 2023, arXiv 2302.06675): W ← W(1 − lr·λ) − lr·sign(β₁m + (1 − β₁)g), then
/// m ← β₂m + (1 − β₂)g (ScaleByLion, decoupled decay with the lr, −lr). Defaults (the paper's and
/// lion-pytorch's): lr 1e-4, betas (0.9, 0.99), wd 0 (optax.lion: 1e-3). Its update has RMS ≈ 1,
/// so its lr is typically 3–10× smaller than AdamW's; the scalar optimizer of microsoft/dion.
/// `mu_storage`: m in fp32 or bf16 (ScaleByLion; docs/optim.md "State precision").
struct LionOptions {
  Schedule lr = Schedule::constant(1e-4);
  double b1 = 0.9, b2 = 0.99;
  double weight_decay = 0.0;
  StateStorage mu_storage = Precision::fp32;
};
inline auto lion(const LionOptions& o = {}) {
  return chain(ScaleByLion{o.b1, o.b2, o.mu_storage}, AddDecayedWeights{o.weight_decay},
               ScaleByLearningRate{o.lr});
}

/// The Newton–Schulz options of the presets' references: `schedule` for `iterations` steps with
/// its Frobenius normalisation X/(safety·‖X‖_F + eps) (the schedule's safety, this eps).
inline PolarOptions newton_schulz_polar(CoefficientSchedule schedule, double eps, int iterations = 5) {
  PolarOptions p;
  p.method = PolarMethod::newton_schulz;
  p.schedule = std::move(schedule);
  p.schedule.normalization.eps = eps;
  p.iterations = iterations;
  return p;
}

/// Keller Jordan's Muon (KellerJordan/Muon): EMA momentum β = 0.95 with Nesterov, Newton–Schulz
/// with his quintic, 5 steps (any PolarOptions: Polar Express, QDWH, …), shape scale
/// √max(1, r/c) (Moonlight's 0.2·√max(r, c), √max(r, c) and √(r/c) as options: ScaleByShape),
/// decoupled weight decay with the unadjusted lr, lr 0.02 "in units of spectral norm per update".
struct MuonOptions {
  Schedule lr = Schedule::constant(0.02);
  double momentum = 0.95;
  bool nesterov = true;
  TraceMomentum::Form momentum_form = TraceMomentum::Form::ema;
  PolarOptions polar = keller_polar();
  ScaleByShape shape{};  ///< rule and extra factor (transforms.hpp; a Rule converts, extra 1)
  double weight_decay = 0.0;
  /// optax's bias-corrected momentum (TraceMomentum::bias_correction); with
  /// polar.dual_norm_scale it gives optax's `muon(adaptive=True)` (docs/optim.md "optax's Muon").
  bool bias_correction = false;
  /// The momentum buffer in fp32 or bf16, half the memory (TraceMomentum::mu_storage; optax's
  /// mu_dtype, microsoft/dion's momentum_dtype; docs/optim.md "State precision").
  StateStorage mu_storage = Precision::fp32;

  /// Keller Jordan's orthogonalisation: NS5 with (3.4445, −4.7750, 2.0315), X/(‖X‖_F + 1e-7).
  static PolarOptions keller_polar() { return newton_schulz_polar(schedules::keller_jordan(), 1e-7); }
};
inline auto muon(const MuonOptions& o = {}) {
  return chain(TraceMomentum{o.momentum, o.nesterov, o.momentum_form, o.bias_correction, o.mu_storage},
               Orthogonalize{o.polar}, ScaleByShape{o.shape}, AddDecayedWeights{o.weight_decay},
               ScaleByLearningRate{o.lr});
}

/// MOP, "Momentum Orthogonalized by Polar decomposition" (NVIDIA-NeMo Emerging-Optimizers
/// `mop.py`, experimental there): Muon with the exact polar factor (the reference's SVD; QDWH
/// here, exact to working precision) scaled by the momentum's nuclear norm ⟨M, Q⟩ = Σσ(M) (the
/// PolarGrad scaling, `polar.dual_norm_scale`), no shape factor. It is muon() with these options,
/// so one formula serves both. Defaults (the reference's constructor): lr 3e-4, β 0.95 EMA
/// momentum (its lerp_), Nesterov off, wd 0.01 decoupled, scale_mode "nuclear_norm",
/// extra_scale_factor 1 (ScaleByShape's extra). Its other scale modes are muon's shape rules
/// with `polar.dual_norm_scale = false`.
struct MopOptions {
  Schedule lr = Schedule::constant(3e-4);
  double momentum = 0.95;
  bool nesterov = false;
  PolarOptions polar = nuclear_polar();
  ScaleByShape shape{ScaleByShape::Rule::none};  ///< rule none and extra 1: the nuclear norm alone
  double weight_decay = 0.01;
  StateStorage mu_storage = Precision::fp32;  ///< MuonOptions::mu_storage

  /// QDWH with polar.dual_norm_scale: Q·⟨M, Q⟩ = Q·‖M‖_*.
  static PolarOptions nuclear_polar() {
    PolarOptions p;
    p.method = PolarMethod::qdwh;
    p.dual_norm_scale = true;
    return p;
  }
  MuonOptions muon_options() const {
    MuonOptions m;
    m.lr = lr;
    m.momentum = momentum;
    m.nesterov = nesterov;
    m.polar = polar;
    m.shape = shape;
    m.weight_decay = weight_decay;
    m.mu_storage = mu_storage;
    return m;
  }
};
inline auto mop(const MopOptions& o = {}) { return muon(o.muon_options()); }

/// NorMuon (Li et al. 2025, arXiv 2510.05491; the reference zichongli5/NorMuon normuon.py):
/// Muon with the orthogonalised update normalised per output neuron by a second moment and
/// rescaled to its Frobenius norm (NormalizeNeurons), then Keller's shape scale, decoupled decay
/// and lr. Defaults (the reference's): lr 0.02, β 0.95 Nesterov EMA momentum, NS5 Keller, β₂ 0.95,
/// wd 0. [P] for this library: the reference orthogonalises in bf16, we in the input's precision
/// (fp32) unless `polar.compute` says otherwise, as for `muon`.
struct NorMuonOptions {
  Schedule lr = Schedule::constant(0.02);
  double momentum = 0.95;
  bool nesterov = true;
  TraceMomentum::Form momentum_form = TraceMomentum::Form::ema;
  PolarOptions polar = MuonOptions::keller_polar();
  double beta2 = 0.95;
  ScaleByShape shape{};  ///< rule and extra factor (transforms.hpp; a Rule converts, extra 1)
  double weight_decay = 0.0;
  StateStorage mu_storage = Precision::fp32;  ///< the momentum buffer: fp32 or bf16 (MuonOptions)
};
inline auto normuon(const NorMuonOptions& o = {}) {
  return chain(TraceMomentum{o.momentum, o.nesterov, o.momentum_form, false, o.mu_storage},
               Orthogonalize{o.polar}, NormalizeNeurons{o.beta2}, ScaleByShape{o.shape},
               AddDecayedWeights{o.weight_decay}, ScaleByLearningRate{o.lr});
}

/// AdaMuon (Si, Zhang, Shen 2025, arXiv 2507.11005; the reference adamuon.py of
/// Chongjie-Si/AdaMuon): Muon's EMA Nesterov momentum N, then O = polar(sign(N)) (sign
/// stabilisation), the element-wise second moment v ← β₂ v + (1 − β₂) O², Ô = O/(√v + ε), Ô's RMS
/// set to 0.2 (ScaleToRms), decoupled decay, lr. Defaults (the reference's): lr 0.02, β 0.95
/// Nesterov, NS5 Keller, β₂ = β = 0.95 (the reference uses its momentum for both), ε 1e-8,
/// rms 0.2, wd 0.01. Not in algorithms.md: [P] as NorMuon, NS5 in the input's precision (fp32)
/// where the reference casts to bf16.
struct AdaMuonOptions {
  Schedule lr = Schedule::constant(0.02);
  double momentum = 0.95;
  bool nesterov = true;
  PolarOptions polar = MuonOptions::keller_polar();
  double beta2 = 0.95;
  double eps = 1e-8;
  double rms = 0.2;
  double weight_decay = 0.01;
  StateStorage mu_storage = Precision::fp32;  ///< the momentum buffer: fp32 or bf16 (MuonOptions)
};
inline auto adamuon(const AdaMuonOptions& o = {}) {
  return chain(TraceMomentum{o.momentum, o.nesterov, TraceMomentum::Form::ema, false, o.mu_storage},
               SignTransform{}, Orthogonalize{o.polar}, ScaleBySecondMoment{o.beta2, o.eps},
               ScaleToRms{o.rms, o.eps}, AddDecayedWeights{o.weight_decay}, ScaleByLearningRate{o.lr});
}

/// SPEL, spectral steepest descent on the Stiefel manifold (arXiv 2601.21487; the reference
/// `Spel` of NVIDIA-NeMo Emerging-Optimizers): W ← polar((1 − lr·λ) W − lr·polar(M)) with the EMA
/// momentum M ← β M + (1 − β) G (no Nesterov by default), the weights re-projected after every
/// step (OrthogonalizeWeights). No shape scale: the update and the weights are polar factors.
/// Defaults (the reference's): lr 3e-4, β 0.95, Nesterov off, decoupled wd 0.1, both polar
/// factors by 5 steps of You Jiacheng's table (its "quintic"), X/(‖X‖_F + 1e-15) (it divides
/// by max(‖X‖_F, 1e-15): the same above 1e-8). Not in algorithms.md: [P] the polar factors run
/// in the input's precision (fp32) where the reference's default matmul precision casts to bf16.
/// Only for matrices meant to stay (near) orthonormal — hidden weights, not embeddings, heads or
/// vectors (route those to adamw), and a parameter should start orthonormal (its first step
/// projects it anyway).
/// Emerging-Optimizers' default orthogonalisation (muon_utils.newton_schulz with
/// coefficient_type "quintic"): 5 rows of schedules::you_jiacheng(), X/(‖X‖_F + 1e-15), Frobenius.
/// SPEL's and Scion's.
inline PolarOptions eo_quintic_polar() { return newton_schulz_polar(schedules::you_jiacheng(), 1e-15); }

struct SpelOptions {
  Schedule lr = Schedule::constant(3e-4);
  double momentum = 0.95;
  bool nesterov = false;
  PolarOptions polar = spel_polar();
  double weight_decay = 0.1;
  StateStorage mu_storage = Precision::fp32;  ///< the momentum buffer: fp32 or bf16 (MuonOptions)

  /// The reference's orthogonalisation: eo_quintic_polar().
  static PolarOptions spel_polar() { return eo_quintic_polar(); }
};
inline auto spel(const SpelOptions& o = {}) {
  return chain(TraceMomentum{o.momentum, o.nesterov, TraceMomentum::Form::ema, false, o.mu_storage},
               Orthogonalize{o.polar}, AddDecayedWeights{o.weight_decay}, ScaleByLearningRate{o.lr},
               OrthogonalizeWeights{o.polar});
}

/// Scion's hidden-matrix step (Pethick et al. 2025, "Training Deep Learning Models with
/// Norm-Constrained LMOs", arXiv 2502.07529; NVIDIA-NeMo Emerging-Optimizers `scion.py`): the
/// spectral LMO ρ·√(r/c)·NS(M) of the EMA momentum M, with weight decay 1 as its Frank–Wolfe step,
///   W ← (1 − lr)·W − lr·ρ·√(r/c)·NS(M),
/// a convex combination, so W stays in the spectral ball of radius ρ·√(r/c) once inside (up to
/// NS's band). It is muon() with these options (one chain): Nesterov off and decoupled decay 1,
/// as the reference forces them; ScaleByShape unit_rms_norm with extra ρ. Defaults (the
/// reference's): lr 3e-4, β 0.95, EO's quintic (5 steps), ρ 1 (`spectral_radius`). For 2-D
/// hidden matrices only, as there: Scion's other LMOs (sign for vectors, column norms for
/// embeddings and heads) are other routes' business.
struct ScionOptions {
  Schedule lr = Schedule::constant(3e-4);
  double momentum = 0.95;
  double spectral_radius = 1.0;  ///< ρ: ScaleByShape's extra (finite and > 0)
  PolarOptions polar = eo_quintic_polar();
  StateStorage mu_storage = Precision::fp32;  ///< the momentum buffer: fp32 or bf16 (MuonOptions)

  MuonOptions muon_options() const {
    MuonOptions m;
    m.lr = lr;
    m.momentum = momentum;
    m.nesterov = false;
    m.polar = polar;
    m.shape = ScaleByShape(ScaleByShape::Rule::unit_rms_norm, spectral_radius);
    m.weight_decay = 1.0;
    m.mu_storage = mu_storage;
    return m;
  }
};
inline auto scion(const ScionOptions& o = {}) { return muon(o.muon_options()); }

/// MuonHyperball (NVIDIA-NeMo Emerging-Optimizers `muon_hyperball.py` with its HyperballHook,
/// experimental there): Muon on the sphere ‖W‖_F = R. The orthogonalised update is rescaled to
/// norm R (ScaleToNorm), the decoupled decay and the step follow, and the weights are projected
/// back to norm R (ScaleToNormWeights):
///   W ← R·normalize((1 − lr·wd)·W − lr·R·normalize(NS(M))).
/// No shape factor: the normalisation would undo it. Defaults (EO's Muon): lr 3e-4, β 0.95 EMA
/// momentum without Nesterov, wd 0.01, EO's quintic (5 steps), ε 1e-15. The reference requires
/// `hyperball_radius` and refuses parameters whose norm differs from it; here `radius` is 1 by
/// default and init() sees no values, so start the parameters at norm R (the first step
/// projects them onto the sphere anyway).
struct MuonHyperballOptions {
  Schedule lr = Schedule::constant(3e-4);
  double momentum = 0.95;
  bool nesterov = false;
  PolarOptions polar = eo_quintic_polar();
  double weight_decay = 0.01;
  double radius = 1.0;  ///< R, the reference's hyperball_radius
  double eps = 1e-15;   ///< norms below eps are numerical zeros (the reference's hyperball_eps)
  StateStorage mu_storage = Precision::fp32;  ///< the momentum buffer: fp32 or bf16 (MuonOptions)
};
inline auto muon_hyperball(const MuonHyperballOptions& o = {}) {
  ScaleToNormWeights project;
  project.radius = o.radius;
  project.eps = o.eps;
  return chain(TraceMomentum{o.momentum, o.nesterov, TraceMomentum::Form::ema, false, o.mu_storage},
               Orthogonalize{o.polar}, ScaleToNorm{o.radius, o.eps}, AddDecayedWeights{o.weight_decay},
               ScaleByLearningRate{o.lr}, project);
}

/// MuAdam (algorithms.md §4d, SMuon repository form): D ⊙ polar(D ⊙ ñ) with D = (v̂ + ε)^{−1/4},
/// decoupled decay, lr. Defaults [V]: lr 0.02, β₁ 0.9, β₂ 0.999, ε 1e-8, no shape scaling; the
/// polar factor by the repository's own 5 Newton–Schulz steps (schedules::smuon_muadam(),
/// X/(‖X‖_F + 1e-7)) unless `polar` says otherwise, iterated in fp32 where the reference uses
/// bf16 [P] (the other presets' rule).
struct MuAdamOptions {
  Schedule lr = Schedule::constant(0.02);
  double b1 = 0.9, b2 = 0.999, eps = 1e-8;
  double exponent = -0.25;  ///< −1/2: MuAdam-SANIA
  PolarOptions polar = reference_polar();
  double weight_decay = 0.0;
  StateStorage mu_storage = Precision::fp32;  ///< the first moment: fp32 or bf16 (MuAdamDirection)

  /// muadam.py's zeropower_via_newtonschulz5: its 5 generated rows, X/(‖X‖_F + 1e-7).
  static PolarOptions reference_polar() { return newton_schulz_polar(schedules::smuon_muadam(), 1e-7); }
};
inline auto muadam(const MuAdamOptions& o = {}) {
  return chain(MuAdamDirection{o.b1, o.b2, o.eps, o.exponent, o.polar, o.mu_storage},
               AddDecayedWeights{o.weight_decay}, ScaleByLearningRate{o.lr});
}

/// Freon (algorithms.md §4b.1): Muon with the polar factor replaced by U Σ^{1−2c} Vᵀ of the
/// momentum (c = 2/3 → α = −1/3, the inverted spectrum [T]→[P]), rescaled to the Frobenius norm
/// of a full-rank polar factor [P], then Muon's shape scale, decay and lr.
/// The momentum is plain heavy ball, m_t = μ m_{t−1} + g_t with μ = 0.95 (§4b.1 [T]; no
/// Nesterov term, which Freon's sources do not use by default). It is kept in EMA form, (1 − μ)
/// times that m_t: U Σ^α Vᵀ of a multiple is the same multiple^α of it, and the rescale to
/// √min(r, c) removes it, as it removes ‖M‖'s own scale.
/// Singular values below 1e-3·‖M‖₂ are rolled off instead of raised to α < 0 (§5.1's practical
/// guard [P], l₀ = 1e-3; the kernel's own default floor, 1e-6, lets a direction at 1e-5·‖M‖₂
/// take most of the update's norm: 99.8 % of it in a one-step measurement, where the guard leaves
/// it 0.27 of the top direction's weight).
struct FreonOptions {
  double c = 2.0 / 3.0;
  Schedule lr = Schedule::constant(0.02);
  double momentum = 0.95;
  bool nesterov = false;
  ScaleByShape shape{};  ///< rule and extra factor (transforms.hpp; a Rule converts, extra 1)
  double weight_decay = 0.0;
  SpectralPowerOptions spectral = guarded_spectral();  ///< alpha is set from c
  StateStorage mu_storage = Precision::fp32;           ///< the momentum buffer: fp32 or bf16 (MuonOptions)

  /// The kernel's defaults with floor = 1e-3 (§5.1's guard, above).
  static SpectralPowerOptions guarded_spectral() {
    SpectralPowerOptions o;
    o.floor = 1e-3;
    return o;
  }
};
inline auto freon(const FreonOptions& o = {}) {
  SpectralPowerOptions sp = o.spectral;
  sp.alpha = 1.0 - 2.0 * o.c;
  return chain(TraceMomentum{o.momentum, o.nesterov, TraceMomentum::Form::ema, false, o.mu_storage},
               SpectralPower{sp}, ScaleToPolarNorm{}, ScaleByShape{o.shape},
               AddDecayedWeights{o.weight_decay}, ScaleByLearningRate{o.lr});
}

/// Kaon (algorithms.md §4b.2): Muon with the spectrum replaced by the chaotic map's (5 steps of
/// 4.1(I − XXᵀ)²X, ÷1.175) and Muon's shape scale, decay and lr.
struct KaonOptions {
  Schedule lr = Schedule::constant(0.02);
  double momentum = 0.95;
  bool nesterov = true;
  int steps = 5;
  ScaleByShape shape{};  ///< rule and extra factor (transforms.hpp; a Rule converts, extra 1)
  double weight_decay = 0.0;
  StateStorage mu_storage = Precision::fp32;  ///< the momentum buffer: fp32 or bf16 (MuonOptions)
};
inline auto kaon(const KaonOptions& o = {}) {
  return chain(TraceMomentum{o.momentum, o.nesterov, TraceMomentum::Form::ema, false, o.mu_storage},
               KaonSpectrum{o.steps}, ScaleByShape{o.shape}, AddDecayedWeights{o.weight_decay},
               ScaleByLearningRate{o.lr});
}

}  // namespace schatten::optim
