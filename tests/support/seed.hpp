// SPDX-License-Identifier: Apache-2.0
/// \file
/// Seeds of the test suite: one global seed (tests/main.cpp) and a derived seed per case.
#pragma once

#include <cstdint>

namespace schatten::test {
/// The seed printed at start-up.
std::uint64_t global_seed();
/// A seed for one named case (and an optional salt such as a batch index).
std::uint64_t case_seed(const char* name, std::uint64_t salt = 0);
}  // namespace schatten::test
