#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Packs the executables of a CUDA build of schatten (default .gpu/build-cuda, see README "GPU
# build") into one xz tarball (default .gpu/kit.tar.xz) for bench/gpu/device_check.sh. They are
# stripped, and the shared libraries they need that a CUDA machine may lack (Google Benchmark)
# go in beside them. The tarball travels to a device run with `carry: [".gpu/kit.tar.xz"]`.
# The working tree plus carried files may be 64 MiB at most, so the tarball's size is printed.
set -euo pipefail
BUILD=${1:-.gpu/build-cuda}
KIT=${2:-.gpu/kit.tar.xz}
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
for f in tests/test_core tests/test_surrogate tests/test_kernels tests/test_optim \
         tests/example_orthogonalize tests/example_spectral_descent tests/example_device_step \
         bench/schatten-polar-report bench/schatten-bench-polar bench/schatten-bench-optim \
         bench/schatten-qdwh-file; do
  src=$(find "$BUILD" -path "*/$f" -type f | head -1)
  [ -n "$src" ] || { echo "missing $f in $BUILD" >&2; exit 1; }
  cp "$src" "$stage/" && strip "$stage/$(basename "$f")"
done
for lib in libbenchmark.so.1debian; do
  path=$(ldd "$stage/schatten-bench-optim" | awk -v l="$lib" '$1 == l {print $3}')
  [ -n "$path" ] && cp -L "$path" "$stage/"
done
git log -1 --format='kit built from commit %H (%cd)' > "$stage/COMMIT"
mkdir -p "$(dirname "$KIT")"  # .gpu/ is not in a fresh clone when the build is elsewhere
tar -cJf "$KIT" -C "$stage" .
ls -l "$KIT"
