// SPDX-License-Identifier: Apache-2.0
/// \file
/// Backend-independent parts of QDWH: the weight recurrence and option checks.
#include "schatten/kernels/qdwh.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace schatten {

QdwhWeights qdwh_weights(double l) {
  QdwhWeights w;
  const double eps = std::numeric_limits<double>::epsilon();
  if (!(l > 0.0) || std::fabs(1.0 - l) <= 5.0 * eps) return w;  // Halley (3, 1, 3), l' = 1
  l = std::clamp(l, kQdwhSmallestLowerBound, 1.0);              // (l⁴ stays a normal double)
  const double l2 = l * l;
  const double d = std::cbrt(4.0 * (1.0 - l2) / (l2 * l2));
  const double s = std::sqrt(1.0 + d);
  w.a = s + 0.5 * std::sqrt(8.0 - 4.0 * d + 8.0 * (2.0 - l2) / (l2 * s));
  w.b = (w.a - 1.0) * (w.a - 1.0) / 4.0;
  w.c = w.a + w.b - 1.0;
  w.next_lower = w.image(l);
  return w;
}

int qdwh_predicted_iterations(double l0, double u) {
  double l = l0;
  int k = 0;
  while (std::fabs(1.0 - l) > 5.0 * u && k < 100) {
    l = qdwh_weights(l).next_lower;
    ++k;
  }
  return k;
}

std::vector<GemmShape> qdwh_gemm_shapes(index_t rows, index_t cols, int qr, int chol, bool estimate,
                                        bool polish) {
  const index_t k = std::min(rows, cols), m = std::max(rows, cols);
  std::vector<GemmShape> ops;
  if (k == 0) return ops;
  auto add = [&](index_t a, index_t b, index_t c, int n, OpKind kind) {
    if (n > 0) ops.push_back({a, b, c, n, kind});
  };
  // Mirrors backends/kokkos/include/schatten/kokkos/detail/qdwh_impl.hpp.
  if (estimate) {  // shifted Cholesky-QR3 of X₀ (3 Grams, 3 Cholesky, 2 TRSM with m rows)
    add(k, k, m, 3, OpKind::gemm);
    add(k, k, k, 3, OpKind::cholesky);
    add(m, k, k, 2, OpKind::trsm);
  }
  // QR step: Gram, 3 Cholesky, TRSM for Q₁ (3×) and Q₂ (3×), Q₂ᵀQ₂ (2×), Q₁ Gram (2×), Q₁Q₂ᵀ.
  add(k, k, m, 3 * qr, OpKind::gemm);
  add(k, k, k, 3 * qr, OpKind::cholesky);
  add(m, k, k, 3 * qr, OpKind::trsm);
  add(k, k, k, 3 * qr, OpKind::trsm);
  add(k, k, k, 2 * qr, OpKind::gemm);
  add(m, k, k, qr, OpKind::gemm);
  // Cholesky step: Gram, Cholesky, two TRSM.
  add(k, k, m, chol, OpKind::gemm);
  add(k, k, k, chol, OpKind::cholesky);
  add(m, k, k, 2 * chol, OpKind::trsm);
  if (polish) {  // Gram + product
    add(k, k, m, 1, OpKind::gemm);
    add(m, k, k, 1, OpKind::gemm);
  }
  return ops;
}

const char* check_qdwh_options(const QdwhOptions& o) {
  if (!known_precision(o.compute)) return kUnknownPrecision;
  if (!(o.lower_bound <= 1.0) || std::isnan(o.lower_bound))
    return "lower_bound must be <= 1 (or < 0 to estimate)";
  if (o.max_iterations < 1 || o.max_iterations > 100) return "max_iterations must lie in [1, 100]";
  return nullptr;
}

}  // namespace schatten
