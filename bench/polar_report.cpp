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
          polar_flops(s.rows, s.cols, m.options) / t / 1e9,
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
  Runtime runtime(argc, argv);
  std::string out = "polar_report";
  bool quick = false;
  std::vector<Shape> only_shapes;
  std::vector<std::string> only_methods;
  Precision lowp = Precision::automatic;
  int reps = 3;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--out") && i + 1 < argc)
      out = argv[++i];
    else if (!std::strcmp(argv[i], "--quick"))
      quick = true;
    else if (!std::strcmp(argv[i], "--shape") && i + 1 < argc) {
      long r = 0, c = 0;
      if (std::sscanf(argv[++i], "%ldx%ld", &r, &c) != 2 || r <= 0 || c <= 0) {
        std::fprintf(stderr, "bad --shape %s (want RxC)\n", argv[i]);
        return 2;
      }
      only_shapes.push_back({static_cast<index_t>(r), static_cast<index_t>(c)});
    } else if (!std::strcmp(argv[i], "--method") && i + 1 < argc)
      only_methods.push_back(argv[++i]);
    else if (!std::strcmp(argv[i], "--lowp") && i + 1 < argc) {
      const std::string p = argv[++i];
      lowp = p == "bf16" ? Precision::bf16 : p == "fp16" ? Precision::fp16 : Precision::automatic;
      if (lowp == Precision::automatic) {
        std::fprintf(stderr, "--lowp takes bf16 or fp16\n");
        return 2;
      }
    } else if (!std::strcmp(argv[i], "--reps") && i + 1 < argc)
      reps = std::max(1, std::atoi(argv[++i]));
    else {
      std::fprintf(stderr,
                   "usage: schatten-polar-report [--out DIR] [--quick] [--reps N]\n"
                   "  --out DIR   where polar_report.csv goes (default ./polar_report)\n"
                   "  --quick     only the 768x768 and 768x3072 shapes\n"
                   "  --reps N    timed repetitions per case, median reported (default 3)\n"
                   "  --shape RxC only this shape (repeatable); above 2048 the input is Gaussian\n"
                   "              and the error columns are nan (timing only)\n"
                   "  --method M  only this method (repeatable), e.g. polar_express_5, qdwh\n"
                   "  --lowp P    also run the float cases iterating in P (bf16 or fp16) where this\n"
                   "              build supports it (CUDA builds; Newton-Schulz and Polar Express)\n");
      return 2;
    }
  }
  std::printf("schatten polar report\n  commit  %s\n  runtime %s\n  machine %s\n", git_commit(),
              runtime_description().c_str(), machine_description().c_str());
  std::printf(
      "  input   power-law singular values 1/sqrt(i+1), Haar singular vectors; errors are\n"
      "          RMS over singular directions: orth = |QQ^T - I|_F/sqrt(k), polar = |Q - UV^T|_F/sqrt(k),\n"
      "          pred = polar error predicted by the schedule's scalar map in exact arithmetic;\n"
      "          x floor = time / (time of the same GEMM/TRSM/Cholesky calls measured in this run)\n\n");
  std::vector<Shape> shapes = benchmark_shapes();
  if (quick) shapes.resize(2);
  if (!only_shapes.empty()) shapes = only_shapes;
  std::vector<Method> ms;
  for (const Method& m : methods())
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
