// SPDX-License-Identifier: Apache-2.0
/// \file
/// An owned array of floats (or of bf16 values) in host or device memory: the storage of
/// optimizer state (optim::Buffer, optim::Bf16Buffer) and of the partition's batch buffers.
///
/// BasicBuffer<T> is the one implementation; FloatBuffer (T = float) is the state and scratch
/// of every rule, Bf16Buffer (T = std::uint16_t, bf16 bit patterns, core/bf16.hpp) the optional
/// 16-bit storage of momentum buffers (docs/optim.md "State precision").
///
/// A FloatBuffer starts in host memory, where it behaves like the std::vector<float> it
/// replaces (size(), data(), operator[], begin()/end(), assign()). move_to(MemoryKind::device)
/// moves it into the memory space of Kokkos::DefaultExecutionSpace (device memory on a GPU
/// build, host memory on a CPU build); copies of a device buffer are device buffers. Element
/// access (operator[], begin(), end(), assign()) is valid only where the host can read the
/// memory: host buffers, and device buffers of a CPU build (host_readable()). to_vector(),
/// copy_to() and copy_from() move the contents across on any build (checkpoints use them).
/// Copies between device buffers are queued on the default execution space (memory::copy_bytes).
///
/// Device buffers must be destroyed before Kokkos is finalised (like schatten::Workspace).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

#include "schatten/core/types.hpp"

namespace schatten {

namespace memory {
/// `bytes` of memory of the default execution space's memory space (Kokkos::kokkos_malloc on a
/// GPU build; the C++ allocator, 256-byte aligned, where that space is host memory, so that the
/// free allocates nothing: kokkos/detail/memory.hpp); nullptr when the allocation fails or
/// bytes is 0. Never throws.
void* allocate_device(std::size_t bytes) noexcept;
/// Frees what allocate_device() returned (nullptr is ignored).
void free_device(void* p) noexcept;
/// Copies `bytes` from `src` (in `from`) to `dst` (in `to`). A copy that involves host memory is
/// complete when it returns; a device-to-device copy on a GPU is queued on the default execution
/// space instance (ordered with its kernels, like the optimizer's) and not waited for.
void copy_bytes(void* dst, MemoryKind to, const void* src, MemoryKind from, std::size_t bytes);
/// True when the host can dereference memory of `kind` (always for host; for device memory on
/// builds whose default execution space runs on the host).
bool host_readable(MemoryKind kind) noexcept;
/// True when the kernels work on memory of `kind` in place: always for device memory; for host
/// memory on builds whose default execution space can dereference it (Serial, OpenMP). Otherwise
/// every kernel call on host arrays stages them through device copies, which the call's
/// Workspace keeps (Workspace::reserve_staging, staging_covers).
bool kernels_access(MemoryKind kind) noexcept;
}  // namespace memory

/// Elements of type T (float, or bf16 bit patterns) in host or device memory (file comment).
template <class T>
class BasicBuffer {
  static_assert(std::is_trivially_copyable<T>::value, "buffers are copied as bytes");

 public:
  using value_type = T;

  BasicBuffer() = default;
  /// n copies of `value`, in host memory.
  BasicBuffer(std::size_t n, T value) : host_(n, value) {}
  BasicBuffer(std::initializer_list<T> values) : host_(values) {}
  /// n elements in `kind` memory: zeros on the host, uninitialised on the device (std::bad_alloc
  /// when device memory runs out).
  BasicBuffer(std::size_t n, MemoryKind kind) {
    if (kind == MemoryKind::host) {
      host_.assign(n, 0.0f);
      return;
    }
    device_ = allocate_or_throw(n);
    size_ = n;
    on_device_ = true;
  }
  /// The elements of [first, last), in host memory.
  template <class It, class = std::enable_if_t<!std::is_integral<It>::value>>
  BasicBuffer(It first, It last) : host_(first, last) {}
  /// A deep copy in the same memory (std::bad_alloc when device memory runs out).
  BasicBuffer(const BasicBuffer& o) : host_(o.host_) {
    if (!o.on_device_) return;
    device_ = allocate_or_throw(o.size_);
    size_ = o.size_;
    on_device_ = true;
    if (size_)
      memory::copy_bytes(device_, MemoryKind::device, o.device_, MemoryKind::device, size_ * sizeof(T));
  }
  /// A deep copy into the memory of `o`; reuses this buffer's allocation when it is in the same
  /// memory and of the same size (then it never allocates: the partition's per-step state
  /// backups rely on this).
  BasicBuffer& operator=(const BasicBuffer& o) {
    if (this == &o) return *this;
    if (!o.on_device_) {
      release_device();
      host_ = o.host_;
      return *this;
    }
    if (!(on_device_ && size_ == o.size_)) {
      BasicBuffer fresh(o);
      swap(fresh);
      return *this;
    }
    memory::copy_bytes(device_, MemoryKind::device, o.device_, MemoryKind::device, size_ * sizeof(T));
    return *this;
  }
  BasicBuffer(BasicBuffer&& o) noexcept { swap(o); }
  BasicBuffer& operator=(BasicBuffer&& o) noexcept {
    BasicBuffer tmp(std::move(o));
    swap(tmp);
    return *this;
  }
  ~BasicBuffer() { release_device(); }

  void swap(BasicBuffer& o) noexcept {
    host_.swap(o.host_);
    std::swap(device_, o.device_);
    std::swap(size_, o.size_);
    std::swap(on_device_, o.on_device_);
  }

  /// Where the elements live.
  MemoryKind memory() const noexcept { return on_device_ ? MemoryKind::device : MemoryKind::host; }
  /// True when the host may read and write the elements in place (file comment).
  bool host_readable() const noexcept { return !on_device_ || memory::host_readable(MemoryKind::device); }
  std::size_t size() const noexcept { return on_device_ ? size_ : host_.size(); }
  bool empty() const noexcept { return size() == 0; }
  T* data() noexcept { return on_device_ ? device_ : host_.data(); }
  const T* data() const noexcept { return on_device_ ? device_ : host_.data(); }

  /// Host-readable buffers only.
  T& operator[](std::size_t i) noexcept { return data()[i]; }
  const T& operator[](std::size_t i) const noexcept { return data()[i]; }
  T* begin() noexcept { return data(); }
  T* end() noexcept { return data() + size(); }
  const T* begin() const noexcept { return data(); }
  const T* end() const noexcept { return data() + size(); }
  /// n copies of `value` in host memory (a device buffer returns to the host).
  void assign(std::size_t n, T value) {
    release_device();
    host_.assign(n, value);
  }

  /// Moves the contents into `kind` memory. False (and nothing changed) when the allocation
  /// fails. Cost: one allocation and one transfer when the memory changes, nothing otherwise.
  bool move_to(MemoryKind kind) {
    if (kind == memory()) return true;
    if (kind == MemoryKind::host) {
      std::vector<T> h = to_vector();
      release_device();
      host_ = std::move(h);
      return true;
    }
    const std::size_t n = host_.size();
    T* d = n ? static_cast<T*>(memory::allocate_device(n * sizeof(T))) : nullptr;
    if (n && !d) return false;
    if (n) memory::copy_bytes(d, MemoryKind::device, host_.data(), MemoryKind::host, n * sizeof(T));
    std::vector<T>().swap(host_);
    device_ = d;
    size_ = n;
    on_device_ = true;
    return true;
  }
  /// The elements, copied to the host.
  std::vector<T> to_vector() const {
    if (!on_device_) return host_;
    std::vector<T> h(size_);
    if (size_) memory::copy_bytes(h.data(), MemoryKind::host, device_, MemoryKind::device, size_ * sizeof(T));
    return h;
  }
  /// Copies the elements to n host elements; false (nothing copied) when n ≠ size().
  bool copy_to(T* host, std::size_t n) const {
    if (n != size()) return false;
    if (n) memory::copy_bytes(host, MemoryKind::host, data(), memory(), n * sizeof(T));
    return true;
  }
  /// Overwrites the elements with n host elements; false (nothing changed) when n ≠ size().
  bool copy_from(const T* host, std::size_t n) {
    if (n != size()) return false;
    if (n) memory::copy_bytes(data(), memory(), host, MemoryKind::host, n * sizeof(T));
    return true;
  }

  /// Same size and the same values, in whatever memory each lives (floats: NaN ≠ NaN, as for
  /// vectors; bf16 patterns compare bit for bit).
  friend bool operator==(const BasicBuffer& a, const BasicBuffer& b) {
    if (a.size() != b.size()) return false;
    if (a.host_readable() && b.host_readable()) return std::equal(a.begin(), a.end(), b.begin());
    const std::vector<T> x = a.to_vector(), y = b.to_vector();
    return x == y;
  }
  friend bool operator!=(const BasicBuffer& a, const BasicBuffer& b) { return !(a == b); }

 private:
  /// n elements of device memory (nullptr for n = 0); std::bad_alloc when the allocation fails.
  static T* allocate_or_throw(std::size_t n) {
    if (n == 0) return nullptr;
    auto* p = static_cast<T*>(memory::allocate_device(n * sizeof(T)));
    if (!p) throw std::bad_alloc();
    return p;
  }
  void release_device() noexcept {
    if (on_device_) memory::free_device(device_);
    device_ = nullptr;
    size_ = 0;
    on_device_ = false;
  }

  std::vector<T> host_;   ///< the elements of a host buffer
  T* device_ = nullptr;   ///< the elements of a device buffer
  std::size_t size_ = 0;  ///< their number (device buffers)
  bool on_device_ = false;
};

/// Optimizer state and scratch: floats.
using FloatBuffer = BasicBuffer<float>;
/// 16-bit momentum storage: bf16 bit patterns (core/bf16.hpp converts them).
using Bf16Buffer = BasicBuffer<std::uint16_t>;

}  // namespace schatten
