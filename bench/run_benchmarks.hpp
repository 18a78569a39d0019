// SPDX-License-Identifier: Apache-2.0
/// \file
/// Runs the registered Google Benchmark cases and says, by the exit status, whether every one
/// ran: a case that calls SkipWithError (a failed init or step, an unsupported precision)
/// would otherwise print its error among the results and let the binary exit with 0, and a
/// broken case could go unnoticed for weeks (`optim/schatten_criterion_step` did, 2026-12-04).
#pragma once

#include <benchmark/benchmark.h>

#include <cstdio>
#include <memory>
#include <vector>

namespace schatten::bench {

/// Passes every report to the display reporter that the flags choose (--benchmark_format) and
/// counts the runs that ended in an error.
class ErrorCountingReporter : public benchmark::BenchmarkReporter {
 public:
  ErrorCountingReporter() : inner_(benchmark::CreateDefaultDisplayReporter()) {}
  bool ReportContext(const Context& context) override {
    inner_->SetOutputStream(&GetOutputStream());
    inner_->SetErrorStream(&GetErrorStream());
    return inner_->ReportContext(context);
  }
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& r : runs)
      if (r.error_occurred) ++errors_;
    inner_->ReportRuns(runs);
  }
  void Finalize() override { inner_->Finalize(); }
  int errors() const { return errors_; }

 private:
  std::unique_ptr<benchmark::BenchmarkReporter> inner_;
  int errors_ = 0;
};

/// benchmark::RunSpecifiedBenchmarks() with the flags' display reporter (and --benchmark_out's
/// file reporter, as usual); returns the process exit status: 0 when every run completed, 1
/// when some reported an error (their count goes to stderr).
inline int run_benchmarks() {
  ErrorCountingReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  if (reporter.errors() == 0) return 0;
  std::fprintf(stderr, "%d benchmark run(s) reported an error (see their error_message)\n",
               reporter.errors());
  return 1;
}

}  // namespace schatten::bench
