#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Runs one libFuzzer target for a bounded time and judges what it found (CTest: fuzz.<target>).

    run_fuzz.py EXECUTABLE SEED_CORPUS SECONDS WORKDIR

The target runs in libFuzzer's fork mode, so that it keeps fuzzing after a crash: new inputs go
to WORKDIR/corpus (the committed seeds are only read), every crash, leak, timeout (10 s per
input) or out-of-memory input to WORKDIR/artifacts. Each artifact is then run again alone and
its sanitizer report classified:

  * HDF5's: the failing access (the first stack frame outside the sanitizer runtime and libc)
    is inside libhdf5, and so is the allocation of the memory involved when the report names
    one. Debian's HDF5 1.10.8 is not instrumented and has known memory errors on corrupt files
    (docs/reliability.md, Findings); these are listed, not failed.
  * unreproduced: the input does not fail when run alone. Our code keeps no state between
    inputs, so such a failure comes from state an earlier input of the same fork-mode job left
    behind — in practice HDF5's heap corruptions surfacing one input later. Listed, not failed.
  * ours: anything else, e.g. a frame of our code on top, or HDF5 overflowing a buffer that we
    allocated (what passing a too small buffer to H5Aread looks like). The test fails.

Reproduce an artifact with: EXECUTABLE WORKDIR/artifacts/<file>
"""
import os
import re
import shutil
import subprocess
import sys

RUNTIME = re.compile(r"__interceptor_|__asan|__sanitizer|__ubsan|__lsan|libc\.so|ld-linux|"
                     r"compiler-rt|fuzzer::|__libc_|\bmalloc\b|\bcalloc\b|\brealloc\b|"
                     r"\bfree\b|operator new|operator delete|\babort\b|\braise\b|pthread_kill|"
                     # ASan's interceptors of libc string/memory functions live in the target
                     # binary itself ("#0 … in strdup (fuzz_checkpoint+0x…)"): the caller decides.
                     r" in (strdup|strndup|strlen|strnlen|strcpy|strncpy|strcat|strncat|strcmp|"
                     r"strncmp|strcasecmp|strncasecmp|strchr|strrchr|strstr|strspn|strcspn|strpbrk|"
                     r"strtok|memcpy|memmove|memset|memcmp|memchr|memrchr|bcmp|__strdup) \(|"
                     # glibc's own string routines (symbolised with their source, not libc.so)
                     r"sysdeps/|__(memcpy|memmove|memset|strlen|strcpy|memcmp)_")


# A frame in our code names one of our source files with its line ("…/src/io/checkpoint.cpp:123")
# or, unsymbolised, one of our functions ("in schatten::io::…"). A bare path is not enough: the
# fuzz executable itself lives under the checkout, which CI clones into a folder named src
# ("(…/src/build-asan/tests/fuzz/fuzz_checkpoint+0x9a482)" in libFuzzer's own frames).
OUR_SOURCE = re.compile(r"/(src|include|backends)/\S*\.(c|cc|cpp|h|hpp):\d+| in schatten::")


def first_frame(lines):
    """The first stack frame of `lines` outside the runtime, or ''."""
    for line in lines:
        if re.match(r"\s+#\d+ ", line) and not RUNTIME.search(line):
            return line.strip()
    return ""


def classify(report):
    lines = report.splitlines()
    start = next((i for i, l in enumerate(lines) if "ERROR:" in l or "ALARM:" in l or
                  "runtime error:" in l), None)
    if start is None:
        return "unreproduced", "no failure when run alone (state left by an earlier input)"
    rest = lines[start:]
    if any("libFuzzer: out-of-memory" in l for l in rest) and not any(
            OUR_SOURCE.search(l) for l in rest if re.match(r"\s+#\d+ ", l)):
        # An RSS limit hit: libFuzzer prints its own largest live allocation, not the culprit.
        # Our readers check every size read from a file before allocating (docs/reliability.md);
        # HDF5 allocates sizes it reads from the file. Unattributable: listed, not failed.
        return "unreproduced", "RSS limit without a frame of our code (HDF5 allocates file-given sizes)"
    top = first_frame(rest)
    alloc_at = next((i for i, l in enumerate(rest) if "allocated by thread" in l), None)
    alloc = first_frame(rest[alloc_at:]) if alloc_at is not None else ""
    in_stack = any("is located in stack of thread" in l for l in rest)
    hdf5 = "libhdf5" in top and not in_stack and (alloc_at is None or "libhdf5" in alloc)
    return ("hdf5" if hdf5 else "ours"), (top + (" | allocated at " + alloc if alloc else ""))


def main():
    exe, seeds, seconds, work = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ)
    # Leaks inside HDF5 on corrupt files are HDF5's (lsan.supp says why); every other leak fails.
    env["LSAN_OPTIONS"] = ":".join(filter(None, ["suppressions=" + os.path.join(here, "lsan.supp"),
                                                  env.get("LSAN_OPTIONS")]))
    # HDF5 allocates sizes read from the file (a corrupt checkpoint made it ask for 141 GB at
    # once) and treats a failed malloc as an error, as it would without ASan: a malloc too large
    # returns NULL instead of aborting, and libFuzzer's single-malloc limit is set above such
    # requests. Our own allocations use operator new, which ASan still reports when it fails.
    env["ASAN_OPTIONS"] = ":".join(filter(None, [env.get("ASAN_OPTIONS"), "allocator_may_return_null=1"]))
    shutil.rmtree(work, ignore_errors=True)
    corpus, artifacts = os.path.join(work, "corpus"), os.path.join(work, "artifacts")
    os.makedirs(corpus)
    os.makedirs(artifacts)
    # The targets' scratch files (TMPDIR) go under WORKDIR too: libFuzzer ends each process with
    # _Exit at its time limit, before the destructors that would remove them, and they used to
    # pile up in /tmp (about 30 a run). The next run's rmtree above removes them.
    env["TMPDIR"] = os.path.join(work, "tmp")
    os.makedirs(env["TMPDIR"])
    run = subprocess.run([exe, "-fork=1", "-ignore_crashes=1", "-ignore_timeouts=1", "-ignore_ooms=1",
                          "-max_total_time=%d" % seconds, "-timeout=10", "-rss_limit_mb=2048",
                          "-malloc_limit_mb=1048576", "-print_final_stats=1",
                          "-artifact_prefix=" + artifacts + "/", corpus, seeds],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         errors="replace")
    tail = run.stdout.splitlines()[-15:]
    print("\n".join(tail))
    found = sorted(os.listdir(artifacts))
    ours, theirs, unreproduced = [], [], []
    for name in found:
        path = os.path.join(artifacts, name)
        try:
            rerun = subprocess.run([exe, "-timeout=10", "-rss_limit_mb=2048", "-malloc_limit_mb=1048576",
                                    path], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, errors="replace", timeout=120)
            report = rerun.stdout
        except subprocess.TimeoutExpired as e:
            report = "ALARM: rerun timed out\n" + (e.stdout or "")
        kind, where = classify(report)
        {"hdf5": theirs, "unreproduced": unreproduced}.get(kind, ours).append((name, where, report))
    print("fuzz: %s: %d new corpus inputs, %d artifacts: %d in HDF5 and %d unreproduced (listed, not "
          "failed), %d ours" % (os.path.basename(exe), len(os.listdir(corpus)), len(found), len(theirs),
                                len(unreproduced), len(ours)))
    for name, where, _ in theirs:
        print("  HDF5:  %s  at %s" % (name, where))
    for name, where, _ in unreproduced:
        print("  UNREPRODUCED:  %s  (%s)" % (name, where))
    for name, where, report in ours:
        print("  OURS:  %s  at %s\n%s" % (name, where, report[-6000:]))
    if run.returncode != 0 and not found:
        print("fuzz: libFuzzer exited with %d and left no artifact" % run.returncode)
        return 1
    return 1 if ours else 0


if __name__ == "__main__":
    sys.exit(main())
