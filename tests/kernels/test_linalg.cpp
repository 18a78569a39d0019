// SPDX-License-Identifier: Apache-2.0
/// \file
/// White-box tests of the dense primitives under the kernels (backends/kokkos/.../linalg.hpp).
#include <doctest/doctest.h>

#include <limits>

#include "schatten/kokkos/detail/linalg.hpp"
#include "support/seed.hpp"

#include <Eigen/Dense>

using namespace schatten;
using namespace schatten::kokkos::detail;
using schatten::test::case_seed;
using Exec = Kokkos::DefaultExecutionSpace;
using Mem = Exec::memory_space;

namespace {
template <class T>
Kokkos::View<T**, Kokkos::LayoutLeft, Mem> to_view(const Eigen::MatrixXd& m) {
  Kokkos::View<T**, Kokkos::LayoutLeft, Mem> v("v", m.rows(), m.cols());
  auto h = Kokkos::create_mirror_view(v);
  for (Eigen::Index i = 0; i < m.rows(); ++i)
    for (Eigen::Index j = 0; j < m.cols(); ++j)
      h(i, j) = static_cast<T>(m(i, j));
  Kokkos::deep_copy(v, h);
  return v;
}
template <class V>
Eigen::MatrixXd to_eigen(const V& v) {
  auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), v);
  Eigen::MatrixXd m(v.extent(0), v.extent(1));
  for (Eigen::Index i = 0; i < m.rows(); ++i)
    for (Eigen::Index j = 0; j < m.cols(); ++j)
      m(i, j) = static_cast<double>(h(i, j));
  return m;
}
}  // namespace

TEST_SUITE("kernels.linalg") {
  TEST_CASE_TEMPLATE("blocked Cholesky equals Eigen's LLT and detects indefinite matrices", T, float,
                     double) {
    Rng rng(case_seed("cholesky"));
    for (index_t k : {1, 7, 64, 65, 150, 200}) {
      CAPTURE(k);
      Eigen::MatrixXd r(k, k);
      for (index_t i = 0; i < k * k; ++i)
        r.data()[i] = rng.normal();
      const Eigen::MatrixXd a = r * r.transpose() + double(k) * Eigen::MatrixXd::Identity(k, k);
      auto v = to_view<T>(a);
      REQUIRE(cholesky_lower(Exec(), Mat2<T, Mem>(v)));
      const Eigen::MatrixXd full = to_eigen(v);
      const Eigen::MatrixXd l = full.triangularView<Eigen::Lower>();
      const Eigen::MatrixXd want = Eigen::LLT<Eigen::MatrixXd>(a).matrixL();
      // Cholesky is backward stable: ‖LLᵀ − A‖ ≤ c·k·u‖A‖; L itself within κ(A)·that (κ ≤ ~5 here).
      CHECK((l * l.transpose() - a).norm() <= 4 * k * std::numeric_limits<T>::epsilon() * a.norm());
      CHECK((l - want).norm() <= 20 * k * std::numeric_limits<T>::epsilon() * want.norm());
      // Indefinite: a negative eigenvalue makes a pivot non-positive.
      Eigen::MatrixXd bad = a;
      bad(k - 1, k - 1) = -1.0;
      auto vb = to_view<T>(bad);
      CHECK_FALSE(cholesky_lower(Exec(), Mat2<T, Mem>(vb)));
    }
  }

  TEST_CASE("orientation helpers: the wide storage of X gives the transpose of the tall results") {
    Rng rng(case_seed("orientation"));
    const index_t m = 30, k = 12;
    Eigen::MatrixXd x(m, k), s(k, k), l(k, k);
    for (index_t i = 0; i < m * k; ++i)
      x.data()[i] = rng.normal();
    for (index_t i = 0; i < k * k; ++i)
      s.data()[i] = rng.normal();
    s = (s + s.transpose()).eval();
    l = Eigen::MatrixXd(Eigen::MatrixXd::Random(k, k).triangularView<Eigen::Lower>());
    l.diagonal().array() += 4.0;
    for (const bool right : {true, false}) {
      CAPTURE(right);
      const Eigen::MatrixXd w = right ? x : Eigen::MatrixXd(x.transpose());
      auto wv = to_view<double>(w);
      auto lv = to_view<double>(l);
      auto sv = to_view<double>(s);
      Kokkos::View<double**, Kokkos::LayoutLeft, Mem> g("g", k, k), out("out", w.rows(), w.cols());
      auto back = [&](const Eigen::MatrixXd& r) { return right ? r : Eigen::MatrixXd(r.transpose()); };
      gram2(Exec(), right, 1.0, Mat2<double, Mem>(wv), 0.0, Mat2<double, Mem>(g));
      CHECK((to_eigen(g) - x.transpose() * x).norm() <= 1e-12);
      x_times_sym(Exec(), right, 1.0, Mat2<double, Mem>(wv), Mat2<double, Mem>(sv), 0.0,
                  Mat2<double, Mem>(out));
      CHECK((back(to_eigen(out)) - x * s).norm() <= 1e-12);
      x_times_transpose(Exec(), right, 1.0, Mat2<double, Mem>(wv), Mat2<double, Mem>(lv), 0.0,
                        Mat2<double, Mem>(out));
      CHECK((back(to_eigen(out)) - x * l.transpose()).norm() <= 1e-12);
      Kokkos::deep_copy(out, wv);
      x_times_inv_lt(Exec(), right, 2.0, Mat2<double, Mem>(lv), Mat2<double, Mem>(out));
      CHECK((back(to_eigen(out)) - 2.0 * x * l.transpose().inverse()).norm() <= 1e-11);
      Kokkos::deep_copy(out, wv);
      x_times_inv_l(Exec(), right, 1.0, Mat2<double, Mem>(lv), Mat2<double, Mem>(out));
      CHECK((back(to_eigen(out)) - x * l.inverse()).norm() <= 1e-11);
      x_transpose_times(Exec(), right, 1.0, Mat2<double, Mem>(wv), Mat2<double, Mem>(wv), 0.0,
                        Mat2<double, Mem>(g));
      CHECK((to_eigen(g) - x.transpose() * x).norm() <= 1e-12);
    }
  }

  TEST_CASE("sigma_max_estimate approaches the largest singular value from below") {
    Rng rng(case_seed("sigma_max"));
    const index_t m = 80, k = 40;
    Eigen::MatrixXd x(m, k);
    for (index_t i = 0; i < m * k; ++i)
      x.data()[i] = rng.normal();
    const double smax = Eigen::JacobiSVD<Eigen::MatrixXd>(x).singularValues()(0);
    for (const bool right : {true, false}) {
      auto wv = to_view<double>(right ? x : Eigen::MatrixXd(x.transpose()));
      Kokkos::View<double**, Kokkos::LayoutLeft, Mem> vk("vk", k, 1), vn("vn", m, 1);
      const double est = sigma_max_estimate(Exec(), right, Mat2<double, Mem>(wv), Mat2<double, Mem>(vk),
                                            Mat2<double, Mem>(vn));
      CHECK(est <= smax * (1 + 1e-12));
      CHECK(est >= 0.98 * smax);  // QDWH scales by 1.02·est: an upper bound here
    }
  }
}
