// SPDX-License-Identifier: Apache-2.0
/// \file
/// doctest main for every test executable: Kokkos runtime, and the seed that all random inputs
/// derive from (printed; override with --seed=N or the SCHATTEN_SEED environment variable).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <cstring>
#include <optional>
#include <vector>

#include "schatten/core/runtime.hpp"
#include "support/seed.hpp"

int main(int argc, char** argv) {
  std::vector<char*> args = schatten::test::take_seed(argc, argv);
  bool listing = false;  // doctest_discover_tests parses the listing: print nothing else then
  for (char* a : args)
    if (std::strncmp(a, "--list", 6) == 0 || std::strncmp(a, "-l", 2) == 0) listing = true;
  int n = static_cast<int>(args.size());
  // Listing test names needs no Kokkos: doctest_discover_tests runs it at build time, where a
  // GPU build has no device to initialise.
  std::optional<schatten::Runtime> runtime;
  if (!listing) runtime.emplace(n, args.data());
  if (!listing)
    std::printf("schatten tests: seed %llu (override with --seed=N or SCHATTEN_SEED); %s\n",
                static_cast<unsigned long long>(schatten::test::global_seed()),
                schatten::runtime_description().c_str());
  doctest::Context context;
  context.applyCommandLine(n, args.data());
  return context.run();
}
