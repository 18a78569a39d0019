#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Regenerates data/digits.csv from Debian's python3-sklearn package (the UCI "Optical Recognition
# of Handwritten Digits" test set as shipped by scikit-learn: 1797 images of 8 x 8 pixels with
# values 0..16, and their labels 0..9). Output: one image per line, "label,p0,...,p63" (row-major
# pixels), integers only. Needs apt-get (downloads the .deb; installs nothing) and python3.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download python3-sklearn >/dev/null)
dpkg-deb -x "$work"/python3-sklearn_*.deb "$work/x"
src="$(find "$work/x" -name digits.csv.gz | head -n 1)"
python3 - "$src" "$here/digits.csv" <<'PY'
import gzip, sys
src, dst = sys.argv[1], sys.argv[2]
rows = []
with gzip.open(src, "rt") as f:
    for line in f:
        v = [int(float(x)) for x in line.strip().split(",") if x]
        if len(v) != 65:
            raise SystemExit(f"unexpected row of {len(v)} values")
        rows.append([v[64]] + v[:64])
with open(dst, "w") as f:
    f.write("# UCI optical digits (test set) via scikit-learn 1.2.1 (Debian python3-sklearn); label,64 pixels 0..16\n")
    for r in rows:
        f.write(",".join(map(str, r)) + "\n")
print(f"wrote {len(rows)} images to {dst}")
PY
