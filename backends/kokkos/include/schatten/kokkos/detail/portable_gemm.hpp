// SPDX-License-Identifier: Apache-2.0
/// \file
/// The portable half of 16-bit iteration and of batching: software bf16/fp16 storage types, and
/// a batched GEMM written with Kokkos teams, for every execution space (CPU, CUDA, HIP) and
/// element type, with no vendor library. Used where the build has no vendor routine for the job
/// (docs/kernels/polar.md, "16-bit iteration" and "Determinism"):
/// - 16-bit iteration (PolarOptions::compute = bf16 / fp16) outside CUDA: the iterates are stored
///   in Bf16 / Fp16 and every product goes through portable_gemm with fp32 accumulation, the
///   numerics of cuBLAS' GEMM with 16-bit storage and CUBLAS_COMPUTE_32F (a result rounded to 16
///   bits once per GEMM), in another summation order. On a CPU this is an emulation, for results
///   that match a GPU's, not for speed: about a tenth of the host BLAS's fp32 rate (17 against
///   180 GFLOP/s for Newton–Schulz at 1024² on the development machine).
/// - a batch of several same-shape products on a device without a vendor batched GEMM (HIP:
///   Debian ships no rocBLAS), so that a model's many small matrices cost one launch per product
///   instead of one per matrix (batched.hpp batched_gemm).
#pragma once

#include <Kokkos_Core.hpp>

#include <cstdint>
#include <type_traits>

#include "schatten/core/fp16.hpp"
#include "schatten/core/types.hpp"
#include "schatten/kokkos/detail/compat.hpp"

namespace schatten::kokkos::detail {

/// A bf16 value stored as its 16-bit pattern (schatten/core/bf16.hpp). Arithmetic is the caller's,
/// in float: conversions from float and double round to nearest, ties to even, once
/// (bf16_from_double); conversions to float and double are exact.
struct Bf16 {
  std::uint16_t bits;
  Bf16() = default;
  KOKKOS_INLINE_FUNCTION explicit Bf16(float x) : bits(bf16_round(x)) {}
  KOKKOS_INLINE_FUNCTION explicit Bf16(double x) : bits(bf16_from_double(x)) {}
  KOKKOS_INLINE_FUNCTION explicit Bf16(int x) : Bf16(static_cast<double>(x)) {}
  KOKKOS_INLINE_FUNCTION explicit operator float() const { return bf16_to_float(bits); }
  KOKKOS_INLINE_FUNCTION explicit operator double() const { return static_cast<double>(bf16_to_float(bits)); }
};

/// An IEEE binary16 value stored as its 16-bit pattern (schatten/core/fp16.hpp), as Bf16.
struct Fp16 {
  std::uint16_t bits;
  Fp16() = default;
  KOKKOS_INLINE_FUNCTION explicit Fp16(float x) : bits(fp16_round(x)) {}
  KOKKOS_INLINE_FUNCTION explicit Fp16(double x) : bits(fp16_from_double(x)) {}
  KOKKOS_INLINE_FUNCTION explicit Fp16(int x) : Fp16(static_cast<double>(x)) {}
  KOKKOS_INLINE_FUNCTION explicit operator float() const { return fp16_to_float(bits); }
  KOKKOS_INLINE_FUNCTION explicit operator double() const { return static_cast<double>(fp16_to_float(bits)); }
};

/// The software 16-bit types compute in float (their scalars, GEMM alpha and beta, accumulation).
template <>
struct scalar_of<Bf16> {
  using type = float;
};
template <>
struct scalar_of<Fp16> {
  using type = float;
};

/// Tiles of portable_gemm [P]: on a device a team computes 32 × 32 entries of C, reading op(A)
/// and op(B) in slabs of 16 along the inner dimension. Its team scratch holds the two slabs and
/// the tile's accumulators in the scalar type: (16·32 + 16·32 + 32·32)·4 bytes = 8 KiB in float,
/// 16 KiB in double, within the 48 KiB of GPU shared memory every Kokkos device backend grants.
/// On the host a tile is 128 × 128 (80 KiB of scratch in float, in the heap): each slab entry is
/// converted from 16 bits once per 128 products instead of once per 32, which took the bf16
/// Newton–Schulz at 1024² from 9 to 17 GFLOP/s on the development machine (AMD EPYC, 2 cores;
/// 64 × 256 × 32 tiles gave 15.6).
inline constexpr int kPortableTileM = 32, kPortableTileN = 32, kPortableTileK = 16, kPortableHostTile = 128;

/// C[b] = alpha op(A[b]) op(B[b]) + beta C[b] for b < batch, C[b] m × n, column-major, in one
/// launch on `space`: a Kokkos team per tile of every C[b] (kPortableTileM), the products and
/// sums in scalar_t<T> (fp32 for 16-bit storage), each result rounded to T once. beta = 0 does
/// not read C (BLAS' rule: C may hold NaN); k = 0 gives C = beta C. C must not overlap A or B.
/// `team_size` 0 lets Kokkos choose (Kokkos::AUTO; 1 on its host backends); the tests pass the
/// host's thread count to run teams of several threads on the CPU too. The result does not
/// depend on it: the kernel does not depend on how a team's threads share its loops, only on
/// the barriers between the loading and the accumulating of each slab.
/// HostLoops (the default on host memory) selects the host tiles and loop order; the tests run
/// the device form on the CPU too, by passing false.
/// Cost: 2mnk flops per matrix and one launch; reads A and B ⌈n/TN⌉ and ⌈m/TM⌉ times, through
/// the team scratch. Asynchronous (enqueued on `space`).
template <class Exec, class T,
          bool HostLoops = std::is_same<typename Exec::memory_space, Kokkos::HostSpace>::value>
void portable_gemm(const Exec& space, bool trans_a, bool trans_b, int m, int n, int k, scalar_t<T> alpha,
                   StridedOperand<const T> a, StridedOperand<const T> b, scalar_t<T> beta,
                   StridedOperand<T> c, int batch, int team_size = 0) {
  using S = scalar_t<T>;
  constexpr int TM = HostLoops ? kPortableHostTile : kPortableTileM;
  constexpr int TN = HostLoops ? kPortableHostTile : kPortableTileN;
  constexpr int TK = kPortableTileK;
  if (m <= 0 || n <= 0 || batch <= 0) return;
  const int tiles_m = (m + TM - 1) / TM, tiles_n = (n + TN - 1) / TN;
  const int tiles = tiles_m * tiles_n;
  using Policy = Kokkos::TeamPolicy<Exec>;
  using Member = typename Policy::member_type;
  using Scratch =
      Kokkos::View<S*, typename Exec::scratch_memory_space, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
  const int scratch_elements = TK * TM + TK * TN + TM * TN;
  const Policy policy =
      (team_size > 0 ? Policy(space, batch * tiles, team_size) : Policy(space, batch * tiles, Kokkos::AUTO))
          .set_scratch_size(0, Kokkos::PerTeam(Scratch::shmem_size(scratch_elements)));
  Kokkos::parallel_for(
      kernel_label("schatten::portable_gemm"), policy, KOKKOS_LAMBDA(const Member& member) {
        const int item = member.league_rank();
        const int mat = item / tiles, tile = item % tiles;
        const int i0 = (tile % tiles_m) * TM, j0 = (tile / tiles_m) * TN;
        const T* pa = a.data + mat * a.stride;
        const T* pb = b.data + mat * b.stride;
        T* pc = c.data + mat * c.stride;
        Scratch scratch(member.team_scratch(0), scratch_elements);
        S* as = scratch.data();  // as[l·TM + i] = op(A)(i0 + i, k0 + l)
        S* bs = as + TK * TM;    // bs[l·TN + j] = op(B)(k0 + l, j0 + j)
        S* acc = bs + TK * TN;   // acc[j·TM + i]: the tile's running sums
        Kokkos::parallel_for(Kokkos::TeamThreadRange(member, TM * TN), [&](int e) { acc[e] = S(0); });
        for (int k0 = 0; k0 < k; k0 += TK) {
          const int kk = k - k0 < TK ? k - k0 : TK;
          member.team_barrier();  // the previous slab is no longer read
          Kokkos::parallel_for(Kokkos::TeamThreadRange(member, TM * TK), [&](int e) {
            // Consecutive e walk the operand's contiguous index (i untransposed, l transposed).
            const int i = trans_a ? e / TK : e % TM, l = trans_a ? e % TK : e / TM;
            const int gi = i0 + i, gl = k0 + l;
            S v = S(0);
            if (gi < m && l < kk)
              v = static_cast<S>(trans_a ? pa[gl + std::int64_t(gi) * a.ld]
                                         : pa[gi + std::int64_t(gl) * a.ld]);
            as[l * TM + i] = v;
          });
          Kokkos::parallel_for(Kokkos::TeamThreadRange(member, TN * TK), [&](int e) {
            const int j = trans_b ? e % TN : e / TK, l = trans_b ? e / TN : e % TK;
            const int gj = j0 + j, gl = k0 + l;
            S v = S(0);
            if (gj < n && l < kk)
              v = static_cast<S>(trans_b ? pb[gj + std::int64_t(gl) * b.ld]
                                         : pb[gl + std::int64_t(gj) * b.ld]);
            bs[l * TN + j] = v;
          });
          member.team_barrier();  // the slab is complete
          // Every entry adds its kk products to its running sum in the order of l, on every
          // backend. A device thread keeps the sum of one entry in a register; a host thread
          // takes a column of the tile and runs l outside and i inside, a loop over contiguous
          // scratch that the compiler vectorises (about 10× the entry-by-entry loop on a CPU).
          if constexpr (HostLoops) {
            Kokkos::parallel_for(Kokkos::TeamThreadRange(member, TN), [&](int j) {
              S* col = acc + j * TM;
              for (int l = 0; l < kk; ++l) {
                const S blj = bs[l * TN + j];
                const S* al = as + l * TM;
                for (int i = 0; i < TM; ++i)
                  col[i] += al[i] * blj;
              }
            });
          } else {
            Kokkos::parallel_for(Kokkos::TeamThreadRange(member, TM * TN), [&](int e) {
              const int i = e % TM, j = e / TM;
              S sum = acc[e];
              for (int l = 0; l < kk; ++l)
                sum += as[l * TM + i] * bs[l * TN + j];
              acc[e] = sum;
            });
          }
        }
        member.team_barrier();
        Kokkos::parallel_for(Kokkos::TeamThreadRange(member, TM * TN), [&](int e) {
          const int i = e % TM, j = e / TM, gi = i0 + i, gj = j0 + j;
          if (gi >= m || gj >= n) return;
          T& out = pc[gi + static_cast<std::int64_t>(gj) * c.ld];
          S v = alpha * acc[e];
          if (beta != S(0)) v += beta * static_cast<S>(out);
          out = static_cast<T>(v);
        });
      });
}

}  // namespace schatten::kokkos::detail
