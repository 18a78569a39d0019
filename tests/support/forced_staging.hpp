// SPDX-License-Identifier: Apache-2.0
/// \file
/// Runs a GPU build's staging of host arrays on the CPU: while a ForcedStaging is alive, the
/// plain-array calls copy host arrays through the workspace's staging slots as a device build
/// does (backends/kokkos/src/workspace_impl.hpp, force_host_staging; plain_io.hpp), and
/// memory::kernels_access(MemoryKind::host) is false. Needs backends/kokkos/src on the include
/// path. Not thread-safe: one at a time, from the thread that runs the calls.
#pragma once

#include "workspace_impl.hpp"

namespace schatten::test {

/// Forces the staging of host arrays while alive (file comment).
struct ForcedStaging {
  ForcedStaging() { kokkos::detail::force_host_staging().store(true); }
  ~ForcedStaging() { kokkos::detail::force_host_staging().store(false); }
  ForcedStaging(const ForcedStaging&) = delete;
  ForcedStaging& operator=(const ForcedStaging&) = delete;
};

}  // namespace schatten::test
