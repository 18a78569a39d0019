// SPDX-License-Identifier: Apache-2.0
/// \file
/// Fused parameters cut into pieces (split.hpp). The oracle is a plain partition over separate
/// parameters that hold the pieces, cut out of the fused arrays by this file's own index
/// arithmetic: a split partition must step every piece bit for bit as that partition does (the
/// same rules on the same numbers in the same order; global clipping is not used here, it sums
/// in another order). The device twin is bit for bit on Kokkos Serial and within 1e-4 relative
/// elsewhere (the bound of tests/optim/test_optim_device.cpp, derived there).
#include <doctest/doctest.h>

#include <Kokkos_Core.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "schatten/core/buffer.hpp"
#include "schatten/core/random.hpp"
#include "schatten/io/checkpoint.hpp"
#include "schatten/kokkos/optim.hpp"
#include "schatten/optim/presets.hpp"
#include "schatten/optim/split.hpp"
#include "support/allocations.hpp"
#include "support/optim_helpers.hpp"
#include "support/sanitizers.hpp"
#include "support/seed.hpp"

namespace optim_test_split {  // this file's scope in a unity build (tests/CMakeLists.txt)

using namespace schatten;
using namespace schatten::optim;
using schatten::test::case_seed;
using schatten::test::pointers;

namespace {

#if defined(KOKKOS_ENABLE_SERIAL)
constexpr bool kSerialKernels = std::is_same<Kokkos::DefaultExecutionSpace, Kokkos::Serial>::value;
#else
constexpr bool kSerialKernels = false;
#endif

/// A fused attention projection in both layouts, a conv weight cut into unequal column pieces,
/// an unsplit hidden matrix of the pieces' shape (batched with them) and a bias (AdamW).
const std::vector<ParamSpec> kParams = {{"h.0.attn.qkv.weight", {24, 8}},
                                        {"h.0.attn.c_attn.weight", {8, 24}},
                                        {"h.0.mlp.weight", {8, 8}},
                                        {"h.0.attn.bias", {24}},
                                        {"conv.weight", {6, 2, 3}}};
const std::vector<SplitSpec> kSplits = {{"h.0.attn.qkv.weight", 0, {}, 3, {}},
                                        {"h.0.attn.c_attn.weight", 1, {8, 8, 8}, 0, {"q", "k", "v"}},
                                        {"conv.weight", 1, {2, 4}, 0, {}}};

/// A piece of the oracle: which caller parameter, its rows [r0, r0 + rows) and columns
/// [c0, c0 + cols), the source's column count. Written out by hand, independently of SplitLayout.
/// An interleaved piece is `groups` such blocks, block g shifted by g·gstride rows (gaxis 0) or
/// columns (gaxis 1) and stacked in that direction: (groups·rows) × cols or rows × (groups·cols).
struct Cut {
  std::string name;
  std::size_t source;
  index_t r0, c0, rows, cols, ld;
  index_t groups = 1, gstride = 0;
  int gaxis = 0;
};
index_t piece_rows(const Cut& c) { return c.gaxis == 0 ? c.groups * c.rows : c.rows; }
index_t piece_cols(const Cut& c) { return c.gaxis == 1 ? c.groups * c.cols : c.cols; }
/// Where element (i, j) of the oracle's piece lives in its source array.
std::size_t at(const Cut& c, index_t i, index_t j) {
  const index_t g = c.gaxis == 0 ? i / c.rows : j / c.cols;
  const index_t r = c.r0 + (c.gaxis == 0 ? g * c.gstride + i % c.rows : i);
  const index_t col = c.c0 + (c.gaxis == 1 ? g * c.gstride + j % c.cols : j);
  return static_cast<std::size_t>(r * c.ld + col);
}
const std::vector<Cut> kCuts = {{"h.0.attn.qkv.weight[0]", 0, 0, 0, 8, 8, 8},
                                {"h.0.attn.qkv.weight[1]", 0, 8, 0, 8, 8, 8},
                                {"h.0.attn.qkv.weight[2]", 0, 16, 0, 8, 8, 8},
                                {"h.0.attn.c_attn.weight[q]", 1, 0, 0, 8, 8, 24},
                                {"h.0.attn.c_attn.weight[k]", 1, 0, 8, 8, 8, 24},
                                {"h.0.attn.c_attn.weight[v]", 1, 0, 16, 8, 8, 24},
                                {"h.0.mlp.weight", 2, 0, 0, 8, 8, 8},
                                {"h.0.attn.bias", 3, 0, 0, 1, 24, 24},
                                {"conv.weight[0]", 4, 0, 0, 6, 2, 6},
                                {"conv.weight[1]", 4, 0, 2, 6, 4, 6}};

/// Interleaved layouts (SplitSpec::groups): Megatron-Core's linear_qkv (4 heads, 2 key heads,
/// head_dim 3, hidden 5) plain, gated and gated per head, and a flax-style (in, out) kernel whose
/// columns are two groups [q | k | v].
const std::vector<ParamSpec> kGroupedParams = {{"l0.linear_qkv.weight", {24, 5}},
                                               {"l1.linear_qkv.weight", {36, 5}},
                                               {"l2.linear_qkv.weight", {36, 5}},
                                               {"c.kernel", {5, 24}},
                                               {"mlp.weight", {12, 5}}};
const std::vector<SplitSpec> kGroupedSplits = {split_qkv_grouped("l0.linear_qkv.weight", 4, 2, 3),
                                               split_qkv_grouped("l1.linear_qkv.weight", 4, 2, 3, true),
                                               split_qkv_grouped("l2.linear_qkv.weight", 4, 2, 3, true, true),
                                               {"c.kernel", 1, {6, 3, 3}, 0, {"q", "k", "v"}, 2}};
/// The oracle's pieces of kGroupedParams, by hand: a group of linear_qkv is 12 rows [q q | k | v]
/// (gated: 18 rows [q q | g g | k | v]), so Q is rows 0–5 and 12–17 (gated: 0–5 and 18–23).
std::vector<Cut> grouped_cuts() {
  std::vector<Cut> c = {{"l0.linear_qkv.weight[q]", 0, 0, 0, 6, 5, 5, 2, 12},
                        {"l0.linear_qkv.weight[k]", 0, 6, 0, 3, 5, 5, 2, 12},
                        {"l0.linear_qkv.weight[v]", 0, 9, 0, 3, 5, 5, 2, 12},
                        {"l1.linear_qkv.weight[q]", 1, 0, 0, 6, 5, 5, 2, 18},
                        {"l1.linear_qkv.weight[gate]", 1, 6, 0, 6, 5, 5, 2, 18},
                        {"l1.linear_qkv.weight[k]", 1, 12, 0, 3, 5, 5, 2, 18},
                        {"l1.linear_qkv.weight[v]", 1, 15, 0, 3, 5, 5, 2, 18}};
  const char* per_head[] = {"q0", "q1", "gate0", "gate1", "k0", "v0",
                            "q2", "q3", "gate2", "gate3", "k1", "v1"};
  for (index_t h = 0; h < 12; ++h)
    c.push_back({std::string("l2.linear_qkv.weight[") + per_head[h] + "]", 2, 3 * h, 0, 3, 5, 5});
  c.push_back({"c.kernel[q]", 3, 0, 0, 5, 6, 24, 2, 12, 1});
  c.push_back({"c.kernel[k]", 3, 0, 6, 5, 3, 24, 2, 12, 1});
  c.push_back({"c.kernel[v]", 3, 0, 9, 5, 3, 24, 2, 12, 1});
  c.push_back({"mlp.weight", 4, 0, 0, 12, 5, 5});
  return c;
}

std::vector<float> random_vec(std::size_t n, Rng& rng, double scale) {
  std::vector<float> v(n);
  for (float& x : v)
    x = static_cast<float>(scale * rng.normal());
  return v;
}
/// One random_vec per parameter, in order, of its flattened size.
std::vector<std::vector<float>> random_arrays(const std::vector<ParamSpec>& params, Rng& rng, double scale) {
  std::vector<std::vector<float>> arrays;
  for (const ParamSpec& p : params)
    arrays.push_back(random_vec(static_cast<std::size_t>(flatten(p.shape).size()), rng, scale));
  return arrays;
}
std::vector<ParamSpec> oracle_specs(const std::vector<Cut>& cuts = kCuts) {
  std::vector<ParamSpec> s;
  for (const Cut& c : cuts)
    s.push_back({c.name, {piece_rows(c), piece_cols(c)}});
  return s;
}
std::vector<float> cut(const std::vector<float>& fused, const Cut& c) {
  std::vector<float> out;
  for (index_t i = 0; i < piece_rows(c); ++i)
    for (index_t j = 0; j < piece_cols(c); ++j)
      out.push_back(fused[at(c, i, j)]);
  return out;
}
/// The oracle's pieces put back into fused arrays of `params` (elements no cut covers: 0).
std::vector<std::vector<float>> assemble(const std::vector<std::vector<float>>& pieces,
                                         const std::vector<ParamSpec>& params = kParams,
                                         const std::vector<Cut>& cuts = kCuts) {
  std::vector<std::vector<float>> fused(params.size());
  for (std::size_t i = 0; i < params.size(); ++i)
    fused[i].assign(static_cast<std::size_t>(flatten(params[i].shape).size()), 0.0f);
  for (std::size_t k = 0; k < cuts.size(); ++k) {
    const Cut& c = cuts[k];
    for (index_t i = 0; i < piece_rows(c); ++i)
      for (index_t j = 0; j < piece_cols(c); ++j)
        fused[c.source][at(c, i, j)] = pieces[k][static_cast<std::size_t>(i * piece_cols(c) + j)];
  }
  return fused;
}
/// `steps` steps of the split partition from `fused` (updated) and of the oracle over the pieces
/// `cuts` makes of it, from the same random gradients: parameters, the updates left in the
/// gradients and every state field must agree bit for bit after each step.
template <class S, class O>
void step_against_oracle(S& split, O& oracle, const std::vector<ParamSpec>& params,
                         const std::vector<Cut>& cuts, std::vector<std::vector<float>>& fused, Rng& rng,
                         int steps) {
  std::vector<std::vector<float>> pieces;
  for (const Cut& c : cuts)
    pieces.push_back(cut(fused[c.source], c));
  for (int t = 0; t < steps; ++t) {
    CAPTURE(t);
    std::vector<std::vector<float>> grads = random_arrays(params, rng, 1.0);
    std::vector<std::vector<float>> piece_grads;
    for (const Cut& c : cuts)
      piece_grads.push_back(cut(grads[c.source], c));
    REQUIRE(split.step(pointers(fused), pointers(grads)));
    REQUIRE(oracle.step(pointers(pieces), pointers(piece_grads)));
    CHECK(fused == assemble(pieces, params, cuts));       // parameters, bit for bit
    CHECK(grads == assemble(piece_grads, params, cuts));  // the caller's gradients hold the updates
    const io::FieldSet a = io::capture(split), b = io::capture(oracle);
    CHECK(a.size() == b.size());
    CHECK(a == b);  // every state field under the same name
  }
}
/// A NaN at element k of caller parameter i's gradient (the others random): the step is refused
/// as non_finite_input naming i, and no parameter or state field changes.
template <class S>
void check_nan_refused(S& split, std::vector<std::vector<float>>& fused, Rng& rng, std::size_t i,
                       std::size_t k) {
  const auto before = fused;
  const io::FieldSet state = io::capture(split);
  std::vector<std::vector<float>> grads;
  for (const auto& f : fused)
    grads.push_back(random_vec(f.size(), rng, 1.0));
  grads[i][k] = std::numeric_limits<float>::quiet_NaN();
  const StepReport r = split.step(pointers(fused), pointers(grads));
  CHECK(r.status == Status::non_finite_input);
  CHECK(r.bad_param == static_cast<std::ptrdiff_t>(i));
  CHECK(fused == before);
  CHECK(io::capture(split) == state);
}
auto make(const std::vector<ParamSpec>& specs) {
  return optim::partition(specs, propose_labels(specs), route("muon", muon()), route("adamw", adamw()));
}
auto make_split(const SplitLayout& layout) { return split_partition(layout, make(layout.pieces())); }

/// Steps a host and a device-resident split partition of `params` cut by `splits` from the same
/// gradients: parameters and updates bit for bit on Kokkos Serial, within 1e-4 relative elsewhere.
void device_twin(const std::vector<ParamSpec>& params, const std::vector<SplitSpec>& splits,
                 const char* name) {
  const std::uint64_t seed = case_seed(name);
  MESSAGE("seed " << seed);
  Rng rng(seed);
  const SplitLayout layout(params, splits);
  REQUIRE_MESSAGE(bool(layout), layout.message());
  auto host = make_split(layout);
  auto device = make_split(layout);
  REQUIRE(host.init());
  REQUIRE(device.init(MemoryKind::device));
  std::vector<std::vector<float>> hp;
  std::vector<Buffer> dp, dg;
  for (const ParamSpec& p : params) {
    hp.push_back(random_vec(static_cast<std::size_t>(flatten(p.shape).size()), rng, 0.5));
    dp.emplace_back(hp.back().size(), MemoryKind::device);
    dg.emplace_back(hp.back().size(), MemoryKind::device);
    REQUIRE(dp.back().copy_from(hp.back().data(), hp.back().size()));
  }
  std::vector<float*> dpp, dgp;
  for (std::size_t i = 0; i < params.size(); ++i) {
    dpp.push_back(dp[i].data());
    dgp.push_back(dg[i].data());
  }
  const double rel = kSerialKernels ? 0.0 : 1e-4;
  const auto start = hp;
  for (int t = 0; t < 3; ++t) {
    CAPTURE(t);
    std::vector<std::vector<float>> hg;
    for (std::size_t i = 0; i < params.size(); ++i) {
      hg.push_back(random_vec(hp[i].size(), rng, 1.0));
      REQUIRE(dg[i].copy_from(hg.back().data(), hg.back().size()));
    }
    REQUIRE(host.step(pointers(hp), pointers(hg)));
    REQUIRE(device.step(dpp, dgp));
    for (std::size_t i = 0; i < params.size(); ++i) {
      CAPTURE(i);
      const std::vector<float> d = dp[i].to_vector(), u = dg[i].to_vector();
      double diff = 0.0, change = 0.0, udiff = 0.0, unorm = 0.0;
      for (std::size_t k = 0; k < d.size(); ++k) {
        diff += std::pow(double(d[k]) - hp[i][k], 2);
        change += std::pow(double(hp[i][k]) - start[i][k], 2);
        udiff += std::pow(double(u[k]) - hg[i][k], 2);
        unorm += std::pow(double(hg[i][k]), 2);
      }
      CHECK(std::sqrt(diff) <= rel * std::sqrt(change));
      CHECK(std::sqrt(udiff) <= rel * std::sqrt(unorm));
    }
  }
}

struct Names {
  std::vector<std::string>* out;
  template <class F>
  void operator()(const std::string& n, F&) {
    out->push_back(n);
  }
};
}  // namespace

TEST_SUITE("optim.split") {
  TEST_CASE("split: the layout names and shapes the pieces in the caller's order") {
    const SplitLayout layout(kParams, kSplits);
    REQUIRE_MESSAGE(bool(layout), layout.message());
    REQUIRE(layout.pieces().size() == kCuts.size());
    for (std::size_t k = 0; k < kCuts.size(); ++k) {
      CAPTURE(k);
      CHECK(layout.pieces()[k].name == kCuts[k].name);
      CHECK(flatten(layout.pieces()[k].shape) == BlockShape{kCuts[k].rows, kCuts[k].cols});
      CHECK(layout.map()[k].source == kCuts[k].source);
    }
    CHECK(layout.signature() ==
          "h.0.attn.qkv.weight:0:8,8,8;h.0.attn.c_attn.weight:1:8,8,8;conv.weight:1:2,4");
    // Pieces keep their source's name, so routing by name still works: all go to Muon.
    const auto labels = propose_labels(layout.pieces());
    CHECK(labels[3] == "muon");
    CHECK(labels[7] == "adamw");
  }

  TEST_CASE("split: every piece steps bit for bit as a separate parameter holding it") {
    const std::uint64_t seed = case_seed("split: pieces as separate parameters");
    MESSAGE("seed " << seed);
    Rng rng(seed);
    std::vector<std::vector<float>> fused = random_arrays(kParams, rng, 0.5);
    auto split = make_split(SplitLayout(kParams, kSplits));
    auto oracle = make(oracle_specs());
    REQUIRE(split.init());
    REQUIRE(oracle.init());
    // The 8 × 8 pieces and the unsplit 8 × 8 matrix form one batched group of seven.
    const auto groups = split.partition().batch_groups();
    REQUIRE(groups.size() == 1);
    CHECK(groups[0].size() == 7);
    step_against_oracle(split, oracle, kParams, kCuts, fused, rng, 3);
    std::vector<std::string> names;
    Names v{&names};
    visit_fields(v, split);
    CHECK(std::find(names.begin(), names.end(), "h.0.attn.c_attn.weight[k]/0_trace_momentum/mu") !=
          names.end());
    CHECK(split.signature() == split.partition().signature() + "|split=" + split.layout().signature());
  }

  TEST_CASE("split: memory_use is the partition's and the copies of the column pieces") {
    auto split = make_split(SplitLayout(kParams, kSplits));
    CHECK(split.memory_use().total() == 0);  // before init()
    REQUIRE(split.init());
    const MemoryUse m = split.memory_use(), p = split.partition().memory_use();
    // Copied: c_attn's three 8 × 8 column pieces and conv's 6 × 2 and 6 × 4 (flattened 6 × 6);
    // the row pieces of qkv and the unsplit parameters are stepped in place.
    CHECK(m.pieces == 2 * (3 * 8 * 8 + 6 * 2 + 6 * 4) * sizeof(float));
    CHECK(m.state == p.state);
    CHECK(m.state > 0);
    CHECK(m.backups == p.backups);
    CHECK(m.scratch == p.scratch);
    CHECK(m.batches == p.batches);
    CHECK(m.workspace == p.workspace);
    CHECK(m.exchange == 0);
    CHECK(p.pieces == 0);
    CHECK(m.total() == p.total() + m.pieces);
  }

  TEST_CASE("split: init on an exhausted heap is out_of_memory, then a later init steps as the oracle") {
    // Finding 80: the column pieces' copies were allocated after the partition's init, outside
    // any handler: a std::bad_alloc left init() (a status function), and on a distributed
    // partition a process that failed there alone left the others initialised (test_mpi:
    // "distributed.split: … an exhausted heap …"). Each init here runs with its k-th host
    // allocation refused, k = 1, 2, … until it meets none.
    const std::uint64_t seed = case_seed("split: init on an exhausted heap");
    MESSAGE("seed " << seed);
    Rng rng(seed);
    std::vector<std::vector<float>> fused = random_arrays(kParams, rng, 0.5);
    std::vector<std::vector<float>> grads = fused;
    std::int64_t k = 1;
    for (;; ++k) {
      CAPTURE(k);
      REQUIRE(k < 100000);
      auto split = make_split(SplitLayout(kParams, kSplits));
      const auto a = schatten::test::refusing_allocation(k, [&] { return split.init(); });
      REQUIRE_FALSE(a.threw);
      if (!a.refused) {
        REQUIRE(a.result);
        break;
      }
      if (a.result) continue;  // a refusal some code absorbs (std::stable_sort sorts in place)
      CHECK(a.result.status == Status::out_of_memory);
      CHECK(split.step(pointers(fused), pointers(grads)).status == Status::invalid_argument);  // not ready
    }
    MESSAGE("split init: " << k - 1 << " allocations refused in turn");
    CHECK(k > 1);
    auto split = make_split(SplitLayout(kParams, kSplits));
    auto oracle = make(oracle_specs());
    REQUIRE(split.init());
    REQUIRE(oracle.init());
    step_against_oracle(split, oracle, kParams, kCuts, fused, rng, 2);
  }

  TEST_CASE("split: a refused step changes nothing and names the caller's parameter") {
    const std::uint64_t seed = case_seed("split: refused step");
    MESSAGE("seed " << seed);
    Rng rng(seed);
    auto split = make_split(SplitLayout(kParams, kSplits));
    REQUIRE(split.init());
    std::vector<std::vector<float>> fused, grads;
    for (const ParamSpec& p : kParams) {
      fused.push_back(random_vec(static_cast<std::size_t>(flatten(p.shape).size()), rng, 0.5));
      grads.push_back(random_vec(static_cast<std::size_t>(flatten(p.shape).size()), rng, 1.0));
    }
    REQUIRE(split.step(pointers(fused), pointers(grads)));
    check_nan_refused(split, fused, rng, 1, 8 * 24 - 1);  // in the column piece "v"
  }

  TEST_CASE("split: bad layouts and misuse are refused with a message") {
    struct Bad {
      SplitSpec spec;
      const char* says;
    };
    const std::vector<Bad> bad = {
        {{"nope", 0, {}, 2, {}}, "no parameter is named 'nope'"},
        {{"h.0.mlp.weight", 2, {}, 2, {}}, "must be 0 (rows) or 1 (columns)"},
        {{"h.0.mlp.weight", 0, {4, 4}, 2, {}}, "either sizes or a count"},
        {{"h.0.mlp.weight", 0, {}, 0, {}}, "either sizes or a count"},
        {{"h.0.mlp.weight", 0, {}, 3, {}}, "3 equal pieces do not divide its 8 rows"},
        {{"h.0.mlp.weight", 1, {}, -2, {}}, "do not divide its 8 columns"},
        {{"h.0.mlp.weight", 1, {8, 0}, 0, {}}, "a piece of size 0"},
        {{"h.0.mlp.weight", 1, {4, 3}, 0, {}}, "sum to 7, not to its 8 columns"},
        {{"h.0.mlp.weight", 1, {4, 5}, 0, {}}, "exceed its 8 columns"},
        {{"h.0.mlp.weight", 0, {4, 4}, 0, {"a"}}, "names 1 parts for 2 pieces"},
        {{"h.0.mlp.weight", 0, {4, 4}, 0, {"a", "a"}}, "names two parts 'a'"},
        {{"h.0.attn.bias", 0, {}, 2, {}}, "do not divide its 1 rows"},
        {{"h.0.mlp.weight", 0, {2, 2}, 0, {}, 3}, "3 groups do not divide its 8 rows"},
        {{"h.0.mlp.weight", 0, {2, 2}, 0, {}, 0}, "has 0 groups (must be >= 1)"},
        {{"h.0.mlp.weight", 1, {2, 1}, 0, {}, 2}, "sum to 3, not to its 4 columns per group (2 groups)"},
        {{"h.0.mlp.weight", 0, {}, 3, {}, 2}, "3 equal pieces do not divide its 4 rows per group (2 groups)"},
        // 4 heads over 3 key heads is not a grouped layout: the sizes cannot add up.
        {split_qkv_grouped("h.0.attn.qkv.weight", 4, 3, 2),
         "sum to 6, not to its 8 rows per group (3 groups)"},
        {split_qkv_grouped("h.0.attn.qkv.weight", 4, 2, 3, true), "exceed its 12 rows per group (2 groups)"},
    };
    for (const Bad& b : bad) {
      CAPTURE(b.says);
      const SplitLayout layout(kParams, {b.spec});
      CHECK_FALSE(bool(layout));
      CHECK(layout.message().find(b.says) != std::string::npos);
      CHECK(layout.pieces().empty());
      auto s = split_partition(layout, make(kParams));
      const StepReport r = s.init();
      CHECK(r.status == Status::invalid_argument);
      CHECK(std::string(r.message) == layout.message());
    }
    // Stacks: rank >= 3, no cut of their own, one part name per matrix.
    const std::vector<ParamSpec> stacked = {{"experts", {3, 4, 4}}, {"router", {3, 4}}};
    SplitSpec counted = stack_of("experts");
    counted.count = 3;
    const std::vector<std::pair<SplitSpec, const char*>> bad_stacks = {
        {stack_of("router"), "a stack of matrices only with rank >= 3 (experts, out, in), not 2"},
        {counted, "a stack takes axis 0 and no sizes, count or groups"},
        {stack_of("experts", {"x", "y"}), "names 2 parts for 3 pieces"},
        {stack_of("experts", {"x", "y", "x"}), "names two parts 'x'"},
        {stack_of("nope"), "no parameter is named 'nope'"},
    };
    for (const auto& b : bad_stacks) {
      CAPTURE(b.second);
      const SplitLayout layout(stacked, {b.first});
      CHECK_FALSE(bool(layout));
      CHECK(layout.message().find(b.second) != std::string::npos);
    }
    const SplitLayout twice(kParams, {{"h.0.mlp.weight", 0, {}, 2, {}}, {"h.0.mlp.weight", 1, {}, 2, {}}});
    CHECK(twice.message() == "split: 'h.0.mlp.weight' is split twice");

    const SplitLayout layout(kParams, kSplits);
    auto wrong = split_partition(layout, make(kParams));  // built over the fused parameters
    // A piece without a route: the partition's refusal, its bad_param the caller's index.
    std::vector<std::string> labels = propose_labels(layout.pieces());
    labels[4] = "nowhere";  // h.0.attn.c_attn.weight[k]
    auto unrouted = split_partition(
        layout, optim::partition(layout.pieces(), labels, route("muon", muon()), route("adamw", adamw())));
    const StepReport no_route = unrouted.init();
    CHECK(no_route.status == Status::invalid_argument);
    CHECK(no_route.bad_param == 1);
    CHECK(std::string(no_route.message).find("h.0.attn.c_attn.weight[k]") != std::string::npos);
    CHECK(std::string(wrong.init().message).find("not built over layout.pieces()") != std::string::npos);
    auto s = make_split(layout);
    std::vector<std::vector<float>> fused, grads;
    for (const ParamSpec& p : kParams) {
      fused.emplace_back(static_cast<std::size_t>(flatten(p.shape).size()), 0.25f);
      grads.emplace_back(static_cast<std::size_t>(flatten(p.shape).size()), 0.5f);
    }
    CHECK(s.step(pointers(fused), pointers(grads)).status == Status::invalid_argument);  // before init
    REQUIRE(s.init());
    std::vector<float*> short_list = pointers(fused);
    short_list.pop_back();
    CHECK(s.step(short_list, pointers(grads)).status == Status::invalid_argument);
    std::vector<float*> null_grad = pointers(grads);
    null_grad[1] = nullptr;
    const StepReport r = s.step(pointers(fused), null_grad);
    CHECK(r.status == Status::invalid_argument);
    CHECK(r.bad_param == 1);
    // Found by an audit (2026-12-06). Overlapping caller arrays: the column pieces' copies hid
    // them from the partition's check, and a gradient aliasing its column-split parameter
    // stepped with ok. Refused before anything is read or written.
    const auto before = fused;
    std::vector<float*> aliased = pointers(grads);
    aliased[1] = fused[1].data();  // h.0.attn.c_attn.weight, cut into columns
    const StepReport al = s.step(pointers(fused), aliased);
    CHECK(al.status == Status::invalid_argument);
    CHECK(al.bad_param == 1);
    CHECK(std::string(al.message).find("'h.0.attn.c_attn.weight' (its gradient): arrays that overlap") !=
          std::string::npos);
    CHECK(fused == before);
    std::vector<float*> twice_w = pointers(fused);
    twice_w[2] = fused[1].data();  // an 8 × 8 array inside the 8 × 24 one
    const StepReport tw = s.step(twice_w, pointers(grads));
    CHECK(tw.status == Status::invalid_argument);
    CHECK(tw.bad_param == 2);
    CHECK(fused == before);
    REQUIRE(s.step(pointers(fused), pointers(grads)));
    // Two caller parameters of one name (only the first would be split, and the checkpoint
    // would not load), and layouts the heap cannot hold: invalid layouts, no exception.
    const std::vector<ParamSpec> dup = {{"w", {8, 8}}, {"w", {4, 4}}};
    const SplitLayout dup_layout(dup, {{"w", 1, {}, 2, {}}});
    CHECK(dup_layout.message() == "split: two parameters are named 'w'");
    const SplitLayout huge_count({{"e", {0, 4}}}, {{"e", 1, {}, index_t(1) << 62, {}}});
    CHECK_FALSE(bool(huge_count));
    CHECK(huge_count.message().find("equal pieces do not divide") != std::string::npos);
    if (!schatten::test::kAddressSanitizer) {  // its allocator aborts a 61 TB request (sanitizers.hpp)
      const SplitLayout huge_stack({{"e", {index_t(1) << 40, 0, 4}}}, {stack_of("e")});
      CHECK_FALSE(bool(huge_stack));
      CHECK(huge_stack.message() == "split: the pieces of this layout do not fit in host memory");
    }
  }

  TEST_CASE("split: a flat or row or column shard of a fused parameter holds a part of each piece") {
    // A process holding source elements [a, b) of a fused parameter (a flat shard: ZeRO,
    // Megatron's distributed optimizer) holds the elements [elements_before(a),
    // elements_before(b)) of each of its pieces, and the windowed in_place / for_each_block
    // address exactly them. The oracle: the elements of the whole piece (this file's Cut
    // arithmetic) whose source index lies in [a, b), which must be one run in the piece's
    // order, for every window of every piece of the row, column, grouped, gated per-head and
    // stack layouts. Row shards are the windows of whole rows: rows_before counts them. Column
    // shards are bands of columns: columns_before counts them (below).
    const std::vector<ParamSpec> stack_params = {{"moe.w", {4, 3, 5}}, {"router", {4, 5}}};
    std::vector<Cut> stack_cuts;
    for (index_t e = 0; e < 4; ++e)
      stack_cuts.push_back({"moe.w[" + std::to_string(e) + "]", 0, e * 3, 0, 3, 5, 5});
    stack_cuts.push_back({"router", 1, 0, 0, 4, 5, 5});
    struct Case {
      std::vector<ParamSpec> params;
      std::vector<SplitSpec> splits;
      std::vector<Cut> cuts;
    };
    const std::vector<Case> cases = {{kParams, kSplits, kCuts},
                                     {kGroupedParams, kGroupedSplits, grouped_cuts()},
                                     {stack_params, {stack_of("moe.w")}, stack_cuts}};
    // The copy of one block a copied piece's window or band yields: nonempty, equal shapes.
    auto gather = [](MatrixRef<float> to, MatrixRef<float> from) {
      REQUIRE(to.rows == from.rows);
      REQUIRE(to.cols == from.cols);
      REQUIRE(to.rows * to.cols > 0);
      copy_block(to, from);
    };
    for (const Case& tc : cases) {
      const SplitLayout layout(tc.params, tc.splits);
      REQUIRE_MESSAGE(bool(layout), layout.message());
      REQUIRE(layout.map().size() == tc.cuts.size());
      for (std::size_t k = 0; k < tc.cuts.size(); ++k) {
        const Cut& c = tc.cuts[k];
        CAPTURE(c.name);
        const SplitLayout::Piece& piece = layout.map()[k];
        const BlockShape src = flatten(tc.params[c.source].shape);
        // The source values are their own indices: a wrong address shows as a wrong value.
        std::vector<float> fused(static_cast<std::size_t>(src.size()));
        for (std::size_t e = 0; e < fused.size(); ++e)
          fused[e] = static_cast<float>(e);
        const std::vector<float> whole = cut(fused, c);
        const index_t pc = piece_cols(c), n = piece_rows(c) * pc;
        for (index_t a = 0; a <= src.size(); ++a)
          for (index_t b = a; b <= src.size(); ++b) {
            CAPTURE(a);
            CAPTURE(b);
            // The oracle's elements in [a, b), and where they lie in the piece.
            std::vector<float> want;
            index_t first = -1, last = -1;
            for (index_t e = 0; e < n; ++e) {
              const auto from = static_cast<index_t>(at(c, e / pc, e % pc));
              if (from < a || from >= b) continue;
              if (first < 0) first = e;
              last = e;
              want.push_back(whole[static_cast<std::size_t>(e)]);
            }
            const index_t e0 = piece.elements_before(a), e1 = piece.elements_before(b);
            REQUIRE(e1 >= e0);
            REQUIRE(static_cast<std::size_t>(e1 - e0) == want.size());
            if (!want.empty()) {  // one run, starting at elements_before(a)
              CHECK(first == e0);
              CHECK(last + 1 == e1);
            }
            std::vector<float> shard(fused.begin() + a, fused.begin() + b);
            std::vector<float> got(want.size(), -1.0f);
            if (!piece.copied()) {
              const float* p = piece.in_place(shard.data(), a, b);
              CHECK((p == nullptr) == want.empty());
              if (p) got.assign(p, p + want.size());
            } else {
              piece.for_each_block(got.data(), shard.data(), MemoryKind::host, gather, a, b);
            }
            CHECK(got == want);
          }
        // Column bands [c0, c1) of every row (tensor parallelism of an (in, out) kernel): the
        // piece's elements whose source column lies in the band, rows × a band of the piece's
        // columns (a stack's matrix: a run of its elements), addressed by in_band /
        // for_each_column_block in the process's rows × (c1 − c0) array.
        for (index_t c0 = 0; c0 <= src.cols; ++c0)
          for (index_t c1 = c0; c1 <= src.cols; ++c1) {
            CAPTURE(c0);
            CAPTURE(c1);
            std::vector<float> want, band;
            for (index_t e = 0; e < n; ++e) {
              const auto from = static_cast<index_t>(at(c, e / pc, e % pc));
              if (from % src.cols >= c0 && from % src.cols < c1)
                want.push_back(whole[static_cast<std::size_t>(e)]);
            }
            for (index_t r = 0; r < src.rows; ++r)
              band.insert(band.end(), fused.begin() + r * src.cols + c0, fused.begin() + r * src.cols + c1);
            const index_t b0 = piece.columns_before(c0), b1 = piece.columns_before(c1);
            REQUIRE(b1 >= b0);
            CHECK(static_cast<std::size_t>(piece.stacked() ? b1 - b0 : piece_rows(c) * (b1 - b0)) ==
                  want.size());
            std::vector<float> got(want.size(), -1.0f);
            if (!piece.copied()) {
              const float* p = piece.in_band(band.data(), c0, c1);
              CHECK((p == nullptr) == want.empty());
              if (p) got.assign(p, p + want.size());
            } else {
              piece.for_each_column_block(got.data(), band.data(), MemoryKind::host, gather, c0, c1);
            }
            CHECK(got == want);
          }
        CHECK(piece.elements_before(0) == 0);
        CHECK(piece.elements_before(src.size()) == n);
        // Whole rows: rows_before(t) rows are elements_before(t · cols) elements.
        for (index_t t = 0; t <= src.rows; ++t)
          CHECK(piece.rows_before(t) * pc == piece.elements_before(t * src.cols));
        CHECK(piece.rows_before(src.rows) == piece_rows(c));
        CHECK(piece.rows_before(SplitLayout::Piece::kAll) == piece_rows(c));
      }
    }
  }

  TEST_CASE("split: a stack of experts steps as separate expert matrices") {
    // MoE expert stacks (E, out, in) and a stacked conv (E, out, in, kh, kw): one piece per
    // expert, contiguous block e of the stack (this test's own arithmetic), stepped bit for bit
    // as separate parameters holding the blocks; each stack's experts batch as one group.
    const std::uint64_t seed = case_seed("split: expert stacks");
    MESSAGE("seed " << seed);
    Rng rng(seed);
    const std::vector<ParamSpec> params = {{"moe.experts.w1", {4, 6, 5}},
                                           {"moe.experts.w2", {4, 5, 6}},
                                           {"moe.router.weight", {4, 5}},
                                           {"conv.stack", {3, 4, 2, 2}}};
    const SplitLayout layout(params,
                             {stack_of("moe.experts.w1"), stack_of("moe.experts.w2", {"a", "b", "c", "d"}),
                              stack_of("conv.stack")});
    REQUIRE_MESSAGE(bool(layout), layout.message());
    CHECK(layout.signature() == "moe.experts.w1:stack:4;moe.experts.w2:stack:4;conv.stack:stack:3");
    // The oracle: expert e of a stack is rows [e·rows, (e+1)·rows) of the stack seen as an
    // (E·rows) × cols row-major matrix.
    std::vector<Cut> cuts;
    for (index_t e = 0; e < 4; ++e)
      cuts.push_back({"moe.experts.w1[" + std::to_string(e) + "]", 0, e * 6, 0, 6, 5, 5});
    for (index_t e = 0; e < 4; ++e)
      cuts.push_back({std::string("moe.experts.w2[") + char('a' + e) + "]", 1, e * 5, 0, 5, 6, 6});
    cuts.push_back({"moe.router.weight", 2, 0, 0, 4, 5, 5});
    for (index_t e = 0; e < 3; ++e)
      cuts.push_back({"conv.stack[" + std::to_string(e) + "]", 3, e * 4, 0, 4, 4, 4});
    REQUIRE(layout.pieces().size() == cuts.size());
    for (std::size_t k = 0; k < cuts.size(); ++k) {
      CAPTURE(k);
      CHECK(layout.pieces()[k].name == cuts[k].name);
      CHECK(flatten(layout.pieces()[k].shape) == BlockShape{cuts[k].rows, cuts[k].cols});
    }
    auto split = make_split(layout);
    auto oracle = make(oracle_specs(cuts));
    REQUIRE(split.init());
    REQUIRE(oracle.init());
    std::vector<std::size_t> group_sizes;
    for (const auto& g : split.partition().batch_groups())
      group_sizes.push_back(g.size());
    std::sort(group_sizes.begin(), group_sizes.end());
    CHECK(group_sizes == std::vector<std::size_t>{3, 4, 4});
    std::vector<std::vector<float>> fused = random_arrays(params, rng, 0.5);
    step_against_oracle(split, oracle, params, cuts, fused, rng, 2);
  }

  TEST_CASE("split: interleaved groups step as the whole projections of a grouped layout") {
    // Megatron-Core's linear_qkv (kv_heads groups [q | k | v], gated [q | gate | k | v]) cut
    // into whole Q, gate, K, V projections (split_qkv_grouped, groups = kv_heads), the gated one
    // per head, and a column-grouped kernel: every piece steps bit for bit as a separate
    // parameter holding the rows (columns) the oracle gathers by its own arithmetic.
    const std::uint64_t seed = case_seed("split: interleaved groups");
    MESSAGE("seed " << seed);
    Rng rng(seed);
    const SplitLayout layout(kGroupedParams, kGroupedSplits);
    REQUIRE_MESSAGE(bool(layout), layout.message());
    const std::vector<Cut> cuts = grouped_cuts();
    REQUIRE(layout.pieces().size() == cuts.size());
    for (std::size_t k = 0; k < cuts.size(); ++k) {
      CAPTURE(k);
      CHECK(layout.pieces()[k].name == cuts[k].name);
      CHECK(flatten(layout.pieces()[k].shape) == BlockShape{piece_rows(cuts[k]), piece_cols(cuts[k])});
      CHECK(layout.map()[k].source == cuts[k].source);
    }
    CHECK(layout.signature() ==
          "l0.linear_qkv.weight:0:6,3,3:groups=2;l1.linear_qkv.weight:0:6,6,3,3:groups=2;"
          "l2.linear_qkv.weight:0:3,3,3,3,3,3,3,3,3,3,3,3;c.kernel:1:6,3,3:groups=2");
    auto split = make_split(layout);
    auto oracle = make(oracle_specs(cuts));
    REQUIRE(split.init());
    REQUIRE(oracle.init());
    // The 12 × 5 Q and gate projections batch with the unsplit 12 × 5 matrix.
    bool q_with_mlp = false;
    for (const auto& g : split.partition().batch_groups())
      q_with_mlp = q_with_mlp || (g.size() == 4 && std::find(g.begin(), g.end(), cuts.size() - 1) != g.end());
    CHECK(q_with_mlp);
    std::vector<std::vector<float>> fused = random_arrays(kGroupedParams, rng, 0.5);
    step_against_oracle(split, oracle, kGroupedParams, cuts, fused, rng, 3);

    // All or nothing: a NaN in the second group's value rows of l1 refuses the step.
    check_nan_refused(split, fused, rng, 1, (18 + 16) * 5 + 2);
  }

  TEST_CASE("split: device-resident steps equal host steps") {
    SUBCASE("column pieces") { device_twin(kParams, kSplits, "split: device twin"); }
    SUBCASE("interleaved groups") {
      device_twin(kGroupedParams, kGroupedSplits, "split: device twin grouped");
    }
  }

  TEST_CASE("split: Kokkos View steps equal pointer steps directly and staged") {
    // schatten::kokkos::step takes the caller's fused tensors as Views; on a CPU build they go
    // straight through, and the staged path (host copies, taken for CudaSpace Views of a host
    // partition) is called directly. Same arithmetic: bit for bit.
    const std::uint64_t seed = case_seed("split: Kokkos Views");
    MESSAGE("seed " << seed);
    Rng rng(seed);
    using View = Kokkos::View<float*, Kokkos::DefaultExecutionSpace::memory_space>;
    using HostRef = Kokkos::View<const float*, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
    // A device copy of `v` for each path (direct, staged).
    const auto twin_views = [](const std::vector<float>& v, std::vector<View>& a, std::vector<View>& b) {
      a.emplace_back("a", v.size());
      b.emplace_back("b", v.size());
      Kokkos::deep_copy(a.back(), HostRef(v.data(), v.size()));
      Kokkos::deep_copy(b.back(), a.back());
    };
    const SplitLayout layout(kParams, kSplits);
    auto pointer = make_split(layout);
    auto direct = make_split(layout);
    auto staged = make_split(layout);
    REQUIRE(pointer.init());
    REQUIRE(direct.init());
    REQUIRE(staged.init());
    kokkos::StepStaging st_direct(direct, false), st_staged(staged, true);
    std::vector<std::vector<float>> w;
    std::vector<View> wd, ws;
    for (const ParamSpec& p : kParams) {
      w.push_back(random_vec(static_cast<std::size_t>(flatten(p.shape).size()), rng, 0.5));
      twin_views(w.back(), wd, ws);
    }
    for (int t = 0; t < 2; ++t) {
      CAPTURE(t);
      std::vector<std::vector<float>> g;
      std::vector<View> gd, gs;
      for (std::size_t i = 0; i < kParams.size(); ++i) {
        g.push_back(random_vec(w[i].size(), rng, 1.0));
        twin_views(g.back(), gd, gs);
      }
      REQUIRE(pointer.step(pointers(w), pointers(g)));
      REQUIRE(kokkos::step(direct, wd, gd, st_direct));
      REQUIRE(kokkos::detail::step_views<true>(staged, ws, gs, st_staged));
      for (std::size_t i = 0; i < kParams.size(); ++i) {
        CAPTURE(i);
        auto a = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), wd[i]);
        auto b = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), ws[i]);
        CHECK(std::vector<float>(a.data(), a.data() + a.size()) == w[i]);
        CHECK(std::vector<float>(b.data(), b.data() + b.size()) == w[i]);
      }
    }
  }
}

}  // namespace optim_test_split
