#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# One GPU session's checks for issue #7, run from the repository root on a machine with an NVIDIA
# GPU. It uses a CUDA build of schatten whose executables were copied to $BIN (default
# .gpu/bin), or packed into $KIT (default .gpu/kit.tar.xz, unpacked into $BIN when present).
# That build was made elsewhere against a CUDA Kokkos 4.x, see README "GPU build" and
# bench/gpu/pack_kit.sh. Logs and CSVs go to $OUT (at most 8 files come back from a device run,
# so each stage writes one log).
#
#   bench/gpu/device_check.sh STAGE...      STAGE: tests | polar | optim | qdwh | clip | all
#
#   tests  the test executables and the examples: correctness of the CUDA build, including the
#          cuBLAS SYRK and the strided-batched GEMM, which have not run yet          (~3 min)
#   polar  Newton–Schulz and Polar Express at 4096² and 8192², in fp32 and bf16, against the
#          cuBLAS floor (schatten-polar-report), then the PyTorch reference (eager and
#          torch.compile) at the same shapes; then the 16-bit cuBLAS GEMM alone and the
#          portable kernel's device form, which HIP runs and CUDA never does, at 1024³ to 8192³
#          (schatten-bench-polar gemm/ and portable/ cases)                           (~5 min)
#   optim  the GPT-2-small Muon step, the batched/unbatched experts, Dion2's device step
#          batched and unbatched and Dion's at rank fraction 0.25, M in fp32 and in bf16
#          (schatten-bench-optim), the
#          PyTorch per-matrix Muon loop
#          (torch_muon_step.py), and SYRK against GEMM at 768-wide shapes
#          (schatten-bench-polar)                                                     (~3 min)
#   qdwh   QDWH in double at 4096², κ = 1e8, against jax.scipy.linalg.polar on the same matrix
#          (jax_qdwh.py writes it; schatten-qdwh-file reads it), with the cuSOLVER Cholesky
#          that has not run yet; skipped when JAX is missing                          (~2 min)
#   clip   spectral_clip at 768² and 768 × 3072: QDWH against the polynomial method in fp32
#          and bf16, which have not run on a GPU (schatten-bench-polar)              (~1 min)
# Every command has its own timeout, so a hang costs one stage, not the session.
set -uo pipefail
BIN=${BIN:-.gpu/bin}
KIT=${KIT:-.gpu/kit.tar.xz}
OUT=${OUT:-gpu_out}
mkdir -p "$OUT" "$BIN"
[ -f "$KIT" ] && tar -xJf "$KIT" -C "$BIN"
export PYTHONUNBUFFERED=1
lib_dir() { dirname "$(find /usr/local /usr/lib /opt -name "$1" 2>/dev/null | head -1)"; }
export LD_LIBRARY_PATH="$BIN:${LD_LIBRARY_PATH:-}"
# The CUDA libraries the executables were linked against (cuBLAS, cuSOLVER and what they load:
# libcublasLt, libcusparse, libnvJitLink): wherever the image keeps them (the CUDA toolkit, or
# the nvidia-* wheels of its PyTorch under /opt).
for pass in 1 2; do
  for lib in $(ldd "$BIN/test_kernels" 2>/dev/null | awk '/not found/ {print $1}'); do
    d=$(lib_dir "$lib")
    [ "$d" != "." ] && LD_LIBRARY_PATH="$d:$LD_LIBRARY_PATH"
  done
done
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  git log -1 --format='commit %H' 2>/dev/null || true
  cat "$BIN/COMMIT" 2>/dev/null || true
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  ls "$BIN"
  echo "libraries still missing:"
  ldd "$BIN/test_kernels" | grep "not found" || echo "  none"
} > "$OUT/device.txt" 2>&1

run() {  # run LOG TIMEOUT COMMAND...: one command, its output and exit status appended to LOG
  local log=$1 limit=$2
  shift 2
  echo "== $* (timeout ${limit}s)" >> "$log"
  local t0=$SECONDS
  timeout "$limit" "$@" >> "$log" 2>&1
  echo "rc=$? after $((SECONDS - t0)) s" >> "$log"
}

stage_tests() {
  local log="$OUT/tests.log"
  for t in test_core test_surrogate test_kernels test_optim; do
    run "$log" 150 "$BIN/$t" --duration=true
  done
  for e in example_orthogonalize example_spectral_descent example_device_step; do
    run "$log" 60 "$BIN/$e"
  done
}

stage_polar() {
  local log="$OUT/polar.log"
  run "$log" 180 "$BIN/schatten-polar-report" --out "$OUT/big" --shape 4096x4096 --shape 8192x8192 \
    --method newton_schulz_kj5 --method polar_express_deployed_5 --lowp bf16 --reps 5
  run "$log" 200 python3 bench/gpu/torch_reference.py --shapes 4096x4096,8192x8192 --out "$OUT/torch.csv"
  run "$log" 120 "$BIN/schatten-bench-polar" '--benchmark_filter=^(gemm/(bf16|fp16)|portable)/'
}

stage_optim() {
  local log="$OUT/optim.log"
  run "$log" 150 "$BIN/schatten-bench-optim" --benchmark_repetitions=3 --benchmark_report_aggregates_only=true \
    '--benchmark_filter=optim/(muon_step/gpt2_small|muon_step_without_ns/gpt2_small/device|orthogonalize_only|muon_step/experts|dion2_step/gpt2_small/device|dion_step/gpt2_small/device)'
  run "$log" 90 python3 bench/gpu/torch_muon_step.py --out "$OUT/torch_muon_step.csv" --reps 10
  run "$log" 90 "$BIN/schatten-bench-polar" \
    '--benchmark_filter=polar/(newton_schulz_kj5|polar_express_deployed_5|gram_newton_schulz_pe5)(_gemm)?/float/'
}

stage_clip() {
  local log="$OUT/clip.log"
  run "$log" 120 "$BIN/schatten-bench-polar" '--benchmark_filter=spectral_clip.*/float/'
}

stage_qdwh() {
  local log="$OUT/qdwh.log"
  if ! python3 -c 'import jax' 2>/dev/null; then
    echo "jax is not installed: QDWH comparison skipped" >> "$log"
    return
  fi
  run "$log" 120 python3 bench/gpu/jax_qdwh.py --n 4096 --kappa 1e8 --out /tmp/a4096.bin --reps 3
  run "$log" 120 "$BIN/schatten-qdwh-file" /tmp/a4096.bin 4096 4096 --reps 3
}

[ $# -eq 0 ] && set -- all
for s in "$@"; do
  case "$s" in
    tests) stage_tests ;;
    polar) stage_polar ;;
    optim) stage_optim ;;
    qdwh) stage_qdwh ;;
    clip) stage_clip ;;
    all) stage_tests; stage_polar; stage_optim; stage_qdwh; stage_clip ;;
    *) echo "unknown stage $s" >&2; exit 2 ;;
  esac
done
tail -n 5 "$OUT"/*.log
