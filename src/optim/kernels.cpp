// SPDX-License-Identifier: Apache-2.0
/// \file
/// Element-wise optimizer kernels compiled into the library (see transforms.hpp). This file is
/// compiled with -fno-math-errno (CMakeLists.txt): the square roots below take non-negative
/// arguments, so errno is never set, and the flag lets the compiler vectorise them.
#include "schatten/optim/transforms.hpp"

namespace schatten::optim::detail {

namespace {
template <class M>
void adamw_loop(float* __restrict x, M* __restrict m, float* __restrict v, const float* __restrict w,
                index_t n, const AdamWScalars& s) {
  const AdamWScalars c = s;  // by value: no aliasing with the arrays
  with_store(c.store, [&](auto how) {
    for (index_t k = 0; k < n; ++k)
      x[k] = adamw_element(x[k], m[k], v[k], w[k], c, how);
  });
}
}  // namespace

void adamw_kernel(float* x, float* m, float* v, const float* w, index_t n, const AdamWScalars& s) {
  adamw_loop(x, m, v, w, n, s);
}
void adamw_kernel(float* x, std::uint16_t* m, float* v, const float* w, index_t n, const AdamWScalars& s) {
  adamw_loop(x, m, v, w, n, s);
}

}  // namespace schatten::optim::detail
