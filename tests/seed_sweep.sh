#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Runs the doctest executables of a build over a range of seeds and lists every check that failed
# for some seed, with the seeds (docs/reliability.md "Seed sweeps"). Every random input of the
# suite derives from the seed (tests/main.cpp), so a bound that holds only for the default seed
# shows up here; CI runs the default seed alone.
#
#   tests/seed_sweep.sh BUILD_DIR FIRST LAST [EXECUTABLE...]
#
# EXECUTABLE defaults to test_core test_kernels test_optim test_io test_surrogate (the Release
# build of .ci/test has no test_optim: configure it without SCHATTEN_SKIP_TEST_SUITES). test_mpi, when
# named, runs under mpiexec once per rank count in SCHATTEN_SWEEP_RANKS (default "1 2 4", as
# CTest). About 40 s per seed for the five in a Release build on one core of the development
# machine, and 10 s for test_mpi's three runs; run two ranges at once on two cores. Logs stay in
# the directory printed at the end. Exit status: 0 when every run passed.
set -uo pipefail
if [ $# -lt 3 ]; then
  sed -n '3,15p' "$0" >&2
  exit 2
fi
build=$(cd "$1" && pwd) || exit 2
first=$2
last=$3
shift 3
exes=("$@")
[ ${#exes[@]} -gt 0 ] || exes=(test_core test_kernels test_optim test_io test_surrogate)
logs=$(mktemp -d "${TMPDIR:-/tmp}/schatten-seed-sweep.XXXXXX")
failed_runs=0
# OpenMPI refuses to run as root (containers) unless told, and needs leave to oversubscribe.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
# run NAME SEED COMMAND...: one run, logged as NAME_SEED.log, in the tests' working directory
# (ctest's: doctest_discover_tests runs in the executable's folder).
run() {
  local name=$1 seed=$2 rc
  shift 2
  (cd "$build/tests" && SCHATTEN_SEED=$seed "$@" > "$logs/${name}_$seed.log" 2>&1)
  rc=$?
  if [ $rc -ne 0 ]; then
    failed_runs=$((failed_runs + 1))
    echo "seed $seed: $name failed (rc $rc)"
  fi
}
# In a sanitizer build, OpenMPI's own allocations kept until exit are not leaks of ours: test_mpi
# runs with the ASan options of ctest's distributed.mpi tests, read from the build's test file so
# that tests/CMakeLists.txt stays their one source, unless the caller set ASAN_OPTIONS. A build
# without sanitizers has none there.
mpi_asan=()
if [ -n "${ASAN_OPTIONS:-}" ]; then
  mpi_asan=("ASAN_OPTIONS=$ASAN_OPTIONS")
else
  options=$(grep -o 'ASAN_OPTIONS=[^;"]*' "$build/tests/CTestTestfile.cmake" 2> /dev/null | head -n 1)
  [ -z "$options" ] || mpi_asan=("$options")
fi
for seed in $(seq "$first" "$last"); do
  for exe in "${exes[@]}"; do
    if [ "$exe" = test_mpi ]; then
      # mpiexec hands doctest a terminal: no colour codes in the logs.
      for np in ${SCHATTEN_SWEEP_RANKS:-1 2 4}; do
        run "test_mpi.np$np" "$seed" env "${mpi_asan[@]}" mpiexec -n "$np" ./test_mpi --no-colors=true
      done
    else
      run "$exe" "$seed" "./$exe"
    fi
  done
done
echo "== checks that failed, with how often and for which seeds (logs: $logs)"
for log in "$logs"/*.log; do
  seed=${log##*_}
  seed=${seed%.log}
  grep -h "ERROR: " "$log" | sed 's/ is NOT correct!.*//; s/^[^ ]*\/tests\//tests\//' | sort -u |
    sed "s/\$/	$seed/"
done | sort | awk -F'\t' '{n[$1]++; s[$1] = s[$1] " " $2} END {for (k in n) printf "%4d  %s\n      seeds:%s\n", n[k], k, s[k]}'
echo "== $failed_runs failed runs"
[ "$failed_runs" -eq 0 ]
