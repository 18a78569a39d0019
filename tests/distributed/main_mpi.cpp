// SPDX-License-Identifier: Apache-2.0
/// \file
/// doctest main of the MPI tests: MPI, then the Kokkos runtime, then the suite on every rank.
/// The process fails when any rank failed (the exit code is agreed over MPI_COMM_WORLD). Random
/// inputs derive from the suite's seed (support/seed.hpp: --seed=N or SCHATTEN_SEED), printed.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>
#include <mpi.h>

#include <cstdio>
#include <optional>
#include <vector>

#include "schatten/core/runtime.hpp"
#include "support/seed.hpp"

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rc = 0;
  {
    std::vector<char*> args = schatten::test::take_seed(argc, argv);
    int n = static_cast<int>(args.size());
    std::optional<schatten::Runtime> runtime;
    runtime.emplace(n, args.data());
    int rank = 0, size = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (rank == 0)
      std::printf("schatten MPI tests: %d rank(s), seed %llu (override with --seed=N or SCHATTEN_SEED); %s\n",
                  size, static_cast<unsigned long long>(schatten::test::global_seed()),
                  schatten::runtime_description().c_str());
    doctest::Context context;
    context.applyCommandLine(n, args.data());
    int mine = context.run();
    MPI_Allreduce(&mine, &rc, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  }
  MPI_Finalize();
  return rc;
}
