// SPDX-License-Identifier: Apache-2.0
/// \file
/// Example (compiled and run by the tests): the weights' spectral norm capped after every step
/// (SpectralClipWeights), as in Lipschitz-constrained training, and spectral_clip() itself.
///
/// The toy problem: fit W (32 × 48) to a target W* whose singular values run from 5 down to 0.1,
/// with the loss ½‖W − W*‖²_F (gradient W − W*), under the constraint ‖W‖₂ ≤ β = 2. The
/// Frobenius-nearest matrix with ‖·‖₂ ≤ β is hardcap(W*) = U min(Σ, β) Vᵀ, so projected gradient
/// descent converges to it. The program computes hardcap(W*) with spectral_clip(), runs
///   - SGD with the cap: chain(ScaleByLearningRate, SpectralClipWeights{{0, β}}) → hardcap(W*),
///   - Muon with the cap: σ_max(W) ≤ β after every step while the loss falls,
///   - Muon without it, whose σ_max passes β,
/// and fails unless each of these holds.
#include <schatten/optim/presets.hpp>
#include <schatten/schatten.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <vector>

namespace {
namespace opt = schatten::optim;
using schatten::index_t;
constexpr index_t kRows = 32, kCols = 48;
constexpr double kBeta = 2.0;

/// ‖A‖₂ by schatten_norm (q = ∞: certified to 4·32·2⁻⁵³ relative here, whatever the gap σ₁ − σ₂).
double spectral_norm(const std::vector<float>& a) {
  double n = 0.0;
  schatten::schatten_norm(schatten::MatrixRef<const float>(a.data(), kRows, kCols),
                          std::numeric_limits<double>::infinity(), &n);
  return n;
}

double loss(const std::vector<float>& w, const std::vector<float>& target) {
  double s = 0.0;
  for (std::size_t i = 0; i < w.size(); ++i)
    s += 0.5 * (double(w[i]) - target[i]) * (double(w[i]) - target[i]);
  return s;
}

/// Runs `steps` steps of `o` (a partition over one parameter "w") from W = 0; returns W and
/// the largest spectral norm seen after any step.
template <class Opt>
std::vector<float> train(Opt& o, const std::vector<float>& target, int steps, double& worst_norm) {
  std::vector<float> w(target.size(), 0.0f), g(target.size());
  worst_norm = 0.0;
  for (int t = 0; t < steps; ++t) {
    for (std::size_t i = 0; i < w.size(); ++i)
      g[i] = w[i] - target[i];  // ∇ ½‖W − W*‖²
    if (const opt::StepReport r = o.step({w.data()}, {g.data()}); !r) {
      std::fprintf(stderr, "step %d: %s\n", t, r.message);
      std::exit(1);
    }
    worst_norm = std::max(worst_norm, spectral_norm(w));
  }
  return w;
}
}  // namespace

int main(int argc, char** argv) {
  schatten::Runtime runtime(argc, argv);

  // W* = U diag(σ) Vᵀ with σ geometric from 5 down to 0.1 (Haar U, V), row-major float.
  std::vector<double> sigma(kRows), exact(kRows * kCols);
  for (index_t i = 0; i < kRows; ++i)
    sigma[i] = 5.0 * std::pow(0.02, double(i) / (kRows - 1));
  schatten::reference::matrix_with_spectrum(schatten::MatrixRef<double>(exact.data(), kRows, kCols), sigma,
                                            /*seed=*/7);
  const std::vector<float> target(exact.begin(), exact.end());

  // hardcap(W*) with the kernel: lower = 0 (no lower bound), upper = β.
  std::vector<float> capped(target.size());
  schatten::SpectralClipOptions clip;
  clip.upper = kBeta;
  if (const schatten::SpectralPowerReport r =
          schatten::spectral_clip(schatten::MatrixRef<const float>(target.data(), kRows, kCols),
                                  schatten::MatrixRef<float>(capped.data(), kRows, kCols), clip);
      !r) {
    std::fprintf(stderr, "spectral_clip: %s\n", r.message);
    return 1;
  }
  std::printf("||W*||_2 = %.3f, ||hardcap(W*)||_2 = %.6f (beta = %.1f)\n", spectral_norm(target),
              spectral_norm(capped), kBeta);

  const std::vector<opt::ParamSpec> spec = {{"w", {kRows, kCols}}};
  const opt::SpectralClipWeights cap{{0.0, kBeta}};

  // Projected SGD: W ← hardcap(W − 0.5 (W − W*)), a contraction onto hardcap(W*).
  auto sgd = opt::partition(
      spec, {"w"}, opt::route("w", opt::chain(opt::ScaleByLearningRate{opt::Schedule::constant(0.5)}, cap)));
  auto muon_capped = opt::partition(spec, {"w"}, opt::route("w", opt::chain(opt::muon(), cap)));
  opt::MuonOptions plain;
  auto muon_free = opt::partition(spec, {"w"}, opt::route("w", opt::muon(plain)));
  if (!sgd.init() || !muon_capped.init() || !muon_free.init()) return 1;

  double n_sgd = 0, n_capped = 0, n_free = 0;
  const std::vector<float> w_sgd = train(sgd, target, 60, n_sgd);
  const std::vector<float> w_capped = train(muon_capped, target, 300, n_capped);
  const std::vector<float> w_free = train(muon_free, target, 300, n_free);
  double d = 0.0, c = 0.0;
  for (std::size_t i = 0; i < capped.size(); ++i) {
    d += (double(w_sgd[i]) - capped[i]) * (double(w_sgd[i]) - capped[i]);
    c += double(capped[i]) * capped[i];
  }
  const double rel = std::sqrt(d / c);
  std::printf(
      "projected SGD, 60 steps: largest ||W||_2 %.6f, ||W - hardcap(W*)||_F / ||hardcap(W*)||_F %.2e\n",
      n_sgd, rel);
  std::printf("Muon + cap, 300 steps:   largest ||W||_2 %.6f, loss %.3f (constrained optimum %.3f)\n",
              n_capped, loss(w_capped, target), loss(capped, target));
  std::printf("Muon, 300 steps:         largest ||W||_2 %.6f, loss %.3f\n", n_free, loss(w_free, target));

  // The cap holds after every step (float rounding of W + u − W: 1e-5 relative is ample), the
  // projected SGD lands on hardcap(W*), and the unconstrained run passes β.
  const bool ok = n_sgd <= kBeta * (1 + 1e-5) && n_capped <= kBeta * (1 + 1e-5) && rel <= 1e-4 &&
                  n_free > 1.5 * kBeta &&
                  loss(w_capped, target) < 0.5 * loss(std::vector<float>(target.size()), target);
  std::printf("%s\n", ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
