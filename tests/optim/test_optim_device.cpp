// SPDX-License-Identifier: Apache-2.0
/// \file
/// Device-resident optimizer steps (Partition::init(MemoryKind::device)): the states, batch
/// buffers and backups in the memory of the default execution space, every element-wise pass a
/// Kokkos kernel. The oracle is the host partition, which runs the same formulas as host loops.
///
/// Tolerance: where the device kernels run on Kokkos Serial (the default CPU build) they perform
/// each element's operations, and each reduction, in the host loop's order, so the two paths
/// agree bit for bit; only global clipping sums its norm in another order (per parameter, then
/// across), a relative change of about 1e-16 in a double that is rounded to a float factor, so
/// there we allow 4 float ulps (4 · 2^-24 relative). A threaded host space (OpenMP) reorders
/// the block norms of ClipByNorm and ScaleToPolarNorm the same way; on a GPU a fused
/// multiply-add may also round one element of momentum or Adam by one float ulp (2^-24
/// relative); Newton–Schulz and three steps amplify
/// that by a modest factor (the polar map is Lipschitz with constant ~1/σ_min of a
/// well-conditioned Gaussian momentum), so the parameters' change from W₀ must agree to 1e-4
/// relative in the Frobenius norm, and every state buffer likewise.
#include <doctest/doctest.h>

#include <Kokkos_Core.hpp>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "schatten/core/buffer.hpp"
#include "schatten/core/random.hpp"
#include "schatten/io/checkpoint.hpp"
#include "schatten/kokkos/optim.hpp"
#include "schatten/optim/dion.hpp"
#include "schatten/optim/presets.hpp"
#include "schatten/optim/schatten_p.hpp"
#include "schatten/optim/step_size.hpp"
#include "support/failing_rule.hpp"
#include "support/optim_helpers.hpp"
#include "support/random_floats.hpp"
#include "support/seed.hpp"

namespace optim_test_optim_device {  // this file's scope in a unity build (tests/CMakeLists.txt)

using namespace schatten;
using namespace schatten::optim;
using schatten::test::bf16_state;
using schatten::test::bf16_stochastic_state;
using schatten::test::case_seed;
using schatten::test::FailOnCall;
using schatten::test::random_vec;

namespace {

using DeviceMem = Kokkos::DefaultExecutionSpace::memory_space;
using DeviceVec = Kokkos::View<float*, DeviceMem>;
using HostConst = Kokkos::View<const float*, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;

/// True where device memory is host memory (CPU builds).
constexpr bool kHostKernels = Kokkos::SpaceAccessibility<Kokkos::HostSpace, DeviceMem>::accessible;
/// True where the device kernels run in the host loops' order (the file comment's bit-for-bit
/// case): Kokkos Serial. A threaded host space (OpenMP) sums the per-block norms of ClipByNorm
/// and ScaleToPolarNorm in another order, so it gets the GPU tolerance.
#if defined(KOKKOS_ENABLE_SERIAL)
constexpr bool kSerialKernels = std::is_same<Kokkos::DefaultExecutionSpace, Kokkos::Serial>::value;
#else
constexpr bool kSerialKernels = false;
#endif
/// Relative agreement of device and host values on a GPU (file comment).
constexpr double kDeviceRel = 1e-4;
/// Relative agreement of schatten_muon off Serial: its criterion ends a golden-section search
/// to 1e-3 in log p, and rounding-level differences in its inputs can end it one bracket
/// apart, so p may differ by a factor e^{±1e-3}; U Σ^{1/p} Vᵀ then moves by about
/// |Δ(1/p)|·ln(σ_max/σ_min) ≤ (1e-3/3)·ln(1e4) ≈ 3e-3 relative at the test's p ≥ 3 (the
/// κ^{1/p} pinning by less), so 1e-2 leaves a margin of 3.
constexpr double kCriterionRel = 1e-2;
/// Relative agreement under global clipping on the host (file comment).
constexpr double kClipRel = 4.0 / 16777216.0;

DeviceVec to_device(const std::vector<float>& h) {
  DeviceVec d("schatten::test::device", h.size());
  Kokkos::deep_copy(d, HostConst(h.data(), h.size()));
  return d;
}
std::vector<float> to_host(const DeviceVec& d) {
  std::vector<float> h(d.extent(0));
  Kokkos::deep_copy(
      Kokkos::View<float*, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>(h.data(), h.size()),
      d);
  return h;
}

/// ‖got − want‖ ≤ rel·‖want‖ (bit for bit when rel is 0); NaN never agrees.
bool agree(const std::vector<float>& got, const std::vector<float>& want, double rel) {
  if (got.size() != want.size()) return false;
  if (rel == 0.0) return got == want;
  double d2 = 0.0, n2 = 0.0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(got[i]) || std::isnan(want[i])) return false;
    d2 += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    n2 += double(want[i]) * want[i];
  }
  return std::sqrt(d2) <= rel * std::sqrt(n2);
}
std::vector<float> minus(const std::vector<float>& a, const std::vector<float>& b) {
  std::vector<float> d(a.size());
  for (std::size_t i = 0; i < a.size(); ++i)
    d[i] = a[i] - b[i];
  return d;
}

/// Every field of two captured states agrees (counters exactly; buffers, and scalars such as
/// DF-Muon's η and L̂ that come from reductions, within rel).
bool same_fields(const io::FieldSet& got, const io::FieldSet& want, double rel) {
  if (got.size() != want.size()) return false;
  for (const auto& field : want) {
    const std::string& name = field.first;
    const io::FieldValue& value = field.second;
    const auto it = got.find(name);
    if (it == got.end() || it->second.index() != value.index()) return false;
    bool same = true;
    if (const auto* v = std::get_if<std::vector<float>>(&value))
      same = agree(std::get<std::vector<float>>(it->second), *v, rel);
    else if (const auto* x = std::get_if<double>(&value))
      same = std::fabs(std::get<double>(it->second) - *x) <= rel * std::fabs(*x);  // NaN never agrees
    else
      same = it->second == value;
    if (!same) {
      MESSAGE("field " << name << " differs");
      return false;
    }
  }
  return true;
}

const std::vector<ParamSpec> kSpecs = {{"h.0.w", {12, 20}}, {"h.0.b", {20}},  {"h.1.w", {12, 20}},
                                       {"h.2.w", {20, 6}},  {"wte", {30, 8}}, {"h.3.w", {12, 20}}};

/// The data pointers of host vectors or device Views, one per parameter.
template <class Arrays>
std::vector<float*> pointers(Arrays& arrays) {
  std::vector<float*> p;
  for (auto& a : arrays)
    p.push_back(a.data());
  return p;
}

/// A gradient for every parameter of kSpecs, the i-th drawn from case_seed(name, base + i), on
/// the host (g) and with the same values on the device (dg).
struct Gradients {
  std::vector<std::vector<float>> g;
  std::vector<DeviceVec> dg;
  Gradients(const char* name, std::uint64_t base, double scale = 0.1) {
    for (std::size_t i = 0; i < kSpecs.size(); ++i) {
      g.push_back(random_vec(static_cast<std::size_t>(flatten(kSpecs[i].shape).size()),
                             case_seed(name, base + i), scale));
      dg.push_back(to_device(g.back()));
    }
  }
};

/// A model in host vectors (the oracle) and device Views (the device partition) with the same
/// values, stepped by two partitions of the same configuration.
struct Twin {
  std::vector<std::vector<float>> w;  // host parameters
  std::vector<DeviceVec> dw;          // device parameters
  std::vector<std::vector<float>> w0;
  explicit Twin(const char* name) {
    for (std::size_t i = 0; i < kSpecs.size(); ++i) {
      w.push_back(random_vec(static_cast<std::size_t>(flatten(kSpecs[i].shape).size()), case_seed(name, i)));
      dw.push_back(to_device(w.back()));
    }
    w0 = w;
  }
  /// One step of both; returns their reports (host first).
  template <class P>
  std::pair<StepReport, StepReport> step(P& host, P& device, const char* name, int t, double scale = 0.1) {
    Gradients gr(name, 1000 + 100 * static_cast<std::uint64_t>(t), scale);
    const StepReport rh = host.step(pointers(w), pointers(gr.g));
    const StepReport rd = device.step(pointers(dw), pointers(gr.dg));
    return {rh, rd};
  }
  /// The device parameters against the host ones: bit for bit on the host, else their changes
  /// from W₀ within rel.
  bool same_params(double rel) const {
    for (std::size_t i = 0; i < w.size(); ++i) {
      const std::vector<float> d = to_host(dw[i]);
      if (rel == 0.0 ? d != w[i] : !agree(minus(d, w0[i]), minus(w[i], w0[i]), rel)) {
        MESSAGE("parameter " << kSpecs[i].name << " differs");
        return false;
      }
    }
    return true;
  }
};

/// Counts the Buffers of a state (float and bf16) and those in device memory.
struct MemoryCensus {
  std::size_t buffers = 0, on_device = 0, bf16 = 0;  // bf16: the Bf16Buffers among them
  template <class T>
  void operator()(const std::string&, BasicBuffer<T>& b) {
    ++buffers;
    on_device += b.memory() == MemoryKind::device;
    bf16 += std::is_same<T, std::uint16_t>::value;
  }
  template <class T>
  void operator()(const std::string&, T&) {}  // counters and scalars
};
template <class P>
bool all_state_on_device(P& p) {
  MemoryCensus c;
  visit_fields(c, p);
  MemoryCensus scratch;  // the rules' scratch Buffers move with the state
  p.visit_scratch(scratch);
  return c.buffers > 0 && c.on_device == c.buffers && scratch.on_device == scratch.buffers;
}

/// Steps a host and a device partition of `make()`'s configuration three times on the same
/// gradients and compares parameters and every state field after each step.
template <class Make>
void check_twin(const char* name, const Make& make, double host_rel = 0.0, double device_rel = kDeviceRel) {
  const std::vector<std::string> labels = propose_labels(kSpecs);
  auto host = make(labels);
  auto device = make(labels);
  REQUIRE(host.init());
  REQUIRE(device.init(MemoryKind::device));
  CHECK(device.memory() == MemoryKind::device);
  CHECK(all_state_on_device(device));
  Twin m(name);
  const double rel = kSerialKernels ? host_rel : device_rel;
  for (int t = 0; t < 3; ++t) {
    CAPTURE(t);
    const auto reports = m.step(host, device, name, t);
    REQUIRE(reports.first);
    REQUIRE(reports.second);
    CHECK(m.same_params(rel));
    CHECK(same_fields(io::capture(device), io::capture(host), rel));
  }
}

/// Checks that every block a rule receives is labelled with the memory it lives in (on a CPU
/// build a mislabelled device block would still work, so the label itself is tested): refuses
/// with invalid_argument otherwise. Touches no memory.
struct MemoryProbe {
  static constexpr const char* name = "memory_probe";
  static constexpr bool device_capable = true;
  MemoryKind expect = MemoryKind::device;
  struct State {
    std::int64_t count = 0;
  };
  State init(const BlockShape&) const { return {}; }
  Status update(Block u, State& s, ConstBlock p) const {
    if (u.memory != expect || p.memory != expect) return Status::invalid_argument;
    ++s.count;
    return Status::ok;
  }
  template <class V>
  friend void visit_fields(V& v, State& s) {
    v("count", s.count);
  }
};

/// A rule that declares no device form (rule.hpp, is_device_capable): u ← −u on the host.
struct HostOnly {
  static constexpr const char* name = "host_only";
  struct State {
    std::int64_t count = 0;
  };
  State init(const BlockShape&) const { return {}; }
  Status update(Block u, State& s, ConstBlock) const {
    for (index_t k = 0; k < u.size(); ++k)
      u.data[k] = -u.data[k];
    ++s.count;
    return Status::ok;
  }
  template <class V>
  friend void visit_fields(V& v, State& s) {
    v("count", s.count);
  }
};

}  // namespace

TEST_SUITE("optim.device") {
  TEST_CASE("FloatBuffer moves copies and compares across memories") {
    FloatBuffer a(5, 1.5f);
    CHECK(a.memory() == MemoryKind::host);
    a[2] = -3.0f;
    const FloatBuffer host_copy = a;
    REQUIRE(a.move_to(MemoryKind::device));
    CHECK(a.memory() == MemoryKind::device);
    CHECK(a.size() == 5);
    CHECK(a == host_copy);  // compared through host copies where needed
    FloatBuffer b = a;      // a device copy
    CHECK(b.memory() == MemoryKind::device);
    CHECK(b.data() != a.data());
    const std::vector<float> fresh = {1, 2, 3, 4, 5};
    REQUIRE(b.copy_from(fresh.data(), fresh.size()));
    CHECK(b.to_vector() == fresh);
    CHECK(a.to_vector()[2] == -3.0f);      // the copy was deep
    CHECK(!b.copy_from(fresh.data(), 4));  // another size: refused, unchanged
    CHECK(b.to_vector() == fresh);
    const float* before = b.data();
    b = a;  // same memory and size: the allocation is reused
    CHECK(b.data() == before);
    CHECK(b == a);
    REQUIRE(b.move_to(MemoryKind::host));
    CHECK(b.memory() == MemoryKind::host);
    CHECK(b == host_copy);
    FloatBuffer empty(0, MemoryKind::device);
    CHECK(empty.empty());
    CHECK(empty.to_vector().empty());
  }

  TEST_CASE("muon and adamw with batched groups step on the device like on the host") {
    check_twin("dev_muon", [](const std::vector<std::string>& labels) {
      return partition(kSpecs, labels, route("muon", muon()), route("adamw", adamw()));
    });
    // optax's variant: bias-corrected momentum (the device momentum kernel's factors) and the
    // dual-norm scaled polar factor (the batched polar call), with AOL pre-scaling.
    MuonOptions ox;
    ox.bias_correction = true;
    ox.polar.dual_norm_scale = true;
    ox.polar.schedule.normalization.kind = Normalization::Kind::aol;
    ox.lr = Schedule::constant(1e-4);
    check_twin("dev_muon_optax", [&](const std::vector<std::string>& labels) {
      return partition(kSpecs, labels, route("muon", muon(ox)), route("adamw", adamw()));
    });
    // bf16 momentum and first moment (docs/optim.md "State precision"): the device kernels'
    // bf16 overloads, the Bf16Buffers moved to the device and their backups. The unfused Adam
    // chain takes the ScaleByAdam kernel's bf16 overload. Off Serial, an FMA's one-ulp change
    // (file comment) can move a float across a bf16 rounding midpoint (about 2⁻¹⁶ of the
    // elements per step), changing that stored element by 2⁻⁸ of itself; one such element in a
    // buffer of n ≥ 16 moves it by at most 2⁻⁸/√n·√(flips) ≈ 1e-3 relative: 1e-2 there.
    constexpr double kBf16DeviceRel = 1e-2;
    // `rule` on the matrices, `side` on the other parameters.
    const auto bf16_twin = [&](const char* name, auto rule, auto side) {
      check_twin(
          name,
          [&](const std::vector<std::string>& labels) {
            return partition(kSpecs, labels, route("muon", rule), route("adamw", side));
          },
          0.0, kBf16DeviceRel);
    };
    const AdamWOptions a16 = bf16_state(AdamWOptions{});
    bf16_twin("dev_muon_bf16", muon(bf16_state(ox)), adamw(a16));
    bf16_twin("dev_adam_bf16", sgd(SgdOptions{Schedule::constant(0.01), 0.9, true, 0.0, Precision::bf16}),
              chain(ScaleByAdam{0.9, 0.999, 1e-8, Precision::bf16}, AddDecayedWeights{0.01},
                    ScaleByLearningRate{}));
    // The rules with their own bf16 moment: the Lion and MuAdam kernels' bf16 overloads, and
    // SC/DF-Muon's tentative momentum (device scratch in the state's storage, copied and swapped
    // on the device).
    LionOptions lo;
    lo.lr = Schedule::constant(1e-3);
    bf16_twin("dev_lion_muadam_bf16", muadam(bf16_state(MuAdamOptions{})), lion(bf16_state(lo)));
    bf16_twin("dev_sc_bf16", sc_muon(bf16_state(ScMuonOptions{})), adamw(a16));
    bf16_twin("dev_df_bf16", df_muon(bf16_state(DfMuonOptions{})), adamw(a16));
    bf16_twin("dev_namo_d_bf16", namo_d(bf16_state(NamoDOptions{})), adamw(a16));
    bf16_twin("dev_dion2_bf16", dion2(bf16_state(Dion2Options{})), adamw(a16));
    // Dion's M widened into u on the device, the kernel's hook storing M′ after the feedback
    // (on a GPU build with host state: staged back first), at half rank.
    DionOptions dh;
    dh.rank_fraction = 0.5;
    bf16_twin("dev_dion_bf16", dion(bf16_state(dh)), adamw(a16));
    // Dion's bf16 Q too: widened into the shared float scratch by the device kernel, rounded
    // back after the step (DionDirection::kernel_q, store_q).
    DionOptions dq = bf16_state(dh);
    dq.q_storage = Precision::bf16;
    bf16_twin("dev_dion_q_bf16", dion(dq), adamw(a16));
    bf16_twin("dev_smuon_bf16", schatten_muon(bf16_state(SchattenMuonOptions{})), adamw(a16));
    // Stochastic rounding: the same kernels with the dither of each element's value and step
    // (core/bf16.hpp). Off Serial an FMA's one-ulp change of a value changes its dither, so a
    // changed element rounds the other way with probability up to ½ (not 2⁻¹⁶): still one bf16
    // unit, 2⁻⁸ of the element, and kBf16DeviceRel's bound holds for every element flipping.
    const AdamWOptions asr = bf16_stochastic_state(AdamWOptions{});
    bf16_twin("dev_muon_sr", muon(bf16_stochastic_state(ox)), adamw(asr));
    bf16_twin("dev_lion_muadam_sr", muadam(bf16_stochastic_state(MuAdamOptions{})),
              lion(bf16_stochastic_state(lo)));
    bf16_twin("dev_dion2_sr", dion2(bf16_stochastic_state(Dion2Options{})), adamw(asr));
    bf16_twin("dev_dion_sr", dion(bf16_stochastic_state(dh)), adamw(asr));
    dq.q_storage = StateStorage::bf16_stochastic();
    bf16_twin("dev_dion_q_sr", dion(dq), adamw(asr));
    bf16_twin("dev_smuon_sr", schatten_muon(bf16_stochastic_state(SchattenMuonOptions{})), adamw(asr));
  }

  TEST_CASE("sgd kaon muadam freon normuon and adamuon step on the device like on the host") {
    SgdOptions so;
    so.momentum = 0.9;
    so.nesterov = true;
    so.weight_decay = 0.01;
    check_twin("dev_sgd", [&](const std::vector<std::string>& labels) {
      return partition(kSpecs, labels, route("muon", sgd(so)), route("adamw", sgd()));
    });
    KaonOptions ko;
    ko.weight_decay = 0.1;
    check_twin("dev_kaon", [&](const std::vector<std::string>& labels) {
      return partition(kSpecs, labels, route("muon", kaon(ko)), route("adamw", adamw()));
    });
    check_twin("dev_muadam", [](const std::vector<std::string>& labels) {
      return partition(kSpecs, labels, route("muon", muadam()), route("adamw", adamw()));
    });
    check_twin("dev_freon", [](const std::vector<std::string>& labels) {
      return partition(kSpecs, labels, route("muon", freon()), route("adamw", adamw()));
    });
    check_twin("dev_normuon", [](const std::vector<std::string>& labels) {
      return partition(kSpecs, labels, route("muon", normuon()), route("adamw", adamw()));
    });
    check_twin("dev_adamuon", [](const std::vector<std::string>& labels) {
      return partition(kSpecs, labels, route("muon", adamuon()), route("adamw", adamw()));
    });
    // Dion2 ranks its slices on the host from norms read back, and gathers and places them with
    // its own kernels: rows of the 12 × 20 blocks, columns of the 20 × 6 one.
    check_twin("dev_lion", [](const std::vector<std::string>& labels) {
      return partition(kSpecs, labels, route("muon", dion2()), route("adamw", lion()));
    });
    check_twin("dev_dion2", [](const std::vector<std::string>& labels) {
      return partition(kSpecs, labels, route("muon", dion2()), route("adamw", adamw()));
    });
    // NorDion2: Dion2's row selection on every shape, then the row normalisation, whose moments
    // hold on the rows that were not selected.
    check_twin("dev_nordion2", [](const std::vector<std::string>& labels) {
      return partition(kSpecs, labels, route("muon", nordion2()), route("adamw", adamw()));
    });
    // Dion: the power iteration's GEMMs on the device, its QR on the host (P read back and
    // written again), and Q, a state buffer, in device memory; a rank fraction below 1.
    check_twin("dev_dion", [](const std::vector<std::string>& labels) {
      DionOptions o;
      o.rank_fraction = 0.5;
      return partition(kSpecs, labels, route("muon", dion(o)), route("adamw", adamw()));
    });
    // MuonHyperball: two Frobenius normalisations, the second of W + u (device parameters).
    check_twin("dev_muon_hyperball", [](const std::vector<std::string>& labels) {
      return partition(kSpecs, labels, route("muon", muon_hyperball()), route("adamw", adamw()));
    });
    // Emerging-Optimizers' two weight-update hooks in one chain: RelativeUpdate reads the device
    // parameters' norm, RadialBrake rescales W + u and writes W_new − W.
    check_twin("dev_eo_hooks", [](const std::vector<std::string>& labels) {
      const Schedule lr = Schedule::constant(0.02);
      const auto hooked =
          chain(TraceMomentum{0.95, false, TraceMomentum::Form::ema}, Orthogonalize{eo_quintic_polar()},
                RelativeUpdate{1e-15, lr, 0.01}, AddDecayedWeights{0.01}, ScaleByLearningRate{lr},
                RadialBrake{0.5, 0.5, 1e-15, lr, 0.01});
      return partition(kSpecs, labels, route("muon", hooked), route("adamw", adamw()));
    });
    // SPEL's last rule reads the parameters (device memory) and projects W + u.
    check_twin("dev_spel", [](const std::vector<std::string>& labels) {
      return partition(kSpecs, labels, route("muon", spel()), route("adamw", adamw()));
    });
    // Muon with its weights' singular values capped after each step (SpectralClipWeights: the
    // kernel takes the device blocks, OnWeights the device parameters), and the update's own
    // spectrum clipped (SpectralClip) on the AdamW route's matrices.
    SpectralClipWeights cap;
    cap.options.upper = 0.5;
    SpectralClip clip;
    clip.options.lower = 0.01;
    check_twin("dev_spectral_clip", [&](const std::vector<std::string>& labels) {
      return partition(kSpecs, labels,
                       route("muon", chain(TraceMomentum{}, Orthogonalize{}, ScaleByLearningRate{}, cap)),
                       route("adamw", chain(clip, ScaleByLearningRate{})));
    });
    // The same with the polynomial method (Newton–Schulz only): its per-item shifts go to the
    // device with the batch. Both rules blend (SpectralClipOptions::blend: the store pass reads
    // the device input it overwrites, in place).
    cap.options.method = clip.options.method = SpectralClipMethod::polynomial;
    cap.options.blend = 0.3;
    clip.options.blend = 0.6;
    check_twin("dev_spectral_clip_poly", [&](const std::vector<std::string>& labels) {
      return partition(kSpecs, labels,
                       route("muon", chain(TraceMomentum{}, Orthogonalize{}, ScaleByLearningRate{}, cap)),
                       route("adamw", chain(clip, ScaleByLearningRate{})));
    });
  }

  TEST_CASE("da sc df muon and namo step on the device like on the host") {
    // Their scalar recurrences read inner products of the state (rule.hpp,
    // inner_of_differences) and SC/DF keep scratch buffers, which move with the state. Three
    // steps reach DF-Muon's secant and majorised search (the first step has none). With weight
    // decay, which reads the device parameters (step_size.hpp, step_with_decay).
    DaMuonOptions da;
    ScMuonOptions sc;
    DfMuonOptions df;
    da.weight_decay = sc.weight_decay = df.weight_decay = 0.1;
    check_twin("dev_da", [&](const std::vector<std::string>& labels) {
      return partition(kSpecs, labels, route("muon", da_muon(da)), route("adamw", adamw()));
    });
    check_twin("dev_sc", [&](const std::vector<std::string>& labels) {
      return partition(kSpecs, labels, route("muon", sc_muon(sc)), route("adamw", adamw()));
    });
    check_twin("dev_df", [&](const std::vector<std::string>& labels) {
      return partition(kSpecs, labels, route("muon", df_muon(df)), route("adamw", adamw()));
    });
    check_twin("dev_namo", [](const std::vector<std::string>& labels) {
      return partition(kSpecs, labels, route("muon", namo()), route("adamw", adamw()));
    });
    // NAMO-D reads its column norms back and sends its column factors (step_size.hpp).
    check_twin("dev_namo_d", [](const std::vector<std::string>& labels) {
      return partition(kSpecs, labels, route("muon", namo_d()), route("adamw", adamw()));
    });
    // The scratch of a device partition is device memory and is not checkpointed.
    auto p = partition(kSpecs, propose_labels(kSpecs), route("muon", df_muon()), route("adamw", adamw()));
    REQUIRE(p.init(MemoryKind::device));
    MemoryCensus scratch;
    p.visit_scratch(scratch);
    CHECK(scratch.buffers == 2 * 4);  // g_t and the next momentum of each of the 4 matrices
    CHECK(scratch.on_device == scratch.buffers);
    const io::FieldSet fields = io::capture(p);
    CHECK(fields.count("h.0.w/0_majorized_step/mu") == 1);
    CHECK(fields.count("h.0.w/0_majorized_step/gradient") == 0);
    // With bf16 storage the next momentum is a device Bf16Buffer, and the state's momentum too.
    auto p16 = partition(kSpecs, propose_labels(kSpecs), route("muon", df_muon(bf16_state(DfMuonOptions{}))),
                         route("adamw", adamw()));
    REQUIRE(p16.init(MemoryKind::device));
    MemoryCensus scratch16, fields16;
    p16.visit_scratch(scratch16);
    visit_fields(fields16, p16);
    CHECK(scratch16.bf16 == 4);
    CHECK(scratch16.on_device == scratch16.buffers);
    CHECK(fields16.bf16 == 4);  // the matrices' momenta (the AdamW side's m stays fp32 here)
    CHECK(fields16.on_device == fields16.buffers);
  }

  TEST_CASE("schatten muon with statistics steps on the device like on the host") {
    // The first step runs the spectral power at the initial p = 3; the criterion then runs at
    // steps 2 and 3 (first 2, interval 3) on host copies of the device arrays, with activation
    // Grams accumulated from device inputs. The parametric moment runs as a kernel throughout.
    SchattenMuonOptions so;
    so.first = 2;
    so.interval = 3;
    so.p = 3.0;
    so.moment = SchattenPDirection::Moment::parametric;
    int with_statistics = 0;
    so.on_criterion = [&](const PCriterionEvent& e) { with_statistics += e.had_statistics; };
    const std::vector<std::string> labels = propose_labels(kSpecs);
    const auto make = [&] {
      return partition(kSpecs, labels, route("muon", schatten_muon(so)), route("adamw", adamw()));
    };
    auto host = make();
    auto device = make();
    REQUIRE(host.init());
    REQUIRE(device.init(MemoryKind::device));
    CHECK(all_state_on_device(device));
    Twin m("dev_smuon");
    const double rel = kSerialKernels ? 0.0 : kCriterionRel;
    for (int t = 0; t < 3; ++t) {
      CAPTURE(t);
      for (std::size_t i = 0; i < kSpecs.size(); ++i) {
        if (!activations_wanted(host, kSpecs[i].name)) continue;
        CHECK(activations_wanted(device, kSpecs[i].name));
        const index_t cols = flatten(kSpecs[i].shape).cols, tokens = 16;
        const std::vector<float> x =
            random_vec(static_cast<std::size_t>(tokens * cols), case_seed("dev_smuon_x", 10 * t + i), 1.0);
        const DeviceVec dx = to_device(x);
        REQUIRE(accumulate_activations(host, kSpecs[i].name,
                                       MatrixRef<const float>(x.data(), tokens, cols)) == Status::ok);
        REQUIRE(accumulate_activations(device, kSpecs[i].name,
                                       MatrixRef<const float>(dx.data(), tokens, cols, MemoryKind::device)) ==
                Status::ok);
      }
      const auto reports = m.step(host, device, "dev_smuon", t);
      REQUIRE(reports.first);
      REQUIRE(reports.second);
      CHECK(m.same_params(rel));
      CHECK(same_fields(io::capture(device), io::capture(host), rel));
    }
    // Both partitions ran the criterion with statistics on each of the 4 matrices, twice.
    CHECK(with_statistics == 2 * 2 * 4);
  }

  TEST_CASE("every element-wise rule steps on the device like on the host") {
    // The rules the presets above do not use: the unfused Adam chain, cautious and independent
    // decay, per-block clipping, the polar-norm rescale and the Moonlight shape scale.
    const auto make = [](const std::vector<std::string>& labels) {
      return partition(
          kSpecs, labels,
          route("muon",
                chain(TraceMomentum{0.9, false, TraceMomentum::Form::sum}, ClipByNorm{0.05}, Orthogonalize{},
                      ScaleToPolarNorm{}, ScaleByShape{ScaleByShape::Rule::moonlight},
                      AddDecayedWeights{0.1, AddDecayedWeights::Mode::cautious},
                      ScaleByLearningRate{Schedule::warmup_cosine(0.02, 2, 10)}, AddIndependentDecay{0.001})),
          route("adamw", chain(ScaleByAdam{}, AddDecayedWeights{0.01}, ScaleByLearningRate{})));
    };
    check_twin("dev_rules", make);
  }

  TEST_CASE("rules see device blocks and parameters labelled as device memory") {
    // The probe runs per block inside the batched groups (after Orthogonalize's one batched
    // call) and alone for the other matrix, on the update and on the parameter.
    for (const MemoryKind memory : {MemoryKind::host, MemoryKind::device}) {
      CAPTURE(static_cast<int>(memory));
      const std::vector<std::string> labels = propose_labels(kSpecs);
      auto p = partition(kSpecs, labels,
                         route("muon", chain(TraceMomentum{}, Orthogonalize{}, MemoryProbe{memory},
                                             AddDecayedWeights{0.1}, ScaleByLearningRate{})),
                         route("adamw", chain(MemoryProbe{memory}, AdamWUpdate{})));
      REQUIRE(p.init(memory));
      REQUIRE(!p.batch_groups().empty());
      Twin m("dev_probe");
      Gradients gr("dev_probe_g", 0);
      const bool device = memory == MemoryKind::device;
      const StepReport r =
          device ? p.step(pointers(m.dw), pointers(gr.dg)) : p.step(pointers(m.w), pointers(gr.g));
      CHECK(r.status == Status::ok);
      CHECK(std::string(r.message).empty());
    }
  }

  TEST_CASE("global clipping on the device") {
    // The device sums the norm per parameter (file comment): kClipRel on the host.
    const auto make = [](const std::vector<std::string>& labels) {
      auto p = partition(kSpecs, labels, route("muon", muon()), route("adamw", adamw()));
      p.set_global_clip(0.5);
      return p;
    };
    check_twin("dev_clip", make, kClipRel);
  }

  TEST_CASE("a refused or failed device step changes nothing") {
    const std::vector<std::string> labels = propose_labels(kSpecs);
    const auto make = [&] {
      MuonOptions mo;
      return partition(kSpecs, labels,
                       route("muon", chain(TraceMomentum{}, Orthogonalize{mo.polar}, FailOnCall{2},
                                           ScaleByLearningRate{Schedule::constant(0.02)})),
                       route("adamw", adamw()));
    };
    auto host = make();
    auto device = make();
    REQUIRE(host.init());
    REQUIRE(device.init(MemoryKind::device));
    Twin m("dev_fail");
    const auto first = m.step(host, device, "dev_fail", 0);
    REQUIRE(first.first);
    REQUIRE(first.second);
    const io::FieldSet state = io::capture(device);
    std::vector<std::vector<float>> params;
    for (const DeviceVec& d : m.dw)
      params.push_back(to_host(d));
    // The second call of FailOnCall fails inside the chain, after the momentum and the polar
    // factor of the first matrix advanced: every state is restored, no parameter moves.
    const auto second = m.step(host, device, "dev_fail", 1);
    CHECK(second.first.status == Status::out_of_memory);
    CHECK(second.second.status == Status::out_of_memory);
    CHECK(second.second.bad_param == second.first.bad_param);
    CHECK(same_fields(io::capture(device), state, 0.0));
    for (std::size_t i = 0; i < m.dw.size(); ++i)
      CHECK(to_host(m.dw[i]) == params[i]);
    // A NaN gradient is refused before anything runs, naming the parameter.
    std::vector<DeviceVec> g;
    std::vector<float*> wp, gp;
    for (std::size_t i = 0; i < kSpecs.size(); ++i) {
      std::vector<float> h = random_vec(m.w[i].size(), case_seed("dev_fail_nan", i));
      if (i == 3) h[7] = std::numeric_limits<float>::quiet_NaN();
      g.push_back(to_device(h));
      wp.push_back(m.dw[i].data());
      gp.push_back(g[i].data());
    }
    const StepReport r = device.step(wp, gp);
    CHECK(r.status == Status::non_finite_input);
    CHECK(r.bad_param == 3);
    CHECK(same_fields(io::capture(device), state, 0.0));
    for (std::size_t i = 0; i < m.dw.size(); ++i)
      CHECK(to_host(m.dw[i]) == params[i]);
    // So is an Inf in a parameter (its test ORs into its gradient's flag: the same one read-back),
    // with clean gradients, and the message says it is the parameter.
    {
      std::vector<DeviceVec> g2;
      std::vector<float*> gp2;
      for (std::size_t i = 0; i < kSpecs.size(); ++i) {
        g2.push_back(to_device(random_vec(m.w[i].size(), case_seed("dev_fail_param", i))));
        gp2.push_back(g2[i].data());
      }
      std::vector<float> bad_w = params[4];
      bad_w[bad_w.size() - 1] = std::numeric_limits<float>::infinity();
      DeviceVec bad_dw = to_device(bad_w);
      std::vector<float*> wp2 = wp;
      wp2[4] = bad_dw.data();
      const StepReport rp = device.step(wp2, gp2);
      CHECK(rp.status == Status::non_finite_input);
      CHECK(rp.bad_param == 4);
      CHECK(std::string(rp.message).find("parameter '") == 0);
      CHECK(same_fields(io::capture(device), state, 0.0));
      CHECK(to_host(bad_dw) == bad_w);
    }
    // Too large for Adam's float state: out_of_range, nothing changed; under the skip policy
    // the step is skipped and counted.
    std::vector<float> huge = random_vec(m.w[1].size(), case_seed("dev_fail_huge", 1));
    huge[0] = 1e30f;
    g[1] = to_device(huge);
    gp[1] = g[1].data();
    std::vector<float> clean = random_vec(m.w[3].size(), case_seed("dev_fail_clean", 3));
    g[3] = to_device(clean);
    gp[3] = g[3].data();
    CHECK(device.step(wp, gp).status == Status::out_of_range);
    device.set_non_finite_policy(NonFinitePolicy::skip);
    const StepReport skipped = device.step(wp, gp);
    CHECK(skipped.status == Status::ok);
    CHECK(skipped.skipped);
    CHECK(device.skipped_steps() == 1);
    for (std::size_t i = 0; i < m.dw.size(); ++i)
      CHECK(to_host(m.dw[i]) == params[i]);
  }

  /// The device precheck of a route whose rule keeps a state buffer named `mu` ("<index>_<rule>/
  /// <field>", a momentum or a second moment): no backups, and an entry `value` there (kBf16Max:
  /// beyond the momentum's bound) refused with `expected` on host and device alike before
  /// anything moves, with `gradient` as the first gradient entry of the last hidden matrix h.3.w
  /// (0: the drawn one). `edit`, when given, changes further fields of the captured state before
  /// both partitions load it.
  template <class Rule>
  void check_device_precheck(const Rule& rule, const std::string& mu, float gradient = 0.0f,
                             float value = kBf16Max, Status expected = Status::out_of_range,
                             const std::function<void(io::FieldSet&)>& edit = nullptr) {
    const std::vector<std::string> labels = propose_labels(kSpecs);
    const auto make = [&] { return partition(kSpecs, labels, route("muon", rule), route("adamw", adamw())); };
    auto host = make();
    auto device = make();
    REQUIRE(host.init());
    REQUIRE(device.init(MemoryKind::device));
    CHECK(host.memory_use().backups == 0);
    CHECK(device.memory_use().backups == 0);
    Twin m("dev_precheck");
    const auto first = m.step(host, device, "dev_precheck", 0);
    REQUIRE(first.first);
    REQUIRE(first.second);
    io::FieldSet fields = io::capture(device);
    std::get<std::vector<float>>(fields.at("h.3.w/" + mu))[0] = value;  // kBf16Max: held by bf16
    if (edit) edit(fields);
    // Values no accepted step leaves (a NaN, a negative ν) are what the prechecks must refuse:
    // loaded without restore()'s value check, which a checkpoint file gets.
    REQUIRE(io::restore(device, fields, nullptr, io::ValueCheck::off) == Status::ok);
    REQUIRE(io::restore(host, fields, nullptr, io::ValueCheck::off) == Status::ok);
    const io::FieldSet state = io::capture(device);
    std::vector<std::vector<float>> params;
    for (const DeviceVec& d : m.dw)
      params.push_back(to_host(d));
    const auto w_host = m.w;
    Gradients gr("dev_precheck_g", 0);
    if (gradient != 0.0f) {
      gr.g[5][0] = gradient;  // h.3.w
      gr.dg[5] = to_device(gr.g[5]);
    }
    const StepReport rh = host.step(pointers(m.w), pointers(gr.g));
    const StepReport rd = device.step(pointers(m.dw), pointers(gr.dg));
    CHECK(rh.status == expected);
    CHECK(rd.status == expected);
    CHECK(rh.bad_param == 5);
    CHECK(rd.bad_param == 5);
    CHECK(std::string(rd.message).find("precheck") != std::string::npos);
    CHECK(same_fields(io::capture(device), state, 0.0));
    CHECK(same_fields(io::capture(host), state, 0.0));
    CHECK(m.w == w_host);
    for (std::size_t i = 0; i < m.dw.size(); ++i)
      CHECK(to_host(m.dw[i]) == params[i]);
  }

  TEST_CASE("device partitions of prechecked routes keep no backups, and refuse like the host") {
    // Muon's chain is prechecked (docs/optim.md "Prechecks instead of copies"): no copies of its
    // states, and on device memory the partition queues the value tests of all its parameters
    // and reads their flags back with one transfer. A momentum beyond its per-step bound in the
    // last hidden matrix (sum form, B = kBf16Max and G = 7e36 of one sign, G within
    // max_gradient(), the sum form's bound over all steps: 8.5e36 in fp32, 7.8e36 in bf16) is
    // refused before anything moves, on the host and on the device alike, in either storage. Kaon, SC-Muon,
    // DF-Muon and NAMO: the same test of their EMA momentum (B = kBf16Max beyond its bound FLT_MAX/2).
    // MuAdam: m beyond its moment bound, and a second moment v that is negative or beyond FLT_MAX/2, whose
    // device test ORs into the flag that m's wrote. Dion2 and NorDion2: M beyond entry_bound() (FLT_MAX/2 in
    // fp32, kBf16Max/80 in bf16 for the 12 × 20 block), and in bf16 a gradient entry beyond it (1e37, within
    // max_gradient()), whose device test ORs into M's flag. NAMO-D: its momentum beyond entry_bound()
    // (FLT_MAX/(2√12) for the 12 × 20 block), a gradient entry beyond it (1e38), and a negative √V_j, whose
    // device tests OR into the momentum's flag. Dion: M beyond entry_bound() (FLT_MAX/(4·√12·2¹⁰)/(2·√240)
    // = 7.7e32), a gradient entry beyond it (1e34) and Q beyond 2¹⁰ of either sign, the last three ORed into
    // M's flag. schatten_muon: m beyond entry_bound() (FLT_MAX/(4·B·√240·20) = 9.2e34 for the 12 × 20 block),
    // a gradient entry beyond it (1e37), a negative v with the moment, and an ∞ in the activation Gram that
    // step 2's criterion reads (first = 2; an overflowing sum across ranks), the last three ORed
    // into m's flag.
    for (const Precision storage : {Precision::fp32, Precision::bf16}) {
      CAPTURE(std::string(to_string(storage)));
      MuonOptions mo;
      mo.momentum_form = TraceMomentum::Form::sum;
      mo.mu_storage = storage;
      check_device_precheck(muon(mo), "0_trace_momentum/mu", 7e36f);
      KaonOptions ko;
      ko.mu_storage = storage;
      check_device_precheck(kaon(ko), "0_trace_momentum/mu");
      ScMuonOptions so;
      so.mu_storage = storage;
      check_device_precheck(sc_muon(so), "0_scale_calibrated_direction/mu");
      DfMuonOptions dfo;
      dfo.mu_storage = storage;
      check_device_precheck(df_muon(dfo), "0_majorized_step/mu");
      NamoOptions no;
      no.mu_storage = storage;
      check_device_precheck(namo(no), "0_namo_step/mu");
      MuAdamOptions mao;
      mao.mu_storage = storage;
      check_device_precheck(muadam(mao), "0_muadam_direction/mu");
      check_device_precheck(muadam(mao), "0_muadam_direction/nu", 0.0f, -1.0f, Status::non_finite_input);
      check_device_precheck(muadam(mao), "0_muadam_direction/nu", 0.0f, std::numeric_limits<float>::max(),
                            Status::out_of_range);
      Dion2Options d2;
      d2.mu_storage = storage;
      NorDion2Options nd2;
      nd2.mu_storage = storage;
      check_device_precheck(dion2(d2), "0_dion2_direction/m");
      check_device_precheck(nordion2(nd2), "0_dion2_direction/m");
      if (storage == Precision::bf16) check_device_precheck(dion2(d2), "0_dion2_direction/m", 1e37f, 0.0f);
      NamoDOptions ndo;
      ndo.mu_storage = storage;
      check_device_precheck(namo_d(ndo), "0_namo_d_step/mu");
      check_device_precheck(namo_d(ndo), "0_namo_d_step/mu", 1e38f, 0.0f);
      check_device_precheck(namo_d(ndo), "0_namo_d_step/v", 0.0f, -1.0f, Status::non_finite_input);
      DionOptions dio;
      dio.rank_fraction = 0.5;
      dio.mu_storage = storage;
      check_device_precheck(dion(dio), "0_dion_direction/m");
      check_device_precheck(dion(dio), "0_dion_direction/m", 1e34f, 0.0f);
      check_device_precheck(dion(dio), "0_dion_direction/q", 0.0f, 2048.0f);
      check_device_precheck(dion(dio), "0_dion_direction/q", 0.0f, -2048.0f);
      SchattenMuonOptions smo;
      smo.mu_storage = storage;
      smo.first = 2;
      check_device_precheck(schatten_muon(smo), "0_schatten_p_direction/mu");
      check_device_precheck(schatten_muon(smo), "0_schatten_p_direction/mu", 1e37f, 0.0f);
      check_device_precheck(schatten_muon(smo), "0_schatten_p_direction/activation_gram", 0.0f,
                            std::numeric_limits<float>::infinity(), Status::non_finite_input,
                            [](io::FieldSet& f) {  // statistics collected for step 2
                              f.at("h.3.w/0_schatten_p_direction/activation_samples") = std::int64_t(1);
                              f.at("h.3.w/0_schatten_p_direction/activation_step") = std::int64_t(1);
                            });
      smo.moment = SchattenPDirection::Moment::parametric;
      check_device_precheck(schatten_muon(smo), "0_schatten_p_direction/nu", 0.0f, -1.0f,
                            Status::non_finite_input);
    }
  }

  TEST_CASE("rules without a device form are refused at init") {
    const std::vector<std::string> labels = propose_labels(kSpecs);
    auto p =
        partition(kSpecs, labels, route("muon", chain(TraceMomentum{}, HostOnly{})), route("adamw", adamw()));
    static_assert(!decltype(p)::device_capable, "HostOnly declares no device form");
    const StepReport r = p.init(MemoryKind::device);
    CHECK(r.status == Status::unsupported);
    CHECK(std::string(r.message).find("device") != std::string::npos);
    // Not initialised: a step is refused, nothing touched.
    std::vector<float*> none(kSpecs.size(), nullptr);
    CHECK(p.step(none, none).status == Status::invalid_argument);
    REQUIRE(p.init());  // the host path still works
    CHECK(p.memory() == MemoryKind::host);
  }

  TEST_CASE("a device partition checkpoints and resumes like a host one") {
    const std::vector<std::string> labels = propose_labels(kSpecs);
    const auto make = [&] {
      return partition(kSpecs, labels, route("muon", muon()), route("adamw", adamw()));
    };
    auto host = make();
    auto device = make();
    REQUIRE(host.init());
    REQUIRE(device.init(MemoryKind::device));
    Twin m("dev_ckpt");
    for (int t = 0; t < 2; ++t)
      REQUIRE(m.step(host, device, "dev_ckpt", t).second);
    const io::FieldSet saved = io::capture(device);
    CHECK(same_fields(saved, io::capture(host), kSerialKernels ? 0.0 : kDeviceRel));
    // A fresh device partition restored from the captured fields continues exactly like the
    // original (same memory, same kernels: bit for bit on every build).
    auto resumed = make();
    REQUIRE(resumed.init(MemoryKind::device));
    std::string error;
    REQUIRE(io::restore(resumed, saved, &error) == Status::ok);
    CHECK(resumed.memory() == MemoryKind::device);
    CHECK(same_fields(io::capture(resumed), saved, 0.0));
    Twin copy = m;
    for (std::size_t i = 0; i < m.dw.size(); ++i) {  // deep copies of the device parameters
      copy.dw[i] = DeviceVec("copy", m.dw[i].extent(0));
      Kokkos::deep_copy(copy.dw[i], m.dw[i]);
    }
    auto host_again = make();
    REQUIRE(host_again.init());
    REQUIRE(m.step(host, device, "dev_ckpt", 2).second);
    REQUIRE(copy.step(host_again, resumed, "dev_ckpt", 2).second);
    for (std::size_t i = 0; i < m.dw.size(); ++i)
      CHECK(to_host(copy.dw[i]) == to_host(m.dw[i]));
    CHECK(same_fields(io::capture(resumed), io::capture(device), 0.0));
    // A host checkpoint loads into a device partition too (the fields are host arrays).
    auto from_host = make();
    REQUIRE(from_host.init(MemoryKind::device));
    REQUIRE(io::restore(from_host, io::capture(host), &error) == Status::ok);
    CHECK(same_fields(io::capture(from_host), io::capture(host), 0.0));
  }

  TEST_CASE("kokkos step on a device partition takes device Views without staging") {
    const std::vector<std::string> labels = propose_labels(kSpecs);
    auto host = partition(kSpecs, labels, route("muon", muon()), route("adamw", adamw()));
    auto device = partition(kSpecs, labels, route("muon", muon()), route("adamw", adamw()));
    REQUIRE(host.init());
    REQUIRE(device.init(MemoryKind::device));
    auto staging = kokkos::make_step_staging<DeviceMem>(device);
    CHECK(!staging.staged);  // a device partition never stages
    Twin m("dev_views");
    for (int t = 0; t < 2; ++t) {
      Gradients gr("dev_views_g", 100 * static_cast<std::uint64_t>(t));
      REQUIRE(host.step(pointers(m.w), pointers(gr.g)));
      REQUIRE(kokkos::step(device, m.dw, gr.dg, staging));
      CHECK(m.same_params(kSerialKernels ? 0.0 : kDeviceRel));
      // The gradient Views hold the updates (Partition::step's contract).
      for (std::size_t i = 0; i < kSpecs.size(); ++i)
        CHECK(agree(to_host(gr.dg[i]), gr.g[i], kSerialKernels ? 0.0 : kDeviceRel));
    }
    // The raw-pointer overload with device pointers.
    Gradients gp("dev_views_p", 0);
    CHECK(kokkos::step(device, pointers(m.dw), pointers(gp.dg), MemoryKind::device, staging).status ==
          Status::ok);
    if constexpr (!kHostKernels) {
      // On a GPU, host pointers cannot reach a device partition: refused, nothing touched.
      CHECK(kokkos::step(device, pointers(m.w), pointers(m.w), MemoryKind::host, staging).status ==
            Status::invalid_argument);
    }
  }
}

}  // namespace optim_test_optim_device
