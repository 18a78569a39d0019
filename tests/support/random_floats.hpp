// SPDX-License-Identifier: Apache-2.0
/// \file
/// Gaussian float arrays from a seed: the parameters and gradients of the optimizer suites.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "schatten/core/random.hpp"

namespace schatten::test {

/// n floats drawn as scale · N(0, 1) from Rng(seed), in order.
inline std::vector<float> random_vec(std::size_t n, std::uint64_t seed, double scale = 0.1) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (float& x : v)
    x = static_cast<float>(scale * rng.normal());
  return v;
}

}  // namespace schatten::test
