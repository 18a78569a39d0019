// SPDX-License-Identifier: Apache-2.0
/// \file
/// schatten-polar-report: the main job of the README. Runs every polar method (the
/// Newton–Schulz family and QDWH) on square and transformer shapes in float and double on this
/// machine, prints one table (method × shape: time, GFLOP/s, ratio to the floor of the same dense
/// operations, errors) and writes it as CSV for the plot script
/// (bench/plot_polar_report.py).
/// Usage: schatten-polar-report [--out DIR] [--quick] [--reps N] [--shape RxC]... [--method NAME]...
///        [--lowp bf16|fp16]
#include <Kokkos_Core.hpp>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "cli.hpp"
#include "polar_cases.hpp"
#include "schatten/core/runtime.hpp"

using namespace schatten;
using namespace schatten::bench;

namespace {

struct Row {
  std::string precision, shape, method;
  double ms, gflops, floor_ms, orth, polar, predicted;
};

template <class T>
Row measure(const Shape& s, const Method& m, int reps, const char* label = nullptr) {
  const Problem& p = problem(s);
  std::vector<T> q;
  const double t = time_polar<T>(p, m.options, reps, q);
  const double floor = kernel_floor_seconds<T>(p, m.options, reps);
  const Accuracy acc = accuracy(p, q);
  return {label            ? label
          : sizeof(T) == 4 ? "float"
                           : "double",
          s.name(),
          m.name,
          t * 1e3,
          executed_flops<T>(p, m.options) / t / 1e9,
          floor * 1e3,
          acc.orthogonality,
          acc.polar_error,
          predicted_polar_rms(p, m.options)};
}

void print_header() {
  std::printf("%-7s %-10s %-26s %10s %9s %8s %10s %10s %10s\n", "prec", "shape", "method", "time ms",
              "GFLOP/s", "x floor", "orth rms", "polar rms", "pred rms");
}

void print_row(const Row& r) {
  std::printf("%-7s %-10s %-26s %10.2f %9.1f %8.3f %10.3e %10.3e %10.3e\n", r.precision.c_str(),
              r.shape.c_str(), r.method.c_str(), r.ms, r.gflops, r.ms / r.floor_ms, r.orth, r.polar,
              r.predicted);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  if (wants_help(argc, argv)) {  // before Kokkos, which would print its own help first
    std::fputs(report_usage(), stdout);
    return 0;
  }
  Runtime runtime(argc, argv);
  ReportArgs args;
  if (const std::string error = parse_report_args(argc, argv, args); !error.empty()) {
    std::fprintf(stderr, "%s\n%s", error.c_str(), report_usage());
    return 2;
  }
  const std::string& out = args.out;
  const int reps = args.reps;
  const Precision lowp = args.lowp;
  std::vector<Shape> only_shapes;
  for (const auto& [r, c] : args.shapes)
    only_shapes.push_back({r, c});
  const std::vector<std::string>& only_methods = args.methods;
  // A misspelt --method would otherwise select nothing and write an empty report.
  const std::vector<Method> all_methods = methods();
  for (const std::string& name : only_methods)
    if (std::none_of(all_methods.begin(), all_methods.end(),
                     [&](const Method& m) { return m.name == name; })) {
      std::string known;
      for (const Method& m : all_methods)
        known += (known.empty() ? "" : ", ") + m.name;
      std::fprintf(stderr, "unknown --method '%s'; the methods are: %s\n%s", name.c_str(), known.c_str(),
                   report_usage());
      return 2;
    }
  std::printf("schatten polar report\n  commit  %s\n  runtime %s\n  machine %s\n", git_commit(),
              runtime_description().c_str(), machine_description().c_str());
  std::printf(
      "  input   power-law singular values 1/sqrt(i+1), Haar singular vectors; errors are\n"
      "          RMS over singular directions: orth = |QQ^T - I|_F/sqrt(k), polar = |Q - UV^T|_F/sqrt(k),\n"
      "          pred = polar error predicted by the schedule's scalar map in exact arithmetic;\n"
      "          x floor = time / (time of the same GEMM/TRSM/Cholesky calls measured in this run)\n\n");
  std::vector<Shape> shapes = benchmark_shapes();
  if (args.quick) shapes.resize(2);
  if (!only_shapes.empty()) shapes = only_shapes;
  std::vector<Method> ms;
  for (const Method& m : all_methods)
    if (only_methods.empty() ||
        std::find(only_methods.begin(), only_methods.end(), m.name) != only_methods.end())
      ms.push_back(m);

  std::vector<Row> rows;
  print_header();
  for (const Shape& s : shapes) {
    for (const Method& m : ms)
      rows.push_back(measure<float>(s, m, reps)), print_row(rows.back());
    if (lowp != Precision::automatic)
      for (Method m : ms) {
        if (!precision_supported(lowp, m.options.method)) continue;
        m.options.compute = lowp;
        rows.push_back(measure<float>(s, m, reps, to_string(lowp))), print_row(rows.back());
      }
  }
  for (const Shape& s : shapes) {
    for (const Method& m : ms)
      rows.push_back(measure<double>(s, m, reps)), print_row(rows.back());
  }

  std::filesystem::create_directories(out);
  const std::string csv = out + "/polar_report.csv";
  std::ofstream f(csv);
  f << "precision,shape,method,time_ms,gflops,floor_ms,x_floor,orth_rms,polar_rms,pred_rms\n";
  for (const Row& r : rows)
    f << r.precision << ',' << r.shape << ',' << r.method << ',' << r.ms << ',' << r.gflops << ','
      << r.floor_ms << ',' << r.ms / r.floor_ms << ',' << r.orth << ',' << r.polar << ',' << r.predicted
      << '\n';
  f << "# commit " << git_commit() << "; " << runtime_description() << "; " << machine_description() << '\n';
  std::printf("\nwrote %s\n", csv.c_str());
  return f ? 0 : 1;
}
