// SPDX-License-Identifier: Apache-2.0
/// \file
/// measure_transfer_cost and measure_transfer_costs (include/schatten/distributed/mpi_step.hpp):
/// the transfer costs of OwnerChoice::transfer_aware, measured on this machine and communicator.
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

/// True when every rank passed the same arguments and they are in range (measure_transfer_cost).
bool agreed(const Communicator& comm, index_t dim, std::int64_t floats, int reps) {
  std::int64_t args[3] = {dim, floats, reps}, low[3] = {-dim, -floats, -std::int64_t(reps)};
  comm.allreduce_max(args, 3);
  comm.allreduce_max(low, 3);
  return args[0] == -low[0] && args[1] == -low[1] && args[2] == -low[2] && dim >= 2 && floats >= 1 &&
         floats <= INT_MAX && reps >= 1;
}

/// Nanoseconds of the fastest of `reps` runs of Keller Jordan's NS5 (the default cost model's
/// unit) on a dim × dim Gaussian matrix, on this rank.
std::int64_t ns5_nanoseconds(index_t dim, int reps) {
  const PolarOptions ns5 = optim::MuonOptions::keller_polar();
  std::vector<float> a(static_cast<std::size_t>(dim * dim)), q(a.size());
  Rng rng(20261129);
  for (float& x : a)
    x = static_cast<float>(rng.normal());
  Workspace ws;
  return fastest(reps, [&] {
    polar(MatrixRef<const float>(a.data(), dim, dim), MatrixRef<float>(q.data(), dim, dim), ns5, &ws);
  });
}

/// NS5's flop rate at dim over a time in nanoseconds.
double ns5_flops_per_ns(index_t dim, std::int64_t ns) {
  return polar_flops(dim, dim, optim::MuonOptions::keller_polar()) / double(ns);
}

}  // namespace

double measure_transfer_cost(const Communicator& comm, index_t dim, std::int64_t floats, int reps) {
  const int n = comm.size();
  // The same arguments on every rank, so that every rank runs the same collectives.
  if (!agreed(comm, dim, floats, reps)) return -1.0;
  if (n == 1) return 0.0;
  std::int64_t t[2];
  t[0] = ns5_nanoseconds(dim, reps);
  // The transfer rate: an all-gather of `floats` floats, each rank contributing its share
  // (⌈floats / n⌉), so the buffer does not grow with the rank count.
  const std::int64_t share = (floats + n - 1) / n;
  std::vector<float> buf(static_cast<std::size_t>(share) * static_cast<std::size_t>(n), 1.0f);
  std::vector<std::int64_t> counts(static_cast<std::size_t>(n), share), displs;
  for (int r = 0; r < n; ++r)
    displs.push_back(std::int64_t(r) * share);
  t[1] = fastest(reps, [&] { comm.allgatherv(buf.data(), counts, displs); });
  comm.allreduce_max(t, 2);  // the slowest rank's times, the same on every rank
  const double floats_per_ns = double(n - 1) * double(share) / double(t[1]);
  return ns5_flops_per_ns(dim, t[0]) / floats_per_ns;
}

TransferCosts measure_transfer_costs(const Communicator& comm, index_t dim, std::int64_t floats, int reps) {
  const int n = comm.size(), me = comm.rank();
  if (!agreed(comm, dim, floats, reps)) return TransferCosts{};
  TransferCosts out = TransferCosts::uniform(n, 0.0);
  if (n == 1) return out;
  // times[0]: NS5; times[1 + a·n + b]: the message a → b, timed at b (0 elsewhere).
  std::vector<std::int64_t> times(1 + std::size_t(n) * std::size_t(n), 0);
  times[0] = ns5_nanoseconds(dim, reps);
  std::vector<float> buf(static_cast<std::size_t>(floats), 1.0f);
  for (int a = 0; a < n; ++a)
    for (int b = 0; b < n; ++b) {
      if (a == b) continue;
      std::int64_t best = INT64_MAX;
      for (int k = 0; k < reps; ++k) {
        comm.allreduce_min(0);  // every rank here: the link is alone
        if (me == a) comm.send(buf.data(), buf.size(), b, 7);
        if (me == b) best = std::min(best, fastest(1, [&] { comm.recv(buf.data(), buf.size(), a, 7); }));
      }
      if (me == b) times[1 + std::size_t(a) * std::size_t(n) + std::size_t(b)] = best;
    }
  comm.allreduce_max(times.data(), times.size());  // NS5: the slowest rank's; each link: its receiver's
  const double flops_per_ns = ns5_flops_per_ns(dim, times[0]);
  for (std::size_t a = 0; a < std::size_t(n); ++a)
    for (std::size_t b = 0; b < std::size_t(n); ++b)
      if (a != b)
        out.per_pair[a * std::size_t(n) + b] =
            flops_per_ns / (double(floats) / double(times[1 + a * std::size_t(n) + b]));
  return out;
}

}  // namespace schatten::distributed
