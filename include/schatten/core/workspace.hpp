// SPDX-License-Identifier: Apache-2.0
/// \file
/// Caller-owned scratch memory for the plain-array kernel calls.
#pragma once

#include <cstddef>
#include <memory>

namespace schatten {

/// Scratch memory in the memory space of the default execution space (device memory on a GPU
/// build). Kernels grow it on demand and never shrink it, so a caller that keeps one Workspace per
/// thread and passes it to every call allocates only during the first calls. Passing none makes
/// each call allocate and free its own scratch. Not thread-safe: one Workspace per thread.
/// Must be destroyed before Kokkos is finalised (e.g. before schatten::Runtime goes out of scope).
class Workspace {
 public:
  Workspace();
  /// Reserves `bytes` up front (see polar_workspace_bytes()).
  explicit Workspace(std::size_t bytes);
  ~Workspace();
  Workspace(Workspace&&) noexcept;
  Workspace& operator=(Workspace&&) noexcept;
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;

  /// Grows the buffer to at least `bytes`, the host copies of per-matrix scalars (norms,
  /// factors: a few doubles each) to a batch of `matrices`, and the host scratch to `host_bytes`
  /// (what low_rank_host_bytes() gives; the other kernels need none), so that calls on batches
  /// of up to that many matrices whose scratch fits allocate nothing, on the device or the host.
  /// Returns false (and keeps the old buffers) when an allocation fails.
  bool reserve(std::size_t bytes, std::size_t matrices = 1, std::size_t host_bytes = 0);
  /// Bytes currently held (the buffer in the default execution space's memory).
  std::size_t capacity() const noexcept;
  /// Bytes of host scratch currently held (reserve()'s `host_bytes`).
  std::size_t host_capacity() const noexcept;
  /// Bytes of staging copies held: on a GPU build, the calls on host arrays copy their inputs
  /// and outputs through packed device and (pinned) host buffers, which the workspace keeps for
  /// its next calls, so that those allocate nothing either. Zero on a CPU build, and for arrays
  /// in device memory.
  std::size_t staging_capacity() const noexcept;
  /// Grows the staging copies so that a call on host arrays that stages up to `arrays` arrays
  /// of at most `bytes` bytes each allocates nothing, from its first call (staging_covers()). A
  /// plain-array call stages each host input and output it is given, packed: polar(a, q, …)
  /// on a batch of b host r × c float matrices stages 2 arrays of b·r·c·4 bytes. Does nothing
  /// where the kernels read host memory in place (a CPU build). Returns false when an allocation
  /// fails: the copies grown before it are kept, and later calls grow the rest on demand.
  bool reserve_staging(std::size_t arrays, std::size_t bytes);
  /// True when a call on host arrays staging up to `arrays` arrays of at most `bytes` bytes
  /// each allocates no staging copy: always on a CPU build, else after reserve_staging() (or an
  /// earlier call) with at least those. The optimizers' prechecks ask it (optim/transforms.hpp,
  /// polar_total_on_finite).
  bool staging_covers(std::size_t arrays, std::size_t bytes) const noexcept;
  /// Frees the buffer, the host scratch and the staging copies.
  void release() noexcept;
  /// Bytes held by all live Workspaces of this process, together, their host scratch and staging
  /// copies included
  /// (diagnostics: what the optimizers' and the caller's scratch costs, schatten-bench-optim's
  /// `workspace_MB`).
  /// Workspaces of the Kokkos overloads (kokkos::Workspace) are not counted.
  static std::size_t total_bytes() noexcept;

  struct Impl;
  /// Backend access (used by the library's entry points).
  Impl& impl() noexcept { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace schatten
