// SPDX-License-Identifier: Apache-2.0
/// \file
/// What the polar benchmarks and the main-job report measure, in one place: shapes, methods,
/// inputs with a prescribed spectrum, accuracy measures, timing, and the GEMM floor.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "schatten/kernels/polar.hpp"
#include "schatten/kernels/qdwh.hpp"

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
/// polar_express_5 (deployed table), gram_newton_schulz (Polar Express, 5, restart at 2), and
/// qdwh (l₀ estimated, Newton–Schulz polish): the exact method the others are compared with.
std::vector<Method> methods();

/// The benchmark input of a shape: the power-law spectrum σ_i = 1/√(i+1), i = 0..k−1 (the
/// heavy tail of gradient and momentum spectra; after Frobenius normalisation it spans about
/// [1e-2, 0.4] for k = 768–2048, inside the range the schedules are designed for), Haar-random
/// singular vectors from a fixed seed, and its exact polar factor U Vᵀ (SVD in double). Built
/// once per shape and cached. Shapes with min(rows, cols) > kExactLimit (the 4096² and 8192² GPU
/// targets) get a timing-only problem instead: iid N(0, 1/cols) entries, no factors, and NaN
/// accuracy (building Haar factors of that size on the host would take minutes).
constexpr index_t kExactLimit = 2048;
struct Problem {
  Shape shape;
  std::vector<double> sigma;  ///< the prescribed singular values
  std::vector<double> a;      ///< row-major
  std::vector<double> exact;  ///< row-major U Vᵀ
  std::vector<double> u, v;   ///< the singular vectors (row-major rows × k and cols × k)
  /// Row-major U diag(σ^α) Vᵀ (exact spectral power, from the factors).
  std::vector<double> spectral_power(double alpha) const;
  /// U f(Σ) Vᵀ (row-major), the exact output of any spectral map (spectral_power, spectral_clip).
  std::vector<double> spectral_map(const std::function<double(double)>& f) const;
};
const Problem& problem(const Shape& s);
/// A matrix of that shape with singular values geometric from 1 down to 1/kappa (the
/// condition number of the QDWH targets), Haar singular vectors, fixed seed; cached.
const Problem& conditioned_problem(const Shape& s, double kappa);

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

/// A problem's matrix copied once into the default execution space's memory (device memory on a
/// GPU build), and an output of the same shape there: benchmarks time kernels on resident data,
/// as in a training step, not host staging copies.
template <class T>
class DeviceCopy {
 public:
  DeviceCopy(const std::vector<double>& a, index_t rows, index_t cols);
  ~DeviceCopy();
  DeviceCopy(const DeviceCopy&) = delete;
  DeviceCopy& operator=(const DeviceCopy&) = delete;
  MatrixRef<const T> input() const;
  MatrixRef<T> output() const;
  std::vector<T> output_to_host() const;

 private:
  struct Impl;
  Impl* impl_;
};

/// Median wall time in seconds of `reps` calls of polar() on the problem (after one warm-up
/// call) on a DeviceCopy, with a reused workspace; the output of the last call is left in `q`.
template <class T>
double time_polar(const Problem& p, const PolarOptions& o, int reps, std::vector<T>& q);

/// The dense operations one polar() call performs on the problem in precision T: the cost model
/// polar_gemm_shapes() for the Newton–Schulz family; for QDWH the model evaluated at the
/// iteration counts of an actual run (QR-type and Cholesky-type counts are data-dependent).
template <class T>
std::vector<GemmShape> executed_ops(const Problem& p, const PolarOptions& o);

/// The floor of a list of operations: Σ count × the median time of one such operation in
/// precision T measured now on this machine: GEMM and TRSM through KokkosBlas (the kernels'
/// path: OpenBLAS here), Cholesky through LAPACK ?potrf (OpenBLAS's, the fastest one available),
/// SYRK through the kernels' own entry (kokkos::detail::syrk_lower: BLAS ?syrk here).
template <class T>
double floor_seconds(const std::vector<GemmShape>& ops, int reps);

/// floor_seconds(executed_ops(p, o)): the time the same dense operations take as bare library
/// calls. x_floor = time / floor.
template <class T>
double kernel_floor_seconds(const Problem& p, const PolarOptions& o, int reps);

/// The flops of executed_ops(p, o): the numerator of the GFLOP/s counters, so that they count
/// what the call ran, as its floor does. For QDWH one more call (its iteration counts);
/// polar_flops() instead assumes the count predicted for l₀ = 2⁻⁵² (6 in double), 1.5–2.5× the
/// flops of a run on a well-conditioned input (audit of 2026-12-07).
template <class T>
double executed_flops(const Problem& p, const PolarOptions& o);
/// Flops of spectral_power() at exponent alpha on a rows × cols matrix with the given QDWH
/// counts and number of shifted solves (the cost model of spectral_power.hpp: QDWH + 2mk² for H
/// + per pole k³/3 + 2k³ + 2mk² for U_p g(H), + 2k³ for α < 0: the filter's product S(H)·H, or
/// at α = −1 its second solve).
double spectral_power_flops(index_t rows, index_t cols, const std::vector<GemmShape>& qdwh_ops, int poles,
                            double alpha);

/// Median time of one Householder QR (LAPACK ?geqrf + ?orgqr, explicit Q) of an m × n matrix:
/// what a QR-type QDWH step would cost with Householder instead of shifted Cholesky-QR.
template <class T>
double householder_qr_seconds(index_t m, index_t n, int reps);

/// Operands of one GEMM C (m×n) = A (m×k) B (k×n) in precision T (column-major Views), and a
/// timer of single calls through KokkosBlas, the same path the kernels use.
template <class T>
class GemmProbe {
 public:
  GemmProbe(index_t m, index_t n, index_t k);
  ~GemmProbe();
  double seconds();  ///< wall time of one call, fenced
  /// Wall time of one call of the portable kernel's device form on the same operands:
  /// portable_gemm, or with `symmetric` portable_sym_product (C = A Aᵀ, for m = n).
  double portable_seconds(bool symmetric);

 private:
  struct Impl;
  Impl* impl_;
};

/// Median time of one GEMM of that shape (measured once per process and shape, then cached).
template <class T>
double gemm_seconds(index_t m, index_t n, index_t k, int reps);

/// A timer of single m × n × k GEMMs (α = 1, β = 0, untransposed; fenced wall seconds per call)
/// in the storage type of 16-bit iteration `compute` (bf16 or fp16) on this build: cuBLAS'
/// GemmEx on CUDA, portable_gemm elsewhere, the products that bf16/fp16 Newton–Schulz and Polar
/// Express run and that their floor counts (kernel_floor_seconds). Operands as GemmProbe's.
std::function<double()> lowp_gemm_timer(Precision compute, index_t m, index_t n, index_t k);

/// A timer of single n × n × n calls (fenced wall seconds) of the portable kernel's device loop
/// form on the default execution space, in the storage of `compute` (bf16 and fp16: the
/// software types; fp32: float): portable_gemm, or with `symmetric` portable_sym_product
/// (C = A Aᵀ, one triangle). HIP runs these for its 16-bit iteration and batches; on CUDA the
/// library never does, so this times them on an NVIDIA GPU for comparison with cuBLAS (the
/// gemm/ cases). Operands as GemmProbe's.
std::function<double()> portable_kernel_timer(Precision compute, index_t n, bool symmetric);

/// "<commit>[-dirty]" of the source tree this binary was built from.
const char* git_commit();
/// CPU model name, logical cores and BLAS threading, for benchmark contexts.
std::string machine_description();

}  // namespace schatten::bench
