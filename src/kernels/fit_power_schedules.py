#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Fits the Newton–Schulz schedules of polynomial_power_schedule() and writes
src/kernels/power_schedule_table.inc (docs/kernels/spectral_power.md, "Polynomial method").

For T odd quintics p_t(x) = x (a_t + b_t x² + c_t x⁴), the composite f = p_{T-1} ∘ … ∘ p_0 is fitted
to x^α on [LOWER, 1] in the minimax sense of the log error

    E(α) = max_x |log f(x) − α log x|,

for α = 0, 0.01, …, 1 (α = 1 is the identity). Method, per T:
  1. two continuation sweeps: downwards from α = 1 (identity rows) and upwards from the downward
     sweep's α = 0 fit; at each α the previous α's rows start
  2. a Levenberg–Marquardt least-squares fit of log f(x) − α log x on GRID log-spaced points,
     reweighted ten times towards the largest residuals (a Lawson-type approach to the minimax),
     then
  3. an SLSQP polish of the epigraph form (minimise t subject to |log f − α log x| ≤ t),
     every fit kept only if its rows are admissible: |coefficients| ≤ MAX_COEF and every
     intermediate image ≤ MAX_IMAGE on [0, 1] (penalised in step 2, constrained in step 3);
  4. of the two sweeps' fits the smaller E is kept.
No separate output scale is fitted: the last row's coefficients carry it (an earlier version
fitted one and folded it into the last row afterwards, which let the fit drift to tiny
intermediate images and last rows with coefficients of 1e9).
The problem is non-convex; the fits are good local minima, not certified global ones. The C++
side measures E again for the rows it uses (tests/kernels/test_spectral_power.cpp checks the
documented bands). Needs numpy and scipy (Debian: python3-numpy, python3-scipy); not run by the
build. Runtime: 10–30 minutes per T on one core (the tables run in parallel).

Usage: python3 src/kernels/fit_power_schedules.py [--out src/kernels/power_schedule_table.inc]
"""
import argparse
import multiprocessing
import warnings

import numpy as np
from scipy.optimize import least_squares, minimize

LOWER = 1e-3
GRID = 1000
ALPHA_STEP = 0.01
STEPS = (5, 6, 8)
# Numerical safety of the rows in float (and bf16 on GPUs): every coefficient |a|, |b|, |c| ≤
# MAX_COEF (Polar Express's first rows reach 22, Keller's 4.8), and every intermediate image
# p_t ∘ … ∘ p_0(x) ≤ MAX_IMAGE for x ∈ [0, 1] (unconstrained fits reached 1e8 and 500).
MAX_COEF = 30.0
MAX_IMAGE = 3.0
PENALTY = 100.0

warnings.filterwarnings("ignore", category=RuntimeWarning)
X = np.logspace(np.log10(LOWER), 0.0, GRID)
LOGX = np.log(X)
X_ALL = np.concatenate([np.linspace(0.0, 1.0, 201), X[::10]])  # where the images are bounded


def composite(rows, x, steps):
    y = x.copy()
    for t in range(steps):
        a, b, c = rows[3 * t:3 * t + 3]
        y2 = y * y
        y = y * (a + y2 * (b + y2 * c))
    return y


def images(rows, steps):
    """All intermediate images p_t ∘ … ∘ p_0(x), t < steps, on X_ALL."""
    y, out = X_ALL.copy(), []
    for t in range(steps):
        a, b, c = rows[3 * t:3 * t + 3]
        y2 = y * y
        y = y * (a + y2 * (b + y2 * c))
        out.append(y)
    return np.concatenate(out)


def violation(rows, steps):
    """Positive parts of the safety constraints (0 when the rows are admissible)."""
    return np.concatenate([np.maximum(np.abs(rows) - MAX_COEF, 0.0),
                           np.maximum(np.abs(images(rows, steps)) - MAX_IMAGE, 0.0)])


def admissible(rows, steps):
    return bool(np.all(np.isfinite(rows)) and violation(rows, steps).max() <= 1e-9)


def log_residual(rows, alpha, steps):
    f = composite(rows, X, steps)
    return np.log(np.where(f > 1e-300, f, 1e-300)) - alpha * LOGX


def band(rows, alpha, steps):
    """E = max |log f(x) − α log x| on the grid (the rows carry their own output scale)."""
    return np.abs(log_residual(rows, alpha, steps)).max()


def fit(alpha, steps, start):
    weights = np.ones(GRID)
    z = start.copy()
    best = (band(start, alpha, steps), start.copy())
    for _ in range(10):
        def res(q):
            return weights * log_residual(q, alpha, steps)

        def penalised(q):
            return np.concatenate([res(q), PENALTY * violation(q, steps)])
        z = least_squares(penalised, z, method="lm", max_nfev=3000).x
        e = band(z, alpha, steps)
        if e < best[0] and admissible(z, steps):
            best = (e, z.copy())
        r = np.abs(res(z)) / weights
        weights = weights * (1.0 + 2.0 * r / r.max())
        weights /= weights.mean()
    z0 = np.append(best[1], best[0])  # rows, t

    def gap(z):
        return log_residual(z[:-1], alpha, steps)
    cons = {"type": "ineq", "fun": lambda z: np.concatenate(
        [z[-1] - gap(z), z[-1] + gap(z), MAX_IMAGE - np.abs(images(z[:-1], steps))])}
    bounds = [(-MAX_COEF, MAX_COEF)] * (3 * steps) + [(None, None)]
    s = minimize(lambda z: z[-1], z0, constraints=[cons], bounds=bounds, method="SLSQP",
                 options={"maxiter": 300, "ftol": 1e-12})
    if admissible(s.x[:-1], steps):
        e2 = band(s.x[:-1], alpha, steps)
        if e2 < best[0]:
            best = (e2, s.x[:-1].copy())
    return best


def table(steps, log):
    alphas = np.round(np.arange(0.0, 1.0 + ALPHA_STEP / 2, ALPHA_STEP), 10)
    n = len(alphas)
    down = [None] * n
    rows = np.tile([1.0, 0.0, 0.0], steps)
    down[n - 1] = (0.0, rows.copy())
    for i in range(n - 2, -1, -1):
        down[i] = fit(alphas[i], steps, down[i + 1][1])
    up = [None] * n
    up[0] = down[0]
    for i in range(1, n - 1):
        up[i] = fit(alphas[i], steps, up[i - 1][1])
    up[n - 1] = down[n - 1]
    out = []
    for i, alpha in enumerate(alphas):
        e, rows = min(down[i], up[i], key=lambda t: t[0])
        out.append((alpha, e, rows.copy()))
        log(f"T={steps} alpha={alpha:.2f} E={e:.4f} (down {down[i][0]:.4f}, up {up[i][0]:.4f})")
    return out


def table_quiet(steps):
    return table(steps, lambda s: print(s, flush=True))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="src/kernels/power_schedule_table.inc")
    ap.add_argument("--jobs", type=int, default=len(STEPS), help="processes (one table each)")
    args = ap.parse_args()
    lines = [
        "// SPDX-License-Identifier: Apache-2.0",
        "// Generated by src/kernels/fit_power_schedules.py: do not edit. Rows (a, b, c) of the odd",
        f"// quintics whose composite approximates x^alpha on [{LOWER:g}, 1], for alpha = 0, {ALPHA_STEP:g}, ..., 1;",
        "// the comment of each entry gives the fitted max |log f(x) - alpha log x| on the fit grid.",
    ]
    with multiprocessing.Pool(args.jobs) as pool:  # one table per process
        tables = pool.map(table_quiet, STEPS)
    for steps, entries in zip(STEPS, tables):
        lines.append(f"constexpr double kPowerRows{steps}[{len(entries)}][{3 * steps}] = {{")
        for alpha, e, rows in entries:
            vals = ", ".join(f"{v:.17g}" for v in rows)
            lines.append(f"    {{{vals}}},  // alpha {alpha:.2f}: E {e:.4f}")
        lines.append("};")
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
