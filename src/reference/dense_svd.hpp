// SPDX-License-Identifier: Apache-2.0
/// \file
/// The library's one dense SVD in double (internal header, not installed): the exact references
/// (reference/polar.cpp), the exact branch of the Schatten-p criterion (surrogate/schatten_p.cpp)
/// and the small core SVD of the randomized SVD (backends/kokkos/src/randomized.cpp) all call it.
///
/// Why a function of its own: instantiating Eigen's BDCSVD<MatrixXd> is most of the cost of a
/// translation unit that uses it (about 28 s with g++ -O3 and 54 s with clang -O1 under
/// ASan+UBSan on the 2-core CI machine, measured 2026-11-28), and the three callers each
/// instantiated it. One instantiation here saves CI about 200 CPU-seconds (the Release library
/// is compiled twice, by the build and by the packaging test; docs/reliability.md "CI cost").
#pragma once

#include <Eigen/Core>

namespace schatten::detail {

/// a = u · diag(sigma) · vᵀ for a dense m × n matrix a, r = min(m, n).
struct DenseSvd {
  Eigen::VectorXd sigma;  ///< r singular values, decreasing, ≥ 0
  Eigen::MatrixXd u;      ///< m × r left singular vectors (empty unless vectors were asked for)
  Eigen::MatrixXd v;      ///< n × r right singular vectors (empty unless vectors were asked for)
};

/// Thin SVD of `a` by Eigen's BDCSVD (Householder bidiagonalisation, then divide and conquer;
/// one-sided Jacobi on blocks under 16 columns). Backward stable: the computed factors are exact
/// for a + E with ‖E‖₂ ≲ c(m, n)·ε·‖a‖₂, so each σ_i is accurate to about ε·σ_max (ε = 2⁻⁵³).
/// Cost O(m n r) flops, plus O(m r + n r) memory for the vectors when `vectors` is true.
/// Precondition: every entry of `a` is finite (the callers check and report non-finite input).
DenseSvd dense_svd(const Eigen::MatrixXd& a, bool vectors);

}  // namespace schatten::detail
