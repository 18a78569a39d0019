// SPDX-License-Identifier: Apache-2.0
/// \file
/// The replaceable global allocation functions ([new.delete.single], [new.delete.array]) routed
/// through the thread's AllocationProbe (support/allocations.hpp), then std::malloc and
/// std::free. The over-aligned forms (std::align_val_t) are not replaced: the standard library's
/// (or the sanitizer runtime's) pair them with their own deletes, which stay consistent.
#include "support/allocations.hpp"

#include <cstdlib>
#include <new>

namespace {
thread_local schatten::test::AllocationProbe* active = nullptr;

void* allocate(std::size_t n) {
  if (active != nullptr && active->refuse_next()) throw std::bad_alloc();
  if (n == 0) n = 1;  // a distinct non-null pointer for every call, as required
  for (;;) {
    if (void* p = std::malloc(n)) return p;
    const std::new_handler h = std::get_new_handler();
    if (h == nullptr) throw std::bad_alloc();
    h();
  }
}
}  // namespace

namespace schatten::test {
AllocationProbe::AllocationProbe(std::int64_t fail_at) : fail_at_(fail_at) {
  if (active != nullptr) std::abort();  // one probe per thread (the header's contract)
  active = this;
}
AllocationProbe::~AllocationProbe() { active = nullptr; }
}  // namespace schatten::test

// nvcc declares the global allocation functions __host__ __device__, and warns (#20011) that
// these call a host function; no device code of the tests allocates with `new`, so the
// replacements are host-only in effect, and the warning is silenced for them alone.
#if defined(__NVCC__)
#pragma nv_diag_suppress 20011
#endif
void* operator new(std::size_t n) { return allocate(n); }
void* operator new[](std::size_t n) { return allocate(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return allocate(n);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return allocate(n);
  } catch (...) {
    return nullptr;
  }
}
#if defined(__NVCC__)
#pragma nv_diag_default 20011
#endif
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
