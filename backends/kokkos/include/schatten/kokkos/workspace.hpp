// SPDX-License-Identifier: Apache-2.0
/// \file
/// Scratch memory for the Kokkos overloads, and the bump allocator kernels carve it with.
#pragma once

#include <Kokkos_Core.hpp>

#include <cstddef>
#include <string>

namespace schatten::kokkos {

/// Growable scratch buffer in `MemSpace`. Kokkos overloads take one by reference; they grow it
/// when it is too small and never shrink it. One per thread (not thread-safe).
template <class MemSpace = Kokkos::DefaultExecutionSpace::memory_space>
class Workspace {
 public:
  using memory_space = MemSpace;

  Workspace() = default;
  explicit Workspace(std::size_t bytes) { reserve(bytes); }

  /// Grows to at least `bytes` (uninitialised). Throws what Kokkos throws on allocation failure
  /// (std::runtime_error); the previous buffer is then kept.
  void reserve(std::size_t bytes) {
    if (bytes <= capacity()) return;
    buffer_ = Kokkos::View<unsigned char*, MemSpace>(
        Kokkos::view_alloc(Kokkos::WithoutInitializing, std::string("schatten::workspace")), bytes);
  }
  std::size_t capacity() const noexcept { return buffer_.extent(0); }
  void release() noexcept { buffer_ = Kokkos::View<unsigned char*, MemSpace>(); }
  unsigned char* data() const noexcept { return buffer_.data(); }

 private:
  Kokkos::View<unsigned char*, MemSpace> buffer_;
};

namespace detail {

/// Bump allocator over a workspace. With a null base it only counts bytes, so one function
/// can both size a workspace and carve it (the sizes then agree by construction).
class Arena {
 public:
  static constexpr std::size_t alignment = 256;  // GPU-friendly; ≥ any cache line

  explicit Arena(unsigned char* base = nullptr) : base_(base) {}
  template <class T>
  T* take(std::size_t count) {
    used_ = (used_ + alignment - 1) / alignment * alignment;
    T* p = base_ ? reinterpret_cast<T*>(base_ + used_) : nullptr;
    used_ += count * sizeof(T);
    return p;
  }
  std::size_t used() const noexcept { return used_; }

 private:
  unsigned char* base_;
  std::size_t used_ = 0;
};

}  // namespace detail
}  // namespace schatten::kokkos
