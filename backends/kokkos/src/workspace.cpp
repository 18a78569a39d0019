// SPDX-License-Identifier: Apache-2.0
/// \file
/// schatten::Workspace: the plain-array API's handle on a Kokkos workspace.
#include "schatten/core/workspace.hpp"

#include <exception>

#include "schatten/core/runtime.hpp"
#include "workspace_impl.hpp"

namespace schatten {

Workspace::Workspace() : impl_(std::make_unique<Impl>()) {}
Workspace::Workspace(std::size_t bytes) : Workspace() { reserve(bytes); }
Workspace::~Workspace() = default;
Workspace::Workspace(Workspace&&) noexcept = default;
Workspace& Workspace::operator=(Workspace&&) noexcept = default;

bool Workspace::reserve(std::size_t bytes) {
  detail::ensure_runtime();
  try {
    impl_->ws.reserve(bytes);
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

std::size_t Workspace::capacity() const noexcept { return impl_ ? impl_->ws.capacity() : 0; }
void Workspace::release() noexcept {
  if (impl_) impl_->ws.release();
}

}  // namespace schatten
