// SPDX-License-Identifier: Apache-2.0
/// \file
/// schatten::kokkos::step: partition steps over Kokkos Views and raw device pointers. On this
/// (host) build the direct path runs for host Views; the staged path (what device Views take) is
/// run explicitly with host Views so that its copies and its all-or-nothing rule are tested too.
#include <doctest/doctest.h>

#include <Kokkos_Core.hpp>

#include <string>
#include <vector>

#include "schatten/core/random.hpp"
#include "schatten/kokkos/optim.hpp"
#include "schatten/optim/presets.hpp"
#include "support/failing_rule.hpp"
#include "support/random_floats.hpp"
#include "support/seed.hpp"

namespace optim_test_optim_views {  // this file's scope in a unity build (tests/CMakeLists.txt)

using namespace schatten;
using namespace schatten::optim;
using schatten::test::case_seed;
using schatten::test::FailOnCall;
using schatten::test::random_vec;

namespace {
using Vec = Kokkos::View<float*, Kokkos::HostSpace>;
using Mat = Kokkos::View<float**, Kokkos::LayoutRight, Kokkos::HostSpace>;

template <class V>
void fill(const V& v, const std::vector<float>& x) {
  REQUIRE(v.span() == x.size());
  std::copy(x.begin(), x.end(), v.data());
}
template <class V>
std::vector<float> values(const V& v) {
  return std::vector<float>(v.data(), v.data() + v.span());
}

const std::vector<ParamSpec> kSpecs = {{"w1", {12, 20}}, {"b1", {20}}, {"w2", {12, 20}}, {"w3", {20, 6}}};
const std::vector<std::string> kLabels = {"muon", "adamw", "muon", "muon"};

}  // namespace

TEST_SUITE("optim.views") {
  TEST_CASE("View step equals the pointer step on host and staged paths") {
    auto by_ptr = partition(kSpecs, kLabels, route("muon", muon()), route("adamw", adamw()));
    auto direct = partition(kSpecs, kLabels, route("muon", muon()), route("adamw", adamw()));
    auto staged = partition(kSpecs, kLabels, route("muon", muon()), route("adamw", adamw()));
    REQUIRE(by_ptr.init());
    REQUIRE(direct.init());
    REQUIRE(staged.init());
    auto st_direct = kokkos::make_step_staging<Kokkos::HostSpace>(direct);
    CHECK(!st_direct.staged);  // host Views need no copies
    kokkos::StepStaging st_staged(staged, /*host_copies=*/true);
    std::vector<std::vector<float>> w;
    std::vector<Vec> pd, gd, ps, gs;
    for (std::size_t i = 0; i < kSpecs.size(); ++i) {
      const auto n = static_cast<std::size_t>(flatten(kSpecs[i].shape).size());
      w.push_back(random_vec(n, case_seed("vw", i)));
      pd.emplace_back("p", n);
      gd.emplace_back("g", n);
      ps.emplace_back("p", n);
      gs.emplace_back("g", n);
      fill(pd[i], w[i]);
      fill(ps[i], w[i]);
    }
    for (int t = 0; t < 3; ++t) {
      std::vector<std::vector<float>> g;
      std::vector<float*> wp, gp;
      for (std::size_t i = 0; i < kSpecs.size(); ++i) {
        g.push_back(random_vec(w[i].size(), case_seed("vg", static_cast<std::uint64_t>(10 * t) + i)));
        fill(gd[i], g[i]);
        fill(gs[i], g[i]);
      }
      const auto g_in = g;
      for (std::size_t i = 0; i < kSpecs.size(); ++i) {
        wp.push_back(w[i].data());
        gp.push_back(g[i].data());
      }
      REQUIRE(by_ptr.step(wp, gp));
      REQUIRE(kokkos::step(direct, pd, gd, st_direct));
      REQUIRE(kokkos::detail::step_views<true>(staged, ps, gs, st_staged));
      for (std::size_t i = 0; i < kSpecs.size(); ++i) {
        CHECK(values(pd[i]) == w[i]);
        CHECK(values(ps[i]) == w[i]);
        CHECK(values(gd[i]) == g[i]);       // direct: the gradient Views hold the updates
        CHECK(values(gs[i]) == g_in[i]);    // staged: device gradients untouched,
        CHECK(st_staged.grads[i] == g[i]);  // the updates are in the host copies
      }
    }
  }

  TEST_CASE("rank-2 Views and shape checks") {
    const std::vector<ParamSpec> specs = {{"a", {4, 6}}, {"b", {6, 4}}};
    auto opt = partition(specs, {"muon", "muon"}, route("muon", muon()), route("adamw", adamw()));
    auto ref = partition(specs, {"muon", "muon"}, route("muon", muon()), route("adamw", adamw()));
    REQUIRE(opt.init());
    REQUIRE(ref.init());
    auto st = kokkos::make_step_staging<Kokkos::HostSpace>(opt);
    std::vector<Mat> p = {Mat("a", 4, 6), Mat("b", 6, 4)}, g = {Mat("ga", 4, 6), Mat("gb", 6, 4)};
    std::vector<std::vector<float>> w = {random_vec(24, 1), random_vec(24, 2)};
    std::vector<std::vector<float>> gr = {random_vec(24, 3), random_vec(24, 4)};
    for (std::size_t i = 0; i < 2; ++i) {
      fill(p[i], w[i]);
      fill(g[i], gr[i]);
    }
    REQUIRE(kokkos::step(opt, p, g, st));
    REQUIRE(ref.step({w[0].data(), w[1].data()}, {gr[0].data(), gr[1].data()}));
    CHECK(values(p[0]) == w[0]);
    CHECK(values(p[1]) == w[1]);
    // A transposed View (6 × 4 for a 4 × 6 parameter) is refused, naming it; nothing changes.
    std::vector<Mat> wrong = {Mat("a", 6, 4), p[1]};
    const auto before = values(p[1]);
    const StepReport r = kokkos::step(opt, wrong, g, st);
    CHECK(r.status == Status::invalid_argument);
    CHECK(r.bad_param == 0);
    CHECK(values(p[1]) == before);
    // A column-major View of the right extents is not row-major: refused.
    using Left = Kokkos::View<float**, Kokkos::LayoutLeft, Kokkos::HostSpace>;
    std::vector<Left> left = {Left("a", 4, 6), Left("b", 6, 4)};
    CHECK(kokkos::step(opt, left, left, st).status == Status::invalid_argument);
    // Staging reserved for another partition is refused.
    kokkos::StepStaging empty;
    CHECK(kokkos::step(opt, p, g, empty).status == Status::invalid_argument);
  }

  TEST_CASE("a failed staged step changes nothing in the Views") {
    const std::vector<ParamSpec> specs = {{"a", {4, 6}}, {"c", {3, 3}}};
    auto opt = partition(specs, {"muon", "fail"}, route("muon", muon()),
                         route("fail", chain(TraceMomentum{}, FailOnCall{})));
    REQUIRE(opt.init());
    kokkos::StepStaging st(opt, true);
    std::vector<Vec> p = {Vec("a", 24), Vec("c", 9)}, g = {Vec("ga", 24), Vec("gc", 9)};
    fill(p[0], random_vec(24, 5));
    fill(p[1], random_vec(9, 6));
    fill(g[0], random_vec(24, 7));
    fill(g[1], random_vec(9, 8));
    REQUIRE(kokkos::detail::step_views<true>(opt, p, g, st));
    const auto p0 = values(p[0]), p1 = values(p[1]);
    const StepReport r = kokkos::detail::step_views<true>(opt, p, g, st);  // FailOnCall's 2nd call
    CHECK(r.status == Status::out_of_memory);
    CHECK(r.bad_param == 1);
    CHECK(values(p[0]) == p0);
    CHECK(values(p[1]) == p1);
    // A staged step needs host copies.
    auto no_copies = kokkos::StepStaging(opt, false);
    CHECK(kokkos::detail::step_views<true>(opt, p, g, no_copies).status == Status::invalid_argument);
  }

  TEST_CASE("raw pointers with a memory kind") {
    auto opt = partition(kSpecs, kLabels, route("muon", muon()), route("adamw", adamw()));
    auto ref = partition(kSpecs, kLabels, route("muon", muon()), route("adamw", adamw()));
    REQUIRE(opt.init());
    REQUIRE(ref.init());
    auto st = kokkos::make_step_staging<Kokkos::DefaultExecutionSpace::memory_space>(opt);
    std::vector<std::vector<float>> w, g;
    for (std::size_t i = 0; i < kSpecs.size(); ++i) {
      const auto n = static_cast<std::size_t>(flatten(kSpecs[i].shape).size());
      w.push_back(random_vec(n, case_seed("rw", i)));
      g.push_back(random_vec(n, case_seed("rg", i)));
    }
    auto w2 = w, g2 = g;
    std::vector<float*> wp, gp, wp2, gp2;
    for (std::size_t i = 0; i < kSpecs.size(); ++i) {
      wp.push_back(w[i].data());
      gp.push_back(g[i].data());
      wp2.push_back(w2[i].data());
      gp2.push_back(g2[i].data());
    }
    // Device memory is the default execution space's: on a host build that is host memory.
    REQUIRE(kokkos::step(opt, wp, gp, MemoryKind::device, st));
    REQUIRE(ref.step(wp2, gp2));
    CHECK(w == w2);
    std::vector<float*> short_list(wp.begin(), wp.end() - 1);
    CHECK(kokkos::step(opt, short_list, gp, MemoryKind::host, st).status == Status::invalid_argument);
  }
}

}  // namespace optim_test_optim_views
