// SPDX-License-Identifier: Apache-2.0
/// \file
/// randomized_singular_values(), randomized_svd() and gram_accumulate() on the default execution
/// space (GEMMs) with host panels (Eigen).
#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <optional>
#include <vector>

#include "host_qr.hpp"
#include "plain_io.hpp"
#include "reference/dense_svd.hpp"
#include "schatten/core/random.hpp"
#include "schatten/kernels/gram.hpp"
#include "schatten/kernels/randomized_svd.hpp"
#include "schatten/kokkos/detail/batched.hpp"
#include "schatten/kokkos/detail/compat.hpp"
#include "schatten/kokkos/detail/linalg.hpp"
#include "schatten/kokkos/detail/memory.hpp"

namespace schatten {
namespace kokkos::detail {
namespace {

/// The call's dense matrices: column-major in the default space's memory, held by OwnedBytes, so
/// that freeing them allocates nothing on the host (memory.hpp).
template <class T>
using DenseMatrix = OwnedMatrix<T, DefaultMem>;
template <class T>
using Dense = typename DenseMatrix<T>::View;

/// Aᵀ (cols × rows) as a dense column-major matrix on the device — the layout KokkosBlas hands
/// to BLAS, and for a row-major A the same element order, so the copy streams (a column-major
/// copy of a row-major A reads it with stride `cols`: half the time of the whole call at 3072²).
/// `out` is n × m. False when A holds NaN/Inf; else `*amax` (when given) ← max |a_ij|.
template <class T>
bool load_transposed(const Strided3<const T, DefaultMem>& in, const Dense<T>& out, double* amax = nullptr) {
  const auto m = static_cast<index_t>(in.extent(1)), n = static_cast<index_t>(in.extent(2));
  double bad = 0.0;
  launch_reduce(
      kernel_label("schatten::dense::load"),
      Kokkos::RangePolicy<DefaultExec, Kokkos::IndexType<index_t>>(0, m * n),
      KOKKOS_LAMBDA(index_t idx, double& acc) {
        const index_t j = idx % n, i = idx / n;
        const T v = in(0, i, j);
        out(j, i) = v;
        acc = kmax(acc, abs_or_inf(v));
      },
      Kokkos::Max<double>(bad));
  if (amax) *amax = bad;
  return std::isfinite(bad);
}

/// Aᵀ (cols × rows, column-major) for the GEMMs, from A as the execution space reads it (`in`,
/// one matrix). A contiguous row-major A, or its packed staging copy on a GPU build, is that
/// matrix already and is read in place: no copy, no allocation. Other strides are copied
/// (load_transposed, which also looks for NaN/Inf) into the device side of the call's next
/// `staging` slot, which a Workspace keeps from call to call. In place, NaN/Inf are looked for
/// only when `check_in_place` (one read of A, linalg.hpp's max_abs; a caller whose result
/// exposes them anyway skips it). Returns an empty view when NaN/Inf were found. With
/// `check_in_place`, `*amax` (when given) receives max |a_ij| of a finite A. The view does
/// not own its memory: `in`'s storage and `staging` must outlive it. (const_cast: the callers'
/// GEMMs only read it.)
template <class T>
Dense<T> transposed_operand(const Strided3<const T, DefaultMem>& in, Staging& staging, bool check_in_place,
                            double* amax = nullptr) {
  const auto m = static_cast<index_t>(in.extent(1)), n = static_cast<index_t>(in.extent(2));
  if (in.stride_2() == 1 && in.stride_1() == static_cast<std::size_t>(n)) {
    const Dense<T> at(const_cast<T*>(in.data()), n, m);
    if (check_in_place) {
      const double largest = max_abs(DefaultExec(), at);
      if (!std::isfinite(largest)) return Dense<T>();
      if (amax) *amax = largest;
    }
    return at;
  }
  Staging::Slot& slot = staging.take(static_cast<std::size_t>(m * n) * sizeof(T), 0);
  const Dense<T> at(reinterpret_cast<T*>(slot.device.data()), n, m);
  if (!load_transposed(in, at, amax)) return Dense<T>();
  return at;
}

/// A' = 2^−e·Aᵀ (n × m, column-major) for e ≠ 0: into `at` itself when it is the call's own copy
/// (`owned`), else into the call's next `staging` slot (A in place is the caller's memory). The
/// factor is an exact power of two (entries below 2^−1074·2^e, ≤ 2^−1585·max|a|, flush to zero).
template <class T>
Dense<T> pre_scaled(const Dense<T>& at, bool owned, Staging& staging, int e) {
  const index_t n = static_cast<index_t>(at.extent(0)), m = static_cast<index_t>(at.extent(1));
  Dense<T> out = at;
  if (!owned)
    out = Dense<T>(
        reinterpret_cast<T*>(staging.take(static_cast<std::size_t>(m * n) * sizeof(T), 0).device.data()), n,
        m);
  const T unit = static_cast<T>(std::ldexp(1.0, -e));
  Kokkos::parallel_for(
      kernel_label("schatten::dense::pre_scale"),
      Kokkos::RangePolicy<DefaultExec, Kokkos::IndexType<index_t>>(0, m * n), KOKKOS_LAMBDA(index_t idx) {
        const index_t i = idx % n, j = idx / n;
        out(i, j) = unit * at(i, j);
      });
  return out;
}

/// The computation of a validated call: the range finder, then the SVD of B = Qᵀ A on the host.
/// With `vectors`, also U = Q U_B (rows × rank) and V (cols × rank), column-major, in `out`. A
/// named function: nvcc does not allow device lambdas inside lambdas (status_guard takes one).
/// Every product is of A' = 2^−s·A (pre_scale_exponent(), s = 0 unless max|a| lies outside
/// [2^−511, 2^511], so always for float): the host QRs and the SVD square their panels' entries,
/// which overflow beyond ~1e154 and underflow below ~1e-154 in double. A' is a scaled copy
/// (pre_scaled()), not the GEMMs' alpha: BLAS may apply alpha after forming A·Ω (OpenBLAS does),
/// which overflowed for entries near DBL_MAX (1e308: σ came back as 0.02 with ok). Q, U and V do
/// not depend on the scale; σ = 2^s·σ(A'), out_of_range when beyond DBL_MAX.
template <class T>
Status randomized_compute(const MatrixRef<const T>& a, LowRankSvd& out, const RandomizedSvdOptions& o,
                          index_t l, bool vectors) {
  const index_t m = a.rows, n = a.cols;
  Staging staging;  // A's staging copy on a GPU build, Aᵀ's copy for strided A
  DeviceIO<T> io{BatchedMatrixRef<const T>(a), &staging};
  double amax = 0.0;
  const Dense<T> a_t = transposed_operand(io.input(), staging, true, &amax);  // Aᵀ, n × m
  if (a_t.data() == nullptr) return Status::non_finite_input;
  const int e = pre_scale_exponent(amax);
  // A'ᵀ = 2^−e·Aᵀ, the GEMMs' operand.
  const Dense<T> at = e == 0 ? a_t : pre_scaled<T>(a_t, a_t.data() != io.input().data(), staging, e);
  // Ω from the library's RNG on the host.
  const DenseMatrix<T> omega_owner(n, l, memory_label("sch::Om"));
  const Dense<T> omega = omega_owner.view;
  {
    HostMatrix<Dense<T>> h(omega, false);
    Rng rng(o.seed);
    for (index_t j = 0; j < l; ++j)
      for (index_t i = 0; i < n; ++i)
        h.view(i, j) = static_cast<T>(rng.normal());
    h.store(omega);
  }
  const DenseMatrix<T> y_owner(m, l, memory_label("sch::Y"));
  const Dense<T> y = y_owner.view;
  const DefaultExec space;
  gemm(space, "T", "N", T(1), at, omega, T(0), y);  // Y = A' Ω
  for (int q = 0; q < o.power_iterations; ++q) {
    orthonormalise(y);
    gemm(space, "N", "N", T(1), at, y, T(0), omega);  // Z = A'ᵀ Y (n × l, reusing Ω)
    orthonormalise(omega);
    gemm(space, "T", "N", T(1), at, omega, T(0), y);  // Y = A' Z
  }
  orthonormalise(y);                                // Q
  gemm(space, "N", "N", T(1), at, y, T(0), omega);  // Bᵀ = A'ᵀ Q (n × l, reusing Ω)
  const HostMatrix<Dense<T>> hb(omega, true);
  Eigen::MatrixXd bm(l, n);
  for (index_t i = 0; i < l; ++i)
    for (index_t j = 0; j < n; ++j)
      bm(i, j) = static_cast<double>(hb.view(j, i));
  const schatten::detail::DenseSvd svd = schatten::detail::dense_svd(bm, vectors);
  const Eigen::VectorXd& s = svd.sigma;
  const index_t k = o.rank;
  LowRankSvd r;
  r.rows = m;
  r.cols = n;
  r.rank = k;
  r.sigma.assign(s.data(), s.data() + k);
  for (double& x : r.sigma) {  // σ(A) = 2^s·σ(A')
    x = std::ldexp(x, e);
    if (!std::isfinite(x)) return Status::out_of_range;  // (out untouched)
  }
  if (vectors) {
    const HostMatrix<Dense<T>> hq(y, true);
    Eigen::MatrixXd q(m, l);
    for (index_t j = 0; j < l; ++j)
      for (index_t i = 0; i < m; ++i)
        q(i, j) = static_cast<double>(hq.view(i, j));
    const Eigen::MatrixXd u = q * svd.u.leftCols(k);  // m × k
    const Eigen::MatrixXd v = svd.v.leftCols(k);      // n × k
    r.u.assign(u.data(), u.data() + m * k);
    r.v.assign(v.data(), v.data() + n * k);
  }
  out = std::move(r);
  return Status::ok;
}

template <class T>
Status randomized_svd_impl(const MatrixRef<const T>& a, LowRankSvd& out, const RandomizedSvdOptions& o,
                           bool vectors) {
  schatten::detail::ensure_runtime();
  if (check_plain(BatchedMatrixRef<const T>(a), false)) return Status::invalid_argument;
  const index_t m = a.rows, n = a.cols, k = std::min(m, n);
  if (o.rank < 1 || o.rank > k || o.oversampling < 0 || o.power_iterations < 0 || o.power_iterations > 50)
    return Status::invalid_argument;
  const index_t l = o.rank + std::min(o.oversampling, k - o.rank);  // min(rank + p, k), no overflow
  return status_guard([&] { return randomized_compute<T>(a, out, o, l, vectors); });
}

template <class T>
Status randomized_sv(const MatrixRef<const T>& a, std::vector<double>& sigma, const RandomizedSvdOptions& o) {
  LowRankSvd r;
  const Status s = randomized_svd_impl(a, r, o, false);
  if (s == Status::ok) sigma = std::move(r.sigma);
  return s;
}

/// gram += xᵀ x on the default execution space (a named function: see above): the symmetric
/// product of batched.hpp (the lower triangle by a vendor SYRK, or GEMM row panels where they
/// pay, about half a GEMM's flops; then the upper triangle copied from it, so the result is
/// exactly symmetric) into a copy of gram, which is written back only when every entry is
/// finite. A gram in device memory (contiguous row-major, checked by the caller) stays there.
Status gram_compute(const MatrixRef<const float>& x, const MatrixRef<float>& gram,
                    schatten::Workspace* workspace) {
  const index_t d = x.cols, tokens = x.rows;
  // G's memory and the staging slots (x's packed copy on a GPU build, xᵀ's copy for a strided x,
  // the host image of a strided Gram on a GPU build): with a Workspace kept by the caller, no
  // allocation after the first call of a size.
  CallWorkspace cw(workspace);
  // xᵀ as a d × tokens column-major matrix. A contiguous row-major x (or its packed staging copy
  // on a GPU build) is that matrix already and is read in place; another layout is copied
  // (load_transposed, which also refuses NaN/Inf). In place, a NaN or Inf in x needs no pass of
  // its own: x_ij reaches G_jj = Σ_i x_ij² (every product is formed, by SYRK or by GEMM), which
  // the check of G below reads, so the status is non_finite_input either way.
  DeviceIO<float> io{BatchedMatrixRef<const float>(x), cw.staging()};
  const Dense<float> xt = transposed_operand(io.input(), *cw.staging(), false);
  if (xt.data() == nullptr) return Status::non_finite_input;
  // G = gram + xᵀx is formed in the workspace and written to gram only when finite.
  auto& ws = cw.get();
  ws.reserve(static_cast<std::size_t>(d * d) * sizeof(float));
  const Dense<float> g(reinterpret_cast<float*>(ws.data()), d, d);
  // A contiguous gram (host or device) is copied flat, as it is: a symmetric matrix reads the
  // same row-major and column-major. Strided host grams go element by element.
  using Unmanaged = Kokkos::MemoryTraits<Kokkos::Unmanaged>;
  using Flat = Kokkos::View<float*, DefaultMem, Unmanaged>;
  using HostFlat = Kokkos::View<float*, Kokkos::HostSpace, Unmanaged>;
  const bool device = gram.memory == MemoryKind::device;
  const bool flat = gram.row_stride == d && gram.col_stride == 1;
  std::optional<HostMatrix<Dense<float>>> hg;  // strided grams only
  if (device) {
    Kokkos::deep_copy(Flat(g.data(), d * d), Flat(gram.data, d * d));
  } else if (flat) {
    Kokkos::deep_copy(Flat(g.data(), d * d), HostFlat(gram.data, d * d));
  } else {
    // The host's image of G: G itself where the host reads it, else a staging slot's host side.
    unsigned char* image = nullptr;
    if (!HostMatrix<Dense<float>>::kAliases)
      image = cw.staging()->take(0, static_cast<std::size_t>(d * d) * sizeof(float)).host.data();
    hg.emplace(g, false, image);
    for (index_t j = 0; j < d; ++j)
      for (index_t i = 0; i < d; ++i)
        hg->view(i, j) = gram(i, j);
    hg->store(g);
  }
  batched_sym_product(DefaultExec(), true, "N", 1.0f, Mat3<float, DefaultMem>(xt.data(), d, tokens, 1), 1.0f,
                      Mat3<float, DefaultMem>(g.data(), d, d, 1));
  // NaN/Inf in x, or an overflow: non_finite_input, gram unchanged.
  if (!std::isfinite(max_abs(DefaultExec(), g))) return Status::non_finite_input;
  if (device) {
    Kokkos::deep_copy(Flat(gram.data, d * d), Flat(g.data(), d * d));
  } else if (flat) {
    Kokkos::deep_copy(HostFlat(gram.data, d * d), Flat(g.data(), d * d));
  } else {
    hg->load(g);
    for (index_t j = 0; j < d; ++j)
      for (index_t i = 0; i < d; ++i)
        gram(i, j) = hg->view(i, j);
  }
  return Status::ok;
}

}  // namespace
}  // namespace kokkos::detail

Status randomized_singular_values(MatrixRef<const float> a, std::vector<double>& sigma,
                                  const RandomizedSvdOptions& options) {
  return kokkos::detail::randomized_sv<float>(a, sigma, options);
}
Status randomized_singular_values(MatrixRef<const double> a, std::vector<double>& sigma,
                                  const RandomizedSvdOptions& options) {
  return kokkos::detail::randomized_sv<double>(a, sigma, options);
}
Status randomized_svd(MatrixRef<const float> a, LowRankSvd& out, const RandomizedSvdOptions& options) {
  return kokkos::detail::randomized_svd_impl<float>(a, out, options, true);
}
Status randomized_svd(MatrixRef<const double> a, LowRankSvd& out, const RandomizedSvdOptions& options) {
  return kokkos::detail::randomized_svd_impl<double>(a, out, options, true);
}

Status gram_accumulate(MatrixRef<const float> x, MatrixRef<float> gram, Workspace* workspace) {
  schatten::detail::ensure_runtime();
  if (kokkos::detail::check_plain(BatchedMatrixRef<const float>(x), false) ||
      kokkos::detail::check_plain(BatchedMatrixRef<float>(gram), true))
    return Status::invalid_argument;
  if (gram.rows != x.cols || gram.cols != x.cols) return Status::invalid_argument;
  // gram may be x itself (tokens = d_in, one layout): G is formed from x before gram is written.
  if (schatten::detail::check_aliasing(BatchedMatrixRef<const float>(x), BatchedMatrixRef<float>(gram), true))
    return Status::invalid_argument;
  if (x.rows == 0 || x.cols == 0) return Status::ok;
  if (gram.memory == MemoryKind::device && (gram.row_stride != gram.cols || gram.col_stride != 1))
    return Status::invalid_argument;  // device grams are contiguous (gram.hpp)
  return kokkos::detail::status_guard([&] { return kokkos::detail::gram_compute(x, gram, workspace); });
}

}  // namespace schatten
