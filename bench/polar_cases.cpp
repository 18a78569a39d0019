// SPDX-License-Identifier: Apache-2.0
/// \file
/// Shared machinery of schatten-bench-polar and schatten-polar-report.
#include "polar_cases.hpp"

#include <Eigen/Dense>
#include <KokkosBlas3_gemm.hpp>
#include <Kokkos_Core.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <stdexcept>
#include <thread>
#include <tuple>

#include "git_info.hpp"
#include "schatten/core/random.hpp"
#include "schatten/reference/polar.hpp"

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
  return m;
}

const Problem& problem(const Shape& s) {
  static std::map<std::pair<index_t, index_t>, Problem> cache;
  auto it = cache.find({s.rows, s.cols});
  if (it != cache.end()) return it->second;
  const index_t k = std::min(s.rows, s.cols);
  std::vector<double> sigma(static_cast<std::size_t>(k));
  for (index_t i = 0; i < k; ++i)
    sigma[static_cast<std::size_t>(i)] = 1.0 / std::sqrt(double(i + 1));
  Problem p;
  p.shape = s;
  p.sigma = sigma;
  p.a.resize(static_cast<std::size_t>(s.rows * s.cols));
  p.exact.resize(p.a.size());
  const std::uint64_t seed = 0x5eed0000ull + static_cast<std::uint64_t>(s.rows * 100003 + s.cols);
  if (reference::matrix_with_spectrum(MatrixRef<double>(p.a.data(), s.rows, s.cols), sigma, seed) !=
          Status::ok ||
      reference::polar(MatrixRef<const double>(p.a.data(), s.rows, s.cols),
                       MatrixRef<double>(p.exact.data(), s.rows, s.cols)) != Status::ok)
    throw std::runtime_error("bench: could not build the problem " + s.name());
  return cache.emplace(std::make_pair(s.rows, s.cols), std::move(p)).first->second;
}

template <class T>
Accuracy accuracy(const Problem& p, const std::vector<T>& q) {
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
  const CoefficientSchedule sched = resolved_schedule(o);
  double nu = 1.0;
  if (sched.normalization.kind == Normalization::Kind::frobenius) {
    double ss = 0.0;
    for (double x : p.sigma)
      ss += x * x;
    nu = sched.normalization.safety * std::sqrt(ss) + sched.normalization.eps;
  }
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
double time_polar(const Problem& p, const PolarOptions& o, int reps, std::vector<T>& q) {
  const index_t r = p.shape.rows, c = p.shape.cols;
  std::vector<T> a(p.a.begin(), p.a.end());
  q.assign(a.size(), T(0));
  Workspace ws;
  auto run = [&] {
    const PolarReport rep = polar(MatrixRef<const T>(a.data(), r, c), MatrixRef<T>(q.data(), r, c), o, &ws);
    if (rep.status != Status::ok) throw std::runtime_error(std::string("polar failed: ") + rep.message);
  };
  run();  // warm-up: workspace allocation, first-touch, BLAS thread start
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    Kokkos::Timer timer;
    run();
    t.push_back(timer.seconds());
  }
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
  Kokkos::deep_copy(impl_->a, T(0.5));
  Kokkos::deep_copy(impl_->b, T(0.25));
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
  KokkosBlas::gemm("N", "N", T(1), impl_->a, impl_->b, T(0), impl_->c);
  Kokkos::fence();
  return timer.seconds();
}

template <class T>
double gemm_seconds(index_t m, index_t n, index_t k, int reps) {
  // Methods share GEMM shapes: measure each (type, shape, reps) once per process.
  static std::map<std::tuple<std::size_t, index_t, index_t, index_t, int>, double> cache;
  const auto key = std::make_tuple(sizeof(T), m, n, k, reps);
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  GemmProbe<T> probe(m, n, k);
  std::vector<double> t;
  for (int i = 0; i < reps; ++i)
    t.push_back(probe.seconds());
  return cache[key] = median(t);
}

template <class T>
double gemm_floor_seconds(const Shape& s, const PolarOptions& o, int reps) {
  double total = 0.0;
  for (const GemmShape& g : polar_gemm_shapes(s.rows, s.cols, o))
    total += g.count * gemm_seconds<T>(g.m, g.n, g.k, reps);
  return total;
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
template class GemmProbe<float>;
template class GemmProbe<double>;
template double gemm_seconds<float>(index_t, index_t, index_t, int);
template double gemm_seconds<double>(index_t, index_t, index_t, int);
template double gemm_floor_seconds<float>(const Shape&, const PolarOptions&, int);
template double gemm_floor_seconds<double>(const Shape&, const PolarOptions&, int);

}  // namespace schatten::bench
