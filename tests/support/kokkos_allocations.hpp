// SPDX-License-Identifier: Apache-2.0
/// \file
/// Counting Kokkos' own allocations, in every memory space (Views, kokkos_malloc, the backends'
/// internal scratch), through the Kokkos Tools allocate-data callback: the device-side
/// counterpart of support/allocations.hpp, which sees only the host's operator new. The
/// callback exists with the same signature in Kokkos 3.4 (the default build) and 4.x (the GPU
/// builds), so that the steady-state claims of docs/kernels/polar.md ("Cost") are checked on
/// the device too. KokkosLaunchProbe counts kernel launches the same way (the begin callbacks
/// of parallel_for, parallel_reduce and parallel_scan, also alike in 3.4 and 4.x), for the claim
/// that a batch of small matrices is one launch sequence (issue #7 item 3).
#pragma once

#include <Kokkos_Core.hpp>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <string>

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

/// While alive, counts the kernel launches Kokkos reports (parallel_for, parallel_reduce and
/// parallel_scan, top-level ones: nested team ranges are not launches), by label. With the
/// callbacks installed Kokkos behaves as with a tool loaded, so the library's launches carry
/// their labels (kernel_label). Same rules as KokkosAllocationProbe: inactive when a tool is
/// already loaded, one probe at a time.
class KokkosLaunchProbe {
 public:
  KokkosLaunchProbe() : active_(!Kokkos::Tools::profileLibraryLoaded()) {
    if (!active_) return;
    clear();
    Kokkos::Tools::Experimental::set_begin_parallel_for_callback(&on_begin);
    Kokkos::Tools::Experimental::set_begin_parallel_reduce_callback(&on_begin);
    Kokkos::Tools::Experimental::set_begin_parallel_scan_callback(&on_begin);
  }
  ~KokkosLaunchProbe() {
    if (!active_) return;
    Kokkos::Tools::Experimental::set_begin_parallel_for_callback(nullptr);
    Kokkos::Tools::Experimental::set_begin_parallel_reduce_callback(nullptr);
    Kokkos::Tools::Experimental::set_begin_parallel_scan_callback(nullptr);
  }
  KokkosLaunchProbe(const KokkosLaunchProbe&) = delete;
  KokkosLaunchProbe& operator=(const KokkosLaunchProbe&) = delete;

  /// False when another tool was loaded: nothing is counted.
  bool active() const noexcept { return active_; }
  /// Forgets the launches so far.
  void clear() {
    std::lock_guard<std::mutex> lock(mutex_());
    counts_().clear();
  }
  /// Launches so far, by label.
  std::map<std::string, long> counts() const {
    std::lock_guard<std::mutex> lock(mutex_());
    return counts_();
  }

 private:
  static std::mutex& mutex_() {
    static std::mutex m;
    return m;
  }
  static std::map<std::string, long>& counts_() {
    static std::map<std::string, long> c;
    return c;
  }
  static void on_begin(const char* label, std::uint32_t, std::uint64_t*) {
    std::lock_guard<std::mutex> lock(mutex_());
    ++counts_()[label ? label : ""];
  }

  bool active_;
};

}  // namespace schatten::test
