#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""The PyTorch baseline for issue #7's optimizer target: one full Muon step over the GPT-2-small
parameter set, written as the per-matrix loop of Keller Jordan's reference Muon, to compare with
`schatten-bench-optim --benchmark_filter=optim/muon_step/gpt2_small/device` (the device-resident
partition; `/device/bf16` iterates in bfloat16 like the "bf16" variant below) on the same device.

usage: torch_muon_step.py [--out FILE.csv] [--reps N] [--warmup W] [--device cuda|cpu]

The parameter set is bench/gpt2_small.hpp's: 124.4 M parameters, 148 tensors. Muon takes the 48
hidden matrices: c_attn (2304 x 768), c_proj (768 x 768), c_fc (3072 x 768) and mlp.c_proj
(768 x 3072) of the 12 blocks. AdamW takes the rest: the embeddings, the biases and the norms.
This is the routing of propose_labels(). Per Muon matrix, in a Python loop, as in the reference:

  buf <- 0.95 buf + 0.05 g;  u <- 0.95 buf + 0.05 g         (Nesterov, lerp form)
  u <- zeropower_via_newtonschulz5(u, 5 steps)               (Keller's quintic, Frobenius
                                                               normalisation + 1e-7, wide side)
  p <- (1 - lr wd) p - lr max(1, rows/cols)^0.5 u

The rest uses one torch.optim.AdamW(foreach=True) step. Step times are taken with CUDA events
(or perf_counter on the CPU), as the median of N steps after W warm-ups (default 3). Each step's gradients
are drawn before its timer starts. Two variants are timed: "bf16", where Newton-Schulz runs in
bfloat16 as the reference does, and "fp32", where it runs in float32 with TF32 off, which is
schatten's default Muon precision. Needs only torch.
"""
import argparse
import sys

import torch

from cuda_timing import median_ms, write_csv

KJ = (3.4445, -4.7750, 2.0315)


def gpt2_small():
    shapes = [("transformer.wte.weight", (50257, 768)), ("transformer.wpe.weight", (1024, 768))]
    for layer in range(12):
        h = f"transformer.h.{layer}."
        shapes += [(h + "ln_1.weight", (768,)), (h + "ln_1.bias", (768,)),
                   (h + "attn.c_attn.weight", (2304, 768)), (h + "attn.c_attn.bias", (2304,)),
                   (h + "attn.c_proj.weight", (768, 768)), (h + "attn.c_proj.bias", (768,)),
                   (h + "ln_2.weight", (768,)), (h + "ln_2.bias", (768,)),
                   (h + "mlp.c_fc.weight", (3072, 768)), (h + "mlp.c_fc.bias", (3072,)),
                   (h + "mlp.c_proj.weight", (768, 3072)), (h + "mlp.c_proj.bias", (768,))]
    shapes += [("transformer.ln_f.weight", (768,)), ("transformer.ln_f.bias", (768,))]
    return shapes


def takes_muon(name, shape):
    """propose_labels(): 2-D hidden weights go to Muon; embeddings, biases and norms to AdamW."""
    return len(shape) == 2 and ".h." in name


def newton_schulz5(g, dtype):
    x = g.to(dtype)
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.mT
    x = x / (x.norm() + 1e-7)
    a, b, c = KJ
    for _ in range(5):
        s = x @ x.mT
        t = b * s + c * (s @ s)
        x = a * x + t @ x
    return x.mT if tall else x


class Step:
    def __init__(self, device, dtype, lr=0.02, momentum=0.95, weight_decay=0.0):
        gen = torch.Generator(device=device).manual_seed(1)
        self.muon, self.rest = [], []
        for name, shape in gpt2_small():
            p = (0.02 * torch.randn(shape, device=device, generator=gen)).requires_grad_(False)
            (self.muon if takes_muon(name, shape) else self.rest).append(p)
        self.bufs = [torch.zeros_like(p) for p in self.muon]
        self.grads_muon = [torch.zeros_like(p) for p in self.muon]
        self.grads_rest = [torch.zeros_like(p) for p in self.rest]
        for p, g in zip(self.rest, self.grads_rest):
            p.grad = g
        self.adamw = torch.optim.AdamW(self.rest, lr=3e-4, weight_decay=0.0, foreach=True)
        self.gen = gen
        self.dtype, self.lr, self.momentum, self.wd = dtype, lr, momentum, weight_decay

    def fill_gradients(self):
        for g in self.grads_muon + self.grads_rest:
            g.normal_(0.0, 1e-3, generator=self.gen)

    def __call__(self):
        for p, g, buf in zip(self.muon, self.grads_muon, self.bufs):
            buf.lerp_(g, 1 - self.momentum)
            u = g.lerp(buf, self.momentum)
            u = newton_schulz5(u, self.dtype)
            scale = max(1.0, p.size(0) / p.size(1)) ** 0.5
            p.mul_(1 - self.lr * self.wd)
            p.add_(u.to(p.dtype), alpha=-self.lr * scale)
        self.adamw.step()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="torch_muon_step.csv")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"device {name}, torch {torch.__version__}", flush=True)
    rows = []
    with torch.no_grad():
        for label, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
            step = Step(device, dtype)
            ms = median_ms(step, args.reps, args.warmup, setup=step.fill_gradients, device=device)
            rows.append({"variant": label, "muon_matrices": len(step.muon), "adamw_tensors": len(step.rest),
                         "step_ms": ms})
            print(rows[-1], flush=True)
            del step
    write_csv(args.out, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
