// SPDX-License-Identifier: Apache-2.0
/// \file
/// The contents the fault-injection writer (checkpoint_writer.cpp) gives checkpoint k, shared
/// with the test that checks them.
#pragma once

#include <cstdint>

namespace schatten::test {
/// Element i of checkpoint k's field "w": distinct per (k, i) and exactly representable, so a
/// checkpoint mixing two writes, or a torn one, cannot pass for a complete one.
inline float expected_value(long k, long i) {
  return static_cast<float>((k * 1000003L + i) % 8388608L);  // < 2^23: exact in float
}
}  // namespace schatten::test
