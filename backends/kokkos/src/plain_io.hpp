// SPDX-License-Identifier: Apache-2.0
/// \file
/// Private: plain-array inputs and outputs of the default execution space. Memory the space can
/// dereference is used in place; host memory on a device build is staged through packed device
/// copies (kept in the call's workspace), and staged outputs are copied back only when the call
/// succeeded.
#pragma once

#include <Kokkos_Core.hpp>

#include <array>
#include <atomic>
#include <cstddef>
#include <new>
#include <optional>
#include <stdexcept>
#include <utility>

#include "schatten/core/buffer.hpp"
#include "schatten/core/matrix_ref.hpp"
#include "schatten/core/runtime.hpp"
#include "schatten/core/status.hpp"
#include "schatten/kokkos/detail/batched.hpp"
#include "workspace_impl.hpp"

namespace schatten::kokkos::detail {

using DefaultExec = Kokkos::DefaultExecutionSpace;
using DefaultMem = DefaultExec::memory_space;

/// True when `DefaultExec` can dereference memory of this kind without a copy (and the tests do
/// not force the staging, workspace_impl.hpp).
inline bool directly_accessible(MemoryKind kind) {
  if (force_host_staging().load(std::memory_order_relaxed) && kind == MemoryKind::host) return false;
  return kind == MemoryKind::device || Kokkos::SpaceAccessibility<DefaultExec, Kokkos::HostSpace>::accessible;
}

/// The largest extent a plain-array call accepts, 2^31 − 1: the GEMMs, SYRKs and Cholesky
/// factorisations take their dimensions and batch counts as `int` (LP64 BLAS, cuBLAS, the
/// portable kernels), which a larger one would make negative (reference BLAS then stops the
/// program); and Kokkos keeps the extents of a view with three runtime extents (Strided3, Mat3:
/// every batch) in 32 bits (ViewDimension's `unsigned` once rank_dynamic ≥ 3), so 2^32 and more
/// wrapped silently (the Schatten norm of a 1 × 2^32 matrix of ones came back 0 with ok).
inline constexpr index_t kMaxPlainExtent = 0x7FFFFFFF;

/// check_layout() and the backend's extent limit (non-empty matrices only: an empty one
/// addresses nothing): nullptr when valid, else a static message.
template <class T>
const char* check_plain(const BatchedMatrixRef<T>& m, bool is_output) {
  if (const char* msg = schatten::detail::check_layout(m, is_output)) return msg;
  if (!m.empty() && (m.batch > kMaxPlainExtent || m.rows > kMaxPlainExtent || m.cols > kMaxPlainExtent))
    return "a matrix dimension or batch exceeds 2^31 - 1 (the int dimensions of BLAS calls)";
  return nullptr;
}

template <class T>
Strided3<T, DefaultMem> strided_view(const BatchedMatrixRef<T>& m) {
  return Strided3<T, DefaultMem>(
      m.data, Kokkos::LayoutStride(m.batch, m.batch_stride, m.rows, m.row_stride, m.cols, m.col_stride));
}

/// The packed (batch, rows, cols) row-major view of a staging buffer.
template <class T>
Strided3<T, DefaultMem> packed_view(unsigned char* data, index_t batch, index_t rows, index_t cols) {
  return Strided3<T, DefaultMem>(reinterpret_cast<T*>(data),
                                 Kokkos::LayoutStride(batch, rows * cols, rows, cols, cols, 1));
}

/// Inputs and outputs of one plain-array call on the default execution space. Host arrays on a
/// device build are staged: packed into a host buffer (pinned where Kokkos has it), copied to a
/// packed device buffer, and outputs copied back by commit(). The buffers are the slots of
/// `staging` (the call's workspace, kept between calls: no allocation once they have grown), or
/// of a staging of this object's own (allocated per call) when none is given.
template <class T>
class DeviceIO {
 public:
  /// Stages the input when needed.
  explicit DeviceIO(const BatchedMatrixRef<const T>& a, Staging* staging = nullptr)
      : staging_(staging != nullptr ? staging : &own_) {
    if (directly_accessible(a.memory) || a.empty()) {
      in_ = strided_view(a);
      return;
    }
    Staging::Slot& s = staging_->take(bytes_of(a), bytes_of(a));
    T* h = reinterpret_cast<T*>(s.host.data());
    for (index_t b = 0; b < a.batch; ++b)
      for (index_t i = 0; i < a.rows; ++i)
        for (index_t j = 0; j < a.cols; ++j)
          h[(b * a.rows + i) * a.cols + j] = a[b](i, j);
    memory::copy_bytes(s.device.data(), MemoryKind::device, s.host.data(), MemoryKind::host, bytes_of(a));
    in_ = packed_view<const T>(s.device.data(), a.batch, a.rows, a.cols);
  }
  const Strided3<const T, DefaultMem>& input() const { return in_; }

  /// The device view of an output: the user's memory, or a staging copy written back by
  /// commit(). For an optional output, a null reference gives an empty view ("not requested").
  Strided3<T, DefaultMem> output(const BatchedMatrixRef<T>& q, bool optional = false) {
    if (optional && q.data == nullptr) return Strided3<T, DefaultMem>();
    if (directly_accessible(q.memory) || q.empty()) return strided_view(q);
    if (n_out_ == staged_out_.size()) throw std::logic_error("schatten: more staged outputs than expected");
    Staging::Slot& s = staging_->take(bytes_of(q), bytes_of(q));
    staged_out_[n_out_++] = {&s, q};
    return packed_view<T>(s.device.data(), q.batch, q.rows, q.cols);
  }

  /// Copies staged outputs to the user's host memory.
  void commit() {
    for (std::size_t k = 0; k < n_out_; ++k) {
      const auto& [s, q] = staged_out_[k];
      memory::copy_bytes(s->host.data(), MemoryKind::host, s->device.data(), MemoryKind::device, bytes_of(q));
      const T* h = reinterpret_cast<const T*>(s->host.data());
      for (index_t b = 0; b < q.batch; ++b)
        for (index_t i = 0; i < q.rows; ++i)
          for (index_t j = 0; j < q.cols; ++j)
            q[b](i, j) = h[(b * q.rows + i) * q.cols + j];
    }
  }

 private:
  template <class U>
  static std::size_t bytes_of(const BatchedMatrixRef<U>& m) {
    return static_cast<std::size_t>(m.batch * m.rows * m.cols) * sizeof(T);
  }

  Staging own_;
  Staging* staging_;
  Strided3<const T, DefaultMem> in_;
  std::array<std::pair<Staging::Slot*, BatchedMatrixRef<T>>, 2> staged_out_{};
  std::size_t n_out_ = 0;
};

/// Runs f() (returning a Status) and maps the exceptions of Kokkos and the standard library to
/// statuses, so that no exception leaves a plain-array entry point (core/status.hpp).
using schatten::detail::status_guard;

/// The workspace of a call: the caller's, or a temporary one. Starts the call's use of its
/// staging slots.
class CallWorkspace {
 public:
  explicit CallWorkspace(schatten::Workspace* ws) : ws_(ws ? ws : &local_.emplace()) {
    ws_->impl().staging.begin_call();
  }
  Workspace<DefaultMem>& get() { return ws_->impl().ws; }
  Staging* staging() { return &ws_->impl().staging; }

 private:
  std::optional<schatten::Workspace> local_;
  schatten::Workspace* ws_;
};

}  // namespace schatten::kokkos::detail
