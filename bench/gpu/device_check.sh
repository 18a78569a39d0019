#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# One GPU session's checks, run from the repository root on a machine with an NVIDIA GPU, over
# a CUDA build of schatten whose executables were copied to $BIN (default .gpu/bin; built
# elsewhere against a CUDA Kokkos 4.x, see README "GPU build"). Writes logs and CSVs to $OUT.
#   1. the test executables and examples (correctness of the CUDA build)
#   2. the polar report on the GPU (768-wide shapes, every method, float and double)
#   3. Newton–Schulz / Polar Express at 4096² and 8192² against the cuBLAS floor
#   4. the PyTorch reference at the same shapes (bench/gpu/torch_reference.py)
set -uo pipefail
BIN=${BIN:-.gpu/bin}
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
lib_dir() { dirname "$(find /usr/local /usr/lib /opt -name "$1" 2>/dev/null | head -1)"; }
export LD_LIBRARY_PATH="$BIN:$(lib_dir libcublas.so.13):$(lib_dir libcudart.so.13):${LD_LIBRARY_PATH:-}"
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  git log -1 --format='commit %H' 2>/dev/null || true
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
} 2>&1 | tee "$OUT/device.txt"

for t in test_core test_surrogate test_kernels; do
  echo "== $t" | tee -a "$OUT/tests.log"
  timeout 240 "$BIN/$t" 2>&1 | tail -n 40 | tee -a "$OUT/tests.log"
  echo "rc=$?" | tee -a "$OUT/tests.log"
done
for e in example_orthogonalize example_spectral_descent; do
  echo "== $e" | tee -a "$OUT/tests.log"
  timeout 60 "$BIN/$e" 2>&1 | tee -a "$OUT/tests.log"
done

timeout 150 "$BIN/schatten-polar-report" --out "$OUT/report" --quick --reps 5 2>&1 | tee "$OUT/report.log"
timeout 150 "$BIN/schatten-polar-report" --out "$OUT/big" --shape 4096x4096 --shape 8192x8192 \
  --method newton_schulz_kj5 --method polar_express_deployed_5 --reps 5 2>&1 | tee "$OUT/big.log"
timeout 200 python3 bench/gpu/torch_reference.py --shapes 4096x4096,8192x8192 --out "$OUT/torch.csv" \
  2>&1 | tail -n 30 | tee "$OUT/torch.log"
