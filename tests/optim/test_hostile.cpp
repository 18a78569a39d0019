// SPDX-License-Identifier: Apache-2.0
/// \file
/// Numeric hostility (issue #8): NaN/Inf bursts, zero gradients, denormals, 1e±30 scales and
/// 1×N / N×1 blocks through every preset, stepped by optim::partition. Invariants checked after
/// every step: a refused step returns a non-ok status (or `skipped` under NonFinitePolicy::skip)
/// and leaves every parameter and every state field bit for bit as it was; an accepted step
/// leaves every parameter and every state field finite. Heap exhaustion: every host allocation of
/// a step refused in turn (support/allocations.hpp) leaves a refusal that changed nothing.
#include <doctest/doctest.h>

#include <Kokkos_Core.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "schatten/core/random.hpp"
#include "schatten/io/checkpoint.hpp"
#include "schatten/kernels/low_rank.hpp"
#include "schatten/kernels/polar.hpp"
#include "schatten/optim/dion.hpp"
#include "schatten/optim/partition.hpp"
#include "schatten/optim/presets.hpp"
#include "schatten/optim/schatten_p.hpp"
#include "schatten/optim/step_size.hpp"
#include "support/allocations.hpp"
#include "support/failing_rule.hpp"
#include "support/forced_staging.hpp"
#include "support/kokkos_allocations.hpp"
#include "support/optim_helpers.hpp"
#include "support/seed.hpp"
#include "support/spectra.hpp"
#include "support/threads.hpp"

namespace optim_test_hostile {  // this file's scope in a unity build (tests/CMakeLists.txt)

using namespace schatten;
using namespace schatten::optim;
using schatten::test::bf16_state;
using schatten::test::case_seed;
using schatten::test::kokkos3;
using schatten::test::pointers;
using schatten::test::run_together;

namespace {

/// Every state field as raw bits (so that "unchanged" means bit for bit, NaN included).
struct Bits {
  std::map<std::string, std::vector<std::uint64_t>>* out;
  void operator()(const std::string& n, std::int64_t& x) { (*out)[n] = {static_cast<std::uint64_t>(x)}; }
  void operator()(const std::string& n, double& x) {
    std::uint64_t b;
    std::memcpy(&b, &x, sizeof b);
    (*out)[n] = {b};
  }
  void operator()(const std::string& n, Buffer& v) {
    std::vector<std::uint64_t> b(v.size());
    for (std::size_t k = 0; k < v.size(); ++k) {
      std::uint32_t w;
      std::memcpy(&w, &v[k], sizeof w);
      b[k] = w;
    }
    (*out)[n] = std::move(b);
  }
  void operator()(const std::string& n, Bf16Buffer& v) {
    (*out)[n] = std::vector<std::uint64_t>(v.begin(), v.end());
  }
};

/// Names the first non-finite state field ("" when all are finite).
struct FirstNonFinite {
  std::string* bad;
  void operator()(const std::string&, std::int64_t&) {}
  void operator()(const std::string& n, double& x) {
    if (bad->empty() && !std::isfinite(x)) *bad = n;
  }
  void operator()(const std::string& n, Buffer& v) {
    for (float x : v)
      if (bad->empty() && !std::isfinite(x)) *bad = n;
  }
  void operator()(const std::string& n, Bf16Buffer& v) {
    for (std::uint16_t h : v)
      if (bad->empty() && !std::isfinite(schatten::bf16_to_float(h))) *bad = n;
  }
};

/// The blocks every preset meets: square, tall, wide, 1×N, N×1, a vector and a scalar.
std::vector<ParamSpec> hostile_params() {
  return {{"square", {6, 6}}, {"tall", {9, 4}}, {"wide", {3, 11}}, {"row", {1, 13}},
          {"col", {13, 1}},   {"vec", {7}},     {"scalar", {}}};
}

/// Same-shape parameters, which a partition steps as batched groups (three 6 × 6, two 9 × 4, two
/// vectors), each group on one workspace reserved for its batch.
std::vector<ParamSpec> same_shape_params() {
  return {{"a", {6, 6}},  {"b", {6, 6}}, {"c", {6, 6}}, {"t0", {9, 4}},
          {"t1", {9, 4}}, {"v0", {5}},   {"v1", {5}}};
}

enum class Kind { normal, nan_burst, inf_burst, zero, denormal, huge, tiny, mixed_scales };
constexpr Kind kKinds[] = {Kind::normal,   Kind::nan_burst, Kind::inf_burst, Kind::zero,
                           Kind::denormal, Kind::huge,      Kind::tiny,      Kind::mixed_scales};
const char* kind_name(Kind k) {
  switch (k) {
    case Kind::normal:
      return "normal";
    case Kind::nan_burst:
      return "nan_burst";
    case Kind::inf_burst:
      return "inf_burst";
    case Kind::zero:
      return "zero";
    case Kind::denormal:
      return "denormal";
    case Kind::huge:
      return "1e30";
    case Kind::tiny:
      return "1e-30";
    case Kind::mixed_scales:
      return "mixed_1e30_1e-30";
  }
  return "?";
}

/// Gradients of one kind for every parameter. NaN/Inf bursts poison a few entries of one
/// parameter (chosen by the rng); the other kinds fill every entry.
std::vector<std::vector<float>> gradients(const std::vector<ParamSpec>& ps, Kind kind, Rng& rng) {
  std::vector<std::vector<float>> g(ps.size());
  for (std::size_t i = 0; i < ps.size(); ++i) {
    g[i].resize(static_cast<std::size_t>(flatten(ps[i].shape).size()));
    for (float& x : g[i]) {
      const double z = rng.normal();
      switch (kind) {
        case Kind::zero:
          x = 0.0f;
          break;
        case Kind::denormal:  // below FLT_MIN = 1.18e-38, down to the smallest denormal
          x = static_cast<float>(z * 1e-40);
          break;
        case Kind::huge:
          x = static_cast<float>(z * 1e30);
          break;
        case Kind::tiny:
          x = static_cast<float>(z * 1e-30);
          break;
        case Kind::mixed_scales:
          x = static_cast<float>(z * (rng.uniform() < 0.5 ? 1e30 : 1e-30));
          break;
        default:
          x = static_cast<float>(z);
      }
    }
  }
  if (kind == Kind::nan_burst || kind == Kind::inf_burst) {
    const std::size_t i = static_cast<std::size_t>(rng.uniform() * double(ps.size())) % ps.size();
    const float bad = kind == Kind::nan_burst
                          ? std::numeric_limits<float>::quiet_NaN()
                          : (rng.uniform() < 0.5 ? 1.0f : -1.0f) * std::numeric_limits<float>::infinity();
    for (int k = 0; k < 3; ++k)
      g[i][static_cast<std::size_t>(rng.uniform() * double(g[i].size())) % g[i].size()] = bad;
  }
  return g;
}

template <class P>
std::map<std::string, std::vector<std::uint64_t>> state_bits(P& p) {
  std::map<std::string, std::vector<std::uint64_t>> m;
  Bits b{&m};
  visit_fields(b, p);
  return m;
}

template <class P>
std::string non_finite_state(P& p) {
  std::string bad;
  FirstNonFinite f{&bad};
  visit_fields(f, p);
  return bad;
}

bool same_bits(const std::vector<std::vector<float>>& a, const std::vector<std::vector<float>>& b) {
  for (std::size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(a[i].data(), b[i].data(), a[i].size() * sizeof(float)) != 0) return false;
  return true;
}

/// Runs `steps` steps of randomly chosen hostile kinds through one preset routed to every
/// parameter and checks the invariants of the file comment after each. Returns the number of
/// accepted steps (so that a preset which refuses everything is noticed).
template <class Rule>
int run_hostile(const char* preset, Rule rule, NonFinitePolicy policy, int steps, std::uint64_t seed) {
  const std::string preset_name = preset;  // CAPTURE prints strings, not pointers
  CAPTURE(preset_name);
  const std::vector<ParamSpec> ps = hostile_params();
  auto opt = optim::partition(ps, std::vector<std::string>(ps.size(), "all"), route("all", rule));
  REQUIRE(opt.init());
  opt.set_non_finite_policy(policy);
  Rng rng(seed);
  std::vector<std::vector<float>> w(ps.size());
  for (std::size_t i = 0; i < ps.size(); ++i) {
    w[i].resize(static_cast<std::size_t>(flatten(ps[i].shape).size()));
    for (float& x : w[i])
      x = static_cast<float>(0.5 * rng.normal());
  }
  int accepted = 0;
  for (int t = 0; t < steps; ++t) {
    const Kind kind = kKinds[static_cast<std::size_t>(rng.uniform() * 8.0) % 8];
    const std::string kind_s = kind_name(kind);
    CAPTURE(t);
    CAPTURE(kind_s);
    std::vector<std::vector<float>> g = gradients(ps, kind, rng);
    const auto w_before = w;
    const auto s_before = state_bits(opt);
    std::vector<float*> pp, gp;
    for (std::size_t i = 0; i < ps.size(); ++i) {
      pp.push_back(w[i].data());
      gp.push_back(g[i].data());
    }
    const StepReport r = opt.step(pp, gp);
    const bool poisoned = kind == Kind::nan_burst || kind == Kind::inf_burst;
    if (poisoned) {
      // A NaN/Inf gradient is always refused: an error status, or a reported skip.
      if (policy == NonFinitePolicy::error)
        CHECK(r.status == Status::non_finite_input);
      else
        CHECK((r.status == Status::ok && r.skipped));
      CHECK(r.bad_param >= 0);
    }
    if (!poisoned && policy == NonFinitePolicy::error && !r)  // a finite gradient is refused only
      CHECK(r.status == Status::out_of_range);                // as beyond a rule's max_gradient
    if (!r || r.skipped) {
      CHECK(std::string(r.message).size() > 0);
      CHECK(same_bits(w, w_before));
      // Nothing changed but the partition's count of skipped steps (policy skip).
      auto expected = s_before;
      if (r.skipped) ++expected.at("_partition/skipped_steps")[0];
      CHECK(state_bits(opt) == expected);
      continue;
    }
    ++accepted;
    for (std::size_t i = 0; i < ps.size(); ++i) {
      CAPTURE(ps[i].name);
      for (float x : w[i])
        REQUIRE(std::isfinite(x));
    }
    CHECK(non_finite_state(opt) == "");
  }
  return accepted;
}

/// Writes state fields back from state_bits() output (the inverse of Bits).
struct RestoreBits {
  const std::map<std::string, std::vector<std::uint64_t>>* in;
  void operator()(const std::string& n, std::int64_t& x) { x = static_cast<std::int64_t>(in->at(n)[0]); }
  void operator()(const std::string& n, double& x) { std::memcpy(&x, &in->at(n)[0], sizeof x); }
  void operator()(const std::string& n, Buffer& v) {
    const auto& b = in->at(n);
    REQUIRE(b.size() == v.size());
    for (std::size_t k = 0; k < v.size(); ++k) {
      const auto w = static_cast<std::uint32_t>(b[k]);
      std::memcpy(&v[k], &w, sizeof w);
    }
  }
  void operator()(const std::string& n, Bf16Buffer& v) {
    const auto& b = in->at(n);
    REQUIRE(b.size() == v.size());
    for (std::size_t k = 0; k < v.size(); ++k)
      v[k] = static_cast<std::uint16_t>(b[k]);
  }
};

/// How a step met one refused host allocation (sweep_allocation_failures).
struct SweepCounts {
  int refused = 0;         ///< out_of_memory, nothing changed
  int absorbed = 0;        ///< ok: an advisory part (schatten_muon's criterion) gave up
  int internal_error = 0;  ///< a prechecked rule failed after its state advanced
};

/// Steps `steps` steps of normal gradients through one preset (every hostile block), twice: a
/// reference partition, and one whose step is first run with its 1st, 2nd, … host allocation
/// refused (support/allocations.hpp; one refusal per attempt) until an attempt meets no
/// refusal. Every attempt must return a status (no exception escapes), leave the parameters
/// as they were unless it succeeds, and: refused (out_of_memory) → every state field as it was;
/// ok → only where `advisory` says a refusal may be absorbed (then the partition is put back);
/// internal_error → only with prechecks (Partition::set_prechecks), and the sweep of this preset
/// ends there (its states have advanced). The attempt that meets no refusal must give the
/// reference's parameters and states bit for bit.
template <class Rule, class Advisory>
SweepCounts sweep_allocation_failures(const char* preset, Rule rule, bool prechecks, int steps,
                                      Advisory&& advisory) {
  const std::string preset_name = preset;
  CAPTURE(preset_name);
  CAPTURE(prechecks);
  const std::vector<ParamSpec> ps = hostile_params();
  auto ref = optim::partition(ps, std::vector<std::string>(ps.size(), "all"), route("all", rule));
  auto opt = optim::partition(ps, std::vector<std::string>(ps.size(), "all"), route("all", rule));
  ref.set_prechecks(prechecks);
  opt.set_prechecks(prechecks);
  REQUIRE(ref.init());
  REQUIRE(opt.init());
  Rng rng(case_seed(preset, prechecks));
  std::vector<std::vector<float>> w(ps.size());
  for (std::size_t i = 0; i < ps.size(); ++i) {
    w[i].resize(static_cast<std::size_t>(flatten(ps[i].shape).size()));
    for (float& x : w[i])
      x = static_cast<float>(0.5 * rng.normal());
  }
  std::vector<std::vector<float>> w_ref = w;
  SweepCounts counts;
  for (int t = 0; t < steps; ++t) {
    CAPTURE(t);
    const std::vector<std::vector<float>> g0 = gradients(ps, Kind::normal, rng);
    {
      auto g = g0;
      REQUIRE(ref.step(pointers(w_ref), pointers(g)));
    }
    const auto s0 = state_bits(opt);
    const auto w0 = w;
    for (std::int64_t k = 1;; ++k) {
      CAPTURE(k);
      REQUIRE(k < 100000);  // every step allocates far fewer times
      auto g = g0;
      const std::vector<float*> pp = pointers(w), gp = pointers(g);  // before the probe
      const auto attempt = schatten::test::refusing_allocation(k, [&] { return opt.step(pp, gp); });
      const StepReport& r = attempt.result;
      const bool failed = attempt.refused;
      REQUIRE_FALSE(attempt.threw);
      if (!failed) {  // the attempt met no refusal: the reference's step
        REQUIRE(r);
        CHECK(same_bits(w, w_ref));
        CHECK(state_bits(opt) == state_bits(ref));
        break;
      }
      if (r) {
        ++counts.absorbed;
        CHECK(advisory());
      } else {
        CHECK(same_bits(w, w0));
        if (r.status == Status::internal_error) {
          ++counts.internal_error;
          CHECK(prechecks);
          return counts;
        }
        ++counts.refused;
        CHECK(r.status == Status::out_of_memory);
        CHECK(state_bits(opt) == s0);
      }
      // Back to the state before the step (after a refusal: already there, bit for bit).
      RestoreBits restore{&s0};
      visit_fields(restore, opt);
      w = w0;
    }
  }
  return counts;
}

/// schatten_muon with its criterion at steps 2, 5, 8, … (so that hostile steps reach it), with or
/// without the parametric moment.
SchattenMuonOptions adaptive_schatten(bool moment, double weight_decay = 1e-2) {
  SchattenMuonOptions o;
  o.first = 2;
  o.interval = 3;
  o.weight_decay = weight_decay;
  if (moment) o.moment = SchattenPDirection::Moment::parametric;
  return o;
}

/// schatten_muon at a fixed interior p: the polynomial spectral power on every step (the adaptive
/// runs above keep the Muon end, p = 10, where the step is a polar factor).
SchattenMuonOptions fixed_schatten_p(double p) {
  SchattenMuonOptions o;
  o.adaptive = false;
  o.p = p;
  o.weight_decay = 1e-2;
  return o;
}

/// Every preset, each with weight decay and momentum where it has them, handed to f(name, rule).
template <class F>
void for_each_preset(F&& f) {
  SgdOptions sgd_o;
  sgd_o.momentum = 0.9;
  sgd_o.nesterov = true;
  sgd_o.weight_decay = 1e-2;
  f("sgd", sgd(sgd_o));
  f("adamw", adamw());
  MuonOptions muon_o;
  muon_o.weight_decay = 1e-2;
  f("muon", muon(muon_o));
  // bf16 momentum and first moment (docs/optim.md "State precision"): NaN bursts, denormals and
  // 1e±30 scales through the widening and rounding; with the rules that keep their own bf16
  // moment: Lion's and MuAdam's kernels, DF-Muon's tentative momentum (scratch in the state's
  // storage, committed after the polar call), Dion2's M (a sum without β, refused before it
  // rounds to ∞) and Dion's (widened in u, stored by the kernel's hook after the feedback).
  f("muon_bf16", muon(bf16_state(muon_o)));
  f("adamw_bf16", adamw(bf16_state(AdamWOptions{})));
  f("lion_bf16", lion(bf16_state(LionOptions{})));
  f("muadam_bf16", muadam(bf16_state(MuAdamOptions{})));
  f("df_muon_bf16", df_muon(bf16_state(DfMuonOptions{})));
  f("dion2_bf16", dion2(bf16_state(Dion2Options{})));
  f("dion_bf16", dion(bf16_state(DionOptions{})));
  DionOptions dion_q;  // Q in bf16 too (microsoft/dion's Q_dtype), stochastically rounded
  dion_q.q_storage = StateStorage::bf16_stochastic();
  f("dion_q_bf16", dion(bf16_state(dion_q)));
  f("muadam", muadam());
  f("normuon", normuon());
  f("adamuon", adamuon());
  f("freon", freon());
  f("kaon", kaon());
  f("da_muon", da_muon());
  f("sc_muon", sc_muon());
  f("df_muon", df_muon());
  f("namo", namo());
  f("namo_d", namo_d());
  f("dion2", dion2());
  f("nordion2", nordion2());
  f("dion", dion());
  f("mop", mop());
  f("scion", scion());
  f("muon_hyperball", muon_hyperball());
  f("lion", lion());
  f("spel", spel());
  f("schatten_muon", schatten_muon(adaptive_schatten(false)));
  f("schatten_muon_moment", schatten_muon(adaptive_schatten(true)));
  // Its fitted schedule's options were built on every call until 2026-12-05: 8 host allocations
  // per parameter and step, which a prechecked step promises not to make.
  f("schatten_muon_p3", schatten_muon(fixed_schatten_p(3.0)));
}

/// for_each_preset over two parameter sets: the hostile blocks (no two of a shape), then
/// same-shape parameters, which a partition steps as batched groups (one workspace reserved for
/// each group's batch). f(name, rule, params, batched), with the preset and the set captured.
template <class F>
void for_each_preset_and_set(F&& f) {
  const std::vector<ParamSpec> hostile = hostile_params(), grouped = same_shape_params();
  for (const bool batched : {false, true})
    for_each_preset([&](const char* name, auto rule) {
      const std::string preset_name = name;
      CAPTURE(preset_name);
      CAPTURE(batched);
      f(name, rule, batched ? grouped : hostile, batched);
    });
}

/// A rule of a user's that declares no update_bound (rule.hpp): m ← 1e10·m + g, u = m, so that
/// from gradients of −1 its fifth update (−1e40) and its state are beyond float. In float
/// arithmetic, which rounds the overflow to −∞ (a double beyond float converted to float would
/// be undefined behaviour, which the sanitizer build reports).
struct GrowingMomentum {
  static constexpr const char* name = "growing_momentum";
  static constexpr float kGrowth = 1e10f;
  struct State {
    FloatBuffer m;
  };
  State init(const BlockShape& s) const { return {FloatBuffer(static_cast<std::size_t>(s.size()), 0.0f)}; }
  Status update(Block u, State& s, ConstBlock) const { return advance(u, s, HUGE_VALF); }
  template <class V>
  friend void visit_fields(V& v, State& s) {
    v("m", s.m);
  }

 protected:
  /// m ← clamp(1e10·m + u, −cap, cap), u ← m.
  static Status advance(Block u, State& s, float cap) {
    for (std::size_t k = 0; k < s.m.size(); ++k) {
      s.m[k] = std::clamp(kGrowth * s.m[k] + u.data[k], -cap, cap);
      u.data[k] = s.m[k];
    }
    return Status::ok;
  }
};
/// The same rule with m clamped to [−1e20, 1e20], gradients limited to 1, and the bound that
/// follows: |u| ≤ 1e20, far below 2.55e38.
struct ClampedMomentum : GrowingMomentum {
  static constexpr const char* name = "clamped_momentum";
  double max_gradient() const { return 1.0; }
  double update_bound(double, const BlockShape&) const { return 1e20; }
  Status update(Block u, State& s, ConstBlock) const { return advance(u, s, 1e20f); }
};

}  // namespace

TEST_SUITE("optim.hostile") {
  TEST_CASE("hostile gradient sequences through every preset keep parameters and states finite") {
    for (NonFinitePolicy policy : {NonFinitePolicy::error, NonFinitePolicy::skip}) {
      const std::string policy_s = policy == NonFinitePolicy::error ? "error" : "skip";
      CAPTURE(policy_s);
      for_each_preset([&](const char* name, auto rule) {
        const int accepted =
            run_hostile(name, rule, policy, 48, case_seed(name, policy == NonFinitePolicy::skip));
        CHECK(accepted > 0);
      });
    }
  }

  TEST_CASE("every hostile kind alone through every preset") {
    // One kind repeated from a fresh state (e.g. ten 1e30 steps in a row: the moments saturate).
    for (Kind kind : kKinds) {
      const std::string kind_s = kind_name(kind);
      CAPTURE(kind_s);
      for_each_preset([&](const char* name, auto rule) {
        const std::string preset_name = name;
        CAPTURE(preset_name);
        const std::vector<ParamSpec> ps = hostile_params();
        auto opt = optim::partition(ps, std::vector<std::string>(ps.size(), "all"), route("all", rule));
        REQUIRE(opt.init());
        Rng rng(case_seed(name, static_cast<std::uint64_t>(kind)));
        std::vector<std::vector<float>> w(ps.size());
        for (std::size_t i = 0; i < ps.size(); ++i)
          w[i].assign(static_cast<std::size_t>(flatten(ps[i].shape).size()), 0.25f);
        for (int t = 0; t < 10; ++t) {
          auto g = gradients(ps, kind, rng);
          std::vector<float*> pp, gp;
          for (std::size_t i = 0; i < ps.size(); ++i) {
            pp.push_back(w[i].data());
            gp.push_back(g[i].data());
          }
          const auto w_before = w;
          const StepReport r = opt.step(pp, gp);
          if (!r) {
            CHECK(same_bits(w, w_before));
            continue;
          }
          for (const auto& wi : w)
            for (float x : wi)
              REQUIRE(std::isfinite(x));
          CHECK(non_finite_state(opt) == "");
        }
      });
    }
  }

  TEST_CASE("a refused host allocation anywhere in a step changes nothing (heap exhaustion)") {
    // Without prechecks every route that may fail has its state copied (Partition::
    // set_prechecks), so each of a step's host allocations refused in turn, through every
    // preset, must leave a refusal with nothing changed or, once none is refused, the
    // reference's step. Steps 0 (first calls: fits, caches, workspace growth) and 1 (steady
    // state). With prechecks (the default) the prechecked routes' kernels allocate nothing on
    // the host (the next case), so a refusal can only meet the routes with copies, or the
    // partition's own code before any state moves: the same all-or-nothing. On Kokkos 4 a
    // prechecked kernel may meet a refusal after its state advanced (Kokkos' own allocations):
    // internal_error, parameters unchanged (reliability.md "Heap exhaustion").
    int internal_errors = 0, refusals[2] = {0, 0};
    for (bool prechecks : {false, true}) {
      for_each_preset([&](const char* name, auto rule) {
        const SweepCounts c = sweep_allocation_failures(name, rule, prechecks, 2, [] { return false; });
        if (!prechecks || kokkos3()) CHECK(c.internal_error == 0);
        CHECK(c.absorbed == 0);
        internal_errors += c.internal_error;
        refusals[prechecks] += c.refused;
      });
      // The presets' kernels allocate almost nothing in a step any more, so a link that
      // allocates per call (test::AllocatesPerCall, as a kernel with per-call host vectors would)
      // at the end of Muon's chain keeps refusals inside the updates under test: each must be
      // refused with nothing changed, with prechecks or not (the link may fail and has no
      // precheck, so the chain's states are copied).
      const auto allocating = test::ending_in_allocation(muon());
      const SweepCounts c = sweep_allocation_failures("muon + allocates_per_call", allocating, prechecks, 2,
                                                      [] { return false; });
      CHECK(c.refused > 0);
      CHECK(c.internal_error == 0);
      CHECK(c.absorbed == 0);
      refusals[prechecks] += c.refused;
    }
    MESSAGE("refusals checked: " << refusals[0] << " without prechecks, " << refusals[1] << " with; "
                                 << internal_errors << " internal_error with prechecks");
  }

  TEST_CASE("a refused step makes no host allocation: its message is composed in reserved room") {
    // A refusal must not throw under heap exhaustion (no exception leaves step()), so its message,
    // which names the parameter, is composed into room init() reserved (Partition::compose). The
    // gradient and parameter refusals, the skip, and a precheck's refusal, counted by
    // support/allocations.hpp after a first step: 0 host allocations each (the messages were
    // built from std::string temporaries before, one or more allocations each).
    const std::vector<ParamSpec> ps = {{"a.rather_long_parameter_name_of_a_real_model.weight", {6, 4}},
                                       {"b", {5}}};
    auto opt = optim::partition(ps, {"muon", "adamw"}, route("muon", muon()), route("adamw", adamw()));
    REQUIRE(opt.init());
    std::vector<float> a(24, 0.25f), b(5, 0.5f);
    auto ga = schatten::test::random_vec(24, case_seed("refusal_alloc_a")), gb = std::vector<float>(5, 0.1f);
    REQUIRE(opt.step({a.data(), b.data()}, {ga.data(), gb.data()}));
    const auto refused = [&](const char* what, std::vector<float> g0, std::vector<float> g1, float* pa,
                             Status want) {
      CAPTURE(std::string(what));
      const std::vector<float*> pp = {pa, b.data()}, gp = {g0.data(), g1.data()};
      schatten::test::AllocationProbe probe;
      const StepReport r = opt.step(pp, gp);
      const std::int64_t count = probe.count();
      CHECK(r.status == want);
      CHECK(std::string(r.message).find('\'') != std::string::npos);  // it names something
      if (kokkos3()) CHECK(count == 0);
    };
    std::vector<float> nan_g = ga;
    nan_g[3] = std::nanf("");
    refused("NaN gradient", nan_g, gb, a.data(), Status::non_finite_input);
    std::vector<float> huge = gb;
    huge[1] = 1e30f;  // beyond AdamW's 2^63
    refused("gradient beyond max_gradient", ga, huge, a.data(), Status::out_of_range);
    std::vector<float> bad_a = a;
    bad_a[0] = std::numeric_limits<float>::infinity();
    refused("Inf parameter", ga, gb, bad_a.data(), Status::non_finite_input);
    // A momentum entry beyond TraceMomentum's per-step bound (FLT_MAX/2 for the EMA), as a damaged
    // state would hold: Muon's precheck refuses the step.
    io::FieldSet fields = io::capture(opt);
    std::get<std::vector<float>>(fields.at(ps[0].name + "/0_trace_momentum/mu"))[0] = kBf16Max;
    REQUIRE(io::restore(opt, fields) == Status::ok);
    refused("precheck", ga, gb, a.data(), Status::out_of_range);
    opt.set_non_finite_policy(NonFinitePolicy::skip);
    refused("skip", nan_g, gb, a.data(), Status::ok);
  }

  TEST_CASE("a steady-state step makes no host allocation (every preset)") {
    // The third step of every preset over the hostile blocks (normal gradients), counted by
    // support/allocations.hpp: kernel launches pass Kokkos no label unless a tool is loaded
    // (kernel_label), host GEMMs call the BLAS directly (no Kokkos Kernels profiling label), and
    // the kernels' per-matrix host scalars live in their workspaces (HostScalars, reserved for
    // the batch at init), as do the low-rank step's host scratch (Dion) and QDWH's estimator
    // starts (Freon, MoP; the rational fits are read from their cache). Kokkos 4 may add allocations of its
    // own (reliability.md "Heap exhaustion"): counted there, checked on the Kokkos 3.4 of the default build.
    // Twice: over the hostile blocks (no two of a shape), and over same-shape parameters, which the partition
    // steps as batched groups (one workspace reserved for the group's batch).
    for_each_preset_and_set([&](const char* name, auto rule, const std::vector<ParamSpec>& ps, bool batched) {
      const std::string preset_name = name;
      auto opt = optim::partition(ps, std::vector<std::string>(ps.size(), "all"), route("all", rule));
      REQUIRE(opt.init());
      Rng rng(case_seed(name, 11));
      std::vector<std::vector<float>> w(ps.size());
      for (std::size_t i = 0; i < ps.size(); ++i)
        w[i].assign(static_cast<std::size_t>(flatten(ps[i].shape).size()), 0.25f);
      std::int64_t count = -1;
      for (int t = 0; t < 3; ++t) {
        auto g = gradients(ps, Kind::normal, rng);
        const std::vector<float*> pp = pointers(w), gp = pointers(g);  // before the probe
        schatten::test::AllocationProbe probe;
        const StepReport r = opt.step(pp, gp);
        count = probe.count();
        REQUIRE(r);
      }
      const std::string where = batched ? " (batched groups)" : "";
      MESSAGE(preset_name << where << ": " << count << " host allocations in a steady-state step");
      if (kokkos3()) CHECK(count == 0);
    });
  }

  TEST_CASE("a steady-state step makes no Kokkos allocation, host and device partitions (every preset)") {
    // The device-side counterpart of the previous case, on every backend: Kokkos' own
    // allocations (Views, kernel scratch, in any memory space) counted through Kokkos Tools
    // (support/kokkos_allocations.hpp), which the operator-new probe cannot see on a GPU build.
    // The third step of every preset over the same parameters as above, for a host partition
    // (on a GPU build its kernels stage the host arrays through the workspace's kept slots) and
    // for a device partition (init(MemoryKind::device): states, batch buffers, backups and
    // workspace in device memory; its parameters and gradients are device arrays). On this CPU
    // build "device" memory is host memory and the device kernels run on Kokkos Serial.
    using DeviceVec = Kokkos::View<float*, Kokkos::DefaultExecutionSpace::memory_space>;
    using HostConst = Kokkos::View<const float*, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
    int partitions = 0;
    for (const MemoryKind memory : {MemoryKind::host, MemoryKind::device})
      for_each_preset_and_set([&](const char* name, auto rule, const std::vector<ParamSpec>& ps, bool) {
        CAPTURE(memory == MemoryKind::device);
        auto opt = optim::partition(ps, std::vector<std::string>(ps.size(), "all"), route("all", rule));
        REQUIRE(opt.init(memory));
        Rng rng(case_seed(name, 12));
        std::vector<std::vector<float>> w(ps.size());
        std::vector<DeviceVec> dw(ps.size()), dg(ps.size());
        for (std::size_t i = 0; i < ps.size(); ++i) {
          w[i].assign(static_cast<std::size_t>(flatten(ps[i].shape).size()), 0.25f);
          dw[i] = DeviceVec("w", w[i].size());
          dg[i] = DeviceVec("g", w[i].size());
          Kokkos::deep_copy(dw[i], HostConst(w[i].data(), w[i].size()));
        }
        std::int64_t count = -1;
        std::string last;
        for (int t = 0; t < 3; ++t) {
          auto g = gradients(ps, Kind::normal, rng);
          std::vector<float*> pp = pointers(w), gp = pointers(g);
          if (memory == MemoryKind::device)
            for (std::size_t i = 0; i < ps.size(); ++i) {
              Kokkos::deep_copy(dg[i], HostConst(g[i].data(), g[i].size()));
              pp[i] = dw[i].data();
              gp[i] = dg[i].data();
            }
          schatten::test::KokkosAllocationProbe probe;
          const StepReport r = opt.step(pp, gp);
          count = probe.active() ? probe.count() : 0;
          last = probe.last_label();
          REQUIRE(r);
        }
        CAPTURE(last);
        CHECK(count == 0);
        ++partitions;
      });
    CHECK(partitions > 0);
  }

  TEST_CASE("a host partition on a build that stages keeps its prechecks: staging reserved at init()") {
    // On a GPU build the kernels stage host arrays (support/forced_staging.hpp runs that code
    // here). A partition on host memory reserves the staging copies of its kernel calls at
    // init() (Partition::reserve_staging), so that the prechecks still cover its routes
    // (detail::polar_total_on_finite, DionDirection::precheck_covers: Workspace::staging_covers)
    // and it keeps no more state copies than where the kernels read host memory in place. Its
    // steps have the in-place steps' bits (staging moves the elements only), and the third makes
    // no Kokkos allocation. Both parameter sets: the hostile blocks and the batched groups (whose
    // reservation is the group's batch). With the reservation removed, 40 of the 60 partitions
    // of the 30 presets then kept more copies (2026-12-04, before Dion counted on it and
    // dion_q_bf16 joined the presets).
    int covered = 0;
    for_each_preset_and_set([&](const char* name, auto rule, const std::vector<ParamSpec>& ps, bool) {
      const std::vector<std::string> labels(ps.size(), "all");
      auto in_place = optim::partition(ps, labels, route("all", rule));
      auto staged = optim::partition(ps, labels, route("all", rule));
      REQUIRE(in_place.init());
      {
        const schatten::test::ForcedStaging forced;
        REQUIRE(staged.init());
      }
      const MemoryUse mi = in_place.memory_use(), ms = staged.memory_use();
      CHECK(ms.backups == mi.backups);
      if (mi.backups == 0 && rule_may_fail<decltype(rule)>::value) ++covered;
      // The reservation: two slots (input, output; Dion three: M, Q and U), each a device and a
      // host side.
      if (rule_may_fail<decltype(rule)>::value)
        CHECK(ms.workspace > mi.workspace);
      else
        CHECK(ms.workspace == mi.workspace);
      Rng rng(case_seed(name, 13));
      std::vector<std::vector<float>> wi(ps.size()), ws(ps.size());
      for (std::size_t i = 0; i < ps.size(); ++i)
        wi[i].assign(static_cast<std::size_t>(flatten(ps[i].shape).size()), 0.25f);
      ws = wi;
      for (int t = 0; t < 3; ++t) {
        auto gi = gradients(ps, Kind::normal, rng);
        auto gs = gi;
        REQUIRE(in_place.step(pointers(wi), pointers(gi)));
        const std::vector<float*> pp = pointers(ws), gp = pointers(gs);
        const schatten::test::ForcedStaging forced;
        schatten::test::KokkosAllocationProbe probe;
        REQUIRE(staged.step(pp, gp));
        // The third step of every preset; every step of a prechecked one (no copies: its
        // precheck promised that nothing is left to allocate, the staging included).
        if ((t == 2 || mi.backups == 0) && probe.active()) {
          const std::string last = probe.last_label();
          CAPTURE(t);
          CAPTURE(last);
          CHECK(probe.count() == 0);
        }
      }
      for (std::size_t i = 0; i < ps.size(); ++i)
        CHECK(std::memcmp(wi[i].data(), ws[i].data(), wi[i].size() * sizeof(float)) == 0);
    });
    CHECK(covered > 0);  // the test did see prechecked routes that stage
  }

  TEST_CASE("polar() with a workspace reserved for the call makes no host allocation") {
    // The kernel-level claim behind the previous case (docs/kernels/polar.md, "Cost"): with a
    // workspace reserved for the shape and batch (Workspace::reserve(bytes, matrices)), the
    // polynomial methods and QDWH allocate nothing on the host, already on the first call, with
    // every normalisation (QDWH: Frobenius whatever the schedule says), the dual-norm scaling,
    // the orthogonality report, and either form (wide, tall). On the Kokkos 3.4 of the default build (Kokkos
    // 4 may allocate inside its own calls).
    if (!kokkos3()) return;
    Rng rng(case_seed("polar without allocations"));
    int calls = 0;
    for (PolarMethod method : {PolarMethod::newton_schulz, PolarMethod::polar_express,
                               PolarMethod::gram_newton_schulz, PolarMethod::qdwh})
      for (Normalization::Kind kind :
           {Normalization::Kind::frobenius, Normalization::Kind::schatten4, Normalization::Kind::aol})
        for (bool extras : {false, true})
          for (index_t batch : {1, 3})
            for (const std::pair<index_t, index_t>& shape : {std::pair<index_t, index_t>{12, 20}, {20, 12}}) {
              // Not a structured binding: CAPTURE's lambda cannot capture one in C++17 (clang).
              const index_t rows = shape.first, cols = shape.second;
              PolarOptions o;
              o.method = method;
              o.schedule = method == PolarMethod::newton_schulz ? schedules::keller_jordan()
                                                                : schedules::polar_express();
              o.schedule.normalization.kind = kind;
              o.dual_norm_scale = extras;
              o.compute_orthogonality_error = extras;
              o.symmetric_gram = !extras;
              std::vector<float> a(static_cast<std::size_t>(batch * rows * cols)), q(a.size());
              for (float& x : a)
                x = static_cast<float>(rng.normal());
              Workspace ws;
              REQUIRE(ws.reserve(polar_workspace_bytes(rows, cols, batch, o, Precision::fp32),
                                 static_cast<std::size_t>(batch)));
              const BatchedMatrixRef<const float> in(a.data(), batch, rows, cols);
              const BatchedMatrixRef<float> out(q.data(), batch, rows, cols);
              schatten::test::AllocationProbe probe;
              const PolarReport r = polar(in, out, o, &ws);
              const std::int64_t count = probe.count();
              CAPTURE(std::string(to_string(method)));
              CAPTURE(static_cast<int>(kind));
              CAPTURE(extras);
              CAPTURE(batch);
              CAPTURE(rows);
              REQUIRE(r);
              CHECK(count == 0);
              ++calls;
            }
    CHECK(calls == 96);
  }

  TEST_CASE("polynomial spectral_power and spectral_clip make no host allocation after their first call") {
    // The kernel-level claim behind schatten_muon_p3 above (Workspace: "allocates only during
    // the first calls"). The Newton–Schulz options of spectral_power's fitted schedule were built
    // per call (8 host allocations), and CoefficientSchedule::max_abs built its cache key per call
    // (1, in both kernels); the options are now built once per tabulated row. The reported error
    // stays the requested exponent's, not its row's.
    if (!kokkos3()) return;
    Rng rng(case_seed("polynomial maps without allocations"));
    const index_t rows = 40, cols = 24;
    std::vector<float> a(static_cast<std::size_t>(rows * cols)), first(a.size()), again(a.size());
    for (float& x : a)
      x = static_cast<float>(rng.normal());
    const MatrixRef<const float> in(a.data(), rows, cols);
    Workspace ws;
    // f(out): one call of the kernel under test; returns its report.
    const auto twice = [&](const auto& f) {
      const SpectralPowerReport r1 = f(MatrixRef<float>(first.data(), rows, cols));
      REQUIRE(r1);
      schatten::test::AllocationProbe probe;
      const SpectralPowerReport r2 = f(MatrixRef<float>(again.data(), rows, cols));
      const std::int64_t count = probe.count();
      REQUIRE(r2);
      CHECK(count == 0);
      CHECK(again == first);
      return r2;
    };
    for (const double alpha : {1.0 / 3.0, 0.5, 0.253})
      for (const int steps : {5, 8}) {
        CAPTURE(alpha);
        CAPTURE(steps);
        SpectralPowerOptions o;
        o.method = SpectralPowerMethod::polynomial;
        o.alpha = alpha;
        o.polynomial_steps = steps;
        const SpectralPowerReport r =
            twice([&](MatrixRef<float> out) { return spectral_power(in, out, o, &ws); });
        PowerSchedule ps;
        REQUIRE(polynomial_power_schedule(alpha, steps, ps) == Status::ok);
        CHECK(r.fit_error == ps.relative_error());
      }
    SpectralClipOptions clip;
    clip.method = SpectralClipMethod::polynomial;
    clip.lower = 0.1;
    clip.upper = 2.0;
    twice([&](MatrixRef<float> out) { return spectral_clip(in, out, clip, &ws); });
  }

  TEST_CASE("the low-rank step with its workspace reserved makes no host allocation") {
    // Dion's kernel (kernels/low_rank.hpp) on a workspace reserved with
    // low_rank_batch_workspace_bytes() and low_rank_host_bytes(): no host allocation, already
    // on the first call, through both QRs (the Cholesky QR2 on a full-rank M; the Householder QR
    // on a rank-2 M, whose columns past its rank are dropped at the rounding floor, and with
    // cholesky_qr off), one process, replicas that each take every QR, and replicas that split
    // the QRs (replica 1 of 2, the collectives the identity); wide and tall, batches of 1 and 3.
    // The collectives are the caller's code: captureless here, so calling them allocates nothing.
    if (!kokkos3()) return;
    Rng rng(case_seed("low-rank step without allocations"));
    int calls = 0;
    for (const int replicas : {0, 1, 2})  // none, unsplit, split
      for (const bool full_rank : {true, false})
        for (const bool cholesky : {true, false})
          for (const index_t batch : {1, 3})
            for (const std::pair<index_t, index_t>& shape : {std::pair<index_t, index_t>{12, 20}, {20, 12}}) {
              const index_t rows = shape.first, cols = shape.second, k = 5;
              LowRankStepOptions o;
              o.cholesky_qr = cholesky;
              if (replicas > 0) o.replicas.average = [](float*, std::size_t) { return Status::ok; };
              if (replicas > 1) {
                o.replicas.average_scatter = [](float*, const std::size_t*) { return Status::ok; };
                // Replica 0's block (its members' P̄ and records) as zeros: a record of success
                // with no column kept. The identity left the workspace's previous bytes there,
                // which the kernel read as its members' QR statuses: seeds 2066 and 2068 failed
                // (non_finite_input, invalid_argument) when earlier cases had left those bytes.
                o.replicas.gather = [](float* data, const std::size_t* counts) {
                  std::fill(data, data + counts[0], 0.0f);
                  return Status::ok;
                };
                o.replicas.rank = 1;
                o.replicas.size = 2;
              }
              const auto n = static_cast<std::size_t>(rows * cols);
              std::vector<float> m(n * batch), q(static_cast<std::size_t>(k * std::min(rows, cols) * batch)),
                  u(m.size());
              for (float& x : q)
                x = static_cast<float>(rng.normal());
              for (index_t b = 0; b < batch; ++b)
                for (index_t i = 0; i < rows; ++i)
                  for (index_t j = 0; j < cols; ++j) {
                    float& x = m[static_cast<std::size_t>(b) * n + static_cast<std::size_t>(i * cols + j)];
                    // rank 2: a sum of two outer products of sines and cosines of the indices
                    x = full_rank
                            ? static_cast<float>(rng.normal())
                            : static_cast<float>(std::sin(0.3 * double(i + 1)) * std::cos(0.7 * double(j)) +
                                                 std::cos(1.1 * double(i)) * std::sin(0.5 * double(j + b)));
                  }
              std::vector<MatrixRef<float>> mr, qr, ur;
              for (index_t b = 0; b < batch; ++b) {
                mr.emplace_back(m.data() + b * rows * cols, rows, cols);
                qr.emplace_back(q.data() + b * k * std::min(rows, cols), k, std::min(rows, cols));
                ur.emplace_back(u.data() + b * rows * cols, rows, cols);
              }
              Workspace ws;
              REQUIRE(ws.reserve(low_rank_batch_workspace_bytes(rows, cols, k, batch, replicas > 0), 1,
                                 low_rank_host_bytes(rows, cols, k, batch, o.replicas)));
              schatten::test::AllocationProbe probe;
              const Status st = low_rank_power_step_batch(mr.data(), qr.data(), ur.data(), batch, o, &ws);
              const std::int64_t count = probe.count();
              CAPTURE(replicas);
              CAPTURE(full_rank);
              CAPTURE(cholesky);
              CAPTURE(batch);
              CAPTURE(rows);
              REQUIRE(st == Status::ok);
              CHECK(count == 0);
              // The QR took the path meant: ‖U‖_F² = Σ_j ‖p_j‖²·‖q_j‖² is the number of kept
              // columns (P's are orthonormal to float rounding, Q's unit to ε = 1e-8 relative),
              // k = 5 at full rank, 2 when the columns past M's rank were dropped; 1e-3 is far
              // above that rounding and far below 1. With split QRs only this replica's members
              // [⌊batch/2⌋, batch) were orthonormalised (the others' QRs are replica 0's, whose
              // results the fake gather does not bring).
              for (index_t b = replicas > 1 ? batch / 2 : 0; b < batch; ++b) {
                double f2 = 0.0;
                for (std::size_t e = 0; e < n; ++e)
                  f2 += double(u[static_cast<std::size_t>(b) * n + e]) *
                        double(u[static_cast<std::size_t>(b) * n + e]);
                CHECK(std::abs(f2 - (full_rank ? double(k) : 2.0)) < 1e-3);
              }
              ++calls;
            }
    CHECK(calls == 48);
    // A gather that brings a record no replica wrote (NaN, or a code that is no status): refused
    // as internal_error, not converted (a NaN or out-of-range float as an int is undefined).
    const index_t rows = 12, cols = 20, k = 5, batch = 3;
    for (const float junk : {std::numeric_limits<float>::quiet_NaN(), 3.5f, 1e30f, -7.0f}) {
      CAPTURE(junk);
      static float fill_value;  // (the collectives are captureless function objects)
      fill_value = junk;
      LowRankStepOptions o;
      o.replicas.average = [](float*, std::size_t) { return Status::ok; };
      o.replicas.average_scatter = [](float*, const std::size_t*) { return Status::ok; };
      o.replicas.gather = [](float* data, const std::size_t* counts) {
        std::fill(data, data + counts[0], fill_value);
        return Status::ok;
      };
      o.replicas.rank = 1;
      o.replicas.size = 2;
      std::vector<float> m(static_cast<std::size_t>(rows * cols * batch)),
          q(static_cast<std::size_t>(k * rows * batch)), u(m.size());
      for (float& x : m)
        x = static_cast<float>(rng.normal());
      for (float& x : q)
        x = static_cast<float>(rng.normal());
      std::vector<MatrixRef<float>> mr, qr, ur;
      for (index_t b = 0; b < batch; ++b) {
        mr.emplace_back(m.data() + b * rows * cols, rows, cols);
        qr.emplace_back(q.data() + b * k * rows, k, rows);
        ur.emplace_back(u.data() + b * rows * cols, rows, cols);
      }
      Workspace ws;
      CHECK(low_rank_power_step_batch(mr.data(), qr.data(), ur.data(), batch, o, &ws) ==
            Status::internal_error);
    }
  }

  TEST_CASE("init() under heap exhaustion: out_of_memory, then no step until an init() succeeds") {
    // Each host allocation of init() refused in turn, every preset: init() reports it
    // (out_of_memory, no exception), the partition refuses to step until an init() succeeds,
    // and one that does steps as a reference partition does, bit for bit. (Before, a
    // std::bad_alloc from a state's container left init() half done and step() read past
    // its per-parameter tables.)
    for_each_preset([&](const char* name, auto rule) {
      const std::string preset_name = name;
      CAPTURE(preset_name);
      const std::vector<ParamSpec> ps = hostile_params();
      const std::vector<std::string> labels(ps.size(), "all");
      auto ref = optim::partition(ps, labels, route("all", rule));
      REQUIRE(ref.init());
      Rng rng(case_seed(name, 7));
      std::vector<std::vector<float>> w0(ps.size());
      for (std::size_t i = 0; i < ps.size(); ++i) {
        w0[i].resize(static_cast<std::size_t>(flatten(ps[i].shape).size()));
        for (float& x : w0[i])
          x = static_cast<float>(0.5 * rng.normal());
      }
      const std::vector<std::vector<float>> g0 = gradients(ps, Kind::normal, rng);
      auto w_ref = w0, g_ref = g0;
      REQUIRE(ref.step(pointers(w_ref), pointers(g_ref)));
      for (std::int64_t k = 1;; ++k) {
        CAPTURE(k);
        REQUIRE(k < 100000);
        auto opt = optim::partition(ps, labels, route("all", rule));
        const auto attempt = schatten::test::refusing_allocation(k, [&] { return opt.init(); });
        const StepReport& r = attempt.result;
        const bool threw = attempt.threw, failed = attempt.refused;
        auto w = w0, g = g0;
        // A refusal some code absorbs (std::stable_sort's buffer: it sorts in place instead)
        // leaves a successful init().
        const bool refused = threw || !r;
        if (!failed) REQUIRE(r);
        CHECK_FALSE(threw);
        if (refused) {
          CHECK(r.status == Status::out_of_memory);
          const StepReport s = opt.step(pointers(w), pointers(g));
          CHECK_FALSE(s);
          CHECK(same_bits(w, w0));
          w = w0;
          g = g0;
          REQUIRE(opt.init());  // a successful init() after a failed one
        }
        REQUIRE(opt.step(pointers(w), pointers(g)));
        CHECK(same_bits(w, w_ref));
        CHECK(state_bits(opt) == state_bits(ref));
        if (!failed) break;
      }
    });
  }

  TEST_CASE("schatten_muon's criterion gives up under heap exhaustion and keeps p") {
    // Every step a criterion step (whitened activations assumed, no Gram needed): a refusal in
    // the criterion's host copies or spectra, or in building the matrix function of the p it
    // chose (SchattenPDirection::prepare_spectral), is absorbed (the criterion is advisory: p
    // kept, PCriterionEvent::status out_of_memory). The rest of the step makes no host
    // allocation: until 2026-12-05 the polynomial spectral power at the chosen p built its
    // options on every call, and those refusals refused the step.
    // The events of a criterion that gave up (one per absorbed attempt: each attempt refuses one
    // allocation), and how many of those kept p.
    int events = 0, gave_up = 0, kept_p = 0;
    SchattenMuonOptions o;
    o.first = 1;
    o.interval = 1;
    o.without_statistics = SchattenPDirection::WithoutStatistics::assume_whitened;
    o.on_criterion = [&](const PCriterionEvent& e) {
      ++events;
      if (e.status == Status::ok) return;
      ++gave_up;
      if (e.status == Status::out_of_memory && e.p == e.previous_p && !e.choice.descends) ++kept_p;
    };
    for (bool moment : {false, true}) {
      o.moment = moment ? SchattenPDirection::Moment::parametric : SchattenPDirection::Moment::none;
      const SweepCounts c =
          sweep_allocation_failures(moment ? "schatten_muon_whitened_moment" : "schatten_muon_whitened",
                                    schatten_muon(o), false, 3, [&] {
                                      const bool one = gave_up == 1 && kept_p == 1;
                                      gave_up = kept_p = 0;
                                      return one;
                                    });
      CHECK(c.absorbed > 0);
      // On Kokkos 4 the rest of the step allocates inside Kokkos' own calls, and those refusals
      // refuse the step with nothing changed (the sweep checks that; reliability.md "Heap
      // exhaustion"): 483 of them on Kokkos 4.6.01 with OpenMP (2026-12-06).
      if (kokkos3()) CHECK(c.refused == 0);
      CHECK(c.internal_error == 0);
      CHECK(gave_up == 0);  // none outside the absorbed attempts
    }
    CHECK(events > 0);
  }

  TEST_CASE("Adam-family presets refuse gradients beyond 2^63 and keep finite moments up to it") {
    // Adam's second moment holds g² in float: |g| = 2^63 squares to 2^126 < FLT_MAX and is
    // accepted (moments stay finite however many steps); 1e30 squares past FLT_MAX and is
    // refused with out_of_range before anything changes. Presets without g² accept both.
    const float at_limit = 9223372036854775808.0f;  // 2^63
    auto run = [&](const char* name, auto rule, bool squares) {
      const std::string preset_name = name;
      CAPTURE(preset_name);
      const std::vector<ParamSpec> ps = {{"m", {5, 3}}, {"v", {4}}};
      auto opt = optim::partition(ps, {"all", "all"}, route("all", rule));
      REQUIRE(opt.init());
      std::vector<float> w0(15, 0.5f), w1(4, -0.5f);
      for (int t = 0; t < 6; ++t) {
        std::vector<float> g0(15, t % 2 ? at_limit : -at_limit), g1(4, at_limit);
        REQUIRE(opt.step({w0.data(), w1.data()}, {g0.data(), g1.data()}));
        CHECK(non_finite_state(opt) == "");
      }
      const auto before = state_bits(opt);
      const std::vector<float> w0_before = w0;
      std::vector<float> g0(15, 0.0f), g1(4, 0.0f);
      g1[2] = 1e30f;
      const StepReport r = opt.step({w0.data(), w1.data()}, {g0.data(), g1.data()});
      if (squares) {
        CHECK(r.status == Status::out_of_range);
        CHECK(r.bad_param == 1);
        CHECK(state_bits(opt) == before);
        CHECK(w0 == w0_before);
      } else {
        CHECK(r.status == Status::ok);
      }
      for (float x : w0)
        CHECK(std::isfinite(x));
    };
    run("sgd", sgd(), false);
    run("adamw", adamw(), true);
    run("muon", muon(), false);
    run("muadam", muadam(), true);
    run("normuon", normuon(), false);
    run("adamuon", adamuon(), true);  // its second moment holds u² in float (its input is O, but
                                      // ScaleBySecondMoment declares the bound wherever it sits)
    run("freon", freon(), false);
    run("kaon", kaon(), false);
    run("da_muon", da_muon(), false);
    run("sc_muon", sc_muon(), false);
    run("df_muon", df_muon(), false);
    run("namo", namo(), false);
    run("namo_d", namo_d(), false);
    run("dion2", dion2(), false);
    run("nordion2", nordion2(), false);
    run("dion", dion(), false);
    run("mop", mop(), false);
    run("scion", scion(), false);
    run("muon_hyperball", muon_hyperball(), false);
    run("lion", lion(), false);  // 1e30 is within Lion's own limit (below)
    run("spel", spel(), false);
    run("schatten_muon", schatten_muon(adaptive_schatten(false)), false);
    run("schatten_muon_moment", schatten_muon(adaptive_schatten(true)), true);
    // Lion's limit is 2^126 (|g − m| must stay a float, ScaleByLion): gradients of ±2^126 that
    // flip sign every step keep m finite; 1e38 is refused before anything changes.
    {
      const auto lr = lion();
      auto ls = lr.init({1, 2});
      auto& mu = std::get<0>(static_cast<decltype(ls)::Base&>(ls)).mu;
      std::vector<float> lw = {1, 2};
      for (int t = 0; t < 4; ++t) {
        const float x = t % 2 ? 8.507059e37f : -8.507059e37f;  // 2^126
        std::vector<float> lg = {x, -x};
        REQUIRE(lr.update(Block(lg.data(), 1, 2), ls, ConstBlock(lw.data(), 1, 2)) == Status::ok);
        CHECK(std::isfinite(mu[0]));
        CHECK(std::isfinite(mu[1]));
      }
      const std::vector<float> mu_before = mu.to_vector();
      std::vector<float> lg = {1e38f, 0.0f};
      CHECK(lr.update(Block(lg.data(), 1, 2), ls, ConstBlock(lw.data(), 1, 2)) == Status::out_of_range);
      CHECK(mu.to_vector() == mu_before);
      CHECK(lr.max_gradient() == 8.507059173023462e37);
    }
    // The same refusal from a chain stepped on its own.
    const auto rule = adamw();
    auto st = rule.init({1, 3});
    std::vector<float> w = {1, 2, 3}, g = {0.0f, -1e30f, 0.0f};
    CHECK(rule.update(Block(g.data(), 1, 3), st, ConstBlock(w.data(), 1, 3)) == Status::out_of_range);
    CHECK(std::get<0>(static_cast<decltype(st)::Base&>(st)).count == 0);  // nothing advanced
    CHECK(rule.max_gradient() == 9223372036854775808.0);
    CHECK(muon().max_gradient() == double(std::numeric_limits<float>::max()) / 2.0);  // its momentum's
  }

  TEST_CASE("sgd's sum-form momentum: a gradient bound that holds over all steps") {
    // The sum form's buffer grows to |G|/(1 − β), and sgd's chain has no precheck to refuse a
    // grown buffer, so its gradient bound is TraceMomentum::sum_form_bound() (1.7e37 at β = 0.9
    // in fp32). Before it, gradients of 8e37 (within the per-step bound 8.95e37) overflowed the
    // buffer and the parameters to ±∞ at step 5, every step reporting ok. Now: 300 steps of
    // gradients at the bound, all of one sign (the buffer's worst case), stay finite, in each
    // storage, with and without Nesterov; 8e37 is refused before anything changes.
    for (const StateStorage storage :
         {StateStorage(Precision::fp32), StateStorage(Precision::bf16), StateStorage::bf16_stochastic()}) {
      for (const bool nesterov : {false, true}) {
        CAPTURE(std::string(to_string(storage)));
        CAPTURE(nesterov);
        SgdOptions o;
        o.momentum = 0.9;
        o.nesterov = nesterov;
        o.mu_storage = storage;
        const auto rule = sgd(o);
        const double bound = TraceMomentum::sum_form_bound(0.9, nesterov, storage);
        CHECK(rule.max_gradient() == std::min(bound, double(kBf16Max)));
        CHECK(bound > 1e37);  // the bound costs nothing a training run reaches
        // The limit for the shape: the bound behind AddDecayedWeights (λ = 0), whose declared
        // bound carries the bounds' slack of 2⁻¹⁶ (rule.hpp, kUpdateBoundSlack; Finding 130).
        const double shaped = max_gradient_of(rule, BlockShape{3, 4});
        CHECK(shaped <= bound);
        CHECK(shaped >= bound * (1.0 - 0x1p-15));
        const float g_max = static_cast<float>(shaped);  // a float: Chain::max_gradient(s)
        CHECK(double(g_max) == shaped);
        const std::vector<ParamSpec> ps = {{"w", {3, 4}}};
        auto opt = optim::partition(ps, {"sgd"}, route("sgd", rule));
        REQUIRE(opt.init());
        std::vector<float> w(12, 0.5f);
        for (int t = 0; t < 300; ++t) {
          std::vector<float> g(12, g_max);
          const StepReport r = opt.step({w.data()}, {g.data()});
          REQUIRE(r.status == Status::ok);
        }
        CHECK(non_finite_state(opt) == "");
        for (float x : w)
          CHECK(std::isfinite(x));
        const auto before = state_bits(opt);
        const std::vector<float> w_before = w;
        std::vector<float> g(12, 1.0f);
        g[11] = 8e37f;
        const StepReport r = opt.step({w.data()}, {g.data()});
        CHECK(r.status == Status::out_of_range);
        CHECK(state_bits(opt) == before);
        CHECK(w == w_before);
      }
    }
  }

  TEST_CASE("a NaN or Inf in a parameter is refused before it reaches any state") {
    // Before, a non-finite parameter was stepped with status ok: sgd's coupled decay carried a
    // NaN into its momentum (back in the parameter after the caller repaired it), DF-Muon's
    // curvature estimate became NaN and refused every later step, DA-Muon's distance became ∞
    // for good. Now the step is refused (non_finite_input, under either NaN policy), nothing
    // changes, and after the repair the run continues bit for bit as if the bad step had never
    // been tried.
    SgdOptions so;
    so.momentum = 0.9;
    so.weight_decay = 0.01;
    const auto check = [&](const char* name, auto rule) {
      CAPTURE(std::string(name));
      for (const NonFinitePolicy policy : {NonFinitePolicy::error, NonFinitePolicy::skip}) {
        for (const float poison :
             {std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::infinity()}) {
          const std::vector<ParamSpec> ps = {{"a", {6, 4}}, {"b", {5, 3}}};
          auto opt = optim::partition(ps, {"r", "r"}, route("r", rule));
          auto twin = optim::partition(ps, {"r", "r"}, route("r", rule));
          opt.set_non_finite_policy(policy);
          REQUIRE(opt.init());
          REQUIRE(twin.init());
          std::vector<float> a = schatten::test::random_vec(24, case_seed("param_nan_a"));
          std::vector<float> b = schatten::test::random_vec(15, case_seed("param_nan_b"));
          std::vector<float> a2 = a, b2 = b;
          const auto grads = [](std::uint64_t salt) {
            return std::make_pair(schatten::test::random_vec(24, case_seed("param_nan_ga", salt)),
                                  schatten::test::random_vec(15, case_seed("param_nan_gb", salt)));
          };
          auto [ga, gb] = grads(1);
          REQUIRE(opt.step({a.data(), b.data()}, {ga.data(), gb.data()}));
          std::tie(ga, gb) = grads(1);
          REQUIRE(twin.step({a2.data(), b2.data()}, {ga.data(), gb.data()}));
          const auto before = state_bits(opt);
          const float kept = b[14];
          b[14] = poison;
          std::tie(ga, gb) = grads(2);
          const StepReport r = opt.step({a.data(), b.data()}, {ga.data(), gb.data()});
          CHECK(r.status == Status::non_finite_input);
          CHECK_FALSE(r.skipped);
          CHECK(r.bad_param == 1);
          CHECK(std::string(r.message).find("parameter 'b'") != std::string::npos);
          CHECK(state_bits(opt) == before);
          CHECK(a == a2);
          b[14] = kept;  // repaired: the run goes on as the twin's
          CHECK(b == b2);
          for (std::uint64_t t = 2; t < 5; ++t) {
            std::tie(ga, gb) = grads(t);
            REQUIRE(opt.step({a.data(), b.data()}, {ga.data(), gb.data()}));
            std::tie(ga, gb) = grads(t);
            REQUIRE(twin.step({a2.data(), b2.data()}, {ga.data(), gb.data()}));
          }
          CHECK(a == a2);
          CHECK(b == b2);
          CHECK(state_bits(opt) == state_bits(twin));
        }
      }
    };
    check("sgd", sgd(so));
    check("adamw", adamw());
    check("muon", muon());
    check("muon_hyperball", muon_hyperball());
    check("da_muon", da_muon());
    check("df_muon", df_muon());
    // The gradient scan's refusals name the parameter too (they gave only bad_param before).
    const std::vector<ParamSpec> ps = {{"a", {2, 2}}, {"b", {3}}};
    auto opt = optim::partition(ps, {"r", "r"}, route("r", adamw()));
    REQUIRE(opt.init());
    std::vector<float> a(4, 1.0f), b(3, 1.0f), ga(4, 0.5f), gb = {0.5f, std::nanf(""), 0.5f};
    StepReport r = opt.step({a.data(), b.data()}, {ga.data(), gb.data()});
    CHECK(r.status == Status::non_finite_input);
    CHECK(std::string(r.message) == "gradient of 'b' contains NaN or Inf");
    gb = {0.5f, 1e30f, 0.5f};  // beyond Adam's 2^63
    r = opt.step({a.data(), b.data()}, {ga.data(), gb.data()});
    CHECK(r.status == Status::out_of_range);
    CHECK(std::string(r.message).find("gradient of 'b' too large") == 0);
    opt.set_non_finite_policy(NonFinitePolicy::skip);
    gb = {0.5f, std::nanf(""), 0.5f};
    r = opt.step({a.data(), b.data()}, {ga.data(), gb.data()});
    CHECK(r.skipped);
    CHECK(std::string(r.message) == "step skipped: gradient of 'b' contains NaN or Inf");
  }

  TEST_CASE("an update that would carry a parameter beyond the float range is refused and changes nothing") {
    // Weight decay that overshoots (lr·λ = 3: W ← −2W − lr·d each step for the decoupled
    // decay) makes the weights grow geometrically until W + u leaves the float range. Before,
    // that step stored ±Inf with ok: the states had advanced and the parameter was lost (the
    // next step refused it). Now, for the routes whose states are copied (those that may fail
    // and are not prechecked: freon, mop's QDWH; and, with λ = 3, every route whose update
    // bound lr·(direction + λ·8.5e37) exceeds 2.55e38: rule.hpp, update_bound) step_fallible()
    // tests W + u itself and refuses the step that would overflow; for the others (λ = 2.5,
    // whose bound stays below 2.55e38) the scan of the parameters refuses weights beyond
    // FLT_MAX/4 before any state changes. Either way the
    // refusal is out_of_range, names the parameter, and leaves every parameter and every state,
    // the AdamW route's included, as before; every accepted step left them finite. Host and
    // device partitions, batched and not (a and b form a group).
    using DeviceVec = Kokkos::View<float*, Kokkos::DefaultExecutionSpace::memory_space>;
    using HostView = Kokkos::View<float*, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
    // guarded: the route's states are copied (the test of W + u); else the parameters' limit.
    // With set_copy_all_states every route is guarded.
    int guarded_routes = 0, unguarded_routes = 0;
    const auto check = [&](const char* name, auto rule) {
      CAPTURE(std::string(name));
      auto probe = optim::partition(std::vector<ParamSpec>{{"a", {6, 4}}}, {"r"}, route("r", rule));
      REQUIRE(probe.init());
      const bool copied = probe.memory_use().backups > 0;
      ++(copied ? guarded_routes : unguarded_routes);
      for (const bool copy_all : {false, true})
        for (const MemoryKind memory : {MemoryKind::host, MemoryKind::device})
          for (const bool batching : {true, false}) {
            const bool guarded = copied || copy_all;
            CAPTURE(copy_all);
            CAPTURE(guarded);
            CAPTURE(memory == MemoryKind::device);
            CAPTURE(batching);
            const std::vector<ParamSpec> ps = {{"a", {6, 4}}, {"b", {6, 4}}, {"c", {5}}};
            auto opt = optim::partition(ps, {"r", "r", "adam"}, route("r", rule), route("adam", adamw()));
            opt.set_batching(batching);
            opt.set_copy_all_states(copy_all);
            REQUIRE(opt.init(memory));
            const std::uint64_t seed = case_seed("overflowing_update", memory == MemoryKind::device);
            INFO("seed " << seed);
            std::vector<std::vector<float>> w = {schatten::test::random_vec(24, seed, 1e36),
                                                 schatten::test::random_vec(24, seed + 1, 1e36),
                                                 schatten::test::random_vec(5, seed + 2)};
            std::vector<DeviceVec> dw(3), dg(3);
            for (std::size_t i = 0; i < 3; ++i) {
              dw[i] = DeviceVec("w", w[i].size());
              dg[i] = DeviceVec("g", w[i].size());
              Kokkos::deep_copy(dw[i], HostView(w[i].data(), w[i].size()));
            }
            const auto weights = [&] {  // the parameters as they are now, on the host
              if (memory == MemoryKind::device)
                for (std::size_t i = 0; i < 3; ++i)
                  Kokkos::deep_copy(HostView(w[i].data(), w[i].size()), dw[i]);
              return w;
            };
            int refused = 0, steps = 0;
            for (std::uint64_t t = 0; t < 40 && refused == 0; ++t) {
              std::vector<std::vector<float>> g = {schatten::test::random_vec(24, seed + 10 * t + 3),
                                                   schatten::test::random_vec(24, seed + 10 * t + 4),
                                                   schatten::test::random_vec(5, seed + 10 * t + 5)};
              std::vector<float*> pp = pointers(w), gp = pointers(g);
              if (memory == MemoryKind::device)
                for (std::size_t i = 0; i < 3; ++i) {
                  Kokkos::deep_copy(dg[i], HostView(g[i].data(), g[i].size()));
                  pp[i] = dw[i].data();
                  gp[i] = dg[i].data();
                }
              const auto before = state_bits(opt);
              const std::vector<std::vector<float>> w_before = weights();
              const StepReport r = opt.step(pp, gp);
              if (r) {
                ++steps;
                for (const auto& v : weights())
                  for (float x : v)
                    REQUIRE(std::isfinite(x));
                CHECK(non_finite_state(opt).empty());
                continue;
              }
              ++refused;
              CAPTURE(r.message);
              CHECK(r.status == Status::out_of_range);
              CHECK_FALSE(r.skipped);
              CHECK((r.bad_param == 0 || r.bad_param == 1));
              const std::string message = r.message;
              CHECK(message.find(guarded ? "beyond the float range" : "beyond 8.5e37") != std::string::npos);
              CHECK(std::string(r.message).find(r.bad_param == 0 ? "parameter 'a'" : "parameter 'b'") !=
                    std::string::npos);
              CHECK(state_bits(opt) == before);
              CHECK(weights() == w_before);
            }
            CHECK(refused == 1);
            CHECK(steps >= 2);  // from 1e36 the weights double per step: 6 to 8 steps to the limits
          }
    };
    // lr 1 and λ in each preset's own options: the weights grow by |1 − λ| per step.
    const auto overshooting = [](auto o, double lambda) {
      o.lr = Schedule::constant(1.0);
      o.weight_decay = lambda;
      return o;
    };
    check("freon", freon(overshooting(FreonOptions{}, 3.0)));
    check("mop", mop(overshooting(MopOptions{}, 3.0)));
    check("sgd", sgd(overshooting(SgdOptions{}, 3.0)));
    check("adamw", adamw(overshooting(AdamWOptions{}, 3.0)));
    check("lion", lion(overshooting(LionOptions{}, 3.0)));
    check("muon", muon(overshooting(MuonOptions{}, 3.0)));
    check("kaon", kaon(overshooting(KaonOptions{}, 3.0)));
    check("muadam", muadam(overshooting(MuAdamOptions{}, 3.0)));
    check("schatten_muon", schatten_muon(overshooting(SchattenMuonOptions{}, 3.0)));
    check("dion2", dion2(overshooting(Dion2Options{}, 3.0)));
    CHECK(unguarded_routes == 0);  // λ = 3: every route's bound exceeds 2.55e38
    check("lion λ 2.5", lion(overshooting(LionOptions{}, 2.5)));
    check("adamw λ 2.5", adamw(overshooting(AdamWOptions{}, 2.5)));
    check("muon λ 2.5", muon(overshooting(MuonOptions{}, 2.5)));
    check("dion2 λ 2.5", dion2(overshooting(Dion2Options{}, 2.5)));
    CHECK(guarded_routes == 10);  // both tests were reached
    CHECK(unguarded_routes == 4);
    // A gradient within the momentum's bound, through muon with the nuclear-norm scale
    // (dual_norm_scale: u ∝ ‖M‖_*, not bounded by lr and the shape factor): u itself overflowed
    // to −Inf after the shape factor √34 and was stored with ok (a fuzzer's find, 2026-12-07:
    // 34 × 1 block, lr 1, momentum 0, g = 1e38). The route keeps copies, so the test of W + u
    // refuses it now; 1e37 still steps (w = −5.8e37).
    MuonOptions dual;
    dual.lr = Schedule::constant(1.0);
    dual.momentum = 0.0;
    dual.polar = MopOptions::nuclear_polar();
    auto opt = optim::partition(std::vector<ParamSpec>{{"v", {34, 1}}}, {"r"}, route("r", muon(dual)));
    REQUIRE(opt.init());
    std::vector<float> w(34, 0.0f), g(34, 1e37f);
    REQUIRE(opt.step({w.data()}, {g.data()}));
    for (float x : w)
      CHECK(std::isfinite(x));
    const auto before = state_bits(opt);
    const std::vector<float> w_before = w;
    g.assign(34, 1e38f);
    const StepReport r = opt.step({w.data()}, {g.data()});
    CHECK(r.status == Status::out_of_range);
    CHECK(std::string(r.message).find("parameter 'v' would carry it beyond the float range") !=
          std::string::npos);
    CHECK(state_bits(opt) == before);
    CHECK(w == w_before);
    // AdamW whose hyper-parameters let u overflow (rule.hpp, update_may_overflow): its first
    // step is lr·(±1 + λW) for each entry, 3.4e38 × 1.01 = ∞ in float. Its route keeps copies
    // by default (memory_use(): its two moments), so the step is refused, nothing changed.
    // Before, the route kept none and stored ∞ with ok unless set_copy_all_states was on.
    AdamWOptions huge;
    huge.lr = Schedule::constant(3.4e38);
    huge.weight_decay = 0.02;
    auto all = optim::partition(std::vector<ParamSpec>{{"x", {3, 4}}}, {"r"}, route("r", adamw(huge)));
    REQUIRE(all.init());
    CHECK(all.memory_use().backups == 2 * 12 * sizeof(float));
    std::vector<float> x(12, 0.5f), gx(12, 1.0f);
    const auto all_before = state_bits(all);
    const StepReport ra = all.step({x.data()}, {gx.data()});
    CHECK(ra.status == Status::out_of_range);
    CHECK(state_bits(all) == all_before);
    CHECK(x == std::vector<float>(12, 0.5f));
    // An update that overflows by itself on a route that kept no copy before the rules'
    // bounds (rule.hpp, update_bound): Lion, lr·(sign + λW) = 3.4e38 × 1.01 = ∞, stored with ok
    // until 2026-12-07 unless set_copy_all_states was on. Its bound, 3.4e38·(1 + 0.02·8.5e37),
    // makes the route keep a copy of m by default now: the step is refused, nothing changed.
    LionOptions lion_huge;
    lion_huge.lr = Schedule::constant(3.4e38);
    lion_huge.weight_decay = 0.02;
    auto lion_all =
        optim::partition(std::vector<ParamSpec>{{"x", {3, 4}}}, {"r"}, route("r", lion(lion_huge)));
    REQUIRE(lion_all.init());
    CHECK(lion_all.memory_use().backups == 12 * sizeof(float));
    const auto lion_before = state_bits(lion_all);
    std::vector<float> gl(12, 1.0f);  // (the refused step above left its update in gx)
    const StepReport rl = lion_all.step({x.data()}, {gl.data()});
    CHECK(rl.status == Status::out_of_range);
    CHECK(state_bits(lion_all) == lion_before);
    CHECK(x == std::vector<float>(12, 0.5f));
    // SGD with momentum 0 at lr 2: its gradient limit is FLT_MAX/2 (TraceMomentum's sum form),
    // so 1.6e38 is accepted and u = −3.2e38, which carries a weight of −8.4e37 to −∞. Before
    // the bounds that stored −∞ with ok (the momentum buffer advanced); now the bound
    // 2·1.7e38 makes the route keep a copy of its buffer and the step is refused. lr 1.4 stays
    // within 2.55e38: no copy, as before.
    SgdOptions sgd_big;
    sgd_big.lr = Schedule::constant(2.0);
    auto sgd_opt = optim::partition(std::vector<ParamSpec>{{"s", {2, 3}}}, {"r"}, route("r", sgd(sgd_big)));
    REQUIRE(sgd_opt.init());
    CHECK(sgd_opt.memory_use().backups == 6 * sizeof(float));
    std::vector<float> ws(6, -8.4e37f), gs(6, 1.6e38f);
    const auto sgd_before = state_bits(sgd_opt);
    const StepReport rs = sgd_opt.step({ws.data()}, {gs.data()});
    CHECK(rs.status == Status::out_of_range);
    CHECK(std::string(rs.message).find("beyond the float range") != std::string::npos);
    CHECK(state_bits(sgd_opt) == sgd_before);
    CHECK(ws == std::vector<float>(6, -8.4e37f));
    sgd_big.lr = Schedule::constant(1.4);
    auto sgd_ok = optim::partition(std::vector<ParamSpec>{{"s", {2, 3}}}, {"r"}, route("r", sgd(sgd_big)));
    REQUIRE(sgd_ok.init());
    CHECK(sgd_ok.memory_use().backups == 0);
  }

  TEST_CASE("normalize_neurons: a row mean square beyond the float range leaves the moment finite") {
    // NormalizeNeurons keeps each row's mean square in float (ν). A row of entries 1e30 gave
    // ν = ∞ with ok, and the next step's ν + w₂(mean − ν) = NaN, with a NaN weight and ok
    // (found by the update_bound test below, 2026-12-07; a bare rule or one behind a rule that
    // passes large values: behind the polar factor, as in normuon, it never sees them). A mean
    // beyond FLT_MAX now counts as FLT_MAX [P]: every step is taken, ν and the weights stay
    // finite, and the output's Frobenius norm is at most the input's (update_bound's premise).
    auto opt = optim::partition(
        std::vector<ParamSpec>{{"n", {3, 3}}}, {"r"},
        route("r", chain(NormalizeNeurons{}, ScaleByLearningRate{Schedule::constant(1e-3)})));
    REQUIRE(opt.init());
    std::vector<float> w(9);
    for (int t = 0; t < 4; ++t) {
      w.assign(9, 0.0f);  // NormalizeNeurons reads no weight: from 0, the step is u itself
      std::vector<float> g(9, t < 2 ? 1e30f : 1.0f);
      g[0] = t == 0 ? 3e-20f : g[0];  // rows of mixed scale: the norm restoration then matters
      double in_norm = 0.0;
      for (float x : g)
        in_norm += double(x) * double(x);
      REQUIRE(opt.step({w.data()}, {g.data()}));
      CHECK(non_finite_state(opt).empty());
      double out_norm = 0.0;
      for (float x : w) {
        REQUIRE(std::isfinite(x));
        out_norm += double(x) * double(x);
      }
      // The step is −lr times a block of at most the input's norm, ‖O‖·‖O‖/(‖O‖ + ε) after
      // the row scaling, to float rounding (relative 1e-5 covers the float row factors and the
      // products with lr, a few units of 2⁻²⁴ each); equal to it while the scaled norm is far
      // above ε = 1e-10 (the two steps of 1e30). After them the moments, saturated near
      // FLT_MAX, decay by β₂ per step and scale rows of 1 to a norm far below ε, as they
      // would after any huge input: a small step, not a lost one.
      CHECK(std::sqrt(out_norm) <= 1e-3 * std::sqrt(in_norm) * (1.0 + 1e-5));
      if (t < 2) CHECK(std::sqrt(out_norm) == doctest::Approx(1e-3 * std::sqrt(in_norm)).epsilon(1e-5));
    }
  }

  TEST_CASE("update bounds: the fuzzer's cases of ok steps with non-finite weights or states") {
    // A randomized fuzzer of the partition against the update bounds (2026-12-07, 20,464
    // configurations, 708,861 steps; a helper's throwaway driver) found ok steps leaving a NaN
    // or ∞ weight or state, each reproduced here at the settings it found: an OnWeights bound
    // that ignored the float W + u inside F(W + u) − W (A); float factors of ScaleToRms (B) and
    // ScaleByShape (C) that were ∞ where the bound was finite; a NormalizeNeurons ε below
    // 1/FLT_MAX (D, now refused by check()); and Dion2's M + G overflowing where no precheck
    // ran, its routes having copies (F: through its bound, or set_prechecks(false)). Each
    // step must now be ok with every weight and state finite, or refused with nothing changed.
    const float K = 0.99f * static_cast<float>(kUnguardedParameter);
    int steps = 0, refusals = 0;
    const auto run = [&](const char* name, auto rule, BlockShape s, float w0, std::vector<float> gs,
                         bool prechecks = true) {
      CAPTURE(std::string(name));
      auto opt = optim::partition(std::vector<ParamSpec>{{"p", {s.rows, s.cols}}}, {"r"}, route("r", rule));
      opt.set_prechecks(prechecks);
      REQUIRE(opt.init());
      const auto n = static_cast<std::size_t>(s.size());
      std::vector<float> w(n, w0);
      for (float gv : gs) {
        CAPTURE(gv);
        std::vector<float> g(n, gv);
        const std::vector<float> w_before = w;
        const auto before = state_bits(opt);
        const StepReport r = opt.step({w.data()}, {g.data()});
        if (r) {
          ++steps;
          for (float x : w)
            CHECK(std::isfinite(x));
          CHECK(non_finite_state(opt).empty());
        } else {
          ++refusals;
          CHECK(w == w_before);
          CHECK(state_bits(opt) == before);
        }
      }
    };
    // A: before, bound 8.5e37 and no copy; W + u = ∞ inside, W = NaN with ok.
    run("scale_to_norm_weights", chain(ScaleToNormWeights{}), {1, 1}, K, {3e38f});
    MuonHyperballOptions hb;
    hb.lr = Schedule::constant(2.9e38);
    hb.weight_decay = 0.0;
    run("muon_hyperball lr 2.9e38", muon_hyperball(hb), {1, 1}, K, {-1.0f});
    CHECK(update_may_overflow_of(muon_hyperball(hb), BlockShape{1, 1}));
    // B: a zero block times the float factor ∞ was NaN.
    run("scale_to_rms eps 1e-38", chain(ScaleToRms{10.0, 1e-38}), {1, 1}, 1.0f, {0.0f, 1e-30f});
    AdaMuonOptions am;
    am.rms = 1e31;
    run("adamuon rms 1e31", adamuon(am), {4, 4}, 1.0f, {0.0f, 1.0f});
    // C: a multiplier of 1.6e39 was the float ∞ behind a bound of 4e35.
    run("scale_by_shape extra 1e38",
        chain(ClipByNorm{1e-3}, ScaleByShape{ScaleByShape::Rule::spectral, 1e38}), {16, 16}, 1.0f, {1.0f});
    // D: ε = 1e-39 is refused; the smallest accepted ε steps with finite values.
    auto tiny = optim::partition(std::vector<ParamSpec>{{"p", {4, 4}}}, {"r"},
                                 route("r", chain(ClipByNorm{1.0}, NormalizeNeurons{0.95, 1e-39})));
    const StepReport ti = tiny.init();
    CHECK(ti.status == Status::invalid_argument);
    CHECK(std::string(ti.message).find("eps must be at least 1/FLT_MAX") != std::string::npos);
    run("normalize_neurons eps 3e-39", chain(ClipByNorm{1.0}, NormalizeNeurons{0.95, 3e-39}), {4, 4}, 1.0f,
        {1e-30f, 1.0f});
    // F: three gradients of 1.7e38 overflow M + G at the second; with lr·λ = 3 the route keeps
    // copies and is still prechecked (refused at the precheck), and without prechecks the rule
    // refuses M + G itself. Before: ok with an infinite M.
    Dion2Options d2;
    d2.weight_decay = 3.0;
    d2.lr = Schedule::constant(1.0);
    run("dion2 lr 1 λ 3", dion2(d2), {4, 4}, 1.0f, {1.7e38f, 1.7e38f, 1.7e38f});
    run("dion2 without prechecks", dion2(), {4, 4}, 1.0f, {1.7e38f, 1.7e38f, 1.7e38f}, false);
    run("nordion2 without prechecks", nordion2(), {4, 4}, 1.0f, {1.7e38f, 1.7e38f, 1.7e38f}, false);
    CHECK(steps >= 8);
    CHECK(refusals >= 3);
  }

  TEST_CASE("a chain's gradient limit accounts for rules that amplify what reaches a limited state") {
    // chain(ScaleByLearningRate{1e10}, ScaleByAdam) took gradients up to Adam's 2^63, so that
    // g = 1e18 reached Adam as 1e28, whose square is not a float: v = ∞ was stored with ok (the
    // update itself finite, so the exact W + u test of its copied state passed; a fuzzer,
    // 2026-12-07). The chain's limit for a shape (Chain::max_gradient(s)) now follows from the
    // bounds of the rules before each limited one: 2^63/1e10 here. Refused before anything
    // changes, by a partition and by the bare chain; a gradient within the limit steps with
    // finite states. Lion's m (limit 2^126) behind the same factor likewise.
    const BlockShape s{2, 2};
    const auto amplified = chain(ScaleByLearningRate{Schedule::constant(1e10)}, ScaleByAdam{});
    const double limit = max_gradient_of(amplified, s);
    CHECK(limit <= kSquaredStateMaxGradient / 1e10);
    CHECK(limit >= kSquaredStateMaxGradient / 1e10 * (1.0 - 1e-4));  // the bounds' slack, 2⁻¹⁶ a rule
    CHECK(max_gradient_of(amplified) == kSquaredStateMaxGradient);   // the shape-free limit, as before
    const auto lion_amplified = chain(ScaleByLearningRate{Schedule::constant(1e10)}, ScaleByLion{},
                                      ScaleByLearningRate{Schedule::constant(1e-3)});
    CHECK(max_gradient_of(lion_amplified, s) <= 8.507059173023462e37 / 1e10);
    const auto run = [&](const char* name, auto rule, float big, float fine) {
      CAPTURE(std::string(name));
      auto opt = optim::partition(std::vector<ParamSpec>{{"p", {2, 2}}}, {"r"}, route("r", rule));
      REQUIRE(opt.init());
      std::vector<float> w(4, 1.0f), g(4, big);
      const auto before = state_bits(opt);
      const StepReport r = opt.step({w.data()}, {g.data()});
      CHECK(r.status == Status::out_of_range);
      CHECK(state_bits(opt) == before);
      CHECK(w == std::vector<float>(4, 1.0f));
      g.assign(4, fine);
      REQUIRE(opt.step({w.data()}, {g.data()}));
      CHECK(non_finite_state(opt).empty());
      for (float x : w)
        CHECK(std::isfinite(x));
      // The bare chain refuses the same gradient, its state untouched.
      auto state = rule.init(s);
      std::vector<float> u(4, big);
      const std::vector<float> p(4, 1.0f);
      CHECK(rule.update(Block(u.data(), 2, 2), state, ConstBlock(p.data(), 2, 2)) == Status::out_of_range);
      CHECK(u == std::vector<float>(4, big));
    };
    run("lr then adam", amplified, 1e18f, 9e8f);
    run("lr then lion", lion_amplified, 1e30f, 8e27f);
    // A nested chain's own limit for the shape counts too. Before, the outer chain took the
    // inner's plain limit (2^63): its bound from there was infinite, so the route kept copies of
    // its states and the inner chain's scan refused 1e18 after Nesterov's m had moved (restored
    // from the copies). Now the route's limit is the inner's for the shape behind the momentum
    // (whose bound is about in·1 without bias correction): 2^63/1e10 less the bounds' slack, no
    // copy is kept, and the scan refuses 1e18 before anything changes.
    const auto nested = chain(TraceMomentum{}, amplified, ScaleByLearningRate{Schedule::constant(1e-20)});
    const double nested_limit = max_gradient_of(nested, s);
    CHECK(nested_limit <= limit);
    CHECK(nested_limit >= limit * (1.0 - 1e-4));
    {
      auto probe = optim::partition(std::vector<ParamSpec>{{"p", {2, 2}}}, {"r"}, route("r", nested));
      REQUIRE(probe.init());
      CHECK(probe.memory_use().backups == 0);
    }
    run("momentum then a nested chain", nested, 1e18f, 9e8f);
    // The presets' limits are unchanged for their shapes, but for sgd, whose momentum receives
    // g + λW: lowered by about λ·8.5e37.
    const BlockShape gpt2{768, 3072};
    CHECK(max_gradient_of(muon(), gpt2) == max_gradient_of(muon()));
    CHECK(max_gradient_of(adamw(), gpt2) == max_gradient_of(adamw()));
    CHECK(max_gradient_of(adamuon(), gpt2) == max_gradient_of(adamuon()));
    CHECK(max_gradient_of(lion(), gpt2) == max_gradient_of(lion()));
    CHECK(max_gradient_of(normuon(), gpt2) == max_gradient_of(normuon()));
    CHECK(max_gradient_of(dion2(), gpt2) == max_gradient_of(dion2()));
    CHECK(max_gradient_of(muadam(), gpt2) == max_gradient_of(muadam()));
    CHECK(max_gradient_of(kaon(), gpt2) == max_gradient_of(kaon()));
    CHECK(max_gradient_of(freon(), gpt2) == max_gradient_of(freon()));
    // sgd's momentum sits behind AddDecayedWeights, whose bound (in + λ·8.5e37) carries the
    // bounds' slack of 2⁻¹⁶ (rule.hpp, kUpdateBoundSlack): without decay its limit is lowered by
    // that relative amount only.
    const double sgd_plain = max_gradient_of(sgd()), sgd_shaped = max_gradient_of(sgd(), gpt2);
    CHECK(sgd_shaped <= sgd_plain);
    CHECK(sgd_shaped >= sgd_plain * (1.0 - 0x1p-15));
    SgdOptions decayed;
    decayed.weight_decay = 0.01;
    const double plain = max_gradient_of(sgd(decayed)), shaped = max_gradient_of(sgd(decayed), gpt2);
    CHECK(shaped < plain);
    CHECK(shaped == doctest::Approx(plain - 0.01 * kUnguardedParameter).epsilon(1e-4));
    // Where the parameters' share alone may exceed the momentum's limit (λ·8.5e37 ≥ 1.7e38), no
    // gradient limit helps: the plain one stands (the exact W + u test behind it).
    decayed.weight_decay = 2.5;
    CHECK(max_gradient_of(sgd(decayed), gpt2) == max_gradient_of(sgd(decayed)));
  }

  TEST_CASE("update_bound: each rule's output stays within its declared bound") {
    // rule.hpp, update_bound: for inputs whose entries are at most `in` at every step,
    // parameters within kUnguardedParameter (8.5e37) and states the rule wrote, every |entry| of
    // the output is at most update_bound_of(rule, in, shape), which a Partition compares with
    // 2.55e38 to decide whether a route keeps copies (update_may_overflow_of). A bound too small
    // would let W + u overflow on a route without copies. Each rule and preset runs 40 steps on
    // three shapes and three input levels (1, 1e30 and its gradient limit, each at most that
    // limit and 1e38), with
    // inputs chosen to reach the bounds: a fixed sign pattern at ±in (momenta grow towards their
    // limit), a random fraction of in, then 1e-30 and the denormal 1e-40 (after large inputs,
    // the second moments of Adam and AdaMuon divide by about ε), and weights at ±0.99·8.5e37
    // with the pattern's signs (the decays add λW in the step's direction). Checked: a declared
    // bound, a finite output where the bound is finite, and max|u| ≤ bound. The rules without a
    // bound (SpectralPower, SpectralClip, RadialBrake: they may fail without a precheck, so
    // their routes keep copies anyway) make no claim (NaN).
    const double K = kUnguardedParameter;
    const auto probe = [&](const char* name, const auto& rule) {
      CAPTURE(std::string(name));
      for (const BlockShape s : {BlockShape{1, 9}, BlockShape{7, 3}, BlockShape{12, 12}}) {
        CAPTURE(s.rows);
        CAPTURE(s.cols);
        const auto n = static_cast<std::size_t>(s.size());
        const std::uint64_t seed = case_seed(name, static_cast<std::uint64_t>(s.rows * 100 + s.cols));
        INFO("seed " << seed);
        Rng rng(seed);
        std::vector<float> sign(n), w(n);
        for (std::size_t k = 0; k < n; ++k) {
          sign[k] = rng.normal() < 0.0 ? -1.0f : 1.0f;
          w[k] = sign[k] * static_cast<float>(0.99 * K);
        }
        const double cap = std::min(max_gradient_of(rule, s), 1e38);  // the limit the chain applies
        for (const double in : {1.0, std::min(1e30, cap), cap}) {
          CAPTURE(in);
          const double bound = update_bound_of(rule, in, s);
          REQUIRE_FALSE(std::isnan(bound));
          auto state = rule.init(s);
          double peak = 0.0;
          for (int t = 0; t < 40; ++t) {
            std::vector<float> u(n);
            const int phase = t % 5;
            for (std::size_t k = 0; k < n; ++k) {
              const double m = phase == 3 ? 1e-30 : phase == 4 ? 1e-40 : phase == 2 ? in * rng.uniform() : in;
              u[k] = sign[k] * static_cast<float>(std::min(m, in));
            }
            // A refusal (a rule that may fail: Dion2's M, a sum, outgrows its bound under 40
            // steps of 1e38; schatten_muon's precheck holds g to a bound of the shape, 9.3e32
            // for 768 × 3072) ends the run; the bound is about the outputs of accepted steps.
            const Status st =
                rule.update(Block(u.data(), s.rows, s.cols), state, ConstBlock(w.data(), s.rows, s.cols));
            if (st != Status::ok) {
              REQUIRE(rule_may_fail<std::decay_t<decltype(rule)>>::value);
              break;
            }
            for (float x : u) {
              if (bound <= double(FLT_MAX)) REQUIRE(std::isfinite(x));
              peak = std::max(peak, double(std::fabs(x)));
            }
          }
          CHECK(peak <= bound);
        }
      }
    };
    probe("trace_momentum sum", TraceMomentum{0.9, false, TraceMomentum::Form::sum});
    probe("trace_momentum sum nesterov bf16",
          TraceMomentum{0.9, true, TraceMomentum::Form::sum, false, Precision::bf16});
    probe("trace_momentum ema nesterov", TraceMomentum{0.95, true, TraceMomentum::Form::ema});
    probe("trace_momentum ema bias-corrected", TraceMomentum{0.9, true, TraceMomentum::Form::ema, true});
    ScaleByAdam adam;
    adam.b1 = 0.5;
    adam.b2 = 0.0;
    adam.eps = 1e-3;
    probe("scale_by_adam", adam);
    probe("adamw_update", AdamWUpdate{0.5, 0.0, 1e-3, 0.5, Schedule::constant(2.0)});
    probe("orthogonalize", Orthogonalize{});
    probe("orthogonalize keller", Orthogonalize{MuonOptions::keller_polar()});
    probe("kaon_spectrum", KaonSpectrum{5});
    probe("muadam_direction", MuAdamDirection{});
    probe("normalize_neurons", NormalizeNeurons{});
    probe("scale_to_norm", ScaleToNorm{2.0, 1e-15});
    ScaleToNormWeights hyper;
    hyper.radius = 2.0;
    probe("scale_to_norm_weights", hyper);
    probe("orthogonalize_weights", OrthogonalizeWeights{});
    RelativeUpdate relative;
    relative.lr = Schedule::constant(0.5);
    relative.weight_decay = 4.0;
    probe("relative_update", relative);
    probe("clip_by_norm", ClipByNorm{3.0});
    probe("scale_by_shape", ScaleByShape{ScaleByShape::Rule::spectral, 2.0});
    probe("scale_to_polar_norm", ScaleToPolarNorm{});
    probe("sign", SignTransform{});
    probe("scale_by_second_moment", ScaleBySecondMoment{0.5, 1e-3});
    probe("scale_to_rms", ScaleToRms{0.2, 1e-8});
    probe("scale_by_lion", ScaleByLion{});
    probe("add_decayed_weights", AddDecayedWeights{0.5});
    probe("add_decayed_weights cautious", AddDecayedWeights{0.5, AddDecayedWeights::Mode::cautious});
    probe("add_independent_decay", AddIndependentDecay{0.5});
    probe("scale_by_learning_rate", ScaleByLearningRate{Schedule::warmup_cosine(2.0, 3, 30, 0.5)});
    probe("distance_aware_step", DistanceAwareStep{0.5, 1e-3, 0.5});
    probe("dion2_direction", Dion2Direction{});
    probe("dion_direction", DionDirection{});
    ScaleCalibratedDirection sc;
    sc.eta_max = 0.5;
    sc.weight_decay = 0.5;
    probe("scale_calibrated_direction", sc);
    MajorizedStep df;
    df.eta_max = 0.5;
    df.weight_decay = 0.5;
    probe("majorized_step", df);
    NamoStep namo_rule;
    namo_rule.lr = Schedule::constant(10.0);  // α past its clamp at 1
    namo_rule.weight_decay = 0.5;
    probe("namo_step", namo_rule);
    probe("namo_d_step", NamoDStep{namo_rule, 0.75});
    // The presets, composed (Chain::update_bound), at hyper-parameters that bring the bounds
    // near 2.55e38 where they can.
    SgdOptions so;
    so.lr = Schedule::constant(1.4);
    so.momentum = 0.9;
    so.weight_decay = 0.1;
    probe("sgd", sgd(so));
    probe("sgd defaults", sgd());
    probe("adamw", adamw());
    probe("lion", lion());
    probe("muon", muon());
    probe("normuon", normuon());
    probe("adamuon", adamuon());
    probe("spel", spel());
    probe("scion", scion());
    probe("muon_hyperball", muon_hyperball());
    probe("muadam", muadam());
    probe("kaon", kaon());
    probe("da_muon", da_muon());
    probe("dion2", dion2());
    probe("nordion2", nordion2());
    probe("schatten_muon", schatten_muon());
    probe("dion", dion());
    probe("sc_muon", sc_muon());
    probe("df_muon", df_muon());
    probe("namo", namo());
    probe("namo_d", namo_d());
    // No claim: a chain with a rule that declares no bound (SpectralPower, which may fail
    // without a precheck, so its routes keep copies anyway; or a user's rule) may overflow as
    // far as a partition can tell, and its route keeps copies for that reason too.
    CHECK(std::isnan(update_bound_of(freon(), 1.0, BlockShape{4, 4})));
    CHECK(std::isnan(update_bound_of(SpectralPower{}, 1.0, BlockShape{4, 4})));
    CHECK(update_may_overflow_of(freon(), BlockShape{4, 4}));
    CHECK(update_may_overflow_of(chain(GrowingMomentum{}, ScaleToNorm{}), BlockShape{4, 4}));
    CHECK_FALSE(update_may_overflow_of(chain(ClampedMomentum{}, ScaleToNorm{}), BlockShape{4, 4}));
    // An intermediate bound beyond FLT_MAX stays infinite through the rest of a chain, even
    // through a rule whose own bound does not depend on its input: that intermediate float
    // may be ∞ (ScaleByAdam with ε = 1e-25, then ScaleToNorm).
    ScaleByAdam tiny = adam;
    tiny.eps = 1e-25;
    CHECK(update_bound_of(chain(tiny, ScaleToNorm{}), 1.0, BlockShape{4, 4}) == HUGE_VAL);
    // Every preset at its defaults keeps its bound below 2.55e38: no route copies for it.
    const BlockShape gpt2{768, 3072};
    CHECK_FALSE(update_may_overflow_of(sgd(), gpt2));
    CHECK_FALSE(update_may_overflow_of(adamw(), gpt2));
    CHECK_FALSE(update_may_overflow_of(lion(), gpt2));
    CHECK_FALSE(update_may_overflow_of(muon(), gpt2));
    CHECK_FALSE(update_may_overflow_of(normuon(), gpt2));
    CHECK_FALSE(update_may_overflow_of(adamuon(), gpt2));
    CHECK_FALSE(update_may_overflow_of(muon_hyperball(), gpt2));
    CHECK_FALSE(update_may_overflow_of(muadam(), gpt2));
    CHECK_FALSE(update_may_overflow_of(kaon(), gpt2));
    CHECK_FALSE(update_may_overflow_of(da_muon(), gpt2));
    CHECK_FALSE(update_may_overflow_of(dion2(), gpt2));
    CHECK_FALSE(update_may_overflow_of(nordion2(), gpt2));
    CHECK_FALSE(update_may_overflow_of(schatten_muon(), gpt2));
    CHECK_FALSE(update_may_overflow_of(scion(), gpt2));
    CHECK_FALSE(update_may_overflow_of(dion(), gpt2));
    CHECK_FALSE(update_may_overflow_of(sc_muon(), gpt2));
    CHECK_FALSE(update_may_overflow_of(df_muon(), gpt2));
    CHECK_FALSE(update_may_overflow_of(namo(), gpt2));
    CHECK_FALSE(update_may_overflow_of(namo_d(), gpt2));
  }

  TEST_CASE("AdamW with a tiny eps: an update that overflows is refused, and the defaults keep no copies") {
    // m̂/(√v̂ + ε) ≤ 2·2^63/ε only (ScaleByAdam::ratio_bound): with β₂ = 0, v̂ is the current g²
    // alone, so a tiny gradient after a large one divides m̂ by about ε. A fuzzer's case
    // (2026-12-07): β₁ 0.5, β₂ 0, ε 4.5e-26, lr 1e-3, g = 2.8e17 then 1e-23 gave u = −∞ and
    // an infinite weight with ok, the route keeping no copy. Such an ε (< 5.4e-20) now makes
    // the route keep copies, and the exact W + u test refuses the step: nothing changed. The
    // first step (u = −lr·sign) is taken. The same through the unfused chain (ScaleByAdam,
    // AddDecayedWeights, ScaleByLearningRate), whose ScaleByAdam says its output may overflow.
    // At the defaults (ε = 1e-8: 2·2^63/ε = 1.8e27) no copy is kept, as before.
    AdamWOptions o;
    o.b1 = 0.5;
    o.b2 = 0.0;
    o.eps = 4.48807e-26;
    o.lr = Schedule::constant(1e-3);
    o.weight_decay = 0.0;
    ScaleByAdam adam;
    adam.b1 = o.b1;
    adam.b2 = o.b2;
    adam.eps = o.eps;
    // An array in the partition's memory (host, or device memory with a host copy).
    struct Array {
      using DeviceVec = Kokkos::View<float*, Kokkos::DefaultExecutionSpace::memory_space>;
      using HostView = Kokkos::View<float*, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
      std::vector<float> h;
      DeviceVec d;
      bool on_device;
      Array(std::vector<float> v, MemoryKind m) : h(std::move(v)), on_device(m == MemoryKind::device) {
        if (on_device) d = DeviceVec("array", h.size());
        assign(h);
      }
      void assign(const std::vector<float>& v) {
        h = v;
        if (on_device) Kokkos::deep_copy(d, HostView(h.data(), h.size()));
      }
      float* data() { return on_device ? d.data() : h.data(); }
      std::vector<float> host() {
        if (on_device) Kokkos::deep_copy(HostView(h.data(), h.size()), d);
        return h;
      }
    };
    const auto run = [&](const char* name, auto rule, bool expect_copies) {
      CAPTURE(std::string(name));
      for (const MemoryKind memory : {MemoryKind::host, MemoryKind::device}) {
        CAPTURE(memory == MemoryKind::device);
        auto opt = optim::partition(std::vector<ParamSpec>{{"w", {2, 2}}}, {"r"}, route("r", rule));
        REQUIRE(opt.init(memory));
        CHECK((opt.memory_use().backups > 0) == expect_copies);
        if (!expect_copies) continue;
        Array w(std::vector<float>(4, 0.5f), memory), g(std::vector<float>(4, 2.8e17f), memory);
        REQUIRE(opt.step({w.data()}, {g.data()}));
        const std::vector<float> w1 = w.host();
        for (float v : w1)
          CHECK(v == doctest::Approx(0.5 - 1e-3).epsilon(1e-6));
        const auto before = state_bits(opt);
        g.assign(std::vector<float>(4, 1e-23f));
        const StepReport r = opt.step({w.data()}, {g.data()});
        CHECK(r.status == Status::out_of_range);
        CHECK(std::string(r.message).find("beyond the float range") != std::string::npos);
        CHECK(state_bits(opt) == before);
        CHECK(w.host() == w1);
      }
    };
    run("adamw", adamw(o), true);
    AddDecayedWeights decay;
    decay.weight_decay = 0.0;
    ScaleByLearningRate lr;
    lr.lr = o.lr;
    run("scale_by_adam chain", chain(adam, decay, lr), true);
    run("adamw defaults", adamw(), false);
    // The edges (AdamWUpdate::update_bound): the quotient m̂/(√v̂ + ε) + λW must stay a float,
    // (2^64/ε + 0.01·8.5e37)(1 + 2⁻⁸) ≤ FLT_MAX: ε = 5.5e-20 gives 3.376e38, 5.4e-20 3.438e38.
    const BlockShape s22{2, 2};
    AdamWOptions eps_edge;
    eps_edge.eps = 5.5e-20;
    run("adamw eps 5.5e-20", adamw(eps_edge), false);
    CHECK_FALSE(update_may_overflow_of(adamw(eps_edge), s22));
    eps_edge.eps = 5.4e-20;
    CHECK(update_may_overflow_of(adamw(eps_edge), s22));
    AdamWOptions big_lr;  // 1.37e11 × 1.85e27 = 2.54e38 fits under 2.55e38; 1.39e11 does not
    big_lr.weight_decay = 0.0;
    big_lr.lr = Schedule::warmup_cosine(1.37e11, 10, 100);
    CHECK_FALSE(update_may_overflow_of(adamw(big_lr), s22));
    big_lr.lr = Schedule::warmup_cosine(1e-3, 10, 100, 1.39e11);  // the final value is the largest
    CHECK(update_may_overflow_of(adamw(big_lr), s22));
    // λ = 4: λ·8.5e37 = 3.4e38 is not a float, whatever lr (found while writing the bounds:
    // at lr 1e-3 the old test, lr·(R + λ·8.5e37), kept no copy, and the fused element formula
    // gives lr·∞).
    AdamWOptions big_decay;
    big_decay.weight_decay = 4.0;
    CHECK(update_may_overflow_of(adamw(big_decay), s22));
  }

  TEST_CASE("a user's rule without a bound keeps copies, and its overflowing step changes nothing") {
    // Until 2026-12-07 a rule that declares no update_bound made no claim and its route kept no
    // copy: GrowingMomentum's fifth step (m = u = −1e40, −∞ as a float) then stored W = −∞ and
    // m = −∞ with ok (docs/reliability.md, Finding 131). Now the partition keeps a copy of such
    // a route's state, and the exact W + u test refuses that step with nothing changed. A rule
    // that declares a bound (ClampedMomentum) keeps none. Host partitions only: a user's rule
    // without device_capable is refused by init(MemoryKind::device) (docs/optim.md).
    const std::vector<ParamSpec> ps = {{"w", {2, 3}}};
    auto opt = optim::partition(ps, {"r"}, route("r", chain(GrowingMomentum{})));
    REQUIRE(opt.init());
    CHECK(opt.memory_use().backups == 6 * sizeof(float));
    auto clamped = optim::partition(ps, {"r"}, route("r", chain(ClampedMomentum{})));
    REQUIRE(clamped.init());
    CHECK(clamped.memory_use().backups == 0);
    std::vector<float> w(6, 0.5f), g(6, -1.0f);
    for (int t = 1; t <= 4; ++t) {
      CAPTURE(t);
      REQUIRE(opt.step({w.data()}, {g.data()}));
      for (float x : w)
        CHECK(std::isfinite(x));
    }
    const std::vector<float> w4 = w;
    const auto before = state_bits(opt);
    const StepReport r = opt.step({w.data()}, {g.data()});
    CHECK(r.status == Status::out_of_range);
    CHECK(std::string(r.message).find("beyond the float range") != std::string::npos);
    CHECK(state_bits(opt) == before);
    CHECK(w == w4);
  }

  TEST_CASE("Gram Newton-Schulz losing accuracy: the step is refused and no state advances") {
    // Muon's chain with Gram Newton–Schulz (16 steps of Polar Express, restarts {2}) on a float
    // gradient of κ = 1e8: polar() returned NaN with ok, the route counted as unable to fail
    // (polar_total_on_finite, so its momentum was not copied), and the partition refused the
    // NaN update with out_of_range after the momentum had advanced (kernel audit of
    // 2026-12-07). Now polar() refuses (breakdown) and Gram Newton–Schulz routes copy their
    // states: the step is refused with every parameter and state bit as before, and a
    // well-conditioned gradient then steps.
    const index_t n = 32;
    const Eigen::MatrixXd bad = schatten::test::make_matrix(
        schatten::test::SpectrumCase{"gram_step", n, n, schatten::test::geometric(n, 1e-8)},
        case_seed("gram_step"));
    Orthogonalize orth;
    orth.polar.method = PolarMethod::gram_newton_schulz;
    orth.polar.iterations = 16;
    auto opt = optim::partition(
        std::vector<ParamSpec>{{"w", {n, n}}}, {"muon"},
        route("muon", chain(TraceMomentum{}, orth, ScaleByLearningRate{Schedule::constant(0.01)})));
    REQUIRE(opt.init());
    CHECK(opt.memory_use().backups > 0);  // the momentum is copied
    std::vector<float> w(static_cast<std::size_t>(n * n), 0.5f), g(w.size());
    for (index_t j = 0; j < n; ++j)
      for (index_t i = 0; i < n; ++i)
        g[static_cast<std::size_t>(i * n + j)] = static_cast<float>(bad(i, j));
    const std::vector<float> w0 = w;
    const io::FieldSet before = io::capture(opt);
    std::vector<float*> pp{w.data()};
    std::vector<float*> gp{g.data()};
    const StepReport r = opt.step(pp, gp);
    CHECK(r.status == Status::breakdown);
    CHECK(w == w0);
    CHECK(io::capture(opt) == before);
    std::fill(g.begin(), g.end(), 0.0f);
    for (index_t i = 0; i < n; ++i)
      g[static_cast<std::size_t>(i * n + i)] = 1.0f;  // κ = 1
    CHECK(opt.step(pp, gp).status == Status::ok);
    CHECK(w != w0);
  }

  TEST_CASE("empty parameters step beside a nonempty one through every preset, prechecks on and off") {
    // Empty shapes are valid (valid_param_shape) and their arrays may be null. schatten_muon's
    // criterion refused them (measure_spectra: invalid_argument) at every criterion step, and
    // with prechecks that refusal came after another parameter's state had advanced
    // (internal_error; found by a fuzzer, 2026-12-07): every step from the first criterion step
    // on failed. Now every preset steps them, with the criterion due at every step.
    SchattenMuonOptions whitened = adaptive_schatten(false);
    whitened.first = 1;
    whitened.interval = 1;
    whitened.without_statistics = SchattenPDirection::WithoutStatistics::assume_whitened;
    const auto check = [&](const char* name, auto rule) {
      CAPTURE(std::string(name));
      for (const bool prechecks : {true, false}) {
        CAPTURE(prechecks);
        const std::vector<ParamSpec> ps = {
            {"w", {4, 3}}, {"rows0", {0, 4}}, {"cols0", {4, 0}}, {"vec0", {0}}};
        auto opt = optim::partition(ps, std::vector<std::string>(ps.size(), "all"), route("all", rule));
        opt.set_prechecks(prechecks);
        REQUIRE(opt.init());
        std::vector<float> w = schatten::test::random_vec(12, case_seed("empty_params_w"), 1.0);
        for (std::uint64_t t = 0; t < 12; ++t) {
          std::vector<float> g = schatten::test::random_vec(12, case_seed("empty_params_g", t), 1.0);
          const StepReport r =
              opt.step({w.data(), nullptr, nullptr, nullptr}, {g.data(), nullptr, nullptr, nullptr});
          CAPTURE(r.message);
          REQUIRE(r);
        }
        for (float x : w)
          CHECK(std::isfinite(x));
        CHECK(non_finite_state(opt).empty());
      }
    };
    for_each_preset(check);
    check("schatten_muon_whitened", schatten_muon(whitened));
  }

  TEST_CASE("init refuses invalid shapes, duplicate route labels and an unusable global clip") {
    // Before: a shape {-2, 3} threw std::length_error out of init(); {-2, -3} (6 elements once
    // multiplied) and {2^32, 2^32} (0 once wrapped) were accepted, and under muon a step then
    // failed with internal_error after other parameters' states had advanced; {2, -3, -1} was
    // stepped as 2 × 3. Two routes of one label left the second silently unused, and a NaN or
    // negative global clip turned clipping off without a word.
    const index_t big = index_t(1) << 32;
    const std::vector<std::vector<index_t>> bad = {{-2, 3}, {-2, -3}, {big, big}, {2, -3, -1}, {0, big, big}};
    for (const auto& shape : bad) {
      CAPTURE(shape.size());
      CAPTURE(shape[0]);
      CAPTURE(shape[1]);
      CHECK_FALSE(valid_param_shape(shape));
      const std::vector<ParamSpec> ps = {{"good", {4, 4}}, {"w", shape}};
      auto opt = optim::partition(ps, {"muon", "muon"}, route("muon", muon()));
      StepReport r;
      CHECK_NOTHROW(r = opt.init());
      CHECK(r.status == Status::invalid_argument);
      CHECK(r.bad_param == 1);
      CHECK(std::string(r.message).find("parameter 'w'") != std::string::npos);
      float x = 0.0f;
      CHECK(opt.step({&x, &x}, {&x, &x}).status == Status::invalid_argument);  // no init(): no step
    }
    CHECK(valid_param_shape({0, 5}));
    CHECK(valid_param_shape({}));
    CHECK(valid_param_shape({3, 0, 7}));
    CHECK(valid_shape(kMaxBlockElements, 1));
    CHECK_FALSE(valid_shape(kMaxBlockElements, 2));
    // A bare chain: init() throws std::invalid_argument before any rule sizes a buffer, and
    // update() refuses a block of negative extent.
    CHECK_THROWS_AS(muon().init(BlockShape{-2, -3}), std::invalid_argument);
    CHECK_THROWS_AS(sgd().init(BlockShape{big, big}), std::invalid_argument);
    {
      const auto rule = adamw();
      auto st = rule.init({2, 3});
      std::vector<float> u(6, 1.0f), w(6, 1.0f);
      CHECK(rule.update(Block(u.data(), -2, -3), st, ConstBlock(w.data(), -2, -3)) ==
            Status::invalid_argument);
      CHECK(std::get<0>(static_cast<decltype(st)::Base&>(st)).count == 0);
    }
    {
      const std::vector<ParamSpec> ps = {{"w", {2, 2}}};
      auto opt = optim::partition(ps, {"opt"}, route("opt", sgd()), route("opt", adamw()));
      const StepReport r = opt.init();
      CHECK(r.status == Status::invalid_argument);
      CHECK(std::string(r.message).find("two routes have the label 'opt'") != std::string::npos);
    }
    {
      const std::vector<ParamSpec> ps = {{"w", {2, 2}}};
      auto opt = optim::partition(ps, {"adamw"}, route("adamw", adamw()));
      opt.set_global_clip(-1.0);
      CHECK(opt.init().status == Status::invalid_argument);
      opt.set_global_clip(0.0);
      REQUIRE(opt.init());
      for (const double clip : {std::nan(""), -1.0}) {
        opt.set_global_clip(clip);
        std::vector<float> w = {1, 2, 3, 4}, g = {1, 1, 1, 1};
        const auto before = state_bits(opt);
        const StepReport r = opt.step({w.data()}, {g.data()});
        CHECK(r.status == Status::invalid_argument);
        CHECK(std::string(r.message).find("set_global_clip") != std::string::npos);
        CHECK(state_bits(opt) == before);
        CHECK(w == std::vector<float>{1, 2, 3, 4});
      }
      opt.set_global_clip(HUGE_VAL);  // clips nothing
      std::vector<float> w = {1, 2, 3, 4}, g = {1, 1, 1, 1};
      CHECK(opt.step({w.data()}, {g.data()}).status == Status::ok);
    }
  }

  TEST_CASE("global clipping brings huge gradients within the Adam limit") {
    const std::vector<ParamSpec> ps = {{"v", {4}}};
    auto opt = optim::partition(ps, {"adamw"}, route("adamw", adamw()));
    REQUIRE(opt.init());
    opt.set_global_clip(1.0);
    std::vector<float> w(4, 0.5f), g = {1e30f, -1e30f, 3e38f, 0.0f};
    REQUIRE(opt.step({w.data()}, {g.data()}));
    for (float x : w)
      CHECK(std::isfinite(x));
    CHECK(non_finite_state(opt) == "");
  }

  TEST_CASE("every preset reruns bit for bit from the same inputs") {
    // CPU determinism (docs/reliability.md): two optimizers built alike and fed the same hostile
    // sequence end with identical parameter and state bits. Catches reads of uninitialised
    // memory and state shared between instances (e.g. a workspace).
    for_each_preset([&](const char* name, auto rule) {
      const std::string preset_name = name;
      CAPTURE(preset_name);
      const std::vector<ParamSpec> ps = hostile_params();
      auto a = optim::partition(ps, std::vector<std::string>(ps.size(), "all"), route("all", rule));
      auto b = optim::partition(ps, std::vector<std::string>(ps.size(), "all"), route("all", rule));
      REQUIRE(a.init());
      REQUIRE(b.init());
      std::vector<std::vector<float>> wa(ps.size()), wb;
      for (std::size_t i = 0; i < ps.size(); ++i)
        wa[i].assign(static_cast<std::size_t>(flatten(ps[i].shape).size()), 0.5f);
      wb = wa;
      Rng rng(case_seed(name));
      for (int t = 0; t < 12; ++t) {
        const Kind kind = kKinds[static_cast<std::size_t>(rng.uniform() * 8.0) % 8];
        auto ga = gradients(ps, kind, rng);
        auto gb = ga;
        std::vector<float*> pa, pb, qa, qb;
        for (std::size_t i = 0; i < ps.size(); ++i) {
          pa.push_back(wa[i].data());
          pb.push_back(wb[i].data());
          qa.push_back(ga[i].data());
          qb.push_back(gb[i].data());
        }
        CHECK(a.step(pa, qa).status == b.step(pb, qb).status);
      }
      CHECK(same_bits(wa, wb));
      CHECK(state_bits(a) == state_bits(b));
    });
  }

  TEST_CASE("every preset steps in two threads at once as it does alone") {
    // The thread contract (docs/conventions.md "Threads"): separate partitions may be stepped
    // from separate host threads at once. Kokkos 3.4's Serial backend shares one buffer between
    // all threads for reductions and team scratch (compat.hpp shared_buffer_lock,
    // docs/reliability.md Finding 84). Each thread steps its own partition through its own
    // gradient sequence (normal gradients, another seed per thread: equal inputs could hide a
    // race); parameters and states must end with the bits of the same partition stepped alone.
    // Blocks of a few thousand entries, so that the threads' kernels overlap; two same-shape
    // blocks make a batched group.
    const std::vector<ParamSpec> ps = {
        {"w", {32, 48}}, {"t", {48, 32}}, {"a", {24, 24}}, {"b", {24, 24}}, {"v", {48}}};
    constexpr int kThreads = 2, kSteps = 6;
    auto check = [&](const char* name, auto rule) {
      const std::string preset_name = name;
      CAPTURE(preset_name);
      using P =
          decltype(optim::partition(ps, std::vector<std::string>(ps.size(), "all"), route("all", rule)));
      std::vector<std::vector<std::vector<std::vector<float>>>> grads(kThreads);
      std::vector<std::vector<std::vector<float>>> w0(kThreads);
      for (int t = 0; t < kThreads; ++t) {
        Rng rng(case_seed(name, static_cast<std::uint64_t>(t)));
        for (int k = 0; k < kSteps; ++k)
          grads[t].push_back(gradients(ps, Kind::normal, rng));
        w0[t] = gradients(ps, Kind::normal, rng);
      }
      // Steps partition p through thread t's sequence; the statuses that were not ok are counted.
      auto steps = [&](P& p, int t, std::vector<std::vector<float>>& w) {
        int refused = 0;
        for (int k = 0; k < kSteps; ++k) {
          std::vector<std::vector<float>> g = grads[t][static_cast<std::size_t>(k)];
          refused += p.step(pointers(w), pointers(g)).status == Status::ok ? 0 : 1;
        }
        return refused;
      };
      std::vector<P> alone, together;
      alone.reserve(kThreads);  // no reallocation: a copied partition would share its scratch
      together.reserve(kThreads);
      for (int t = 0; t < 2 * kThreads; ++t) {
        (t < kThreads ? alone : together)
            .push_back(optim::partition(ps, std::vector<std::string>(ps.size(), "all"), route("all", rule)));
        REQUIRE((t < kThreads ? alone : together).back().init());
      }
      std::vector<std::vector<std::vector<float>>> w_alone = w0, w_together = w0;
      for (int t = 0; t < kThreads; ++t)
        REQUIRE(steps(alone[static_cast<std::size_t>(t)], t, w_alone[static_cast<std::size_t>(t)]) == 0);
      std::vector<int> refused(kThreads, 0);
      run_together(kThreads, [&](int t) {
        const std::size_t i = static_cast<std::size_t>(t);
        refused[i] = steps(together[i], t, w_together[i]);
      });
      for (std::size_t t = 0; t < kThreads; ++t) {
        CAPTURE(t);
        CHECK(refused[t] == 0);
        CHECK(same_bits(w_together[t], w_alone[t]));
        CHECK(state_bits(together[t]) == state_bits(alone[t]));
      }
    };
    for_each_preset(check);
    // And Muon iterating in bf16 (portable_gemm's team tiles on the CPU): before the lock, its
    // steps in two threads gave other bits.
    MuonOptions bf16_iteration;
    bf16_iteration.polar.compute = Precision::bf16;
    check("muon_bf16_iteration", muon(bf16_iteration));
  }

  TEST_CASE("zero gradients from a fresh state leave parameters bit for bit unchanged") {
    // Without weight decay every preset's update of a zero gradient is exactly zero: momentum and
    // moments stay 0, polar(0) = spectral_power(0) = kaon(0) = 0, and SC-Muon's certificate is 0.
    auto check = [](const char* name, auto rule) {
      const std::string preset_name = name;
      CAPTURE(preset_name);
      const std::vector<ParamSpec> ps = hostile_params();
      auto opt = optim::partition(ps, std::vector<std::string>(ps.size(), "all"), route("all", rule));
      REQUIRE(opt.init());
      std::vector<std::vector<float>> w(ps.size()), g(ps.size());
      for (std::size_t i = 0; i < ps.size(); ++i)
        w[i].assign(static_cast<std::size_t>(flatten(ps[i].shape).size()), 0.75f);
      const auto w0 = w;
      for (int t = 0; t < 5; ++t) {
        std::vector<float*> pp, gp;
        for (std::size_t i = 0; i < ps.size(); ++i) {
          g[i].assign(w[i].size(), 0.0f);
          pp.push_back(w[i].data());
          gp.push_back(g[i].data());
        }
        REQUIRE(opt.step(pp, gp));
      }
      CHECK(same_bits(w, w0));
    };
    check("sgd", sgd(SgdOptions{Schedule::constant(1e-2), 0.9, true, 0.0}));
    AdamWOptions a;
    a.weight_decay = 0.0;
    check("adamw", adamw(a));
    check("muon", muon());
    check("muadam", muadam());
    check("normuon", normuon());
    AdaMuonOptions ada;
    ada.weight_decay = 0.0;
    check("adamuon", adamuon(ada));
    check("freon", freon());
    check("kaon", kaon());
    check("da_muon", da_muon());
    check("sc_muon", sc_muon());
    check("df_muon", df_muon());
    NamoOptions nm;
    nm.weight_decay = 0.0;
    check("namo", namo(nm));
    NamoDOptions nmd;
    nmd.weight_decay = 0.0;
    check("namo_d", namo_d(nmd));
    Dion2Options d2;
    d2.weight_decay = 0.0;
    check("dion2", dion2(d2));
    NorDion2Options nd2;
    nd2.weight_decay = 0.0;
    check("nordion2", nordion2(nd2));
    DionOptions dn;
    dn.weight_decay = 0.0;
    check("dion", dion(dn));
    MopOptions mo;
    mo.weight_decay = 0.0;
    check("mop", mop(mo));
    check("lion", lion());
    // Not spel: it projects the weights onto (near) the Stiefel manifold at every step, whatever
    // the gradient (its zero-gradient step is W ← polar(W), tested in optim.presets). Nor scion:
    // its Frank-Wolfe decay (1, fixed) shrinks W by (1 − lr) at every step by design. Nor
    // muon_hyperball: it projects W onto the sphere of its radius at every step.
    check("schatten_muon", schatten_muon(adaptive_schatten(false, 0.0)));
    check("schatten_muon_moment", schatten_muon(adaptive_schatten(true, 0.0)));
  }
}

// Unusable hyper-parameters (rule.hpp, check_of; docs/optim.md "Hyper-parameter checks").
namespace {

/// A partition over one 6 × 4 parameter routed to `rule` must refuse init with "route 'x': "
/// and a message containing `expect`; the chain alone must refuse every update and leave the
/// update buffer and its state bit for bit as they were (before the checks, a NaN or negative
/// learning rate stepped "successfully" into NaN or ascending parameters).
template <class R>
void check_refused(const char* what, const R& rule, const char* expect) {
  CAPTURE(what);
  const std::vector<ParamSpec> ps = {{"w", {6, 4}}};
  auto p = partition(ps, {"x"}, route("x", rule));
  const StepReport r = p.init();
  CHECK(r.status == Status::invalid_argument);
  const std::string m = r.message;
  CAPTURE(m);
  CHECK(m.rfind("route 'x': ", 0) == 0);
  CHECK(m.find(expect) != std::string::npos);
  CHECK(rule.check() != nullptr);
  Rng rng(case_seed("hyper_refused"));
  std::vector<float> u(24), w(24);
  for (std::size_t k = 0; k < u.size(); ++k) {
    u[k] = static_cast<float>(rng.normal());
    w[k] = static_cast<float>(rng.normal());
  }
  const std::vector<float> u0 = u;
  auto st = rule.init(BlockShape{6, 4});
  std::map<std::string, std::vector<std::uint64_t>> before, after;
  Bits b0{&before}, b1{&after};
  visit_fields(b0, st);
  CHECK(rule.update(Block(u.data(), 6, 4), st, ConstBlock(w.data(), 6, 4)) == Status::invalid_argument);
  visit_fields(b1, st);
  CHECK(before == after);
  CHECK(std::memcmp(u.data(), u0.data(), u.size() * sizeof(float)) == 0);
}

/// The boundary values the checks must still accept.
template <class R>
void check_accepted(const char* what, const R& rule) {
  CAPTURE(what);
  const char* m = rule.check();
  CHECK_MESSAGE(m == nullptr, (m ? m : ""));
  const std::vector<ParamSpec> ps = {{"w", {6, 4}}};
  auto p = partition(ps, {"x"}, route("x", rule));
  CHECK(p.init());
}

}  // namespace

TEST_SUITE("optim.hostile") {
  TEST_CASE("every preset's defaults pass the hyper-parameter checks") {
    for_each_preset([](const char* name, const auto& rule) { check_accepted(name, rule); });
    check_accepted("sgd default", sgd());
    check_accepted("schatten_muon default", schatten_muon());
  }

  TEST_CASE("unusable hyper-parameters are refused at init with the field named, and change nothing") {
    const double nan = std::numeric_limits<double>::quiet_NaN();
    const double inf = std::numeric_limits<double>::infinity();
    {
      AdamWOptions o;
      o.lr = Schedule::constant(nan);
      check_refused("adamw lr NaN", adamw(o), "learning rate");
      o.lr = Schedule::constant(-1e-3);
      check_refused("adamw lr < 0", adamw(o), "learning rate");
      o.lr = Schedule::warmup_cosine(1e-3, -1, 100);
      check_refused("adamw warmup < 0", adamw(o), "warmup");
      o.lr = Schedule::warmup_cosine(1e-3, 10, 100, inf);
      check_refused("adamw final lr Inf", adamw(o), "learning rate");
    }
    {
      AdamWOptions o;
      o.b1 = 1.0;
      check_refused("adamw b1 = 1", adamw(o), "b1");
      o = AdamWOptions{};
      o.b2 = 1.0;
      check_refused("adamw b2 = 1", adamw(o), "b2");
      o.b2 = nan;
      check_refused("adamw b2 NaN", adamw(o), "b2");
      o = AdamWOptions{};
      o.eps = 0.0;
      check_refused("adamw eps = 0", adamw(o), "eps");
      o.eps = 1e-50;  // > 0 in double, 0 in float: the update would divide 0 by 0
      check_refused("adamw eps = 0 in float", adamw(o), "eps");
      o = AdamWOptions{};
      o.weight_decay = -1e-2;
      check_refused("adamw wd < 0", adamw(o), "weight_decay");
    }
    {
      SgdOptions o;
      o.momentum = -0.1;
      check_refused("sgd momentum < 0", sgd(o), "trace_momentum: beta");
      o = SgdOptions{};
      o.weight_decay = inf;
      check_refused("sgd wd Inf", sgd(o), "add_decayed_weights: weight_decay");
      // The sum form's buffer of a constant gradient grows without bound at β ≥ 1 (and overflowed
      // float within 5 steps of 8e37 gradients at β = 0.9 before its gradient bound held over all
      // steps: TraceMomentum::sum_form_bound).
      o = SgdOptions{};
      o.momentum = 1.0;
      check_refused("sgd momentum = 1", sgd(o), "trace_momentum: beta must be in [0, 1) for the sum form");
      o.momentum = 1.0 - 1e-9;  // 1.0f once rounded
      check_refused("sgd momentum rounds to 1", sgd(o), "trace_momentum: beta must be in [0, 1)");
      o.momentum = 0.995;  // bounded in fp32; bf16's stochastic rounding (2⁻⁷) could grow it
      o.mu_storage = StateStorage::bf16_stochastic();
      check_refused("sgd momentum 0.995, bf16 stochastic", sgd(o), "trace_momentum: beta too close to 1");
      o = SgdOptions{};
      o.lr = Schedule::constant(1e39);  // finite in double, ∞ in float
      check_refused("sgd lr 1e39", sgd(o), "learning rate");
    }
    {
      MuonOptions o;
      o.momentum = 1.0;  // the EMA buffer would never leave 0
      check_refused("muon momentum = 1", muon(o), "trace_momentum: beta must be in [0, 1)");
      o.momentum = 0.99999999;  // 1.0f once rounded: 1.0f − β = 0 would freeze the buffer too
      check_refused("muon momentum rounds to 1", muon(o), "trace_momentum: beta must be in [0, 1)");
      o = MuonOptions{};
      o.weight_decay = 1e39;
      check_refused("muon wd 1e39", muon(o), "weight_decay");
      o = MuonOptions{};
      o.shape = ScaleByShape(ScaleByShape::Rule::spectral, 0.0);
      check_refused("muon shape extra = 0", muon(o), "scale_by_shape: extra");
      o.shape = ScaleByShape(ScaleByShape::Rule::keller, nan);
      check_refused("muon shape extra NaN", muon(o), "scale_by_shape: extra");
      o = MuonOptions{};
      o.polar.iterations = -1;
      check_refused("muon polar iterations < 0", muon(o), "iterations");
      o = MuonOptions{};
      o.weight_decay = nan;
      check_refused("muon wd NaN", muon(o), "weight_decay");
    }
    {
      NorMuonOptions o;
      o.beta2 = 1.0;
      check_refused("normuon beta2 = 1", normuon(o), "normalize_neurons: beta2");
      AdaMuonOptions a;
      a.beta2 = 1.0;
      check_refused("adamuon beta2 = 1", adamuon(a), "scale_by_second_moment: beta");
      a = AdaMuonOptions{};
      a.eps = 1e-50;  // 0 in float
      check_refused("adamuon eps = 1e-50", adamuon(a), "scale_by_second_moment: eps");
      a = AdaMuonOptions{};
      a.rms = nan;
      check_refused("adamuon rms NaN", adamuon(a), "scale_to_rms: rms");
      MuAdamOptions m;
      m.eps = 0.0;
      check_refused("muadam eps = 0", muadam(m), "muadam_direction: eps");
      m = MuAdamOptions{};
      m.exponent = nan;
      check_refused("muadam exponent NaN", muadam(m), "muadam_direction: exponent");
      FreonOptions f;
      f.c = 2.0;  // alpha = 1 - 2c = -3
      check_refused("freon c = 2", freon(f), "alpha");
    }
    {
      DaMuonOptions d;
      d.r_eps = 0.0;
      check_refused("da_muon r_eps = 0", da_muon(d), "distance_aware_step");
      ScMuonOptions s;
      s.eta_max = nan;
      check_refused("sc_muon eta_max NaN", sc_muon(s), "scale_calibrated_direction: eta_max");
      NamoOptions n;
      n.mu2 = 1.0;
      check_refused("namo mu2 = 1", namo(n), "namo_step: mu2");
      n = NamoOptions{};
      n.scale = 0.0;
      check_refused("namo scale = 0", namo(n), "namo_step: scale");
      n = NamoOptions{};
      n.lr = Schedule::constant(-1.0);
      check_refused("namo lr < 0", namo(n), "namo_step: lr schedule");
      // Each rule that holds a schedule names itself (a chain with two schedules said "lr
      // schedule: …" for either until the audit of 2026-12-07).
      check_refused("scale_by_learning_rate lr < 0", chain(ScaleByLearningRate{Schedule::constant(-1.0)}),
                    "scale_by_learning_rate: lr schedule: the peak");
      check_refused("relative_update warmup < 0",
                    chain(ScaleByLearningRate{Schedule::constant(0.1)},
                          RelativeUpdate{1e-15, Schedule::warmup_cosine(0.1, -1, 10)}),
                    "relative_update: lr schedule: warmup");
      AdamWOptions aw;
      aw.lr = Schedule::constant(-1.0);
      check_refused("adamw lr < 0", adamw(aw), "adamw_update: lr schedule");
      Dion2Options d2;
      d2.fraction = 0.0;
      check_refused("dion2 fraction = 0", dion2(d2), "dion2_direction: fraction");
      d2.fraction = 1.5;
      check_refused("dion2 fraction > 1", dion2(d2), "dion2_direction: fraction");
      d2.fraction = nan;
      check_refused("dion2 fraction NaN", dion2(d2), "dion2_direction: fraction");
      d2 = Dion2Options{};
      d2.ef_decay = -0.1;
      check_refused("dion2 ef_decay < 0", dion2(d2), "dion2_direction: ef_decay");
      d2.ef_decay = 1.5;
      check_refused("dion2 ef_decay > 1", dion2(d2), "dion2_direction: ef_decay");
      DionOptions dn;
      dn.rank_fraction = 0.0;
      check_refused("dion rank_fraction = 0", dion(dn), "dion_direction: rank_fraction");
      dn.rank_fraction = nan;
      check_refused("dion rank_fraction NaN", dion(dn), "dion_direction: rank_fraction");
      dn = DionOptions{};
      dn.rank_multiple_of = 0;
      check_refused("dion rank_multiple_of = 0", dion(dn), "dion_direction: rank_multiple_of");
      dn = DionOptions{};
      dn.mu = 1.5;
      check_refused("dion mu > 1", dion(dn), "dion_direction: mu");
      dn = DionOptions{};
      dn.power_iterations = 0;
      check_refused("dion power_iterations = 0", dion(dn), "dion_direction: power_iterations");
      dn = DionOptions{};
      dn.eps = 0.0;
      check_refused("dion eps = 0", dion(dn), "dion_direction: eps");
      SpelOptions sp;
      sp.polar.dual_norm_scale = true;  // would scale the projected weights by their nuclear norm
      check_refused("spel dual_norm_scale", spel(sp), "orthogonalize_weights: dual_norm_scale");
      sp = SpelOptions{};
      sp.polar.iterations = -1;
      check_refused("spel iterations < 0", spel(sp), "iterations must lie in");
      SpectralClipWeights cw;
      cw.options.lower = 2.0;
      cw.options.upper = 1.0;
      check_refused("spectral_clip_weights lower > upper", chain(ScaleByLearningRate{}, cw),
                    "lower must not exceed upper");
      cw = SpectralClipWeights{};
      cw.options.upper = nan;
      check_refused("spectral_clip_weights upper NaN", chain(ScaleByLearningRate{}, cw),
                    "upper must be positive");
      SpectralClip sc;
      sc.options.floor = 1.0;
      check_refused("spectral_clip floor = 1", chain(sc), "floor must lie in [0, 1)");
      NamoDOptions nd;
      nd.col_clamp = 1.5;
      check_refused("namo_d col_clamp > 1", namo_d(nd), "namo_d_step: col_clamp");
      nd.col_clamp = nan;
      check_refused("namo_d col_clamp NaN", namo_d(nd), "namo_d_step: col_clamp");
      nd = NamoDOptions{};
      nd.mu2 = 1.0;
      check_refused("namo_d mu2 = 1", namo_d(nd), "namo_step: mu2");
      LionOptions l;
      l.b1 = 1.0;
      check_refused("lion b1 = 1", lion(l), "scale_by_lion: b1");
      l = LionOptions{};
      l.b2 = nan;
      check_refused("lion b2 NaN", lion(l), "scale_by_lion: b2");
      DfMuonOptions f;
      f.l_min = 0.0;
      check_refused("df_muon l_min = 0", df_muon(f), "majorized_step: l_min");
      f = DfMuonOptions{};
      f.rho = -1.0;
      check_refused("df_muon rho < 0", df_muon(f), "majorized_step: eta_max, rho");
      f = DfMuonOptions{};
      f.curvature_decay = 1.0;
      check_refused("df_muon curvature_decay = 1", df_muon(f), "majorized_step: curvature_decay");
    }
    {
      SchattenMuonOptions o;
      o.p = 0.5;
      check_refused("schatten_muon p < 1", schatten_muon(o), "schatten_p_direction: p");
      o = SchattenMuonOptions{};
      o.interval = 0;
      check_refused("schatten_muon interval = 0", schatten_muon(o), "interval");
      o = SchattenMuonOptions{};
      o.criterion.p_min = 20.0;
      check_refused("schatten_muon p_min > p_max", schatten_muon(o), "p_min");
      o = SchattenMuonOptions{};
      o.moment = SchattenPDirection::Moment::parametric;
      o.b2 = 1.0;
      check_refused("schatten_muon moment b2 = 1", schatten_muon(o), "b2");
      // The surrogate audit (docs/reliability.md Finding 51): a tolerance below the criterion's
      // floor made its search loop for ever; values outside an enum passed and never descended
      // (the criterion) or indexed past config()'s table (the moment).
      o = SchattenMuonOptions{};
      o.criterion.tolerance = 1e-16;
      check_refused("schatten_muon tolerance 1e-16", schatten_muon(o), "tolerance");
      o = SchattenMuonOptions{};
      o.criterion.criterion = static_cast<surrogate::PCriterion>(5);
      check_refused("schatten_muon criterion 5", schatten_muon(o), "criterion must be");
      o = SchattenMuonOptions{};
      o.moment = static_cast<SchattenPDirection::Moment>(7);
      check_refused("schatten_muon moment 7", schatten_muon(o), "moment must be");
    }
    check_refused("clip_by_norm 0", chain(ClipByNorm{0.0}), "clip_by_norm: max_norm");
    check_refused("independent decay > 1", chain(AddIndependentDecay{1.5}), "add_independent_decay");
    check_refused("lr < 0", chain(ScaleByLearningRate{Schedule::constant(-0.1)}), "learning rate");
  }

  TEST_CASE("the boundary values of the hyper-parameter checks are accepted") {
    AdamWOptions a;
    a.b1 = 0.0;
    a.weight_decay = 0.0;
    a.lr = Schedule::constant(0.0);
    a.eps = 1e-30;  // tiny, but > 0 in float
    check_accepted("adamw b1 = 0, wd = 0, lr = 0, eps = 1e-30", adamw(a));
    SgdOptions s;
    s.momentum = 1.0 - 0x1p-22;  // the sum form's largest β class in fp32 (below 1 − 2⁻²³ once rounded)
    check_accepted("sgd sum momentum = 1 - 2^-22", sgd(s));
    s.momentum = 0.99;
    s.mu_storage = StateStorage::bf16_stochastic();  // below 1 − 2⁻⁷: bounded in bf16 too
    check_accepted("sgd sum momentum = 0.99, bf16 stochastic", sgd(s));
    a = AdamWOptions{};
    a.lr = Schedule::constant(3.4e38);  // the largest values finite in float
    a.weight_decay = 3.4e38;
    check_accepted("adamw lr = wd = 3.4e38", adamw(a));
    check_accepted("independent decay = 1", chain(AddIndependentDecay{1.0}));
    MuonOptions m;
    m.momentum = 0.0;
    m.shape = ScaleByShape(ScaleByShape::Rule::unit_rms_norm, 0.2);
    check_accepted("muon momentum = 0, unit_rms_norm x 0.2", muon(m));
    Dion2Options d;
    d.fraction = 1.0;  // every slice: Muon with the sum-form momentum
    d.ef_decay = 0.0;  // the selected slices forget at once
    check_accepted("dion2 fraction = 1, ef_decay = 0", dion2(d));
    d.fraction = 1e-9;  // still one slice (k = max(1, ⌈f·n⌉))
    d.ef_decay = 1.0;   // no error feedback: the momentum only grows
    check_accepted("dion2 fraction = 1e-9, ef_decay = 1", dion2(d));
    DionOptions dn;
    dn.rank_fraction = 1e-9;  // still rank 1 (k = max(1, m·⌈f·S/m⌉))
    dn.mu = 1.0;              // no error feedback
    dn.power_iterations = 3;
    check_accepted("dion rank_fraction = 1e-9, mu = 1, 3 power iterations", dion(dn));
  }
}

}  // namespace optim_test_hostile
