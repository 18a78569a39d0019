// SPDX-License-Identifier: Apache-2.0
/// \file
/// Seeds of the test suite: one global seed (support/seed.cpp) and a derived seed per case.
#pragma once

#include <cstdint>
#include <vector>

namespace schatten::test {
/// The seed printed at start-up.
std::uint64_t global_seed();
/// A seed for one named case (and an optional salt such as a batch index).
std::uint64_t case_seed(const char* name, std::uint64_t salt = 0);
/// Sets the global seed from the SCHATTEN_SEED environment variable, then from a `--seed=N`
/// argument (which wins), and returns the other arguments, for doctest. Without either the seed
/// is the fixed default 20261124. Every rank of an MPI run sees the same arguments and
/// environment, hence the same seed.
std::vector<char*> take_seed(int argc, char** argv);
}  // namespace schatten::test
