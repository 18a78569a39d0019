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
Dion: it asks whether the column normalisation is the cause). `--shape LxS`, `--rank k` and
`--power-iterations t` run one variant of their own instead (`custom`: defaults 16x16, k = 8,
t = 2), e.g. the device twin test's shapes (test_optim_device.cpp's `dev_dion`: 12 x 20 and
20 x 6 parameters, rank fraction 0.5, one power iteration, three steps):

    python3 bench/dion_sensitivity.py --shape 20x12 --rank 6 --power-iterations 1 --steps 3 --seeds 300
    python3 bench/dion_sensitivity.py --shape 20x6 --rank 3 --power-iterations 1 --steps 3 --seeds 300

(a wide parameter's step is the transposed one's, so L >= S).

`--basis` runs the second experiment: two trajectories from Q_0 and from Q_0 changed by 1e-9,
either within its span (Q_0 (I + 1e-9 A)) or out of it, and the differences after n steps in
U, in span(Q) (projectors) and in Q, each over 1e-9. The step is not a function of span(Q)
alone: the unpivoted QR takes P's basis from Q's column order, and the column normalisation
of R = B^T P depends on that basis.

    python3 bench/dion_sensitivity.py [--variant base|t1|k4|orthq|all] [--seeds 100]
                                       [--steps 6] [--basis]
                                       [--shape LxS] [--rank k] [--power-iterations t]

Needs numpy. Run on 2026-12-06 (numpy 2.4.6, about 0.1 s per trajectory): docs/reliability.md,
Finding 73.
"""
import argparse

import numpy as np

VARIANTS = {
    "base": dict(rows=16, cols=16, k=8, t=2, orth_q=False),
    "t1": dict(rows=16, cols=16, k=8, t=1, orth_q=False),
    "k4": dict(rows=16, cols=16, k=4, t=2, orth_q=False),
    "orthq": dict(rows=16, cols=16, k=8, t=2, orth_q=True),
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


def trajectory(seed, steps, rows, cols, k, t, orth_q):
    """(prod, rho) of one Gaussian trajectory of an L x S = rows x cols momentum."""
    rng = np.random.default_rng(seed)
    m = np.zeros((rows, cols))
    q = rng.standard_normal((cols, k))
    prod, rho = None, 0.0
    for _ in range(steps):
        g = rng.standard_normal((rows, cols))
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
    ap.add_argument("--shape", help="LxS momentum (L >= S) of a custom variant (default 16x16)")
    ap.add_argument("--rank", type=int, help="k of a custom variant (default 8)")
    ap.add_argument("--power-iterations", type=int, help="t of a custom variant (default 2)")
    a = ap.parse_args()
    if a.seeds < 1 or a.steps < 1:
        ap.error("--seeds and --steps must be at least 1")
    variants = VARIANTS
    names = list(VARIANTS) if a.variant == "all" else [a.variant]
    if a.shape is not None or a.rank is not None or a.power_iterations is not None:
        if a.variant != "base":
            ap.error("--shape, --rank and --power-iterations define their own variant: leave out --variant")
        try:
            rows, cols = (int(x) for x in (a.shape or "16x16").lower().split("x"))
        except ValueError:
            ap.error(f"--shape wants LxS, two positive integers, not {a.shape!r}")
        k = 8 if a.rank is None else a.rank
        t = 2 if a.power_iterations is None else a.power_iterations
        if not (rows >= cols >= 1):
            ap.error("--shape LxS needs L >= S >= 1 (a wide parameter's step is its transpose's)")
        if not (1 <= k <= cols):
            ap.error(f"--rank must be in [1, S] = [1, {cols}]")
        if t < 1:
            ap.error("--power-iterations must be at least 1")
        variants = {"custom": dict(rows=rows, cols=cols, k=k, t=t, orth_q=False)}
        names = ["custom"]
    for name in names:
        v = variants[name]
        res = np.array([trajectory(s, a.steps, v["rows"], v["cols"], v["k"], v["t"], v["orth_q"])
                        for s in range(a.seeds)])
        print(f"{name} ({v['rows']} x {v['cols']}, k = {v['k']}, t = {v['t']}{', Q orthonormalised' if v['orth_q'] else ''}), "
              f"{a.seeds} trajectories of {a.steps} steps:")
        print(f"  prod {spread(res[:, 0])}")
        print(f"  rho  {spread(res[:, 1])}")
    if a.basis:
        basis_experiment(a.seeds, a.steps)


if __name__ == "__main__":
    main()
