// SPDX-License-Identifier: Apache-2.0
/// \file
/// Matrix references: conventions, conversions, and the layout checks every kernel relies on.
#include <doctest/doctest.h>

#include <limits>
#include <string>

#include "schatten/core/matrix_ref.hpp"
#include "schatten/core/status.hpp"

namespace core_test_matrix_ref {  // this file's scope in a unity build (tests/CMakeLists.txt)

using namespace schatten;

TEST_SUITE("core.matrix_ref") {
  TEST_CASE("row-major is the default and col_major and transposed address the same elements") {
    float d[6] = {0, 1, 2, 3, 4, 5};
    MatrixRef<float> m(d, 2, 3);
    CHECK(m(1, 2) == 5);
    CHECK(m.row_stride == 3);
    CHECK(m.col_stride == 1);
    auto t = m.transposed();
    CHECK(t.rows == 3);
    CHECK(t(2, 1) == 5);
    auto cm = MatrixRef<float>::col_major(d, 2, 3);
    CHECK(cm(1, 2) == 5);  // column 2 starts at 4
    CHECK(cm(0, 1) == 2);
    MatrixRef<const float> cref = m;  // non-const to const
    CHECK(cref(0, 1) == 1);
    BatchedMatrixRef<const float> b = m;  // one matrix as a batch of one
    CHECK(b.batch == 1);
    CHECK(b[0](1, 1) == 4);
    BatchedMatrixRef<float> two(d, 2, 1, 3);
    CHECK(two[1](0, 2) == 5);
    BatchedMatrixRef<const float> ctwo = two;
    CHECK(ctwo.batch_stride == 3);
  }

  TEST_CASE("check_layout accepts valid layouts and names the problem otherwise") {
    float d[64] = {};
    using schatten::detail::check_layout;
    CHECK(check_layout(d, 2, 3, 4, 12, 4, 1, true) == nullptr);       // packed row-major
    CHECK(check_layout(d, 2, 3, 4, 12, 1, 3, true) == nullptr);       // packed column-major
    CHECK(check_layout(d, 1, 3, 4, 0, 5, 1, true) == nullptr);        // padded, batch of one
    CHECK(check_layout(d, 3, 2, 2, 0, 2, 1, false) == nullptr);       // broadcast input is fine
    CHECK(check_layout(nullptr, 0, 3, 4, 0, 4, 1, true) == nullptr);  // empty
    CHECK(std::string(check_layout(d, 3, 2, 2, 0, 2, 1, true)).find("overlap") != std::string::npos);
    CHECK(check_layout(d, 1, 3, 4, 0, 2, 1, true) != nullptr);  // rows overlap
    CHECK(check_layout(d, 1, 3, 4, 0, 4, 0, true) != nullptr);  // stride 0 output
    CHECK(check_layout(nullptr, 1, 3, 4, 0, 4, 1, false) != nullptr);
    CHECK(check_layout(d, 1, -3, 4, 0, 4, 1, false) != nullptr);
    CHECK(check_layout(d, 1, 3, 4, 0, -4, 1, false) != nullptr);
    const index_t big = std::numeric_limits<index_t>::max() / 2;
    CHECK(std::string(check_layout(d, 1, 3, 4, 0, big, 1, false)).find("overflow") != std::string::npos);
  }

  TEST_CASE("status and precision names") {
    CHECK(std::string(to_string(Status::ok)) == "ok");
    CHECK(std::string(to_string(Status::non_finite_input)) == "non_finite_input");
    CHECK(std::string(to_string(Status::breakdown)) == "breakdown");
    CHECK(std::string(to_string(Precision::bf16)) == "bf16");
  }
}

}  // namespace core_test_matrix_ref
