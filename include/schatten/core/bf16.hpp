// SPDX-License-Identifier: Apache-2.0
/// \file
/// bf16 (bfloat16: 1 sign, 8 exponent, 7 stored mantissa bits; the upper half of an IEEE float)
/// as 16-bit patterns, for the optional 16-bit storage of optimizer momentum (Bf16Buffer,
/// docs/optim.md "State precision"). Arithmetic stays in float: a value is widened when read
/// and rounded when stored.
///
/// - bf16_to_float is exact (every bf16 value is a float).
/// - bf16_round rounds to nearest, ties to even: relative error at most 2⁻⁸ = 0.39 % (half a
///   unit in the last of 8 significant bits), for normal values; finite floats above the largest
///   bf16 value, kBf16Max = (2 − 2⁻⁷)·2¹²⁷ ≈ 3.3895e38, by more than half a unit round to
///   infinity, as IEEE rounding does; NaN stays NaN (made quiet, sign kept); ±0, ±∞ and
///   subnormals (rounded to bf16 subnormals; bf16 has float's exponent range) are kept.
///
/// Both are SCHATTEN_HOST_DEVICE so that the host loops and the device kernels share them.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "schatten/core/types.hpp"

namespace schatten {

/// The largest finite bf16 value, 0x7F7F: (2 − 2⁻⁷)·2¹²⁷.
constexpr float kBf16Max = 3.38953139e38f;

/// The float of a bf16 pattern (exact).
SCHATTEN_HOST_DEVICE inline float bf16_to_float(std::uint16_t h) {
  const std::uint32_t u = static_cast<std::uint32_t>(h) << 16;
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

/// The floats of host bf16 patterns, e.g. a Bf16Buffer's to_vector() (exact; host only).
inline std::vector<float> bf16_to_floats(const std::vector<std::uint16_t>& h) {
  std::vector<float> f(h.size());
  for (std::size_t k = 0; k < h.size(); ++k)
    f[k] = bf16_to_float(h[k]);
  return f;
}

/// x rounded to the nearest bf16, ties to even (file comment).
SCHATTEN_HOST_DEVICE inline std::uint16_t bf16_round(float x) {
  std::uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<std::uint16_t>((u >> 16) | 0x0040u);  // quiet NaN
  u += 0x7FFFu + ((u >> 16) & 1u);  // carries into the exponent when the mantissa rounds up
  return static_cast<std::uint16_t>(u >> 16);
}

/// Reading and writing a state element of either storage: float elements as they are, bf16
/// elements widened and rounded. The element-wise kernels of the momentum rules are written once
/// against these (optim/transforms.hpp).
SCHATTEN_HOST_DEVICE inline float load_state(float x) { return x; }
SCHATTEN_HOST_DEVICE inline float load_state(std::uint16_t h) { return bf16_to_float(h); }
SCHATTEN_HOST_DEVICE inline void store_state(float& to, float x) { to = x; }
SCHATTEN_HOST_DEVICE inline void store_state(std::uint16_t& to, float x) { to = bf16_round(x); }

}  // namespace schatten
