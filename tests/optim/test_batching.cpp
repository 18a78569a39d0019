// SPDX-License-Identifier: Apache-2.0
/// \file
/// Same-shape batching inside Partition::step: a batched step equals the per-parameter step bit
/// for bit on the host (every batched matrix function, mixed shapes and routes) and to rounding on
/// CUDA (support/batching.hpp), a failure inside a batched group rolls back every parameter and
/// state, and checkpoints are unchanged.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "schatten/core/random.hpp"
#include "schatten/optim/dion.hpp"
#include "schatten/optim/partition.hpp"
#include "schatten/optim/presets.hpp"
#include "support/batching.hpp"
#include "support/optim_helpers.hpp"
#include "support/random_floats.hpp"
#include "support/seed.hpp"

namespace optim_test_batching {  // this file's scope in a unity build (tests/CMakeLists.txt)

using namespace schatten;
using namespace schatten::optim;
using schatten::test::agree_as_batch;
using schatten::test::batches_bitwise;
using schatten::test::case_seed;
using schatten::test::pointers;
using schatten::test::random_vec;

namespace {
/// Every field by name, as doubles (counts, scalars, buffers), in visit order.
struct Snapshot {
  std::vector<std::pair<std::string, std::vector<double>>>* out;
  template <class T>  // counts and scalars
  void operator()(const std::string& n, T& x) {
    out->push_back({n, {double(x)}});
  }
  void operator()(const std::string& n, Buffer& b) {
    out->push_back({n, std::vector<double>(b.begin(), b.end())});
  }
  void operator()(const std::string& n, Bf16Buffer& b) {
    const std::vector<float> f = schatten::bf16_to_floats(b.to_vector());
    out->push_back({n, std::vector<double>(f.begin(), f.end())});
  }
};
template <class P>
std::vector<std::pair<std::string, std::vector<double>>> snapshot(P& p) {
  std::vector<std::pair<std::string, std::vector<double>>> s;
  Snapshot v{&s};
  p.visit(v);
  return s;
}
/// Writes fields back from a snapshot (a checkpoint round trip without HDF5).
struct Restore {
  const std::map<std::string, std::vector<double>>* in;
  template <class T>  // counts and scalars
  void operator()(const std::string& n, T& x) {
    x = static_cast<T>(in->at(n)[0]);
  }
  void operator()(const std::string& n, Buffer& b) {
    const auto& v = in->at(n);
    REQUIRE(v.size() == b.size());
    for (std::size_t k = 0; k < v.size(); ++k)
      b[k] = static_cast<float>(v[k]);
  }
  void operator()(const std::string& n, Bf16Buffer& b) {
    const auto& v = in->at(n);
    REQUIRE(v.size() == b.size());
    for (std::size_t k = 0; k < v.size(); ++k)
      b[k] = schatten::bf16_round(static_cast<float>(v[k]));
  }
};

/// A model with several same-shape groups per route, singletons and vectors.
std::vector<ParamSpec> model() {
  return {{"h0.wq", {16, 24}}, {"h0.b", {24}},      {"h0.wk", {16, 24}}, {"h0.up", {24, 16}},
          {"odd", {10, 10}},   {"h1.wq", {16, 24}}, {"h1.up", {24, 16}}, {"conv", {8, 2, 2, 3}},
          {"ma.0", {8, 12}},   {"ma.1", {8, 12}},   {"ka.0", {12, 8}},   {"ka.1", {12, 8}},
          {"fr.0", {6, 9}},    {"fr.1", {6, 9}},    {"fr.2", {6, 9}},    {"h1.b", {24}},
          {"nm.0", {10, 6}},   {"nm.1", {10, 6}},   {"d2.0", {12, 20}},  {"d2.1", {12, 20}},
          {"d2.t0", {20, 12}}, {"d2.t1", {20, 12}}, {"d2.odd", {7, 9}},  {"sp.0", {10, 14}},
          {"sp.1", {10, 14}},  {"cw.0", {9, 13}},   {"cw.1", {9, 13}}};
}
std::vector<std::string> labels() {
  return {"muon",   "adamw", "muon",  "muon",  "muon",  "muon",  "muon",  "muon",    "muadam",
          "muadam", "kaon",  "kaon",  "freon", "freon", "freon", "adamw", "normuon", "normuon",
          "dion2",  "dion2", "dion2", "dion2", "dion2", "spel",  "spel",  "capped",  "capped"};
}
/// SGD with the weights' spectrum clipped into [0.2, 1] after each step (SpectralClipWeights).
auto capped() {
  SpectralClipWeights cap;
  cap.options.lower = 0.2;
  return chain(ScaleByLearningRate{Schedule::constant(0.1)}, cap);
}
auto make(bool batching) {
  auto p =
      partition(model(), labels(), route("muon", muon()), route("adamw", adamw()), route("muadam", muadam()),
                route("kaon", kaon()), route("freon", freon()), route("normuon", normuon()),
                route("dion2", dion2()), route("spel", spel()), route("capped", capped()));
  p.set_batching(batching);
  return p;
}

struct Weights {
  std::vector<std::vector<float>> w;
  explicit Weights(const std::vector<ParamSpec>& ps) {
    for (std::size_t i = 0; i < ps.size(); ++i)
      w.push_back(random_vec(static_cast<std::size_t>(flatten(ps[i].shape).size()), case_seed("bw", i)));
  }
  std::vector<float*> pointers() {
    std::vector<float*> p;
    for (auto& v : w)
      p.push_back(v.data());
    return p;
  }
};
std::vector<std::vector<float>> gradients(const std::vector<ParamSpec>& ps, int t) {
  std::vector<std::vector<float>> g;
  for (std::size_t i = 0; i < ps.size(); ++i)
    g.push_back(random_vec(static_cast<std::size_t>(flatten(ps[i].shape).size()),
                           case_seed("bg", static_cast<std::uint64_t>(100 * t) + i)));
  return g;
}

/// Batched against per-parameter results: bit for bit where batches_bitwise() (the host). On CUDA
/// the polar GEMMs of a batch are one strided-batched cuBLAS call, so the orthogonalised updates
/// differ by rounding: at most 2·T·u·Λ ≈ 8e-3 relative for float Keller NS5 (support/
/// tolerances.hpp; observed 15–300× below that). 1e-2 relative (Frobenius) is used for every
/// compared quantity: the updates, the weights' change from their start, and each state field.
/// A wiring error (an update or a state given to the wrong parameter) changes them by O(1).
constexpr double kBatchRel = 1e-2;

bool same_updates(const std::vector<std::vector<float>>& got, const std::vector<std::vector<float>>& want) {
  if (got.size() != want.size()) return false;
  for (std::size_t i = 0; i < got.size(); ++i)
    if (got[i].size() != want[i].size() ||
        !agree_as_batch(got[i].data(), want[i].data(), got[i].size(), kBatchRel))
      return false;
  return true;
}

/// Weights after batched and per-parameter steps from the same `start`: equal where
/// batches_bitwise(), else their moves from `start` agree (see kBatchRel).
template <class W>
bool same_weights(const W& got, const W& want, const W& start) {
  if (batches_bitwise()) return got.w == want.w;
  auto moves = [&](const W& x) {
    std::vector<std::vector<float>> d = x.w;
    for (std::size_t i = 0; i < d.size(); ++i)
      for (std::size_t k = 0; k < d[i].size(); ++k)
        d[i][k] -= start.w[i][k];
    return d;
  };
  return same_updates(moves(got), moves(want));
}

/// Snapshots of a batched and a per-parameter partition: the same fields in the same order, with
/// values that agree as batches do.
template <class S>
bool same_states(const S& got, const S& want) {
  if (got.size() != want.size()) return false;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const auto& [name, values] = got[i];
    if (name != want[i].first || values.size() != want[i].second.size() ||
        !agree_as_batch(values.data(), want[i].second.data(), values.size(), kBatchRel))
      return false;
  }
  return true;
}

/// Fails its batched call number `fail_at` (counting calls of update_batch); update() never
/// fails. Element-wise: u ← u (a pure counter), so only the failure matters.
struct FailInBatch {
  static constexpr const char* name = "fail_in_batch";
  static constexpr bool may_fail = true;
  std::int64_t fail_at = 2;
  struct State {
    std::int64_t count = 0;
  };
  State init(const BlockShape&) const { return {}; }
  Status update(Block, State& s, ConstBlock) const {
    ++s.count;
    return Status::ok;
  }
  std::size_t batch_workspace_bytes(const BlockShape&, index_t) const { return 0; }
  Status update_batch(BatchedMatrixRef<float>, StateList<State> states, ParamList, Workspace&) const {
    // Advance every state first, then fail: the partition must restore them.
    for (index_t b = 0; b < states.size; ++b)
      ++states[b].count;
    return states[0].count == fail_at ? Status::out_of_memory : Status::ok;
  }
  template <class V>
  friend void visit_fields(V& v, State& s) {
    v("count", s.count);
  }
};
}  // namespace

TEST_SUITE("optim.batching") {
  TEST_CASE("batched partition step equals the per-parameter step bit for bit") {
    auto batched = make(true);
    auto single = make(false);
    REQUIRE(batched.init());
    REQUIRE(single.init());
    // Groups: muon 16x24 (0, 2, 5), muon 24x16 (3, 6), muadam (8, 9), kaon (10, 11), freon
    // (12, 13, 14), normuon (16, 17), dion2 rows of 12x20 (18, 19) and columns of 20x12 (20,
    // 21), spel (23, 24: the parameters' projection batched too), the capped SGD (25, 26: the
    // weights' spectral clip batched); odd, conv, the dion2 7x9 and the AdamW vectors alone.
    const std::vector<std::vector<std::size_t>> want = {{0, 2, 5}, {3, 6},   {8, 9},   {10, 11}, {12, 13, 14},
                                                        {16, 17},  {18, 19}, {20, 21}, {23, 24}, {25, 26}};
    CHECK(batched.batch_groups() == want);
    CHECK(single.batch_groups().empty());
    const auto ps = model();
    const Weights w0(ps);
    Weights wb(ps), ws(ps);
    for (int t = 0; t < 4; ++t) {
      auto gb = gradients(ps, t);
      auto gs = gb;
      REQUIRE(batched.step(wb.pointers(), pointers(gb)));
      REQUIRE(single.step(ws.pointers(), pointers(gs)));
      CHECK(same_updates(gb, gs));  // the gradient buffers hold the same updates
      CHECK(same_weights(wb, ws, w0));
    }
    CHECK(same_states(snapshot(batched), snapshot(single)));  // same states, same names, same order
    // The steps changed something (the comparison is not between two no-ops).
    CHECK(wb.w != Weights(ps).w);
    // Groups capped at two parameters: the 3-groups split, the results stay identical.
    auto capped = make(true);
    capped.set_batching(true, 2);
    REQUIRE(capped.init());
    const std::vector<std::vector<std::size_t>> want2 = {{0, 2},   {3, 6},   {8, 9},   {10, 11}, {12, 13},
                                                         {16, 17}, {18, 19}, {20, 21}, {23, 24}, {25, 26}};
    CHECK(capped.batch_groups() == want2);
    Weights wc(ps);
    for (int t = 0; t < 4; ++t) {
      auto g = gradients(ps, t);
      REQUIRE(capped.step(wc.pointers(), pointers(g)));
    }
    CHECK(same_weights(wc, ws, w0));
    // Switching batching off after init takes effect at the next step, and stays identical.
    batched.set_batching(false);
    auto gb = gradients(ps, 9);
    auto gs = gb;
    REQUIRE(batched.step(wb.pointers(), pointers(gb)));
    REQUIRE(single.step(ws.pointers(), pointers(gs)));
    CHECK(same_weights(wb, ws, w0));
  }

  TEST_CASE("a failure inside a batched group rolls back every parameter and state") {
    const std::vector<ParamSpec> ps = {{"a", {6, 8}}, {"b", {6, 8}}, {"v", {8}},
                                       {"c", {5, 5}}, {"d", {5, 5}}, {"e", {5, 5}}};
    auto opt = partition(ps, {"muon", "muon", "adamw", "fail", "fail", "fail"}, route("muon", muon()),
                         route("adamw", adamw()), route("fail", chain(TraceMomentum{}, FailInBatch{})));
    REQUIRE(opt.init());
    CHECK(opt.batch_groups() == std::vector<std::vector<std::size_t>>{{0, 1}, {3, 4, 5}});
    Weights w(ps);
    auto g = gradients(ps, 0);
    REQUIRE(opt.step(w.pointers(), pointers(g)));
    const auto before = snapshot(opt);
    const auto w_before = w.w;
    // The second batched call of the failing route fails after the muon group and AdamW ran.
    g = gradients(ps, 1);
    const StepReport r = opt.step(w.pointers(), pointers(g));
    CHECK(r.status == Status::out_of_memory);
    CHECK(r.bad_param == 3);
    // A batched call reports no item: the message names the group by its first member, and says
    // so (the parameter at fault may be another).
    CHECK(std::string(r.message).find("batched group of 3 same-shape parameters led by 'c'") !=
          std::string::npos);
    CHECK(std::string(r.message).find("set_batching(false)") != std::string::npos);
    CHECK(snapshot(opt) == before);
    CHECK(w.w == w_before);
    // Unbatched, the same rule never fails (update() does not): the failure came from the batch.
    opt.set_batching(false);
    g = gradients(ps, 1);
    CHECK(opt.step(w.pointers(), pointers(g)));
  }

  TEST_CASE("checkpoint round trip with batching resumes bit for bit") {
    const auto ps = model();
    auto a = make(true);
    REQUIRE(a.init());
    Weights wa(ps);
    for (int t = 0; t < 3; ++t) {
      auto g = gradients(ps, t);
      REQUIRE(a.step(wa.pointers(), pointers(g)));
    }
    std::map<std::string, std::vector<double>> saved;
    for (auto& [name, values] : snapshot(a))
      saved[name] = values;
    // Resume in a fresh partition (batched, like a) and in an unbatched one.
    auto b = make(true);
    auto c = make(false);
    REQUIRE(b.init());
    REQUIRE(c.init());
    Restore rv{&saved};
    b.visit(rv);
    c.visit(rv);
    const Weights resumed_from = wa;
    Weights wb = wa, wc = wa;
    for (int t = 3; t < 6; ++t) {
      auto ga = gradients(ps, t), gb = ga, gc = ga;
      REQUIRE(a.step(wa.pointers(), pointers(ga)));
      REQUIRE(b.step(wb.pointers(), pointers(gb)));
      REQUIRE(c.step(wc.pointers(), pointers(gc)));
    }
    CHECK(wb.w == wa.w);  // batched in both: the same calls, bit for bit on every build
    CHECK(same_weights(wc, wa, resumed_from));
    CHECK(snapshot(b) == snapshot(a));
  }

  TEST_CASE("batching keeps the NaN policy and global clipping") {
    const auto ps = model();
    auto batched = make(true);
    auto single = make(false);
    REQUIRE(batched.init());
    REQUIRE(single.init());
    batched.set_global_clip(0.5);
    single.set_global_clip(0.5);
    Weights wb(ps), ws(ps);
    auto gb = gradients(ps, 0);
    auto gs = gb;
    REQUIRE(batched.step(wb.pointers(), pointers(gb)));
    REQUIRE(single.step(ws.pointers(), pointers(gs)));
    CHECK(same_weights(wb, ws, Weights(ps)));
    const auto before = snapshot(batched);
    const auto w_before = wb.w;
    gb = gradients(ps, 1);
    gb[5][3] = std::nanf("");  // inside the first muon group
    const StepReport r = batched.step(wb.pointers(), pointers(gb));
    CHECK(r.status == Status::non_finite_input);
    CHECK(r.bad_param == 5);
    CHECK(snapshot(batched) == before);
    CHECK(wb.w == w_before);
  }
}

}  // namespace optim_test_batching
