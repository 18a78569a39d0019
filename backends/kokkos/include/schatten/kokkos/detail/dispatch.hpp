// SPDX-License-Identifier: Apache-2.0
/// \file
/// Run-time dispatch of the strided implementations on the iteration precision and method.
#pragma once

#include <cmath>
#include <type_traits>

#include "schatten/kokkos/detail/polar_impl.hpp"
#include "schatten/kokkos/detail/qdwh_impl.hpp"
#include "schatten/kokkos/detail/spectral_impl.hpp"

namespace schatten::kokkos::detail {

inline const char* kUnsupportedPrecision =
    "bf16/fp16 iteration needs the newton_schulz or polar_express method";

/// The iteration type TC as a value, for the generic lambdas of with_iteration_type().
template <class T>
struct IterationType {
  using type = T;
};

/// f(IterationType<TC>{}) for the iteration type that `p` selects with input type TIn:
/// automatic → TIn, fp32 → float, fp64 → double; bf16 / fp16 only for a LowP caller (16-bit
/// storage, fp32 accumulation): Kokkos' bhalf_t / half_t on CUDA (cuBLAS, vendor.hpp), the
/// software Bf16 / Fp16 elsewhere (portable_gemm.hpp). Otherwise fail(Status, message): bf16 /
/// fp16 for another caller → (unsupported, kUnsupportedPrecision); a value that is not a named
/// Precision → (invalid_argument, kUnknownPrecision). The one place the precision enum becomes a
/// type.
template <bool LowP, class Exec, class TIn, class Fail, class F>
auto with_iteration_type(Precision p, Fail&& fail, F&& f) -> decltype(fail(Status::ok, "")) {
  switch (p) {
    case Precision::automatic:
      return f(IterationType<TIn>{});
    case Precision::fp32:
      return f(IterationType<float>{});
    case Precision::fp64:
      return f(IterationType<double>{});
    case Precision::bf16:
    case Precision::fp16:
      if constexpr (LowP) {
#if defined(SCHATTEN_HAVE_LOWP_GEMM)
        if constexpr (std::is_same<Exec, Kokkos::Cuda>::value) {
          if (p == Precision::bf16) return f(IterationType<Kokkos::Experimental::bhalf_t>{});
          return f(IterationType<Kokkos::Experimental::half_t>{});
        } else  // (the software types are not instantiated for CUDA)
#endif
        {
          if (p == Precision::bf16) return f(IterationType<Bf16>{});
          return f(IterationType<Fp16>{});
        }
      }
      break;
  }
  return known_precision(p) ? fail(Status::unsupported, kUnsupportedPrecision)
                            : fail(Status::invalid_argument, kUnknownPrecision);
}

/// qdwh() with the iteration precision from options.compute (automatic = the input's).
template <class Exec, class TIn>
QdwhReport qdwh_dispatch(const Exec& space, const Strided3<const TIn, typename Exec::memory_space>& a,
                         const Strided3<TIn, typename Exec::memory_space>& q,
                         const Strided3<TIn, typename Exec::memory_space>& h, const QdwhOptions& options,
                         Workspace<typename Exec::memory_space>& ws) {
  return with_iteration_type<false, Exec, TIn>(
      options.compute, [](Status s, const char* m) { return qdwh_failure(s, m); },
      [&](auto tc) {
        return qdwh_strided<Exec, TIn, typename decltype(tc)::type>(space, a, q, h, options, ws);
      });
}

template <class Exec, class TIn>
PolarReport polar_dispatch(const Exec& space, const Strided3<const TIn, typename Exec::memory_space>& a,
                           const Strided3<TIn, typename Exec::memory_space>& q, const PolarOptions& options,
                           Workspace<typename Exec::memory_space>& ws, double output_norm_power = 0.0);

/// spectral_power(): the polynomial method (α ≠ 1) through polar_dispatch with the fitted
/// schedule; otherwise the rational method with QDWH's precision from options.qdwh.compute.
template <class Exec, class TIn>
SpectralPowerReport spectral_power_dispatch(const Exec& space,
                                            const Strided3<const TIn, typename Exec::memory_space>& a,
                                            const Strided3<TIn, typename Exec::memory_space>& out,
                                            const SpectralPowerOptions& options,
                                            Workspace<typename Exec::memory_space>& ws) {
  if (options.method == SpectralPowerMethod::polynomial && options.alpha != 1.0) {
    if (const char* msg = check_spectral_power_options(options))
      return spectral_failure(Status::invalid_argument, msg);
    // Built once per tabulated row and kept: no host allocation in steady state (a schedule
    // built per call made 8 allocations, and schatten_muon's prechecked step relies on none).
    const PolarOptions* po = nullptr;
    double fit_error = 0.0;
    if (const Status st = schatten::detail::cached_polynomial_power_polar_options(options, po, &fit_error);
        st != Status::ok)
      return spectral_failure(
          st, st == Status::out_of_memory ? "allocation failed" : "no polynomial schedule for these options");
    const PolarReport pr = polar_dispatch<Exec, TIn>(space, a, out, *po, ws, options.alpha);
    SpectralPowerReport r;
    r.status = pr.status;
    r.message = pr.message;
    r.bad_item = pr.bad_item;
    r.fit_error = fit_error;
    r.polynomial_steps = options.polynomial_steps;
    return r;
  }
  return with_iteration_type<false, Exec, TIn>(
      options.qdwh.compute, [](Status s, const char* m) { return spectral_failure(s, m); },
      [&](auto tc) {
        return spectral_power_strided<Exec, TIn, typename decltype(tc)::type>(space, a, out, options, ws);
      });
}

/// spectral_clip(): the polynomial method (with a bound) in the precision from
/// options.polar.compute, bf16/fp16 included; otherwise QDWH's precision from
/// options.qdwh.compute (no bound: a validated copy, spectral_clip_strided).
template <class Exec, class TIn>
SpectralPowerReport spectral_clip_dispatch(const Exec& space,
                                           const Strided3<const TIn, typename Exec::memory_space>& a,
                                           const Strided3<TIn, typename Exec::memory_space>& out,
                                           const SpectralClipOptions& options,
                                           Workspace<typename Exec::memory_space>& ws) {
  const auto fail = [](Status s, const char* m) { return spectral_failure(s, m); };
  if (options.method == SpectralClipMethod::polynomial &&
      (options.lower > 0.0 || std::isfinite(options.upper)))
    return with_iteration_type<true, Exec, TIn>(options.polar.compute, fail, [&](auto tc) {
      return spectral_clip_polynomial_strided<Exec, TIn, typename decltype(tc)::type>(space, a, out, options,
                                                                                      ws);
    });
  return with_iteration_type<false, Exec, TIn>(options.qdwh.compute, fail, [&](auto tc) {
    return spectral_clip_strided<Exec, TIn, typename decltype(tc)::type>(space, a, out, options, ws);
  });
}

/// schatten_norm() with QDWH's precision from options.qdwh.compute. q = +∞ runs no QDWH: it
/// works in double whatever that precision (still validated), since a float copy of A/‖A‖_F
/// would cost ‖A‖₂ its rounding, about 1e-8 relative.
template <class Exec, class TIn>
Status schatten_norm_dispatch(const Exec& space, const Strided3<const TIn, typename Exec::memory_space>& a,
                              double q, double* norms, const SchattenNormOptions& options,
                              Workspace<typename Exec::memory_space>& ws) {
  return with_iteration_type<false, Exec, TIn>(
      options.qdwh.compute, [](Status s, const char*) { return s; },
      [&](auto tc) {
        if (q == HUGE_VAL) return schatten_norm_strided<Exec, TIn, double>(space, a, q, norms, options, ws);
        return schatten_norm_strided<Exec, TIn, typename decltype(tc)::type>(space, a, q, norms, options, ws);
      });
}

/// polar(): QDWH, or the Newton–Schulz family in the precision from options.compute
/// (output_norm_power: see polar_strided; ignored by QDWH).
template <class Exec, class TIn>
PolarReport polar_dispatch(const Exec& space, const Strided3<const TIn, typename Exec::memory_space>& a,
                           const Strided3<TIn, typename Exec::memory_space>& q, const PolarOptions& options,
                           Workspace<typename Exec::memory_space>& ws, double output_norm_power) {
  if (options.method == PolarMethod::qdwh) {
    if (const char* msg = check_polar_options(options)) return polar_failure(Status::invalid_argument, msg);
    QdwhOptions qo = options.qdwh;
    if (options.compute != Precision::automatic) qo.compute = options.compute;
    qo.compute_orthogonality_error = qo.compute_orthogonality_error || options.compute_orthogonality_error;
    qo.dual_norm_scale = qo.dual_norm_scale || options.dual_norm_scale;
    const QdwhReport r =
        qdwh_dispatch<Exec, TIn>(space, a, q, Strided3<TIn, typename Exec::memory_space>(), qo, ws);
    PolarReport p;
    p.status = r.status;
    p.message = r.message;
    p.iterations = r.iterations;
    p.bad_item = r.bad_item;
    p.orthogonality_error = r.orthogonality_error;
    return p;
  }
  // bf16/fp16: 16-bit storage with fp32 accumulation (cuBLAS on CUDA, vendor.hpp; portable_gemm
  // elsewhere), for the Newton–Schulz and Polar Express iterations; the normalisation is computed
  // in double before the iterate is rounded to 16 bits. Gram Newton–Schulz needs its Gram in at
  // least fp32 (algorithms.md §2.4) and is refused.
  return with_iteration_type<true, Exec, TIn>(
      options.compute, [](Status s, const char* m) { return polar_failure(s, m); },
      [&](auto tc) {
        using TC = typename decltype(tc)::type;
        if (sizeof(TC) == 2 && options.method == PolarMethod::gram_newton_schulz)
          return polar_failure(Status::unsupported, "gram_newton_schulz does not iterate in bf16/fp16");
        return polar_strided<Exec, TIn, TC>(space, a, q, options, ws, output_norm_power);
      });
}

}  // namespace schatten::kokkos::detail
