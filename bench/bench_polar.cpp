// SPDX-License-Identifier: Apache-2.0
/// \file
/// schatten-bench-polar: time, achieved GFLOP/s, GEMM floor and accuracy of every polar method
/// on square and transformer shapes, in float and double (Google Benchmark).
///
/// Each benchmark times polar() with a reused workspace (manual timing around the synchronous
/// call) and reports counters:
///   GFLOP/s    polar_flops() / time (GEMM flops only, see polar_gemm_shapes())
///   floor_ms   Σ GEMM times of the same shapes measured in this run (gemm/... entries)
///   x_floor    time / floor_ms: 1.0 means the kernel runs at the machine's GEMM rate
///   orth_rms   ‖QQᵀ − I‖_F / √k;   polar_rms   ‖Q − UVᵀ‖_F / √k  (exact factor from an SVD)
///   pred_rms   what exact arithmetic predicts for polar_rms (the schedule's scalar map)
/// Inputs have power-law singular values 1/√(i+1) (bench/polar_cases.hpp).
#include <benchmark/benchmark.h>

#include <Kokkos_Core.hpp>

#include <map>
#include <set>
#include <string>
#include <tuple>

#include "polar_cases.hpp"
#include "schatten/core/runtime.hpp"

using namespace schatten;
using namespace schatten::bench;

namespace {

template <class T>
const char* precision_name() {
  return sizeof(T) == 4 ? "float" : "double";
}

template <class T>
void bm_polar(benchmark::State& st, Shape shape, Method method) {
  const Problem& p = problem(shape);
  const index_t r = shape.rows, c = shape.cols;
  std::vector<T> a(p.a.begin(), p.a.end()), q(a.size());
  Workspace ws;
  polar(MatrixRef<const T>(a.data(), r, c), MatrixRef<T>(q.data(), r, c), method.options, &ws);  // warm-up
  double total = 0.0;
  for (auto _ : st) {
    Kokkos::Timer timer;
    const PolarReport rep =
        polar(MatrixRef<const T>(a.data(), r, c), MatrixRef<T>(q.data(), r, c), method.options, &ws);
    const double s = timer.seconds();
    if (rep.status != Status::ok) {
      st.SkipWithError(rep.message);
      return;
    }
    st.SetIterationTime(s);
    total += s;
  }
  const double per_call = total / static_cast<double>(st.iterations());
  const double floor = gemm_floor_seconds<T>(shape, method.options, 3);
  const Accuracy acc = accuracy(p, q);
  st.counters["GFLOP/s"] = polar_flops(r, c, method.options) / per_call / 1e9;
  st.counters["floor_ms"] = floor * 1e3;
  st.counters["x_floor"] = per_call / floor;
  st.counters["orth_rms"] = acc.orthogonality;
  st.counters["polar_rms"] = acc.polar_error;
  st.counters["pred_rms"] = predicted_polar_rms(p, method.options);
}

template <class T>
void bm_gemm(benchmark::State& st, index_t m, index_t n, index_t k) {
  GemmProbe<T> probe(m, n, k);
  double total = 0.0;
  for (auto _ : st) {
    const double s = probe.seconds();
    st.SetIterationTime(s);
    total += s;
  }
  st.counters["GFLOP/s"] =
      2.0 * double(m) * double(n) * double(k) / (total / static_cast<double>(st.iterations())) / 1e9;
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
        gemms.insert({g.m, g.n, g.k});
    }
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
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
