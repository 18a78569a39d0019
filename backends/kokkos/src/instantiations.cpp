// SPDX-License-Identifier: Apache-2.0
/// \file
/// Explicit instantiations behind the extern templates of <schatten/kokkos/polar.hpp>: the
/// strided implementations for the default execution space, float/double storage × float/double
/// iteration.
#include "schatten/kokkos/polar.hpp"

namespace schatten::kokkos::detail {

using DefaultExec = Kokkos::DefaultExecutionSpace;
using DefaultMem = DefaultExec::memory_space;

#define SCHATTEN_INSTANTIATE(TIN, TC)                                                               \
  template PolarReport polar_strided<DefaultExec, TIN, TC>(                                         \
      const DefaultExec&, const Strided3<const TIN, DefaultMem>&, const Strided3<TIN, DefaultMem>&, \
      const PolarOptions&, Workspace<DefaultMem>&);                                                 \
  template QdwhReport qdwh_strided<DefaultExec, TIN, TC>(                                           \
      const DefaultExec&, const Strided3<const TIN, DefaultMem>&, const Strided3<TIN, DefaultMem>&, \
      const Strided3<TIN, DefaultMem>&, const QdwhOptions&, Workspace<DefaultMem>&);
SCHATTEN_INSTANTIATE(float, float)
SCHATTEN_INSTANTIATE(float, double)
SCHATTEN_INSTANTIATE(double, float)
SCHATTEN_INSTANTIATE(double, double)
#undef SCHATTEN_INSTANTIATE

}  // namespace schatten::kokkos::detail
