// SPDX-License-Identifier: Apache-2.0
/// \file
/// The Kokkos View overloads agree bit for bit with the plain-array API.
#include <doctest/doctest.h>

#include <Kokkos_Core.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "schatten/kokkos/polar.hpp"
#include "support/convert.hpp"
#include "support/kokkos_allocations.hpp"
#include "support/seed.hpp"
#include "support/spectra.hpp"
#include "support/threads.hpp"
#include "support/tolerances.hpp"

namespace kernels_test_polar_views {  // this file's scope in a unity build (tests/CMakeLists.txt)

using namespace schatten;
using namespace schatten::test;

TEST_SUITE("kernels.polar.views") {
  TEST_CASE_TEMPLATE("View overloads: LayoutRight and LayoutLeft and rank-3 batches and in place", T, float,
                     double) {
    const index_t r = 24, c = 40, b = 2;
    std::vector<T> in;
    for (index_t i = 0; i < b; ++i) {
      SpectrumCase sc{"views", r, c, geometric(24, 1e-2)};
      auto m = to_row_major<T>(make_matrix(sc, case_seed("views", static_cast<std::uint64_t>(i))));
      in.insert(in.end(), m.begin(), m.end());
    }
    std::vector<T> ref(in.size());
    REQUIRE(polar(BatchedMatrixRef<const T>(in.data(), b, r, c), BatchedMatrixRef<T>(ref.data(), b, r, c))
                .status == Status::ok);
    using Exec = Kokkos::DefaultExecutionSpace;
    const Exec space;
    schatten::kokkos::Workspace<> ws;

    // Rank 2, LayoutRight (copied from the first matrix) and LayoutLeft (same values).
    Kokkos::View<T**, Kokkos::LayoutRight> ar("ar", r, c), qr("qr", r, c);
    Kokkos::View<T**, Kokkos::LayoutLeft> al("al", r, c), ql("ql", r, c);
    auto har = Kokkos::create_mirror_view(ar);
    for (index_t i = 0; i < r; ++i)
      for (index_t j = 0; j < c; ++j)
        har(i, j) = in[static_cast<std::size_t>(i * c + j)];
    Kokkos::deep_copy(ar, har);
    Kokkos::deep_copy(al, ar);
    Kokkos::View<const T**, Kokkos::LayoutRight> car = ar;
    REQUIRE(schatten::kokkos::polar(space, car, qr, PolarOptions{}, ws).status == Status::ok);
    REQUIRE(schatten::kokkos::polar(space, al, ql).status == Status::ok);
    auto hqr = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), qr);
    auto hql = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), ql);
    // LayoutRight is the plain API's row-major: the same bits. LayoutLeft iterates on the other
    // orientation: equal to rounding (see test_polar_api.cpp).
    double diff = 0.0, norm = 0.0;
    for (index_t i = 0; i < r; ++i)
      for (index_t j = 0; j < c; ++j) {
        CHECK(hqr(i, j) == ref[static_cast<std::size_t>(i * c + j)]);
        diff += std::pow(double(hql(i, j)) - double(ref[static_cast<std::size_t>(i * c + j)]), 2);
        norm += std::pow(double(ref[static_cast<std::size_t>(i * c + j)]), 2);
      }
    CHECK(std::sqrt(diff / norm) <= 2 * rounding_tolerance<T>(PolarOptions{}));

    // Rank 3 (batch, rows, cols), in place.
    Kokkos::View<T***, Kokkos::LayoutRight> a3("a3", b, r, c);
    auto h3 = Kokkos::create_mirror_view(a3);
    std::copy(in.begin(), in.end(), h3.data());
    Kokkos::deep_copy(a3, h3);
    REQUIRE(schatten::kokkos::polar(space, a3, a3, PolarOptions{}, ws).status == Status::ok);
    Kokkos::deep_copy(h3, a3);
    CHECK(std::equal(ref.begin(), ref.end(), h3.data()));
    CHECK(ws.capacity() > 0);

    // Shape mismatch is reported, not thrown.
    Kokkos::View<T**, Kokkos::LayoutRight> wrong("wrong", c, r);
    CHECK(schatten::kokkos::polar(space, ar, wrong).status == Status::invalid_argument);
  }

  TEST_CASE("View overloads of spectral_power and spectral_clip give the plain API's bits") {
    // Rank-3 LayoutRight Views hold the plain API's row-major batch: the same kernel on the same
    // data, so equality is exact.
    const index_t r = 20, c = 32, b = 2;
    std::vector<double> in;
    for (index_t i = 0; i < b; ++i) {
      SpectrumCase sc{"views_maps", r, c, geometric(20, 1e-2, 2.0)};
      auto m = to_row_major<double>(make_matrix(sc, case_seed("views_maps", static_cast<std::uint64_t>(i))));
      in.insert(in.end(), m.begin(), m.end());
    }
    SpectralPowerOptions po;
    po.alpha = 0.5;
    SpectralClipOptions co;
    co.lower = 0.1;
    co.upper = 1.0;
    std::vector<double> ref_power(in.size()), ref_clip(in.size());
    REQUIRE(spectral_power(BatchedMatrixRef<const double>(in.data(), b, r, c),
                           BatchedMatrixRef<double>(ref_power.data(), b, r, c), po)
                .status == Status::ok);
    REQUIRE(spectral_clip(BatchedMatrixRef<const double>(in.data(), b, r, c),
                          BatchedMatrixRef<double>(ref_clip.data(), b, r, c), co)
                .status == Status::ok);
    using Exec = Kokkos::DefaultExecutionSpace;
    const Exec space;
    schatten::kokkos::Workspace<> ws;
    Kokkos::View<double***, Kokkos::LayoutRight> a3("a3", b, r, c), o3("o3", b, r, c);
    auto h3 = Kokkos::create_mirror_view(a3);
    std::copy(in.begin(), in.end(), h3.data());
    Kokkos::deep_copy(a3, h3);
    Kokkos::View<const double***, Kokkos::LayoutRight> ca3 = a3;
    REQUIRE(schatten::kokkos::spectral_power(space, ca3, o3, po, ws).status == Status::ok);
    auto ho = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), o3);
    CHECK(std::equal(ref_power.begin(), ref_power.end(), ho.data()));
    REQUIRE(schatten::kokkos::spectral_clip(space, ca3, o3, co, ws).status == Status::ok);
    Kokkos::deep_copy(ho, o3);
    CHECK(std::equal(ref_clip.begin(), ref_clip.end(), ho.data()));
    co.upper = -1.0;
    CHECK(schatten::kokkos::spectral_clip(space, ca3, o3, co, ws).status == Status::invalid_argument);
  }

  TEST_CASE("threads on their own execution-space instances get the bits of each instance alone") {
    // The thread contract on separate queues (docs/conventions.md "Threads"). On CUDA each
    // instance is a stream with its own cuBLAS and cuSOLVER handles and solver scratch
    // (vendor.hpp, docs/reliability.md Finding 86): QDWH in double reaches the GEMM, the
    // Cholesky and its info check, and the TRSM; Polar Express in float the SYRK. Kokkos 4 makes
    // new instances (CUDA: new streams); Kokkos 3.4 has no partition_space, so both threads use
    // the default instance there. Each result must equal, bit for bit, the same call on the same
    // instance made before any thread started (one queue, one handle: the same kernels).
    using Exec = Kokkos::DefaultExecutionSpace;
#if KOKKOS_VERSION >= 40000
    const std::vector<Exec> spaces = Kokkos::Experimental::partition_space(Exec(), 1, 1);
#else
    const std::vector<Exec> spaces{Exec(), Exec()};
#endif
    constexpr int kThreads = 2, kRounds = 5;
    const index_t r = 96, c = 64;
    struct Lane {
      Kokkos::View<double**, Kokkos::LayoutRight> a, u;
      Kokkos::View<float**, Kokkos::LayoutRight> af, q;
      std::vector<double> u_alone;
      std::vector<float> q_alone;
      schatten::kokkos::Workspace<> ws;
      int differing = 0, failed = 0;
    };
    std::vector<Lane> lanes(kThreads);
    const auto run = [&](int t) {  // one QDWH and one polar on lane t; false unless both are ok
      Lane& l = lanes[static_cast<std::size_t>(t)];
      const Exec& space = spaces[static_cast<std::size_t>(t)];
      Kokkos::View<const double**, Kokkos::LayoutRight> a = l.a;
      Kokkos::View<const float**, Kokkos::LayoutRight> af = l.af;
      return schatten::kokkos::qdwh(space, a, l.u, QdwhOptions{}, l.ws).status == Status::ok &&
             schatten::kokkos::polar(space, af, l.q, PolarOptions{}, l.ws).status == Status::ok;
    };
    for (int t = 0; t < kThreads; ++t) {
      Lane& l = lanes[static_cast<std::size_t>(t)];
      const auto seed = case_seed("views_threads", static_cast<std::uint64_t>(t));
      const auto in =
          to_row_major<double>(make_matrix(SpectrumCase{"views_threads", r, c, geometric(64, 1e-4)}, seed));
      l.a = decltype(l.a)("a", r, c);
      l.u = decltype(l.u)("u", r, c);
      l.af = decltype(l.af)("af", r, c);
      l.q = decltype(l.q)("q", r, c);
      auto ha = Kokkos::create_mirror_view(l.a);
      auto haf = Kokkos::create_mirror_view(l.af);
      for (std::size_t i = 0; i < in.size(); ++i) {
        ha.data()[i] = in[i];
        haf.data()[i] = static_cast<float>(in[i]);
      }
      Kokkos::deep_copy(l.a, ha);
      Kokkos::deep_copy(l.af, haf);
      REQUIRE(run(t));
      auto hu = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), l.u);
      auto hq = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), l.q);
      l.u_alone.assign(hu.data(), hu.data() + hu.size());
      l.q_alone.assign(hq.data(), hq.data() + hq.size());
    }
    schatten::test::run_together(kThreads, [&](int t) {
      Lane& l = lanes[static_cast<std::size_t>(t)];
      for (int round = 0; round < kRounds; ++round) {
        Kokkos::deep_copy(l.u, 0.0);
        Kokkos::deep_copy(l.q, 0.0f);
        if (!run(t)) {
          ++l.failed;
          continue;
        }
        auto hu = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), l.u);
        auto hq = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), l.q);
        if (!std::equal(l.u_alone.begin(), l.u_alone.end(), hu.data()) ||
            !std::equal(l.q_alone.begin(), l.q_alone.end(), hq.data()))
          ++l.differing;
      }
    });
    for (int t = 0; t < kThreads; ++t) {
      CAPTURE(t);
      CHECK(lanes[static_cast<std::size_t>(t)].failed == 0);
      CHECK(lanes[static_cast<std::size_t>(t)].differing == 0);
    }
  }

  TEST_CASE_TEMPLATE("a second call on the same Workspace makes no Kokkos allocation, on any backend", T,
                     float, double) {
    // docs/kernels/polar.md ("Cost"): once a workspace has grown for a shape, the kernels
    // allocate nothing, in any memory space. Counted through Kokkos Tools
    // (support/kokkos_allocations.hpp), so that this holds on the GPU builds too, where the host
    // probe of tests/optim cannot see device buffers: the cuSOLVER scratch of QDWH's Cholesky
    // (vendor.hpp), Kokkos' reduction scratch. The first call may allocate (the workspace grows,
    // and so may Kokkos' own scratch); the second, on the same shape, must not.
    using Exec = Kokkos::DefaultExecutionSpace;
    const Exec space;
    Rng rng(case_seed("views without allocations"));
    int calls = 0;
    for (const index_t batch : {1, 3})
      for (const std::pair<index_t, index_t>& shape : {std::pair<index_t, index_t>{24, 40}, {40, 24}}) {
        const index_t r = shape.first, c = shape.second, k = std::min(r, c);
        Kokkos::View<T***> a("a", batch, r, c), out("out", batch, r, c), h("h", batch, k, k);
        auto ha = Kokkos::create_mirror_view(a);
        for (index_t i = 0; i < batch * r * c; ++i)
          ha.data()[i] = static_cast<T>(rng.normal());
        Kokkos::deep_copy(a, ha);
        const Kokkos::View<const T***> ca = a;
        std::vector<double> norms(static_cast<std::size_t>(batch));
        // Every kernel of the View API, each twice on its own workspace; `name` says which.
        const auto twice = [&](const std::string& name, auto&& call) {
          schatten::kokkos::Workspace<> ws;
          REQUIRE(call(ws));
          schatten::test::KokkosAllocationProbe probe;
          const bool ok = call(ws);
          CAPTURE(name);
          CAPTURE(batch);
          CAPTURE(r);
          REQUIRE(ok);
          if (probe.active()) {
            const std::string last = probe.last_label();
            CAPTURE(last);
            CHECK(probe.count() == 0);
          }
          ++calls;
        };
        for (PolarMethod method : {PolarMethod::newton_schulz, PolarMethod::polar_express,
                                   PolarMethod::gram_newton_schulz, PolarMethod::qdwh}) {
          PolarOptions o;
          o.method = method;
          o.compute_orthogonality_error = true;
          twice(to_string(method),
                [&](auto& ws) { return bool(schatten::kokkos::polar(space, ca, out, o, ws)); });
        }
        twice("qdwh with h",
              [&](auto& ws) { return bool(schatten::kokkos::qdwh(space, ca, out, h, QdwhOptions{}, ws)); });
        SpectralPowerOptions po;
        po.alpha = 0.5;
        twice("spectral_power",
              [&](auto& ws) { return bool(schatten::kokkos::spectral_power(space, ca, out, po, ws)); });
        SpectralClipOptions co;
        co.lower = 0.1;
        co.upper = 1.0;
        twice("spectral_clip",
              [&](auto& ws) { return bool(schatten::kokkos::spectral_clip(space, ca, out, co, ws)); });
        twice("schatten_norm", [&](auto& ws) {
          return schatten::kokkos::schatten_norm(space, ca, 1.0, norms.data(), SchattenNormOptions{}, ws) ==
                 Status::ok;
        });
      }
    CHECK(calls == 4 * 8);
  }

  TEST_CASE("a batch of small matrices is one launch sequence on a device (the polynomial methods)") {
    // Issue #7 item 3 and docs/kernels/polar.md ("Launches of a batch"): the Newton–Schulz
    // family runs a batch of same-shape matrices in no more launches than one matrix, so that
    // many small matrices are not launch-bound. Counted through Kokkos Tools
    // (support/kokkos_allocations.hpp), by label, for 1 and 7 matrices of 24 × 40 (every
    // dimension ≤ kLaunchBoundDim): on a device no label may count more for 7 than for 1 (it may
    // count less: such a batch forms its symmetric products as full batched GEMMs, with no
    // triangle fill, where one matrix takes a SYRK and a fill). On the host, where a launch is
    // cheap and a batch keeps
    // the bits of separate calls, the per-matrix reductions of the statistics (reduce_per_matrix,
    // batched.hpp) run once per matrix, and nothing else may: a loop over the matrices anywhere
    // else in the sequence fails here on the CPU too.
    using Exec = Kokkos::DefaultExecutionSpace;
    constexpr bool host = schatten::kokkos::detail::runs_on_host<Exec>;
    const std::vector<std::string> per_matrix = {
        "schatten::polar::scan",         "schatten::polar::norm",          "schatten::polar::schatten4",
        "schatten::polar::dual_norm",    "schatten::polar::dual_norm_max", "schatten::polar::output_max",
        "schatten::polar::orthogonality"};
    const Exec space;
    Rng rng(case_seed("launches per batch"));
    const index_t r = 24, c = 40;
    // The launches of the second call (the first grows the workspace), by label.
    const auto launches = [&](index_t batch, auto&& call) {
      Kokkos::View<float***> a("a", batch, r, c), out("out", batch, r, c);
      auto ha = Kokkos::create_mirror_view(a);
      for (index_t i = 0; i < batch * r * c; ++i)
        ha.data()[i] = static_cast<float>(rng.normal());
      Kokkos::deep_copy(a, ha);
      schatten::kokkos::Workspace<> ws;
      REQUIRE(call(a, out, ws));
      schatten::test::KokkosLaunchProbe probe;
      REQUIRE(call(a, out, ws));
      return std::make_pair(probe.active(), probe.counts());
    };
    const auto check = [&](const std::string& name, auto&& call) {
      CAPTURE(name);
      const auto one = launches(1, call), seven = launches(7, call);
      if (!one.first || !seven.first) return;  // another tool is loaded
      CHECK_FALSE(one.second.empty());
      std::map<std::string, long> all = one.second;
      all.insert(seven.second.begin(), seven.second.end());
      for (const auto& entry : all) {
        const std::string& label = entry.first;
        CAPTURE(label);
        const long n1 = one.second.count(label) ? one.second.at(label) : 0;
        const long n7 = seven.second.count(label) ? seven.second.at(label) : 0;
        const bool reduction = std::find(per_matrix.begin(), per_matrix.end(), label) != per_matrix.end();
        if (host)
          CHECK(n7 == (reduction ? 7 * n1 : n1));
        else  // a batch may launch less: a launch-bound batch's symmetric products are full GEMMs
          CHECK(n7 <= n1);
      }
    };
    for (PolarMethod method :
         {PolarMethod::newton_schulz, PolarMethod::polar_express, PolarMethod::gram_newton_schulz}) {
      PolarOptions o;
      o.method = method;
      check(to_string(method), [&](auto& a, auto& out, auto& ws) {
        return bool(schatten::kokkos::polar(space, a, out, o, ws));
      });
    }
    {
      PolarOptions o;
      o.compute_orthogonality_error = true;
      check("orthogonality report", [&](auto& a, auto& out, auto& ws) {
        return bool(schatten::kokkos::polar(space, a, out, o, ws));
      });
    }
    for (const auto kind : {Normalization::Kind::schatten4, Normalization::Kind::aol}) {
      PolarOptions o;
      o.schedule = schedules::polar_express();
      o.schedule.normalization.kind = kind;
      check(kind == Normalization::Kind::aol ? "aol" : "schatten4", [&](auto& a, auto& out, auto& ws) {
        return bool(schatten::kokkos::polar(space, a, out, o, ws));
      });
    }
    for (const Precision p : {Precision::fp32, Precision::bf16}) {
      PolarOptions o;
      o.compute = p;
      o.dual_norm_scale = true;
      check(p == Precision::bf16 ? "bf16, dual norm" : "dual norm", [&](auto& a, auto& out, auto& ws) {
        return bool(schatten::kokkos::polar(space, a, out, o, ws));
      });
    }
    SpectralPowerOptions po;
    po.method = SpectralPowerMethod::polynomial;
    check("spectral_power, polynomial", [&](auto& a, auto& out, auto& ws) {
      return bool(schatten::kokkos::spectral_power(space, a, out, po, ws));
    });
    SpectralClipOptions co;
    co.method = SpectralClipMethod::polynomial;
    check("spectral_clip, polynomial", [&](auto& a, auto& out, auto& ws) {
      return bool(schatten::kokkos::spectral_clip(space, a, out, co, ws));
    });
  }
}

}  // namespace kernels_test_polar_views
