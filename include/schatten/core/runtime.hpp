// SPDX-License-Identifier: Apache-2.0
/// \file
/// Lifetime of the Kokkos runtime that the kernels run on.
///
/// The kernels need an initialised Kokkos. Programs that already use Kokkos keep doing what they
/// do (Kokkos::ScopeGuard, Kokkos::initialize); schatten never initialises Kokkos twice. Programs
/// that do not use Kokkos either create one `schatten::Runtime` at the top of main (recommended:
/// it finalises Kokkos deterministically) or do nothing: the first plain-array call then
/// initialises Kokkos itself and registers Kokkos::finalize with std::atexit.
#pragma once

#include <string>

namespace schatten {

/// RAII guard: initialises Kokkos if nobody has, and finalises it on destruction if it did.
/// Not copyable. Create at most one, in main, before any other schatten object.
class Runtime {
 public:
  Runtime();
  /// Forwards Kokkos' command-line options (--kokkos-threads=N on Kokkos 3.4,
  /// --kokkos-num-threads=N on 4.x, ...).
  Runtime(int& argc, char* argv[]);
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  /// True when this guard initialised Kokkos (and will finalise it).
  bool owns_kokkos() const noexcept { return owns_; }

 private:
  bool owns_ = false;
};

/// One line describing the execution space, Kokkos version and memory space in use, e.g.
/// "Kokkos 3.4.1 Serial (Host)". Initialises the runtime if needed.
std::string runtime_description();

namespace detail {
/// Initialises Kokkos (with std::atexit finalisation) unless it is already initialised.
/// Called by every plain-array entry point. Thread-safe.
void ensure_runtime();
}  // namespace detail

}  // namespace schatten
