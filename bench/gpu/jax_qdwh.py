#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""JAX's QDWH polar decomposition on a matrix of prescribed condition number, for comparison
with schatten's qdwh() on the same input (issue #7 target: 4096^2, double, kappa = 1e8).

usage: jax_qdwh.py --n 4096 --kappa 1e8 --out A.bin [--reps 3]

Builds A = Q1 diag(sigma) Q2^T in float64 on the GPU (sigma geometric from 1 to 1/kappa, Q1, Q2
from QR of Gaussian matrices, fixed seed), writes A row-major as raw little-endian doubles to
--out (for `schatten-qdwh-file A.bin n n`), then times jax.scipy.linalg.polar(A, method="qdwh")
under jit (median of --reps calls after one warm-up, block_until_ready) and prints its
orthogonality |U U^T - I|_F / sqrt(n), the measure schatten-qdwh-file prints.
"""
import argparse
import statistics
import time

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.scipy.linalg import polar  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--kappa", type=float, default=1e8)
    ap.add_argument("--out", default="A.bin")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    n = args.n
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    q1, _ = jnp.linalg.qr(jax.random.normal(k1, (n, n), dtype=jnp.float64))
    q2, _ = jnp.linalg.qr(jax.random.normal(k2, (n, n), dtype=jnp.float64))
    sigma = jnp.asarray(args.kappa ** (-np.arange(n) / (n - 1)), dtype=jnp.float64)
    a = (q1 * sigma) @ q2.T
    np.asarray(a).astype("<f8").tofile(args.out)
    f = jax.jit(lambda x: polar(x, method="qdwh")[0])
    u = f(a).block_until_ready()
    times = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        u = f(a).block_until_ready()
        times.append(time.perf_counter() - t0)
    orth = float(jnp.linalg.norm(u @ u.T - jnp.eye(n)) / np.sqrt(n))
    print(f"jax {jax.__version__} qdwh double {n}x{n} kappa {args.kappa:g}: median "
          f"{statistics.median(times) * 1e3:.3f} ms of {args.reps} (min {min(times) * 1e3:.3f}), "
          f"orth |UU^T-I|_F/sqrt(n) {orth:.3e}; device {jax.devices()[0].device_kind}", flush=True)


if __name__ == "__main__":
    main()
