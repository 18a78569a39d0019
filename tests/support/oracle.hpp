// SPDX-License-Identifier: Apache-2.0
/// \file
/// Independent double-precision oracles for the kernel tests, written from algorithms.md and not
/// from the library: the composite scalar map of a polynomial schedule, SVD-based spectral maps
/// U f(Σ) Vᵀ, and the error measures the tolerance table refers to.
#pragma once

#include <Eigen/Dense>

#include <functional>
#include <vector>

namespace schatten::test {

/// One odd polynomial a x + b x³ + c x⁵.
struct PolyStep {
  double a = 0, b = 0, c = 0;
};

/// p_{T−1}(… p_0(x)) with row t = steps[min(t, last)] (repeat-last tail).
double composite(const std::vector<PolyStep>& steps, double x, int iterations);

/// Thin SVD in double (Eigen JacobiSVD: slow, high relative accuracy; test sizes are small).
struct Svd {
  Eigen::MatrixXd u, v;
  Eigen::VectorXd s;
};
Svd svd(const Eigen::MatrixXd& a);

/// U f(Σ) Vᵀ.
Eigen::MatrixXd spectral_map(const Svd& d, const std::function<double(double)>& f);

/// clip(σ) = max(lower, min(σ, upper)), written from the definition of spectral_clip(): a lower
/// bound ≤ 0 is none, an upper bound of +∞ is none.
double clipped(double sigma, double lower, double upper);

/// The norm ν is built from: Frobenius (Σσ²)^{1/2}, Schatten-4 (Σσ⁴)^{1/4}, or none (ν = 1:
/// the input is already scaled, e.g. by aol_prescale).
enum class Norm { frobenius, schatten4, none };

/// The output a Newton–Schulz-family kernel must produce for input a in exact arithmetic:
/// U f(Σ/ν) Vᵀ with ν = safety·‖a‖ + eps (1 for Norm::none) and f the composite of `steps` over
/// `iterations`.
Eigen::MatrixXd predicted_polynomial_output(const Eigen::MatrixXd& a, const std::vector<PolyStep>& steps,
                                            int iterations, double safety, double eps,
                                            Norm norm = Norm::frobenius);

/// The same from a's SVD, when the test knows it (a built from prescribed factors): no SVD.
Eigen::MatrixXd predicted_polynomial_output(const Svd& d, const std::vector<PolyStep>& steps, int iterations,
                                            double safety, double eps, Norm norm = Norm::frobenius);

/// Largest |f(σ_i/ν) − 1| over the singular values of a: how far the exact-arithmetic output
/// is from the polar factor, in spectral norm.
double predicted_band_deviation(const Eigen::MatrixXd& a, const std::vector<PolyStep>& steps, int iterations,
                                double safety, double eps, Norm norm = Norm::frobenius);

/// The AOL pre-scaled input D a (rows ≤ cols) or a D (rows > cols), with
/// d_i = 1/(safety·√r_i + eps), r_i = Σ_j |G_ij| and G = a aᵀ (aᵀ a): Turbo-Muon's and optax's
/// row scaling, computed in double from the definition (a zero row keeps factor 0).
Eigen::MatrixXd aol_prescale(const Eigen::MatrixXd& a, double safety, double eps);

/// ‖QᵀQ − I‖₂ on the short side (QQᵀ when Q is wide).
double orthogonality_error(const Eigen::MatrixXd& q);
/// ‖M‖₂.
double spectral_norm(const Eigen::MatrixXd& m);
/// ‖A − B‖_F / max(‖B‖_F, tiny).
double relative_error(const Eigen::MatrixXd& a, const Eigen::MatrixXd& b);

}  // namespace schatten::test
