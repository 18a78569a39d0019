// SPDX-License-Identifier: Apache-2.0
/// \file
/// measure_transfer_cost (include/schatten/distributed/mpi_step.hpp): the transfer cost of
/// OwnerChoice::transfer_aware, measured on this machine and communicator.
#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdint>
#include <vector>

#include "schatten/core/random.hpp"
#include "schatten/distributed/mpi_step.hpp"
#include "schatten/kernels/polar.hpp"
#include "schatten/optim/presets.hpp"

namespace schatten::distributed {

namespace {

/// Nanoseconds of the fastest of `reps` calls of f.
template <class F>
std::int64_t fastest(int reps, F&& f) {
  std::int64_t best = INT64_MAX;
  for (int k = 0; k < reps; ++k) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    const auto t1 = std::chrono::steady_clock::now();
    best =
        std::min<std::int64_t>(best, std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count());
  }
  return std::max<std::int64_t>(best, 1);
}

}  // namespace

double measure_transfer_cost(const Communicator& comm, index_t dim, std::int64_t floats, int reps) {
  const int n = comm.size();
  // The same arguments on every rank, so that every rank runs the same collectives.
  std::int64_t args[3] = {dim, floats, reps}, low[3] = {-dim, -floats, -std::int64_t(reps)};
  comm.allreduce_max(args, 3);
  comm.allreduce_max(low, 3);
  if (args[0] != -low[0] || args[1] != -low[1] || args[2] != -low[2] || dim < 2 || floats < 1 ||
      floats > INT_MAX || reps < 1)
    return -1.0;
  if (n == 1) return 0.0;
  // The compute rate: Keller Jordan's NS5 (the default cost model's unit) on a dim × dim
  // Gaussian matrix.
  const PolarOptions ns5 = optim::MuonOptions::keller_polar();
  std::vector<float> a(static_cast<std::size_t>(dim * dim)), q(a.size());
  Rng rng(20261129);
  for (float& x : a)
    x = static_cast<float>(rng.normal());
  Workspace ws;
  std::int64_t t[2];
  t[0] = fastest(reps, [&] {
    polar(MatrixRef<const float>(a.data(), dim, dim), MatrixRef<float>(q.data(), dim, dim), ns5, &ws);
  });
  // The transfer rate: an all-gather of `floats` floats, each rank contributing its share
  // (⌈floats / n⌉), so the buffer does not grow with the rank count.
  const std::int64_t share = (floats + n - 1) / n;
  std::vector<float> buf(static_cast<std::size_t>(share) * static_cast<std::size_t>(n), 1.0f);
  std::vector<std::int64_t> counts(static_cast<std::size_t>(n), share), displs;
  for (int r = 0; r < n; ++r)
    displs.push_back(std::int64_t(r) * share);
  t[1] = fastest(reps, [&] { comm.allgatherv(buf.data(), counts, displs); });
  comm.allreduce_max(t, 2);  // the slowest rank's times, the same on every rank
  const double flops_per_s = polar_flops(dim, dim, ns5) / (double(t[0]) * 1e-9);
  const double floats_per_s = double(n - 1) * double(share) / (double(t[1]) * 1e-9);
  return flops_per_s / floats_per_s;
}

}  // namespace schatten::distributed
