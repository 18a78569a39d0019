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
///
/// Why it checks its result: Eigen 3.4.0's BDCSVD (Debian 12's libeigen3-dev 3.4.0-4) returns
/// wrong singular values for some rank-deficient inputs, with no error: about 1 in 850 of the
/// 20 × 90 matrices B = QᵀA of a randomized SVD of a rank-12 150 × 90 A (7 of 6000 trials, the
/// worst σ_i off by 22 %, U and V orthonormal to 1e-14; 2026-12-01, docs/reliability.md
/// "Findings"). The same matrix with its columns in reverse order came out right every time.
#pragma once

#include <Eigen/Core>

namespace schatten::detail {

/// Which computation produced a DenseSvd: the first of these, in this order, whose result passes
/// the check of dense_svd().
enum class SvdPath {
  divide_and_conquer,  ///< Eigen's BDCSVD of a
  reversed_columns,    ///< BDCSVD of a with its columns in reverse order (a P, P the reversal;
                       ///< V is P V′), a different bidiagonal for the same singular values
  jacobi               ///< Eigen's JacobiSVD (QR-preconditioned two-sided Jacobi), not checked
};

/// a = u · diag(sigma) · vᵀ for a dense m × n matrix a, r = min(m, n).
struct DenseSvd {
  Eigen::VectorXd sigma;  ///< r singular values, decreasing, ≥ 0
  Eigen::MatrixXd u;      ///< m × r left singular vectors (empty unless vectors were asked for)
  Eigen::MatrixXd v;      ///< n × r right singular vectors (empty unless vectors were asked for)
  SvdPath path = SvdPath::divide_and_conquer;
};

/// Thin SVD of `a`, checked. Each path computes U, Σ and V (also when only `sigma` is wanted) and
/// is accepted when
///   ‖a V − U Σ‖_F (m ≥ n; ‖Uᵀ a − Σ Vᵀ‖_F when m < n) ≤ τ ‖a‖_F,  ‖UᵀU − I‖_F ≤ τ,  ‖VᵀV − I‖_F ≤ τ,
/// τ = 100·ε·max(m, n) (ε = 2⁻⁵³). Then a = U Σ Vᵀ + E with ‖E‖_F ≲ τ ‖a‖_F (to first order in
/// τ: the factor on the square side is orthogonal to τ), so every σ_i is within about τ ‖a‖_F of
/// the exact one (Weyl). Healthy BDCSVD results measured 0.15 to 0.6·ε·max(m, n) on this check,
/// from 20 × 90 to 2048², so τ leaves a margin of 150 or more; the wrong results of Eigen 3.4.0
/// measured 2e-3 and above (file comment). A path that fails the check hands over to the next;
/// JacobiSVD, the last, is accurate for every input (to ε·σ_max; Demmel and Veselić 1992) but
/// O(r³) per sweep with several sweeps: 20 s at 768², where BDCSVD takes 0.4 s (this CPU).
/// Cost of a checked BDCSVD: the SVD with vectors plus about three m n r products for the check.
/// Against the unchecked BDCSVD of before (2026-12-01, g++ -O3, the 2-core development machine,
/// best of 1–200 runs, 20 × 90 to 512 × 2048): 1.15–1.47× when the vectors are wanted, 1.5–3.6×
/// for the values alone, which no longer skip the vectors (docs/benchmarks/cpu-dense-svd.md).
/// Precondition: every entry of `a` is finite (the callers check and report non-finite input).
/// `first` starts at a later path (tests).
DenseSvd dense_svd(const Eigen::MatrixXd& a, bool vectors, SvdPath first = SvdPath::divide_and_conquer);

}  // namespace schatten::detail
