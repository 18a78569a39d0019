// SPDX-License-Identifier: Apache-2.0
/// \file
/// Scratch memory that a vendor call needs beside its operands (cuSOLVER's ?potrf workspace and
/// its info word, vendor.hpp), kept per queue (a CUDA stream: one execution-space instance) and
/// grown on demand.
///
/// Why per queue and kept: a buffer allocated per call has to outlive the asynchronous call that
/// uses it, which costs a device allocation and a fence every call. A kept buffer is reused by
/// the next call on the same queue, which the queue orders after the previous one, so that
/// steady-state calls allocate nothing and need no fence. Two queues never share a buffer: their
/// calls may overlap.
///
/// The one exception to "every device buffer lives in a Workspace" (docs/kernels/polar.md,
/// "Cost"): the size of the vendor's workspace is known only by asking the vendor library
/// (?potrf_bufferSize), which the host-only sizing functions of src/ cannot do.
#pragma once

#include <Kokkos_Core.hpp>

#include <cstddef>
#include <mutex>
#include <string>
#include <vector>

#include "schatten/kokkos/detail/memory.hpp"

namespace schatten::kokkos::detail {

/// Grow-only byte buffers in memory space Mem, one per queue key. Thread-safe (one mutex). A
/// pointer returned by get() stays valid until a later get() with the same key asks for more
/// bytes than that buffer holds, or until clear(); using one key from several host threads at
/// once is the caller's race, as it is for the queue itself.
template <class Mem>
class QueueScratch {
 public:
  /// `label`: a memory_label() (memory.hpp), which names the buffers of every queue.
  explicit QueueScratch(std::string label) : label_(std::move(label)) {}

  /// At least `bytes` bytes (at least one) for the queue `key`, aligned for any scalar type.
  /// When the queue's buffer is too small it is replaced: `fence()` is called first, so that
  /// work already enqueued with the old buffer has finished before it is freed. Allocation
  /// failure throws as OwnedBytes::grow() does (what Kokkos throws, std::runtime_error; host
  /// memory std::bad_alloc); the old buffer is then already gone and the queue has none, so that
  /// the next call allocates again.
  template <class Fence>
  void* get(const void* key, std::size_t bytes, Fence&& fence) {
    bytes = bytes > 0 ? bytes : 1;
    const std::lock_guard<std::mutex> lock(mutex_);
    Entry* e = find(key);
    if (e == nullptr) {
      entries_.push_back(Entry{key, Buffer()});
      e = &entries_.back();
    }
    if (e->buffer.size() > 0 && e->buffer.size() < bytes) fence();  // the old one's users
    if (e->buffer.grow(bytes, label_)) ++allocations_;
    return e->buffer.data();
  }

  /// Frees every buffer. Called from a Kokkos finalize hook for the process-wide instances:
  /// Kokkos memory must not outlive Kokkos.
  void clear() {
    const std::lock_guard<std::mutex> lock(mutex_);
    entries_.clear();
  }

  /// Buffers allocated so far (a grown buffer counts again); for tests and diagnostics.
  std::size_t allocations() const {
    const std::lock_guard<std::mutex> lock(mutex_);
    return allocations_;
  }

  /// The bytes held for `key` now (0 when none).
  std::size_t capacity(const void* key) const {
    const std::lock_guard<std::mutex> lock(mutex_);
    const Entry* e = const_cast<QueueScratch*>(this)->find(key);
    return e != nullptr ? e->buffer.size() : 0;
  }

 private:
  // Aligned for any type (kOwnedAlignment); freed without a host allocation (memory.hpp).
  using Buffer = OwnedBytes<Mem>;
  struct Entry {
    const void* key;
    Buffer buffer;
  };

  Entry* find(const void* key) {
    for (Entry& e : entries_)
      if (e.key == key) return &e;
    return nullptr;
  }

  std::string label_;
  mutable std::mutex mutex_;
  std::vector<Entry> entries_;  // a handful of queues: a linear search
  std::size_t allocations_ = 0;
};

}  // namespace schatten::kokkos::detail
