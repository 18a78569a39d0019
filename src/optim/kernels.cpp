// SPDX-License-Identifier: Apache-2.0
/// \file
/// Element-wise optimizer kernels compiled into the library (see transforms.hpp). This file is
/// compiled with -fno-math-errno (CMakeLists.txt): the square roots below take non-negative
/// arguments, so errno is never set, and the flag lets the compiler vectorise them.
#include "schatten/optim/transforms.hpp"

namespace schatten::optim::detail {

void adamw_kernel(float* __restrict x, float* __restrict m, float* __restrict v, const float* __restrict w,
                  index_t n, const AdamWScalars& s) {
  const AdamWScalars c = s;  // by value: no aliasing with the arrays
  for (index_t k = 0; k < n; ++k)
    x[k] = adamw_element(x[k], m[k], v[k], w[k], c);
}

}  // namespace schatten::optim::detail
