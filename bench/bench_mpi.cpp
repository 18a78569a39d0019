// SPDX-License-Identifier: Apache-2.0
/// \file
/// schatten-bench-mpi: the distributed Muon step (muon for the 48 hidden matrices of GPT-2
/// small, adamw for the rest) on however many ranks mpiexec starts, with the bytes that arrive
/// at each rank per step next to the parameter bytes.
///
///   mpiexec -n 2 schatten-bench-mpi [--steps N] [--layout replicated|sharded|columns|flat|unreduced]
///   [--owners balanced|held|transfer] [--transfer-cost X|measure|pairs] [--iterations K] [--cut]
///   [--dion F]
///
/// --dion F steps the hidden matrices with Dion at rank fraction F instead of Muon; with
/// --layout unreduced they are distributed::Layout::unreduced (each rank's own gradient, only
/// Dion's low-rank panels averaged: microsoft/dion's compressed all-reduce), the rest replicated.
/// The gradients are the same on every rank here (the time and the bytes do not depend on them);
/// the framework's all-reduce of replicated gradients is not part of the step and not counted.
/// --layout sharded row-shards every parameter (FSDP2's torch.chunk split), --layout columns
/// column-shards every parameter (tensor parallelism's split of dim 1), --layout
/// flat cuts one flat buffer of all parameters evenly among the ranks (Megatron's distributed
/// optimizer: last parameter first, starts aligned to 64 floats); --owners held
/// steps each gathered parameter on a rank holding the most of it (OwnerChoice::where_held; default
/// balanced), --owners transfer weighs each transfer against the work (OwnerChoice::
/// transfer_aware) at --transfer-cost flop-equivalents per float (default
/// kDefaultTransferCost; `measure`: distributed::measure_transfer_cost on this machine first;
/// `pairs`: distributed::measure_transfer_costs, a cost per pair of ranks, printed);
/// --iterations sets the Newton–Schulz steps (default 5); --cut orthogonalises each
/// fused attn.c_attn.weight (2304 × 768) as its Q, K and V (optim::SplitPartition over the
/// distributed partition; with --layout sharded, flat or columns the fused arrays are sharded,
/// and each rank's rows, run or columns straddle the pieces). Per step the time is the slowest rank's,
/// between two barriers; gradients are refilled outside the timed region. One rank also times
/// optim::Partition::step alone (the single-process baseline) when started on one rank.
/// Prints one line per measurement, and (without --cut) what each rank's optimizer holds,
/// by kind (DistributedPartition::memory_use). Compare runs that use the same cores: e.g. 1 rank with
/// OPENBLAS_NUM_THREADS=2 against 2 ranks with OPENBLAS_NUM_THREADS=1 on a 2-core machine
/// (docs/benchmarks/cpu-mpi.md).
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "cli.hpp"
#include "gpt2_small.hpp"
#include "schatten/core/random.hpp"
#include "schatten/core/runtime.hpp"
#include "schatten/distributed/mpi_comm.hpp"
#include "schatten/distributed/mpi_step.hpp"
#include "schatten/optim/dion.hpp"
#include "schatten/optim/presets.hpp"
#include "schatten/optim/split.hpp"

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

/// The distributed step of `d` (a DistributedPartition, or a SplitPartition over one) timed over
/// `steps` steps after a warm-up, on this rank's part of every parameter of `specs` (`held`: its
/// number of floats per parameter). Prints the median of the slowest
/// rank's times and the bytes received per step.
template <class D>
void time_steps(D& d, const distributed::Communicator& comm, const std::vector<ParamSpec>& specs,
                const std::vector<index_t>& held, int steps, const std::string& what) {
  const int me = comm.rank(), n = comm.size();
  std::int64_t param_floats = 0;
  std::vector<std::vector<float>> w, g;
  for (std::size_t i = 0; i < specs.size(); ++i) {
    const BlockShape m = flatten(specs[i].shape);
    param_floats += m.size();
    w.emplace_back(static_cast<std::size_t>(held[i]));
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
    std::printf("distributed step, %d rank(s), %s: median %.3f s over %d steps\n", n, what.c_str(),
                median(times), steps);
    std::printf(
        "bytes received per step, all ranks: %.1f MB (%.3f x the %.1f MB of parameters); per rank %.1f "
        "MB\n",
        per_step / 1e6, per_step / pb, pb / 1e6, per_step / n / 1e6);
  }
}

/// What each rank's optimizer holds after the steps (DistributedPartition::memory_use(),
/// docs/optim.md "Memory"), one line per rank printed by rank 0, in MB.
void print_memory(const optim::MemoryUse& m, int me, int n) {
  const double mine[7] = {double(m.state),     double(m.backups),  double(m.scratch), double(m.batches),
                          double(m.workspace), double(m.exchange), double(m.total())};
  std::vector<double> all(7 * static_cast<std::size_t>(n));
  MPI_Gather(mine, 7, MPI_DOUBLE, all.data(), 7, MPI_DOUBLE, 0, MPI_COMM_WORLD);
  if (me != 0) return;
  for (int r = 0; r < n; ++r) {
    const double* x = all.data() + 7 * r;
    std::printf(
        "rank %d holds (MB): state %.1f, backups %.1f, scratch %.1f, batches %.1f, workspace %.1f, exchange "
        "%.1f; total %.1f\n",
        r, x[0] / 1e6, x[1] / 1e6, x[2] / 1e6, x[3] / 1e6, x[4] / 1e6, x[5] / 1e6, x[6] / 1e6);
  }
}

/// ", dion rank fraction F" for --dion F, else nothing.
std::string dion_label(double fraction) {
  if (fraction <= 0.0) return {};
  char b[64];
  std::snprintf(b, sizeof b, ", dion rank fraction %g", fraction);
  return b;
}

/// The assignment in the cost model, printed by rank 0: each rank's parameters and work, the
/// modelled exchange of the gathered parameters and the modelled step
/// (DistributedPartition::modelled(), distributed::modelled_step).
void print_balance(const std::vector<int>& owners, const distributed::ModelledStep& model, int me, int n) {
  std::vector<int> count(static_cast<std::size_t>(n), 0);
  int by_rows = 0;
  for (int o : owners)
    o < 0 ? ++by_rows : ++count[static_cast<std::size_t>(o)];
  if (me == 0) {
    for (int r = 0; r < n; ++r)
      std::printf("rank %d owns %d parameters, %.1f GFLOP-equivalents\n", r, count[std::size_t(r)],
                  model.work[std::size_t(r)] / 1e9);
    std::printf("modelled exchange %.1f, modelled step %.1f GFLOP-equivalents\n", model.exchange / 1e9,
                model.time() / 1e9);
    if (by_rows > 0) std::printf("%d parameters stepped on every rank (by rows, or unreduced)\n", by_rows);
  }
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  // Every rank parses the same command line (bench/cli.hpp); a bad one is refused on every
  // rank (exit 2).
  if (bench::wants_help(argc, argv)) {
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (rank == 0) std::fputs(bench::mpi_bench_usage(), stdout);
    MPI_Finalize();
    return 0;
  }
  bench::MpiBenchArgs args;
  const std::string error = bench::parse_mpi_bench_args(argc, argv, args);
  if (!error.empty()) {
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (rank == 0)
      std::fprintf(stderr, "schatten-bench-mpi: %s\n%s", error.c_str(), bench::mpi_bench_usage());
    MPI_Finalize();
    return 2;
  }
  const int steps = args.steps, iterations = args.iterations;
  const bool sharded = args.layout == "sharded", columns = args.layout == "columns",
             flat = args.layout == "flat", cut = args.cut;
  const char* owner_name = args.owners.c_str();
  const auto owners = args.owners == "held"       ? distributed::OwnerChoice::where_held
                      : args.owners == "transfer" ? distributed::OwnerChoice::transfer_aware
                                                  : distributed::OwnerChoice::balanced;
  using Transfer = bench::MpiBenchArgs::Transfer;
  double transfer_cost =
      args.transfer == Transfer::value ? args.transfer_cost : distributed::kDefaultTransferCost;
  const bool measure = args.transfer == Transfer::measure, pairs = args.transfer == Transfer::pairs;
  {
    Runtime runtime;
    const distributed::Communicator comm = distributed::communicator(MPI_COMM_WORLD);
    const int me = comm.rank(), n = comm.size();
    const char* threads = std::getenv("OPENBLAS_NUM_THREADS");
    if (me == 0)
      std::printf("%d rank(s), OPENBLAS_NUM_THREADS=%s, %s, Newton-Schulz steps %d\n", n,
                  threads ? threads : "(unset)", runtime_description().c_str(), iterations);
    if (measure) {
      transfer_cost = distributed::measure_transfer_cost(comm);
      comm.reset_traffic();
    }
    distributed::TransferCosts pair_costs;  // ranks 0: the one rate above
    if (pairs) {
      pair_costs = distributed::measure_transfer_costs(comm);
      comm.reset_traffic();
      if (me == 0) {
        std::printf("transfer costs per pair (flop-equivalents per float, row = from):\n");
        for (std::size_t a = 0; a < std::size_t(n); ++a) {
          for (std::size_t b = 0; b < std::size_t(n); ++b)
            std::printf(" %8.1f", pair_costs(a, b));
          std::printf("\n");
        }
      }
    } else if (me == 0) {
      std::printf("transfer cost %.1f flop-equivalents per float\n", transfer_cost);
    }
    const auto specs = bench::gpt2_small();
    const auto labels = propose_labels(specs);
    MuonOptions mo;
    mo.polar.iterations = iterations;
    DionOptions dion_options;
    dion_options.rank_fraction = args.dion;

    // The hidden matrices' rule: Muon, or Dion with --dion (a generic lambda per rule type).
    auto with_hidden = [&](auto&& body) {
      if (args.dion > 0.0)
        body(dion(dion_options));
      else
        body(muon(mo));
    };
    // The single-process baseline, in one-rank runs only: while one rank timed it, the others
    // would busy-poll in MPI_Barrier and take a core from it.
    if (n == 1)
      with_hidden([&](auto hidden) {
        auto one = optim::partition(specs, labels, route("muon", hidden), route("adamw", adamw()));
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
      });
    MPI_Barrier(MPI_COMM_WORLD);

    std::vector<std::vector<index_t>> bounds(specs.size());
    if (sharded)
      for (std::size_t i = 0; i < specs.size(); ++i)
        bounds[i] = distributed::chunk_bounds(flatten(specs[i].shape).rows, n);
    std::vector<std::vector<index_t>> flat_bounds;
    if (flat) {  // Megatron's buffer: reversed parameter order, 64-float aligned starts
      std::vector<index_t> sizes;
      for (const ParamSpec& p : specs)
        sizes.push_back(flatten(p.shape).size());
      flat_bounds = distributed::reversed_flat_buffer(sizes, 64, n).bounds;
    }
    const bool unreduced = args.layout == "unreduced";
    const std::string what = std::string(sharded     ? "row-sharded"
                                         : columns   ? "column-sharded"
                                         : flat      ? "flat-sharded"
                                         : unreduced ? "hidden matrices unreduced"
                                                     : "replicated") +
                             (cut ? ", c_attn cut into q/k/v" : "") + ", owners " + owner_name +
                             dion_label(args.dion);
    if (!cut) {
      with_hidden([&](auto hidden) {
        auto d = distributed::distributed_partition(comm, specs, labels, route("muon", hidden),
                                                    route("adamw", adamw()));
        d.set_row_bounds(bounds);
        d.set_flat_bounds(flat_bounds);
        d.set_owner_choice(owners);
        d.set_transfer_cost(transfer_cost);
        if (pairs) d.set_transfer_costs(pair_costs);
        if (columns)
          d.set_layouts(std::vector<distributed::Layout>(specs.size(), distributed::Layout::column_sharded));
        if (unreduced) {  // the hidden matrices: each rank's own gradient, Dion's panels averaged
          std::vector<distributed::Layout> l;
          for (const std::string& label : labels)
            l.push_back(label == "muon" ? distributed::Layout::unreduced : distributed::Layout::replicated);
          d.set_layouts(l);
        }
        if (!d.init()) MPI_Abort(MPI_COMM_WORLD, 1);
        print_balance(d.owners(), d.modelled(), me, n);
        std::vector<index_t> held;
        for (std::size_t i = 0; i < specs.size(); ++i)
          held.push_back(d.layout(i) == distributed::Layout::flat_sharded
                             ? d.element_range(i).size()
                             : d.row_range(i).size() * d.column_range(i).size());
        time_steps(d, comm, specs, held, steps, what);
        print_memory(d.memory_use(), me, n);
      });
    } else {
      std::vector<SplitSpec> cuts;
      for (const ParamSpec& p : specs)
        if (p.name.find("attn.c_attn.weight") != std::string::npos) {
          SplitSpec c;
          c.name = p.name;
          c.count = 3;
          c.parts = {"q", "k", "v"};
          cuts.push_back(c);
        }
      const SplitLayout layout(specs, cuts);
      const auto piece_labels = propose_labels(layout.pieces());
      auto d = split_partition(
          layout, distributed::distributed_partition(comm, layout.pieces(), piece_labels,
                                                     route("muon", muon(mo)), route("adamw", adamw())));
      std::vector<std::vector<index_t>> column_bounds(specs.size());
      for (std::size_t i = 0; columns && i < specs.size(); ++i)
        column_bounds[i] = distributed::chunk_bounds(flatten(specs[i].shape).cols, n);
      d.set_source_rows(bounds);
      d.set_source_elements(flat_bounds);
      d.set_source_columns(column_bounds);
      d.partition().set_owner_choice(owners);
      d.partition().set_transfer_cost(transfer_cost);
      if (pairs) d.partition().set_transfer_costs(pair_costs);
      if (!d.init()) MPI_Abort(MPI_COMM_WORLD, 1);
      print_balance(d.partition().owners(), d.partition().modelled(), me, n);
      std::vector<index_t> held;  // this rank's elements of each fused parameter (rows, run, columns)
      const auto at = static_cast<std::size_t>(me);
      for (std::size_t i = 0; i < specs.size(); ++i) {
        const BlockShape m = flatten(specs[i].shape);
        held.push_back(flat                ? flat_bounds[i][at + 1] - flat_bounds[i][at]
                       : columns           ? m.rows * (column_bounds[i][at + 1] - column_bounds[i][at])
                       : bounds[i].empty() ? m.size()
                                           : (bounds[i][at + 1] - bounds[i][at]) * m.cols);
      }
      time_steps(d, comm, specs, held, steps, what);
    }
  }
  MPI_Finalize();
  return 0;
}
