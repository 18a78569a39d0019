// SPDX-License-Identifier: Apache-2.0
/// \file
/// Kokkos initialisation on behalf of programs that do not manage Kokkos themselves.
#include "schatten/core/runtime.hpp"

#include <Kokkos_Core.hpp>
#include <cstdlib>
#include <mutex>
#include <sstream>

namespace schatten {
namespace {
std::mutex& init_mutex() {
  static std::mutex m;
  return m;
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
  if (Kokkos::is_initialized()) return;
  std::lock_guard<std::mutex> lock(init_mutex());
  if (Kokkos::is_initialized()) return;
  Kokkos::initialize();
  std::atexit(finalize_if_initialized);
}
}  // namespace detail

}  // namespace schatten
