// SPDX-License-Identifier: Apache-2.0
/// \file
/// Explicit instantiations behind the extern templates of <schatten/kokkos/polar.hpp>: the
/// strided implementations for the default execution space, float/double storage × float/double
/// iteration.
#include "schatten/kokkos/polar.hpp"

namespace schatten::kokkos::detail {

using DefaultExec = Kokkos::DefaultExecutionSpace;
using DefaultMem = DefaultExec::memory_space;
template <class T>
using In = Strided3<const T, DefaultMem>;
template <class T>
using Out = Strided3<T, DefaultMem>;
using Ws = Workspace<DefaultMem>;

#define SCHATTEN_INSTANTIATE(TIN, TC)                                                                     \
  template PolarReport polar_strided<DefaultExec, TIN, TC>(                                               \
      const DefaultExec&, const In<TIN>&, const Out<TIN>&, const PolarOptions&, Ws&, double);             \
  template QdwhReport qdwh_strided<DefaultExec, TIN, TC>(                                                 \
      const DefaultExec&, const In<TIN>&, const Out<TIN>&, const Out<TIN>&, const QdwhOptions&, Ws&);     \
  template SpectralPowerReport spectral_power_strided<DefaultExec, TIN, TC>(                              \
      const DefaultExec&, const In<TIN>&, const Out<TIN>&, const SpectralPowerOptions&, Ws&);             \
  template SpectralPowerReport spectral_clip_strided<DefaultExec, TIN, TC>(                               \
      const DefaultExec&, const In<TIN>&, const Out<TIN>&, const SpectralClipOptions&, Ws&);              \
  template SpectralPowerReport spectral_clip_polynomial_strided<DefaultExec, TIN, TC>(                    \
      const DefaultExec&, const In<TIN>&, const Out<TIN>&, const SpectralClipOptions&, Ws&);              \
  template Status schatten_norm_strided<DefaultExec, TIN, TC>(const DefaultExec&, const In<TIN>&, double, \
                                                              double*, const SchattenNormOptions&, Ws&);
SCHATTEN_INSTANTIATE(float, float)
SCHATTEN_INSTANTIATE(float, double)
SCHATTEN_INSTANTIATE(double, float)
SCHATTEN_INSTANTIATE(double, double)
#undef SCHATTEN_INSTANTIATE

}  // namespace schatten::kokkos::detail
