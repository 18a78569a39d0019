// SPDX-License-Identifier: Apache-2.0
/// \file
/// Command-line parsing of the bench tools (schatten-polar-report, schatten-qdwh-file,
/// schatten-bench-mpi), kept out
/// of their main() so that the libFuzzer target tests/fuzz/fuzz_cli.cpp can call it. Depends on
/// nothing but the core types (no Kokkos, no I/O).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "schatten/core/types.hpp"

namespace schatten::bench {

/// True when argv[1..argc-1] holds `--help` or `-h`: the tools then print their usage text on
/// stdout and exit with status 0, whatever else the command line holds.
bool wants_help(int argc, const char* const* argv);

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

/// The usage text of schatten-qdwh-file.
const char* qdwh_file_usage();

/// Options of schatten-bench-mpi (see its file comment and mpi_bench_usage()).
struct MpiBenchArgs {
  int steps = 5;       ///< --steps N, [1, 100000]
  int iterations = 5;  ///< --iterations K (Newton–Schulz steps), [1, 1000] (check_polar_options' bound)
  std::string layout = "replicated";  ///< --layout replicated|sharded|columns|flat|unreduced
  std::string owners = "balanced";    ///< --owners balanced|held|transfer
  /// --transfer-cost: the library's default, a number (finite, ≥ 0), `measure` or `pairs`.
  enum class Transfer { default_cost, value, measure, pairs } transfer = Transfer::default_cost;
  double transfer_cost = 0.0;  ///< with Transfer::value
  bool cut = false;            ///< --cut
  /// --dion F: Dion at rank fraction F ∈ (0, 1] instead of Muon for the hidden matrices; 0:
  /// Muon. --layout unreduced needs it (and excludes --cut).
  double dion = 0.0;
};

/// Parses argv like parse_report_args (same integer rules; the transfer cost a finite decimal
/// number ≥ 0 with no trailing text, the rank fraction one in (0, 1]); unknown arguments, and
/// --layout unreduced without --dion or with --cut, are errors.
std::string parse_mpi_bench_args(int argc, const char* const* argv, MpiBenchArgs& args);

/// The usage line of schatten-bench-mpi.
const char* mpi_bench_usage();

}  // namespace schatten::bench
