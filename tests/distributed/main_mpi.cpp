// SPDX-License-Identifier: Apache-2.0
/// \file
/// doctest main of the MPI tests: MPI, then the Kokkos runtime, then the suite on every rank.
/// The process fails when any rank failed (the exit code is agreed over MPI_COMM_WORLD).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>
#include <mpi.h>

#include <cstdio>
#include <optional>

#include "schatten/core/runtime.hpp"

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rc = 0;
  {
    std::optional<schatten::Runtime> runtime;
    runtime.emplace(argc, argv);
    int rank = 0, size = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (rank == 0)
      std::printf("schatten MPI tests: %d rank(s); %s\n", size, schatten::runtime_description().c_str());
    doctest::Context context;
    context.applyCommandLine(argc, argv);
    int mine = context.run();
    MPI_Allreduce(&mine, &rc, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  }
  MPI_Finalize();
  return rc;
}
