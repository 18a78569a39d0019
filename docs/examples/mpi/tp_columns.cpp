// SPDX-License-Identifier: Apache-2.0
/// \file
/// Example (compiled and run by the tests under `mpiexec -n 2`): MuonClip over MPI on
/// column-sharded parameters. GPT-2 keeps its attention input projection as a Conv1D, an
/// (in, out) = (d, 3d) kernel [Q | K | V] with a 3d bias; sharding it along its output dimension
/// (a DTensor Shard(1) placement, distributed::chunk_bounds of the columns) gives every rank a
/// band of columns of every row, which is neither a run of rows nor of elements (with 2 ranks,
/// rank 0 holds Q and the first two key heads, rank 1 the other two and V). Each rank passes
/// only its band. optim::SplitPartition cuts Q, K and V out of the bands
/// (set_source_columns: a rank's band is a band of each piece, possibly empty), the distributed
/// partition gathers each piece to its owner for Muon, AdamW steps the bias and the norm where
/// they lie, and after each step QK-clip (Kimi K2's MuonClip) scales the query and key columns
/// of the firing heads that each rank holds (QkClip::set_columns). Every rank checks its bands
/// against one process stepping and clipping the whole arrays: bit for bit (docs/distributed.md
/// "Cut parameters", "QK-clip (MuonClip) on sharded parameters").
#include <mpi.h>
#include <schatten/distributed/mpi_comm.hpp>
#include <schatten/distributed/mpi_step.hpp>
#include <schatten/optim/presets.hpp>
#include <schatten/optim/qk_clip.hpp>
#include <schatten/optim/split.hpp>
#include <schatten/schatten.hpp>

#include <cstdint>
#include <cstdio>
#include <utility>
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

/// Columns [c0, c1) of every row of a row-major rows × cols array: a rank's band.
std::vector<float> band(const std::vector<float>& a, opt::BlockShape m, index_t c0, index_t c1) {
  std::vector<float> b;
  for (index_t r = 0; r < m.rows; ++r)
    b.insert(b.end(), a.begin() + r * m.cols + c0, a.begin() + r * m.cols + c1);
  return b;
}
}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int failed = 0;
  {
    schatten::Runtime runtime(argc, argv);
    const dist::Communicator comm = dist::communicator(MPI_COMM_WORLD);
    const int me = comm.rank(), n = comm.size();
    // Width 32, 4 heads of dim 8: c_attn is 32 × 96, [Q | K | V] by columns.
    constexpr index_t D = 32, H = 4, Dh = 8;
    const std::vector<opt::ParamSpec> params = {{"attn.c_attn.weight", {D, 3 * D}},
                                                {"attn.c_attn.bias", {3 * D}},
                                                {"attn.c_proj.weight", {D, D}},
                                                {"ln.weight", {D}}};
    opt::SplitSpec qkv;
    qkv.name = "attn.c_attn.weight";
    qkv.axis = 1;  // Conv1D: the pieces are column blocks
    qkv.count = 3;
    qkv.parts = {"q", "k", "v"};
    const opt::SplitLayout layout(params, {qkv});
    const auto labels = opt::propose_labels(layout.pieces());  // the bias and the norm: adamw
    opt::MuonOptions mo;
    mo.shape = opt::ScaleByShape::Rule::moonlight;  // MuonClip's Muon (Kimi K2)
    mo.weight_decay = 0.1;
    auto d = opt::split_partition(
        layout, dist::distributed_partition(comm, layout.pieces(), labels, opt::route("muon", opt::muon(mo)),
                                            opt::route("adamw", opt::adamw())));
    // Shard(1) of every parameter but the norm: torch.chunk of its columns (a 1-D bias is one
    // row of 96 columns).
    std::vector<std::vector<index_t>> columns(params.size());
    for (std::size_t i = 0; i < 3; ++i)
      columns[i] = dist::chunk_bounds(opt::flatten(params[i].shape).cols, n);
    d.set_source_columns(columns);
    if (opt::StepReport r = d.init(); !r) {
      std::fprintf(stderr, "rank %d: init: %s\n", me, r.message);
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
    // QK-clip on the caller's fused arrays: this rank's columns of each (all of the norm).
    const opt::QkLayer attention = opt::with_bias(opt::qk_fused("attn", "attn.c_attn.weight", H, H, Dh, 1),
                                                  "attn.c_attn.weight", "attn.c_attn.bias");
    const opt::QkClipOptions clip_options{20.0, 0.5};  // τ = 20
    opt::QkClip clip({attention}, clip_options);
    std::vector<std::pair<index_t, index_t>> mine;
    for (std::size_t i = 0; i < params.size(); ++i)
      mine.emplace_back(
          columns[i].empty() ? 0 : columns[i][std::size_t(me)],
          columns[i].empty() ? opt::flatten(params[i].shape).cols : columns[i][std::size_t(me) + 1]);
    if (!clip.init(params) || !clip.set_columns(mine)) MPI_Abort(MPI_COMM_WORLD, 1);
    if (me == 0) {
      std::printf("%d rank(s); pieces and their owners (-1: stepped where it lies):\n", n);
      for (std::size_t k = 0; k < layout.pieces().size(); ++k)
        std::printf("  %-22s %d\n", layout.pieces()[k].name.c_str(), d.partition().owners()[k]);
    }

    // One process: the whole arrays, the same gradients and logits (every rank runs it).
    auto one = opt::split_partition(layout,
                                    opt::partition(layout.pieces(), labels, opt::route("muon", opt::muon(mo)),
                                                   opt::route("adamw", opt::adamw())));
    opt::QkClip one_clip({attention}, clip_options);
    if (!one.init() || !one_clip.init(params)) MPI_Abort(MPI_COMM_WORLD, 1);
    std::vector<std::vector<float>> whole, w;
    for (std::size_t i = 0; i < params.size(); ++i) {
      whole.push_back(values(opt::flatten(params[i].shape).size(), 10 + i, 0.5));
      w.push_back(band(whole[i], opt::flatten(params[i].shape), mine[i].first, mine[i].second));
    }
    for (int t = 0; t < 3; ++t) {
      std::vector<std::vector<float>> g_whole, g;
      std::vector<float*> wp, gp, owp, ogp;
      for (std::size_t i = 0; i < params.size(); ++i) {
        const opt::BlockShape m = opt::flatten(params[i].shape);
        g_whole.push_back(values(m.size(), 1000 * (t + 1) + i, 1.0));
        g.push_back(band(g_whole[i], m, mine[i].first, mine[i].second));
      }
      for (std::size_t i = 0; i < params.size(); ++i) {
        wp.push_back(w[i].empty() ? nullptr : w[i].data());  // null: nothing of it here
        gp.push_back(g[i].empty() ? nullptr : g[i].data());
        owp.push_back(whole[i].data());
        ogp.push_back(g_whole[i].data());
      }
      if (opt::StepReport r = d.step(wp, gp); !r) {
        std::fprintf(stderr, "rank %d: step: %s\n", me, r.message);
        MPI_Abort(MPI_COMM_WORLD, 1);
      }
      if (!one.step(owp, ogp)) MPI_Abort(MPI_COMM_WORLD, 1);
      // The heads' largest logits of this step's forward pass (all-reduced with MAX in
      // training): heads 1 and 3 fire at τ = 20.
      const std::vector<float> logits = {12.0f, 35.0f + 5.0f * float(t), 19.0f, 60.0f};
      const opt::QkClipReport a = clip.apply(wp, logits), b = one_clip.apply(owp, logits);
      if (!a || !b) MPI_Abort(MPI_COMM_WORLD, 1);
      if (me == 0)
        std::printf("step %d: %lld head(s) clipped, smallest factor %.3f\n", t + 1,
                    static_cast<long long>(a.clipped_heads), a.min_factor);
    }
    int differ = 0;
    for (std::size_t i = 0; i < params.size(); ++i)
      if (band(whole[i], opt::flatten(params[i].shape), mine[i].first, mine[i].second) != w[i]) {
        std::fprintf(stderr, "rank %d: %s differs from one process\n", me, params[i].name.c_str());
        ++differ;
      }
    MPI_Allreduce(&differ, &failed, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (me == 0)
      std::printf(failed ? "the bands differ from one process\n"
                         : "3 steps of MuonClip: every rank's bands equal one process's, bit for bit\n");
  }
  MPI_Finalize();
  return failed ? 1 : 0;
}
