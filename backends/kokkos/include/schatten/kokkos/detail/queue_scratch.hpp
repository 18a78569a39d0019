// SPDX-License-Identifier: Apache-2.0
/// \file
/// What the vendor layer (vendor.hpp) keeps per queue (a CUDA stream: one execution-space
/// instance): its library handles, bound to the queue once, and the scratch memory that a vendor
/// call needs beside its operands (cuSOLVER's ?potrf workspace and its info word), grown on
/// demand.
///
/// Why per queue: a handle shared by all queues has to be pointed at the caller's stream before
/// each call (cublasSetStream), so that two host threads on two streams could each enqueue on
/// the other's stream; cuBLAS also documents that concurrent streams sharing one handle share its
/// internal workspace, which costs bitwise reproducibility (cuBLAS guide, "Thread safety" and
/// "Results reproducibility"). A handle per queue is set to its stream once and never changed,
/// which cuBLAS allows several host threads to share.
///
/// Why scratch is kept: a buffer allocated per call has to outlive the asynchronous call that
/// uses it, which costs a device allocation and a fence every call. A kept buffer is reused by
/// the next call on the same queue, which the queue orders after the previous one, so that
/// steady-state calls allocate nothing and need no fence. Two queues never share a buffer: their
/// calls may overlap. A buffer is leased: its queue's lock is held until the caller has enqueued
/// everything that reads it (the info word's check), so that two host threads on one queue
/// cannot interleave their calls on one buffer.
///
/// The one exception to "every device buffer lives in a Workspace" (docs/kernels/polar.md,
/// "Cost"): the size of the vendor's workspace is known only by asking the vendor library
/// (?potrf_bufferSize), which the host-only sizing functions of src/ cannot do.
///
/// Queues are told apart by the address of their stream. Values are kept until clear() (at
/// Kokkos finalisation): a program that makes a new execution-space instance for every call
/// keeps one handle and one buffer per instance it ever used.
#pragma once

#include <Kokkos_Core.hpp>

#include <atomic>
#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "schatten/kokkos/detail/memory.hpp"

namespace schatten::kokkos::detail {

/// One Value per queue key, each guarded by its own mutex, so that the holder of one queue's
/// value does not block the other queues. Thread-safe.
template <class Value>
class PerQueue {
 public:
  struct Slot {
    std::mutex mutex;  // guards value
    Value value{};
  };

  /// The slot of queue `key`, added with a value-initialised Value on the key's first use. The
  /// slot keeps its address until clear(); the caller takes its mutex to use the value.
  Slot& slot(const void* key) {
    const std::lock_guard<std::mutex> lock(mutex_);
    for (const Entry& e : entries_)  // a handful of queues: a linear search
      if (e.key == key) return *e.slot;
    entries_.push_back(Entry{key, std::make_unique<Slot>()});
    return *entries_.back().slot;
  }

  /// The slot of `key`, or nullptr when the key has none.
  Slot* find(const void* key) const {
    const std::lock_guard<std::mutex> lock(mutex_);
    for (const Entry& e : entries_)
      if (e.key == key) return e.slot.get();
    return nullptr;
  }

  /// Calls release(Value&) for every value under its slot's lock, then forgets every slot.
  /// Precondition: no slot is in use (the process-wide instances are cleared when Kokkos
  /// finalises, after every call).
  template <class Release>
  void clear(Release&& release) {
    const std::lock_guard<std::mutex> lock(mutex_);
    for (Entry& e : entries_) {
      const std::lock_guard<std::mutex> hold(e.slot->mutex);
      release(e.slot->value);
    }
    entries_.clear();
  }

 private:
  struct Entry {
    const void* key;
    std::unique_ptr<Slot> slot;  // stable address while entries_ grows
  };
  mutable std::mutex mutex_;  // guards entries_
  std::vector<Entry> entries_;
};

/// A vendor library handle per queue (cuBLAS, cuSOLVER), made by `create(key)` on the queue's
/// first use, which also binds it to that queue, and freed by `destroy` in clear(). Handle is a
/// pointer type (null: none yet). Thread-safe; a handle is never rebound, so it may be used from
/// several threads at once where the vendor allows it (cuBLAS and cuSOLVER do, as long as the
/// handle's settings are not changed).
template <class Handle>
class QueueHandles {
 public:
  using Create = Handle (*)(const void* key);  // throws on failure
  using Destroy = void (*)(Handle);

  QueueHandles(Create create, Destroy destroy) : create_(create), destroy_(destroy) {}

  /// The handle of queue `key`, created on the key's first use. A failed create() throws and
  /// leaves the queue without a handle, so that the next call tries again.
  Handle get(const void* key) {
    auto& s = slots_.slot(key);
    const std::lock_guard<std::mutex> hold(s.mutex);
    if (!s.value) {
      s.value = create_(key);
      ++created_;
    }
    return s.value;
  }

  /// Destroys every handle. Precondition as PerQueue::clear().
  void clear() {
    slots_.clear([this](Handle& h) {
      if (h) destroy_(h);
      h = Handle{};
    });
  }

  /// Handles created so far; for tests and diagnostics.
  std::size_t created() const noexcept { return created_.load(); }

 private:
  Create create_;
  Destroy destroy_;
  PerQueue<Handle> slots_;
  std::atomic<std::size_t> created_{0};
};

/// Grow-only byte buffers in memory space Mem, one per queue key. Thread-safe.
template <class Mem>
class QueueScratch {
 public:
  /// A queue's buffer, held: the queue's lock is taken until the lease is destroyed, so that
  /// no other host thread can use (or replace) the buffer meanwhile. Destroy it once everything
  /// that reads the buffer is enqueued. A thread must not hold two leases of one queue.
  struct Lease {
    void* data;
    std::unique_lock<std::mutex> hold;
  };

  /// `label`: a memory_label() (memory.hpp), which names the buffers of every queue.
  explicit QueueScratch(std::string label) : label_(std::move(label)) {}

  /// At least `bytes` bytes (at least one) for the queue `key`, aligned for any scalar type,
  /// valid while the lease is held. When the queue's buffer is too small it is replaced:
  /// `fence()` is called first, so that work already enqueued with the old buffer has finished
  /// before it is freed. Allocation failure throws as OwnedBytes::grow() does (what Kokkos
  /// throws, std::runtime_error; host memory std::bad_alloc); the old buffer is then already
  /// gone and the queue has none, so that the next call allocates again.
  template <class Fence>
  Lease lease(const void* key, std::size_t bytes, Fence&& fence) {
    bytes = bytes > 0 ? bytes : 1;
    auto& s = slots_.slot(key);
    std::unique_lock<std::mutex> hold(s.mutex);
    if (s.value.size() > 0 && s.value.size() < bytes) fence();  // the old one's users
    if (s.value.grow(bytes, label_)) ++allocations_;
    return Lease{s.value.data(), std::move(hold)};
  }

  /// Frees every buffer. Called from a Kokkos finalize hook for the process-wide instances:
  /// Kokkos memory must not outlive Kokkos. Precondition as PerQueue::clear().
  void clear() {
    slots_.clear([](Buffer& b) { b.reset(); });
  }

  /// Buffers allocated so far (a grown buffer counts again); for tests and diagnostics.
  std::size_t allocations() const noexcept { return allocations_.load(); }

  /// The bytes held for `key` now (0 when none). Waits for a lease of `key` to end.
  std::size_t capacity(const void* key) const {
    auto* s = slots_.find(key);
    if (s == nullptr) return 0;
    const std::lock_guard<std::mutex> hold(s->mutex);
    return s->value.size();
  }

 private:
  // Aligned for any type (kOwnedAlignment); freed without a host allocation (memory.hpp).
  using Buffer = OwnedBytes<Mem>;

  std::string label_;
  PerQueue<Buffer> slots_;
  std::atomic<std::size_t> allocations_{0};
};

}  // namespace schatten::kokkos::detail
