// SPDX-License-Identifier: Apache-2.0
/// \file
/// The memory the Kokkos backend keeps (workspaces, staging slots, solver scratch, a call's
/// matrices and their host copies): its labels, and buffers whose free never allocates on the
/// host.
///
/// Why (found by the heap-exhaustion sweeps on a Kokkos 4.6.01 build, docs/reliability.md
/// "Heap exhaustion"): from Kokkos 4.3 on, freeing memory that Kokkos allocated can allocate on
/// the host, inside a noexcept destructor, so that an exhausted heap there ends the program
/// (std::bad_alloc leaves the destructor: std::terminate):
/// - the allocation record's destructor copies the label into a std::string, in every memory
///   space (`SharedAllocationRecordCommon` and its `HostInaccessible…` twin; read in 4.3.00 to
///   4.6.01 and the June 2025 develop branch): a label longer than the small-string buffer
///   allocates. memory_label() keeps ours short.
/// - HostSpace::deallocate fences first, naming the fence with a 37-character std::string: every
///   free of a HostSpace allocation allocates, whatever its label. CudaSpace, HIPSpace and their
///   host-pinned spaces do not fence there (read in 4.6.01). OwnedBytes therefore takes host
///   memory from the C++ allocator itself, and only other spaces' from Kokkos.
/// Kokkos 3.4 (Debian) does neither.
#pragma once

#include <Kokkos_Core.hpp>

#include <cstddef>
#include <limits>
#include <new>
#include <string>
#include <type_traits>
#include <utility>

namespace schatten::kokkos::detail {

/// The most characters a memory label has: what std::string holds without a heap allocation
/// (its small-string buffer: 15 characters in libstdc++ and in MSVC's library, 22 in libc++).
inline constexpr std::size_t kMaxMemoryLabel = 15;

/// `label` as the std::string Kokkos takes (view_alloc, kokkos_malloc; a `const char*` would be
/// read by view_alloc as a data pointer), checked at compile time to have at most
/// kMaxMemoryLabel characters, so that neither making it nor freeing the memory it names
/// allocates (the file comment). Every label of memory the library allocates through Kokkos goes
/// through it. (The library makes no Kokkos mirror, whose label would be the View's plus
/// "_mirror": HostMatrix below stands in for create_mirror_view.)
template <std::size_t N>
std::string memory_label(const char (&label)[N]) {
  static_assert(N >= 1 && N - 1 <= kMaxMemoryLabel,
                "a memory label beyond std::string's small-string buffer allocates when Kokkos 4 frees it");
  return std::string(label, N - 1);
}

/// The alignment of every OwnedBytes buffer: the Arena's (workspace.hpp), and cudaMalloc's.
inline constexpr std::size_t kOwnedAlignment = 256;

/// True for the memory space whose memory the library takes from the C++ allocator
/// (owned_host_allocate) rather than from Kokkos: HostSpace, whose Kokkos free allocates.
template <class Mem>
inline constexpr bool owned_on_host = std::is_same<Mem, Kokkos::HostSpace>::value;

/// What Kokkos Tools are told the owned host memory lives in.
inline Kokkos::Profiling::SpaceHandle owned_host_space_handle() noexcept {
  return Kokkos::Profiling::make_space_handle(Kokkos::HostSpace::name());
}

/// `bytes` of host memory aligned to kOwnedAlignment, from the C++ allocator (aligned operator
/// new), for what the library keeps in HostSpace instead of a Kokkos allocation (the file
/// comment). Reported to a loaded Kokkos Tools library as a HostSpace allocation named `label`
/// (a memory_label()), as Kokkos reports its own, so that memory tools and the tests' probes
/// (tests/support/kokkos_allocations.hpp) still see it. Throws std::bad_alloc, also for
/// PTRDIFF_MAX bytes or more without asking operator new (no object is that large; Arena's sizes
/// saturate there): libstdc++'s aligned operator new rounds the size up to the alignment before
/// allocating, which wraps sizes within 255 of SIZE_MAX to a few bytes and returns that block
/// (Workspace::reserve(SIZE_MAX) succeeded with it), and AddressSanitizer's aborts the process on
/// a request above 1 TiB instead of failing it.
inline unsigned char* owned_host_allocate(std::size_t bytes, const std::string& label) {
  if (bytes >= static_cast<std::size_t>(std::numeric_limits<std::ptrdiff_t>::max())) throw std::bad_alloc();
  auto* p = static_cast<unsigned char*>(::operator new(bytes, std::align_val_t(kOwnedAlignment)));
  if (Kokkos::Profiling::profileLibraryLoaded())
    Kokkos::Profiling::allocateData(owned_host_space_handle(), label, p, bytes);
  return p;
}

/// Frees what owned_host_allocate(bytes, label) returned (null is ignored) without allocating:
/// reported to a loaded tool, and fenced first while Kokkos runs, as Kokkos' HostSpace does
/// before a free (a host execution space may still be using it), with a short fence name.
inline void owned_host_free(void* p, std::size_t bytes, const std::string& label) noexcept {
  if (p == nullptr) return;
  if (Kokkos::Profiling::profileLibraryLoaded())
    Kokkos::Profiling::deallocateData(owned_host_space_handle(), label, p, bytes);
  if (Kokkos::is_initialized()) {
#if KOKKOS_VERSION >= 40000
    Kokkos::fence("schatten");
#else
    Kokkos::fence();
#endif
  }
  ::operator delete(p, std::align_val_t(kOwnedAlignment));
}

/// An owned, uninitialised byte buffer in memory space `Mem`, freed without a host allocation:
/// HostSpace memory comes from owned_host_allocate(), other spaces' from Kokkos under a
/// memory_label() (the file comment). Move-only. Not thread-safe.
template <class Mem>
class OwnedBytes {
  static constexpr bool kHost = owned_on_host<Mem>;

 public:
  OwnedBytes() = default;
  OwnedBytes(const OwnedBytes&) = delete;
  OwnedBytes& operator=(const OwnedBytes&) = delete;
  OwnedBytes(OwnedBytes&& o) noexcept
      : host_(std::exchange(o.host_, nullptr)),
        size_(std::exchange(o.size_, 0)),
        label_(std::move(o.label_)),
        view_(std::move(o.view_)) {
    o.view_ = View();
  }
  OwnedBytes& operator=(OwnedBytes&& o) noexcept {
    if (this != &o) {
      reset();
      host_ = std::exchange(o.host_, nullptr);
      size_ = std::exchange(o.size_, 0);
      label_ = std::move(o.label_);
      view_ = std::move(o.view_);
      o.view_ = View();
    }
    return *this;
  }
  ~OwnedBytes() { reset(); }

  unsigned char* data() const noexcept { return kHost ? host_ : view_.data(); }
  std::size_t size() const noexcept { return size_; }

  /// Frees the buffer (owned_host_free() for host memory).
  void reset() noexcept {
    if (kHost) {
      owned_host_free(host_, size_, label_);
      host_ = nullptr;
    } else {
      view_ = View();
    }
    size_ = 0;
  }

  /// A new buffer of `bytes`, labelled `label` (a memory_label()). Throws std::bad_alloc for
  /// host memory, what Kokkos throws otherwise.
  static OwnedBytes make(std::size_t bytes, const std::string& label) {
    OwnedBytes b;
    if (kHost) {
      b.label_ = label;  // (short: no allocation) for the tool's report of the free
      b.host_ = owned_host_allocate(bytes, label);
    } else {
      b.view_ = View(Kokkos::view_alloc(Kokkos::WithoutInitializing, label), bytes);
    }
    b.size_ = bytes;
    return b;
  }

  /// When it holds fewer than `bytes`: frees it, then allocates `bytes` (so the peak is the new
  /// size, not the sum). True when it allocated. Throws as make(); the buffer is then empty.
  /// Nothing may still be using the old buffer.
  bool grow(std::size_t bytes, const std::string& label) {
    if (size_ >= bytes) return false;
    reset();
    *this = make(bytes, label);
    return true;
  }

 private:
  using View = Kokkos::View<unsigned char*, Mem>;
  unsigned char* host_ = nullptr;  // kHost
  std::size_t size_ = 0;
  std::string label_;  // kHost
  View view_;          // !kHost
};

/// A rows × cols column-major matrix of T in memory space `Mem`, held by an OwnedBytes (so that
/// its free allocates nothing on the host) and read through an unmanaged LayoutLeft View, for a
/// kernel's per-call matrices (the randomized SVD's). Move-only.
template <class T, class Mem>
struct OwnedMatrix {
  using View = Kokkos::View<T**, Kokkos::LayoutLeft, Mem, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
  OwnedBytes<Mem> bytes;
  View view;

  OwnedMatrix() = default;
  /// Uninitialised, labelled `label` (a memory_label()). Throws as OwnedBytes::make().
  OwnedMatrix(std::size_t rows, std::size_t cols, const std::string& label)
      : bytes(OwnedBytes<Mem>::make(rows * cols * sizeof(T), label)),
        view(reinterpret_cast<T*>(bytes.data()), rows, cols) {}
};

/// The host's access to `v`, a contiguous rank-2 LayoutLeft View: `v`'s own elements when the
/// host can read its memory (what Kokkos::create_mirror_view gives), else a copy in host memory
/// (an OwnedMatrix, or a buffer the caller keeps), filled from `v` when `fill`. load() and
/// store() copy from and to `v` (nothing to do when the view is `v` itself).
template <class V>
struct HostMatrix {
  using T = typename V::non_const_value_type;
  using View = typename OwnedMatrix<T, Kokkos::HostSpace>::View;
  static constexpr bool kAliases =
      Kokkos::SpaceAccessibility<Kokkos::HostSpace, typename V::memory_space>::accessible;
  OwnedMatrix<T, Kokkos::HostSpace> copy;  // empty when kAliases or given a buffer
  View view;

  HostMatrix(const V& v, bool fill) : HostMatrix(v, fill, nullptr) {}
  /// The copy in `buffer` when not null: host memory of at least extent(0)·extent(1)·sizeof(T)
  /// bytes, suitably aligned, that outlives this object (a Workspace's staging slot), so that
  /// nothing is allocated. Unused when kAliases.
  HostMatrix(const V& v, bool fill, unsigned char* buffer) {
    if constexpr (kAliases) {
      view = View(v.data(), v.extent(0), v.extent(1));
    } else {
      if (buffer != nullptr) {
        view = View(reinterpret_cast<T*>(buffer), v.extent(0), v.extent(1));
      } else {
        copy = OwnedMatrix<T, Kokkos::HostSpace>(v.extent(0), v.extent(1), memory_label("sch::host"));
        view = copy.view;
      }
      if (fill) load(v);
    }
  }
  void load(const V& v) const {
    if constexpr (!kAliases) Kokkos::deep_copy(view, v);
  }
  void store(const V& v) const {
    if constexpr (!kAliases) Kokkos::deep_copy(v, view);
  }
};

}  // namespace schatten::kokkos::detail
