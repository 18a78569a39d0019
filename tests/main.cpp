// SPDX-License-Identifier: Apache-2.0
/// \file
/// doctest main for every test executable: Kokkos runtime, and the seed that all random inputs
/// derive from (printed; override with --seed=N or the SCHATTEN_SEED environment variable).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "schatten/core/runtime.hpp"
#include "support/seed.hpp"

namespace schatten::test {
namespace {
std::uint64_t g_seed = 20261124;  // fixed default: runs are reproducible unless overridden
}
std::uint64_t global_seed() { return g_seed; }
std::uint64_t case_seed(const char* name, std::uint64_t salt) {
  // FNV-1a of the name, mixed with the global seed and a salt: stable across platforms.
  std::uint64_t h = 1469598103934665603ull;
  for (const char* p = name; *p; ++p)
    h = (h ^ static_cast<unsigned char>(*p)) * 1099511628211ull;
  return h ^ (g_seed * 0x9E3779B97F4A7C15ull) ^ (salt * 0xBF58476D1CE4E5B9ull);
}
}  // namespace schatten::test

int main(int argc, char** argv) {
  if (const char* env = std::getenv("SCHATTEN_SEED"))
    schatten::test::g_seed = std::strtoull(env, nullptr, 10);
  std::vector<char*> args;
  bool listing = false;  // doctest_discover_tests parses the listing: print nothing else then
  for (int i = 0; i < argc; ++i) {
    if (std::strncmp(argv[i], "--list", 6) == 0 || std::strncmp(argv[i], "-l", 2) == 0) listing = true;
    if (std::strncmp(argv[i], "--seed=", 7) == 0) {
      schatten::test::g_seed = std::strtoull(argv[i] + 7, nullptr, 10);
      continue;
    }
    args.push_back(argv[i]);
  }
  int n = static_cast<int>(args.size());
  // Listing test names needs no Kokkos: doctest_discover_tests runs it at build time, where a
  // GPU build has no device to initialise.
  std::optional<schatten::Runtime> runtime;
  if (!listing) runtime.emplace(n, args.data());
  if (!listing)
    std::printf("schatten tests: seed %llu (override with --seed=N or SCHATTEN_SEED); %s\n",
                static_cast<unsigned long long>(schatten::test::g_seed),
                schatten::runtime_description().c_str());
  doctest::Context context;
  context.applyCommandLine(n, args.data());
  return context.run();
}
