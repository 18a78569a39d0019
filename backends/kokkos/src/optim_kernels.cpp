// SPDX-License-Identifier: Apache-2.0
/// \file
/// Device memory for FloatBuffer (core/buffer.hpp) and the element-wise optimizer kernels on
/// Kokkos::DefaultExecutionSpace (optim/rule.hpp `device_kernels`, transforms.hpp). Each kernel
/// calls the same inline formula as the host loop it replaces (TraceMomentum::step,
/// ScaleByAdam::step, SchattenPDirection::momentum_element, …, marked SCHATTEN_HOST_DEVICE),
/// element by element, so on Kokkos Serial the two give the same bits; on a GPU the compiler may fuse a
/// multiply and an add (rounding-level differences, docs/optim.md "Device-resident steps"). Reductions
/// accumulate in double, like the host loops, in the execution space's order (the host loops' order on Serial
/// only).
///
/// Every kernel is asynchronous on a GPU except the reductions that return their value to the
/// host (and so wait); flag_outside() reduces into device memory and does not wait; fence()
/// waits for everything queued. Compiled with -fno-math-errno
/// (CMakeLists.txt), like src/optim/kernels.cpp.
#include <Kokkos_Core.hpp>

#include <cfloat>
#include <cstdint>
#include <cstring>
#include <exception>
#include <string>

#include "plain_io.hpp"
#include "schatten/core/buffer.hpp"
#include "schatten/kokkos/detail/memory.hpp"
#include "schatten/optim/dion.hpp"
#include "schatten/optim/rule.hpp"
#include "schatten/optim/schatten_p.hpp"
#include "schatten/optim/step_size.hpp"
#include "schatten/optim/transforms.hpp"

namespace schatten {
namespace {
using kokkos::detail::kernel_label;
using kokkos::detail::launch_reduce;
using kokkos::detail::launch_team_for;
using Exec = Kokkos::DefaultExecutionSpace;
using DeviceMem = Exec::memory_space;
using Range = Kokkos::RangePolicy<Exec, Kokkos::IndexType<index_t>>;
template <class Mem>
using Bytes = Kokkos::View<unsigned char*, Mem, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
}  // namespace

namespace memory {

// Host memory (a CPU build's "device") from the C++ allocator, other spaces' from Kokkos: either
// way the free allocates nothing on the host (kokkos/detail/memory.hpp). A host allocation keeps
// its size in a header of kOwnedAlignment bytes (so the data stays aligned), for the free's report.
constexpr bool kDeviceIsHost = kokkos::detail::owned_on_host<DeviceMem>;
constexpr std::size_t kHostHeader = kokkos::detail::kOwnedAlignment;
constexpr char kBufferLabel[] = "sch::buffer";

void* allocate_device(std::size_t bytes) noexcept {
  if (bytes == 0) return nullptr;
  try {
    const std::string label = kokkos::detail::memory_label(kBufferLabel);
    if (kDeviceIsHost) {
      if (bytes > SIZE_MAX - kHostHeader) return nullptr;
      unsigned char* base = kokkos::detail::owned_host_allocate(bytes + kHostHeader, label);
      std::memcpy(base, &bytes, sizeof bytes);
      return base + kHostHeader;
    }
    return Kokkos::kokkos_malloc<DeviceMem>(label, bytes);
  } catch (...) {  // std::bad_alloc, or what Kokkos throws for a failed allocation
    return nullptr;
  }
}

void free_device(void* p) noexcept {
  if (p == nullptr) return;
  if (kDeviceIsHost) {
    unsigned char* base = static_cast<unsigned char*>(p) - kHostHeader;
    std::size_t bytes = 0;
    std::memcpy(&bytes, base, sizeof bytes);
    kokkos::detail::owned_host_free(base, bytes + kHostHeader, kokkos::detail::memory_label(kBufferLabel));
  } else {
    Kokkos::kokkos_free<DeviceMem>(p);
  }
}

void copy_bytes(void* dst, MemoryKind to, const void* src, MemoryKind from, std::size_t bytes) {
  if (bytes == 0) return;
  const bool dst_host = to == MemoryKind::host || host_readable(MemoryKind::device);
  const bool src_host = from == MemoryKind::host || host_readable(MemoryKind::device);
  if (dst_host && src_host) {
    // Device memory of a CPU build: kernels of an asynchronous host space may still use it.
    if (to == MemoryKind::device || from == MemoryKind::device) kokkos::detail::fence_all();
    std::memcpy(dst, src, bytes);
    return;
  }
  auto* d = static_cast<unsigned char*>(dst);
  auto* s = static_cast<unsigned char*>(const_cast<void*>(src));
  if (!dst_host && !src_host)  // ordered with the kernels of the default instance, not waited for
    Kokkos::deep_copy(Exec(), Bytes<DeviceMem>(d, bytes), Bytes<DeviceMem>(s, bytes));
  else if (dst_host)
    Kokkos::deep_copy(Bytes<Kokkos::HostSpace>(d, bytes), Bytes<DeviceMem>(s, bytes));
  else
    Kokkos::deep_copy(Bytes<DeviceMem>(d, bytes), Bytes<Kokkos::HostSpace>(s, bytes));
}

bool host_readable(MemoryKind kind) noexcept {
  return kind == MemoryKind::host || Kokkos::SpaceAccessibility<Kokkos::HostSpace, DeviceMem>::accessible;
}

bool kernels_access(MemoryKind kind) noexcept { return kokkos::detail::directly_accessible(kind); }

}  // namespace memory

namespace optim::device_kernels {

void fence() { kokkos::detail::fence_on(Exec()); }

void scale(float* x, index_t n, float f) {
  Kokkos::parallel_for(
      kernel_label("schatten::optim::scale"), Range(0, n), KOKKOS_LAMBDA(index_t k) { x[k] *= f; });
}

void add(float* p, const float* u, index_t n) {
  Kokkos::parallel_for(
      kernel_label("schatten::optim::apply_updates"), Range(0, n),
      KOKKOS_LAMBDA(index_t k) { p[k] += u[k]; });
}

void add_scaled(float* x, const float* w, index_t n, float l) {
  Kokkos::parallel_for(
      kernel_label("schatten::optim::add_scaled"), Range(0, n),
      KOKKOS_LAMBDA(index_t k) { x[k] += l * w[k]; });
}

void add_scaled_where_aligned(float* x, const float* w, index_t n, float l) {
  Kokkos::parallel_for(
      kernel_label("schatten::optim::add_scaled_where_aligned"), Range(0, n), KOKKOS_LAMBDA(index_t k) {
        if (x[k] * w[k] > 0.0f) x[k] += l * w[k];
      });
}

namespace {
/// The float whose bits are `limit_bits` (magnitude_bits, rule.hpp).
float float_of(std::uint32_t limit_bits) {
  float limit;
  std::memcpy(&limit, &limit_bits, sizeof limit);
  return limit;
}
/// True when every x[k] lies in [lo, hi], as two compares: false for NaN, like the host's tests
/// (rule.hpp). Waits for the answer. `label` names the kernel.
bool all_in(const char* label, const float* x, index_t n, float lo, float hi) {
  index_t bad = 0;
  launch_reduce(
      kernel_label(label), Range(0, n),
      KOKKOS_LAMBDA(index_t k, index_t & acc) { acc += (x[k] >= lo && x[k] <= hi) ? 0 : 1; }, bad);
  return bad == 0;
}
/// *flag ← 1 when some x[k] lies outside [lo, hi] (NaN included), else left as it is: an OR into
/// the flag. Only the elements outside write, and they all write 1 (atomically, so that the
/// writes do not race). Not waited for. `label` names the kernel.
void or_outside(const char* label, const float* x, index_t n, float lo, float hi, float* flag) {
  Kokkos::parallel_for(
      kernel_label(label), Range(0, n), KOKKOS_LAMBDA(index_t k) {
        if (!(x[k] >= lo && x[k] <= hi)) Kokkos::atomic_fetch_max(flag, 1.0f);
      });
}
}  // namespace

bool all_within(const float* x, index_t n, std::uint32_t limit_bits) {
  const float limit = float_of(limit_bits);
  return all_in("schatten::optim::all_within", x, n, -limit, limit);
}

bool all_within_non_negative(const float* x, index_t n, std::uint32_t limit_bits) {
  return all_in("schatten::optim::all_within_non_negative", x, n, 0.0f, float_of(limit_bits));
}

void flag_outside_non_negative(const float* x, index_t n, std::uint32_t limit_bits, float* flag) {
  or_outside("schatten::optim::flag_outside_non_negative", x, n, 0.0f, float_of(limit_bits), flag);
}

void flag_outside_or(const float* x, index_t n, std::uint32_t limit_bits, float* flag) {
  const float limit = float_of(limit_bits);
  or_outside("schatten::optim::flag_outside_or", x, n, -limit, limit, flag);
}

void flag_outside_bf16(const std::uint16_t* x, index_t n, std::uint32_t limit_bits, float* flag) {
  const Kokkos::View<float, DeviceMem, Kokkos::MemoryTraits<Kokkos::Unmanaged>> result(flag);
  launch_reduce(
      kernel_label("schatten::optim::flag_outside_bf16"), Range(0, n),
      KOKKOS_LAMBDA(index_t k, float& acc) {
        if (detail::bf16_beyond(x[k], limit_bits)) acc = 1.0f;
      },
      Kokkos::Max<float, DeviceMem>(result));
}

void flag_outside_bf16_or(const std::uint16_t* x, index_t n, std::uint32_t limit_bits, float* flag) {
  Kokkos::parallel_for(
      kernel_label("schatten::optim::flag_outside_bf16_or"), Range(0, n), KOKKOS_LAMBDA(index_t k) {
        if (detail::bf16_beyond(x[k], limit_bits)) Kokkos::atomic_fetch_max(flag, 1.0f);
      });
}

void widen_bf16(float* dst, const std::uint16_t* src, index_t n) {
  Kokkos::parallel_for(
      kernel_label("schatten::optim::widen_bf16"), Range(0, n),
      KOKKOS_LAMBDA(index_t k) { dst[k] = bf16_to_float(src[k]); });
}

bool all_within_bf16(const std::uint16_t* x, index_t n, std::uint32_t limit_bits) {
  index_t bad = 0;
  launch_reduce(
      kernel_label("schatten::optim::all_within_bf16"), Range(0, n),
      KOKKOS_LAMBDA(index_t k, index_t & acc) { acc += detail::bf16_beyond(x[k], limit_bits) ? 1 : 0; }, bad);
  return bad == 0;
}

void flag_outside(const float* x, index_t n, std::uint32_t limit_bits, float* flag) {
  const float limit = float_of(limit_bits);
  const Kokkos::View<float, DeviceMem, Kokkos::MemoryTraits<Kokkos::Unmanaged>> result(flag);
  launch_reduce(
      kernel_label("schatten::optim::flag_outside"), Range(0, n),
      KOKKOS_LAMBDA(index_t k, float& acc) {
        if (!(x[k] <= limit && x[k] >= -limit)) acc = 1.0f;
      },
      Kokkos::Max<float, DeviceMem>(result));
}

void flag_sum_outside(const float* p, const float* u, index_t n, float* flag) {
  constexpr float kMax = FLT_MAX;  // the largest finite float
  const Kokkos::View<float, DeviceMem, Kokkos::MemoryTraits<Kokkos::Unmanaged>> result(flag);
  launch_reduce(
      kernel_label("schatten::optim::flag_sum_outside"), Range(0, n),
      KOKKOS_LAMBDA(index_t k, float& acc) {
        const float s = p[k] + u[k];  // add()'s sum
        if (!(s <= kMax && s >= -kMax)) acc = 1.0f;
      },
      Kokkos::Max<float, DeviceMem>(result));
}

void copy(float* dst, const float* src, index_t n) {
  Kokkos::parallel_for(
      kernel_label("schatten::optim::copy"), Range(0, n), KOKKOS_LAMBDA(index_t k) { dst[k] = src[k]; });
}

void copy_rows(float* dst, index_t dst_ld, const float* src, index_t src_ld, index_t rows, index_t cols) {
  Kokkos::parallel_for(
      kernel_label("schatten::optim::copy_rows"), Range(0, rows * cols), KOKKOS_LAMBDA(index_t k) {
        const index_t i = k / cols, j = k - i * cols;
        dst[i * dst_ld + j] = src[i * src_ld + j];
      });
}

void scale_rows(float* x, index_t ld, index_t rows, index_t cols, float f) {
  Kokkos::parallel_for(
      kernel_label("schatten::optim::scale_rows"), Range(0, rows * cols), KOKKOS_LAMBDA(index_t k) {
        const index_t i = k / cols, j = k - i * cols;
        x[i * ld + j] *= f;
      });
}

void fill(float* x, index_t n, float value) {
  Kokkos::parallel_for(
      kernel_label("schatten::optim::fill"), Range(0, n), KOKKOS_LAMBDA(index_t k) { x[k] = value; });
}

double inner(const float* x, const float* a, const float* y, const float* b, index_t n) {
  double s = 0.0;
  launch_reduce(
      kernel_label("schatten::optim::inner"), Range(0, n),
      KOKKOS_LAMBDA(index_t k, double& acc) {
        acc += detail::difference_product(x[k], a ? a[k] : 0.0f, y[k], b ? b[k] : 0.0f);
      },
      s);
  return s;
}

namespace {
// One body per kernel for both storages of the momentum (float, bf16 patterns): M is float or
// std::uint16_t, read and written through TraceMomentum / ScaleByAdam's stored_step. H is how a
// bf16 element is stored: Bf16Nearest or Bf16Stochastic (with_store picks one per pass from the
// caller's Bf16Store; the float overloads take Bf16Nearest: float elements are not rounded).
template <class M, class H>
void momentum_pass(float* x, M* mu, index_t n, float beta, bool nesterov, bool ema, float cm, float cg,
                   H how) {
  const TraceMomentum::Form form = ema ? TraceMomentum::Form::ema : TraceMomentum::Form::sum;
  const TraceMomentum::Correction c{cm, cg};
  Kokkos::parallel_for(
      kernel_label("schatten::optim::trace_momentum"), Range(0, n), KOKKOS_LAMBDA(index_t k) {
        x[k] = TraceMomentum::stored_step(x[k], mu[k], beta, nesterov, form, c, how);
      });
}
template <class M, class H>
void adam_pass(float* x, M* m, float* v, index_t n, const detail::AdamWScalars& c, H how) {
  Kokkos::parallel_for(
      kernel_label("schatten::optim::scale_by_adam"), Range(0, n), KOKKOS_LAMBDA(index_t k) {
        x[k] = ScaleByAdam::stored_step(x[k], m[k], v[k], c.b1, c.w1, c.b2, c.w2, c.inv_c1, c.inv_sqrt_c2,
                                        c.eps, how);
      });
}
template <class M, class H>
void adamw_pass(float* x, M* m, float* v, const float* w, index_t n, const detail::AdamWScalars& c, H how) {
  Kokkos::parallel_for(
      kernel_label("schatten::optim::adamw_update"), Range(0, n),
      KOKKOS_LAMBDA(index_t k) { x[k] = detail::adamw_element(x[k], m[k], v[k], w[k], c, how); });
}
template <class M, class H>
void muadam_pass(float* x, M* m, float* v, float* d, index_t n, const detail::MuAdamScalars& c, H how) {
  Kokkos::parallel_for(
      kernel_label("schatten::optim::muadam_precondition"), Range(0, n), KOKKOS_LAMBDA(index_t k) {
        x[k] = MuAdamDirection::precondition_element(x[k], m[k], v[k], d[k], c, how);
      });
}
}  // namespace

void momentum(float* x, float* mu, index_t n, float beta, bool nesterov, bool ema, float cm, float cg,
              Bf16Store) {
  momentum_pass(x, mu, n, beta, nesterov, ema, cm, cg, Bf16Nearest{});
}
void momentum(float* x, std::uint16_t* mu, index_t n, float beta, bool nesterov, bool ema, float cm, float cg,
              Bf16Store how) {
  with_store(how, [&](auto h) { momentum_pass(x, mu, n, beta, nesterov, ema, cm, cg, h); });
}

void adam(float* x, float* m, float* v, index_t n, const detail::AdamWScalars& c) {
  adam_pass(x, m, v, n, c, Bf16Nearest{});
}
void adam(float* x, std::uint16_t* m, float* v, index_t n, const detail::AdamWScalars& c) {
  with_store(c.store, [&](auto h) { adam_pass(x, m, v, n, c, h); });
}

void adamw(float* x, float* m, float* v, const float* w, index_t n, const detail::AdamWScalars& c) {
  adamw_pass(x, m, v, w, n, c, Bf16Nearest{});
}
void adamw(float* x, std::uint16_t* m, float* v, const float* w, index_t n, const detail::AdamWScalars& c) {
  with_store(c.store, [&](auto h) { adamw_pass(x, m, v, w, n, c, h); });
}

void muadam_precondition(float* x, float* m, float* v, float* d, index_t n, const detail::MuAdamScalars& c) {
  muadam_pass(x, m, v, d, n, c, Bf16Nearest{});
}
void muadam_precondition(float* x, std::uint16_t* m, float* v, float* d, index_t n,
                         const detail::MuAdamScalars& c) {
  with_store(c.store, [&](auto h) { muadam_pass(x, m, v, d, n, c, h); });
}

void multiply(float* x, const float* d, index_t n) {
  Kokkos::parallel_for(
      kernel_label("schatten::optim::multiply"), Range(0, n), KOKKOS_LAMBDA(index_t k) { x[k] *= d[k]; });
}

void sign(float* x, index_t n) {
  Kokkos::parallel_for(
      kernel_label("schatten::optim::sign"), Range(0, n),
      KOKKOS_LAMBDA(index_t k) { x[k] = SignTransform::step(x[k]); });
}

namespace {
template <class M, class H>
void lion_pass(float* x, M* m, index_t n, float w1, float w2, H how) {
  Kokkos::parallel_for(
      kernel_label("schatten::optim::lion"), Range(0, n),
      KOKKOS_LAMBDA(index_t k) { x[k] = ScaleByLion::stored_step(x[k], m[k], w1, w2, how); });
}
}  // namespace

void lion(float* x, float* m, index_t n, float w1, float w2, Bf16Store) {
  lion_pass(x, m, n, w1, w2, Bf16Nearest{});
}
void lion(float* x, std::uint16_t* m, index_t n, float w1, float w2, Bf16Store how) {
  with_store(how, [&](auto h) { lion_pass(x, m, n, w1, w2, h); });
}

void second_moment(float* x, float* v, index_t n, float beta, float w, float eps) {
  Kokkos::parallel_for(
      kernel_label("schatten::optim::second_moment"), Range(0, n),
      KOKKOS_LAMBDA(index_t k) { x[k] = ScaleBySecondMoment::step(x[k], v[k], beta, w, eps); });
}

void neuron_moments(const float* x, float* nu, index_t rows, index_t cols, float w2, float eps,
                    bool hold_zero_rows, double& before, double& after) {
  // Two sums in one reduction: the real and imaginary parts of a complex sum (Kokkos' built-in
  // Sum reducer on Kokkos::complex exists in 3.4 and 4.x alike; a custom reducer's join
  // signature differs between them). Team t reduces row t over its threads; its first thread
  // updates the moment and contributes the row (on Serial, team size 1: the host loop's order).
  using Team = Kokkos::TeamPolicy<Exec, Kokkos::IndexType<index_t>>;
  Kokkos::complex<double> sums(0.0, 0.0);
  launch_reduce(
      kernel_label("schatten::optim::neuron_moments"), Team(rows, Kokkos::AUTO),
      KOKKOS_LAMBDA(const Team::member_type& t, Kokkos::complex<double>& acc) {
        const index_t i = t.league_rank();
        const float* xi = x + i * cols;
        double ss = 0.0;
        Kokkos::parallel_reduce(
            Kokkos::TeamThreadRange(t, cols),
            [&](index_t j, double& part) { part += double(xi[j]) * double(xi[j]); }, ss);
        if (t.team_rank() == 0) {
          const double r = NormalizeNeurons::update_moment(nu[i], ss, cols, w2, eps, hold_zero_rows);
          acc += Kokkos::complex<double>(ss, NormalizeNeurons::scaled_square(r, ss));
        }
      },
      sums);
  before = sums.real();
  after = sums.imag();
}

void scale_neurons(float* x, const float* nu, index_t rows, index_t cols, float eps, double g) {
  Kokkos::parallel_for(
      kernel_label("schatten::optim::scale_neurons"), Range(0, rows * cols),
      KOKKOS_LAMBDA(index_t k) { x[k] *= NormalizeNeurons::row_factor(nu[k / cols], eps, g); });
}

namespace {
template <class M, class H>
void smuon_momentum_pass(float* y, M* mu, const float* g, index_t n, const detail::SMuonScalars& c, H how) {
  Kokkos::parallel_for(
      kernel_label("schatten::optim::schatten_p_momentum"), Range(0, n),
      KOKKOS_LAMBDA(index_t k) { y[k] = SchattenPDirection::stored_momentum(g[k], mu[k], c, how); });
}
}  // namespace

void smuon_momentum(float* y, float* mu, const float* g, index_t n, const detail::SMuonScalars& c) {
  smuon_momentum_pass(y, mu, g, n, c, Bf16Nearest{});
}
void smuon_momentum(float* y, std::uint16_t* mu, const float* g, index_t n, const detail::SMuonScalars& c) {
  with_store(c.store, [&](auto h) { smuon_momentum_pass(y, mu, g, n, c, h); });
}

void smuon_moment(float* y, float* next_nu, float* precond, const float* nu, const float* g, index_t n,
                  const detail::SMuonScalars& c) {
  Kokkos::parallel_for(
      kernel_label("schatten::optim::schatten_p_moment"), Range(0, n), KOKKOS_LAMBDA(index_t k) {
        y[k] *= SchattenPDirection::moment_element(g[k], nu[k], next_nu[k], precond[k], c);
      });
}

void slice_norms(const float* x, index_t rows, index_t cols, bool along_rows, bool l2, float* norms) {
  // Team s sums slice s over its threads in double (on Serial, team size 1: the host loop's
  // order, rule.hpp slice_norms); its first thread stores the norm.
  using Team = Kokkos::TeamPolicy<Exec, Kokkos::IndexType<index_t>>;
  const index_t n = along_rows ? rows : cols, len = along_rows ? cols : rows;
  const index_t step = along_rows ? 1 : cols, stride = along_rows ? cols : 1;
  launch_team_for(
      kernel_label("schatten::optim::slice_norms"), Team(n, Kokkos::AUTO),
      KOKKOS_LAMBDA(const Team::member_type& t) {
        const index_t s = t.league_rank();
        const float* xs = x + s * stride;
        double sum = 0.0;
        Kokkos::parallel_reduce(
            Kokkos::TeamThreadRange(t, len),
            [&](index_t e, double& part) { part += detail::slice_term(xs[e * step], l2); }, sum);
        if (t.team_rank() == 0) norms[s] = detail::slice_norm(sum, l2);
      });
}

void namo_columns(float* x, const float* p, const float* a, const float* b, index_t rows, index_t cols) {
  Kokkos::parallel_for(
      kernel_label("schatten::optim::namo_columns"), Range(0, rows * cols), KOKKOS_LAMBDA(index_t k) {
        const index_t j = k % cols;
        x[k] = NamoDStep::combine(x[k], p[k], a[j], b[j]);
      });
}

namespace {
template <class M, class H>
void gather_pass(float* s, const float* from, M* m, index_t rows, index_t cols, bool along_rows,
                 const index_t* p, index_t k, float decay, H how) {
  const index_t len = along_rows ? cols : rows;
  Kokkos::parallel_for(
      kernel_label("schatten::optim::gather_slices"), Range(0, k * len), KOKKOS_LAMBDA(index_t e) {
        const index_t a = e / len, q = e - a * len;  // slice a of S, element q along it
        const index_t src = along_rows ? p[a] * cols + q : q * cols + p[a];
        s[along_rows ? a * cols + q : q * k + a] = Dion2Direction::take(from[src], m[src], decay, how);
      });
}
}  // namespace

void gather_slices(float* s, const float* from, float* m, index_t rows, index_t cols, bool along_rows,
                   const index_t* picks, index_t k, float decay, Bf16Store) {
  gather_pass(s, from, m, rows, cols, along_rows, picks, k, decay, Bf16Nearest{});
}
void gather_slices(float* s, const float* from, std::uint16_t* m, index_t rows, index_t cols, bool along_rows,
                   const index_t* picks, index_t k, float decay, Bf16Store how) {
  with_store(how, [&](auto h) { gather_pass(s, from, m, rows, cols, along_rows, picks, k, decay, h); });
}

void place_slices(float* u, const float* s, index_t rows, index_t cols, bool along_rows, const index_t* slot,
                  index_t k) {
  Kokkos::parallel_for(
      kernel_label("schatten::optim::place_slices"), Range(0, rows * cols), KOKKOS_LAMBDA(index_t e) {
        const index_t i = e / cols, j = e - i * cols;
        const index_t a = slot[along_rows ? i : j];
        u[e] = a < 0 ? 0.0f : (along_rows ? s[a * cols + j] : s[i * k + a]);
      });
}

}  // namespace optim::device_kernels
}  // namespace schatten
