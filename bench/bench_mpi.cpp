// SPDX-License-Identifier: Apache-2.0
/// \file
/// schatten-bench-mpi: the distributed Muon step (muon for the 48 hidden matrices of GPT-2
/// small, adamw for the rest) on however many ranks mpiexec starts, with the bytes that arrive
/// at each rank per step next to the parameter bytes.
///
///   mpiexec -n 2 schatten-bench-mpi [--steps N] [--layout replicated|sharded] [--iterations K]
///
/// --layout sharded row-shards every parameter (FSDP-like); --iterations sets the Newton–Schulz
/// steps (default 5). Per step the time is the slowest rank's, between two barriers; gradients
/// are refilled outside the timed region. One rank also times optim::Partition::step alone
/// (the single-process baseline) when started on one rank. Prints one line per measurement.
/// Compare runs that use the same cores: e.g. 1 rank with OPENBLAS_NUM_THREADS=2 against 2
/// ranks with OPENBLAS_NUM_THREADS=1 on a 2-core machine (docs/benchmarks/cpu-mpi.md).
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "gpt2_small.hpp"
#include "schatten/core/random.hpp"
#include "schatten/core/runtime.hpp"
#include "schatten/distributed/mpi_comm.hpp"
#include "schatten/distributed/mpi_step.hpp"
#include "schatten/optim/presets.hpp"

using namespace schatten;
using namespace schatten::optim;

namespace {

void fill(std::vector<std::vector<float>>& v, std::uint64_t seed, double scale) {
  Rng rng(seed);
  for (auto& a : v)
    for (float& x : a)
      x = static_cast<float>(scale * rng.normal());
}

std::vector<float*> ptrs(std::vector<std::vector<float>>& v) {
  std::vector<float*> p;
  for (auto& a : v)
    p.push_back(a.data());
  return p;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int steps = 5, iterations = 5;
  bool sharded = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--steps") && i + 1 < argc) steps = std::atoi(argv[++i]);
    if (!std::strcmp(argv[i], "--iterations") && i + 1 < argc) iterations = std::atoi(argv[++i]);
    if (!std::strcmp(argv[i], "--layout") && i + 1 < argc) sharded = !std::strcmp(argv[++i], "sharded");
  }
  {
    Runtime runtime;
    const distributed::Communicator comm = distributed::communicator(MPI_COMM_WORLD);
    const int me = comm.rank(), n = comm.size();
    const char* threads = std::getenv("OPENBLAS_NUM_THREADS");
    if (me == 0)
      std::printf("%d rank(s), OPENBLAS_NUM_THREADS=%s, %s, Newton-Schulz steps %d\n", n,
                  threads ? threads : "(unset)", runtime_description().c_str(), iterations);
    const auto specs = bench::gpt2_small();
    const auto labels = propose_labels(specs);
    MuonOptions mo;
    mo.polar.iterations = iterations;
    std::int64_t param_floats = 0;
    for (const ParamSpec& p : specs)
      param_floats += flatten(p.shape).size();

    // The single-process baseline, in one-rank runs only: while one rank timed it, the others
    // would busy-poll in MPI_Barrier and take a core from it.
    if (n == 1) {
      auto one = optim::partition(specs, labels, route("muon", muon(mo)), route("adamw", adamw()));
      if (!one.init()) MPI_Abort(MPI_COMM_WORLD, 1);
      std::vector<std::vector<float>> w, g;
      for (const ParamSpec& p : specs) {
        w.emplace_back(static_cast<std::size_t>(flatten(p.shape).size()));
        g.emplace_back(w.back().size());
      }
      fill(w, 1, 0.02);
      std::vector<double> t;
      for (int s = 0; s <= steps; ++s) {
        fill(g, 100 + std::uint64_t(s), 1e-3);
        const double t0 = MPI_Wtime();
        if (!one.step(ptrs(w), ptrs(g))) MPI_Abort(MPI_COMM_WORLD, 1);
        if (s > 0) t.push_back(MPI_Wtime() - t0);  // step 0: warm-up
      }
      std::printf("single-process Partition::step: median %.3f s over %d steps\n", median(t), steps);
    }
    MPI_Barrier(MPI_COMM_WORLD);

    auto d = distributed::distributed_partition(comm, specs, labels, route("muon", muon(mo)),
                                                route("adamw", adamw()));
    if (sharded)
      d.set_layouts(std::vector<distributed::Layout>(specs.size(), distributed::Layout::row_sharded));
    if (!d.init()) MPI_Abort(MPI_COMM_WORLD, 1);
    // Load balance of the assignment (cost model units).
    std::vector<double> load(static_cast<std::size_t>(n), 0.0);
    std::vector<int> count(static_cast<std::size_t>(n), 0);
    for (std::size_t i = 0; i < specs.size(); ++i) {
      const bool matrix = labels[i] == "muon";
      load[static_cast<std::size_t>(d.owners()[i])] +=
          distributed::default_cost(flatten(specs[i].shape), matrix);
      ++count[static_cast<std::size_t>(d.owners()[i])];
    }
    if (me == 0)
      for (int r = 0; r < n; ++r)
        std::printf("rank %d owns %d parameters, %.1f GFLOP-equivalents\n", r, count[std::size_t(r)],
                    load[std::size_t(r)] / 1e9);
    std::vector<std::vector<float>> w, g;
    for (std::size_t i = 0; i < specs.size(); ++i) {
      const distributed::RowRange r = d.row_range(i);
      w.emplace_back(static_cast<std::size_t>(r.size() * flatten(specs[i].shape).cols));
      g.emplace_back(w.back().size());
    }
    fill(w, 1, 0.02);
    std::vector<double> times;
    std::vector<std::int64_t> bytes;
    for (int s = 0; s <= steps; ++s) {
      fill(g, 100 + std::uint64_t(s) * 7919, 1e-3);  // the same on every rank (replicated)
      MPI_Barrier(MPI_COMM_WORLD);
      comm.reset_traffic();
      const double t0 = MPI_Wtime();
      const StepReport rep = d.step(ptrs(w), ptrs(g));
      double t = MPI_Wtime() - t0, slowest = 0.0;
      std::int64_t mine = comm.traffic().bytes_received, total = 0;
      MPI_Allreduce(&t, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
      MPI_Allreduce(&mine, &total, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
      if (!rep) MPI_Abort(MPI_COMM_WORLD, 1);
      if (s > 0) {  // step 0: warm-up
        times.push_back(slowest);
        bytes.push_back(total);
      }
    }
    if (me == 0) {
      const double pb = 4.0 * double(param_floats);
      const double per_step = double(bytes.empty() ? 0 : bytes.back());
      std::printf("distributed step, %d rank(s), %s: median %.3f s over %d steps\n", n,
                  sharded ? "row-sharded" : "replicated", median(times), steps);
      std::printf(
          "bytes received per step, all ranks: %.1f MB (%.3f x the %.1f MB of parameters); per rank %.1f "
          "MB\n",
          per_step / 1e6, per_step / pb, pb / 1e6, per_step / n / 1e6);
    }
  }
  MPI_Finalize();
  return 0;
}
