// SPDX-License-Identifier: Apache-2.0
/// \file
/// Kokkos initialisation on behalf of programs that do not manage Kokkos themselves.
#include "schatten/core/runtime.hpp"

#include <Kokkos_Core.hpp>
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <sstream>

namespace schatten {
namespace {
std::mutex& init_mutex() {
  static std::mutex m;
  return m;
}
/// Set (release) once Kokkos is known to be initialised, under init_mutex: a thread that reads
/// it set (acquire) sees everything Kokkos::initialize() wrote. Kokkos::is_initialized() reads a
/// plain bool, so reading it while another thread initialises is a data race (on a weakly
/// ordered CPU such as ARM, the flag can be seen before the state it guards).
std::atomic<bool>& runtime_ready() {
  static std::atomic<bool> ready{false};
  return ready;
}
void finalize_if_initialized() {
  if (Kokkos::is_initialized()) Kokkos::finalize();
}
}  // namespace

Runtime::Runtime() {
  std::lock_guard<std::mutex> lock(init_mutex());
  if (!Kokkos::is_initialized()) {
    Kokkos::initialize();
    owns_ = true;
  }
}

Runtime::Runtime(int& argc, char* argv[]) {
  std::lock_guard<std::mutex> lock(init_mutex());
  if (!Kokkos::is_initialized()) {
    Kokkos::initialize(argc, argv);
    owns_ = true;
  }
}

Runtime::~Runtime() {
  if (owns_ && Kokkos::is_initialized()) Kokkos::finalize();
}

std::string runtime_description() {
  detail::ensure_runtime();
  std::ostringstream s;
  s << "Kokkos " << KOKKOS_VERSION / 10000 << '.' << (KOKKOS_VERSION / 100) % 100 << '.'
    << KOKKOS_VERSION % 100 << ' ' << Kokkos::DefaultExecutionSpace::name() << " ("
    << Kokkos::DefaultExecutionSpace::memory_space::name() << ")";
  return s.str();
}

namespace detail {
void ensure_runtime() {
  // Kokkos::is_initialized() is read outside the lock only after runtime_ready() was seen set,
  // so only a finalize() running beside a kernel call (the caller's error) can race with it;
  // after a finalize() the call takes the slow path to Kokkos::initialize(), as it always did.
  if (runtime_ready().load(std::memory_order_acquire) && Kokkos::is_initialized()) return;
  std::lock_guard<std::mutex> lock(init_mutex());
  if (!Kokkos::is_initialized()) {
    Kokkos::initialize();
    std::atexit(finalize_if_initialized);
  }
  runtime_ready().store(true, std::memory_order_release);
}
}  // namespace detail

}  // namespace schatten
