// SPDX-License-Identifier: Apache-2.0
/// \file
/// The polar kernels on Kokkos: input validation and normalisation, the Newton–Schulz and Gram
/// Newton–Schulz iterations, and the write-back. One implementation for every execution space.
#pragma once

#include <Kokkos_Core.hpp>

#include <algorithm>
#include <cmath>
#include <exception>
#include <limits>
#include <utility>
#include <vector>

#include "schatten/core/matrix_ref.hpp"
#include "schatten/kernels/polar.hpp"
#include "schatten/kokkos/detail/batched.hpp"
#include "schatten/kokkos/detail/compat.hpp"
#include "schatten/kokkos/workspace.hpp"

namespace schatten::kokkos::detail {

/// Shape and orientation of a polar problem.
///
/// Polar-type maps commute with transposition (f(Aᵀ) = f(A)ᵀ), so the kernel may iterate on
/// W = A or W = Aᵀ, whichever is contiguous in the column-major working layout: a row-major A
/// is, byte for byte, the column-major Aᵀ. The load and store passes then copy memory in order
/// instead of transposing it. The k × k Gram is formed on the short side of W:
/// W Wᵀ when W is wide ("left" form, X ← B X), Wᵀ W when W is tall ("right" form, X ← X B);
/// both apply the same polynomial to the singular values (algorithms.md §0, transpose trick).
struct PolarShape {
  index_t batch = 0, rows = 0, cols = 0;  ///< of the user's matrices
  index_t k = 0, n = 0;                   ///< short and long side
  bool w_is_transpose = false;            ///< W = Aᵀ (the input is row-major-like)
  index_t w_rows = 0, w_cols = 0;         ///< shape of W
  bool right = false;                     ///< W is tall: Gram Wᵀ W, update X ← X B
  PolarShape(index_t b, index_t r, index_t c, bool transpose)
      : batch(b),
        rows(r),
        cols(c),
        k(std::min(r, c)),
        n(std::max(r, c)),
        w_is_transpose(transpose),
        w_rows(transpose ? c : r),
        w_cols(transpose ? r : c),
        right(w_rows > w_cols) {}
};

/// W = Aᵀ when the input's columns are closer in memory than its rows (row-major-like).
template <class V>
bool prefers_transpose(const V& a) {
  return a.stride(2) < a.stride(1);
}

/// Working arrays of one polar call, carved from one workspace.
template <class TC, class Mem>
struct PolarBuffers {
  Mat3<TC, Mem> x, y;           ///< iterates W (ping-pong), w_rows × w_cols
  Mat3<TC, Mem> sq[5];          ///< k × k scratch: NS uses 2, Gram NS 5
  double* factor = nullptr;     ///< per-matrix normalisation factor, then scratch (kFactorDoubles·batch)
  double* row_scale = nullptr;  ///< AOL's k·batch row factors (Normalization::Kind::aol), else null
  /// AOL's k·batch powers of two the rows were loaded with (16-bit iteration; aol_load_rows()),
  /// else null.
  double* row_prescale = nullptr;
};

/// Doubles per matrix behind PolarBuffers::factor: the factor, the three statistics of
/// normalise_and_load() (max |a|, its reciprocal, the scaled sum of squares) and the pre-scale
/// 2^−s (pre_scale_exponent()), in slot kPreScaleSlot, which no later pass reuses as scratch.
constexpr std::size_t kFactorDoubles = 5;
constexpr std::size_t kPreScaleSlot = 4;

/// An output factor x·2^t (t real, |t| ≤ 1022: the rescaling 2^(s·d) of a pre-scaled result
/// homogeneous of degree |d| ≤ 1, times x) as f·2^n with n = ⌊t⌋ and f = x·2^(t−n) ∈ [x, 2x):
/// store_scaled() applies 2^n last and first_overflowing() checks f·2^n, so an output that is
/// representable is formed without overflow whatever x·2^t is. f = x, n = 0 for t = 0.
inline double split_pow2(double x, double t, int& n) {
  n = static_cast<int>(std::floor(t));
  return t == n ? x : x * std::exp2(t - n);
}

inline int square_buffers(PolarMethod m) { return m == PolarMethod::gram_newton_schulz ? 5 : 2; }

/// Carves (or, with a counting arena, sizes) the buffers of one call; `row_scales` adds AOL's
/// 2·k·batch doubles (the row factors and the rows' load scales).
template <class TC, class Mem>
PolarBuffers<TC, Mem> carve_polar(Arena& arena, const PolarShape& s, PolarMethod method,
                                  bool row_scales = false) {
  PolarBuffers<TC, Mem> buf;
  buf.x = carve<TC, Mem>(arena, s.w_rows, s.w_cols, s.batch);
  buf.y = carve<TC, Mem>(arena, s.w_rows, s.w_cols, s.batch);
  for (int i = 0; i < square_buffers(method); ++i)
    buf.sq[i] = carve<TC, Mem>(arena, s.k, s.k, s.batch);
  buf.factor = arena.take<double>(Arena::box(kFactorDoubles, s.batch));
  if (row_scales) {
    buf.row_scale = arena.take<double>(Arena::box(s.k, s.batch));
    buf.row_prescale = arena.take<double>(Arena::box(s.k, s.batch));
  }
  return buf;
}

/// dst[0, src.size()) ← src: host doubles into the space's memory (per-matrix factors).
template <class Exec>
void copy_to_device(const Exec& space, double* dst, const std::vector<double>& src) {
  Kokkos::deep_copy(
      space,
      Kokkos::View<double*, typename Exec::memory_space, Kokkos::MemoryTraits<Kokkos::Unmanaged>>(dst,
                                                                                                  src.size()),
      Kokkos::View<const double*, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>(src.data(),
                                                                                              src.size()));
}

/// dst ← the n doubles at src in the space's memory (dst resized to n), then one wait for the
/// copy and for everything queued on `space` before it: copy_to_device()'s counterpart, the
/// read-back of the per-matrix statistics.
template <class Exec>
void read_back(const Exec& space, const double* src, std::size_t n, std::vector<double>& dst) {
  dst.assign(n, 0.0);
  Kokkos::deep_copy(
      space, Kokkos::View<double*, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>(dst.data(), n),
      Kokkos::View<const double*, typename Exec::memory_space, Kokkos::MemoryTraits<Kokkos::Unmanaged>>(src,
                                                                                                        n));
  fence_on(space);
}

/// Pass 1: per matrix, amax[b] ← max |a_ij| as a double, +infinity when an entry is NaN or ±Inf,
/// then inv[b] ← min(1/amax[b], 2^1023) (0 for an all-zero matrix): 1/amax overflows for a
/// subnormal amax; with the cap, a_ij·inv ≤ 1 still, and max|a|·inv ≥ 2^−51, so the squares of
/// pass 2 neither overflow nor underflow. Results stay in `Mem` (no wait).
template <class Exec, class TIn, class Mem>
void max_abs_per_item(const Exec& space, const Strided3<const TIn, Mem>& a, double* amax, double* inv) {
  const index_t rows = a.extent(1), cols = a.extent(2), batch = a.extent(0);
  reduce_per_matrix<PerMatrix::max, Mem>(
      space, "schatten::polar::scan", rows, cols, batch, a.stride(2) <= a.stride(1),
      KOKKOS_LAMBDA(index_t i, index_t j, index_t b, double& acc) {
        acc = kmax(acc, abs_or_inf(a(b, i, j)));
      },
      amax);
  Kokkos::parallel_for(
      kernel_label("schatten::polar::reciprocal"),
      Kokkos::RangePolicy<Exec, Kokkos::IndexType<index_t>>(space, 0, batch), KOKKOS_LAMBDA(index_t b) {
        const double r = amax[b] == 0.0 ? 0.0 : 1.0 / amax[b];
        inv[b] = r < 0x1p1023 ? r : 0x1p1023;
      });
}

/// Pass 2: per matrix, ssq[b] ← Σ (a_ij·inv[b])², so that ‖a‖_F = sqrt(ssq)/inv, formed as
/// 2^s·‖a'‖_F (pre_scale_exponent(), normalise_and_load()), cannot overflow or underflow for
/// any finite input (the same rescaling as LAPACK's nrm2). The sum runs in memory order. Results
/// stay in `Mem` (no wait).
template <class Exec, class TIn, class Mem>
void scaled_squares_per_item(const Exec& space, const Strided3<const TIn, Mem>& a, const double* inv,
                             double* ssq) {
  reduce_per_matrix<PerMatrix::sum, Mem>(
      space, "schatten::polar::norm", a.extent(1), a.extent(2), a.extent(0), a.stride(2) <= a.stride(1),
      KOKKOS_LAMBDA(index_t i, index_t j, index_t b, double& acc) {
        const double v = static_cast<double>(a(b, i, j)) * inv[b];
        acc += v * v;
      },
      ssq);
}

/// Pass 3: W[b] = factor[b] · (2^−s·a[b]) (or its transpose) in the compute precision, `factor`
/// normalise_and_load()'s kFactorDoubles·batch block (the pre-scale 2^−s in its slot
/// kPreScaleSlot). Both products are formed in double, so any finite input scales without
/// overflow (2^−s = 1 leaves the bits of a·factor).
template <class Exec, class TIn, class TC, class Mem>
void load_scaled(const Exec& space, const Strided3<const TIn, Mem>& a, const double* factor,
                 const Mat3<TC, Mem>& x, bool transposed) {
  const double* pre = factor + kPreScaleSlot * x.extent(2);
  // x(i, j, b) is W(i, j) of matrix b: a(b, j, i) when W = Aᵀ.
  for_each_element(
      space, "schatten::polar::load", x.extent(0), x.extent(1), x.extent(2),
      KOKKOS_LAMBDA(index_t i, index_t j, index_t b) {
        const TIn v = transposed ? a(b, j, i) : a(b, i, j);
        x(i, j, b) = static_cast<TC>(static_cast<double>(v) * pre[b] * factor[b]);
      });
}

/// Last pass: q[b] = W[b] (or its transpose), converted to the output type; with `factor`
/// (device, one per matrix) q[b] = factor[b]·W[b], the product formed in double, and with `pow2`
/// too q[b] = (factor[b]·W[b])·pow2[b] (powers of two: split_pow2()). With a blend
/// c ≠ 1 (SpectralClipOptions::blend), q[b] = (1 − c)·a[b] + c·(factor[b]·)W[b] in double, `a`
/// indexed as q; `a` may alias q (each element is read and then written by the same thread).
template <class Exec, class TC, class TOut, class Mem>
void store(const Exec& space, const Mat3<TC, Mem>& x, const Strided3<TOut, Mem>& q, bool transposed,
           const double* factor = nullptr, const Strided3<const TOut, Mem>& a = {}, double c = 1.0,
           const double* pow2 = nullptr) {
  const bool blend = c != 1.0;
  const double keep = 1.0 - c;
  for_each_element(
      space, "schatten::polar::store", x.extent(0), x.extent(1), x.extent(2),
      KOKKOS_LAMBDA(index_t i, index_t j, index_t b) {
        TOut v;
        if (blend) {
          const double w = static_cast<double>(static_cast<scalar_t<TC>>(x(i, j, b))) *
                           (factor ? factor[b] : 1.0) * (pow2 ? pow2[b] : 1.0);
          v = static_cast<TOut>(keep * static_cast<double>(transposed ? a(b, j, i) : a(b, i, j)) + c * w);
        } else {
          v = factor ? static_cast<TOut>(static_cast<double>(static_cast<scalar_t<TC>>(x(i, j, b))) *
                                         factor[b] * (pow2 ? pow2[b] : 1.0))
                     : static_cast<TOut>(x(i, j, b));
        }
        if (transposed)
          q(b, j, i) = v;
        else
          q(b, i, j) = v;
      });
}

/// store() with per-matrix output factors given on the host: `f` empty stores W as it is; else
/// f is copied to `scratch` (batch doubles in the space's memory) and q[b] = f[b]·W[b], times
/// 2^e[b] with `e` when some e[b] ≠ 0 (split_pow2(); the powers go through the host scratch
/// `p` and scratch[batch, 2·batch)). `a` and `c`: store()'s blend.
template <class Exec, class TC, class TOut, class Mem>
void store_scaled(const Exec& space, const Mat3<TC, Mem>& x, const Strided3<TOut, Mem>& q, bool transposed,
                  const std::vector<double>& f, double* scratch, const Strided3<const TOut, Mem>& a = {},
                  double c = 1.0, const std::vector<int>* e = nullptr, std::vector<double>* p = nullptr) {
  if (f.empty()) return store(space, x, q, transposed, nullptr, a, c);
  copy_to_device(space, scratch, f);
  const double* pow2 = nullptr;
  if (e && p && std::any_of(e->begin(), e->end(), [](int n) { return n != 0; })) {
    p->resize(e->size());
    for (std::size_t b = 0; b < e->size(); ++b)
      (*p)[b] = std::ldexp(1.0, (*e)[b]);
    copy_to_device(space, scratch + f.size(), *p);
    pow2 = scratch + f.size();
  }
  store(space, x, q, transposed, scratch, a, c, pow2);
}

/// The k × k Gram of W: W Wᵀ (left form) or Wᵀ W (right form). One GEMM(k, k, n), or with
/// `symmetric` (PolarOptions::symmetric_gram) and a vendor SYRK for TC, one SYRK(k, n) and a
/// k × k fill of the upper triangle (batched_sym_product): half the flops, exactly symmetric.
template <class Exec, class TC, class Mem>
void gram(const Exec& space, bool symmetric, bool right, const Mat3<TC, Mem>& x, const Mat3<TC, Mem>& out) {
  batched_sym_product(space, symmetric, right ? "T" : "N", scalar_t<TC>(1), x, scalar_t<TC>(0), out);
}

/// y = B x (left form) or x B (right form), B a k × k symmetric factor. One GEMM(k, n, k).
template <class Exec, class TC, class Mem>
void apply_factor(const Exec& space, bool right, const Mat3<TC, Mem>& factor, const Mat3<TC, Mem>& x,
                  const Mat3<TC, Mem>& y) {
  using S = scalar_t<TC>;
  if (right)
    batched_gemm(space, "N", "N", S(1), x, factor, S(0), y);
  else
    batched_gemm(space, "N", "N", S(1), factor, x, S(0), y);
}

/// Schatten-4 normalisation (Normalization::Kind::schatten4), after normalise_and_load has
/// loaded X = A/‖A‖_F (so every entry of the Gram is ≤ 1 in magnitude, whatever the input's
/// scale and the compute precision) and the first Gram G = X Xᵀ is in `g`: per matrix,
/// s = ‖G‖_F^{1/2} = ‖X‖_S4 = ‖A‖_S4/‖A‖_F (a reduction in double), then
/// X ← c X and G ← c² G with c = ‖A‖_F / (safety·‖A‖_F·s + eps), so that X = A/(safety·‖A‖_S4 + eps)
/// and G is its Gram, which the first step reuses. An all-zero matrix stays zero (c = 0).
/// `host.norms` holds ‖A'‖_F = 2^−s‖A‖_F per matrix and `host.exponents` s (normalise_and_load;
/// c is formed in the units of A', eps as 2^−s·eps; `host.stats` is scratch); `scratch`
/// kFactorDoubles·batch doubles in `Mem`. Cost: one pass over G and one over X and G; one wait for
/// the read-back.
template <class Exec, class TC, class Mem>
void schatten4_rescale(const Exec& space, const Normalization& nz, HostScalars& host, double* scratch,
                       const Mat3<TC, Mem>& x, const Mat3<TC, Mem>& g) {
  using S = scalar_t<TC>;
  const index_t k = g.extent(0), batch = g.extent(2);
  double* ssq = scratch + batch;  // ‖G_b‖_F² per matrix, then c_b in scratch[0, batch)
  reduce_per_matrix<PerMatrix::sum, Mem>(
      space, "schatten::polar::schatten4", k, k, batch, false,
      KOKKOS_LAMBDA(index_t i, index_t j, index_t b, double& acc) {
        const double v = static_cast<double>(static_cast<S>(g(i, j, b)));
        acc += v * v;
      },
      ssq);
  const std::vector<double>& norms = host.norms;
  std::vector<double>& c = host.stats;
  read_back(space, ssq, static_cast<std::size_t>(batch), c);
  for (std::size_t b = 0; b < c.size(); ++b) {
    const double s = std::sqrt(std::sqrt(c[b]));  // ‖X_b‖_S4 ∈ (0, 1] for a nonzero matrix
    const double eps = std::ldexp(nz.eps, -host.exponents[b]);  // in the units of A'
    c[b] = norms[b] == 0.0 || s == 0.0 ? 0.0 : norms[b] / (nz.safety * norms[b] * s + eps);
  }
  copy_to_device(space, scratch, c);
  const double* f = scratch;
  for_each_element(
      space, "schatten::polar::schatten4_x", x.extent(0), x.extent(1), x.extent(2),
      KOKKOS_LAMBDA(index_t i, index_t j, index_t b) {
        x(i, j, b) = static_cast<TC>(static_cast<double>(static_cast<S>(x(i, j, b))) * f[b]);
      });
  for_each_element(
      space, "schatten::polar::schatten4_gram", k, k, batch, KOKKOS_LAMBDA(index_t i, index_t j, index_t b) {
        g(i, j, b) = static_cast<TC>(static_cast<double>(static_cast<S>(g(i, j, b))) * f[b] * f[b]);
      });
}

/// AOL in 16-bit iteration: loads X = D₀·A/‖A‖_F again, D₀ = diag(d₀) with d₀_i the power of
/// two that brings row i (right form: column i) of A/‖A‖_F to a norm in [0.5, 1), computed in
/// double, so that no row is rounded to 16 bits before AOL rescales it. normalise_and_load()'s
/// single factor loaded A/‖A‖_F itself, where a row 1e-6 of ‖A‖_F fell below fp16's subnormals
/// and came out 0 after AOL (audit of 2026-12-07). aol_rescale() then divides D₀ out again
/// (exact: powers of two). Rows keep norms ≤ 1, so the Gram's entries stay ≤ 1. A zero row
/// keeps d₀ = 1. Cost: two reads of A (the row norms, scaled by the row's largest entry) and the
/// load; no wait. `d0` k·batch doubles; `factor` as load_scaled().
template <class Exec, class TIn, class TC, class Mem>
void aol_load_rows(const Exec& space, const Strided3<const TIn, Mem>& a, const double* factor,
                   const Mat3<TC, Mem>& x, bool transposed, bool right, double* d0) {
  const index_t batch = x.extent(2), k = right ? x.extent(1) : x.extent(0),
                len = right ? x.extent(0) : x.extent(1);
  const double* pre = factor + kPreScaleSlot * batch;
  for_each_element(
      space, "schatten::polar::aol_rows", k, 1, batch, KOKKOS_LAMBDA(index_t i, index_t, index_t b) {
        const auto at = [&](index_t l) {  // entry l of W's row (right form: column) i, scaled
          const index_t wi = right ? l : i, wj = right ? i : l;
          return static_cast<double>(transposed ? a(b, wj, wi) : a(b, wi, wj)) * pre[b] * factor[b];
        };
        double top = 0.0;
        for (index_t l = 0; l < len; ++l)
          top = kmath::fmax(top, kmath::fabs(at(l)));
        double ss = 0.0;
        for (index_t l = 0; l < len && top > 0.0; ++l) {
          const double v = at(l) / top;
          ss += v * v;
        }
        // d ← a power of two with top·√ss·d ∈ [0.5, 1) (top·√ss ≤ 1: a row of A/‖A‖_F).
        const double norm = top * kmath::sqrt(ss);
        double d = 1.0;
        while (norm > 0.0 && norm * d < 0.5)
          d *= 2.0;
        d0[b * k + i] = d;
      });
  for_each_element(
      space, "schatten::polar::aol_load", x.extent(0), x.extent(1), batch,
      KOKKOS_LAMBDA(index_t i, index_t j, index_t b) {
        const TIn v = transposed ? a(b, j, i) : a(b, i, j);
        x(i, j, b) =
            static_cast<TC>(static_cast<double>(v) * pre[b] * factor[b] * d0[b * k + (right ? j : i)]);
      });
}

/// AOL pre-scaling (Normalization::Kind::aol), after normalise_and_load has loaded
/// X = A/‖A‖_F and the first Gram G = X Xᵀ (right form: Xᵀ X) is in `g`: per matrix b and Gram
/// row i, r_i = Σ_j |G_ij| (in double) and f_i = 1/(safety·√r_i + eps/‖A‖_F), so that the rows
/// (right form: columns) of X become d_i·A_i with d_i = 1/(safety·√r_(A)_i + eps), r_(A) = ‖A‖_F² r;
/// then X ← F X (X F) and G ← F G F, the Gram of the new X, which the first step reuses.
/// σ_max(F X) ≤ 1/safety by the weighted Schur test (Prach & Lampert's AOL bound): with
/// w_i = √r_i, Σ_j r_i^{-1/2}|G_ij| r_j^{-1/2} w_j = w_i, so ‖R^{-1/2} G R^{-1/2}‖₂ ≤ 1, and
/// f_i ≤ 1/(safety·√r_i) only shrinks it. A zero row (r_i = 0) keeps factor 0, and
/// an all-zero matrix stays zero. `inv_norm` holds 1/‖A'‖_F per matrix on the device (the load
/// factors of normalise_and_load's block, whose pre-scales 2^−s make eps/‖A‖_F = eps·2^−s/‖A'‖_F),
/// `f` k·batch doubles. With `d0` (aol_load_rows(): X's rows were loaded times powers of two
/// d₀, so `g` holds D₀ G D₀), r_i = Σ_j |G₀_ij|/(d₀_i d₀_j) and X's row i is scaled by f_i/d₀_i:
/// the same sums and rows (the powers of two are exact). Cost: one read of G for the sums, one
/// pass over X and over G; no wait.
template <class Exec, class TC, class Mem>
void aol_rescale(const Exec& space, const Normalization& nz, bool right, const double* inv_norm, double* f,
                 const Mat3<TC, Mem>& x, const Mat3<TC, Mem>& g, const double* d0 = nullptr) {
  using S = scalar_t<TC>;
  const index_t k = g.extent(0), batch = g.extent(2);
  const double* pre = inv_norm + kPreScaleSlot * batch;
  const double safety = nz.safety, eps = nz.eps;
  // One thread per Gram row i sums |G_ij| over j. Neighbouring threads read neighbouring i, which
  // are adjacent in the column-major Mat3 (coalesced reads on a GPU).
  for_each_element(
      space, "schatten::polar::aol_sums", k, 1, batch, KOKKOS_LAMBDA(index_t i, index_t, index_t b) {
        double r = 0.0;
        for (index_t j = 0; j < k; ++j)
          r += kmath::fabs(static_cast<double>(static_cast<S>(g(i, j, b)))) /
               (d0 ? d0[b * k + i] * d0[b * k + j] : 1.0);
        f[b * k + i] =
            r > 0.0
                ? 1.0 / ((safety * kmath::sqrt(r) + eps * pre[b] * inv_norm[b]) * (d0 ? d0[b * k + i] : 1.0))
                : 0.0;
      });
  for_each_element(
      space, "schatten::polar::aol_x", x.extent(0), x.extent(1), x.extent(2),
      KOKKOS_LAMBDA(index_t i, index_t j, index_t b) {
        const double d = f[b * k + (right ? j : i)];
        x(i, j, b) = static_cast<TC>(static_cast<double>(static_cast<S>(x(i, j, b))) * d);
      });
  for_each_element(
      space, "schatten::polar::aol_gram", k, k, batch, KOKKOS_LAMBDA(index_t i, index_t j, index_t b) {
        g(i, j, b) =
            static_cast<TC>(static_cast<double>(static_cast<S>(g(i, j, b))) * f[b * k + i] * f[b * k + j]);
      });
}

/// Newton–Schulz steps X ← p_t(X) = (a I + b A + c A²) X with A = X Xᵀ (or the right form).
/// Per step: GEMM(k,k,n) for A, GEMM(k,k,k) for A² (skipped when c = 0), GEMM(k,n,k) for the
/// product; with `symmetric` (and a vendor SYRK for TC) A and A² = A Aᵀ are SYRKs (half the
/// flops each) followed by a fill of the upper triangle. The scalar terms are folded into
/// B = a I + b A + c A²: B ← A (a copy), then the A² product with beta = b, then a on the
/// diagonal, so no k×k element-wise pass is needed.
/// `gram_ready`: `a2` already holds X Xᵀ for the first step (schatten4_rescale, aol_rescale).
/// Returns the buffer holding the result (x or y).
template <class Exec, class TC, class Mem>
Mat3<TC, Mem> newton_schulz_steps(const Exec& space, bool symmetric, bool right,
                                  const CoefficientSchedule& sched, int iterations, Mat3<TC, Mem> x,
                                  Mat3<TC, Mem> y, const Mat3<TC, Mem>& a2, const Mat3<TC, Mem>& poly,
                                  bool gram_ready = false) {
  using S = scalar_t<TC>;
  for (int t = 0; t < iterations; ++t) {
    const OddQuintic p = sched.at(t);
    if (t > 0 || !gram_ready) gram(space, symmetric, right, x, a2);  // A = X Xᵀ
    if (p.c != 0.0) {
      copy(space, poly, a2);
      batched_square(space, symmetric, S(p.c), a2, S(p.b), poly);  // c A² + b A
      add_diagonal(space, poly, S(p.a));                           // + a I
    } else {
      add_scaled_identity(space, poly, false, S(p.b), a2, S(p.a));  // b A + a I
    }
    apply_factor(space, right, poly, x, y);  // X ← B X
    std::swap(x, y);
  }
  return x;
}

/// Gram Newton–Schulz: the same polynomials applied through the k×k Gram R = X Xᵀ.
/// With Z_t = b R_t + c R_t², step t multiplies the accumulated factor Q by (a I + Z_t) and
/// updates R ← (a I + Z) R (a I + Z); the output is Q X. A restart before step t rebuilds
/// X ← Q X, R ← X Xᵀ, Q ← I (algorithms.md §2.4, [V] NoahAmsel/gram-newton-schulz).
/// R and Q are symmetrised after every update (they are polynomials in the same Gram, hence
/// symmetric in exact arithmetic). Per step: 1 GEMM(k,k,k) for R² (c ≠ 0), 1 for Q, 2 for R.
/// With `symmetric` (and a vendor SYRK for TC) the Grams R = X Xᵀ and R² = R Rᵀ are SYRKs; the
/// Q and R updates stay GEMMs (products of two different matrices). `gram_ready`: `r` already
/// holds X Xᵀ (schatten4_rescale, aol_rescale).
template <class Exec, class TC, class Mem>
Mat3<TC, Mem> gram_newton_schulz_steps(const Exec& space, bool symmetric, bool right,
                                       const CoefficientSchedule& sched, int iterations,
                                       const std::vector<int>& restarts, Mat3<TC, Mem> x, Mat3<TC, Mem> y,
                                       Mat3<TC, Mem> r, const Mat3<TC, Mem>& z, Mat3<TC, Mem> q,
                                       Mat3<TC, Mem> t1, Mat3<TC, Mem> t2, bool gram_ready = false) {
  using S = scalar_t<TC>;
  if (iterations <= 0) return x;
  auto restart_before = [&](int t) {
    return t > 0 && std::find(restarts.begin(), restarts.end(), t) != restarts.end();
  };
  if (!gram_ready) gram(space, symmetric, right, x, r);  // R = X Xᵀ
  for (int t = 0; t < iterations; ++t) {
    const OddQuintic p = sched.at(t);
    const bool restart = restart_before(t);
    if (restart) {
      apply_factor(space, right, q, x, y);  // X ← Q X
      std::swap(x, y);
      gram(space, symmetric, right, x, r);  // R = X Xᵀ
    }
    // Z = c R² + b R
    if (p.c != 0.0) {
      copy(space, z, r);
      batched_square(space, symmetric, S(p.c), r, S(p.b), z);
    } else {
      add_scaled_identity(space, z, false, S(p.b), r, S(0));
    }
    if (t == 0 || restart) {
      copy(space, q, z);  // Q = a I + Z
      add_diagonal(space, q, S(p.a));
    } else {
      copy(space, t1, q);  // Q ← Q Z + a Q
      batched_gemm(space, "N", "N", S(1), q, z, S(p.a), t1);
      std::swap(q, t1);
    }
    symmetrize(space, q);
    if (t + 1 < iterations && !restart_before(t + 1)) {
      copy(space, t1, r);  // T1 = R Z + a R
      batched_gemm(space, "N", "N", S(1), r, z, S(p.a), t1);
      copy(space, t2, t1);  // R ← Z T1 + a T1
      batched_gemm(space, "N", "N", S(1), z, t1, S(p.a), t2);
      std::swap(r, t2);
      symmetrize(space, r);
    }
  }
  apply_factor(space, right, q, x, y);  // output Q X
  return y;
}

/// The dual-norm scaling (PolarOptions::dual_norm_scale): per matrix b, ⟨a'[b], g_b·W[b]⟩ (W in
/// a's orientation through `transposed`; g_b = `out_factor[b]`, 1 when empty) with
/// a'[b] = 2^−e[b]·a[b] (`e`: normalise_and_load()'s pre-scale exponents, 0 but for max|a| outside
/// [2^−511, 2^511]) and max |W[b]|, reduced in double; then out_factor[b] ← g_b·⟨a'[b], g_b·W[b]⟩,
/// the factor of the store pass, which applies 2^e[b] last (store_scaled() with `e`): ⟨a, W⟩ of
/// double entries near DBL_MAX overflowed although the output, ⟨a, W⟩·W with |W| ≤ 1, was
/// representable (1.5e308·[1 1 1 1]). `scratch` holds 3·batch doubles in `Mem` (the sums, the
/// maxima, the units 2^−e[b]); `r` is host scratch for them (3·batch doubles, within
/// HostScalars' reservation). Two reductions for the whole batch (reduce_per_matrix). Returns
/// the first matrix whose scaled output would exceed the largest finite TOut (nothing is written
/// then), else −1. One wait.
template <class TOut, class Exec, class TIn, class TC, class Mem>
index_t dual_norm_factors(const Exec& space, const Strided3<const TIn, Mem>& a, const Mat3<TC, Mem>& x,
                          bool transposed, double* scratch, std::vector<double>& out_factor,
                          std::vector<double>& r, const std::vector<int>& e) {
  using Doubles = Kokkos::View<double*, Mem, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
  using HostDoubles = Kokkos::View<double*, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
  using S = scalar_t<TC>;
  const index_t rows = x.extent(0), cols = x.extent(1), batch = x.extent(2);
  const std::size_t n = static_cast<std::size_t>(batch);
  r.assign(3 * n, 0.0);
  for (std::size_t b = 0; b < n; ++b)
    r[2 * n + b] = std::ldexp(1.0, -e[b]);  // 2^−e, exact
  const double* unit = scratch + 2 * batch;
  Kokkos::deep_copy(space, Doubles(scratch + 2 * batch, n), HostDoubles(r.data() + 2 * n, n));
  reduce_per_matrix<PerMatrix::sum, Mem>(
      space, "schatten::polar::dual_norm", rows, cols, batch, false,
      KOKKOS_LAMBDA(index_t i, index_t j, index_t b, double& acc) {
        const double v = unit[b] * static_cast<double>(transposed ? a(b, j, i) : a(b, i, j));
        acc += v * static_cast<double>(static_cast<S>(x(i, j, b)));
      },
      scratch);
  reduce_per_matrix<PerMatrix::max, Mem>(
      space, "schatten::polar::dual_norm_max", rows, cols, batch, false,
      KOKKOS_LAMBDA(index_t i, index_t j, index_t b, double& acc) {
        acc = kmax(acc, kmath::fabs(static_cast<double>(static_cast<S>(x(i, j, b)))));
      },
      scratch + batch);
  Kokkos::deep_copy(space, HostDoubles(r.data(), 2 * n), Doubles(scratch, 2 * n));
  fence_on(space);
  if (out_factor.empty()) out_factor.assign(static_cast<std::size_t>(batch), 1.0);
  for (index_t b = 0; b < batch; ++b) {
    double& f = out_factor[static_cast<std::size_t>(b)];
    f *= f * r[static_cast<std::size_t>(b)];
    // |f·W_ij|·2^e ≤ |f|·max|W|·2^e must stay a finite TOut (products formed in double, then
    // rounded).
    if (!(std::ldexp(std::fabs(f) * r[static_cast<std::size_t>(batch + b)], e[static_cast<std::size_t>(b)]) <=
          double(std::numeric_limits<TOut>::max())))
      return b;
  }
  return -1;
}

/// scratch[b] ← max |x(i, j, b)| (Inf for NaN/Inf) for every matrix b of x, in `Mem`, not
/// waited for: one reduce_per_matrix for the batch. In a function of its own because nvcc
/// refuses a device lambda in a function with a host lambda's type (first_max_beyond's Beyond)
/// among its template arguments.
template <class Exec, class TC, class Mem>
void output_max(const Exec& space, const Mat3<TC, Mem>& x, double* scratch) {
  using S = scalar_t<TC>;
  reduce_per_matrix<PerMatrix::max, Mem>(
      space, "schatten::polar::output_max", x.extent(0), x.extent(1), x.extent(2), false,
      KOKKOS_LAMBDA(index_t i, index_t j, index_t b, double& acc) {
        acc = kmax(acc, abs_or_inf(static_cast<double>(static_cast<S>(x(i, j, b)))));
      },
      scratch);
}

/// The first matrix b for which beyond(b, m_b) holds, m_b = max |x(i, j, b)| (Inf for NaN/Inf),
/// else −1: output_max() for the batch, one read-back into `r` (host scratch, batch doubles) and
/// one wait. `scratch`: batch doubles in `Mem`.
template <class Exec, class TC, class Mem, class Beyond>
index_t first_max_beyond(const Exec& space, const Mat3<TC, Mem>& x, double* scratch, std::vector<double>& r,
                         const Beyond& beyond) {
  const index_t batch = x.extent(2);
  output_max(space, x, scratch);
  read_back(space, scratch, static_cast<std::size_t>(batch), r);
  for (index_t b = 0; b < batch; ++b)
    if (beyond(b, r[static_cast<std::size_t>(b)])) return b;
  return -1;
}

/// The first matrix b whose output f[b]·W[b] (store()'s products, formed in double; times
/// 2^e[b] with `e`) has an entry beyond the largest finite TOut, else −1: a result that is not
/// representable, which the caller refuses with out_of_range before writing. `bound(b)` ≥ the
/// largest |output entry| is tried first: when it clears every matrix (ordinary inputs) nothing
/// is reduced; otherwise first_max_beyond() checks the matrices it does not clear. `scratch`:
/// batch doubles in `Mem`; `r`: host scratch for the read-back.
template <class TOut, class Exec, class TC, class Mem, class Bound>
index_t first_overflowing(const Exec& space, const Mat3<TC, Mem>& x, const std::vector<double>& f,
                          const Bound& bound, double* scratch, std::vector<double>& r,
                          const std::vector<int>* e = nullptr) {
  const double top = static_cast<double>(std::numeric_limits<TOut>::max());
  bool any = false;
  for (index_t b = 0; b < static_cast<index_t>(x.extent(2)); ++b)
    any = any || !(bound(b) <= top);
  if (!any) return -1;
  return first_max_beyond(space, x, scratch, r, [&](index_t b, double m) {
    const std::size_t i = static_cast<std::size_t>(b);
    return !(bound(b) <= top) && !(std::ldexp(std::fabs(f[i]) * m, e ? (*e)[i] : 0) <= top);
  });
}

/// max over the batch of ‖X Xᵀ − I‖_F / √k (one Gram per matrix, a SYRK when `symmetric`, into
/// `g`, which holds one matrix when `reuse` and the whole batch otherwise). The sums of squares
/// go to `scratch` (batch doubles in `Mem`): one reduce_per_matrix for the batch, or one per
/// matrix after its Gram when `reuse`, queued in order; then one read-back into `r` (host
/// scratch, batch doubles) and one wait. It waited once per matrix until 2026-12-07.
template <class Exec, class TC, class Mem>
double max_orthogonality_error(const Exec& space, bool right, const Mat3<TC, Mem>& x, const Mat3<TC, Mem>& g,
                               bool reuse, bool symmetric, double* scratch, std::vector<double>& r) {
  const index_t k = g.extent(0), batch = x.extent(2);
  const auto term = KOKKOS_LAMBDA(index_t i, index_t j, index_t b, double& acc) {
    const double d = static_cast<double>(g(i, j, b)) - (i == j ? 1.0 : 0.0);
    acc += d * d;
  };
  if (reuse) {
    for (index_t b = 0; b < batch; ++b) {
      gram(space, symmetric, right,
           Mat3<TC, Mem>(x.data() + b * x.extent(0) * x.extent(1), x.extent(0), x.extent(1), 1), g);
      reduce_per_matrix<PerMatrix::sum, Mem>(space, "schatten::polar::orthogonality", k, k, 1, false, term,
                                             scratch + b);
    }
  } else {
    gram(space, symmetric, right, x, g);
    reduce_per_matrix<PerMatrix::sum, Mem>(space, "schatten::polar::orthogonality", k, k, batch, false, term,
                                           scratch);
  }
  read_back(space, scratch, static_cast<std::size_t>(batch), r);
  double worst = 0.0;
  for (const double ssq : r)
    worst = std::max(worst, std::sqrt(ssq / static_cast<double>(k)));
  return worst;
}

inline PolarReport polar_failure(Status s, const char* msg, index_t bad = -1) {
  PolarReport r;
  r.status = s;
  r.message = msg;
  r.bad_item = bad;
  return r;
}

/// Scratch bytes of one call (the same carving code, run on a counting arena).
template <class TC, class Mem>
std::size_t polar_bytes(const PolarShape& s, PolarMethod method, bool row_scales = false) {
  Arena counting;
  carve_polar<TC, Mem>(counting, s, method, row_scales);
  return counting.used();
}

/// schatten::detail::check_aliasing() of two strided batches: `out` an output, `other` an input
/// (`may_alias`: the exact in-place alias is allowed) or another output.
template <class V, class W>
const char* check_view_aliasing(const V& other, const W& out, bool may_alias) {
  bool same = sizeof(typename V::value_type) == sizeof(typename W::value_type);
  for (int d = 0; d < 3; ++d)
    same = same && other.extent(d) == out.extent(d) &&
           (other.extent(d) <= 1 || other.stride(d) == out.stride(d));
  return schatten::detail::check_aliasing(other.data(), other.span() * sizeof(typename V::value_type),
                                          out.data(), out.span() * sizeof(typename W::value_type), may_alias,
                                          same);
}

/// Checks the input and output of a strided call: nullptr when valid, else a static message.
/// Besides the layouts, q may alias a exactly but not overlap it otherwise.
template <class TIn, class TOut, class Mem>
const char* check_io(const Strided3<const TIn, Mem>& a, const Strided3<TOut, Mem>& q) {
  if (a.extent(0) != q.extent(0) || a.extent(1) != q.extent(1) || a.extent(2) != q.extent(2))
    return "input and output shapes differ";
  if (const char* msg = schatten::detail::check_layout(a.data(), a.extent(0), a.extent(1), a.extent(2),
                                                       a.stride(0), a.stride(1), a.stride(2), false))
    return msg;
  if (const char* msg = schatten::detail::check_layout(q.data(), q.extent(0), q.extent(1), q.extent(2),
                                                       q.stride(0), q.stride(1), q.stride(2), true))
    return msg;
  return check_view_aliasing(a, q, true);
}

/// ν' = safety·‖A'‖_F + 2^−s·eps: what a Frobenius normalisation divides a matrix by, in the
/// units of the pre-scaled A' = 2^−s·A (normalise_and_load(); `fro` = ‖A'‖_F, `prescale` = s, the
/// ldexp exact, so s = 0 gives safety·‖A‖_F + eps bit for bit).
inline double frobenius_divisor(const Normalization& nz, double fro, int prescale) {
  return nz.safety * fro + std::ldexp(nz.eps, -prescale);
}

/// Validates the input (NaN/Inf), computes each matrix's scale factor for the normalisation,
/// and loads W[b] = factor[b]·a'[b] into x, a' = 2^−s·a the pre-scaled input
/// (pre_scale_exponent(); s = 0 but for max|a| outside [2^−511, 2^511], and always 0 without a
/// norm-based normalisation), so that W is right for every finite input although ‖a‖_F may
/// exceed the largest double or 1/max|a| overflow. Nothing is written to user memory. On NaN/Inf
/// returns non_finite_input with `bad` set to the first bad matrix. `host.norms` receives
/// ‖a'[b]‖_F (0 for an all-zero matrix) and `host.exponents` s when the normalisation is
/// Frobenius, Schatten-4 or AOL, else 1 and 0 (`host.stats` and `host.factor` are its scratch:
/// no host allocation once they are reserved for the batch): ‖a[b]‖_F = 2^s·norms[b], and a
/// caller whose result scales with a (degree d) multiplies it by 2^(s·d). The normalisation's
/// eps applies to ‖a‖_F (as 2^−s·eps to ‖a'‖_F). For Schatten-4 and AOL the load is
/// W = a'/‖a'‖_F (safety and eps are applied by schatten4_rescale, aol_rescale), and
/// factor_device[b] keeps 1/‖a'‖_F (0 for zero). `factor_device` holds kFactorDoubles·batch
/// doubles in the space's memory (the factors, then scratch; the pre-scales 2^−s stay in slot
/// kPreScaleSlot for load_scaled()). One wait for the whole batch (the read-back of the
/// statistics).
template <class Exec, class TIn, class TC>
Status normalise_and_load(const Exec& space, const Strided3<const TIn, typename Exec::memory_space>& a,
                          const Normalization& nz, double* factor_device,
                          const Mat3<TC, typename Exec::memory_space>& x, bool transposed, HostScalars& host,
                          index_t& bad) {
  const std::size_t batch = a.extent(0);
  // The statistics live behind the factors (kFactorDoubles): amax, inv, ssq. Both passes are
  // queued and read back together, so a batch costs one wait, not two per matrix.
  double* amax_d = factor_device + batch;
  double* inv_d = amax_d + batch;
  double* ssq_d = inv_d + batch;
  // Schatten-4 and AOL first load a/‖a‖_F and rescale from the first Gram.
  const bool gram_scaled = nz.kind == Normalization::Kind::schatten4 || nz.kind == Normalization::Kind::aol;
  const bool needs_norm = nz.kind == Normalization::Kind::frobenius || gram_scaled;  // ‖a‖_F
  max_abs_per_item(space, a, amax_d, inv_d);  // one pass finds NaN/Inf before anything is written
  if (needs_norm) scaled_squares_per_item(space, a, inv_d, ssq_d);  // (discarded when one is NaN)
  std::vector<double>& stats = host.stats;                          // amax, inv, ssq on the host
  std::vector<double>& factor = host.factor;
  std::vector<double>& norms = host.norms;
  std::vector<int>& exponents = host.exponents;
  factor.assign(batch, 1.0);
  exponents.assign(batch, 0);
  read_back(space, amax_d, 3 * batch, stats);
  const double* amax = stats.data();
  const double* inv = stats.data() + batch;
  const double* ssq = stats.data() + 2 * batch;
  norms.assign(batch, 1.0);
  for (std::size_t b = 0; b < batch; ++b)
    if (!std::isfinite(amax[b])) {
      bad = static_cast<index_t>(b);
      return Status::non_finite_input;
    }
  if (needs_norm) {
    for (std::size_t b = 0; b < batch; ++b) {
      const int e = pre_scale_exponent(amax[b]);
      exponents[b] = e;
      // ‖a'‖_F = 2^−s·amax·sqrt(ssq), or 2^(−s−1023)·sqrt(ssq) where pass 1 capped inv at 2^1023
      // (subnormal amax); the ldexp are exact, so s = 0 gives the bits of amax·sqrt(ssq).
      norms[b] = amax[b] == 0.0       ? 0.0
                 : inv[b] == 0x1p1023 ? std::ldexp(std::sqrt(ssq[b]), -1023 - e)
                                      : std::ldexp(amax[b], -e) * std::sqrt(ssq[b]);
      factor[b] = norms[b] == 0.0 ? 0.0
                  : gram_scaled   ? 1.0 / norms[b]
                                  : 1.0 / frobenius_divisor(nz, norms[b], e);  // zero → zero
    }
  }
  copy_to_device(space, factor_device, factor);
  stats.resize(batch);  // the pre-scales 2^−s (the statistics are read)
  for (std::size_t b = 0; b < batch; ++b)
    stats[b] = std::ldexp(1.0, -exponents[b]);
  copy_to_device(space, factor_device + kPreScaleSlot * batch, stats);
  load_scaled(space, a, factor_device, x, transposed);
  return Status::ok;
}

/// The polar() contract for the Newton–Schulz family on strided batches in a memory space
/// `Exec` can access, iterating in precision TC. See schatten::polar for the documentation.
/// `output_norm_power` e ≠ 0 (Frobenius normalisation only) multiplies each output by ν_b^e in
/// the store pass, ν_b = safety·‖a[b]‖_F + eps the divisor of the normalisation (‖a[b]‖_F for
/// safety 1 and eps 0, bit for bit): spectral_power()'s polynomial method returns U f(Σ/ν) Vᵀ·ν^α
/// that way.
template <class Exec, class TIn, class TC>
PolarReport polar_strided(const Exec& space, const Strided3<const TIn, typename Exec::memory_space>& a,
                          const Strided3<TIn, typename Exec::memory_space>& q, const PolarOptions& options,
                          Workspace<typename Exec::memory_space>& ws, double output_norm_power = 0.0) {
  using Mem = typename Exec::memory_space;
  if (const char* msg = check_polar_options(options)) return polar_failure(Status::invalid_argument, msg);
  if (const char* msg = check_io(a, q)) return polar_failure(Status::invalid_argument, msg);

  const CoefficientSchedule& sched = resolved_schedule(options);
  const bool aol = sched.normalization.kind == Normalization::Kind::aol;
  // AOL scales the rows of a square A, whatever its layout: W = A (left form, rows of W), not Aᵀ.
  const PolarShape s(a.extent(0), a.extent(1), a.extent(2),
                     prefers_transpose(a) && !(aol && a.extent(1) == a.extent(2)));
  PolarReport report;
  if (s.batch == 0 || s.k == 0) return report;  // empty: nothing to compute or write

  const int iterations = options.iterations;
  try {
    ws.reserve(polar_bytes<TC, Mem>(s, options.method, aol), static_cast<std::size_t>(s.batch));
  } catch (const std::exception&) {
    return polar_failure(Status::out_of_memory, "workspace allocation failed");
  }
  Arena arena(ws.data());
  PolarBuffers<TC, Mem> buf = carve_polar<TC, Mem>(arena, s, options.method, aol);
  HostScalars& host = ws.host_scalars();
  const std::vector<double>& norms = host.norms;
  index_t bad = -1;
  if (normalise_and_load(space, a, sched.normalization, buf.factor, buf.x, s.w_is_transpose, host, bad) !=
      Status::ok)
    return polar_failure(Status::non_finite_input, "input contains NaN or Inf", bad);
  // Schatten-4 and AOL: the first Gram gives the scaling, and both iterations take the rescaled
  // Gram as their first.
  const bool s4 = sched.normalization.kind == Normalization::Kind::schatten4;
  const bool gram_ready = s4 || aol;
  // AOL in 16 bits: the rows loaded at unit scale, so that none underflows before AOL scales it.
  const bool aol_rows = aol && is_lowp<TC>;
  if (aol_rows) aol_load_rows(space, a, buf.factor, buf.x, s.w_is_transpose, s.right, buf.row_prescale);
  if (gram_ready) gram(space, options.symmetric_gram, s.right, buf.x, buf.sq[0]);
  if (s4) schatten4_rescale(space, sched.normalization, host, buf.factor, buf.x, buf.sq[0]);
  if (aol)
    aol_rescale(space, sched.normalization, s.right, buf.factor, buf.row_scale, buf.x, buf.sq[0],
                aol_rows ? buf.row_prescale : nullptr);
  Mat3<TC, Mem> result;
  if (options.method == PolarMethod::gram_newton_schulz) {
    result = gram_newton_schulz_steps(space, options.symmetric_gram, s.right, sched, iterations,
                                      options.gram_restarts, buf.x, buf.y, buf.sq[0], buf.sq[1], buf.sq[2],
                                      buf.sq[3], buf.sq[4], gram_ready);
  } else {
    result = newton_schulz_steps(space, options.symmetric_gram, s.right, sched, iterations, buf.x, buf.y,
                                 buf.sq[0], buf.sq[1], gram_ready);
  }
  report.iterations = iterations;
  if (options.method == PolarMethod::gram_newton_schulz) {
    // polar_iterate_bound() is a proof in exact arithmetic only. Gram Newton–Schulz amplifies the
    // rounding of R = X Xᵀ by the factor it accumulates between restarts, and in float an
    // ill-conditioned input broke the bound: outputs of 2e6 against 1.99 at κ = 1e6, every entry
    // NaN at κ = 1e8, with status ok (kernel audit of 2026-12-07, docs/reliability.md). Every
    // entry of an iterate is at most its σ_max, so an entry beyond the bound proves the loss:
    // breakdown, nothing written. One max-reduction and one wait; what stays inside the bound is
    // accurate to docs/kernels/polar.md's Gram bound, T·u·Σ_s Λ_s² ∏_{s'>s} Λ_{s'}.
    const double bound = polar_iterate_bound(options);
    if (bound < HUGE_VAL) {
      const index_t bad_item = first_max_beyond(space, result, buf.factor + s.batch, host.stats,
                                                [&](index_t, double m) { return !(m <= bound); });
      if (bad_item >= 0)
        return polar_failure(
            Status::breakdown,
            "Gram Newton-Schulz lost accuracy: an iterate left polar_iterate_bound() (rounding "
            "amplified by the accumulated Gram factors; restart more often, iterate in fp64, or "
            "use newton_schulz)",
            bad_item);
    }
  }
  if (options.compute_orthogonality_error)
    report.orthogonality_error = max_orthogonality_error(
        space, s.right, result, buf.sq[0], false, options.symmetric_gram, buf.factor + s.batch, host.stats);
  std::vector<double>& f = host.out;  // per-matrix output factors, when any
  f.clear();
  if (output_norm_power != 0.0 && sched.normalization.kind == Normalization::Kind::frobenius) {
    // ν^e = ν'^e·2^(s·e), ν' = frobenius_divisor() in the units of normalise_and_load's
    // pre-scaled A' = 2^−s·A, as f·2^n (split_pow2(); n replaces s in host.exponents). With the
    // dual-norm scaling f is formed whole (+∞ beyond the range, which dual_norm_factors() refuses).
    const double e = output_norm_power;
    f.resize(norms.size());
    for (std::size_t b = 0; b < f.size(); ++b) {
      int& n = host.exponents[b];
      f[b] = norms[b] > 0.0
                 ? split_pow2(std::pow(frobenius_divisor(sched.normalization, norms[b], n), e), n * e, n)
                 : 0.0;
      if (options.dual_norm_scale) f[b] = std::ldexp(f[b], std::exchange(n, 0));
    }
  }
  if (options.dual_norm_scale) {
    const index_t bad_item = dual_norm_factors<TIn>(space, a, result, s.w_is_transpose, buf.factor + s.batch,
                                                    f, host.stats, host.exponents);
    if (bad_item >= 0)
      return polar_failure(Status::out_of_range, "the dual-norm scaled output overflows the output type",
                           bad_item);
  } else if (!f.empty()) {
    // The iterate's entries are at most max |p| over [0, 1] (2× for rounding in 16 bits).
    const double w_bound = 2.0 * sched.max_abs(iterations);
    const index_t bad_item = first_overflowing<TIn>(
        space, result, f,
        [&](index_t b) {
          const std::size_t i = static_cast<std::size_t>(b);
          return std::ldexp(std::fabs(f[i]) * w_bound, host.exponents[i]);
        },
        buf.factor + s.batch, host.stats, &host.exponents);
    if (bad_item >= 0)
      return polar_failure(Status::out_of_range, "the scaled output overflows the output type", bad_item);
  } else if (!(polar_iterate_bound(options) < HUGE_VAL)) {
    // Options without a bound on the iterates (no normalisation, a safety < 1 or a schedule
    // steep outside [0, 1/safety]: polar_iterate_bound()) can grow the iterate past the compute
    // type: X Xᵀ overflows and the output would be Inf/NaN. One max-reduction per matrix (O(mn),
    // against the iteration's O(mnk)) finds it before anything is written. With a bound (every
    // schedule the library ships) the output is finite by polar_iterate_bound()'s argument.
    f.assign(static_cast<std::size_t>(s.batch), 1.0);
    const index_t bad_item = first_overflowing<TIn>(
        space, result, f, [](index_t) { return HUGE_VAL; }, buf.factor + s.batch, host.stats);
    if (bad_item >= 0)
      return polar_failure(Status::out_of_range,
                           "the iterate overflowed: these options bound no iterate (polar_iterate_bound)",
                           bad_item);
  }
  // The powers 2^n of the output-norm factors (n replaced s in host.exponents), or the pre-scales
  // 2^s of the dual-norm factors (s; 0 where the output-norm factor took it in whole).
  const bool split = (output_norm_power != 0.0 || options.dual_norm_scale) && !f.empty();
  store_scaled(space, result, q, s.w_is_transpose, f, buf.factor, {}, 1.0, split ? &host.exponents : nullptr,
               &host.stats);
  fence_on(space);
  return report;
}

}  // namespace schatten::kokkos::detail
