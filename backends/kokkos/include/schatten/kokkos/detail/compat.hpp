// SPDX-License-Identifier: Apache-2.0
/// \file
/// The few Kokkos / Kokkos Kernels API differences between 3.4 (Debian) and 4.x, in one place
/// (../shared/docs/kokkos.md, "Writing code that compiles on Kokkos 3.4 and 4.x").
#pragma once

#include <KokkosBlas3_gemm.hpp>
#include <KokkosBlas3_trsm.hpp>
#include <Kokkos_Core.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <mutex>
#include <string>
#include <type_traits>
#include <utility>

#include "schatten/kokkos/detail/queue_scratch.hpp"
#include "schatten/kokkos/detail/vendor.hpp"

// Host GEMM, TRSM and SYRK: the Fortran BLAS that Kokkos Kernels' BLAS TPL links (OpenBLAS on
// Debian). Its prototypes are declared in backends/kokkos/src/host_blas.cpp only, so that no
// public header carries an extern "C" sgemm_ that could clash with a BLAS header of the user's.
#if defined(KOKKOSKERNELS_ENABLE_TPL_BLAS)
#define SCHATTEN_HAVE_HOST_BLAS 1
#endif

namespace schatten::kokkos::detail {

#if KOKKOS_VERSION >= 30700
namespace kmath = ::Kokkos;
#else
namespace kmath = ::Kokkos::Experimental;
#endif

/// The label a kernel launch hands to Kokkos: `name` while a Kokkos Tools library is loaded (the
/// profilers and tracers that read labels), an empty string otherwise. Kokkos takes labels as
/// std::string, and one longer than the small-string buffer (15 characters in libstdc++) costs a
/// heap allocation per launch: about 28 per polar() call, enough that a steady-state optimizer
/// step was never free of host allocations (docs/reliability.md "Heap exhaustion"). Without a
/// tool Kokkos reads no label, and an empty std::string allocates nothing.
inline std::string kernel_label(const char* name) {
  return Kokkos::Tools::profileLibraryLoaded() ? std::string(name) : std::string();
}

/// space.fence(), and Kokkos::fence() for every space (fence_all). Kokkos 4 names every fence
/// for its tools, and the default name is a std::string longer than the small-string buffer (a
/// heap allocation per fence, kernel_label above); ours is short. Kokkos 3.4's fences take no name.
template <class Exec>
void fence_on(const Exec& space) {
#if KOKKOS_VERSION >= 40000
  space.fence("schatten");
#else
  space.fence();
#endif
}
inline void fence_all() {
#if KOKKOS_VERSION >= 40000
  Kokkos::fence("schatten");
#else
  Kokkos::fence();
#endif
}

/// Launches that may run from several host threads at once. Kokkos 3.x keeps one process-wide
/// buffer per host backend for the partial results of reductions and scans and for team scratch
/// (Kokkos 3.4 Serial: Impl::serial_resize_thread_team_data / serial_get_thread_team_data), and
/// takes no lock around it: two threads that each launch such a kernel at once share it, and one
/// may grow (free) it under the other. Measured on Debian's Kokkos 3.4.01 Serial before these
/// existed: two threads running bf16 polar() on their own matrices and workspaces, 29 of 60
/// results differed from the same calls run alone (portable_gemm's team tiles), with status ok
/// (docs/reliability.md Finding 84). Kokkos 4 locks the execution-space instance around those
/// launches itself (SerialInternal / OpenMPInternal::m_instance_mutex).
///
/// So every top-level reduction (launch_reduce), team launch (launch_team_for) and Kokkos
/// Kernels call that may fall back to a team kernel goes through this lock on Kokkos 3: a
/// process-wide mutex, whose uncontended cost (tens of nanoseconds per launch) is far below a
/// launch's. Not for launches nested in a kernel (TeamThreadRange reductions): those run inside
/// the outer launch's lock. On Kokkos 4 the lock is empty (but see reduction_lock() for the
/// device backends).
#if KOKKOS_VERSION < 40000
inline std::mutex& kokkos3_shared_buffer_mutex() {
  static std::mutex m;  // inline function: one mutex per program (constant-initialised, no allocation)
  return m;
}
inline std::unique_lock<std::mutex> shared_buffer_lock() {
  return std::unique_lock<std::mutex>(kokkos3_shared_buffer_mutex());
}
#else
inline std::unique_lock<std::mutex> shared_buffer_lock() { return std::unique_lock<std::mutex>(); }
#endif

/// True for execution spaces that run on the host (Serial, OpenMP, Threads): the kernels pick
/// their host loop forms there.
template <class Exec>
constexpr bool runs_on_host = std::is_same<typename Exec::memory_space, Kokkos::HostSpace>::value;

#if KOKKOS_VERSION >= 40000
/// One mutex per device execution-space instance, for reduction_lock(). Never destroyed (a
/// reduction may run from a static destructor's Kokkos call); the slots hold only mutexes.
inline PerQueue<char>& device_instance_locks() {
  static PerQueue<char>& locks = *new PerQueue<char>();
  return locks;
}
#endif

/// The lock a top-level reduction on `policy`'s instance runs under. Kokkos 3: the process-wide
/// shared_buffer_lock(). Kokkos 4 host backends: none (they lock the instance themselves).
/// Kokkos 4 device backends (CUDA, HIP, SYCL): the instance's own mutex. Their reductions to a
/// host scalar run the kernel, which leaves the result in the instance's one scratch buffer
/// (CUDA: its unified scratch), then fence and read it on the host, with no lock between
/// (Kokkos 4.6.01, Cuda/Kokkos_Cuda_Parallel_Range.hpp, ParallelReduce::execute): a reduction
/// that another host thread enqueues on the same instance in between overwrites the result
/// before it is read (docs/reliability.md Finding 87). Threads on separate instances do not wait
/// for each other. Cost: one uncontended mutex per reduction, against a reduction's fence.
template <class Policy>
std::unique_lock<std::mutex> reduction_lock(const Policy& policy) {
#if KOKKOS_VERSION < 40000
  (void)policy;
  return shared_buffer_lock();
#else
  using Exec = typename Policy::execution_space;
  if constexpr (runs_on_host<Exec>) {
    (void)policy;
    return std::unique_lock<std::mutex>();
  } else {
    const void* key = policy.space().impl_internal_space_instance();  // shared by an instance's copies
    return std::unique_lock<std::mutex>(device_instance_locks().slot(key).mutex);
  }
#endif
}

/// Kokkos::parallel_reduce(label, policy, rest...) under reduction_lock(policy) (a top-level
/// reduction).
template <class Policy, class... Rest>
void launch_reduce(const std::string& label, const Policy& policy, Rest&&... rest) {
  const auto lock = reduction_lock(policy);
  Kokkos::parallel_reduce(label, policy, std::forward<Rest>(rest)...);
}

/// Kokkos::parallel_for(args...) of a TeamPolicy under shared_buffer_lock() (team scratch).
template <class... Args>
void launch_team_for(Args&&... args) {
  const auto lock = shared_buffer_lock();
  Kokkos::parallel_for(std::forward<Args>(args)...);
}

/// Kokkos::min/max are absent in 3.4.
template <class T>
KOKKOS_INLINE_FUNCTION constexpr T kmax(T a, T b) {
  return a < b ? b : a;
}
template <class T>
KOKKOS_INLINE_FUNCTION constexpr T kmin(T a, T b) {
  return b < a ? b : a;
}

/// |x| as double for a finite x, +infinity for NaN and +-Inf. A Max-reduction of this value is
/// the max-abs of a finite matrix and +infinity exactly when the matrix has a non-finite entry.
template <class T>
KOKKOS_INLINE_FUNCTION double abs_or_inf(T x) {
  const double d = static_cast<double>(x);
  // __builtin_huge_val(): +infinity in host and device code (numeric_limits is host-only
  // constexpr, which nvcc warns about in device code).
  return kmath::isfinite(d) ? kmath::fabs(d) : __builtin_huge_val();
}

/// The exponent s of the power of two by which a matrix of max-abs `amax` is pre-scaled,
/// A' = 2^−s·A, before its norm and load (the kernels then work in the units of A', and whatever
/// scales with A is multiplied back by 2^(s·degree)): 0 when amax ∈ [2^−511, 2^511], where
/// ‖A‖_F, ‖A‖_F² and ‖A‖_F^α (|α| ≤ 1) are normal doubles for any shape (so ordinary inputs see
/// no pre-scaling at all); else the exponent e of amax = f·2^e (f ∈ [½, 1)), clamped to
/// [−1022, 1022] so that 2^±s are normal doubles: max|a'| ∈ [2^−52, 4). 2^−s·a is exact unless
/// it is subnormal (an entry below 2^−1022 of the largest: rounding-level there).
inline int pre_scale_exponent(double amax) {
  if (amax == 0.0 || (amax >= 0x1p-511 && amax <= 0x1p511)) return 0;
  int e = 0;
  std::frexp(amax, &e);
  return std::min(std::max(e, -1022), 1022);
}

#if defined(SCHATTEN_HAVE_HOST_BLAS)
/// sgemm_ / dgemm_ (column-major, LP64), defined in backends/kokkos/src/host_blas.cpp.
void host_gemm(const char* trans_a, const char* trans_b, int m, int n, int k, float alpha, const float* a,
               int lda, const float* b, int ldb, float beta, float* c, int ldc);
void host_gemm(const char* trans_a, const char* trans_b, int m, int n, int k, double alpha, const double* a,
               int lda, const double* b, int ldb, double beta, double* c, int ldc);
/// strsm_ / dtrsm_ (column-major, LP64), defined in backends/kokkos/src/host_blas.cpp.
void host_trsm(const char* side, const char* uplo, const char* trans, const char* diag, int m, int n,
               float alpha, const float* a, int lda, float* b, int ldb);
void host_trsm(const char* side, const char* uplo, const char* trans, const char* diag, int m, int n,
               double alpha, const double* a, int lda, double* b, int ldb);
#endif

/// True when gemm() and trsm() below call the host BLAS themselves: float/double column-major
/// views (LayoutLeft, the kernels' working layout) in host memory. Other layouts go through
/// Kokkos Kernels.
template <class CV>
constexpr bool direct_host_blas() {
#if defined(SCHATTEN_HAVE_HOST_BLAS)
  using T = typename CV::non_const_value_type;
  return (std::is_same<T, float>::value || std::is_same<T, double>::value) &&
         std::is_same<typename CV::memory_space, Kokkos::HostSpace>::value &&
         std::is_same<typename CV::array_layout, Kokkos::LayoutLeft>::value;
#else
  return false;
#endif
}

/// True when gemm() and trsm() call cuBLAS through the vendor layer (vendor.hpp), with the
/// handle of `Exec`'s stream: float/double column-major views (LayoutLeft) on CUDA. Other
/// layouts go through Kokkos Kernels.
template <class Exec, class CV>
constexpr bool direct_cuda_blas() {
#if defined(SCHATTEN_HAVE_CUDA_BLAS)
  using T = typename CV::non_const_value_type;
  return std::is_same<Exec, Kokkos::Cuda>::value &&
         (std::is_same<T, float>::value || std::is_same<T, double>::value) &&
         std::is_same<typename CV::array_layout, Kokkos::LayoutLeft>::value;
#else
  return false;
#endif
}

/// C = alpha op(A) op(B) + beta C through KokkosBlas (so BLAS / cuBLAS / rocBLAS do the work),
/// or through the vendor layer for 16-bit storage (vendor.hpp: fp32 accumulation) and for
/// direct_cuda_blas (a cuBLAS handle per stream, so that host threads on separate streams do
/// not share one).
/// All three views must share one layout: mixed layouts fall back to a slow native kernel.
/// Kokkos Kernels 3.4 has no execution-space argument; 4.x enqueues on `space`.
/// Column-major in host memory (direct_host_blas) the host BLAS is called here, with the
/// arguments Kokkos Kernels' BLAS TPL would pass it, so the bits are the same; what is skipped is
/// Kokkos Kernels' profiling region, whose label is a heap allocation per call (kernel_label), and
/// its dispatch. An empty sum (k = 0) gives C = beta C, as BLAS defines it (Kokkos Kernels 3.4
/// leaves C as it is).
template <class Exec, class AV, class BV, class CV>
void gemm(const Exec& space, const char* trans_a, const char* trans_b,
          scalar_t<typename CV::non_const_value_type> alpha, const AV& a, const BV& b,
          scalar_t<typename CV::non_const_value_type> beta, const CV& c) {
  static_assert(std::is_same<typename AV::array_layout, typename CV::array_layout>::value &&
                    std::is_same<typename BV::array_layout, typename CV::array_layout>::value,
                "schatten: gemm operands must share one layout to reach BLAS");
  if constexpr (is_lowp<typename CV::non_const_value_type>) {
#if defined(SCHATTEN_HAVE_LOWP_GEMM)
    vendor::gemm(space, trans_a, trans_b, alpha, a, b, beta, c);
#else
    static_assert(!is_lowp<typename CV::non_const_value_type>,
                  "schatten: 16-bit GEMMs without a vendor GEMM go through portable_gemm (batched.hpp)");
#endif
  } else if constexpr (direct_cuda_blas<Exec, CV>()) {
#if defined(SCHATTEN_HAVE_CUDA_BLAS)
    vendor::gemm(space, trans_a, trans_b, alpha, a, b, beta, c);
#endif
  } else if constexpr (direct_host_blas<CV>()) {
#if defined(SCHATTEN_HAVE_HOST_BLAS)
    const bool ta = !(trans_a[0] == 'N' || trans_a[0] == 'n');
    const int m = static_cast<int>(c.extent(0)), n = static_cast<int>(c.extent(1));
    const int k = static_cast<int>(ta ? a.extent(0) : a.extent(1));
    if (m == 0 || n == 0) return;
    fence_on(space);  // earlier Kokkos work on an asynchronous host space must be done
    host_gemm(trans_a, trans_b, m, n, k, alpha, a.data(), leading_dim(a), b.data(), leading_dim(b), beta,
              c.data(), leading_dim(c));
#endif
  } else {
#if KOKKOS_VERSION >= 40000
    KokkosBlas::gemm(space, trans_a, trans_b, alpha, a, b, beta, c);
#else
    (void)space;
    const auto lock = shared_buffer_lock();  // Kokkos Kernels' own GEMM is a team kernel
    KokkosBlas::gemm(trans_a, trans_b, alpha, a, b, beta, c);
#endif
  }
}

/// Triangular solve with many right-hand sides through KokkosBlas (BLAS / cuBLAS trsm):
/// op(A) X = alpha B (side "L") or X op(A) = alpha B (side "R"); B is overwritten with X.
/// Column-major in host memory (direct_host_blas) the host BLAS is called here, with the
/// arguments Kokkos Kernels' BLAS TPL would pass it, as gemm() does and for the same reason;
/// column-major on CUDA (direct_cuda_blas) cuBLAS through the vendor layer, as gemm() does.
template <class Exec, class AV, class BV>
void trsm(const Exec& space, const char* side, const char* uplo, const char* trans, const char* diag,
          typename BV::const_value_type alpha, const AV& a, const BV& b) {
  static_assert(std::is_same<typename AV::array_layout, typename BV::array_layout>::value,
                "schatten: trsm operands must share one layout to reach BLAS");
#if defined(SCHATTEN_HAVE_HOST_BLAS)
  if constexpr (direct_host_blas<BV>()) {
    if (a.extent(0) == 0 || a.extent(1) == 0 || b.extent(0) == 0 || b.extent(1) == 0) return;
    fence_on(space);  // earlier Kokkos work on an asynchronous host space must be done
    const int m = static_cast<int>(b.extent(0)), n = static_cast<int>(b.extent(1));
    host_trsm(side, uplo, trans, diag, m, n, alpha, a.data(), leading_dim(a), b.data(), leading_dim(b));
    return;
  }
#endif
#if defined(SCHATTEN_HAVE_CUDA_BLAS)
  if constexpr (direct_cuda_blas<Exec, BV>()) {
    vendor::trsm(space, side, uplo, trans, diag, static_cast<int>(b.extent(0)), static_cast<int>(b.extent(1)),
                 alpha, a.data(), leading_dim(a), b.data(), leading_dim(b));
    return;
  }
#endif
#if KOKKOS_VERSION >= 40000
  KokkosBlas::trsm(space, side, uplo, trans, diag, alpha, a, b);
#else
  (void)space;
  const auto lock = shared_buffer_lock();  // Kokkos Kernels' own TRSM may launch team kernels
  KokkosBlas::trsm(side, uplo, trans, diag, alpha, a, b);
#endif
}

#if defined(SCHATTEN_HAVE_HOST_BLAS)
/// ssyrk_ / dsyrk_ (column-major, LP64), defined in backends/kokkos/src/host_blas.cpp.
void host_syrk(const char* uplo, const char* trans, int n, int k, float alpha, const float* a, int lda,
               float beta, float* c, int ldc);
void host_syrk(const char* uplo, const char* trans, int n, int k, double alpha, const double* a, int lda,
               double beta, double* c, int ldc);
#endif

/// True when syrk_lower() has a vendor SYRK for T in Exec: host BLAS for float/double in host
/// memory, cuBLAS for float/double on CUDA. 16-bit types and other device spaces (HIP, SYCL) have
/// none: their symmetric products stay GEMMs.
template <class Exec, class T>
constexpr bool has_syrk() {
  constexpr bool fp = std::is_same<T, float>::value || std::is_same<T, double>::value;
  if constexpr (!fp) {
    return false;
#if defined(SCHATTEN_HAVE_CUDA_SYRK)
  } else if constexpr (std::is_same<Exec, Kokkos::Cuda>::value) {
    return true;
#endif
  } else {
#if defined(SCHATTEN_HAVE_HOST_BLAS)
    return std::is_same<typename Exec::memory_space, Kokkos::HostSpace>::value;
#else
    return false;
#endif
  }
}

/// Lower triangle of C ← alpha op(A) op(A)ᵀ + beta C (trans "N": A Aᵀ, A is n × k; "T": Aᵀ A, A
/// is k × n): a vendor SYRK, half the flops of the GEMM. C's strict upper triangle is neither read
/// nor written. Only for has_syrk<Exec, T>(); column-major views (LayoutLeft).
template <class Exec, class AV, class CV>
void syrk_lower(const Exec& space, const char* trans, typename CV::non_const_value_type alpha, const AV& a,
                typename CV::non_const_value_type beta, const CV& c) {
  using T = typename CV::non_const_value_type;
  static_assert(has_syrk<Exec, T>(), "schatten: no vendor SYRK for this type and execution space");
  static_assert(std::is_same<typename AV::array_layout, Kokkos::LayoutLeft>::value &&
                    std::is_same<typename CV::array_layout, Kokkos::LayoutLeft>::value,
                "schatten: syrk operands must be column-major");
  const bool no_trans = trans[0] == 'N' || trans[0] == 'n';
  const int n = static_cast<int>(c.extent(0));
  const int k = static_cast<int>(no_trans ? a.extent(1) : a.extent(0));
  if (n == 0) return;
  const int lda = leading_dim(a), ldc = leading_dim(c);
#if defined(SCHATTEN_HAVE_CUDA_SYRK)
  if constexpr (std::is_same<Exec, Kokkos::Cuda>::value) {
    vendor::syrk_lower(space, no_trans, n, k, alpha, a.data(), lda, beta, c.data(), ldc);
    return;
  }
#endif
#if defined(SCHATTEN_HAVE_HOST_BLAS)
  if constexpr (std::is_same<typename Exec::memory_space, Kokkos::HostSpace>::value) {
    fence_on(space);  // earlier Kokkos work on an asynchronous host space must be done
    host_syrk("L", no_trans ? "N" : "T", n, k, alpha, a.data(), lda, beta, c.data(), ldc);
  }
#endif
  (void)space, (void)lda, (void)ldc, (void)k, (void)alpha, (void)beta;
}

}  // namespace schatten::kokkos::detail
