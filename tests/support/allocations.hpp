// SPDX-License-Identifier: Apache-2.0
/// \file
/// Counting and failing the program's host allocations, for the all-or-nothing tests of
/// optimizer steps. support/allocations.cpp replaces the global operator new and delete (the
/// standard's replaceable forms, [new.delete]) of the executables that link it (test_optim);
/// they allocate with std::malloc as the default ones do. Only this thread's calls made while an
/// AllocationProbe is alive are counted. Allocations that do not go through operator new are not
/// seen: Kokkos' (kokkos_malloc, Views), the library's over-aligned host buffers (the kernels'
/// workspace, staging slots and a CPU build's device buffers: kokkos/detail/memory.hpp, which
/// support/kokkos_allocations.hpp counts), Eigen's (aligned malloc) and the BLAS's.
#pragma once

#include <cstdint>

namespace schatten::test {

/// While alive, counts this thread's calls of operator new (every form but the over-aligned
/// ones); with fail_at = k ≥ 1 the k-th of them throws std::bad_alloc (a nothrow form returns
/// nullptr), as an exhausted heap would; the calls after it succeed. One probe per thread at a
/// time.
class AllocationProbe {
 public:
  explicit AllocationProbe(std::int64_t fail_at = 0);
  ~AllocationProbe();
  AllocationProbe(const AllocationProbe&) = delete;
  AllocationProbe& operator=(const AllocationProbe&) = delete;
  /// The calls so far, the failed one included.
  std::int64_t count() const noexcept { return count_; }
  /// True once the fail_at-th call has been refused.
  bool failed() const noexcept { return fail_at_ > 0 && count_ >= fail_at_; }

  /// For support/allocations.cpp: counts one call and says whether to refuse it.
  bool refuse_next() noexcept { return ++count_ == fail_at_; }

 private:
  std::int64_t fail_at_ = 0;
  std::int64_t count_ = 0;
};

/// What one call made with an allocation refused gave (refusing_allocation).
template <class R>
struct RefusedAttempt {
  R result{};            ///< the call's result, when it returned
  bool threw = false;    ///< an exception left the call (result stays default)
  bool refused = false;  ///< the call reached the refused allocation
};

/// f() with this thread's k-th allocation refused (an AllocationProbe(k) alive during the call
/// only): what it returned, whether an exception left it, and whether the refusal happened. The
/// sweeps call it with k = 1, 2, … until `refused` is false (f() met no refusal).
template <class F>
auto refusing_allocation(std::int64_t k, F&& f) -> RefusedAttempt<decltype(f())> {
  RefusedAttempt<decltype(f())> a;
  AllocationProbe probe(k);
  try {
    a.result = f();
  } catch (...) {
    a.threw = true;
  }
  a.refused = probe.failed();
  return a;
}

/// refusing_allocation(k, f) where `here` (one rank of several, the others calling f() plainly).
template <class F>
auto refusing_allocation_if(bool here, std::int64_t k, F&& f) -> RefusedAttempt<decltype(f())> {
  if (here) return refusing_allocation(k, f);
  RefusedAttempt<decltype(f())> a;
  a.result = f();
  return a;
}

}  // namespace schatten::test
