// SPDX-License-Identifier: Apache-2.0
/// \file
/// Command-line parsing of the bench tools (cli.hpp).
#include "cli.hpp"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <initializer_list>

namespace schatten::bench {
namespace {

/// A whole decimal number in [lo, hi] (no sign games, no trailing text, no overflow: strtoll
/// reports ERANGE instead of the undefined behaviour of atoi/sscanf on overflow).
bool parse_int(const char* s, long long lo, long long hi, long long& out) {
  if (s == nullptr || *s == '\0') return false;
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) return false;
  out = v;
  return true;
}

/// "RxC" with both sides in [1, kMaxSide] and R·C ≤ kMaxElements.
bool parse_shape(const char* s, index_t& rows, index_t& cols) {
  const char* x = std::strchr(s, 'x');
  if (x == nullptr) return false;
  const std::string r(s, x);
  long long a = 0, b = 0;
  if (!parse_int(r.c_str(), 1, kMaxSide, a) || !parse_int(x + 1, 1, kMaxSide, b)) return false;
  if (a > kMaxElements / b) return false;  // a·b ≤ 2^48 cannot overflow, but keep the bound explicit
  rows = static_cast<index_t>(a);
  cols = static_cast<index_t>(b);
  return true;
}

/// A finite decimal number ≥ 0 with no trailing text.
bool parse_non_negative(const char* s, double& out) {
  if (s == nullptr || *s == '\0') return false;
  char* end = nullptr;
  const double v = std::strtod(s, &end);
  if (end == s || *end != '\0' || !std::isfinite(v) || !(v >= 0.0)) return false;
  out = v;
  return true;
}

/// `s` is one of `names`.
bool one_of(const char* s, std::initializer_list<const char*> names) {
  for (const char* n : names)
    if (!std::strcmp(s, n)) return true;
  return false;
}

std::string missing(const char* opt) { return std::string(opt) + " needs a value"; }

}  // namespace

bool wants_help(int argc, const char* const* argv) {
  for (int i = 1; i < argc; ++i)
    if (!std::strcmp(argv[i], "--help") || !std::strcmp(argv[i], "-h")) return true;
  return false;
}

const char* report_usage() {
  return "usage: schatten-polar-report [--out DIR] [--quick] [--reps N] [--shape RxC ...]\n"
         "                             [--method M ...] [--lowp bf16|fp16] [--help]\n"
         "  --out DIR   where polar_report.csv goes (default ./polar_report)\n"
         "  --quick     only the 768x768 and 768x3072 shapes\n"
         "  --reps N    timed repetitions per case, median reported (default 3)\n"
         "  --shape RxC only this shape (repeatable); above 2048 the input is Gaussian\n"
         "              and the error columns are nan (timing only)\n"
         "  --method M  only this method (repeatable), e.g. polar_express_5, qdwh\n"
         "  --lowp P    also run the float cases iterating in P (bf16 or fp16): the\n"
         "              Newton-Schulz family and Polar Express (cuBLAS on CUDA; elsewhere a\n"
         "              portable emulation, slow on a CPU)\n";
}

std::string parse_report_args(int argc, const char* const* argv, ReportArgs& args) {
  for (int i = 1; i < argc; ++i) {
    const char* a = argv[i];
    const bool has_value = i + 1 < argc;
    if (!std::strcmp(a, "--quick")) {
      args.quick = true;
    } else if (!std::strcmp(a, "--out")) {
      if (!has_value) return missing(a);
      args.out = argv[++i];
      if (args.out.empty()) return "--out needs a non-empty directory";
    } else if (!std::strcmp(a, "--shape")) {
      if (!has_value) return missing(a);
      index_t r = 0, c = 0;
      if (!parse_shape(argv[++i], r, c)) return std::string("bad --shape ") + argv[i] + " (want RxC)";
      args.shapes.emplace_back(r, c);
    } else if (!std::strcmp(a, "--method")) {
      if (!has_value) return missing(a);
      args.methods.emplace_back(argv[++i]);
    } else if (!std::strcmp(a, "--lowp")) {
      if (!has_value) return missing(a);
      const std::string p = argv[++i];
      args.lowp = p == "bf16" ? Precision::bf16 : p == "fp16" ? Precision::fp16 : Precision::automatic;
      if (args.lowp == Precision::automatic) return "--lowp takes bf16 or fp16";
    } else if (!std::strcmp(a, "--reps")) {
      if (!has_value) return missing(a);
      long long n = 0;
      if (!parse_int(argv[++i], 1, 100000, n)) return std::string("bad --reps ") + argv[i];
      args.reps = static_cast<int>(n);
    } else {
      return std::string("unknown argument '") + a + "'";
    }
  }
  return {};
}

const char* qdwh_file_usage() {
  return "usage: schatten-qdwh-file FILE ROWS COLS [--float] [--reps N] [--help]\n"
         "  FILE      ROWS x COLS little-endian doubles, row-major (bench/gpu/jax_qdwh.py writes one)\n"
         "  --float   run QDWH on the matrix rounded to float\n"
         "  --reps N  timed calls after one warm-up, median reported (default 3)\n";
}

std::string parse_qdwh_file_args(int argc, const char* const* argv, QdwhFileArgs& args) {
  if (argc < 4) return "usage: schatten-qdwh-file FILE ROWS COLS [--float] [--reps N]";
  args.file = argv[1];
  long long r = 0, c = 0;
  if (!parse_int(argv[2], 1, kMaxSide, r) || !parse_int(argv[3], 1, kMaxSide, c) || r > kMaxElements / c)
    return std::string("bad shape ") + argv[2] + " x " + argv[3];
  args.rows = static_cast<index_t>(r);
  args.cols = static_cast<index_t>(c);
  for (int i = 4; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--float")) {
      args.single = true;
    } else if (!std::strcmp(argv[i], "--reps")) {
      long long n = 0;
      if (i + 1 >= argc || !parse_int(argv[++i], 1, 100000, n)) return "bad --reps";
      args.reps = static_cast<int>(n);
    } else {
      return std::string("unknown argument '") + argv[i] + "'";
    }
  }
  return {};
}

const char* mpi_bench_usage() {
  return "usage: schatten-bench-mpi [--steps N] [--layout replicated|sharded|columns|flat|unreduced] "
         "[--owners "
         "balanced|held|transfer] [--transfer-cost X|measure|pairs] [--iterations K] [--cut] [--dion F] "
         "[--help]\n";
}

std::string parse_mpi_bench_args(int argc, const char* const* argv, MpiBenchArgs& args) {
  for (int i = 1; i < argc; ++i) {
    const char* a = argv[i];
    const bool has_value = i + 1 < argc;
    long long n = 0;
    if (!std::strcmp(a, "--cut")) {
      args.cut = true;
    } else if (!std::strcmp(a, "--steps") || !std::strcmp(a, "--iterations")) {
      if (!has_value) return missing(a);
      const bool steps = !std::strcmp(a, "--steps");
      if (!parse_int(argv[++i], 1, steps ? 100000 : 1000, n)) return std::string("bad ") + a + " " + argv[i];
      (steps ? args.steps : args.iterations) = static_cast<int>(n);
    } else if (!std::strcmp(a, "--layout")) {
      if (!has_value) return missing(a);
      if (!one_of(argv[++i], {"replicated", "sharded", "columns", "flat", "unreduced"}))
        return std::string("bad --layout ") + argv[i];
      args.layout = argv[i];
    } else if (!std::strcmp(a, "--owners")) {
      if (!has_value) return missing(a);
      if (!one_of(argv[++i], {"balanced", "held", "transfer"})) return std::string("bad --owners ") + argv[i];
      args.owners = argv[i];
    } else if (!std::strcmp(a, "--transfer-cost")) {
      if (!has_value) return missing(a);
      const char* v = argv[++i];
      if (!std::strcmp(v, "measure"))
        args.transfer = MpiBenchArgs::Transfer::measure;
      else if (!std::strcmp(v, "pairs"))
        args.transfer = MpiBenchArgs::Transfer::pairs;
      else if (parse_non_negative(v, args.transfer_cost))
        args.transfer = MpiBenchArgs::Transfer::value;
      else
        return std::string("bad --transfer-cost ") + v;
    } else if (!std::strcmp(a, "--dion")) {
      if (!has_value) return missing(a);
      if (!parse_non_negative(argv[++i], args.dion) || !(args.dion > 0.0 && args.dion <= 1.0))
        return std::string("bad --dion ") + argv[i] + " (a rank fraction in (0, 1])";
    } else {
      return std::string("unknown argument '") + a + "'";
    }
  }
  if (args.layout == "unreduced" && args.dion == 0.0) return "--layout unreduced needs --dion F";
  if (args.dion > 0.0 && args.cut) return "--dion and --cut together are not supported";
  return {};
}

}  // namespace schatten::bench
