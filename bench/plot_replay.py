#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Turns a schatten-replay output (docs/replay-format.md, "Replay output") into PNG figures.

usage: /usr/bin/python3 bench/plot_replay.py REPLAY.h5 [--out DIR]

Writes into DIR (default: the directory of REPLAY.h5), with STEM the file name without .h5:
  STEM_update_norm.png          ||u_t||_F per parameter (one panel each), one line per optimizer
  STEM_param_norm.png           ||W_t||_F per parameter, one line per optimizer
  STEM_orthogonality_error.png  ||QQ^T - I||_F/sqrt(k) of the polar step, where defined
  STEM_schatten_p.png           the Schatten p each layer's rule used (schatten_muon), per step
  STEM_descent_cosine.png       cos(g_t, D_t) of the update D_t = -u_t with the recorded gradient
  STEM_alignment.png            <g_{t+1}, D_t>/<g_t, D_t>: the next gradient as a full-batch proxy
  STEM_potential.png            <g_t, D_t>^2/tr(D_t Sigma_t D_t^T), where act_gram is recorded
  STEM_loss.png                 the recorded training loss (what the gradients came from)
  STEM_qk_clip.png              runs with qk_clip (QK-clip, MuonClip): query heads clipped per
                                step, and the smallest clip factor eta per step
A figure is skipped when no run has a finite value in it (older outputs lack the last four), and
the QK-clip figure when no run clips.
The definitions are in docs/replay-format.md, "The descent diagnostics".
Needs numpy, h5py and matplotlib (Debian: python3-h5py python3-matplotlib).
"""
import argparse
import math
import os
import sys

import h5py
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


# (dataset, title, log scale) of each per-step figure.
FIGURES = [("update_norm", "update norm ||u_t||_F", True),
           ("param_norm", "parameter norm ||W_t||_F", True),
           ("orthogonality_error", "orthogonality error of the polar step", True),
           ("schatten_p", "Schatten p chosen per layer (schatten_muon)", False),
           ("descent_cosine", "descent cosine <g_t, D_t>/(|g_t| |D_t|)", False),
           ("alignment", "alignment <g_t+1, D_t>/<g_t, D_t> (next gradient as full-batch proxy)", False),
           ("potential", "descent potential <g_t, D_t>^2 / tr(D_t Sigma_t D_t^T)", True)]
KEYS = [k for k, _, _ in FIGURES]


def text(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def panels(names, title, runs, key, path, logy=True):
    """One panel per parameter that has a finite value in some run; returns False if none."""
    shown = [i for i, _ in enumerate(names) if any(np.isfinite(r[key][:, i]).any() for r in runs)]
    if not shown:
        return False
    cols = min(3, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, i in zip(axes.flat, shown):
        for r in runs:
            y = r[key][:, i]
            if np.isfinite(y).any():
                ax.plot(np.arange(len(y)), y, label="%s [%s]" % (r["spec"], r["labels"][i]))
        ax.set_title(names[i], fontsize=9)
        ax.set_xlabel("step")
        if logy:
            ax.set_yscale("log")
        else:  # ratios such as the alignment have rare huge values: show the 2-98 % range
            vals = np.concatenate([r[key][:, i][np.isfinite(r[key][:, i])] for r in runs])
            lo, hi = np.percentile(vals, [2, 98])
            if hi > lo:
                pad = 0.1 * (hi - lo)
                ax.set_ylim(lo - pad, hi + pad)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("replay", help="output HDF5 of schatten-replay")
    ap.add_argument("--out", help="directory for the PNGs (default: next to the input)")
    a = ap.parse_args()
    try:
        f = h5py.File(a.replay, "r")
    except OSError as e:
        sys.exit("plot_replay.py: cannot open %s: %s" % (a.replay, e))
    with f:
        if text(f.attrs.get("format", b"")) != "schatten-replay":
            sys.exit("plot_replay.py: %s is not a schatten-replay output (attribute 'format')" % a.replay)
        names = [text(n) for n in f["param_names"][:]]
        loss = f["loss"][:]
        runs = []
        for k in sorted(f["runs"], key=int):
            g = f["runs"][k]
            run = {"spec": text(g.attrs["spec"]), "labels": [text(s) for s in g["labels"][:]]}
            for key in KEYS:
                run[key] = g[key][:] if key in g else np.full((len(loss), len(names)), np.nan)
            run["qk_factor"] = g["qk_factor"][:] if "qk_factor" in g else None  # (T, heads)
            runs.append(run)
    out = a.out or os.path.dirname(os.path.abspath(a.replay))
    os.makedirs(out, exist_ok=True)
    stem = os.path.splitext(os.path.basename(a.replay))[0]
    written = []
    for key, title, logy in FIGURES:
        path = os.path.join(out, "%s_%s.png" % (stem, key))
        if panels(names, title, runs, key, path, logy):
            written.append(path)
    clipping = [r for r in runs if r["qk_factor"] is not None]
    if clipping:  # eta < 1 marks a clipped head (docs/replay-format.md, "QK-clip")
        fig, (ax_n, ax_eta) = plt.subplots(1, 2, figsize=(9, 3.2))
        for r in clipping:
            eta = r["qk_factor"]
            steps = np.arange(eta.shape[0])
            ax_n.plot(steps, (eta < 1.0).sum(axis=1), label=r["spec"])
            ax_eta.plot(steps, eta.min(axis=1), label=r["spec"])
        ax_n.set_title("query heads clipped (of %d)" % clipping[0]["qk_factor"].shape[1], fontsize=9)
        ax_eta.set_title("smallest clip factor eta", fontsize=9)
        for ax in (ax_n, ax_eta):
            ax.set_xlabel("step")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7)
        fig.suptitle("QK-clip after each step (recorded max logits)")
        fig.tight_layout()
        path = os.path.join(out, "%s_qk_clip.png" % stem)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(np.arange(len(loss)), loss)
    ax.set_xlabel("step")
    ax.set_ylabel("recorded loss")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path = os.path.join(out, "%s_loss.png" % stem)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    for p in written:
        print(p)


if __name__ == "__main__":
    main()
