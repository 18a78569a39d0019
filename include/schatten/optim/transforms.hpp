// SPDX-License-Identifier: Apache-2.0
/// \file
/// The building blocks of optimizers, each a rule (rule.hpp): momentum, Adam moments, matrix
/// functions of the update (orthogonalise, spectral power, Kaon), shape scaling, weight decay
/// and the learning rate with its schedule. Formulas and defaults: algorithms.md §1, §4, §6;
/// docs/optim.md. Every element-wise formula lives in one inline function.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <iterator>
#include <limits>
#include <memory>
#include <string>
#include <utility>

#include "schatten/core/workspace.hpp"
#include "schatten/kernels/polar.hpp"
#include "schatten/kernels/spectral_power.hpp"
#include "schatten/optim/rule.hpp"

namespace schatten::optim {

// ---------------------------------------------------------------------------------------------
// Learning-rate schedules (used by ScaleByLearningRate and AdamWUpdate)

/// A learning-rate schedule η(t) of the 0-based step t, evaluated in double.
///   constant:      η(t) = peak
///   warmup_cosine: linear from 0 to peak over `warmup` steps (η(t) = peak·(t+1)/warmup), then
///                  cosine from peak to `final_value` at step `total` and constant after
///   linear_decay:  constant peak for `warmup` steps, then linear to `final_value` at `total`
struct Schedule {
  enum class Kind { constant, warmup_cosine, linear_decay };
  Kind kind = Kind::constant;
  double peak = 1e-3;
  std::int64_t warmup = 0;
  std::int64_t total = 0;
  double final_value = 0.0;

  static Schedule constant(double lr) { return Schedule{Kind::constant, lr, 0, 0, 0.0}; }
  static Schedule warmup_cosine(double peak, std::int64_t warmup, std::int64_t total,
                                double final_value = 0.0) {
    return Schedule{Kind::warmup_cosine, peak, warmup, total, final_value};
  }
  static Schedule linear_decay(double peak, std::int64_t hold, std::int64_t total, double final_value = 0.0) {
    return Schedule{Kind::linear_decay, peak, hold, total, final_value};
  }
  double operator()(std::int64_t t) const {
    switch (kind) {
      case Kind::constant:
        return peak;
      case Kind::warmup_cosine: {
        if (t < warmup) return peak * double(t + 1) / double(warmup);
        if (t >= total || total <= warmup) return final_value;
        const double x = double(t - warmup) / double(total - warmup);
        return final_value + 0.5 * (peak - final_value) * (1.0 + std::cos(3.14159265358979323846 * x));
      }
      case Kind::linear_decay: {
        if (t < warmup) return peak;
        if (t >= total || total <= warmup) return final_value;
        const double x = double(t - warmup) / double(total - warmup);
        return peak + (final_value - peak) * x;
      }
    }
    return peak;
  }
  /// The largest η(t) over all t: every kind moves between 0, peak and final_value.
  double max_value() const { return std::max(peak, final_value); }
  /// nullptr when the schedule is usable: peak and final value finite and ≥ 0 (a negative
  /// rate would climb the loss), warmup and total ≥ 0 (rule.hpp, check_of); else the message of
  /// `refusals` for the first problem: {rates, steps}, each naming the rule that holds the
  /// schedule (ScheduleRefusals), so that a chain with two schedules (RelativeUpdate's and the
  /// learning rate's) says which one is bad (until 2026-12-07 both said "lr schedule: …").
  const char* check(const char* const (&refusals)[2]) const noexcept {
    if (!hyper::non_negative(peak) || !hyper::non_negative(final_value)) return refusals[0];
    if (warmup < 0 || total < 0) return refusals[1];
    return nullptr;
  }
  std::string config() const {
    return Signature(kind == Kind::constant        ? "constant"
                     : kind == Kind::warmup_cosine ? "warmup_cosine"
                                                   : "linear_decay")
        .add("peak", peak)
        .add("warmup", warmup)
        .add("total", total)
        .add("final", final_value)
        .str();
  }
};

// ---------------------------------------------------------------------------------------------
// The device forms of the element-wise loops below (rule.hpp, device_kernels), defined in
// backends/kokkos/src/optim_kernels.cpp with the rules' own element formulas.

namespace detail {
/// Scalars of one Adam or fused AdamW pass.
struct AdamWScalars {
  float b1, w1, b2, w2, inv_c1, inv_sqrt_c2, eps, weight_decay, neg_lr;  ///< w = float(1 − β) (double)
  Bf16Store store;  ///< how a bf16 m is stored (core/bf16.hpp)
};
}  // namespace detail
namespace device_kernels {
/// x[k] ← TraceMomentum::stored_step(x[k], mu[k], beta, nesterov, ema ? Form::ema : Form::sum,
/// {cm, cg}, how); mu in float or bf16 storage (the overloads).
void momentum(float* x, float* mu, index_t n, float beta, bool nesterov, bool ema, float cm, float cg,
              Bf16Store how);
void momentum(float* x, std::uint16_t* mu, index_t n, float beta, bool nesterov, bool ema, float cm, float cg,
              Bf16Store how);
/// x[k] ← ScaleByAdam::stored_step(x[k], m[k], v[k], …) with c's first seven scalars.
void adam(float* x, float* m, float* v, index_t n, const detail::AdamWScalars& c);
void adam(float* x, std::uint16_t* m, float* v, index_t n, const detail::AdamWScalars& c);
/// x[k] ← detail::adamw_element(x[k], m[k], v[k], w[k], c).
void adamw(float* x, float* m, float* v, const float* w, index_t n, const detail::AdamWScalars& c);
void adamw(float* x, std::uint16_t* m, float* v, const float* w, index_t n, const detail::AdamWScalars& c);
/// flag_outside() of rule.hpp on bf16 bit patterns (widened to float): not waited for
/// (TraceMomentum::precheck). n > 0.
void flag_outside_bf16(const std::uint16_t* x, index_t n, std::uint32_t limit_bits, float* flag);
/// all_within() of rule.hpp on bf16 bit patterns: every x[k] (widened to float) finite with
/// |x[k]| ≤ the float of `limit_bits`.
bool all_within_bf16(const std::uint16_t* x, index_t n, std::uint32_t limit_bits);
/// flag_outside_bf16()'s test ORed into a flag an earlier test wrote (flag_outside_or of
/// rule.hpp on bf16 bit patterns: DionDirection::precheck's bf16 Q). Not waited for. n > 0.
void flag_outside_bf16_or(const std::uint16_t* x, index_t n, std::uint32_t limit_bits, float* flag);
/// dst[k] ← src[k] widened to float (exact: every bf16 is a float). Not waited for.
void widen_bf16(float* dst, const std::uint16_t* src, index_t n);
}  // namespace device_kernels

// ---------------------------------------------------------------------------------------------
// Momentum

namespace detail {
/// A first moment in either storage (docs/optim.md "State precision"): `mu` holds it in fp32 or
/// `mu_bf16` in bf16, the other one empty; `storage` says which (set by init_first_moment; not a
/// field). The base of the States of the rules with a momentum buffer (TraceMomentum,
/// ScaleByAdam, ScaleByLion, MuAdamDirection and the step-size rules), and the scratch of the
/// tentative next momentum of the rules that change their state only once their polar call
/// succeeded (step_size.hpp).
struct FirstMoment {
  Buffer mu;
  Bf16Buffer mu_bf16;
  StateStorage storage;
};
/// m sized for n zeros in `storage`.
inline void init_first_moment(FirstMoment& m, std::size_t n, StateStorage storage) {
  m.storage = storage;
  if (storage.bf16())
    m.mu_bf16 = Bf16Buffer(n, std::uint16_t(0));
  else
    m.mu = Buffer(n, 0.0f);
}
/// m named `name` ("mu" in visit_fields), whichever buffer holds it.
template <class V>
void visit_first_moment(V& v, FirstMoment& m, const char* name = "mu") {
  if (m.storage.bf16())
    v(name, m.mu_bf16);
  else
    v(name, m.mu);
}
/// f(pointer to m's elements): float* or std::uint16_t* (bf16), by its storage.
template <class F>
void with_first_moment(FirstMoment& m, F&& f) {
  if (m.storage.bf16())
    f(m.mu_bf16.data());
  else
    f(m.mu.data());
}
/// How a pass of step `step` (1-based) stores m's elements: its storage's rounding, the step
/// seeding stochastic rounding (core/bf16.hpp, bf16_dither).
inline Bf16Store first_moment_store(const FirstMoment& m, std::int64_t step) {
  return Bf16Store::of(m.storage, step);
}
/// Adds "mu_storage" to a rule's signature when it is not fp32, and "mu_rounding" when it rounds
/// stochastically (earlier signatures stay as they were); another buffer's storage under its
/// own keys (DionDirection's "q_storage", "q_rounding").
inline Signature& add_first_moment_storage(Signature& s, StateStorage storage,
                                           const char* storage_key = "mu_storage",
                                           const char* rounding_key = "mu_rounding") {
  if (storage.precision != Precision::fp32) s.add(storage_key, to_string(storage.precision));
  if (storage.rounding == Rounding::stochastic) s.add(rounding_key, "stochastic");
  return s;
}
/// True when m has n elements in `storage`.
inline bool first_moment_sized(const FirstMoment& m, std::size_t n, StateStorage storage) {
  return m.storage == storage && m.mu.size() + m.mu_bf16.size() == n;
}
/// to ← from, in from's storage (to sized alike: then it never allocates, BasicBuffer's
/// assignment reuses the allocation).
inline void copy_first_moment(FirstMoment& to, const FirstMoment& from) {
  if (from.storage.bf16())
    to.mu_bf16 = from.mu_bf16;
  else
    to.mu = from.mu;
}
/// True when the bf16 pattern x, widened to float, is NaN or exceeds the float of `limit_bits`
/// in magnitude: a pattern widens to the float whose bits are the pattern << 16, so its
/// magnitude bits compare with the limit's as all_within() of rule.hpp compares a float's (NaN
/// and Inf patterns lie above every finite limit). The test of first_moment_within() and of the
/// bf16 device kernels.
SCHATTEN_HOST_DEVICE inline bool bf16_beyond(std::uint16_t x, std::uint32_t limit_bits) {
  return (std::uint32_t(x & 0x7fffu) << 16) > limit_bits;
}
/// all_within() of rule.hpp on a bf16 buffer: every element, widened, finite with |x| ≤ the
/// float of `limit_bits` (bf16_beyond). Cost: one read.
inline bool bf16_within(const Bf16Buffer& b, std::uint32_t limit_bits) {
  const std::uint16_t* x = b.data();
  const auto n = static_cast<index_t>(b.size());
  if (n > 0 && b.memory() == MemoryKind::device) return device_kernels::all_within_bf16(x, n, limit_bits);
  std::uint32_t bad = 0;
  for (index_t k = 0; k < n; ++k)
    bad |= static_cast<std::uint32_t>(bf16_beyond(x[k], limit_bits));
  return bad == 0;
}
/// True when every element of m is finite with |x| ≤ the float of `limit_bits` (magnitude_bits):
/// all_within() of rule.hpp over either storage (bf16_within for bf16). Cost: one read of m.
inline bool first_moment_within(const FirstMoment& m, std::uint32_t limit_bits) {
  if (!m.storage.bf16())
    return all_within(
        MatrixRef<const float>(m.mu.data(), 1, static_cast<index_t>(m.mu.size()), m.mu.memory()), limit_bits);
  return bf16_within(m.mu_bf16, limit_bits);
}
/// The precheck of a first moment against |m| ≤ the float of `limit_bits` (the test of
/// TraceMomentum::precheck_buffer and MuAdamDirection::precheck): ok; out_of_range when some
/// entry is finite beyond it; non_finite_input when some entry is NaN or Inf (a corrupt
/// checkpoint). With `flag` and m in device memory (`memory`), a kernel not waited for sets *flag
/// to 1 or to a value ≤ 0, and the answer is ok: the caller reads the flag and asks again
/// without it for the status. With `flag` on the host, *flag ← 1 or 0 as well. Cost: one read.
inline Status precheck_first_moment(const FirstMoment& m, MemoryKind memory, std::uint32_t limit_bits,
                                    float* flag) {
  if (flag != nullptr && memory == MemoryKind::device) {
    const auto n = static_cast<index_t>(m.mu.size() + m.mu_bf16.size());
    if (n == 0)
      device_kernels::fill(flag, 1, 0.0f);
    else if (m.storage.bf16())
      device_kernels::flag_outside_bf16(m.mu_bf16.data(), n, limit_bits, flag);
    else
      device_kernels::flag_outside(m.mu.data(), n, limit_bits, flag);
    return Status::ok;
  }
  const bool within = first_moment_within(m, limit_bits);
  if (flag != nullptr) *flag = within ? 0.0f : 1.0f;
  if (within) return Status::ok;
  return first_moment_within(m, magnitude_bits(HUGE_VAL)) ? Status::out_of_range : Status::non_finite_input;
}
/// The more severe of two precheck statuses: non_finite_input, then any other failure, then ok.
inline Status worse(Status a, Status b) {
  if (a == Status::non_finite_input || b == Status::non_finite_input) return Status::non_finite_input;
  return a != Status::ok ? a : b;
}
/// A further buffer's test in a precheck, after precheck_first_moment() wrote `flag`: every
/// entry of x within [−limit, limit], or [0, limit] when `non_negative` (limit the float of
/// `limit_bits`). With `flag` and x in device memory, a kernel not waited for ORs 1 into *flag
/// when the test fails, and the answer is ok (the caller reads the flag). Otherwise: ok;
/// out_of_range when some entry lies beyond the limit and all are finite (and, when
/// `non_negative`, none negative); non_finite_input when some is NaN, ±Inf or a forbidden
/// negative (a corrupt checkpoint); with `flag` on the host, *flag ← 1 on a failure. The extra
/// tests of MuAdamDirection, NamoDStep, Dion2Direction and DionDirection. Cost: one read.
inline Status precheck_values(MatrixRef<const float> x, std::uint32_t limit_bits, bool non_negative,
                              float* flag) {
  if (x.size() == 0) return Status::ok;
  if (flag != nullptr && x.memory == MemoryKind::device) {
    if (non_negative)
      device_kernels::flag_outside_non_negative(x.data, x.size(), limit_bits, flag);
    else
      device_kernels::flag_outside_or(x.data, x.size(), limit_bits, flag);
    return Status::ok;
  }
  const auto within = [&](std::uint32_t bits) {
    return non_negative ? all_within_non_negative(x, bits) : all_within(x, bits);
  };
  if (within(limit_bits)) return Status::ok;
  if (flag != nullptr) *flag = 1.0f;
  return within(magnitude_bits(HUGE_VAL)) ? Status::out_of_range : Status::non_finite_input;
}
/// precheck_values() (signed: [−limit, limit]) of a further buffer stored in bf16
/// (DionDirection's Q with `q_storage` bf16): the same answers and the same flag protocol, on
/// the widened elements. Cost: one read.
inline Status precheck_values_bf16(const Bf16Buffer& x, std::uint32_t limit_bits, float* flag) {
  if (x.size() == 0) return Status::ok;
  if (flag != nullptr && x.memory() == MemoryKind::device) {
    device_kernels::flag_outside_bf16_or(x.data(), static_cast<index_t>(x.size()), limit_bits, flag);
    return Status::ok;
  }
  if (bf16_within(x, limit_bits)) return Status::ok;
  if (flag != nullptr) *flag = 1.0f;
  return bf16_within(x, magnitude_bits(HUGE_VAL)) ? Status::out_of_range : Status::non_finite_input;
}
/// Exchanges the buffers of a and b (the same storage).
inline void swap_first_moment(FirstMoment& a, FirstMoment& b) {
  a.mu.swap(b.mu);
  a.mu_bf16.swap(b.mu_bf16);
}

/// TraceMomentum::Correction (outside the class so that it can be a default argument there).
struct MomentumCorrection {
  float m = 1.0f, g = 1.0f;
};
}  // namespace detail

/// Heavy-ball momentum. EMA form (Keller Jordan, torch.optim.Muon): B ← β B + (1 − β) G, output
/// N = (1 − β) G + β B with Nesterov, else B. Sum form (Moonlight; torch.optim.SGD with
/// dampening 0): B ← β B + G, N = G + β B with Nesterov, else B. The buffer starts at zero.
/// `bias_correction` (EMA form only; off by default, as in Keller Jordan's and PyTorch's Muon) is
/// optax's variant [V] (algorithms.md §1.1): N = β B/(1 − β^{t+1}) + (1 − β) G/(1 − β^t) with
/// Nesterov, else B/(1 − β^t), t the 1-based step. Behind a polynomial orthogonalisation it only
/// moves the normalisation's eps; it matters where the update keeps the momentum's scale
/// (PolarOptions::dual_norm_scale, optax's `adaptive`).
///
/// `mu_storage` [P] (docs/optim.md "State precision"; optax's `mu_dtype`, microsoft/dion's
/// `DionMixedPrecisionConfig.momentum_dtype`): the buffer in fp32 (default) or bf16, half the
/// memory. The arithmetic is float either way: B is widened, updated as above, and rounded to
/// the nearest bf16 (ties to even) when stored; this step's output uses the unrounded B. The
/// stored B is then within 2⁻⁸ of the float B of that step, relative (half a unit of bf16's 8
/// significant bits). An EMA increment (1 − β)(G − B) smaller than half a bf16 unit of B is
/// lost, so over steps the buffer can lag the exact EMA by up to 2⁻⁸/(1 − β) of |B| (7.8 % at
/// β = 0.95) where G stays near B; tests/optim/test_state_precision.cpp measures it.
struct TraceMomentum {
  static constexpr const char* name = "trace_momentum";
  static constexpr bool row_local = true;  // chain.hpp: each element alone
  enum class Form { ema, sum };
  double beta = 0.95;
  bool nesterov = true;
  Form form = Form::ema;
  bool bias_correction = false;
  StateStorage mu_storage = Precision::fp32;  ///< fp32 or bf16 (above)

  struct State : detail::FirstMoment {  // the buffer in its storage
    std::int64_t count = 0;
  };
  State init(const BlockShape& s) const {
    State st;
    detail::init_first_moment(st, static_cast<std::size_t>(s.size()), mu_storage);
    return st;
  }
  /// With bf16 storage, |G| ≤ kBf16Max keeps the EMA buffer (a convex combination of earlier
  /// gradients and its zero start) finite once rounded; larger gradients are refused
  /// (rule.hpp). fp32: no limit of its own. (The limit of the rules that keep their own
  /// momentum through apply(): step_size.hpp.)
  static double storage_limit(StateStorage storage) { return storage.bf16() ? double(kBf16Max) : HUGE_VAL; }
  /// The smaller of storage_limit() and, for the EMA form, overflow_bound() at step 1, whose bias
  /// corrections are the largest (1/(1 − β^t) falls with t), so that every step's bound holds for
  /// the gradient and precheck() need only test the buffer: FLT_MAX/2 for Muon's EMA (1.7e38).
  /// The EMA buffer is a convex combination of gradients, bounded by them at every step. The sum
  /// form's is not (it grows to |G|/(1 − β)), and sgd's chain has no precheck to refuse a grown
  /// buffer: its limit is sum_form_bound(), which holds at every step without one.
  double max_gradient() const {
    const double bound = form == Form::sum ? sum_form_bound(beta, nesterov, mu_storage)
                                           : overflow_bound(beta, nesterov, form, correction_at(1));
    return std::min(storage_limit(mu_storage), bound);
  }
  /// The sum form's limit over all steps: for |G| ≤ this at every step, and a buffer that starts
  /// within |G|·K_b (its zero start, or any buffer this rule wrote), the buffer and the output stay
  /// within FLT_MAX/2 forever. Math: step() computes B' = fl(fl(βB) + G) and stores it (bf16: one
  /// more rounding), so |B'| ≤ c(β|B| + |G|) with c = (1 + 2⁻²⁴)²(1 + u_s), u_s the storage's
  /// unit (0 for fp32, 2⁻⁸ for bf16 to nearest, 2⁻⁷ for stochastic rounding); by induction
  /// |B| ≤ K_b·max|G| with K_b = c/(1 − βc), β as the float step() uses. The output is B' or, with
  /// Nesterov, fl(G + fl(βB')), within K_o = (1 + βK_b(1 + 2⁻²⁴))(1 + 2⁻²⁴) of max|G|. Bound:
  /// FLT_MAX/(2·max(K_b, K_o)); the factor 2 keeps the values inside bf16's range too. 0 when
  /// βc ≥ 1 (β ≥ 1, or within the roundings of 1), where no gradient limit bounds the buffer:
  /// check() refuses those β. β = 0.9, fp32: 1.7e37; β = 0.99: 1.7e36.
  static double sum_form_bound(double beta, bool nesterov, StateStorage storage) {
    const double u = 0x1p-24, c = step_growth(storage);
    if (!(beta >= 0.0 && beta < 1.0)) return 0.0;
    const double b = static_cast<double>(static_cast<float>(beta));
    if (b * c >= 1.0) return 0.0;
    const double kb = c / (1.0 - b * c);
    const double ko = nesterov ? (1.0 + b * kb * (1.0 + u)) * (1.0 + u) : kb;
    return 3.4028234663852886e38 / (2.0 * std::max(kb, ko));
  }
  /// c = (1 + 2⁻²⁴)²(1 + u_s): the most one step() and the store can enlarge β|B| + w|G| by
  /// (two float roundings, and the storage's unit u_s: 0 for fp32, 2⁻⁸ for bf16 to nearest, 2⁻⁷
  /// for stochastic rounding).
  static double step_growth(StateStorage storage) {
    const double u = 0x1p-24;
    const double us = !storage.bf16() ? 0.0 : storage.rounding == Rounding::stochastic ? 0x1p-7 : 0x1p-8;
    return (1.0 + u) * (1.0 + u) * (1.0 + us);
  }
  /// update_bound (rule.hpp): for inputs within `in` at every step and a buffer this rule wrote
  /// from them (its zero start included), |B| ≤ X·in by induction, X = w·c/(1 − β·c) with c =
  /// step_growth() and w = 1 − β (EMA) or 1 (sum), the floats step() uses; the output is at most
  /// (c_g·w + c_m·β·X)(1 + 2⁻²⁴)³·in with Nesterov, else c_m·X(1 + 2⁻²⁴)·in, with the bias
  /// corrections of step 1, the largest. +Inf when β·c ≥ 1 (β within a few float units of 1),
  /// where no input bound limits the buffer. Muon's EMA at β = 0.95: 1.0000005·in (Muon's chain
  /// does not depend on it: its polar factor is bounded whatever its input); sgd's sum form at
  /// β = 0.9: 10.000006·in.
  double update_bound(double in, const BlockShape&) const {
    const double u = 0x1p-24, c = step_growth(mu_storage);
    const float bf = static_cast<float>(beta);
    const double b = bf, w = form == Form::ema ? double(1.0f - bf) : 1.0;
    if (!(b * c < 1.0)) return HUGE_VAL;
    const double x = w * c / (1.0 - b * c);
    const Correction k = correction_at(1);
    const double out = nesterov ? (double(k.g) * w + double(k.m) * b * x) * (1.0 + u) * (1.0 + u) * (1.0 + u)
                                : double(k.m) * x * (1.0 + u);
    return in * out;
  }

  static constexpr bool device_capable = true;  // rule.hpp: runs on device memory

  /// The bias corrections of step t (1-based) as float factors: m multiplies the buffer's term,
  /// g the gradient's (1/(1 − β^{t+1}) and 1/(1 − β^t) with Nesterov, both 1/(1 − β^t) without),
  /// computed in double. {1, 1}: no correction (the multiplications are then exact).
  using Correction = detail::MomentumCorrection;
  static Correction correction(double beta, bool nesterov, std::int64_t t) {
    const double cg = 1.0 / (1.0 - std::pow(beta, double(t)));
    const double cm = nesterov ? 1.0 / (1.0 - std::pow(beta, double(t + 1))) : cg;
    return {float(cm), float(cg)};
  }
  /// This rule's corrections at step t (1-based): correction() with bias_correction, else none.
  Correction correction_at(std::int64_t t) const {
    return bias_correction ? correction(beta, nesterov, t) : Correction{};
  }
  /// One element: updates b, returns the output. The one formula of both forms.
  SCHATTEN_HOST_DEVICE static float step(float g, float& b, float beta, bool nesterov, Form form,
                                         Correction c = {}) {
    const float w = form == Form::ema ? 1.0f - beta : 1.0f;  // weight of the new gradient
    b = beta * b + w * g;
    return nesterov ? c.g * (w * g) + c.m * (beta * b) : c.m * b;
  }
  /// step() on a stored element (float, or bf16 widened and rounded back: core/bf16.hpp).
  template <class M, class H = Bf16Nearest>
  SCHATTEN_HOST_DEVICE static float stored_step(float g, M& stored, float beta, bool nesterov, Form form,
                                                Correction c = {}, H how = {}) {
    float b = load_state(stored);
    const float out = step(g, b, beta, nesterov, form, c);
    store_state(stored, b, how);
    return out;
  }
  /// u ← step(u, mu) element by element, mu (u.size() elements in u's memory, float or bf16,
  /// stored as `how` says) updated: the pass of update(), shared with the rules that keep their
  /// own momentum (step_size.hpp).
  template <class M>
  static void apply(Block u, M* mu, double beta, bool nesterov, Form form, Correction c = {},
                    Bf16Store how = {}) {
    const float b = static_cast<float>(beta);
    float* x = u.data;
    if (u.memory == MemoryKind::device)
      return device_kernels::momentum(x, mu, u.size(), b, nesterov, form == Form::ema, c.m, c.g, how);
    with_store(how, [&](auto h) {
      for (index_t k = 0, n = u.size(); k < n; ++k)
        x[k] = stored_step(x[k], mu[k], b, nesterov, form, c, h);
    });
  }
  Status update(Block u, State& s, ConstBlock) const {
    if (!detail::first_moment_sized(s, static_cast<std::size_t>(u.size()), mu_storage))
      return Status::invalid_argument;  // another shape or storage
    const Correction c = correction_at(s.count + 1);
    const Bf16Store how = detail::first_moment_store(s, s.count + 1);
    detail::with_first_moment(s, [&](auto* mu) { apply(u, mu, beta, nesterov, form, c, how); });
    ++s.count;
    return Status::ok;
  }
  /// The largest |B| and |G| for which step() keeps the new buffer and the output within half the
  /// float range: FLT_MAX/(2K), K the larger of the bounds per unit of max(|B|, |G|) of |B'|,
  /// β + w, and of |N|, c_g w + c_m β (β + w) with Nesterov, else c_m (β + w); β, w and c as
  /// the floats step() uses. The factor 2 covers the float roundings of step() (at most eight
  /// in a row, each a factor ≤ 1 + 2⁻²⁴), and half the float range lies inside bf16's, so a
  /// stored B stays finite too. K ≥ 1 (β + w ≥ 1 in both forms): the bound is at most FLT_MAX/2.
  static double overflow_bound(double beta, bool nesterov, Form form, Correction c) {
    const auto b = static_cast<double>(static_cast<float>(beta));
    const double w = form == Form::ema ? double(1.0f - static_cast<float>(beta)) : 1.0;
    const double buffer = b + w;
    const double out = nesterov ? double(c.g) * w + double(c.m) * b * buffer : double(c.m) * buffer;
    return 3.4028234663852886e38 / (2.0 * std::max(buffer, out));
  }
  /// update()'s failures before it runs, touching nothing (the rule protocol's precheck,
  /// rule.hpp), for a gradient that passed the max_gradient() scan (chains and partitions scan
  /// first): invalid_argument for a buffer of another shape or storage; out_of_range when some
  /// |B| exceeds this step's overflow_bound() (non_finite_input when some B is NaN or Inf), so
  /// that ok promises a finite buffer and output. Conservative: a buffer entry between that
  /// bound and the float range is refused although the step might have stayed finite (for
  /// Muon's EMA, entries above 1.7e38, which only a diverged run or a corrupt checkpoint
  /// holds). Cost: one read of the buffer; on device memory with `flag`, one kernel not waited
  /// for.
  Status precheck(ConstBlock u, const State& s, ConstBlock, float* flag = nullptr) const {
    return precheck_buffer(u, s, s.count + 1, flag);
  }
  /// precheck() of a buffer `s` about to take step t (1-based): shared with the rules that keep
  /// their own momentum and step it with apply() (step_size.hpp).
  Status precheck_buffer(ConstBlock u, const detail::FirstMoment& s, std::int64_t t, float* flag) const {
    if (!detail::first_moment_sized(s, static_cast<std::size_t>(u.size()), mu_storage))
      return Status::invalid_argument;
    const std::uint32_t bits = magnitude_bits(overflow_bound(beta, nesterov, form, correction_at(t)));
    return detail::precheck_first_moment(s, u.memory, bits, flag);
  }
  /// "mu" is the buffer in its storage: checkpoints hold it as floats either way (io/checkpoint.hpp).
  template <class V>
  friend void visit_fields(V& v, State& s) {
    v("count", s.count);
    detail::visit_first_moment(v, s);
  }
  /// β in [0, 1), also once rounded to float (hyper::decay_rate): for the EMA form β = 1 would
  /// keep the buffer at its zero start; for the sum form β ≥ 1 lets the buffer of a constant
  /// gradient grow without bound (torch's SGD accepts it; [P] refused here, with the β within
  /// the roundings of 1 where sum_form_bound() is 0: above 1 − 2⁻²³ in fp32, about 1 − 2⁻⁸ in
  /// bf16 to nearest and 1 − 2⁻⁷ with stochastic rounding). Bias correction with the EMA form
  /// only (the sum form has no such correction); storage fp32 or bf16.
  const char* check() const noexcept {
    if (!hyper::decay_rate(beta))
      return form == Form::ema ? "trace_momentum: beta must be in [0, 1) for the EMA form"
                               : "trace_momentum: beta must be in [0, 1) for the sum form";
    if (form == Form::sum && hyper::state_storage(mu_storage) &&
        !(sum_form_bound(beta, nesterov, mu_storage) > 0.0))
      return "trace_momentum: beta too close to 1 for the sum form in this storage (its rounding could grow "
             "the buffer without bound)";
    if (bias_correction && form != Form::ema) return "trace_momentum: bias_correction needs the EMA form";
    if (!hyper::state_storage(mu_storage))
      return "trace_momentum: mu_storage must be fp32 or bf16 (stochastic rounding needs bf16)";
    return nullptr;
  }
  std::string config() const {
    Signature s(name);
    s.add("beta", beta).add("nesterov", nesterov).add("form", form == Form::ema ? "ema" : "sum");
    if (bias_correction) s.add("bias_correction", true);  // only when set: earlier signatures stay
    detail::add_first_moment_storage(s, mu_storage);
    return s.str();
  }
};

// ---------------------------------------------------------------------------------------------
// Adam

/// Adam's bias-corrected moments (Kingma & Ba; PyTorch's Adam/AdamW): m ← β₁ m + (1 − β₁) g,
/// v ← β₂ v + (1 − β₂) g², output m̂ / (√v̂ + ε) with m̂ = m/(1 − β₁ᵗ), v̂ = v/(1 − β₂ᵗ), t the
/// 1-based step. Bias corrections are computed in double once per step, and so are the weights
/// 1 − β (then rounded to float, as PyTorch's Python-float `1 - beta`): 1.0f − float(0.999) would
/// be 0.00099998713, 1.3e-5 off 1 − β₂ (docs/benchmarks/cpu-replay.md, "PyTorch recordings").
///
/// `mu_storage` [P] (docs/optim.md "State precision"; optax's `mu_dtype`): the first moment m
/// in fp32 (default) or bf16, as TraceMomentum's buffer (widened, updated in float, rounded to
/// nearest even when stored; this step's output from the unrounded m). v stays fp32: with the
/// EMA weight 1 − β₂ = 0.001 an increment is smaller than half a bf16 unit of v (2⁻⁹ to 2⁻⁸ of
/// v) unless g² differs from v by more than 20 % to 39 % of v, so a bf16 v would barely move
/// (microsoft/dion also keeps variance_dtype fp32 in its example).
struct ScaleByAdam {
  static constexpr const char* name = "scale_by_adam";
  static constexpr bool row_local = true;  // chain.hpp: each element alone
  static constexpr bool device_capable = true;
  double b1 = 0.9, b2 = 0.999, eps = 1e-8;
  StateStorage mu_storage = Precision::fp32;  ///< fp32 or bf16 (above)

  struct State : detail::FirstMoment {  // m in its storage
    std::int64_t count = 0;
    Buffer nu;
  };
  State init(const BlockShape& s) const { return init_moments(s, mu_storage); }
  /// The zero moments of a block, m in `storage` (shared with AdamWUpdate).
  static State init_moments(const BlockShape& s, StateStorage storage) {
    const auto n = static_cast<std::size_t>(s.size());
    State st;
    detail::init_first_moment(st, n, storage);
    st.nu = Buffer(n, 0.0f);
    return st;
  }
  /// v holds g² in float: larger gradients are refused (rule.hpp, kSquaredStateMaxGradient;
  /// it is far below kBf16Max, so a bf16 m, a convex combination of gradients, stays finite).
  double max_gradient() const { return kSquaredStateMaxGradient; }
  /// A bound on |m̂/(√v̂ + ε)|, this rule's output, for states it wrote and |g| ≤ 2^63: 2·2^63/ε.
  /// √v̂ ≥ 0, and m̂ is an average of the gradients (weights summing to 1 after the bias
  /// correction) up to the float roundings: with β₁ within a few float units of 1,
  /// float(1 − β₁)/(1 − float(β₁)) reaches 1.5 and m grows to 1.5·max|g|; a bf16 m adds 2⁻⁸.
  /// The factor 2 covers both. No smaller bound holds in general: with β₂ = 0, v̂ is the current
  /// g² alone, and a tiny gradient after a large one divides m̂ by about ε (found by a fuzzer,
  /// 2026-12-07: ε = 4.5e-26, β₂ = 0 gave u = −∞ with ok).
  static double ratio_bound(double eps) { return 2.0 * kSquaredStateMaxGradient / double(float(eps)); }
  /// update_bound (rule.hpp): ratio_bound(ε) for inputs within max_gradient(); +Inf beyond,
  /// where g² is not a float. Above FLT_MAX (ε < 5.4e-20) the output itself may be infinite, and
  /// a Partition keeps copies of the route's state whatever follows (rule.hpp, update_bound_of).
  double update_bound(double in, const BlockShape&) const {
    return in <= kSquaredStateMaxGradient ? ratio_bound(eps) : HUGE_VAL;
  }
  /// True when the state was initialised for u's shape and m's `storage`.
  static bool sized(const State& s, const Block& u, StateStorage storage) {
    const auto n = static_cast<std::size_t>(u.size());
    return detail::first_moment_sized(s, n, storage) && s.nu.size() == n;
  }
  /// 1/(1 − β₁ᵗ) and 1/√(1 − β₂ᵗ) for the 1-based step t, computed in double.
  static std::pair<float, float> bias_corrections(double b1, double b2, std::int64_t t) {
    return {static_cast<float>(1.0 / (1.0 - std::pow(b1, double(t)))),
            static_cast<float>(1.0 / std::sqrt(1.0 - std::pow(b2, double(t))))};
  }
  /// One element, PyTorch's order of operations: m, v updated; out = (m/c1) / (√v/√c2 + ε).
  /// w1 = float(1 − β₁) and w2 = float(1 − β₂), the complements computed in double.
  SCHATTEN_HOST_DEVICE static float step(float g, float& m, float& v, float b1, float w1, float b2, float w2,
                                         float inv_c1, float inv_sqrt_c2, float eps) {
    m = b1 * m + w1 * g;
    v = b2 * v + w2 * g * g;
    return (m * inv_c1) / (std::sqrt(v) * inv_sqrt_c2 + eps);
  }
  /// step() on a stored m (float, or bf16 widened and rounded back: core/bf16.hpp).
  template <class M, class H = Bf16Nearest>
  SCHATTEN_HOST_DEVICE static float stored_step(float g, M& m, float& v, float b1, float w1, float b2,
                                                float w2, float inv_c1, float inv_sqrt_c2, float eps,
                                                H how = {}) {
    float mf = load_state(m);
    const float out = step(g, mf, v, b1, w1, b2, w2, inv_c1, inv_sqrt_c2, eps);
    store_state(m, mf, how);
    return out;
  }
  Status update(Block u, State& s, ConstBlock) const {
    if (!sized(s, u, mu_storage)) return Status::invalid_argument;
    const std::int64_t t = s.count + 1;
    const std::pair<float, float> corrections = bias_corrections(b1, b2, t);
    const float inv_c1 = corrections.first, inv_sqrt_c2 = corrections.second;  // (a lambda below reads them)
    const float fb1 = float(b1), fb2 = float(b2), w1 = float(1.0 - b1), w2 = float(1.0 - b2),
                feps = float(eps);
    const Bf16Store how = detail::first_moment_store(s, t);
    auto pass = [&](auto* m) {
      float *v = s.nu.data(), *x = u.data;
      if (u.memory == MemoryKind::device)
        return device_kernels::adam(x, m, v, u.size(),
                                    {fb1, w1, fb2, w2, inv_c1, inv_sqrt_c2, feps, 0.0f, 0.0f, how});
      with_store(how, [&](auto h) {
        for (index_t k = 0, n = u.size(); k < n; ++k)
          x[k] = stored_step(x[k], m[k], v[k], fb1, w1, fb2, w2, inv_c1, inv_sqrt_c2, feps, h);
      });
    };
    detail::with_first_moment(s, pass);
    s.count = t;
    return Status::ok;
  }
  /// "mu" is m in its storage: checkpoints hold it as floats either way (io/checkpoint.hpp).
  template <class V>
  friend void visit_fields(V& v, State& s) {
    v("count", s.count);
    detail::visit_first_moment(v, s);
    v("nu", s.nu);
  }
  /// β₁, β₂ ∈ [0, 1) (torch.optim.Adam's ranges); ε > 0 also in float, where the update
  /// divides by √v̂ + ε (a zero gradient entry would give 0/0 with ε = 0) [P: torch allows 0];
  /// m's storage fp32 or bf16.
  const char* check() const noexcept { return check_adam(b1, b2, eps, mu_storage); }
  /// The check of ScaleByAdam's hyper-parameters, shared with AdamWUpdate.
  static const char* check_adam(double b1, double b2, double eps, StateStorage mu_storage) noexcept {
    if (!hyper::decay_rate(b1)) return "adam: b1 must be in [0, 1)";
    if (!hyper::decay_rate(b2)) return "adam: b2 must be in [0, 1)";
    if (!hyper::positive_float(eps)) return "adam: eps must be finite and > 0 (in float)";
    if (!hyper::state_storage(mu_storage))
      return "adam: mu_storage must be fp32 or bf16 (stochastic rounding needs bf16)";
    return nullptr;
  }
  std::string config() const {
    Signature s(name);
    s.add("b1", b1).add("b2", b2).add("eps", eps);
    return detail::add_first_moment_storage(s, mu_storage).str();
  }
};

namespace detail {
/// One element of the fused AdamW pass: the new update from gradient x, moments m (float or
/// bf16 storage, stored as `how` says: c.store, dispatched by with_store), v (updated) and
/// weight w. The one formula of the host kernel and the device kernel.
template <class M, class H = Bf16Nearest>
SCHATTEN_HOST_DEVICE inline float adamw_element(float x, M& m, float& v, float w, const AdamWScalars& c,
                                                H how = {}) {
  return c.neg_lr *
         (ScaleByAdam::stored_step(x, m, v, c.b1, c.w1, c.b2, c.w2, c.inv_c1, c.inv_sqrt_c2, c.eps, how) +
          c.weight_decay * w);
}
/// x[k] ← neg_lr·(ScaleByAdam::step(x[k], m[k], v[k], …) + λ w[k]) for k < n. Compiled in the
/// library (src/optim/kernels.cpp) with errno-free square roots so that it vectorises whatever
/// flags the caller uses (√ of v ≥ 0 never sets errno anyway).
void adamw_kernel(float* x, float* m, float* v, const float* w, index_t n, const AdamWScalars& s);
void adamw_kernel(float* x, std::uint16_t* m, float* v, const float* w, index_t n, const AdamWScalars& s);
}  // namespace detail

/// AdamW in one pass (the `adamw` preset): u ← −η(t)·(m̂/(√v̂ + ε) + λ W), the same formulas
/// as chain(ScaleByAdam, AddDecayedWeights, ScaleByLearningRate) fused, so that the step reads
/// g, m, v, W and writes u, m, v once (AdamW is memory-bound; three passes cost 2.5× the time).
struct AdamWUpdate {
  static constexpr const char* name = "adamw_update";
  static constexpr bool row_local = true;  // chain.hpp: each element alone
  static constexpr bool device_capable = true;
  double b1 = 0.9, b2 = 0.999, eps = 1e-8, weight_decay = 0.0;
  Schedule lr = Schedule::constant(1e-3);
  StateStorage mu_storage = Precision::fp32;  ///< m's storage: fp32 or bf16 (ScaleByAdam)

  using State = ScaleByAdam::State;
  State init(const BlockShape& s) const { return ScaleByAdam::init_moments(s, mu_storage); }
  double max_gradient() const { return kSquaredStateMaxGradient; }  // v holds g² (ScaleByAdam)
  /// update_bound (rule.hpp): |u| ≤ η_max·(R + λ·kUnguardedParameter)·(1 + 2⁻⁸) with R =
  /// ScaleByAdam::ratio_bound(ε) (2⁻⁸ of margin for the roundings), for inputs within
  /// max_gradient(); +Inf when the float that η multiplies, m̂/(√v̂ + ε) + λW
  /// (detail::adamw_element), may itself be infinite: (R + λ·kUnguardedParameter)(1 + 2⁻⁸) >
  /// FLT_MAX. At the defaults 8.5e32. A Partition keeps copies of the state when the bound
  /// exceeds FLT_MAX − kUnguardedParameter = 2.55e38 (rule.hpp, update_may_overflow_of): for
  /// ε < 5.4e-20, η_max·λ ≥ 2.99, λ ≥ 4 (the sum above), or (λ = 0, ε = 1e-8) η_max > 1.37e11.
  double update_bound(double in, const BlockShape&) const {
    const double inner =
        (ScaleByAdam::ratio_bound(eps) + weight_decay * kUnguardedParameter) * (1.0 + 0x1p-8);
    if (!(in <= kSquaredStateMaxGradient) || !(inner <= 3.4028234663852886e38)) return HUGE_VAL;
    return lr.max_value() * inner;
  }
  Status update(Block u, State& s, ConstBlock p) const {
    if (!ScaleByAdam::sized(s, u, mu_storage) || p.size() != u.size()) return Status::invalid_argument;
    const std::int64_t t = s.count + 1;
    const auto [inv_c1, inv_sqrt_c2] = ScaleByAdam::bias_corrections(b1, b2, t);
    const float feps = float(eps), wd = float(weight_decay);
    const detail::AdamWScalars c{float(b1),
                                 float(1.0 - b1),
                                 float(b2),
                                 float(1.0 - b2),
                                 inv_c1,
                                 inv_sqrt_c2,
                                 feps,
                                 wd,
                                 static_cast<float>(-lr(s.count)),
                                 detail::first_moment_store(s, t)};
    auto pass = [&](auto* m) {
      if (u.memory == MemoryKind::device)
        device_kernels::adamw(u.data, m, s.nu.data(), p.data, u.size(), c);
      else
        detail::adamw_kernel(u.data, m, s.nu.data(), p.data, u.size(), c);
    };
    detail::with_first_moment(s, pass);
    s.count = t;
    return Status::ok;
  }
  // visit_fields: ScaleByAdam's (the same State).
  /// Schedule::check's refusals, naming this rule.
  static constexpr const char* kScheduleRefusals[2] = {
      "adamw_update: lr schedule: the peak and final learning rates must be finite and >= 0",
      "adamw_update: lr schedule: warmup and total must be >= 0 steps"};
  /// ScaleByAdam's ranges, weight decay finite and ≥ 0, a usable lr schedule.
  const char* check() const noexcept {
    if (const char* m = ScaleByAdam::check_adam(b1, b2, eps, mu_storage)) return m;
    if (!hyper::non_negative(weight_decay)) return "adamw: weight_decay must be finite and >= 0";
    return lr.check(kScheduleRefusals);
  }
  std::string config() const {
    Signature s(name);
    s.add("b1", b1).add("b2", b2).add("eps", eps).add("weight_decay", weight_decay).add("lr", lr.config());
    return detail::add_first_moment_storage(s, mu_storage).str();
  }
};

// ---------------------------------------------------------------------------------------------
// Matrix functions of the update

/// State of the matrix-function rules: a step count and the kernel's workspace, reserved at init
/// so that update allocates no buffer (and so cannot fail half-way, but for the few bytes of host
/// labels Kokkos allocates per kernel call: Partition::set_prechecks; a partition shares one among
/// its states, rule.hpp visit_workspaces). The workspace is scratch, not state: checkpoints do
/// not store it.
struct MatrixFunctionState {
  std::int64_t count = 0;
  std::shared_ptr<Workspace> workspace = std::make_shared<Workspace>();
  template <class V>
  friend void visit_fields(V& v, MatrixFunctionState& s) {
    v("count", s.count);
  }
  template <class F>
  friend void visit_workspaces(F& f, MatrixFunctionState& s) {
    f(s.workspace);
  }
};

/// The QdwhOptions settings that differ from their defaults, added to `s` as qdwh_<field>
/// (only then, so that signatures of the defaults stay as they were before 2026-12-06).
/// compute_orthogonality_error asks for a report and changes no result: never printed.
inline Signature& add_qdwh_config(Signature& s, const QdwhOptions& q) {
  const QdwhOptions d{};
  if (q.compute != d.compute) s.add("qdwh_compute", to_string(q.compute));
  if (q.lower_bound != d.lower_bound) s.add("qdwh_lower_bound", q.lower_bound);
  if (q.max_iterations != d.max_iterations) s.add("qdwh_max_iterations", q.max_iterations);
  if (q.polish != d.polish) s.add("qdwh_polish", q.polish);
  if (q.dual_norm_scale != d.dual_norm_scale) s.add("qdwh_dual_norm_scale", q.dual_norm_scale);
  return s;
}

namespace detail {
/// The rows of a schedule as "[a b c; a b c; …]", each to 17 significant digits.
inline std::string schedule_rows(const CoefficientSchedule& sc) {
  std::string out = "[";
  char buf[80];
  for (std::size_t t = 0; t < sc.steps.size(); ++t) {
    std::snprintf(buf, sizeof buf, "%s%.17g %.17g %.17g", t ? "; " : "", sc.steps[t].a, sc.steps[t].b,
                  sc.steps[t].c);
    out += buf;
  }
  return out + "]";
}
/// True when `sc` is the library's schedule of its name (schedules::by_name): the same rows and
/// tail.
inline bool is_named_schedule(const CoefficientSchedule& sc) {
  CoefficientSchedule named;
  return schedules::by_name(sc.name, named) && named.tail == sc.tail && named.steps == sc.steps;
}
}  // namespace detail

/// The polar options as a signature: the method, the schedule by name (and its rows and tail
/// when it is not the library's schedule of that name: a user table, or a named one edited),
/// iterations, normalisation, compute precision; the settings that matter only to one method
/// (gram_restarts, the QDWH options) and the non-default switches only when they differ from
/// their defaults, so that earlier signatures stay as they were. Found by an audit (2026-12-06):
/// two optimizers that differed in their Newton–Schulz coefficients, in QDWH's max_iterations
/// and polish, or in the Gram restarts had equal signatures, so a checkpoint's
/// expected_signature accepted either.
inline std::string polar_config(const PolarOptions& o) {
  const CoefficientSchedule& sc = resolved_schedule(o);
  Signature s(to_string(o.method));
  s.add("schedule", sc.name).add("iterations", o.iterations);
  if (o.method != PolarMethod::qdwh && !detail::is_named_schedule(sc)) {
    const char* tails[] = {"repeat_last", "cycle", "error"};
    s.add("rows", detail::schedule_rows(sc)).add("tail", tails[static_cast<int>(sc.tail)]);
  }
  // The kind only when it is not the default (Frobenius), so earlier signatures stay as they were.
  if (sc.normalization.kind == Normalization::Kind::schatten4) s.add("normalization", "schatten4");
  if (sc.normalization.kind == Normalization::Kind::none) s.add("normalization", "none");
  if (sc.normalization.kind == Normalization::Kind::aol) s.add("normalization", "aol");
  s.add("safety", sc.normalization.safety)
      .add("eps", sc.normalization.eps)
      .add("compute", to_string(o.compute));
  if (o.dual_norm_scale) s.add("dual_norm_scale", true);  // only when set, as the kind above
  if (!o.symmetric_gram) s.add("symmetric_gram", false);
  if (o.method == PolarMethod::gram_newton_schulz && o.gram_restarts != PolarOptions{}.gram_restarts) {
    std::string r = "[";
    for (std::size_t k = 0; k < o.gram_restarts.size(); ++k)
      r += (k ? " " : "") + std::to_string(o.gram_restarts[k]);
    s.add("gram_restarts", r + "]");
  }
  if (o.method == PolarMethod::qdwh) add_qdwh_config(s, o.qdwh);
  return s.str();
}

namespace detail {
/// True when polar(u, u, options, workspace) succeeds for every finite u of `shape` in `memory`
/// and leaves it finite, with singular values at most polar_iterate_bound(options) (rule.hpp,
/// total_on_finite): nothing is left for the kernel to fail on. That needs an iteration without
/// a convergence test (not QDWH, which may report not_converged), not Gram Newton–Schulz (whose
/// rounding can break the iterate bound in float, which polar() then refuses: breakdown; it
/// counts as fallible since 2026-12-07, so its rules' states are copied), iterates that stay bounded
/// (polar_iterate_bound finite: a normalised input and a schedule that cannot blow it up; without
/// a normalisation a huge input could overflow), no dual-norm scaling (whose product may
/// overflow: out_of_range), the workspace reserved for the call (no out_of_memory) and no
/// staging copies to allocate: the kernels read `memory` in place (memory::kernels_access), or
/// the workspace holds staging copies for the call's input and output, one block each
/// (Workspace::staging_covers; a partition on host memory reserves them at init() on a GPU
/// build, Partition::reserve_staging). The one test of the rules that call polar()
/// (Orthogonalize, KaonSpectrum, Dion2's S, and step_size.hpp's and schatten_p.hpp's rules).
inline bool polar_total_on_finite(const PolarOptions& options, const Workspace* workspace,
                                  const BlockShape& shape, MemoryKind memory) {
  const auto block_bytes = static_cast<std::size_t>(shape.size()) * sizeof(float);
  return options.method != PolarMethod::qdwh && options.method != PolarMethod::gram_newton_schulz &&
         !options.dual_norm_scale && std::isfinite(polar_iterate_bound(options)) && workspace != nullptr &&
         (memory::kernels_access(memory) || workspace->staging_covers(2, block_bytes)) &&
         workspace->capacity() >= polar_workspace_bytes(shape.rows, shape.cols, 1, options, Precision::fp32);
}
}  // namespace detail

/// u ← polar(u) with any method and schedule of the kernels (PolarOptions; default Polar Express,
/// 5 steps). Muon's orthogonalisation.
struct Orthogonalize {
  static constexpr const char* name = "orthogonalize";
  static constexpr bool device_capable = true;  // the kernel takes device memory
  PolarOptions polar{};

  static constexpr bool may_fail = true;  // the kernel may report a failure (allocation)
  using State = MatrixFunctionState;
  State init(const BlockShape& s) const {
    State st;
    st.workspace->reserve(polar_workspace_bytes(s.rows, s.cols, 1, polar, Precision::fp32));
    return st;
  }
  Status update(Block u, State& s, ConstBlock) const {
    const PolarReport r = schatten::polar(MatrixRef<const float>(u), u, polar, s.workspace.get());
    if (r.status != Status::ok) return r.status;
    ++s.count;
    return Status::ok;
  }
  /// True when update() succeeds for every finite u of `shape` in `memory` and leaves it finite
  /// (rule.hpp, total_on_finite): detail::polar_total_on_finite of the options and the state's
  /// workspace (a polynomial method, normalised, no dual-norm scaling, reserved, no staging).
  bool total_on_finite(const State& s, const BlockShape& shape, MemoryKind memory) const {
    return detail::polar_total_on_finite(polar, s.workspace.get(), shape, memory);
  }
  /// update_bound (rule.hpp): an entry is at most the output's largest singular value,
  /// polar_iterate_bound() for the normalised polynomial methods (≈ 1.2 for Keller's NS5),
  /// whatever the input. +Inf for QDWH, for dual-norm scaling (an output scaled by about ‖u‖_*)
  /// and for schedules without that bound; their routes keep copies anyway (update() may fail
  /// there: total_on_finite).
  double update_bound(double, const BlockShape&) const {
    return polar.dual_norm_scale ? HUGE_VAL : polar_iterate_bound(polar);
  }
  /// Batched form (rule.hpp): one polar() call over the whole batch of same-shape blocks.
  std::size_t batch_workspace_bytes(const BlockShape& s, index_t batch) const {
    return polar_workspace_bytes(s.rows, s.cols, batch, polar, Precision::fp32);
  }
  Status update_batch(BatchedMatrixRef<float> u, StateList<State> states, ParamList, Workspace& ws) const {
    const PolarReport r = schatten::polar(BatchedMatrixRef<const float>(u), u, polar, &ws);
    if (r.status != Status::ok) return r.status;
    for (index_t b = 0; b < states.size; ++b)
      ++states[b].count;
    return Status::ok;
  }
  /// check_polar_options (polar.hpp).
  const char* check() const noexcept { return check_polar_options(polar); }
  std::string config() const { return Signature(name).add("polar", polar_config(polar)).str(); }
};

/// A matrix-function rule applied to the parameter after the step: u ← F(W + u) − W, so that
/// apply_updates (W += u) lands on F(W + u), to within the two roundings of that subtraction and
/// addition (≤ 2 ulp of max(|W|, |F(W + u)|) per element). Put last in a chain (after the
/// learning rate). Needs the parameter (ConstBlock) in update(); the whole matrix. Cost: F of
/// W + u plus two element-wise passes; state: Inner's. On failure u holds W + u (the chain
/// restores it).
template <class Inner>
struct OnWeights : Inner {  // Inner's options, init, State, may_fail, device_capable, workspace
  static constexpr bool goes_last = true;  // chain.hpp, rule_goes_last
  /// Not total on finite input, whatever Inner is: W + u may overflow to ∞ (both finite), and
  /// the kernel then refuses it. Deleted, so that has_total_on_finite (chain.hpp) is false.
  bool total_on_finite(const typename Inner::State&, const BlockShape&, MemoryKind) const = delete;
  /// update_bound (rule.hpp), where Inner has one: F(W + u) − W, Inner's bound for inputs within
  /// in + kUnguardedParameter, plus kUnguardedParameter; +Inf when that input may exceed FLT_MAX,
  /// where the float W + u itself may be ∞ (and F of it NaN: muon_hyperball at lr 2.9e38 stored
  /// a NaN weight with ok under the first bound, found by a fuzzer, 2026-12-07).
  template <class I = Inner, std::enable_if_t<has_update_bound<I>::value, int> = 0>
  double update_bound(double in, const BlockShape& s) const {
    const double x = (in + kUnguardedParameter) * (1.0 + kUpdateBoundSlack);
    if (!(x <= 3.4028234663852886e38)) return HUGE_VAL;
    return I::update_bound(in + kUnguardedParameter, s) + kUnguardedParameter;
  }
  Status update(Block u, typename Inner::State& s, ConstBlock param) const {
    add_scaled(u, param, 1.0f);
    if (const Status st = Inner::update(u, s, param); st != Status::ok) return st;
    add_scaled(u, param, -1.0f);
    return Status::ok;
  }
  /// Batched form (rule.hpp), where Inner has one: W_b + u_b per block, Inner's one call over
  /// the batch (its batch_workspace_bytes), u_b − W_b.
  template <class I = Inner, std::enable_if_t<has_update_batch<I>::value, int> = 0>
  Status update_batch(BatchedMatrixRef<float> u, StateList<typename Inner::State> states, ParamList params,
                      Workspace& ws) const {
    for (index_t b = 0; b < u.batch; ++b)
      add_scaled(block_of(u, b), params[b], 1.0f);
    if (const Status st = Inner::update_batch(u, states, params, ws); st != Status::ok) return st;
    for (index_t b = 0; b < u.batch; ++b)
      add_scaled(block_of(u, b), params[b], -1.0f);
    return Status::ok;
  }
};

/// SPEL's retraction (Manifold Constrained Steepest Descent, arXiv 2601.21487; NVIDIA-NeMo
/// Emerging-Optimizers `spel.py`, docs/optim.md "SPEL"): the parameter after the step is the polar
/// factor of the parameter the step would give, W ← polar(W + u) (OnWeights: last in a chain,
/// within 2 ulp). State: the call count (checkpointed) and the polar workspace.
/// `polar.dual_norm_scale` is refused: it would scale the weights by ⟨W + u, Q⟩ ≈ their nuclear
/// norm.
struct OrthogonalizeWeights : OnWeights<Orthogonalize> {
  static constexpr const char* name = "orthogonalize_weights";
  /// check_polar_options (polar.hpp), without dual_norm_scale (the comment above).
  const char* check() const noexcept {
    if (polar.dual_norm_scale) return "orthogonalize_weights: dual_norm_scale would scale the weights";
    return Orthogonalize::check();
  }
  std::string config() const { return Signature(name).add("polar", polar_config(polar)).str(); }
};

/// u ← U Σ^α Vᵀ (spectral_power(); Schatten-p Muon α = 1/p, Freon α = 1 − 2c).
struct SpectralPower {
  static constexpr const char* name = "spectral_power";
  static constexpr bool device_capable = true;  // the kernel takes device memory
  SpectralPowerOptions options{};

  static constexpr bool may_fail = true;  // the kernel may report a failure (allocation)
  using State = MatrixFunctionState;
  State init(const BlockShape&) const { return State{}; }
  Status update(Block u, State& s, ConstBlock) const {
    const SpectralPowerReport r = spectral_power(MatrixRef<const float>(u), u, options, s.workspace.get());
    if (r.status != Status::ok) return r.status;
    ++s.count;
    return Status::ok;
  }
  /// Batched form (rule.hpp): one spectral_power() call over the batch. Like update(), the
  /// kernel sizes its workspace itself on the first call (there is no size query), so the
  /// first step grows it once.
  std::size_t batch_workspace_bytes(const BlockShape&, index_t) const { return 0; }
  Status update_batch(BatchedMatrixRef<float> u, StateList<State> states, ParamList, Workspace& ws) const {
    const SpectralPowerReport r = spectral_power(BatchedMatrixRef<const float>(u), u, options, &ws);
    if (r.status != Status::ok) return r.status;
    for (index_t b = 0; b < states.size; ++b)
      ++states[b].count;
    return Status::ok;
  }
  /// check_spectral_power_options (spectral_power.hpp).
  const char* check() const noexcept { return check_spectral_power_options(options); }
  /// alpha, floor and tolerance; the method and its settings only when they are not the
  /// defaults (rational, QDWH's defaults), so that earlier signatures stay as they were.
  std::string config() const {
    Signature s(name);
    s.add("alpha", options.alpha).add("floor", options.floor).add("tolerance", options.tolerance);
    if (options.method == SpectralPowerMethod::polynomial) {
      s.add("method", "polynomial").add("steps", options.polynomial_steps);
      s.add("compute", to_string(options.polynomial_compute));
      if (!options.symmetric_gram) s.add("symmetric_gram", false);
    } else {
      add_qdwh_config(s, options.qdwh);
    }
    return s.str();
  }
};

/// u ← U clip(Σ) Vᵀ, the update's singular values clipped into [lower, upper] (spectral_clip();
/// lower ≤ 0: the spectral hardcap). Exact to working precision (QDWH and sign functions; cost
/// and accuracy in spectral_power.hpp).
struct SpectralClip {
  static constexpr const char* name = "spectral_clip";
  static constexpr bool device_capable = true;  // the kernel takes device memory
  SpectralClipOptions options{};

  static constexpr bool may_fail = true;  // the kernel may report a failure (allocation)
  using State = MatrixFunctionState;
  State init(const BlockShape&) const { return State{}; }
  Status update(Block u, State& s, ConstBlock) const {
    const SpectralPowerReport r = spectral_clip(MatrixRef<const float>(u), u, options, s.workspace.get());
    if (r.status != Status::ok) return r.status;
    ++s.count;
    return Status::ok;
  }
  /// Batched form (rule.hpp): one spectral_clip() call over the batch (the kernel sizes its
  /// workspace on the first call, as SpectralPower's).
  std::size_t batch_workspace_bytes(const BlockShape&, index_t) const { return 0; }
  Status update_batch(BatchedMatrixRef<float> u, StateList<State> states, ParamList, Workspace& ws) const {
    const SpectralPowerReport r = spectral_clip(BatchedMatrixRef<const float>(u), u, options, &ws);
    if (r.status != Status::ok) return r.status;
    for (index_t b = 0; b < states.size; ++b)
      ++states[b].count;
    return Status::ok;
  }
  /// check_spectral_clip_options (spectral_power.hpp).
  const char* check() const noexcept { return check_spectral_clip_options(options); }
  std::string config() const { return signature(name); }

 protected:
  std::string signature(const char* rule) const {
    Signature s(rule);
    s.add("lower", options.lower).add("upper", options.upper);
    // The blend and the method only when they are not the defaults (1, QDWH), so earlier
    // signatures stay as they were.
    if (options.blend != 1.0) s.add("blend", options.blend);
    if (options.method == SpectralClipMethod::polynomial)
      return s.add("method", "polynomial").add("polar", polar_config(options.polar)).str();
    return s.add("floor", options.floor).add("compute", to_string(options.qdwh.compute)).str();
  }
};

/// The weights' singular values clipped after every step, W ← U clip(Σ) Vᵀ of W + u (last in a
/// chain; OnWeights): with lower = 0 a cap σ_max(W) ≤ upper, the weight-norm bound of
/// Lipschitz-constrained training with Muon. A no-op on weights already inside the bounds,
/// up to the rounding of W + u − W. With options.blend = c < 1, W ← (1 − c)·W' + c·U clip(Σ) Vᵀ
/// of W' = W + u: the spectral clipped weight decay of Emerging-Optimizers
/// (spectral_clipped_weight_decay(W', upper, c)), which pulls only the singular values above
/// `upper` towards it, by the fraction c per step.
struct SpectralClipWeights : OnWeights<SpectralClip> {
  static constexpr const char* name = "spectral_clip_weights";
  std::string config() const { return signature(name); }
};

/// u ← Kaon's chaotic-map spectrum of u (docs/kernels/kaon.md), `steps` steps.
struct KaonSpectrum {
  static constexpr const char* name = "kaon_spectrum";
  static constexpr bool device_capable = true;  // the kernel takes device memory
  int steps = 5;

  static constexpr bool may_fail = true;  // the kernel may report a failure (allocation)
  using State = MatrixFunctionState;
  /// The workspace kaon() needs for `batch` blocks: none for steps < 1, which the kernel
  /// refuses (invalid_argument at every update; schedules::kaon would throw).
  std::size_t workspace_bytes(const BlockShape& s, index_t batch) const {
    if (steps < 1) return 0;
    return polar_workspace_bytes(s.rows, s.cols, batch, kaon_options(steps), Precision::fp32);
  }
  /// True when update() succeeds for every finite u of `shape` in `memory` and leaves it finite
  /// (rule.hpp, total_on_finite): kaon() is polar() with kaon_options(steps), a normalised
  /// polynomial iteration (detail::polar_total_on_finite; its output's singular values lie in
  /// [0, 0.9987]). Kaon's chain is then prechecked as Muon's (docs/optim.md "Prechecks instead
  /// of copies"). steps < 1: never (the kernel refuses).
  bool total_on_finite(const State& s, const BlockShape& shape, MemoryKind memory) const {
    return steps >= 1 && detail::polar_total_on_finite(kaon_options(steps), s.workspace.get(), shape, memory);
  }
  /// update_bound (rule.hpp): polar_iterate_bound() of kaon_options(steps), the largest singular
  /// value of the output whatever the input (1.000001 for one step, 1.17349 for two or more,
  /// computed 2026-12-07; this comment said "below 1" before); +Inf for steps the kernel
  /// refuses (or when the table of options cannot be built).
  double update_bound(double, const BlockShape&) const {
    const PolarOptions* o =
        steps >= 1 && steps <= kPolarMaxIterations ? schatten::detail::cached_kaon_options(steps) : nullptr;
    return o != nullptr ? polar_iterate_bound(*o) : HUGE_VAL;
  }
  /// Also builds kaon()'s table of options (schatten::detail::cached_kaon_options) if no call
  /// has, so that a step allocates nothing on the host; a std::bad_alloc here fails init().
  State init(const BlockShape& s) const {
    State st;
    st.workspace->reserve(workspace_bytes(s, 1));
    (void)schatten::detail::cached_kaon_options(steps);
    return st;
  }
  Status update(Block u, State& s, ConstBlock) const {
    const PolarReport r = schatten::kaon(MatrixRef<const float>(u), u, steps, s.workspace.get());
    if (r.status != Status::ok) return r.status;
    ++s.count;
    return Status::ok;
  }
  /// Batched form (rule.hpp): one kaon() call over the batch.
  std::size_t batch_workspace_bytes(const BlockShape& s, index_t batch) const {
    return workspace_bytes(s, batch);
  }
  Status update_batch(BatchedMatrixRef<float> u, StateList<State> states, ParamList, Workspace& ws) const {
    const PolarReport r = schatten::kaon(BatchedMatrixRef<const float>(u), u, steps, &ws);
    if (r.status != Status::ok) return r.status;
    for (index_t b = 0; b < states.size; ++b)
      ++states[b].count;
    return Status::ok;
  }
  /// 1 ≤ steps ≤ kPolarMaxIterations: kaon() refuses others, and workspace_bytes() would build
  /// kaon_options(steps), a row per step (51 GB for INT_MAX).
  const char* check() const noexcept {
    return steps < 1                     ? "kaon_spectrum: steps must be >= 1"
           : steps > kPolarMaxIterations ? "kaon_spectrum: steps must be <= 1000"
                                         : nullptr;
  }
  std::string config() const { return Signature(name).add("steps", steps).str(); }
};

namespace detail {
/// The scalars of one MuAdam preconditioning pass (step t): float(β), float(1 − β) computed in
/// double, c2 = 1 − β₂ᵗ, float(β₁/c1) with c1 = 1 − β₁ᵗ.
struct MuAdamScalars {
  float b1, w1, b2, w2, b1_over_c1;
  double c2, eps, exponent;
  Bf16Store store;  ///< how a bf16 m is stored (core/bf16.hpp)
};
}  // namespace detail
namespace device_kernels {
/// x[k] ← MuAdamDirection::precondition_element(x[k], m[k], v[k], d[k], c); m in float or
/// bf16 storage.
void muadam_precondition(float* x, float* m, float* v, float* d, index_t n, const detail::MuAdamScalars& c);
void muadam_precondition(float* x, std::uint16_t* m, float* v, float* d, index_t n,
                         const detail::MuAdamScalars& c);
/// x[k] ← x[k]·d[k].
void multiply(float* x, const float* d, index_t n);
}  // namespace device_kernels

/// u ← u ⊙ d, with d u.size() floats in u's memory: the map-out of the preconditioned rules
/// (MuAdamDirection, SchattenPDirection).
inline void multiply(Block u, const float* d) {
  if (u.memory == MemoryKind::device) return device_kernels::multiply(u.data, d, u.size());
  for (index_t k = 0, n = u.size(); k < n; ++k)
    u.data[k] *= d[k];
}

/// MuAdam (algorithms.md §4d, the SMuon repository's form [V]) and its element-wise
/// preconditioning (§4a.5): v ← β₂ v + (1 − β₂) g² on the raw gradient, D = (v̂ + ε)^e with
/// v̂ = v/(1 − β₂ᵗ), m ← β₁ m + (1 − β₁) g, ñ = β₁ m/(1 − β₁ᵗ) + (1 − β₁) g, and the output
/// D ⊙ polar(D ⊙ ñ). e = −1/4 is MuAdam, e = −1/2 MuAdam-SANIA; e = 0 is Muon with this
/// momentum. No shape scaling (as in the repository).
///
/// `mu_storage` [P] (docs/optim.md "State precision"): m in fp32 (default) or bf16, as
/// ScaleByAdam's first moment (widened, updated in float, rounded to nearest even when stored;
/// ñ of this step from the unrounded m). v and D stay fp32 (ScaleByAdam's reason for v).
///
/// **Precheck** (rule.hpp; docs/optim.md "Prechecks instead of copies"): its failures are the
/// polar call's, which a finite input cannot cause where detail::polar_total_on_finite holds,
/// and a non-finite D ⊙ ñ, which bounded moments rule out. precheck() tests m against
/// moment_bound() and v against [0, FLT_MAX/2]; where precheck_covers() (e ≤ 0 and ε^e small
/// enough), a partition keeps no copy of the state (m, v and D: three floats per element).
struct MuAdamDirection {
  static constexpr const char* name = "muadam_direction";
  static constexpr bool may_fail = true;
  static constexpr bool device_capable = true;
  double b1 = 0.9, b2 = 0.999, eps = 1e-8, exponent = -0.25;
  PolarOptions polar{};
  StateStorage mu_storage = Precision::fp32;  ///< m's storage: fp32 or bf16 (above)

  struct State : detail::FirstMoment {  // m in its storage
    std::int64_t count = 0;
    Buffer nu, d;  // d: the preconditioner of the current step (scratch, also checkpointed)
    std::shared_ptr<Workspace> workspace = std::make_shared<Workspace>();
  };
  State init(const BlockShape& s) const {
    const auto n = static_cast<std::size_t>(s.size());
    State st;
    detail::init_first_moment(st, n, mu_storage);
    st.nu = Buffer(n, 0.0f);
    st.d = Buffer(n, 0.0f);
    st.workspace->reserve(polar_workspace_bytes(s.rows, s.cols, 1, polar, Precision::fp32));
    return st;
  }
  /// v holds g² in float (rule.hpp, kSquaredStateMaxGradient); D = (v̂ + ε)^e is computed in
  /// double and stays finite for any such v.
  double max_gradient() const { return kSquaredStateMaxGradient; }
  /// The largest entry of D = (v̂ + ε)^e over v̂ ≥ 0: ε^e (at v̂ = 0) when e ≤ 0, in double (100
  /// for the defaults, 10⁴ for SANIA's e = −1/2); +Inf when e > 0, where D grows with v̂.
  double max_preconditioner() const { return exponent <= 0.0 ? std::pow(eps, exponent) : HUGE_VAL; }
  /// The largest |m| and |g| for which step t (1-based) keeps the new m, ñ and D ⊙ ñ within half
  /// the float range: FLT_MAX/(2·K·max(1, D_max)), K = max(β₁ + w₁, (β₁/c₁)(β₁ + w₁) + w₁) the
  /// bound per unit of max(|m|, |g|) of |m'| and of |ñ|, with the floats precondition_element()
  /// uses, and D_max = max_preconditioner(). The factor 2 covers its roundings (a few in a row,
  /// each ≤ 1 + 2⁻²⁴), as TraceMomentum::overflow_bound's does; half the float range lies inside
  /// bf16's, so a stored bf16 m stays finite too. 1/c₁ falls with t, so step 1's bound is the
  /// smallest: 1.9e35 for the defaults (K = 9.1 at β₁ = 0.9, D_max = 100).
  double moment_bound(std::int64_t t) const {
    const Scalars c = scalars(t);
    const double b = c.b1, w = c.w1, k = std::max(b + w, double(c.b1_over_c1) * (b + w) + w);
    return double(std::numeric_limits<float>::max()) / (2.0 * k * std::max(1.0, max_preconditioner()));
  }
  /// update()'s failures before it runs, touching nothing (rule.hpp, precheck), for a gradient
  /// that passed the max_gradient() scan: invalid_argument for a state of another shape or
  /// storage; non_finite_input when some entry of m or v is NaN or Inf, or some v is negative (a
  /// corrupt checkpoint, as NamoStep's v); out_of_range when some |m| exceeds this step's
  /// moment_bound() or some v exceeds FLT_MAX/2 (then v's update could overflow). Conservative:
  /// only a diverged run or a corrupt checkpoint holds such entries. Where precheck_covers(), ok
  /// promises success and a finite u. Cost: one read of m and of v; on device memory with `flag`,
  /// two kernels not waited for (m's writes the flag, v's ORs into it).
  Status precheck(ConstBlock u, const State& s, ConstBlock, float* flag = nullptr) const {
    if (!sized(s, u)) return Status::invalid_argument;
    const Status m =
        detail::precheck_first_moment(s, u.memory, magnitude_bits(moment_bound(s.count + 1)), flag);
    const std::uint32_t v_bits = magnitude_bits(double(std::numeric_limits<float>::max()) / 2.0);
    const MatrixRef<const float> v(s.nu.data(), 1, u.size(), s.nu.memory());
    return detail::worse(m, detail::precheck_values(v, v_bits, true, flag));
  }
  /// precheck() tells every failure, and u stays finite, when the polar call cannot fail on a
  /// finite input (detail::polar_total_on_finite on the state's workspace), D ⊙ polar(…) cannot
  /// overflow (D_max times polar_iterate_bound() at most FLT_MAX/4; D_max is finite for e ≤ 0
  /// only) and step 1's moment_bound() admits every gradient max_gradient() lets through. The
  /// defaults and SANIA's e = −1/2 are covered; a partition then keeps no copy of the state.
  bool precheck_covers(const State& s, const BlockShape& shape, MemoryKind memory) const {
    return detail::polar_total_on_finite(polar, s.workspace.get(), shape, memory) &&
           max_preconditioner() * polar_iterate_bound(polar) <=
               double(std::numeric_limits<float>::max()) / 4.0 &&
           moment_bound(1) >= max_gradient();
  }
  /// update_bound (rule.hpp): D ⊙ polar(D ⊙ ñ), an entry of D times one of the polar factor:
  /// at most max_preconditioner()·polar_iterate_bound(), whatever the input (the defaults: 100 ×
  /// 1.2). +Inf for e > 0 and for dual-norm scaling, where precheck_covers() fails and the route
  /// keeps copies anyway.
  double update_bound(double, const BlockShape&) const {
    return polar.dual_norm_scale ? HUGE_VAL : max_preconditioner() * polar_iterate_bound(polar);
  }
  bool sized(const State& s, ConstBlock u) const {
    const auto n = static_cast<std::size_t>(u.size());
    return detail::first_moment_sized(s, n, mu_storage) && s.nu.size() == n && s.d.size() == n;
  }
  using Scalars = detail::MuAdamScalars;
  Scalars scalars(std::int64_t t) const {
    const double c1 = 1.0 - std::pow(b1, double(t)), c2 = 1.0 - std::pow(b2, double(t));
    return {float(b1),
            float(1.0 - b1),
            float(b2),
            float(1.0 - b2),
            float(b1 / c1),
            c2,
            eps,
            exponent,
            Bf16Store::of(mu_storage, t)};
  }
  /// One element of the preconditioning: m (float or bf16 storage, core/bf16.hpp), v updated,
  /// d ← (v/c2 + ε)^e in double, returns d·ñ with ñ from the unrounded m. The one formula of
  /// the host loop and the device kernel.
  template <class M, class H = Bf16Nearest>
  SCHATTEN_HOST_DEVICE static float precondition_element(float g, M& stored_m, float& v, float& d,
                                                         const Scalars& c, H how = {}) {
    v = c.b2 * v + c.w2 * g * g;
    const float m = c.b1 * load_state(stored_m) + c.w1 * g;
    store_state(stored_m, m, how);
    d = static_cast<float>(pow(double(v) / c.c2 + c.eps, c.exponent));  // ::pow: host and device
    const float nesterov_m = c.b1_over_c1 * m + c.w1 * g;
    return d * nesterov_m;
  }
  /// Before the polar factor: the moments and D of step count + 1, and u ← D ⊙ ñ.
  void precondition(Block u, State& s) const {
    const Scalars c = scalars(s.count + 1);
    float *x = u.data, *v = s.nu.data(), *d = s.d.data();
    detail::with_first_moment(s, [&](auto* m) {
      if (u.memory == MemoryKind::device) return device_kernels::muadam_precondition(x, m, v, d, u.size(), c);
      with_store(c.store, [&](auto h) {
        for (index_t k = 0, n = u.size(); k < n; ++k)
          x[k] = precondition_element(x[k], m[k], v[k], d[k], c, h);
      });
    });
  }
  /// After the polar factor: u ← D ⊙ u, and the step is counted.
  static void finish(Block u, State& s) {
    multiply(u, s.d.data());
    ++s.count;
  }
  Status update(Block u, State& s, ConstBlock) const {
    if (!sized(s, u)) return Status::invalid_argument;
    precondition(u, s);
    const PolarReport r = schatten::polar(MatrixRef<const float>(u), u, polar, s.workspace.get());
    if (r.status != Status::ok) return r.status;
    finish(u, s);
    return Status::ok;
  }
  /// Batched form (rule.hpp): the element-wise parts per block, one polar() call for the batch.
  std::size_t batch_workspace_bytes(const BlockShape& s, index_t batch) const {
    return polar_workspace_bytes(s.rows, s.cols, batch, polar, Precision::fp32);
  }
  Status update_batch(BatchedMatrixRef<float> u, StateList<State> states, ParamList, Workspace& ws) const {
    for (index_t b = 0; b < u.batch; ++b)
      if (!sized(states[b], block_of(u, b))) return Status::invalid_argument;
    for (index_t b = 0; b < u.batch; ++b)
      precondition(block_of(u, b), states[b]);
    const PolarReport r = schatten::polar(BatchedMatrixRef<const float>(u), u, polar, &ws);
    if (r.status != Status::ok) return r.status;
    for (index_t b = 0; b < u.batch; ++b)
      finish(block_of(u, b), states[b]);
    return Status::ok;
  }
  template <class F>
  friend void visit_workspaces(F& f, State& s) {
    f(s.workspace);
  }
  /// "mu" is m in its storage: checkpoints hold it as floats either way (io/checkpoint.hpp).
  template <class V>
  friend void visit_fields(V& v, State& s) {
    v("count", s.count);
    detail::visit_first_moment(v, s);
    v("nu", s.nu);
    v("d", s.d);
  }
  /// β₁, β₂ ∈ [0, 1); ε > 0 (D = (v̂ + ε)^e is infinite at v̂ = ε = 0 for e < 0); e finite;
  /// usable polar options; m's storage fp32 or bf16.
  const char* check() const noexcept {
    if (!hyper::decay_rate(b1)) return "muadam_direction: b1 must be in [0, 1)";
    if (!hyper::decay_rate(b2)) return "muadam_direction: b2 must be in [0, 1)";
    if (!hyper::positive(eps)) return "muadam_direction: eps must be finite and > 0";
    if (!std::isfinite(exponent)) return "muadam_direction: exponent must be finite";
    if (!hyper::state_storage(mu_storage))
      return "muadam_direction: mu_storage must be fp32 or bf16 (stochastic rounding needs bf16)";
    return check_polar_options(polar);
  }
  std::string config() const {
    Signature s(name);
    s.add("b1", b1).add("b2", b2).add("eps", eps).add("exponent", exponent).add("polar", polar_config(polar));
    return detail::add_first_moment_storage(s, mu_storage).str();
  }
};

namespace device_kernels {
/// NormalizeNeurons' first pass over the rows × cols block x, one team per row: each row's sum
/// of squares ss_i (double), NormalizeNeurons::update_moment(nu[i], ss_i, …, hold_zero_rows),
/// and the two sums Σ ss_i and Σ r_i²·ss_i returned in `before` and `after` (waits for the
/// result).
void neuron_moments(const float* x, float* nu, index_t rows, index_t cols, float w2, float eps,
                    bool hold_zero_rows, double& before, double& after);
/// Its second pass: x_ij ← x_ij · NormalizeNeurons::row_factor(nu[i], eps, g), one element per
/// thread.
void scale_neurons(float* x, const float* nu, index_t rows, index_t cols, float eps, double g);
}  // namespace device_kernels

/// NorMuon's neuron-wise normalisation (Li et al. 2025, "NorMuon: Making Muon more efficient and
/// scalable", arXiv 2510.05491; the reference normuon.py of zichongli5/NorMuon), placed after
/// the orthogonalisation. Per row i (an output neuron of a torch (out, in) weight; the flattened
/// matrix's rows for convs):
///   ν_i ← ν_i + (1 − β₂)(mean_j O_ij² − ν_i)        (torch's lerp_; ν starts at 0, no bias
///                                                   correction)
///   O_ij ← O_ij · 1/(√ν_i + ε)
/// then O ← O·‖O_before‖_F / (‖O‖_F + ε), which keeps the Frobenius norm of the orthogonalised
/// update (the reference's "keep the update norm the same as pre-normalization"). Defaults
/// β₂ = 0.95, ε = 1e-10 (the reference's). The row means and norms accumulate in double.
/// A zero update stays zero.
///
/// Two passes: the first reads each row once for its sum of squares ss_i, which gives the
/// moment, the row's reciprocal r_i = 1/(√ν_i + ε), ‖O_before‖² = Σ ss_i and ‖O‖² after the
/// row scaling = Σ r_i²·ss_i (in double: what summing the scaled floats' squares gives, up to
/// their rounding); the second multiplies row i by r_i·g, g = ‖O_before‖/(‖O‖ + ε), one float
/// rounding per element. The reference's five passes (norm, row sums, row scaling, norm,
/// scaling) give the same values up to float rounding (relative ~1e-7; tests/optim/
/// test_presets.cpp checks the reference in double). Cost: one read and one read-write of the
/// block, one float per row of state; on the device one team per row, then one thread per
/// element, and one wait for the two sums.
struct NormalizeNeurons {
  static constexpr const char* name = "normalize_neurons";
  static constexpr bool device_capable = true;
  double beta2 = 0.95;
  double eps = 1e-10;
  /// Rows of u that are entirely zero keep their moment instead of decaying it toward 0: after
  /// Dion2Direction{Slices::rows} the zero rows are the ones not selected, and NorDion2 moves
  /// only the selected rows' moments. (A zero row's output is zero either way.)
  bool hold_zero_rows = false;

  struct State {
    std::int64_t count = 0;
    Buffer nu;  ///< one second moment per row
  };
  State init(const BlockShape& s) const { return State{0, Buffer(static_cast<std::size_t>(s.rows), 0.0f)}; }
  /// The row moment from the row's sum of squares ss over `cols` entries: nu updated with weight
  /// w2 = float(1 − β₂) toward the float mean ss/cols (torch's lerp_), except for a zero row
  /// when `hold` (hold_zero_rows); returns the row's reciprocal 1/(√nu + eps). The one formula
  /// of the host loop and the device kernel. [P] A mean beyond FLT_MAX (entries above about
  /// 1.8e19) counts as FLT_MAX, so that nu, a convex combination of such means, stays finite:
  /// the float mean was ∞, and the next step's nu + w2·(mean − ∞) NaN, with ok (Finding 126).
  /// Such a row is then scaled by 1/√FLT_MAX ≈ 5.4e-20 instead of 1/√mean; after the norm
  /// restoration the block's Frobenius norm is at most the input's, as for any other input.
  SCHATTEN_HOST_DEVICE static float update_moment(float& nu, double ss, index_t cols, float w2, float eps,
                                                  bool hold) {
    if (!(hold && ss == 0.0)) {
      const double q = ss / double(cols), top = 3.4028234663852886e38;
      const float mean = static_cast<float>(q < top ? q : top);
      nu = nu + w2 * (mean - nu);
    }
    return reciprocal(nu, eps);
  }
  /// Row i's part of ‖O‖² after the row scaling, r_i²·ss_i (its reciprocal r_i, its sum of
  /// squares ss_i): the host loop's and the device kernel's one expression.
  SCHATTEN_HOST_DEVICE static double scaled_square(double r, double ss) { return r * r * ss; }
  /// 1/(√nu + eps) in float, as the reference multiplies by it.
  SCHATTEN_HOST_DEVICE static float reciprocal(float nu, float eps) { return 1.0f / (std::sqrt(nu) + eps); }
  /// The second pass's factor of a row with moment nu: its reciprocal times the norm-restoring g.
  SCHATTEN_HOST_DEVICE static float row_factor(float nu, float eps, double g) {
    return static_cast<float>(double(reciprocal(nu, eps)) * g);
  }
  /// update_bound (rule.hpp): the output's Frobenius norm is at most the input's (‖O_before‖ ×
  /// ‖O‖/(‖O‖ + ε)), so an entry is at most √(rc)·in.
  double update_bound(double in, const BlockShape& s) const { return in * std::sqrt(double(s.size())); }
  Status update(Block u, State& s, ConstBlock) const {
    if (s.nu.size() != static_cast<std::size_t>(u.rows)) return Status::invalid_argument;  // other shape
    if (u.empty()) return Status::ok;
    const float w2 = static_cast<float>(1.0 - beta2), feps = static_cast<float>(eps);
    float* nu = s.nu.data();
    double before = 0.0, after = 0.0;  // ‖O‖² before and after the row scaling
    if (u.memory == MemoryKind::device) {
      device_kernels::neuron_moments(u.data, nu, u.rows, u.cols, w2, feps, hold_zero_rows, before, after);
    } else {
      for (index_t i = 0; i < u.rows; ++i) {
        const float* x = u.data + i * u.cols;
        double ss = 0.0;
        for (index_t j = 0; j < u.cols; ++j)
          ss += double(x[j]) * double(x[j]);
        const double r = update_moment(nu[i], ss, u.cols, w2, feps, hold_zero_rows);
        before += ss;
        after += scaled_square(r, ss);
      }
    }
    const double g = std::sqrt(before) / (std::sqrt(after) + eps);
    if (u.memory == MemoryKind::device) {
      device_kernels::scale_neurons(u.data, nu, u.rows, u.cols, feps, g);
    } else {
      for (index_t i = 0; i < u.rows; ++i) {
        const float f = row_factor(nu[i], feps, g);
        float* x = u.data + i * u.cols;
        for (index_t j = 0; j < u.cols; ++j)
          x[j] *= f;
      }
    }
    ++s.count;
    return Status::ok;
  }
  template <class V>
  friend void visit_fields(V& v, State& s) {
    v("count", s.count);
    v("nu", s.nu);
  }
  /// β₂ ∈ [0, 1); ε > 0 also in float (a zero row divides by √ν + ε), and at least 1/FLT_MAX, so
  /// that the reciprocal 1/(√ν + ε) of a row with ν = 0 is a float (below, it was ∞ and the
  /// output NaN with ok: a fuzzer, 2026-12-07).
  const char* check() const noexcept {
    if (!hyper::decay_rate(beta2)) return "normalize_neurons: beta2 must be in [0, 1)";
    if (!hyper::positive_float(eps)) return "normalize_neurons: eps must be finite and > 0 (in float)";
    if (!hyper::float_finite(1.0 / eps)) return "normalize_neurons: eps must be at least 1/FLT_MAX (2.9e-39)";
    return nullptr;
  }
  /// hold_zero_rows only when set, so that NorMuon's signatures stay as they were.
  std::string config() const {
    Signature sig(name);
    sig.add("beta2", beta2).add("eps", eps);
    if (hold_zero_rows) sig.add("hold_zero_rows", true);
    return sig.str();
  }
};

/// u ← R·u/‖u‖_F, the update rescaled to Frobenius norm R = `radius`; a numerical zero
/// (‖u‖_F < eps) becomes exact zero, having no direction. Emerging-Optimizers' HyperballHook
/// (weight_update_hooks/hyperball.py) before the learning rate; ScaleToNormWeights (below) is
/// its projection of the weights. The norm accumulates in double (the reference's in float).
/// Cost: one read and one read-write of the block.
struct ScaleToNorm {
  static constexpr const char* name = "scale_to_norm";
  static constexpr bool device_capable = true;
  double radius = 1.0;
  double eps = 1e-15;
  struct State {};
  State init(const BlockShape&) const { return {}; }
  Status update(Block u, State&, ConstBlock) const {
    const double norm = std::sqrt(squared_norm(u));
    scale(u, norm < eps ? 0.0f : static_cast<float>(radius / norm));
    return Status::ok;
  }
  /// update_bound (rule.hpp): an entry of a block of Frobenius norm R is at most R.
  double update_bound(double, const BlockShape&) const { return radius; }
  template <class V>
  friend void visit_fields(V&, State&) {}
  /// eps finite and > 0, radius finite and ≥ eps (the reference's checks), both floats; and
  /// radius/eps a float, the largest factor update() may apply (R ≤ 3.4e23 with ε = 1e-15).
  const char* check() const noexcept {
    if (!hyper::positive_float(eps)) return "scale_to_norm: eps must be finite and > 0 (in float)";
    if (!(hyper::positive_float(radius) && radius >= eps))
      return "scale_to_norm: radius must be finite and at least eps (in float)";
    if (!hyper::float_finite(radius / eps))
      return "scale_to_norm: radius/eps must be finite in float (the largest rescaling)";
    return nullptr;
  }
  std::string config() const { return Signature(name).add("radius", radius).add("eps", eps).str(); }
};

/// The weights rescaled to Frobenius norm R after every step, W ← R·(W + u)/‖W + u‖_F (last in
/// a chain; OnWeights): Emerging-Optimizers' HyperballHook's projection onto the sphere of
/// radius R (MuonHyperball). A zero W + u stays zero.
struct ScaleToNormWeights : OnWeights<ScaleToNorm> {
  static constexpr const char* name = "scale_to_norm_weights";
  std::string config() const { return Signature(name).add("radius", radius).add("eps", eps).str(); }
};

/// ‖W_d‖_F for W_d = (1 − lr_t·wd)·W: the weights' norm as Emerging-Optimizers' weight-update
/// hooks read it, after the decoupled decay that EO applies before them (RelativeUpdate,
/// RadialBrake). In double; one read of W.
inline double eo_decayed_norm(const Schedule& lr, double weight_decay, std::int64_t t, ConstBlock w) {
  return std::fabs(1.0 - lr(t) * weight_decay) * std::sqrt(squared_norm(w));
}

/// Emerging-Optimizers' RelativeUpdateHook (weight_update_hooks/relative_update.py): the update
/// rescaled to the Frobenius norm of the weights it is added to, so that the learning rate is
/// the step's size relative to the weights,
///   u ← (‖W_d‖_F / ‖u‖_F)·u,   W_d = (1 − lr_t·wd)·W,
/// and u ← 0 when ‖W_d‖ or ‖u‖ is below eps (a numerical zero). EO decays the weights before its
/// hook runs, so the norm is the decayed weights': give the rule the lr schedule and weight decay
/// of the chain's AddDecayedWeights and ScaleByLearningRate, and put it where EO's hook sees the
/// update, after the orthogonalisation and before those two:
///   chain(TraceMomentum{…}, Orthogonalize{…}, RelativeUpdate{eps, lr, wd}, AddDecayedWeights{wd},
///         ScaleByLearningRate{lr})
/// is EO's W ← (1 − lr·wd)·W − lr·(‖W_d‖/‖O‖)·O (tested against it in double). Norms in double
/// (EO's in float). Cost: a read of W, a read and a read-write of u. State: the step count (lr_t).
/// A factor beyond float (‖W_d‖/‖u‖ > FLT_MAX, with ‖u‖ ≥ eps) is applied in two passes (scale_by).
struct RelativeUpdate {
  static constexpr const char* name = "relative_update";
  static constexpr bool device_capable = true;  // rule.hpp helpers
  double eps = 1e-15;
  Schedule lr = Schedule::constant(0.0);  ///< with weight_decay: the decay EO applies before the hook
  double weight_decay = 0.0;

  struct State {
    std::int64_t count = 0;
  };
  State init(const BlockShape&) const { return {}; }
  Status update(Block u, State& s, ConstBlock w) const {
    const double wn = eo_decayed_norm(lr, weight_decay, s.count, w), un = std::sqrt(squared_norm(u));
    ++s.count;
    if (wn < eps || un < eps) {
      scale(u, 0.0f);
      return Status::ok;
    }
    scale_by(u, wn / un);  // ≤ FLT_MAX·√n/eps: beyond float, it takes two passes
    return Status::ok;
  }
  /// update_bound (rule.hpp): u rescaled to ‖W_d‖_F ≤ |1 − lr_t·λ|·√(rc)·kUnguardedParameter,
  /// so an entry is at most max(1, lr_max·λ)·√(rc)·kUnguardedParameter: beyond FLT_MAX −
  /// kUnguardedParameter for every block of 9 or more entries, since weights of 8.5e37 really
  /// give such an update. A partition keeps copies of this route's states.
  double update_bound(double, const BlockShape& s) const {
    return std::max(1.0, lr.max_value() * weight_decay) * std::sqrt(double(s.size())) * kUnguardedParameter;
  }
  template <class V>
  friend void visit_fields(V& v, State& s) {
    v("count", s.count);
  }
  /// Schedule::check's refusals, naming this rule.
  static constexpr const char* kScheduleRefusals[2] = {
      "relative_update: lr schedule: the peak and final learning rates must be finite and >= 0",
      "relative_update: lr schedule: warmup and total must be >= 0 steps"};
  /// eps finite and > 0 in float (the reference's), weight_decay finite and ≥ 0, a usable lr.
  const char* check() const noexcept {
    if (!hyper::positive_float(eps)) return "relative_update: eps must be finite and > 0 (in float)";
    if (!hyper::non_negative(weight_decay)) return "relative_update: weight_decay must be finite and >= 0";
    return lr.check(kScheduleRefusals);
  }
  std::string config() const {
    return Signature(name).add("eps", eps).add("lr", lr.config()).add("weight_decay", weight_decay).str();
  }
};

/// Emerging-Optimizers' RadialBrakeHook (weight_update_hooks/radial_brake.py): after the step,
/// the weights keep only a fraction of the change of their norm,
///   ‖W_new‖ = ‖W_d‖ + s·(‖W + u‖ − ‖W_d‖),   W_new = W + u rescaled to that norm,
/// with s = `outward` when the norm grew by at least eps, `inward` when it shrank by at least
/// eps, 0 otherwise; norms below eps count as 0, and W + u below eps gives W_new = 0. W_d =
/// (1 − lr_t·wd)·W is what EO measures before the step (its decay runs first): give the rule the
/// chain's lr schedule and weight decay, and put it last (after ScaleByLearningRate), where it
/// sets u ← W_new − W (OnWeights' convention: within 2 ulp of W_new after apply_updates). With
/// the defaults (the reference's: outward 0.5, inward 1) steps that grow the weights go half as
/// far radially, and shrinking ones are kept. Norms in double (EO's in float). Cost: two reads
/// of W, a read and two read-writes of u. State: the step count. A factor beyond float
/// (possible only when ‖W + u‖ is within a float's range of eps and ‖W_d‖ is huge) is
/// out_of_range, and the chain restores everything.
struct RadialBrake {
  static constexpr const char* name = "radial_brake";
  static constexpr bool may_fail = true;        // a factor beyond float (above)
  static constexpr bool goes_last = true;       // chain.hpp, rule_goes_last
  static constexpr bool device_capable = true;  // rule.hpp helpers
  double outward = 0.5;
  double inward = 1.0;
  double eps = 1e-15;
  Schedule lr = Schedule::constant(0.0);  ///< with weight_decay: the decay EO applies before the step
  double weight_decay = 0.0;

  struct State {
    std::int64_t count = 0;
  };
  State init(const BlockShape&) const { return {}; }
  Status update(Block u, State& s, ConstBlock w) const {
    double pre = eo_decayed_norm(lr, weight_decay, s.count, w);
    if (pre < eps) pre = 0.0;
    add_scaled(u, w, 1.0f);  // u = W + u, the weights the step gives
    double post = std::sqrt(squared_norm(u));
    if (post < eps) post = 0.0;
    const double delta = post - pre;
    const double fraction = delta >= eps ? outward : delta <= -eps ? inward : 0.0;
    const double f = post < eps ? 0.0 : (pre + fraction * delta) / std::max(post, eps);
    if (!hyper::float_finite(f)) return Status::out_of_range;  // the chain restores u
    scale(u, static_cast<float>(f));
    add_scaled(u, w, -1.0f);
    ++s.count;
    return Status::ok;
  }
  template <class V>
  friend void visit_fields(V& v, State& s) {
    v("count", s.count);
  }
  /// Schedule::check's refusals, naming this rule.
  static constexpr const char* kScheduleRefusals[2] = {
      "radial_brake: lr schedule: the peak and final learning rates must be finite and >= 0",
      "radial_brake: lr schedule: warmup and total must be >= 0 steps"};
  /// outward and inward in [0, 1], eps finite and > 0 in float (the reference's checks),
  /// weight_decay finite and ≥ 0, a usable lr.
  const char* check() const noexcept {
    if (!(outward >= 0.0 && outward <= 1.0)) return "radial_brake: outward must be in [0, 1]";
    if (!(inward >= 0.0 && inward <= 1.0)) return "radial_brake: inward must be in [0, 1]";
    if (!hyper::positive_float(eps)) return "radial_brake: eps must be finite and > 0 (in float)";
    if (!hyper::non_negative(weight_decay)) return "radial_brake: weight_decay must be finite and >= 0";
    return lr.check(kScheduleRefusals);
  }
  std::string config() const {
    return Signature(name)
        .add("outward", outward)
        .add("inward", inward)
        .add("eps", eps)
        .add("lr", lr.config())
        .add("weight_decay", weight_decay)
        .str();
  }
};

/// Clips the block's update to Frobenius norm ≤ max_norm (per parameter block; a zero or
/// in-range update is unchanged).
struct ClipByNorm {
  static constexpr const char* name = "clip_by_norm";
  static constexpr bool device_capable = true;
  double max_norm = 1.0;
  struct State {};
  State init(const BlockShape&) const { return {}; }
  Status update(Block u, State&, ConstBlock) const {
    const double norm = std::sqrt(squared_norm(u));
    if (norm > max_norm) scale(u, static_cast<float>(max_norm / norm));
    return Status::ok;
  }
  /// update_bound (rule.hpp): the input's, or an entry of a block of norm max_norm.
  double update_bound(double in, const BlockShape&) const { return std::min(in, max_norm); }
  template <class V>
  friend void visit_fields(V&, State&) {}
  /// max_norm finite and > 0 (0 would zero every update).
  const char* check() const noexcept {
    return hyper::positive(max_norm) ? nullptr : "clip_by_norm: max_norm must be finite and > 0";
  }
  std::string config() const { return Signature(name).add("max_norm", max_norm).str(); }
};

// ---------------------------------------------------------------------------------------------
// Scaling

/// Multiplies the update by a factor of the block's shape r × c (rows = outputs, cols = inputs,
/// PyTorch's layout; the 2-D flattened shape for conv weights, [P]) times `extra`:
///   keller         √max(1, r/c)   update RMS 1/√c for a full-rank polar factor (algorithms.md
///                                 §1.3; Megatron-Core and Emerging-Optimizers' "shape_scaling")
///   moonlight      0.2·√max(r, c) update RMS 0.2, AdamW-like (§1.3; EO's "align_adamw_rms")
///   spectral       √max(r, c)     update RMS 1 (Megatron-Core / EO / Transformer Engine's default
///                                 "spectral" mode, which they multiply by an extra factor:
///                                 spectral with extra = 0.2 is moonlight)
///   unit_rms_norm  √(r/c)         u's RMS→RMS operator norm √(c/r)·‖u‖₂ is 1 for a polar factor
///                                 (Bernstein's modular norm; Scion, Dion; EO's "unit_rms_norm";
///                                 torch.optim.Muon's "spectral_unclamped")
///   none           1
/// keller and unit_rms_norm depend on which side is the output: a parameter stored (in, out)
/// (GPT-2's Conv1D, optax's layout) gets the factor of its transpose. The update RMS of a
/// full-rank polar factor is 1/√max(r, c) (‖U Vᵀ‖_F² = min(r, c)); the factors above multiply it.
/// [P] spectral and unit_rms_norm are not in algorithms.md: their formulas are those of the
/// anchors' get_muon_scale_factor (anchors.md b2 "Update scale"), docs/optim.md.
struct ScaleByShape {
  static constexpr const char* name = "scale_by_shape";
  static constexpr bool device_capable = true;
  enum class Rule { keller, moonlight, none, spectral, unit_rms_norm };
  /// Every rule, in the enum's order (check() and schatten-replay's `shape=` list).
  static constexpr Rule kRules[] = {Rule::keller, Rule::moonlight, Rule::none, Rule::spectral,
                                    Rule::unit_rms_norm};
  Rule rule = Rule::keller;
  double extra = 1.0;  ///< multiplies the rule's factor (EO/Megatron's extra_scale_factor); > 0

  /// A rule, optionally with an extra factor; converts from a Rule, so that an options struct's
  /// `shape = ScaleByShape::Rule::moonlight` keeps working.
  constexpr ScaleByShape(Rule r = Rule::keller, double extra_factor = 1.0) : rule(r), extra(extra_factor) {}

  /// The rule's factor for an r × c block, without `extra`.
  static double factor(Rule rule, index_t rows, index_t cols) {
    const double r = double(rows), c = double(cols);
    switch (rule) {
      case Rule::keller:
        return std::sqrt(std::max(1.0, r / c));
      case Rule::moonlight:
        return 0.2 * std::sqrt(std::max(r, c));
      case Rule::spectral:
        return std::sqrt(std::max(r, c));
      case Rule::unit_rms_norm:
        return std::sqrt(r / c);
      case Rule::none:
        break;
    }
    return 1.0;
  }
  /// The whole multiplier: factor(rule, rows, cols)·extra.
  double multiplier(index_t rows, index_t cols) const { return factor(rule, rows, cols) * extra; }
  /// The rule's name as config() writes it ("keller", …).
  static const char* rule_name(Rule r) {
    switch (r) {
      case Rule::keller:
        return "keller";
      case Rule::moonlight:
        return "moonlight";
      case Rule::spectral:
        return "spectral";
      case Rule::unit_rms_norm:
        return "unit_rms_norm";
      case Rule::none:
        break;
    }
    return "none";
  }
  struct State {};
  State init(const BlockShape&) const { return {}; }
  Status update(Block u, State&, ConstBlock) const {
    if (u.empty()) return Status::ok;  // unit_rms_norm's r/c is 0/0 for a block with no columns
    // scale_by: extra·factor may lie beyond float (extra up to FLT_MAX; the float factor was ∞,
    // and u·∞ stored with ok where the bound below was finite: a fuzzer, 2026-12-07); within
    // float it is the one product, as before.
    scale_by(u, multiplier(u.rows, u.cols));
    return Status::ok;
  }
  /// update_bound (rule.hpp): in·multiplier(r, c) (0 for an empty block).
  double update_bound(double in, const BlockShape& s) const {
    return s.size() == 0 ? 0.0 : in * multiplier(s.rows, s.cols);
  }
  template <class V>
  friend void visit_fields(V&, State&) {}
  /// A known rule; extra finite and > 0.
  const char* check() const noexcept {
    if (std::find(std::begin(kRules), std::end(kRules), rule) == std::end(kRules))
      return "scale_by_shape: unknown rule";
    return hyper::positive(extra) ? nullptr : "scale_by_shape: extra must be finite and > 0";
  }
  /// "scale_by_shape(rule=keller)"; ",extra=…" only when extra ≠ 1, so that the signatures (and
  /// the checkpoints) of the rules that existed before `extra` are unchanged.
  std::string config() const {
    Signature sig(name);
    sig.add("rule", rule_name(rule));
    if (extra != 1.0) sig.add("extra", extra);
    return sig.str();
  }
};

/// Rescales the update to ‖u‖_F = √min(r, c), the Frobenius norm of a full-rank polar factor
/// (Freon's magnitude rule [P], algorithms.md §6). A zero update stays zero.
struct ScaleToPolarNorm {
  static constexpr const char* name = "scale_to_polar_norm";
  static constexpr bool device_capable = true;
  struct State {};
  State init(const BlockShape&) const { return {}; }
  Status update(Block u, State&, ConstBlock) const {
    const double ss = squared_norm(u);
    // A block of denormals has ss down to 2e-90: the factor then exceeds float (scale_by).
    if (ss > 0.0) scale_by(u, std::sqrt(double(std::min(u.rows, u.cols)) / ss));
    return Status::ok;
  }
  /// update_bound (rule.hpp): an entry of a block of Frobenius norm √min(r, c) is at most that.
  double update_bound(double, const BlockShape& s) const {
    return std::sqrt(double(std::min(s.rows, s.cols)));
  }
  template <class V>
  friend void visit_fields(V&, State&) {}
  std::string config() const { return Signature(name).str(); }
};

// ---------------------------------------------------------------------------------------------
// AdaMuon's rules (Si, Zhang, Shen 2025, "AdaMuon: Adaptive Muon Optimizer", arXiv 2507.11005;
// the reference gpt2/models/optimizers/adamuon.py of Chongjie-Si/AdaMuon)

namespace device_kernels {
/// x[k] ← SignTransform::step(x[k]).
void sign(float* x, index_t n);
/// x[k] ← ScaleBySecondMoment::step(x[k], v[k], beta, w, eps).
void second_moment(float* x, float* v, index_t n, float beta, float w, float eps);
}  // namespace device_kernels

/// u ← sign(u) element by element, sign(0) = 0 (torch.sign): AdaMuon's sign stabilisation, which
/// orthogonalises the sign pattern of the momentum instead of the momentum itself. Stateless.
struct SignTransform {
  static constexpr const char* name = "sign";
  static constexpr bool row_local = true;  // chain.hpp: each element alone
  static constexpr bool device_capable = true;
  struct State {};
  State init(const BlockShape&) const { return {}; }
  /// Every output is −1, 0 or 1 (rule.hpp, total_on_finite).
  bool total_on_finite(const State&, const BlockShape&, MemoryKind) const { return true; }
  /// update_bound (rule.hpp): 1.
  double update_bound(double, const BlockShape&) const { return 1.0; }
  SCHATTEN_HOST_DEVICE static float step(float x) { return x > 0.0f ? 1.0f : x < 0.0f ? -1.0f : 0.0f; }
  Status update(Block u, State&, ConstBlock) const {
    if (u.memory == MemoryKind::device) {
      device_kernels::sign(u.data, u.size());
      return Status::ok;
    }
    for (index_t k = 0, n = u.size(); k < n; ++k)
      u.data[k] = step(u.data[k]);
    return Status::ok;
  }
  template <class V>
  friend void visit_fields(V&, State&) {}
  std::string config() const { return Signature(name).str(); }
};

/// AdaMuon's element-wise second moment of the (orthogonalised) update:
///   v ← β v + (1 − β) u²,   u ← u/(√v + ε),
/// v starting at zero, without bias correction (as the reference: β = its momentum 0.95,
/// ε = 1e-8). 1 − β is computed in double and rounded to float, as torch's Python-float
/// `1 - momentum`. One float of state per element; v holds u² in float, so |u| ≤ 2^63
/// (kSquaredStateMaxGradient; behind Orthogonalize |u| ≤ ~1.2 anyway).
struct ScaleBySecondMoment {
  static constexpr const char* name = "scale_by_second_moment";
  static constexpr bool row_local = true;  // chain.hpp: each element alone
  static constexpr bool device_capable = true;
  double beta = 0.95;
  double eps = 1e-8;

  struct State {
    std::int64_t count = 0;
    Buffer nu;
  };
  State init(const BlockShape& s) const { return State{0, Buffer(static_cast<std::size_t>(s.size()), 0.0f)}; }
  double max_gradient() const { return kSquaredStateMaxGradient; }
  /// One element: v updated (torch's mul_(β).addcmul_(u, u, value=1 − β)), returns u/(√v + ε).
  /// The one formula of the host loop and the device kernel.
  SCHATTEN_HOST_DEVICE static float step(float u, float& v, float beta, float w, float eps) {
    v = v * beta + w * (u * u);
    return u / (std::sqrt(v) + eps);
  }
  /// update_bound (rule.hpp): v ≥ w·u² after the update (w = float(1 − β); v ≥ 0 as this rule
  /// writes it), so the output is at most 1/√w, up to roundings, wherever w·u² is a normal float:
  /// |u| ≥ t = √(4·FLT_MIN/w). Below t, v may hold nothing of u (an underflow) and the output is
  /// at most |u|/ε ≤ min(in, t)/ε. +Inf for inputs beyond max_gradient(), where u² is not a
  /// float. AdaMuon's defaults (β = 0.95, ε = 1e-8): 4.47.
  double update_bound(double in, const BlockShape&) const {
    if (!(in <= kSquaredStateMaxGradient)) return HUGE_VAL;
    const double w = double(static_cast<float>(1.0 - beta)), e = double(static_cast<float>(eps));
    const double t = std::sqrt(4.0 * double(std::numeric_limits<float>::min()) / w);
    return std::max((1.0 + 0x1p-20) / std::sqrt(w), std::min(in, t) / e);
  }
  Status update(Block u, State& s, ConstBlock) const {
    if (s.nu.size() != static_cast<std::size_t>(u.size())) return Status::invalid_argument;  // other shape
    const float b = static_cast<float>(beta), w = static_cast<float>(1.0 - beta), e = static_cast<float>(eps);
    if (u.memory == MemoryKind::device) {
      device_kernels::second_moment(u.data, s.nu.data(), u.size(), b, w, e);
    } else {
      float* v = s.nu.data();
      for (index_t k = 0, n = u.size(); k < n; ++k)
        u.data[k] = step(u.data[k], v[k], b, w, e);
    }
    ++s.count;
    return Status::ok;
  }
  template <class V>
  friend void visit_fields(V& v, State& s) {
    v("count", s.count);
    v("nu", s.nu);
  }
  /// β ∈ [0, 1); ε > 0 also in float (a zero element divides by √v + ε).
  const char* check() const noexcept {
    if (!hyper::decay_rate(beta)) return "scale_by_second_moment: beta must be in [0, 1)";
    if (!hyper::positive_float(eps)) return "scale_by_second_moment: eps must be finite and > 0 (in float)";
    return nullptr;
  }
  std::string config() const { return Signature(name).add("beta", beta).add("eps", eps).str(); }
};

/// u ← u · rms·√(r c)/(‖u‖_F + ε) per block: the update's root-mean-square set to `rms` (AdaMuon's
/// "RMS-aligned rescaling", 0.2 to match AdamW's typical update RMS, ε = 1e-8, as the reference;
/// the same target as ScaleByShape::moonlight for an exact polar factor, but measured on the
/// block itself). The norm accumulates in double; a zero block stays zero. Stateless.
struct ScaleToRms {
  static constexpr const char* name = "scale_to_rms";
  static constexpr bool device_capable = true;
  double rms = 0.2;
  double eps = 1e-8;
  struct State {};
  State init(const BlockShape&) const { return {}; }
  /// The factor rms·√(rc)/(‖u‖_F + ε) may lie beyond float (rms·√(rc)/ε > FLT_MAX, a tiny block):
  /// then u/‖u‖_F and rms·√(rc)·‖u‖_F/(‖u‖_F + ε) are applied one after the other (scale_by),
  /// each within float's reach; a zero block stays zero. Before (found by a fuzzer, 2026-12-07)
  /// the float factor was ∞ there, and a zero block became 0·∞ = NaN with ok (adamuon with rms
  /// 1e31 and a zero first gradient). Within float the one product is as before, bit for bit.
  Status update(Block u, State&, ConstBlock) const {
    const double norm = std::sqrt(squared_norm(u));
    if (norm == 0.0) return Status::ok;
    const double target = rms * std::sqrt(double(u.rows) * double(u.cols)), f = target / (norm + eps);
    if (f <= 3.4028234663852886e38) {
      scale_by(u, f);
    } else {
      scale_by(u, 1.0 / norm);
      scale_by(u, target * (norm / (norm + eps)));
    }
    return Status::ok;
  }
  /// update_bound (rule.hpp): |u_ij|·rms·√(rc)/(‖u‖_F + ε) with |u_ij| ≤ min(‖u‖_F, in): at most
  /// rms·√(rc)·min(1, in/ε).
  double update_bound(double in, const BlockShape& s) const {
    return rms * std::sqrt(double(s.size())) * std::min(1.0, in / eps);
  }
  template <class V>
  friend void visit_fields(V&, State&) {}
  /// rms finite and ≥ 0; ε finite and > 0 (a zero block divides by ε).
  const char* check() const noexcept {
    if (!hyper::non_negative(rms)) return "scale_to_rms: rms must be finite and >= 0";
    if (!hyper::positive(eps)) return "scale_to_rms: eps must be finite and > 0";
    return nullptr;
  }
  std::string config() const { return Signature(name).add("rms", rms).add("eps", eps).str(); }
};

// ---------------------------------------------------------------------------------------------
// Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms", arXiv 2302.06675)

namespace device_kernels {
/// x[k] ← ScaleByLion::stored_step(x[k], m[k], w1, w2, how); m in float or bf16 storage.
void lion(float* x, float* m, index_t n, float w1, float w2, Bf16Store how);
void lion(float* x, std::uint16_t* m, index_t n, float w1, float w2, Bf16Store how);
}  // namespace device_kernels

/// Lion's direction, element by element:
///   u ← sign(m + (1 − β₁)(g − m)),   m ← m + (1 − β₂)(g − m),
/// the interpolations of torch.lerp as microsoft/dion's `lion_update` and lion-pytorch write them
/// (optax.scale_by_lion is the same map), sign(0) = 0, m starting at zero. 1 − β is computed in
/// double and rounded to float, as the other rules. One float of state per element. Gradients
/// are limited to 2^126 ≈ 8.5e37: m is a convex combination of earlier gradients, so |g − m| ≤
/// 2^127 stays a float and the state never becomes infinite (at 2^127 each, g − m could round to
/// +Inf and poison m for good).
///
/// `mu_storage` [P] (docs/optim.md "State precision"; optax.lion's `mu_dtype`): m in fp32
/// (default) or bf16, as TraceMomentum's buffer (widened, updated in float, rounded to nearest
/// even when stored; this step's sign from the unrounded m). An increment (1 − β₂)(g − m)
/// smaller than half a bf16 unit of m is lost: at β₂ = 0.99 that is |g − m| < 0.2·|m|, so the
/// buffer can lag the exact EMA by up to 2⁻⁸/(1 − β₂) = 39 % of |m| where g stays that close to
/// m; the update, a sign, changes only where the interpolation is that close to 0.
struct ScaleByLion {
  static constexpr const char* name = "scale_by_lion";
  static constexpr bool row_local = true;  // chain.hpp: each element alone
  static constexpr bool device_capable = true;
  double b1 = 0.9, b2 = 0.99;
  StateStorage mu_storage = Precision::fp32;  ///< m's storage: fp32 or bf16 (above)

  struct State : detail::FirstMoment {  // m in its storage
    std::int64_t count = 0;
  };
  State init(const BlockShape& s) const {
    State st;
    detail::init_first_moment(st, static_cast<std::size_t>(s.size()), mu_storage);
    return st;
  }
  /// 2^126 in either storage: it keeps |g − m| a float, and a bf16 m (rounded convex combinations
  /// of gradients) stays within it, far below kBf16Max.
  double max_gradient() const { return 8.507059173023462e37; }  // 2^126
  /// update_bound (rule.hpp): a sign, 1.
  double update_bound(double, const BlockShape&) const { return 1.0; }
  /// One element: m updated, returns the sign of the β₁ interpolation. The one formula of the host
  /// loop and the device kernel.
  SCHATTEN_HOST_DEVICE static float step(float g, float& m, float w1, float w2) {
    const float c = m + w1 * (g - m);
    m = m + w2 * (g - m);
    return SignTransform::step(c);
  }
  /// step() on a stored m (float, or bf16 widened and rounded back: core/bf16.hpp).
  template <class M, class H = Bf16Nearest>
  SCHATTEN_HOST_DEVICE static float stored_step(float g, M& stored, float w1, float w2, H how = {}) {
    float m = load_state(stored);
    const float out = step(g, m, w1, w2);
    store_state(stored, m, how);
    return out;
  }
  Status update(Block u, State& s, ConstBlock) const {
    if (!detail::first_moment_sized(s, static_cast<std::size_t>(u.size()), mu_storage))
      return Status::invalid_argument;  // another shape or storage
    const float w1 = static_cast<float>(1.0 - b1), w2 = static_cast<float>(1.0 - b2);
    const Bf16Store how = detail::first_moment_store(s, s.count + 1);
    detail::with_first_moment(s, [&](auto* m) {
      if (u.memory == MemoryKind::device) return device_kernels::lion(u.data, m, u.size(), w1, w2, how);
      with_store(how, [&](auto h) {
        for (index_t k = 0, n = u.size(); k < n; ++k)
          u.data[k] = stored_step(u.data[k], m[k], w1, w2, h);
      });
    });
    ++s.count;
    return Status::ok;
  }
  /// "mu" is m in its storage: checkpoints hold it as floats either way (io/checkpoint.hpp).
  template <class V>
  friend void visit_fields(V& v, State& s) {
    v("count", s.count);
    detail::visit_first_moment(v, s);
  }
  /// β₁, β₂ ∈ [0, 1): β₁ = 1 would ignore every gradient, β₂ = 1 freeze m at zero; m's storage
  /// fp32 or bf16.
  const char* check() const noexcept {
    if (!hyper::decay_rate(b1)) return "scale_by_lion: b1 must be in [0, 1)";
    if (!hyper::decay_rate(b2)) return "scale_by_lion: b2 must be in [0, 1)";
    if (!hyper::state_storage(mu_storage))
      return "scale_by_lion: mu_storage must be fp32 or bf16 (stochastic rounding needs bf16)";
    return nullptr;
  }
  std::string config() const {
    Signature s(name);
    s.add("b1", b1).add("b2", b2);
    return detail::add_first_moment_storage(s, mu_storage).str();
  }
};

// ---------------------------------------------------------------------------------------------
// Weight decay

/// Weight decay, applied to the update before the learning rate (so the decay is multiplied by
/// the *unadjusted* lr, as Keller Jordan's Muon, Moonlight and torch do: W ← W − η(u + λW)):
///   decoupled  u ← u + λ W;
///   cautious   u ← u + λ W where u·W > 0 (decay only where the step already moves W towards 0).
/// The `independent` form W ← (1 − λ) W, not scaled by the lr, is AddIndependentDecay, placed
/// after ScaleByLearningRate.
struct AddDecayedWeights {
  static constexpr const char* name = "add_decayed_weights";
  static constexpr bool row_local = true;  // chain.hpp: each element alone
  static constexpr bool device_capable = true;
  enum class Mode { decoupled, cautious };
  double weight_decay = 0.0;
  Mode mode = Mode::decoupled;

  struct State {};
  State init(const BlockShape&) const { return {}; }
  Status update(Block u, State&, ConstBlock p) const {
    if (weight_decay == 0.0) return Status::ok;
    const float l = static_cast<float>(weight_decay);
    if (mode == Mode::decoupled)
      add_scaled(u, p, l);
    else
      add_scaled_where_aligned(u, p, l);
    return Status::ok;
  }
  /// update_bound (rule.hpp): in + λ·kUnguardedParameter (λ as the float update() uses).
  double update_bound(double in, const BlockShape&) const {
    return in + double(static_cast<float>(weight_decay)) * kUnguardedParameter;
  }
  template <class V>
  friend void visit_fields(V&, State&) {}
  /// λ finite and ≥ 0 (torch.optim's range).
  const char* check() const noexcept {
    return hyper::non_negative(weight_decay) ? nullptr
                                             : "add_decayed_weights: weight_decay must be finite and >= 0";
  }
  std::string config() const {
    return Signature(name)
        .add("weight_decay", weight_decay)
        .add("mode", mode == Mode::decoupled ? "decoupled" : "cautious")
        .str();
  }
};

/// u ← u − λ W, after the learning rate: the decay does not follow the lr schedule.
struct AddIndependentDecay {
  static constexpr const char* name = "add_independent_decay";
  static constexpr bool row_local = true;  // chain.hpp: each element alone
  static constexpr bool device_capable = true;
  double weight_decay = 0.0;
  struct State {};
  State init(const BlockShape&) const { return {}; }
  Status update(Block u, State&, ConstBlock p) const {
    // u + (−l)·w rounds exactly like u − l·w (negation is exact).
    add_scaled(u, p, -static_cast<float>(weight_decay));
    return Status::ok;
  }
  /// update_bound (rule.hpp): in + λ·kUnguardedParameter.
  double update_bound(double in, const BlockShape&) const {
    return in + double(static_cast<float>(weight_decay)) * kUnguardedParameter;
  }
  template <class V>
  friend void visit_fields(V&, State&) {}
  /// λ ∈ [0, 1]: W ← (1 − λ) W per step (λ > 1 flips the weights' sign).
  const char* check() const noexcept {
    return hyper::non_negative(weight_decay) && weight_decay <= 1.0
               ? nullptr
               : "add_independent_decay: weight_decay must be in [0, 1]";
  }
  std::string config() const { return Signature(name).add("weight_decay", weight_decay).str(); }
};

// ---------------------------------------------------------------------------------------------
// Learning rate

/// u ← −η(t)·u (the sign convention of rule.hpp), t = this rule's own step count.
struct ScaleByLearningRate {
  static constexpr const char* name = "scale_by_learning_rate";
  static constexpr bool row_local = true;  // chain.hpp: each element alone
  static constexpr bool device_capable = true;
  Schedule lr = Schedule::constant(1e-3);

  struct State {
    std::int64_t count = 0;
  };
  State init(const BlockShape&) const { return {}; }
  Status update(Block u, State& s, ConstBlock) const {
    scale(u, static_cast<float>(-lr(s.count)));
    ++s.count;
    return Status::ok;
  }
  /// update_bound (rule.hpp): η_max·in, η_max the schedule's largest value (Schedule::max_value).
  double update_bound(double in, const BlockShape&) const { return lr.max_value() * in; }
  template <class V>
  friend void visit_fields(V& v, State& s) {
    v("count", s.count);
  }
  /// Schedule::check's refusals, naming this rule.
  static constexpr const char* kScheduleRefusals[2] = {
      "scale_by_learning_rate: lr schedule: the peak and final learning rates must be finite and >= 0",
      "scale_by_learning_rate: lr schedule: warmup and total must be >= 0 steps"};
  /// A usable schedule (Schedule::check).
  const char* check() const noexcept { return lr.check(kScheduleRefusals); }
  std::string config() const { return Signature(name).add("lr", lr.config()).str(); }
};

}  // namespace schatten::optim
