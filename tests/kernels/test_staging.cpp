// SPDX-License-Identifier: Apache-2.0
/// \file
/// The staging of host arrays on a device build (backends/kokkos/src/plain_io.hpp, and the
/// low-rank step's operands in low_rank.cpp): copies through the workspace's kept slots
/// (workspace_impl.hpp). A CPU build reads host arrays
/// in place, so these tests force the staging (force_host_staging) to run the device build's
/// code path here; the GPU build runs it for real.
#include <doctest/doctest.h>

#include <Kokkos_Core.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "schatten/core/buffer.hpp"
#include "schatten/core/random.hpp"
#include "schatten/kernels/gram.hpp"
#include "schatten/kernels/inner_product.hpp"
#include "schatten/kernels/low_rank.hpp"
#include "schatten/kernels/polar.hpp"
#include "schatten/kernels/qdwh.hpp"
#include "schatten/kernels/randomized_svd.hpp"
#include "schatten/kernels/spectral_power.hpp"
#include "support/forced_staging.hpp"
#include "support/kokkos_allocations.hpp"
#include "support/seed.hpp"

namespace kernels_test_staging {  // this file's scope in a unity build (tests/CMakeLists.txt)

using namespace schatten;
using schatten::test::case_seed;
using schatten::test::ForcedStaging;

namespace {
/// A batch of r × c matrices in padded storage (row stride c + 3, a gap of 5 between matrices),
/// so that staging must pack and unpack rather than copy one block.
struct Padded {
  index_t batch, rows, cols;
  std::vector<double> data;
  Padded(index_t b, index_t r, index_t c, double fill)
      : batch(b), rows(r), cols(c), data(static_cast<std::size_t>(b * stride()), fill) {}
  index_t row_stride() const { return cols + 3; }
  index_t stride() const { return rows * row_stride() + 5; }
  BatchedMatrixRef<double> ref() {
    return BatchedMatrixRef<double>::strided(data.data(), batch, rows, cols, stride(), row_stride(), 1);
  }
  BatchedMatrixRef<const double> cref() const {
    return BatchedMatrixRef<const double>::strided(data.data(), batch, rows, cols, stride(), row_stride(), 1);
  }
};

Padded random_batch(index_t b, index_t r, index_t c, const char* name) {
  Padded p(b, r, c, -7.0);  // the padding keeps -7: a write outside the matrices would show
  Rng rng(case_seed(name));
  for (index_t k = 0; k < b; ++k)
    for (index_t i = 0; i < r; ++i)
      for (index_t j = 0; j < c; ++j)
        p.ref()[k](i, j) = rng.normal();
  return p;
}

bool same_bits(const std::vector<double>& x, const std::vector<double>& y) {
  return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * sizeof(double)) == 0;
}
}  // namespace

TEST_SUITE("kernels.staging") {
  TEST_CASE("staged host arrays give the in-place results bit for bit, padding untouched") {
    // Staging only moves the elements: the kernels see a packed copy of the same values, and the
    // kernels' first step copies their input into the workspace either way, so every result
    // must have the same bits as the unstaged call's (which reads the padded arrays in place).
    for (const std::pair<index_t, index_t>& shape : {std::pair<index_t, index_t>{12, 20}, {20, 12}}) {
      const index_t b = 3, r = shape.first, c = shape.second, k = std::min(r, c);
      CAPTURE(r);
      const Padded a = random_batch(b, r, c, "staging");
      // Every entry point that stages, as a function of (output, h, norms, workspace).
      struct Call {
        std::string name;
        std::function<bool(Padded&, Padded&, std::vector<double>&, Workspace*)> run;
      };
      SpectralPowerOptions po;
      po.alpha = 0.5;
      SpectralClipOptions co;
      co.lower = 0.1;
      co.upper = 1.0;
      std::vector<Call> calls;
      for (PolarMethod m : {PolarMethod::newton_schulz, PolarMethod::polar_express,
                            PolarMethod::gram_newton_schulz, PolarMethod::qdwh}) {
        PolarOptions o;
        o.method = m;
        calls.push_back({to_string(m), [&a, o](Padded& q, Padded&, std::vector<double>&, Workspace* ws) {
                           return bool(polar(a.cref(), q.ref(), o, ws));
                         }});
      }
      calls.push_back({"qdwh with h", [&a](Padded& u, Padded& h, std::vector<double>&, Workspace* ws) {
                         return bool(qdwh(a.cref(), u.ref(), QdwhOptions{}, ws, h.ref()));
                       }});
      calls.push_back({"spectral_power", [&a, po](Padded& o, Padded&, std::vector<double>&, Workspace* ws) {
                         return bool(spectral_power(a.cref(), o.ref(), po, ws));
                       }});
      calls.push_back({"spectral_clip", [&a, co](Padded& o, Padded&, std::vector<double>&, Workspace* ws) {
                         return bool(spectral_clip(a.cref(), o.ref(), co, ws));
                       }});
      calls.push_back({"schatten_norm", [&a](Padded&, Padded&, std::vector<double>& n, Workspace* ws) {
                         return schatten_norm(a.cref(), 1.0, n.data(), SchattenNormOptions{}, ws) ==
                                Status::ok;
                       }});
      calls.push_back({"frobenius_inner", [&a](Padded&, Padded&, std::vector<double>& n, Workspace* ws) {
                         return frobenius_inner(a.cref(), a.cref(), n.data(), ws) == Status::ok;
                       }});
      for (const Call& call : calls) {
        CAPTURE(call.name);
        Padded q0(b, r, c, -7.0), h0(b, k, k, -7.0), q1(b, r, c, -7.0), h1(b, k, k, -7.0);
        std::vector<double> n0(b), n1(b);
        Workspace ws;
        REQUIRE(call.run(q0, h0, n0, &ws));
        // Read in place where the kernels can (a CPU build); a GPU build stages host arrays always.
        CHECK((ws.staging_capacity() == 0) == memory::kernels_access(MemoryKind::host));
        {
          const ForcedStaging forced;
          for (Workspace* w : {&ws, static_cast<Workspace*>(nullptr)}) {  // kept slots, per-call slots
            q1.data.assign(q1.data.size(), -7.0);
            h1.data.assign(h1.data.size(), -7.0);
            REQUIRE(call.run(q1, h1, n1, w));
            CHECK(same_bits(q0.data, q1.data));  // padding included: still -7
            CHECK(same_bits(h0.data, h1.data));
            CHECK(same_bits(n0, n1));
          }
        }
        CHECK(ws.staging_capacity() > 0);
      }
    }
  }

  TEST_CASE("staged calls keep their slots: no Kokkos allocation on the second call, memory counted") {
    // The device build's steady state for host arrays (docs/kernels/polar.md, "Cost"): the
    // workspace keeps the packed copies, so the second call of a shape allocates nothing.
    const index_t b = 2, r = 16, c = 24;
    const Padded a = random_batch(b, r, c, "staging slots");
    Padded q(b, r, c, 0.0), u(b, r, c, 0.0), h(b, r, r, 0.0);
    const ForcedStaging forced;
    Workspace ws;
    REQUIRE(polar(a.cref(), q.ref(), PolarOptions{}, &ws));
    // Two slots (input and output), each a device and a host buffer of the packed batch.
    const std::size_t packed = static_cast<std::size_t>(b * r * c) * sizeof(double);
    CHECK(ws.staging_capacity() == 4 * packed);
    const std::size_t before = Workspace::total_bytes();
    {
      schatten::test::KokkosAllocationProbe probe;
      REQUIRE(polar(a.cref(), q.ref(), PolarOptions{}, &ws));
      if (probe.active()) {
        const std::string last = probe.last_label();
        CAPTURE(last);
        CHECK(probe.count() == 0);
      }
    }
    {  // the inner product's two inputs fit the same two slots
      std::vector<double> dots(static_cast<std::size_t>(b));
      schatten::test::KokkosAllocationProbe probe;
      REQUIRE(frobenius_inner(a.cref(), a.cref(), dots.data(), &ws) == Status::ok);
      if (probe.active()) CHECK(probe.count() == 0);
      CHECK(dots[0] > 0.0);
    }
    // qdwh with h takes a third slot; h's r × r is smaller than the others.
    REQUIRE(qdwh(a.cref(), u.ref(), QdwhOptions{}, &ws, h.ref()));
    CHECK(ws.staging_capacity() == 4 * packed + 2 * static_cast<std::size_t>(b * r * r) * sizeof(double));
    {
      schatten::test::KokkosAllocationProbe probe;
      REQUIRE(qdwh(a.cref(), u.ref(), QdwhOptions{}, &ws, h.ref()));
      REQUIRE(polar(a.cref(), q.ref(), PolarOptions{}, &ws));  // fits the slots qdwh left
      if (probe.active()) CHECK(probe.count() == 0);
    }
    CHECK(Workspace::total_bytes() >= before + 2 * static_cast<std::size_t>(b * r * r) * sizeof(double));
    ws.release();
    CHECK(ws.staging_capacity() == 0);
  }

  TEST_CASE("reserve_staging: the first staged call allocates nothing, staging_covers tells when") {
    // Workspace::reserve_staging(arrays, bytes) grows the slots before any call, so that the
    // optimizers' prechecks can promise a step that allocates nothing (optim/transforms.hpp,
    // polar_total_on_finite). polar(a, q) on a host batch stages two packed arrays.
    const index_t b = 3, r = 12, c = 20;
    const std::size_t packed = static_cast<std::size_t>(b * r * c) * sizeof(double);
    const Padded a = random_batch(b, r, c, "staging reserve");
    Padded q0(b, r, c, -7.0), q1(b, r, c, -7.0);
    REQUIRE(polar(a.cref(), q0.ref()));  // in place on this build (or staged, on a GPU build)
    {
      // Where the kernels read host memory in place, nothing is staged: the reservation is
      // free and every call is covered.
      Workspace plain;
      REQUIRE(plain.reserve_staging(2, packed));
      const bool in_place = memory::kernels_access(MemoryKind::host);
      CHECK(plain.staging_covers(2, packed) == in_place);
      CHECK((plain.staging_capacity() == 0) == in_place);
    }
    const ForcedStaging forced;
    Workspace ws;
    REQUIRE(ws.reserve(polar_workspace_bytes(r, c, b, PolarOptions{}, Precision::fp64), b));
    CHECK(ws.staging_covers(2, 0));  // empty arrays are never staged
    CHECK_FALSE(ws.staging_covers(1, packed));
    REQUIRE(ws.reserve_staging(2, packed));
    CHECK(ws.staging_capacity() == 4 * packed);  // two slots, a device and a host side each
    CHECK(ws.staging_covers(2, packed));
    CHECK(ws.staging_covers(1, packed / 2));
    CHECK_FALSE(ws.staging_covers(2, packed + 1));
    CHECK_FALSE(ws.staging_covers(3, packed));
    {
      schatten::test::KokkosAllocationProbe probe;
      REQUIRE(polar(a.cref(), q1.ref(), PolarOptions{}, &ws));
      if (probe.active()) {
        const std::string last = probe.last_label();
        CAPTURE(last);
        CHECK(probe.count() == 0);
      }
    }
    CHECK(same_bits(q0.data, q1.data));
    CHECK(ws.staging_capacity() == 4 * packed);  // used, not grown
    REQUIRE(ws.reserve_staging(1, packed / 2));  // never shrinks
    CHECK(ws.staging_capacity() == 4 * packed);
  }

  TEST_CASE("the low-rank step's staged operands: the same bits, and no allocation once kept") {
    // Dion's kernel stages each member's M, Q and U (contiguous: device copies only) through the
    // same slots (low_rank.cpp, Operand): a batch of 3 tall members, then the same call again,
    // which must find its 9 slots kept. The step rewrites M and Q, so every run starts from
    // copies of the same inputs.
    const index_t r = 24, c = 16, k = 4, s = std::min(r, c), batch = 3;
    Rng rng(case_seed("staging low rank"));
    std::vector<std::vector<float>> m0(batch), q0(batch);
    for (index_t b = 0; b < batch; ++b) {
      for (index_t e = 0; e < r * c; ++e)
        m0[b].push_back(static_cast<float>(rng.normal()));
      for (index_t e = 0; e < k * s; ++e)
        q0[b].push_back(static_cast<float>(rng.normal()));
    }
    struct Run {
      std::vector<std::vector<float>> m, q, u;
    };
    const auto step = [&](Workspace* ws) {
      Run out{m0, q0, std::vector<std::vector<float>>(batch, std::vector<float>(r * c, -7.0f))};
      std::vector<MatrixRef<float>> mr, qr, ur;
      for (index_t b = 0; b < batch; ++b) {
        mr.emplace_back(out.m[b].data(), r, c);
        qr.emplace_back(out.q[b].data(), k, s);
        ur.emplace_back(out.u[b].data(), r, c);
      }
      REQUIRE(low_rank_power_step_batch(mr.data(), qr.data(), ur.data(), batch, LowRankStepOptions{}, ws) ==
              Status::ok);
      return out;
    };
    const Run in_place = step(nullptr);
    const ForcedStaging forced;
    Workspace ws;
    const auto same = [&](const Run& x) {
      for (index_t b = 0; b < batch; ++b) {
        CAPTURE(b);
        CHECK(x.m[b] == in_place.m[b]);
        CHECK(x.q[b] == in_place.q[b]);
        CHECK(x.u[b] == in_place.u[b]);
      }
    };
    same(step(&ws));
    // 3 members × (M, Q, U), device side only.
    CHECK(ws.staging_capacity() == static_cast<std::size_t>(batch * (2 * r * c + k * s)) * sizeof(float));
    {
      schatten::test::KokkosAllocationProbe probe;
      const Run again = step(&ws);
      if (probe.active()) {
        const std::string last = probe.last_label();
        CAPTURE(last);
        CHECK(probe.count() == 0);
      }
      same(again);
    }
    same(step(nullptr));  // no workspace: slots of the call's own
  }

  TEST_CASE("a staged call that fails writes nothing back") {
    // Outputs are copied back only on success: a NaN in the last matrix leaves every output
    // matrix (and the padding) as it was.
    const index_t b = 2, r = 10, c = 14;
    Padded a = random_batch(b, r, c, "staging failure");
    a.ref()[b - 1](r - 1, c - 1) = std::numeric_limits<double>::quiet_NaN();
    Padded q(b, r, c, 3.0);
    const ForcedStaging forced;
    Workspace ws;
    const PolarReport rep = polar(a.cref(), q.ref(), PolarOptions{}, &ws);
    CHECK(rep.status == Status::non_finite_input);
    for (double x : q.data)
      CHECK(x == 3.0);
  }

  TEST_CASE("every label of memory the library allocates fits std::string's small-string buffer") {
    // Kokkos 4.3 and later copy a label into a std::string when they free its memory; a label
    // beyond the small-string buffer (15 characters in libstdc++) then allocates in a noexcept
    // destructor, and a refused allocation there ends the program (kokkos/detail/memory.hpp;
    // the heap-exhaustion sweeps of test_optim and test_mpi met it on a Kokkos 4.6.01 build).
    // Every allocation site of the library runs here once: the workspace (polar, QDWH, the
    // spectral power), the staging slots (forced), the randomized SVD's and the Gram's matrices,
    // and the device buffers of optimizer states (memory::allocate_device). The probe keeps the
    // longest label that is not Kokkos' own (host memory that the library takes from the C++
    // allocator is reported under its label too). memory_label() checks every label at compile
    // time, so this catches a label that bypasses it.
    schatten::test::KokkosAllocationProbe probe;
    if (!probe.active()) return;  // a Kokkos Tools library is loaded: nothing is counted
    const index_t b = 2, r = 12, c = 20;
    const Padded a = random_batch(b, r, c, "memory labels");
    Padded q(b, r, c, 0.0), h(b, r, r, 0.0);
    {
      Workspace ws;
      REQUIRE(polar(a.cref(), q.ref(), PolarOptions{}, &ws));
      const ForcedStaging forced;
      REQUIRE(polar(a.cref(), q.ref(), PolarOptions{}, &ws));
      REQUIRE(qdwh(a.cref(), q.ref(), QdwhOptions{}, &ws, h.ref()));
    }
    SpectralPowerOptions sp;
    sp.alpha = -0.5;  // the rational method: QDWH and shifted Cholesky solves
    REQUIRE(spectral_power(a.cref(), q.ref(), sp));
    std::vector<float> x(static_cast<std::size_t>(r * c)), gram(static_cast<std::size_t>(c * c), 0.0f);
    Rng rng(case_seed("memory labels, floats"));
    for (float& v : x)
      v = static_cast<float>(rng.normal());
    LowRankSvd svd;
    RandomizedSvdOptions ro;
    ro.rank = 4;
    REQUIRE(randomized_svd(MatrixRef<const float>(x.data(), r, c), svd, ro) == Status::ok);
    REQUIRE(gram_accumulate(MatrixRef<const float>(x.data(), r, c), MatrixRef<float>(gram.data(), c, c)) ==
            Status::ok);
    void* device = memory::allocate_device(64);
    REQUIRE(device != nullptr);
    memory::free_device(device);
    const std::string longest = probe.longest_label();
    CAPTURE(longest);
    CHECK(probe.count() >= 7);  // at least one per site above
    CHECK(!longest.empty());
    CHECK(longest.size() <= 15);
  }
}

}  // namespace kernels_test_staging
