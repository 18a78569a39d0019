// SPDX-License-Identifier: Apache-2.0
/// \file
/// schatten::Workspace: the plain-array API's handle on a Kokkos workspace.
#include "schatten/core/workspace.hpp"

#include <atomic>
#include <exception>
#include <mutex>
#include <set>
#include <utility>

#include "schatten/core/buffer.hpp"
#include "schatten/core/runtime.hpp"
#include "workspace_impl.hpp"

namespace schatten {

std::atomic<bool>& kokkos::detail::force_host_staging() noexcept {
  static std::atomic<bool> force{false};
  return force;
}

namespace {
/// The live Workspaces (total_bytes()). A registry rather than a running sum, because the
/// kernels grow a workspace through its Impl (plain_io.hpp, CallWorkspace), not reserve().
/// Both are leaked on purpose, so that a Workspace destroyed during static destruction still
/// finds them.
std::mutex& registry_mutex() {
  static auto* m = new std::mutex;
  return *m;
}
std::set<const Workspace::Impl*>& registry() {
  static auto* live = new std::set<const Workspace::Impl*>;
  return *live;
}
}  // namespace

Workspace::Workspace() : impl_(std::make_unique<Impl>()) {
  const std::lock_guard<std::mutex> lock(registry_mutex());
  registry().insert(impl_.get());
}
Workspace::Workspace(std::size_t bytes) : Workspace() { reserve(bytes); }
Workspace::~Workspace() {
  if (!impl_) return;  // moved from
  const std::lock_guard<std::mutex> lock(registry_mutex());
  registry().erase(impl_.get());
}
Workspace::Workspace(Workspace&&) noexcept = default;
Workspace& Workspace::operator=(Workspace&& other) noexcept {
  if (this != &other) {
    if (impl_) {
      const std::lock_guard<std::mutex> lock(registry_mutex());
      registry().erase(impl_.get());  // freed below
    }
    impl_ = std::move(other.impl_);
  }
  return *this;
}

bool Workspace::reserve(std::size_t bytes, std::size_t matrices, std::size_t host_bytes) {
  detail::ensure_runtime();
  try {
    impl_->ws.reserve(bytes, matrices, host_bytes);
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

bool Workspace::reserve_staging(std::size_t arrays, std::size_t bytes) {
  detail::ensure_runtime();
  if (memory::kernels_access(MemoryKind::host)) return true;  // nothing is ever staged
  try {
    impl_->staging.reserve(arrays, bytes);
    return true;
  } catch (const std::exception&) {
    return false;
  }
}
bool Workspace::staging_covers(std::size_t arrays, std::size_t bytes) const noexcept {
  return memory::kernels_access(MemoryKind::host) || (impl_ && impl_->staging.covers(arrays, bytes));
}

std::size_t Workspace::capacity() const noexcept { return impl_ ? impl_->ws.capacity() : 0; }
std::size_t Workspace::host_capacity() const noexcept { return impl_ ? impl_->ws.host_capacity() : 0; }
std::size_t Workspace::staging_capacity() const noexcept { return impl_ ? impl_->staging.bytes() : 0; }
void Workspace::release() noexcept {
  if (!impl_) return;
  impl_->ws.release();
  impl_->staging.release();
}
std::size_t Workspace::total_bytes() noexcept {
  const std::lock_guard<std::mutex> lock(registry_mutex());
  std::size_t n = 0;
  for (const Impl* w : registry())
    n += w->ws.capacity() + w->ws.host_capacity() + w->staging.bytes();
  return n;
}

}  // namespace schatten
