// SPDX-License-Identifier: Apache-2.0
/// \file
/// schatten-bench-polar: time, achieved GFLOP/s, floor and accuracy of every polar method
/// (Newton–Schulz family and QDWH) and of spectral_power() on square and transformer shapes, in
/// float and double (Google Benchmark).
///
/// polar/<method>/<precision>/<shape> times polar() with a reused workspace (manual timing
/// around the synchronous call); polar/<method>_gemm/... the same with symmetric_gram = false
/// (GEMMs for the symmetric products instead of SYRKs). Counters:
///   GFLOP/s    executed_flops() / time (the flops of the dense operations the call ran: the
///              model of polar_gemm_shapes(), for QDWH at the run's iteration counts)
///   floor_ms   Σ times of the same dense operations as bare library calls measured in this run
///              (GEMM/TRSM through KokkosBlas, SYRK through BLAS ?syrk, Cholesky through LAPACK;
///              QDWH at its actual counts)
///   x_floor    time / floor_ms: 1.0 means the kernel runs at the machine's dense rate
///   orth_rms   ‖QQᵀ − I‖_F / √k;   polar_rms   ‖Q − UVᵀ‖_F / √k  (exact factor)
///   pred_rms   what exact arithmetic predicts for polar_rms (the schedule's scalar map; 0 for QDWH)
/// spectral_power/<alpha>/<precision>/<shape> times spectral_power() (α = 0.5, 0.25, −0.5):
///   GFLOP/s, rel_err = ‖out − UΣ^αVᵀ‖_F/‖UΣ^αVᵀ‖_F, poles, qdwh_its;
/// spectral_clip/lower=..,upper=../<precision>/<shape> times spectral_clip() with bounds given
/// relative to σ_max (the hardcap, and a two-sided clip): rel_err against U clip(Σ) Vᵀ;
/// spectral_clip_poly8/... the same with SpectralClipMethod::polynomial (Polar Express, 8 steps);
/// spectral_clip_poly8_bf16/... iterating in bf16 (float data; on a CPU build the portable
/// 16-bit emulation, docs/kernels/polar.md "16-bit iteration").
/// spectral_power_poly{5,8}/... the polynomial method with 5 or 8 steps (α ≥ 0): GFLOP/s,
///   rel_err, band (the schedule's worst relative error on [1e-3, 1]).
/// schatten_norm/q=<q>/<precision>/<shape> times schatten_norm() (q = 1, 4 and ∞): rel_err against
///   (Σσ_i^q)^{1/q} of the prescribed singular values.
/// gemm/<precision>/<m>x<n>x<k>: one GEMM through the kernels' own entry (GFLOP/s), for every
///   shape the polar cases use, in float and double; gemm/bf16/... and gemm/fp16/... in the
///   storage of 16-bit iteration (cuBLAS on CUDA, portable_gemm elsewhere), at 1024³ and, on a
///   GPU build, 4096³ and 8192³.
/// portable/<bf16|float>/<gemm|sym>/<n> (GPU builds): the portable kernel's device form, which
///   HIP runs, on this GPU: portable_gemm (2n³ flops) and portable_sym_product (n³).
/// qdwh_floor/double/1024x1024/kappa=1e16: QDWH on a geometric spectrum of condition 1e16, the
///   target of issue #3: per_iter_ms, floor_per_iter_ms, x_floor, iterations, qr_iterations and
///   householder_qr_ms, a Householder QR (LAPACK) of the stacked 2k × k matrix of one QR step.
/// Inputs: power-law singular values 1/√(i+1) (bench/polar_cases.hpp) unless named otherwise.
#include <benchmark/benchmark.h>

#include <Kokkos_Core.hpp>

#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <type_traits>

#include "polar_cases.hpp"
#include "run_benchmarks.hpp"
#include "schatten/core/runtime.hpp"
#include "schatten/kernels/spectral_power.hpp"

using namespace schatten;
using namespace schatten::bench;

namespace {

template <class T>
const char* precision_name() {
  return sizeof(T) == 4 ? "float" : "double";
}

/// Runs `call` once as a warm-up, then under Google Benchmark's manual timing; `call` returns a
/// report with `status` and `message`. Sets `per_call` to the mean seconds per timed call, or
/// to −1 after reporting a failed call with SkipWithError. Returns the last report.
template <class Call>
auto time_calls(benchmark::State& st, const Call& call, double& per_call) -> decltype(call()) {
  auto rep = call();
  double total = 0.0;
  per_call = -1.0;
  for (auto _ : st) {
    Kokkos::Timer timer;
    rep = call();
    const double s = timer.seconds();
    if (rep.status != Status::ok) {
      st.SkipWithError(rep.message);
      return rep;
    }
    st.SetIterationTime(s);
    total += s;
  }
  per_call = total / static_cast<double>(st.iterations());
  return rep;
}

template <class T>
void bm_polar(benchmark::State& st, Shape shape, Method method) {
  const Problem& p = problem(shape);
  const index_t r = shape.rows, c = shape.cols;
  DeviceCopy<T> d(p.a, r, c);
  Workspace ws;
  double per_call = 0.0;
  time_calls(
      st, [&] { return polar(d.input(), d.output(), method.options, &ws); }, per_call);
  if (per_call < 0) return;
  const double floor = kernel_floor_seconds<T>(p, method.options, 3);
  const Accuracy acc = accuracy(p, d.output_to_host());
  st.counters["GFLOP/s"] = executed_flops<T>(p, method.options) / per_call / 1e9;
  st.counters["floor_ms"] = floor * 1e3;
  st.counters["x_floor"] = per_call / floor;
  st.counters["orth_rms"] = acc.orthogonality;
  st.counters["polar_rms"] = acc.polar_error;
  st.counters["pred_rms"] = predicted_polar_rms(p, method.options);
}

/// Relative Frobenius error of a computed output against the exact one.
template <class T>
double relative_error(const std::vector<T>& out, const std::vector<double>& exact) {
  double num = 0.0, den = 0.0;
  for (std::size_t i = 0; i < exact.size(); ++i) {
    const double e = static_cast<double>(out[i]) - exact[i];
    num += e * e;
    den += exact[i] * exact[i];
  }
  return std::sqrt(num / den);
}

/// spectral_clip() with singular values clipped into [lower, upper]·σ_max, by QDWH or the
/// polynomial method: time and rel_err against U clip(Σ) Vᵀ from the problem's exact factors.
template <class T>
void bm_spectral_clip(benchmark::State& st, Shape shape, double lower, double upper, bool polynomial,
                      Precision compute) {
  const Problem& p = problem(shape);
  const index_t r = shape.rows, c = shape.cols;
  DeviceCopy<T> d(p.a, r, c);
  const double smax = p.sigma.front();
  SpectralClipOptions o;
  o.lower = lower * smax;
  o.upper = upper * smax;
  if (polynomial) o.method = SpectralClipMethod::polynomial;
  o.polar.compute = compute;
  Workspace ws;
  double per_call = 0.0;
  const SpectralPowerReport rep = time_calls(
      st, [&] { return spectral_clip(d.input(), d.output(), o, &ws); }, per_call);
  if (per_call < 0) return;
  st.counters["rel_err"] = relative_error(
      d.output_to_host(), p.spectral_map([&](double x) { return std::max(o.lower, std::min(x, o.upper)); }));
  st.counters["qdwh_its"] = rep.qdwh_iterations;
}

/// schatten_norm() of one matrix: time, and rel_err against the norm of the prescribed spectrum.
template <class T>
void bm_schatten_norm(benchmark::State& st, Shape shape, double q) {
  const Problem& p = problem(shape);
  DeviceCopy<T> d(p.a, shape.rows, shape.cols);
  struct Result {
    Status status;
    const char* message;
  };
  Workspace ws;
  double norm = 0.0, per_call = 0.0;
  time_calls(
      st,
      [&] {
        const Status s = schatten_norm(d.input(), q, &norm, {}, &ws);
        return Result{s, s == Status::ok ? "" : "schatten_norm failed"};
      },
      per_call);
  if (per_call < 0) return;
  double want = p.sigma.front();  // q = ∞
  if (std::isfinite(q)) {
    double sum = 0.0;
    for (const double x : p.sigma)
      sum += std::pow(x, q);
    want = std::pow(sum, 1.0 / q);
  }
  st.counters["rel_err"] = std::fabs(norm / want - 1.0);
}

template <class T>
void bm_spectral_power(benchmark::State& st, Shape shape, double alpha, int polynomial_steps) {
  const Problem& p = problem(shape);
  const index_t r = shape.rows, c = shape.cols;
  DeviceCopy<T> d(p.a, r, c);
  SpectralPowerOptions o;
  o.alpha = alpha;
  if (polynomial_steps > 0) {
    o.method = SpectralPowerMethod::polynomial;
    o.polynomial_steps = polynomial_steps;
  }
  Workspace ws;
  double per_call = 0.0;
  const SpectralPowerReport rep = time_calls(
      st, [&] { return spectral_power(d.input(), d.output(), o, &ws); }, per_call);
  if (per_call < 0) return;
  st.counters["rel_err"] = relative_error(d.output_to_host(), p.spectral_power(alpha));
  if (polynomial_steps > 0) {  // Newton–Schulz with the fitted schedule: polar()'s flops
    PolarOptions no;
    no.method = PolarMethod::newton_schulz;
    no.iterations = polynomial_steps;
    st.counters["GFLOP/s"] = polar_flops(r, c, no) / per_call / 1e9;
    st.counters["band"] = rep.fit_error;  // worst |f/x^α − 1| on [1e-3, 1] of the schedule
    return;
  }
  PolarOptions qo;
  qo.method = PolarMethod::qdwh;
  qo.qdwh = o.qdwh;
  st.counters["GFLOP/s"] =
      spectral_power_flops(r, c, executed_ops<T>(p, qo), rep.poles, alpha) / per_call / 1e9;
  st.counters["poles"] = rep.poles;
  st.counters["qdwh_its"] = rep.qdwh_iterations;
}

/// QDWH in double on 1024² with κ = 1e16: time per iteration against the floor of its own
/// dense operations (issue #3 target: x_floor ≤ 1.5).
void bm_qdwh_floor(benchmark::State& st) {
  const Shape shape{1024, 1024};
  const Problem& p = conditioned_problem(shape, 1e16);
  const index_t n = shape.rows;
  DeviceCopy<double> d(p.a, n, n);
  QdwhOptions o;
  Workspace ws;
  double per_call = 0.0;
  const QdwhReport rep = time_calls(
      st, [&] { return qdwh(d.input(), d.output(), o, &ws); }, per_call);
  if (per_call < 0) return;
  const double floor = floor_seconds<double>(
      qdwh_gemm_shapes(n, n, rep.qr_iterations, rep.iterations - rep.qr_iterations, true, o.polish), 3);
  const Accuracy acc = accuracy(p, d.output_to_host());
  st.counters["iterations"] = rep.iterations;
  st.counters["qr_iterations"] = rep.qr_iterations;
  st.counters["per_iter_ms"] = per_call / rep.iterations * 1e3;
  st.counters["floor_per_iter_ms"] = floor / rep.iterations * 1e3;
  st.counters["x_floor"] = per_call / floor;
  st.counters["householder_qr_ms"] = householder_qr_seconds<double>(2 * n, n, 3) * 1e3;
  st.counters["orth_rms"] = acc.orthogonality;
  st.counters["polar_rms"] = acc.polar_error;
}

/// Times single GEMM calls (`seconds` runs one and returns its fenced wall time).
void time_gemm(benchmark::State& st, const std::function<double()>& seconds, index_t m, index_t n,
               index_t k) {
  double total = 0.0;
  for (auto _ : st) {
    const double s = seconds();
    st.SetIterationTime(s);
    total += s;
  }
  st.counters["GFLOP/s"] =
      2.0 * double(m) * double(n) * double(k) / (total / static_cast<double>(st.iterations())) / 1e9;
}

template <class T>
void bm_gemm(benchmark::State& st, index_t m, index_t n, index_t k) {
  GemmProbe<T> probe(m, n, k);
  time_gemm(
      st, [&] { return probe.seconds(); }, m, n, k);
}

/// A GEMM in the storage type of 16-bit iteration (float data iterating in bf16 or fp16).
void bm_lowp_gemm(benchmark::State& st, Precision compute, index_t n) {
  time_gemm(st, lowp_gemm_timer(compute, n, n, n), n, n, n);
}

/// The portable kernel's device form on a GPU (portable_kernel_timer). GFLOP/s counts 2n³ for
/// the full product and n³ for the triangle, the rates of the work each needs.
void bm_portable(benchmark::State& st, Precision compute, index_t n, bool symmetric) {
  time_gemm(st, portable_kernel_timer(compute, n, symmetric), n, n, symmetric ? n / 2 : n);
}

template <class T>
void register_all() {
  std::set<std::tuple<index_t, index_t, index_t>> gemms;
  for (const Shape& s : benchmark_shapes()) {
    for (const Method& m : methods()) {
      const std::string name = std::string("polar/") + m.name + "/" + precision_name<T>() + "/" + s.name();
      benchmark::RegisterBenchmark(name.c_str(), bm_polar<T>, s, m)
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond);
      for (const GemmShape& g : polar_gemm_shapes(s.rows, s.cols, m.options))
        if (g.kind == OpKind::gemm) gemms.insert({g.m, g.n, g.k});
      // The Newton–Schulz family once more with symmetric_gram = false (every product a GEMM):
      // "<method>_gemm", the SYRK-off comparison; its floor is GEMMs only.
      if (m.options.method != PolarMethod::qdwh) {
        Method off = m;
        off.options.symmetric_gram = false;
        const std::string off_name =
            std::string("polar/") + m.name + "_gemm/" + precision_name<T>() + "/" + s.name();
        benchmark::RegisterBenchmark(off_name.c_str(), bm_polar<T>, s, off)
            ->UseManualTime()
            ->Unit(benchmark::kMillisecond);
        for (const GemmShape& g : polar_gemm_shapes(s.rows, s.cols, off.options))
          if (g.kind == OpKind::gemm) gemms.insert({g.m, g.n, g.k});
      }
    }
  }
  for (const Shape& s : {Shape{768, 768}, Shape{768, 3072}, Shape{1024, 1024}})
    for (double alpha : {0.5, 0.25, -0.5})
      for (int steps : {0, 5, 8}) {
        if (steps > 0 && alpha < 0) continue;  // the polynomial method covers 0 ≤ α ≤ 1
        char a[32];
        std::snprintf(a, sizeof a, "alpha=%g", alpha);
        const std::string method =
            steps == 0 ? "spectral_power/" : "spectral_power_poly" + std::to_string(steps) + "/";
        const std::string name = method + a + "/" + precision_name<T>() + "/" + s.name();
        benchmark::RegisterBenchmark(name.c_str(), bm_spectral_power<T>, s, alpha, steps)
            ->UseManualTime()
            ->Unit(benchmark::kMillisecond);
      }
  for (const Shape& s : {Shape{768, 768}, Shape{768, 3072}, Shape{1024, 1024}})
    for (const double q : {1.0, 4.0, HUGE_VAL}) {
      const std::string name = std::string("schatten_norm/q=") +
                               (std::isinf(q) ? "inf" : std::to_string(int(q))) + "/" + precision_name<T>() +
                               "/" + s.name();
      benchmark::RegisterBenchmark(name.c_str(), bm_schatten_norm<T>, s, q)
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond);
    }
  // The hardcap at half the top singular value, and a two-sided clip into [0.05, 0.5]·σ_max.
  for (const Shape& s : {Shape{768, 768}, Shape{768, 3072}})
    for (const std::pair<double, double>& b : {std::pair<double, double>{0.0, 0.5}, {0.05, 0.5}})
      for (int variant = 0; variant < 3; ++variant) {
        const bool polynomial = variant > 0, bf16 = variant == 2;
        if (bf16 && !(std::is_same<T, float>::value &&
                      precision_supported(Precision::bf16, PolarMethod::polar_express)))
          continue;
        char bounds[48];
        std::snprintf(bounds, sizeof bounds, "lower=%g,upper=%g", b.first, b.second);
        const char* method = bf16         ? "spectral_clip_poly8_bf16/"
                             : polynomial ? "spectral_clip_poly8/"
                                          : "spectral_clip/";
        const std::string name = std::string(method) + bounds + "/" + precision_name<T>() + "/" + s.name();
        benchmark::RegisterBenchmark(name.c_str(), bm_spectral_clip<T>, s, b.first, b.second, polynomial,
                                     bf16 ? Precision::bf16 : Precision::automatic)
            ->UseManualTime()
            ->Unit(benchmark::kMillisecond);
      }
  for (const auto& [m, n, k] : gemms) {
    const std::string name = std::string("gemm/") + precision_name<T>() + "/" + std::to_string(m) + "x" +
                             std::to_string(n) + "x" + std::to_string(k);
    benchmark::RegisterBenchmark(name.c_str(), bm_gemm<T>, m, n, k)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
  }
}

}  // namespace

int main(int argc, char** argv) {
  Runtime runtime(argc, argv);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("schatten_commit", git_commit());
  benchmark::AddCustomContext("kokkos", runtime_description());
  benchmark::AddCustomContext("machine", machine_description());
  benchmark::AddCustomContext("input", "power-law singular values 1/sqrt(i+1), Haar singular vectors");
  register_all<float>();
  register_all<double>();
  const bool gpu_build = !std::is_same<Kokkos::DefaultExecutionSpace::memory_space, Kokkos::HostSpace>::value;
  // The 16-bit GEMM rate, the floor of 16-bit iteration: 1024³ everywhere (about 0.1 s a call
  // on the CPU's portable GEMM), and the issue #7 target sizes on a GPU.
  for (Precision compute : {Precision::bf16, Precision::fp16}) {
    if (!precision_supported(compute, PolarMethod::newton_schulz)) continue;
    std::vector<index_t> sizes{1024};
    if (gpu_build) sizes.insert(sizes.end(), {4096, 8192});
    for (index_t n : sizes) {
      const std::string name = std::string("gemm/") + (compute == Precision::bf16 ? "bf16/" : "fp16/") +
                               std::to_string(n) + "x" + std::to_string(n) + "x" + std::to_string(n);
      benchmark::RegisterBenchmark(name.c_str(), bm_lowp_gemm, compute, n)
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond);
    }
  }
  // The portable kernel's device form on a GPU build: what HIP runs, timed beside the gemm/
  // cases' vendor rate (on the CPU the gemm/bf16 and gemm/fp16 cases above already are it).
  if (gpu_build)
    for (Precision compute : {Precision::bf16, Precision::fp32})
      for (bool symmetric : {false, true})
        for (index_t n : {index_t(1024), index_t(4096), index_t(8192)}) {
          const std::string name = std::string("portable/") +
                                   (compute == Precision::bf16 ? "bf16/" : "float/") +
                                   (symmetric ? "sym/" : "gemm/") + std::to_string(n);
          benchmark::RegisterBenchmark(name.c_str(), bm_portable, compute, n, symmetric)
              ->UseManualTime()
              ->Unit(benchmark::kMillisecond);
        }
  benchmark::RegisterBenchmark("qdwh_floor/double/1024x1024/kappa=1e16", bm_qdwh_floor)
      ->UseManualTime()
      ->Unit(benchmark::kMillisecond)
      ->Iterations(3);
  const int status = bench::run_benchmarks();  // 1 when a case reported an error
  benchmark::Shutdown();
  return status;
}
