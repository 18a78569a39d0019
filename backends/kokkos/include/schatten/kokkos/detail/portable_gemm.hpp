// SPDX-License-Identifier: Apache-2.0
/// \file
/// The portable half of 16-bit iteration and of batching: software bf16/fp16 storage types, and
/// a batched GEMM written with Kokkos teams, for every execution space (CPU, CUDA, HIP) and
/// element type, with no vendor library. Used where the build has no vendor routine for the job
/// (docs/kernels/polar.md, "16-bit iteration" and "Determinism"):
/// - 16-bit iteration (PolarOptions::compute = bf16 / fp16) outside CUDA: the iterates are stored
///   in Bf16 / Fp16 and every product goes through portable_gemm (the symmetric ones through
///   portable_sym_product, its lower triangle) with fp32 accumulation, the numerics of cuBLAS'
///   GEMM with 16-bit storage and CUBLAS_COMPUTE_32F (a result rounded to 16 bits once per
///   GEMM), in another summation order. On a CPU this is an emulation, for results
///   that match a GPU's, not for speed: on one core (Kokkos Serial) about a seventh of the
///   two-thread host BLAS's fp32 rate for Newton–Schulz at 1024² on the development machine
///   (docs/benchmarks/cpu-polar.md, "16-bit iteration on the CPU").
/// - a batch of several same-shape products on a device without a vendor batched GEMM (HIP:
///   Debian ships no rocBLAS), so that a model's many small matrices cost one launch per product
///   instead of one per matrix (batched.hpp batched_gemm, batched_sym_product).
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

/// Tiles of portable_gemm [P], by loop form and scalar type S. A team computes M × N entries of
/// C, reading op(A) and op(B) in slabs of K along the inner dimension; its scratch holds the two
/// slabs and the tile's running sums in S, (K·M + K·N + M·N)·sizeof(S) bytes. Each thread takes
/// MR × NR entries of the tile at a time and keeps their sums in registers over a slab: it reads
/// MR + NR slab values per MR·NR products, where one entry at a time read two per product.
/// - Device form: 64 × 64 tiles in float (24 KiB of scratch), 32 × 32 in double (16 KiB), within
///   the 48 KiB of GPU shared memory every Kokkos device backend grants; 4 × 4 blocks of entries
///   spaced M/4 apart, so that consecutive threads read consecutive scratch words (no bank
///   conflicts) and, in float, a warp's 32 threads read 16 values of A's slab and 2 of B's per
///   step. That is 0.5 scratch reads per multiply-add instead of 2. Shared memory bounds this
///   kernel: an H100 multiprocessor reads 32 words of it per cycle and does 128 fp32 FMAs, so
///   the bound moves from 1/8 of the FMA peak to 1/2. Not measured on a GPU.
/// - Host form: 128 × 128 tiles (80 KiB in float, in the heap): each slab entry is converted from
///   16 bits once per 128 products, by a thread copying a contiguous run of the operand
///   (load_slab, vectorised); 8 × 4 blocks of contiguous entries, which the compiler keeps
///   in vector registers; only the blocks that cover C are computed, so a matrix smaller than a
///   tile costs about its own products. On the development machine (AMD EPYC, one core, the
///   x86-64 baseline of the default build: SSE2, no FMA, 4 floats a vector) a bf16 1024³ product
///   runs at 23–28 GFLOP/s and an fp16 one at 20–21, against 17 and 10 with one entry at a time and
///   element-wise loads. The 8 × 4 block alone runs at 32 GFLOP/s (SSE2 allows 16 flops per
///   cycle: two 4-wide multiplies and two 4-wide adds); 8 × 6 and 16 × 4 blocks spill registers
///   and run at a fifth of that or less (docs/benchmarks/cpu-polar.md, "16-bit iteration on the
///   CPU").
template <class S, bool HostLoops>
struct PortableTiles {
  static constexpr int M = HostLoops ? 128 : (sizeof(S) <= 4 ? 64 : 32), N = M, K = 16;
  static constexpr int MR = HostLoops ? 8 : 4, NR = 4;
};

/// One slab of an operand into team scratch: dst[l·width + i] = op(X)(r0 + i, k0 + l) for
/// l < kk, i < rows, where op(X)(i, l) is x[i + l·ld] untransposed and x[l + i·ld] transposed
/// (B enters as Bᵀ: its columns are the slab's rows, so the kernel calls this for A with trans_a
/// and for B with !trans_b). Rows from `rows` to `width` hold 0.
/// - Host form: each thread copies whole contiguous runs of x, which the compiler vectorises with
///   the 16-bit widening; slab rows l ≥ kk are not written (the products stop at kk).
/// - Device form: one entry per thread, consecutive threads on the operand's contiguous index
///   (coalesced), `depth` rows of the slab, those from kk on holding 0.
template <bool HostLoops, class Member, class T, class S>
KOKKOS_INLINE_FUNCTION void load_slab(const Member& member, bool trans, const T* x, int ld, int r0, int k0,
                                      int kk, int rows, S* dst, int width, int depth) {
  if constexpr (HostLoops) {
    if (!trans) {
      Kokkos::parallel_for(Kokkos::TeamThreadRange(member, kk), [&](int l) {
        const T* src = x + r0 + static_cast<std::int64_t>(k0 + l) * ld;
        S* out = dst + l * width;
        for (int i = 0; i < rows; ++i)
          out[i] = static_cast<S>(src[i]);
        for (int i = rows; i < width; ++i)
          out[i] = S(0);
      });
    } else {
      Kokkos::parallel_for(Kokkos::TeamThreadRange(member, width), [&](int i) {
        if (i < rows) {
          const T* src = x + k0 + static_cast<std::int64_t>(r0 + i) * ld;
          for (int l = 0; l < kk; ++l)
            dst[l * width + i] = static_cast<S>(src[l]);
        } else {
          for (int l = 0; l < kk; ++l)
            dst[l * width + i] = S(0);
        }
      });
    }
  } else {
    Kokkos::parallel_for(Kokkos::TeamThreadRange(member, width * depth), [&](int e) {
      const int i = trans ? e / depth : e % width, l = trans ? e % depth : e / width;
      const int gi = r0 + i, gl = k0 + l;
      S v = S(0);
      if (i < rows && l < kk)
        v = static_cast<S>(trans ? x[gl + std::int64_t(gi) * ld] : x[gi + std::int64_t(gl) * ld]);
      dst[l * width + i] = v;
    });
  }
}

/// The kernel of portable_gemm and portable_sym_product (below): C[b] = alpha op(A[b]) op(B[b])
/// + beta C[b], every entry of C or, with `symmetric` (m = n, B = A, trans_b = !trans_a), those
/// on and below the diagonal, mirrored above it.
template <class Exec, class T, bool HostLoops>
void portable_tiles(const Exec& space, bool trans_a, bool trans_b, int m, int n, int k, scalar_t<T> alpha,
                    StridedOperand<const T> a, StridedOperand<const T> b, scalar_t<T> beta,
                    StridedOperand<T> c, int batch, bool symmetric, int team_size) {
  using S = scalar_t<T>;
  using Tiles = PortableTiles<S, HostLoops>;
  constexpr int TM = Tiles::M, TN = Tiles::N, TK = Tiles::K, MR = Tiles::MR, NR = Tiles::NR;
  // The blocks of a tile: GM × GN of them. A block's entries are SM rows and SN columns apart:
  // adjacent on the host (vector registers), spread over the tile on a device (consecutive
  // threads on consecutive words).
  constexpr int GM = TM / MR, GN = TN / NR;
  constexpr int SM = HostLoops ? 1 : GM, SN = HostLoops ? 1 : GN;
  static_assert(TM % MR == 0 && TN % NR == 0, "a tile is a whole number of blocks");
  if (m <= 0 || n <= 0 || batch <= 0) return;
  const int tiles_m = (m + TM - 1) / TM, tiles_n = (n + TN - 1) / TN;
  const int tiles = tiles_m * tiles_n;
  using Policy = Kokkos::TeamPolicy<Exec>;
  using Member = typename Policy::member_type;
  using Scratch =
      Kokkos::View<S*, typename Exec::scratch_memory_space, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
  const int scratch_elements = TK * TM + TK * TN + TM * TN;
  const auto body = KOKKOS_LAMBDA(const Member& member) {
    const int item = member.league_rank();
    const int mat = item / tiles, tile = item % tiles;
    const int i0 = (tile % tiles_m) * TM, j0 = (tile / tiles_m) * TN;
    if (symmetric && j0 > i0) return;  // above the diagonal (the whole team leaves: no barrier)
    const T* pa = a.data + mat * a.stride;
    const T* pb = b.data + mat * b.stride;
    T* pc = c.data + mat * c.stride;
    Scratch scratch(member.team_scratch(0), scratch_elements);
    S* as = scratch.data();  // as[l·TM + i] = op(A)(i0 + i, k0 + l)
    S* bs = as + TK * TM;    // bs[l·TN + j] = op(B)(k0 + l, j0 + j)
    S* acc = bs + TK * TN;   // acc[j·TM + i]: the tile's running sums
    // The blocks this tile computes: on the host those that cover C (whole blocks: the
    // scratch beyond C holds zeros), on a device all of them (each spans the tile).
    const int bm = HostLoops ? (kmin(TM, m - i0) + MR - 1) / MR : GM;
    const int bn = HostLoops ? (kmin(TN, n - j0) + NR - 1) / NR : GN;
    Kokkos::parallel_for(Kokkos::TeamThreadRange(member, TM * TN), [&](int e) { acc[e] = S(0); });
    for (int k0 = 0; k0 < k; k0 += TK) {
      const int kk = k - k0 < TK ? k - k0 : TK;
      member.team_barrier();  // the previous slab is no longer read
      load_slab<HostLoops>(member, trans_a, pa, a.ld, i0, k0, kk, kmin(TM, m - i0), as, TM, TK);
      load_slab<HostLoops>(member, !trans_b, pb, b.ld, j0, k0, kk, kmin(TN, n - j0), bs, TN, TK);
      member.team_barrier();  // the slab is complete
      // Every entry adds its kk products to its running sum in the order of l, in registers.
      Kokkos::parallel_for(Kokkos::TeamThreadRange(member, bm * bn), [&](int t) {
        const int bi = HostLoops ? (t % bm) * MR : t % GM, bj = HostLoops ? (t / bm) * NR : t / GM;
        // On the host a block of a diagonal tile wholly above the diagonal is not needed.
        if (HostLoops && symmetric && i0 == j0 && bi + MR <= bj) return;
        S sum[NR][MR];
        for (int jj = 0; jj < NR; ++jj)
          for (int ii = 0; ii < MR; ++ii)
            sum[jj][ii] = acc[(bj + jj * SN) * TM + bi + ii * SM];
        for (int l = 0; l < kk; ++l) {
          const S* al = as + l * TM + bi;
          const S* bl = bs + l * TN + bj;
          for (int jj = 0; jj < NR; ++jj) {
            const S blj = bl[jj * SN];
            for (int ii = 0; ii < MR; ++ii)
              sum[jj][ii] += al[ii * SM] * blj;
          }
        }
        for (int jj = 0; jj < NR; ++jj)
          for (int ii = 0; ii < MR; ++ii)
            acc[(bj + jj * SN) * TM + bi + ii * SM] = sum[jj][ii];
      });
    }
    member.team_barrier();
    Kokkos::parallel_for(Kokkos::TeamThreadRange(member, TM * TN), [&](int e) {
      const int i = e % TM, j = e / TM, gi = i0 + i, gj = j0 + j;
      if (gi >= m || gj >= n || (symmetric && gj > gi)) return;
      T& out = pc[gi + static_cast<std::int64_t>(gj) * c.ld];
      S v = alpha * acc[e];
      if (beta != S(0)) v += beta * static_cast<S>(out);
      out = static_cast<T>(v);
      // The mirror: no thread reads C above the diagonal, and each entry there has one writer.
      if (symmetric && gi != gj) pc[gj + static_cast<std::int64_t>(gi) * c.ld] = out;
    });
  };
  const auto scratch = Kokkos::PerTeam(Scratch::shmem_size(scratch_elements));
  int team = team_size;
  if (team <= 0 && !HostLoops) {
    const int most = Policy(space, batch * tiles, Kokkos::AUTO)
                         .set_scratch_size(0, scratch)
                         .team_size_max(body, Kokkos::ParallelForTag());
    team = GM * GN < most ? GM * GN : most;
  }
  const Policy policy =
      (team > 0 ? Policy(space, batch * tiles, team) : Policy(space, batch * tiles, Kokkos::AUTO))
          .set_scratch_size(0, scratch);
  launch_team_for(kernel_label(symmetric ? "schatten::portable_sym_product" : "schatten::portable_gemm"),
                  policy, body);
}

/// C[b] = alpha op(A[b]) op(B[b]) + beta C[b] for b < batch, C[b] m × n, column-major, in one
/// launch on `space`: a Kokkos team per tile of every C[b] (PortableTiles), the products and sums
/// in scalar_t<T> (fp32 for 16-bit storage), each result rounded to T once. Every entry's sum
/// starts at 0 and adds its k products in the order of the inner index, whatever the tiles, the
/// loop form or the team size: sum_k(...) then T(alpha·sum + beta·C), bit for bit the same
/// sequence of operations as the plain triple loop (the tests check this). beta = 0 does not read
/// C (BLAS' rule: C may hold NaN); k = 0 gives C = beta C. C must not overlap A or B.
/// `team_size` 0 lets the kernel choose: one thread per block of entries of a tile on a device,
/// capped by Kokkos' team_size_max (1 on its Serial backend); Kokkos::AUTO in the host form. The
/// tests pass the host's thread count to run teams of several threads on the CPU too.
/// HostLoops (the default on host memory) selects the host tiles and blocks; the tests run the
/// device form on the CPU too, by passing false.
/// Cost: 2mnk flops per matrix (plus, in the device form, the padding of the last tiles to
/// 64 or 32) and one launch; reads A and B ⌈n/N⌉ and ⌈m/M⌉ times, through the team scratch.
/// Asynchronous (enqueued on `space`).
template <class Exec, class T, bool HostLoops = runs_on_host<Exec>>
void portable_gemm(const Exec& space, bool trans_a, bool trans_b, int m, int n, int k, scalar_t<T> alpha,
                   StridedOperand<const T> a, StridedOperand<const T> b, scalar_t<T> beta,
                   StridedOperand<T> c, int batch, int team_size = 0) {
  portable_tiles<Exec, T, HostLoops>(space, trans_a, trans_b, m, n, k, alpha, a, b, beta, c, batch, false,
                                     team_size);
}

/// The symmetric product C[b] = alpha op(A[b]) op(A[b])ᵀ + beta C[b], n × n, for b < batch, in
/// one launch: op(A) is the n × k matrix A (trans false, C = A Aᵀ) or Aᵀ of a k × n A (trans
/// true, C = Aᵀ A). portable_gemm's kernel on the tiles on and below the diagonal only; each
/// entry on or below the diagonal gets the bits portable_gemm (and the plain loop) would give
/// it, and its value is copied to its mirror above the diagonal, so C is exactly symmetric, as
/// a SYRK followed by fill_upper leaves it (batched.hpp). beta ≠ 0 reads C's lower triangle only;
/// beta = 0 reads no C. A must not overlap C.
/// Cost: the (T + 1)/(2T) of the tiles that hold the lower triangle (T = ⌈n/M⌉ tiles a side:
/// 56 % at T = 8, 51 % at T = 64; the teams of the other tiles exit at once), on the host less
/// (the blocks of a diagonal tile wholly above the diagonal are skipped), of the full product's
/// 2n²k flops; one launch for the whole batch. Asynchronous.
template <class Exec, class T, bool HostLoops = runs_on_host<Exec>>
void portable_sym_product(const Exec& space, bool trans, int n, int k, scalar_t<T> alpha,
                          StridedOperand<const T> a, scalar_t<T> beta, StridedOperand<T> c, int batch,
                          int team_size = 0) {
  portable_tiles<Exec, T, HostLoops>(space, trans, !trans, n, n, k, alpha, a, a, beta, c, batch, true,
                                     team_size);
}

}  // namespace schatten::kokkos::detail
