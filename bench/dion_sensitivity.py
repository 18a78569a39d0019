#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""How much Dion's own recursion magnifies a small difference, in exact (float64) arithmetic: an
independent numpy model of DionDirection's step (kernels/low_rank.hpp) without the rounding
floor, which Gaussian inputs never reach (docs/reliability.md, Finding 73).

The state is (M, Q): M the L x S momentum (L >= S), Q the S x k right factor. One step on a
gradient G, as low_rank_step() computes it:

    B = M + G;  t times: P = orth(B Q), R = B^T P, Q = R   (thin QR, positive diagonal)
    M' = B - (1 - mu) P R^T;  Q' = R diag(1 / (||R_j|| + eps));  U = P Q'^T

For each trajectory (Gaussian Q_0 and gradients, M_0 = 0) it takes the Jacobian J_s of the map
(M, Q) -> (M', Q') at every step s (central differences), and reports
  * prod: the spectral norm of J_{n-1} ... J_0, the factor by which the worst difference in the
    starting state (a rounding of the first step, say) has grown after n steps;
  * rho: the largest over the steps of the spectral radius of the Q -> Q' block (a difference
    in Q alone that one step multiplies by rho, for that step's gradient).
Variants: `base` (16 x 16, k = 8, two power iterations: test_mpi_dion.cpp's "square"), `t1` (one
power iteration), `k4` (k = 4), `orthq` (Q' orthonormalised instead of column-normalised, not
Dion: it asks whether the column normalisation is the cause).

`--basis` runs the second experiment: two trajectories from Q_0 and from Q_0 changed by 1e-9,
either within its span (Q_0 (I + 1e-9 A)) or out of it, and the differences after n steps in
U, in span(Q) (projectors) and in Q, each over 1e-9. The step is not a function of span(Q)
alone: the unpivoted QR takes P's basis from Q's column order, and the column normalisation
of R = B^T P depends on that basis.

    python3 bench/dion_sensitivity.py [--variant base|t1|k4|orthq|all] [--seeds 100]
                                       [--steps 6] [--basis]

Needs numpy. Run on 2026-12-06 (numpy 2.4.6, about 0.1 s per trajectory): docs/reliability.md,
Finding 73.
"""
import argparse

import numpy as np

VARIANTS = {
    "base": dict(side=16, k=8, t=2, orth_q=False),
    "t1": dict(side=16, k=8, t=1, orth_q=False),
    "k4": dict(side=16, k=4, t=2, orth_q=False),
    "orthq": dict(side=16, k=8, t=2, orth_q=True),
}
MU, EPS = 0.95, 1e-8  # DionOptions' defaults (mu, eps)


def orth(z):
    """Thin QR's Q with a positive diagonal of R (the kernel's), over a stack of matrices."""
    q, r = np.linalg.qr(z)
    d = np.sign(np.diagonal(r, axis1=-2, axis2=-1))
    d[d == 0] = 1.0
    return q * d[..., None, :]


def step(m, q, g, t, orth_q=False):
    """One Dion step on stacks of states (m, q) and one gradient g: (M', Q', U)."""
    b = m + g
    for _ in range(t):
        p = orth(b @ q)
        r = np.swapaxes(b, -1, -2) @ p
        q = r
    m_next = b - (1.0 - MU) * p @ np.swapaxes(r, -1, -2)
    q_next = orth(r) if orth_q else r / (np.linalg.norm(r, axis=-2, keepdims=True) + EPS)
    return m_next, q_next, p @ np.swapaxes(q_next, -1, -2)


def jacobian(m, q, g, t, orth_q, h=1e-6):
    """d(M', Q')/d(M, Q) at (m, q), both flattened row-major, M first (central differences)."""
    ls, sk = m.size, q.size
    n = ls + sk
    x = np.repeat(np.concatenate([m.ravel(), q.ravel()])[None, :], 2 * n, axis=0)
    x[np.arange(n), np.arange(n)] += h
    x[n + np.arange(n), np.arange(n)] -= h
    mo, qo, _ = step(x[:, :ls].reshape(-1, *m.shape), x[:, ls:].reshape(-1, *q.shape), g, t, orth_q)
    y = np.concatenate([mo.reshape(2 * n, -1), qo.reshape(2 * n, -1)], axis=1)
    return ((y[:n] - y[n:]) / (2.0 * h)).T


def trajectory(seed, steps, side, k, t, orth_q):
    """(prod, rho) of one Gaussian trajectory."""
    rng = np.random.default_rng(seed)
    m = np.zeros((side, side))
    q = rng.standard_normal((side, k))
    prod, rho = None, 0.0
    for _ in range(steps):
        g = rng.standard_normal((side, side))
        j = jacobian(m, q, g, t, orth_q)
        prod = j if prod is None else j @ prod
        jq = j[m.size:, m.size:]
        rho = max(rho, float(np.max(np.abs(np.linalg.eigvals(jq)))))
        m, q, _ = step(m, q, g, t, orth_q)
    return float(np.linalg.norm(prod, 2)), rho


def spread(v):
    return f"median {np.median(v):.3g}, p90 {np.percentile(v, 90):.3g}, p99 {np.percentile(v, 99):.3g}, max {np.max(v):.3g}"


def basis_experiment(seeds, steps, side=16, k=8, t=2, delta=1e-9):
    for kind in ("within span", "out of span"):
        rows = []
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            q0 = rng.standard_normal((side, k))
            grads = [rng.standard_normal((side, side)) for _ in range(steps)]
            basis = orth(q0)
            complement = np.linalg.svd(np.eye(side) - basis @ basis.T)[0][:, :side - k]
            if kind == "within span":
                q1 = q0 @ (np.eye(k) + delta * rng.standard_normal((k, k)))
            else:
                q1 = q0 + delta * complement @ rng.standard_normal((side - k, k))
            ends = []
            for q in (q0, q1):
                m = np.zeros((side, side))
                for g in grads:
                    m, q, u = step(m, q, g, t)
                span = orth(q)
                ends.append((u, span @ span.T, q))
            (ua, pa, qa), (ub, pb, qb) = ends
            rows.append([np.abs(ua - ub).max(), np.abs(pa - pb).max(), np.abs(qa - qb).max()])
        r = np.array(rows) / delta
        print(f"Q_0 changed {kind}, after {steps} steps, difference / {delta:g}:")
        for i, what in enumerate(("U", "span(Q)", "Q")):
            print(f"  {what:8s} {spread(r[:, i])}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variant", default="base", choices=[*VARIANTS, "all"])
    ap.add_argument("--seeds", type=int, default=100, help="trajectories per variant (seeds 0..N-1)")
    ap.add_argument("--steps", type=int, default=6, help="steps per trajectory")
    ap.add_argument("--basis", action="store_true", help="also the within/out-of-span experiment")
    a = ap.parse_args()
    if a.seeds < 1 or a.steps < 1:
        ap.error("--seeds and --steps must be at least 1")
    for name in VARIANTS if a.variant == "all" else [a.variant]:
        v = VARIANTS[name]
        res = np.array([trajectory(s, a.steps, v["side"], v["k"], v["t"], v["orth_q"]) for s in range(a.seeds)])
        print(f"{name} ({v['side']} x {v['side']}, k = {v['k']}, t = {v['t']}{', Q orthonormalised' if v['orth_q'] else ''}), "
              f"{a.seeds} trajectories of {a.steps} steps:")
        print(f"  prod {spread(res[:, 0])}")
        print(f"  rho  {spread(res[:, 1])}")
    if a.basis:
        basis_experiment(a.seeds, a.steps)


if __name__ == "__main__":
    main()
