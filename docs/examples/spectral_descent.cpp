// SPDX-License-Identifier: Apache-2.0
/// \file
/// Example (compiled and run by the tests): compare update directions on the random-feature
/// least-squares model — SGD (D = G̃), Muon (D = polar(G̃) by QDWH), Schatten-4 Muon
/// (D = U Σ^{1/4} Vᵀ of G̃) and Kaon — by their alignment γ, descent potential φ, optimal step η*
/// and best decrease (docs/surrogate/descent.md).
#include <schatten/schatten.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

int main(int argc, char** argv) {
  schatten::Runtime runtime(argc, argv);
  using schatten::index_t;
  using schatten::MatrixRef;
  namespace sur = schatten::surrogate;

  // A 64 × 128 layer; input covariance with eigenvalues decaying from 1 to 1e-3.
  const index_t rows = 64, cols = 128;
  std::vector<double> lambda(cols);
  for (index_t i = 0; i < cols; ++i)
    lambda[i] = std::pow(1e-3, double(i) / (cols - 1));
  sur::RandomFeatureModel model;
  if (sur::RandomFeatureModel::random(rows, cols, lambda, /*seed=*/7, model) != schatten::Status::ok)
    return 1;

  // The student starts at zero; a mini-batch of 32 samples gives G̃.
  std::vector<double> w(rows * cols, 0.0), gb(w.size()), d(w.size());
  schatten::Rng rng(11);
  model.batch_gradient(MatrixRef<const double>(w.data(), rows, cols), 32, rng,
                       MatrixRef<double>(gb.data(), rows, cols));
  const MatrixRef<const double> gbr(gb.data(), rows, cols);
  const MatrixRef<double> dr(d.data(), rows, cols);

  auto report = [&](const char* name) {
    const sur::DescentDiagnostics r = model.diagnostics(MatrixRef<const double>(w.data(), rows, cols),
                                                        MatrixRef<const double>(d.data(), rows, cols), gbr);
    std::printf("%-22s gamma %6.3f  phi %9.3e  eta* %9.3e  best decrease %9.3e  (%s)\n", name, r.alignment,
                r.potential, r.optimal_step, r.best_decrease, schatten::to_string(r.status));
    return r.status == schatten::Status::ok;
  };

  bool ok = true;
  d = gb;  // SGD
  ok &= report("SGD");
  schatten::PolarOptions polar;
  polar.method = schatten::PolarMethod::qdwh;
  ok &= bool(schatten::polar(gbr, dr, polar));
  ok &= report("Muon (QDWH polar)");
  schatten::SpectralPowerOptions sp;
  sp.alpha = 0.25;  // Schatten-4: U Σ^{1/4} Vᵀ
  ok &= bool(schatten::spectral_power(gbr, dr, sp));
  ok &= report("Schatten-4 (alpha 1/4)");
  ok &= bool(schatten::kaon(gbr, dr));
  ok &= report("Kaon");

  // The nuclear norm of G̃ without an SVD, and through ⟨G̃, polar(G̃)⟩.
  double nuclear = 0.0;
  ok &= schatten::schatten_norm(gbr, 1.0, &nuclear) == schatten::Status::ok;
  std::printf("nuclear norm of the batch gradient: %.6f\n", nuclear);
  return ok ? 0 : 1;
}
