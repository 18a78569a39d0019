// SPDX-License-Identifier: Apache-2.0
/// \file
/// Property suite of polar() over prescribed spectra: every method × precision × spectrum is
/// compared with the exact-arithmetic prediction U f(Σ/ν) Vᵀ (oracle in double), and the
/// user-facing properties (orthogonality, distance to the exact polar factor) are checked
/// against the deviation the schedule's scalar map predicts.
#include <doctest/doctest.h>

#include "schatten/kernels/polar.hpp"
#include "schatten/reference/polar.hpp"
#include "support/convert.hpp"
#include "support/methods.hpp"
#include "support/oracle.hpp"
#include "support/seed.hpp"
#include "support/spectra.hpp"
#include "support/tolerances.hpp"

namespace kernels_test_polar {  // this file's scope in a unity build (tests/CMakeLists.txt)

using namespace schatten;
using namespace schatten::test;

TEST_SUITE("kernels.polar") {
  TEST_CASE_TEMPLATE("polar: output matches the scalar-map prediction on prescribed spectra", T, float,
                     double) {
    for (const MethodCase& mc : polar_methods()) {
      for (const SpectrumCase& sc : standard_spectra()) {
        CAPTURE(mc.name);
        CAPTURE(sc.name);
        const std::uint64_t seed = case_seed(sc.name.c_str());
        CAPTURE(seed);
        const Eigen::MatrixXd a = rounded<T>(make_matrix(sc, seed));
        REQUIRE(a.norm() > 0.0);  // non-trivial input
        std::vector<T> in = to_row_major<T>(a), out(in.size());
        const PolarReport r = polar(MatrixRef<const T>(in.data(), sc.rows, sc.cols),
                                    MatrixRef<T>(out.data(), sc.rows, sc.cols), mc.options);
        REQUIRE(r.status == Status::ok);
        CHECK(r.iterations == mc.options.iterations);

        const CoefficientSchedule s = resolved_schedule(mc.options);
        const auto steps = oracle_steps(mc.options);
        const int iters = mc.options.iterations;
        const Eigen::MatrixXd q = from_row_major(out.data(), sc.rows, sc.cols);
        // AOL: the iteration's input is D·a (its own oracle), which the methods then treat as
        // already scaled; its exact target is polar(D·a).
        const Normalization& nz = s.normalization;
        const bool aol = nz.kind == Normalization::Kind::aol;
        const Eigen::MatrixXd x = aol ? aol_prescale(a, nz.safety, nz.eps) : a;
        const Norm norm = aol                                         ? Norm::none
                          : nz.kind == Normalization::Kind::schatten4 ? Norm::schatten4
                                                                      : Norm::frobenius;
        const Eigen::MatrixXd pred = predicted_polynomial_output(x, steps, iters, nz.safety, nz.eps, norm);
        const double tol = rounding_tolerance<T>(mc.options);
        const double rel = relative_error(q, pred);
        CHECK(rel <= tol);

        // ‖E‖₂ ≤ ‖E‖_F = rel·‖pred‖_F; propagate to the two user-facing measures.
        const double e = rel * pred.norm();
        const bool full_rank = sc.name.find("rank_deficient") == std::string::npos;
        if (full_rank) {
          const double dev = predicted_band_deviation(x, steps, iters, nz.safety, nz.eps, norm);
          // ‖QᵀQ − I‖ ≤ max|f²−1| + 2‖Q_pred‖₂‖E‖₂ + ‖E‖₂², with max|f²−1| ≤ dev(2 + dev).
          const double slack = 1e-12;
          CHECK(orthogonality_error(q) <= dev * (2.0 + dev) + 2.0 * (1.0 + dev) * e + e * e + slack);
          // ‖Q − U Vᵀ‖₂ ≤ max|f − 1| + ‖E‖₂, against the library's SVD reference.
          Eigen::MatrixXd exact(sc.rows, sc.cols);
          REQUIRE(reference::polar(MatrixRef<const double>::col_major(x.data(), sc.rows, sc.cols),
                                   MatrixRef<double>::col_major(exact.data(), sc.rows, sc.cols)) ==
                  Status::ok);
          CHECK(spectral_norm(q - exact) <= dev + e + slack);
        }
      }
    }
  }
}

}  // namespace kernels_test_polar
