// SPDX-License-Identifier: Apache-2.0
/// \file
/// The plain-array contract of polar(): batches, strides, in-place calls, bad input, options,
/// workspaces, precision control, the orthogonality report and the cost model.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "schatten/kernels/polar.hpp"
#include "schatten/kernels/spectral_power.hpp"
#include "schatten/reference/polar.hpp"
#include "support/batching.hpp"
#include "support/convert.hpp"
#include "support/methods.hpp"
#include "support/oracle.hpp"
#include "support/sanitizers.hpp"
#include "support/seed.hpp"
#include "support/spectra.hpp"
#include "support/threads.hpp"
#include "support/tolerances.hpp"

namespace kernels_test_polar_api {  // this file's scope in a unity build (tests/CMakeLists.txt)

using namespace schatten;
using namespace schatten::test;

namespace {
constexpr float kSentinel = -12345.0f;

template <class T>
std::vector<T> random_input(index_t rows, index_t cols, const char* name, std::uint64_t salt = 0) {
  SpectrumCase sc{name, rows, cols, geometric(std::min(rows, cols), 1e-2)};
  return to_row_major<T>(make_matrix(sc, case_seed(name, salt)));
}

template <class T>
bool untouched(const std::vector<T>& v) {
  for (T x : v)
    if (x != T(kSentinel)) return false;
  return true;
}

PolarOptions gram_options() {
  PolarOptions o;
  o.method = PolarMethod::gram_newton_schulz;
  return o;
}

/// Relative Frobenius error of a successful polar() output `out` (rows × cols, row-major) of the
/// input `a` against the output exact arithmetic predicts for the options' schedule.
double predicted_output_error(const Eigen::MatrixXd& a, const std::vector<float>& out,
                              const PolarOptions& o) {
  const Eigen::MatrixXd want = predicted_polynomial_output(a, oracle_steps(o), o.iterations,
                                                           resolved_schedule(o).normalization.safety, 0.0);
  return relative_error(from_row_major(out.data(), a.rows(), a.cols()), want);
}
}  // namespace

TEST_SUITE("kernels.polar.api") {
  TEST_CASE_TEMPLATE("a batch gives the results of separate calls: bit for bit on the host", T, float,
                     double) {
    // On CUDA a batch is one strided-batched cuBLAS GEMM per product, which may sum in another
    // order than the single-matrix GEMM: both outputs are then within the rounding bound of the
    // exact-arithmetic output (tolerances.hpp), so within twice that bound of each other.
    const index_t b = 3, r = 40, c = 70;
    std::vector<T> in;
    for (index_t i = 0; i < b; ++i) {
      auto m = random_input<T>(r, c, "batch", static_cast<std::uint64_t>(i));
      in.insert(in.end(), m.begin(), m.end());
    }
    for (const MethodCase& mc : polar_methods()) {
      CAPTURE(mc.name);
      std::vector<T> out(in.size());
      REQUIRE(polar(BatchedMatrixRef<const T>(in.data(), b, r, c), BatchedMatrixRef<T>(out.data(), b, r, c),
                    mc.options)
                  .status == Status::ok);
      for (index_t i = 0; i < b; ++i) {
        std::vector<T> one(static_cast<std::size_t>(r * c));
        REQUIRE(
            polar(MatrixRef<const T>(in.data() + i * r * c, r, c), MatrixRef<T>(one.data(), r, c), mc.options)
                .status == Status::ok);
        CHECK(agree_as_batch(out.data() + i * r * c, one.data(), one.size(),
                             2 * rounding_tolerance<T>(mc.options)));
      }
    }
  }

  TEST_CASE_TEMPLATE(
      "strides: padded and in-place calls are bit-identical and column-major agrees to rounding", T, float,
      double) {
    const index_t r = 33, c = 21, ld = 40;
    const std::vector<T> in = random_input<T>(r, c, "strided");
    std::vector<T> ref(in.size());
    REQUIRE(polar(MatrixRef<const T>(in.data(), r, c), MatrixRef<T>(ref.data(), r, c)).status == Status::ok);

    // Row-major with padded rows, in and out: the same memory order, so the same bits.
    std::vector<T> padded(static_cast<std::size_t>(r * ld), T(kSentinel)), out(padded.size(), T(kSentinel));
    for (index_t i = 0; i < r; ++i)
      for (index_t j = 0; j < c; ++j)
        padded[static_cast<std::size_t>(i * ld + j)] = in[static_cast<std::size_t>(i * c + j)];
    REQUIRE(polar(MatrixRef<const T>::row_major(padded.data(), r, c, ld),
                  MatrixRef<T>::row_major(out.data(), r, c, ld))
                .status == Status::ok);
    for (index_t i = 0; i < r; ++i) {
      for (index_t j = 0; j < c; ++j)
        CHECK(out[static_cast<std::size_t>(i * ld + j)] == ref[static_cast<std::size_t>(i * c + j)]);
      for (index_t j = c; j < ld; ++j)
        CHECK(out[static_cast<std::size_t>(i * ld + j)] == T(kSentinel));  // padding untouched
    }
    // Column-major input: the kernel iterates on the other orientation (A instead of Aᵀ, see
    // PolarShape), so the bits differ; both are within rounding of the same exact result.
    std::vector<T> cm(static_cast<std::size_t>(ld * c), T(kSentinel)), cmo(cm.size(), T(kSentinel));
    for (index_t i = 0; i < r; ++i)
      for (index_t j = 0; j < c; ++j)
        cm[static_cast<std::size_t>(j * ld + i)] = in[static_cast<std::size_t>(i * c + j)];
    REQUIRE(polar(MatrixRef<const T>::col_major(cm.data(), r, c, ld),
                  MatrixRef<T>::col_major(cmo.data(), r, c, ld))
                .status == Status::ok);
    Eigen::MatrixXd q_cm(r, c);
    for (index_t i = 0; i < r; ++i)
      for (index_t j = 0; j < c; ++j)
        q_cm(i, j) = double(cmo[static_cast<std::size_t>(j * ld + i)]);
    CHECK(relative_error(q_cm, from_row_major(ref.data(), r, c)) <=
          2 * rounding_tolerance<T>(PolarOptions{}));
    // In place.
    std::vector<T> io = in;
    REQUIRE(polar(MatrixRef<const T>(io.data(), r, c), MatrixRef<T>(io.data(), r, c)).status == Status::ok);
    CHECK(io == ref);
    // Determinism: the same call twice.
    std::vector<T> again(in.size());
    REQUIRE(polar(MatrixRef<const T>(in.data(), r, c), MatrixRef<T>(again.data(), r, c)).status ==
            Status::ok);
    CHECK(again == ref);
  }

  TEST_CASE_TEMPLATE("NaN or Inf anywhere: non_finite_input with the bad matrix named and nothing written", T,
                     float, double) {
    const index_t b = 3, r = 8, c = 12;
    for (T bad : {std::numeric_limits<T>::quiet_NaN(), std::numeric_limits<T>::infinity(),
                  -std::numeric_limits<T>::infinity()}) {
      for (const PolarOptions& o : {PolarOptions{}, gram_options()}) {
        std::vector<T> in(static_cast<std::size_t>(b * r * c), T(0.5)), out(in.size(), T(kSentinel));
        in[static_cast<std::size_t>(1 * r * c + 5)] = bad;
        const PolarReport rep =
            polar(BatchedMatrixRef<const T>(in.data(), b, r, c), BatchedMatrixRef<T>(out.data(), b, r, c), o);
        CHECK(rep.status == Status::non_finite_input);
        CHECK(rep.bad_item == 1);
        CHECK(std::string(rep.message).size() > 0);
        CHECK(untouched(out));
        // In place: the input is left as it was.
        std::vector<T> io = in;
        CHECK(polar(BatchedMatrixRef<const T>(io.data(), b, r, c), BatchedMatrixRef<T>(io.data(), b, r, c), o)
                  .status == Status::non_finite_input);
        CHECK(std::equal(io.begin(), io.end(), in.begin(),
                         [](T x, T y) { return x == y || (x != x && y != y); }));
      }
    }
  }

  TEST_CASE_TEMPLATE("all-zero matrices give zero and not NaN also inside a batch", T, float, double) {
    const index_t r = 6, c = 9;
    std::vector<T> in = random_input<T>(r, c, "zero_batch");
    in.resize(static_cast<std::size_t>(2 * r * c), T(0));  // second matrix all zero
    for (const PolarOptions& o : {PolarOptions{}, gram_options()}) {
      std::vector<T> out(in.size(), T(kSentinel));
      REQUIRE(
          polar(BatchedMatrixRef<const T>(in.data(), 2, r, c), BatchedMatrixRef<T>(out.data(), 2, r, c), o)
              .status == Status::ok);
      for (index_t i = r * c; i < 2 * r * c; ++i)
        CHECK(out[static_cast<std::size_t>(i)] == T(0));
      for (index_t i = 0; i < r * c; ++i)
        CHECK(std::isfinite(out[static_cast<std::size_t>(i)]));
    }
  }

  TEST_CASE_TEMPLATE("empty and 1x1 inputs", T, float, double) {
    std::vector<T> out(4, T(kSentinel));
    T dummy = 1;
    for (auto [r, c] : {std::pair<index_t, index_t>{0, 5}, {5, 0}, {0, 0}}) {
      CHECK(polar(MatrixRef<const T>(&dummy, r, c), MatrixRef<T>(out.data(), r, c)).status == Status::ok);
    }
    CHECK(
        polar(BatchedMatrixRef<const T>(&dummy, 0, 3, 3), BatchedMatrixRef<T>(out.data(), 0, 3, 3)).status ==
        Status::ok);
    CHECK(polar(MatrixRef<const T>(nullptr, 0, 3), MatrixRef<T>(nullptr, 0, 3)).status == Status::ok);
    CHECK(untouched(out));
    // 1×1: the method maps a to sign(a)·f(|a|/(safety·|a| + eps)), f the composite scalar map
    // (every norm of a 1×1 matrix is |a|; with eps = 0 the argument is 1/safety).
    for (const MethodCase& mc : polar_methods()) {
      CAPTURE(mc.name);
      for (T a : {T(-3.5), T(2e-20), T(7e25)}) {
        T q = 0;
        REQUIRE(polar(MatrixRef<const T>(&a, 1, 1), MatrixRef<T>(&q, 1, 1), mc.options).status == Status::ok);
        const CoefficientSchedule s = resolved_schedule(mc.options);
        const double m = std::fabs(double(a));
        const double expect =
            (a < 0 ? -1 : 1) * composite(oracle_steps(mc.options),
                                         m / (s.normalization.safety * m + s.normalization.eps),
                                         mc.options.iterations);
        CHECK(double(q) == doctest::Approx(expect).epsilon(rounding_tolerance<T>(mc.options)));
      }
    }
  }

  TEST_CASE("invalid arguments: a clear status and nothing written") {
    const index_t r = 4, c = 6;
    std::vector<float> in = random_input<float>(r, c, "invalid"), out(in.size(), kSentinel);
    const MatrixRef<const float> a(in.data(), r, c);
    const MatrixRef<float> q(out.data(), r, c);
    auto expect_invalid = [&](const PolarReport& rep) {
      CHECK(rep.status == Status::invalid_argument);
      CHECK(std::string(rep.message).size() > 0);
      CHECK(untouched(out));
    };
    expect_invalid(polar(a, MatrixRef<float>(out.data(), c, r)));                 // shape mismatch
    expect_invalid(polar(a, MatrixRef<float>::row_major(out.data(), r, c, 0)));   // overlapping rows
    expect_invalid(polar(a, MatrixRef<float>::strided(out.data(), r, c, 2, 1)));  // rows overlap columns
    expect_invalid(polar(MatrixRef<const float>(nullptr, r, c), q));              // null input
    expect_invalid(polar(MatrixRef<const float>::strided(in.data(), r, c, -1, 1), q));  // negative stride
    expect_invalid(polar(MatrixRef<const float>(in.data(), -1, c), MatrixRef<float>(out.data(), -1, c)));
    PolarOptions o;
    o.iterations = -1;
    expect_invalid(polar(a, q, o));
    o.iterations = 1001;
    expect_invalid(polar(a, q, o));
    o = {};
    o.schedule = schedules::polar_express_5();
    o.schedule.tail = ScheduleTail::error;
    o.iterations = 6;
    expect_invalid(polar(a, q, o));
    o = {};
    o.schedule = schedules::keller_jordan();
    o.schedule.steps[0].b = std::numeric_limits<double>::quiet_NaN();
    expect_invalid(polar(a, q, o));
    o = {};
    o.schedule = schedules::keller_jordan();
    o.schedule.normalization.safety = 0.0;
    expect_invalid(polar(a, q, o));
    o.schedule.normalization.safety = 1.0;
    o.schedule.normalization.eps = -1e-7;
    expect_invalid(polar(a, q, o));
    o = gram_options();
    o.gram_restarts = {0};
    expect_invalid(polar(a, q, o));
    // An unknown tail (past the rows) made CoefficientSchedule::at() throw: internal_error ("a
    // bug") from polar(), and an exception out of polar_iterate_bound().
    o = {};
    o.schedule = schedules::polar_express_5();
    o.schedule.tail = static_cast<ScheduleTail>(7);
    o.iterations = 8;
    expect_invalid(polar(a, q, o));
    CHECK(polar_iterate_bound(o) == HUGE_VAL);
    CHECK(check_polar_options(PolarOptions{}) == nullptr);
  }

  TEST_CASE("a precision that is not a named Precision is invalid_argument everywhere, with its message") {
    // A Precision cast from another integer reached the 16-bit dispatch and came back as
    // `unsupported`, "bf16/fp16 iteration needs the newton_schulz or polar_express method".
    const index_t r = 4, c = 6;
    std::vector<float> in = random_input<float>(r, c, "unknown precision"), out(in.size(), kSentinel);
    const MatrixRef<const float> a(in.data(), r, c);
    const MatrixRef<float> q(out.data(), r, c);
    const auto unknown = static_cast<Precision>(42);
    CHECK_FALSE(known_precision(unknown));
    const auto refused = [&](Status st, const char* message) {
      CHECK(st == Status::invalid_argument);
      CHECK(std::string(message) == kUnknownPrecision);
      CHECK(untouched(out));
    };
    for (const PolarMethod m : {PolarMethod::newton_schulz, PolarMethod::polar_express,
                                PolarMethod::gram_newton_schulz, PolarMethod::qdwh}) {
      CAPTURE(to_string(m));
      PolarOptions o;
      o.method = m;
      o.compute = unknown;
      const PolarReport rep = polar(a, q, o);
      refused(rep.status, rep.message);
      CHECK(std::string(check_polar_options(o)) == kUnknownPrecision);
      CHECK_FALSE(precision_supported(unknown, m));
    }
    QdwhOptions qo;
    qo.compute = unknown;
    const QdwhReport qr = qdwh(a, q, qo);
    refused(qr.status, qr.message);
    CHECK(std::string(check_qdwh_options(qo)) == kUnknownPrecision);
    // spectral_power's rational method iterates in qdwh.compute, its polynomial one in
    // polynomial_compute; spectral_clip's polynomial method in polar.compute, its QDWH one in
    // qdwh.compute.
    for (const SpectralPowerMethod m : {SpectralPowerMethod::rational, SpectralPowerMethod::polynomial}) {
      SpectralPowerOptions so;
      so.alpha = 0.5;
      so.method = m;
      (m == SpectralPowerMethod::rational ? so.qdwh.compute : so.polynomial_compute) = unknown;
      const SpectralPowerReport sr = spectral_power(a, q, so);
      refused(sr.status, sr.message);
      CHECK(std::string(check_spectral_power_options(so)) == kUnknownPrecision);
    }
    for (const SpectralClipMethod m : {SpectralClipMethod::polynomial, SpectralClipMethod::qdwh}) {
      SpectralClipOptions co;
      co.upper = 0.5;
      co.method = m;
      (m == SpectralClipMethod::polynomial ? co.polar.compute : co.qdwh.compute) = unknown;
      const SpectralPowerReport cr = spectral_clip(a, q, co);
      refused(cr.status, cr.message);
      CHECK(std::string(check_spectral_clip_options(co)) == kUnknownPrecision);
    }
    SchattenNormOptions no;
    no.qdwh.compute = unknown;
    double norm = -1.0;
    CHECK(schatten_norm(a, 3.0, &norm, no) == Status::invalid_argument);
    CHECK(norm == -1.0);
  }

  TEST_CASE("bf16/fp16 iteration: near the exact-arithmetic output where supported and refused elsewhere") {
    // 96 × 160 float input, singular values a log grid of [1e-3, 1]. The oracle is the output
    // exact arithmetic predicts (SVD in double). Tolerances: every step rounds its GEMM results
    // to 16 bits (u = 2⁻⁸ for bf16, 2⁻¹¹ for fp16) and later steps amplify earlier errors by their
    // slopes (up to ~8 at the small singular values for Polar Express's first rows), so
    // ≈ 5·6·u relative: 0.12 / 0.015. Measured on an H200: bf16 0.059 (NS) and 0.078 (PE),
    // fp16 0.0075 and 0.0095 — the bound leaves room for other GPUs' GEMM kernels.
    SpectrumCase sc{"lowp", 96, 160, geometric(96, 1e-3)};
    const std::uint64_t seed = case_seed("lowp");
    CAPTURE(seed);
    const Eigen::MatrixXd a = make_matrix(sc, seed);
    std::vector<float> in = to_row_major<float>(a);
    for (Precision p : {Precision::bf16, Precision::fp16}) {
      for (PolarMethod m :
           {PolarMethod::newton_schulz, PolarMethod::polar_express, PolarMethod::gram_newton_schulz}) {
        CAPTURE(std::string(to_string(p)));
        CAPTURE(static_cast<int>(m));
        PolarOptions o;
        o.compute = p;
        o.method = m;
        std::vector<float> out(in.size(), kSentinel);
        const PolarReport rep =
            polar(MatrixRef<const float>(in.data(), 96, 160), MatrixRef<float>(out.data(), 96, 160), o);
        if (!precision_supported(p, m)) {
          CHECK(rep.status == Status::unsupported);
          CHECK(untouched(out));
          continue;
        }
        REQUIRE(rep.status == Status::ok);
        const double err = predicted_output_error(a, out, o);
        MESSAGE(std::string(to_string(p)) << " method " << static_cast<int>(m) << ": relative error " << err);
        CHECK(err <= (p == Precision::bf16 ? 0.12 : 0.015));
      }
    }
    CHECK_FALSE(precision_supported(Precision::bf16, PolarMethod::gram_newton_schulz));
    CHECK_FALSE(precision_supported(Precision::bf16, PolarMethod::qdwh));
    CHECK(precision_supported(Precision::fp32, PolarMethod::qdwh));
  }

  TEST_CASE("AOL in 16 bits: a row far below the others is loaded at its own scale") {
    // AOL's row factors come from the first Gram, after the load; in fp16 the input was loaded as
    // A/‖A‖_F, so a row 1e-6 of the others fell below fp16's subnormals and came out 0 after AOL
    // rescaled it (relative error 1; bf16 0.0075; audit of 2026-12-07). The rows are now loaded
    // at unit scale by powers of two (exact) and AOL divides them out. Oracle: the same call in
    // fp64. Tolerance: the other rows' error is a 16-bit iteration's (measured fp16 0.0077, bf16
    // 0.030 on this input; the bound of the test above is 0.015 / 0.12); the small row is held
    // to the same bound.
    const index_t r = 8, c = 128;
    SpectrumCase sc{"aol_lowp", r, c, geometric(r, 0.5)};
    const std::uint64_t seed = case_seed("aol_lowp");
    CAPTURE(seed);
    Eigen::MatrixXd a = make_matrix(sc, seed);
    a.row(r - 1) *= 1e-6;
    const std::vector<float> in = to_row_major<float>(a);
    const auto run = [&](Precision p) {
      PolarOptions o;
      o.method = PolarMethod::newton_schulz;
      o.compute = p;
      CoefficientSchedule s = resolved_schedule(o);
      s.normalization.kind = Normalization::Kind::aol;
      o.schedule = s;
      std::vector<float> out(in.size(), kSentinel);
      REQUIRE(polar(MatrixRef<const float>(in.data(), r, c), MatrixRef<float>(out.data(), r, c), o).status ==
              Status::ok);
      return from_row_major(out.data(), r, c);
    };
    const Eigen::MatrixXd want = run(Precision::fp64);
    REQUIRE(want.row(r - 1).norm() > 0.1);  // AOL brings every row to order one
    for (Precision p : {Precision::bf16, Precision::fp16}) {
      if (!precision_supported(p, PolarMethod::newton_schulz)) continue;
      CAPTURE(std::string(to_string(p)));
      const Eigen::MatrixXd got = run(p);
      for (index_t i = 0; i < r; ++i) {
        CAPTURE(i);
        CHECK((got.row(i) - want.row(i)).norm() / want.row(i).norm() <=
              (p == Precision::bf16 ? 0.12 : 0.015));
      }
    }
  }

  TEST_CASE("16-bit Polar Express at the top of its interval: the error follows the schedule's slope") {
    // A rank-one-dominated input (σ = 1, then 1e-3 × 63), whose ‖A‖₂/‖A‖_F ≈ 1, puts x₀ = σ₁/ν
    // at 1/safety, where Polar Express's composite f is steepest: |f′(x₀)| = 85 for the 5-row
    // reference table (x₀ = 1/1.01) and 168 for the deployed table (1/1.02); Keller Jordan's
    // quintic has |f′| ≈ 1. 16-bit iteration behaves like f(x₀(1 + η)) with η about 0.1·u
    // (u = 2⁻⁸ bf16, 2⁻¹¹ fp16): over 40 seeds at 64 × 192 the top direction's value uᵀQv came
    // back within 0.035 / 0.067 of f(x₀) in bf16 and 0.0037 / 0.0086 in fp16 (at most 0.10·u·|f′|;
    // 0.12·u·|f′| at 768 × 2304), against 1e-5 in fp32 (docs/kernels/polar.md, "Where 16 bits
    // cost most"). Checked at 0.3·u·|f′(x₀)|, about 3× that. A normalisation rounded to 16 bits
    // would move x₀ by up to u/2 and the output by up to 0.5·u·|f′|, a failure of the kind
    // anchors.md (c.6) reports, which the double normalisation avoids.
    const index_t r = 64, c = 192;
    std::vector<double> sigma(static_cast<std::size_t>(r), 1e-3);
    sigma[0] = 1.0;
    const std::uint64_t seed = case_seed("lowp_top");
    CAPTURE(seed);
    Eigen::MatrixXd a(r, c);
    std::vector<double> u, v;
    REQUIRE(reference::matrix_with_spectrum(MatrixRef<double>::col_major(a.data(), r, c), sigma, seed, &u,
                                            &v) == Status::ok);
    const Eigen::MatrixXd left = from_row_major(u.data(), r, r), right = from_row_major(v.data(), c, r);
    a = rounded<float>(a);
    const std::vector<float> in = to_row_major<float>(a);
    PolarOptions reference_table, deployed;
    reference_table.method = deployed.method = PolarMethod::polar_express;
    deployed.schedule = schedules::polar_express_5();
    for (const PolarOptions& base : {reference_table, deployed}) {
      const CoefficientSchedule s = resolved_schedule(base);
      const double x0 = 1.0 / (s.normalization.safety * a.norm() + s.normalization.eps), h = 1e-7;
      const auto steps = oracle_steps(base);
      const double f = composite(steps, x0, base.iterations);
      const double slope =
          (composite(steps, x0 + h, base.iterations) - composite(steps, x0 - h, base.iterations)) / (2 * h);
      CAPTURE(s.name);
      CHECK(std::fabs(slope) >= 50.0);  // the premise: the steep end of the schedule
      for (const Precision p : {Precision::bf16, Precision::fp16}) {
        CAPTURE(std::string(to_string(p)));
        PolarOptions o = base;
        o.compute = p;
        std::vector<float> out(in.size());
        REQUIRE(
            polar(MatrixRef<const float>(in.data(), r, c), MatrixRef<float>(out.data(), r, c), o).status ==
            Status::ok);
        const double top = left.col(0).dot(from_row_major(out.data(), r, c) * right.col(0));
        const double unit = p == Precision::bf16 ? 0x1p-8 : 0x1p-11;
        CHECK(std::fabs(top - f) <= 0.3 * unit * std::fabs(slope));
      }
    }
  }

  TEST_CASE("bf16 iteration at k >= 1024 (panels on CUDA, the portable triangle elsewhere)") {
    // k = 1100 ≥ 2·kSymmetricPanelRows: with cuBLAS the symmetric products run as GEMM row panels
    // (3 panels) in bf16; elsewhere as portable_sym_product (9 × 9 tiles of 128, 45 computed).
    // Same oracle and bound as the 96 × 160 case above (the bound does not depend on k: each
    // product is rounded to 16 bits once, with fp32 accumulation), for symmetric_gram on and,
    // with cuBLAS, off. The portable kernel sums every entry's products in the same order
    // whether the triangle or the full product computes it, so there the two settings give the
    // same bits (the "symmetric_gram on and off give the same bits" case checks that on smaller
    // shapes) and the off setting, a plain GEMM as in the case above, is left out: on the CPU one
    // call took 3.4 s in a Release build and about 45 s under the sanitizers. The
    // oracle is built from the prescribed factors (an SVD of 1100 × 1200 in double would take
    // longer than the calls).
#if !defined(KOKKOS_ENABLE_CUDA)
    // Not under AddressSanitizer on the host: there this one call took 75–80 s, the longest test
    // of the sanitizer job (538 CPU-s in all, 2026-12-07), and on the host it runs the loops of
    // "16-bit iteration outside CUDA: symmetric_gram on and off give the same bits" (full and
    // partial tiles of 128, several blocks of the inner dimension, a batch), which the sanitizers
    // run, at 9 × 9 tiles instead of 2 × 2: no code that case leaves out. Its accuracy here is
    // checked by the Release job (12 s).
    if (schatten::test::kAddressSanitizer) {
      MESSAGE("bf16 k = 1100: left to the Release job under AddressSanitizer");
      return;
    }
#endif
    const index_t r = 1100, c = 1200;
    const std::vector<double> sigma = geometric(r, 1e-3);
    const std::uint64_t seed = case_seed("lowp_panels");
    CAPTURE(seed);
    Eigen::MatrixXd a(r, c);
    std::vector<double> u, v;
    REQUIRE(reference::matrix_with_spectrum(MatrixRef<double>::col_major(a.data(), r, c), sigma, seed, &u,
                                            &v) == Status::ok);
    const Svd factors{from_row_major(u.data(), r, r), from_row_major(v.data(), c, r),
                      Eigen::Map<const Eigen::VectorXd>(sigma.data(), r)};
    const std::vector<float> in = to_row_major<float>(a);
    PolarOptions o;
    o.compute = Precision::bf16;
    o.method = PolarMethod::newton_schulz;
    const Eigen::MatrixXd want = predicted_polynomial_output(factors, oracle_steps(o), o.iterations,
                                                             resolved_schedule(o).normalization.safety, 0.0);
    for (bool symmetric : {true, false}) {
#if !defined(KOKKOS_ENABLE_CUDA)
      if (!symmetric) break;
#endif
      CAPTURE(symmetric);
      o.symmetric_gram = symmetric;
      std::vector<float> out(in.size());
      REQUIRE(polar(MatrixRef<const float>(in.data(), r, c), MatrixRef<float>(out.data(), r, c), o).status ==
              Status::ok);
      const double err = relative_error(from_row_major(out.data(), r, c), want);
      MESSAGE("bf16 k = 1100, symmetric_gram " << symmetric << ": relative error " << err);
      CHECK(err <= 0.12);
    }
  }

  TEST_CASE("precision control: fp64 iteration of float data and fp32 iteration of double data") {
    const index_t r = 48, c = 64;
    SpectrumCase sc{"precision", r, c, geometric(48, 1e-3)};
    const Eigen::MatrixXd a = rounded<float>(make_matrix(sc, case_seed("precision")));
    PolarOptions o;  // Polar Express, 5 steps
    const CoefficientSchedule s = resolved_schedule(o);
    const Eigen::MatrixXd pred =
        predicted_polynomial_output(a, oracle_steps(o), o.iterations, s.normalization.safety, 0.0);

    std::vector<float> fin = to_row_major<float>(a), f32(fin.size()), f64(fin.size());
    REQUIRE(polar(MatrixRef<const float>(fin.data(), r, c), MatrixRef<float>(f32.data(), r, c), o).status ==
            Status::ok);
    o.compute = Precision::fp64;
    REQUIRE(polar(MatrixRef<const float>(fin.data(), r, c), MatrixRef<float>(f64.data(), r, c), o).status ==
            Status::ok);
    const double e32 = relative_error(from_row_major(f32.data(), r, c), pred);
    const double e64 = relative_error(from_row_major(f64.data(), r, c), pred);
    // fp64 iteration: only the final rounding to float remains (≤ ε_f relative per entry).
    CHECK(e64 <= 2 * std::numeric_limits<float>::epsilon());
    CHECK(e64 < e32);

    std::vector<double> din = to_row_major<double>(a), d32(din.size());
    o.compute = Precision::fp32;
    REQUIRE(polar(MatrixRef<const double>(din.data(), r, c), MatrixRef<double>(d32.data(), r, c), o).status ==
            Status::ok);
    CHECK(relative_error(from_row_major(d32.data(), r, c), pred) <= rounding_tolerance<float>(o));
  }

  TEST_CASE_TEMPLATE("orthogonality report equals the oracle's ||QQ^T - I||_F / sqrt(k)", T, float, double) {
    const index_t r = 30, c = 50;
    const std::vector<T> in = random_input<T>(r, c, "orthogonality");
    for (const MethodCase& mc : polar_methods()) {
      CAPTURE(mc.name);
      PolarOptions o = mc.options;
      o.compute_orthogonality_error = true;
      std::vector<T> out(in.size());
      const PolarReport rep = polar(MatrixRef<const T>(in.data(), r, c), MatrixRef<T>(out.data(), r, c), o);
      REQUIRE(rep.status == Status::ok);
      const Eigen::MatrixXd q = from_row_major(out.data(), r, c);
      const double want = (q * q.transpose() - Eigen::MatrixXd::Identity(r, r)).norm() / std::sqrt(double(r));
      // The report comes from the iterate before the final rounding to T and its Gram is formed
      // in T: the two agree to rounding, ε_T per entry of QQᵀ, RMS over k² entries / √k.
      CHECK(std::fabs(rep.orthogonality_error - want) <= 1e-3 * want + 8 * std::numeric_limits<T>::epsilon());
    }
    std::vector<T> out(in.size());
    CHECK(polar(MatrixRef<const T>(in.data(), r, c), MatrixRef<T>(out.data(), r, c)).orthogonality_error ==
          -1.0);
  }

  TEST_CASE("a caller-owned workspace is sized by polar_workspace_bytes and reused") {
    const index_t r = 64, c = 96;
    const std::vector<float> in = random_input<float>(r, c, "workspace");
    std::vector<float> o1(in.size()), o2(in.size()), o3(in.size());
    Workspace ws;
    CHECK(ws.capacity() == 0);
    for (const MethodCase& mc : polar_methods()) {
      CAPTURE(mc.name);
      REQUIRE(
          polar(MatrixRef<const float>(in.data(), r, c), MatrixRef<float>(o1.data(), r, c), mc.options, &ws)
              .status == Status::ok);
      CHECK(ws.capacity() >= polar_workspace_bytes(r, c, 1, mc.options));
      const std::size_t cap = ws.capacity();
      REQUIRE(
          polar(MatrixRef<const float>(in.data(), r, c), MatrixRef<float>(o2.data(), r, c), mc.options, &ws)
              .status == Status::ok);
      CHECK(ws.capacity() == cap);  // no regrowth on the second call
      REQUIRE(polar(MatrixRef<const float>(in.data(), r, c), MatrixRef<float>(o3.data(), r, c), mc.options)
                  .status == Status::ok);
      CHECK(o1 == o2);
      CHECK(o1 == o3);
    }
    // Sizes: NS needs 2 k×n + 2 k×k, Gram NS 2 k×n + 5 k×k (plus alignment and the factors).
    const std::size_t k = 64, n = 96, f = sizeof(float);
    CHECK(polar_workspace_bytes(r, c, 1, PolarOptions{}) >= (2 * k * n + 2 * k * k) * f);
    CHECK(polar_workspace_bytes(r, c, 1, gram_options()) >= (2 * k * n + 5 * k * k) * f);
    CHECK(polar_workspace_bytes(r, c, 3, PolarOptions{}, Precision::fp64) >= 3 * (2 * k * n + 2 * k * k) * 8);
    ws.release();
    CHECK(ws.capacity() == 0);
  }

  TEST_CASE("two host threads with their own workspaces get the bits of one thread alone") {
    // The thread contract (docs/conventions.md "Threads"): calls with separate workspaces may
    // overlap. Kokkos 3.4's Serial backend shares one buffer between all threads for reductions
    // and team scratch; before the library's launches took a lock around it (compat.hpp
    // shared_buffer_lock, docs/reliability.md Finding 84), 29 of 60 overlapping bf16 calls and
    // 23 of 60 batched ones gave other bits with status ok. Each thread runs each call 10 times
    // on its own input (a different spectrum seed); every result must equal, bit for bit, the
    // same call made before any thread started (the CPU is deterministic: docs/conventions.md).
    struct Call {
      const char* name;
      index_t batch, rows, cols;
      Precision compute;
      bool power;  // spectral_power (QDWH, its Cholesky's reductions) instead of polar()
    };
    const Call calls[] = {{"bf16 portable tiles", 1, 128, 192, Precision::bf16, false},
                          {"bf16 batch of 16", 16, 32, 48, Precision::bf16, false},
                          {"fp32 polar", 1, 128, 192, Precision::fp32, false},
                          {"fp32 spectral_power", 1, 64, 96, Precision::fp32, true}};
    constexpr int kThreads = 2, kRounds = 10;
    for (const Call& c : calls) {
      CAPTURE(c.name);
      auto run = [&c](const std::vector<float>& in, std::vector<float>& out, Workspace& ws) {
        const BatchedMatrixRef<const float> a(in.data(), c.batch, c.rows, c.cols);
        const BatchedMatrixRef<float> q(out.data(), c.batch, c.rows, c.cols);
        if (c.power) {
          SpectralPowerOptions o;
          o.alpha = 0.5;
          return spectral_power(a, q, o, &ws).status;
        }
        PolarOptions o;
        o.compute = c.compute;
        return polar(a, q, o, &ws).status;
      };
      std::vector<std::vector<float>> in(kThreads), alone(kThreads);
      for (int t = 0; t < kThreads; ++t) {
        in[t] = random_input<float>(c.batch * c.rows, c.cols, c.name, static_cast<std::uint64_t>(t));
        alone[t].assign(in[t].size(), kSentinel);
        Workspace ws;
        REQUIRE(run(in[t], alone[t], ws) == Status::ok);
      }
      std::vector<int> differing(kThreads, 0), failed(kThreads, 0);
      run_together(kThreads, [&](int t) {
        Workspace ws;
        std::vector<float> out(in[t].size());
        for (int r = 0; r < kRounds; ++r) {
          if (run(in[t], out, ws) != Status::ok) ++failed[t];
          if (std::memcmp(out.data(), alone[t].data(), out.size() * sizeof(float)) != 0) ++differing[t];
        }
      });
      for (int t = 0; t < kThreads; ++t) {
        CAPTURE(t);
        CHECK(failed[t] == 0);
        CHECK(differing[t] == 0);
      }
    }
  }

  TEST_CASE("scale invariance: 1e30 and 1e-30 times a float matrix give the same factor") {
    const index_t r = 20, c = 36;
    const std::vector<float> in = random_input<float>(r, c, "scale");
    std::vector<float> ref(in.size());
    REQUIRE(polar(MatrixRef<const float>(in.data(), r, c), MatrixRef<float>(ref.data(), r, c)).status ==
            Status::ok);
    for (float scale : {1e30f, 1e-30f}) {
      std::vector<float> big(in), out(in.size());
      for (float& x : big)
        x *= scale;
      REQUIRE(polar(MatrixRef<const float>(big.data(), r, c), MatrixRef<float>(out.data(), r, c)).status ==
              Status::ok);
      // The scaled input is itself rounded (≤ ε_f relative per entry), amplified by the schedule.
      CHECK(relative_error(from_row_major(out.data(), r, c), from_row_major(ref.data(), r, c)) <=
            rounding_tolerance<float>(PolarOptions{}));
    }
  }

  TEST_CASE("double at the ends of the range: 2^1023 and 2^-1040 times a matrix give its factor") {
    // docs/conventions.md promises a normalisation without overflow or underflow for any finite
    // input. The large matrix has ‖A‖_F > DBL_MAX (and every method once returned zeros), the
    // small one subnormal entries whose 1/max|a| overflows (once NaN). The scales are powers of
    // two and the reference is the same matrix brought back to ~1 by the inverse power, so both
    // runs iterate on one matrix up to rounding: the methods' own rounding tolerance applies.
    // eps = 0 everywhere: an absolute eps is not scale-invariant (docs/conventions.md).
    const index_t r = 12, c = 20;
    std::vector<double> unit = random_input<double>(r, c, "double_range");
    double amax = 0.0;
    for (double x : unit)
      amax = std::max(amax, std::fabs(x));
    for (double& x : unit)
      x /= amax;  // max |a| = 1: 2^1023 a is finite
    const std::vector<MethodCase> methods = polar_methods_and_qdwh();
    PolarOptions qd = methods.back().options;  // QDWH, alone below
    for (const int e : {1023, -1040}) {
      CAPTURE(e);
      std::vector<double> in(unit), ref_in(unit.size());
      for (std::size_t i = 0; i < in.size(); ++i) {
        in[i] = std::ldexp(unit[i], e);     // (rounded where subnormal)
        ref_in[i] = std::ldexp(in[i], -e);  // exactly the matrix the kernel sees
      }
      if (e > 0) REQUIRE(std::isinf(from_row_major(in.data(), r, c).norm()));  // ‖A‖_F > DBL_MAX
      for (MethodCase mc : methods) {
        CAPTURE(mc.name);
        mc.options.schedule.normalization.eps = 0.0;
        std::vector<double> out(in.size(), kSentinel), ref(in.size());
        REQUIRE(polar(MatrixRef<const double>(ref_in.data(), r, c), MatrixRef<double>(ref.data(), r, c),
                      mc.options)
                    .status == Status::ok);
        const PolarReport rep =
            polar(MatrixRef<const double>(in.data(), r, c), MatrixRef<double>(out.data(), r, c), mc.options);
        REQUIRE(rep.status == Status::ok);
        // QDWH is backward stable: O(k·u) relative, 1e-12 leaves a margin of ~100.
        const double tol =
            mc.options.method == PolarMethod::qdwh ? 1e-12 : rounding_tolerance<double>(mc.options);
        CHECK(relative_error(from_row_major(out.data(), r, c), from_row_major(ref.data(), r, c)) <= tol);
      }
    }
    // A = 2^1023·I₈ (U = I): ⟨A, U⟩ = 2^1026 > DBL_MAX, so the dual-norm scaled output is not
    // representable: out_of_range and nothing written (it was a zero output with ok).
    const index_t n = 8;
    std::vector<double> big(static_cast<std::size_t>(n * n), 0.0), dn(big.size(), kSentinel);
    for (index_t i = 0; i < n; ++i)
      big[static_cast<std::size_t>(i * n + i)] = 0x1p1023;
    PolarOptions o = qd;
    o.dual_norm_scale = true;
    CHECK(polar(MatrixRef<const double>(big.data(), n, n), MatrixRef<double>(dn.data(), n, n), o).status ==
          Status::out_of_range);
    CHECK(untouched(dn));
  }

  TEST_CASE_TEMPLATE("AOL pre-scaling: zero rows and zero matrices stay zero, extreme scales agree", T, float,
                     double) {
    // Rows ≤ cols (rows scaled), tall (columns scaled) and square in both layouts (rows scaled).
    PolarOptions o;
    o.method = PolarMethod::newton_schulz;
    o.schedule = schedules::keller_jordan();
    o.schedule.normalization.kind = Normalization::Kind::aol;
    o.iterations = 4;
    for (const auto& shape : {std::pair<index_t, index_t>{12, 20}, {20, 12}, {16, 16}}) {
      const index_t r = shape.first, c = shape.second;  // not a binding: CAPTURE's lambda uses it
      CAPTURE(r);
      CAPTURE(c);
      std::vector<T> in = random_input<T>(r, c, "aol_zero_row");
      // A zero line on the scaled side: its row sum is 0, its factor 0 (no 0/0), and the
      // output line is zero; the other lines are the prediction for D·a.
      for (index_t l = 0; l < std::max(r, c); ++l) {
        const index_t i = r <= c ? 3 : l, j = r <= c ? l : 3;
        in[static_cast<std::size_t>(i * c + j)] = T(0);
      }
      in.resize(static_cast<std::size_t>(2 * r * c), T(0));  // and a second, all-zero matrix
      std::vector<T> out(in.size(), T(kSentinel));
      REQUIRE(
          polar(BatchedMatrixRef<const T>(in.data(), 2, r, c), BatchedMatrixRef<T>(out.data(), 2, r, c), o)
              .status == Status::ok);
      const Eigen::MatrixXd a = from_row_major(in.data(), r, c), q = from_row_major(out.data(), r, c);
      CHECK((r <= c ? q.row(3).norm() : q.col(3).norm()) == 0.0);
      const Eigen::MatrixXd pred = predicted_polynomial_output(aol_prescale(a, 1.0, 0.0), oracle_steps(o),
                                                               o.iterations, 1.0, 0.0, Norm::none);
      CHECK(relative_error(q, pred) <= rounding_tolerance<T>(o));
      for (index_t i = r * c; i < 2 * r * c; ++i)
        CHECK(out[static_cast<std::size_t>(i)] == T(0));
      if (r == c) {  // a column-major square input scales the rows of A too
        std::vector<T> cm(static_cast<std::size_t>(r * c)), cmo(cm.size());
        for (index_t i = 0; i < r; ++i)
          for (index_t j = 0; j < c; ++j)
            cm[static_cast<std::size_t>(j * r + i)] = in[static_cast<std::size_t>(i * c + j)];
        REQUIRE(polar(MatrixRef<const T>::col_major(cm.data(), r, c),
                      MatrixRef<T>::col_major(cmo.data(), r, c), o)
                    .status == Status::ok);
        Eigen::MatrixXd q_cm(r, c);
        for (index_t i = 0; i < r; ++i)
          for (index_t j = 0; j < c; ++j)
            q_cm(i, j) = double(cmo[static_cast<std::size_t>(j * r + i)]);
        CHECK(relative_error(q_cm, pred) <= rounding_tolerance<T>(o));
      }
    }
    // Scale: a/‖a‖_F is loaded first, so 1e±30 times a float matrix (whose Gram would overflow
    // or underflow in float) gives the factor of the unscaled matrix to the rounding of the input.
    if (std::is_same<T, float>::value) {
      const index_t r = 20, c = 36;
      const std::vector<float> in = random_input<float>(r, c, "aol_scale");
      std::vector<float> ref(in.size());
      REQUIRE(polar(MatrixRef<const float>(in.data(), r, c), MatrixRef<float>(ref.data(), r, c), o).status ==
              Status::ok);
      for (float scale : {1e30f, 1e-30f}) {
        std::vector<float> big(in), out(in.size());
        for (float& x : big)
          x *= scale;
        REQUIRE(
            polar(MatrixRef<const float>(big.data(), r, c), MatrixRef<float>(out.data(), r, c), o).status ==
            Status::ok);
        CHECK(relative_error(from_row_major(out.data(), r, c), from_row_major(ref.data(), r, c)) <=
              rounding_tolerance<float>(o));
      }
    }
  }

  TEST_CASE_TEMPLATE("dual_norm_scale: <A, Q>·Q for every method, the nuclear norm with QDWH", T, float,
                     double) {
    const std::vector<MethodCase> methods = polar_methods_and_qdwh();
    PolarOptions qd = methods.back().options;  // QDWH, alone below
    for (const auto& shape : {std::pair<index_t, index_t>{10, 17}, {17, 10}}) {
      const index_t r = shape.first, c = shape.second;  // not a binding: CAPTURE's lambda uses it
      const std::vector<T> in = random_input<T>(r, c, "dual_norm", static_cast<std::uint64_t>(r));
      const Eigen::MatrixXd a = from_row_major(in.data(), r, c);
      for (const MethodCase& mc : methods) {
        CAPTURE(mc.name);
        CAPTURE(r);
        std::vector<T> plain(in.size()), scaled(in.size());
        REQUIRE(
            polar(MatrixRef<const T>(in.data(), r, c), MatrixRef<T>(plain.data(), r, c), mc.options).status ==
            Status::ok);
        PolarOptions o = mc.options;
        o.dual_norm_scale = true;
        REQUIRE(polar(MatrixRef<const T>(in.data(), r, c), MatrixRef<T>(scaled.data(), r, c), o).status ==
                Status::ok);
        // The kernel iterates in T here (automatic), so its iterate is `plain` exactly. It forms
        // f = Σ a_ij q_ij in double in another order than this test: the two differ by at most
        // r·c·2⁻⁵³·Σ|a_ij q_ij| (the double summation bound). Each side rounds f·q once (ε_T/2
        // relative each): |scaled − f·q| ≤ (ε_T·|f| + r·c·2⁻⁵³·Σ|a q|)·max|q|, doubled for margin.
        const Eigen::MatrixXd q = from_row_major(plain.data(), r, c),
                              got = from_row_major(scaled.data(), r, c);
        const double f = (a.array() * q.array()).sum(), fabs_sum = (a.array() * q.array()).abs().sum();
        CHECK(f > 0.0);  // ⟨A, Q⟩ > 0: Q's singular values are positive images of A's
        const double sum_bound = double(r * c) * std::ldexp(1.0, -53) * fabs_sum;
        CHECK((got - f * q).cwiseAbs().maxCoeff() <=
              2.0 * (double(std::numeric_limits<T>::epsilon()) * f + sum_bound) * q.cwiseAbs().maxCoeff());
      }
    }
    // QDWH converges to U Vᵀ, so the factor is ‖A‖_* = Σσ: a prescribed spectrum in double.
    if (std::is_same<T, double>::value) {
      SpectrumCase sc{"dual_norm_geometric", 9, 14, geometric(9, 1e-3, 2.0)};
      const std::uint64_t seed = case_seed(sc.name.c_str());
      CAPTURE(seed);
      const Eigen::MatrixXd a = make_matrix(sc, seed);
      const std::vector<double> in = to_row_major<double>(a);
      std::vector<double> out(in.size());
      qd.dual_norm_scale = true;
      REQUIRE(
          polar(MatrixRef<const double>(in.data(), 9, 14), MatrixRef<double>(out.data(), 9, 14), qd).status ==
          Status::ok);
      Eigen::MatrixXd exact(9, 14);
      REQUIRE(reference::polar(MatrixRef<const double>::col_major(a.data(), 9, 14),
                               MatrixRef<double>::col_major(exact.data(), 9, 14)) == Status::ok);
      double nuclear = 0.0;
      for (double s : sc.sigma)
        nuclear += s;
      // QDWH in double: ‖U − U Vᵀ‖ ≲ 1e-13 at κ = 1e3; 1e-10 leaves room.
      CHECK(relative_error(from_row_major(out.data(), 9, 14), nuclear * exact) <= 1e-10);
    }
  }

  TEST_CASE("dual_norm_scale: an output beyond the float range is refused and nothing is written") {
    // A = 1e38·I₈ (finite floats): ⟨A, I⟩ = 8e38 > FLT_MAX ≈ 3.4e38, inside a batch whose first
    // matrix is harmless; in place, the input stays as it was.
    const index_t n = 8;
    std::vector<float> in(static_cast<std::size_t>(2 * n * n), 0.0f);
    for (index_t i = 0; i < n; ++i) {
      in[static_cast<std::size_t>(i * n + i)] = 1.0f;
      in[static_cast<std::size_t>(n * n + i * n + i)] = 1e38f;
    }
    const std::vector<MethodCase> methods = polar_methods_and_qdwh();
    for (const MethodCase& mc : methods) {
      CAPTURE(mc.name);
      PolarOptions o = mc.options;
      o.dual_norm_scale = true;
      std::vector<float> out(in.size(), kSentinel);
      const PolarReport rep = polar(BatchedMatrixRef<const float>(in.data(), 2, n, n),
                                    BatchedMatrixRef<float>(out.data(), 2, n, n), o);
      CHECK(rep.status == Status::out_of_range);
      CHECK(rep.bad_item == 1);
      CHECK(std::string(rep.message).find("dual-norm") != std::string::npos);
      CHECK(untouched(out));
      std::vector<float> io = in;
      CHECK(polar(BatchedMatrixRef<const float>(io.data(), 2, n, n),
                  BatchedMatrixRef<float>(io.data(), 2, n, n), o)
                .status == Status::out_of_range);
      CHECK(io == in);
    }
  }

  TEST_CASE("dual_norm_scale in double near DBL_MAX: <A, Q> may overflow while <A, Q>·Q does not") {
    // ⟨A, Q⟩ was summed from the unscaled entries: for A = 1e308·[1 1 1 1] and QDWH it is 2e308
    // (beyond DBL_MAX) while the output ⟨A, Q⟩·Q = 1e308·[1 1 1 1] is representable, and the call
    // was refused with out_of_range (the polynomial methods: 1e308·f², f ≤ 1.21 their largest
    // value, so ≤ 1.5e308, representable too). Now ⟨2^−s·A, Q⟩ is formed and 2^s applied in the
    // store pass. The map is homogeneous of degree 1 and the scale a power of two, so the output is
    // 2^980 times that of 2^−980·A (entries 1e13, where a normalisation eps of 1e-7 moves nothing),
    // to rounding (1e-13 relative). (Outputs beyond the range are still refused: the float test
    // above.)
    const std::vector<double> big(4, 1e308);
    std::vector<double> small(big);
    for (double& x : small)
      x = std::ldexp(x, -980);
    const std::vector<MethodCase> methods = polar_methods_and_qdwh();
    for (const MethodCase& mc : methods) {
      CAPTURE(mc.name);
      PolarOptions o = mc.options;
      o.dual_norm_scale = true;
      std::vector<double> out(4, kSentinel), want(4, kSentinel);
      REQUIRE(polar(MatrixRef<const double>(small.data(), 1, 4), MatrixRef<double>(want.data(), 1, 4), o)
                  .status == Status::ok);
      const PolarReport rep =
          polar(MatrixRef<const double>(big.data(), 1, 4), MatrixRef<double>(out.data(), 1, 4), o);
      REQUIRE(rep.status == Status::ok);
      for (std::size_t i = 0; i < 4; ++i)
        CHECK(out[i] == doctest::Approx(std::ldexp(want[i], 980)).epsilon(1e-13));
    }
  }

  TEST_CASE("Gram Newton-Schulz in float: an iterate beyond its bound is a breakdown, never NaN with ok") {
    // polar_iterate_bound() bounds every iterate in exact arithmetic; Gram Newton–Schulz
    // amplifies the rounding of X Xᵀ by the factor it accumulates between restarts, and in float
    // a geometric spectrum down to 1e-8 gave every entry NaN at 16 steps of Polar Express (12 of
    // Keller Jordan's), restarts {2}, with status ok (kernel audit of 2026-12-07). Now every
    // float run from 5 to 16 steps either is ok with every entry finite and within the bound
    // (an entry is at most σ_max) or is a breakdown with q untouched, and the 16-step runs, which
    // fail on these inputs, are breakdowns. Double stays ok.
    const index_t n = 32;
    const Eigen::MatrixXd a =
        make_matrix(SpectrumCase{"gram_kappa_1e8", n, n, geometric(n, 1e-8)}, case_seed("gram_kappa_1e8"));
    const std::vector<float> af = to_row_major<float>(a);
    const std::vector<double> ad = to_row_major<double>(a);
    for (const bool keller : {false, true}) {
      CAPTURE(keller);
      int breakdowns = 0;
      for (int t = 5; t <= 16; ++t) {
        CAPTURE(t);
        PolarOptions o;
        o.method = PolarMethod::gram_newton_schulz;
        if (keller) o.schedule = schedules::keller_jordan();
        o.iterations = t;
        const double bound = polar_iterate_bound(o);
        REQUIRE(bound < 2.0);
        std::vector<float> q(af.size(), -7.0f);
        const PolarReport r =
            polar(MatrixRef<const float>(af.data(), n, n), MatrixRef<float>(q.data(), n, n), o);
        if (r.status == Status::ok) {
          for (const float x : q)
            REQUIRE((std::isfinite(x) && std::fabs(x) <= bound));
        } else {
          CHECK(r.status == Status::breakdown);
          CHECK(r.bad_item == 0);
          CHECK(std::string(r.message).find("Gram") != std::string::npos);
          CHECK(std::count(q.begin(), q.end(), -7.0f) == static_cast<std::ptrdiff_t>(q.size()));
          ++breakdowns;
          if (t == 16)
            MESSAGE((keller ? "Keller Jordan" : "Polar Express")
                    << ": breakdowns from 5 to 16 steps: " << breakdowns);
        }
        if (t == 16) CHECK(r.status == Status::breakdown);
        std::vector<double> qd(ad.size());
        CHECK(polar(MatrixRef<const double>(ad.data(), n, n), MatrixRef<double>(qd.data(), n, n), o).status ==
              Status::ok);
      }
    }
  }

  TEST_CASE("normalisation epsilon: the default 0 orthogonalises tiny inputs while eps = 1e-7 shrinks them") {
    const index_t r = 16, c = 16;
    std::vector<double> in = random_input<double>(r, c, "tiny_eps");
    for (double& x : in)
      x *= 1e-14;  // ‖A‖_F ≈ 1e-14 ≪ 1e-7
    std::vector<double> plain(in.size()), with_eps(in.size());
    PolarOptions o;
    REQUIRE(
        polar(MatrixRef<const double>(in.data(), r, c), MatrixRef<double>(plain.data(), r, c), o).status ==
        Status::ok);
    o.schedule = schedules::polar_express();
    o.schedule.normalization.eps = 1e-7;  // the PyTorch reference's choice
    REQUIRE(
        polar(MatrixRef<const double>(in.data(), r, c), MatrixRef<double>(with_eps.data(), r, c), o).status ==
        Status::ok);
    // Without eps: σ/σ_max ∈ [1e-2, 1] lands in PE's band, max |s² − 1| ≤ 1.141² − 1 = 0.302.
    CHECK(orthogonality_error(from_row_major(plain.data(), r, c)) < 0.31);
    // With eps: X = A/(‖A‖_F + 1e-7) has norm ≈ 1e-7, and 5 steps lift it by at most ∏ a ≈ 1e3.
    CHECK(from_row_major(with_eps.data(), r, c).norm() < 1e-3 * std::sqrt(double(r)));
  }

  TEST_CASE_TEMPLATE(
      "options without an iterate bound: an iterate that overflows is refused, nothing written", T, float,
      double) {
    // A safety of 0.01 (σ up to 100 after normalisation: Keller Jordan's quintic maps 100 to
    // ~2e10, then beyond any range) or a first coefficient of 1e30 (σ·1e30, then its fifth power)
    // wrote Inf/NaN with Status::ok.
    // polar_iterate_bound() has no bound for such options, so the iterate is checked before the
    // store. Batch of two: the first all zero (its iterate stays zero), the second overflows.
    const index_t r = 6, c = 9;
    std::vector<T> in(static_cast<std::size_t>(r * c), T(0));
    const std::vector<T> second = random_input<T>(r, c, "unbounded_iterate");
    in.insert(in.end(), second.begin(), second.end());
    std::vector<PolarOptions> unbounded(3);
    for (PolarOptions& o : unbounded)
      o.schedule = schedules::keller_jordan();
    unbounded[0].schedule.normalization.safety = 0.01;
    unbounded[1].schedule.steps[0].a = 1e30;
    unbounded[2] = unbounded[0];
    unbounded[2].method = PolarMethod::gram_newton_schulz;
    for (const PolarOptions& o : unbounded) {
      REQUIRE(polar_iterate_bound(o) == HUGE_VAL);
      std::vector<T> out(in.size(), T(kSentinel));
      const PolarReport rep =
          polar(BatchedMatrixRef<const T>(in.data(), 2, r, c), BatchedMatrixRef<T>(out.data(), 2, r, c), o);
      CHECK(rep.status == Status::out_of_range);
      CHECK(rep.bad_item == 1);
      CHECK(std::string(rep.message).size() > 0);
      CHECK(untouched(out));
    }
    // No bound but no overflow: without normalisation (the input's own scale) an input of
    // Frobenius norm 1 stays in range, and its output is written.
    PolarOptions o;
    o.schedule = schedules::keller_jordan();
    o.schedule.normalization.kind = Normalization::Kind::none;  // the input's own scale, σ ≤ 1
    REQUIRE(polar_iterate_bound(o) == HUGE_VAL);
    std::vector<T> small = second, out(second.size(), T(kSentinel));
    const double fro = from_row_major(second.data(), r, c).norm();
    for (T& x : small)
      x = static_cast<T>(x / fro);
    CHECK(polar(MatrixRef<const T>(small.data(), r, c), MatrixRef<T>(out.data(), r, c), o).status ==
          Status::ok);
    for (T x : out)
      CHECK(std::isfinite(x));
  }

  TEST_CASE("shapes beyond the address space or 2^31: refused, never a wrapped size or extent") {
    // The workspace sizes were products in size_t that wrapped: polar_workspace_bytes of a
    // 2^30 × 2^30 matrix was 40, and polar() reserved that and wrote its iterate past it. The
    // layouts below are valid (a stride-0 input repeats one element; the output's offsets fit in
    // index_t), only no memory holds them. Now the counts saturate at PTRDIFF_MAX, which no
    // allocation serves: out_of_memory before anything is read or written (the output pointer
    // is never dereferenced).
    const index_t n = index_t(1) << 30;
    CHECK(polar_workspace_bytes(n, n, 1, PolarOptions{}) ==
          std::size_t(std::numeric_limits<std::ptrdiff_t>::max()));
    float two[2] = {1.0f, 0.0f};  // the input's one element, then the output's first (disjoint)
    const auto a = BatchedMatrixRef<const float>::strided(&two[0], 1, n, n, 0, 0, 0);
    const auto q = BatchedMatrixRef<float>::strided(&two[1], 1, n, n, 0, n, 1);
    const float& sink = two[1];
    REQUIRE(detail::check_layout(q, true) == nullptr);
    PolarOptions qd;
    qd.method = PolarMethod::qdwh;
    for (const PolarOptions& o : {PolarOptions{}, gram_options(), qd}) {
      const PolarReport rep = polar(a, q, o);
      CHECK(rep.status == Status::out_of_memory);
      CHECK(sink == 0.0f);
    }
    SpectralPowerOptions so;
    CHECK(spectral_power(a, q, so).status == Status::out_of_memory);
    // An input alone (no output to bound it): 2^30 × 2^30 of one repeated element.
    const index_t m = index_t(1) << 30;
    double norm = -1.0;
    CHECK(schatten_norm(BatchedMatrixRef<const float>::strided(&two[0], 1, m, m, 0, 0, 0), 1.5, &norm) ==
          Status::out_of_memory);
    CHECK(norm == -1.0);
    // Kokkos keeps the extents of the kernels' rank-3 views in 32 bits: 2^32 columns read as 0
    // (the norm of a 1 × 2^32 matrix of ones came back 0 with ok) and 2^32 + 5 as 5; and the BLAS
    // calls take int dimensions, which 2^31 makes negative. Extents above 2^31 − 1 are refused.
    for (const index_t wide : {index_t(1) << 31, index_t(1) << 32, (index_t(1) << 32) + 5}) {
      CAPTURE(wide);
      CHECK(polar(BatchedMatrixRef<const float>::strided(&two[0], 1, 1, wide, 0, 0, 0),
                  BatchedMatrixRef<float>::strided(&two[1], 1, 1, wide, 0, wide, 1))
                .status == Status::invalid_argument);
      CHECK(polar(BatchedMatrixRef<const float>::strided(&two[0], wide, 1, 1, 0, 0, 0),
                  BatchedMatrixRef<float>::strided(&two[1], wide, 1, 1, 1, 1, 1))
                .status == Status::invalid_argument);  // a batch of that many 1 × 1 matrices
      CHECK(schatten_norm(BatchedMatrixRef<const float>::strided(&two[0], 1, 1, wide, 0, 0, 0), 1.0, &norm) ==
            Status::invalid_argument);
    }
    CHECK(sink == 0.0f);
    CHECK(norm == -1.0);
    // A reservation within 255 bytes of SIZE_MAX was served with a few bytes (libstdc++'s
    // aligned operator new rounds the size up first, which wraps), and the workspace then
    // claimed that capacity for every later call. Now refused, the workspace as it was.
    Workspace ws;
    for (const std::size_t bytes :
         {std::numeric_limits<std::size_t>::max(), std::numeric_limits<std::size_t>::max() - 100})
      CHECK_FALSE(ws.reserve(bytes));
    CHECK(ws.capacity() == 0);
  }

  TEST_CASE("cost model: GEMM shapes and flops of each method") {
    const double k = 100, n = 300;
    PolarOptions o;
    o.symmetric_gram = false;  // every product a GEMM (the SYRK counts: the next test case)
    o.method = PolarMethod::newton_schulz;
    o.iterations = 5;
    CHECK(polar_flops(300, 100, o) == doctest::Approx(5 * (4 * k * k * n + 2 * k * k * k)));
    o.schedule = schedules::classical_cubic();  // c = 0: no A² product
    CHECK(polar_flops(100, 300, o) == doctest::Approx(5 * 4 * k * k * n));
    o = gram_options();  // 5 steps, restart before step 2
    o.symmetric_gram = false;
    // Gram + (QX + Gram at the restart) + 5 R² + 3 Q updates + 2·3 R updates + final QX.
    CHECK(polar_flops(100, 300, o) ==
          doctest::Approx(2 * k * k * n + 2 * (2 * k * k * n) + (5 + 3 + 6) * 2 * k * k * k + 2 * k * k * n));
    o.compute_orthogonality_error = true;
    CHECK(polar_flops(100, 300, o) ==
          doctest::Approx(3 * (2 * k * k * n) + 2 * k * k * n + 14 * 2 * k * k * k + 2 * k * k * n));
    CHECK(polar_flops(0, 300, o) == 0.0);
    CHECK(total_flops(polar_gemm_shapes(100, 300, PolarOptions{})) ==
          doctest::Approx(polar_flops(100, 300, PolarOptions{})));
    // QDWH reports its orthogonality when either flag asks (PolarOptions' or QdwhOptions'): one
    // k × k GEMM over n more. The QDWH flag alone was not counted (audit of 2026-12-07).
    PolarOptions q;
    q.method = PolarMethod::qdwh;
    const double plain = polar_flops(300, 100, q);
    q.qdwh.compute_orthogonality_error = true;
    CHECK(polar_flops(300, 100, q) == doctest::Approx(plain + 2 * k * k * n));
    q.qdwh.compute_orthogonality_error = false;
    q.compute_orthogonality_error = true;
    CHECK(polar_flops(300, 100, q) == doctest::Approx(plain + 2 * k * k * n));
  }

  TEST_CASE("cost model: symmetric products counted as SYRKs of half the GEMM flops") {
    const double k = 100, n = 300;
    PolarOptions o;  // symmetric_gram = true by default
    o.method = PolarMethod::newton_schulz;
    o.iterations = 5;
    // A = X Xᵀ: k²n, A² = A Aᵀ: k³ (SYRKs), B X: 2k²n (GEMM).
    CHECK(polar_flops(300, 100, o) == doctest::Approx(5 * (3 * k * k * n + k * k * k)));
    int syrks = 0;
    for (const GemmShape& g : polar_gemm_shapes(300, 100, o))
      if (g.kind == OpKind::syrk) {
        CHECK(g.m == g.n);
        syrks += g.count;
      }
    CHECK(syrks == 10);
    o = gram_options();  // Grams (3 · k²n) and R² (5 · k³) as SYRKs; Q, R updates and QX GEMMs
    CHECK(polar_flops(100, 300, o) ==
          doctest::Approx(2 * k * k * n + 2 * k * k * n + 5 * k * k * k + 9 * 2 * k * k * k + 2 * k * k * n));
    o.method = PolarMethod::polar_express;
    o.compute = Precision::bf16;
    if (detail::lowp_symmetric_on_one_triangle()) {
      // 16-bit iteration outside CUDA: the portable kernel's triangle, counted as a SYRK.
      CHECK(polar_flops(100, 300, o) == doctest::Approx(5 * (3 * k * k * n + k * k * k)));
    } else {
      // On CUDA: no 16-bit SYRK, GEMMs only; k = 100 < 2·512: one GEMM per symmetric product.
      for (const GemmShape& g : polar_gemm_shapes(100, 300, o))
        CHECK(g.kind == OpKind::gemm);
      CHECK(polar_flops(100, 300, o) == doctest::Approx(5 * (4 * k * k * n + 2 * k * k * k)));
    }
  }

  TEST_CASE(
      "cost model: 16-bit symmetric products are GEMM row panels on CUDA from k = 1024, a triangle "
      "elsewhere") {
    // symmetric_panel_shapes: panels of 512 rows, panel p a GEMM of C[p·512 : e, 0 : e].
    const std::vector<GemmShape> p = symmetric_panel_shapes(1100, 37);
    REQUIRE(p.size() == 3);
    CHECK((p[0].m == 512 && p[0].n == 512 && p[0].k == 37));
    CHECK((p[1].m == 512 && p[1].n == 1024 && p[1].k == 37));
    CHECK((p[2].m == 76 && p[2].n == 1100 && p[2].k == 37));
    CHECK(symmetric_panel_shapes(1023, 37).empty());  // below 2·512: one plain GEMM
    // N = 8 panels at 4096: (N + 1)/(2N) = 9/16 of the full GEMM.
    double panel_flops = 0;
    for (const GemmShape& g : symmetric_panel_shapes(4096, 100))
      panel_flops += g.flops();
    CHECK(panel_flops == doctest::Approx(9.0 / 16.0 * 2.0 * 4096.0 * 4096.0 * 100.0));
    // bf16 Newton–Schulz at 2048 × 4096 on CUDA (k = 2048, N = 4 panels, 5/8 of each symmetric
    // GEMM): per step 5/8 · 2k²n (A) + 5/8 · 2k³ (A²) + 2k²n (B X). Elsewhere the portable
    // kernel's triangle, counted as a SYRK: k²n + k³ + 2k²n.
    PolarOptions o;
    o.method = PolarMethod::newton_schulz;
    o.compute = Precision::bf16;
    const double k = 2048, n = 4096;
    const double sym = detail::lowp_symmetric_on_one_triangle() ? 0.5 : 0.625;
    CHECK(polar_flops(2048, 4096, o) ==
          doctest::Approx(5 * (sym * 2 * k * k * n + sym * 2 * k * k * k + 2 * k * k * n)));
    o.symmetric_gram = false;
    CHECK(polar_flops(2048, 4096, o) == doctest::Approx(5 * (4 * k * k * n + 2 * k * k * k)));
  }

  TEST_CASE_TEMPLATE("symmetric_gram on and off agree to rounding in both orientations", T, float, double) {
    // SYRK sums in another order than GEMM: the two paths differ by rounding only. Same bound as
    // the row-major / column-major comparison above (the same exact result, two roundings).
    for (const auto& shape : {std::pair<index_t, index_t>{40, 70}, {70, 40}})
      for (const MethodCase& mc : polar_methods()) {
        const index_t r = shape.first, c = shape.second;  // clang: no bindings in CAPTURE
        CAPTURE(mc.name);
        CAPTURE(r);
        const std::vector<T> in = random_input<T>(r, c, "symmetric_gram");
        PolarOptions on = mc.options, off = mc.options;
        on.symmetric_gram = true;
        off.symmetric_gram = false;
        on.compute_orthogonality_error = off.compute_orthogonality_error = true;
        std::vector<T> q_on(in.size()), q_off(in.size());
        const PolarReport r_on =
            polar(MatrixRef<const T>(in.data(), r, c), MatrixRef<T>(q_on.data(), r, c), on);
        const PolarReport r_off =
            polar(MatrixRef<const T>(in.data(), r, c), MatrixRef<T>(q_off.data(), r, c), off);
        REQUIRE(r_on.status == Status::ok);
        REQUIRE(r_off.status == Status::ok);
        const Eigen::MatrixXd a = from_row_major(q_on.data(), r, c), b = from_row_major(q_off.data(), r, c);
        CHECK(relative_error(a, b) <= 2 * rounding_tolerance<T>(mc.options));
        CHECK(std::fabs(r_on.orthogonality_error - r_off.orthogonality_error) <=
              1e-2 * r_off.orthogonality_error + 1e3 * std::numeric_limits<T>::epsilon());
      }
  }

  TEST_CASE("16-bit iteration outside CUDA: symmetric_gram on and off give the same bits") {
    // With the portable kernel both paths sum every entry of X Xᵀ and A² in the same order
    // (portable_gemm.hpp): the triangle's entry (i, j), i ≥ j, is the full product's, its mirror
    // is Σ x_jl x_il = Σ x_il x_jl (IEEE products commute), and A² = A A with A exactly
    // symmetric is A Aᵀ entry by entry. So the outputs must agree bit for bit: a check of the
    // whole route (batched_sym_product, batched_square) against the GEMM path, with k above one
    // tile (128 on the host) and a batch.
    if (!detail::lowp_symmetric_on_one_triangle()) return;  // CUDA: vendor GEMMs, other sums
    const index_t batch = 2;
    // Both orientations: bf16 on a wide input, fp16 on a tall one.
    for (Precision p : {Precision::bf16, Precision::fp16})
      for (PolarMethod method : {PolarMethod::newton_schulz, PolarMethod::polar_express}) {
        const index_t r = p == Precision::bf16 ? 200 : 300, c = p == Precision::bf16 ? 300 : 200;
        CAPTURE(r);
        CAPTURE(static_cast<int>(p));
        CAPTURE(static_cast<int>(method));
        std::vector<float> in;
        for (index_t i = 0; i < batch; ++i) {
          const std::vector<float> m =
              random_input<float>(r, c, "symmetric_gram_16", static_cast<std::uint64_t>(i));
          in.insert(in.end(), m.begin(), m.end());
        }
        PolarOptions on;
        on.method = method;
        on.compute = p;
        PolarOptions off = on;
        off.symmetric_gram = false;
        std::vector<float> q_on(in.size()), q_off(in.size());
        REQUIRE(polar(BatchedMatrixRef<const float>(in.data(), batch, r, c),
                      BatchedMatrixRef<float>(q_on.data(), batch, r, c), on)
                    .status == Status::ok);
        REQUIRE(polar(BatchedMatrixRef<const float>(in.data(), batch, r, c),
                      BatchedMatrixRef<float>(q_off.data(), batch, r, c), off)
                    .status == Status::ok);
        CHECK(std::memcmp(q_on.data(), q_off.data(), q_on.size() * sizeof(float)) == 0);
      }
  }
}

}  // namespace kernels_test_polar_api
