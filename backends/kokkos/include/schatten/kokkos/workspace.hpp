// SPDX-License-Identifier: Apache-2.0
/// \file
/// Scratch memory for the Kokkos overloads, and the bump allocator kernels carve it with.
#pragma once

#include <Kokkos_Core.hpp>

#include <cstddef>
#include <limits>
#include <string>
#include <vector>

#include "schatten/core/types.hpp"
#include "schatten/kokkos/detail/memory.hpp"

namespace schatten::kokkos {

/// Host copies of the per-matrix scalars a kernel call reads back or forms on the host (norms,
/// the statistics of its input scan, load and output factors): kept with a Workspace and reused,
/// so that a call whose workspace was reserved for its batch allocates nothing on the host either
/// (docs/reliability.md "Heap exhaustion"). `stats` holds up to kStatsPerMatrix doubles per
/// matrix (the scan's three statistics, the clip's four shifts), the others one. `bytes` is
/// untyped host scratch that a kernel carves with detail::Arena for what is not one scalar per
/// matrix (the low-rank step's members, column flags and k-vectors: low_rank_host_bytes()).
struct HostScalars {
  static constexpr std::size_t kStatsPerMatrix = 4;
  std::vector<double> norms, stats, factor, out;
  /// Per matrix: the input scan's pre-scaling exponent s (A' = 2^−s·A), or a kernel's own.
  std::vector<int> exponents;
  std::vector<std::max_align_t> bytes;  ///< aligned for any scalar; grown, never shrunk
  /// Capacity for a batch of `matrices` and `host_bytes` of scratch; throws std::bad_alloc (what
  /// it holds is kept then).
  void reserve(std::size_t matrices, std::size_t host_bytes = 0) {
    stats.reserve(kStatsPerMatrix * matrices);
    for (std::vector<double>* v : {&norms, &factor, &out})
      v->reserve(matrices);
    exponents.reserve(matrices);
    const std::size_t units = (host_bytes + sizeof(std::max_align_t) - 1) / sizeof(std::max_align_t);
    if (units > bytes.size()) bytes.resize(units);
  }
  unsigned char* byte_data() noexcept { return reinterpret_cast<unsigned char*>(bytes.data()); }
  std::size_t byte_capacity() const noexcept { return bytes.size() * sizeof(std::max_align_t); }
};

/// Growable scratch buffer in `MemSpace`. Kokkos overloads take one by reference; they grow it
/// when it is too small and never shrink it. One per thread (not thread-safe).
template <class MemSpace = Kokkos::DefaultExecutionSpace::memory_space>
class Workspace {
 public:
  using memory_space = MemSpace;

  Workspace() = default;
  explicit Workspace(std::size_t bytes) { reserve(bytes); }

  /// Grows to at least `bytes` (uninitialised), and the host scalars to a batch of `matrices`
  /// and `host_bytes` of host scratch (first: a failure there leaves the buffer as it was).
  /// Throws std::bad_alloc, or what Kokkos throws on allocation failure (std::runtime_error); the
  /// previous buffer is then kept.
  void reserve(std::size_t bytes, std::size_t matrices = 1, std::size_t host_bytes = 0) {
    host_.reserve(matrices, host_bytes);
    if (bytes <= capacity()) return;
    buffer_ = detail::OwnedBytes<MemSpace>::make(bytes, detail::memory_label("sch::workspace"));
  }
  std::size_t capacity() const noexcept { return buffer_.size(); }
  /// Bytes of host scratch held (HostScalars::bytes).
  std::size_t host_capacity() const noexcept { return host_.byte_capacity(); }
  void release() noexcept {
    buffer_.reset();
    host_ = HostScalars();
  }
  unsigned char* data() const noexcept { return buffer_.data(); }
  /// The host scalars of the call using this workspace (one call at a time, as for data()).
  HostScalars& host_scalars() noexcept { return host_; }

 private:
  detail::OwnedBytes<MemSpace> buffer_;  // freed without a host allocation (detail/memory.hpp)
  HostScalars host_;
};

namespace detail {

/// Bump allocator over a workspace. With a null base it only counts bytes, so one function
/// can both size a workspace and carve it (the sizes then agree by construction).
class Arena {
 public:
  static constexpr std::size_t alignment = 256;  // GPU-friendly; ≥ any cache line

  explicit Arena(unsigned char* base = nullptr) : base_(base) {}
  /// The count every size saturates at: the largest object size (PTRDIFF_MAX), which no
  /// allocation serves. (Not SIZE_MAX: the aligned operator new of libstdc++ rounds the size up
  /// to the alignment first, which wraps SIZE_MAX to 0 and serves it.)
  static constexpr std::size_t kSaturated =
      static_cast<std::size_t>(std::numeric_limits<std::ptrdiff_t>::max());
  /// `count` elements of T. Sizes saturate at kSaturated instead of wrapping, so that a counting
  /// arena of a shape beyond the address space asks for more bytes than any allocation serves
  /// (the kernels' reserve() then fails: out_of_memory), never for a wrapped few bytes that the
  /// kernel would write past (a 2^30 × 2^30 polar() once reserved 40 bytes).
  template <class T>
  T* take(std::size_t count) {
    used_ = used_ >= kSaturated - alignment ? kSaturated : (used_ + alignment - 1) / alignment * alignment;
    T* p = base_ ? reinterpret_cast<T*>(base_ + used_) : nullptr;
    used_ = count >= (kSaturated - used_) / sizeof(T) ? kSaturated : used_ + count * sizeof(T);
    return p;
  }
  /// Elements of an a × b × c box (extents ≥ 0), kSaturated when the product exceeds it.
  static std::size_t box(index_t a, index_t b = 1, index_t c = 1) noexcept {
    std::size_t n = 1;
    for (const index_t e : {a, b, c}) {
      const std::size_t u = static_cast<std::size_t>(e);
      if (u != 0 && n > kSaturated / u) return kSaturated;
      n *= u;
    }
    return n;
  }
  std::size_t used() const noexcept { return used_; }

 private:
  unsigned char* base_;
  std::size_t used_ = 0;
};

}  // namespace detail
}  // namespace schatten::kokkos
