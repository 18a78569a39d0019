// SPDX-License-Identifier: Apache-2.0
/// \file
/// Tolerances of the polar suites, derived from the schedule instead of tuned by hand.
///
/// Model (first-order rounding analysis of an odd-polynomial iteration X ← p_t(X)):
///  * Each step commits a rounding error of about u·‖X_t‖ (u = machine epsilon of the compute
///    precision; ‖X_t‖₂ ≤ 1.25 after normalisation).
///  * A perturbation δ of X_t reaches the output through the remaining composite map F; for an
///    odd F the Daleckii–Krein divided differences (F(x)∓F(y))/(x∓y) are bounded by sup|F'|,
///    so ‖δ_out‖_F ≤ sup|F'| · ‖δ‖_F. sup|F'| ≤ ∏ sup|p_s'| over the remaining steps
///    (Λ, evaluated on [0, 1.25], the range the iterates live in).
///  * Summed over T steps: relative error ≤ T · u · Λ (with ‖X‖_F ≈ ‖Q‖_F).
/// Gram Newton–Schulz iterates on R = X Xᵀ, where a rounding of R perturbs σ² instead of σ:
/// within a segment between restarts the amplification is squared (Λ_s²), and the error of an
/// early segment is further amplified by the later ones. Bound: T · u · Σ_s Λ_s² ∏_{s'>s} Λ_s'.
/// Observed errors on the standard spectra are 15–300× below these bounds (seed 20261124),
/// so the bounds are safe for other seeds while still far (≥ 10×) below the deviations they
/// guard: a wrong coefficient or a missed step changes the output by 1e-2 or more.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "schatten/kernels/polar.hpp"

namespace schatten::test {

/// sup over [0, 1.25] of |p'| (grid of 2001 points; p' is a quartic, the grid is ample).
inline double max_slope(const OddQuintic& p) {
  double m = 0.0;
  for (int i = 0; i <= 2000; ++i) {
    const double x = 1.25 * i / 2000.0, x2 = x * x;
    m = std::max(m, std::fabs(p.a + 3.0 * p.b * x2 + 5.0 * p.c * x2 * x2));
  }
  return std::max(m, 1.0);
}

/// T · u · Λ for the options (see the file comment); u = epsilon of the compute precision T.
template <class T>
double rounding_tolerance(const PolarOptions& o) {
  const double u = std::numeric_limits<T>::epsilon();
  const CoefficientSchedule s = resolved_schedule(o);
  const int iters = o.iterations;
  if (o.method != PolarMethod::gram_newton_schulz) {
    double lambda = 1.0;
    for (int t = 0; t < iters; ++t)
      lambda *= max_slope(s.at(t));
    return iters * u * lambda;
  }
  // Segments between restarts.
  std::vector<double> seg{1.0};
  for (int t = 0; t < iters; ++t) {
    if (t > 0 && std::find(o.gram_restarts.begin(), o.gram_restarts.end(), t) != o.gram_restarts.end())
      seg.push_back(1.0);
    seg.back() *= max_slope(s.at(t));
  }
  double total = 0.0;
  for (std::size_t i = 0; i < seg.size(); ++i) {
    double later = 1.0;
    for (std::size_t j = i + 1; j < seg.size(); ++j)
      later *= seg[j];
    total += seg[i] * seg[i] * later;
  }
  return iters * u * total;
}

}  // namespace schatten::test
