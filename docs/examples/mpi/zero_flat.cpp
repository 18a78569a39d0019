// SPDX-License-Identifier: Apache-2.0
/// \file
/// Example (compiled and run by the tests under `mpiexec -n 2`): Muon + AdamW as a distributed
/// optimizer over flat buffers, the way Megatron's distributed optimizer and ZeRO-1/2 lay out
/// data-parallel training. Every rank holds the whole model; the gradients of all parameters
/// live in one flat buffer (parameters in reverse order, starts aligned to 64 floats, padded to
/// a multiple of 64 · ranks), which is reduce-scattered so that each rank gets the averaged
/// gradient of its equal part of the buffer. Each rank keeps the main (fp32) copy of the same
/// part of the parameters. The fused QKV projection is orthogonalised as three matrices Q, K and
/// V (Megatron's muon_split_qkv; optim::SplitPartition). The optimizer is told which run of every
/// parameter that part holds (distributed::reversed_flat_buffer → set_source_elements), and
/// each piece of the QKV holds a run of its own: AdamW steps every rank's runs where they lie,
/// Muon gathers each matrix's runs to one owner and scatters the update's runs back; a matrix
/// goes to another rank than the one holding most of it only when the balance gained pays for
/// its transfer, at the transfer cost measured on this machine (OwnerChoice::transfer_aware,
/// measure_transfer_cost; docs/distributed.md "Choosing owners"). The updated
/// parts are then all-gathered into every rank's model. Every rank checks the model against one
/// process stepping whole arrays with the same averaged gradients: bit for bit
/// (docs/distributed.md "Flat shards", "Cut parameters").
#include <mpi.h>
#include <schatten/distributed/mpi_comm.hpp>
#include <schatten/distributed/mpi_step.hpp>
#include <schatten/optim/presets.hpp>
#include <schatten/optim/split.hpp>
#include <schatten/schatten.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

namespace {
namespace opt = schatten::optim;
namespace dist = schatten::distributed;
using schatten::index_t;

/// Deterministic values from a seed.
void fill(float* v, index_t n, std::uint64_t seed, double scale) {
  schatten::Rng rng(seed);
  for (index_t k = 0; k < n; ++k)
    v[k] = static_cast<float>(scale * rng.normal());
}
}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int failed = 0;
  {
    schatten::Runtime runtime(argc, argv);
    const dist::Communicator comm = dist::communicator(MPI_COMM_WORLD);
    const int me = comm.rank(), n = comm.size();
    // Width 36, tied embeddings: with 2 ranks the cut between the parts falls inside row 44 of
    // the fused QKV, row 8 of K.
    const std::vector<opt::ParamSpec> params = {
        {"embed.weight", {165, 36}},    {"layer.qkv.weight", {108, 36}}, {"layer.proj.weight", {36, 36}},
        {"layer.fc1.weight", {72, 36}}, {"layer.fc2.weight", {36, 72}},  {"layer.norm.weight", {36}}};
    opt::SplitSpec qkv;
    qkv.name = "layer.qkv.weight";
    qkv.count = 3;
    qkv.parts = {"q", "k", "v"};
    const opt::SplitLayout layout(params, {qkv});
    const auto labels = opt::propose_labels(layout.pieces());  // embed and the norm: adamw

    // The flat buffer: where each parameter lies, and the ranks' equal parts of it.
    const std::size_t np = params.size();
    std::vector<index_t> sizes;
    for (const opt::ParamSpec& p : params)
      sizes.push_back(opt::flatten(p.shape).size());
    const dist::FlatBuffer buffer = dist::reversed_flat_buffer(sizes, 64, n);
    const std::vector<index_t>&offsets = buffer.offsets,
          &parts = buffer.parts;  // rank r: [parts[r], parts[r+1])
    const std::vector<std::vector<index_t>>& runs = buffer.bounds;
    const index_t padded = buffer.size, part = padded / n;

    auto d = opt::split_partition(
        layout, dist::distributed_partition(comm, layout.pieces(), labels, opt::route("muon", opt::muon()),
                                            opt::route("adamw", opt::adamw())));
    d.set_source_elements(runs);
    // Owners: move a matrix only when it pays, at this machine's cost of moving a float (the
    // same value on every rank; owners change where the work is done, never the result).
    d.partition().set_owner_choice(dist::OwnerChoice::transfer_aware);
    d.partition().set_transfer_cost(dist::measure_transfer_cost(comm));
    if (opt::StepReport r = d.init(); !r) {
      std::fprintf(stderr, "rank %d: init: %s\n", me, r.message);
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
    if (me == 0) {
      std::printf("%d rank(s), a buffer of %lld floats in parts of %lld:\n", n,
                  static_cast<long long>(padded), static_cast<long long>(part));
      for (std::size_t i = 0; i < np; ++i) {
        std::printf("  %-18s elements [%5lld, %5lld) of the buffer, runs", params[i].name.c_str(),
                    static_cast<long long>(offsets[i]), static_cast<long long>(offsets[i] + sizes[i]));
        for (int r = 0; r < n; ++r)
          std::printf(" [%lld, %lld)", static_cast<long long>(runs[i][std::size_t(r)]),
                      static_cast<long long>(runs[i][std::size_t(r) + 1]));
        std::printf("\n");
      }
      // The partition's parameters: the pieces, each owned by a rank or stepped where it lies.
      for (std::size_t k = 0; k < layout.pieces().size(); ++k) {
        const int owner = d.partition().owners()[k];
        std::printf("  %-21s %s", layout.pieces()[k].name.c_str(),
                    owner < 0 ? "stepped where it lies" : "owner rank");
        if (owner >= 0) std::printf(" %d", owner);
        std::printf("\n");
      }
      const dist::ModelledStep& m = d.partition().modelled();
      std::printf("  modelled: work");
      for (double w : m.work)
        std::printf(" %.3g", w);
      std::printf(" flop-equivalents, exchange %.3g\n", m.exchange);
    }

    // The model (whole, on every rank), this rank's main parameters and its part of the
    // averaged gradient; a parameter's run is at offset + run begin − part begin of the part.
    std::vector<float> model(static_cast<std::size_t>(padded), 0.0f), grads(model.size());
    for (std::size_t i = 0; i < np; ++i)
      fill(model.data() + offsets[i], sizes[i], 10 + i, 0.02);
    std::vector<float> main_part(model.begin() + parts[std::size_t(me)],
                                 model.begin() + parts[std::size_t(me) + 1]);
    std::vector<float> grad_part(static_cast<std::size_t>(part));
    auto in_part = [&](std::vector<float>& p, std::size_t i) -> float* {
      const index_t b = runs[i][std::size_t(me)], e = runs[i][std::size_t(me) + 1];
      return e > b ? p.data() + (offsets[i] + b - parts[std::size_t(me)]) : nullptr;  // null: none here
    };

    // One process with whole arrays, fed the same averaged gradients (every rank runs it).
    auto one =
        opt::split_partition(layout, opt::partition(layout.pieces(), labels, opt::route("muon", opt::muon()),
                                                    opt::route("adamw", opt::adamw())));
    if (!one.init()) MPI_Abort(MPI_COMM_WORLD, 1);
    std::vector<std::vector<float>> ref_w, ref_g;
    for (std::size_t i = 0; i < np; ++i)
      ref_w.emplace_back(model.begin() + offsets[i], model.begin() + offsets[i] + sizes[i]);

    for (int t = 0; t < 3; ++t) {
      // Backward on this rank's data: its own gradients, summed over the ranks and averaged.
      std::fill(grads.begin(), grads.end(), 0.0f);
      for (std::size_t i = 0; i < np; ++i)
        fill(grads.data() + offsets[i], sizes[i], 1000 * (t + 1) + 100 * me + i, 1.0);
      MPI_Reduce_scatter_block(grads.data(), grad_part.data(), static_cast<int>(part), MPI_FLOAT, MPI_SUM,
                               MPI_COMM_WORLD);
      for (float& x : grad_part)
        x /= static_cast<float>(n);
      std::vector<float*> wp, gp;
      for (std::size_t i = 0; i < np; ++i) {
        wp.push_back(in_part(main_part, i));
        gp.push_back(in_part(grad_part, i));
      }
      if (opt::StepReport r = d.step(wp, gp); !r) {
        std::fprintf(stderr, "rank %d: step: %s\n", me, r.message);
        MPI_Abort(MPI_COMM_WORLD, 1);
      }
      // Every rank's updated part into every rank's model.
      MPI_Allgather(main_part.data(), static_cast<int>(part), MPI_FLOAT, model.data(), static_cast<int>(part),
                    MPI_FLOAT, MPI_COMM_WORLD);

      // The reference: the averaged gradient of the whole buffer (gathered), whole arrays.
      std::vector<float> averaged(model.size());
      MPI_Allgather(grad_part.data(), static_cast<int>(part), MPI_FLOAT, averaged.data(),
                    static_cast<int>(part), MPI_FLOAT, MPI_COMM_WORLD);
      std::vector<float*> owp, ogp;
      ref_g.clear();
      for (std::size_t i = 0; i < np; ++i) {
        ref_g.emplace_back(averaged.begin() + offsets[i], averaged.begin() + offsets[i] + sizes[i]);
        owp.push_back(ref_w[i].data());
        ogp.push_back(ref_g[i].data());
      }
      if (!one.step(owp, ogp)) MPI_Abort(MPI_COMM_WORLD, 1);
    }
    int differ = 0;
    for (std::size_t i = 0; i < np; ++i)
      if (std::memcmp(ref_w[i].data(), model.data() + offsets[i], ref_w[i].size() * sizeof(float)) != 0) {
        std::fprintf(stderr, "rank %d: %s differs from one process\n", me, params[i].name.c_str());
        ++differ;
      }
    MPI_Allreduce(&differ, &failed, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (me == 0)
      std::printf(failed ? "the model differs from one process\n"
                         : "3 steps: every rank's model equals one process's, bit for bit\n");
  }
  MPI_Finalize();
  return failed ? 1 : 0;
}
