// SPDX-License-Identifier: Apache-2.0
/// \file
/// Adaptive step sizes for normalised directions. Distance-aware ones (algorithms.md §4c,
/// DA/SC/DF-Muon): the papers' exact rules are not public [U]; these are the proposals of §4c
/// [P], documented in docs/optim.md. They produce the final update −η_t·D_t (they replace
/// ScaleByLearningRate) and cap η_t by η_max; with `weight_decay` λ > 0 it is −η_t·(D_t + λW),
/// decoupled decay taken by the rule's own step (detail::step_with_decay). And NAMO's norm-based Adam-style
/// step (NamoStep, from its reference code), which also takes the weight decay, and its column-wise form
/// (NamoDStep, NAMO-D).
#pragma once

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "schatten/core/workspace.hpp"
#include "schatten/kernels/polar.hpp"
#include "schatten/optim/chain.hpp"
#include "schatten/optim/presets.hpp"
#include "schatten/optim/rule.hpp"
#include "schatten/optim/transforms.hpp"

namespace schatten::optim {

namespace detail {
/// u ← −η·(u + λW): the step η along u, with the weights decayed by the same step ([P], as
/// NAMO's decay takes NAMO's step; the distance-aware rules' η_t stands where Muon's lr(t)
/// stands in W ← (1 − lr·λ)W − lr·D). No step, no decay. Without decay (λ = 0) it is u ← −η·u
/// to the bit, as before the decay existed. Cost: one pass, two with decay.
inline void step_with_decay(Block u, ConstBlock w, double eta, double weight_decay) {
  scale(u, static_cast<float>(-eta));
  if (weight_decay != 0.0 && eta != 0.0) add_scaled(u, w, static_cast<float>(-eta * weight_decay));
}
/// True when step_with_decay(u, W, η, λ) leaves u finite for every η ∈ [0, eta_max], every finite
/// W and every u whose entries are at most `u_bound`: eta_max·u_bound ≤ FLT_MAX/4 and
/// eta_max·λ ≤ 1/2 keep the two rounded products within FLT_MAX/4 and FLT_MAX/2 (each at most
/// 1 + 2⁻²³ above its exact value), so their sum stays below FLT_MAX. A decay of at most half
/// the weights per step and a step of at most 10³⁷ times the direction: every setting in use.
inline bool step_with_decay_finite(double eta_max, double weight_decay, double u_bound) {
  return eta_max * u_bound <= double(FLT_MAX) / 4.0 && eta_max * weight_decay <= 0.5;
}
/// The update_bound (rule.hpp) of the whole-step rules below: −η·(D + λW) with η ≤ eta_max, D a
/// polar factor's entries (polar_iterate_bound(); +Inf with dual-norm scaling, where their
/// precheck does not cover them and their routes keep copies anyway) and |W| ≤
/// kUnguardedParameter: eta_max·(B + λ·kUnguardedParameter).
inline double step_bound(double eta_max, double weight_decay, const PolarOptions& polar) {
  if (polar.dual_norm_scale) return HUGE_VAL;
  return eta_max * polar_iterate_bound(polar) + eta_max * weight_decay * kUnguardedParameter;
}
/// The momentum of the rules below that keep their own (the EMA form without bias correction,
/// stepped with TraceMomentum::apply into their scratch, so that the state changes only once the
/// polar call succeeded): their max_gradient() and the momentum half of their precheck() are
/// its own (TraceMomentum::max_gradient, TraceMomentum::precheck_buffer).
inline TraceMomentum own_momentum(double beta, bool nesterov, StateStorage storage) {
  return TraceMomentum{beta, nesterov, TraceMomentum::Form::ema, false, storage};
}
/// "weight_decay" in a rule's signature only when set, so that the signatures (and with them
/// the checkpoints) written before the decay existed stay valid.
inline Signature& add_weight_decay(Signature& s, double weight_decay) {
  if (weight_decay != 0.0) s.add("weight_decay", weight_decay);
  return s;
}
}  // namespace detail

/// DA-Muon [P] (DoG-style "radius explored"): with W₀ the parameter at the first step,
///   r̄_t = max(r_ε, max_{s≤t} ‖W_s − W₀‖_F / √min(r, c)),   η_t = min(η_max, r̄_t / √(t + 1)),
/// u ← −η_t·u (−η_t·(u + λW) with weight_decay λ). The Frobenius distance divided by √min(r, c)
/// is comparable to a spectral distance for a full-rank difference ([P], one pass over W per step
/// instead of power iterations). Place it after the direction (Orthogonalize) and use no other
/// learning rate.
struct DistanceAwareStep {
  static constexpr const char* name = "distance_aware_step";
  double eta_max = 0.02;
  double r_eps = 1e-3;
  double weight_decay = 0.0;  ///< λ: decay taken by the rule's step η_t (step_with_decay)

  struct State {
    std::int64_t count = 0;
    double rbar = 0.0;  ///< r̄_t (0 before the first step)
    Buffer anchor;      ///< W₀, allocated at init, filled at the first update
  };
  State init(const BlockShape& s) const {
    return State{0, 0.0, Buffer(static_cast<std::size_t>(s.size()), 0.0f)};
  }

  /// update_bound (rule.hpp): −η_t·u − η_t·λ·W with η_t ≤ η_max (detail::step_with_decay).
  double update_bound(double in, const BlockShape&) const {
    return eta_max * in + eta_max * weight_decay * kUnguardedParameter;
  }
  /// η for the (0-based) step t given the running radius.
  static double eta(double eta_max, double rbar, std::int64_t t) {
    return std::min(eta_max, rbar / std::sqrt(double(t) + 1.0));
  }
  /// Runs on host or device memory (rule.hpp helpers; one reduction per step).
  static constexpr bool device_capable = true;
  Status update(Block u, State& s, ConstBlock p) const {
    const auto n = static_cast<std::size_t>(u.size());
    if (s.anchor.size() != n || p.size() != u.size()) return Status::invalid_argument;
    const Block anchor = block_like(s.anchor, p);
    if (s.count == 0) copy_block(anchor, p);
    const double ss = inner_of_differences(p, anchor.data, p.data, anchor.data);  // ‖W − W₀‖²_F
    const double r = std::sqrt(ss / double(std::max<index_t>(1, std::min(u.rows, u.cols))));
    s.rbar = std::max({s.rbar, r_eps, r});
    detail::step_with_decay(u, p, eta(eta_max, s.rbar, s.count), weight_decay);
    ++s.count;
    return Status::ok;
  }
  template <class V>
  friend void visit_fields(V& v, State& s) {
    v("count", s.count);
    v("rbar", s.rbar);
    v("anchor", s.anchor);
  }
  /// η_max ≥ 0 and r_ε > 0, finite; λ finite and ≥ 0.
  const char* check() const noexcept {
    if (!hyper::non_negative(weight_decay))
      return "distance_aware_step: weight_decay must be finite and >= 0";
    return hyper::non_negative(eta_max) && hyper::positive(r_eps)
               ? nullptr
               : "distance_aware_step: eta_max must be finite and >= 0, r_eps finite and > 0";
  }
  std::string config() const {
    Signature s(name);
    s.add("eta_max", eta_max).add("r_eps", r_eps);
    return detail::add_weight_decay(s, weight_decay).str();
  }
};

/// SC-Muon [P]: momentum (EMA, Nesterov), D_t = polar(m_t), and the step
///   κ_t = clip(⟨g_t, D_t⟩ / ⟨m_t, D_t⟩, 0, 1),   η_t = η_max·κ_t,   u ← −η_t·D_t,
/// where ⟨m_t, D_t⟩ = ‖m_t‖_* for the exact polar factor (so κ_t is the share of the momentum's
/// descent that the current gradient confirms) and m_t is the vector orthogonalised (the Nesterov
/// output). κ_t = 0 — no step — when the direction does not descend for the current gradient.
/// With weight_decay λ, u ← −η_t·(D_t + λW) (no step, no decay: step_with_decay).
/// One rule, because the certificate needs the raw gradient and the momentum.
/// `mu_storage`: the momentum in fp32 or bf16 (TraceMomentum's; docs/optim.md "State precision").
struct ScaleCalibratedDirection {
  static constexpr const char* name = "scale_calibrated_direction";
  static constexpr bool may_fail = true;
  double beta = 0.95;
  bool nesterov = true;
  double eta_max = 0.02;
  PolarOptions polar{};
  StateStorage mu_storage = Precision::fp32;  ///< the momentum's storage: fp32 or bf16
  double weight_decay = 0.0;                  ///< λ: decay taken by the step η_t (step_with_decay)

  /// Scratch, allocated at init, not checkpointed and shared by copies of a state (the
  /// partition's backups do not copy it) and by a partition's states of one shape: g_t, the
  /// next momentum in the state's storage (the state changes only once the polar call
  /// succeeded) and the vector that is orthogonalised.
  struct Scratch {
    Buffer gradient, direction_in;
    detail::FirstMoment next;
    std::shared_ptr<Workspace> workspace = std::make_shared<Workspace>();
  };
  struct State : detail::FirstMoment {  // the momentum in its storage
    std::int64_t count = 0;
    double kappa = 0;  ///< κ of the last step (observable)
    std::shared_ptr<Scratch> scratch = std::make_shared<Scratch>();
  };
  State init(const BlockShape& s) const {
    const auto n = static_cast<std::size_t>(s.size());
    State st;
    detail::init_first_moment(st, n, mu_storage);
    Scratch& sc = *st.scratch;
    for (Buffer* b : {&sc.gradient, &sc.direction_in})
      b->assign(n, 0.0f);
    detail::init_first_moment(sc.next, n, mu_storage);
    sc.workspace->reserve(polar_workspace_bytes(s.rows, s.cols, 1, polar, Precision::fp32));
    return st;
  }
  /// The momentum's (detail::own_momentum): FLT_MAX/2, in either storage.
  double max_gradient() const { return detail::own_momentum(beta, nesterov, mu_storage).max_gradient(); }
  /// The state and the scratch sized for u, and the parameter for the decay.
  bool sized(const State& s, ConstBlock u, ConstBlock p) const {
    const auto n = static_cast<std::size_t>(u.size());
    const Scratch& sc = *s.scratch;
    return detail::first_moment_sized(s, n, mu_storage) &&
           detail::first_moment_sized(sc.next, n, mu_storage) && sc.gradient.size() == n &&
           sc.direction_in.size() == n && (weight_decay == 0.0 || p.size() == u.size());
  }
  /// update()'s failures before it runs, touching nothing (rule.hpp, precheck): invalid_argument
  /// for a state or parameter of another shape, then the momentum's (TraceMomentum::
  /// precheck_buffer: out_of_range or non_finite_input for a buffer entry beyond its overflow
  /// bound). Where precheck_covers(), ok promises success, and a finite u for a finite
  /// parameter (the decay's term is λ·W). Cost: one read of the momentum (with `flag` on device
  /// memory, a kernel not waited for).
  Status precheck(ConstBlock u, const State& s, ConstBlock p, float* flag = nullptr) const {
    if (!sized(s, u, p)) return Status::invalid_argument;
    return detail::own_momentum(beta, nesterov, mu_storage).precheck_buffer(u, s, s.count + 1, flag);
  }
  /// The polar call cannot fail (detail::polar_total_on_finite on the scratch's workspace) and
  /// −η·(D + λW) cannot overflow (detail::step_with_decay_finite, D's entries at most
  /// polar_iterate_bound(), η ≤ η_max): then a partition keeps no copy of this state.
  bool precheck_covers(const State& s, const BlockShape& shape, MemoryKind memory) const {
    return detail::polar_total_on_finite(polar, s.scratch->workspace.get(), shape, memory) &&
           detail::step_with_decay_finite(eta_max, weight_decay, polar_iterate_bound(polar));
  }
  /// update_bound (rule.hpp): −η_t·(D + λW) with η_t ≤ η_max and D's entries within
  /// polar_iterate_bound() (detail::step_bound).
  double update_bound(double, const BlockShape&) const {
    return detail::step_bound(eta_max, weight_decay, polar);
  }
  /// Runs on host or device memory (rule.hpp helpers and the polar kernel; two reductions read
  /// back per step).
  static constexpr bool device_capable = true;
  Status update(Block u, State& s, ConstBlock p) const {
    Scratch& sc = *s.scratch;
    if (!sized(s, u, p)) return Status::invalid_argument;
    const Block g = block_like(sc.gradient, u), in = block_like(sc.direction_in, u);
    copy_block(g, u);
    detail::copy_first_moment(sc.next, s);
    const Bf16Store how = detail::first_moment_store(s, s.count + 1);
    detail::with_first_moment(sc.next, [&](auto* next_mu) {
      TraceMomentum::apply(u, next_mu, beta, nesterov, TraceMomentum::Form::ema, {}, how);
    });
    copy_block(in, u);
    const PolarReport r = schatten::polar(MatrixRef<const float>(u), u, polar, sc.workspace.get());
    if (r.status != Status::ok) {  // nothing of the state changed; give the gradient back
      copy_block(u, g);
      return r.status;
    }
    const double md = inner_of_differences(in, nullptr, u.data, nullptr);  // ⟨m_t, D_t⟩
    const double gd = inner_of_differences(g, nullptr, u.data, nullptr);   // ⟨g_t, D_t⟩
    s.kappa = md > 0.0 ? std::clamp(gd / md, 0.0, 1.0) : 0.0;
    detail::step_with_decay(u, p, eta_max * s.kappa, weight_decay);
    detail::swap_first_moment(s, sc.next);
    ++s.count;
    return Status::ok;
  }
  template <class V>
  friend void visit_scratch(V& v, State& s) {
    v("gradient", s.scratch->gradient);
    detail::visit_first_moment(v, s.scratch->next, "next_mu");
    v("direction_in", s.scratch->direction_in);
  }
  template <class F>
  friend void visit_workspaces(F& f, State& s) {
    f(s.scratch->workspace);
  }
  /// The scratch holds nothing between updates, and no batched form uses it (rule.hpp).
  template <class F>
  friend void visit_shareable_scratch(F& f, State& s) {
    f(s.scratch);
  }
  /// "mu" is the momentum in its storage: checkpoints hold it as floats either way.
  template <class V>
  friend void visit_fields(V& v, State& s) {
    v("count", s.count);
    detail::visit_first_moment(v, s);
    v("kappa", s.kappa);
  }
  /// β ∈ [0, 1), η_max and λ finite and ≥ 0, usable polar options, storage fp32 or bf16.
  const char* check() const noexcept {
    if (!hyper::decay_rate(beta)) return "scale_calibrated_direction: beta must be in [0, 1)";
    if (!hyper::non_negative(eta_max)) return "scale_calibrated_direction: eta_max must be finite and >= 0";
    if (!hyper::non_negative(weight_decay))
      return "scale_calibrated_direction: weight_decay must be finite and >= 0";
    if (!hyper::state_storage(mu_storage))
      return "scale_calibrated_direction: mu_storage must be fp32 or bf16 (stochastic rounding needs bf16)";
    return check_polar_options(polar);
  }
  std::string config() const {
    Signature s(name);
    s.add("beta", beta).add("nesterov", nesterov).add("eta_max", eta_max).add("polar", polar_config(polar));
    detail::add_first_moment_storage(s, mu_storage);
    return detail::add_weight_decay(s, weight_decay).str();
  }
};

/// DF-Muon [P] (algorithms.md §4c: a recentred trust region and a majorised 1-D search, with
/// no tuned learning rate). Per step, with g_t the gradient, m_t the EMA Nesterov momentum,
/// D_t = polar(m_t), k = min(r, c) and distances measured as ‖·‖_F/√k (DA-Muon's spectral proxy):
///   η_t = argmin_{η ∈ [0, η_max]} φ(η),
///   φ(η) = −η⟨g_t, D_t⟩ + (L̂_t/2)η²‖D_t‖²_F + λ(‖W_t − ηD_t − W̄‖_F/√k − ρ)_+,
///   u ← −η_t·D_t, or −η_t·(D_t + λW) with weight_decay λ (step_with_decay: the decay takes
///   the step that φ chose for D_t and is not part of φ, which models the loss alone).
/// φ majorises f(W_t − ηD_t) − f(W_t) when f is L̂_t-smooth in the Frobenius norm along −D_t,
/// plus a soft trust region of radius ρ around the anchor W̄ with price λ per unit of distance.
///  * L̂_t: the curvature along the moves, from secants s = W_t − W′, y = g_t − g′ to the last
///    secant point (W′, g′). Two estimates, and the larger is taken (a majoriser wants the upper
///    one): the last secant's ⟨y, s⟩/‖s‖²_F, and the least-squares fit over the recent secants,
///    Σ γ^j⟨y_j, s_j⟩ / Σ γ^j‖s_j‖²_F with γ = curvature_decay (two running sums in the state).
///    The fit is what keeps the step under gradient noise: a minibatch's noise ε makes y of
///    size ‖ε‖ whatever the move, so a quotient ‖y‖_F/‖s‖_F grows as the step shrinks, and the
///    step shrank geometrically to nothing (docs/optim.md, DF-Muon). Along the move, the noise
///    enters as ⟨ε, s⟩, of either sign, and the fit weights each secant by ‖s‖², so short noisy
///    moves barely count. (W′, g′) is the previous step's point, unless W moved less than
///    secant_min_step·‖W_t‖_F since, in which case L̂, the sums and the old point are kept (such
///    a difference of float parameters is mostly rounding; see secant_min_step). Floored at
///    l_min (the safe floor: it keeps the quotient positive where the curvature along the moves
///    is negative or zero; a small L̂ makes the quadratic step large, which η_max and the trust
///    region then bound).
///  * W̄: W₀ at the first step, recentred to W_t whenever the certificate ⟨g_t, W_t − W̄⟩ ≤ 0
///    (for star-convex f, ⟨g, W − W*⟩ ≥ f(W) − f* ≥ 0: a non-positive certificate says the anchor
///    is not behind us and cannot stand for W*).
///  * The first step has no secant: η₀ = min(η_max, eta0) (DA-Muon's r_ε role).
///  * The minimiser: φ is convex in η (a convex quadratic plus (convex − ρ)_+), so η_t is found
///    from the sign of φ′. Inside the trust region φ′ = −a + L̂qη (closed form a/(L̂q)); outside
///    the stationarity condition is a quartic, solved by 64 bisection steps on φ′ (monotone),
///    each O(1) from the three scalars ‖W − W̄‖², ⟨W − W̄, D⟩, ‖D‖². No step when ⟨g, D⟩ ≤ 0
///    and the trust region does not pull back.
/// Hyper-parameters ρ, λ and the paper's M are [U]; the defaults are [P] (docs/optim.md).
/// Cost per step: the polar factor plus about 15 passes over the block (3 copies and the momentum
/// before it; the 8 inner products, the anchor, the scaling and 2 copies after); state: momentum,
/// anchor, the secant point's gradient and parameter (4 buffers), the fit's two sums, plus 2
/// scratch buffers.
/// `mu_storage`: the momentum in fp32 or bf16 (TraceMomentum's; docs/optim.md "State
/// precision"); the anchor and the secant point stay fp32 (they enter differences of nearby
/// values).
struct MajorizedStep {
  static constexpr const char* name = "majorized_step";
  static constexpr bool may_fail = true;
  double beta = 0.95;
  bool nesterov = true;
  double eta_max = 0.02;
  double rho = 1.0;      ///< trust-region radius (spectral-proxy distance units)
  double lambda = 1e-2;  ///< price of leaving the trust region (loss per unit distance)
  double l_min = 1e-8;   ///< floor of the secant curvature estimate
  double eta0 = 1e-3;    ///< first step (no secant yet), capped by eta_max
  /// γ of the curvature fit [P]: the weight of a secant j steps old is γ^j (0: the last secant
  /// alone). 0.9, a horizon of about 10 steps, from the measurements in docs/optim.md (DF-Muon).
  double curvature_decay = 0.9;
  PolarOptions polar{};
  /// The smallest move ‖W_t − W′‖_F/‖W_t‖_F taken as a secant [P]. Each float parameter is
  /// rounded to within u = 2⁻²⁴ ≈ 6e-8 of itself, so W_t − W′ is off by up to about
  /// 2u‖W_t‖_F: at a move of 1e-5·‖W_t‖_F that is 1.2 % of it. Smaller moves happen: after an
  /// exact line search ⟨g, D⟩ of the next step can be rounding (1e-17), and a step of 1e-10
  /// gave a secant of 0, so L̂ = l_min and the next step η_max (docs/optim.md, DF-Muon).
  static constexpr double secant_min_step = 1e-5;
  StateStorage mu_storage = Precision::fp32;  ///< the momentum's storage: fp32 or bf16
  double weight_decay = 0.0;                  ///< λ: decay taken by the step η_t (step_with_decay)

  /// Scratch, not checkpointed and shared by copies of a state (the partition's backups do not
  /// copy it) and by a partition's states of one shape: g_t and the next momentum in the
  /// state's storage (the state changes only once the polar call succeeded).
  struct Scratch {
    Buffer gradient;
    detail::FirstMoment next;
    std::shared_ptr<Workspace> workspace = std::make_shared<Workspace>();
  };
  struct State : detail::FirstMoment {  // the momentum in its storage
    std::int64_t count = 0;
    double lhat = 0.0;                     ///< L̂ of the last step
    double eta = 0.0;                      ///< η of the last step (observable)
    double fit_ys = 0.0, fit_ss = 0.0;     ///< the fit's sums Σ γ^j⟨y_j, s_j⟩ and Σ γ^j‖s_j‖²
    Buffer anchor, prev_grad, prev_param;  ///< W̄ and the secant point (g′, W′)
    std::shared_ptr<Scratch> scratch = std::make_shared<Scratch>();
  };
  State init(const BlockShape& s) const {
    const auto n = static_cast<std::size_t>(s.size());
    State st;
    Scratch& sc = *st.scratch;
    detail::init_first_moment(st, n, mu_storage);
    detail::init_first_moment(sc.next, n, mu_storage);
    for (Buffer* b : {&st.anchor, &st.prev_grad, &st.prev_param, &sc.gradient})
      b->assign(n, 0.0f);
    sc.workspace->reserve(polar_workspace_bytes(s.rows, s.cols, 1, polar, Precision::fp32));
    return st;
  }
  /// The momentum's (detail::own_momentum): FLT_MAX/2, in either storage.
  double max_gradient() const { return detail::own_momentum(beta, nesterov, mu_storage).max_gradient(); }
  /// The state and the scratch sized for u, and the parameter of u's size.
  bool sized(const State& s, ConstBlock u, ConstBlock p) const {
    const auto n = static_cast<std::size_t>(u.size());
    const Scratch& sc = *s.scratch;
    for (const Buffer* b : {&s.anchor, &s.prev_grad, &s.prev_param, &sc.gradient})
      if (b->size() != n) return false;
    return detail::first_moment_sized(s, n, mu_storage) &&
           detail::first_moment_sized(sc.next, n, mu_storage) && p.size() == u.size();
  }
  /// update()'s failures before it runs, touching nothing (rule.hpp, precheck): invalid_argument
  /// for a state or parameter of another shape; non_finite_input for a curvature scalar (L̂ or
  /// the fit's sums) that is not finite, a negative L̂ or Σ‖ΔW‖², or sums whose quotient is not
  /// finite (a corrupt checkpoint: no step writes them); then the momentum's
  /// (TraceMomentum::precheck_buffer). Where precheck_covers(), ok promises success, and a
  /// finite u when the parameter is finite and so are the anchor and the secant point (earlier
  /// parameters and gradients, not read here). Cost: one read of the momentum (with `flag` on
  /// device memory, a kernel not waited for).
  Status precheck(ConstBlock u, const State& s, ConstBlock p, float* flag = nullptr) const {
    if (!sized(s, u, p)) return Status::invalid_argument;
    if (!(std::isfinite(s.lhat) && std::isfinite(s.fit_ys) && std::isfinite(s.fit_ss)) || s.lhat < 0.0 ||
        s.fit_ss < 0.0 || (s.fit_ss > 0.0 && !std::isfinite(s.fit_ys / s.fit_ss)))
      return Status::non_finite_input;
    return detail::own_momentum(beta, nesterov, mu_storage).precheck_buffer(u, s, s.count + 1, flag);
  }
  /// The polar call cannot fail (detail::polar_total_on_finite on the scratch's workspace) and
  /// −η·(D + λW) cannot overflow (detail::step_with_decay_finite: η ∈ [0, η_max], D's entries at
  /// most polar_iterate_bound()): then a partition keeps no copy of this state.
  bool precheck_covers(const State& s, const BlockShape& shape, MemoryKind memory) const {
    return detail::polar_total_on_finite(polar, s.scratch->workspace.get(), shape, memory) &&
           detail::step_with_decay_finite(eta_max, weight_decay, polar_iterate_bound(polar));
  }
  /// update_bound (rule.hpp): −η_t·(D + λW) with η_t ≤ η_max (the minimiser is searched in
  /// [0, η_max]) and D's entries within polar_iterate_bound() (detail::step_bound).
  double update_bound(double, const BlockShape&) const {
    return detail::step_bound(eta_max, weight_decay, polar);
  }

  /// The scalars of φ: a = ⟨g, D⟩, lq = L̂‖D‖²_F, q = ‖D‖²_F, e2 = ‖W − W̄‖²_F, c = ⟨W − W̄, D⟩,
  /// k = min(r, c); λ, ρ as above.
  struct Majorizer {
    double a, lq, q, e2, c, k, lambda, rho;
    /// ‖W − ηD − W̄‖_F/√k.
    double dist(double eta) const { return std::sqrt(std::max(0.0, e2 - 2.0 * eta * c + eta * eta * q) / k); }
    double value(double eta) const {
      return -eta * a + 0.5 * lq * eta * eta + lambda * std::max(0.0, dist(eta) - rho);
    }
    /// Right derivative of φ (the penalty counts where the distance exceeds ρ or is at ρ and
    /// growing).
    double slope(double eta) const {
      double d = -a + lq * eta;
      const double r = dist(eta);
      const double dr = r > 0.0 ? (eta * q - c) / (k * r) : std::sqrt(q / k);  // d dist/dη
      if (lambda > 0.0 && (r > rho || (r == rho && dr > 0.0))) d += lambda * dr;
      return d;
    }
  };
  /// argmin of the convex φ over [0, eta_max] (see the struct comment).
  static double minimise(const Majorizer& m, double eta_max) {
    if (!(eta_max > 0.0) || m.slope(0.0) >= 0.0) return 0.0;  // φ increases from η = 0
    const double inside = m.lq > 0.0 ? m.a / m.lq : eta_max;  // stationary point of the quadratic
    if (m.lambda == 0.0) return std::min(inside, eta_max);
    if (inside <= eta_max && m.dist(inside) < m.rho) return inside;  // inside the trust region
    if (m.slope(eta_max) <= 0.0) return eta_max;
    double lo = 0.0, hi = eta_max;  // slope(lo) < 0 < slope(hi)
    for (int i = 0; i < 64; ++i) {
      const double mid = 0.5 * (lo + hi);
      (m.slope(mid) < 0.0 ? lo : hi) = mid;
    }
    return 0.5 * (lo + hi);
  }

  /// Runs on host or device memory (rule.hpp helpers and the polar kernel; eight reductions read
  /// back per step, each one pass over two or three arrays).
  static constexpr bool device_capable = true;
  Status update(Block u, State& s, ConstBlock p) const {
    Scratch& sc = *s.scratch;
    if (!sized(s, u, p)) return Status::invalid_argument;
    const Block g = block_like(sc.gradient, u);
    copy_block(g, u);
    detail::copy_first_moment(sc.next, s);
    const Bf16Store how = detail::first_moment_store(s, s.count + 1);
    detail::with_first_moment(sc.next, [&](auto* next_mu) {
      TraceMomentum::apply(u, next_mu, beta, nesterov, TraceMomentum::Form::ema, {}, how);
    });
    const PolarReport r = schatten::polar(MatrixRef<const float>(u), u, polar, sc.workspace.get());
    if (r.status != Status::ok) {  // nothing of the state changed; give the gradient back
      copy_block(u, g);
      return r.status;
    }
    const float* w = p.data;
    const float* d = u.data;
    const float* anchor = s.anchor.data();
    const double a = inner_of_differences(g, nullptr, d, nullptr);  // ⟨g, D⟩
    const double q = squared_norm(u);                               // ‖D‖²
    const double ys =
        inner_of_differences(g, s.prev_grad.data(), w, s.prev_param.data());  // ⟨g − g′, W − W′⟩
    const double dw2 = inner_of_differences(p, s.prev_param.data(), w, s.prev_param.data());  // ‖W − W′‖²
    const double w2 = squared_norm(p);                                                        // ‖W‖²
    const double cert = inner_of_differences(g, nullptr, w, anchor);          // ⟨g, W − W̄⟩
    if (s.count == 0 || cert <= 0.0) copy_block(block_like(s.anchor, p), p);  // (re)centre W̄ = W_t
    const double e2 = inner_of_differences(p, anchor, w, anchor);             // ‖W − W̄‖²
    const double c = inner_of_differences(u, nullptr, w, anchor);             // ⟨D, W − W̄⟩
    // W′, g′: the last secant point. A move below secant_min_step·‖W‖ is not a secant.
    const bool secant = s.count > 0 && dw2 > 0.0 && dw2 >= secant_min_step * secant_min_step * w2;
    double eta;
    if (s.count == 0) {
      eta = std::min(eta_max, eta0);
    } else {
      if (secant) {
        s.fit_ys = curvature_decay * s.fit_ys + ys;
        s.fit_ss = curvature_decay * s.fit_ss + dw2;
        // A quotient beyond double (sums edited in a checkpoint: fit_ss = 1e-300 under fit_ys =
        // 1e308) keeps the last L̂, so that an ok step never leaves L̂ = ∞ (found by an audit,
        // 2026-12-06; precheck() refuses such sums first where it runs).
        const double candidate = std::max(ys / dw2, s.fit_ys / s.fit_ss);
        if (std::isfinite(candidate)) s.lhat = candidate;
      }
      s.lhat = std::max(s.lhat, l_min);
      const double k = double(std::max<index_t>(1, std::min(u.rows, u.cols)));
      eta = minimise(Majorizer{a, s.lhat * q, q, e2, c, k, lambda, rho}, eta_max);
    }
    detail::step_with_decay(u, p, eta, weight_decay);
    s.eta = eta;
    detail::swap_first_moment(s, sc.next);
    if (s.count == 0 || secant) {  // the next secant starts here
      copy_block(block_like(s.prev_grad, u), g);
      copy_block(block_like(s.prev_param, p), p);
    }
    ++s.count;
    return Status::ok;
  }
  template <class V>
  friend void visit_scratch(V& v, State& s) {
    v("gradient", s.scratch->gradient);
    detail::visit_first_moment(v, s.scratch->next, "next_mu");
  }
  template <class F>
  friend void visit_workspaces(F& f, State& s) {
    f(s.scratch->workspace);
  }
  /// The scratch holds nothing between updates, and no batched form uses it (rule.hpp).
  template <class F>
  friend void visit_shareable_scratch(F& f, State& s) {
    f(s.scratch);
  }
  /// "mu" is the momentum in its storage: checkpoints hold it as floats either way.
  template <class V>
  friend void visit_fields(V& v, State& s) {
    v("count", s.count);
    v("lhat", s.lhat);
    v("eta", s.eta);
    v("fit_ys", s.fit_ys);
    v("fit_ss", s.fit_ss);
    detail::visit_first_moment(v, s);
    v("anchor", s.anchor);
    v("prev_grad", s.prev_grad);
    v("prev_param", s.prev_param);
  }
  /// β, γ ∈ [0, 1); η_max, ρ, λ, η₀ and weight_decay finite and ≥ 0; l_min finite and > 0 (it
  /// keeps L̂ positive); usable polar options; storage fp32 or bf16.
  const char* check() const noexcept {
    if (!hyper::decay_rate(beta)) return "majorized_step: beta must be in [0, 1)";
    if (!hyper::decay_rate(curvature_decay)) return "majorized_step: curvature_decay must be in [0, 1)";
    if (!(hyper::non_negative(eta_max) && hyper::non_negative(rho) && hyper::non_negative(lambda) &&
          hyper::non_negative(eta0)))
      return "majorized_step: eta_max, rho, lambda and eta0 must be finite and >= 0";
    if (!hyper::non_negative(weight_decay)) return "majorized_step: weight_decay must be finite and >= 0";
    if (!hyper::positive(l_min)) return "majorized_step: l_min must be finite and > 0";
    if (!hyper::state_storage(mu_storage))
      return "majorized_step: mu_storage must be fp32 or bf16 (stochastic rounding needs bf16)";
    return check_polar_options(polar);
  }
  std::string config() const {
    Signature s(name);
    s.add("beta", beta)
        .add("nesterov", nesterov)
        .add("eta_max", eta_max)
        .add("rho", rho)
        .add("lambda", lambda);
    s.add("l_min", l_min)
        .add("eta0", eta0)
        .add("curvature_decay", curvature_decay)
        .add("polar", polar_config(polar));
    detail::add_first_moment_storage(s, mu_storage);
    return detail::add_weight_decay(s, weight_decay).str();
  }
};

/// DA-Muon: EMA Nesterov momentum → orthogonalise → distance-aware step (no other lr).
struct DaMuonOptions {
  double eta_max = 0.02;
  double r_eps = 1e-3;
  double momentum = 0.95;
  bool nesterov = true;
  PolarOptions polar = PolarOptions{};
  StateStorage mu_storage = Precision::fp32;  ///< the momentum buffer: fp32 or bf16 (MuonOptions)
  double weight_decay = 0.0;  ///< W ← (1 − η_t λ)W − η_t D_t (DistanceAwareStep; 0: none)
};
inline auto da_muon(const DaMuonOptions& o = {}) {
  return chain(TraceMomentum{o.momentum, o.nesterov, TraceMomentum::Form::ema, false, o.mu_storage},
               Orthogonalize{o.polar}, DistanceAwareStep{o.eta_max, o.r_eps, o.weight_decay});
}

/// SC-Muon: the certificate-scaled step of ScaleCalibratedDirection.
struct ScMuonOptions {
  double eta_max = 0.02;
  double momentum = 0.95;
  bool nesterov = true;
  PolarOptions polar = PolarOptions{};
  StateStorage mu_storage = Precision::fp32;  ///< the momentum buffer: fp32 or bf16 (MuonOptions)
  double weight_decay = 0.0;  ///< W ← (1 − η_t λ)W − η_t D_t (ScaleCalibratedDirection; 0: none)
};
inline auto sc_muon(const ScMuonOptions& o = {}) {
  return chain(
      ScaleCalibratedDirection{o.momentum, o.nesterov, o.eta_max, o.polar, o.mu_storage, o.weight_decay});
}

}  // namespace schatten::optim

namespace schatten::optim {
/// DF-Muon [P]: the majorised, trust-region step of MajorizedStep (no other lr).
struct DfMuonOptions {
  double eta_max = 0.02;
  double rho = 1.0;
  double lambda = 1e-2;
  double l_min = 1e-8;
  double eta0 = 1e-3;
  double curvature_decay = 0.9;  ///< γ of the curvature fit (MajorizedStep)
  double momentum = 0.95;
  bool nesterov = true;
  PolarOptions polar = PolarOptions{};
  StateStorage mu_storage = Precision::fp32;  ///< the momentum buffer: fp32 or bf16 (MuonOptions)
  double weight_decay = 0.0;  ///< W ← (1 − η_t λ)W − η_t D_t (MajorizedStep; 0: none)
};
inline auto df_muon(const DfMuonOptions& o = {}) {
  return chain(MajorizedStep{o.momentum, o.nesterov, o.eta_max, o.rho, o.lambda, o.l_min, o.eta0,
                             o.curvature_decay, o.polar, o.mu_storage, o.weight_decay});
}
}  // namespace schatten::optim

namespace schatten::optim {
/// NAMO (Zhang et al. 2026, "Adam Improves Muon: Adaptive Moment Estimation with Orthogonalized
/// Momentum", arXiv 2602.17080; the reference src/namo.py of minxin-zhg/namo): Muon's direction
/// with an Adam-style step size built from norms. Per block and step t (1-based), g the gradient:
///   m ← β m + (1 − β) g;  N = (1 − β) g + β m (Nesterov) or m;  O = polar(N)
///   v ← μ₂ v + (1 − μ₂)‖g‖²_F                                       (one scalar per block)
///   α_t = lr(t)·√(1 − μ₂ᵗ)/(1 − βᵗ + 1e-12) · ‖N‖_F/(√v + ε)
///   u ← −min(α_t·c·√max(r, c), 1)·O − λ·min(α_t, 1)·W
/// i.e. W ← (1 − λ·min(α_t, 1))·W − min(α_t·c·√max(r, c), 1)·O: Adam's bias-corrected ratio of
/// first to second moment, taken of the norms, sets the step, which Moonlight's 0.2·√max(r, c)
/// then scales; both clamps are the reference's. Defaults (the reference's): lr 0.01, β 0.95
/// Nesterov, μ₂ 0.99, ε 1e-8, c 0.2, λ 0.1, NS5 Keller. Not in algorithms.md; [P] as NorMuon
/// and AdaMuon (NS5 in the input's precision where the reference casts to bf16; a conv's
/// flattened shape for max(r, c) where the reference takes its first two dimensions). The norms
/// and α accumulate in double. One rule (no other lr): the decay takes the adaptive step.
/// On a failure of the polar call the chain restores the momentum (may_fail). `mu_storage`: the
/// momentum in fp32 or bf16 (TraceMomentum's; docs/optim.md "State precision"); ‖N‖_F is taken
/// of the unrounded Nesterov output.
struct NamoStep {
  static constexpr const char* name = "namo_step";
  static constexpr bool may_fail = true;
  static constexpr bool device_capable = true;  // rule.hpp helpers and the polar kernel
  Schedule lr = Schedule::constant(1e-2);
  double beta = 0.95;
  bool nesterov = true;
  double mu2 = 0.99;
  double eps = 1e-8;
  double scale = 0.2;
  double weight_decay = 0.1;
  PolarOptions polar = MuonOptions::keller_polar();
  StateStorage mu_storage = Precision::fp32;  ///< the momentum's storage: fp32 or bf16

  struct State : detail::FirstMoment {  // the momentum in its storage
    std::int64_t count = 0;
    double v = 0.0;      ///< EMA of ‖g‖²_F
    double alpha = 0.0;  ///< α_t of the last step (observable)
    std::shared_ptr<Workspace> workspace = std::make_shared<Workspace>();  // not checkpointed
  };
  State init(const BlockShape& s) const {
    State st;
    detail::init_first_moment(st, static_cast<std::size_t>(s.size()), mu_storage);
    st.workspace->reserve(polar_workspace_bytes(s.rows, s.cols, 1, polar, Precision::fp32));
    return st;
  }
  /// The momentum's (detail::own_momentum): FLT_MAX/2, in either storage.
  double max_gradient() const { return detail::own_momentum(beta, nesterov, mu_storage).max_gradient(); }
  /// update()'s failures before it runs, touching nothing (rule.hpp, precheck): invalid_argument
  /// for a state or parameter of another shape; non_finite_input for a second moment v that is
  /// not finite or is negative (a corrupt checkpoint); then the momentum's
  /// (TraceMomentum::precheck_buffer). Where precheck_covers(), ok promises success, and a
  /// finite u for a finite parameter. Cost: one read of the momentum (with `flag` on device
  /// memory, a kernel not waited for).
  Status precheck(ConstBlock u, const State& s, ConstBlock p, float* flag = nullptr) const {
    if (!detail::first_moment_sized(s, static_cast<std::size_t>(u.size()), mu_storage) ||
        p.size() != u.size())
      return Status::invalid_argument;
    if (!(std::isfinite(s.v) && s.v >= 0.0)) return Status::non_finite_input;
    return detail::own_momentum(beta, nesterov, mu_storage).precheck_buffer(u, s, s.count + 1, flag);
  }
  /// The polar call cannot fail (detail::polar_total_on_finite on the state's workspace) and the
  /// update −min(α·c·√max(r, c), 1)·O − λ·min(α, 1)·W cannot overflow (step ≤ 1 and decay ≤ λ:
  /// detail::step_with_decay_finite with η_max = 1): then a partition keeps no copy of this state.
  bool precheck_covers(const State& s, const BlockShape& shape, MemoryKind memory) const {
    return detail::polar_total_on_finite(polar, s.workspace.get(), shape, memory) &&
           detail::step_with_decay_finite(1.0, weight_decay, polar_iterate_bound(polar));
  }
  /// update_bound (rule.hpp): −min(α·c·√max(r, c), 1)·O − λ·min(α, 1)·W, at most
  /// polar_iterate_bound() + λ·kUnguardedParameter (detail::step_bound with a step of 1; NAMO-D's
  /// per-column steps and decays are clamped alike).
  double update_bound(double, const BlockShape&) const {
    return detail::step_bound(1.0, weight_decay, polar);
  }
  /// u ← the momentum's output (TraceMomentum::apply, EMA form), the state's buffer updated in
  /// its storage for step t (1-based; shared with NamoDStep).
  void momentum(Block u, detail::FirstMoment& s, std::int64_t t) const {
    const Bf16Store how = detail::first_moment_store(s, t);
    detail::with_first_moment(
        s, [&](auto* mu) { TraceMomentum::apply(u, mu, beta, nesterov, TraceMomentum::Form::ema, {}, how); });
  }
  /// α_t from the step t (1-based), the new second moment v and ‖N‖_F (the one formula).
  double step_size(std::int64_t t, double v, double momentum_norm) const {
    const double bc1 = 1.0 - std::pow(beta, double(t)), bc2 = 1.0 - std::pow(mu2, double(t));
    return lr(t - 1) * std::sqrt(bc2) / (bc1 + 1e-12) * momentum_norm / (std::sqrt(v) + eps);
  }
  Status update(Block u, State& s, ConstBlock p) const {
    if (!detail::first_moment_sized(s, static_cast<std::size_t>(u.size()), mu_storage) ||
        p.size() != u.size())
      return Status::invalid_argument;  // other shape or storage
    const double g2 = squared_norm(u);  // ‖g‖², before u becomes the momentum
    momentum(u, s, s.count + 1);
    const double n_norm = std::sqrt(squared_norm(u));
    const PolarReport r = schatten::polar(MatrixRef<const float>(u), u, polar, s.workspace.get());
    if (r.status != Status::ok) return r.status;  // the chain restores mu and u
    const std::int64_t t = s.count + 1;
    const double v = mu2 * s.v + (1.0 - mu2) * g2;
    const double alpha = step_size(t, v, n_norm);
    const double step = std::min(alpha * scale * std::sqrt(double(std::max(u.rows, u.cols))), 1.0);
    optim::scale(u, static_cast<float>(-step));
    const double decay = weight_decay * std::min(alpha, 1.0);
    if (decay != 0.0) add_scaled(u, p, static_cast<float>(-decay));
    s.v = v;
    s.alpha = alpha;
    s.count = t;
    return Status::ok;
  }
  template <class F>
  friend void visit_workspaces(F& f, State& s) {
    f(s.workspace);
  }
  /// "mu" is the momentum in its storage: checkpoints hold it as floats either way.
  template <class V>
  friend void visit_fields(V& v, State& s) {
    v("count", s.count);
    detail::visit_first_moment(v, s);
    v("v", s.v);
    v("alpha", s.alpha);
  }
  /// Schedule::check's refusals, naming this rule.
  static constexpr const char* kScheduleRefusals[2] = {
      "namo_step: lr schedule: the peak and final learning rates must be finite and >= 0",
      "namo_step: lr schedule: warmup and total must be >= 0 steps"};
  /// A usable lr schedule; β, μ₂ ∈ [0, 1); ε, c > 0 and λ ≥ 0, finite; usable polar options;
  /// storage fp32 or bf16.
  const char* check() const noexcept {
    if (const char* m = lr.check(kScheduleRefusals)) return m;
    if (!hyper::decay_rate(beta)) return "namo_step: beta must be in [0, 1)";
    if (!hyper::decay_rate(mu2)) return "namo_step: mu2 must be in [0, 1)";
    if (!hyper::positive(eps)) return "namo_step: eps must be finite and > 0";
    if (!hyper::positive(scale)) return "namo_step: scale must be finite and > 0";
    if (!hyper::non_negative(weight_decay)) return "namo_step: weight_decay must be finite and >= 0";
    if (!hyper::state_storage(mu_storage))
      return "namo_step: mu_storage must be fp32 or bf16 (stochastic rounding needs bf16)";
    return check_polar_options(polar);
  }
  std::string config() const {
    Signature s(name);
    s.add("lr", lr.config()).add("beta", beta).add("nesterov", nesterov).add("mu2", mu2).add("eps", eps);
    s.add("scale", scale).add("weight_decay", weight_decay).add("polar", polar_config(polar));
    return detail::add_first_moment_storage(s, mu_storage).str();
  }
};

/// NAMO: the whole update of NamoStep (momentum, polar factor, adaptive step, decay; no other lr).
struct NamoOptions {
  Schedule lr = Schedule::constant(1e-2);
  double momentum = 0.95;
  bool nesterov = true;
  double mu2 = 0.99;
  double eps = 1e-8;
  double scale = 0.2;
  double weight_decay = 0.1;
  PolarOptions polar = MuonOptions::keller_polar();
  StateStorage mu_storage = Precision::fp32;  ///< the momentum buffer: fp32 or bf16 (MuonOptions)
};
/// The NamoStep of NAMO's options (namo() and namo_d() share it).
inline NamoStep namo_step(const NamoOptions& o) {
  return NamoStep{o.lr, o.momentum, o.nesterov, o.mu2, o.eps, o.scale, o.weight_decay, o.polar, o.mu_storage};
}
inline auto namo(const NamoOptions& o = {}) { return chain(namo_step(o)); }

namespace device_kernels {
/// x(i, j) ← NamoDStep::combine(x(i, j), p(i, j), a[j], b[j]) for the rows × cols block (a, b:
/// cols floats each, device memory).
void namo_columns(float* x, const float* p, const float* a, const float* b, index_t rows, index_t cols);
}  // namespace device_kernels

/// NAMO-D (the column-wise variant of NAMO, `NAMO_D` in the reference src/namo.py of
/// minxin-zhg/namo): NamoStep's adaptive step taken per column j of the r × c block (an input
/// feature of a torch (out, in) weight), which right-multiplies the orthogonal direction by a
/// diagonal:
///   V_j ← μ₂ V_j + (1 − μ₂)‖g_{:,j}‖²                      (c floats of state: √V_j)
///   α_j = NamoStep::step_size(t, V_j, ‖N_{:,j}‖)          (lr(t)·√(1 − μ₂ᵗ)/(1 − βᵗ)·‖N_j‖/(√V_j + ε))
///   α_j clamped to [ᾱ·k, ᾱ/k], ᾱ = mean_j α_j, when 0 < k ≤ 1 and ᾱ is finite and > 0 (k = 0: none)
///   W_{:,j} ← (1 − λ·min(α_j, 1))·W_{:,j} − min(α_j·c_s·√max(r, c), 1)·O_{:,j}
/// with O = polar(N) and NamoStep's momentum, as NAMO. The reference clamps its column scales
/// ‖N_j‖/(√V_j + ε) toward their mean before multiplying by the common factor lr·√(1 − μ₂ᵗ)/(1 −
/// βᵗ); clamping the α_j is the same for lr > 0. Its decay factor max(0, 1 − λ·min(α_j, 1)) is
/// here the update's −min(1, λ·min(α_j, 1))·W_{:,j}. Defaults: NAMO's, and k = 0.75 (the
/// reference's constructor; its GPT-2 configuration uses 0.01). [P] as NAMO; the column norms
/// accumulate in double; the state keeps √V_j in float (the reference keeps V_j in float32, which
/// overflows for column norms above 1.8e19; √V_j only beyond FLT_MAX), and a column whose norm
/// is not a float refuses the step (out_of_range), which the precheck tells before anything
/// changes (entry_bound(): the momentum and the gradient within FLT_MAX/(2√r)), so a partition
/// keeps no copy of the state. Cost beyond NAMO: two column-norm passes and one combining pass
/// over the block; on the device the 2c norms and c moments are read back and 3c floats sent (the
/// per-column arithmetic is on the host).
struct NamoDStep {
  static constexpr const char* name = "namo_d_step";
  static constexpr bool may_fail = true;
  static constexpr bool device_capable = true;  // rule.hpp helpers, the kernel above and polar()
  NamoStep namo{};          ///< lr, β, Nesterov, μ₂, ε, c_s, λ and the polar options
  double col_clamp = 0.75;  ///< k: the α_j within [ᾱk, ᾱ/k]; 0 turns the clamp off

  struct Scratch {
    Buffer sums;                  ///< ‖g_j‖ then ‖N_j‖ (2c)
    Buffer factors;               ///< a_j then b_j (2c)
    std::vector<float> host, vh;  ///< the norms (2c) and the √V_j (c) on the host
    std::vector<float> hf;        ///< the factors on the host (2c)
    std::vector<double> alpha;    ///< α_j (c)
    std::shared_ptr<Workspace> workspace = std::make_shared<Workspace>();
  };
  struct State : detail::FirstMoment {  // the momentum in its storage (NamoStep::mu_storage)
    std::int64_t count = 0;
    Buffer v;            ///< √V_j, one per column
    double alpha = 0.0;  ///< ᾱ of the last step, after the clamp (observable)
    std::shared_ptr<Scratch> scratch = std::make_shared<Scratch>();
  };
  State init(const BlockShape& s) const {
    State st;
    const auto c = static_cast<std::size_t>(s.cols);
    detail::init_first_moment(st, static_cast<std::size_t>(s.size()), namo.mu_storage);
    st.v.assign(c, 0.0f);
    Scratch& sc = *st.scratch;
    sc.sums.assign(2 * c, 0.0f);
    sc.factors.assign(2 * c, 0.0f);
    sc.host.assign(2 * c, 0.0f);
    sc.vh.assign(c, 0.0f);
    sc.hf.assign(2 * c, 0.0f);
    sc.alpha.assign(c, 0.0);
    sc.workspace->reserve(polar_workspace_bytes(s.rows, s.cols, 1, namo.polar, Precision::fp32));
    return st;
  }
  double max_gradient() const { return namo.max_gradient(); }
  /// The bound precheck() [P] holds the momentum's entries and the gradient's to at step t
  /// (1-based) for a block of r rows: the momentum's overflow bound (TraceMomentum::overflow_bound
  /// of NAMO's EMA: FLT_MAX/2) over √r. With B and G within it, |N| ≤ FLT_MAX/(2√r), so every
  /// column norm ‖g_j‖ and ‖N_j‖ (r entries) stays within FLT_MAX/2 and update()'s out_of_range
  /// (a column norm beyond float) cannot occur; the real limit is twice the bound (a column of
  /// r entries of 2·bound has norm FLT_MAX). GPT-2 small: 6.1e36 (r = 768), 3.1e36 (r = 3072).
  /// Conservative: only a diverged run or a corrupt checkpoint holds such entries.
  double entry_bound(std::int64_t t, index_t rows) const {
    const TraceMomentum m = detail::own_momentum(namo.beta, namo.nesterov, namo.mu_storage);
    return TraceMomentum::overflow_bound(m.beta, m.nesterov, m.form, m.correction_at(t)) /
           std::sqrt(double(std::max<index_t>(1, rows)));
  }
  /// update()'s failures before it runs, touching nothing (rule.hpp, precheck), for a gradient
  /// that passed the max_gradient() scan: invalid_argument for a state or parameter of another
  /// shape or storage; non_finite_input for a √V_j that is NaN, infinite or negative (a corrupt
  /// checkpoint; update() would carry it into the step) or a momentum entry that is NaN or Inf;
  /// out_of_range for a momentum or gradient entry beyond entry_bound() (the gradient's bound
  /// depends on the rows, which max_gradient() cannot know). Where precheck_covers(), ok promises
  /// success, and a finite u for a finite parameter. Cost: one read of the momentum and of the
  /// gradient, c floats of √V; on device memory with `flag`, three kernels not waited for (the
  /// momentum's writes the flag, the others OR into it).
  Status precheck(ConstBlock u, const State& s, ConstBlock p, float* flag = nullptr) const {
    const auto n = static_cast<std::size_t>(u.cols);
    if (!detail::first_moment_sized(s, static_cast<std::size_t>(u.size()), namo.mu_storage) ||
        p.size() != u.size() || s.v.size() != n)
      return Status::invalid_argument;
    const std::uint32_t bits = magnitude_bits(entry_bound(s.count + 1, u.rows));
    const Status m = detail::precheck_first_moment(s, u.memory, bits, flag);
    if (u.empty()) return m;
    const std::uint32_t v_bits = magnitude_bits(double(std::numeric_limits<float>::max()));
    const MatrixRef<const float> v(s.v.data(), 1, u.cols, s.v.memory());
    return detail::worse(m, detail::worse(detail::precheck_values(v, v_bits, true, flag),
                                          detail::precheck_values(u, bits, false, flag)));
  }
  /// precheck() tells every failure, and u stays finite for a finite parameter, when the polar
  /// call cannot fail on a finite input (detail::polar_total_on_finite on the scratch's
  /// workspace): the update −a_j·W − b_j·O has a_j, b_j ∈ [0, 1] (both capped at 1), so |u| ≤
  /// |W| + polar_iterate_bound(), which rounds within float, whatever λ (NAMO's own decay is not
  /// capped: NamoStep::precheck_covers). A partition then keeps no copy of this state.
  bool precheck_covers(const State& s, const BlockShape& shape, MemoryKind memory) const {
    return detail::polar_total_on_finite(namo.polar, s.scratch->workspace.get(), shape, memory);
  }
  /// One element of the update: −a·p − b·o (o the polar factor's, p the parameter's, a and b its
  /// column's decay and step). The one formula of the host loop and the device kernel.
  SCHATTEN_HOST_DEVICE static float combine(float o, float p, float a, float b) { return -(a * p) - b * o; }
  /// The α_j clamped toward their mean (in place); returns the mean after the clamp.
  static double clamp_to_mean(std::vector<double>& alpha, double k) {
    double mean = 0.0;
    for (double a : alpha)
      mean += a;
    mean /= double(alpha.size());
    if (k > 0.0 && k <= 1.0 && std::isfinite(mean) && mean > 0.0)
      for (double& a : alpha)
        a = std::min(std::max(a, mean * k), mean / k);
    double after = 0.0;
    for (double a : alpha)
      after += a;
    return after / double(alpha.size());
  }

  /// update_bound (rule.hpp): NAMO's (NamoStep::update_bound): each column's step and decay are
  /// clamped to 1 and λ alike.
  double update_bound(double in, const BlockShape& s) const { return namo.update_bound(in, s); }
  Status update(Block u, State& s, ConstBlock p) const {
    const auto n = static_cast<std::size_t>(u.cols);
    if (!detail::first_moment_sized(s, static_cast<std::size_t>(u.size()), namo.mu_storage) ||
        p.size() != u.size() || s.v.size() != n)
      return Status::invalid_argument;  // other shape or storage
    Scratch& sc = *s.scratch;
    if (u.empty()) {
      ++s.count;
      return Status::ok;
    }
    float* norms = sc.sums.data();
    slice_norms(u, false, true, norms);  // ‖g_j‖, before u becomes the momentum
    namo.momentum(u, s, s.count + 1);
    slice_norms(u, false, true, norms + n);  // ‖N_j‖
    sc.sums.copy_to(sc.host.data(), 2 * n);
    for (std::size_t j = 0; j < 2 * n; ++j)
      if (!std::isfinite(sc.host[j])) return Status::out_of_range;  // a column beyond the float range
    const PolarReport r = schatten::polar(MatrixRef<const float>(u), u, namo.polar, sc.workspace.get());
    if (r.status != Status::ok) return r.status;  // the chain restores mu and u
    s.v.copy_to(sc.vh.data(), n);
    const std::int64_t t = s.count + 1;
    std::vector<double>& alpha = sc.alpha;
    for (std::size_t j = 0; j < n; ++j) {
      const double g2 = double(sc.host[j]) * double(sc.host[j]), root = sc.vh[j];
      const double v = namo.mu2 * root * root + (1.0 - namo.mu2) * g2;
      sc.vh[j] = static_cast<float>(std::sqrt(v));
      alpha[j] = namo.step_size(t, v, double(sc.host[n + j]));
    }
    const double mean = clamp_to_mean(alpha, col_clamp);
    const double shape = namo.scale * std::sqrt(double(std::max(u.rows, u.cols)));
    for (std::size_t j = 0; j < n; ++j) {
      sc.hf[j] = static_cast<float>(std::min(1.0, namo.weight_decay * std::min(alpha[j], 1.0)));
      sc.hf[n + j] = static_cast<float>(std::min(alpha[j] * shape, 1.0));
    }
    sc.factors.copy_from(sc.hf.data(), 2 * n);
    const float* a = sc.factors.data();
    if (u.memory == MemoryKind::device) {
      device_kernels::namo_columns(u.data, p.data, a, a + n, u.rows, u.cols);
    } else {
      for (index_t i = 0; i < u.rows; ++i)
        for (index_t j = 0; j < u.cols; ++j)
          u.data[i * u.cols + j] = combine(u.data[i * u.cols + j], p.data[i * u.cols + j], a[j], a[n + j]);
    }
    s.v.copy_from(sc.vh.data(), n);
    s.alpha = mean;
    s.count = t;
    return Status::ok;
  }
  template <class F>
  friend void visit_workspaces(F& f, State& s) {
    f(s.scratch->workspace);
  }
  /// The scratch holds nothing between updates, and no batched form uses it (rule.hpp).
  template <class F>
  friend void visit_shareable_scratch(F& f, State& s) {
    f(s.scratch);
  }
  template <class V>
  friend void visit_fields(V& v, State& s) {
    v("count", s.count);
    detail::visit_first_moment(v, s);
    v("v", s.v);
    v("alpha", s.alpha);
  }
  template <class V>
  friend void visit_scratch(V& v, State& s) {
    v("sums", s.scratch->sums);
    v("factors", s.scratch->factors);
  }
  /// NamoStep's ranges; col_clamp ∈ [0, 1].
  const char* check() const noexcept {
    if (const char* m = namo.check()) return m;
    if (!(std::isfinite(col_clamp) && col_clamp >= 0.0 && col_clamp <= 1.0))
      return "namo_d_step: col_clamp must be in [0, 1]";
    return nullptr;
  }
  std::string config() const {
    return Signature(name).add("namo", namo.config()).add("col_clamp", col_clamp).str();
  }
};

/// NAMO-D: NAMO's options and the column clamp k (NamoDStep; the whole update, no other lr).
struct NamoDOptions : NamoOptions {
  double col_clamp = 0.75;
};
inline auto namo_d(const NamoDOptions& o = {}) { return chain(NamoDStep{namo_step(o), o.col_clamp}); }
}  // namespace schatten::optim
