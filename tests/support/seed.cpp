// SPDX-License-Identifier: Apache-2.0
/// \file
/// The suite's seed (support/seed.hpp), shared by the doctest mains (tests/main.cpp and
/// tests/distributed/main_mpi.cpp).
#include "support/seed.hpp"

#include <cstdlib>
#include <cstring>

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
std::vector<char*> take_seed(int argc, char** argv) {
  if (const char* env = std::getenv("SCHATTEN_SEED")) g_seed = std::strtoull(env, nullptr, 10);
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    if (std::strncmp(argv[i], "--seed=", 7) == 0) {
      g_seed = std::strtoull(argv[i] + 7, nullptr, 10);
      continue;
    }
    rest.push_back(argv[i]);
  }
  return rest;
}
}  // namespace schatten::test
