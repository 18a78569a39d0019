// SPDX-License-Identifier: Apache-2.0
/// \file
/// The Schatten-p criterion (schatten_p.hpp): spectra on the host with Eigen (double for the
/// decompositions and the alignments' GEMMs), randomized SVDs through the kernels.
#include "schatten/surrogate/schatten_p.hpp"

#include <Eigen/Dense>

#include <algorithm>
#include <array>
#include <cmath>
#include <functional>
#include <limits>
#include <new>
#include <numeric>

#include "reference/dense_svd.hpp"
#include "schatten/kernels/randomized_svd.hpp"

namespace schatten::surrogate {
namespace {

using RowMajorF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MapF = Eigen::Map<const RowMajorF, 0, Eigen::OuterStride<>>;

constexpr double kNegInf = -std::numeric_limits<double>::infinity();
/// Values at or below this fraction of the largest are dropped from the sums ([V] drops
/// σ ≤ 1e-7 absolutely; relative here so that the criterion stays scale-free).
constexpr double kDrop = 1e-7;
/// check_criterion_options()'s smallest tolerance, relative to log p_max.
constexpr double kToleranceFloor = 1e-12;

MapF map(const MatrixRef<const float>& m) {
  // Row-major with unit column stride (checked by the caller).
  return MapF(m.data, m.rows, m.cols, Eigen::OuterStride<>(m.row_stride));
}

bool row_major(const MatrixRef<const float>& m) {
  return m.empty() || (m.data != nullptr && m.col_stride == 1 && m.row_stride >= m.cols);
}

bool finite(const MatrixRef<const float>& m) {
  for (index_t i = 0; i < m.rows; ++i)
    for (index_t j = 0; j < m.cols; ++j)
      if (!std::isfinite(m(i, j))) return false;
  return true;
}

/// k = ⌊fraction·side⌋ clamped to [min_rank, max_rank] and to the side: the reference's
/// int(0.1·min(m, n)) (momentum_approx.py; the same double product, so the same k). (It was
/// ⌈·⌉ until 2026-12-07: one more for the sides 513–639 where the clamp does not decide;
/// audit of that day.)
index_t sample_rank(index_t side, const PCriterionOptions& o) {
  const auto k = static_cast<index_t>(std::floor(o.randomized_fraction * double(side)));
  return std::min(side, std::max(std::min(k, o.randomized_max_rank), o.randomized_min_rank));
}

bool use_exact(index_t side, const PCriterionOptions& o) {
  return o.spectrum == SpectrumMethod::exact ||
         (o.spectrum == SpectrumMethod::automatic && side <= o.exact_limit);
}

/// log Σ_i (x_i/x_max)^e over x_i/x_max > kDrop (the values kept: σ > 1e-7·σ_max); −∞ when no
/// x_i is positive. As log_sum_pow of x divided by its largest value, without forming that copy
/// (bit for bit: the copy's largest value is 1 exactly).
double log_sum_pow_relative(const std::vector<double>& x, double e) {
  double top = 0.0;
  for (double v : x)
    top = std::max(top, v);
  if (!(top > 0.0)) return kNegInf;
  double s = 0.0;
  for (double v : x)
    if (v / top > kDrop) s += std::pow(v / top, e);
  return std::log(s);
}

/// log Σ_i x_i^e over the kept x_i, by factoring the largest out (no overflow for any e > 0).
double log_sum_pow(const std::vector<double>& x, double e) {
  const double rel = log_sum_pow_relative(x, e);
  if (rel == kNegInf) return kNegInf;
  double top = 0.0;
  for (double v : x)
    top = std::max(top, v);
  return e * std::log(top) + rel;
}

/// log ‖A‖²_{S_k} with k = 2(p+1)/(p−1) → ∞ as p → 1 (then 2 log σ_max).
double log_schatten_sq(const std::vector<double>& sigma_a, double p) {
  if (p - 1.0 < 1e-12) {
    const double top = sigma_a.empty() ? 0.0 : *std::max_element(sigma_a.begin(), sigma_a.end());
    return top > 0.0 ? 2.0 * std::log(top) : kNegInf;
  }
  const double k = 2.0 * (p + 1.0) / (p - 1.0);
  return (2.0 / k) * log_sum_pow(sigma_a, k);
}

/// Σ C_i σ_i^{e} over the kept σ (σ_i > kDrop·σ_max), σ scaled by σ_max (a common factor that
/// cancels in every criterion).
double weighted_power_sum(const std::vector<double>& c, const std::vector<double>& sigma, double e) {
  double top = 0.0;
  for (double v : sigma)
    top = std::max(top, v);
  if (!(top > 0.0)) return 0.0;
  double s = 0.0;
  for (std::size_t i = 0; i < sigma.size() && i < c.size(); ++i)
    if (sigma[i] > kDrop * top) s += c[i] * std::pow(sigma[i] / top, e);
  return s;
}

/// Top singular values (and vectors when wanted) of a host matrix: exact by Eigen's divide and
/// conquer SVD in double, or randomized. Vectors: u (m × k), v (n × k), column-major.
Status top_svd(const MatrixRef<const float>& a, bool vectors, const PCriterionOptions& o, LowRankSvd& out) {
  const index_t m = a.rows, n = a.cols, r = std::min(m, n);
  if (use_exact(r, o)) {
    const Eigen::MatrixXd ad = map(a).cast<double>();
    const schatten::detail::DenseSvd svd = schatten::detail::dense_svd(ad, vectors);
    LowRankSvd s;
    s.rows = m;
    s.cols = n;
    s.rank = r;
    s.sigma.assign(svd.sigma.data(), svd.sigma.data() + r);
    if (vectors) {
      s.u.assign(svd.u.data(), svd.u.data() + m * r);
      s.v.assign(svd.v.data(), svd.v.data() + n * r);
    }
    out = std::move(s);
    return Status::ok;
  }
  RandomizedSvdOptions ro;
  ro.rank = sample_rank(r, o);
  ro.power_iterations = o.power_iterations;
  ro.seed = o.seed;
  if (vectors) return randomized_svd(a, out, ro);
  out = LowRankSvd{};
  out.rows = m;
  out.cols = n;
  out.rank = ro.rank;
  return randomized_singular_values(a, out.sigma, ro);
}

/// Appends `count` copies of `value` (the tail model's uniform share).
void fill_tail(std::vector<double>& v, std::size_t count, double value) { v.insert(v.end(), count, value); }

/// σ(A) from the Gram: exact eigenvalues or the randomized top k + a uniform tail of the trace.
Status gram_sigma(const MatrixRef<const float>& gram, const PCriterionOptions& o,
                  std::vector<double>& sigma_a, bool& modelled) {
  const index_t d = gram.rows;
  std::vector<double> lambda;
  if (use_exact(d, o)) {
    const Eigen::MatrixXd g = map(gram).cast<double>();
    Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eig(g, Eigen::EigenvaluesOnly);
    if (eig.info() != Eigen::Success) return Status::breakdown;
    lambda.assign(eig.eigenvalues().data(), eig.eigenvalues().data() + d);
    std::sort(lambda.begin(), lambda.end(), std::greater<>());
  } else {
    RandomizedSvdOptions ro;
    ro.rank = sample_rank(d, o);
    ro.power_iterations = o.gram_power_iterations;
    ro.seed = o.seed + 1;
    // A Gram sum is symmetric positive semi-definite, its singular values its eigenvalues; a
    // corrupt one need not be, and its singular values are |λ|: a negative-definite Gram read
    // as a positive one and chose p with status ok, where the exact path keeps p (audit of
    // 2026-12-07). For a symmetric matrix u_i = sign(λ_i)·v_i, so λ_i < 0 shows as u_iᵀv_i < 0
    // and is clipped to 0, as the exact path clips its eigenvalues (the singular values are
    // those of randomized_singular_values(), bit for bit; the vectors cost d·k doubles each).
    LowRankSvd svd;
    if (const Status s = randomized_svd(gram, svd, ro); s != Status::ok) return s;
    lambda = svd.sigma;
    for (index_t i = 0; i < svd.rank; ++i) {
      double dot = 0.0;
      for (index_t j = 0; j < d; ++j)
        dot += svd.u_at(j, i) * svd.v_at(j, i);
      if (dot < 0.0) lambda[static_cast<std::size_t>(i)] = 0.0;
    }
    std::sort(lambda.begin(), lambda.end(), std::greater<>());
    double trace = 0.0, top = 0.0;
    for (index_t i = 0; i < d; ++i)
      trace += double(gram(i, i));
    for (double l : lambda)
      top += l;
    const double last = lambda.empty() ? 0.0 : lambda.back();
    const std::size_t missing = static_cast<std::size_t>(d) - lambda.size();
    if (missing > 0) fill_tail(lambda, missing, std::clamp((trace - top) / double(missing), 0.0, last));
    modelled = modelled || missing > 0;
  }
  sigma_a.resize(lambda.size());
  for (std::size_t i = 0; i < lambda.size(); ++i)
    sigma_a[i] = std::sqrt(std::max(0.0, lambda[i]));
  return Status::ok;
}

/// Iterations of one golden-section search of maximise_p(): each shrinks its interval, one scan
/// step (log(p_max/p_min)/(grid − 1)) wide, by 1/φ, so ⌈log(width/tolerance)/log φ⌉ of them
/// bring it to the tolerance (0 when it is already there). Valid options only.
int golden_steps(const PCriterionOptions& o) {
  const double width = (std::log(o.p_max) - std::log(o.p_min)) / double(o.grid - 1);
  const double phi = (1.0 + std::sqrt(5.0)) / 2.0;
  return width > o.tolerance ? static_cast<int>(std::ceil(std::log(width / o.tolerance) / std::log(phi))) : 0;
}

/// True when σ(A) has a positive finite value: an empty, all-zero (no input reached the layer)
/// or non-finite σ(A), or the clipped spectrum of a Gram with no positive eigenvalue, carries no
/// statistics. ‖A‖_{S_k} would then be 0 or not finite and the objectives ±∞ or NaN (exact and
/// exact_momentum divide by it), so every criterion treats it as "no descent known".
bool has_activations(const std::vector<double>& sigma_a) {
  bool positive = false;
  for (double v : sigma_a) {
    if (!std::isfinite(v)) return false;
    positive = positive || v > 0.0;
  }
  return positive;
}

/// log of the criterion's objective (log_objective()), for p > 1 finite and nonempty σ.
double log_objective_of(PCriterion criterion, double p, const LayerSpectra& s) {
  switch (criterion) {
    case PCriterion::exact: {
      // log J = (p/(p+1)) log Σ σ_G^{1+1/p} − ½ log ‖A‖²_{S_k}.
      const double g = log_sum_pow(s.sigma, 1.0 + 1.0 / p);
      if (g == kNegInf) return kNegInf;
      return (p / (p + 1.0)) * g - 0.5 * log_schatten_sq(s.sigma_a, p);
    }
    case PCriterion::exact_momentum: {
      // log f = 2 log N − log ‖A‖²_{S_k} − (2/(p+1)) log Σ σ^{(p+1)/p}, σ scaled by σ_max.
      const double num = weighted_power_sum(s.align, s.sigma, 1.0 / p);
      if (!(num > 0.0)) return kNegInf;
      return 2.0 * std::log(num) - log_schatten_sq(s.sigma_a, p) -
             (2.0 / (p + 1.0)) * log_sum_pow_relative(s.sigma, (p + 1.0) / p);
    }
    case PCriterion::exact_tightness: {
      const double num = weighted_power_sum(s.align, s.sigma, 1.0 / p);
      const double den = weighted_power_sum(s.gram_b, s.sigma, 2.0 / p);
      if (!(num > 0.0) || !(den > 0.0)) return kNegInf;
      return 2.0 * std::log(num) - std::log(den);
    }
  }
  return kNegInf;
}

}  // namespace

const char* to_string(PCriterion c) noexcept {
  switch (c) {
    case PCriterion::exact:
      return "exact";
    case PCriterion::exact_momentum:
      return "exact_momentum";
    case PCriterion::exact_tightness:
      return "exact_tightness";
  }
  return "?";
}

const char* check_criterion_options(const PCriterionOptions& o) noexcept {
  // An enum given another value (a cast, a corrupt configuration) would match no case below:
  // log_objective() would score every p −∞ and the criterion never choose.
  if (o.criterion != PCriterion::exact && o.criterion != PCriterion::exact_momentum &&
      o.criterion != PCriterion::exact_tightness)
    return "criterion: criterion must be exact, exact_momentum or exact_tightness";
  if (o.spectrum != SpectrumMethod::automatic && o.spectrum != SpectrumMethod::exact &&
      o.spectrum != SpectrumMethod::randomized)
    return "criterion: spectrum must be automatic, exact or randomized";
  if (!(o.p_min > 1.0) || !(o.p_max > o.p_min) || !std::isfinite(o.p_max))
    return "criterion: need 1 < p_min < p_max < inf";
  if (!(o.ema >= 0.0 && o.ema < 1.0)) return "criterion: ema must be in [0, 1)";
  if (!(o.randomized_fraction > 0.0 && o.randomized_fraction <= 1.0))
    return "criterion: randomized_fraction must be in (0, 1]";
  if (o.randomized_min_rank < 1 || o.randomized_max_rank < o.randomized_min_rank)
    return "criterion: need 1 <= randomized_min_rank <= randomized_max_rank";
  if (o.gram_power_iterations < 0 || o.gram_power_iterations > 50)
    return "criterion: gram_power_iterations must be in [0, 50]";
  if (o.power_iterations < 0 || o.power_iterations > 50)
    return "criterion: power_iterations must be in [0, 50]";
  if (o.grid < 3 || o.grid > 1000) return "criterion: grid must be in [3, 1000]";
  // The golden-section search works in log p ∈ [log p_min, log p_max] ⊂ (0, log p_max]: a double
  // there is resolved to 2⁻⁵² log p_max ≈ 2.2e-16 log p_max, so a tolerance below a few ulps can
  // never be met (x1 and x2 coincide). The floor 1e-12·log p_max is ≥ 4500 ulps of every iterate
  // and asks for p to 1e-12 relative, far below what the spectra resolve.
  if (!(o.tolerance >= kToleranceFloor * std::log(o.p_max)))
    return "criterion: tolerance must be >= 1e-12 * log(p_max)";
  return nullptr;
}

int maximise_p_evaluations(const PCriterionOptions& o) noexcept {
  if (check_criterion_options(o)) return 0;
  return o.grid + 2 * (2 + golden_steps(o));
}

namespace {
Status measure_spectra_unguarded(MatrixRef<const float> momentum, MatrixRef<const float> gradient,
                                 MatrixRef<const float> gram, const PCriterionOptions& o, LayerSpectra& out) {
  if (check_criterion_options(o)) return Status::invalid_argument;
  const bool uses_momentum = o.criterion != PCriterion::exact;
  const index_t m = gradient.rows, n = gradient.cols;
  if (m < 1 || n < 1 || !row_major(gradient) || !row_major(gram)) return Status::invalid_argument;
  if (uses_momentum && (momentum.rows != m || momentum.cols != n || !row_major(momentum)))
    return Status::invalid_argument;
  if (!gram.empty() && (gram.rows != n || gram.cols != n)) return Status::invalid_argument;
  if (!finite(gradient) || (uses_momentum && !finite(momentum)) || !finite(gram))
    return Status::non_finite_input;

  LayerSpectra s;
  const index_t r = std::min(m, n);
  const bool tightness = o.criterion == PCriterion::exact_tightness;
  LowRankSvd svd;
  if (const Status st = top_svd(uses_momentum ? momentum : gradient, uses_momentum, o, svd); st != Status::ok)
    return st;
  const index_t k = svd.rank;
  s.sigma = svd.sigma;
  if (uses_momentum) {
    // C_i = u_iᵀ G v_i: one GEMM G V (m × k), then k dot products, all in double. In float,
    // entries near FLT_MAX made G V (and (AᵀA) V below) overflow to ∞ on finite input; in double
    // |C_i| ≤ ‖G‖₂ ≤ √(mn)·FLT_MAX and B_i ≤ n·FLT_MAX cannot.
    const Eigen::Map<const Eigen::MatrixXd> v(svd.v.data(), n, k);
    const Eigen::MatrixXd gv = map(gradient).cast<double>() * v;
    s.align.resize(static_cast<std::size_t>(k));
    for (index_t i = 0; i < k; ++i) {
      double c = 0.0;
      for (index_t row = 0; row < m; ++row)
        c += svd.u_at(row, i) * gv(row, i);
      s.align[static_cast<std::size_t>(i)] = c;
    }
    if (tightness) {
      s.gram_b.resize(static_cast<std::size_t>(k));
      if (gram.empty()) {
        std::fill(s.gram_b.begin(), s.gram_b.end(), 1.0);  // whitened: vᵀ I v = 1
      } else {
        const Eigen::MatrixXd av = map(gram).cast<double>() * v;  // (AᵀA) V, n × k
        for (index_t i = 0; i < k; ++i)
          s.gram_b[static_cast<std::size_t>(i)] = v.col(i).dot(av.col(i));
      }
    }
  }
  if (k < r) {  // the tail model for the r − k values the randomized SVD did not compute
    const MatrixRef<const float>& x = uses_momentum ? momentum : gradient;
    double energy = 0.0, captured = 0.0, gx = 0.0, cs = 0.0;
    for (index_t i = 0; i < m; ++i)
      for (index_t j = 0; j < n; ++j) {
        energy += double(x(i, j)) * double(x(i, j));
        if (uses_momentum) gx += double(gradient(i, j)) * double(x(i, j));
      }
    for (index_t i = 0; i < k; ++i) {
      const double sg = s.sigma[static_cast<std::size_t>(i)];
      captured += sg * sg;
      if (uses_momentum) cs += s.align[static_cast<std::size_t>(i)] * sg;
    }
    const auto missing = static_cast<std::size_t>(r - k);
    const double st = std::clamp(std::sqrt(std::max(0.0, energy - captured) / double(missing)), 0.0,
                                 s.sigma.empty() ? 0.0 : s.sigma.back());
    fill_tail(s.sigma, missing, st);
    if (uses_momentum) fill_tail(s.align, missing, st > 0.0 ? (gx - cs) / (st * double(missing)) : 0.0);
    if (tightness) {
      double trace = double(n), btop = 0.0;  // whitened Gram: trace n
      if (!gram.empty()) {
        trace = 0.0;
        for (index_t i = 0; i < n; ++i)
          trace += double(gram(i, i));
      }
      for (double b : s.gram_b)
        btop += b;
      fill_tail(s.gram_b, missing, std::max(0.0, trace - btop) / double(n - k));
    }
    s.modelled_tail = true;
  }
  if (gram.empty()) {
    s.sigma_a.assign(static_cast<std::size_t>(n), 1.0);
  } else if (const Status st = gram_sigma(gram, o, s.sigma_a, s.modelled_tail); st != Status::ok) {
    return st;
  }
  // Double sums of finite floats stay finite (the largest, ‖M̃‖²_F, is ≤ mn·FLT_MAX²); this
  // guards the promise that ok means finite spectra, whatever a decomposition returns.
  for (const std::vector<double>* v : {&s.sigma, &s.align, &s.gram_b, &s.sigma_a})
    for (double x : *v)
      if (!std::isfinite(x)) return Status::out_of_range;
  out = std::move(s);
  return Status::ok;
}
}  // namespace

Status measure_spectra(MatrixRef<const float> momentum, MatrixRef<const float> gradient,
                       MatrixRef<const float> gram, const PCriterionOptions& o, LayerSpectra& out) {
  // A std::bad_alloc of the spectra's vectors or Eigen's matrices: out_of_memory, `out` untouched.
  return schatten::detail::status_guard(
      [&] { return measure_spectra_unguarded(momentum, gradient, gram, o, out); });
}

double log_objective(PCriterion criterion, double p, const LayerSpectra& s) {
  if (!(p > 1.0) || !std::isfinite(p) || s.sigma.empty() || !has_activations(s.sigma_a)) return kNegInf;
  const double v = log_objective_of(criterion, p, s);
  return std::isfinite(v) ? v : kNegInf;  // +∞ or NaN from degenerate spectra: no decrease known
}

PChoice maximise_p(const LayerSpectra& spectra, const PCriterionOptions& o, double previous) {
  PChoice c;
  c.p = previous;
  if (check_criterion_options(o)) return c;
  const double lo = std::log(o.p_min), hi = std::log(o.p_max);
  auto f = [&](double x) {
    ++c.evaluations;
    return log_objective(o.criterion, std::exp(x), spectra);
  };
  // Scan (its points recomputed where needed: no allocation).
  const int g = o.grid;
  const auto xs = [&](int i) { return lo + (hi - lo) * double(i) / double(g - 1); };
  int best = -1;
  double bf = kNegInf;
  for (int i = 0; i < g; ++i) {
    const double fi = f(xs(i));
    if (fi > kNegInf && (best < 0 || fi > bf)) best = i, bf = fi;
  }
  if (best < 0) return c;
  double bx = xs(best);
  // Golden-section search on each neighbouring interval (the maximum of a unimodal piece lies in
  // one of them); keeps the best point ever evaluated.
  const double inv_phi = (std::sqrt(5.0) - 1.0) / 2.0;
  // At most golden_steps() iterations (maximise_p_evaluations()), and none once rounding makes
  // x1 and x2 meet: the loop ends whatever the rounding does.
  const int steps = golden_steps(o);
  auto golden = [&](double a, double b) {
    double x1 = b - inv_phi * (b - a), x2 = a + inv_phi * (b - a);
    double f1 = f(x1), f2 = f(x2);
    for (int k = 0; k < steps && b - a > o.tolerance && x1 < x2; ++k) {
      if (f1 >= f2) {
        b = x2;
        x2 = x1;
        f2 = f1;
        x1 = b - inv_phi * (b - a);
        f1 = f(x1);
      } else {
        a = x1;
        x1 = x2;
        f1 = f2;
        x2 = a + inv_phi * (b - a);
        f2 = f(x2);
      }
    }
    if (f1 > bf) bx = x1, bf = f1;
    if (f2 > bf) bx = x2, bf = f2;
  };
  if (best > 0) golden(xs(best - 1), xs(best));
  if (best < g - 1) golden(xs(best), xs(best + 1));
  c.p = std::clamp(std::exp(bx), o.p_min, o.p_max);
  c.log_objective = bf;
  c.descends = true;
  if (o.criterion == PCriterion::exact_tightness) {
    // η*(p) = N/(2D); at p = ∞ σ^{1/p} = 1 for the kept values.
    const double n_p = weighted_power_sum(spectra.align, spectra.sigma, 1.0 / c.p);
    const double d_p = weighted_power_sum(spectra.gram_b, spectra.sigma, 2.0 / c.p);
    const double n_inf = weighted_power_sum(spectra.align, spectra.sigma, 0.0);
    const double d_inf = weighted_power_sum(spectra.gram_b, spectra.sigma, 0.0);
    const double ratio = (n_p / d_p) / (n_inf / d_inf);
    if (d_p > 0.0 && d_inf > 0.0 && n_inf > 0.0 && !std::isnan(ratio))
      c.step_multiplier = std::clamp(ratio, 0.5, 2.0);
  }
  return c;
}

Status smooth_spectra(LayerSpectra& s, const SmoothedStatistics& store, std::int64_t runs,
                      const PCriterionOptions& o) {
  if (check_criterion_options(o) || runs < 0) return Status::invalid_argument;
  struct Item {
    std::vector<double>* values;
    FloatBuffer* ema;
  };
  // At most three statistics, in a fixed array: no allocation, so nothing can throw.
  std::array<Item, 3> slots{};
  std::size_t used = 0;
  if (o.criterion == PCriterion::exact) slots[used++] = {&s.sigma, store.sigma};
  if (o.criterion != PCriterion::exact) slots[used++] = {&s.align, store.align};
  if (o.criterion == PCriterion::exact_tightness) slots[used++] = {&s.gram_b, store.gram_b};
  slots[used++] = {&s.sigma_a, store.sigma_a};
  const Item* const items_end = slots.data() + used;
  for (const Item* it = slots.data(); it != items_end; ++it)
    if (it->ema == nullptr || it->ema->size() != it->values->size()) return Status::invalid_argument;
  const double beta = o.ema;
  // Bias correction 1/(1 − β^n) after the n-th run (n = runs + 1, in double: runs may be
  // INT64_MAX in a corrupt checkpoint): the first run is its own measurement, later ones a
  // weighted mean.
  const double correction = 1.0 / (1.0 - std::pow(beta, double(runs) + 1.0));
  const auto next = [&](const Item& it, std::size_t i) {
    return static_cast<float>(beta * double((*it.ema)[i]) + (1.0 - beta) * (*it.values)[i]);
  };
  // An EMA that would leave the float range (or a NaN/∞ value or EMA) is never stored: it would
  // stay ∞ for good and no later run could choose p. Nothing changes then (out_of_range).
  for (const Item* it = slots.data(); it != items_end; ++it)
    for (std::size_t i = 0; i < it->values->size(); ++i)
      if (!std::isfinite(next(*it, i))) return Status::out_of_range;
  for (const Item* it = slots.data(); it != items_end; ++it)
    for (std::size_t i = 0; i < it->values->size(); ++i) {
      const float e = next(*it, i);
      (*it->ema)[i] = e;
      (*it->values)[i] = double(e) * correction;
    }
  return Status::ok;
}

}  // namespace schatten::surrogate
