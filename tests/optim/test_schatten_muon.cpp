// SPDX-License-Identifier: Apache-2.0
/// \file
/// Adaptive Schatten-p Muon (optim/schatten_p.hpp): the update assembly of algorithms.md §4a.4
/// against a double oracle written from the formulas (SVD for U Σ^{1/p} Vᵀ); the extremes the
/// issue names (Adam at p = 1 with the moment, Muon at p → ∞, MuAdam with the non-parametric
/// moment); the criterion inside a partition with activation statistics; resume bit for bit.
#include <doctest/doctest.h>

#include <Eigen/Dense>

#include <cmath>
#include <cstdio>
#include <map>
#include <string>
#include <variant>
#include <vector>

#include "schatten/optim/partition.hpp"
#include "schatten/optim/presets.hpp"
#include "schatten/optim/schatten_p.hpp"
#include "support/optim_helpers.hpp"
#include "support/seed.hpp"

namespace optim_test_schatten_muon {  // this file's scope in a unity build (tests/CMakeLists.txt)

using namespace schatten;
using namespace schatten::optim;
using schatten::test::case_seed;
using schatten::test::gaussian_mat;
using schatten::test::gradient_sequence;
using schatten::test::Mat;
using schatten::test::run_rule_from;
using schatten::test::trajectory_error;

namespace {

using Moment = SchattenPDirection::Moment;

/// SMuon's update (algorithms.md §4a.4–4a.5) in double, fixed p, from the formulas.
struct Oracle {
  double p = 2.0, lr = 0.02, beta = 0.95, b2 = 0.999, eps = 1e-8, wd = 0.0;
  bool nesterov = true, bias = true, pinned = true, noisy = true;
  Moment moment = Moment::none;
  double adam_lr = 3e-4, adam_b1 = 0.9;
  /// When set, σ ↦ ν^{1/p} f(σ/ν) (ν = ‖x‖_F, f the schedule's composite in double) replaces σ^{1/p}:
  /// the polynomial method's exact image.
  const PowerSchedule* polynomial = nullptr;

  Mat run(Mat w, const std::vector<Mat>& grads) const {
    Mat m = Mat::Zero(w.rows(), w.cols()), v = m;
    const double rows = double(w.rows()), cols = double(w.cols());
    for (std::size_t t = 1; t <= grads.size(); ++t) {
      const Mat& g = grads[t - 1];
      m = beta * m + (1 - beta) * g;
      const Mat mh = bias ? Mat(m / (1 - std::pow(beta, double(t)))) : m;
      const Mat n = nesterov ? Mat(beta * mh + (1 - beta) * g) : mh;
      Mat d = Mat::Ones(w.rows(), w.cols());
      if (moment != Moment::none) {
        v = b2 * v + (1 - b2) * g.cwiseProduct(g);
        const double e = moment == Moment::parametric ? -1 / (2 * (p + 1)) : -0.25;
        d = ((v / (1 - std::pow(b2, double(t)))).array() + eps).pow(e).matrix();
      }
      const Mat x = d.cwiseProduct(n);
      Eigen::JacobiSVD<Eigen::MatrixXd> svd(x, Eigen::ComputeThinU | Eigen::ComputeThinV);
      Eigen::VectorXd s = svd.singularValues();
      const double nu = x.norm();
      for (Eigen::Index i = 0; i < s.size(); ++i)
        s(i) = p >= 10 / 1.01 ? 1.0
               : polynomial   ? std::pow(nu, 1 / p) * polynomial->schedule.apply(
                                                          s(i) / nu, int(polynomial->schedule.steps.size()))
                            : std::pow(s(i), 1 / p);
      Mat delta = d.cwiseProduct(Mat(svd.matrixU() * s.asDiagonal() * svd.matrixV().transpose()));
      if (pinned) {
        // SMuon's _target_frobenius (749ba8d): κ^{1/p} only with a moment; without one every p
        // takes Muon's √min(r, c).
        const double rho = noisy ? std::sqrt((1 - adam_b1) / (1 + adam_b1)) : 1.0;
        const double kappa =
            moment == Moment::none ? 1.0 : adam_lr * rho * std::sqrt(std::max(rows, cols)) / lr;
        delta *= std::sqrt(std::min(rows, cols)) * std::pow(kappa, 1 / p) / delta.norm();
      }
      w -= lr * (delta + wd * w);
    }
    return w;
  }
};

SchattenMuonOptions fixed(double p) {
  SchattenMuonOptions o;
  o.adaptive = false;
  o.p = p;
  return o;
}

// State capture through the partition's visit (the mechanism checkpoints use). Bf16Buffer: the
// momentum's other storage (visit_fields instantiates both branches).
using Field = std::variant<std::int64_t, double, Buffer, Bf16Buffer>;
struct Saver {
  std::map<std::string, Field>* out;
  template <class F>
  void operator()(const std::string& name, F& f) {
    REQUIRE(out->count(name) == 0);
    (*out)[name] = Field(f);
  }
};
struct Loader {
  const std::map<std::string, Field>* in;
  template <class F>
  void operator()(const std::string& name, F& f) {
    REQUIRE(in->count(name) == 1);
    f = std::get<F>(in->at(name));
  }
};

/// U diag(σ) Vᵀ with random orthonormal factors (σ has min(m, n) entries).
Mat with_spectrum(index_t m, index_t n, const std::vector<double>& sigma, std::uint64_t seed,
                  Mat* v_out = nullptr) {
  const index_t r = std::min(m, n);
  Eigen::HouseholderQR<Eigen::MatrixXd> qu(Eigen::MatrixXd(gaussian_mat(m, r, seed)));
  Eigen::HouseholderQR<Eigen::MatrixXd> qv(Eigen::MatrixXd(gaussian_mat(n, r, seed + 1)));
  const Eigen::MatrixXd u = qu.householderQ() * Eigen::MatrixXd::Identity(m, r);
  const Eigen::MatrixXd v = qv.householderQ() * Eigen::MatrixXd::Identity(n, r);
  Eigen::VectorXd s(r);
  for (index_t i = 0; i < r; ++i)
    s(i) = sigma[static_cast<std::size_t>(i)];
  if (v_out) *v_out = v;
  return u * s.asDiagonal() * v.transpose();
}

}  // namespace

TEST_SUITE("optim.schatten_muon") {
  TEST_CASE("fixed-p steps match the double oracle of the update assembly") {
    const index_t r = 10, c = 16;
    const Mat w0 = gaussian_mat(r, c, case_seed("smuon_w"));
    const auto g = gradient_sequence(r, c, 5, "smuon_g");
    for (double p : {1.5, 2.0, 4.0, 10.0}) {
      for (Moment mo : {Moment::none, Moment::parametric, Moment::nonparametric}) {
        CAPTURE(p);
        CAPTURE(int(mo));
        SchattenMuonOptions o = fixed(p);
        o.moment = mo;
        o.weight_decay = 0.01;
        o.polar.method = PolarMethod::qdwh;  // p ≥ 9.9: the exact polar factor, as the oracle's SVD
        o.spectral.method = SpectralPowerMethod::rational;  // σ^{1/p} to 1e-3, as the oracle's SVD
        Oracle orc;
        orc.p = p;
        orc.moment = mo;
        orc.wd = 0.01;
        // spectral_power is accurate to 1e-3 relative per singular value in float (its
        // tolerance; docs/kernels/spectral_power.md); QDWH to ~1e-6. 3e-3 on the trajectory.
        const double err = trajectory_error(run_rule_from(schatten_muon(o), w0, g), orc.run(w0, g), w0);
        CHECK(err <= 3e-3);
      }
    }
  }

  TEST_CASE("the preset's polynomial power matches the oracle with the schedule's image") {
    // The default (polynomial, 5 steps): Δ = ν^{1/p} U f(Σ/ν) Vᵀ. The oracle applies the same f in
    // double; the difference is float rounding of the 5 Newton–Schulz steps (≲ 1e-3 relative per
    // direction, the composite's slope times ε_f) and of the momentum: 3e-3 on the trajectory.
    const index_t r = 10, c = 16;
    const Mat w0 = gaussian_mat(r, c, case_seed("smuon_poly_w"));
    const auto g = gradient_sequence(r, c, 5, "smuon_poly_g");
    for (double p : {1.5, 2.0, 4.0}) {
      for (Moment mo : {Moment::none, Moment::nonparametric}) {
        CAPTURE(p);
        CAPTURE(int(mo));
        SchattenMuonOptions o = fixed(p);
        REQUIRE(o.spectral.method == SpectralPowerMethod::polynomial);
        o.moment = mo;
        PowerSchedule ps;
        REQUIRE(polynomial_power_schedule(1 / p, 5, ps) == Status::ok);
        Oracle orc;
        orc.p = p;
        orc.moment = mo;
        orc.polynomial = &ps;
        const Mat got = run_rule_from(schatten_muon(o), w0, g);
        CHECK(trajectory_error(got, orc.run(w0, g), w0) <= 3e-3);
        // And the exact σ^{1/p} is within the band: the update directions differ by at most
        // e^{E} − 1 relative (E ≤ 0.42 for 5 steps), far from an unrelated update (≈ √2).
        Oracle exact = orc;
        exact.polynomial = nullptr;
        CHECK(trajectory_error(got, exact.run(w0, g), w0) <= ps.relative_error());
      }
    }
  }

  TEST_CASE("p = 1 with the parametric moment is Adam") {
    // D = (v̂ + ε)^{−1/4}, pow₁ = identity, map-out: Δ = m̂/√(v̂ + ε) — Adam with ε inside the
    // root ([V] SMuon's D; PyTorch: m̂/(√v̂ + ε)). The two differ where v̂ ~ ε (by 1.7 % on this
    // trajectory with ε = 1e-8: entries with |g| ~ 1e-4 exist), so the identity is checked with
    // ε = 1e-20 in both, where only float rounding remains (1e-6 per step).
    const index_t r = 8, c = 12;
    const Mat w0 = gaussian_mat(r, c, case_seed("p1_w"));
    const auto g = gradient_sequence(r, c, 6, "p1_g");
    SchattenMuonOptions o = fixed(1.0);
    o.moment = Moment::parametric;
    o.nesterov = false;
    o.momentum = 0.9;  // Adam's β₁
    o.magnitude = SchattenPDirection::Magnitude::none;
    o.lr = Schedule::constant(1e-2);
    o.eps = 1e-20;
    const Mat got = run_rule_from(schatten_muon(o), w0, g);
    AdamWOptions a;
    a.lr = Schedule::constant(1e-2);
    a.weight_decay = 0.0;
    a.eps = 1e-20;
    const Mat adam = run_rule_from(adamw(a), w0, g);
    // The AdamW preset is itself checked against torch's formula in double (test_presets).
    CHECK(trajectory_error(got, adam, w0) <= 1e-5);
  }

  TEST_CASE("p = 1 with the pinned magnitude rescales a gradient of denormals to the pinned norm") {
    // At p = 1 without a moment Δ is ñ itself, here entries of ~1e-40 (below FLT_MIN), so the
    // pinned magnitude's factor √min(r, c)/‖Δ‖ is about 4e39 (no moment: no κ), beyond float: it
    // must be applied in two passes (scale_by), not as float(∞)·Δ.
    // Found by a seed sweep of test_hostile (seed 6, the scalar parameter of `every hostile kind
    // alone`). No decay, so the step is −lr·Δ exactly.
    const index_t r = 3, c = 5;
    const Mat w0 = Mat::Zero(r, c);
    const Mat g = gaussian_mat(r, c, case_seed("p1_denormal")) * 1e-40;
    SchattenMuonOptions o = fixed(1.0);
    o.lr = Schedule::constant(0.02);
    const Mat got = run_rule_from(schatten_muon(o), w0, {g});
    REQUIRE(got.allFinite());
    // ‖Δ‖ = √3 within float rounding of the two passes and of the step (1e-6 relative).
    CHECK(got.norm() == doctest::Approx(0.02 * std::sqrt(double(r))).epsilon(1e-6));
    // The direction is the gradient's (denormal inputs carry 1 to 23 significant bits: 1e-3).
    CHECK((got / got.norm() + g / g.norm()).norm() <= 1e-3);
  }

  TEST_CASE("p at the Muon end without a moment is Muon bit for bit") {
    for (const auto& shape : {std::pair<index_t, index_t>{12, 20}, {20, 12}}) {
      const index_t r = shape.first, c = shape.second;  // clang: CAPTURE cannot capture bindings
      CAPTURE(r);
      const Mat w0 = gaussian_mat(r, c, case_seed("pinf_w", std::uint64_t(r)));
      const auto g = gradient_sequence(r, c, 5, "pinf_g");
      SchattenMuonOptions o = fixed(10.0);
      o.bias_correction = false;  // Keller's Muon has none
      o.magnitude = SchattenPDirection::Magnitude::none;
      o.polar = MuonOptions::keller_polar();
      MuonOptions mo;
      mo.shape = ScaleByShape::Rule::none;
      CHECK(run_rule_from(schatten_muon(o), w0, g) == run_rule_from(muon(mo), w0, g));
      // Without a moment the pinned magnitude is Muon's √min(r, c) at every p.
    }
  }

  TEST_CASE("the non-parametric moment at the Muon end is MuAdam") {
    const index_t r = 10, c = 16;
    const Mat w0 = gaussian_mat(r, c, case_seed("muadam_end_w"));
    const auto g = gradient_sequence(r, c, 4, "muadam_end_g");
    SchattenMuonOptions o = fixed(10.0);
    o.moment = Moment::nonparametric;
    o.momentum = 0.9;
    o.magnitude = SchattenPDirection::Magnitude::none;
    o.polar.method = PolarMethod::qdwh;
    MuAdamOptions mo;
    mo.polar.method = PolarMethod::qdwh;
    // Same formulas; ñ is rounded differently (β·(m/c₁) vs (β/c₁)·m): 1 ulp, amplified by the
    // polar factor's condition (σ_max/σ_min of D ⊙ ñ ≈ 10 here) → ≤ 1e-5; 1e-4 on the trajectory.
    CHECK(trajectory_error(run_rule_from(schatten_muon(o), w0, g), run_rule_from(muadam(mo), w0, g), w0) <=
          1e-4);
  }

  TEST_CASE("the criterion in a partition picks each layer's end from its statistics") {
    // Layer "dense": high-rank gradients, activations with one dominant direction → Muon end.
    // Layer "rank_one": rank-one gradients, spread activations → SGD end.
    // algorithms.md §4a.2; docs/surrogate/schatten_p.md.
    const index_t rows = 24, cols = 16, tokens = 64;
    std::vector<ParamSpec> specs{{"dense", {rows, cols}}, {"rank_one", {rows, cols}}};
    SchattenMuonOptions o;
    o.first = 2;
    o.interval = 3;
    std::vector<PCriterionEvent> events;
    o.on_criterion = [&](const PCriterionEvent& e) { events.push_back(e); };
    auto opt = optim::partition(specs, {"smuon", "smuon"}, route("smuon", schatten_muon(o)));
    REQUIRE(opt.init());
    Mat vd;
    std::vector<double> flat(cols);
    for (index_t i = 0; i < cols; ++i)
      flat[i] = 1.0 - 0.5 * double(i) / double(cols);
    const Mat g_dense = with_spectrum(rows, cols, flat, case_seed("part_dense"), &vd);
    const Mat a_vec = gaussian_mat(rows, 1, case_seed("part_r1a")),
              b_vec = gaussian_mat(1, cols, case_seed("part_r1b"));
    const Mat g_rank_one = a_vec * b_vec;
    // Activations: dense layer's inputs along v₁ (plus 1e-3 noise); rank-one layer's Gaussian.
    const Mat x_dense = gaussian_mat(tokens, 1, case_seed("xd")) * vd.col(0).transpose() +
                        1e-3 * gaussian_mat(tokens, cols, case_seed("xd_noise"));
    const Mat x_spread = gaussian_mat(tokens, cols, case_seed("xs"));
    std::vector<float> w1(rows * cols, 0.0f), w2(rows * cols, 0.0f);
    for (std::int64_t t = 1; t <= 8; ++t) {
      if (activations_wanted(opt, "dense")) {
        const auto xd = schatten::test::to_float_buffer(x_dense),
                   xs = schatten::test::to_float_buffer(x_spread);
        REQUIRE(accumulate_activations(opt, "dense", MatrixRef<const float>(xd.data(), tokens, cols)) ==
                Status::ok);
        REQUIRE(accumulate_activations(opt, "rank_one", MatrixRef<const float>(xs.data(), tokens, cols)) ==
                Status::ok);
      }
      auto g1 = schatten::test::to_float_buffer(g_dense), g2 = schatten::test::to_float_buffer(g_rank_one);
      REQUIRE(opt.step({w1.data(), w2.data()}, {g1.data(), g2.data()}));
    }
    // Criterion steps 2, 3, 6 for each layer.
    REQUIRE(events.size() == 6);
    for (const auto& e : events) {
      CHECK(e.had_statistics);
      CHECK(e.status == Status::ok);  // the criterion computed (its advisory failures report here)
    }
    const auto ps = schatten_p_values(opt);
    REQUIRE(ps.size() == 2);
    std::printf("[schatten_muon] p: %s = %.4f, %s = %.4f\n", ps[0].first.c_str(), ps[0].second,
                ps[1].first.c_str(), ps[1].second);
    CHECK(ps[0].second >= 9.5);
    CHECK(ps[1].second <= 1.1);
  }

  TEST_CASE("a criterion step without statistics keeps p, or assumes whitened inputs on request") {
    // Gaussian gradients and no activation Gram. Assumed whitened, the criterion takes them to
    // the SGD end (p* ≤ 1.1: docs/surrogate/schatten_p.md); by default it does not run, and p
    // stays at its start, 10 (docs/optim.md, "Without statistics").
    const index_t rows = 24, cols = 16;
    const std::vector<ParamSpec> specs{{"w", {rows, cols}}};
    const auto grads = gradient_sequence(rows, cols, 8, "no_stats_g");
    auto run = [&](SchattenPDirection::WithoutStatistics mode, std::vector<PCriterionEvent>& events) {
      SchattenMuonOptions o;
      o.first = 2;
      o.interval = 3;
      o.without_statistics = mode;
      o.on_criterion = [&](const PCriterionEvent& e) { events.push_back(e); };
      auto opt = optim::partition(specs, {"s"}, route("s", schatten_muon(o)));
      REQUIRE(opt.init());
      std::vector<float> w(rows * cols, 0.0f);
      for (std::size_t t = 0; t < grads.size(); ++t) {
        auto g = schatten::test::to_float_buffer(grads[t]);
        REQUIRE(opt.step({w.data()}, {g.data()}));
      }
      const auto ps = schatten_p_values(opt);
      REQUIRE(ps.size() == 1);
      return ps[0].second;
    };
    std::vector<PCriterionEvent> kept, whitened;
    CHECK(run(SchattenPDirection::WithoutStatistics::keep_p, kept) == 10.0);
    REQUIRE(kept.size() == 3);  // steps 2, 3, 6
    for (const PCriterionEvent& e : kept) {
      CHECK_FALSE(e.had_statistics);
      CHECK_FALSE(e.choice.descends);
      CHECK(e.choice.evaluations == 0);
      CHECK(e.p == 10.0);
      CHECK(e.status == Status::ok);  // not run is not a failure
    }
    CHECK(run(SchattenPDirection::WithoutStatistics::assume_whitened, whitened) <= 1.1);
    REQUIRE(whitened.size() == 3);
    CHECK(whitened[0].choice.descends);
    CHECK(SchattenMuonOptions{}.without_statistics == SchattenPDirection::WithoutStatistics::keep_p);
  }

  TEST_CASE("layer chunks stagger the criterion steps and activations_wanted follows them") {
    const index_t rows = 6, cols = 4;
    std::vector<ParamSpec> specs{
        {"a", {rows, cols}}, {"b", {rows, cols}}, {"c", {rows, cols}}, {"d", {cols}}};
    SchattenMuonOptions o;
    o.first = 2;
    o.interval = 6;
    o.chunks = 3;
    // Audit finding 8: the phases came from a counter shared by the rule's copies and never
    // reset, so each init() of the same partition shifted them when the number of its layers
    // is not a multiple of `chunks` ((0,1) → (2,0) → (1,2) for two). They are now the layer's
    // index within the route: every init() gives the same schedule, with 3 layers or 2.
    for (const bool three : {true, false}) {
      CAPTURE(three);
      const std::vector<std::string> labels{"s", "s", three ? "s" : "adamw", "adamw"};
      auto opt = optim::partition(specs, labels, route("s", schatten_muon(o)), route("adamw", adamw()));
      for (int init = 1; init <= 3; ++init) {
        CAPTURE(init);
        REQUIRE(opt.init());
        // Offsets 0, 2, 4: a at 2, 6, 12; b at 4, 8, 14; c at 6, 10, 16.
        std::map<std::string, std::vector<std::int64_t>> runs;
        std::vector<float> w(rows * cols * 3 + cols, 0.0f);
        for (std::int64_t t = 1; t <= 16; ++t) {
          for (const char* name : {"a", "b", "c", "d"})
            if (activations_wanted(opt, name)) runs[name].push_back(t);
          std::vector<float> g(w.size());
          for (std::size_t k = 0; k < g.size(); ++k)
            g[k] = 0.01f * float((k * 7 + std::size_t(t)) % 11) - 0.05f;
          float* base = w.data();
          float* gb = g.data();
          REQUIRE(opt.step({base, base + 24, base + 48, base + 72}, {gb, gb + 24, gb + 48, gb + 72}));
        }
        CHECK(runs["a"] == std::vector<std::int64_t>{2, 6, 12});
        CHECK(runs["b"] == std::vector<std::int64_t>{4, 8, 14});
        if (three) CHECK(runs["c"] == std::vector<std::int64_t>{6, 10, 16});
        if (!three) CHECK(runs.count("c") == 0);
        CHECK(runs.count("d") == 0);
        for (const char* name : {"a", "b"})
          CHECK(*activation_gram(opt, name).rule_step == 16);
      }
    }
  }

  TEST_CASE("activation statistics: Gram of the inputs and clear refusals") {
    const index_t rows = 6, cols = 5, tokens = 9;
    std::vector<ParamSpec> specs{{"w", {rows, cols}}, {"b", {cols}}};
    auto opt =
        optim::partition(specs, {"smuon", "adamw"}, route("smuon", schatten_muon()), route("adamw", adamw()));
    REQUIRE(opt.init());
    const Mat x = gaussian_mat(tokens, cols, case_seed("stats_x"));
    const auto xf = schatten::test::to_float_buffer(x);
    const MatrixRef<const float> xr(xf.data(), tokens, cols);
    REQUIRE(accumulate_activations(opt, "w", xr) == Status::ok);
    REQUIRE(accumulate_activations(opt, "w", xr) == Status::ok);  // sums within a step
    const ActivationGramRef g = activation_gram(opt, "w");
    REQUIRE(g.gram != nullptr);
    CHECK(*g.samples == 2 * tokens);
    const Mat want = 2.0 * x.transpose() * x;
    for (index_t i = 0; i < cols; ++i)
      for (index_t j = 0; j < cols; ++j)
        CHECK(g.gram[i * cols + j] == doctest::Approx(want(i, j)).epsilon(1e-5));
    CHECK(accumulate_activations(opt, "b", xr) == Status::invalid_argument);     // AdamW: no statistics
    CHECK(accumulate_activations(opt, "nope", xr) == Status::invalid_argument);  // unknown parameter
    CHECK(accumulate_activations(opt, "w", MatrixRef<const float>(xf.data(), 3, 3)) ==
          Status::invalid_argument);
    auto bad = xf;
    bad[4] = INFINITY;
    CHECK(accumulate_activations(opt, "w", MatrixRef<const float>(bad.data(), tokens, cols)) ==
          Status::non_finite_input);
    CHECK(*g.samples == 2 * tokens);
    CHECK(g.gram[0] == doctest::Approx(want(0, 0)).epsilon(1e-5));
    // After a step the next call starts a new sum.
    std::vector<float> w(rows * cols, 0.0f), b(cols, 0.0f), gw(rows * cols, 0.1f), gb(cols, 0.1f);
    gw[3] = -0.2f;
    REQUIRE(opt.step({w.data(), b.data()}, {gw.data(), gb.data()}));
    REQUIRE(accumulate_activations(opt, "w", xr) == Status::ok);
    CHECK(*activation_gram(opt, "w").samples == tokens);
  }

  TEST_CASE("an overflowed activation Gram is refused by name and can be replaced or dropped") {
    // Audit finding 2: an ∞ in the Gram (an all-reduce that overflowed) refused the step with a
    // message that did not name the Gram, and accumulate_activations kept adding to the ∞ sum
    // (it restarted only after a step), so every retry was refused again.
    const index_t rows = 6, cols = 4, tokens = 8;
    std::vector<ParamSpec> specs{{"w", {rows, cols}}};
    SchattenMuonOptions o;
    o.first = 1;
    std::vector<PCriterionEvent> events;
    o.on_criterion = [&](const PCriterionEvent& e) { events.push_back(e); };
    const Mat x = gaussian_mat(tokens, cols, case_seed("inf_gram_x"));
    const auto xf = schatten::test::to_float_buffer(x);
    const MatrixRef<const float> xr(xf.data(), tokens, cols);
    const auto g0 = schatten::test::to_float_buffer(gaussian_mat(rows, cols, case_seed("inf_gram_g")));
    for (bool drop : {false, true}) {
      CAPTURE(drop);
      events.clear();
      auto opt = optim::partition(specs, {"s"}, route("s", schatten_muon(o)));
      REQUIRE(opt.init());
      REQUIRE(activations_wanted(opt, "w"));
      REQUIRE(accumulate_activations(opt, "w", xr) == Status::ok);
      ActivationGramRef ref = activation_gram(opt, "w");
      ref.gram[1] = ref.gram[cols] = INFINITY;  // the overflowed sum
      std::vector<float> w(rows * cols, 0.5f);
      const std::vector<float> w0 = w;
      auto g = g0;
      const StepReport refused = opt.step({w.data()}, {g.data()});
      CHECK(refused.status == Status::non_finite_input);
      CHECK(std::string(refused.message).find("activation Gram") != std::string::npos);
      CHECK(w == w0);
      CHECK(*ref.rule_step == 0);
      if (drop) {
        REQUIRE(clear_activations(opt, "w") == Status::ok);
        CHECK(*ref.samples == 0);
      } else {
        // The retry's accumulation starts a new sum instead of adding to the ∞ one.
        REQUIRE(accumulate_activations(opt, "w", xr) == Status::ok);
        CHECK(*ref.samples == tokens);
        const Mat want = x.transpose() * x;
        // Float GEMM of 8 terms against double: 1e-5 relative is ~100 float ulps.
        CHECK(ref.gram[1] == doctest::Approx(want(0, 1)).epsilon(1e-5));
      }
      g = g0;
      REQUIRE(opt.step({w.data()}, {g.data()}));
      REQUIRE(events.size() == 1);
      CHECK(events[0].had_statistics == !drop);
      CHECK(events[0].status == Status::ok);
      if (drop) CHECK(events[0].p == 10.0);  // no statistics: p kept
    }
    auto adam = optim::partition(specs, {"a"}, route("a", adamw()));
    REQUIRE(adam.init());
    CHECK(clear_activations(adam, "w") == Status::invalid_argument);  // a rule without statistics
  }

  TEST_CASE("degenerate activation Grams keep p, and the criterion's EMAs stay finite") {
    // Audit findings 3 and 4. Zero inputs (an all-zero Gram) made exact_momentum's objective +∞
    // and took p to p_min; exact_tightness with inputs of 3e18 (Gram entries 32·9e36 = 2.9e38,
    // finite) overflowed its float GEMM for B, stored ∞ in ema_b, and no later run chose p again.
    const index_t rows = 12, cols = 8, tokens = 32;
    std::vector<ParamSpec> specs{{"w", {rows, cols}}};
    const Mat x_normal = gaussian_mat(tokens, cols, case_seed("degenerate_x"));
    const auto grads = gradient_sequence(rows, cols, 8, "degenerate_g");
    for (int which = 0; which < 2; ++which) {
      CAPTURE(which);
      SchattenMuonOptions o;
      o.first = 2;
      o.interval = 2;
      if (which == 1) o.criterion.criterion = surrogate::PCriterion::exact_tightness;
      std::vector<PCriterionEvent> events;
      o.on_criterion = [&](const PCriterionEvent& e) { events.push_back(e); };
      auto opt = optim::partition(specs, {"s"}, route("s", schatten_muon(o)));
      REQUIRE(opt.init());
      std::vector<float> w(rows * cols, 0.0f);
      for (int t = 1; t <= 8; ++t) {
        if (activations_wanted(opt, "w")) {
          // which 0: zero inputs at every criterion step; which 1: 3e18 at step 2, then ordinary.
          std::vector<float> x(tokens * cols, which == 0 ? 0.0f : 3.0e18f);
          if (which == 1 && t > 3) x = schatten::test::to_float_buffer(x_normal);
          REQUIRE(accumulate_activations(opt, "w", MatrixRef<const float>(x.data(), tokens, cols)) ==
                  Status::ok);
        }
        auto g = schatten::test::to_float_buffer(grads[t - 1]);
        REQUIRE(opt.step({w.data()}, {g.data()}));
        std::map<std::string, Field> fields;
        Saver sv{&fields};
        opt.visit(sv);
        for (const auto& [name, f] : fields)
          if (name.find("ema_") != std::string::npos)
            for (float v : std::get<Buffer>(f))
              CHECK(std::isfinite(v));
      }
      REQUIRE(events.size() == 4);  // steps 2, 4, 6, 8
      for (const PCriterionEvent& e : events) {
        CHECK(e.had_statistics);
        CHECK(e.status == Status::ok);
        CHECK(std::isfinite(e.choice.step_multiplier));
      }
      if (which == 0) {
        for (const PCriterionEvent& e : events) {
          CHECK_FALSE(e.choice.descends);  // a zero Gram is no statistics: p kept
          CHECK(e.p == 10.0);
        }
      } else {
        CHECK(events.back().choice.descends);  // ordinary inputs: the criterion chooses again
      }
    }
  }

  TEST_CASE("a partition whose init() was refused has no statistics and does not crash") {
    // Found checking audit finding 1 end to end: with tolerance 1e-16 now refused at init(),
    // the training loop's activations_wanted() visited states that did not exist (a segfault;
    // any refused init() did it).
    const index_t rows = 6, cols = 4, tokens = 3;
    std::vector<ParamSpec> specs{{"w", {rows, cols}}};
    SchattenMuonOptions o;
    o.criterion.tolerance = 1e-16;
    auto opt = optim::partition(specs, {"s"}, route("s", schatten_muon(o)));
    for (int attempt = 0; attempt < 2; ++attempt) {  // before any init(), and after a refused one
      CAPTURE(attempt);
      if (attempt == 1) {
        const StepReport r = opt.init();
        CHECK(r.status == Status::invalid_argument);
        CHECK(std::string(r.message).find("tolerance") != std::string::npos);
      }
      CHECK_FALSE(activations_wanted(opt, "w"));
      const std::vector<float> x(tokens * cols, 1.0f);
      CHECK(accumulate_activations(opt, "w", MatrixRef<const float>(x.data(), tokens, cols)) ==
            Status::invalid_argument);
      CHECK(clear_activations(opt, "w") == Status::invalid_argument);
      CHECK(schatten_p_values(opt).empty());
      std::vector<float> w(rows * cols, 0.0f), g(rows * cols, 0.1f);
      CHECK(opt.step({w.data()}, {g.data()}).status == Status::invalid_argument);
    }
  }

  TEST_CASE("adaptive state resumes bit for bit and a failing criterion changes nothing") {
    const index_t rows = 12, cols = 8, tokens = 20;
    std::vector<ParamSpec> specs{{"w", {rows, cols}}};
    SchattenMuonOptions o;
    o.first = 2;
    o.interval = 2;
    o.moment = Moment::parametric;
    auto make = [&] {
      auto p = optim::partition(specs, {"s"}, route("s", schatten_muon(o)));
      REQUIRE(p.init());
      return p;
    };
    const auto grads = gradient_sequence(rows, cols, 8, "resume_smuon_g");
    const Mat x = gaussian_mat(tokens, cols, case_seed("resume_smuon_x"));
    const auto xf = schatten::test::to_float_buffer(x);
    auto run = [&](auto& opt, std::vector<float>& w, int from, int to) {
      for (int t = from; t < to; ++t) {
        if (activations_wanted(opt, "w"))
          REQUIRE(accumulate_activations(opt, "w", MatrixRef<const float>(xf.data(), tokens, cols)) ==
                  Status::ok);
        auto gf = schatten::test::to_float_buffer(grads[t]);
        REQUIRE(opt.step({w.data()}, {gf.data()}));
      }
    };
    auto a = make();
    std::vector<float> wa(rows * cols, 0.0f), wb = wa;
    run(a, wa, 0, 8);
    auto b = make();
    run(b, wb, 0, 4);
    // Statistics collected for step 5, then saved: they must come back too.
    REQUIRE(accumulate_activations(b, "w", MatrixRef<const float>(xf.data(), tokens, cols)) == Status::ok);
    std::map<std::string, Field> saved;
    Saver sv{&saved};
    b.visit(sv);
    CHECK(saved.count("w/0_schatten_p_direction/activation_gram") == 1);
    CHECK(saved.count("w/0_schatten_p_direction/ema_align") == 1);
    auto fresh = make();
    Loader ld{&saved};
    fresh.visit(ld);
    // Step 5 is not a criterion step (due at 2, 4, 6, 8), so the statistics just saved are
    // stale by then; run the remaining steps with the usual collection.
    run(fresh, wb, 4, 8);
    CHECK(wa == wb);
    std::map<std::string, Field> end_a, end_b;
    Saver sa{&end_a}, sb{&end_b};
    a.visit(sa);
    fresh.visit(sb);
    CHECK(end_a == end_b);

    // A criterion that cannot run (invalid options): a partition refuses it at init, naming
    // the field (rule.hpp, check_of) ...
    SchattenMuonOptions bad = o;
    bad.criterion.p_min = 20.0;
    bad.without_statistics = SchattenPDirection::WithoutStatistics::assume_whitened;  // no Grams below
    auto c = optim::partition(specs, {"s"}, route("s", schatten_muon(bad)));
    const StepReport refused = c.init();
    CHECK(refused.status == Status::invalid_argument);
    CHECK(std::string(refused.message).find("route 's'") != std::string::npos);
    CHECK(std::string(refused.message).find("p_min") != std::string::npos);
    // ... and the rule itself, run past that check (update_unguarded, which skips it), fails the
    // step at its first criterion step with the state and the update buffer unchanged: the
    // rule's own guarantee (rule.hpp), which the partition's restore builds on.
    const auto chain = schatten_muon(bad);
    auto st = chain.init(BlockShape{rows, cols});
    std::vector<float> wc(rows * cols, 0.0f);
    auto g0 = schatten::test::to_float_buffer(grads[0]);
    const ConstBlock wref(wc.data(), rows, cols);
    REQUIRE(chain.update_unguarded(Block(g0.data(), rows, cols), st, wref) == Status::ok);  // no criterion
    std::map<std::string, Field> before, after;
    Saver s1{&before};
    visit_fields(s1, st);
    auto g1 = schatten::test::to_float_buffer(grads[1]);
    const auto g1_before = g1;
    CHECK(chain.update_unguarded(Block(g1.data(), rows, cols), st, wref) == Status::invalid_argument);
    Saver s2{&after};
    visit_fields(s2, st);
    CHECK(before == after);
    CHECK(g1 == g1_before);
  }
}

}  // namespace optim_test_schatten_muon
