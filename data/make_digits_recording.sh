#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Regenerates data/replay/digits_mlp.h5, the sample recording of schatten-replay: 16 steps of
# the 64-256-256-10 digits MLP (docs/examples/record_digits.cpp) trained with Muon + AdamW. Run from the
# repository root after a build with tests (which builds the example):
#   cmake -S . -B build -DSCHATTEN_BUILD_TESTS=ON && cmake --build build -j2 && sh data/make_digits_recording.sh
set -eu
build="${1:-build}"
mkdir -p data/replay
"$build/tests/example_record_digits" data/digits.csv data/replay/digits_mlp.h5 16
