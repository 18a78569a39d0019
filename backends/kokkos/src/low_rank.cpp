// SPDX-License-Identifier: Apache-2.0
/// \file
/// low_rank_power_step() (kernels/low_rank.hpp) on the default execution space: GEMMs through
/// KokkosBlas on column-major views of the row-major arrays, the panel QR on the host
/// (host_qr.hpp), the checks and the column normalisation as Kokkos kernels.
#include <algorithm>
#include <cmath>
#include <vector>

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
using Owned = Kokkos::View<float**, Kokkos::LayoutLeft, DefaultMem>;
using HostCol = Kokkos::View<float**, Kokkos::LayoutLeft, Kokkos::HostSpace, Unmanaged>;
using Range = Kokkos::RangePolicy<DefaultExec, Kokkos::IndexType<index_t>>;

/// k doubles of the default space (column norms, a diagonal) on their way to the host.
using Numbers = Kokkos::View<double*, DefaultMem, Unmanaged>;

/// The k doubles of `d` on the host.
std::vector<double> to_host(const Numbers& d) {
  std::vector<double> out(d.extent(0));
  Kokkos::deep_copy(Kokkos::View<double*, Kokkos::HostSpace, Unmanaged>(out.data(), out.size()), d);
  return out;
}

/// A contiguous row-major r × c array as the column-major c × r view of the default space: in
/// place when the space can read it, else a device copy (read in when `read`) that commit()
/// writes back.
class Operand {
 public:
  Operand(const MatrixRef<float>& a, bool read) : ref_(a) {
    if (directly_accessible(a.memory)) {
      view_ = Col(a.data, a.cols, a.rows);
      return;
    }
    owned_ =
        Owned(Kokkos::view_alloc(Kokkos::WithoutInitializing, "schatten::low_rank::staged"), a.cols, a.rows);
    view_ = Col(owned_.data(), a.cols, a.rows);
    if (read) Kokkos::deep_copy(owned_, HostCol(a.data, a.cols, a.rows));
  }
  const Col& view() const { return view_; }
  void commit() const {
    if (owned_.data() != nullptr) Kokkos::deep_copy(HostCol(ref_.data, ref_.cols, ref_.rows), owned_);
  }

 private:
  MatrixRef<float> ref_;
  Owned owned_;
  Col view_;
};

/// max |x| in double, +infinity when x holds NaN/Inf (a contiguous view).
double max_abs(const Col& x) {
  const index_t n0 = static_cast<index_t>(x.extent(0)), n = n0 * static_cast<index_t>(x.extent(1));
  double worst = 0.0;
  Kokkos::parallel_reduce(
      "schatten::low_rank::max_abs", Range(0, n),
      KOKKOS_LAMBDA(index_t k, double& acc) { acc = kmax(acc, abs_or_inf(x(k % n0, k / n0))); },
      Kokkos::Max<double>(worst));
  return worst;
}

/// ‖x_j‖₂ of column j, accumulated in double (one work item per column).
KOKKOS_INLINE_FUNCTION double column_norm(const Col& x, index_t j) {
  double s = 0.0;
  for (index_t i = 0; i < static_cast<index_t>(x.extent(0)); ++i)
    s += static_cast<double>(x(i, j)) * static_cast<double>(x(i, j));
  return kmath::sqrt(s);
}

/// ‖x_j‖₂ of each column, in double, on the host (through `norms`, k doubles of the space).
std::vector<double> column_norms(const Col& x, const Numbers& norms) {
  Kokkos::parallel_for(
      "schatten::low_rank::column_norms", Range(0, static_cast<index_t>(x.extent(1))),
      KOKKOS_LAMBDA(index_t j) { norms(j) = column_norm(x, j); });
  return to_host(norms);
}

/// Each column of x ← x_j / (‖x_j‖₂ + eps), the norm accumulated in double.
void normalise_columns(const Col& x, double eps) {
  const index_t n = static_cast<index_t>(x.extent(0));
  Kokkos::parallel_for(
      "schatten::low_rank::normalise", Range(0, static_cast<index_t>(x.extent(1))), KOKKOS_LAMBDA(index_t j) {
        const double f = 1.0 / (column_norm(x, j) + eps);
        for (index_t i = 0; i < n; ++i)
          x(i, j) = static_cast<float>(static_cast<double>(x(i, j)) * f);
      });
}

/// P (L × k, then one float: the replicas' carried norm), R (S × k), the Cholesky QR's Gram
/// (k × k), k doubles and, with replicas, a backup of P̄ (L × k) carved from a workspace (nothing
/// is allocated per step); with a null base, only their size.
struct Panels {
  Col p, r, g, backup;
  float* slot = nullptr;  ///< the float after P
  Numbers numbers;
  std::size_t bytes = 0;
  Panels(unsigned char* base, index_t rows, index_t cols, index_t k, bool replicas) {
    const index_t l = std::max(rows, cols), s = std::min(rows, cols);
    Arena arena(base);
    float* pp = arena.take<float>(static_cast<std::size_t>(l * k + 1));
    float* rp = arena.take<float>(static_cast<std::size_t>(s * k));
    float* gp = arena.take<float>(static_cast<std::size_t>(k * k));
    double* np = arena.take<double>(static_cast<std::size_t>(k));
    float* bp = replicas ? arena.take<float>(static_cast<std::size_t>(l * k)) : nullptr;
    bytes = arena.used();
    if (base != nullptr) {
      p = Col(pp, l, k);
      slot = pp + l * k;
      r = Col(rp, s, k);
      g = Col(gp, k, k);
      numbers = Numbers(np, k);
      if (replicas) backup = Col(bp, l, k);
    }
  }
};

/// The replicas' mean of the `count` floats at `data` (the default space's memory): in place
/// when the host can read that memory, else through a host copy (2·count floats over the bus).
Status replica_average(const ReplicaAverage& average, float* data, std::size_t count) {
  if constexpr (Kokkos::SpaceAccessibility<Kokkos::HostSpace, DefaultMem>::accessible) {
    Kokkos::fence();
    return average(data, count);
  } else {
    std::vector<float> host(count);
    const Kokkos::View<float*, DefaultMem, Unmanaged> d(data, count);
    const Kokkos::View<float*, Kokkos::HostSpace, Unmanaged> h(host.data(), count);
    Kokkos::deep_copy(h, d);
    const Status s = average(host.data(), count);
    if (s == Status::ok) Kokkos::deep_copy(d, h);
    return s;
  }
}

/// max |G − I| over the lower triangle of a k × k Gram, in double.
double distance_from_identity(const Col& g) {
  const index_t k = static_cast<index_t>(g.extent(0));
  double worst = 0.0;
  Kokkos::parallel_reduce(
      "schatten::low_rank::orthogonality", Range(0, k * k),
      KOKKOS_LAMBDA(index_t e, double& acc) {
        const index_t i = e % k, j = e / k;
        if (i >= j) acc = kmax(acc, abs_or_inf(static_cast<double>(g(i, j)) - (i == j ? 1.0 : 0.0)));
      },
      Kokkos::Max<double>(worst));
  return worst;
}

/// L's diagonal (k × k, lower) on the host, in double (through `d`, k doubles of the space).
std::vector<double> diagonal(const Col& l, const Numbers& d) {
  Kokkos::parallel_for(
      "schatten::low_rank::diagonal", Range(0, static_cast<index_t>(l.extent(0))),
      KOKKOS_LAMBDA(index_t j) { d(j) = static_cast<double>(l(j, j)); });
  return to_host(d);
}

/// Cholesky QR2 of the L × k panel p in float, on the execution space: twice G = PᵀP,
/// G = L Lᵀ, P ← P L⁻ᵀ (Yamamoto et al. 2015). Orthonormal to O(k·u) when κ(P) ≲ u^{−1/2}; it is
/// accepted only when both Choleskys succeed, the first pass left P within 0.5 of orthonormal
/// (max |PᵀP − I| ≤ 0.5 before the second, so that κ ≤ √3 there), and every R_jj = L1_jj·L2_jj
/// exceeds `need[j]` (the caller's rounding floor times a margin: columns near it go to the
/// Householder QR, which decides them). Then P equals the Householder QR's Q up to the signs of its
/// columns (the thin QR with a positive diagonal is unique), which Dion's products P Rᵀ and P Qᵀ do
/// not see. Returns false otherwise, with P garbage. Cost: two Grams (2·L·k² flops each), two
/// triangular solves (L·k² each), two k × k Choleskys; 2k doubles and a scalar read back.
bool cholesky_qr2(const DefaultExec& space, const Col& p, const Col& g, const Numbers& scratch,
                  const std::vector<double>& need) {
  gram2(space, true, 1.0f, p, 0.0f, g);
  if (!cholesky_lower(space, g)) return false;
  const std::vector<double> d1 = diagonal(g, scratch);
  x_times_inv_lt(space, true, 1.0f, g, p);
  gram2(space, true, 1.0f, p, 0.0f, g);
  if (!(distance_from_identity(g) <= 0.5) || !cholesky_lower(space, g)) return false;
  const std::vector<double> d2 = diagonal(g, scratch);
  for (std::size_t j = 0; j < need.size(); ++j)
    if (!(d1[j] * d2[j] > need[j])) return false;
  x_times_inv_lt(space, true, 1.0f, g, p);
  return true;
}

/// The computation of a validated call (a named function: nvcc allows no device lambda inside
/// the lambda that status_guard takes).
Status low_rank_compute(const MatrixRef<float>& m, const MatrixRef<float>& q, const MatrixRef<float>& u,
                        const LowRankStepOptions& o, schatten::Workspace* workspace) {
  const index_t rows = m.rows, cols = m.cols, k = q.rows;
  const bool tall = rows >= cols;  // B = M (else Mᵀ): the view mt = Mᵀ is Bᵀ when tall, B when wide
  Operand mo(m, true), qo(q, true), uo(u, false);
  const Col& mt = mo.view();  // c × r
  const Col& qv = qo.view();  // S × k: Q
  const Col& ut = uo.view();  // c × r: Uᵀ
  const bool replicated = static_cast<bool>(o.replicas);
  const auto zero_update = [&] {  // every column dropped (below): U = 0, M and Q kept
    Kokkos::deep_copy(ut, 0.0f);  // (the reference's fix_all_zero_or_nan)
    uo.commit();
    return Status::ok;
  };
  const double largest = max_abs(mt);
  if (!std::isfinite(max_abs(qv))) return Status::non_finite_input;  // Q: the same on every replica
  // One process refuses a non-finite M and returns U = 0 for a zero one here; replicas decide
  // both after the first average (the header's protocol: nobody returns alone).
  if (!replicated && !std::isfinite(largest)) return Status::non_finite_input;
  if (!replicated && largest == 0.0) return zero_update();
  CallWorkspace cw(workspace);
  auto& ws = cw.get();
  ws.reserve(Panels(nullptr, rows, cols, k, replicated).bytes);
  const Panels panels(ws.data(), rows, cols, k, replicated);
  const Col &p = panels.p, &r = panels.r;
  const DefaultExec space;
  const double elements = double(rows) * double(cols);
  // ‖B‖_F: this process's, or (replicas) the mean of theirs, which the first average delivers.
  double norm = std::isfinite(largest) ? frobenius(space, mt) : NAN;
  double floor = 0.0;
  std::vector<char> kept(static_cast<std::size_t>(k), 1);
  Col x = qv;  // the right factor the iteration multiplies
  for (int t = 0; t < o.power_iterations; ++t) {
    gemm(space, tall ? "T" : "N", "N", 1.0f, mt, x, 0.0f, p);  // P = B X
    if (replicated) {  // P̄ = mean(B_i X), and at t = 0 the mean of the ‖B_i‖_F behind it
      const std::size_t count = static_cast<std::size_t>(p.size()) + (t == 0 ? 1 : 0);
      if (t == 0) {  // carried as an rms, which a finite M keeps within float; NaN: M_i not finite
        const float rms = static_cast<float>(norm / std::sqrt(elements));
        Kokkos::deep_copy(space, Kokkos::View<float, DefaultMem, Unmanaged>(panels.slot), rms);
      }
      if (const Status s = replica_average(o.replicas, p.data(), count); s != Status::ok) return s;
      if (t == 0) {
        float mean = 0.0f;
        Kokkos::deep_copy(Kokkos::View<float, Kokkos::HostSpace, Unmanaged>(&mean),
                          Kokkos::View<float, DefaultMem, Unmanaged>(panels.slot));
        if (std::isnan(mean)) return Status::non_finite_input;  // some replica's M_i + G_i overflowed
        norm = double(mean) * std::sqrt(elements);
        if (norm == 0.0) return zero_update();  // every M_i is zero: on every replica
      }
    }
    if (!std::isfinite(max_abs(p))) return Status::out_of_range;  // beyond float: ‖M‖ near FLT_MAX
    // The rounding floor of a column of P = fl(B X): 8·√S·u·‖B‖_F·‖x_j‖ (u = 2⁻²⁴; the header's
    // "Columns at the rounding floor" gives the measurements behind the factor 8).
    if (t == 0) floor = 8.0 * std::sqrt(double(std::min(rows, cols))) * 0x1p-24 * norm;
    const std::vector<double> xn = column_norms(x, panels.numbers);
    std::vector<double> need(xn.size());
    for (std::size_t j = 0; j < need.size(); ++j)  // a margin of 100 over the floor (below)
      need[j] = kept[j] ? 1e2 * floor * xn[j] : HUGE_VAL;
    // Cholesky QR2 when every column is far above the floor (it keeps them all), else (or when
    // it is off) the Householder QR, from P again if the Cholesky QR spoilt it (recomputed, or
    // with replicas the averaged P̄ kept aside).
    if (replicated && o.cholesky_qr) Kokkos::deep_copy(space, panels.backup, p);
    if (!(o.cholesky_qr && cholesky_qr2(space, p, panels.g, panels.numbers, need))) {
      if (o.cholesky_qr && replicated)
        Kokkos::deep_copy(space, p, panels.backup);
      else if (o.cholesky_qr)
        gemm(space, tall ? "T" : "N", "N", 1.0f, mt, x, 0.0f, p);
      const std::vector<double> diag = orthonormalise(p);
      for (index_t j = 0; j < k; ++j) {
        const std::size_t jj = static_cast<std::size_t>(j);
        if (kept[jj] && diag[jj] > floor * xn[jj]) continue;
        kept[jj] = 0;  // within rounding of the columns before it: p_j = 0, and Q_j is kept
        Kokkos::deep_copy(space, Kokkos::subview(p, Kokkos::ALL, j), 0.0f);
      }
    }
    gemm(space, tall ? "N" : "T", "N", 1.0f, mt, p, 0.0f, r);  // R = Bᵀ P
    if (replicated)                                            // R̄ = mean(B_iᵀ P̄)
      if (const Status s = replica_average(o.replicas, r.data(), static_cast<std::size_t>(r.size()));
          s != Status::ok)
        return s;
    if (!std::isfinite(max_abs(r))) return Status::out_of_range;
    x = r;
  }
  const float gamma = static_cast<float>(o.feedback);
  if (gamma != 0.0f) {  // B ← B − γ P Rᵀ, i.e. Mᵀ ← Mᵀ − γ R Pᵀ (tall) or B = Mᵀ ← B − γ P Rᵀ (wide)
    if (tall)
      gemm(space, "N", "T", -gamma, r, p, 1.0f, mt);
    else
      gemm(space, "N", "T", -gamma, p, r, 1.0f, mt);
  }
  normalise_columns(r, o.eps);  // the new Q, but for the dropped columns (zero in P and R here)
  if (std::find(kept.begin(), kept.end(), 0) == kept.end()) {
    Kokkos::deep_copy(space, qv, r);
  } else {
    for (index_t j = 0; j < k; ++j)  // a dropped column keeps its Q_j, to be tried again next step
      if (kept[static_cast<std::size_t>(j)])
        Kokkos::deep_copy(space, Kokkos::subview(qv, Kokkos::ALL, j), Kokkos::subview(r, Kokkos::ALL, j));
  }
  if (tall)  // U = P Qᵀ: Uᵀ = Q Pᵀ
    gemm(space, "N", "T", 1.0f, r, p, 0.0f, ut);
  else  // U = Q Pᵀ: Uᵀ = P Qᵀ
    gemm(space, "N", "T", 1.0f, p, r, 0.0f, ut);
  space.fence();
  mo.commit();
  qo.commit();
  uo.commit();
  return Status::ok;
}

/// True when the n floats at a and the n floats at b share an address.
bool overlap(const float* a, index_t na, const float* b, index_t nb) {
  return na > 0 && nb > 0 && a < b + nb && b < a + na;
}

}  // namespace
}  // namespace kokkos::detail

std::size_t low_rank_workspace_bytes(index_t rows, index_t cols, index_t rank, bool replicas) {
  if (rows <= 0 || cols <= 0 || rank <= 0) return 0;
  return kokkos::detail::Panels(nullptr, rows, cols, rank, replicas).bytes;
}

Status low_rank_power_step(MatrixRef<float> m, MatrixRef<float> q, MatrixRef<float> u,
                           const LowRankStepOptions& o, Workspace* workspace) {
  using schatten::detail::check_layout;
  schatten::detail::ensure_runtime();
  for (const MatrixRef<float>* a : {&m, &q, &u})
    if (check_layout(BatchedMatrixRef<float>(*a), true) != nullptr ||
        (a->rows > 0 && a->cols > 0 && (a->row_stride != a->cols || a->col_stride != 1)))
      return Status::invalid_argument;  // contiguous row-major only
  if (u.rows != m.rows || u.cols != m.cols || q.memory != m.memory || u.memory != m.memory)
    return Status::invalid_argument;
  if (!(o.power_iterations >= 1 && o.power_iterations <= 100) ||
      !(std::isfinite(o.feedback) && o.feedback >= 0.0 && o.feedback <= 1.0) ||
      !(std::isfinite(o.eps) && o.eps > 0.0))
    return Status::invalid_argument;
  if (m.empty()) return Status::ok;
  const index_t s = std::min(m.rows, m.cols);
  if (q.cols != s || q.rows < 1 || q.rows > s) return Status::invalid_argument;
  const index_t nm = m.size(), nq = q.size(), nu = u.size();
  if (kokkos::detail::overlap(m.data, nm, q.data, nq) || kokkos::detail::overlap(m.data, nm, u.data, nu) ||
      kokkos::detail::overlap(q.data, nq, u.data, nu))
    return Status::invalid_argument;
  return kokkos::detail::status_guard(
      [&] { return kokkos::detail::low_rank_compute(m, q, u, o, workspace); });
}

}  // namespace schatten
