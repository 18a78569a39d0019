// SPDX-License-Identifier: Apache-2.0
/// \file
/// IEEE binary16 (fp16: 1 sign, 5 exponent, 10 stored mantissa bits) as 16-bit patterns, and
/// correctly rounded conversions of doubles to fp16 and bf16. They are the software 16-bit
/// storage of the portable low-precision iteration (PolarOptions::compute = bf16 / fp16 on builds
/// without a vendor 16-bit GEMM: docs/kernels/polar.md "16-bit iteration"), where Kokkos' own
/// 16-bit types are plain floats (its host backends).
///
/// - fp16_to_float is exact (every fp16 value is a float), subnormals included.
/// - fp16_round rounds to nearest, ties to even, as IEEE 754 does: relative error at most 2⁻¹¹
///   for normal results; values from 65520 (the largest fp16, 65504, plus half a unit) up round to
///   ±infinity; below 2⁻¹⁴ the result is an fp16 subnormal (spacing 2⁻²⁴), and magnitudes up to
///   2⁻²⁵ round to ±0; NaN stays NaN (quiet, sign kept).
/// - bf16_from_double and fp16_from_double round a double to nearest, ties to even, once: the
///   double is first narrowed to a float by rounding to odd (the float towards zero, its last
///   bit set when the narrowing was inexact), which keeps the information that decides the second
///   rounding, since a float has at least two more bits than either 16-bit format (Boldo and
///   Melquiond, "Emulation of FMA and correctly rounded sums: proved algorithms using rounding to
///   odd", IEEE TC 2008). A plain float in between could round twice (a double just above a tie
///   would land on the tie and then go to even).
///
/// All functions are SCHATTEN_HOST_DEVICE: the host loops and the device kernels share them.
#pragma once

#include <cstdint>
#include <cstring>

#include "schatten/core/bf16.hpp"
#include "schatten/core/types.hpp"

namespace schatten {

/// The largest finite fp16 value, 0x7BFF: (2 − 2⁻¹⁰)·2¹⁵ = 65504.
constexpr float kFp16Max = 65504.0f;

/// The float of an fp16 pattern (exact).
SCHATTEN_HOST_DEVICE inline float fp16_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
  std::uint32_t u;
  if (e == 0x1Fu) {
    u = sign | 0x7F800000u | (m << 13);  // ±∞, NaN (payload kept)
  } else if (e != 0) {
    u = sign | ((e + 112u) << 23) | (m << 13);  // normal: exponent rebiased by 127 − 15
  } else {
    // zero or subnormal: m·2⁻²⁴, exact in float
    const float f = static_cast<float>(m) * 5.9604644775390625e-8f;
    std::memcpy(&u, &f, sizeof u);
    u |= sign;
  }
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

/// x rounded to the nearest fp16, ties to even (file comment).
SCHATTEN_HOST_DEVICE inline std::uint16_t fp16_round(float x) {
  std::uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  const std::uint16_t sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
  const std::uint32_t a = u & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return static_cast<std::uint16_t>(sign | 0x7E00u | ((a >> 13) & 0x3FFu));  // quiet NaN
  if (a >= 0x477FF000u) return static_cast<std::uint16_t>(sign | 0x7C00u);  // ≥ 65520 (and ∞): ∞
  if (a >= 0x38800000u) {
    // Normal result (≥ 2⁻¹⁴): round the 23-bit mantissa at bit 13, ties to even; a carry moves
    // into the exponent, which the line above keeps below the infinity pattern.
    const std::uint32_t r = a + 0xFFFu + ((a >> 13) & 1u);
    return static_cast<std::uint16_t>(sign | ((r - (112u << 23)) >> 13));
  }
  if (a < 0x33000000u) return sign;  // ≤ 2⁻²⁵ (half the smallest subnormal, a tie to even 0)
  // Subnormal result: q = round(|x| / 2⁻²⁴). |x| = m·2^(e − 150), so q = m / 2^(126 − e).
  const std::uint32_t e = a >> 23, m = (a & 0x7FFFFFu) | 0x800000u;
  const std::uint32_t s = 126u - e;  // 14 … 24
  std::uint32_t q = m >> s;
  const std::uint32_t rest = m & ((1u << s) - 1u), half = 1u << (s - 1u);
  if (rest > half || (rest == half && (q & 1u))) ++q;  // q may reach 0x400, the smallest normal
  return static_cast<std::uint16_t>(sign | q);
}

/// x narrowed to a float by rounding to odd: the float nearest x towards zero, with its last
/// mantissa bit set when that float is not x. Finite doubles beyond the float range give the
/// largest float of x's sign with the bit set (odd: a second rounding to a narrower format then
/// sends it up to infinity or down as x itself would go); ±∞ and NaN convert as they are.
SCHATTEN_HOST_DEVICE inline float float_round_to_odd(double x) {
  float f = static_cast<float>(x);  // to nearest
  const double back = static_cast<double>(f);
  if (back == x || x != x) return f;  // exact, or NaN
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  // f rounded away from zero when |f| > |x| (∞ included): step back one float towards zero.
  if ((back > 0 && back > x) || (back < 0 && back < x)) --u;
  u |= 1u;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

/// x rounded to the nearest bf16, ties to even, once (file comment).
SCHATTEN_HOST_DEVICE inline std::uint16_t bf16_from_double(double x) {
  return bf16_round(float_round_to_odd(x));
}

/// x rounded to the nearest fp16, ties to even, once (file comment).
SCHATTEN_HOST_DEVICE inline std::uint16_t fp16_from_double(double x) {
  return fp16_round(float_round_to_odd(x));
}

}  // namespace schatten
