// SPDX-License-Identifier: Apache-2.0
/// \file
/// QDWH on Kokkos (include/schatten/kernels/qdwh.hpp has the contract). One matrix of a batch
/// at a time: its weights, step types and iteration count depend on its own spectrum.
#pragma once

#include <Kokkos_Core.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "schatten/kernels/qdwh.hpp"
#include "schatten/kokkos/detail/linalg.hpp"
#include "schatten/kokkos/detail/polar_impl.hpp"

namespace schatten::kokkos::detail {

/// Working set of QDWH: the batch of iterates (loaded and stored in one pass each) plus the
/// scratch of one matrix, reused across the batch.
template <class TC, class Mem>
struct QdwhBuffers {
  Mat3<TC, Mem> x;              ///< iterates W, w_rows × w_cols × batch
  Mat2<TC, Mem> y, q1, a0;      ///< one matrix: product scratch, Q₁ of the QR step, scaled input
  Mat2<TC, Mem> g, q2, t;       ///< k × k: Gram / Cholesky factors, Q₂, second factor
  Mat2<TC, Mem> vk, va, vn;     ///< k × 1, k × 1 and n × 1 vectors of the estimators
  Mat3<TC, Mem> h;              ///< k × k × batch symmetric factors (only when requested)
  double* factor = nullptr;     ///< per-matrix load factor, then scratch (kFactorDoubles·batch doubles)
  HostScalars* host = nullptr;  ///< the call's host scalars (the estimators' starts go through them)
};

template <class TC, class Mem>
Mat2<TC, Mem> carve2(Arena& arena, index_t rows, index_t cols) {
  return Mat2<TC, Mem>(arena.take<TC>(Arena::box(rows, cols)), rows, cols);
}

template <class TC, class Mem>
QdwhBuffers<TC, Mem> carve_qdwh(Arena& arena, const PolarShape& s, bool want_h, HostScalars* host = nullptr) {
  QdwhBuffers<TC, Mem> b;
  b.host = host;
  b.x = carve<TC, Mem>(arena, s.w_rows, s.w_cols, s.batch);
  b.y = carve2<TC, Mem>(arena, s.w_rows, s.w_cols);
  b.q1 = carve2<TC, Mem>(arena, s.w_rows, s.w_cols);
  b.a0 = carve2<TC, Mem>(arena, s.w_rows, s.w_cols);
  b.g = carve2<TC, Mem>(arena, s.k, s.k);
  b.q2 = carve2<TC, Mem>(arena, s.k, s.k);
  b.t = carve2<TC, Mem>(arena, s.k, s.k);
  b.vk = carve2<TC, Mem>(arena, s.k, 1);
  b.va = carve2<TC, Mem>(arena, s.k, 1);
  b.vn = carve2<TC, Mem>(arena, s.n, 1);
  if (want_h) b.h = carve<TC, Mem>(arena, s.k, s.k, s.batch);
  b.factor = arena.take<double>(Arena::box(kFactorDoubles, s.batch));
  return b;
}

template <class TC, class Mem>
std::size_t qdwh_bytes(const PolarShape& s, bool want_h) {
  Arena counting;
  carve_qdwh<TC, Mem>(counting, s, want_h);
  return counting.used();
}

/// Outcome of QDWH on one matrix.
struct QdwhItem {
  int iterations = 0, qr_iterations = 0;
  double lower_bound = 1.0;  ///< l₀ used
  double scale = 0.0;        ///< X₀ = (load-normalised A) / scale; 0 for an all-zero matrix
  bool converged = true;
  const char* failure = nullptr;  ///< breakdown message, or nullptr
};

/// The l₀ used when σ_min(X₀) is at the rounding level (numerically rank-deficient or κ ≳ 1e13
/// in double): u/64. Rounding-level singular values (≈ u) then still converge within the
/// weight schedule — 6 iterations in double from any l₀ down to 1e-24 — instead of needing
/// extra Halley steps, while κ([√c X; I]) ≈ 0.8·l₀^{-2/3} (5e11 in double) stays inside the
/// range of shifted Cholesky-QR3 for k up to about 4000. [P] docs/kernels/qdwh.md.
template <class TC>
double rounding_level_lower_bound() {
  return std::numeric_limits<TC>::epsilon() / 64.0;
}
static_assert(std::numeric_limits<double>::epsilon() / 64.0 == kQdwhSmallestLowerBound,
              "qdwh.hpp's smallest lower bound is the rounding-level l0 in double");

/// The absolute error of a backward-stable QR of X₀ (m × k, ‖X₀‖₂ ≲ 1) in precision TC,
/// (m + k)·u: singular values of X₀ below it cannot be told from rounding. estimate_lower_bound()
/// subtracts it; qdwh_item() leaves singular values below it to rounding when its weights start
/// from a larger l₀ than the caller's bound (fp32's l₀ ≥ 1e-3, a restart after a breakdown).
template <class TC>
double qr_noise_level(index_t m, index_t k) {
  return double(m + k) * std::numeric_limits<TC>::epsilon();
}

/// l₀ estimate: R of a shifted Cholesky-QR3 of X₀ (m × k, ‖X₀‖₂ ≲ 1), then σ_min(R) by 12 steps
/// of inverse iteration with R⁻¹R⁻ᵀ. The QR is backward stable with absolute error about
/// (m + k)·u in this scale, so that is subtracted, and the result halved for the estimate's
/// one-sidedness (inverse iteration approaches σ_min from above). Returns the rounding-level
/// bound when nothing is left above the noise or when the factorisation breaks down (κ beyond
/// ~u⁻¹/√(11mk)).
template <class Exec, class TC, class Mem>
double estimate_lower_bound(const Exec& space, bool right, index_t m, const Mat2<TC, Mem>& x0,
                            const QdwhBuffers<TC, Mem>& b) {
  const index_t k = b.g.extent(0);
  const double u = std::numeric_limits<TC>::epsilon();
  const double floor = rounding_level_lower_bound<TC>();
  const double shift = 11.0 * (double(m) * double(k) + double(k) * double(k + 1)) * u;
  // R₁: chol(XᵀX + sI) in q2;  Q ← X R₁⁻¹
  gram2(space, right, TC(1), x0, TC(0), b.q2);
  add_identity(space, b.q2, TC(shift));
  if (!cholesky_lower(space, b.q2)) return floor;
  copy(space, b.q1, x0);
  x_times_inv_lt(space, right, TC(1), b.q2, b.q1);
  // R₂ in t, R₃ in g (Cholesky-QR2 on Q)
  gram2(space, right, TC(1), b.q1, TC(0), b.t);
  if (!cholesky_lower(space, b.t)) return floor;
  x_times_inv_lt(space, right, TC(1), b.t, b.q1);
  gram2(space, right, TC(1), b.q1, TC(0), b.g);
  if (!cholesky_lower(space, b.g)) return floor;
  // Inverse iteration: R = R₃R₂R₁ with R_i = L_iᵀ, so R⁻ᵀ = L₃⁻¹L₂⁻¹L₁⁻¹ and R⁻¹ = L₁⁻ᵀL₂⁻ᵀL₃⁻ᵀ.
  Rng rng(0x1a7e5eedu + static_cast<std::uint64_t>(k));
  upload_vector(space, *b.host, b.vk, [&] { return rng.normal(); });
  scale(space, b.vk, static_cast<TC>(1.0 / frobenius(space, b.vk)));
  double lambda = 0.0;
  for (int it = 0; it < 12; ++it) {
    trsm(space, "L", "L", "N", "N", TC(1), b.q2, b.vk);
    trsm(space, "L", "L", "N", "N", TC(1), b.t, b.vk);
    trsm(space, "L", "L", "N", "N", TC(1), b.g, b.vk);
    const double w = frobenius(space, b.vk);
    lambda = w * w;  // vᵀ R⁻¹R⁻ᵀ v with ‖v‖ = 1
    trsm(space, "L", "L", "T", "N", TC(1), b.g, b.vk);
    trsm(space, "L", "L", "T", "N", TC(1), b.t, b.vk);
    trsm(space, "L", "L", "T", "N", TC(1), b.q2, b.vk);
    const double z = frobenius(space, b.vk);
    if (!std::isfinite(z) || !(z > 0.0)) return floor;
    scale(space, b.vk, static_cast<TC>(1.0 / z));
  }
  const double sigma = 1.0 / std::sqrt(lambda);
  const double l0 = 0.5 * (sigma - qr_noise_level<TC>(m, k));
  return l0 > u ? std::min(l0, 1.0) : floor;
}

/// Thin QR of the stacked matrix Y = [√c X; I] ((m + k) × k) by shifted Cholesky-QR3
/// (Fukaya, Kannan, Nakatsukasa, Yamamoto, Yanagisawa 2020): R₁ = chol(YᵀY + sI) with
/// s = 11((m+k)k + k(k+1))·u·‖Y‖₂² and ‖Y‖₂² ≤ c + 1, Q ← Y R₁⁻¹, then Cholesky-QR twice
/// more on Q. Stable while κ(Y) ≤ √(1 + c) is below about u⁻¹/√(11(m+k)k) (e.g. 1.6e12 in
/// double for k = m = 1000). Only Grams, k × k Cholesky factors and TRSMs: no Householder
/// panels, so the work is BLAS-3 on any backend. On return b.q1 holds Q₁ (X-shaped) and
/// b.q2 holds Q₂ = R⁻¹ (k × k, upper triangular). Returns false on a Cholesky breakdown.
template <class Exec, class TC, class Mem>
bool shifted_cholesky_qr3_stacked(const Exec& space, bool right, index_t m, double c, const Mat2<TC, Mem>& x,
                                  const QdwhBuffers<TC, Mem>& b) {
  const index_t k = b.g.extent(0);
  const double u = std::numeric_limits<TC>::epsilon();
  const double shift = 11.0 * (double(m + k) * double(k) + double(k) * double(k + 1)) * u * (c + 1.0);
  gram2(space, right, TC(c), x, TC(0), b.g);  // YᵀY + sI = c XᵀX + (1 + s) I
  add_identity(space, b.g, TC(1.0 + shift));
  if (!cholesky_lower(space, b.g)) return false;
  copy(space, b.q1, x);  // Q₁ = √c X L⁻ᵀ
  x_times_inv_lt(space, right, TC(std::sqrt(c)), b.g, b.q1);
  set_identity(space, b.q2, TC(1));  // Q₂ = L⁻ᵀ
  trsm(space, "L", "L", "T", "N", TC(1), b.g, b.q2);
  for (int pass = 0; pass < 2; ++pass) {  // Cholesky-QR2 on [Q₁; Q₂]
    gram2(space, right, TC(1), b.q1, TC(0), b.t);
    gemm(space, "T", "N", TC(1), b.q2, b.q2, TC(1), b.t);
    if (!cholesky_lower(space, b.t)) return false;
    x_times_inv_lt(space, right, TC(1), b.t, b.q1);
    trsm(space, "R", "L", "T", "N", TC(1), b.t, b.q2);
  }
  return true;
}

/// One QR-based step: X ← (b/c) X + (a − b/c)/√c · Q₁Q₂ᵀ with [√c X; I] = [Q₁; Q₂] R.
/// Returns ‖ΔX‖_F, or −1 on a Cholesky breakdown.
template <class Exec, class TC, class Mem>
double qdwh_qr_step(const Exec& space, bool right, index_t m, const QdwhWeights& w, const Mat2<TC, Mem>& x,
                    const QdwhBuffers<TC, Mem>& b) {
  if (!shifted_cholesky_qr3_stacked(space, right, m, w.c, x, b)) return -1.0;
  x_times_transpose(space, right, TC(1), b.q1, b.q2, TC(0), b.y);  // Q₁Q₂ᵀ
  return update_and_difference(space, x, w.b / w.c, (w.a - w.b / w.c) / std::sqrt(w.c), b.y);
}

/// One Cholesky-based step: X ← (b/c) X + (a − b/c) X (I + c XᵀX)⁻¹. κ(I + cXᵀX) ≤ 1 + c ≤ 101.
template <class Exec, class TC, class Mem>
double qdwh_cholesky_step(const Exec& space, bool right, const QdwhWeights& w, const Mat2<TC, Mem>& x,
                          const QdwhBuffers<TC, Mem>& b) {
  gram2(space, right, TC(w.c), x, TC(0), b.g);
  add_identity(space, b.g, TC(1));
  if (!cholesky_lower(space, b.g)) return -1.0;
  copy(space, b.q1, x);
  x_times_inv_lt(space, right, TC(1), b.g, b.q1);  // X L⁻ᵀ L⁻¹ = X (L Lᵀ)⁻¹
  x_times_inv_l(space, right, TC(1), b.g, b.q1);
  return update_and_difference(space, x, w.b / w.c, w.a - w.b / w.c, b.q1);
}

/// QDWH on one matrix whose iterate x holds the load-normalised input A/‖A‖_F. On return x
/// holds U_p and, when `h` is non-empty, h holds the short-side factor sym(Uᵀ X₀) of
/// X₀ = x/scale (the caller rescales by ‖A‖_F·scale).
template <class Exec, class TC, class Mem>
QdwhItem qdwh_item(const Exec& space, bool right, index_t m, const QdwhOptions& o, const Mat2<TC, Mem>& x,
                   const QdwhBuffers<TC, Mem>& b, const Mat2<TC, Mem>& h) {
  const bool h_out = h.data() != nullptr;
  QdwhItem r;
  const index_t k = b.g.extent(0);
  const double u = std::numeric_limits<TC>::epsilon();
  const double sigma = sigma_max_estimate(space, right, x, b.vk, b.va, b.vn, *b.host);
  if (!(sigma > 0.0)) {  // all-zero matrix: U = 0, H = 0
    r.scale = 0.0;
    if (h_out) set_identity(space, h, TC(0));
    return r;
  }
  // α = 1.02·σ_est. The power iteration approaches σ_max from below, within 2 % unless σ₂/σ₁ is
  // close to 1; then its 30 steps may end lower (0.92 to 1 of σ_max for Gaussian 80 × 40
  // matrices, seeds 1–2000; test_linalg.cpp), and ‖X₀‖₂ can exceed 1 by up to ~7 %. (A start
  // nearly orthogonal to v₁, which could stop one pass at σ₂, is caught by the estimate's
  // second pass: linalg.hpp.) QDWH tolerates that: each step's map
  // f(x) = x(a + b x²)/(1 + c x²) has f(1) = 1 and, with
  // b = (a − 1)²/4 and c = a + b − 1, f′(1) = ((a − 3)/(a + 1))² < 1, so singular values a little
  // above 1 come down towards it as the others come up (measured in double on two such
  // matrices, 3.3 % and 4.3 % low: 4 iterations and ‖U − U_exact‖_F = 3.7e-14, as on two whose
  // estimate was close; 2026-12-01). An α above σ_max only costs part of one Halley step.
  r.scale = 1.02 * sigma;
  scale(space, x, TC(1.0 / r.scale));
  copy(space, b.a0, x);

  // A given l₀ below kQdwhSmallestLowerBound counts as it (qdwh_weights() raises it; the report
  // names the l₀ used).
  const double bound = o.lower_bound < 0.0
                           ? estimate_lower_bound(space, right, m, x, b)
                           : std::max(o.lower_bound == 0.0 ? u : o.lower_bound, kQdwhSmallestLowerBound);
  // fp32: keep √(1 + c₀) ≤ ~130 so shifted Cholesky-QR3 is stable for k up to several thousand.
  double l = std::is_same<TC, float>::value ? std::max(bound, 1e-3) : bound;

  // Stopping. The weights come from l_k; when l₀ was raised above the bound (fp32, or a restart
  // below), the singular values in between lag behind l_k, and once l_k = 1 they only triple per
  // Halley step. A lone one among converged values moves the iterate by about 2x per step, under
  // the dx test while x is small (in fp32 the tolerance is 0.12 at k = 200): the loop stopped
  // with it unconverged and status ok (a 300 × 200 float matrix with σ_min/σ_max = 1e-5 left it
  // at 0.22; audit of 2026-12-07, docs/reliability.md). So the loop also follows the image s_k of
  // the smallest singular value it answers for, s₀ = the bound (not below the QR's noise level,
  // under which values cannot be told from rounding), through the same maps, and stops only when
  // s_k too is within 5u of 1. While l₀ is the bound, s_k = l_k and nothing changes.
  // When the bound is at or below that noise level (the estimate found nothing above it:
  // rank-deficient inputs), values between u and the noise may be data, and the dx test waits
  // for them, but it also waits for the directions below u·‖X₀‖, which are rounding, not data,
  // and which Halley steps lift from wherever rounding put them by ×3 per step: rank-1 float
  // matrices returned not_converged after the 16 iterations of the default (audit of
  // 2026-12-07, docs/reliability.md). So the loop also follows the image t_k of u, and there stops
  // once t_k has converged, whatever dx: every singular value from u·‖X₀‖ up is then within 5u
  // of 1 in exact arithmetic (about 12 iterations in float), and the directions below end
  // between 0 and 1, as rounding directs (in double, whose l₀ is the bound, they reach 1).
  const double noise = qr_noise_level<TC>(m, k);
  const double s0 = std::max(bound, noise);
  const bool below_noise = bound <= noise;
  const double dx_tol = std::cbrt(5.0 * u) * std::sqrt(double(k));
  for (int attempt = 0;; ++attempt) {
    r.lower_bound = l;
    r.iterations = r.qr_iterations = 0;
    r.converged = false;
    double lk = l;
    double sk = std::min(l, s0);
    double tk = std::min(l, u);
    bool broke = false;
    while (r.iterations < o.max_iterations) {
      const bool halley = std::fabs(1.0 - lk) <= 5.0 * u;
      const QdwhWeights w = halley ? QdwhWeights{} : qdwh_weights(lk);
      double dx;
      if (w.c > 100.0) {
        dx = qdwh_qr_step(space, right, m, w, x, b);
        ++r.qr_iterations;
      } else {
        dx = qdwh_cholesky_step(space, right, w, x, b);
      }
      ++r.iterations;
      if (dx < 0.0) {
        broke = true;
        break;
      }
      if (!std::isfinite(dx)) {
        r.failure = "QDWH iterate became non-finite";
        return r;
      }
      lk = halley ? 1.0 : w.next_lower;
      sk = w.image(sk);
      tk = w.image(tk);
      if (std::fabs(1.0 - sk) <= 5.0 * u && std::fabs(1.0 - lk) <= 5.0 * u &&
          (dx <= dx_tol || (below_noise && std::fabs(1.0 - tk) <= 5.0 * u))) {
        r.converged = true;
        break;
      }
    }
    if (!broke) break;
    // A Cholesky-QR breakdown means κ([√c X; I]) was too large for this precision: restart from
    // X₀ with a 100× larger l₀ (smaller c); values below it converge through Halley steps.
    if (attempt >= 3 || r.qr_iterations == 0) {
      r.failure =
          "Cholesky factorisation broke down in a QDWH step (input too ill-conditioned for this precision)";
      return r;
    }
    copy(space, x, b.a0);
    l = std::min(1.0, 100.0 * l);
  }
  if (o.polish) {  // U ← 1.5 U − 0.5 U (UᵀU)
    gram2(space, right, TC(1), x, TC(0), b.g);
    x_times_sym(space, right, TC(1), x, b.g, TC(0), b.y);
    update_and_difference(space, x, 1.5, -0.5, b.y);
  }
  if (h_out) {  // H = sym(Uᵀ X₀)
    x_transpose_times(space, right, TC(1), x, b.a0, TC(0), h);
    symmetrize(space, Mat3<TC, Mem>(h.data(), k, k, 1));
  }
  return r;
}

inline QdwhReport qdwh_failure(Status s, const char* msg, index_t bad = -1) {
  QdwhReport r;
  r.status = s;
  r.message = msg;
  r.bad_item = bad;
  return r;
}

/// Symmetric factors of a batch (k × k each), strided, for the optional output.
template <class T, class Mem>
using HOut = Strided3<T, Mem>;

/// The qdwh() contract on strided batches, iterating in precision TC.
template <class Exec, class TIn, class TC>
QdwhReport qdwh_strided(const Exec& space, const Strided3<const TIn, typename Exec::memory_space>& a,
                        const Strided3<TIn, typename Exec::memory_space>& q,
                        const HOut<TIn, typename Exec::memory_space>& h, const QdwhOptions& options,
                        Workspace<typename Exec::memory_space>& ws) {
  using Mem = typename Exec::memory_space;
  if (const char* msg = check_qdwh_options(options)) return qdwh_failure(Status::invalid_argument, msg);
  if (const char* msg = check_io(a, q)) return qdwh_failure(Status::invalid_argument, msg);
  const bool want_h = h.data() != nullptr;
  const PolarShape s(a.extent(0), a.extent(1), a.extent(2), prefers_transpose(a));
  if (want_h) {
    if (static_cast<index_t>(h.extent(0)) != s.batch || static_cast<index_t>(h.extent(1)) != s.k ||
        static_cast<index_t>(h.extent(2)) != s.k)
      return qdwh_failure(Status::invalid_argument, "h must hold batch matrices of min(rows, cols)^2");
    if (const char* msg = schatten::detail::check_layout(h.data(), h.extent(0), h.extent(1), h.extent(2),
                                                         h.stride(0), h.stride(1), h.stride(2), true))
      return qdwh_failure(Status::invalid_argument, msg);
    if (const char* msg = check_view_aliasing(q, h, false))
      return qdwh_failure(Status::invalid_argument, msg);
    if (const char* msg = check_view_aliasing(a, h, true)) return qdwh_failure(Status::invalid_argument, msg);
  }
  QdwhReport report;
  if (s.batch == 0 || s.k == 0) return report;
  try {
    ws.reserve(qdwh_bytes<TC, Mem>(s, want_h), static_cast<std::size_t>(s.batch));
  } catch (const std::exception&) {
    return qdwh_failure(Status::out_of_memory, "workspace allocation failed");
  }
  Arena arena(ws.data());
  HostScalars& host = ws.host_scalars();
  const QdwhBuffers<TC, Mem> buf = carve_qdwh<TC, Mem>(arena, s, want_h, &host);
  const std::vector<double>& norms = host.norms;
  index_t bad = -1;
  if (normalise_and_load(space, a, Normalization{}, buf.factor, buf.x, s.w_is_transpose, host, bad) !=
      Status::ok)
    return qdwh_failure(Status::non_finite_input, "input contains NaN or Inf", bad);

  report.lower_bound = 1.0;
  std::vector<double>& h_scale = host.factor;  // (normalise_and_load's scratch, free again)
  h_scale.assign(static_cast<std::size_t>(s.batch), 0.0);
  for (index_t bi = 0; bi < s.batch; ++bi) {
    const QdwhItem r = qdwh_item(space, s.right, s.n, options, item(buf.x, bi), buf,
                                 want_h ? item(buf.h, bi) : Mat2<TC, Mem>());
    if (r.failure) return qdwh_failure(Status::breakdown, r.failure, bi);  // nothing written yet
    report.iterations = std::max(report.iterations, r.iterations);
    report.qr_iterations = std::max(report.qr_iterations, r.qr_iterations);
    if (r.scale > 0.0) report.lower_bound = std::min(report.lower_bound, r.lower_bound);
    if (!r.converged && report.status == Status::ok) {
      report.status = Status::not_converged;
      report.message = "QDWH reached max_iterations";
      report.bad_item = bi;
    }
    // H of A = 2^s·‖A'‖_F·scale · H of X₀ (normalise_and_load's pre-scaling): the A' part here.
    h_scale[static_cast<std::size_t>(bi)] = norms[static_cast<std::size_t>(bi)] * r.scale;
  }
  if (want_h) {  // |H_ij| ≤ ‖H‖₂ = σ_max(A) ≤ ‖A‖_F: only inputs near the range's end are checked
    const index_t bad_item = first_overflowing<TIn>(
        space, buf.h, h_scale,
        [&](index_t bi) {
          const std::size_t i = static_cast<std::size_t>(bi);
          return 1.01 * std::ldexp(norms[i], host.exponents[i]);  // 1 %: rounding of H₀
        },
        buf.factor + s.batch, host.stats, &host.exponents);
    if (bad_item >= 0)
      return qdwh_failure(Status::out_of_range, "the symmetric factor H overflows the output type", bad_item);
  }
  if (options.compute_orthogonality_error)
    report.orthogonality_error =
        max_orthogonality_error(space, s.right, buf.x, Mat3<TC, Mem>(buf.t.data(), s.k, s.k, 1), true, false,
                                buf.factor + s.batch, host.stats);  // a GEMM, as QDWH's cost model counts it
  std::vector<double>& f = host.out;  // ⟨A, U⟩ per matrix with QdwhOptions::dual_norm_scale, else none
  f.clear();
  if (options.dual_norm_scale) {
    const index_t bad_item = dual_norm_factors<TIn>(space, a, buf.x, s.w_is_transpose, buf.factor + s.batch,
                                                    f, host.stats, host.exponents);
    if (bad_item >= 0)
      return qdwh_failure(Status::out_of_range, "the dual-norm scaled output overflows the output type",
                          bad_item);
  }
  store_scaled(space, buf.x, q, s.w_is_transpose, f, buf.factor, {}, 1.0, &host.exponents,
               &host.stats);  // (the dual-norm factors' 2^s)
  if (want_h) {  // H of A = 2^s·‖A'‖_F·scale · H of X₀ (symmetric: orientation does not matter)
    for (index_t bi = 0; bi < s.batch; ++bi) {
      // 2^s (a normal double) applied after hs·H₀, so that an H that is representable is formed
      // without overflow whatever ‖A‖_F; 1 for s = 0.
      const double hs = h_scale[static_cast<std::size_t>(bi)],
                   p = std::ldexp(1.0, host.exponents[static_cast<std::size_t>(bi)]);
      const Mat2<TC, Mem> g = item(buf.h, bi);
      const auto hv = Kokkos::subview(h, bi, Kokkos::ALL, Kokkos::ALL);
      const index_t k = s.k;
      Kokkos::parallel_for(
          kernel_label("schatten::qdwh::store_h"),
          Kokkos::RangePolicy<Exec, Kokkos::IndexType<index_t>>(space, 0, k), KOKKOS_LAMBDA(index_t j) {
            for (index_t i = 0; i < k; ++i)
              hv(i, j) = static_cast<TIn>(hs * static_cast<double>(g(i, j)) * p);
          });
    }
  }
  fence_on(space);
  return report;
}

}  // namespace schatten::kokkos::detail
