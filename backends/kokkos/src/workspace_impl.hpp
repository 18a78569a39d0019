// SPDX-License-Identifier: Apache-2.0
/// \file
/// Private: what a schatten::Workspace holds (a workspace of the default execution space, and
/// the staging copies of the plain-array calls on host arrays).
#pragma once

#include <Kokkos_Core.hpp>

#include <array>
#include <atomic>
#include <cstddef>
#include <stdexcept>

#include "schatten/core/workspace.hpp"
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

/// Staging copies of one call's host arrays on a device build (plain_io.hpp, DeviceIO): a few
/// slots, each a packed device buffer and a packed host buffer of the same size, grown on
/// demand and kept, so that calls after the first on the same shapes allocate nothing. A
/// workspace's slots are reused by its next call: every plain-array call fences before it
/// returns, so nothing is still using them. One call at a time, as for the workspace.
class Staging {
 public:
  /// The inputs and outputs one call can stage: polar's a and q, qdwh's a, u and h.
  static constexpr int kSlots = 3;
  struct Slot {
    Kokkos::View<unsigned char*, Kokkos::DefaultExecutionSpace::memory_space> device;
    Kokkos::View<unsigned char*, StagingHostMem> host;
  };

  /// Starts a call: its first take() gets the first slot.
  void begin_call() noexcept { used_ = 0; }

  /// The call's next slot, holding at least `bytes` on both sides. A slot too small is freed
  /// and allocated again at the new size (nothing can be using it: see the class comment).
  /// Throws what Kokkos throws when an allocation fails (the slot is then empty), and
  /// std::logic_error past kSlots slots in one call.
  Slot& take(std::size_t bytes) {
    if (used_ >= kSlots) throw std::logic_error("schatten: more staged arrays than staging slots");
    Slot& s = slots_[static_cast<std::size_t>(used_++)];
    if (s.device.extent(0) < bytes || s.host.extent(0) < bytes) {
      s = Slot();  // the peak is the new size, not the sum
      s.device =
          decltype(s.device)(Kokkos::view_alloc(Kokkos::WithoutInitializing, "schatten::staging"), bytes);
      s.host =
          decltype(s.host)(Kokkos::view_alloc(Kokkos::WithoutInitializing, "schatten::staging_host"), bytes);
    }
    return s;
  }

  /// Bytes held, both sides of every slot.
  std::size_t bytes() const noexcept {
    std::size_t n = 0;
    for (const Slot& s : slots_)
      n += s.device.extent(0) + s.host.extent(0);
    return n;
  }
  void release() noexcept {
    for (Slot& s : slots_)
      s = Slot();
  }

 private:
  std::array<Slot, kSlots> slots_;
  int used_ = 0;
};

}  // namespace schatten::kokkos::detail

namespace schatten {
struct Workspace::Impl {
  kokkos::Workspace<Kokkos::DefaultExecutionSpace::memory_space> ws;
  kokkos::detail::Staging staging;  ///< empty unless host arrays were staged (plain_io.hpp)
};
}  // namespace schatten
