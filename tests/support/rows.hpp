// SPDX-License-Identifier: Apache-2.0
/// \file
/// Counting the rows of a row-major array that a call left as they were, bit for bit: the
/// low-rank step (low_rank_power_step, DionDirection) keeps the rows of its stored Qᵀ whose
/// columns it dropped at the rounding floor, and updates the others (docs/kernels/low_rank.md).
#pragma once

#include <algorithm>
#include <vector>

#include "schatten/core/types.hpp"

namespace schatten::test {

/// How many of the `rows` rows of length `len` are equal in `before` and `after` (both at least
/// rows·len long).
template <class T, class After>
index_t unchanged_rows(const std::vector<T>& before, const After& after, index_t rows, index_t len) {
  index_t same = 0;
  for (index_t j = 0; j < rows; ++j)
    same +=
        std::equal(before.begin() + j * len, before.begin() + (j + 1) * len, after.begin() + j * len) ? 1 : 0;
  return same;
}

}  // namespace schatten::test
