// SPDX-License-Identifier: Apache-2.0
/// \file
/// Adaptive Schatten-p Muon (SMuon, algorithms.md §4a): the update U Σ^{1/p} Vᵀ of the momentum
/// with p chosen per layer by the random-feature regression criterion (surrogate/schatten_p.hpp),
/// the activation statistics it needs, and the `schatten_muon` preset. docs/optim.md lists every
/// default and its source; docs/surrogate/schatten_p.md the [P] choices.
#pragma once

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "schatten/core/workspace.hpp"
#include "schatten/kernels/gram.hpp"
#include "schatten/kernels/polar.hpp"
#include "schatten/kernels/spectral_power.hpp"
#include "schatten/optim/chain.hpp"
#include "schatten/optim/rule.hpp"
#include "schatten/optim/transforms.hpp"
#include "schatten/surrogate/schatten_p.hpp"

namespace schatten::optim {

/// The activation statistics of one layer: Σ XᵀX over the inputs X (tokens × d_in) given since
/// the last step. Shared by copies of a state (the partition's rollback copies do not duplicate
/// d_in² floats every step); `step` tags the optimizer step the statistics are for, so a failed
/// step that is retried still finds them, and statistics of an earlier step are never used.
struct ActivationStatistics {
  Buffer gram;                 ///< d_in × d_in, row-major (symmetric)
  std::int64_t samples = 0;    ///< rows of X accumulated
  std::int64_t for_step = -1;  ///< the rule's step count when they were collected
};

/// Event passed to the criterion callback after each criterion step, run or not.
struct PCriterionEvent {
  index_t rows = 0, cols = 0;
  std::int64_t step = 0;  ///< 1-based step of the rule
  double previous_p = 0.0, p = 0.0;
  surrogate::PChoice choice;  ///< the maximiser's answer (descends = false: p kept)
  /// An activation Gram was given. Without one the criterion did not run (choice.descends =
  /// false, p kept) unless WithoutStatistics::assume_whitened made it assume whitened inputs.
  bool had_statistics = false;
  /// ok, or why a criterion that was to run could not [P]: breakdown (an eigensolver did not
  /// converge), out_of_range (statistics beyond the float EMAs or the randomized SVD's float
  /// GEMMs), out_of_memory or internal_error. p was then kept and the step went on
  /// (SchattenPDirection, "The criterion is advisory"). Bad input is not reported here: it fails
  /// the step.
  Status status = Status::ok;
};

namespace detail {
/// The elements of a contiguous block, copied to the host from whatever memory holds them.
inline std::vector<float> to_host(MatrixRef<const float> m) {
  std::vector<float> h(static_cast<std::size_t>(m.size()));
  if (!h.empty()) memory::copy_bytes(h.data(), MemoryKind::host, m.data, m.memory, h.size() * sizeof(float));
  return h;
}
/// The scalars of SchattenPDirection's two element-wise passes at step t: the momentum's float
/// β, 1 − β (rounded like TraceMomentum), 1/(1 − βᵗ) (1 without bias correction) and Nesterov;
/// the moment's float β₂, float(1 − β₂), and in double c₂ = 1 − β₂ᵗ, ε and the exponent e.
struct SMuonScalars {
  float beta, w, inv_c1;
  bool nesterov;
  float b2, w2;
  double c2, eps, exponent;
  Bf16Store store;  ///< how a bf16 m is stored (core/bf16.hpp)
};
}  // namespace detail
namespace device_kernels {
/// y[k] ← SchattenPDirection::stored_momentum(g[k], mu[k], c): mu (the next momentum, a copy of
/// the state's) updated in place, in float or bf16 storage (the overloads).
void smuon_momentum(float* y, float* mu, const float* g, index_t n, const detail::SMuonScalars& c);
void smuon_momentum(float* y, std::uint16_t* mu, const float* g, index_t n, const detail::SMuonScalars& c);
/// y[k] ← y[k]·SchattenPDirection::moment_element(g[k], nu[k], next_nu[k], precond[k], c).
void smuon_moment(float* y, float* next_nu, float* precond, const float* nu, const float* g, index_t n,
                  const detail::SMuonScalars& c);
}  // namespace device_kernels

/// SMuon's update (algorithms.md §4a.4 [V]) as one rule, because the criterion needs the raw
/// gradient, the momentum and the activation statistics together:
///   1. m ← β m + (1 − β) g; m̂ = m/(1 − βᵗ) (bias_correction); ñ = β m̂ + (1 − β) g (Nesterov) or m̂;
///   2. on criterion steps (t = first, and every `interval` steps): the criterion of
///      surrogate::maximise_p on M̃ = ñ ([P]: the reference's M̃ lacks ñ's bias correction on
///      the g term; see update()), G = g and the layer's activation Gram, after the EMA,
///      picks p ∈ [p_min, p_max] (kept when nothing descends); otherwise p is unchanged;
///   3. moment (§4a.5): v ← β₂ v + (1 − β₂) g², D = (v̂ + ε)^e with e = −1/(2(p+1)) (parametric)
///      or −1/4 (nonparametric), g̃ = D ⊙ ñ; none: D = 1;
///   4. Δ ≈ U Σ^{1/p} Vᵀ of g̃: spectral_power(α = 1/p) with `spectral` (the preset: the
///      polynomial method, NS5's cost); p ≥ p_max/1.01 → the polar factor
///      (PolarOptions, [V] shortcut α ≤ 1.01/p_max); p = 1 → g̃ itself;
///   5. map-out Δ ← D ⊙ Δ;
///   6. magnitude pinned ([V] κ-pinning, SMuon's `_target_frobenius`): with a moment,
///      ‖Δ‖_F = √min(r, c)·κ^{1/p}, κ = η_a ρ_a √max(r, c)/η, ρ_a = √((1 − β₁)/(1 + β₁)) (noisy)
///      or 1, η_a/β₁ the auxiliary Adam's lr/β₁ and η this rule's lr — per-entry RMS
///      η·κ^{1/p}/√max(r,c): Muon's 1/√max(r,c) at p → ∞, Adam's η_a ρ_a at p = 1, where the
///      parametric moment makes the direction Adam's. Without a moment there is no Adam end to
///      interpolate towards, and ‖Δ‖_F = √min(r, c) (Muon's RMS) for every p, as in the
///      reference (algorithms.md §4a.4 step 5 omits this case; see pin_factor()).
///      magnitude none: Δ as computed.
/// The output Δ is followed by decay and −lr in the preset. State changes only after success.
///
/// **The criterion is advisory** [P]: a criterion step whose criterion cannot compute (an
/// eigensolver that does not converge, Status::breakdown; statistics beyond the range its
/// arithmetic or its float EMAs hold, out_of_range — e.g. a finite Gram near FLT_MAX, whose B_i
/// would make ema_b ∞; out_of_memory; internal_error) keeps p, the EMAs and the run count, and
/// goes on, and the event (on_criterion) reports the status; only bad input (a NaN or ∞ in the
/// activation Gram, a state of another shape) fails the step. So the step's failures are those
/// of its precheck and of the matrix function. A Gram without a positive eigenvalue (zero
/// inputs) is no statistics: the criterion runs and reports descends = false, p kept.
///
/// **Precheck** (rule.hpp; docs/optim.md "Prechecks instead of copies") [P]: precheck() holds m
/// and g to entry_bound(t, r, c), v (with a moment) to [0, FLT_MAX/2], and on a criterion step
/// that will read the activation Gram, the Gram to finite values. Within those the momentum,
/// D ⊙ ñ, the matrix function (Polar Express or the polynomial spectral power, whatever p the
/// criterion picks), the map-out and the pinned magnitude stay finite; precheck_covers() says
/// where that holds (both matrix functions total, the workspace reserved). A partition then
/// keeps no copy of the state.
/// Cost: the momentum pass, the matrix function (polynomial method: one NS5; rational: a QDWH
/// polar + a few k³ and m k² GEMMs), and on criterion steps the spectra (measure_spectra).
/// Device memory (Partition::init(MemoryKind::device)): the element-wise passes are kernels and
/// the matrix function runs in place; the criterion is host code (Eigen), so on criterion steps
/// only ñ, g and the activation Gram are copied to the host (2·m·n + d_in² floats) and the
/// smoothed spectra back (≤ 2·min(m, n) + d_in floats).
///
/// `mu_storage` [P] (docs/optim.md "State precision"): m in fp32 (default) or bf16, as
/// TraceMomentum's. The next m is computed in float from the widened m, in scratch of the same
/// storage (a copy of m, updated in place, swapped in on success), and stored rounded to the
/// nearest bf16 once per step; ñ, which the criterion, the moment and the matrix function read,
/// is computed from the unrounded m. v and the criterion's EMAs stay fp32.
struct SchattenPDirection {
  static constexpr const char* name = "schatten_p_direction";
  static constexpr bool may_fail = true;
  enum class Moment { none, parametric, nonparametric };
  enum class Magnitude { pinned, none };
  /// What a criterion step does when the training loop gave it no activation Gram [P].
  /// `keep_p`: p stays (the event reports had_statistics = false). `assume_whitened`: the
  /// criterion runs with σ(A) = 1. Whitened inputs always favour the SGD end
  /// (docs/surrogate/schatten_p.md), and real layers' inputs are far from whitened: on the
  /// digits MLP that assumption took both layers to p_min, whose real Grams pick p_max, and the
  /// loss after 300 steps was 0.84–1.00 against 0.008–0.010 (docs/optim.md, "Without
  /// statistics"). So without data the criterion does not decide.
  enum class WithoutStatistics { keep_p, assume_whitened };

  double beta = 0.95;
  bool nesterov = true;
  bool bias_correction = true;
  bool adaptive = true;
  double p = 10.0;  ///< the initial p ([V] p_max), or the fixed p when !adaptive (≥ 1)
  std::int64_t interval = 100;
  std::int64_t first = 10;
  /// Layer chunks (algorithms.md §4a.6 [V blog]): the k-th layer of the route (k from 0, a
  /// Partition's order; init(shape, k)) runs its criterion `(k mod chunks)·⌊interval/chunks⌋`
  /// steps later than the schedule above, so each step pays for ~1/chunks of the layers instead
  /// of one step paying for all. The amortised cost is unchanged. The phase is part of the state
  /// (checkpointed), and a partition initialised again gets the same phases.
  std::int64_t chunks = 1;
  /// Counts the init(shape) calls of this rule object (and its copies), the k of a caller that
  /// does not pass it (a bare chain); a Partition passes it.
  std::shared_ptr<std::int64_t> init_order = std::make_shared<std::int64_t>(0);
  surrogate::PCriterionOptions criterion{};
  Moment moment = Moment::none;
  double b2 = 0.999, eps = 1e-8;
  Magnitude magnitude = Magnitude::pinned;
  double lr = 0.02;       ///< η for κ (the preset passes its lr's peak)
  double adam_lr = 3e-4;  ///< η_a [V]
  double adam_b1 = 0.9;   ///< β₁ of the auxiliary Adam [V]
  bool noisy = true;      ///< ρ_a = √((1 − β₁)/(1 + β₁)) [V] "noisy" regime; false: 1
  WithoutStatistics without_statistics = WithoutStatistics::keep_p;  ///< see the enum
  SpectralPowerOptions spectral{};
  PolarOptions polar{};
  /// Called after each criterion step, run or not (observability; not part of the signature).
  std::function<void(const PCriterionEvent&)> on_criterion{};
  StateStorage mu_storage = Precision::fp32;  ///< m's storage: fp32 or bf16 (above)

  static constexpr bool device_capable = true;  // see the struct comment
  /// Scratch, allocated at init, not checkpointed, shared by a partition's states of one shape:
  /// ñ (then D ⊙ ñ), the next moments, D.
  struct Scratch {
    Buffer nesterov, next_nu, precond;
    detail::FirstMoment next_mu;  ///< in the state's storage
    std::shared_ptr<Workspace> workspace = std::make_shared<Workspace>();
  };
  struct State : detail::FirstMoment {  // m, the momentum, in its storage
    std::int64_t count = 0;
    std::int64_t phase = 0;            ///< layer chunk (see `chunks`)
    std::int64_t next_criterion = -1;  ///< the next step that runs the criterion (-1: never)
    double p = 10.0;
    Buffer nu;  ///< empty without a moment
    std::int64_t criterion_runs = 0;
    Buffer ema_sigma, ema_align, ema_b, ema_sigma_a;
    double log_objective = 0.0;  ///< of the last criterion run
    std::shared_ptr<ActivationStatistics> statistics = std::make_shared<ActivationStatistics>();
    std::shared_ptr<Scratch> scratch = std::make_shared<Scratch>();
  };

  /// True when step t (1-based) runs the criterion of a layer whose schedule is shifted by
  /// `offset` steps: t = first + offset, and t = offset + j·interval (j ≥ 1).
  static bool criterion_due(std::int64_t t, bool adaptive, std::int64_t first, std::int64_t interval,
                            std::int64_t offset = 0) {
    return adaptive && (t == first + offset || (interval > 0 && t > offset && (t - offset) % interval == 0));
  }
  /// The offset of a phase.
  std::int64_t offset(std::int64_t phase) const {
    return chunks > 1 ? phase * std::max<std::int64_t>(1, interval / chunks) : 0;
  }
  /// The first step after step c (1-based) that runs the criterion for `phase`, −1 if none.
  std::int64_t next_due(std::int64_t c, std::int64_t phase) const {
    if (!adaptive) return -1;
    const std::int64_t off = offset(phase);
    std::int64_t best = first + off > c ? first + off : -1;
    if (interval > 0) {
      std::int64_t t = off + interval * std::max<std::int64_t>(1, (c - off) / interval + 1);
      while (t <= c)
        t += interval;
      if (best < 0 || t < best) best = t;
    }
    return best;
  }

  /// The scalars of step t with exponent e (detail::SMuonScalars).
  detail::SMuonScalars scalars(std::int64_t t, double e) const {
    const float fb = float(beta);
    return {fb,
            1.0f - fb,
            bias_correction ? float(1.0 / (1.0 - std::pow(beta, double(t)))) : 1.0f,
            nesterov,
            float(b2),
            float(1.0 - b2),
            1.0 - std::pow(b2, double(t)),
            eps,
            e,
            Bf16Store::of(mu_storage, t)};
  }
  /// One element of step 1: next_mu ← β mu + (1 − β) g; returns ñ. The one formula of the host
  /// loop and the device kernel.
  SCHATTEN_HOST_DEVICE static float momentum_element(float g, float mu, float& next_mu,
                                                     const detail::SMuonScalars& c) {
    const float m = c.beta * mu + c.w * g;
    next_mu = m;
    return c.nesterov ? c.beta * (m * c.inv_c1) + c.w * g : m * c.inv_c1;
  }
  /// momentum_element() on a stored m, updated in place (float, or bf16 widened and rounded back
  /// once: core/bf16.hpp).
  template <class M, class H = Bf16Nearest>
  SCHATTEN_HOST_DEVICE static float stored_momentum(float g, M& stored, const detail::SMuonScalars& c,
                                                    H how = {}) {
    float next = 0.0f;
    const float y = momentum_element(g, load_state(stored), next, c);
    store_state(stored, next, how);
    return y;
  }
  /// One element of step 3: next_nu ← β₂ nu + (1 − β₂) g², precond ← (next_nu/c₂ + ε)^e in
  /// double; returns precond.
  SCHATTEN_HOST_DEVICE static float moment_element(float g, float nu, float& next_nu, float& precond,
                                                   const detail::SMuonScalars& c) {
    const float v = c.b2 * nu + c.w2 * g * g;
    next_nu = v;
    precond = static_cast<float>(pow(double(v) / c.c2 + c.eps, c.exponent));  // ::pow: host and device
    return precond;
  }

  /// The matrix function a step at exponent `p_step` runs (the struct comment's step 4): the
  /// polar factor for p ≥ p_max/1.01 ([V] shortcut), the copy for p = 1 (to 1e-12; also a NaN),
  /// else U Σ^{1/p} Vᵀ. The one place that decides, for update() and prepare_spectral().
  enum class Path { polar, spectral_power, copy };
  Path path_at(double p_step) const {
    if (p_step >= criterion.p_max / 1.01) return Path::polar;
    return p_step > 1.0 + 1e-12 ? Path::spectral_power : Path::copy;
  }

  /// Builds what the step's matrix function reads for the exponent 1/p (the polynomial method's
  /// Newton–Schulz options, the rational method's fit; both cached for the process), so that a
  /// step at that p makes no host allocation: at init() for the initial p, and in the criterion
  /// for the p it chooses, where a std::bad_alloc (thrown as the building throws it) keeps p.
  void prepare_spectral(double p_next) const {
    if (path_at(p_next) != Path::spectral_power) return;  // the polar factor or the copy
    SpectralPowerOptions so = spectral;
    so.alpha = 1.0 / p_next;
    if (check_spectral_power_options(so) != nullptr) return;  // check() refuses these options
    if (so.method == SpectralPowerMethod::polynomial) {
      const PolarOptions* po = nullptr;
      double error = 0.0;
      (void)schatten::detail::cached_polynomial_power_polar_options(so, po, &error);
    } else {
      const RationalPower* fit = nullptr;
      (void)schatten::detail::cached_rational_power(so.alpha, so.floor, so.tolerance, fit);
    }
  }

  /// The workspace of the matrix functions for one `shape` block: polar()'s, and with the
  /// polynomial spectral power its Newton–Schulz run's when larger (the rational method sizes its
  /// own as it runs).
  std::size_t workspace_bytes(const BlockShape& shape) const {
    std::size_t bytes = polar_workspace_bytes(shape.rows, shape.cols, 1, polar, Precision::fp32);
    SpectralPowerOptions so = spectral;
    so.alpha = 0.5;  // any α: the schedule's coefficients size nothing
    PolarOptions po;
    if (polynomial_power_polar_options(so, po) == Status::ok)
      bytes = std::max(bytes, polar_workspace_bytes(shape.rows, shape.cols, 1, po, Precision::fp32));
    return bytes;
  }

  State init(const BlockShape& s) const { return init(s, static_cast<std::size_t>((*init_order)++)); }
  /// The state of the `ordinal`-th layer (`chunks`).
  State init(const BlockShape& s, std::size_t ordinal) const {
    prepare_spectral(p);  // so that the first step allocates nothing on the host for it
    const auto n = static_cast<std::size_t>(s.size());
    const auto r = static_cast<std::size_t>(std::min(s.rows, s.cols));
    const auto d = static_cast<std::size_t>(s.cols);
    State st;
    st.p = p;
    st.phase =
        adaptive && chunks > 1 ? static_cast<std::int64_t>(ordinal % static_cast<std::size_t>(chunks)) : 0;
    st.next_criterion = next_due(0, st.phase);
    detail::init_first_moment(st, n, mu_storage);
    if (moment != Moment::none) st.nu.assign(n, 0.0f);
    if (adaptive) {
      st.ema_sigma.assign(criterion.criterion == surrogate::PCriterion::exact ? r : 0, 0.0f);
      st.ema_align.assign(criterion.criterion != surrogate::PCriterion::exact ? r : 0, 0.0f);
      st.ema_b.assign(criterion.criterion == surrogate::PCriterion::exact_tightness ? r : 0, 0.0f);
      st.ema_sigma_a.assign(d, 0.0f);
      st.statistics->gram.assign(d * d, 0.0f);
    }
    Scratch& sc = *st.scratch;
    sc.nesterov.assign(n, 0.0f);
    detail::init_first_moment(sc.next_mu, n, mu_storage);
    if (moment != Moment::none) {
      sc.next_nu.assign(n, 0.0f);
      sc.precond.assign(n, 0.0f);
    }
    sc.workspace->reserve(workspace_bytes(s));
    return st;
  }

  /// True when the state and its scratch were sized by init() for u's shape and storage (the
  /// criterion's EMAs included), p ≥ 1 and the counts are not negative (a corrupt checkpoint:
  /// step 0's bias correction divides by zero, and the EMAs' refuses a negative run count):
  /// otherwise update() and precheck() refuse (invalid_argument) before touching anything.
  bool sized(const State& s, ConstBlock u) const {
    const auto n = static_cast<std::size_t>(u.size());
    const auto r = static_cast<std::size_t>(std::min(u.rows, u.cols));
    const Scratch& sc = *s.scratch;
    if (!detail::first_moment_sized(s, n, mu_storage) ||
        !detail::first_moment_sized(sc.next_mu, n, mu_storage) || sc.nesterov.size() != n)
      return false;
    if (moment != Moment::none && (s.nu.size() != n || sc.next_nu.size() != n || sc.precond.size() != n))
      return false;
    if (adaptive) {
      const surrogate::PCriterion k = criterion.criterion;
      if (s.ema_sigma.size() != (k == surrogate::PCriterion::exact ? r : 0) ||
          s.ema_align.size() != (k != surrogate::PCriterion::exact ? r : 0) ||
          s.ema_b.size() != (k == surrogate::PCriterion::exact_tightness ? r : 0) ||
          s.ema_sigma_a.size() != static_cast<std::size_t>(u.cols))
        return false;
    }
    return s.p >= 1.0 && s.count >= 0 && s.criterion_runs >= 0;
  }
  /// True when step count + 1 runs the criterion on an activation Gram the training loop gave
  /// for it (accumulate_activations), which it then reads.
  bool reads_gram(const State& s, index_t cols) const {
    const ActivationStatistics& st = *s.statistics;
    return criterion_due(s.count + 1, adaptive, first, interval, offset(s.phase)) && st.samples > 0 &&
           st.for_step == s.count && st.gram.size() == static_cast<std::size_t>(cols * cols);
  }

  /// The largest entry of D = (v̂ + ε)^e over v̂ ≥ 0 and every exponent the moment uses,
  /// e ∈ [−1/4, 0) (parametric: −1/(2(p+1)) for p ≥ 1; nonparametric: −1/4): ε^{−1/4} for
  /// ε < 1, else 1 (100 for ε = 1e-8). 1 without a moment (D = 1).
  double max_preconditioner() const {
    return moment == Moment::none || eps >= 1.0 ? 1.0 : std::pow(eps, -0.25);
  }
  /// B: a bound on the singular values of the matrix function's output per unit of its input
  /// scale, over the paths p may take: polar_iterate_bound(polar) (p ≥ p_max/1.01), the
  /// polynomial spectral power's polynomial_power_iterate_bound() before its ν^{1/p} (1 < p <
  /// p_max/1.01), 1 for the copy (p = 1); HUGE_VAL with the rational method (no bound: QDWH may
  /// not converge). 2.99 for the defaults: Polar Express's is 1.99, and the spectral power's
  /// schedules keep their intermediate images within 3 by design (docs/kernels/spectral_power.md).
  double iterate_bound() const {
    return std::max({1.0, polar_iterate_bound(polar), polynomial_power_iterate_bound(spectral)});
  }
  /// K_t: the bound per unit of max(|m|, |g|) of every float the momentum pass of step t
  /// (1-based) forms: m' = βm + (1 − β)g, m'/c₁ and ñ (β·m'/c₁ + (1 − β)g with Nesterov), with
  /// the float scalars momentum_element() uses. 1/c₁ falls with t, so step 1's is the largest:
  /// 20 for β = 0.95 with bias correction, 1 without.
  double growth(std::int64_t t) const {
    const detail::SMuonScalars c = scalars(t, 0.0);
    const double b = c.beta, w = c.w, m = b + w, k = m * double(c.inv_c1);
    return std::max({m, k, nesterov ? b * k + w : 0.0});
  }
  /// The largest |m| and |g| for which step t of an r × c block keeps every float of update()
  /// within the float range [P]: FLT_MAX/(4·B·√(rc)·K_t·D_max²) with B = iterate_bound(), K_t =
  /// growth(t), D_max = max_preconditioner(). Then |D ⊙ ñ| ≤ E = D_max·K_t·max(|m|, |g|), its
  /// Frobenius norm ν ≤ √(rc)·E, and the matrix function's output entries are at most B (polar
  /// factor), B·ν^{1/p} ≤ B·max(1, ν) (spectral power; in 16 bits (1.01·ν)^{1/p} ≤
  /// 1.01·max(1, ν), which the factor 4 below absorbs) or E (copy); after the map-out D ⊙ Δ
  /// every entry is at most D_max·B·max(1, √(rc)·E) ≤ FLT_MAX/4 when D_max·B ≤ FLT_MAX/4
  /// (precheck_covers) — the factor 4 covers the float roundings, as MuAdam's moment_bound's 2
  /// does. The pinned magnitude then rescales a finite Δ to a finite norm. GPT-2 small
  /// (768 × 3072, defaults, step 1): 9.3e32 without a moment, 9.3e28 with one (D_max = 100).
  double entry_bound(std::int64_t t, index_t rows, index_t cols) const {
    const double d = max_preconditioner();
    return double(FLT_MAX) /
           (4.0 * iterate_bound() * std::sqrt(double(rows) * double(cols)) * growth(t) * d * d);
  }
  /// update()'s failures before it runs, touching nothing (rule.hpp, precheck), for a gradient
  /// that passed the max_gradient() scan: invalid_argument for a state of another shape or
  /// storage, or p < 1 (sized()); out_of_range when some |m| or |g| exceeds this step's
  /// entry_bound() or some v exceeds FLT_MAX/2; non_finite_input for NaN or ∞ in m or v, a
  /// negative v (corrupt checkpoints), or NaN or ∞ in the activation Gram that this step's
  /// criterion reads (a sum across ranks may overflow; the partition's message then names the
  /// Gram, precheck_detail(), and the next accumulate_activations() starts a new sum). Where
  /// precheck_covers(), ok promises success and a finite u. Cost: one read of m and g, of v
  /// with a moment, and of the d_in² Gram on criterion steps; on device memory with `flag`,
  /// kernels not waited for (m's writes the flag, the others OR into it).
  Status precheck(ConstBlock u, const State& s, ConstBlock, float* flag = nullptr) const {
    if (!sized(s, u)) return Status::invalid_argument;
    const std::uint32_t bits = magnitude_bits(entry_bound(s.count + 1, u.rows, u.cols));
    Status st = detail::precheck_first_moment(s, u.memory, bits, flag);
    st = detail::worse(st, detail::precheck_values(u, bits, false, flag));
    if (moment != Moment::none) {
      const MatrixRef<const float> v(s.nu.data(), 1, u.size(), s.nu.memory());
      const std::uint32_t v_bits = magnitude_bits(double(FLT_MAX) / 2.0);
      st = detail::worse(st, detail::precheck_values(v, v_bits, true, flag));
    }
    if (reads_gram(s, u.cols)) {
      const Buffer& gram = s.statistics->gram;
      const MatrixRef<const float> a(gram.data(), u.cols, u.cols, gram.memory());
      st = detail::worse(st, detail::precheck_values(a, magnitude_bits(HUGE_VAL), false, flag));
    }
    return st;
  }
  /// The cause of a non_finite_input refusal that the status does not name: a NaN or ∞ in the
  /// activation Gram this step's criterion reads (else nullptr). Cost: one read of the Gram.
  const char* precheck_detail(ConstBlock u, const State& s, Status refused) const {
    if (refused != Status::non_finite_input || !reads_gram(s, u.cols)) return nullptr;
    const Buffer& gram = s.statistics->gram;
    if (all_finite(MatrixRef<const float>(gram.data(), u.cols, u.cols, gram.memory()))) return nullptr;
    return "NaN or Inf in the activation Gram this step's criterion reads (an overflowing sum?): "
           "accumulate_activations() starts a new sum, clear_activations() drops it";
  }
  /// precheck() tells every failure, and u stays finite, when both matrix functions p may
  /// select cannot fail on a finite input: the polar call (detail::polar_total_on_finite) and
  /// the polynomial spectral power (the rational method's QDWH may report not_converged), the
  /// workspace reserved for both (workspace_bytes()); D_max·B ≤ FLT_MAX/4 (entry_bound()); and
  /// a pinned norm T = √min(r, c)·κ^{1/p} ≤ √min(r, c)·max(1, κ) that scale_by() can reach from
  /// any nonzero float Δ: its factor T/‖Δ‖_F ≤ T·2¹⁴⁹ (the smallest subnormal is 2⁻¹⁴⁹) must be
  /// at most FLT_MAX², the product of its two float halves, so T ≤ 1.6e32. The criterion cannot
  /// fail the step on the inputs precheck() passed (the struct comment). The defaults are
  /// covered, with or without a moment: a partition keeps no copy of m, v and the EMAs.
  /// update_bound (rule.hpp), for a route whose precheck covers its failures (precheck_covers;
  /// the others keep copies anyway): a pinned Δ has Frobenius norm √min(r, c)·κ^{1/p} ≤
  /// √min(r, c)·max(1, pin_factor()), which bounds its entries; without the pinning, the entries
  /// of the map-out are at most FLT_MAX/4 (entry_bound(), which precheck() holds m and g to).
  double update_bound(double, const BlockShape& s) const {
    if (magnitude == Magnitude::none) return double(FLT_MAX) / 4.0;
    return std::sqrt(double(std::min(s.rows, s.cols))) * std::max(1.0, pin_factor(s.rows, s.cols));
  }
  bool precheck_covers(const State& s, const BlockShape& shape, MemoryKind memory) const {
    const Workspace* ws = s.scratch->workspace.get();
    const double quarter = double(FLT_MAX) / 4.0;
    const double norm = std::sqrt(double(std::min(shape.rows, shape.cols))) *
                        std::max(1.0, pin_factor(shape.rows, shape.cols));
    return detail::polar_total_on_finite(polar, ws, shape, memory) &&
           spectral.method == SpectralPowerMethod::polynomial && ws->capacity() >= workspace_bytes(shape) &&
           max_preconditioner() * iterate_bound() <= quarter &&
           (magnitude == Magnitude::none || norm * 0x1p149 <= double(FLT_MAX) * double(FLT_MAX));
  }

  Status update(Block u, State& s, ConstBlock) const {
    const auto n = static_cast<std::size_t>(u.size());
    Scratch& sc = *s.scratch;
    if (!sized(s, u)) return Status::invalid_argument;
    const std::int64_t t = s.count + 1;
    const bool due = criterion_due(t, adaptive, first, interval, offset(s.phase));
    const bool device = u.memory == MemoryKind::device;
    // u keeps the gradient g until the matrix function succeeds (then it is overwritten by Δ), so
    // a failure leaves u as it was and the criterion and the moment read g from it. The state
    // changes only after success (next_mu, next_nu, the EMA copies).
    // 1. Momentum: ñ into scratch, the next m into a copy of m (without allocating).
    const Block y = block_like(sc.nesterov, u);
    const detail::SMuonScalars c1 = scalars(t, 0.0);
    detail::copy_first_moment(sc.next_mu, s);
    detail::with_first_moment(sc.next_mu, [&](auto* next) {
      if (device) {
        device_kernels::smuon_momentum(y.data, next, u.data, u.size(), c1);
      } else {
        with_store(c1.store, [&](auto h) {
          for (std::size_t k = 0; k < n; ++k)
            y.data[k] = stored_momentum(u.data[k], next[k], c1, h);
        });
      }
    });
    // 2. The criterion (algorithms.md §4a.2 exact_momentum [V]) on M̃ = ñ, the direction this
    // step orthogonalises, and G = g, on the host: device inputs are copied there, and the EMAs
    // are smoothed in host copies. [P] The reference's M̃ (momentum_exact.py, 749ba8d) is
    // lerp(lerp(m_{t−1}/(1 − βᵗ), g, 1 − β), g, 1 − β) = ñ − β(1 − β)·g·βᵗ/(1 − βᵗ): its g term
    // misses the bias correction that its own step's ñ has. The two agree once βᵗ is small:
    // the difference is 0.071·g at the first criterion step (t = 10, β = 0.95; 25 % of ‖M̃‖_F
    // on random gradients, an audit's measurement of 2026-12-06) and 1.7e-4·g at t = 110.
    double p_now = s.p;
    Buffer ema_sigma, ema_align, ema_b, ema_sigma_a;
    surrogate::PChoice choice;
    const ActivationStatistics& st = *s.statistics;
    const bool had_statistics = reads_gram(s, u.cols);
    // Without statistics the criterion runs only on request (WithoutStatistics). An empty block
    // has no spectrum to measure: p is kept (measure_spectra refuses it, which failed every
    // criterion step of a partition holding one, until an audit of 2026-12-07).
    const bool runs =
        due && n > 0 && (had_statistics || without_statistics == WithoutStatistics::assume_whitened);
    // The criterion is advisory (the struct comment): bad input fails the step with nothing
    // changed; a criterion that cannot compute keeps p and the step goes on.
    Status criterion_status = Status::ok;
    const auto criterion_step = [&]() -> Status {
      const auto host_copy = [](const Buffer& b) {
        const std::vector<float> h = b.to_vector();
        return Buffer(h.begin(), h.end());
      };
      ema_sigma = host_copy(s.ema_sigma);
      ema_align = host_copy(s.ema_align);
      ema_b = host_copy(s.ema_b);
      ema_sigma_a = host_copy(s.ema_sigma_a);
      std::vector<float> staged_y, staged_g, staged_gram;
      if (device) {
        staged_y = detail::to_host(y);
        staged_g = detail::to_host(u);
      }
      if (had_statistics && st.gram.memory() == MemoryKind::device) staged_gram = st.gram.to_vector();
      const float* gram_data = staged_gram.empty() ? st.gram.data() : staged_gram.data();
      const MatrixRef<const float> gram =
          had_statistics ? MatrixRef<const float>(gram_data, u.cols, u.cols) : MatrixRef<const float>();
      surrogate::PCriterionOptions co = criterion;
      co.seed = criterion.seed + static_cast<std::uint64_t>(t);
      surrogate::LayerSpectra spectra;
      Status ms = surrogate::measure_spectra(
          MatrixRef<const float>(device ? staged_y.data() : y.data, u.rows, u.cols),
          MatrixRef<const float>(device ? staged_g.data() : u.data, u.rows, u.cols), gram, co, spectra);
      if (ms == Status::ok)
        ms = surrogate::smooth_spectra(spectra, {&ema_sigma, &ema_align, &ema_b, &ema_sigma_a},
                                       s.criterion_runs, co);
      if (ms != Status::ok) return ms;
      choice = surrogate::maximise_p(spectra, co, s.p);
      if (choice.descends) prepare_spectral(choice.p);  // here a std::bad_alloc keeps p
      return Status::ok;
    };
    if (runs) {
      try {
        criterion_status = criterion_step();
      } catch (const std::bad_alloc&) {  // the host copies and the spectra's dense matrices
        criterion_status = Status::out_of_memory;
      }
      if (criterion_status == Status::invalid_argument || criterion_status == Status::non_finite_input)
        return criterion_status;
      if (criterion_status == Status::ok && choice.descends) p_now = choice.p;
    }
    // 3. The element-wise moment on the raw gradient (algorithms.md §4a.5 [V]): y ← D ⊙ ñ.
    if (moment != Moment::none) {
      const double e = moment == Moment::parametric ? -1.0 / (2.0 * (p_now + 1.0)) : -0.25;
      const detail::SMuonScalars c3 = scalars(t, e);
      if (device) {
        device_kernels::smuon_moment(y.data, sc.next_nu.data(), sc.precond.data(), s.nu.data(), u.data,
                                     u.size(), c3);
      } else {
        for (std::size_t k = 0; k < n; ++k)
          y.data[k] *= moment_element(u.data[k], s.nu[k], sc.next_nu[k], sc.precond[k], c3);
      }
    }
    // 4. Δ = U Σ^{1/p} Vᵀ of the scratch vector, written into u (only on success).
    const MatrixRef<const float> in = y;
    Status fs = Status::ok;
    const Path path = path_at(p_now);
    if (path == Path::polar) {
      fs = schatten::polar(in, u, polar, sc.workspace.get()).status;
    } else if (path == Path::spectral_power) {
      SpectralPowerOptions so = spectral;
      so.alpha = 1.0 / p_now;
      fs = spectral_power(in, u, so, sc.workspace.get()).status;
    } else {
      copy_block(u, in);
    }
    if (fs != Status::ok) return fs;  // u still holds g; nothing of the state changed
    // 5. Map-out.
    if (moment != Moment::none) multiply(u, sc.precond.data());
    // 6. Magnitude.
    if (magnitude == Magnitude::pinned) {
      const double ss = squared_norm(u);
      if (ss > 0.0) {
        const double target =
            std::sqrt(double(std::min(u.rows, u.cols))) * std::pow(pin_factor(u.rows, u.cols), 1.0 / p_now);
        scale_by(u, target / std::sqrt(ss));  // beyond float when Δ is tiny (p = 1: Δ = g̃)
      }
    }
    // Commit.
    detail::swap_first_moment(s, sc.next_mu);
    if (moment != Moment::none) s.nu.swap(sc.next_nu);
    if (due) {
      const double previous = s.p;
      if (runs && criterion_status == Status::ok) {
        // Same sizes (smooth_spectra checked them): the copies cannot fail.
        s.ema_sigma.copy_from(ema_sigma.data(), ema_sigma.size());
        s.ema_align.copy_from(ema_align.data(), ema_align.size());
        s.ema_b.copy_from(ema_b.data(), ema_b.size());
        s.ema_sigma_a.copy_from(ema_sigma_a.data(), ema_sigma_a.size());
        if (s.criterion_runs < INT64_MAX) ++s.criterion_runs;  // saturates: only the bias uses it
        if (choice.descends) s.log_objective = choice.log_objective;
      } else {
        choice = surrogate::PChoice{};
        choice.p = s.p;  // not run, or could not compute: descends = false, p kept
      }
      s.p = p_now;
      if (on_criterion) {
        PCriterionEvent ev;
        ev.rows = u.rows;
        ev.cols = u.cols;
        ev.step = t;
        ev.previous_p = previous;
        ev.p = p_now;
        ev.choice = choice;
        ev.had_statistics = had_statistics;
        ev.status = criterion_status;
        on_criterion(ev);
      }
    }
    s.count = t;
    s.next_criterion = next_due(t, s.phase);
    return Status::ok;
  }

  /// With a moment, v holds g² in float: larger gradients are refused (rule.hpp,
  /// kSquaredStateMaxGradient); a bf16 m refuses those above kBf16Max (TraceMomentum's limit: m,
  /// a convex combination of gradients, then stays finite); otherwise any finite gradient is
  /// accepted.
  double max_gradient() const {
    return std::min(moment != Moment::none ? kSquaredStateMaxGradient : HUGE_VAL,
                    TraceMomentum::storage_limit(mu_storage));
  }

  /// κ = η_a ρ_a / (η ρ_muon), ρ_muon = 1/√max(r, c) (algorithms.md §4a.4 [V]).
  double kappa(index_t rows, index_t cols) const {
    const double rho_a = noisy ? std::sqrt((1.0 - adam_b1) / (1.0 + adam_b1)) : 1.0;
    return adam_lr * rho_a * std::sqrt(double(std::max(rows, cols))) / lr;
  }
  /// The pinned norm is √min(r, c)·pin_factor^{1/p}: κ with a moment, 1 without. The reference
  /// (deel-ai-papers/schatten-muon 749ba8d, adaptive.py `_target_frobenius`, [V]) interpolates
  /// the magnitude towards Adam's only when a moment is configured, since only then is p = 1
  /// Adam's direction; with `moment_type = "none"`, its default and that of its shipped configs,
  /// it pins every p to Muon's √min(r, c). algorithms.md §4a.4 step 5 states κ^{1/p}
  /// unconditionally; until 2026-12-06 this rule did so too, and without a moment a lower p then
  /// also took a shorter step (0.28× of p = 10's at p = 2, κ ≈ 0.08).
  double pin_factor(index_t rows, index_t cols) const {
    return moment == Moment::none ? 1.0 : kappa(rows, cols);
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
    v("phase", s.phase);
    v("next_criterion", s.next_criterion);
    v("schatten_p", s.p);
    detail::visit_first_moment(v, s);
    v("nu", s.nu);
    v("criterion_runs", s.criterion_runs);
    v("ema_sigma", s.ema_sigma);
    v("ema_align", s.ema_align);
    v("ema_b", s.ema_b);
    v("ema_sigma_a", s.ema_sigma_a);
    v("log_objective", s.log_objective);
    v("activation_gram", s.statistics->gram);
    v("activation_samples", s.statistics->samples);
    v("activation_step", s.statistics->for_step);
  }
  template <class V>
  friend void visit_scratch(V& v, State& s) {
    v("nesterov", s.scratch->nesterov);
    detail::visit_first_moment(v, s.scratch->next_mu, "next_mu");
    v("next_nu", s.scratch->next_nu);
    v("precond", s.scratch->precond);
  }
  /// β ∈ [0, 1) (the bias correction divides by 1 − βᵗ); p ≥ 1; when adaptive, interval,
  /// first and chunks ≥ 1 and the criterion's options (check_criterion_options); with a moment,
  /// b2 ∈ [0, 1) and ε > 0; with the pinned magnitude, lr > 0, adam_lr ≥ 0 and adam_b1 ∈ [0, 1)
  /// (κ = adam_lr·ρ_a·√max(r, c)/lr); the polar and spectral-power options (the latter at
  /// α = 1/2: the rule sets α = 1/p itself); moment, magnitude and without_statistics among
  /// their enums' values (config() names them from a table).
  const char* check() const noexcept {
    if (moment != Moment::none && moment != Moment::parametric && moment != Moment::nonparametric)
      return "schatten_p_direction: moment must be none, parametric or nonparametric";
    if (magnitude != Magnitude::pinned && magnitude != Magnitude::none)
      return "schatten_p_direction: magnitude must be pinned or none";
    if (without_statistics != WithoutStatistics::keep_p &&
        without_statistics != WithoutStatistics::assume_whitened)
      return "schatten_p_direction: without_statistics must be keep_p or assume_whitened";
    if (!hyper::decay_rate(beta)) return "schatten_p_direction: beta must be in [0, 1)";
    if (!(std::isfinite(p) && p >= 1.0)) return "schatten_p_direction: p must be finite and >= 1";
    if (adaptive) {
      if (interval < 1 || first < 1 || chunks < 1)
        return "schatten_p_direction: interval, first and chunks must be >= 1";
      if (const char* m = surrogate::check_criterion_options(criterion)) return m;
    }
    if (moment != Moment::none && !(hyper::decay_rate(b2) && hyper::positive(eps)))
      return "schatten_p_direction: the moment needs b2 in [0, 1) and eps > 0";
    if (magnitude == Magnitude::pinned &&
        !(hyper::positive(lr) && hyper::non_negative(adam_lr) && hyper::decay_rate(adam_b1)))
      return "schatten_p_direction: the pinned magnitude needs lr > 0, adam_lr >= 0 and adam_b1 in [0, 1)";
    if (!hyper::state_storage(mu_storage))
      return "schatten_p_direction: mu_storage must be fp32 or bf16 (stochastic rounding needs bf16)";
    if (const char* m = check_polar_options(polar)) return m;
    SpectralPowerOptions so = spectral;
    so.alpha = 0.5;
    return check_spectral_power_options(so);
  }
  /// The storage only when it is not fp32, so that earlier signatures stay as they were.
  std::string config() const {
    const char* moments[] = {"none", "parametric", "nonparametric"};
    Signature sig(name);
    sig.add("beta", beta)
        .add("nesterov", nesterov)
        .add("bias_correction", bias_correction)
        .add("adaptive", adaptive)
        .add("p", p)
        .add("interval", interval)
        .add("first", first)
        .add("chunks", chunks)
        .add("criterion", surrogate::to_string(criterion.criterion))
        .add("p_min", criterion.p_min)
        .add("p_max", criterion.p_max)
        .add("ema", criterion.ema)
        .add("spectrum", static_cast<int>(criterion.spectrum))
        .add("exact_limit", std::int64_t(criterion.exact_limit))
        .add("fraction", criterion.randomized_fraction)
        .add("min_rank", std::int64_t(criterion.randomized_min_rank))
        .add("max_rank", std::int64_t(criterion.randomized_max_rank))
        .add("power_iterations", criterion.power_iterations)
        .add("gram_power_iterations", criterion.gram_power_iterations)
        .add("seed", std::int64_t(criterion.seed))
        .add("grid", criterion.grid)
        .add("tolerance", criterion.tolerance)
        .add("moment", moments[static_cast<int>(moment)])
        .add("b2", b2)
        .add("eps", eps)
        .add("magnitude", magnitude == Magnitude::pinned ? "pinned" : "none")
        .add("lr", lr)
        .add("adam_lr", adam_lr)
        .add("adam_b1", adam_b1)
        .add("noisy", noisy)
        .add("without_statistics",
             without_statistics == WithoutStatistics::keep_p ? "keep_p" : "assume_whitened")
        .add("spectral_method",
             spectral.method == SpectralPowerMethod::polynomial ? "polynomial" : "rational")
        .add("spectral_steps", spectral.polynomial_steps)
        .add("spectral_floor", spectral.floor)
        .add("spectral_tolerance", spectral.tolerance)
        .add("polar", polar_config(polar));
    // Only when set, so that earlier signatures stay as they were.
    if (spectral.polynomial_compute != Precision::automatic)
      sig.add("spectral_compute", to_string(spectral.polynomial_compute));
    return detail::add_first_moment_storage(sig, mu_storage).str();
  }
};

/// The `schatten_muon` preset (SMuon's SMuonWithAuxAdam matrix group, algorithms.md §4a.4, §6):
/// SchattenPDirection → decoupled weight decay (unadjusted lr) → −lr, i.e.
/// W ← (1 − ηλ) W − η Δ. Defaults [V]: lr 0.02, momentum 0.95 (Nesterov, bias-corrected),
/// p ∈ [1.02, 10] starting at 10, criterion exact_momentum every 100 steps and at step 10, EMA
/// 0.99, no moment, pinned magnitude (without a moment ‖Δ‖_F = √min(r, c); with one κ^{1/p}
/// times that, κ from the auxiliary Adam's lr 3e-4 and β₁ 0.9), no decay.
/// Route non-matrix parameters to adamw (algorithms.md §4a.4: its aux Adam uses lr 3e-4, betas
/// (0.9, 0.95), eps 1e-10).
struct SchattenMuonOptions {
  Schedule lr = Schedule::constant(0.02);
  double momentum = 0.95;
  bool nesterov = true;
  bool bias_correction = true;
  bool adaptive = true;
  double p = 10.0;
  std::int64_t interval = 100;
  std::int64_t first = 10;
  std::int64_t chunks = 1;
  surrogate::PCriterionOptions criterion{};
  SchattenPDirection::Moment moment = SchattenPDirection::Moment::none;
  double b2 = 0.999, eps = 1e-8;
  SchattenPDirection::Magnitude magnitude = SchattenPDirection::Magnitude::pinned;
  double adam_lr = 3e-4, adam_b1 = 0.9;
  bool noisy = true;
  /// A criterion step without an activation Gram keeps p (default [P]) or assumes whitened
  /// inputs (SchattenPDirection::WithoutStatistics).
  SchattenPDirection::WithoutStatistics without_statistics = SchattenPDirection::WithoutStatistics::keep_p;
  /// U Σ^{1/p} Vᵀ. Default [P]: the polynomial method with 5 steps (spectral_power.hpp), i.e. the
  /// cost of Muon's NS5 with singular values within e^{±0.42} of σ^{1/p} on [1e-3, 1]·‖·‖_F — the
  /// accuracy class of Muon's own NS5 (docs/surrogate/schatten_p.md, "Cost and accuracy of the
  /// step"). method rational gives ≤ 1e-3 relative at 2.4–3.7× the cost; its preset settings are
  /// floor 1e-3·‖·‖₂ ([V] SMuon's eigen_floor 1e-3: smaller singular values are rolled off, not
  /// raised to 1/p) and QDWH's l₀ = 1e-3 (algorithms.md §3.3 [P] for gradient matrices): 27 %
  /// faster than the kernel's defaults at 768 × 3072 (1.43 vs 1.97 s, this CPU).
  SpectralPowerOptions spectral = optimizer_spectral();
  PolarOptions polar{};
  double weight_decay = 0.0;
  std::function<void(const PCriterionEvent&)> on_criterion{};
  StateStorage mu_storage = Precision::fp32;  ///< m in fp32 or bf16 (SchattenPDirection)

  static SpectralPowerOptions optimizer_spectral() {
    SpectralPowerOptions o;
    o.method = SpectralPowerMethod::polynomial;
    o.polynomial_steps = 5;
    o.floor = 1e-3;
    o.qdwh.lower_bound = 1e-3;
    return o;
  }
};
inline auto schatten_muon(const SchattenMuonOptions& o = {}) {
  SchattenPDirection d;
  d.beta = o.momentum;
  d.nesterov = o.nesterov;
  d.bias_correction = o.bias_correction;
  d.adaptive = o.adaptive;
  d.p = o.p;
  d.interval = o.interval;
  d.first = o.first;
  d.chunks = o.chunks;
  d.criterion = o.criterion;
  d.moment = o.moment;
  d.b2 = o.b2;
  d.eps = o.eps;
  d.magnitude = o.magnitude;
  d.lr = o.lr.peak;
  d.adam_lr = o.adam_lr;
  d.adam_b1 = o.adam_b1;
  d.noisy = o.noisy;
  d.without_statistics = o.without_statistics;
  d.spectral = o.spectral;
  d.polar = o.polar;
  d.on_criterion = o.on_criterion;
  d.mu_storage = o.mu_storage;
  return chain(std::move(d), AddDecayedWeights{o.weight_decay}, ScaleByLearningRate{o.lr});
}

// ---------------------------------------------------------------------------------------------
// Statistics collection over a partition

/// The activation statistics of one parameter inside an optimizer (a Partition, or any state
/// with visit/visit_fields): `gram` points to its d_in × d_in buffer (nullptr when the parameter's
/// rule collects none, e.g. AdamW or a fixed-p rule). Sum `gram` across data-parallel ranks
/// (e.g. MPI_Allreduce of dim² floats) before the step; `samples` likewise.
struct ActivationGramRef {
  float* gram = nullptr;
  index_t dim = 0;
  MemoryKind memory = MemoryKind::host;  ///< where `gram` lives (device after init(MemoryKind::device))
  std::int64_t* samples = nullptr;
  std::int64_t* for_step = nullptr;
  std::int64_t* rule_step = nullptr;       ///< the rule's step count (statistics are for step count + 1)
  std::int64_t* next_criterion = nullptr;  ///< the next step whose criterion uses statistics
};

namespace detail {
/// Finds the activation fields of parameter `param` by their names "<param>/…/activation_gram"
/// (the one mechanism that also drives checkpoints).
struct GramFinder {
  std::string prefix;
  ActivationGramRef ref;
  std::string owner;  ///< the rule prefix whose fields were found
  bool mine(const std::string& name, const char* field) {
    if (name.compare(0, prefix.size(), prefix) != 0 || !ends_with(name, field)) return false;
    const std::string rule = name.substr(0, name.size() - std::char_traits<char>::length(field));
    if (owner.empty()) owner = rule;
    return rule == owner;
  }
  void operator()(const std::string& name, Buffer& b) {
    if (mine(name, "activation_gram") && !b.empty()) {
      ref.gram = b.data();
      ref.memory = b.memory();
      ref.dim = static_cast<index_t>(std::llround(std::sqrt(double(b.size()))));
    }
  }
  void operator()(const std::string&, Bf16Buffer&) {}  // momentum storage, never a Gram
  void operator()(const std::string& name, std::int64_t& v) {
    if (mine(name, "activation_samples")) ref.samples = &v;
    if (mine(name, "activation_step")) ref.for_step = &v;
    if (!owner.empty() && name == owner + "count") ref.rule_step = &v;
    if (!owner.empty() && name == owner + "next_criterion") ref.next_criterion = &v;
  }
  void operator()(const std::string&, double&) {}
};
}  // namespace detail

/// The statistics of `param` in `optimizer` (see ActivationGramRef).
template <class Optimizer>
ActivationGramRef activation_gram(Optimizer& optimizer, const std::string& param) {
  detail::GramFinder f{param + "/", {}, {}};
  optimizer.visit(f);
  if (f.ref.gram == nullptr || f.ref.samples == nullptr || f.ref.for_step == nullptr) return {};
  if (f.ref.rule_step == nullptr) {  // "count" precedes the statistics: visit again for it
    optimizer.visit(f);
    if (f.ref.rule_step == nullptr) return {};
  }
  return f.ref;
}

/// True when `param`'s rule runs its criterion at the coming step (its step count + 1), i.e. when
/// the training loop should collect that layer's inputs with accumulate_activations() (forward
/// hooks active only then). False for parameters without statistics.
template <class Optimizer>
bool activations_wanted(Optimizer& optimizer, const std::string& param) {
  const ActivationGramRef r = activation_gram(optimizer, param);
  return r.gram != nullptr && r.next_criterion != nullptr && *r.next_criterion == *r.rule_step + 1;
}

/// Adds the inputs X (tokens × d_in, row-major float, host or device) of `param`'s layer to its
/// activation Gram (in the optimizer's memory) for the coming step: the first call after a step
/// starts a new sum, and so does a call that finds the sum holding a NaN or ∞ (it overflowed,
/// e.g. in a sum across ranks, and the step refused it: adding to it could never make it
/// finite). Call it when activations_wanted(optimizer, param); on other steps the statistics are
/// ignored. Errors: no such parameter or a rule without statistics, d_in ≠ the parameter's
/// columns → invalid_argument; NaN/Inf → non_finite_input (this step's sum unchanged; statistics
/// of an earlier step are dropped either way). `workspace`: gram_accumulate()'s (keep one for
/// these calls, so that only the first allocates; none: every call allocates its d_in × d_in
/// scratch, on a GPU a device allocation and free). Cost: one read of the d_in² Gram besides
/// the GEMM of tokens·d_in².
template <class Optimizer>
Status accumulate_activations(Optimizer& optimizer, const std::string& param, MatrixRef<const float> x,
                              Workspace* workspace = nullptr) {
  const ActivationGramRef r = activation_gram(optimizer, param);
  if (r.gram == nullptr || x.cols != r.dim) return Status::invalid_argument;
  const MatrixRef<float> gram(r.gram, r.dim, r.dim, r.memory);
  // The first call for this step, or a sum no step can use: a new, empty sum.
  if (*r.for_step != *r.rule_step || !all_finite(MatrixRef<const float>(gram))) {
    fill(gram, 0.0f);
    *r.samples = 0;
    *r.for_step = *r.rule_step;
  }
  const Status s = gram_accumulate(x, gram, workspace);
  if (s == Status::ok) *r.samples += x.rows;
  return s;
}

/// Drops the activation statistics `param`'s layer holds (the sum zeroed, no samples): the coming
/// criterion step then finds none and keeps p (SchattenPDirection::WithoutStatistics), unless
/// accumulate_activations() gives it new ones. The way on when a step refused a Gram that keeps
/// overflowing (its message names the activation Gram). Errors: no such parameter or a rule
/// without statistics → invalid_argument. Cost: one write of d_in² floats.
template <class Optimizer>
Status clear_activations(Optimizer& optimizer, const std::string& param) {
  const ActivationGramRef r = activation_gram(optimizer, param);
  if (r.gram == nullptr) return Status::invalid_argument;
  fill(MatrixRef<float>(r.gram, r.dim, r.dim, r.memory), 0.0f);
  *r.samples = 0;
  *r.for_step = *r.rule_step;
  return Status::ok;
}

/// The current p of every parameter whose rule is adaptive or fixed Schatten-p, as
/// (parameter-prefixed field name, p) pairs in visit order: state_scalars(optimizer,
/// "schatten_p") (rule.hpp).
template <class Optimizer>
std::vector<std::pair<std::string, double>> schatten_p_values(Optimizer& optimizer) {
  return state_scalars(optimizer, "schatten_p");
}

}  // namespace schatten::optim
