#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Plot a schatten-polar-report CSV: distance to the exact polar factor against time.

usage: plot_polar_report.py REPORT.csv [OUT.png]

One panel per precision; each point is one (method, shape) case, coloured by method and marked
by shape; the dashed grey markers show the error that exact arithmetic predicts for the same
schedule (the kernels should sit on them). Needs only matplotlib (Debian: python3-matplotlib).
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    src = sys.argv[1]
    out = sys.argv[2] if len(sys.argv) > 2 else src.rsplit(".", 1)[0] + ".png"
    rows, footer = [], ""
    with open(src, newline="") as f:
        for line in f:
            if line.startswith("#"):
                footer = line[1:].strip()
        f.seek(0)
        rows = [r for r in csv.DictReader(line for line in f if not line.startswith("#"))]
    if not rows:
        print(f"{src}: no rows")
        return 1
    precisions = sorted({r["precision"] for r in rows}, key=lambda p: p != "float")
    methods = sorted({r["method"] for r in rows})
    shapes = sorted({r["shape"] for r in rows}, key=lambda s: [int(x) for x in s.split("x")])
    ncol = 10 if len(methods) <= 10 else 20  # distinct colours for up to 20 methods
    colours = plt.get_cmap("tab10" if ncol == 10 else "tab20")
    markers = "osD^v<>Ph*X"
    fig, axes = plt.subplots(1, len(precisions), figsize=(7 * len(precisions), 5.5), squeeze=False)
    for ax, prec in zip(axes[0], precisions):
        for r in rows:
            if r["precision"] != prec:
                continue
            c = colours(methods.index(r["method"]) % ncol)
            m = markers[shapes.index(r["shape"]) % len(markers)]
            t = float(r["time_ms"])
            ax.scatter(t, float(r["polar_rms"]), color=c, marker=m, s=46, zorder=3)
            pred = float(r["pred_rms"])
            if pred > 0:  # 0 for QDWH, which converges to U V^T: nothing to predict
                ax.scatter(t, pred, facecolors="none", edgecolors="grey", marker=m, s=90,
                           linestyle="--", zorder=2)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("time per call (ms)")
        ax.set_ylabel("RMS distance to U V^T  (|Q - UV^T|_F / sqrt(k))")
        ax.set_title(f"polar methods, {prec}")
        ax.grid(True, which="both", alpha=0.3)
        handles = [plt.Line2D([], [], color=colours(i % ncol), marker="o", linestyle="", label=m)
                   for i, m in enumerate(methods)]
        handles += [plt.Line2D([], [], color="black", marker=markers[i % len(markers)], linestyle="",
                               label=s) for i, s in enumerate(shapes)]
        handles.append(plt.Line2D([], [], color="grey", marker="o", markerfacecolor="none",
                                  linestyle="", label="predicted (exact arithmetic)"))
        ax.legend(handles=handles, fontsize=7, loc="best")
    fig.suptitle("schatten polar report" + (f" — {footer}" if footer else ""), fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
