#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""PyTorch reference timings for the GPU polar targets (issue #7), measured on the same device as
schatten-polar-report so the two can be compared side by side.

usage: torch_reference.py [--shapes 4096x4096,8192x8192] [--out FILE.csv] [--reps N]

For each shape and dtype (bf16, fp32) it times, with CUDA events (median of N calls after 3
warm-ups):
  ns5_eager / ns5_compiled   Keller Jordan's Newton-Schulz quintic (3.4445, -4.7750, 2.0315),
                             5 steps, Frobenius normalisation + 1e-7, transposed to the wide side
                             (the algorithm of zeropower_via_newtonschulz5, written out here),
                             eager and under torch.compile
  pe5_eager                  the same loop with the deployed 5-row Polar Express table (x1.02)
  gemm_floor                 the three matmuls of one step (X X^T, A A, B X) timed on their own,
                             times 5: the GEMM floor at the cuBLAS rate of this dtype
Needs only torch (installed on the device machines).
"""
import argparse
import sys

import torch

from cuda_timing import median_ms, write_csv

KJ = (3.4445, -4.7750, 2.0315)
PE5 = [(8.156554524902461, -22.48329292557795, 15.878769915207462),
       (4.042929935166739, -2.808917465908714, 0.5000178451051316),
       (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
       (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
       (2.3465413258596377, -1.7097828382687081, 0.42323551169305323)]


def iterate(g, rows, safety, eps, dtype):
    x = g.to(dtype)
    tall = x.size(-2) > x.size(-1)
    if tall:
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) * safety + eps)
    for a, b, c in rows:
        s = x @ x.mT
        t = b * s + c * (s @ s)
        x = a * x + t @ x
    return x.mT if tall else x


def ns5(g, dtype):
    return iterate(g, [KJ] * 5, 1.0, 1e-7, dtype)


def pe5(g, dtype):
    return iterate(g, PE5, 1.02, 1e-6, dtype)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="768x768,768x3072,4096x4096,8192x8192")
    ap.add_argument("--out", default="torch_reference.csv")
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()
    dev = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 (schatten's float GEMMs)
    rows = []
    print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    for shape in args.shapes.split(","):
        r, c = (int(v) for v in shape.split("x"))
        gen = torch.Generator(device=dev).manual_seed(0)
        g = torch.randn(r, c, device=dev, generator=gen) / c ** 0.5
        k, m = min(r, c), max(r, c)
        for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
            x = torch.randn(k, m, device=dev, dtype=dtype)
            s = torch.randn(k, k, device=dev, dtype=dtype)
            step = median_ms(lambda: (x @ x.mT, s @ s, s @ x), args.reps)
            res = {"shape": shape, "dtype": name, "gemm_floor_ms": 5 * step}
            res["ns5_eager_ms"] = median_ms(lambda: ns5(g, dtype), args.reps)
            res["pe5_eager_ms"] = median_ms(lambda: pe5(g, dtype), args.reps)
            compiled = torch.compile(lambda t: ns5(t, dtype))
            res["ns5_compiled_ms"] = median_ms(lambda: compiled(g), args.reps)
            flops = 5 * (4.0 * k * k * m + 2.0 * k ** 3)
            res["ns5_compiled_tflops"] = flops / res["ns5_compiled_ms"] / 1e9
            print(res, flush=True)
            rows.append(res)
    write_csv(args.out, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
