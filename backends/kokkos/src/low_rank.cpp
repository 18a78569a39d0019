// SPDX-License-Identifier: Apache-2.0
/// \file
/// low_rank_power_step() (kernels/low_rank.hpp) on the default execution space: GEMMs through
/// KokkosBlas on column-major views of the row-major arrays, the panel QR on the host
/// (host_qr.hpp), the checks and the column normalisation as Kokkos kernels.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <new>

#include "host_qr.hpp"
#include "plain_io.hpp"
#include "schatten/kernels/low_rank.hpp"
#include "schatten/kokkos/detail/compat.hpp"
#include "schatten/kokkos/detail/linalg.hpp"

namespace schatten {
namespace kokkos::detail {
namespace {

using Unmanaged = Kokkos::MemoryTraits<Kokkos::Unmanaged>;
/// Column-major float matrices of the default space: the row-major r × c arrays seen as their
/// c × r transposes (the same bytes), and the P and R panels carved from the workspace.
using Col = Kokkos::View<float**, Kokkos::LayoutLeft, DefaultMem, Unmanaged>;
using HostCol = Kokkos::View<float**, Kokkos::LayoutLeft, Kokkos::HostSpace, Unmanaged>;
using Range = Kokkos::RangePolicy<DefaultExec, Kokkos::IndexType<index_t>>;

/// k doubles of the default space (column norms, a diagonal) on their way to the host.
using Numbers = Kokkos::View<double*, DefaultMem, Unmanaged>;

/// `n` values of type T in the call's host scratch (HostScratch, below): nothing is allocated.
template <class T>
struct HostSpan {
  T* p = nullptr;
  std::size_t n = 0;
  std::size_t size() const { return n; }
  T& operator[](std::size_t i) const { return p[i]; }
  T* begin() const { return p; }
  T* end() const { return p + n; }
};

/// out ← the k doubles of `d` (out has d's extent).
void to_host(const Numbers& d, const HostSpan<double>& out) {
  Kokkos::deep_copy(Kokkos::View<double*, Kokkos::HostSpace, Unmanaged>(out.p, out.n), d);
}

/// A contiguous row-major r × c array as the column-major c × r view of the default space: in
/// place when the space can read it, else a device copy in a slot of the call's staging
/// (workspace_impl.hpp: kept by the workspace), read in when `read`, that commit() writes back.
/// The array is contiguous, so the copies need no host buffer.
class Operand {
 public:
  Operand(const MatrixRef<float>& a, bool read, Staging& staging) : ref_(a) {
    if (directly_accessible(a.memory)) {
      view_ = Col(a.data, a.cols, a.rows);
      return;
    }
    const std::size_t bytes = static_cast<std::size_t>(a.rows * a.cols) * sizeof(float);
    view_ = Col(reinterpret_cast<float*>(staging.take(bytes, 0).device.data()), a.cols, a.rows);
    staged_ = true;
    if (read) Kokkos::deep_copy(view_, HostCol(a.data, a.cols, a.rows));
  }
  const Col& view() const { return view_; }
  void commit() const {
    if (staged_) Kokkos::deep_copy(HostCol(ref_.data, ref_.cols, ref_.rows), view_);
  }

 private:
  MatrixRef<float> ref_;
  Col view_;
  bool staged_ = false;
};

/// ‖x_j‖₂ of column j, accumulated in double (one work item per column).
KOKKOS_INLINE_FUNCTION double column_norm(const Col& x, index_t j) {
  double s = 0.0;
  for (index_t i = 0; i < static_cast<index_t>(x.extent(0)); ++i)
    s += static_cast<double>(x(i, j)) * static_cast<double>(x(i, j));
  return kmath::sqrt(s);
}

/// out ← ‖x_j‖₂ of each column, in double, on the host (through `norms`, k doubles of the space).
void column_norms(const Col& x, const Numbers& norms, const HostSpan<double>& out) {
  Kokkos::parallel_for(
      kernel_label("schatten::low_rank::column_norms"), Range(0, static_cast<index_t>(x.extent(1))),
      KOKKOS_LAMBDA(index_t j) { norms(j) = column_norm(x, j); });
  to_host(norms, out);
}

/// Each column of x ← x_j / (‖x_j‖₂ + eps), the norm accumulated in double.
void normalise_columns(const Col& x, double eps) {
  const index_t n = static_cast<index_t>(x.extent(0));
  Kokkos::parallel_for(
      kernel_label("schatten::low_rank::normalise"), Range(0, static_cast<index_t>(x.extent(1))),
      KOKKOS_LAMBDA(index_t j) {
        const double f = 1.0 / (column_norm(x, j) + eps);
        for (index_t i = 0; i < n; ++i)
          x(i, j) = static_cast<float>(static_cast<double>(x(i, j)) * f);
      });
}

/// The batch's panels carved from a workspace (nothing is allocated per step; with a null base,
/// only their size): for each of the g members a block of L·k + k + 2 floats — its P, then its
/// record: [0] the replicas' carried norm, [1] the status of its QR, [2, k + 2) its kept columns
/// (the record travels with P when the QRs are split across replicas) —, then the g R panels
/// (S × k each, contiguous, averaged in one call), one k × k Gram, k doubles and, with replicas,
/// a backup of one P̄ (L × k). The QRs run one member at a time, so the Gram, the doubles and the
/// backup serve every member.
struct Panels {
  index_t l = 0, s = 0, k = 0, batch = 0;
  std::size_t block = 0;    ///< floats per member in the P region: L·k + k + 2
  float* p_base = nullptr;  ///< the P region, batch blocks
  float* r_base = nullptr;  ///< the R region, batch · S·k floats
  Col g, backup;
  Numbers numbers;
  std::size_t bytes = 0;
  Panels(unsigned char* base, index_t rows, index_t cols, index_t rank, index_t members, bool replicas)
      : l(std::max(rows, cols)), s(std::min(rows, cols)), k(rank), batch(members) {
    block = static_cast<std::size_t>(l * k + k + 2);
    Arena arena(base);
    p_base = arena.take<float>(block * static_cast<std::size_t>(batch));
    r_base = arena.take<float>(static_cast<std::size_t>(s * k * batch));
    float* gp = arena.take<float>(static_cast<std::size_t>(k * k));
    double* np = arena.take<double>(static_cast<std::size_t>(k));
    float* bp = replicas ? arena.take<float>(static_cast<std::size_t>(l * k)) : nullptr;
    bytes = arena.used();
    if (base != nullptr) {
      g = Col(gp, k, k);
      numbers = Numbers(np, k);
      if (replicas) backup = Col(bp, l, k);
    }
  }
  float* block_of(index_t b) const { return p_base + static_cast<std::size_t>(b) * block; }
  Col p(index_t b) const { return Col(block_of(b), l, k); }
  /// Member b's record (k + 2 floats of the default space).
  Kokkos::View<float*, DefaultMem, Unmanaged> record(index_t b) const {
    return Kokkos::View<float*, DefaultMem, Unmanaged>(block_of(b) + l * k, static_cast<std::size_t>(k + 2));
  }
  Col r(index_t b) const { return Col(r_base + static_cast<std::size_t>(b * s * k), s, k); }
  /// Floats of the R region.
  std::size_t r_count() const { return static_cast<std::size_t>(s * k * batch); }
};

/// True when the host reads the default space's memory: the collectives run in place, and the
/// call needs no host staging for them.
constexpr bool kHostReadsPanels = Kokkos::SpaceAccessibility<Kokkos::HostSpace, DefaultMem>::accessible;

/// Runs a replicas' collective `f(host_pointer)` on `count` floats at `data` (the default space's
/// memory): in place when the host can read that memory, else through `host` (the call's host
/// staging, HostScratch), 2·count floats over the bus.
template <class F>
Status on_host(float* data, std::size_t count, const HostSpan<float>& host, const F& f) {
  if constexpr (kHostReadsPanels) {
    fence_all();
    (void)host;
    return f(data);
  } else {
    if (host.size() < count) return Status::internal_error;  // HostScratch sizes it for the largest
    const Kokkos::View<float*, DefaultMem, Unmanaged> d(data, count);
    const Kokkos::View<float*, Kokkos::HostSpace, Unmanaged> h(host.p, count);
    Kokkos::deep_copy(h, d);
    const Status s = f(host.p);
    if (s == Status::ok) Kokkos::deep_copy(d, h);
    return s;
  }
}

/// max |G − I| over the lower triangle of a k × k Gram, in double.
double distance_from_identity(const Col& g) {
  const index_t k = static_cast<index_t>(g.extent(0));
  double worst = 0.0;
  launch_reduce(
      kernel_label("schatten::low_rank::orthogonality"), Range(0, k * k),
      KOKKOS_LAMBDA(index_t e, double& acc) {
        const index_t i = e % k, j = e / k;
        if (i >= j) acc = kmax(acc, abs_or_inf(static_cast<double>(g(i, j)) - (i == j ? 1.0 : 0.0)));
      },
      Kokkos::Max<double>(worst));
  return worst;
}

/// out ← the diagonal of a k × k matrix (a Gram or its Cholesky factor) on the host, in double
/// (through `d`, k doubles of the space).
void diagonal(const Col& l, const Numbers& d, const HostSpan<double>& out) {
  Kokkos::parallel_for(
      kernel_label("schatten::low_rank::diagonal"), Range(0, static_cast<index_t>(l.extent(0))),
      KOKKOS_LAMBDA(index_t j) { d(j) = static_cast<double>(l(j, j)); });
  to_host(d, out);
}

/// Cholesky QR2 of the L × k panel p in float, on the execution space: twice G = PᵀP,
/// G = L Lᵀ, P ← P L⁻ᵀ (Yamamoto et al. 2015). Orthonormal to O(k·u) when κ(P) ≲ u^{−1/2}; it is
/// accepted only when both Choleskys succeed, the first pass left P within 0.5 of orthonormal
/// (max |PᵀP − I| ≤ 0.5 before the second, so that κ ≤ √3 there), and every R_jj = L1_jj·L2_jj
/// exceeds `need[j]` (the caller's rounding floor times a margin: columns near it go to the
/// Householder QR, which decides them) plus the same margin on what the columns before it can
/// leak (orthonormalise_dropping's bound, Σ_i |R_ij|·floor_i/R_ii, taken at its Cauchy–Schwarz
/// maximum ‖p_j‖·(Σ_i (floor_i/R_ii)²)^½ since only diagonals come back). Then P equals the
/// Householder QR's Q (householder_dropping() makes R's diagonal positive too, and the thin QR with
/// a positive diagonal is unique) to rounding, so the carried Q does not depend on
/// LowRankStepOptions::cholesky_qr. Returns false otherwise, with P
/// garbage. Cost: two Grams (2·L·k² flops each), two triangular solves (L·k² each), two k × k
/// Choleskys; 3k doubles (into norms2, d1, d2: k each) and a scalar read back.
bool cholesky_qr2(const DefaultExec& space, const Col& p, const Col& g, const Numbers& scratch,
                  const HostSpan<double>& need, const HostSpan<double>& norms2, const HostSpan<double>& d1,
                  const HostSpan<double>& d2) {
  gram2(space, true, 1.0f, p, 0.0f, g);
  diagonal(g, scratch, norms2);  // ‖p_j‖²
  if (!cholesky_lower(space, g)) return false;
  diagonal(g, scratch, d1);
  x_times_inv_lt(space, true, 1.0f, g, p);
  gram2(space, true, 1.0f, p, 0.0f, g);
  if (!(distance_from_identity(g) <= 0.5) || !cholesky_lower(space, g)) return false;
  diagonal(g, scratch, d2);
  double leak2 = 0.0;  // Σ_{i<j} (need_i/R_ii)²: the margin times the kept columns' tilts, squared
  for (std::size_t j = 0; j < need.size(); ++j) {
    const double rjj = d1[j] * d2[j];
    if (!(rjj > need[j] + std::sqrt(norms2[j] * leak2))) return false;
    leak2 += (need[j] / rjj) * (need[j] / rjj);
  }
  x_times_inv_lt(space, true, 1.0f, g, p);
  return true;
}

/// A member of the batch: its operands (staged on a GPU build when in host memory) and where its
/// iteration stands.
struct Member {
  MatrixRef<float> m_ref;  ///< the caller's M (for LowRankStepOptions::store_momentum)
  Operand mo, qo, uo;
  double largest = 0.0;  ///< max |M_i|
  double norm = 0.0;     ///< ‖B‖_F: this process's, or (replicas) the mean of theirs
  double floor = 0.0;    ///< the rounding floor of P's columns (below), set at t = 0
  bool zero = false;     ///< every column dropped: U = 0, M and Q kept
  HostSpan<char> kept;   ///< per column of P: kept (1) or dropped (0) at the rounding floor
  Col x;                 ///< the right factor the iteration multiplies: Q, then R
  Member(const MatrixRef<float>& m, const MatrixRef<float>& q, const MatrixRef<float>& u,
         HostSpan<char> flags, Staging& staging)
      : m_ref(m), mo(m, true, staging), qo(q, true, staging), uo(u, false, staging), kept(flags) {}
};
static_assert(alignof(Member) <= alignof(std::max_align_t), "HostScratch carves Members from max_align_t");

/// The call's host scratch, carved from the workspace's host bytes (HostScalars::bytes; with a
/// null base, only its size, low_rank_host_bytes()), so that a call whose workspace holds it
/// allocates nothing on the host: the g members (constructed there by Members, below), their
/// kept-column flags (k each), what the QR of one member at a time needs (the columns' norms,
/// the Cholesky QR's needs and diagonals, the Householder QR's limits, reflector factors, tilts
/// and work: k doubles each; its L × k panel in double, and on a GPU build in float too), one
/// member's record (k + 2 floats), the replicas' block counts (split QRs, one per replica) and,
/// when the host cannot read the default space's memory and there are replicas, the staging of
/// their collectives (the largest: all P blocks, or all R panels).
struct HostScratch {
  Member* members = nullptr;
  char* flags = nullptr;  ///< g·k: member b's kept flags at b·k
  HostSpan<double> xn, need, limit, norms2, d1, d2, tau, tilt, work;
  HostSpan<double> panel;    ///< L·k: the Householder QR's panel
  HostSpan<float> panel_in;  ///< L·k on a GPU build: P on its way to and from `panel`
  HostSpan<float> rec, staging;
  HostSpan<std::size_t> counts;
  std::size_t bytes = 0;
  HostScratch(unsigned char* base, index_t rows, index_t cols, index_t rank, index_t batch,
              const Replicas& r) {
    const Panels sizes(nullptr, rows, cols, rank, batch, static_cast<bool>(r));
    const std::size_t g = static_cast<std::size_t>(batch), k = static_cast<std::size_t>(rank);
    const std::size_t lk = static_cast<std::size_t>(sizes.l) * k;
    Arena arena(base);
    members = arena.take<Member>(g);
    flags = arena.take<char>(g * k);
    for (HostSpan<double>* v : {&xn, &need, &limit, &norms2, &d1, &d2, &tau, &tilt, &work})
      *v = {arena.take<double>(k), k};
    panel = {arena.take<double>(lk), lk};
    if (!kHostReadsPanels) panel_in = {arena.take<float>(lk), lk};
    rec = {arena.take<float>(k + 2), k + 2};
    if (r.split())
      counts = {arena.take<std::size_t>(static_cast<std::size_t>(r.size)), static_cast<std::size_t>(r.size)};
    if (!kHostReadsPanels && r) {
      const std::size_t n = std::max(sizes.block * g, sizes.r_count());
      staging = {arena.take<float>(n), n};
    }
    bytes = arena.used();
  }
  HostSpan<char> kept_of(index_t b) const { return {flags + static_cast<std::size_t>(b) * xn.n, xn.n}; }
};

/// The batch's members, constructed in the host scratch and destroyed with the call (a
/// constructor that throws, staging on a GPU build, leaves the ones before it to the destructor).
class Members {
 public:
  explicit Members(Member* at) : at_(at) {}
  Members(const Members&) = delete;
  Members& operator=(const Members&) = delete;
  ~Members() {
    while (n_ > 0)
      at_[--n_].~Member();
  }
  void add(const MatrixRef<float>& m, const MatrixRef<float>& q, const MatrixRef<float>& u,
           HostSpan<char> kept, Staging& staging) {
    new (at_ + n_) Member(m, q, u, kept, staging);
    ++n_;
  }
  Member& operator[](std::size_t b) const { return at_[b]; }
  Member* begin() const { return at_; }
  Member* end() const { return at_ + n_; }

 private:
  Member* at_;
  std::size_t n_ = 0;
};

/// P ← the Q of householder_dropping() (host_qr.hpp: the thin Householder QR in double whose
/// columns at `h.limit` are dropped, `kept` updated), through the host scratch: P widened into
/// h.panel (on a GPU build through h.panel_in, L·k floats each way over the bus), and back.
void householder_on_host(const Col& p, const HostScratch& h, const HostSpan<char>& kept) {
  const std::size_t l = p.extent(0), k = p.extent(1), lk = l * k;
  float* in = p.data();  // contiguous: column j at j·L
  if constexpr (kHostReadsPanels) {
    fence_all();
  } else {
    Kokkos::deep_copy(HostCol(h.panel_in.p, l, k), p);
    in = h.panel_in.p;
  }
  for (std::size_t e = 0; e < lk; ++e)
    h.panel[e] = static_cast<double>(in[e]);
  householder_dropping(h.panel.p, static_cast<index_t>(l), static_cast<index_t>(k), h.limit.p, kept.p,
                       h.tau.p, h.tilt.p, h.work.p);
  for (std::size_t e = 0; e < lk; ++e)
    in[e] = static_cast<float>(h.panel[e]);
  if constexpr (!kHostReadsPanels) Kokkos::deep_copy(p, HostCol(h.panel_in.p, l, k));
}

/// A member's QR outcome that is not a Status: every M_i is zero (U = 0, M and Q kept).
constexpr int kZeroMember = -1;

/// The QR of member b's panel P (averaged over the replicas when there are some): at t = 0 with
/// replicas, the mean norm the average delivered first (NaN: some replica's M_i + G_i overflowed;
/// zero: every M_i is zero); then the check of P, the floor, and the QR (the header's orth() and
/// its columns at the rounding floor). Returns 0, kZeroMember or a failing Status's code.
int orthonormalise_member(const DefaultExec& space, const Panels& panels, const HostScratch& h, Member& mb,
                          index_t b, int t, const LowRankStepOptions& o, bool replicated, bool tall,
                          double elements) {
  const Col p = panels.p(b);
  const Col& mt = mb.mo.view();
  if (replicated && t == 0) {
    float mean = 0.0f;
    Kokkos::deep_copy(Kokkos::View<float, Kokkos::HostSpace, Unmanaged>(&mean),
                      Kokkos::subview(panels.record(b), 0));
    if (std::isnan(mean)) return static_cast<int>(Status::non_finite_input);
    mb.norm = double(mean) * std::sqrt(elements);
    if (mb.norm == 0.0) return kZeroMember;
  }
  if (!std::isfinite(max_abs(space, p))) return static_cast<int>(Status::out_of_range);  // ‖M‖ near FLT_MAX
  // The rounding floor of a column of P = fl(B X): 8·√S·u·‖B‖_F·‖x_j‖ (u = 2⁻²⁴; the header's
  // "Columns at the rounding floor" gives the measurements behind the factor 8).
  if (t == 0) mb.floor = 8.0 * std::sqrt(double(panels.s)) * 0x1p-24 * mb.norm;
  const HostSpan<double>&xn = h.xn, &need = h.need;
  column_norms(mb.x, panels.numbers, xn);
  for (std::size_t j = 0; j < need.size(); ++j)  // a margin of 100 over the floor (below)
    need[j] = mb.kept[j] ? 1e2 * mb.floor * xn[j] : HUGE_VAL;
  // Cholesky QR2 when every column is far above the floor (it keeps them all), else (or when it
  // is off) the Householder QR, from P again if the Cholesky QR spoilt it (recomputed, or with
  // replicas the averaged P̄ kept aside).
  if (replicated && o.cholesky_qr) Kokkos::deep_copy(space, panels.backup, p);
  if (!(o.cholesky_qr && cholesky_qr2(space, p, panels.g, panels.numbers, need, h.norms2, h.d1, h.d2))) {
    if (o.cholesky_qr && replicated)
      Kokkos::deep_copy(space, p, panels.backup);
    else if (o.cholesky_qr)
      gemm(space, tall ? "T" : "N", "N", 1.0f, mt, mb.x, 0.0f, p);
    // A column within rounding of the kept columns before it (its own floor, plus what their
    // rounding leaks into it) is dropped: p_j = 0, Q_j is kept, and the later columns are
    // orthogonalised against the kept ones only.
    for (std::size_t j = 0; j < h.limit.size(); ++j)
      h.limit[j] = mb.floor * xn[j];
    householder_on_host(p, h, mb.kept);
  }
  return 0;
}

/// U = 0 for a zero member, M and Q kept (the reference's fix_all_zero_or_nan), written.
void finish_zero_member(Member& mb) {
  Kokkos::deep_copy(mb.uo.view(), 0.0f);
  mb.uo.commit();
}

/// The error feedback, the new Q and U of a member whose iteration finished (its P̄ and R̄ final);
/// then its outputs written. With o.store_momentum, M′ is written (and handed to it) before U,
/// which may be written over it (u = m).
void finish_member(const DefaultExec& space, const Panels& panels, Member& mb, index_t b,
                   const LowRankStepOptions& o, bool tall) {
  const Col& mt = mb.mo.view();
  const Col& qv = mb.qo.view();
  const Col& ut = mb.uo.view();
  const Col p = panels.p(b), r = panels.r(b);
  const float gamma = static_cast<float>(o.feedback);
  if (gamma != 0.0f) {  // B ← B − γ P Rᵀ, i.e. Mᵀ ← Mᵀ − γ R Pᵀ (tall) or B = Mᵀ ← B − γ P Rᵀ (wide)
    if (tall)
      gemm(space, "N", "T", -gamma, r, p, 1.0f, mt);
    else
      gemm(space, "N", "T", -gamma, p, r, 1.0f, mt);
  }
  if (o.store_momentum) {
    fence_on(space);
    mb.mo.commit();
    o.store_momentum(b, mb.m_ref);
  }
  normalise_columns(r, o.eps);  // the new Q, but for the dropped columns (zero in P and R here)
  if (std::find(mb.kept.begin(), mb.kept.end(), char(0)) == mb.kept.end()) {
    Kokkos::deep_copy(space, qv, r);
  } else {
    for (index_t j = 0; j < panels.k; ++j)  // a dropped column keeps its Q_j, to be tried again next step
      if (mb.kept[static_cast<std::size_t>(j)])
        Kokkos::deep_copy(space, Kokkos::subview(qv, Kokkos::ALL, j), Kokkos::subview(r, Kokkos::ALL, j));
  }
  if (tall)  // U = P Qᵀ: Uᵀ = Q Pᵀ
    gemm(space, "N", "T", 1.0f, r, p, 0.0f, ut);
  else  // U = Q Pᵀ: Uᵀ = P Qᵀ
    gemm(space, "N", "T", 1.0f, p, r, 0.0f, ut);
  fence_on(space);
  if (!o.store_momentum) mb.mo.commit();
  mb.qo.commit();
  mb.uo.commit();
}

/// The first of the members that replica `rank` orthonormalises when the QRs are split: contiguous
/// runs, ⌊rank·g/n⌋ up to the next replica's first.
index_t first_member(int rank, index_t batch, int replicas) {
  return static_cast<index_t>(static_cast<long long>(rank) * batch / replicas);
}

/// The computation of a validated call (a named function: nvcc allows no device lambda inside
/// the lambda that status_guard takes). Every member has the same shape and rank.
Status low_rank_compute(const MatrixRef<float>* ms, const MatrixRef<float>* qs, const MatrixRef<float>* us,
                        index_t batch, const LowRankStepOptions& o, schatten::Workspace* workspace) {
  const index_t rows = ms[0].rows, cols = ms[0].cols, k = qs[0].rows;
  const bool tall = rows >= cols;  // B = M (else Mᵀ): the view mt = Mᵀ is Bᵀ when tall, B when wide
  const bool replicated = static_cast<bool>(o.replicas), split = o.replicas.split();
  const DefaultExec space;
  CallWorkspace cw(workspace);
  auto& ws = cw.get();
  ws.reserve(0, 1, HostScratch(nullptr, rows, cols, k, batch, o.replicas).bytes);  // (kept when held)
  const HostScratch h(ws.host_scalars().byte_data(), rows, cols, k, batch, o.replicas);
  Members members(h.members);
  for (index_t b = 0; b < batch; ++b)
    members.add(ms[b], qs[b], us[b], h.kept_of(b), *cw.staging());
  for (Member& mb : members) {
    mb.largest = max_abs(space, mb.mo.view());
    if (!std::isfinite(max_abs(space, mb.qo.view())))
      return Status::non_finite_input;  // the same on every replica
  }
  // One process refuses a non-finite M and drops a zero one here; replicas decide both after
  // the first average (the header's protocol: nobody returns alone).
  if (!replicated) {
    for (Member& mb : members) {
      if (!std::isfinite(mb.largest)) return Status::non_finite_input;
      mb.zero = mb.largest == 0.0;
    }
  }
  const auto all_zero = [&] {
    return std::all_of(members.begin(), members.end(), [](const Member& mb) { return mb.zero; });
  };
  const double elements = double(rows) * double(cols);
  const HostSpan<float>& host = h.staging;  // the collectives' staging on a GPU build
  if (!all_zero()) {
    ws.reserve(Panels(nullptr, rows, cols, k, batch, replicated).bytes);
    const Panels panels(ws.data(), rows, cols, k, batch, replicated);
    // With split QRs, replica r orthonormalises the members [first(r), first(r + 1)): the
    // averages of their panels are scattered to it, and its results gathered by all.
    const HostSpan<std::size_t>& counts = h.counts;  // (empty unless split)
    for (std::size_t r = 0; r < counts.size(); ++r)
      counts[r] = panels.block * static_cast<std::size_t>(first_member(int(r) + 1, batch, o.replicas.size) -
                                                          first_member(int(r), batch, o.replicas.size));
    const index_t own_first = split ? first_member(o.replicas.rank, batch, o.replicas.size) : 0;
    const index_t own_last = split ? first_member(o.replicas.rank + 1, batch, o.replicas.size) : batch;
    for (Member& mb : members) {
      mb.norm = std::isfinite(mb.largest) ? frobenius(space, mb.mo.view()) : NAN;
      std::fill(mb.kept.begin(), mb.kept.end(), char(1));
      mb.x = mb.qo.view();
    }
    for (int t = 0; t < o.power_iterations; ++t) {
      for (index_t b = 0; b < batch; ++b) {
        Member& mb = members[static_cast<std::size_t>(b)];
        if (mb.zero) continue;
        gemm(space, tall ? "T" : "N", "N", 1.0f, mb.mo.view(), mb.x, 0.0f, panels.p(b));  // P = B X
        // With replicas, ‖B_i‖_F travels in P's record, as an rms, which a finite M keeps within
        // float (NaN: M_i not finite).
        if (replicated && t == 0)
          Kokkos::deep_copy(space, Kokkos::subview(panels.record(b), 0),
                            static_cast<float>(mb.norm / std::sqrt(elements)));
      }
      if (replicated) {  // P̄ = mean(B_i X), and at t = 0 the mean of the ‖B_i‖_F behind it
        const std::size_t whole = panels.block * static_cast<std::size_t>(batch);
        // Unsplit: up to the last member's P (and its norm at t = 0): one P and one float for one member.
        const std::size_t count =
            whole - panels.block + static_cast<std::size_t>(panels.l * k) + (t == 0 ? 1 : 0);
        const Status s = split ? on_host(panels.p_base, whole, host,
                                         [&](float* d) { return o.replicas.average_scatter(d, counts.p); })
                               : on_host(panels.p_base, count, host,
                                         [&](float* d) { return o.replicas.average(d, count); });
        if (s != Status::ok) return s;
      }
      for (index_t b = own_first; b < own_last; ++b) {
        Member& mb = members[static_cast<std::size_t>(b)];
        if (mb.zero) continue;
        const int code = orthonormalise_member(space, panels, h, mb, b, t, o, replicated, tall, elements);
        if (!split) {  // every replica decided alike, on the same averages
          if (code > 0) return static_cast<Status>(code);
          mb.zero = code == kZeroMember;
          continue;
        }
        const HostSpan<float>& rec = h.rec;  // its record, for the others
        rec[1] = static_cast<float>(code);
        for (std::size_t j = 0; j < mb.kept.size(); ++j)
          rec[j + 2] = mb.kept[j] ? 1.0f : 0.0f;
        const auto tail = Kokkos::subview(panels.record(b), std::make_pair(1, int(k) + 2));
        Kokkos::deep_copy(
            space, tail, Kokkos::View<const float*, Kokkos::HostSpace, Unmanaged>(rec.p + 1, rec.size() - 1));
        fence_on(space);  // (rec is reused by the next member)
      }
      if (split) {  // every member's P̄ and record from its replica; then every replica decides alike
        const std::size_t whole = panels.block * static_cast<std::size_t>(batch);
        if (const Status s =
                on_host(panels.p_base, whole, host, [&](float* d) { return o.replicas.gather(d, counts.p); });
            s != Status::ok)
          return s;
        for (index_t b = 0; b < batch; ++b) {
          Member& mb = members[static_cast<std::size_t>(b)];
          if (mb.zero) continue;
          const HostSpan<float>& rec = h.rec;
          Kokkos::deep_copy(Kokkos::View<float*, Kokkos::HostSpace, Unmanaged>(rec.p, rec.size()),
                            panels.record(b));
          // A record the member's replica wrote holds 0, kZeroMember or a Status code; anything
          // else (a gather that did not bring it: the caller's collective at fault) would be
          // undefined as an int, so it is refused before the conversion.
          const float stored = rec[1];
          if (!(stored >= float(kZeroMember) && stored <= float(Status::internal_error) &&
                stored == std::floor(stored)))
            return Status::internal_error;
          const int code = static_cast<int>(stored);
          if (code > 0) return static_cast<Status>(code);  // the first failing member, on every replica
          mb.zero = code == kZeroMember;
          for (std::size_t j = 0; j < mb.kept.size(); ++j)
            mb.kept[j] = rec[j + 2] != 0.0f;
        }
      }
      if (all_zero()) break;  // every M̄ zero, on every replica: U = 0 (M and Q kept)
      for (index_t b = 0; b < batch; ++b) {
        const Member& mb = members[static_cast<std::size_t>(b)];
        if (mb.zero)  // (its R takes part in the average: zeros, unread)
          Kokkos::deep_copy(space, panels.r(b), 0.0f);
        else
          gemm(space, tall ? "N" : "T", "N", 1.0f, mb.mo.view(), panels.p(b), 0.0f, panels.r(b));  // R = Bᵀ P̄
      }
      if (replicated) {  // R̄ = mean(B_iᵀ P̄), every member's in one call
        const std::size_t count = panels.r_count();
        if (const Status s =
                on_host(panels.r_base, count, host, [&](float* d) { return o.replicas.average(d, count); });
            s != Status::ok)
          return s;
      }
      for (index_t b = 0; b < batch; ++b) {
        Member& mb = members[static_cast<std::size_t>(b)];
        if (mb.zero) continue;
        if (!std::isfinite(max_abs(space, panels.r(b)))) return Status::out_of_range;
        mb.x = panels.r(b);
      }
    }
    for (index_t b = 0; b < batch; ++b) {
      Member& mb = members[static_cast<std::size_t>(b)];
      if (mb.zero)
        finish_zero_member(mb);
      else
        finish_member(space, panels, mb, b, o, tall);
    }
    return Status::ok;
  }
  for (Member& mb : members)  // every member zero in one process: no panels
    finish_zero_member(mb);
  return Status::ok;
}

}  // namespace
}  // namespace kokkos::detail

std::size_t low_rank_workspace_bytes(index_t rows, index_t cols, index_t rank, bool replicas) {
  return low_rank_batch_workspace_bytes(rows, cols, rank, 1, replicas);
}

std::size_t low_rank_batch_workspace_bytes(index_t rows, index_t cols, index_t rank, index_t batch,
                                           bool replicas) {
  if (rows <= 0 || cols <= 0 || rank <= 0 || batch <= 0) return 0;
  return kokkos::detail::Panels(nullptr, rows, cols, rank, batch, replicas).bytes;
}

std::size_t low_rank_host_bytes(index_t rows, index_t cols, index_t rank, index_t batch,
                                const Replicas& replicas) {
  if (rows <= 0 || cols <= 0 || rank <= 0 || batch <= 0) return 0;
  return kokkos::detail::HostScratch(nullptr, rows, cols, rank, batch, replicas).bytes;
}

namespace {

/// The argument checks of one member (the header's "Arguments"), and its shape against the first's;
/// u may be m itself when `u_may_be_m` (LowRankStepOptions::store_momentum).
bool valid_member(const MatrixRef<float>& m, const MatrixRef<float>& q, const MatrixRef<float>& u,
                  const MatrixRef<float>& m0, const MatrixRef<float>& q0, bool u_may_be_m) {
  for (const MatrixRef<float>* a : {&m, &q, &u})
    if (kokkos::detail::check_plain(BatchedMatrixRef<float>(*a), true) != nullptr ||
        (a->rows > 0 && a->cols > 0 && (a->row_stride != a->cols || a->col_stride != 1)))
      return false;  // contiguous row-major only
  if (u.rows != m.rows || u.cols != m.cols || q.memory != m.memory || u.memory != m.memory) return false;
  if (m.rows != m0.rows || m.cols != m0.cols || q.rows != q0.rows || q.cols != q0.cols ||
      m.memory != m0.memory)
    return false;  // one shape and memory kind for the batch
  if (m.empty()) return true;
  const index_t s = std::min(m.rows, m.cols);
  if (q.cols != s || q.rows < 1 || q.rows > s) return false;
  // Contiguous: the library's aliasing rule (matrix_ref.hpp) on the three arrays, u = m exactly
  // the one alias allowed.
  using schatten::detail::check_aliasing;
  const BatchedMatrixRef<float> mb(m), qb(q), ub(u);
  return !check_aliasing(mb, qb, false) && !check_aliasing(mb, ub, u_may_be_m) &&
         !check_aliasing(qb, ub, false);
}

}  // namespace

Status low_rank_power_step_batch(const MatrixRef<float>* m, const MatrixRef<float>* q,
                                 const MatrixRef<float>* u, index_t batch, const LowRankStepOptions& o,
                                 Workspace* workspace) {
  schatten::detail::ensure_runtime();
  if (batch < 1 || m == nullptr || q == nullptr || u == nullptr) return Status::invalid_argument;
  for (index_t b = 0; b < batch; ++b)
    if (!valid_member(m[b], q[b], u[b], m[0], q[0], bool(o.store_momentum))) return Status::invalid_argument;
  if (!(o.power_iterations >= 1 && o.power_iterations <= 100) ||
      !(std::isfinite(o.feedback) && o.feedback >= 0.0 && o.feedback <= 1.0) ||
      !(std::isfinite(o.eps) && o.eps > 0.0))
    return Status::invalid_argument;
  const Replicas& r = o.replicas;
  if (r && (r.size < 1 || r.rank < 0 || r.rank >= r.size || bool(r.average_scatter) != bool(r.gather)))
    return Status::invalid_argument;
  if (m[0].empty()) return Status::ok;
  return kokkos::detail::status_guard(
      [&] { return kokkos::detail::low_rank_compute(m, q, u, batch, o, workspace); });
}

Status low_rank_power_step(MatrixRef<float> m, MatrixRef<float> q, MatrixRef<float> u,
                           const LowRankStepOptions& o, Workspace* workspace) {
  return low_rank_power_step_batch(&m, &q, &u, 1, o, workspace);
}

}  // namespace schatten
