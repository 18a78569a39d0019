// SPDX-License-Identifier: Apache-2.0
/// \file
/// Validation of strided matrix layouts.
#include <algorithm>
#include <array>
#include <limits>

#include "schatten/core/matrix_ref.hpp"

namespace schatten::detail {

const char* check_layout(const void* data, index_t batch, index_t rows, index_t cols, index_t batch_stride,
                         index_t row_stride, index_t col_stride, bool is_output) noexcept {
  if (batch < 0 || rows < 0 || cols < 0) return "negative matrix dimension";
  if (batch_stride < 0 || row_stride < 0 || col_stride < 0) return "negative stride";
  if (batch == 0 || rows == 0 || cols == 0) return nullptr;  // empty: nothing is addressed
  if (data == nullptr) return "null data pointer for a non-empty matrix";

  // The largest offset sum((extent-1)*stride) must fit in index_t.
  constexpr index_t kMax = std::numeric_limits<index_t>::max();
  std::array<std::array<index_t, 2>, 3> dims{{{batch, batch_stride}, {rows, row_stride}, {cols, col_stride}}};
  index_t last = 0;
  for (const auto& d : dims) {
    const index_t span = d[0] - 1;
    if (span > 0 && d[1] > (kMax - last) / span) return "matrix offsets overflow the index type";
    last += span * d[1];
  }
  if (!is_output) return nullptr;

  // Outputs: sort the dimensions that have more than one element by stride; the layout is
  // one-to-one when every stride is at least the span of all smaller dimensions together.
  std::sort(dims.begin(), dims.end(), [](const auto& x, const auto& y) { return x[1] < y[1]; });
  index_t span = 1;  // number of distinct addresses covered by the smaller dimensions
  for (const auto& d : dims) {
    if (d[0] == 1) continue;
    if (d[1] < span) return "output layout has overlapping elements (strides too small)";
    span = d[1] * (d[0] - 1) + span;
  }
  return nullptr;
}

}  // namespace schatten::detail
