#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""What AOL pre-scaling does to Keller's Newton-Schulz, in float64 numpy (an independent model of
Normalization::Kind::aol; docs/kernels/polar.md, "AOL pre-scaling").

For each input it prints, for Frobenius, Schatten-4 and AOL scaling and 4 or 5 Keller steps:
the scaled input's largest and smallest singular values, the orthogonality error
||QQ^T - I||_F/sqrt(k), the distance to the polar factor of the input ||Q - UV^T||_F/sqrt(k), and
"shift" = ||polar(DA) - polar(A)||_F/sqrt(k), the part of that distance that no number of steps
removes (AOL iterates towards polar(DA), D its row scaling).

Inputs: k x k matrices with Haar singular vectors and a power-law (1/sqrt(i+1)), flat or
geometric (1 .. 1e-3) spectrum, and the power law with its rows scaled geometrically 1 .. 1e-2
(unequal row norms, as in gradients). All are full rank, so polar(A) is unique. (Recorded
momenta are rank-deficient, where polar(A) is not unique; docs/benchmarks/cpu-replay.md measures
AOL on them through schatten-replay's orthogonality error instead.)

    python3 bench/aol_spectra.py [--k 768] [--seed 1]

Needs numpy. Run on 2026-11-29 (numpy 2.4.6, 8 s):
docs/benchmarks/cpu-polar.md, "AOL pre-scaling".
"""
import argparse

import numpy as np

KELLER = (3.4445, -4.7750, 2.0315)


def haar(rng, n):
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def keller(x, steps):
    a, b, c = KELLER
    for _ in range(steps):
        g = x @ x.T
        x = a * x + (b * g + c * g @ g) @ x
    return x


def polar(m):
    u, _, vt = np.linalg.svd(m, full_matrices=False)
    return u @ vt


def scalings(m):
    """(label, scaled input) for the three normalisations (short-fat m: rows are the short side)."""
    g = m @ m.T
    r = np.abs(g).sum(axis=1)
    d = np.divide(1.0, np.sqrt(r), out=np.zeros_like(r), where=r > 0)  # a zero row keeps factor 0
    return [("frobenius", m / np.linalg.norm(m)), ("schatten4", m / np.sqrt(np.linalg.norm(g))),
            ("aol", d[:, None] * m)]


def report(name, m):
    if m.shape[0] > m.shape[1]:
        m = m.T
    k = m.shape[0]
    exact = polar(m)
    for label, x in scalings(m):
        s = np.linalg.svd(x, compute_uv=False)
        shift = np.linalg.norm(polar(x) - exact) / np.sqrt(k)
        for steps in (4, 5):
            q = keller(x, steps)
            orth = np.linalg.norm(q @ q.T - np.eye(k)) / np.sqrt(k)
            dist = np.linalg.norm(q - exact) / np.sqrt(k)
            print("| %s | %s | %d | %.3f | %.2e | %.4f | %.4f | %.4f |" % (name, label, steps, s[0], s[-1], orth,
                                                                       dist, shift))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--k", type=int, default=768)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    k = a.k
    print("k = %d, seed %d" % (k, a.seed))
    print("| input | scaling | steps | σ_max | σ_min | orth | to polar(A) | shift |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    power = 1.0 / np.sqrt(np.arange(k) + 1.0)
    for name, sigma in [("power law", power), ("flat", np.ones(k)), ("geometric 1e-3", np.geomspace(1, 1e-3, k))]:
        report(name, haar(rng, k) @ np.diag(sigma) @ haar(rng, k).T)
    report("power law, rows 1..1e-2", np.diag(np.geomspace(1, 1e-2, k)) @ haar(rng, k) @ np.diag(power) @
           haar(rng, k).T)


if __name__ == "__main__":
    main()
