// SPDX-License-Identifier: Apache-2.0
/// \file
/// The distributed step against the single-process optim::Partition, bit for bit, on however
/// many ranks mpiexec started (CTest runs 1, 2 and 4): trajectories of muon + adamw over
/// replicated, row-sharded (AdamW stepped by rows; uneven bounds) and column-sharded parameters, refusal on
/// every rank when one rank sees a NaN or one owner's rule fails, checkpoints written on n ranks and restored
/// on n ranks and on one process, activation Grams summed across ranks, QK-clip on row-sharded parameters,
/// and cut parameters (SplitPartition over the distributed partition), replicated or row-sharded.
#include <doctest/doctest.h>

#include <unistd.h>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "schatten/core/random.hpp"
#include "schatten/distributed/mpi_comm.hpp"
#include "schatten/distributed/mpi_step.hpp"
#include "schatten/io/checkpoint.hpp"
#include "schatten/optim/presets.hpp"
#include "schatten/optim/qk_clip.hpp"
#include "schatten/optim/split.hpp"
#include "support/allocations.hpp"
#include "support/attention.hpp"
#include "support/failing_rule.hpp"
#include "support/sanitizers.hpp"
#include "support/seed.hpp"

namespace distributed_test_mpi_step {  // this file's scope in a unity build (tests/CMakeLists.txt)

using namespace schatten;
using namespace schatten::optim;
using schatten::distributed::Layout;

namespace {

using schatten::test::kAddressSanitizer;

distributed::Communicator world() { return distributed::Communicator::world(); }

/// Shapes that exercise the step: same-shape groups (batched on the owner), tall, wide, a
/// conv-like rank-4 tensor, vectors; rows not divisible by 2 or 4 and fewer rows than ranks.
std::vector<ParamSpec> specs() {
  return {{"embed", {7, 5}}, {"h0.w", {12, 8}},      {"h1.w", {12, 8}},      {"h2.w", {12, 8}},
          {"tall", {20, 6}}, {"wide", {5, 18}},      {"conv", {6, 3, 2, 2}}, {"bias", {9}},
          {"gain", {3}},     {"three_rows", {3, 10}}};
}
/// Row-sharded parameters in the sharded tests (the others stay replicated).
std::vector<Layout> layouts(bool sharded) {
  std::vector<Layout> l(specs().size(), Layout::replicated);
  if (sharded)
    for (std::size_t i : {0u, 1u, 4u, 5u, 7u, 9u})
      l[i] = Layout::row_sharded;  // embed, h0.w, tall, wide (5 rows), bias (1 row), three_rows
  return l;
}

/// Muon and AdamW; `storage` bf16 keeps their momentum and first moment in Bf16Buffers
/// (docs/optim.md "State precision"), which the rollback snapshots must carry too.
/// Muon; with qdwh its route may fail and is not prechecked (optim::Partition copies its states).
auto make_muon(StateStorage storage = Precision::fp32, bool qdwh = false) {
  MuonOptions o;
  o.weight_decay = 0.01;  // reads the parameter: the owner needs the gathered shard
  o.mu_storage = storage;
  if (qdwh) o.polar.method = PolarMethod::qdwh;
  return muon(o);
}
auto make_adamw(StateStorage storage = Precision::fp32) {
  AdamWOptions o;
  o.mu_storage = storage;
  return adamw(o);
}

/// Muon and AdamW over specs() with propose_labels(): in one process, and over the ranks with
/// layouts(sharded) (neither initialised).
auto muon_adamw_one_process() {
  return optim::partition(specs(), propose_labels(specs()), route("muon", make_muon()),
                          route("adamw", make_adamw()));
}
auto muon_adamw_distributed(bool sharded) {
  auto d = distributed::distributed_partition(world(), specs(), propose_labels(specs()),
                                              route("muon", make_muon()), route("adamw", make_adamw()));
  d.set_layouts(layouts(sharded));
  return d;
}

/// Collective, for the heap-exhaustion sweeps: checks that `s` is the same on every rank, and
/// returns whether some rank met its refused allocation.
bool refusal_met(Status s, bool refused) {
  const auto code = static_cast<std::int64_t>(s);
  CHECK(world().allreduce_min(code) == code);
  CHECK(-world().allreduce_min(-code) == code);
  return world().allreduce_min(refused ? 0 : 1) == 0;
}

/// True, with a message, on one rank: the heap-exhaustion sweeps below check that a refusal on
/// the last rank fails the call on every rank alike, which needs two. On one rank the same
/// allocation sites are met as on the last of two or four (it owns more parameters, so the sweep
/// is longer: 25 of the one-rank run's 41 s under the sanitizers, measured 2026-12-07), and the
/// single-process sweeps are the optimizer suite's (test_hostile.cpp, test_split.cpp).
bool sweep_needs_two_ranks() {
  if (world().size() > 1) return false;
  MESSAGE("one rank: nothing to agree across ranks, the sweep runs on 2 and 4");
  return true;
}

/// Collective: init() of a fresh make() with the `here` rank's k-th host allocation refused,
/// k = 1, 2, … until no rank meets its refusal. Every rank returns the same status
/// (refusal_met), nothing throws, a failure is out_of_memory (some refusals are absorbed:
/// std::stable_sort sorts in place instead). Returns the refusals met.
template <class Make>
int refuse_init_allocations(const Make& make, bool here) {
  int refusals = 0;
  for (std::int64_t k = 1;; ++k) {
    CAPTURE(k);
    REQUIRE(k < 100000);
    auto d = make();
    const auto a = schatten::test::refusing_allocation_if(here, k, [&] { return d.init(); });
    REQUIRE_FALSE(a.threw);
    if (!refusal_met(a.result.status, a.refused)) {
      REQUIRE(a.result);
      return refusals;
    }
    ++refusals;
    if (!a.result) CHECK(a.result.status == Status::out_of_memory);
  }
}

/// Whole parameters and gradients, the same on every rank (deterministic from the suite's seed).
struct Model {
  std::vector<ParamSpec> specs;
  std::vector<std::vector<float>> w, g;
  explicit Model(std::vector<ParamSpec> s) : specs(std::move(s)) {
    Rng rng(test::case_seed("distributed model weights"));
    for (const ParamSpec& p : specs) {
      w.emplace_back(static_cast<std::size_t>(flatten(p.shape).size()));
      g.emplace_back(w.back().size());
      for (float& x : w.back())
        x = static_cast<float>(0.1 * rng.normal());
    }
  }
  void gradients(int step) {
    Rng rng(test::case_seed("distributed model gradients", static_cast<std::uint64_t>(step)));
    for (auto& v : g)
      for (float& x : v)
        x = static_cast<float>(rng.normal());
  }
  static std::vector<float*> ptrs(std::vector<std::vector<float>>& v) {
    std::vector<float*> p;
    for (auto& x : v)
      p.push_back(x.data());
    return p;
  }
};

/// This rank's arrays for the distributed step: whole (replicated), its rows (row-sharded), its
/// columns of every row (column-sharded) or its run of elements (flat-sharded).
struct Local {
  std::vector<std::vector<float>> w, g;
  template <class D>
  Local(D& d, const Model& m) {
    for (std::size_t i = 0; i < m.specs.size(); ++i) {
      w.push_back(rows_of(d, m, m.w[i], i));
      g.emplace_back(w.back().size());
    }
  }
  template <class D>
  static std::vector<float> rows_of(D& d, const Model& m, const std::vector<float>& whole, std::size_t i) {
    const index_t cols = flatten(m.specs[i].shape).cols;
    if (d.layout(i) == Layout::flat_sharded) {
      const distributed::RowRange e = d.element_range(i);
      return std::vector<float>(whole.begin() + e.begin, whole.begin() + e.end);
    }
    const distributed::RowRange r = d.row_range(i), c = d.column_range(i);
    std::vector<float> held;
    for (index_t row = r.begin; row < r.end; ++row)
      held.insert(held.end(), whole.begin() + row * cols + c.begin, whole.begin() + row * cols + c.end);
    return held;
  }
  template <class D>
  void gradients(D& d, const Model& m) {
    for (std::size_t i = 0; i < m.specs.size(); ++i)
      g[i] = rows_of(d, m, m.g[i], i);
  }
  /// Step t of `d` on these arrays: the model's gradients of step t, cut to this rank's shards
  /// (a rank holding nothing of a parameter passes null).
  template <class D>
  StepReport step(D& d, Model& m, int t) {
    m.gradients(t);
    gradients(d, m);
    const auto [wp, gp] = arguments();
    return d.step(wp, gp);
  }
  /// The step's pointers to these arrays (a rank holding nothing of a parameter passes null).
  std::pair<std::vector<float*>, std::vector<float*>> arguments() {
    std::vector<float*> wp = Model::ptrs(w), gp = Model::ptrs(g);
    for (std::size_t i = 0; i < w.size(); ++i)
      if (w[i].empty()) wp[i] = gp[i] = nullptr;
    return {wp, gp};
  }
};

/// Bit equality of this rank's arrays with the rows of the single-process parameters.
template <class D>
bool same_bits(D& d, const Model& ref, const Local& loc) {
  for (std::size_t i = 0; i < ref.specs.size(); ++i) {
    const std::vector<float> want = Local::rows_of(d, ref, ref.w[i], i);
    if (want.size() != loc.w[i].size()) return false;
    if (!want.empty() && std::memcmp(want.data(), loc.w[i].data(), want.size() * sizeof(float)) != 0) {
      MESSAGE("parameter " << ref.specs[i].name << " differs on rank " << d.communicator().rank());
      return false;
    }
  }
  return true;
}

/// Every field this rank holds equals the single-process state's field, bit for bit: an owner's
/// whole, this rank's rows, column block or run of each buffer of a parameter stepped by rows.
template <class D, class P>
bool same_state(D& d, P& ref) {
  io::FieldSet mine, want = io::capture(ref);
  io::FieldCollector c{&mine};
  d.visit_local(c);
  for (const auto& [name, v] : mine) {
    if (name == "_partition/skipped_steps") continue;  // counted by the distributed step
    auto it = want.find(name);
    if (it == want.end()) {
      MESSAGE("field " << name << " is not in the single process's state");
      return false;
    }
    io::FieldValue expect = it->second;
    const std::ptrdiff_t i = distributed::detail::param_of_field(d.params(), name);
    if (auto* b = std::get_if<std::vector<float>>(&expect); b && i >= 0 && d.by_rows(std::size_t(i))) {
      const distributed::RowRange e = d.element_range(std::size_t(i)), r = d.row_range(std::size_t(i)),
                                  band = d.column_range(std::size_t(i));
      const index_t cols = flatten(d.params()[std::size_t(i)].shape).cols;
      std::vector<float> part;  // a run, or this rank's rows × its columns
      if (d.layout(std::size_t(i)) == Layout::flat_sharded)
        part.assign(b->begin() + e.begin, b->begin() + e.end);
      else
        for (index_t row = r.begin; row < r.end; ++row)
          part.insert(part.end(), b->begin() + row * cols + band.begin, b->begin() + row * cols + band.end);
      expect = part;
    }
    if (expect != v) {
      MESSAGE("field " << name << " differs");
      return false;
    }
  }
  return !mine.empty();
}

/// The cut parameters of the distributed.split tests: a torch-layout QKV (row cut), a GPT-2
/// Conv1D c_attn (column cut), Megatron's grouped linear_qkv, an expert stack, and a second
/// row-cut QKV (batched with the first), beside an embedding and a bias that stay whole.
SplitLayout cut_layout() {
  const std::vector<ParamSpec> ps = {
      {"embed", {7, 5}},         {"h0.qkv", {12, 8}}, {"h0.c_attn", {8, 12}}, {"h0.linear_qkv", {16, 6}},
      {"h0.experts", {3, 4, 6}}, {"h0.bias", {9}},    {"h1.qkv", {12, 8}}};
  SplitSpec qkv, c_attn;
  qkv.count = 3;
  qkv.parts = {"q", "k", "v"};
  c_attn.axis = 1;
  c_attn.count = 3;
  std::vector<SplitSpec> cuts = {qkv, c_attn, split_qkv_grouped("h0.linear_qkv", 4, 2, 2),
                                 stack_of("h0.experts"), qkv};
  cuts[0].name = "h0.qkv";
  cuts[1].name = "h0.c_attn";
  cuts[4].name = "h1.qkv";
  return SplitLayout(ps, cuts);
}

std::string shared_path(const char* what) {
  std::string p;
  if (world().rank() == 0)
    p = (std::filesystem::temp_directory_path() /
         ("schatten_mpi_" + std::string(what) + "_" + std::to_string(::getpid()) + ".h5"))
            .string();
  return world().bcast_string(p, 0);
}

/// Steps [first, last) of the distributed partition `d` on this rank's arrays `at` and of the
/// single-process partition `ref` on the whole model `m`, checking after each that this rank's
/// arrays are the single process's bits.
template <class P, class D>
void along(P& ref, D& d, Model& m, Local& at, int first, int last) {
  for (int t = first; t < last; ++t) {
    CAPTURE(t);
    CHECK(at.step(d, m, t).status == Status::ok);
    REQUIRE(ref.step(Model::ptrs(m.w), Model::ptrs(m.g)));
    CHECK(same_bits(d, m, at));
  }
}

/// Step 0 (along()), then the gradients of step 1 in `m` and cut into `at`: a step to refuse.
template <class P, class D>
void after_first_step(P& ref, D& d, Model& m, Local& at) {
  along(ref, d, m, at, 0, 1);
  m.gradients(1);
  at.gradients(d, m);
}

/// muon_adamw_one_process() and muon_adamw_distributed(sharded), initialised (collective),
/// with the model and this rank's arrays of it.
struct MuonAdamw {
  decltype(muon_adamw_one_process()) ref;
  decltype(muon_adamw_distributed(false)) d;
  Model m;
  std::optional<Local> at;
  explicit MuonAdamw(bool sharded)
      : ref(muon_adamw_one_process()), d(muon_adamw_distributed(sharded)), m(specs()) {
    REQUIRE(ref.init());
    REQUIRE(d.init());
    at.emplace(d, m);
  }
};

/// Saves `d` (collective) to a fresh shared file after `step` steps and checks that the file is
/// the single-process partition `ref`'s checkpoint, field for field; returns the path.
template <class D, class P>
std::string save_as_one_process(D& d, P& ref, const char* what, std::int64_t step) {
  const std::string path = shared_path(what);
  io::CheckpointHeader h;
  h.step = step;
  std::string err;
  REQUIRE(distributed::save_checkpoint(path, d, h, &err) == Status::ok);
  io::FieldSet file;
  io::CheckpointHeader fh;
  REQUIRE(io::read_checkpoint(path, file, fh, &err) == Status::ok);
  CHECK(file == io::capture(ref));
  return path;
}

}  // namespace

TEST_CASE("distributed.assignment: shard_rows covers the rows in rank order") {
  for (index_t rows : {0, 1, 3, 5, 8, 2304})
    for (int ranks : {1, 2, 3, 4}) {
      index_t next = 0;
      for (int r = 0; r < ranks; ++r) {
        const distributed::RowRange rr = distributed::shard_rows(rows, r, ranks);
        CHECK(rr.begin == next);
        CHECK(rr.end >= rr.begin);
        next = rr.end;
      }
      CHECK(next == rows);
    }
  CHECK(distributed::shard_rows(5, 3, 4).size() == 0);  // chunk 2: rows 0-1, 2-3, 4, none
  CHECK(distributed::shard_rows(5, 2, 4).size() == 1);
}

TEST_CASE("distributed.assignment: arguments out of range give the documented empty results") {
  // No rank count, no alignment, an owner beyond the ranks: empty or all-zero results, never a
  // division by zero or a read out of bounds.
  CHECK(distributed::shard_rows(5, 0, 0).size() == 0);
  CHECK(distributed::shard_rows(5, 4, 4).size() == 0);
  CHECK(distributed::shard_rows(5, -1, 2).size() == 0);
  CHECK(distributed::chunk_bounds(5, 0) == std::vector<index_t>{0});
  for (const auto& [align, ranks] : {std::pair<index_t, int>{0, 2}, {1, 0}, {-4, 2}}) {
    const distributed::FlatBuffer b = distributed::reversed_flat_buffer({4, 4}, align, ranks);
    CHECK(b.size == 0);
    CHECK(b.offsets.empty());
    CHECK(b.parts.empty());
    CHECK(b.bounds.empty());
  }
  CHECK(distributed::assign_owners({1.0, 2.0, 3.0}, 0).empty());
  CHECK(distributed::assign_owners({1.0, 2.0}, 0, {{1, 1}, {2, 0}}).empty());
  CHECK(distributed::assign_owners_with_transfers({1.0, 2.0}, 0, {}, 1.0).empty());
  CHECK(distributed::assign_owners_with_transfers({1.0, 2.0}, 2, {{1, 1}, {2, 0}}, -1.0).empty());
  CHECK(distributed::assign_owners_with_transfers({1.0, 2.0}, 3, {},
                                                  distributed::TransferCosts::uniform(2, 1.0))
            .empty());
  // A NaN cost is placed last, as −∞ (a strict weak order for the sort): 3, NaN | 2, 1.
  CHECK(distributed::assign_owners({1.0, std::nan(""), 3.0, 2.0}, 2) == std::vector<int>{1, 0, 0, 1});
  const distributed::ModelledStep bad_owner =
      distributed::modelled_step({1.0, 2.0}, 2, {0, 5}, {{1, 1}, {}}, 1.0);
  CHECK(bad_owner.work == std::vector<double>{1.0, 0.0});  // owner 5 counts nowhere
  CHECK(bad_owner.exchange == 3.0);                        // parameter 0: rank 1's element, 3·c
  CHECK(distributed::modelled_step({1.0}, 0, {0}, {}, 1.0).work.empty());
  CHECK(std::isnan(distributed::modelled_step({1.0}, 2, {0}, {{1, 1}}, -1.0).time()));
}

TEST_CASE("distributed.assignment: longest processing time balances costs deterministically") {
  const std::vector<double> costs = {1, 9, 4, 4, 3, 3, 2, 8};
  const std::vector<int> owners = distributed::assign_owners(costs, 2);
  double load[2] = {0, 0};
  for (std::size_t i = 0; i < costs.size(); ++i)
    load[owners[i]] += costs[i];
  CHECK(load[0] == 17.0);  // LPT: 9 | 8, 4 | 4, 3 | 3, 2 | 1 → 17 | 17
  CHECK(load[1] == 17.0);
  CHECK(distributed::assign_owners(costs, 2) == owners);
  CHECK(distributed::assign_owners(costs, 1) == std::vector<int>(costs.size(), 0));
  // The default model ranks a polar update far above an element-wise pass of the same size.
  CHECK(distributed::default_cost({768, 3072}, true) > 10 * distributed::default_cost({768, 3072}, false));
}

TEST_CASE("distributed.assignment: owners where the parameters are held") {
  // costs 5, 4, 3, 2, 1 on 2 ranks: the first two lie wholly on rank 0, the third is free, the
  // fourth is held evenly (LPT's choice among both), the fifth mostly by rank 1.
  const std::vector<double> costs = {5, 4, 3, 2, 1};
  const std::vector<std::vector<index_t>> held = {{10, 0}, {7, 0}, {}, {5, 5}, {1, 6}};
  CHECK(distributed::assign_owners(costs, 2, held) == std::vector<int>{0, 0, 1, 1, 1});  // loads 9 | 6
  CHECK(distributed::assign_owners(costs, 2) == std::vector<int>{0, 1, 1, 0, 0});        // LPT: 8 | 7
  // Without preferences it is LPT exactly.
  CHECK(distributed::assign_owners(costs, 2, std::vector<std::vector<index_t>>(5)) ==
        distributed::assign_owners(costs, 2));
}

TEST_CASE("distributed.assignment: owners weighing each transfer against the work") {
  // Costs 6, 7, 10 on 2 ranks, the first two held 8 | 2, the third free (replicated). The model:
  // the largest rank's work plus 3 floats per element the owner does not hold, at 0.2 each
  // (owned on rank 0: 3·2·0.2 = 1.2, on rank 1: 3·8·0.2 = 4.8). By hand, over all 8 choices:
  // the best keeps both held ones on rank 0 and moves the free one: work 13 | 10, exchange
  // 2.4, 15.4. LPT moves both held ones (work 10 | 13, exchange 9.6: 22.6); where-held moves
  // none (23 | 0, 2.4: 25.4); LPT with the exchange counted alone (10 to rank 0 on the tie,
  // then 7 to rank 1 and 6 to rank 0) ends at 16 | 7 and 6.0: 22, worse than the optimum.
  const std::vector<double> costs = {6, 7, 10};
  const std::vector<std::vector<index_t>> held = {{8, 2}, {8, 2}, {}};
  const std::vector<int> mine = distributed::assign_owners_with_transfers(costs, 2, held, 0.2);
  CHECK(mine == std::vector<int>{0, 0, 1});
  CHECK(distributed::assign_owners(costs, 2) == std::vector<int>{1, 1, 0});
  CHECK(distributed::assign_owners(costs, 2, held) == std::vector<int>{0, 0, 0});
  // Sums of a few multiples of 0.2: exact to a few ulps of 25.
  auto time = [&](const std::vector<int>& o) {
    return distributed::modelled_step(costs, 2, o, held, 0.2).time();
  };
  CHECK(time(mine) == doctest::Approx(15.4).epsilon(1e-14));
  CHECK(time({1, 1, 0}) == doctest::Approx(22.6).epsilon(1e-14));
  CHECK(time({0, 0, 0}) == doctest::Approx(25.4).epsilon(1e-14));
  CHECK(time({0, 1, 0}) == doctest::Approx(22.0).epsilon(1e-14));
  const distributed::ModelledStep by_rows = distributed::modelled_step(costs, 2, {-1, 1, 0}, held, 0.2);
  CHECK(by_rows.work == std::vector<double>{10.0, 7.0});  // −1: stepped where it lies
  CHECK(by_rows.exchange == doctest::Approx(4.8).epsilon(1e-14));
  {
    // Seed 158's instance 397 (test_mpi's sweep): the local search's running sums made an
    // improved start look shorter than LPT's 23.9, while modelled_step() timed it 23.9 + 1 ulp.
    // Never longer than either plain assignment holds in modelled_step()'s own arithmetic.
    const std::vector<double> c7 = {7, 5, 6, 1, 10, 8, 2};
    const std::vector<std::vector<index_t>> h7 = {{}, {0, 10}, {}, {4, 3}, {4, 3}, {4, 3}, {4, 3}};
    auto time7 = [&](const std::vector<int>& o) {
      return distributed::modelled_step(c7, 2, o, h7, 0.1).time();
    };
    const double got = time7(distributed::assign_owners_with_transfers(c7, 2, h7, 0.1));
    CHECK(got <= time7(distributed::assign_owners(c7, 2)));
    CHECK(got <= time7(distributed::assign_owners(c7, 2, h7)));
  }
  // Random instances from the suite's seed (each parameter free or held in one of seven ways,
  // transfer costs 0.01–1) against every assignment: never longer than either plain assignment
  // (by construction: both are candidates), and close to the optimum on average. Over seeds 1–60
  // (2026-12-01) the mean ratio to the optimum was 1.0059–1.0118 (2–3 ranks) and 1.0152–1.0256
  // (4 ranks); over seeds 1–30 a search without its start where the parameters lie gave
  // 1.0251–1.0407 and 1.0503–1.0718, one without the moves 1.0363–1.0513 and 1.0669–1.0888: the
  // bounds sit between. (Without the start of LPT with the exchange counted: 1.0070–1.0120 and
  // 1.0230–1.0347, within the seeds' spread, so not told apart here; without the LPT start it
  // can be longer than LPT, which the first check catches.) The worst ratio of a seed's
  // instances, 1.12–1.5, is printed, not checked: it is one instance's, and spread as widely
  // as those of the partial searches (1.12–2.0). Exhaustive (4⁸ assignments for each of the
  // 300 4-rank instances) and MPI-free: in the one-rank run only. Under AddressSanitizer (CI's
  // reliability job, this file at -O0) the search took about 65 s, the longest test of that
  // job, so there it runs a tenth of the instances for the memory checks and the per-instance
  // bounds; the mean ratios, statistics of these 700 instances, are checked by the optimised
  // builds.
  const std::uint64_t seed = test::case_seed("distributed.assignment");
  CAPTURE(seed);
  Rng rng(seed);
  const std::vector<std::vector<index_t>> ways = {{10, 0, 0, 0}, {0, 10, 0, 0}, {5, 5, 0, 0}, {8, 2, 0, 0},
                                                  {0, 3, 7, 0},  {4, 3, 3, 0},  {0, 0, 2, 8}};
  struct Ratios {
    double mean = 0.0, worst = 0.0;
  };
  auto trial = [&](int instances, int min_ranks, int max_ranks, int min_params, int max_params) {
    Ratios out;
    for (int t = 0; t < instances; ++t) {
      const int ranks = min_ranks + int(rng.uniform() * (max_ranks - min_ranks + 1));
      const int m = min_params + int(rng.uniform() * (max_params - min_params + 1));
      std::vector<double> c;
      std::vector<std::vector<index_t>> h;
      for (int i = 0; i < m; ++i) {
        c.push_back(1 + std::floor(rng.uniform() * 10));
        const auto k = static_cast<std::size_t>(rng.uniform() * double(ways.size() + 1));
        h.push_back(k < ways.size() ? ways[k] : std::vector<index_t>{});
        if (!h.back().empty()) h.back().resize(static_cast<std::size_t>(ranks));
        index_t n = 0;
        for (index_t e : h.back())
          n += e;
        if (n == 0) h.back().clear();
      }
      const double per_float =
          std::vector<double>{0.01, 0.05, 0.1, 0.2, 0.5, 1.0}[std::size_t(rng.uniform() * 6)];
      auto model = [&](const std::vector<int>& o) {
        return distributed::modelled_step(c, ranks, o, h, per_float).time();
      };
      const double got = model(distributed::assign_owners_with_transfers(c, ranks, h, per_float));
      CAPTURE(t);
      CHECK(got <= model(distributed::assign_owners(c, ranks)));
      CHECK(got <= model(distributed::assign_owners(c, ranks, h)));
      double best = got;
      for (std::vector<int> o(std::size_t(m), 0);;) {  // every assignment, as a base-`ranks` counter
        best = std::min(best, model(o));
        std::size_t k = 0;
        while (k < o.size() && ++o[k] == ranks)
          o[k++] = 0;
        if (k == o.size()) break;
      }
      out.mean += got / best / instances;
      out.worst = std::max(out.worst, got / best);
    }
    return out;
  };
  if (world().size() == 1 && kAddressSanitizer) {
    trial(40, 2, 3, 3, 7);
    trial(30, 4, 4, 8, 8);
  } else if (world().size() == 1) {
    const Ratios small = trial(400, 2, 3, 3, 7), wide = trial(300, 4, 4, 8, 8);
    MESSAGE("assignment against the optimum, mean / worst: 2-3 ranks "
            << small.mean << " / " << small.worst << ", 4 ranks " << wide.mean << " / " << wide.worst);
    CHECK(small.mean < 1.02);
    CHECK(wide.mean < 1.04);
  }
  // Dear transfers: every held parameter on a rank holding the most of it (40 parameters on 3
  // ranks); free transfers balance the work at least as well as LPT.
  Rng more(seed + 1);
  std::vector<double> c;
  std::vector<std::vector<index_t>> h;
  for (int i = 0; i < 40; ++i) {
    c.push_back(std::floor(1 + 100 * more.uniform()));
    h.emplace_back();
    if (i % 5 != 0)
      for (int r = 0; r < 3; ++r)
        h.back().push_back(static_cast<index_t>(std::floor(1000 * more.uniform())) * (more.uniform() < 0.5));
  }
  const std::vector<int> dear = distributed::assign_owners_with_transfers(c, 3, h, 1e9);
  for (std::size_t i = 0; i < c.size(); ++i)
    if (!h[i].empty()) {
      CAPTURE(i);
      CHECK(h[i][static_cast<std::size_t>(dear[i])] == *std::max_element(h[i].begin(), h[i].end()));
    }
  const std::vector<int> free = distributed::assign_owners_with_transfers(c, 3, h, 0.0);
  CHECK(distributed::modelled_step(c, 3, free, h, 0.0).time() <=
        distributed::modelled_step(c, 3, distributed::assign_owners(c, 3), h, 0.0).time());
}

TEST_CASE("distributed.assignment: a cost per pair of ranks keeps matrices on their node") {
  // Four ranks on two nodes, {0, 1} and {2, 3}: a float costs 0.1 within a node and 2 between
  // them (per_pair[from·4 + to]). Three matrices of cost 100, each held half on rank 0 and half
  // on rank 1. With one rate of 0.1 everywhere the third goes to node 2 (work 100, exchange
  // 15 + 15 + 30: 160 against 245 for keeping all three on node 1). Priced per pair, moving it
  // costs 100·(2·2 + 2) = 600, more than the 100 of work it saves: all three stay on ranks 0
  // and 1 (work 200 | 100, exchange 3·15: 245).
  const std::vector<double> costs = {100, 100, 100};
  const std::vector<std::vector<index_t>> held = {{50, 50, 0, 0}, {50, 50, 0, 0}, {50, 50, 0, 0}};
  distributed::TransferCosts nodes = distributed::TransferCosts::uniform(4, 0.1);
  for (std::size_t a = 0; a < 4; ++a)
    for (std::size_t b = 0; b < 4; ++b)
      if (a / 2 != b / 2) nodes.per_pair[a * 4 + b] = 2.0;
  REQUIRE(nodes.check() == nullptr);
  const std::vector<int> flat = distributed::assign_owners_with_transfers(costs, 4, held, 0.1);
  CHECK(distributed::modelled_step(costs, 4, flat, held, 0.1).time() ==
        doctest::Approx(160.0).epsilon(1e-14));
  CHECK(std::count_if(flat.begin(), flat.end(), [](int o) { return o >= 2; }) == 1);
  const std::vector<int> paired = distributed::assign_owners_with_transfers(costs, 4, held, nodes);
  for (int o : paired)
    CHECK(o < 2);
  CHECK(distributed::modelled_step(costs, 4, paired, held, nodes).time() ==
        doctest::Approx(245.0).epsilon(1e-14));
  // Asymmetric links: in (parameter and gradient) counts twice, out (the update) once.
  distributed::TransferCosts skew = distributed::TransferCosts::uniform(2, 0.0);
  skew.per_pair = {0.0, 1.0, 10.0, 0.0};  // 0 → 1 costs 1, 1 → 0 costs 10
  const std::vector<std::vector<index_t>> one = {{4, 6}};
  CHECK(distributed::modelled_step({1.0}, 2, {0}, one, skew).exchange == 6 * (2 * 10.0 + 1.0));
  CHECK(distributed::modelled_step({1.0}, 2, {1}, one, skew).exchange == 4 * (2 * 1.0 + 10.0));
  // One rate as a matrix is the one-rate model.
  CHECK(
      distributed::modelled_step(costs, 4, flat, held, distributed::TransferCosts::uniform(4, 0.1)).time() ==
      distributed::modelled_step(costs, 4, flat, held, 0.1).time());
  // Unusable matrices.
  CHECK(distributed::TransferCosts{}.check() != nullptr);
  CHECK(distributed::TransferCosts{2, {0.0, 1.0, 1.0}}.check() != nullptr);
  CHECK(distributed::TransferCosts{2, {0.0, -1.0, 1.0, 0.0}}.check() != nullptr);
  CHECK(distributed::TransferCosts{2, {std::nan(""), 1.0, 1.0, 0.0}}.check() == nullptr);  // diagonal unused
  CHECK(distributed::TransferCosts{2, {0.0, std::numeric_limits<double>::infinity(), 1.0, 0.0}}.check() !=
        nullptr);
}

TEST_CASE("distributed.partition: every rank computes the same owners") {
  auto d = distributed::distributed_partition(world(), specs(), propose_labels(specs()),
                                              route("muon", make_muon()), route("adamw", make_adamw()));
  REQUIRE(d.init());
  const int n = world().size();
  std::vector<std::int64_t> mine(d.owners().begin(), d.owners().end()), all(mine.size() * std::size_t(n));
  world().allgather(mine.data(), mine.size(), all.data());
  for (int r = 0; r < n; ++r)
    CHECK(
        std::equal(mine.begin(), mine.end(), all.begin() + std::ptrdiff_t(r) * std::ptrdiff_t(mine.size())));
}

TEST_CASE("distributed.partition: memory_use is this rank's share, one process's on one rank") {
  const auto labels = propose_labels(specs());
  auto ref = optim::partition(specs(), labels, route("muon", make_muon()), route("adamw", make_adamw()));
  REQUIRE(ref.init());
  auto d = distributed::distributed_partition(world(), specs(), labels, route("muon", make_muon()),
                                              route("adamw", make_adamw()));
  CHECK(d.memory_use().total() == 0);  // before init()
  REQUIRE(d.init());
  const optim::MemoryUse m = d.memory_use(), one = ref.memory_use();
  optim::detail::BufferBytes mine;
  d.visit_local(mine);
  CHECK(m.state == mine.bytes);  // the state a checkpoint takes from this rank
  CHECK(m.backups <= m.state);
  if (world().size() == 1) {  // the same partition as one process's
    CHECK(m.state == one.state);
    CHECK(m.backups == one.backups);
    CHECK(m.scratch == one.scratch);
    CHECK(m.batches == one.batches);
    CHECK(m.workspace == one.workspace);
  }
  CHECK(one.exchange == 0);
  // Every parameter replicated: the exchange buffers are the all-gather target of every update
  // (4 bytes per element of every parameter) and a copy of each owned parameter
  // (docs/distributed.md "Cost and traffic").
  std::size_t all = 0, owned = 0;
  for (std::size_t i = 0; i < specs().size(); ++i) {
    const auto n = static_cast<std::size_t>(optim::flatten(specs()[i].shape).size());
    all += n;
    if (d.owners()[i] == world().rank()) owned += n;
  }
  CHECK(m.exchange == 4 * (all + owned));
  CHECK(m.total() == m.state + m.backups + m.scratch + m.batches + m.workspace + m.exchange);
  // The same after steps: no rank copies its local state for the cross-rank rollback (the
  // local partition's backups serve: docs/distributed.md "Step"), so nothing grows.
  Model model(specs());
  Local loc(d, model);
  for (int t = 0; t < 2; ++t) {
    model.gradients(t);
    loc.gradients(d, model);
    REQUIRE(d.step(Model::ptrs(loc.w), Model::ptrs(loc.g)).status == Status::ok);
  }
  const optim::MemoryUse after = d.memory_use();
  CHECK(after.total() == m.total());
  CHECK(after.backups == m.backups);
}

/// A DistributedPartition over Muon and AdamW with `more` applied copies at least the state one
/// with `less` applied copies, more on one rank (which owns every parameter) and there as much as
/// a one-process partition with `more`, and steps as that one does, bit for bit. `more` and
/// `less` set options on a partition of either kind.
template <class More, class Less>
void more_copies_same_steps(const More& more, const Less& less) {
  const auto labels = propose_labels(specs());
  auto ref = optim::partition(specs(), labels, route("muon", make_muon()), route("adamw", make_adamw()));
  more(ref);
  REQUIRE(ref.init());
  auto fewer = distributed::distributed_partition(world(), specs(), labels, route("muon", make_muon()),
                                                  route("adamw", make_adamw()));
  less(fewer);
  REQUIRE(fewer.init());
  auto d = distributed::distributed_partition(world(), specs(), labels, route("muon", make_muon()),
                                              route("adamw", make_adamw()));
  more(d);
  REQUIRE(d.init());
  CHECK(d.memory_use().backups >= fewer.memory_use().backups);
  if (world().size() == 1) {
    CHECK(d.memory_use().backups > fewer.memory_use().backups);
    CHECK(d.memory_use().backups == ref.memory_use().backups);
  }
  Model m(specs());
  Local loc(d, m);
  along(ref, d, m, loc, 0, 3);
  CHECK(same_state(d, ref));
}

TEST_CASE("distributed.partition: set_prechecks(false) copies the owners' Muon states, same steps") {
  // Muon's chain is prechecked: by default its momentum has no copy. Without prechecks the
  // owners' local partitions copy it (optim::Partition::set_prechecks), and the trajectory is
  // the one-process one as before.
  more_copies_same_steps([](auto& p) { p.set_prechecks(false); }, [](auto&) {});
}

TEST_CASE("distributed.partition: set_copy_all_states copies every owner state, same steps") {
  // AdamW cannot fail and Muon is prechecked: by default neither has a copy. With
  // set_copy_all_states the owners' local partitions copy both (optim::Partition's), more than
  // set_prechecks(false) does (Muon's alone), and the trajectory is the one-process one.
  more_copies_same_steps([](auto& p) { p.set_copy_all_states(true); },
                         [](auto& p) { p.set_prechecks(false); });
}

TEST_CASE("distributed.partition: muon and adamw trajectories equal one process bit for bit") {
  for (bool sharded : {false, true}) {
    CAPTURE(sharded);
    const auto labels = propose_labels(specs());
    auto ref = optim::partition(specs(), labels, route("muon", make_muon()), route("adamw", make_adamw()));
    REQUIRE(ref.init());
    auto d = distributed::distributed_partition(world(), specs(), labels, route("muon", make_muon()),
                                                route("adamw", make_adamw()));
    d.set_layouts(layouts(sharded));
    REQUIRE(d.init());
    // Row-sharded AdamW parameters (embed, bias) are stepped by rows: no owner, no exchange.
    for (std::size_t i = 0; i < specs().size(); ++i) {
      CAPTURE(specs()[i].name);
      CHECK(d.by_rows(i) == (sharded && layouts(true)[i] == Layout::row_sharded && labels[i] == "adamw"));
      CHECK((d.owners()[i] < 0) == d.by_rows(i));
    }
    Model m(specs());
    Local loc(d, m);
    along(ref, d, m, loc, 0, 4);
    CHECK(same_state(d, ref));
  }
}

/// SPEL's last rule reads the whole parameter and replaces it by the polar factor of its step:
/// the owner must hold the gathered rows of a row-sharded matrix, and every rank must add the
/// same update to its copy or shard.
TEST_CASE("distributed.partition: spel, which re-projects the parameters, equals one process bit for bit") {
  for (bool sharded : {false, true}) {
    CAPTURE(sharded);
    const auto labels = propose_labels(specs());
    SpelOptions o;
    o.lr = Schedule::constant(0.02);
    auto ref = optim::partition(specs(), labels, route("muon", spel(o)), route("adamw", make_adamw()));
    REQUIRE(ref.init());
    auto d = distributed::distributed_partition(world(), specs(), labels, route("muon", spel(o)),
                                                route("adamw", make_adamw()));
    d.set_layouts(layouts(sharded));
    REQUIRE(d.init());
    Model m(specs());
    Local loc(d, m);
    along(ref, d, m, loc, 0, 3);
    CHECK(same_state(d, ref));
  }
}

TEST_CASE(
    "distributed.partition: column-sharded (tensor-parallel) parameters equal one process bit for bit") {
  // Layout::column_sharded: each rank holds its columns of every row (RowParallelLinear's split
  // of `in`), columns not divisible by the rank count and ranks with no columns included; mixed
  // with row-sharded and replicated parameters. Trajectories and owners' states equal one
  // process, AdamW stepped on each rank's column blocks; a checkpoint saved from column shards
  // is the single-process file, restores into column shards, and into row shards, where it
  // continues identically (the file does not depend on the layout).
  const auto labels = propose_labels(specs());
  auto ref = optim::partition(specs(), labels, route("muon", make_muon()), route("adamw", make_adamw()));
  REQUIRE(ref.init());
  std::vector<Layout> cols(specs().size(), Layout::column_sharded);
  cols[2] = Layout::row_sharded;  // h1.w
  cols[8] = Layout::replicated;   // gain
  auto make = [&](const std::vector<Layout>& l) {
    auto d = distributed::distributed_partition(world(), specs(), labels, route("muon", make_muon()),
                                                route("adamw", make_adamw()));
    d.set_layouts(l);
    return d;
  };
  auto d = make(cols);
  REQUIRE(d.init());
  for (std::size_t i = 0; i < specs().size(); ++i) {
    CAPTURE(specs()[i].name);
    CHECK(d.by_rows(i) ==
          (cols[i] != Layout::replicated && labels[i] == "adamw"));  // AdamW's blocks where they lie
    if (cols[i] != Layout::column_sharded) continue;
    const distributed::RowRange c = d.column_range(i);
    const auto me = static_cast<std::size_t>(world().rank());
    const std::vector<index_t> b = distributed::chunk_bounds(flatten(specs()[i].shape).cols, world().size());
    CHECK(c.begin == b[me]);
    CHECK(c.end == b[me + 1]);
    CHECK(d.row_range(i).size() == flatten(specs()[i].shape).rows);
  }
  Model m(specs());
  Local loc(d, m);
  along(ref, d, m, loc, 0, 3);
  CHECK(same_state(d, ref));
  const std::string path = save_as_one_process(d, ref, "columns", 3);
  std::string err;
  io::CheckpointHeader got;
  // Back into column shards: AdamW's buffers cut into each rank's column blocks.
  auto again = make(cols);
  REQUIRE(again.init());
  REQUIRE(distributed::load_checkpoint(path, again, got, {}, &err) == Status::ok);
  CHECK(same_state(again, ref));
  auto rows = make(layouts(true));
  REQUIRE(rows.init());
  REQUIRE(distributed::load_checkpoint(path, rows, got, {}, &err) == Status::ok);
  Local other(rows, m);  // m holds the parameters after step 3
  along(ref, rows, m, other, 3, 5);
  if (world().rank() == 0) std::filesystem::remove(path);
}

/// Uneven row boundaries over this run's ranks: rank r holds rows [R·r²/n², R·(r+1)²/n²), so
/// the first ranks hold few rows or none (R = 12, n = 4: 0 | 0–2 | 3–5 | 6–11).
std::vector<index_t> uneven_bounds(index_t rows) {
  const auto n = static_cast<index_t>(world().size());
  std::vector<index_t> b;
  for (index_t r = 0; r <= n; ++r)
    b.push_back(rows * r * r / (n * n));
  return b;
}

TEST_CASE("distributed.qk_clip: MuonClip on row- flat- and column-sharded attention equals one process") {
  // Megatron's gated linear_qkv and GPT-2's fused c_attn with its bias, row-sharded, then
  // flat-sharded (uneven runs beginning inside rows), then column-sharded (uneven bands), then
  // as sharding along the output dimension lays them out (linear_qkv (out, in) by rows, the
  // (in, out) c_attn and its bias by columns): each rank clips what it holds after the distributed Muon
  // step (QkClip::set_elements with the partition's element ranges, set_columns with its column
  // ranges), with the same logits; the result is the single process's MuonClip bit for bit.
  const schatten::test::ShardedAttention attention;
  const std::vector<ParamSpec>& ps = attention.specs;
  const std::vector<QkLayer>& layers = attention.layers;
  const auto labels = propose_labels(ps);
  enum Kind { rows, flat, columns, output_dim };
  for (int kind : {rows, flat, columns, output_dim}) {
    CAPTURE(kind);
    auto ref = optim::partition(ps, labels, route("muon", make_muon()), route("adamw", make_adamw()));
    REQUIRE(ref.init());
    auto d = distributed::distributed_partition(world(), ps, labels, route("muon", make_muon()),
                                                route("adamw", make_adamw()));
    if (kind == rows) d.set_layouts(std::vector<Layout>(ps.size(), Layout::row_sharded));
    if (kind == flat) {
      std::vector<std::vector<index_t>> runs;
      for (const ParamSpec& p : ps) {  // 288, 192, 24 elements; interior cuts moved inside rows
        runs.push_back(uneven_bounds(flatten(p.shape).size()));
        for (std::size_t r = 1; r + 1 < runs.back().size(); ++r)
          runs.back()[r] = std::min(runs.back()[r] + 1, flatten(p.shape).size());
      }
      d.set_flat_bounds(runs);
    }
    if (kind == columns) {
      std::vector<std::vector<index_t>> bands;
      for (const ParamSpec& p : ps)  // 8, 24, 24 columns
        bands.push_back(uneven_bounds(flatten(p.shape).cols));
      d.set_column_bounds(bands);
    }
    if (kind == output_dim)
      d.set_layouts({Layout::row_sharded, Layout::column_sharded, Layout::column_sharded});
    REQUIRE(d.init());
    QkClip whole(layers, {2.0, 0.5}), mine(layers, {2.0, 0.5});
    REQUIRE(whole.init(ps));
    REQUIRE(mine.init(ps));
    // The recipe for any layout: the partition's element range and column range of each.
    std::vector<std::pair<index_t, index_t>> run, band;
    for (std::size_t i = 0; i < ps.size(); ++i) {
      run.emplace_back(d.element_range(i).begin, d.element_range(i).end);
      band.emplace_back(d.column_range(i).begin, d.column_range(i).end);
    }
    REQUIRE(mine.set_elements(run));
    REQUIRE(mine.set_columns(band));
    Model m(ps);
    Local loc(d, m);
    for (int t = 0; t < 3; ++t) {
      CAPTURE(t);
      m.gradients(t);
      loc.gradients(d, m);
      REQUIRE(d.step(Model::ptrs(loc.w), Model::ptrs(loc.g)));
      REQUIRE(ref.step(Model::ptrs(m.w), Model::ptrs(m.g)));
      // The same logits everywhere (an all-reduced MAX in training): heads firing alternately.
      std::vector<float> logits(static_cast<std::size_t>(whole.heads()));
      for (std::size_t h = 0; h < logits.size(); ++h)
        logits[h] =
            static_cast<float>(1.0 + 0.75 * static_cast<double>((h + static_cast<std::size_t>(t)) % 4));
      std::vector<float*> local = Model::ptrs(loc.w);
      for (std::size_t i = 0; i < ps.size(); ++i)
        if (loc.w[i].empty()) local[i] = nullptr;
      const QkClipReport a = whole.apply(Model::ptrs(m.w), logits), b = mine.apply(local, logits);
      REQUIRE(a);
      REQUIRE(b);
      CHECK(a.clipped_heads > 0);
      CHECK(b.clipped_heads == a.clipped_heads);
      CHECK(same_bits(d, m, loc));
    }
  }
}

TEST_CASE("distributed.split: cut parameters over the ranks equal one process bit for bit") {
  // Fused parameters cut into pieces (row, column, grouped and stacked cuts), the pieces spread
  // over the ranks' owners: optim::SplitPartition over a DistributedPartition built over the
  // pieces steps the caller's replicated fused arrays exactly as over a single-process Partition.
  const SplitLayout layout = cut_layout();
  REQUIRE_MESSAGE(layout, layout.message());
  const std::vector<ParamSpec>& ps = layout.params();
  const auto labels = propose_labels(layout.pieces());
  auto ref = split_partition(layout, optim::partition(layout.pieces(), labels, route("muon", make_muon()),
                                                      route("adamw", make_adamw())));
  REQUIRE(ref.init());
  auto d = split_partition(
      layout, distributed::distributed_partition(world(), layout.pieces(), labels, route("muon", make_muon()),
                                                 route("adamw", make_adamw())));
  REQUIRE(d.init());
  CHECK(d.signature() == ref.signature());
  Model m(ps), mine(ps);  // the same fused arrays on every rank (replicated)
  for (int t = 0; t < 4; ++t) {
    CAPTURE(t);
    m.gradients(t);
    mine.gradients(t);
    const std::vector<std::vector<float>> g = mine.g;
    REQUIRE(ref.step(Model::ptrs(m.w), Model::ptrs(m.g)));
    REQUIRE(d.step(Model::ptrs(mine.w), Model::ptrs(mine.g)));
    for (std::size_t i = 0; i < ps.size(); ++i) {
      CAPTURE(ps[i].name);
      CHECK(std::memcmp(m.w[i].data(), mine.w[i].data(), m.w[i].size() * sizeof(float)) == 0);
      // The distributed step reads gradients, a cut scatters its copies back: unchanged.
      CHECK(std::memcmp(g[i].data(), mine.g[i].data(), g[i].size() * sizeof(float)) == 0);
    }
  }
  CHECK(same_state(d.partition(), ref.partition()));
  // Pieces are laid out from the fused parameters' shards (set_source_rows, next test case), not
  // through the partition's set_layouts: that is refused, on every rank.
  auto sharded = split_partition(
      layout, distributed::distributed_partition(world(), layout.pieces(), labels, route("muon", make_muon()),
                                                 route("adamw", make_adamw())));
  std::vector<Layout> rows(layout.pieces().size(), Layout::replicated);
  rows[1] = Layout::row_sharded;
  sharded.partition().set_layouts(rows);
  const StepReport r = sharded.init();
  CHECK(r.status == Status::invalid_argument);
  CHECK(std::string(r.message).find("set_source_rows") != std::string::npos);
  CHECK(sharded.init(MemoryKind::device).status == Status::invalid_argument);
  // (Row, flat and column bounds are the SplitPartition's own: it sets them from its
  // set_source_rows, set_source_elements and set_source_columns.)
}

TEST_CASE("distributed.partition: uneven row bounds equal one process bit for bit") {
  // set_row_bounds: shards where the caller's sharding cuts them (not torch.chunk's), ranks
  // holding no rows included; the trajectory is the single process's, bit for bit.
  const auto labels = propose_labels(specs());
  auto ref = optim::partition(specs(), labels, route("muon", make_muon()), route("adamw", make_adamw()));
  REQUIRE(ref.init());
  auto d = distributed::distributed_partition(world(), specs(), labels, route("muon", make_muon()),
                                              route("adamw", make_adamw()));
  std::vector<std::vector<index_t>> bounds(specs().size());
  for (std::size_t i :
       {0u, 1u, 4u, 5u, 6u, 9u})  // embed (AdamW: by rows), h0.w, tall, wide, conv, three_rows
    bounds[i] = uneven_bounds(flatten(specs()[i].shape).rows);
  bounds[7] = distributed::chunk_bounds(1, world().size());  // bias: torch.chunk, one row
  d.set_row_bounds(bounds);
  REQUIRE(d.init());
  for (std::size_t i = 0; i < bounds.size(); ++i) {
    CAPTURE(i);
    CHECK((d.layout(i) == Layout::row_sharded) == !bounds[i].empty());
    if (bounds[i].empty()) continue;
    const auto me = static_cast<std::size_t>(world().rank());
    CHECK(d.row_range(i).begin == bounds[i][me]);
    CHECK(d.row_range(i).end == bounds[i][me + 1]);
  }
  Model m(specs());
  Local loc(d, m);
  along(ref, d, m, loc, 0, 3);
  CHECK(same_state(d, ref));
  // Bad bounds are refused on every rank with a message.
  auto refused = [&](std::vector<std::vector<index_t>> b, const char* says) {
    auto e = distributed::distributed_partition(world(), specs(), labels, route("muon", make_muon()),
                                                route("adamw", make_adamw()));
    e.set_row_bounds(std::move(b));
    const StepReport r = e.init();
    CHECK(r.status == Status::invalid_argument);
    CHECK_MESSAGE(std::string(r.message).find(says) != std::string::npos, r.message);
    CHECK(!e.initialized());
  };
  std::vector<std::vector<index_t>> b(specs().size());
  b[1] = uneven_bounds(12);
  b[1].push_back(12);  // one boundary too many
  refused(b, "are not");
  b[1] = uneven_bounds(12);
  b[1].back() = 11;  // not the rows
  refused(b, "from 0 to its 12 rows");
  b[1] = uneven_bounds(12);
  if (b[1].size() > 2) std::swap(b[1][1], b[1][b[1].size() - 2]);  // decreasing somewhere
  if (world().size() > 2) refused(b, "nondecreasing");
  refused(std::vector<std::vector<index_t>>(3), "differ in number");
  if (world().size() > 1) {
    b[1] = world().rank() == 0 ? distributed::chunk_bounds(12, world().size()) : uneven_bounds(12);
    refused(b, "differ between the ranks");  // rank 0 disagrees: nobody proceeds
  }
}

TEST_CASE("distributed.partition: uneven column bounds equal one process bit for bit") {
  // set_column_bounds: tensor-parallel shards cut where the caller cuts them, ranks holding no
  // columns included, beside column shards at torch.chunk's split and row shards.
  const auto labels = propose_labels(specs());
  auto ref = optim::partition(specs(), labels, route("muon", make_muon()), route("adamw", make_adamw()));
  REQUIRE(ref.init());
  auto d = distributed::distributed_partition(world(), specs(), labels, route("muon", make_muon()),
                                              route("adamw", make_adamw()));
  std::vector<Layout> l(specs().size(), Layout::replicated);
  l[2] = Layout::column_sharded;  // h1.w: torch.chunk
  l[4] = Layout::row_sharded;     // tall
  d.set_layouts(l);
  std::vector<std::vector<index_t>> bounds(specs().size());
  for (std::size_t i : {0u, 1u, 5u, 6u})  // embed (AdamW), h0.w, wide, conv
    bounds[i] = uneven_bounds(flatten(specs()[i].shape).cols);
  d.set_column_bounds(bounds);
  REQUIRE(d.init());
  const auto me = static_cast<std::size_t>(world().rank());
  for (std::size_t i = 0; i < bounds.size(); ++i) {
    CAPTURE(specs()[i].name);
    CHECK(d.by_rows(i) == (d.layout(i) != Layout::replicated && labels[i] == "adamw"));
    if (bounds[i].empty()) continue;
    CHECK(d.layout(i) == Layout::column_sharded);
    CHECK(d.column_range(i).begin == bounds[i][me]);
    CHECK(d.column_range(i).end == bounds[i][me + 1]);
  }
  Model m(specs());
  Local loc(d, m);
  along(ref, d, m, loc, 0, 3);
  CHECK(same_state(d, ref));
  auto e = distributed::distributed_partition(world(), specs(), labels, route("muon", make_muon()),
                                              route("adamw", make_adamw()));
  bounds[1].back() = 7;
  e.set_column_bounds(bounds);
  const StepReport r = e.init();
  CHECK(r.status == Status::invalid_argument);
  CHECK_MESSAGE(std::string(r.message).find("column bounds of 'h0.w'") != std::string::npos, r.message);
  CHECK_MESSAGE(std::string(r.message).find("from 0 to its 8 columns") != std::string::npos, r.message);
}

/// A distributed optimizer's flat buffer of specs() (Megatron's order: last parameter first,
/// each start aligned to 4 floats, the buffer padded to a multiple of 4 · ranks and split
/// evenly): every parameter's flat bounds; "three_rows", "gain" and "h2.w" left out, and the
/// AdamW parameters "embed" and "bias" cut unevenly inside their rows (the even split of this
/// small buffer leaves each of them on one rank).
std::vector<std::vector<index_t>> flat_buffer_bounds() {
  std::vector<index_t> sizes;
  for (const ParamSpec& p : specs())
    sizes.push_back(flatten(p.shape).size());
  std::vector<std::vector<index_t>> b = distributed::reversed_flat_buffer(sizes, 4, world().size()).bounds;
  for (std::size_t i : {3u, 8u, 9u})
    b[i].clear();
  b[0] = uneven_bounds(35);  // 4 ranks: 0–1 | 2–7 | 8–18 | 19–34 (rows of 5)
  b[7] = uneven_bounds(9);   // 4 ranks: – | 0–1 | 2–4 | 5–8 (one row)
  return b;
}

TEST_CASE("distributed.assignment: flat_bounds cuts a partitioned buffer into each parameter's runs") {
  // Buffer of 3 parameters (sizes 5, 0, 7 at offsets 2, 7, 8; padding at 0–1), split 0|4|10|16:
  // the first holds buffer [2, 7) → runs 0–2 | 2–5 | – ; the second nothing; the third [8, 15)
  // → – | 0–2 | 2–7.
  const auto b = distributed::flat_bounds({2, 7, 8}, {5, 0, 7}, {0, 4, 10, 16});
  REQUIRE(b.size() == 3);
  CHECK(b[0] == std::vector<index_t>{0, 2, 5, 5});
  CHECK(b[1] == std::vector<index_t>{0, 0, 0, 0});
  CHECK(b[2] == std::vector<index_t>{0, 0, 2, 7});
  // Megatron's layout of sizes 5, 0, 7 aligned to 4 on 2 ranks: the last parameter first at 0,
  // the second at 8 (empty), the first at 8; 13 floats padded to 16, parts 0 | 8 | 16.
  const distributed::FlatBuffer f = distributed::reversed_flat_buffer({5, 0, 7}, 4, 2);
  CHECK(f.offsets == std::vector<index_t>{8, 8, 0});
  CHECK(f.size == 16);
  CHECK(f.parts == std::vector<index_t>{0, 8, 16});
  CHECK(f.bounds == distributed::flat_bounds({8, 8, 0}, {5, 0, 7}, {0, 8, 16}));
  CHECK(f.bounds[2] == std::vector<index_t>{0, 7, 7});
  CHECK(distributed::flat_bounds({0, 1}, {1}, {0, 1}).size() == 1);  // malformed: refused by init
  CHECK(distributed::flat_bounds({0, 1}, {1}, {0, 1})[0] == std::vector<index_t>{-1});
}

TEST_CASE(
    "distributed.partition: flat-sharded (distributed-optimizer) parameters equal one process bit for bit") {
  // set_flat_bounds over a Megatron-style flat buffer: runs that begin and end inside rows,
  // ranks holding nothing of a parameter; AdamW parameters stepped on their runs (no owner), Muon
  // matrices gathered run by run; beside a default flat split (torch.chunk of the elements), a
  // row shard and a replicated parameter. Trajectories and states equal one process; the
  // checkpoint equals the single process's file and restores into another flat partition.
  const auto labels = propose_labels(specs());
  auto ref = optim::partition(specs(), labels, route("muon", make_muon()), route("adamw", make_adamw()));
  REQUIRE(ref.init());
  const std::vector<std::vector<index_t>> bounds = flat_buffer_bounds();
  std::vector<Layout> l(specs().size(), Layout::replicated);
  l[3] = Layout::row_sharded;   // h2.w
  l[9] = Layout::flat_sharded;  // three_rows: chunk_bounds(30, ranks)
  auto make = [&] {
    auto d = distributed::distributed_partition(world(), specs(), labels, route("muon", make_muon()),
                                                route("adamw", make_adamw()));
    d.set_layouts(l);
    d.set_flat_bounds(bounds);
    return d;
  };
  auto d = make();
  REQUIRE(d.init());
  const auto me = static_cast<std::size_t>(world().rank());
  for (std::size_t i = 0; i < specs().size(); ++i) {
    CAPTURE(specs()[i].name);
    const bool flat = !bounds[i].empty() || i == 9;
    CHECK((d.layout(i) == Layout::flat_sharded) == flat);
    CHECK(d.by_rows(i) == ((flat || i == 3) && labels[i] == "adamw"));
    if (!flat) continue;
    const std::vector<index_t> b = i == 9 ? distributed::chunk_bounds(30, world().size()) : bounds[i];
    CHECK(d.element_range(i).begin == b[me]);
    CHECK(d.element_range(i).end == b[me + 1]);
  }
  // The test's own strength: with several ranks, a Muon matrix and an AdamW parameter are each
  // cut inside a row.
  auto cut_in_row = [&](const char* label) {
    for (std::size_t i = 0; i < bounds.size(); ++i)
      for (index_t t : bounds[i])
        if (labels[i] == label && t > 0 && t < flatten(specs()[i].shape).size() &&
            t % flatten(specs()[i].shape).cols != 0)
          return true;
    return false;
  };
  if (world().size() > 1) CHECK((cut_in_row("muon") && cut_in_row("adamw")));
  Model m(specs());
  Local loc(d, m);
  along(ref, d, m, loc, 0, 3);
  CHECK(same_state(d, ref));
  const std::string path = save_as_one_process(d, ref, "flat", 3);
  std::string err;
  auto e = make();
  REQUIRE(e.init());
  io::CheckpointHeader got;
  REQUIRE(distributed::load_checkpoint(path, e, got, {}, &err) == Status::ok);
  CHECK(same_state(e, ref));  // each rank holds its runs of the AdamW buffers
  Local other(e, m);
  along(ref, e, m, other, 3, 5);
  if (world().rank() == 0) std::filesystem::remove(path);
  // Refusals, on every rank.
  auto refused = [&](auto set, const char* says) {
    auto f = distributed::distributed_partition(world(), specs(), labels, route("muon", make_muon()),
                                                route("adamw", make_adamw()));
    set(f);
    const StepReport r = f.init();
    CHECK(r.status == Status::invalid_argument);
    CHECK_MESSAGE(std::string(r.message).find(says) != std::string::npos, r.message);
    CHECK(!f.initialized());
  };
  std::vector<std::vector<index_t>> b = bounds;
  b[1].back() = 95;
  refused([&](auto& f) { f.set_flat_bounds(b); }, "from 0 to its 96 elements");
  refused(
      [&](auto& f) {
        f.set_flat_bounds(bounds);
        std::vector<std::vector<index_t>> rows(specs().size());
        rows[0] = distributed::chunk_bounds(7, world().size());
        f.set_row_bounds(rows);
      },
      "has row and flat bounds");
  refused(
      [&](auto& f) {
        f.set_flat_bounds(distributed::flat_bounds({0}, {1, 2}, {0, 3}));
      },
      "flat bounds and parameters differ in number");
  if (world().size() > 1)
    refused(
        [&](auto& f) {
          std::vector<std::vector<index_t>> mine = bounds;
          if (world().rank() == 1) mine[1] = distributed::chunk_bounds(96, world().size());
          f.set_flat_bounds(mine);
        },
        "differ between the ranks");
}

TEST_CASE("distributed.partition: owners where the flat shards lie equal one process bit for bit") {
  // OwnerChoice::where_held on the flat buffer of the previous test: every gathered parameter is
  // owned by a rank holding the most of it (a matrix lying wholly on one rank is stepped there);
  // the owners change, the trajectory and states do not.
  const auto labels = propose_labels(specs());
  auto ref = optim::partition(specs(), labels, route("muon", make_muon()), route("adamw", make_adamw()));
  REQUIRE(ref.init());
  const std::vector<std::vector<index_t>> bounds = flat_buffer_bounds();
  auto d = distributed::distributed_partition(world(), specs(), labels, route("muon", make_muon()),
                                              route("adamw", make_adamw()));
  d.set_flat_bounds(bounds);
  d.set_owner_choice(distributed::OwnerChoice::where_held);
  REQUIRE(d.init());
  int whole_on_owner = 0;
  for (std::size_t i = 0; i < specs().size(); ++i) {
    CAPTURE(specs()[i].name);
    if (bounds[i].empty() || d.by_rows(i)) continue;
    index_t most = 0;
    for (std::size_t r = 0; r + 1 < bounds[i].size(); ++r)
      most = std::max(most, bounds[i][r + 1] - bounds[i][r]);
    const auto o = static_cast<std::size_t>(d.owners()[i]);
    CHECK(bounds[i][o + 1] - bounds[i][o] == most);
    whole_on_owner += most == flatten(specs()[i].shape).size();
  }
  CHECK(whole_on_owner > 0);
  Model m(specs());
  Local loc(d, m);
  along(ref, d, m, loc, 0, 3);
  CHECK(same_state(d, ref));
}

TEST_CASE("distributed.partition: transfer-aware owners equal one process bit for bit") {
  // OwnerChoice::transfer_aware on the flat buffer: the owners assign_owners_with_transfers
  // gives for the default cost model and the elements each rank holds (the test's own count from
  // the bounds), and modelled_step's figures for them; dear transfers keep every gathered
  // matrix where most of it lies. The trajectory and states are one process's.
  const auto labels = propose_labels(specs());
  auto ref = optim::partition(specs(), labels, route("muon", make_muon()), route("adamw", make_adamw()));
  REQUIRE(ref.init());
  const std::vector<std::vector<index_t>> bounds = flat_buffer_bounds();
  auto make = [&](distributed::OwnerChoice choice, double per_float) {
    auto d = distributed::distributed_partition(world(), specs(), labels, route("muon", make_muon()),
                                                route("adamw", make_adamw()));
    d.set_flat_bounds(bounds);
    d.set_owner_choice(choice);
    d.set_transfer_cost(per_float);
    return d;
  };
  const int n = world().size();
  auto d = make(distributed::OwnerChoice::transfer_aware, 50.0);
  REQUIRE(d.init());
  std::vector<double> costs;
  std::vector<std::vector<index_t>> held(specs().size());
  for (std::size_t i = 0; i < specs().size(); ++i) {
    const bool matrix = labels[i] == "muon";
    costs.push_back(d.by_rows(i) ? 0.0 : distributed::default_cost(flatten(specs()[i].shape), matrix));
    if (!bounds[i].empty() && !d.by_rows(i))
      for (int r = 0; r < n; ++r)
        held[i].push_back(bounds[i][std::size_t(r) + 1] - bounds[i][std::size_t(r)]);
  }
  std::vector<int> want = distributed::assign_owners_with_transfers(costs, n, held, 50.0);
  for (std::size_t i = 0; i < want.size(); ++i)
    if (d.by_rows(i)) want[i] = -1;
  CHECK(d.owners() == want);
  const distributed::ModelledStep model = distributed::modelled_step(costs, n, want, held, 50.0);
  CHECK(d.modelled().work == model.work);
  CHECK(d.modelled().exchange == model.exchange);
  auto dear = make(distributed::OwnerChoice::transfer_aware, 1e12);
  REQUIRE(dear.init());
  for (std::size_t i = 0; i < held.size(); ++i)
    if (!held[i].empty()) {
      CAPTURE(i);
      const auto o = static_cast<std::size_t>(dear.owners()[i]);
      CHECK(held[i][o] == *std::max_element(held[i].begin(), held[i].end()));
    }
  // A cost per pair of ranks: the owners and model of assign_owners_with_transfers for that
  // matrix (rank 0's links dear, the others cheap); the matrix 50 everywhere gives the owners of
  // the one rate 50.
  distributed::TransferCosts pairs = distributed::TransferCosts::uniform(n, 5.0);
  for (int r = 1; r < n; ++r) {
    pairs.per_pair[std::size_t(r)] = 500.0;                   // 0 → r
    pairs.per_pair[std::size_t(r) * std::size_t(n)] = 500.0;  // r → 0
  }
  auto paired = make(distributed::OwnerChoice::transfer_aware, 50.0);
  paired.set_transfer_costs(pairs);
  REQUIRE(paired.init());
  std::vector<int> want_pairs = distributed::assign_owners_with_transfers(costs, n, held, pairs);
  for (std::size_t i = 0; i < want_pairs.size(); ++i)
    if (paired.by_rows(i)) want_pairs[i] = -1;
  CHECK(paired.owners() == want_pairs);
  CHECK(paired.modelled().exchange == distributed::modelled_step(costs, n, want_pairs, held, pairs).exchange);
  auto uniform = make(distributed::OwnerChoice::transfer_aware, 1.0);
  uniform.set_transfer_costs(distributed::TransferCosts::uniform(n, 50.0));
  REQUIRE(uniform.init());
  CHECK(uniform.owners() == d.owners());
  Model m(specs());
  Local loc(d, m);
  along(ref, d, m, loc, 0, 3);
  CHECK(same_state(d, ref));
  Model mp(specs());
  Local lp(paired, mp);
  auto ref2 = optim::partition(specs(), labels, route("muon", make_muon()), route("adamw", make_adamw()));
  REQUIRE(ref2.init());
  along(ref2, paired, mp, lp, 0, 2);
  CHECK(same_state(paired, ref2));
  // Refusals, on every rank: a transfer cost that is negative or not finite, or not the same
  // on every rank; a cost model whose values differ between the ranks (other owners).
  auto refused = [&](auto set, const char* says) {
    auto f = make(distributed::OwnerChoice::transfer_aware, 50.0);
    set(f);
    const StepReport r = f.init();
    CHECK(r.status == Status::invalid_argument);
    CHECK_MESSAGE(std::string(r.message).find(says) != std::string::npos, r.message);
    CHECK(!f.initialized());
  };
  refused([](auto& f) { f.set_transfer_cost(-1.0); }, "finite and >= 0");
  refused([](auto& f) { f.set_transfer_cost(std::numeric_limits<double>::quiet_NaN()); }, "finite and >= 0");
  refused([](auto& f) { f.set_transfer_cost(std::numeric_limits<double>::infinity()); }, "finite and >= 0");
  refused([n](auto& f) { f.set_transfer_costs(distributed::TransferCosts::uniform(n + 1, 1.0)); },
          "another number of ranks");
  if (n > 1) {
    refused([n](auto& f) { f.set_transfer_costs(distributed::TransferCosts::uniform(n, -1.0)); },
            "finite and >= 0");
    refused(
        [n](auto& f) {
          f.set_transfer_costs(distributed::TransferCosts::uniform(n, world().rank() == 1 ? 51 : 50));
        },
        "transfer cost");
    refused([](auto& f) { f.set_transfer_cost(world().rank() == 1 ? 51.0 : 50.0); }, "transfer cost differ");
    refused(
        [](auto& f) {
          f.set_owner_choice(world().rank() == 1 ? distributed::OwnerChoice::balanced
                                                 : distributed::OwnerChoice::transfer_aware);
        },
        "owner choice");
    refused(
        [](auto& f) {
          // Rank 1 prices every parameter at 0 (all owned by rank 0, the least loaded on every
          // tie), the others by their size (spread over the ranks).
          f.set_cost_model([](const ParamSpec& p, const std::string&) {
            return world().rank() == 1 ? 0.0 : double(flatten(p.shape).size());
          });
        },
        "owners differ");
  }
}

TEST_CASE("distributed.transfer_cost: measured the same on every rank") {
  // The calibration of OwnerChoice::transfer_aware: positive and agreed with more than one rank,
  // 0 on one; −1 (on every rank) for arguments that differ between the ranks or are out of range.
  const double c = distributed::measure_transfer_cost(world(), 64, 1 << 12, 1);
  std::int64_t bits = 0;
  std::memcpy(&bits, &c, sizeof bits);
  std::int64_t most = bits;
  world().allreduce_max(&most, 1);
  CHECK(world().allreduce_min(bits) == most);
  if (world().size() > 1)
    CHECK(c > 0.0);
  else
    CHECK(c == 0.0);
  CHECK(distributed::measure_transfer_cost(world(), 1, 16, 1) == -1.0);
  CHECK(distributed::measure_transfer_cost(world(), 64, std::int64_t(1) << 31, 1) == -1.0);
  CHECK(distributed::measure_transfer_cost(world(), 64, world().rank() == 0 ? 16 : 32, 1) ==
        (world().size() > 1 ? -1.0 : 0.0));
  // Per pair: the same matrix on every rank, positive off the diagonal with more than one rank,
  // usable by set_transfer_costs; refused (ranks 0) for arguments that differ or are out of range.
  const int n = world().size();
  const distributed::TransferCosts pairs = distributed::measure_transfer_costs(world(), 64, 1 << 12, 1);
  REQUIRE(pairs.check() == nullptr);
  REQUIRE(pairs.ranks == n);
  std::vector<std::int64_t> mine(pairs.per_pair.size()), most_bits;
  std::memcpy(mine.data(), pairs.per_pair.data(), mine.size() * sizeof(double));
  most_bits = mine;
  world().allreduce_max(most_bits.data(), most_bits.size());
  CHECK(mine == most_bits);  // every rank's bits are the largest: all equal
  for (std::size_t a = 0; a < std::size_t(n); ++a)
    for (std::size_t b = 0; b < std::size_t(n); ++b)
      CHECK((a == b ? pairs(a, b) == 0.0 : pairs(a, b) > 0.0));
  CHECK(distributed::measure_transfer_costs(world(), 64, std::int64_t(1) << 31, 1).ranks == 0);
  CHECK(distributed::measure_transfer_costs(world(), 64, world().rank() == 0 ? 16 : 32, 1).ranks ==
        (n > 1 ? 0 : 1));
}

TEST_CASE(
    "distributed.split: an exhausted heap on one rank fails init on every rank, then steps as one process") {
  // Finding 80: SplitPartition allocated its pieces' copies after the partition's collective
  // init, outside any handler. The last rank's heap refuses its k-th allocation, k = 1, 2, …:
  // every rank must fail with the same status (refusal_met), none may throw, and no rank may be
  // left initialised to wait at a step for the failed one. Then an init on every rank succeeds
  // and the cut parameters step as one process's.
  if (sweep_needs_two_ranks()) return;
  const SplitLayout layout = cut_layout();
  REQUIRE_MESSAGE(layout, layout.message());
  const std::vector<ParamSpec>& ps = layout.params();
  const auto labels = propose_labels(layout.pieces());
  const bool here = world().rank() == world().size() - 1;
  const auto make = [&] {
    return split_partition(
        layout, distributed::distributed_partition(world(), layout.pieces(), labels,
                                                   route("muon", make_muon()), route("adamw", make_adamw())));
  };
  const int refusals = refuse_init_allocations(make, here);
  MESSAGE("split init: " << refusals << " allocations of the last rank refused in turn");
  CHECK(refusals > 0);
  auto ref = split_partition(layout, optim::partition(layout.pieces(), labels, route("muon", make_muon()),
                                                      route("adamw", make_adamw())));
  REQUIRE(ref.init());
  auto d = make();
  REQUIRE(d.init());
  Model m(ps), mine(ps);
  for (int t = 0; t < 2; ++t) {
    m.gradients(t);
    mine.gradients(t);
    REQUIRE(ref.step(Model::ptrs(m.w), Model::ptrs(m.g)));
    REQUIRE(d.step(Model::ptrs(mine.w), Model::ptrs(mine.g)));
  }
  for (std::size_t i = 0; i < ps.size(); ++i)
    CHECK(std::memcmp(m.w[i].data(), mine.w[i].data(), m.w[i].size() * sizeof(float)) == 0);
}

TEST_CASE("distributed.split: row- flat- and column-sharded fused parameters equal one process") {
  // Sharded fused parameters, cut: each rank holds rows (FSDP by dim 0), a run of elements (a
  // flat buffer: ZeRO, Megatron's distributed optimizer) or a band of columns of every row
  // (tensor parallelism of an (in, out) kernel) of the fused QKV (row, grouped and column
  // cuts), of an expert stack and of a bias, and passes only those (null when none);
  // SplitPartition lays each piece out as its rows, elements or columns fall and the
  // distributed partition gathers it to its owner. Torch.chunk row shards, uneven ones (ranks
  // with none), Megatron's buffer (reversed, aligned, cut into equal parts: runs begin inside
  // rows), uneven runs, torch.chunk and uneven column bands, and the three kinds mixed, against
  // the single-process SplitPartition on the whole arrays, bit for bit.
  const SplitLayout layout = cut_layout();
  REQUIRE_MESSAGE(layout, layout.message());
  const std::vector<ParamSpec>& ps = layout.params();
  const auto labels = propose_labels(layout.pieces());
  const int n = world().size(), me = world().rank();
  enum Kind { chunk_rows, uneven_rows, megatron_runs, uneven_runs, chunk_columns, uneven_columns, mixed };
  for (int kind :
       {chunk_rows, uneven_rows, megatron_runs, uneven_runs, chunk_columns, uneven_columns, mixed}) {
    CAPTURE(kind);
    // Row, element and column bounds per parameter (the embedding replicated, but in the buffer).
    std::vector<std::vector<index_t>> rows(ps.size()), runs(ps.size()), cols(ps.size());
    std::vector<index_t> sizes;
    for (const ParamSpec& p : ps)
      sizes.push_back(flatten(p.shape).size());
    if (kind == megatron_runs) runs = distributed::reversed_flat_buffer(sizes, 1, n).bounds;
    for (std::size_t i = 1; kind != megatron_runs && i < ps.size(); ++i) {
      const index_t r = flatten(ps[i].shape).rows, c = flatten(ps[i].shape).cols;
      if (kind == chunk_rows) rows[i] = distributed::chunk_bounds(r, n);
      if (kind == uneven_rows || (kind == mixed && i % 3 == 1)) rows[i] = uneven_bounds(r);
      if (kind == chunk_columns) cols[i] = distributed::chunk_bounds(c, n);
      if (kind == uneven_columns || (kind == mixed && i % 3 == 0)) cols[i] = uneven_bounds(c);
      if (kind == uneven_runs || (kind == mixed && i % 3 == 2)) {
        runs[i] = uneven_bounds(sizes[i]);
        for (std::size_t k = 1; k + 1 < runs[i].size(); ++k)  // one element on: inside rows
          runs[i][k] += runs[i][k] < sizes[i] ? 1 : 0;
      }
    }
    // The cases meant: uneven runs cut h0.c_attn (8 × 12, cut by columns) inside a row, and the
    // buffer's parts begin inside a row of some parameter.
    if (n > 1 && kind == uneven_runs) CHECK(runs[2][1] % 12 != 0);
    bool inside_a_row = false;
    for (std::size_t i = 0; i < ps.size(); ++i)
      for (std::size_t k = 1; k + 1 < runs[i].size(); ++k)
        inside_a_row = inside_a_row || (runs[i][k] % flatten(ps[i].shape).cols != 0 && runs[i][k] < sizes[i]);
    if (n > 1 && kind == megatron_runs) CHECK(inside_a_row);
    // Rank r's array of parameter i, cut from the whole array: its rows, run or band.
    auto held_by = [&](const std::vector<float>& whole, std::size_t i, int r) {
      const auto at = static_cast<std::size_t>(r);
      const BlockShape m = flatten(ps[i].shape);
      if (!cols[i].empty()) {
        std::vector<float> band;
        for (index_t row = 0; row < m.rows; ++row)
          band.insert(band.end(), whole.begin() + row * m.cols + cols[i][at],
                      whole.begin() + row * m.cols + cols[i][at + 1]);
        return band;
      }
      index_t first = 0, last = sizes[i];
      if (!rows[i].empty()) first = rows[i][at] * m.cols, last = rows[i][at + 1] * m.cols;
      if (!runs[i].empty()) first = runs[i][at], last = runs[i][at + 1];
      return std::vector<float>(whole.begin() + first, whole.begin() + last);
    };
    auto ref = split_partition(layout, optim::partition(layout.pieces(), labels, route("muon", make_muon()),
                                                        route("adamw", make_adamw())));
    REQUIRE(ref.init());
    auto d = split_partition(
        layout, distributed::distributed_partition(world(), layout.pieces(), labels,
                                                   route("muon", make_muon()), route("adamw", make_adamw())));
    d.set_source_rows(rows);
    d.set_source_elements(runs);
    d.set_source_columns(cols);
    REQUIRE(d.init());
    CHECK(d.signature() == ref.signature());
    // This rank's part of every fused array.
    auto held = [&](const std::vector<float>& whole, std::size_t i) { return held_by(whole, i, me); };
    Model m(ps);
    std::vector<std::vector<float>> w, g;
    for (std::size_t i = 0; i < ps.size(); ++i)
      w.push_back(held(m.w[i], i));
    for (int t = 0; t < 3; ++t) {
      CAPTURE(t);
      m.gradients(t);
      g.clear();
      for (std::size_t i = 0; i < ps.size(); ++i)
        g.push_back(held(m.g[i], i));
      const std::vector<std::vector<float>> g0 = g;
      std::vector<float*> wp = Model::ptrs(w), gp = Model::ptrs(g);
      for (std::size_t i = 0; i < ps.size(); ++i)
        if (w[i].empty()) wp[i] = gp[i] = nullptr;
      REQUIRE(ref.step(Model::ptrs(m.w), Model::ptrs(m.g)));
      REQUIRE(d.step(wp, gp));
      for (std::size_t i = 0; i < ps.size(); ++i) {
        CAPTURE(ps[i].name);
        CHECK(held(m.w[i], i) == w[i]);  // float ==: bit for bit (no NaN here)
        CHECK(g0[i] == g[i]);            // gradients read, copies scattered back unchanged
      }
    }
    CHECK(same_state(d.partition(), ref.partition()));
    // A null array on the last rank only, for the first cut parameter of which it holds
    // elements: every rank refuses the step (nobody is left in a collective), naming the fused
    // parameter, and no array changes.
    std::size_t gap = 1;
    while (gap + 1 < ps.size() && held_by(m.w[gap], gap, n - 1).empty())
      ++gap;
    std::vector<float*> wp = Model::ptrs(w), gp = Model::ptrs(g);
    for (std::size_t i = 0; i < ps.size(); ++i)
      if (w[i].empty()) wp[i] = gp[i] = nullptr;
    if (me == n - 1) wp[gap] = nullptr;
    const StepReport refused = d.step(wp, gp);
    CHECK(refused.status == Status::invalid_argument);
    CHECK(refused.bad_param == static_cast<std::ptrdiff_t>(gap));
    for (std::size_t i = 0; i < ps.size(); ++i)
      CHECK(held(m.w[i], i) == w[i]);
  }
  // Bounds of the wrong length, two kinds for one parameter, and a partition that cannot take
  // shards, are refused.
  auto d = split_partition(
      layout, distributed::distributed_partition(world(), layout.pieces(), labels, route("muon", make_muon()),
                                                 route("adamw", make_adamw())));
  std::vector<std::vector<index_t>> bad(ps.size());
  bad[1] = {0, 12, 12, 12, 12, 12, 12};
  d.set_source_rows(bad);
  StepReport r = d.init();
  CHECK(r.status == Status::invalid_argument);
  CHECK_MESSAGE(std::string(r.message).find("the row bounds of 'h0.qkv'") != std::string::npos, r.message);
  d.set_source_rows({{0, 7}});
  CHECK(d.init().status == Status::invalid_argument);  // one entry per parameter
  d.set_source_rows({});
  bad[1] = {0, 12 * 8 + 1};
  bad[1].insert(bad[1].end(), static_cast<std::size_t>(world().size() - 1), 12 * 8 + 1);
  d.set_source_elements(bad);
  r = d.init();
  CHECK(r.status == Status::invalid_argument);
  CHECK_MESSAGE(std::string(r.message).find("the element bounds of 'h0.qkv'") != std::string::npos,
                r.message);
  CHECK(r.bad_param == 1);
  d.set_source_elements({{0, 7}});
  r = d.init();
  CHECK(r.status == Status::invalid_argument);
  CHECK(std::string(r.message).find("set_source_elements needs one entry per parameter") !=
        std::string::npos);
  std::vector<std::vector<index_t>> both(ps.size());
  both[2] = distributed::chunk_bounds(8, world().size());
  d.set_source_rows(both);
  both[2] = distributed::chunk_bounds(8 * 12, world().size());
  d.set_source_elements(both);
  r = d.init();
  CHECK(r.status == Status::invalid_argument);
  CHECK_MESSAGE(std::string(r.message).find("'h0.c_attn' has row and element bounds") != std::string::npos,
                r.message);
  CHECK(r.bad_param == 2);
  d.set_source_elements({});
  d.set_source_columns(both);  // elements' bounds as columns: 96 is not h0.c_attn's 12 columns
  r = d.init();
  CHECK(r.status == Status::invalid_argument);
  CHECK_MESSAGE(std::string(r.message).find("'h0.c_attn' has row and column bounds") != std::string::npos,
                r.message);
  d.set_source_rows({});
  r = d.init();
  CHECK(r.status == Status::invalid_argument);
  CHECK_MESSAGE(std::string(r.message).find("the column bounds of 'h0.c_attn'") != std::string::npos,
                r.message);
  d.set_source_columns({});
  if (world().size() > 1) {  // wrong on the last rank only: refused everywhere, nobody waits
    std::vector<std::vector<index_t>> some(ps.size());
    some[1] = distributed::chunk_bounds(12, world().size());
    if (world().rank() == world().size() - 1) some[1].back() = 11;
    d.set_source_rows(some);
    r = d.init();
    CHECK(r.status == Status::invalid_argument);
    CHECK(!d.partition().initialized());
  }
  auto single = split_partition(layout, optim::partition(layout.pieces(), labels, route("muon", make_muon()),
                                                         route("adamw", make_adamw())));
  single.set_source_rows(std::vector<std::vector<index_t>>(ps.size()));
  r = single.init();
  CHECK(r.status == Status::invalid_argument);
  CHECK(std::string(r.message).find("need a distributed partition") != std::string::npos);
  single.set_source_rows({});
  single.set_source_elements(std::vector<std::vector<index_t>>(ps.size()));
  CHECK(single.init().status == Status::invalid_argument);
}

TEST_CASE("distributed.partition: global clipping equals one process bit for bit") {
  const auto labels = propose_labels(specs());
  auto ref = optim::partition(specs(), labels, route("muon", make_muon()), route("adamw", make_adamw()));
  ref.set_global_clip(2.0);
  REQUIRE(ref.init());
  auto d = distributed::distributed_partition(world(), specs(), labels, route("muon", make_muon()),
                                              route("adamw", make_adamw()));
  d.set_global_clip(2.0);
  REQUIRE(d.init());
  Model m(specs());
  Local loc(d, m);
  for (int t = 0; t < 2; ++t) {
    m.gradients(t);
    loc.gradients(d, m);
    CHECK(d.step(Model::ptrs(loc.w), Model::ptrs(loc.g)).status == Status::ok);
    REQUIRE(ref.step(Model::ptrs(m.w), Model::ptrs(m.g)));
    CHECK(same_bits(d, m, loc));
  }
  auto s = distributed::distributed_partition(world(), specs(), labels, route("muon", make_muon()),
                                              route("adamw", make_adamw()));
  s.set_layouts(layouts(true));
  s.set_global_clip(2.0);
  CHECK(s.init().status == Status::invalid_argument);  // documented: replicated layouts only
}

TEST_CASE("distributed.partition: a NaN on one rank refuses the step on every rank") {
  for (NonFinitePolicy policy : {NonFinitePolicy::error, NonFinitePolicy::skip}) {
    for (bool sharded : {false, true}) {
      CAPTURE(sharded);
      const auto labels = propose_labels(specs());
      auto ref = optim::partition(specs(), labels, route("muon", make_muon()), route("adamw", make_adamw()));
      REQUIRE(ref.init());
      auto d = distributed::distributed_partition(world(), specs(), labels, route("muon", make_muon()),
                                                  route("adamw", make_adamw()));
      d.set_layouts(layouts(sharded));
      d.set_non_finite_policy(policy);
      REQUIRE(d.init());
      Model m(specs());
      Local loc(d, m);
      const int last = world().size() - 1;
      for (int t = 0; t < 3; ++t) {
        m.gradients(t);
        loc.gradients(d, m);
        if (t == 1) {
          // Only the last rank sees a NaN, in parameter 4 ("tall": a shard of it when sharded,
          // the last rank holds rows of it when ranks ≤ 4).
          if (world().rank() == last && !loc.g[4].empty()) loc.g[4].back() = std::nanf("");
          const StepReport r = d.step(Model::ptrs(loc.w), Model::ptrs(loc.g));
          if (policy == NonFinitePolicy::error) {
            CHECK(r.status == Status::non_finite_input);
          } else {
            CHECK(r.status == Status::ok);
            CHECK(r.skipped);
          }
          CHECK(r.bad_param == 4);
          CHECK(same_bits(d, m, loc));  // nothing changed anywhere
          continue;                     // the reference never sees this step
        }
        CHECK(d.step(Model::ptrs(loc.w), Model::ptrs(loc.g)).status == Status::ok);
        REQUIRE(ref.step(Model::ptrs(m.w), Model::ptrs(m.g)));
        CHECK(same_bits(d, m, loc));
      }
      CHECK(same_state(d, ref));
      CHECK(d.skipped_steps() == (policy == NonFinitePolicy::skip ? 1 : 0));
    }
  }
}

TEST_CASE("distributed.partition: heap exhaustion on one rank fails init() and the step on every rank") {
  // The last rank refuses its 1st, 2nd, … host allocation (support/allocations.hpp) in init(),
  // then in a step, until an attempt meets no refusal on it. Every rank must return (none left
  // waiting in a collective: a hang fails the test by ctest's timeout), no exception may leave
  // the call, and every rank must report the same status; a refused step leaves every rank's
  // arrays and states as they were, and the attempt without a refusal equals one process. Muon
  // iterates with QDWH here, and its chain ends in test::AllocatesPerCall, which allocates a host
  // vector per call (the library's kernels allocate none in a steady state since 2026-12-04,
  // docs/reliability.md "Heap exhaustion"; before, QDWH's did): so the step's refusals happen
  // inside an owner's local step. Without prechecks, so that every route's state is copied
  // (strict all or nothing on any build).
  if (sweep_needs_two_ranks()) return;
  const auto labels = propose_labels(specs());
  const int last = world().size() - 1;
  const bool here = world().rank() == last;
  const auto muon_allocating = [] { return test::ending_in_allocation(make_muon(Precision::fp32, true)); };
  const auto make = [&] {
    auto d = distributed::distributed_partition(world(), specs(), labels, route("muon", muon_allocating()),
                                                route("adamw", make_adamw()));
    d.set_layouts(layouts(true));
    d.set_prechecks(false);
    return d;
  };
  const int init_refusals = refuse_init_allocations(make, here);
  int step_refusals = 0;
  auto ref =
      optim::partition(specs(), labels, route("muon", muon_allocating()), route("adamw", make_adamw()));
  REQUIRE(ref.init());
  auto d = make();
  REQUIRE(d.init());
  Model m(specs());
  Local loc(d, m);
  after_first_step(ref, d, m, loc);
  const auto args = loc.arguments();  // (not a structured binding: the lambdas below capture it)
  const std::vector<float*>&wp = args.first, &gp = args.second;
  io::FieldSet before;
  io::FieldCollector collect{&before};
  d.visit_local(collect);
  const auto w_before = loc.w;
  for (std::int64_t k = 1;; ++k) {
    CAPTURE(k);
    REQUIRE(k < 100000);
    const auto a = schatten::test::refusing_allocation_if(here, k, [&] { return d.step(wp, gp); });
    REQUIRE_FALSE(a.threw);
    const bool refused = refusal_met(a.result.status, a.refused);
    if (a.result) {  // no refusal (nothing in these routes' steps absorbs one): the one-process step
      CHECK_FALSE(refused);
      REQUIRE(ref.step(Model::ptrs(m.w), Model::ptrs(m.g)));
      CHECK(same_bits(d, m, loc));
      CHECK(same_state(d, ref));
      break;
    }
    ++step_refusals;
    CHECK(a.result.status == Status::out_of_memory);
    CHECK(loc.w == w_before);
    io::FieldSet after;
    io::FieldCollector again{&after};
    d.visit_local(again);
    CHECK(after == before);
  }
  if (here)
    MESSAGE("refusals on the last rank: " << init_refusals << " in init(), " << step_refusals
                                          << " in a step");
  CHECK(world().allreduce_min(init_refusals) > 0);
  CHECK(step_refusals > 0);  // the last rank owns Muon parameters on 2 and 4 ranks
}

TEST_CASE("distributed.partition: a rule failing on its owner refuses the step on every rank") {
  // Stochastic rounding draws its bits from each element's value and the step, never from where
  // the element lies, so the row-sharded AdamW stepped where its shards lie rounds as one process.
  // No rank snapshots its states: each runs only the routes that may fail before the agreement
  // (optim::Partition::step_fallible), and puts those back (step_undo) when another rank failed.
  // With QDWH, Muon's route is such a route (not prechecked), so the other ranks' Muon states
  // advance and must be put back; with Polar Express it is prechecked and runs after the
  // agreement, as AdamW's does.
  for (const bool qdwh : {false, true})
    for (const StateStorage storage :
         {StateStorage(Precision::fp32), StateStorage(Precision::bf16), StateStorage::bf16_stochastic()}) {
      CAPTURE(qdwh);
      CAPTURE(std::string(to_string(storage)));
      auto labels = propose_labels(specs());
      labels[8] = "fragile";  // "gain"
      auto ref = optim::partition(specs(), labels, route("muon", make_muon(storage, qdwh)),
                                  route("adamw", make_adamw(storage)), route("fragile", test::FailOnMagic{}));
      REQUIRE(ref.init());
      auto d = distributed::distributed_partition(
          world(), specs(), labels, route("muon", make_muon(storage, qdwh)),
          route("adamw", make_adamw(storage)), route("fragile", test::FailOnMagic{}));
      d.set_layouts(layouts(true));
      REQUIRE(d.init());
      Model m(specs());
      Local loc(d, m);
      for (int t = 0; t < 3; ++t) {
        m.gradients(t);
        if (t == 1) m.g[8][0] = test::FailOnMagic::magic;
        loc.gradients(d, m);
        const StepReport r = d.step(Model::ptrs(loc.w), Model::ptrs(loc.g));
        if (t == 1) {
          CHECK(r.status == Status::breakdown);
          CHECK(r.bad_param == 8);
          CHECK(std::string(r.message).find("gain") != std::string::npos);  // the owner's message
          CHECK(same_bits(d, m, loc));
          continue;
        }
        CHECK(r.status == Status::ok);
        REQUIRE(ref.step(Model::ptrs(m.w), Model::ptrs(m.g)));
        CHECK(same_bits(d, m, loc));
      }
      CHECK(same_state(d, ref));  // every owner's states were rolled back at the failed step
    }
}

TEST_CASE("distributed.partition: unusable hyper-parameters are refused at init on every rank") {
  // The local partitions refuse the route (rule.hpp, check_of); the ranks agree on the refusal,
  // also those that own no parameter of that route.
  optim::AdamWOptions bad;
  bad.b2 = 1.0;
  auto d = distributed::distributed_partition(world(), specs(), propose_labels(specs()),
                                              route("muon", make_muon()), route("adamw", optim::adamw(bad)));
  d.set_layouts(layouts(true));
  const StepReport r = d.init();
  CHECK(r.status == Status::invalid_argument);
  CHECK(std::string(r.message).find("route 'adamw': adam: b2 must be in [0, 1)") != std::string::npos);
}

/// Collective: whether `r` has the same status, bad_param and message on every rank.
bool same_report_everywhere(const StepReport& r) {
  const auto h = static_cast<std::int64_t>(std::hash<std::string>{}(r.message) >> 1);
  bool same = true;
  for (const std::int64_t v :
       {static_cast<std::int64_t>(r.status), static_cast<std::int64_t>(r.bad_param), h})
    same = same && world().allreduce_min(v) == v && -world().allreduce_min(-v) == v;
  return same;
}

TEST_CASE("distributed.partition: hostile steps get one process's status, also under the skip policy") {
  // Found by a fuzzer of the distributed step (2026-12-07): under the skip policy a NaN weight
  // beside a NaN gradient was skipped for ever with ok (the local partitions, which scan the
  // parameters, were never reached), a gradient beyond its route's max_gradient was refused
  // (out_of_range) where one process skips it, and with two bad inputs the index differed. Each
  // case, three times over (a skip must not repeat for ever): the status, skip flag, index and
  // skip count of a one-process optim::Partition over the same arrays.
  const float nan = std::numeric_limits<float>::quiet_NaN();
  struct Case {
    const char* what;
    NonFinitePolicy policy;
    float grad_a, weight_a, grad_m;
  };
  const Case cases[] = {{"skip: grad a 1e20 (beyond AdamW's 2^63)", NonFinitePolicy::skip, 1e20f, 0.5f, 0.1f},
                        {"skip: weight a NaN, grad m NaN", NonFinitePolicy::skip, 0.1f, nan, nan},
                        {"skip: grad m NaN", NonFinitePolicy::skip, 0.1f, 0.5f, nan},
                        {"error: grad a 1e20, grad m NaN", NonFinitePolicy::error, 1e20f, 0.5f, nan},
                        {"error: weight a NaN, grad m NaN", NonFinitePolicy::error, 0.1f, nan, nan},
                        {"error: grad a 1e20", NonFinitePolicy::error, 1e20f, 0.5f, 0.1f}};
  const std::vector<ParamSpec> ps = {{"a", {4, 3}}, {"m", {6, 4}}};
  const std::vector<std::string> labels = {"adamw", "muon"};
  for (const Case& c : cases) {
    CAPTURE(std::string(c.what));
    auto ref = optim::partition(ps, labels, route("adamw", make_adamw()), route("muon", make_muon()));
    ref.set_non_finite_policy(c.policy);
    auto d = distributed::distributed_partition(world(), ps, labels, route("adamw", make_adamw()),
                                                route("muon", make_muon()));
    d.set_non_finite_policy(c.policy);
    REQUIRE(ref.init());
    REQUIRE(d.init());
    for (int t = 0; t < 3; ++t) {
      std::vector<float> wa(12, 0.5f), wm(24, 0.25f), ga(12, 0.1f), gm(24, 0.1f);
      wa[3] = c.weight_a;
      ga[2] = c.grad_a;
      gm[5] = c.grad_m;
      std::vector<float> wa2 = wa, wm2 = wm, ga2 = ga, gm2 = gm;
      const StepReport one = ref.step({wa.data(), wm.data()}, {ga.data(), gm.data()});
      const StepReport r = d.step({wa2.data(), wm2.data()}, {ga2.data(), gm2.data()});
      CHECK(same_report_everywhere(r));
      CHECK(r.status == one.status);
      CHECK(r.skipped == one.skipped);
      CHECK(r.bad_param == one.bad_param);
      CHECK(d.skipped_steps() == ref.skipped_steps());
    }
  }
}

TEST_CASE("distributed.partition: settings that differ between the ranks are refused by init() everywhere") {
  // What only the last rank sets otherwise: plan() would refuse there alone (a label too many, a
  // label no route serves, a clip with shards, a shape the row bounds do not fit) and leave the
  // others waiting, or the step would exchange arrays of other sizes, or step with other
  // hyper-parameters, another policy, or other batching or prechecks (a failed step copying states
  // back on some ranks only). Refused by init() on every rank, saying what differs.
  // On one rank there is nothing to differ from: each refuses for its own reason or passes.
  const bool odd = world().rank() == world().size() - 1, several = world().size() > 1;
  struct Variant {
    const char* name;
    const char* differs;  ///< what the message names (several ranks)
    bool refused_alone;   ///< refused on one rank too
  };
  const Variant variants[] = {{"label too many", "the labels", true},
                              {"label no route serves", "the labels", true},
                              {"clip with row shards", "the global clip", true},
                              {"shape the row bounds do not fit", "names or shapes", true},
                              {"replicated shape", "names or shapes", false},
                              {"learning rate", "the routes", false},
                              {"batching", "batching, prechecks or copies", false},
                              {"batch group", "batching, prechecks or copies", false},
                              {"prechecks", "batching, prechecks or copies", false},
                              {"copies", "batching, prechecks or copies", false},
                              {"non-finite policy", "the non-finite policy", false}};
  for (const Variant& v : variants) {
    CAPTURE(v.name);
    const std::string which = v.name;
    std::vector<ParamSpec> ps = specs();
    auto labels = propose_labels(ps);
    if (odd && which == "label too many") labels.push_back("adamw");
    if (odd && which == "label no route serves") labels[3] = "lion";
    if (odd && (which == "shape the row bounds do not fit" || which == "replicated shape"))
      ps[1].shape = {14, 8};
    AdamWOptions fast;
    fast.lr = Schedule::constant(odd && which == "learning rate" ? 0.2 : 0.02);
    auto d = distributed::distributed_partition(world(), ps, labels, route("muon", make_muon()),
                                                route("adamw", optim::adamw(fast)));
    if (which == "clip with row shards" || which == "shape the row bounds do not fit") {
      d.set_layouts(layouts(true));
      std::vector<std::vector<index_t>> bounds(ps.size());
      bounds[1] = distributed::chunk_bounds(12, world().size());
      d.set_row_bounds(bounds);
    }
    if (odd && which == "clip with row shards") d.set_global_clip(1.0);
    if (odd && which == "non-finite policy") d.set_non_finite_policy(NonFinitePolicy::skip);
    if (odd && which == "batching") d.set_batching(false);
    if (odd && which == "batch group") d.set_batching(true, 3);
    if (odd && which == "prechecks") d.set_prechecks(false);
    if (odd && which == "copies") d.set_copy_all_states(true);
    const StepReport r = d.init();
    CHECK(same_report_everywhere(r));
    if (several || v.refused_alone) {
      CHECK(r.status == Status::invalid_argument);
      CHECK_FALSE(d.initialized());
    } else {
      CHECK(r.status == Status::ok);
    }
    if (several) CHECK(std::string(r.message).find(v.differs) != std::string::npos);
  }
  // A failure of one rank's local partition (a negative dimension, refused where the parameter
  // is owned) reports the same parameter and message on every rank.
  std::vector<ParamSpec> ps = specs();
  ps[6].shape = {6, -3, 2, 2};
  auto d = distributed::distributed_partition(world(), ps, propose_labels(specs()),
                                              route("muon", make_muon()), route("adamw", make_adamw()));
  const StepReport r = d.init();
  CHECK(r.status == Status::invalid_argument);
  CHECK(r.bad_param == 6);
  CHECK(std::string(r.message).find("'conv'") != std::string::npos);
  CHECK(same_report_everywhere(r));
  // init(MemoryKind) (SplitPartition's): device memory named on one rank only.
  auto e = muon_adamw_distributed(false);
  const StepReport named = e.init(odd ? MemoryKind::device : MemoryKind::host);
  CHECK(named.status == Status::invalid_argument);
  CHECK(same_report_everywhere(named));
}

TEST_CASE("distributed.partition: duplicate names and unusable costs are refused by init() everywhere") {
  // Two parameters of one name would share their checkpoint fields (the file would not load):
  // refused as one process refuses them, also when different ranks own the two.
  for (const bool sharded : {false, true}) {
    CAPTURE(sharded);
    std::vector<ParamSpec> ps = specs();
    ps[2].name = "h0.w";
    auto ref =
        optim::partition(ps, propose_labels(ps), route("muon", make_muon()), route("adamw", make_adamw()));
    const StepReport one = ref.init();
    REQUIRE(one.status == Status::invalid_argument);
    auto d = distributed::distributed_partition(world(), ps, propose_labels(ps), route("muon", make_muon()),
                                                route("adamw", make_adamw()));
    d.set_layouts(layouts(sharded));
    const StepReport r = d.init();
    CHECK(r.status == Status::invalid_argument);
    CHECK(r.bad_param == one.bad_param);
    CHECK(std::string(r.message) == one.message);
    CHECK(same_report_everywhere(r));
  }
  // A cost model's NaN (LPT would place the parameter anywhere) or negative cost.
  for (const double bad : {std::nan(""), -1.0}) {
    auto d = distributed::distributed_partition(world(), specs(), propose_labels(specs()),
                                                route("muon", make_muon()), route("adamw", make_adamw()));
    d.set_cost_model([bad](const ParamSpec& p, const std::string&) { return p.name == "tall" ? bad : 1.0; });
    const StepReport r = d.init();
    CHECK(r.status == Status::invalid_argument);
    CHECK(r.bad_param == 4);
    CHECK(same_report_everywhere(r));
  }
}

TEST_CASE("distributed.partition: a rank's own refusal in step() is the step's refusal on every rank") {
  // Pointer lists of another length, a clip or a policy set since init() on one rank, a clip with
  // row shards: each was refused on its rank alone (the others waited in the step's
  // collectives, or read past a shard). Now every rank returns the same report, nothing moved.
  const bool odd = world().rank() == world().size() - 1, several = world().size() > 1;
  for (const bool sharded : {false, true})
    for (const char* what : {"short lists", "NaN clip on one rank", "NaN clip", "clip on one rank",
                             "policy on one rank", "clip"}) {
      CAPTURE(sharded);
      CAPTURE(what);
      const std::string which = what;
      MuonAdamw f(sharded);
      auto& ref = f.ref;
      auto& d = f.d;
      Model& m = f.m;
      Local& loc = *f.at;
      after_first_step(ref, d, m, loc);
      auto [wp, gp] = loc.arguments();
      const auto w_before = loc.w;
      if (odd && which == "short lists") wp.pop_back();
      if ((odd && which == "NaN clip on one rank") || which == "NaN clip") d.set_global_clip(std::nan(""));
      if (odd && which == "clip on one rank") d.set_global_clip(sharded ? 1.0 : 3.0);
      if (which == "clip") d.set_global_clip(1.0);
      if (odd && which == "policy on one rank") d.set_non_finite_policy(NonFinitePolicy::skip);
      const StepReport r = d.step(wp, gp);
      CHECK(same_report_everywhere(r));
      // Refused on one rank too: the lists, a NaN clip, a clip with row shards.
      const bool refused = which == "short lists" || which.find("NaN") != std::string::npos ||
                           (sharded && which.find("clip") != std::string::npos) ||
                           (several && which.find("one rank") != std::string::npos);
      if (refused) {
        CHECK(r.status == Status::invalid_argument);
        CHECK(r.bad_param == -1);
        CHECK(loc.w == w_before);
        continue;
      }
      CHECK(r.status == Status::ok);  // one rank, settings allowed: the single process's step
      if (which == "clip") ref.set_global_clip(1.0);
      if (which == "clip on one rank") ref.set_global_clip(3.0);
      REQUIRE(ref.step(Model::ptrs(m.w), Model::ptrs(m.g)));
      CHECK(same_bits(d, m, loc));
    }
}

TEST_CASE("distributed.checkpoint: an expected signature that differs on one rank is refused everywhere") {
  auto d = muon_adamw_distributed(true);
  REQUIRE(d.init());
  const std::string path = shared_path("signature_one_rank");
  io::CheckpointHeader h;
  h.signature = d.signature();
  std::string err;
  REQUIRE(distributed::save_checkpoint(path, d, h, &err) == Status::ok);
  Model m(specs());
  Local loc(d, m);
  CHECK(loc.step(d, m, 0).status == Status::ok);  // the states move on from the file's
  io::FieldSet before;
  io::FieldCollector collect{&before};
  d.visit_local(collect);
  const bool odd = world().rank() == world().size() - 1;
  io::CheckpointHeader got;
  const Status s = distributed::load_checkpoint(path, d, got, odd ? "adamw=other" : d.signature(), &err);
  CHECK(s == Status::invalid_argument);
  const StepReport as_report = optim::refusal(err.c_str(), -1, s);
  CHECK(same_report_everywhere(as_report));
  CHECK(err.find("signature differs") != std::string::npos);
  io::FieldSet after;
  io::FieldCollector again{&after};
  d.visit_local(again);
  CHECK(after == before);  // no rank loaded
  if (world().rank() == 0) std::filesystem::remove(path);
}

TEST_CASE("distributed.checkpoint: a swapped routing is refused on every rank") {
  // As io::load_checkpoint (Finding 109): the file records each parameter's route, and two
  // parameters that swap routes whose rules keep the same fields (muon, scion) are refused.
  const std::vector<ParamSpec> ps = {{"w1", {6, 4}}, {"w2", {6, 4}}};
  const auto make = [&](const char* l1, const char* l2) {
    return distributed::distributed_partition(world(), ps, {l1, l2}, route("a", optim::muon()),
                                              route("b", optim::scion()));
  };
  auto d = make("a", "b");
  REQUIRE(d.init());
  const std::string path = shared_path("routes");
  io::CheckpointHeader h;
  h.signature = d.signature();
  std::string err;
  REQUIRE(distributed::save_checkpoint(path, d, h, &err) == Status::ok);
  auto swapped = make("b", "a");
  REQUIRE(swapped.init());
  CHECK(swapped.signature() == d.signature());
  io::FieldSet before;
  io::FieldCollector collect{&before};
  swapped.visit_local(collect);
  io::CheckpointHeader got;
  const Status s = distributed::load_checkpoint(path, swapped, got, swapped.signature(), &err);
  CHECK(s == Status::invalid_argument);
  CHECK(same_report_everywhere(optim::refusal(err.c_str(), -1, s)));
  CHECK(err.find("parameter 'w1' takes route 'a' in the checkpoint, 'b' here") != std::string::npos);
  io::FieldSet after;
  io::FieldCollector again{&after};
  swapped.visit_local(again);
  CHECK(after == before);
  auto same = make("a", "b");
  REQUIRE(same.init());
  CHECK(distributed::load_checkpoint(path, same, got, same.signature(), &err) == Status::ok);
  // A single-process Partition reads the routes of a distributed save too.
  auto one = optim::partition(ps, {"b", "a"}, route("a", optim::muon()), route("b", optim::scion()));
  REQUIRE(one.init());
  CHECK(io::load_checkpoint(path, one, got, one.signature(), &err) == Status::invalid_argument);
  world().allreduce_min(std::int64_t(0));  // every rank has read the file before rank 0 removes it
  if (world().rank() == 0) std::filesystem::remove(path);
}

TEST_CASE("distributed.checkpoint: heap exhaustion on one rank fails save and load on every rank") {
  // The last rank refuses its 1st, 2nd, … host allocation (support/allocations.hpp) in a save,
  // then in a load, until an attempt meets no refusal on it. Every rank must return (none left
  // waiting in a collective: a hang fails the test by ctest's timeout), no exception may leave
  // the call, and every rank must report the same status; a refused load leaves every rank's
  // states as they were. The save that meets no refusal writes the single process's file, and
  // the load that meets none restores it.
  if (sweep_needs_two_ranks()) return;
  const bool here = world().rank() == world().size() - 1;
  MuonAdamw f(true);
  auto& ref = f.ref;
  auto& d = f.d;
  Model& m = f.m;
  Local& loc = *f.at;
  along(ref, d, m, loc, 0, 2);
  const std::string path = shared_path("heap_exhaustion");
  io::CheckpointHeader h;
  h.step = 2;
  int save_refusals = 0, load_refusals = 0;
  for (std::int64_t k = 1;; ++k) {
    CAPTURE(k);
    REQUIRE(k < 100000);
    std::string err;
    const auto a = schatten::test::refusing_allocation_if(
        here, k, [&] { return distributed::save_checkpoint(path, d, h, &err); });
    REQUIRE_FALSE(a.threw);
    if (!refusal_met(a.result, a.refused)) {
      REQUIRE(a.result == Status::ok);
      break;
    }
    ++save_refusals;
    if (a.result != Status::ok) CHECK(a.result == Status::out_of_memory);
  }
  io::FieldSet file;
  io::CheckpointHeader fh;
  REQUIRE(io::read_checkpoint(path, file, fh) == Status::ok);
  CHECK(file == io::capture(ref));
  CHECK(loc.step(d, m, 2).status == Status::ok);  // the states move on from the file's
  io::FieldSet before;
  io::FieldCollector collect{&before};
  d.visit_local(collect);
  for (std::int64_t k = 1;; ++k) {
    CAPTURE(k);
    REQUIRE(k < 100000);
    std::string err;
    io::CheckpointHeader got;
    const auto a = schatten::test::refusing_allocation_if(
        here, k, [&] { return distributed::load_checkpoint(path, d, got, {}, &err); });
    REQUIRE_FALSE(a.threw);
    if (!refusal_met(a.result, a.refused)) {
      REQUIRE(a.result == Status::ok);
      break;
    }
    ++load_refusals;
    if (a.result == Status::ok) {  // a refusal absorbed: loaded, the states now the file's
      before.clear();
      d.visit_local(collect);
      continue;
    }
    CHECK(a.result == Status::out_of_memory);
    io::FieldSet after;
    io::FieldCollector again{&after};
    d.visit_local(again);
    CHECK(after == before);
  }
  CHECK(same_state(d, ref));  // the file's states
  if (here)
    MESSAGE("refusals on the last rank: " << save_refusals << " in a save, " << load_refusals
                                          << " in a load");
  CHECK(world().allreduce_min(save_refusals) > 0);
  CHECK(world().allreduce_min(load_refusals) > 0);
  if (world().rank() == 0) std::filesystem::remove(path);
}

TEST_CASE("distributed.activations: accumulate_activations before init() is refused") {
  auto d = muon_adamw_distributed(false);
  const std::vector<float> x(4 * 8, 1.0f);
  CHECK(d.accumulate_activations("h0.w", MatrixRef<const float>(x.data(), 4, 8)) == Status::invalid_argument);
}

TEST_CASE("distributed.checkpoint: save on n ranks restores on n ranks and on one process bit for bit") {
  const auto labels = propose_labels(specs());
  const std::string path = shared_path("ckpt");
  auto make = [&] {
    auto d = distributed::distributed_partition(world(), specs(), labels, route("muon", make_muon()),
                                                route("adamw", make_adamw()));
    d.set_layouts(layouts(true));
    return d;
  };
  auto ref = optim::partition(specs(), labels, route("muon", make_muon()), route("adamw", make_adamw()));
  REQUIRE(ref.init());
  auto d = make();
  io::CheckpointHeader none;
  std::string early;
  CHECK(distributed::save_checkpoint(path, d, none, &early) == Status::invalid_argument);  // before init
  CHECK(distributed::load_checkpoint(path, d, none, {}, &early) == Status::invalid_argument);
  REQUIRE(d.init());
  Model m(specs());
  Local loc(d, m);
  for (int t = 0; t < 2; ++t) {
    m.gradients(t);
    loc.gradients(d, m);
    REQUIRE(d.step(Model::ptrs(loc.w), Model::ptrs(loc.g)));
    REQUIRE(ref.step(Model::ptrs(m.w), Model::ptrs(m.g)));
  }
  io::CheckpointHeader h;
  h.step = 2;
  h.signature = d.signature();
  std::string err;
  REQUIRE(distributed::save_checkpoint(path, d, h, &err) == Status::ok);
  const Local saved = loc;
  // The file is the single-process checkpoint, field for field.
  {
    io::FieldSet file;
    io::CheckpointHeader fh;
    REQUIRE(io::read_checkpoint(path, file, fh, &err) == Status::ok);
    CHECK(file == io::capture(ref));
    CHECK(fh.signature == ref.signature());
    // The shapes as declared, not flattened: the conv weight is 6 × 3 × 2 × 2.
    CHECK(fh.shapes == io::detail::shapes_of(ref));
    CHECK(fh.shapes.at("conv") == std::vector<std::int64_t>{6, 3, 2, 2});
  }
  // Two more steps: the uninterrupted trajectory.
  for (int t = 2; t < 4; ++t) {
    m.gradients(t);
    loc.gradients(d, m);
    REQUIRE(d.step(Model::ptrs(loc.w), Model::ptrs(loc.g)));
  }
  // Restore into a fresh partition on the same ranks and replay the two steps.
  auto e = make();
  REQUIRE(e.init());
  io::CheckpointHeader got;
  REQUIRE(distributed::load_checkpoint(path, e, got, e.signature(), &err) == Status::ok);
  CHECK(got.step == 2);
  Local again = saved;
  for (int t = 2; t < 4; ++t) {
    m.gradients(t);
    again.gradients(e, m);
    REQUIRE(e.step(Model::ptrs(again.w), Model::ptrs(again.g)));
  }
  for (std::size_t i = 0; i < loc.w.size(); ++i)
    CHECK(loc.w[i] == again.w[i]);
  // A single process loads the same file and continues identically.
  auto one = optim::partition(specs(), labels, route("muon", make_muon()), route("adamw", make_adamw()));
  REQUIRE(one.init());
  REQUIRE(io::load_checkpoint(path, one, got, one.signature(), &err) == Status::ok);
  Model whole(specs());
  whole.w = m.w;  // m holds the reference parameters after step 2 (the reference stopped there)
  for (int t = 2; t < 4; ++t) {
    whole.gradients(t);
    REQUIRE(one.step(Model::ptrs(whole.w), Model::ptrs(whole.g)));
  }
  CHECK(same_bits(d, whole, loc));
  // A parameter transposed (tall, row-sharded: 20 × 6 → 6 × 20) has fields of the same names and
  // sizes; the shapes the file records refuse it on every rank, and nothing changes.
  {
    std::vector<ParamSpec> transposed = specs();
    transposed[4].shape = {6, 20};
    auto t = distributed::distributed_partition(world(), transposed, labels, route("muon", make_muon()),
                                                route("adamw", make_adamw()));
    t.set_layouts(layouts(true));
    REQUIRE(t.init());
    io::FieldSet state_before, state_after;
    io::FieldCollector cb{&state_before}, ca{&state_after};
    t.visit_local(cb);
    CHECK(distributed::load_checkpoint(path, t, got, {}, &err) == Status::invalid_argument);
    CHECK_MESSAGE(
        err.find("parameter 'tall' has shape [20, 6] in the checkpoint, [6, 20] here") != std::string::npos,
        err);
    t.visit_local(ca);
    CHECK(state_before == state_after);
  }
  // Another rank count: the ranks split into two communicators (one rank each when n ≤ 2), each
  // loads the file written on n ranks and continues identically.
  {
    MPI_Comm half = MPI_COMM_NULL;
    MPI_Comm_split(MPI_COMM_WORLD, world().rank() % 2, world().rank(), &half);
    auto f = distributed::distributed_partition(distributed::communicator(half), specs(), labels,
                                                route("muon", make_muon()), route("adamw", make_adamw()));
    f.set_layouts(layouts(true));
    REQUIRE(f.init());
    REQUIRE(distributed::load_checkpoint(path, f, got, f.signature(), &err) == Status::ok);
    Model start(specs());
    start.w = m.w;
    Local part(f, start);
    for (int t = 2; t < 4; ++t) {
      start.gradients(t);
      part.gradients(f, start);
      REQUIRE(f.step(Model::ptrs(part.w), Model::ptrs(part.g)));
    }
    CHECK(same_bits(f, whole, part));
    MPI_Comm_free(&half);
  }
  // A checkpoint of another configuration is refused on every rank, and nothing changes.
  auto other =
      distributed::distributed_partition(world(), specs(), labels, route("muon", make_muon()),
                                         route("adamw", adamw(AdamWOptions{})), route("x", make_adamw()));
  REQUIRE(other.init());
  io::FieldSet before;
  io::FieldCollector c{&before};
  other.visit_local(c);
  io::FieldSet extra = io::capture(ref);
  extra["ghost/0_adamw/mu"] = std::vector<float>(3, 1.0f);
  if (world().rank() == 0) REQUIRE(io::write_checkpoint(path, extra, h, &err) == Status::ok);
  world().allreduce_min(0);  // the file is written before anyone reads it
  CHECK(distributed::load_checkpoint(path, other, got, {}, &err) == Status::invalid_argument);
  CHECK(err.find("ghost") != std::string::npos);
  io::FieldSet after;
  io::FieldCollector c2{&after};
  other.visit_local(c2);
  CHECK(before == after);
  world().allreduce_min(0);
  if (world().rank() == 0) std::filesystem::remove(path);
}

TEST_CASE("distributed.activations: Grams are summed over ranks before the criterion") {
  // SMuon with the criterion at step 1 on the three hidden matrices; each rank feeds its own
  // activations. The reference gets the rank-ordered sum of the per-rank Grams.
  const std::vector<ParamSpec> ps = {{"h0.w", {12, 8}}, {"h1.w", {10, 8}}, {"h2.w", {12, 6}}, {"bias", {9}}};
  const std::vector<std::string> labels = {"smuon", "smuon", "smuon", "adamw"};
  SchattenMuonOptions so;
  so.first = 1;
  auto ref = optim::partition(ps, labels, route("smuon", schatten_muon(so)), route("adamw", make_adamw()));
  REQUIRE(ref.init());
  auto d = distributed::distributed_partition(world(), ps, labels, route("smuon", schatten_muon(so)),
                                              route("adamw", make_adamw()));
  REQUIRE(d.init());
  const int n = world().size();
  auto activations = [&](int rank, std::size_t i) {
    Rng rng(test::case_seed("distributed.activations", 13 * static_cast<std::uint64_t>(rank) + i));
    std::vector<float> x(static_cast<std::size_t>(16 * ps[i].shape[1]));
    for (float& v : x)
      v = static_cast<float>(rng.normal() * (1.0 + double(i)));
    return x;
  };
  for (std::size_t i = 0; i < 3; ++i) {
    const index_t din = ps[i].shape[1];
    std::vector<float> x = activations(world().rank(), i);
    REQUIRE(d.accumulate_activations(ps[i].name, MatrixRef<const float>(x.data(), 16, din)) == Status::ok);
    // Reference: Gram of each rank's activations alone, summed in rank order.
    std::vector<float> sum(static_cast<std::size_t>(din * din), 0.0f), one(sum.size());
    for (int r = 0; r < n; ++r) {
      std::fill(one.begin(), one.end(), 0.0f);
      std::vector<float> xr = activations(r, i);
      REQUIRE(gram_accumulate(MatrixRef<const float>(xr.data(), 16, din),
                              MatrixRef<float>(one.data(), din, din)) == Status::ok);
      for (std::size_t e = 0; e < sum.size(); ++e)
        sum[e] = r == 0 ? one[e] : sum[e] + one[e];
    }
    const ActivationGramRef g = activation_gram(ref, ps[i].name);
    REQUIRE(g.gram != nullptr);
    std::copy(sum.begin(), sum.end(), g.gram);
    *g.samples = 16 * n;
    *g.for_step = *g.rule_step;
  }
  CHECK(d.accumulate_activations("bias", MatrixRef<const float>()) == Status::invalid_argument);
  Model m(ps);
  Local loc(d, m);
  m.gradients(0);
  loc.gradients(d, m);
  REQUIRE(d.step(Model::ptrs(loc.w), Model::ptrs(loc.g)));
  REQUIRE(ref.step(Model::ptrs(m.w), Model::ptrs(m.g)));
  CHECK(same_bits(d, m, loc));
  CHECK(same_state(d, ref));  // the chosen p, the EMAs and the delivered Gram and sample count
}

TEST_CASE("distributed.activations: a sum over ranks that overflows is refused by name and can be dropped") {
  // The surrogate audit's finding 2 (docs/reliability.md, Finding 51) on ranks: every rank's Gram
  // is finite (entries 32·(2.5e18)² = 2e38) but their sum overflows on two or more ranks. The
  // step is refused naming the activation Gram; a retry would deliver the same sums again, so
  // clear_activations() on every rank drops them (the rank's own and the owner's delivered one),
  // and the step then runs with p kept.
  const std::vector<ParamSpec> ps = {{"h.w", {12, 8}}};
  const std::vector<std::string> labels = {"smuon"};
  SchattenMuonOptions so;
  so.first = 1;
  auto d = distributed::distributed_partition(world(), ps, labels, route("smuon", schatten_muon(so)));
  const index_t tokens = 32, din = 8;
  const std::vector<float> x(static_cast<std::size_t>(tokens * din), 2.5e18f);
  // Before init() there are no sums.
  CHECK(d.clear_activations("h.w") == Status::invalid_argument);
  CHECK(d.accumulate_activations("h.w", MatrixRef<const float>(x.data(), tokens, din)) ==
        Status::invalid_argument);
  REQUIRE(d.init());
  REQUIRE(d.accumulate_activations("h.w", MatrixRef<const float>(x.data(), tokens, din)) == Status::ok);
  Model m(ps);
  Local loc(d, m);
  m.gradients(0);
  loc.gradients(d, m);
  if (world().size() >= 2) {
    const StepReport refused = d.step(Model::ptrs(loc.w), Model::ptrs(loc.g));
    CHECK(refused.status == Status::non_finite_input);
    CHECK(std::string(refused.message).find("activation Gram") != std::string::npos);
    loc.gradients(d, m);
    // A plain retry delivers the same sums: refused again.
    CHECK(d.step(Model::ptrs(loc.w), Model::ptrs(loc.g)).status == Status::non_finite_input);
    loc.gradients(d, m);
  }
  CHECK(d.clear_activations("h.w") == Status::ok);
  CHECK(d.clear_activations("nope") == Status::invalid_argument);
  REQUIRE(d.step(Model::ptrs(loc.w), Model::ptrs(loc.g)));
  const auto held = optim::schatten_p_values(d.local());  // the owner's p; the others hold none
  const double p = held.empty() ? 0.0 : held.front().second;
  std::int64_t owner_p = std::llround(p * 1000.0);
  world().allreduce_max(&owner_p, 1);
  CHECK(owner_p == 10000);  // no statistics: p kept at its start, 10
}

}  // namespace distributed_test_mpi_step
