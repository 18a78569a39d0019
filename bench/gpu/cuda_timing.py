# SPDX-License-Identifier: Apache-2.0
"""Timing and CSV output shared by the PyTorch baselines in bench/gpu (torch_reference.py,
torch_muon_step.py), so that both time the same way: the median of `reps` calls after `warmup`
calls, each call bracketed by CUDA events (wall clock on the CPU), with an optional untimed
`setup` before every call."""
import csv
import statistics
import time

import torch


def median_ms(fn, reps, warmup=3, setup=None, device=None):
    """Median time of fn() in milliseconds; setup() (untimed) runs before every call."""
    cuda = device is None or torch.device(device).type == "cuda"
    for _ in range(warmup):
        if setup:
            setup()
        fn()
    out = []
    for _ in range(reps):
        if setup:
            setup()
        if cuda:
            torch.cuda.synchronize()
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record()
            fn()
            e1.record()
            torch.cuda.synchronize()
            out.append(e0.elapsed_time(e1))
        else:
            t0 = time.perf_counter()
            fn()
            out.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(out)


def write_csv(path, rows):
    """rows: a list of dicts with the same keys, written with a header line."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {path}")
