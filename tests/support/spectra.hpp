// SPDX-License-Identifier: Apache-2.0
/// \file
/// Test matrices with prescribed singular values: A = U diag(σ) Vᵀ with random orthonormal
/// U, V (schatten::reference::matrix_with_spectrum), as Eigen's svd_fill does. The convergence of every
/// polar method depends on σ_min/σ_max, so every suite draws its inputs from here.
#pragma once

#include <Eigen/Dense>

#include <string>
#include <vector>

#include "schatten/core/types.hpp"

namespace schatten::test {

/// A named spectrum on a shape; sigma has min(rows, cols) entries, non-increasing.
struct SpectrumCase {
  std::string name;
  index_t rows = 0, cols = 0;
  std::vector<double> sigma;
};

/// A = U diag(sigma) Vᵀ for the case, from the given seed (reference::matrix_with_spectrum).
Eigen::MatrixXd make_matrix(const SpectrumCase& c, std::uint64_t seed);

/// σ_i = top · ratio^(i/(k−1)), i = 0..k−1: geometric from top down to top·ratio.
std::vector<double> geometric(index_t k, double ratio, double top = 1.0);

/// The standard spectra (shapes: square, wide, tall, odd sizes, degenerate):
/// geometric (κ = 1e3), ill-conditioned (κ = 1e6), clustered, rank-deficient,
/// tiny scale (1e-30) and huge scale (1e30), 1×1, row and column vectors.
std::vector<SpectrumCase> standard_spectra();

}  // namespace schatten::test
