// SPDX-License-Identifier: Apache-2.0
/// \file
/// Ground truth from a singular value decomposition in double precision (Eigen's BDCSVD):
/// the exact polar factor and singular values, for tests, benchmarks and users who want them.
/// Slow (O(rows·cols·min(rows, cols)) with a large constant, host memory only, single-threaded)
/// and independent of the iterative kernels by construction. Every function returns
/// out_of_memory, with its outputs untouched, when the host heap runs out (a std::bad_alloc of
/// Eigen's matrices or of a vector is caught).
#pragma once

#include <cstdint>
#include <vector>

#include "schatten/core/matrix_ref.hpp"
#include "schatten/core/status.hpp"

namespace schatten::reference {

/// q = U sign(Σ) Vᵀ where a = U Σ Vᵀ is a thin SVD in double. Singular values at or below
/// `rank_tolerance · σ_max` count as zero (their directions are dropped, so q is the partial
/// isometry onto the numerical range, and unique); a negative tolerance means
/// max(rows, cols) · ε of the data type (2⁻⁵² for double, 2⁻²³ for float), the numerical-rank
/// rule of LAPACK/NumPy.
/// Preconditions: host memory; same shapes; q may alias a. Returns non_finite_input for NaN/Inf
/// and invalid_argument for bad shapes (q untouched in both cases).
Status polar(MatrixRef<const double> a, MatrixRef<double> q, double rank_tolerance = -1.0);
/// Float input and output, computed in double.
Status polar(MatrixRef<const float> a, MatrixRef<float> q, double rank_tolerance = -1.0);

/// Singular values of a in non-increasing order (min(rows, cols) of them), in double.
Status singular_values(MatrixRef<const double> a, std::vector<double>& sigma);
Status singular_values(MatrixRef<const float> a, std::vector<double>& sigma);

/// out = U Σ^α Vᵀ (SVD in double) for α ∈ [−1, 1]; singular values at or below
/// rank_tolerance·σ_max (negative: as in polar()) are mapped to 0, so for α < 0 numerically
/// zero singular values are not inverted. The exact target of schatten::spectral_power.
Status spectral_power(MatrixRef<const double> a, MatrixRef<double> out, double alpha,
                      double rank_tolerance = -1.0);
Status spectral_power(MatrixRef<const float> a, MatrixRef<float> out, double alpha,
                      double rank_tolerance = -1.0);

/// ‖A‖_{S_q} = (Σ σ_i^q)^{1/q} from an SVD in double, q ∈ (0, ∞] (∞: σ_max). Returns
/// invalid_argument for q ≤ 0.
Status schatten_norm(MatrixRef<const double> a, double q, double& norm);
Status schatten_norm(MatrixRef<const float> a, double q, double& norm);

/// Kaon's SVD variant [T] (algorithms.md §4b.2): out = U diag(s) Vᵀ where a = U Σ Vᵀ and the
/// s_i are iid uniform on (0, 1) from `seed`, divided by their maximum (so ‖out‖₂ = 1);
/// singular values of a at or below the rank tolerance (as in polar()) get s_i = 0.
Status kaon_spectrum(MatrixRef<const double> a, MatrixRef<double> out, std::uint64_t seed,
                     double rank_tolerance = -1.0);
Status kaon_spectrum(MatrixRef<const float> a, MatrixRef<float> out, std::uint64_t seed,
                     double rank_tolerance = -1.0);

/// out = U diag(sigma) Vᵀ with U (rows × k) and V (cols × k) Haar-distributed orthonormal
/// factors drawn from `seed` (QR of Gaussian matrices from schatten::Rng, signs fixed so the
/// factorisation is unique), k = min(rows, cols) = sigma.size(). The test matrices with a
/// prescribed spectrum of the test suites and benchmarks (Eigen's svd_fill idea). Host memory;
/// reproducible for a seed on every platform. When `u`/`v` are non-null they receive the factors
/// (row-major rows × k and cols × k).
Status matrix_with_spectrum(MatrixRef<double> out, const std::vector<double>& sigma, std::uint64_t seed,
                            std::vector<double>* u = nullptr, std::vector<double>* v = nullptr);

}  // namespace schatten::reference
