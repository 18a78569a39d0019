// SPDX-License-Identifier: Apache-2.0
/// \file
/// How far float rounding can turn the columns that Dion's low-rank step keeps, for tests whose
/// bounds must allow it (docs/kernels/low_rank.md, "A kept column close to the floor"). Header
/// only and without Eigen, so that test_mpi can use it too.
#pragma once

#include <cmath>
#include <cstddef>
#include <vector>

namespace schatten::test {

/// The tilts of the first `count` columns of the panel P = B X of an r × c momentum `m`
/// (row-major floats; B = M when r ≥ c, else Mᵀ, so B is L × S with S = min(r, c)) and the
/// right factor X given as Xᵀ in `qt` (k × S row-major, row j = column j: Dion's stored Q):
///
///   tilt_j = √S·u·‖B‖_F·‖x_j‖₂ / |R_jj|     (u = 2⁻²⁴)
///
/// where R is the unpivoted QR of B X in double (modified Gram–Schmidt, twice). The numerator
/// is the size of the float GEMM's rounding of column j (the kernel's floor without its factor
/// 8, kernels/low_rank.hpp), |R_jj| the part of that column that the columns before it do not
/// explain: a kept column's direction is fixed only to about this fraction. For a rank-1 B =
/// a bᵀ, tilt_0 = √S·u / |cos(b, x_0)|: about 1e-6 unless x_0 is nearly orthogonal to b.
/// Precondition: count ≤ k, and the first `count` columns of B X independent (|R_jj| > 0; a
/// zero one gives HUGE_VAL). Cost: 2·L·S·count + 4·L·count² flops in double.
inline std::vector<double> kept_column_tilts(const float* m, std::size_t rows, std::size_t cols,
                                             const float* qt, std::size_t k, std::size_t count) {
  const bool tall = rows >= cols;
  const std::size_t l = tall ? rows : cols, s = tall ? cols : rows;
  const auto b = [&](std::size_t i, std::size_t j) {  // B(i, j), i < L, j < S
    return double(tall ? m[i * cols + j] : m[j * cols + i]);
  };
  double b2 = 0.0;
  for (std::size_t e = 0; e < rows * cols; ++e)
    b2 += double(m[e]) * double(m[e]);
  std::vector<std::vector<double>> y(count, std::vector<double>(l, 0.0));  // columns of B X
  std::vector<double> tilt(count);
  for (std::size_t j = 0; j < count && j < k; ++j) {
    double x2 = 0.0;
    for (std::size_t t = 0; t < s; ++t)
      x2 += double(qt[j * s + t]) * double(qt[j * s + t]);
    for (std::size_t i = 0; i < l; ++i) {
      double d = 0.0;
      for (std::size_t t = 0; t < s; ++t)
        d += b(i, t) * double(qt[j * s + t]);
      y[j][i] = d;
    }
    for (int pass = 0; pass < 2; ++pass)  // project out the unit columns before j, twice
      for (std::size_t p = 0; p < j; ++p) {
        double dot = 0.0;
        for (std::size_t i = 0; i < l; ++i)
          dot += y[p][i] * y[j][i];
        for (std::size_t i = 0; i < l; ++i)
          y[j][i] -= dot * y[p][i];
      }
    double rjj = 0.0;
    for (double v : y[j])
      rjj += v * v;
    rjj = std::sqrt(rjj);
    if (!(rjj > 0.0)) {
      tilt[j] = HUGE_VAL;
      continue;
    }
    tilt[j] = std::sqrt(double(s)) * std::ldexp(1.0, -24) * std::sqrt(b2 * x2) / rjj;
    for (double& v : y[j])
      v /= rjj;
  }
  return tilt;
}

}  // namespace schatten::test
