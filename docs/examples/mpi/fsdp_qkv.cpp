// SPDX-License-Identifier: Apache-2.0
/// \file
/// Example (compiled and run by the tests under `mpiexec -n 2`): Muon over MPI on FSDP-sharded
/// fused parameters, each orthogonalised as its pieces. Every rank holds only its rows of
/// Megatron's grouped linear_qkv (8 query heads in 2 query groups, so each rank's rows hold
/// runs of several heads of Q, K and V) and of an MoE expert stack (whole experts per rank), as
/// FSDP2 shards them by dim 0 (distributed::chunk_bounds). optim::SplitPartition cuts Q, K, V
/// and the experts out of those rows (set_source_rows), and the distributed partition gathers
/// each piece to the rank that owns it. Rank 0 then checks the result against one process
/// stepping the whole arrays: it must be the same, bit for bit (docs/distributed.md "Cut
/// parameters").
#include <mpi.h>
#include <schatten/distributed/mpi_comm.hpp>
#include <schatten/distributed/mpi_step.hpp>
#include <schatten/optim/presets.hpp>
#include <schatten/optim/split.hpp>
#include <schatten/schatten.hpp>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {
namespace opt = schatten::optim;
namespace dist = schatten::distributed;
using schatten::index_t;

/// Deterministic values from a seed: the same arrays on every rank.
std::vector<float> values(index_t n, std::uint64_t seed, double scale) {
  schatten::Rng rng(seed);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (float& x : v)
    x = static_cast<float>(scale * rng.normal());
  return v;
}
}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int failed = 0;
  {
    schatten::Runtime runtime(argc, argv);
    const dist::Communicator comm = dist::communicator(MPI_COMM_WORLD);
    const int me = comm.rank(), n = comm.size();
    // Width 32; 8 heads of dim 4 in 2 query groups: linear_qkv has (8 + 2·2)·4 = 48 rows.
    const std::vector<opt::ParamSpec> params = {{"layer.linear_qkv.weight", {48, 32}},
                                                {"layer.linear_proj.weight", {32, 32}},
                                                {"layer.experts.fc1", {4, 16, 32}},
                                                {"layer.norm.weight", {32}}};
    const opt::SplitLayout layout(params, {opt::split_qkv_grouped("layer.linear_qkv.weight", 8, 2, 4),
                                           opt::stack_of("layer.experts.fc1")});
    if (!layout) {
      std::fprintf(stderr, "%s\n", layout.message().c_str());
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
    const auto labels = opt::propose_labels(layout.pieces());
    auto d = opt::split_partition(
        layout, dist::distributed_partition(comm, layout.pieces(), labels, opt::route("muon", opt::muon()),
                                            opt::route("adamw", opt::adamw())));
    // FSDP2's split of every matrix by dim 0; the norm weight stays replicated (empty bounds).
    std::vector<std::vector<index_t>> rows(params.size());
    for (std::size_t i = 0; i < 3; ++i)
      rows[i] = dist::chunk_bounds(opt::flatten(params[i].shape).rows, n);
    d.set_source_rows(rows);
    if (opt::StepReport r = d.init(); !r) {
      std::fprintf(stderr, "rank %d: init: %s\n", me, r.message);
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
    if (me == 0) {
      std::printf("%d rank(s); pieces and their owners:\n", n);
      for (std::size_t k = 0; k < layout.pieces().size(); ++k)
        std::printf("  %-32s rank %d\n", layout.pieces()[k].name.c_str(), d.partition().owners()[k]);
    }
    // What a piece's rows on this rank are: e.g. with 2 ranks, rank 0 holds query group 0
    // ([q0..q3 | k0 | v0], 24 rows) and so rows 0-15 of Q and 0-3 of K and V.
    for (int turn = 0; turn < n; ++turn) {  // one rank after the other
      MPI_Barrier(MPI_COMM_WORLD);
      if (turn != me) continue;
      for (std::size_t k = 0; k < layout.pieces().size(); ++k) {
        const dist::RowRange r = d.partition().row_range(k);
        std::printf("rank %d holds rows [%lld, %lld) of %s\n", me, static_cast<long long>(r.begin),
                    static_cast<long long>(r.end), layout.pieces()[k].name.c_str());
      }
      std::fflush(stdout);
    }

    // This rank's rows of every parameter and gradient.
    auto mine = [&](const std::vector<float>& whole, std::size_t i) {
      if (rows[i].empty()) return whole;
      const index_t cols = opt::flatten(params[i].shape).cols;
      return std::vector<float>(whole.begin() + rows[i][static_cast<std::size_t>(me)] * cols,
                                whole.begin() + rows[i][static_cast<std::size_t>(me) + 1] * cols);
    };
    std::vector<std::vector<float>> whole_w, w;
    for (std::size_t i = 0; i < params.size(); ++i) {
      whole_w.push_back(values(opt::flatten(params[i].shape).size(), 10 + i, 0.02));
      w.push_back(mine(whole_w.back(), i));
    }
    // The single-process reference (every rank computes it; rank 0 reports).
    auto one =
        opt::split_partition(layout, opt::partition(layout.pieces(), labels, opt::route("muon", opt::muon()),
                                                    opt::route("adamw", opt::adamw())));
    if (!one.init()) MPI_Abort(MPI_COMM_WORLD, 1);
    for (int t = 0; t < 3; ++t) {
      std::vector<std::vector<float>> whole_g, g;
      for (std::size_t i = 0; i < params.size(); ++i) {
        whole_g.push_back(values(opt::flatten(params[i].shape).size(), 100 * (t + 1) + i, 1.0));
        g.push_back(mine(whole_g.back(), i));
      }
      std::vector<float*> wp, gp, owp, ogp;
      for (std::size_t i = 0; i < params.size(); ++i) {
        wp.push_back(w[i].empty() ? nullptr : w[i].data());  // a rank holding no rows passes null
        gp.push_back(g[i].empty() ? nullptr : g[i].data());
        owp.push_back(whole_w[i].data());
        ogp.push_back(whole_g[i].data());
      }
      if (opt::StepReport r = d.step(wp, gp); !r) {
        std::fprintf(stderr, "rank %d: step: %s\n", me, r.message);
        MPI_Abort(MPI_COMM_WORLD, 1);
      }
      if (!one.step(owp, ogp)) MPI_Abort(MPI_COMM_WORLD, 1);
    }
    int differ = 0;
    for (std::size_t i = 0; i < params.size(); ++i) {
      const std::vector<float> want = mine(whole_w[i], i);
      if (want.size() != w[i].size() ||
          (!want.empty() && std::memcmp(want.data(), w[i].data(), want.size() * sizeof(float)) != 0))
        ++differ;
    }
    MPI_Allreduce(&differ, &failed, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (me == 0)
      std::printf("after 3 steps the sharded, cut parameters %s the single process's bit for bit\n",
                  failed == 0 ? "equal" : "DIFFER FROM");
  }
  MPI_Finalize();
  return failed == 0 ? 0 : 1;
}
