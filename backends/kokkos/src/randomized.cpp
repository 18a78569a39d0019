// SPDX-License-Identifier: Apache-2.0
/// \file
/// randomized_singular_values() on the default execution space (GEMMs) with host panels (Eigen).
#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <vector>

#include "plain_io.hpp"
#include "schatten/core/random.hpp"
#include "schatten/kernels/randomized_svd.hpp"
#include "schatten/kokkos/detail/compat.hpp"

namespace schatten {
namespace kokkos::detail {
namespace {

template <class T>
using Dense = Kokkos::View<T**, Kokkos::LayoutLeft, DefaultMem>;

/// Replaces the columns of a (rows × l, on the device) by an orthonormal basis of their span:
/// copy to the host, thin Householder QR in double, copy back.
template <class T>
void orthonormalise(const Dense<T>& a) {
  auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), a);
  const index_t r = a.extent(0), l = a.extent(1);
  Eigen::MatrixXd m(r, l);
  for (index_t j = 0; j < l; ++j)
    for (index_t i = 0; i < r; ++i)
      m(i, j) = static_cast<double>(h(i, j));
  Eigen::HouseholderQR<Eigen::MatrixXd> qr(m);
  const Eigen::MatrixXd q = qr.householderQ() * Eigen::MatrixXd::Identity(r, l);
  for (index_t j = 0; j < l; ++j)
    for (index_t i = 0; i < r; ++i)
      h(i, j) = static_cast<T>(q(i, j));
  Kokkos::deep_copy(a, h);
}

/// The computation of a validated call. A named function: nvcc does not allow device lambdas
/// inside lambdas (status_guard takes one).
template <class T>
Status randomized_compute(const MatrixRef<const T>& a, std::vector<double>& sigma,
                          const RandomizedSvdOptions& o, index_t l) {
  const index_t m = a.rows, n = a.cols;
  DeviceIO<T> io{BatchedMatrixRef<const T>(a)};
  const auto in = io.input();
  // A as a dense column-major matrix (the layout KokkosBlas hands to BLAS), with a NaN/Inf scan.
  Dense<T> ad(Kokkos::view_alloc(Kokkos::WithoutInitializing, "schatten::rsvd::a"), m, n);
  double bad = 0.0;
  Kokkos::parallel_reduce(
      "schatten::rsvd::load", Kokkos::RangePolicy<DefaultExec, Kokkos::IndexType<index_t>>(0, m * n),
      KOKKOS_LAMBDA(index_t idx, double& acc) {
        const index_t i = idx % m, j = idx / m;
        const T v = in(0, i, j);
        ad(i, j) = v;
        acc = kmax(acc, abs_or_inf(v));
      },
      Kokkos::Max<double>(bad));
  if (!std::isfinite(bad)) return Status::non_finite_input;
  // Ω from the library's RNG on the host.
  Dense<T> omega(Kokkos::view_alloc(Kokkos::WithoutInitializing, "schatten::rsvd::omega"), n, l);
  {
    auto h = Kokkos::create_mirror_view(omega);
    Rng rng(o.seed);
    for (index_t j = 0; j < l; ++j)
      for (index_t i = 0; i < n; ++i)
        h(i, j) = static_cast<T>(rng.normal());
    Kokkos::deep_copy(omega, h);
  }
  Dense<T> y(Kokkos::view_alloc(Kokkos::WithoutInitializing, "schatten::rsvd::y"), m, l);
  const DefaultExec space;
  gemm(space, "N", "N", T(1), ad, omega, T(0), y);  // Y = A Ω
  for (int q = 0; q < o.power_iterations; ++q) {
    orthonormalise(y);
    gemm(space, "T", "N", T(1), ad, y, T(0), omega);  // Z = Aᵀ Y (n × l, reusing Ω)
    orthonormalise(omega);
    gemm(space, "N", "N", T(1), ad, omega, T(0), y);  // Y = A Z
  }
  orthonormalise(y);  // Q
  Dense<T> b(Kokkos::view_alloc(Kokkos::WithoutInitializing, "schatten::rsvd::b"), l, n);
  gemm(space, "T", "N", T(1), y, ad, T(0), b);  // B = Qᵀ A
  auto hb = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), b);
  Eigen::MatrixXd bm(l, n);
  for (index_t j = 0; j < n; ++j)
    for (index_t i = 0; i < l; ++i)
      bm(i, j) = static_cast<double>(hb(i, j));
  Eigen::BDCSVD<Eigen::MatrixXd> svd(bm);
  const Eigen::VectorXd s = svd.singularValues();
  sigma.assign(s.data(), s.data() + o.rank);
  return Status::ok;
}

template <class T>
Status randomized_sv(const MatrixRef<const T>& a, std::vector<double>& sigma, const RandomizedSvdOptions& o) {
  schatten::detail::ensure_runtime();
  if (schatten::detail::check_layout(BatchedMatrixRef<const T>(a), false)) return Status::invalid_argument;
  const index_t m = a.rows, n = a.cols, k = std::min(m, n);
  if (o.rank < 1 || o.rank > k || o.oversampling < 0 || o.power_iterations < 0 || o.power_iterations > 50)
    return Status::invalid_argument;
  const index_t l = std::min(o.rank + o.oversampling, k);
  return status_guard([&] { return randomized_compute<T>(a, sigma, o, l); });
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

}  // namespace schatten
