// SPDX-License-Identifier: Apache-2.0
/// \file
/// libFuzzer target: the command-line parsers of the bench tools (bench/cli.hpp). The input is
/// split at NUL bytes into at most 64 arguments; its first byte picks the parser (modulo 3:
/// schatten-polar-report, schatten-qdwh-file, schatten-bench-mpi). Properties checked (a
/// violation traps): every refusal carries a message; an accepted command line has repetitions
/// in [1, 100000] and shapes with positive sides whose element count is at most kMaxElements
/// (so the tools' allocations of rows·cols elements cannot overflow); schatten-bench-mpi's
/// steps and iterations are in range, its layout and owners known, its transfer cost finite
/// and ≥ 0.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "cli.hpp"

using namespace schatten;
using namespace schatten::bench;

namespace {
void check(bool ok) {
  if (!ok) __builtin_trap();
}
bool shape_ok(index_t r, index_t c) {
  return r >= 1 && c >= 1 && r <= kMaxSide && c <= kMaxSide && r * c <= kMaxElements;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const int parser = data[0] % 3;
  const bool qdwh = parser == 1;
  std::vector<std::string> words(1, "prog");
  std::string cur;
  for (std::size_t k = 1; k < size && words.size() < 64; ++k) {
    if (data[k] == 0) {
      words.push_back(cur);
      cur.clear();
    } else {
      cur += static_cast<char>(data[k]);
    }
  }
  if (!cur.empty()) words.push_back(cur);
  std::vector<const char*> argv;
  for (const std::string& w : words)
    argv.push_back(w.c_str());
  const int argc = static_cast<int>(argv.size());
  argv.push_back(nullptr);
  if (parser == 2) {
    MpiBenchArgs a;
    const std::string error = parse_mpi_bench_args(argc, argv.data(), a);
    if (error.empty()) {
      check(a.steps >= 1 && a.steps <= 100000 && a.iterations >= 1 && a.iterations <= 1000);
      check(a.layout == "replicated" || a.layout == "sharded" || a.layout == "columns" || a.layout == "flat");
      check(a.owners == "balanced" || a.owners == "held" || a.owners == "transfer");
      check(a.transfer != MpiBenchArgs::Transfer::value ||
            (std::isfinite(a.transfer_cost) && a.transfer_cost >= 0.0));
    }
  } else if (qdwh) {
    QdwhFileArgs a;
    const std::string error = parse_qdwh_file_args(argc, argv.data(), a);
    if (error.empty()) {
      check(shape_ok(a.rows, a.cols));
      check(a.reps >= 1 && a.reps <= 100000);
    }
  } else {
    ReportArgs a;
    const std::string error = parse_report_args(argc, argv.data(), a);
    if (error.empty()) {
      check(a.reps >= 1 && a.reps <= 100000);
      check(!a.out.empty());
      for (const auto& [r, c] : a.shapes)
        check(shape_ok(r, c));
      check(a.lowp == Precision::automatic || a.lowp == Precision::bf16 || a.lowp == Precision::fp16);
    }
  }
  return 0;
}
