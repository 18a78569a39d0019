// SPDX-License-Identifier: Apache-2.0
/// \file
/// Private: what a schatten::Workspace holds (a workspace of the default execution space, and
/// the staging copies of the plain-array calls on host arrays).
#pragma once

#include <Kokkos_Core.hpp>

#include <atomic>
#include <cstddef>
#include <memory>
#include <vector>

#include "schatten/core/workspace.hpp"
#include "schatten/kokkos/detail/memory.hpp"
#include "schatten/kokkos/workspace.hpp"

namespace schatten::kokkos::detail {

/// True while the plain-array calls stage host arrays even where the default execution space
/// could read them in place (a host build): the tests' way to run the staging of a device build
/// (plain_io.hpp) on the CPU. False by default; not part of the public API.
std::atomic<bool>& force_host_staging() noexcept;

/// The host side of a staging copy: pinned memory where Kokkos has it (Kokkos 4: CUDA's and
/// HIP's host-pinned space, which the device copies at full bus speed), else host memory.
#if KOKKOS_VERSION >= 40000
using StagingHostMem = Kokkos::SharedHostPinnedSpace;
#else
using StagingHostMem = Kokkos::HostSpace;
#endif

/// Staging copies of one call's host arrays on a device build: packed device buffers and, for
/// arrays that are not contiguous, packed host buffers (plain_io.hpp's DeviceIO; the low-rank
/// step's operands, low_rank.cpp). One slot per staged array of a call, grown on demand and
/// kept, so that calls after the first on the same shapes allocate nothing. A workspace's slots
/// are reused by its next call: every plain-array call fences before it returns, so nothing is
/// still using them. One call at a time, as for the workspace.
class Staging {
 public:
  struct Slot {
    // Freed without a host allocation (memory.hpp).
    OwnedBytes<Kokkos::DefaultExecutionSpace::memory_space> device;
    OwnedBytes<StagingHostMem> host;
  };

  /// Starts a call: its first take() gets the first slot.
  void begin_call() noexcept { used_ = 0; }

  /// The call's next slot, holding at least `device_bytes` on the device and `host_bytes` on
  /// the host. A side too small is freed and allocated again at the new size (nothing can be
  /// using it: see the class comment); a call that stages more arrays than any before adds a
  /// slot (a host allocation). Throws what Kokkos throws when an allocation fails (that side is
  /// then empty) or std::bad_alloc.
  Slot& take(std::size_t device_bytes, std::size_t host_bytes) {
    if (used_ == slots_.size()) slots_.push_back(std::make_unique<Slot>());  // the others stay put
    Slot& s = *slots_[used_++];
    grow(s, device_bytes, host_bytes);
    return s;
  }

  /// Grows the first `arrays` slots (adding those missing) to at least `bytes` on both sides,
  /// so that a call staging up to `arrays` arrays of at most `bytes` each takes no allocation
  /// (covers()). Throws as take() does; the slots grown before the failure keep their size.
  void reserve(std::size_t arrays, std::size_t bytes) {
    while (slots_.size() < arrays)
      slots_.push_back(std::make_unique<Slot>());
    for (std::size_t k = 0; k < arrays; ++k)
      grow(*slots_[k], bytes, bytes);
  }
  /// True when the first `arrays` slots exist and hold at least `bytes` on both sides: a call
  /// that stages up to `arrays` arrays of at most `bytes` each allocates nothing. Arrays of no
  /// bytes are not staged (plain_io.hpp), so `bytes` 0 is always covered.
  bool covers(std::size_t arrays, std::size_t bytes) const noexcept {
    if (bytes == 0) return true;
    if (slots_.size() < arrays) return false;
    for (std::size_t k = 0; k < arrays; ++k)
      if (slots_[k]->device.size() < bytes || slots_[k]->host.size() < bytes) return false;
    return true;
  }

  /// Bytes held, both sides of every slot.
  std::size_t bytes() const noexcept {
    std::size_t n = 0;
    for (const auto& s : slots_)
      n += s->device.size() + s->host.size();
    return n;
  }
  void release() noexcept {
    slots_.clear();
    used_ = 0;
  }

 private:
  /// Grows each side of s to at least its bytes (OwnedBytes::grow: freed, then allocated).
  static void grow(Slot& s, std::size_t device_bytes, std::size_t host_bytes) {
    s.device.grow(device_bytes, memory_label("sch::stage"));
    s.host.grow(host_bytes, memory_label("sch::stage_host"));
  }
  // Not a std::deque, whose empty form allocates (libstdc++): an empty Staging, as every
  // DeviceIO holds, must cost nothing.
  std::vector<std::unique_ptr<Slot>> slots_;
  std::size_t used_ = 0;
};

}  // namespace schatten::kokkos::detail

namespace schatten {
struct Workspace::Impl {
  kokkos::Workspace<Kokkos::DefaultExecutionSpace::memory_space> ws;
  kokkos::detail::Staging staging;  ///< empty unless host arrays were staged (plain_io.hpp)
};
}  // namespace schatten
