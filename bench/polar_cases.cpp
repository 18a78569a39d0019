// SPDX-License-Identifier: Apache-2.0
/// \file
/// Shared machinery of schatten-bench-polar and schatten-polar-report.
#include "polar_cases.hpp"

#include <Eigen/Dense>
#include <KokkosBlas3_gemm.hpp>
#include <KokkosBlas3_trsm.hpp>
#include <Kokkos_Core.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <stdexcept>
#include <thread>
#include <tuple>
#include <type_traits>

#include "git_info.hpp"
#include "schatten/core/random.hpp"
#include "schatten/kokkos/detail/batched.hpp"
#include "schatten/kokkos/detail/compat.hpp"
#include "schatten/kokkos/detail/linalg.hpp"
#include "schatten/reference/polar.hpp"

#ifdef SCHATTEN_BENCH_HAVE_LAPACK
// LAPACK (OpenBLAS's on Debian) for the Cholesky and Householder floors. Fortran ABI: the
// hidden length of each character argument is passed last.
extern "C" {
void spotrf_(const char* uplo, const int* n, float* a, const int* lda, int* info, std::size_t);
void dpotrf_(const char* uplo, const int* n, double* a, const int* lda, int* info, std::size_t);
void sgeqrf_(const int* m, const int* n, float* a, const int* lda, float* tau, float* work, const int* lwork,
             int* info);
void dgeqrf_(const int* m, const int* n, double* a, const int* lda, double* tau, double* work,
             const int* lwork, int* info);
void sorgqr_(const int* m, const int* n, const int* k, float* a, const int* lda, const float* tau,
             float* work, const int* lwork, int* info);
void dorgqr_(const int* m, const int* n, const int* k, double* a, const int* lda, const double* tau,
             double* work, const int* lwork, int* info);
}
#endif

namespace schatten::bench {

std::string Shape::name() const { return std::to_string(rows) + "x" + std::to_string(cols); }

std::vector<Shape> benchmark_shapes() {
  return {{768, 768}, {768, 3072}, {3072, 768}, {1024, 1024}, {2048, 2048}, {4096, 1024}};
}

std::vector<Method> methods() {
  std::vector<Method> m;
  auto add = [&](const char* name, PolarMethod method, CoefficientSchedule s, int iters) {
    PolarOptions o;
    o.method = method;
    o.schedule = std::move(s);
    o.iterations = iters;
    m.push_back({name, o});
  };
  add("newton_schulz_kj5", PolarMethod::newton_schulz, schedules::keller_jordan(), 5);
  add("polar_express_5", PolarMethod::polar_express, schedules::polar_express(), 5);
  add("polar_express_8", PolarMethod::polar_express, schedules::polar_express(), 8);
  add("polar_express_deployed_5", PolarMethod::polar_express, schedules::polar_express_5(), 5);
  add("gram_newton_schulz_pe5", PolarMethod::gram_newton_schulz, schedules::polar_express(), 5);
  // Emerging-Optimizers' tables (docs/kernels/coefficients.md): CANS, DeepSeek-V4's 10 steps and
  // the cubic 5-step schedule (2 GEMMs a step).
  add("newton_schulz_cans5", PolarMethod::newton_schulz, schedules::cans(), 5);
  add("newton_schulz_dsv4_10", PolarMethod::newton_schulz, schedules::deepseek_v4(), 10);
  add("newton_schulz_cubic5", PolarMethod::newton_schulz, schedules::cubic5(), 5);
  // Schatten-4 normalisation (Normalization::Kind::schatten4): the same tables from a tighter
  // start, against the Frobenius rows above (docs/kernels/polar.md, "Schatten-4 normalisation").
  auto s4 = [](CoefficientSchedule s) {
    s.normalization.kind = Normalization::Kind::schatten4;
    return s;
  };
  add("newton_schulz_kj5_s4", PolarMethod::newton_schulz, s4(schedules::keller_jordan()), 5);
  add("polar_express_deployed_5_s4", PolarMethod::polar_express, s4(schedules::polar_express_5()), 5);
  // AOL row scaling (Normalization::Kind::aol): Turbo-Muon's premise is one step fewer; its
  // target is polar(D A), so "polar rms" (against U Vᵀ of A) includes that shift and the scalar
  // map predicts nothing (pred NaN; docs/kernels/polar.md "AOL pre-scaling").
  auto aol = [](CoefficientSchedule s) {
    s.normalization.kind = Normalization::Kind::aol;
    return s;
  };
  add("newton_schulz_kj4_aol", PolarMethod::newton_schulz, aol(schedules::keller_jordan()), 4);
  add("newton_schulz_kj5_aol", PolarMethod::newton_schulz, aol(schedules::keller_jordan()), 5);
  PolarOptions q;
  q.method = PolarMethod::qdwh;
  m.push_back({"qdwh", q});
  return m;
}

namespace {
Problem make_problem(const Shape& s, std::vector<double> sigma, std::uint64_t seed) {
  const index_t k = std::min(s.rows, s.cols);
  Problem p;
  p.shape = s;
  p.sigma = std::move(sigma);
  p.a.resize(static_cast<std::size_t>(s.rows * s.cols));
  if (reference::matrix_with_spectrum(MatrixRef<double>(p.a.data(), s.rows, s.cols), p.sigma, seed, &p.u,
                                      &p.v) != Status::ok)
    throw std::runtime_error("bench: could not build the problem " + s.name());
  using RowMat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const Eigen::Map<const RowMat> u(p.u.data(), s.rows, k), v(p.v.data(), s.cols, k);
  p.exact.resize(p.a.size());
  Eigen::Map<RowMat>(p.exact.data(), s.rows, s.cols) = u * v.transpose();
  return p;
}
}  // namespace

std::vector<double> Problem::spectral_map(const std::function<double(double)>& f) const {
  using RowMat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const index_t k = static_cast<index_t>(sigma.size());
  const Eigen::Map<const RowMat> um(u.data(), shape.rows, k), vm(v.data(), shape.cols, k);
  Eigen::VectorXd s(k);
  for (index_t i = 0; i < k; ++i)
    s(i) = f(sigma[static_cast<std::size_t>(i)]);
  std::vector<double> out(a.size());
  Eigen::Map<RowMat>(out.data(), shape.rows, shape.cols) = um * s.asDiagonal() * vm.transpose();
  return out;
}

std::vector<double> Problem::spectral_power(double alpha) const {
  return spectral_map([alpha](double x) { return std::pow(x, alpha); });
}

const Problem& problem(const Shape& s) {
  static std::map<std::pair<index_t, index_t>, Problem> cache;
  auto it = cache.find({s.rows, s.cols});
  if (it != cache.end()) return it->second;
  const index_t k = std::min(s.rows, s.cols);
  const std::uint64_t seed = 0x5eed0000ull + static_cast<std::uint64_t>(s.rows * 100003 + s.cols);
  if (k > kExactLimit) {  // timing only: iid N(0, 1/cols) entries, no exact factor
    Problem p;
    p.shape = s;
    p.a.resize(static_cast<std::size_t>(s.rows * s.cols));
    Rng rng(seed);
    const double sd = 1.0 / std::sqrt(double(s.cols));
    for (double& x : p.a)
      x = sd * rng.normal();
    return cache.emplace(std::make_pair(s.rows, s.cols), std::move(p)).first->second;
  }
  std::vector<double> sigma(static_cast<std::size_t>(k));
  for (index_t i = 0; i < k; ++i)
    sigma[static_cast<std::size_t>(i)] = 1.0 / std::sqrt(double(i + 1));
  return cache.emplace(std::make_pair(s.rows, s.cols), make_problem(s, std::move(sigma), seed)).first->second;
}

const Problem& conditioned_problem(const Shape& s, double kappa) {
  static std::map<std::tuple<index_t, index_t, double>, Problem> cache;
  const auto key = std::make_tuple(s.rows, s.cols, kappa);
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  const index_t k = std::min(s.rows, s.cols);
  std::vector<double> sigma(static_cast<std::size_t>(k));
  for (index_t i = 0; i < k; ++i)
    sigma[static_cast<std::size_t>(i)] = k > 1 ? std::pow(kappa, -double(i) / double(k - 1)) : 1.0;
  const std::uint64_t seed = 0xc0d0000ull + static_cast<std::uint64_t>(s.rows * 100003 + s.cols);
  return cache.emplace(key, make_problem(s, std::move(sigma), seed)).first->second;
}

template <class T>
Accuracy accuracy(const Problem& p, const std::vector<T>& q) {
  if (p.exact.empty())
    return {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::quiet_NaN()};
  const index_t r = p.shape.rows, c = p.shape.cols, k = std::min(r, c);
  Eigen::MatrixXd m(r, c), e(r, c);
  for (index_t i = 0; i < r; ++i)
    for (index_t j = 0; j < c; ++j) {
      m(i, j) = static_cast<double>(q[static_cast<std::size_t>(i * c + j)]);
      e(i, j) = p.exact[static_cast<std::size_t>(i * c + j)];
    }
  const Eigen::MatrixXd g = r <= c ? Eigen::MatrixXd(m * m.transpose()) : Eigen::MatrixXd(m.transpose() * m);
  Accuracy acc;
  acc.orthogonality = (g - Eigen::MatrixXd::Identity(k, k)).norm() / std::sqrt(double(k));
  acc.polar_error = (m - e).norm() / std::sqrt(double(k));
  return acc;
}

double predicted_polar_rms(const Problem& p, const PolarOptions& o) {
  if (p.sigma.empty()) return std::numeric_limits<double>::quiet_NaN();  // timing-only problem
  if (o.method == PolarMethod::qdwh) return 0.0;  // converges to U Vᵀ: only rounding remains
  const CoefficientSchedule sched = resolved_schedule(o);
  const double nu = sched.normalization.scale(p.sigma);
  double sum = 0.0;
  for (double x : p.sigma) {
    const double d = sched.apply(x / nu, o.iterations) - 1.0;
    sum += d * d;
  }
  return std::sqrt(sum / static_cast<double>(p.sigma.size()));
}

namespace {
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}
}  // namespace

template <class T>
struct DeviceCopy<T>::Impl {
  using Mem = Kokkos::DefaultExecutionSpace::memory_space;
  static constexpr MemoryKind kind =
      std::is_same<Mem, Kokkos::HostSpace>::value ? MemoryKind::host : MemoryKind::device;
  Kokkos::View<T*, Mem> a, q;
  index_t rows = 0, cols = 0;
};

template <class T>
DeviceCopy<T>::DeviceCopy(const std::vector<double>& a, index_t rows, index_t cols) : impl_(new Impl) {
  const std::size_t n = a.size();
  impl_->rows = rows;
  impl_->cols = cols;
  impl_->a = decltype(impl_->a)(Kokkos::view_alloc(Kokkos::WithoutInitializing, "bench_a"), n);
  impl_->q = decltype(impl_->q)("bench_q", n);
  auto h = Kokkos::create_mirror_view(impl_->a);
  for (std::size_t i = 0; i < n; ++i)
    h(i) = static_cast<T>(a[i]);
  Kokkos::deep_copy(impl_->a, h);
}

template <class T>
DeviceCopy<T>::~DeviceCopy() {
  delete impl_;
}

template <class T>
MatrixRef<const T> DeviceCopy<T>::input() const {
  return MatrixRef<const T>(impl_->a.data(), impl_->rows, impl_->cols, Impl::kind);
}

template <class T>
MatrixRef<T> DeviceCopy<T>::output() const {
  return MatrixRef<T>(impl_->q.data(), impl_->rows, impl_->cols, Impl::kind);
}

template <class T>
std::vector<T> DeviceCopy<T>::output_to_host() const {
  auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), impl_->q);
  return std::vector<T>(h.data(), h.data() + h.extent(0));
}

template <class T>
double time_polar(const Problem& p, const PolarOptions& o, int reps, std::vector<T>& q) {
  DeviceCopy<T> d(p.a, p.shape.rows, p.shape.cols);
  Workspace ws;
  auto run = [&] {
    const PolarReport rep = polar(d.input(), d.output(), o, &ws);
    if (rep.status != Status::ok) throw std::runtime_error(std::string("polar failed: ") + rep.message);
  };
  run();  // warm-up: workspace allocation, first-touch, BLAS thread start
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    Kokkos::Timer timer;
    run();
    t.push_back(timer.seconds());
  }
  q = d.output_to_host();
  return median(t);
}

template <class T>
struct GemmProbe<T>::Impl {
  using V = Kokkos::View<T**, Kokkos::LayoutLeft>;
  V a, b, c;
};

template <class T>
GemmProbe<T>::GemmProbe(index_t m, index_t n, index_t k) : impl_(new Impl) {
  using V = typename Impl::V;
  impl_->a = V(Kokkos::view_alloc(Kokkos::WithoutInitializing, "a"), m, k);
  impl_->b = V(Kokkos::view_alloc(Kokkos::WithoutInitializing, "b"), k, n);
  impl_->c = V(Kokkos::view_alloc(Kokkos::WithoutInitializing, "c"), m, n);
  // Random operands (N(0, 1/k), fixed seed): GPUs run GEMMs on constant data measurably faster
  // (lower power, higher clocks), which would make the floor optimistic.
  Rng rng(0x9e3779b9u + static_cast<std::uint64_t>(m * 31 + n * 17 + k));
  const double sd = 1.0 / std::sqrt(static_cast<double>(k));
  for (V* v : {&impl_->a, &impl_->b}) {
    auto h = Kokkos::create_mirror_view(*v);
    for (index_t j = 0; j < static_cast<index_t>(h.extent(1)); ++j)
      for (index_t i = 0; i < static_cast<index_t>(h.extent(0)); ++i)
        h(i, j) = static_cast<T>(sd * rng.normal());
    Kokkos::deep_copy(*v, h);
  }
  seconds();  // warm-up: first touch of C, BLAS threads
}

template <class T>
GemmProbe<T>::~GemmProbe() {
  delete impl_;
}

template <class T>
double GemmProbe<T>::seconds() {
  Kokkos::fence();
  Kokkos::Timer timer;
  // The kernels' own GEMM entry: KokkosBlas, the vendor layer for 16-bit storage on CUDA, or
  // portable_gemm for the software 16-bit types elsewhere.
  using S = kokkos::detail::scalar_t<T>;
  kokkos::detail::matrix_gemm(Kokkos::DefaultExecutionSpace(), "N", "N", S(1), impl_->a, impl_->b, S(0),
                              impl_->c);
  Kokkos::fence();
  return timer.seconds();
}

template <class T>
double GemmProbe<T>::portable_seconds(bool symmetric) {
  using Exec = Kokkos::DefaultExecutionSpace;
  using S = kokkos::detail::scalar_t<T>;
  namespace kd = kokkos::detail;
  const int m = static_cast<int>(impl_->c.extent(0)), n = static_cast<int>(impl_->c.extent(1)),
            k = static_cast<int>(impl_->a.extent(1));
  Kokkos::fence();
  Kokkos::Timer timer;
  if (symmetric)
    kd::portable_sym_product<Exec, T, false>(Exec(), false, m, k, S(1), kd::read_operand(impl_->a), S(0),
                                             kd::strided_operand(impl_->c), 1);
  else
    kd::portable_gemm<Exec, T, false>(Exec(), false, false, m, n, k, S(1), kd::read_operand(impl_->a),
                                      kd::read_operand(impl_->b), S(0), kd::strided_operand(impl_->c), 1);
  Kokkos::fence();
  return timer.seconds();
}

template <class T>
double gemm_seconds(index_t m, index_t n, index_t k, int reps) {
  // Methods share GEMM shapes: measure each (type, shape, reps) once per process.
  static std::map<std::tuple<index_t, index_t, index_t, int>, double> cache;  // one per type T
  const auto key = std::make_tuple(m, n, k, reps);
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  GemmProbe<T> probe(m, n, k);
  std::vector<double> t;
  for (int i = 0; i < reps; ++i)
    t.push_back(probe.seconds());
  return cache[key] = median(t);
}

namespace {
/// Time of one TRSM B (m × n) ← B L⁻ᵀ with L lower triangular n × n, through KokkosBlas.
template <class T>
double trsm_seconds(index_t m, index_t n, int reps) {
  using V = Kokkos::View<T**, Kokkos::LayoutLeft>;
  V l("l", n, n), b(Kokkos::view_alloc(Kokkos::WithoutInitializing, "b"), m, n);
  auto h = Kokkos::create_mirror_view(l);
  for (index_t i = 0; i < n; ++i)
    for (index_t j = 0; j <= i; ++j)
      h(i, j) = i == j ? T(2) : T(0.5) / T(n);  // well conditioned: no overflow in the solve
  Kokkos::deep_copy(l, h);
  std::vector<double> t;
  for (int i = 0; i < reps + 1; ++i) {
    Kokkos::deep_copy(b, T(1));
    Kokkos::fence();
    Kokkos::Timer timer;
    KokkosBlas::trsm("R", "L", "T", "N", T(1), l, b);
    Kokkos::fence();
    if (i > 0) t.push_back(timer.seconds());  // first call: warm-up
  }
  return median(t);
}

/// Time of one symmetric product on one triangle, C (m × m) ← A Aᵀ with A m × k, through the
/// kernels' own entry: a SYRK (kokkos::detail::syrk_lower, lower triangle, without the fill of
/// the upper one), or for the software 16-bit types portable_sym_product (lower triangle and its
/// mirror, one kernel); NaN where the build has neither for T.
template <class T>
double syrk_seconds(index_t m, index_t k, int reps) {
  using Exec = Kokkos::DefaultExecutionSpace;
  constexpr bool portable = kokkos::detail::portable_storage<T>;
  if constexpr (!kokkos::detail::has_syrk<Exec, T>() && !portable) {
    (void)m, (void)k, (void)reps;
    return std::numeric_limits<double>::quiet_NaN();
  } else {
    using V = Kokkos::View<T**, Kokkos::LayoutLeft>;
    V a(Kokkos::view_alloc(Kokkos::WithoutInitializing, "a"), m, k), c("c", m, m);
    Rng rng(0x51e4bu + static_cast<std::uint64_t>(m * 31 + k));
    const double sd = 1.0 / std::sqrt(static_cast<double>(k));
    auto h = Kokkos::create_mirror_view(a);
    for (index_t j = 0; j < k; ++j)
      for (index_t i = 0; i < m; ++i)
        h(i, j) = static_cast<T>(sd * rng.normal());
    Kokkos::deep_copy(a, h);
    std::vector<double> t;
    for (int i = 0; i < reps + 1; ++i) {
      Kokkos::fence();
      Kokkos::Timer timer;
      if constexpr (portable)
        kokkos::detail::portable_sym_product<Exec, T>(Exec(), false, static_cast<int>(m), static_cast<int>(k),
                                                      1.0f, kokkos::detail::read_operand(a), 0.0f,
                                                      kokkos::detail::strided_operand(c), 1);
      else
        kokkos::detail::syrk_lower(Exec(), "N", T(1), a, T(0), c);
      Kokkos::fence();
      if (i > 0) t.push_back(timer.seconds());  // first call: warm-up
    }
    return median(t);
  }
}

#ifdef SCHATTEN_BENCH_HAVE_LAPACK
// Unused where every precision has a vendor Cholesky (CUDA): cholesky_seconds' host branch is
// then discarded, and nvcc would remark (#177) on an unreferenced function.
[[maybe_unused]] void potrf(const char* uplo, int n, float* a, int lda, int* info) {
  spotrf_(uplo, &n, a, &lda, info, 1);
}
[[maybe_unused]] void potrf(const char* uplo, int n, double* a, int lda, int* info) {
  dpotrf_(uplo, &n, a, &lda, info, 1);
}
#endif

/// Time of one Cholesky of an n × n SPD matrix (n·I + ½·11ᵀ, column-major): where the kernels
/// hand their Cholesky to the vendor library (cuSOLVER on CUDA), their own entry
/// kokkos::detail::cholesky_lower on device memory, check included; else LAPACK's ?potrf on the
/// host; NaN where neither exists.
template <class T>
double cholesky_seconds(index_t n, int reps) {
  using Exec = Kokkos::DefaultExecutionSpace;
  if constexpr (kokkos::detail::has_vendor_potrf<Exec, T>()) {
    using V = Kokkos::View<T**, Kokkos::LayoutLeft, typename Exec::memory_space>;
    V spd(Kokkos::view_alloc(Kokkos::WithoutInitializing, "spd"), n, n);
    V work(Kokkos::view_alloc(Kokkos::WithoutInitializing, "work"), n, n);
    auto h = Kokkos::create_mirror_view(spd);
    for (index_t j = 0; j < n; ++j)
      for (index_t i = 0; i < n; ++i)
        h(i, j) = T(0.5) + (i == j ? T(n) : T(0));
    Kokkos::deep_copy(spd, h);
    std::vector<double> t;
    for (int i = 0; i < reps + 1; ++i) {
      Kokkos::deep_copy(work, spd);
      Kokkos::fence();
      Kokkos::Timer timer;
      const bool ok = kokkos::detail::cholesky_lower(
          Exec(), kokkos::detail::Mat2<T, typename Exec::memory_space>(work.data(), n, n));
      const double dt = timer.seconds();
      if (!ok) throw std::runtime_error("bench: vendor Cholesky failed");
      if (i > 0) t.push_back(dt);  // first call: warm-up
    }
    return median(t);
  } else {
#ifndef SCHATTEN_BENCH_HAVE_LAPACK
    (void)n, (void)reps;
    return std::numeric_limits<double>::quiet_NaN();
#else
    const std::size_t nn = static_cast<std::size_t>(n * n);
    std::vector<T> spd(nn, T(0.5)), work(nn);
    for (index_t i = 0; i < n; ++i)
      spd[static_cast<std::size_t>(i * n + i)] += T(n);
    std::vector<double> t;
    for (int i = 0; i < reps + 1; ++i) {
      work = spd;
      int info = 0;
      Kokkos::Timer timer;
      potrf("L", static_cast<int>(n), work.data(), static_cast<int>(n), &info);
      const double dt = timer.seconds();
      if (info != 0) throw std::runtime_error("bench: ?potrf failed");
      if (i > 0) t.push_back(dt);
    }
    return median(t);
#endif
  }
}

template <class T>
double op_seconds(const GemmShape& g, int reps) {
  static std::map<std::tuple<int, index_t, index_t, index_t, int>, double> cache;  // one per type T
  const auto key = std::make_tuple(static_cast<int>(g.kind), g.m, g.n, g.k, reps);
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  double s = std::numeric_limits<double>::quiet_NaN();
  if constexpr (kokkos::detail::is_lowp<T>) {  // 16-bit storage: GEMMs, and the portable triangle
    if (g.kind == OpKind::gemm) s = gemm_seconds<T>(g.m, g.n, g.k, reps);
    if (g.kind == OpKind::syrk) s = syrk_seconds<T>(g.m, g.k, reps);
  } else {
    switch (g.kind) {
      case OpKind::gemm:
        s = gemm_seconds<T>(g.m, g.n, g.k, reps);
        break;
      case OpKind::trsm:
        s = trsm_seconds<T>(g.m, g.n, reps);
        break;
      case OpKind::cholesky:
        s = cholesky_seconds<T>(g.m, reps);
        break;
      case OpKind::syrk:
        s = syrk_seconds<T>(g.m, g.k, reps);
        break;
    }
  }
  return cache[key] = s;
}
}  // namespace

template <class T>
std::vector<GemmShape> executed_ops(const Problem& p, const PolarOptions& o) {
  const index_t r = p.shape.rows, c = p.shape.cols;
  if (o.method != PolarMethod::qdwh) return polar_gemm_shapes(r, c, o);
  std::vector<T> a(p.a.begin(), p.a.end()), u(a.size());
  const QdwhReport rep = qdwh(MatrixRef<const T>(a.data(), r, c), MatrixRef<T>(u.data(), r, c), o.qdwh);
  if (rep.status != Status::ok) throw std::runtime_error(std::string("qdwh failed: ") + rep.message);
  std::vector<GemmShape> ops = qdwh_gemm_shapes(r, c, rep.qr_iterations, rep.iterations - rep.qr_iterations,
                                                o.qdwh.lower_bound < 0.0, o.qdwh.polish);
  // The orthogonality report, when either flag asks (as polar_gemm_shapes() counts it).
  if (o.compute_orthogonality_error || o.qdwh.compute_orthogonality_error)
    ops.push_back(GemmShape{std::min(r, c), std::min(r, c), std::max(r, c), 1, OpKind::gemm});
  return ops;
}

template <class T>
double floor_seconds(const std::vector<GemmShape>& ops, int reps) {
  double total = 0.0;
  for (const GemmShape& g : ops)
    total += g.count * op_seconds<T>(g, reps);
  return total;
}

namespace {
/// Calls f with a value of the storage type of 16-bit iteration `compute` (bf16 or fp16) on this
/// build: Kokkos' types with cuBLAS on CUDA, the portable software types elsewhere.
template <class F>
auto with_lowp_storage(Precision compute, F&& f) {
#if defined(SCHATTEN_HAVE_LOWP_GEMM)
  using B = Kokkos::Experimental::bhalf_t;
  using H = Kokkos::Experimental::half_t;
#else
  using B = kokkos::detail::Bf16;
  using H = kokkos::detail::Fp16;
#endif
  return compute == Precision::bf16 ? f(B{}) : f(H{});
}
}  // namespace

template <class T>
double executed_flops(const Problem& p, const PolarOptions& o) {
  return total_flops(executed_ops<T>(p, o));
}

template <class T>
double kernel_floor_seconds(const Problem& p, const PolarOptions& o, int reps) {
  // 16-bit iteration: the GEMMs of its storage type.
  if (sixteen_bit(o.compute))
    return with_lowp_storage(o.compute,
                             [&](auto s) { return floor_seconds<decltype(s)>(executed_ops<T>(p, o), reps); });
  return floor_seconds<T>(executed_ops<T>(p, o), reps);
}

namespace {
template <class T>
std::function<double()> portable_timer(index_t n, bool symmetric) {
  auto probe = std::make_shared<GemmProbe<T>>(n, n, n);
  return [probe, symmetric] { return probe->portable_seconds(symmetric); };
}
}  // namespace

std::function<double()> portable_kernel_timer(Precision compute, index_t n, bool symmetric) {
  if (compute == Precision::bf16) return portable_timer<kokkos::detail::Bf16>(n, symmetric);
  if (compute == Precision::fp16) return portable_timer<kokkos::detail::Fp16>(n, symmetric);
  return portable_timer<float>(n, symmetric);
}

std::function<double()> lowp_gemm_timer(Precision compute, index_t m, index_t n, index_t k) {
  return with_lowp_storage(compute, [&](auto s) -> std::function<double()> {
    auto probe = std::make_shared<GemmProbe<decltype(s)>>(m, n, k);
    return [probe] { return probe->seconds(); };
  });
}

double spectral_power_flops(index_t rows, index_t cols, const std::vector<GemmShape>& qdwh_ops, int poles,
                            double alpha) {
  const double m = double(std::max(rows, cols)), k = double(std::min(rows, cols));
  const double filter = alpha < 0.0 ? 2 * k * k * k : 0.0;
  return total_flops(qdwh_ops) + 2 * m * k * k + poles * (k * k * k / 3 + 2 * k * k * k) + filter +
         2 * m * k * k;
}

#ifdef SCHATTEN_BENCH_HAVE_LAPACK
namespace {
void geqrf(int m, int n, float* a, int lda, float* tau, float* w, int lw, int* info) {
  sgeqrf_(&m, &n, a, &lda, tau, w, &lw, info);
}
void geqrf(int m, int n, double* a, int lda, double* tau, double* w, int lw, int* info) {
  dgeqrf_(&m, &n, a, &lda, tau, w, &lw, info);
}
void orgqr(int m, int n, float* a, int lda, const float* tau, float* w, int lw, int* info) {
  sorgqr_(&m, &n, &n, a, &lda, tau, w, &lw, info);
}
void orgqr(int m, int n, double* a, int lda, const double* tau, double* w, int lw, int* info) {
  dorgqr_(&m, &n, &n, a, &lda, tau, w, &lw, info);
}
}  // namespace

#endif

template <class T>
double householder_qr_seconds(index_t m, index_t n, int reps) {
#ifndef SCHATTEN_BENCH_HAVE_LAPACK
  (void)m, (void)n, (void)reps;
  return std::numeric_limits<double>::quiet_NaN();
#else
  Rng rng(42);
  std::vector<T> a(static_cast<std::size_t>(m * n)), work_a, tau(static_cast<std::size_t>(n));
  for (T& x : a)
    x = static_cast<T>(rng.normal());
  const int lwork = static_cast<int>(64 * n);
  std::vector<T> work(static_cast<std::size_t>(lwork));
  std::vector<double> t;
  for (int i = 0; i < reps + 1; ++i) {
    work_a = a;
    int info = 0;
    Kokkos::Timer timer;
    geqrf(static_cast<int>(m), static_cast<int>(n), work_a.data(), static_cast<int>(m), tau.data(),
          work.data(), lwork, &info);
    orgqr(static_cast<int>(m), static_cast<int>(n), work_a.data(), static_cast<int>(m), tau.data(),
          work.data(), lwork, &info);
    const double dt = timer.seconds();
    if (info != 0) throw std::runtime_error("bench: Householder QR failed");
    if (i > 0) t.push_back(dt);
  }
  return median(t);
#endif
}

const char* git_commit() { return SCHATTEN_GIT_COMMIT; }

std::string machine_description() {
  std::string model = "unknown CPU";
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);)
    if (line.rfind("model name", 0) == 0) {
      model = line.substr(line.find(':') + 2);
      break;
    }
  const char* blas_threads = std::getenv("OPENBLAS_NUM_THREADS");
  return model + ", " + std::to_string(std::thread::hardware_concurrency()) +
         " logical cores, OPENBLAS_NUM_THREADS=" + (blas_threads ? blas_threads : "unset");
}

template Accuracy accuracy<float>(const Problem&, const std::vector<float>&);
template Accuracy accuracy<double>(const Problem&, const std::vector<double>&);
template double time_polar<float>(const Problem&, const PolarOptions&, int, std::vector<float>&);
template double time_polar<double>(const Problem&, const PolarOptions&, int, std::vector<double>&);
template class DeviceCopy<float>;
template class DeviceCopy<double>;
template class GemmProbe<float>;
template class GemmProbe<double>;
template double gemm_seconds<float>(index_t, index_t, index_t, int);
template double gemm_seconds<double>(index_t, index_t, index_t, int);
template std::vector<GemmShape> executed_ops<float>(const Problem&, const PolarOptions&);
template std::vector<GemmShape> executed_ops<double>(const Problem&, const PolarOptions&);
template double floor_seconds<float>(const std::vector<GemmShape>&, int);
template double floor_seconds<double>(const std::vector<GemmShape>&, int);
template double executed_flops<float>(const Problem&, const PolarOptions&);
template double executed_flops<double>(const Problem&, const PolarOptions&);
template double kernel_floor_seconds<float>(const Problem&, const PolarOptions&, int);
template double kernel_floor_seconds<double>(const Problem&, const PolarOptions&, int);
template double householder_qr_seconds<float>(index_t, index_t, int);
template double householder_qr_seconds<double>(index_t, index_t, int);

}  // namespace schatten::bench
