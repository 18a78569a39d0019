// SPDX-License-Identifier: Apache-2.0
/// \file
/// Command-line parsing of the bench tools (schatten-polar-report, schatten-qdwh-file), kept out
/// of their main() so that the libFuzzer target tests/fuzz/fuzz_cli.cpp can call it. Depends on
/// nothing but the core types (no Kokkos, no I/O).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "schatten/core/types.hpp"

namespace schatten::bench {

/// Largest side a tool accepts, and largest element count of one matrix (2^30 doubles = 8 GiB):
/// beyond these an allocation of rows·cols elements would overflow or cannot succeed, so they are
/// refused as bad arguments instead of failing later.
constexpr index_t kMaxSide = index_t(1) << 24;
constexpr index_t kMaxElements = index_t(1) << 30;

/// Options of schatten-polar-report (see its usage text).
struct ReportArgs {
  std::string out = "polar_report";
  bool quick = false;
  int reps = 3;
  std::vector<std::pair<index_t, index_t>> shapes;  ///< --shape RxC (repeatable); empty: all
  std::vector<std::string> methods;                 ///< --method NAME (repeatable); empty: all
  Precision lowp = Precision::automatic;            ///< --lowp bf16|fp16; automatic: none
};

/// Parses argv[1..argc-1] into `args`. Returns "" on success, else a one-line message naming the
/// offending argument (`args` may then be partly filled). Numbers must be whole decimal integers:
/// --reps in [1, 100000], shape sides in [1, kMaxSide] with rows·cols ≤ kMaxElements.
std::string parse_report_args(int argc, const char* const* argv, ReportArgs& args);

/// The usage text of schatten-polar-report.
const char* report_usage();

/// Arguments of schatten-qdwh-file: FILE ROWS COLS [--float] [--reps N].
struct QdwhFileArgs {
  std::string file;
  index_t rows = 0, cols = 0;
  bool single = false;
  int reps = 3;
};

/// Parses argv like parse_report_args (same number rules); unknown options are errors.
std::string parse_qdwh_file_args(int argc, const char* const* argv, QdwhFileArgs& args);

}  // namespace schatten::bench
