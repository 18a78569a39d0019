// SPDX-License-Identifier: Apache-2.0
/// \file
/// schatten-bench-optim: optimizer steps over the GPT-2-small parameter set on this machine
/// (Google Benchmark, one iteration each by default; the issue #4 targets).
///
///   optim/muon_step/gpt2_small     partition(muon for the 48 hidden matrices, adamw for the rest)
///   optim/muon_step/gpt2_small/device  the same step with the partition, parameters and
///                                  gradients in device memory (init(MemoryKind::device)): the
///                                  GPU training-loop path (issue #7's step target); .../bf16
///                                  iterates Newton–Schulz in bfloat16 as the PyTorch reference
///                                  does (registered on GPU builds only),
///                                  .../bf16/mu_storage:bf16 also keeps the momentum and AdamW's
///                                  m in bf16 (as PyTorch's bf16 buffers);
///                                  also optim/muon_step_without_ns/gpt2_small/device
///   optim/orthogonalize_only       the 48 polar() calls of that step alone (same options,
///                                  reused workspaces): overhead ≈ step − this (noisy)
///   optim/muon_step_without_ns/gpt2_small  the same step with 0 Newton–Schulz steps (also
///                                  .../mu_storage:bf16: momentum and AdamW's m in bf16, and
///                                  .../mu_storage:bf16_stochastic rounded stochastically; the
///                                  state_MB counter of all three), and
///   optim/orthogonalize_only_without_ns    the 48 polar() calls with 0 steps (their validation,
///                                  normalisation and copy passes): overhead = the difference of
///                                  these two, measured directly instead of as a small difference
///                                  of two large, noisy times
///   optim/adamw_step/gpt2_rest     AdamW over the parameters Muon does not take (wte, wpe,
///                                  biases, norms): GB/s of the minimal traffic (read g, p, m, v;
///                                  write p, m, v = 28 bytes per element) and its ratio to
///                                  stream/triad; .../mu_storage:bf16 with m in bf16 (24 bytes per
///                                  element; docs/optim.md "State precision"), and
///                                  .../mu_storage:bf16_stochastic rounded stochastically;
///                                  .../no_parameter_check without the parameters' NaN/Inf
///                                  scan (Partition::set_parameter_check: its cost)
///   stream/triad                   a ← b + s·c over 3 × 64 Mi floats (12 bytes per element)
///   optim/schatten_muon_step/gpt2_small/p:10   schatten_muon (fixed p) for the 48 hidden matrices,
///   optim/schatten_muon_step/gpt2_small/p:3    adamw for the rest: an ordinary step at the Muon
///                                  end (the polar factor, Keller's NS5 as in the Muon case) and
///                                  at an interior p (spectral_power, the preset's polynomial
///                                  method: 5 Newton–Schulz steps with a fitted schedule)
///   optim/schatten_muon_step/gpt2_small/p:3/rational  the same with the accurate rational method
///   optim/schatten_criterion_only/gpt2_small   the criterion alone for the 48 hidden matrices
///                                  (randomized spectra + tail model + maximiser): the adaptive
///                                  machinery's cost per criterion step, to amortise over 100 steps
///   optim/schatten_criterion_step/gpt2_small   a whole criterion step of the adaptive preset
///                                  (the criterion, then the step at the chosen p's)
///   optim/muon_step/experts_256x64x64/{batched,unbatched}
///                                  partition(muon) over 256 parameters of 64 × 64 (a stacked-
///                                  expert-like set): same-shape batching (one polar() call for
///                                  the 256 matrices) against one call per parameter, and in
///                                  groups of at most 16 (set_batching(true, 16))
///   optim/dion2_step/gpt2_small/fraction:{0.25,1}  dion2 for the hidden matrices, adamw for the
///                                  rest: Dion2 orthogonalises a quarter of each matrix's rows
///                                  (columns when tall), and every slice at fraction 1; same-shape
///                                  batches, and at 0.25 also unbatched (one polar call per matrix);
///                                  optim/dion2_step/gpt2_small/device/{batched,unbatched} the same
///                                  in device memory (the GPU case batching is for)
///   optim/{sc,df}_muon_step/gpt2_small  sc_muon / df_muon (docs/optim.md "Distance-aware step
///                                  sizes") for the hidden matrices, adamw for the rest; with
///                                  Muon, Dion, Dion2 and schatten_muon they report what the
///                                  partition holds (state_MB, backup_MB, scratch_MB, batch_MB,
///                                  workspace_MB: Partition::memory_use, docs/optim.md "Memory")
///   optim/nordion2_step/gpt2_small   nordion2 (Dion3) for the hidden matrices: Dion2 over rows at
///                                  fraction 0.25, then the selected neurons normalised
///   optim/dion_step/gpt2_small/rank_fraction:{0.25,1}[/householder]  dion (the legacy Dion) for
///                                  the hidden matrices: one power iteration at rank
///                                  k = f·min(r, c), its 4 GEMMs of r·c·k and the QR of
///                                  max(r, c) × k (Cholesky QR2; /householder: the host QR always;
///                                  /mu_storage:bf16 at 0.25: M in bf16, counter state_MB;
///                                  /mu_storage:bf16/q_storage:bf16: Q in bf16 too);
///                                  optim/dion_step/gpt2_small/device/rank_fraction:0.25[/mu_storage:bf16[/q_storage:bf16]]
///                                  the default in device memory, M (and Q) in fp32 or bf16
///   optim/spel_step/gpt2_small       spel for the hidden matrices: two polar factors per matrix
#include <benchmark/benchmark.h>

#include <Kokkos_Core.hpp>

#include <string>
#include <type_traits>
#include <vector>

#include "gpt2_small.hpp"
#include "polar_cases.hpp"
#include "run_benchmarks.hpp"
#include "schatten/core/random.hpp"
#include "schatten/core/runtime.hpp"
#include "schatten/kernels/gram.hpp"
#include "schatten/optim/dion.hpp"
#include "schatten/optim/partition.hpp"
#include "schatten/optim/presets.hpp"
#include "schatten/optim/qk_clip.hpp"
#include "schatten/optim/schatten_p.hpp"
#include "schatten/optim/step_size.hpp"
#include "schatten/surrogate/schatten_p.hpp"

using namespace schatten;
using namespace schatten::optim;

namespace {

using bench::gpt2_small;

struct Model {
  std::vector<ParamSpec> specs;
  std::vector<std::vector<float>> w, g;
  explicit Model(std::vector<ParamSpec> s) : specs(std::move(s)) {
    Rng rng(1);
    for (const ParamSpec& p : specs) {
      const auto n = static_cast<std::size_t>(flatten(p.shape).size());
      w.emplace_back(n);
      g.emplace_back(n);
      for (float& x : w.back())
        x = static_cast<float>(0.02 * rng.normal());
    }
  }
  void fill_gradients(std::uint64_t seed) {
    Rng rng(seed);
    for (auto& v : g)
      for (float& x : v)
        x = static_cast<float>(1e-3 * rng.normal());
  }
  std::vector<float*> params() {
    std::vector<float*> p;
    for (auto& v : w)
      p.push_back(v.data());
    return p;
  }
  std::vector<float*> grads() {
    std::vector<float*> p;
    for (auto& v : g)
      p.push_back(v.data());
    return p;
  }
};

/// Best of three triad passes over 3 × 64 Mi floats, in GB/s.
double measure_triad() {
  const std::size_t n = std::size_t(64) << 20;
  std::vector<float> a(n), b(n, 1.0f), c(n, 2.0f);
  double best = 0.0;
  for (int r = 0; r < 3; ++r) {
    Kokkos::Timer t;
    for (std::size_t i = 0; i < n; ++i)
      a[i] = b[i] + 0.5f * c[i];
    benchmark::DoNotOptimize(a.data());
    best = std::max(best, 12.0 * double(n) / t.seconds() / 1e9);
  }
  return best;
}

/// The triad bandwidth the AdamW case divides by: measured once per process.
double stream_gbps() {
  static const double measured = measure_triad();
  return measured;
}

void bm_stream(benchmark::State& st) {
  double gbps = 0.0;
  for (auto _ : st)
    gbps = measure_triad();
  st.counters["GB/s"] = gbps;
}

/// Initialises `opt` on the host, takes one warm-up step (first touch, workspaces), then times
/// one step per iteration, each from fresh random gradients drawn outside the timed region.
template <class P>
void time_host_steps(benchmark::State& st, Model& m, P& opt) {
  if (!opt.init()) return st.SkipWithError("init failed");
  m.fill_gradients(2);
  opt.step(m.params(), m.grads());
  std::uint64_t seed = 3;
  for (auto _ : st) {
    st.PauseTiming();
    m.fill_gradients(seed++);
    st.ResumeTiming();
    const StepReport r = opt.step(m.params(), m.grads());
    if (!r) return st.SkipWithError(r.message);
  }
}

/// The counters of an optimizer's memory after its steps (Partition::memory_use(); docs/optim.md
/// "Memory"): state_MB, backup_MB, scratch_MB, batch_MB and workspace_MB. extra_workspace_MB is
/// what all Workspaces hold beyond `workspace_before` (read before the optimizer was built) and
/// beyond the partition's own: 0 unless a rule keeps a workspace of its own per state.
template <class Optimizer>
void memory_counters(benchmark::State& st, Optimizer& opt, std::size_t workspace_before) {
  const MemoryUse m = opt.memory_use();
  st.counters["state_MB"] = double(m.state) / 1e6;
  st.counters["backup_MB"] = double(m.backups) / 1e6;
  st.counters["scratch_MB"] = double(m.scratch) / 1e6;
  st.counters["batch_MB"] = double(m.batches) / 1e6;
  st.counters["workspace_MB"] = double(m.workspace) / 1e6;
  st.counters["extra_workspace_MB"] = double(Workspace::total_bytes() - workspace_before - m.workspace) / 1e6;
}

/// The GPT-2-small Muon step's optimizer: muon(mo) on the hidden matrices, AdamW on the rest, the
/// momentum and AdamW's first moment in `storage` (mu_storage).
auto muon_partition(const Model& m, MuonOptions mo, StateStorage storage) {
  mo.mu_storage = storage;
  AdamWOptions ao;
  ao.mu_storage = storage;
  return partition(m.specs, propose_labels(m.specs), route("muon", muon(mo)), route("adamw", adamw(ao)));
}

/// The full step; with `polar_steps` = 0 the orthogonalisation does no Newton–Schulz step (only
/// its validation, normalisation and copy passes), so that case times everything of the step
/// except the orthogonalisation's GEMMs: a direct, conservative measure of the overhead.
/// `storage`: the momentum's and AdamW's first moment's (mu_storage); memory_counters().
void bm_muon_step(benchmark::State& st, int polar_steps, StateStorage storage) {
  Model m(gpt2_small());
  MuonOptions mo;
  mo.polar.iterations = polar_steps;
  const std::size_t ws = Workspace::total_bytes();
  auto opt = muon_partition(m, mo, storage);
  time_host_steps(st, m, opt);
  memory_counters(st, opt, ws);
}

/// NorMuon's step over the same model (normuon(): Muon's chain plus NormalizeNeurons, two
/// passes per matrix): its cost beside optim/muon_step.
void bm_normuon_step(benchmark::State& st, int polar_steps) {
  Model m(gpt2_small());
  NorMuonOptions no;
  no.polar.iterations = polar_steps;
  auto opt = partition(m.specs, propose_labels(m.specs), route("muon", normuon(no)), route("adamw", adamw()));
  time_host_steps(st, m, opt);
}

/// Dion2's step over the same model (dion2(): the fraction of each hidden matrix's slices with the
/// largest l1 norms orthogonalised by Polar Express 5, the 12 matrices of each shape as one batched
/// polar call, or one call per matrix when `batching` is off): with fraction 1 the whole matrix,
/// Muon's Newton–Schulz work plus the ranking, gather and scatter.
void bm_dion2_step(benchmark::State& st, double fraction, bool batching) {
  Model m(gpt2_small());
  Dion2Options d;
  d.fraction = fraction;
  const std::size_t ws = Workspace::total_bytes();
  auto opt = partition(m.specs, propose_labels(m.specs), route("muon", dion2(d)), route("adamw", adamw()));
  opt.set_batching(batching);
  time_host_steps(st, m, opt);
  memory_counters(st, opt, ws);
}

/// SC-Muon's and DF-Muon's steps over the same model (their default Polar Express 5): Muon's
/// work plus the step-size rule's passes; memory_counters() for their per-shape scratch.
void bm_step_size_step(benchmark::State& st, bool majorized) {
  Model m(gpt2_small());
  const std::size_t ws = Workspace::total_bytes();
  auto run = [&](const auto& rule) {
    auto opt = partition(m.specs, propose_labels(m.specs), route("muon", rule), route("adamw", adamw()));
    time_host_steps(st, m, opt);
    memory_counters(st, opt, ws);
  };
  if (majorized)
    run(df_muon());
  else
    run(sc_muon());
}

/// MuAdam's step over the same model (muadam(): Adam's moments m and v, then D ⊙ polar(D ⊙ ñ)
/// with D = (v̂ + ε)^{−1/4}, Polar Express 5 steps; no batching of its own beyond the partition's
/// groups); memory_counters(): its state is m, v and D, three floats per element.
void bm_muadam_step(benchmark::State& st) {
  Model m(gpt2_small());
  const std::size_t ws = Workspace::total_bytes();
  auto opt = partition(m.specs, propose_labels(m.specs), route("muon", muadam()), route("adamw", adamw()));
  time_host_steps(st, m, opt);
  memory_counters(st, opt, ws);
}

/// NorDion2's step over the same model (nordion2(): Dion2's selection, always of rows, at
/// fraction 0.25, then NorMuon's per-row normalisation of the update): Dion2's work plus two
/// passes over each hidden matrix's update.
void bm_nordion2_step(benchmark::State& st) {
  Model m(gpt2_small());
  auto opt = partition(m.specs, propose_labels(m.specs), route("muon", nordion2()), route("adamw", adamw()));
  time_host_steps(st, m, opt);
}

/// Dion's step over the same model (dion(): per matrix, P = orth(B Q), R = Bᵀ P, the feedback
/// P Rᵀ and the update P Qᵀ, four GEMMs of r·c·k at k = f·min(r, c); the QR a Cholesky QR2, which
/// Gaussian gradients always allow, or with `householder` the host Householder QR in double).
/// `storage`: M's (mu_storage; bf16 adds a pass for ‖M + G‖_F and the store of M′), `q`: Q's
/// (q_storage; bf16 adds Q's widening and its rounding store, k·S elements each); memory_counters().
void bm_dion_step(benchmark::State& st, double rank_fraction, bool householder, StateStorage storage,
                  StateStorage q) {
  Model m(gpt2_small());
  DionOptions d;
  d.rank_fraction = rank_fraction;
  d.cholesky_qr = !householder;
  d.mu_storage = storage;
  d.q_storage = q;
  const std::size_t ws = Workspace::total_bytes();
  auto opt = partition(m.specs, propose_labels(m.specs), route("muon", dion(d)), route("adamw", adamw()));
  time_host_steps(st, m, opt);
  memory_counters(st, opt, ws);
}

/// SPEL's step over the same model (spel(): Muon's polar factor of the momentum, then the
/// weights' own polar factor, both You Jiacheng's 5 steps, same-shape batches): two Newton–Schulz
/// runs per matrix where Muon has one.
void bm_spel_step(benchmark::State& st) {
  Model m(gpt2_small());
  auto opt = partition(m.specs, propose_labels(m.specs), route("muon", spel()), route("adamw", adamw()));
  time_host_steps(st, m, opt);
}

/// NormalizeNeurons alone on one rows × cols host block (NorMuon's normalisation after the
/// polar step), applied repeatedly to the same block (it keeps the block's norm). GB/s counts
/// 8 bytes per element (one read and one write, the least any implementation moves): compare
/// with stream/triad.
void bm_normalize_neurons(benchmark::State& st, index_t rows, index_t cols) {
  Rng rng(5);
  std::vector<float> x(static_cast<std::size_t>(rows * cols));
  for (float& v : x)
    v = static_cast<float>(rng.normal());
  const NormalizeNeurons rule;
  NormalizeNeurons::State s = rule.init(BlockShape{rows, cols});
  for (auto _ : st)
    if (rule.update(Block(x.data(), rows, cols), s, ConstBlock(x.data(), rows, cols)) != Status::ok)
      return st.SkipWithError("normalize_neurons failed");
  st.counters["GB/s"] = benchmark::Counter(8.0 * double(rows) * double(cols) * 1e-9,
                                           benchmark::Counter::kIsIterationInvariantRate);
}

/// QK-clip of all 12 layers of GPT-2 small (c_attn (2304, 768) with its bias, 12 heads of 64)
/// with every head firing (max logit 2τ): the worst case, every query and key row and bias
/// entry scaled once. The weights are restored between iterations (not timed) so that
/// repeated halving does not reach denormals.
void bm_qk_clip(benchmark::State& st) {
  Model m(gpt2_small());
  std::vector<QkLayer> layers;
  for (int l = 0; l < 12; ++l) {
    const std::string h = "transformer.h." + std::to_string(l) + ".attn.c_attn.";
    layers.push_back(with_bias(qk_fused(h, h + "weight", 12, 12, 64, 0), h + "weight", h + "bias"));
  }
  QkClip clip(layers);
  if (!clip.init(m.specs)) return st.SkipWithError("init failed");
  const std::vector<float> logits(static_cast<std::size_t>(clip.heads()), 200.0f);
  const std::vector<std::vector<float>> saved = m.w;
  for (auto _ : st) {
    st.PauseTiming();
    m.w = saved;
    st.ResumeTiming();
    const QkClipReport r = clip.apply(m.params(), logits);
    if (!r) return st.SkipWithError(r.message);
  }
  st.counters["scaled_floats"] = double(12 * (2 * 768 * 768 + 2 * 768));
}

/// Steps `opt` over `m` with the partition, parameters and gradients in device memory
/// (Partition::init(MemoryKind::device)): the training-loop path on a GPU, where nothing is staged
/// through the host. The gradients are restored from a device copy between iterations (not
/// timed); the step fences before it returns, so the wall time is the step's.
template <class P>
void time_device_steps(benchmark::State& st, Model& m, P& opt) {
  using DeviceVec = Kokkos::View<float*, Kokkos::DefaultExecutionSpace::memory_space>;
  using HostVec = Kokkos::View<float*, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
  if (!opt.init(MemoryKind::device)) return st.SkipWithError("init failed");
  m.fill_gradients(2);
  std::vector<DeviceVec> w, g, saved;
  std::vector<float*> wp, gp;
  for (std::size_t i = 0; i < m.specs.size(); ++i) {
    const std::size_t n = m.w[i].size();
    w.emplace_back("w", n);
    g.emplace_back("g", n);
    saved.emplace_back("saved", n);
    Kokkos::deep_copy(w[i], HostVec(m.w[i].data(), n));
    Kokkos::deep_copy(saved[i], HostVec(m.g[i].data(), n));
    Kokkos::deep_copy(g[i], saved[i]);
    wp.push_back(w[i].data());
    gp.push_back(g[i].data());
  }
  opt.step(wp, gp);  // warm-up: workspaces, cuBLAS handles
  for (auto _ : st) {
    st.PauseTiming();
    for (std::size_t i = 0; i < g.size(); ++i)
      Kokkos::deep_copy(g[i], saved[i]);
    Kokkos::fence();
    st.ResumeTiming();
    const StepReport r = opt.step(wp, gp);
    if (!r) return st.SkipWithError(r.message);
  }
}

/// Muon's step over GPT-2 small in device memory (time_device_steps), NS in `compute`.
void bm_muon_step_device(benchmark::State& st, int polar_steps, Precision compute, Precision storage) {
  Model m(gpt2_small());
  MuonOptions mo;
  mo.polar.iterations = polar_steps;
  mo.polar.compute = compute;
  if (compute != Precision::fp32 && !precision_supported(compute, mo.polar.method))
    return st.SkipWithError("this build cannot iterate in that precision");
  const std::size_t ws = Workspace::total_bytes();
  auto opt = muon_partition(m, mo, storage);
  time_device_steps(st, m, opt);
  memory_counters(st, opt, ws);
}

/// Dion2's step (f = 0.25) in device memory, its same-shape groups batched (one polar call and one
/// host wait for the norms per group) or not (one of each per matrix): what batching buys on a GPU.
void bm_dion2_step_device(benchmark::State& st, bool batching) {
  Model m(gpt2_small());
  auto opt = partition(m.specs, propose_labels(m.specs), route("muon", dion2()), route("adamw", adamw()));
  opt.set_batching(batching);
  time_device_steps(st, m, opt);
}

/// Dion's step (f = 0.25, the Cholesky QR2 on the device) in device memory: its GEMMs, the QR's
/// Grams, Choleskys and solves on the GPU, 3k doubles and a few scalars read back per matrix.
/// `storage`: M's (bf16: widened into the update and stored after the feedback on the device),
/// `q`: Q's (bf16: widened into the shared scratch and rounded back on the device).
void bm_dion_step_device(benchmark::State& st, StateStorage storage, StateStorage q) {
  Model m(gpt2_small());
  DionOptions d;
  d.rank_fraction = 0.25;
  d.mu_storage = storage;
  d.q_storage = q;
  auto opt = partition(m.specs, propose_labels(m.specs), route("muon", dion(d)), route("adamw", adamw()));
  time_device_steps(st, m, opt);
}

void bm_orthogonalize_only(benchmark::State& st, int polar_steps) {
  Model m(gpt2_small());
  const auto labels = propose_labels(m.specs);
  PolarOptions o = MuonOptions::keller_polar();
  o.iterations = polar_steps;
  std::vector<std::size_t> idx;
  for (std::size_t i = 0; i < labels.size(); ++i)
    if (labels[i] == "muon") idx.push_back(i);
  std::vector<Workspace> ws(idx.size());
  m.fill_gradients(2);
  for (auto _ : st) {
    for (std::size_t k = 0; k < idx.size(); ++k) {
      const BlockShape s = flatten(m.specs[idx[k]].shape);
      float* g = m.g[idx[k]].data();
      polar(MatrixRef<const float>(g, s.rows, s.cols), MatrixRef<float>(g, s.rows, s.cols), o, &ws[k]);
    }
  }
  st.counters["matrices"] = double(idx.size());
}

/// A layer's inputs for the Schatten-p cases: kTokens × d Gaussian values (the statistics the
/// criterion gets; their Gram is what matters, not their realism).
constexpr index_t kTokens = 512;
std::vector<float> gaussian_inputs(Rng& rng, index_t d) {
  std::vector<float> x(static_cast<std::size_t>(kTokens * d));
  for (float& v : x)
    v = static_cast<float>(rng.normal());
  return x;
}

/// gram_accumulate over `tokens` × d Gaussian inputs (a layer's activation statistics for the
/// Schatten-p criterion), with a Workspace kept for the calls as a training loop keeps one. The
/// counter `gemm_gflops` is the GEMM-equivalent rate, 2·tokens·d² flops per call: the symmetric
/// product does about half of them.
void bm_activation_gram(benchmark::State& st, index_t tokens, index_t d) {
  Rng rng(11);
  std::vector<float> x(static_cast<std::size_t>(tokens * d));
  for (float& v : x)
    v = static_cast<float>(rng.normal());
  std::vector<float> gram(static_cast<std::size_t>(d * d), 0.0f);
  Workspace ws;
  for (auto _ : st)
    if (gram_accumulate(MatrixRef<const float>(x.data(), tokens, d), MatrixRef<float>(gram.data(), d, d),
                        &ws) != Status::ok)
      return st.SkipWithError("gram_accumulate failed");
  st.counters["gemm_gflops"] = benchmark::Counter(2.0 * double(tokens) * double(d) * double(d) * 1e-9,
                                                  benchmark::Counter::kIsIterationInvariantRate);
}

/// schatten_muon with the Muon case's orthogonalisation (Keller's NS5) at the Muon end.
SchattenMuonOptions schatten_options(bool adaptive, double p) {
  SchattenMuonOptions o;
  o.adaptive = adaptive;
  o.p = p;
  o.polar = MuonOptions::keller_polar();
  return o;
}

/// An ordinary (non-criterion) schatten_muon step at a fixed p, U Σ^{1/p} Vᵀ by the preset's
/// polynomial method or (rational = true) by QDWH + a rational function.
void bm_schatten_step(benchmark::State& st, double p, bool rational) {
  Model m(gpt2_small());
  SchattenMuonOptions o = schatten_options(false, p);
  if (rational) o.spectral.method = SpectralPowerMethod::rational;
  const std::size_t ws = Workspace::total_bytes();
  auto opt =
      partition(m.specs, propose_labels(m.specs), route("muon", schatten_muon(o)), route("adamw", adamw()));
  time_host_steps(st, m, opt);
  memory_counters(st, opt, ws);
}

/// The adaptive preset's criterion step: step 1 ordinary (warm-up), step 2 runs the criterion on
/// every hidden matrix with activation Grams of 512 tokens of Gaussian inputs (collected before
/// the timed region: hooks run during the forward pass). Counters: the p chosen (mean) and the
/// number of layers.
void bm_schatten_criterion_step(benchmark::State& st) {
  Model m(gpt2_small());
  SchattenMuonOptions o = schatten_options(true, 10.0);
  o.first = 2;
  o.interval = 1000000;  // only at step 2 (check() refuses 0: the next one lies beyond the run)
  auto opt =
      partition(m.specs, propose_labels(m.specs), route("muon", schatten_muon(o)), route("adamw", adamw()));
  if (!opt.init()) return st.SkipWithError("init failed");
  const auto labels = propose_labels(m.specs);
  m.fill_gradients(2);
  opt.step(m.params(), m.grads());
  double layers = 0.0;
  for (auto _ : st) {
    st.PauseTiming();
    m.fill_gradients(3);
    Rng rng(4);
    for (std::size_t i = 0; i < m.specs.size(); ++i) {
      if (labels[i] != "muon") continue;
      const index_t d = flatten(m.specs[i].shape).cols;
      const std::vector<float> x = gaussian_inputs(rng, d);
      if (accumulate_activations(opt, m.specs[i].name, MatrixRef<const float>(x.data(), kTokens, d)) !=
          Status::ok)
        return st.SkipWithError("accumulate_activations failed");
      layers += 1.0;
    }
    st.ResumeTiming();
    const StepReport r = opt.step(m.params(), m.grads());
    if (!r) return st.SkipWithError(r.message);
  }
  double sum = 0.0;
  const auto ps = schatten_p_values(opt);
  for (const auto& [name, p] : ps)
    sum += p;
  st.counters["layers"] = layers;
  st.counters["mean_p"] = ps.empty() ? 0.0 : sum / double(ps.size());
}

/// The criterion alone, as the adaptive preset runs it on a criterion step for the 48 hidden
/// matrices (its defaults: exact_momentum, randomized spectra with the tail model, EMA), on
/// Gaussian gradients and the Grams of 512 tokens of Gaussian inputs: the direct measure of the
/// adaptive machinery's cost (like orthogonalize_only for Muon).
void bm_schatten_criterion_only(benchmark::State& st) {
  Model m(gpt2_small());
  const auto labels = propose_labels(m.specs);
  m.fill_gradients(2);
  std::vector<std::size_t> idx;
  std::vector<std::vector<float>> grams;
  Rng rng(4);
  for (std::size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] != "muon") continue;
    idx.push_back(i);
    const index_t d = flatten(m.specs[i].shape).cols;
    const std::vector<float> x = gaussian_inputs(rng, d);
    grams.emplace_back(static_cast<std::size_t>(d * d), 0.0f);
    gram_accumulate(MatrixRef<const float>(x.data(), kTokens, d),
                    MatrixRef<float>(grams.back().data(), d, d));
  }
  surrogate::PCriterionOptions o;
  double psum = 0.0;
  for (auto _ : st) {
    psum = 0.0;
    for (std::size_t k = 0; k < idx.size(); ++k) {
      const BlockShape s = flatten(m.specs[idx[k]].shape);
      const MatrixRef<const float> g(m.g[idx[k]].data(), s.rows, s.cols);
      surrogate::LayerSpectra spectra;
      if (surrogate::measure_spectra(g, g, MatrixRef<const float>(grams[k].data(), s.cols, s.cols), o,
                                     spectra) != Status::ok)
        return st.SkipWithError("measure_spectra failed");
      psum += surrogate::maximise_p(spectra, o, 10.0).p;
    }
  }
  st.counters["layers"] = double(idx.size());
  st.counters["mean_p"] = psum / double(idx.size());
}

void bm_adamw_rest(benchmark::State& st, StateStorage storage, bool parameter_check) {
  std::vector<ParamSpec> rest;
  const auto all = gpt2_small();
  const auto labels = propose_labels(all);
  for (std::size_t i = 0; i < all.size(); ++i)
    if (labels[i] == "adamw") rest.push_back(all[i]);
  Model m(rest);
  AdamWOptions ao;
  ao.mu_storage = storage;
  auto opt = partition(m.specs, std::vector<std::string>(m.specs.size(), "adamw"), route("adamw", adamw(ao)));
  opt.set_parameter_check(parameter_check);
  if (!opt.init()) return st.SkipWithError("init failed");
  m.fill_gradients(2);
  double elements = 0.0;
  for (const auto& v : m.w)
    elements += double(v.size());
  double total = 0.0;
  for (auto _ : st) {
    st.PauseTiming();
    m.fill_gradients(3);
    st.ResumeTiming();
    Kokkos::Timer t;
    const StepReport r = opt.step(m.params(), m.grads());
    total += t.seconds();
    if (!r) return st.SkipWithError(r.message);
  }
  const double bytes = storage.bf16() ? 24.0 : 28.0;  // m: 2 bytes read, 2 written
  const double gbps = bytes * elements / (total / double(st.iterations())) / 1e9;
  st.counters["elements"] = elements;
  st.counters["GB/s"] = gbps;
  st.counters["x_stream"] = gbps / stream_gbps();
}

/// Many small same-shape matrices: 256 parameters of 64 × 64, all routed to Muon, stepped with
/// same-shape batching on or off (Partition::set_batching).
void bm_experts(benchmark::State& st, bool batching, std::size_t max_group) {
  std::vector<ParamSpec> specs;
  for (int e = 0; e < 256; ++e)
    specs.push_back({"experts." + std::to_string(e) + ".w", {64, 64}});
  Model m(specs);
  auto opt = optim::partition(m.specs, std::vector<std::string>(specs.size(), "muon"), route("muon", muon()));
  opt.set_batching(batching, max_group);
  time_host_steps(st, m, opt);
  st.counters["groups"] = double(opt.batch_groups().size());
}

}  // namespace

int main(int argc, char** argv) {
  Runtime runtime(argc, argv);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("schatten_commit", bench::git_commit());
  benchmark::AddCustomContext("kokkos", runtime_description());
  benchmark::AddCustomContext("machine", bench::machine_description());
  benchmark::RegisterBenchmark("stream/triad", bm_stream)->Iterations(1)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("optim/adamw_step/gpt2_rest", bm_adamw_rest, StateStorage(Precision::fp32),
                               true)
      ->Iterations(3)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("optim/adamw_step/gpt2_rest/no_parameter_check", bm_adamw_rest,
                               StateStorage(Precision::fp32), false)
      ->Iterations(3)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("optim/adamw_step/gpt2_rest/mu_storage:bf16", bm_adamw_rest,
                               StateStorage(Precision::bf16), true)
      ->Iterations(3)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("optim/adamw_step/gpt2_rest/mu_storage:bf16_stochastic", bm_adamw_rest,
                               StateStorage::bf16_stochastic(), true)
      ->Iterations(3)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("optim/orthogonalize_only", bm_orthogonalize_only, 5)
      ->Iterations(1)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("optim/orthogonalize_only_without_ns", bm_orthogonalize_only, 0)
      ->Iterations(3)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("optim/muon_step/gpt2_small", bm_muon_step, 5, Precision::fp32)
      ->Iterations(1)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("optim/muon_step_without_ns/gpt2_small", bm_muon_step, 0, Precision::fp32)
      ->Iterations(3)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("optim/muon_step_without_ns/gpt2_small/mu_storage:bf16", bm_muon_step, 0,
                               Precision::bf16)
      ->Iterations(3)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("optim/muon_step_without_ns/gpt2_small/mu_storage:bf16_stochastic",
                               bm_muon_step, 0, StateStorage::bf16_stochastic())
      ->Iterations(3)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("optim/normuon_step/gpt2_small", bm_normuon_step, 5)
      ->Iterations(1)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("optim/normuon_step_without_ns/gpt2_small", bm_normuon_step, 0)
      ->Iterations(3)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("optim/dion2_step/gpt2_small/fraction:0.25", bm_dion2_step, 0.25, true)
      ->Iterations(1)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("optim/dion2_step/gpt2_small/fraction:0.25/unbatched", bm_dion2_step, 0.25,
                               false)
      ->Iterations(1)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("optim/dion2_step/gpt2_small/fraction:1", bm_dion2_step, 1.0, true)
      ->Iterations(1)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("optim/sc_muon_step/gpt2_small", bm_step_size_step, false)
      ->Iterations(1)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("optim/df_muon_step/gpt2_small", bm_step_size_step, true)
      ->Iterations(1)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("optim/muadam_step/gpt2_small", bm_muadam_step)
      ->Iterations(1)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("optim/nordion2_step/gpt2_small", bm_nordion2_step)
      ->Iterations(1)
      ->Unit(benchmark::kMillisecond);
  for (const bool householder : {false, true}) {
    const std::string tail = householder ? "/householder" : "";
    benchmark::RegisterBenchmark(("optim/dion_step/gpt2_small/rank_fraction:0.25" + tail).c_str(),
                                 bm_dion_step, 0.25, householder, StateStorage(Precision::fp32),
                                 StateStorage(Precision::fp32))
        ->Iterations(1)
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("optim/dion_step/gpt2_small/rank_fraction:1" + tail).c_str(), bm_dion_step,
                                 1.0, householder, StateStorage(Precision::fp32),
                                 StateStorage(Precision::fp32))
        ->Iterations(1)
        ->Unit(benchmark::kMillisecond);
  }
  benchmark::RegisterBenchmark("optim/dion_step/gpt2_small/rank_fraction:0.25/mu_storage:bf16", bm_dion_step,
                               0.25, false, StateStorage(Precision::bf16), StateStorage(Precision::fp32))
      ->Iterations(1)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("optim/dion_step/gpt2_small/rank_fraction:0.25/mu_storage:bf16/q_storage:bf16",
                               bm_dion_step, 0.25, false, StateStorage(Precision::bf16),
                               StateStorage(Precision::bf16))
      ->Iterations(1)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("optim/spel_step/gpt2_small", bm_spel_step)
      ->Iterations(1)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("optim/normalize_neurons/3072x768", bm_normalize_neurons, 3072, 768)
      ->Iterations(20)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("optim/normalize_neurons/768x3072", bm_normalize_neurons, 768, 3072)
      ->Iterations(20)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("optim/qk_clip/gpt2_small", bm_qk_clip)
      ->Iterations(10)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("optim/muon_step/gpt2_small/device", bm_muon_step_device, 5, Precision::fp32,
                               Precision::fp32)
      ->Iterations(1)
      ->Unit(benchmark::kMillisecond);
  // bf16 iteration on a GPU build: on a CPU build it is the portable emulation (about 17 GFLOP/s
  // on the development machine), about a minute per GPT-2-small step, and measures nothing the
  // GPU comparison needs.
  if (!std::is_same<Kokkos::DefaultExecutionSpace::memory_space, Kokkos::HostSpace>::value &&
      precision_supported(Precision::bf16, PolarMethod::polar_express)) {
    benchmark::RegisterBenchmark("optim/muon_step/gpt2_small/device/bf16", bm_muon_step_device, 5,
                                 Precision::bf16, Precision::fp32)
        ->Iterations(1)
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark("optim/muon_step/gpt2_small/device/bf16/mu_storage:bf16",
                                 bm_muon_step_device, 5, Precision::bf16, Precision::bf16)
        ->Iterations(1)
        ->Unit(benchmark::kMillisecond);
  }
  benchmark::RegisterBenchmark("optim/muon_step_without_ns/gpt2_small/device", bm_muon_step_device, 0,
                               Precision::fp32, Precision::fp32)
      ->Iterations(3)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("optim/dion2_step/gpt2_small/device/batched", bm_dion2_step_device, true)
      ->Iterations(1)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("optim/dion2_step/gpt2_small/device/unbatched", bm_dion2_step_device, false)
      ->Iterations(1)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("optim/dion_step/gpt2_small/device/rank_fraction:0.25", bm_dion_step_device,
                               StateStorage(Precision::fp32), StateStorage(Precision::fp32))
      ->Iterations(1)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("optim/dion_step/gpt2_small/device/rank_fraction:0.25/mu_storage:bf16",
                               bm_dion_step_device, StateStorage(Precision::bf16),
                               StateStorage(Precision::fp32))
      ->Iterations(1)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark(
      "optim/dion_step/gpt2_small/device/rank_fraction:0.25/mu_storage:bf16/q_storage:bf16",
      bm_dion_step_device, StateStorage(Precision::bf16), StateStorage(Precision::bf16))
      ->Iterations(1)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("optim/schatten_muon_step/gpt2_small/p:10", bm_schatten_step, 10.0, false)
      ->Iterations(1)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("optim/schatten_muon_step/gpt2_small/p:3", bm_schatten_step, 3.0, false)
      ->Iterations(1)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("optim/schatten_muon_step/gpt2_small/p:3/rational", bm_schatten_step, 3.0,
                               true)
      ->Iterations(1)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("optim/schatten_criterion_only/gpt2_small", bm_schatten_criterion_only)
      ->Iterations(1)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("optim/schatten_criterion_step/gpt2_small", bm_schatten_criterion_step)
      ->Iterations(1)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("optim/activation_gram/8192x768", bm_activation_gram, 8192, 768)
      ->Iterations(5)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("optim/activation_gram/2048x3072", bm_activation_gram, 2048, 3072)
      ->Iterations(3)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("optim/muon_step/experts_256x64x64/batched", bm_experts, true, 0)
      ->Iterations(20)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("optim/muon_step/experts_256x64x64/batched_max16", bm_experts, true, 16)
      ->Iterations(20)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("optim/muon_step/experts_256x64x64/unbatched", bm_experts, false, 0)
      ->Iterations(20)
      ->Unit(benchmark::kMillisecond);
  const int status = bench::run_benchmarks();  // 1 when a case reported an error
  benchmark::Shutdown();
  return status;
}
