// SPDX-License-Identifier: Apache-2.0
/// \file
/// The Polar Express coefficient generator: a greedy composition of minimax-optimal odd
/// polynomials (Amsel, Persson, Musco, Gower, "The Polar Express: Optimal Matrix Sign Methods
/// and Their Application to the Muon Algorithm", arXiv:2505.16932; algorithms.md §2.1–2.2).
#pragma once

#include <vector>

#include "schatten/core/status.hpp"
#include "schatten/kernels/coefficients.hpp"

namespace schatten {

/// Parameters of optimal_composition() in the reference code. Defaults are the reference's
/// library default [V]; the modded-nanogpt table uses steps = 5, safety_eps = 2e-2.
struct PolarExpressParams {
  double lower = 1e-3;       ///< l: assumed lower bound of σ/σ_max after normalisation, in (0, 1]
  int steps = 10;            ///< number of polynomials T, 1 ≤ T ≤ kPolarMaxIterations = 1000
  double safety_eps = 1e-2;  ///< sf = 1 + safety_eps divides x in every polynomial but the last
  double cushion = 0.02;     ///< optimise on [max(l, cushion·u), u] and re-centre (0 = off)
  int degree = 5;            ///< 5 (quintic, Remez) or 3 (cubic, closed form)
};

/// Minimax odd polynomial of the given degree approximating 1 on [l, u], 0 < l ≤ u.
///
/// Degree 5: simplified Remez exchange on 4 alternation points l < q < r < u; each round solves
/// the 4×4 system p(x_i) + s_i E = 1 (s = +1, −1, +1, −1) by LU with partial pivoting and moves
/// q, r to the interior critical points x² = (−3b ∓ √(9b² − 20ac)) / (10c); it stops when E
/// changes by at most 1e-15. When l/u ≥ 1 − 5e-6 the classical (15/8, −10/8, 3/8) scaled to u is
/// returned (the exchange is ill-conditioned there). Degree 3: closed form
/// α = √(3/(u² + lu + l²)), β = 4/(2 + lu(l+u)α³), p(x) = (3/2)αβ x − (1/2)α³β x³.
/// Cost: a few dozen 4×4 solves. Deterministic.
OddQuintic optimal_odd_polynomial(double l, double u, int degree = 5);

/// Greedy composition (algorithms.md §2.2): for t = 1..T, optimise on [max(l, cushion·u), u],
/// re-centre so that p(l) and p(u) straddle 1 symmetrically when the cushion was active, divide
/// x by sf = 1 + safety_eps in all but the last polynomial, then l ← p(l), u ← 2 − l,
/// l ← min(l, u).
///
/// Reproduces the published tables to better than 1e-12 (tests/kernels/test_coefficients.cpp):
/// the 10-row reference default and the 5-row modded-nanogpt table.
/// Returns Status::invalid_argument (and leaves `out` untouched) for parameters outside their
/// documented ranges, out_of_memory (`out` untouched, no exception) when an allocation fails.
Status polar_express_coefficients(const PolarExpressParams& params, std::vector<OddQuintic>& out);

}  // namespace schatten
