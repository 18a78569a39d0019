#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# One GPU session's checks for issue #7, run from the repository root on a machine with an NVIDIA
# GPU. It uses a CUDA build of schatten whose executables were copied to $BIN (default
# .gpu/bin), or packed into $KIT (default .gpu/kit.tar.xz, unpacked into $BIN when present).
# That build was made elsewhere against a CUDA Kokkos 4.x, see README "GPU build" and
# bench/gpu/pack_kit.sh. Logs and CSVs go to $OUT: eight files at most, since no more come back
# from a device run (device.txt, tests.log, polar.log, optim.log, more.log, big/polar_report.csv,
# torch.csv, torch_muon_step.csv).
#
#   bench/gpu/device_check.sh [STAGE...]
#
#   lease  (the default) what fits one device call of a 15-minute lease, most wanted first:
#          the polar report and the PyTorch reference (issue #7's speed targets), test_kernels,
#          the optimizer steps against PyTorch, the other tests and examples, then gemm, clip
#          and qdwh, as long as DEADLINE_S allows
#   tests  the test executables and the examples: correctness of the CUDA build, including the
#          cuBLAS SYRK and the strided-batched GEMM, which have not run yet
#   polar  Newton–Schulz and Polar Express at 4096² and 8192², in fp32 and bf16, against the
#          cuBLAS floor (schatten-polar-report), then the PyTorch reference (eager and
#          torch.compile) at the same shapes
#   optim  the GPT-2-small Muon step, the batched/unbatched experts, Dion2's device step
#          batched and unbatched and Dion's at rank fraction 0.25, M in fp32 and in bf16
#          (schatten-bench-optim), the PyTorch per-matrix Muon loop (torch_muon_step.py), and
#          SYRK against GEMM at 768-wide shapes (schatten-bench-polar)
#   gemm   the 16-bit cuBLAS GEMM alone and the portable kernel's device form, which HIP runs
#          and CUDA never does, at 1024³ to 8192³ (schatten-bench-polar gemm/ and portable/)
#   clip   spectral_clip at 768² and 768 × 3072: QDWH against the polynomial method in fp32
#          and bf16, which have not run on a GPU (schatten-bench-polar)
#   qdwh   QDWH in double at 4096², κ = 1e8, against jax.scipy.linalg.polar on the same matrix
#          (jax_qdwh.py writes it; schatten-qdwh-file reads it), with the cuSOLVER Cholesky
#          that has not run yet; skipped when JAX is missing
#   all    tests polar optim gemm clip qdwh, in that order
#
# Time: every command has its own timeout, so a hang costs one command. DEADLINE_S (default
# 480) bounds the whole run: no command starts after it, and each one's timeout is cut to what
# is left, so a device call with timeout_s = DEADLINE_S + 60 comes back with whatever was
# measured. A command left out for time says so in its log and in the summary printed last. No
# stage has been timed on a GPU as a whole yet: the timeouts are guesses with margin (the H200
# session of 2026-11-27 ran the tests and the report at 4096² and 8192² within them).
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

DEADLINE_S=${DEADLINE_S:-480}
SUMMARY=()
run() {  # run LOG TIMEOUT COMMAND...: one command, its output and exit status appended to LOG
  local log=$1 limit=$2
  shift 2
  local left=$((DEADLINE_S - SECONDS))
  if [ "$left" -lt 20 ]; then  # too little left to start it
    echo "== $* skipped: ${left} s left of DEADLINE_S=${DEADLINE_S}" >> "$log"
    SUMMARY+=("skipped      $(basename "$log") $*")
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $* (timeout ${limit}s)" >> "$log"
  local t0=$SECONDS rc
  timeout "$limit" "$@" >> "$log" 2>&1
  rc=$?
  echo "rc=$rc after $((SECONDS - t0)) s" >> "$log"
  SUMMARY+=("$(printf 'rc=%-3s %4d s' "$rc" $((SECONDS - t0))) $(basename "$log") $*")
}

test_kernels() { run "$OUT/tests.log" 150 "$BIN/test_kernels" --duration=true; }
tests_rest() {
  local log="$OUT/tests.log"
  for t in test_core test_surrogate test_optim; do
    run "$log" 150 "$BIN/$t" --duration=true
  done
  for e in example_orthogonalize example_spectral_descent example_device_step; do
    run "$log" 60 "$BIN/$e"
  done
}
stage_tests() {
  test_kernels
  tests_rest
}

stage_polar() {
  local log="$OUT/polar.log"
  run "$log" 180 "$BIN/schatten-polar-report" --out "$OUT/big" --shape 4096x4096 --shape 8192x8192 \
    --method newton_schulz_kj5 --method polar_express_deployed_5 --lowp bf16 --reps 5
  run "$log" 200 python3 bench/gpu/torch_reference.py --shapes 4096x4096,8192x8192 --out "$OUT/torch.csv"
}

stage_gemm() {
  run "$OUT/more.log" 120 "$BIN/schatten-bench-polar" '--benchmark_filter=^(gemm/(bf16|fp16)|portable)/'
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
  local log="$OUT/more.log"
  run "$log" 120 "$BIN/schatten-bench-polar" '--benchmark_filter=spectral_clip.*/float/'
}

stage_qdwh() {
  local log="$OUT/more.log"
  if ! python3 -c 'import jax' 2>/dev/null; then
    echo "jax is not installed: QDWH comparison skipped" >> "$log"
    SUMMARY+=("skipped      more.log qdwh: jax is not installed")
    return
  fi
  run "$log" 120 python3 bench/gpu/jax_qdwh.py --n 4096 --kappa 1e8 --out /tmp/a4096.bin --reps 3
  run "$log" 120 "$BIN/schatten-qdwh-file" /tmp/a4096.bin 4096 4096 --reps 3
}

[ $# -eq 0 ] && set -- lease
for s in "$@"; do
  case "$s" in
    lease) stage_polar; test_kernels; stage_optim; tests_rest; stage_gemm; stage_clip; stage_qdwh ;;
    tests) stage_tests ;;
    polar) stage_polar ;;
    optim) stage_optim ;;
    gemm) stage_gemm ;;
    qdwh) stage_qdwh ;;
    clip) stage_clip ;;
    all) stage_tests; stage_polar; stage_optim; stage_gemm; stage_clip; stage_qdwh ;;
    *) echo "unknown stage $s" >&2; exit 2 ;;
  esac
done
# Last, since a device call's reply carries only the end of the output: what ran, how long, and
# the polar report's rows and the PyTorch reference's.
echo "== summary: ${SECONDS} s of DEADLINE_S=${DEADLINE_S}"
printf '%s\n' "${SUMMARY[@]}"
[ -f "$OUT/big/polar_report.csv" ] && cat "$OUT/big/polar_report.csv"
[ -f "$OUT/torch.csv" ] && cat "$OUT/torch.csv"
[ -f "$OUT/torch_muon_step.csv" ] && cat "$OUT/torch_muon_step.csv"
grep -E "^== |test cases:" "$OUT/tests.log" 2>/dev/null
exit 0
