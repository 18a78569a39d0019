// SPDX-License-Identifier: Apache-2.0
/// \file
/// Counting Kokkos' own allocations, in every memory space (Views, kokkos_malloc, the backends'
/// internal scratch), through the Kokkos Tools allocate-data callback: the device-side
/// counterpart of support/allocations.hpp, which sees only the host's operator new. The
/// callback exists with the same signature in Kokkos 3.4 (the default build) and 4.x (the GPU
/// builds), so that the steady-state claims of docs/kernels/polar.md ("Cost") are checked on
/// the device too.
#pragma once

#include <Kokkos_Core.hpp>

#include <atomic>
#include <cstdint>
#include <cstring>

namespace schatten::test {

/// True on Kokkos 3 (the default build's 3.4), whose calls make no host allocation of their own,
/// so that the kernels' steady-state host allocations can be required to be none. Kokkos 4
/// allocates inside its own calls: each execution-space instance it constructs (a shared
/// pointer's control block, also in every policy made without an instance), fences named by a
/// long std::string (HostSpace's free, deep copies), and Kokkos Kernels' profiling regions.
constexpr bool kokkos3() { return KOKKOS_VERSION < 40000; }

/// While alive, counts the allocations Kokkos reports (every thread's, every space's) and keeps
/// the label of the last one, and the longest label of those not Kokkos' own (memory.hpp).
/// Installs a callback, so that Kokkos behaves as with a profiling tool loaded (it may fence
/// more); when a tool is already loaded the probe does nothing and active() is false. One probe
/// at a time.
class KokkosAllocationProbe {
 public:
  KokkosAllocationProbe() : active_(!Kokkos::Tools::profileLibraryLoaded()) {
    if (!active_) return;
    count_() = 0;
    last_label_()[0] = '\0';
    longest_label_()[0] = '\0';
    Kokkos::Tools::Experimental::set_allocate_data_callback(&on_allocate);
  }
  ~KokkosAllocationProbe() {
    if (active_) Kokkos::Tools::Experimental::set_allocate_data_callback(nullptr);
  }
  KokkosAllocationProbe(const KokkosAllocationProbe&) = delete;
  KokkosAllocationProbe& operator=(const KokkosAllocationProbe&) = delete;

  /// False when another tool was loaded: nothing is counted.
  bool active() const noexcept { return active_; }
  /// Allocations so far.
  std::int64_t count() const noexcept { return count_().load(); }
  /// The label of the last allocation ("" when none), to name the culprit in a failure.
  const char* last_label() const noexcept { return last_label_(); }
  /// The longest label so far ("" when none) of the allocations whose label does not start with
  /// "Kokkos::" (the scratch Kokkos allocates for itself): the library's, and any a test makes.
  const char* longest_label() const noexcept { return longest_label_(); }

 private:
  static std::atomic<std::int64_t>& count_() {
    static std::atomic<std::int64_t> c{0};
    return c;
  }
  static char* last_label_() {
    static char label[128] = {};
    return label;
  }
  static char* longest_label_() {
    static char label[128] = {};
    return label;
  }
  static void on_allocate(Kokkos_Profiling_SpaceHandle, const char* label, const void*, std::uint64_t) {
    ++count_();
    if (label == nullptr) label = "";
    std::strncpy(last_label_(), label, 127);
    if (std::strncmp(label, "Kokkos::", 8) != 0 && std::strlen(label) > std::strlen(longest_label_()))
      std::strncpy(longest_label_(), label, 127);
  }

  bool active_;
};

}  // namespace schatten::test
