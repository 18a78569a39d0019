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
/// - bf16_round_stochastic rounds to one of the two neighbouring bf16 values, up with probability
///   equal to x's distance from the lower one in units of their gap, so that the rounding is
///   unbiased: over the 2¹⁶ values of its 16 random bits the mean of the results is x exactly
///   (tested). bf16_dither supplies those bits as a hash of x and a step number
///   (docs/optim.md "State precision", [P]).
///
/// The conversions, the hashes and load_state/store_state are SCHATTEN_HOST_DEVICE, so that the
/// host loops and the device kernels share them.
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

/// x rounded to the bf16 below or above it by the low 16 bits of r: up when they and x's 16
/// dropped bits sum to 2¹⁶ or more, which for r uniform on [0, 2¹⁶) happens with probability
/// (dropped bits)/2¹⁶, the distance to the lower neighbour in units of the gap (file comment).
/// The neighbours are those of |x| (the sign is kept), so the rounding is unbiased for negative
/// values too; bf16 values come back unchanged for every r. NaN and ±∞ as bf16_round; a finite x
/// never becomes ∞: what would round up past kBf16Max stays ±kBf16Max (bf16_round's ∞ above
/// kBf16Max + half a unit would otherwise come with a probability here).
SCHATTEN_HOST_DEVICE inline std::uint16_t bf16_round_stochastic(float x, std::uint32_t r) {
  std::uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  const std::uint32_t magnitude = u & 0x7FFFFFFFu;
  if (magnitude > 0x7F800000u) return static_cast<std::uint16_t>((u >> 16) | 0x0040u);  // quiet NaN
  if (magnitude == 0x7F800000u) return static_cast<std::uint16_t>(u >> 16);             // ±∞
  // At most 0x7F7FFFFF + 0xFFFF: the carry can reach the exponent (the next binade, or ∞'s
  // pattern 0x7F80 at the top) but never the sign bit.
  std::uint16_t h = static_cast<std::uint16_t>((u + (r & 0xFFFFu)) >> 16);
  if ((h & 0x7FFFu) == 0x7F80u) h = static_cast<std::uint16_t>((h & 0x8000u) | 0x7F7Fu);  // ±kBf16Max
  return h;
}

/// The per-step key of bf16_dither: the 64-bit finaliser of SplitMix64 (Steele, Lea and Flood,
/// "Fast splittable pseudorandom number generators", OOPSLA 2014, with Stafford's "Mix13"
/// constants, as in Java's SplittableRandom) of the step times ⌊2⁶⁴/φ⌋ (the same generator's
/// increment), its upper half. Computed once per kernel pass (Bf16Stochastic).
SCHATTEN_HOST_DEVICE inline std::uint32_t bf16_dither_key(std::uint64_t step) {
  std::uint64_t z = step * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<std::uint32_t>(z >> 32);
}
/// 16 pseudo-random bits for rounding x under a step's key: the 32-bit finaliser "lowbias32"
/// (C. Wellons, "Prospecting for hash functions", 2018; its constants) of x's bit pattern xor
/// the key, the upper 16 bits: two 32-bit multiplications per element, the 64-bit mixing of the
/// step being done once per pass (bf16_dither_key).
SCHATTEN_HOST_DEVICE inline std::uint32_t bf16_dither_bits(float x, std::uint32_t key) {
  std::uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  u ^= key;
  u ^= u >> 16;
  u *= 0x7FEB352Du;
  u ^= u >> 15;
  u *= 0x846CA68Bu;
  u ^= u >> 16;
  return u >> 16;
}
/// 16 pseudo-random bits for rounding x at step `step` (1-based): bf16_dither_bits of x under
/// bf16_dither_key(step). A function of the value and the step only, never of where the element
/// lies, so the same element rounds alike on every host, device, rank and shard layout, and a run
/// resumed from a checkpoint (which holds the step) rounds as the uninterrupted one. The step
/// changes the bits from one step to the next, so an element whose unrounded value repeats (a
/// momentum that stagnates under rounding to nearest) rounds up in the long run with the
/// probability rounding asks for.
SCHATTEN_HOST_DEVICE inline std::uint32_t bf16_dither(float x, std::uint64_t step) {
  return bf16_dither_bits(x, bf16_dither_key(step));
}

/// How a value is rounded when it is stored in a narrower format.
enum class Rounding { nearest, stochastic };

/// The storage of a momentum buffer (the rules' `mu_storage`, docs/optim.md "State precision"):
/// fp32, or bf16 rounded to nearest (the default for bf16) or stochastically (bf16_dither of the
/// rule's step). Converts implicitly from a Precision, so `o.mu_storage = Precision::bf16` keeps
/// its meaning; `StateStorage::bf16_stochastic()` names the third. Compared with == as a whole:
/// comparing it with a bare Precision is refused at compile time (`.precision` says which half).
struct StateStorage {
  Precision precision = Precision::fp32;
  Rounding rounding = Rounding::nearest;

  constexpr StateStorage() = default;
  constexpr StateStorage(Precision p, Rounding r = Rounding::nearest)
      : precision(p), rounding(r) {}  // NOLINT
  static constexpr StateStorage bf16_stochastic() { return {Precision::bf16, Rounding::stochastic}; }
  /// True for 16-bit storage, whichever rounding.
  constexpr bool bf16() const { return precision == Precision::bf16; }

  friend constexpr bool operator==(StateStorage a, StateStorage b) {
    return a.precision == b.precision && a.rounding == b.rounding;
  }
  friend constexpr bool operator!=(StateStorage a, StateStorage b) { return !(a == b); }
  friend bool operator==(StateStorage, Precision) = delete;
  friend bool operator==(Precision, StateStorage) = delete;
  friend bool operator!=(StateStorage, Precision) = delete;
  friend bool operator!=(Precision, StateStorage) = delete;
};

/// "fp32", "bf16" or "bf16_stochastic" (the replay tool's mu_storage= values); other
/// combinations, which the rules' check() refuses, by their precision's name.
inline const char* to_string(StateStorage s) noexcept {
  if (s.bf16() && s.rounding == Rounding::stochastic) return "bf16_stochastic";
  return to_string(s.precision);
}

/// How one kernel pass stores its bf16 elements: the storage's rounding and, for stochastic
/// rounding, the step that seeds bf16_dither (the rule's 1-based step count). The kernels take it
/// at run time and hand their element loops Bf16Nearest or Bf16Stochastic (with_store).
struct Bf16Store {
  Rounding rounding = Rounding::nearest;
  std::uint64_t step = 0;
  /// The pass of 1-based step `step` of a buffer in `storage`.
  static Bf16Store of(StateStorage storage, std::int64_t step) {
    return {storage.rounding, static_cast<std::uint64_t>(step)};
  }
};
/// Rounding to nearest, known at compile time: the element loops of the default storage keep
/// the code (vectorised on the CPU) they had before stochastic rounding existed.
struct Bf16Nearest {};
/// Stochastic rounding under one step's key (bf16_dither_key), known at compile time.
struct Bf16Stochastic {
  std::uint32_t key;
};

/// f(Bf16Stochastic{key of how.step}) when `how` rounds stochastically, else f(Bf16Nearest{}):
/// one instantiation of the element loop per rounding, chosen once per pass.
template <class F>
decltype(auto) with_store(Bf16Store how, F&& f) {
  if (how.rounding == Rounding::stochastic) return f(Bf16Stochastic{bf16_dither_key(how.step)});
  return f(Bf16Nearest{});
}

/// Reading and writing a state element of either storage: float elements as they are, bf16
/// elements widened, and rounded as the last argument says (the compile-time Bf16Nearest or
/// Bf16Stochastic of with_store). The element-wise kernels of the momentum rules are written once
/// against these (optim/transforms.hpp).
SCHATTEN_HOST_DEVICE inline float load_state(float x) { return x; }
SCHATTEN_HOST_DEVICE inline float load_state(std::uint16_t h) { return bf16_to_float(h); }
SCHATTEN_HOST_DEVICE inline void store_state(float& to, float x, Bf16Nearest = {}) { to = x; }
SCHATTEN_HOST_DEVICE inline void store_state(std::uint16_t& to, float x, Bf16Nearest = {}) {
  to = bf16_round(x);
}
SCHATTEN_HOST_DEVICE inline void store_state(float& to, float x, Bf16Stochastic) { to = x; }
SCHATTEN_HOST_DEVICE inline void store_state(std::uint16_t& to, float x, Bf16Stochastic s) {
  to = bf16_round_stochastic(x, bf16_dither_bits(x, s.key));
}
}  // namespace schatten
