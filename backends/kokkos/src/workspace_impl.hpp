// SPDX-License-Identifier: Apache-2.0
/// \file
/// Private: what a schatten::Workspace holds (a workspace of the default execution space).
#pragma once

#include "schatten/core/workspace.hpp"
#include "schatten/kokkos/workspace.hpp"

namespace schatten {
struct Workspace::Impl {
  kokkos::Workspace<Kokkos::DefaultExecutionSpace::memory_space> ws;
};
}  // namespace schatten
