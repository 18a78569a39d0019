// SPDX-License-Identifier: Apache-2.0
/// \file
/// Kokkos View overloads of schatten::polar, qdwh, spectral_power, spectral_clip and schatten_norm for
/// callers that already hold their data in Views.
///
/// Same contracts as the plain-array functions (include/schatten/kernels/polar.hpp, qdwh.hpp):
/// outputs written only on success, in-place allowed. `a` and `q` are rank-2 Views (one
/// matrix) or rank-3 Views (batch, rows, cols), any layout, with the same non-const/const value
/// type (float or double), in a memory space that `space` can access. The call enqueues on
/// `space` and fences it before returning (validation reads per-matrix norms on the host).
///
/// Example (compiled in tests/kernels/test_polar_views.cpp):
/// \code
///   Kokkos::View<float**> g("g", 768, 3072), o("o", 768, 3072);
///   schatten::kokkos::Workspace<> ws;
///   auto rep = schatten::kokkos::polar(Kokkos::DefaultExecutionSpace(), g, o, {}, ws);
/// \endcode
#pragma once

#include <Kokkos_Core.hpp>

#include <type_traits>

#include "schatten/kernels/polar.hpp"
#include "schatten/kernels/spectral_power.hpp"
#include "schatten/kokkos/detail/dispatch.hpp"
#include "schatten/kokkos/workspace.hpp"

namespace schatten::kokkos {

namespace detail {
/// A rank-2 or rank-3 View as a strided (batch, rows, cols) View of the same memory.
template <class T, class Mem, class V>
Strided3<T, Mem> as_strided3(const V& v) {
  static_assert(static_cast<int>(V::rank) == 2 || static_cast<int>(V::rank) == 3,
                "schatten::kokkos: matrices are rank-2 Views, batches rank-3 Views");
  if constexpr (static_cast<int>(V::rank) == 2) {
    return Strided3<T, Mem>(v.data(),
                            Kokkos::LayoutStride(1, 0, v.extent(0), v.stride(0), v.extent(1), v.stride(1)));
  } else {
    return Strided3<T, Mem>(v.data(), Kokkos::LayoutStride(v.extent(0), v.stride(0), v.extent(1), v.stride(1),
                                                           v.extent(2), v.stride(2)));
  }
}

/// Compile-time checks shared by the View overloads; returns the value type.
template <class Exec, class AView, class QView>
constexpr void check_views() {
  static_assert(Kokkos::is_view<AView>::value && Kokkos::is_view<QView>::value,
                "schatten::kokkos takes Kokkos Views");
  using T = typename QView::non_const_value_type;
  static_assert(std::is_same<typename AView::non_const_value_type, T>::value,
                "input and output Views must have the same value type");
  static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value,
                "schatten::kokkos supports float and double Views");
  static_assert(!std::is_const<typename QView::value_type>::value, "the output View is const");
  static_assert(static_cast<int>(AView::rank) == static_cast<int>(QView::rank),
                "input and output Views must have the same rank");
  static_assert(Kokkos::SpaceAccessibility<Exec, typename AView::memory_space>::accessible &&
                    Kokkos::SpaceAccessibility<Exec, typename QView::memory_space>::accessible,
                "the Views must be accessible from the execution space");
}
}  // namespace detail

/// Polar factor of a View (or batch of Views) on `space`; see the file comment.
template <class Exec, class AView, class QView>
PolarReport polar(const Exec& space, const AView& a, const QView& q, const PolarOptions& options,
                  Workspace<typename Exec::memory_space>& workspace) {
  detail::check_views<Exec, AView, QView>();
  using T = typename QView::non_const_value_type;
  using Mem = typename Exec::memory_space;
  return detail::polar_dispatch<Exec, T>(space, detail::as_strided3<const T, Mem>(a),
                                         detail::as_strided3<T, Mem>(q), options, workspace);
}

/// Same, with a temporary workspace (allocated and freed by the call).
template <class Exec, class AView, class QView>
PolarReport polar(const Exec& space, const AView& a, const QView& q, const PolarOptions& options = {}) {
  Workspace<typename Exec::memory_space> ws;
  return polar(space, a, q, options, ws);
}

/// QDWH polar decomposition of a View (or batch); `h` (optional, rank 2 or 3 like `a`, k × k
/// per matrix) receives the symmetric factor on the short side.
template <class Exec, class AView, class QView>
QdwhReport qdwh(const Exec& space, const AView& a, const QView& u, const QdwhOptions& options,
                Workspace<typename Exec::memory_space>& workspace) {
  detail::check_views<Exec, AView, QView>();
  using T = typename QView::non_const_value_type;
  using Mem = typename Exec::memory_space;
  return detail::qdwh_dispatch<Exec, T>(space, detail::as_strided3<const T, Mem>(a),
                                        detail::as_strided3<T, Mem>(u), detail::Strided3<T, Mem>(), options,
                                        workspace);
}
template <class Exec, class AView, class QView, class HView>
QdwhReport qdwh(const Exec& space, const AView& a, const QView& u, const HView& h, const QdwhOptions& options,
                Workspace<typename Exec::memory_space>& workspace) {
  detail::check_views<Exec, AView, QView>();
  detail::check_views<Exec, AView, HView>();
  using T = typename QView::non_const_value_type;
  using Mem = typename Exec::memory_space;
  return detail::qdwh_dispatch<Exec, T>(space, detail::as_strided3<const T, Mem>(a),
                                        detail::as_strided3<T, Mem>(u), detail::as_strided3<T, Mem>(h),
                                        options, workspace);
}

/// U Σ^α Vᵀ of a View (or batch); see schatten::spectral_power.
template <class Exec, class AView, class QView>
SpectralPowerReport spectral_power(const Exec& space, const AView& a, const QView& out,
                                   const SpectralPowerOptions& options,
                                   Workspace<typename Exec::memory_space>& workspace) {
  detail::check_views<Exec, AView, QView>();
  using T = typename QView::non_const_value_type;
  using Mem = typename Exec::memory_space;
  return detail::spectral_power_dispatch<Exec, T>(space, detail::as_strided3<const T, Mem>(a),
                                                  detail::as_strided3<T, Mem>(out), options, workspace);
}

/// U clip(Σ) Vᵀ of a View (or batch); see schatten::spectral_clip.
template <class Exec, class AView, class QView>
SpectralPowerReport spectral_clip(const Exec& space, const AView& a, const QView& out,
                                  const SpectralClipOptions& options,
                                  Workspace<typename Exec::memory_space>& workspace) {
  detail::check_views<Exec, AView, QView>();
  using T = typename QView::non_const_value_type;
  using Mem = typename Exec::memory_space;
  return detail::spectral_clip_dispatch<Exec, T>(space, detail::as_strided3<const T, Mem>(a),
                                                 detail::as_strided3<T, Mem>(out), options, workspace);
}

/// Schatten-q norms of a View (or batch) into host memory `norms` (one per matrix).
template <class Exec, class AView>
Status schatten_norm(const Exec& space, const AView& a, double q, double* norms,
                     const SchattenNormOptions& options, Workspace<typename Exec::memory_space>& workspace) {
  using T = typename AView::non_const_value_type;
  using Mem = typename Exec::memory_space;
  static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value,
                "schatten::kokkos supports float and double Views");
  return detail::schatten_norm_dispatch<Exec, T>(space, detail::as_strided3<const T, Mem>(a), q, norms,
                                                 options, workspace);
}

}  // namespace schatten::kokkos

// The common instantiations live in the library (backends/kokkos/src/instantiations.cpp).
namespace schatten::kokkos::detail::extern_templates {
using Exec = Kokkos::DefaultExecutionSpace;
using Mem = Exec::memory_space;
template <class T>
using In = Strided3<const T, Mem>;
template <class T>
using Out = Strided3<T, Mem>;
using Ws = Workspace<Mem>;
}  // namespace schatten::kokkos::detail::extern_templates

#define SCHATTEN_KOKKOS_EXTERN(TIN, TC)                                                                   \
  namespace schatten::kokkos::detail {                                                                    \
  extern template PolarReport polar_strided<extern_templates::Exec, TIN, TC>(                             \
      const extern_templates::Exec&, const extern_templates::In<TIN>&, const extern_templates::Out<TIN>&, \
      const PolarOptions&, extern_templates::Ws&, double);                                                \
  extern template QdwhReport qdwh_strided<extern_templates::Exec, TIN, TC>(                               \
      const extern_templates::Exec&, const extern_templates::In<TIN>&, const extern_templates::Out<TIN>&, \
      const extern_templates::Out<TIN>&, const QdwhOptions&, extern_templates::Ws&);                      \
  extern template SpectralPowerReport spectral_power_strided<extern_templates::Exec, TIN, TC>(            \
      const extern_templates::Exec&, const extern_templates::In<TIN>&, const extern_templates::Out<TIN>&, \
      const SpectralPowerOptions&, extern_templates::Ws&);                                                \
  extern template SpectralPowerReport spectral_clip_strided<extern_templates::Exec, TIN, TC>(             \
      const extern_templates::Exec&, const extern_templates::In<TIN>&, const extern_templates::Out<TIN>&, \
      const SpectralClipOptions&, extern_templates::Ws&);                                                 \
  extern template SpectralPowerReport spectral_clip_polynomial_strided<extern_templates::Exec, TIN, TC>(  \
      const extern_templates::Exec&, const extern_templates::In<TIN>&, const extern_templates::Out<TIN>&, \
      const SpectralClipOptions&, extern_templates::Ws&);                                                 \
  extern template Status schatten_norm_strided<extern_templates::Exec, TIN, TC>(                          \
      const extern_templates::Exec&, const extern_templates::In<TIN>&, double, double*,                   \
      const SchattenNormOptions&, extern_templates::Ws&);                                                 \
  }
SCHATTEN_KOKKOS_EXTERN(float, float)
SCHATTEN_KOKKOS_EXTERN(float, double)
SCHATTEN_KOKKOS_EXTERN(double, float)
SCHATTEN_KOKKOS_EXTERN(double, double)
#undef SCHATTEN_KOKKOS_EXTERN
