// SPDX-License-Identifier: Apache-2.0
/// \file
/// What the polar benchmarks and the main-job report measure, in one place: shapes, methods,
/// inputs with a prescribed spectrum, accuracy measures, timing, and the GEMM floor.
#pragma once

#include <string>
#include <vector>

#include "schatten/kernels/polar.hpp"

namespace schatten::bench {

struct Shape {
  index_t rows = 0, cols = 0;
  std::string name() const;  ///< "768x3072"
};

/// Squares and the block shapes of GPT-2-small-like transformers (d = 768, 4d = 3072) and of a
/// 1024-wide model: 768², 768×3072, 3072×768, 1024², 2048², 4096×1024.
std::vector<Shape> benchmark_shapes();

/// A named polar configuration.
struct Method {
  std::string name;
  PolarOptions options;
};
/// newton_schulz (Keller Jordan, 5), polar_express (reference table, 5 and 8),
/// polar_express_5 (deployed table), gram_newton_schulz (Polar Express, 5, restart at 2).
std::vector<Method> methods();

/// The benchmark input of a shape: the power-law spectrum σ_i = 1/√(i+1), i = 0..k−1 (the
/// heavy tail of gradient and momentum spectra; after Frobenius normalisation it spans about
/// [1e-2, 0.4] for k = 768–2048, inside the range the schedules are designed for), Haar-random
/// singular vectors from a fixed seed, and its exact polar factor U Vᵀ (SVD in double). Built
/// once per shape and cached (SVDs of the large shapes take seconds).
struct Problem {
  Shape shape;
  std::vector<double> sigma;  ///< the prescribed singular values
  std::vector<double> a;      ///< row-major
  std::vector<double> exact;  ///< row-major U Vᵀ
};
const Problem& problem(const Shape& s);

/// Accuracy of an output q (row-major) against the problem, both as root-mean-squares over the
/// k = min(rows, cols) singular directions: ‖Q Qᵀ − I‖_F / √k (orthogonality) and
/// ‖Q − U Vᵀ‖_F / √k (distance to the exact polar factor).
struct Accuracy {
  double orthogonality = 0.0;
  double polar_error = 0.0;
};
template <class T>
Accuracy accuracy(const Problem& p, const std::vector<T>& q);

/// What exact arithmetic predicts for polar_error: √(mean_i (s(σ_i/ν) − 1)²) with s the
/// schedule's composite scalar map and ν its normalisation of the problem.
double predicted_polar_rms(const Problem& p, const PolarOptions& o);

/// Median wall time in seconds of `reps` calls of polar() on the problem (after one warm-up
/// call), with a reused workspace; the output of the last call is left in `q`.
template <class T>
double time_polar(const Problem& p, const PolarOptions& o, int reps, std::vector<T>& q);

/// The GEMM floor of a configuration: Σ over polar_gemm_shapes() of count × the median time of
/// one KokkosBlas GEMM of that shape in precision T, measured now on this machine.
template <class T>
double gemm_floor_seconds(const Shape& s, const PolarOptions& o, int reps);

/// Operands of one GEMM C (m×n) = A (m×k) B (k×n) in precision T (column-major Views), and a
/// timer of single calls through KokkosBlas, the same path the kernels use.
template <class T>
class GemmProbe {
 public:
  GemmProbe(index_t m, index_t n, index_t k);
  ~GemmProbe();
  double seconds();  ///< wall time of one call, fenced
 private:
  struct Impl;
  Impl* impl_;
};

/// Median time of one GEMM of that shape (measured once per process and shape, then cached).
template <class T>
double gemm_seconds(index_t m, index_t n, index_t k, int reps);

/// "<commit>[-dirty]" of the source tree this binary was built from.
const char* git_commit();
/// CPU model name, logical cores and BLAS threading, for benchmark contexts.
std::string machine_description();

}  // namespace schatten::bench
