// SPDX-License-Identifier: Apache-2.0
/// \file
/// Private: plain-array inputs and outputs of the default execution space. Memory the space can
/// dereference is used in place; host memory on a device build is staged through packed device
/// copies, and staged outputs are copied back only when the call succeeded.
#pragma once

#include <Kokkos_Core.hpp>

#include <new>
#include <optional>
#include <vector>

#include "schatten/core/matrix_ref.hpp"
#include "schatten/core/runtime.hpp"
#include "schatten/core/status.hpp"
#include "schatten/kokkos/detail/batched.hpp"
#include "workspace_impl.hpp"

namespace schatten::kokkos::detail {

using DefaultExec = Kokkos::DefaultExecutionSpace;
using DefaultMem = DefaultExec::memory_space;

/// True when `DefaultExec` can dereference memory of this kind without a copy.
constexpr bool directly_accessible(MemoryKind kind) {
  return kind == MemoryKind::device || Kokkos::SpaceAccessibility<DefaultExec, Kokkos::HostSpace>::accessible;
}

template <class T>
Strided3<T, DefaultMem> strided_view(const BatchedMatrixRef<T>& m) {
  return Strided3<T, DefaultMem>(
      m.data, Kokkos::LayoutStride(m.batch, m.batch_stride, m.rows, m.row_stride, m.cols, m.col_stride));
}

/// Packed device copy (batch, rows, cols) of host matrices.
template <class T>
using Packed = Kokkos::View<T***, Kokkos::LayoutRight, DefaultMem>;

/// Inputs and outputs of one plain-array call on the default execution space.
template <class T>
class DeviceIO {
 public:
  /// Stages the input when needed.
  explicit DeviceIO(const BatchedMatrixRef<const T>& a) {
    if (directly_accessible(a.memory) || a.empty()) {
      in_ = strided_view(a);
      return;
    }
    Packed<T> d(Kokkos::view_alloc(Kokkos::WithoutInitializing, "schatten::staging_in"), a.batch, a.rows,
                a.cols);
    auto h = Kokkos::create_mirror_view(d);
    for (index_t b = 0; b < a.batch; ++b)
      for (index_t i = 0; i < a.rows; ++i)
        for (index_t j = 0; j < a.cols; ++j)
          h(b, i, j) = a[b](i, j);
    Kokkos::deep_copy(d, h);
    staged_in_ = d;
    in_ = Strided3<const T, DefaultMem>(d);
  }
  const Strided3<const T, DefaultMem>& input() const { return in_; }

  /// The device view of an output: the user's memory, or a staging copy written back by
  /// commit(). For an optional output, a null reference gives an empty view ("not requested").
  Strided3<T, DefaultMem> output(const BatchedMatrixRef<T>& q, bool optional = false) {
    if (optional && q.data == nullptr) return Strided3<T, DefaultMem>();
    if (directly_accessible(q.memory) || q.empty()) return strided_view(q);
    Packed<T> d(Kokkos::view_alloc(Kokkos::WithoutInitializing, "schatten::staging_out"), q.batch, q.rows,
                q.cols);
    staged_out_.push_back({d, q});
    return Strided3<T, DefaultMem>(d);
  }

  /// Copies staged outputs to the user's host memory.
  void commit() {
    for (const auto& [d, q] : staged_out_) {
      auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), d);
      for (index_t b = 0; b < q.batch; ++b)
        for (index_t i = 0; i < q.rows; ++i)
          for (index_t j = 0; j < q.cols; ++j)
            q[b](i, j) = h(b, i, j);
    }
  }

 private:
  Strided3<const T, DefaultMem> in_;
  Packed<T> staged_in_;
  std::vector<std::pair<Packed<T>, BatchedMatrixRef<T>>> staged_out_;
};

/// Runs f() (returning a Status) and maps the exceptions of Kokkos and the standard library to
/// statuses, so that no exception leaves a plain-array entry point (core/status.hpp).
using schatten::detail::status_guard;

/// The workspace of a call: the caller's, or a temporary one.
class CallWorkspace {
 public:
  explicit CallWorkspace(schatten::Workspace* ws) : ws_(ws ? ws : &local_.emplace()) {}
  Workspace<DefaultMem>& get() { return ws_->impl().ws; }

 private:
  std::optional<schatten::Workspace> local_;
  schatten::Workspace* ws_;
};

}  // namespace schatten::kokkos::detail
