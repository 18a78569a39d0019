// SPDX-License-Identifier: Apache-2.0
/// \file
/// Example (compiled and run by the tests under `mpiexec -n 2`): data-parallel training with Dion
/// without all-reducing the matrices' gradients, microsoft/dion's compressed all-reduce. Every
/// rank holds the whole model and computes its own gradients on its own data. The framework
/// all-reduces (averages) only the gradients of the parameters AdamW steps (the embedding and the
/// norm, laid out `replicated`); each hidden matrix is laid out `Layout::unreduced` and gets the
/// rank's own gradient. Dion then averages only its low-rank panels, (m + n)·k floats per matrix
/// instead of its m·n gradient. The two layers' matrices of one shape step together, each rank
/// orthonormalising its share of their averaged panels (microsoft/dion's batches). Every rank
/// checks its model against one process fed the ranks' mean gradient: equal to float rounding
/// (the averages add in another order), and the same bits on every rank (docs/distributed.md
/// "Unreduced gradients").
#include <mpi.h>
#include <schatten/distributed/mpi_comm.hpp>
#include <schatten/distributed/mpi_step.hpp>
#include <schatten/optim/dion.hpp>
#include <schatten/optim/presets.hpp>
#include <schatten/schatten.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

namespace {
namespace opt = schatten::optim;
namespace dist = schatten::distributed;
using schatten::index_t;

/// Deterministic values from a seed.
void fill(std::vector<float>& v, std::uint64_t seed, double scale) {
  schatten::Rng rng(seed);
  for (float& x : v)
    x = static_cast<float>(scale * rng.normal());
}
std::vector<float*> pointers(std::vector<std::vector<float>>& v) {
  std::vector<float*> p;
  for (auto& x : v)
    p.push_back(x.data());
  return p;
}
}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int failed = 0;
  {
    schatten::Runtime runtime(argc, argv);
    const dist::Communicator comm = dist::communicator(MPI_COMM_WORLD);
    const int me = comm.rank(), n = comm.size();
    const std::vector<opt::ParamSpec> params = {
        {"embed.weight", {96, 32}},       {"layer0.fc1.weight", {128, 32}}, {"layer0.fc2.weight", {32, 128}},
        {"layer0.proj.weight", {32, 32}}, {"layer0.norm.weight", {32}},     {"layer1.fc1.weight", {128, 32}},
        {"layer1.fc2.weight", {32, 128}}, {"layer1.proj.weight", {32, 32}}, {"layer1.norm.weight", {32}}};
    const auto labels = opt::propose_labels(params);  // the embedding and the norm: adamw
    opt::DionOptions dion_options;
    dion_options.rank_fraction = 0.25;  // k = 8 of the 32 singular directions
    dion_options.lr = opt::Schedule::constant(0.02);
    auto routes = [&](auto make) {
      return make(opt::route("muon", opt::dion(dion_options)), opt::route("adamw", opt::adamw()));
    };
    auto d = routes([&](auto... r) { return dist::distributed_partition(comm, params, labels, r...); });
    std::vector<dist::Layout> layouts;
    for (const std::string& label : labels)
      layouts.push_back(label == "muon" ? dist::Layout::unreduced : dist::Layout::replicated);
    d.set_layouts(layouts);
    if (opt::StepReport r = d.init(); !r) {
      std::fprintf(stderr, "rank %d: init: %s\n", me, r.message);
      MPI_Abort(MPI_COMM_WORLD, 1);
    }

    // The model (the same on every rank) and one process's copy, stepped with the mean gradient.
    const std::size_t np = params.size();
    std::vector<std::vector<float>> w, g, ref_w, mean;
    for (std::size_t i = 0; i < np; ++i) {
      w.emplace_back(static_cast<std::size_t>(opt::flatten(params[i].shape).size()));
      fill(w.back(), 10 + i, 0.02);
    }
    ref_w = w;
    auto one = routes([&](auto... r) { return opt::partition(params, labels, r...); });
    if (!one.init()) MPI_Abort(MPI_COMM_WORLD, 1);

    std::int64_t step_bytes = 0, matrix_floats = 0;
    for (int t = 0; t < 5; ++t) {
      // Backward on this rank's data: its own gradients.
      g = w;
      for (std::size_t i = 0; i < np; ++i)
        fill(g[i], 1000 * (t + 1) + 100 * me + i, 1.0);
      // What the framework would all-reduce: the mean gradient (here of every parameter, for the
      // check below; the step itself reads it for the replicated parameters only).
      mean = g;
      for (std::size_t i = 0; i < np; ++i) {
        MPI_Allreduce(MPI_IN_PLACE, mean[i].data(), static_cast<int>(mean[i].size()), MPI_FLOAT, MPI_SUM,
                      MPI_COMM_WORLD);
        for (float& x : mean[i])
          x /= static_cast<float>(n);
        if (layouts[i] == dist::Layout::replicated) g[i] = mean[i];
      }
      comm.reset_traffic();
      if (opt::StepReport r = d.step(pointers(w), pointers(g)); !r) {
        std::fprintf(stderr, "rank %d: step: %s\n", me, r.message);
        MPI_Abort(MPI_COMM_WORLD, 1);
      }
      step_bytes = comm.traffic().bytes_received;
      if (!one.step(pointers(ref_w), pointers(mean))) MPI_Abort(MPI_COMM_WORLD, 1);
    }
    // One process's trajectory to float rounding: the largest difference against the largest
    // change of a weight (the tests measure 5e-6 at most; 1e-4 leaves room for other BLAS).
    double gap = 0.0, moved = 0.0;
    for (std::size_t i = 0; i < np; ++i) {
      std::vector<float> w0(w[i].size());
      fill(w0, 10 + i, 0.02);
      for (std::size_t e = 0; e < w[i].size(); ++e) {
        gap = std::max(gap, std::fabs(double(w[i][e]) - double(ref_w[i][e])));
        moved = std::max(moved, std::fabs(double(ref_w[i][e]) - double(w0[e])));
      }
      if (layouts[i] == dist::Layout::unreduced) matrix_floats += static_cast<index_t>(w[i].size());
    }
    failed = gap <= 1e-4 * moved ? 0 : 1;
    MPI_Allreduce(MPI_IN_PLACE, &failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (me == 0) {
      std::printf("%d rank(s), Dion at rank fraction 0.25 on the %lld floats of the hidden matrices\n", n,
                  static_cast<long long>(matrix_floats));
      std::printf(
          "bytes received by rank 0 in the last step: %lld (Dion's panels, AdamW's updates, the "
          "agreements); the matrices' gradients alone are %lld\n",
          static_cast<long long>(step_bytes), static_cast<long long>(4 * matrix_floats));
      std::printf("5 steps: %s (largest difference %.2e of the largest change)\n",
                  failed ? "the model differs from one process's" : "every rank's model is one process's",
                  gap / moved);
    }
  }
  MPI_Finalize();
  return failed ? 1 : 0;
}
