// SPDX-License-Identifier: Apache-2.0
/// \file
/// Polar Express coefficient generator (algorithms.md §2.1–2.2), written from the description of
/// the reference implementation NoahAmsel/PolarExpress `polar_express/_core.py` [V].
#include "schatten/kernels/polar_express_coefficients.hpp"

#include <array>
#include <cmath>
#include <limits>
#include <utility>

namespace schatten {
namespace {

/// Solves the 4×4 system M z = rhs by Gaussian elimination with partial pivoting (the same
/// algorithm as LAPACK's gesv, which the reference reaches through numpy.linalg.solve).
std::array<double, 4> solve4(std::array<std::array<double, 4>, 4> m, std::array<double, 4> rhs) {
  for (int col = 0; col < 4; ++col) {
    int piv = col;
    for (int r = col + 1; r < 4; ++r)
      if (std::fabs(m[r][col]) > std::fabs(m[piv][col])) piv = r;
    std::swap(m[col], m[piv]);
    std::swap(rhs[col], rhs[piv]);
    for (int r = col + 1; r < 4; ++r) {
      const double f = m[r][col] / m[col][col];
      for (int c = col; c < 4; ++c)
        m[r][c] -= f * m[col][c];
      rhs[r] -= f * rhs[col];
    }
  }
  std::array<double, 4> z{};
  for (int r = 3; r >= 0; --r) {
    double s = rhs[r];
    for (int c = r + 1; c < 4; ++c)
      s -= m[r][c] * z[c];
    z[r] = s / m[r][r];
  }
  return z;
}

OddQuintic optimal_cubic(double l, double u) {
  const double alpha = std::sqrt(3.0 / (u * u + l * u + l * l));
  const double alpha3 = alpha * alpha * alpha;
  const double beta = 4.0 / (2.0 + l * u * (l + u) * alpha3);
  return {1.5 * alpha * beta, -0.5 * alpha3 * beta, 0.0};
}

OddQuintic optimal_quintic(double l, double u) {
  // Near-degenerate interval: the classical quintic rescaled to u ([V] threshold 5e-6).
  if (l / u >= 1.0 - 5e-6)
    return {(15.0 / 8.0) / u, (-10.0 / 8.0) / (u * u * u), (3.0 / 8.0) / (u * u * u * u * u)};
  double q = (3.0 * l + u) / 4.0;
  double r = (l + 3.0 * u) / 4.0;
  double a = 0, b = 0, c = 0;
  double e = std::numeric_limits<double>::infinity();
  double e_old = 0.0;
  // Converges in a handful of rounds; the cap only guards against a non-terminating loop.
  for (int round = 0; round < 100; ++round) {
    e_old = e;
    std::array<std::array<double, 4>, 4> m{};
    const std::array<double, 4> xs{l, q, r, u};
    for (int i = 0; i < 4; ++i) {
      const double x = xs[i], x3 = x * x * x;
      m[i] = {x, x3, x3 * x * x, (i % 2 == 0) ? 1.0 : -1.0};
    }
    const auto z = solve4(m, {1.0, 1.0, 1.0, 1.0});
    a = z[0];
    b = z[1];
    c = z[2];
    e = z[3];
    const double disc = std::sqrt(9.0 * b * b - 20.0 * a * c);
    q = std::sqrt((-3.0 * b - disc) / (10.0 * c));
    r = std::sqrt((-3.0 * b + disc) / (10.0 * c));
    if (std::fabs(e_old - e) <= 1e-15) break;
  }
  return {a, b, c};
}

}  // namespace

OddQuintic optimal_odd_polynomial(double l, double u, int degree) {
  return degree == 3 ? optimal_cubic(l, u) : optimal_quintic(l, u);
}

namespace {
/// The greedy composition of polar_express_coefficients() for checked parameters, into `out`
/// (moved in last).
Status build_table(const PolarExpressParams& p, std::vector<OddQuintic>& out) {
  std::vector<OddQuintic> table;
  table.reserve(static_cast<std::size_t>(p.steps));
  double l = p.lower, u = 1.0;
  const double sf = 1.0 + p.safety_eps;
  for (int t = 0; t < p.steps; ++t) {
    const bool cushioned = p.cushion > 0.0 && p.cushion * u > l;
    OddQuintic poly = optimal_odd_polynomial(cushioned ? p.cushion * u : l, u, p.degree);
    if (cushioned) {
      // Optimised for [cushion·u, u]: rescale so that the midpoint of p([l, u]) is 1.
      const double k = 2.0 / (poly(l) + poly(u));
      poly = {poly.a * k, poly.b * k, poly.c * k};
    }
    if (t < p.steps - 1 && sf != 1.0) {
      // p(x) ← p(x / sf): margin for singular values slightly above the assumed bound u.
      poly = {poly.a / sf, poly.b / (sf * sf * sf), poly.c / (sf * sf * sf * sf * sf)};
    }
    table.push_back(poly);
    l = poly(l);
    u = 2.0 - l;
    l = std::min(l, u);  // the safety factor can over-contract once converged
  }
  out = std::move(table);
  return Status::ok;
}
}  // namespace

Status polar_express_coefficients(const PolarExpressParams& p, std::vector<OddQuintic>& out) {
  const bool ok = std::isfinite(p.lower) && p.lower > 0.0 && p.lower <= 1.0 && p.steps >= 1 &&
                  p.steps <= kPolarMaxIterations && std::isfinite(p.safety_eps) && p.safety_eps >= 0.0 &&
                  std::isfinite(p.cushion) && p.cushion >= 0.0 && p.cushion < 1.0 &&
                  (p.degree == 3 || p.degree == 5);
  if (!ok) return Status::invalid_argument;
  // The table is built aside and moved in: an exhausted heap is out_of_memory with `out`
  // untouched, never an exception out of a function that returns a status.
  return schatten::detail::status_guard([&] { return build_table(p, out); });
}

}  // namespace schatten
