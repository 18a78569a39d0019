// SPDX-License-Identifier: Apache-2.0
/// \file
/// Randomized estimates of the largest singular values (the spectral estimates of the adaptive
/// Schatten-p criterion, issue #5): a Gaussian range finder with subspace iteration (Halko,
/// Martinsson, Tropp 2011, Algorithms 4.3/4.4), GEMMs through Kokkos, the small panels on the host.
#pragma once

#include <cstdint>
#include <vector>

#include "schatten/core/matrix_ref.hpp"
#include "schatten/core/status.hpp"

namespace schatten {

struct RandomizedSvdOptions {
  index_t rank = 32;         ///< singular values wanted (≤ min(rows, cols))
  index_t oversampling = 8;  ///< extra sample columns p: l = min(rank + p, min(rows, cols))
  int power_iterations = 2;  ///< q subspace iterations (each re-orthonormalised)
  std::uint64_t seed = 0;    ///< of the Gaussian test matrix (schatten::Rng: same on every platform)
};

/// The `rank` largest singular values of A in decreasing order, into `sigma`.
///
/// Math: Ω (n × l) Gaussian, Y = A Ω, q times Y ← A orth(Aᵀ orth(Y)), Q = orth(Y), then the
/// singular values of B = Qᵀ A (l × n) by a host SVD (Eigen). orth() is a thin Householder QR of
/// the m × l panel on the host. Exact (to rounding) when rank(A) ≤ l; otherwise σ_i is
/// underestimated by a relative amount of order (σ_{l+1}/σ_i)^{2q+1} (HMT 2011, Thm 10.8 and
/// §10.4). Cost: (2q + 2) GEMMs of m·n·l, q + 1 host QRs of m × l or n × l, one host SVD of
/// l × n; host traffic (m + n)·l per iteration. Computed in the input's precision (GEMMs) and
/// double (host algebra). Memory: Ω and Y ((m + n)·l elements) on the execution space and the
/// host panels, allocated per call. A contiguous row-major A is read in place (it is Aᵀ
/// column-major, the GEMMs' operand), after one read that looks for NaN/Inf; another stride
/// costs a copy of A (m·n elements), and so does host memory on a GPU build (the staging). No
/// workspace, since the host SVD and QRs allocate per call anyway (the adaptive Schatten-p
/// criterion, its caller, runs every `interval` steps). Any finite double A is handled: the
/// products are of 2^−s·A when max|a| lies outside [2^−511, 2^511] (an exact power of two, so
/// that the host QRs neither overflow nor underflow; a scaled copy of A, m·n elements) and σ is
/// scaled back. Bad input: NaN/Inf →
/// non_finite_input, bad rank/oversampling/q → invalid_argument, a σ beyond DBL_MAX →
/// out_of_range; `sigma` is written only on success. Synchronous.
Status randomized_singular_values(MatrixRef<const float> a, std::vector<double>& sigma,
                                  const RandomizedSvdOptions& options = {});
Status randomized_singular_values(MatrixRef<const double> a, std::vector<double>& sigma,
                                  const RandomizedSvdOptions& options = {});

/// A truncated SVD A ≈ U diag(σ) Vᵀ, on the host in double: `u` is rows × rank and `v` cols ×
/// rank, both column-major with orthonormal columns, `sigma` decreasing. For float input, U =
/// Q U_B carries Q's orthonormality, formed in the input's precision: ‖UᵀU − I‖ of about 6e-8
/// (measured by the kernel audit of 2026-12-07), V's is double's.
struct LowRankSvd {
  index_t rows = 0, cols = 0, rank = 0;
  std::vector<double> sigma, u, v;
  double u_at(index_t i, index_t k) const { return u[static_cast<std::size_t>(k * rows + i)]; }
  double v_at(index_t j, index_t k) const { return v[static_cast<std::size_t>(k * cols + j)]; }
};

/// randomized_singular_values() with the singular vectors: U = Q U_B and V = V_B from the SVD of
/// B = Qᵀ A. Same math, cost (plus rows·l·rank host flops for U), accuracy, errors and seeds;
/// `out` is written only on success.
Status randomized_svd(MatrixRef<const float> a, LowRankSvd& out, const RandomizedSvdOptions& options = {});
Status randomized_svd(MatrixRef<const double> a, LowRankSvd& out, const RandomizedSvdOptions& options = {});

}  // namespace schatten
