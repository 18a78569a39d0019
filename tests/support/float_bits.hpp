// SPDX-License-Identifier: Apache-2.0
/// \file
/// A float's IEEE bit pattern and back, for the tests of the 16-bit formats.
#pragma once

#include <cstdint>
#include <cstring>

namespace schatten::test {

inline std::uint32_t bits(float x) {
  std::uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}
inline float from_bits(std::uint32_t u) {
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

}  // namespace schatten::test
