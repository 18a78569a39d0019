#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Replays optax.contrib.muon with schatten-replay and compares the trajectories.

The peer is optax's own code (JAX on the CPU, float32): `optax.contrib.muon` with its
`preconditioning` ('frobenius', 'schatten', 'aol') and `adaptive` options, fed a fixed sequence
of gradients. The same gradients are written as a schatten recording (docs/replay-format.md,
schema 1) and replayed with the matching `muon` keys:

    muon:lr=LR,wd=WD,bias_correction=1,polar=keller,normalization=N[,dual_norm=1]

(optax's Nesterov momentum is bias-corrected, algorithms.md §1.1; `adaptive` multiplies the
orthogonalised update by <N, O>, schatten's PolarOptions::dual_norm_scale.) The optimizer is
open-loop in the gradients, so no model is needed: gradients are a low-rank signal plus noise,
fixed by --seed. optax holds a matrix in its (in, out) layout, schatten in torch's (out, in):
optax is given the transposes, so that its width scale sqrt(max(1, fan_out/fan_in)) is
schatten's Keller scale sqrt(max(1, rows/cols)).

Where the two differ by convention: for a *square* matrix AOL scales the rows of the matrix as
given, so optax (given W^T) scales W's columns and schatten W's rows; the AOL cases compare the
non-square matrices only and report the square one separately (docs/kernels/polar.md).

Needs jax, optax, h5py and numpy (PyPI; not used by the library or its tests). Run on
2026-11-29 with jax 0.10.2, optax 0.2.8, h5py 3.16.0 (docs/benchmarks/cpu-replay.md, "optax's
Muon"):

    python bench/compare_optax.py --replay build/schatten-replay

Exit status 1 when a case is beyond its tolerance or a control is not far off.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import h5py
import numpy as np

SHAPES = {"blocks.0.attn.weight": (48, 80), "blocks.0.mlp.weight": (96, 40), "blocks.1.proj.weight": (64, 64)}


def gradients(steps, seed):
    """Per step and matrix: a rank-4 signal that drifts slowly plus Gaussian noise (float32)."""
    rng = np.random.default_rng(seed)
    out = []
    bases = {n: (rng.standard_normal((r, 4)), rng.standard_normal((c, 4))) for n, (r, c) in SHAPES.items()}
    for _ in range(steps):
        step = {}
        for n, (r, c) in SHAPES.items():
            u, v = bases[n]
            u += 0.1 * rng.standard_normal(u.shape)
            g = u @ np.diag([3.0, 1.5, 0.7, 0.3]) @ v.T / np.sqrt(c) + 0.05 * rng.standard_normal((r, c))
            step[n] = g.astype(np.float32)
        out.append(step)
    return out


def write_recording(path, initial, grads):
    """A schema-1 recording: gradients (S, rows, cols) and the initial values, float32."""
    with h5py.File(path, "w-") as f:
        f.attrs["format"] = "schatten-recording"
        f.attrs["schema_version"] = np.int32(1)
        f.attrs["completed_steps"] = np.int64(len(grads))
        f.attrs["num_params"] = np.int64(len(SHAPES))
        f.attrs["model"] = "bench/compare_optax.py: synthetic gradients (rank-4 signal + noise)"
        f.attrs["producer"] = "bench/compare_optax.py, h5py %s" % h5py.__version__
        f.create_dataset("loss", data=np.zeros(len(grads)))
        for i, name in enumerate(SHAPES):
            g = f.create_group("params/%d" % i)
            g.attrs["name"] = name
            g.attrs["shape"] = np.array(SHAPES[name], dtype=np.int64)
            g.attrs["dtype"] = "float32"
            g.create_dataset("grad", data=np.stack([s[name] for s in grads]))
            g.create_dataset("initial", data=initial[name])


def run_optax(initial, grads, lr, wd, preconditioning, adaptive):
    """W_1 … W_T per matrix (torch layout), from optax.contrib.muon on the transposes."""
    import jax.numpy as jnp
    import optax

    opt = optax.contrib.muon(learning_rate=lr, beta=0.95, eps=1e-8, weight_decay=wd, nesterov=True,
                             adaptive=adaptive, preconditioning=preconditioning)
    params = {n: jnp.asarray(w.T) for n, w in initial.items()}
    state = opt.init(params)
    traj = {n: [] for n in SHAPES}
    for step in grads:
        g = {n: jnp.asarray(step[n].T) for n in SHAPES}
        updates, state = opt.update(g, state, params)
        params = optax.apply_updates(params, updates)
        for n in SHAPES:
            traj[n].append(np.asarray(params[n]).T)
    return {n: np.stack(v) for n, v in traj.items()}


def run_replay(binary, rec, spec, out):
    cmd = [binary, rec, "--optimizer", spec, "--out", out, "--quiet", "--save-params"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit("compare_optax.py: %s failed (%d): %s" % (" ".join(cmd), r.returncode, r.stderr))
    with h5py.File(out, "r") as f:
        return {n: f["runs/0/params/%d" % i][1:] for i, n in enumerate(SHAPES)}  # W_1 … W_T


def rel_diff(mine, theirs, names):
    """max over the named matrices and steps of max|diff| / max|param|."""
    worst = 0.0
    for n in names:
        d = np.abs(mine[n].astype(np.float64) - theirs[n])
        worst = max(worst, float(d.max() / np.abs(theirs[n]).max()))
    return worst


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--replay", default="build/schatten-replay")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--wd", type=float, default=0.01)
    ap.add_argument("--tol", type=float, default=2e-5,
                    help="max |diff|/max|param| over steps (float32 Newton-Schulz in two BLAS; as "
                         "compare_torch_replay.py's muon_fp32)")
    a = ap.parse_args()
    print("seed %d, %d steps, lr %g, wd %g" % (a.seed, a.steps, a.lr, a.wd))
    rng = np.random.default_rng(a.seed + 1)
    initial = {n: (0.1 * rng.standard_normal(s)).astype(np.float32) for n, s in SHAPES.items()}
    grads = gradients(a.steps, a.seed)
    non_square = [n for n, (r, c) in SHAPES.items() if r != c]
    square = [n for n, (r, c) in SHAPES.items() if r == c]
    # (label, optax preconditioning, adaptive, schatten keys, compared matrices)
    cases = [
        ("frobenius", "frobenius", False, "normalization=frobenius", list(SHAPES)),
        ("frobenius adaptive", "frobenius", True, "normalization=frobenius,dual_norm=1", list(SHAPES)),
        ("schatten-4", "schatten", False, "normalization=schatten4", list(SHAPES)),
        ("schatten-4 adaptive", "schatten", True, "normalization=schatten4,dual_norm=1", list(SHAPES)),
        ("aol", "aol", False, "normalization=aol", non_square),
        ("aol adaptive", "aol", True, "normalization=aol,dual_norm=1", non_square),
    ]
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        rec = os.path.join(tmp, "grads.h5")
        write_recording(rec, initial, grads)
        base = "muon:lr=%r,wd=%r,bias_correction=1,polar=keller," % (a.lr, a.wd)
        optax_runs = {}
        print("%-22s %14s" % ("case", "max rel diff"))
        for k, (label, prec, adaptive, keys, names) in enumerate(cases):
            theirs = run_optax(initial, grads, a.lr, a.wd, prec, adaptive)
            optax_runs[label] = theirs
            mine = run_replay(a.replay, rec, base + keys, os.path.join(tmp, "out%d.h5" % k))
            d = rel_diff(mine, theirs, names)
            ok = d <= a.tol
            failed |= not ok
            print("%-22s %14.3e  %s" % (label, d, "ok" if ok else "BEYOND %.0e" % a.tol))
            if prec == "aol" and not adaptive:
                print("%-22s %14.3e  (square matrix: rows vs optax's columns, by convention)" %
                      ("  aol square", rel_diff(mine, theirs, square)))
        # Controls: the rule each option adds must matter far beyond the tolerance.
        controls = [
            ("no bias correction", "frobenius adaptive", "muon:lr=%r,wd=%r,polar=keller,dual_norm=1" % (a.lr, a.wd),
             list(SHAPES)),
            ("no dual norm", "frobenius adaptive", base + "normalization=frobenius", list(SHAPES)),
            ("frobenius for aol", "aol", base + "normalization=frobenius", non_square),
            ("frobenius for schatten", "schatten-4", base + "normalization=frobenius", list(SHAPES)),
        ]
        for k, (label, against, spec, names) in enumerate(controls):
            d = rel_diff(run_replay(a.replay, rec, spec, os.path.join(tmp, "c%d.h5" % k)), optax_runs[against], names)
            ok = d > 100 * a.tol
            failed |= not ok
            print("control %-14s %14.3e  %s" % (label, d, "far off, as it must be" if ok else "TOO CLOSE"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
