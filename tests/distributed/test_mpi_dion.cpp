// SPDX-License-Identifier: Apache-2.0
/// \file
/// Dion over unreduced gradients (distributed::Layout::unreduced, microsoft/dion's compressed
/// all-reduce), on however many ranks mpiexec started (CTest runs 1, 2 and 4): every rank passes
/// its own gradient, and the result must be the single-process Dion of the ranks' mean gradient
/// to rounding, the same bits on every rank, with (L + S)·k + 1 floats per matrix and power
/// iteration on the wire; a NaN or an overflow on one rank refuses the step everywhere with
/// nothing changed; checkpoints hold the mean momentum and load on n ranks and on one process.
#include <doctest/doctest.h>

#include <unistd.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <initializer_list>
#include <limits>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "schatten/core/random.hpp"
#include "schatten/distributed/mpi_comm.hpp"
#include "schatten/distributed/mpi_step.hpp"
#include "schatten/io/checkpoint.hpp"
#include "schatten/optim/dion.hpp"
#include "schatten/optim/presets.hpp"
#include "support/allocations.hpp"
#include "support/failing_rule.hpp"
#include "support/low_rank_tilt.hpp"
#include "support/seed.hpp"

namespace distributed_test_mpi_dion {  // this file's scope in a unity build (tests/CMakeLists.txt)

using namespace schatten;
using namespace schatten::optim;
using schatten::distributed::Layout;

namespace {

distributed::Communicator world() { return distributed::Communicator::world(); }

/// Tall, wide and square matrices on three Dion routes (a low rank fraction with a multiple,
/// full rank, two power iterations), and a bias on AdamW (replicated: its gradient all-reduced
/// as usual, its update from its owner).
std::vector<ParamSpec> specs() {
  return {{"tall", {48, 20}}, {"wide", {12, 30}}, {"square", {16, 16}}, {"bias", {9}}};
}
std::vector<std::string> labels() { return {"dion_low", "dion_full", "dion_two", "adamw"}; }
/// `tall` 40 × 24 matrices "t0", … on "dion_low" and `wide` 24 × 40 ones "w0", … on "dion_two":
/// same-shape groups whose QRs the ranks split.
std::pair<std::vector<ParamSpec>, std::vector<std::string>> same_shape_specs(int tall, int wide) {
  std::pair<std::vector<ParamSpec>, std::vector<std::string>> r;
  for (int i = 0; i < tall; ++i) {
    r.first.push_back({"t" + std::to_string(i), {40, 24}});
    r.second.push_back("dion_low");
  }
  for (int i = 0; i < wide; ++i) {
    r.first.push_back({"w" + std::to_string(i), {24, 40}});
    r.second.push_back("dion_two");
  }
  return r;
}
std::vector<Layout> layouts() {
  return {Layout::unreduced, Layout::unreduced, Layout::unreduced, Layout::replicated};
}
DionOptions low() {
  DionOptions o;
  o.rank_fraction = 0.25;
  o.rank_multiple_of = 2;                               // k = 2·⌈0.25·20/2⌉ = 6 (tall)
  o.seed = test::case_seed("distributed.dion sketch");  // of the initial Q
  return o;
}
DionOptions full() { return DionOptions{}; }
DionOptions two() {
  DionOptions o;
  o.rank_fraction = 0.5;
  o.power_iterations = 2;
  return o;
}
/// o with M in `storage` (docs/optim.md "State precision").
DionOptions stored(DionOptions o, StateStorage storage) {
  o.mu_storage = storage;
  return o;
}
template <class P>
auto routes_of(P make, StateStorage storage = Precision::fp32) {
  return make(route("dion_low", dion(stored(low(), storage))),
              route("dion_full", dion(stored(full(), storage))),
              route("dion_two", dion(stored(two(), storage))), route("adamw", adamw()));
}
auto one_process(StateStorage storage = Precision::fp32) {
  return routes_of([](auto... r) { return optim::partition(specs(), labels(), std::move(r)...); }, storage);
}
auto distributed_dion(StateStorage storage = Precision::fp32) {
  auto d = routes_of(
      [](auto... r) {
        return distributed::distributed_partition(world(), specs(), labels(), std::move(r)...);
      },
      storage);
  d.set_layouts(layouts());
  return d;
}

// Seeds of the weights and of the gradients (the suite's seed, printed by main_mpi.cpp).
std::uint64_t weight_seed() { return test::case_seed("distributed.dion weights"); }
std::uint64_t gradient_seed() { return test::case_seed("distributed.dion gradients"); }

/// Initial weights, the same on every rank.
std::vector<std::vector<float>> weights(const std::vector<ParamSpec>& ps = specs()) {
  Rng rng(weight_seed());
  std::vector<std::vector<float>> w;
  for (const ParamSpec& p : ps) {
    w.emplace_back(static_cast<std::size_t>(flatten(p.shape).size()));
    for (float& x : w.back())
      x = static_cast<float>(0.1 * rng.normal());
  }
  return w;
}
/// Rank r's own gradients of step t (Gaussian, a different stream per rank and step).
std::vector<std::vector<float>> own_gradients(int rank, int t, const std::vector<ParamSpec>& ps = specs()) {
  Rng rng(gradient_seed() + 97 * static_cast<std::uint64_t>(t) + static_cast<std::uint64_t>(rank));
  std::vector<std::vector<float>> g;
  for (const ParamSpec& p : ps) {
    g.emplace_back(static_cast<std::size_t>(flatten(p.shape).size()));
    for (float& x : g.back())
      x = static_cast<float>(rng.normal());
  }
  return g;
}
/// The ranks' mean gradient of step t (every rank computes every rank's, in double): what DDP's
/// all-reduce would give a single process.
std::vector<std::vector<float>> mean_gradients(int t, const std::vector<ParamSpec>& ps = specs()) {
  const int n = world().size();
  std::vector<std::vector<double>> sum;
  for (int r = 0; r < n; ++r) {
    const auto g = own_gradients(r, t, ps);
    if (sum.empty())
      for (const auto& v : g)
        sum.emplace_back(v.size(), 0.0);
    for (std::size_t i = 0; i < g.size(); ++i)
      for (std::size_t e = 0; e < g[i].size(); ++e)
        sum[i][e] += g[i][e];
  }
  std::vector<std::vector<float>> mean;
  for (const auto& v : sum) {
    mean.emplace_back(v.size());
    for (std::size_t e = 0; e < v.size(); ++e)
      mean.back()[e] = static_cast<float>(v[e] / n);
  }
  return mean;
}
std::vector<float*> ptrs(std::vector<std::vector<float>>& v) {
  std::vector<float*> p;
  for (auto& x : v)
    p.push_back(x.data());
  return p;
}
/// The gradients this rank passes at step t: its own for the unreduced parameters, the mean for
/// the replicated one (the framework all-reduced it).
std::vector<std::vector<float>> passed_gradients(int t) {
  auto g = own_gradients(world().rank(), t);
  g[3] = mean_gradients(t)[3];
  return g;
}

/// A rank-1 gradient c_r·a bᵀ (c_r = 1 + rank; a and b Gaussian from `seed`): this rank's, and
/// the ranks' mean c̄·a bᵀ that one process would get.
std::pair<std::vector<float>, std::vector<float>> rank_one_gradients(std::size_t rows, std::size_t cols,
                                                                     std::uint64_t seed) {
  Rng rng(seed);
  std::vector<float> a(rows), b(cols);
  for (float& x : a)
    x = static_cast<float>(rng.normal());
  for (float& x : b)
    x = static_cast<float>(rng.normal());
  const int n = world().size();
  double cbar = 0.0;
  for (int r = 0; r < n; ++r)
    cbar += (1.0 + r) / n;
  std::vector<float> mine(rows * cols), mean(rows * cols);
  for (std::size_t i = 0; i < rows; ++i)
    for (std::size_t j = 0; j < cols; ++j) {
      const float ab = a[i] * b[j];
      mine[i * cols + j] = static_cast<float>(1.0 + world().rank()) * ab;
      mean[i * cols + j] = static_cast<float>(cbar * ab);
    }
  return {mine, mean};
}

/// max |a − b| over the parameters, relative to max |b − b0| (the distance the reference moved).
double relative_gap(const std::vector<std::vector<float>>& a, const std::vector<std::vector<float>>& b,
                    const std::vector<std::vector<float>>& b0) {
  double gap = 0.0, moved = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i)
    for (std::size_t e = 0; e < a[i].size(); ++e) {
      gap = std::max(gap, std::fabs(double(a[i][e]) - double(b[i][e])));
      moved = std::max(moved, std::fabs(double(b[i][e]) - double(b0[i][e])));
    }
  return gap / moved;
}
/// The tilt of the first column of Dion's first panel for a tall r × c momentum `m` (B = M):
/// test::kept_column_tilts()'s, with x_0 the first row of the initial Qᵀ, drawn from Rng(seed)
/// as DionDirection::init() draws it. For a rank-1 B it is √S·u / |cos(b, x_0)|; the one column
/// the QR keeps is then weak, and two runs that round it differently keep directions this far
/// apart (seed 297: cos 1.8e-5, tilt 1.5e-2).
double first_column_tilt(const std::vector<float>& m, std::size_t rows, std::size_t cols,
                         std::uint64_t seed) {
  Rng rng(seed);
  std::vector<float> x0(cols);
  for (float& v : x0)
    v = static_cast<float>(rng.normal());
  return test::kept_column_tilts(m.data(), rows, cols, x0.data(), 1, 1)[0];
}
/// Whether some rank saw ‖U‖²_F ≈ 2 in one of `u2s`, agreed over the ranks: a rank-1 step that
/// kept a rounding column of P̄ as a noise term (the low-rank floor's documented compromise,
/// docs/kernels/low_rank.md), after which two runs that round P̄ differently part.
bool noise_column_kept(std::initializer_list<double> u2s) {
  std::int64_t noise[1] = {0};
  for (double u2 : u2s)
    if (std::abs(u2 - 2.0) <= 1e-2) noise[0] = 1;
  world().allreduce_max(noise, 1);
  return noise[0] == 1;
}
/// Whether every rank holds these bits (a hash's minimum and maximum over the ranks).
bool same_on_every_rank(const std::vector<std::vector<float>>& w) {
  std::uint64_t h = 1469598103934665603ull;
  for (const auto& v : w)
    for (float x : v) {
      std::uint32_t b = 0;
      std::memcpy(&b, &x, sizeof b);
      h = (h ^ b) * 1099511628211ull;
    }
  std::int64_t v[2] = {static_cast<std::int64_t>(h >> 1), -static_cast<std::int64_t>(h >> 1)};
  world().allreduce_max(v, 2);
  return v[0] == -v[1];
}

std::string shared_path(const char* what) {
  std::string p;
  if (world().rank() == 0)
    p = (std::filesystem::temp_directory_path() /
         ("schatten_mpi_dion_" + std::string(what) + "_" + std::to_string(::getpid()) + ".h5"))
            .string();
  return world().bcast_string(p, 0);
}

// Tolerance of the distributed trajectory against the one-process Dion of the mean gradient,
// relative to how far the weights moved: the two differ only by float rounding (the mean of the
// panels is summed in another order than B̄ X, and M_i keeps each rank's own rounding), which
// Dion's recursion magnifies from step to step, on most trajectories moderately (in exact
// arithmetic a median factor 17 over six steps at "square"'s shape: docs/reliability.md,
// Finding 73). Measured (2026-11-30, the seeds then fixed): at most 2.4e-6 on 2 ranks
// and 5.2e-6 on 4 over every step and case; the controls are 0.76 and more away. Seeds 1–60 of
// the suite's seed sweep stay within the bound (2026-12-01). Where the recursion itself magnifies
// rounding, the bound is the probes' instead (trajectory_bound).
constexpr double kTrajectoryTolerance = 2e-5;
// How far the distributed trajectory may be from the reference, as a multiple of how far the
// probes are (Probes: the reference on the mean gradient moved by one ulp per element, three
// sign patterns), where that is more than kTrajectoryTolerance. Dion's recursion can magnify a
// rounding difference a hundredfold over a few steps: at seed 1968 on 4 ranks "square" (16 × 16,
// k = 8, two power iterations) carries it in Q's last column (the exact step's Jacobians
// multiply to 6.9e4 over its six steps, against a maximum of 403 over 300 Gaussian
// trajectories of that shape: Finding 73), and after step 5 the distributed
// trajectory was 6.0e-4 from the reference, the probes 3.2e-4, 5.5e-4 and 2.6e-4, with every QR
// the same Cholesky QR2 in both (docs/reliability.md, Finding 73). One probe is not enough: how
// much of a nudge falls along the growing direction is chance (seed 1302 on 2 ranks: 3.2e-5,
// the probes 2.8e-6, 3.7e-5 and 2.3e-5). Measured over seeds 1–2000 on 2 and 4 ranks (4000
// runs of the cases that step along, 2026-12-05): the probes' gap exceeded 1e-5 in 14 runs, and
// there the distributed gap was at most 1.75 times it (seed 1451, 2 ranks); 4 is 2.3 times that.
// Elsewhere the probes stay near the weights' own rounding, so the bound is 2e-5 (at most
// 3.9e-5, above 2e-5 at 9 % of the steps), and the largest gap was 0.50 of it (seed 180).
constexpr double kProbeFactor = 4.0;
// The checkpoint's mean momentum against the reference's M, relative to max |M|: measured at
// most 1.4e-7 (2 ranks) and 1.7e-7 (4 ranks), a few float roundings.
constexpr double kMomentumTolerance = 2e-6;
// A bf16 momentum's trajectory against the one-process fp32 Dion of the mean gradient, relative
// as above: each stored M_i rounds by up to 2⁻⁹ of itself once per step, 2¹⁵ times float's unit,
// and the low-rank routes pass that on as they pass on float's rounding (2.4e-6 to 5.2e-6 above,
// times 2¹⁵: 0.08 to 0.17). Measured over seeds 1–300 on 1, 2 and 4 ranks (900 runs, 8 steps
// with the checkpoint between): median 3.0e-3, 99th percentile 2.0e-2, largest 8.0e-2 (seed
// 140, 2 ranks) and 6.9e-2 (seed 186, 1 rank), both on "square", whose k = 8 of 16 with two
// power iterations is the shape where Dion's recursion magnifies a difference most (above).
// 0.2 is 2.5 times the largest; the control (a rank's own gradients) is 0.76 and more away, and
// on one rank the step is the one-process bf16 step bit for bit. Seeds 2001–2400 on 2 and 4
// ranks (2026-12-06): largest 6.5e-2 (seed 2136, 2 ranks), and 1.9e-2 with Q in bf16 as well.
constexpr double kBf16TrajectoryTolerance = 0.2;

using Weights = std::vector<std::vector<float>>;

/// Seed of the probes' nudges (the suite's seed, printed by main_mpi.cpp).
std::uint64_t probe_seed() { return test::case_seed("distributed.dion probe"); }

/// kProbes one-process partitions like the reference, each stepped on the ranks' mean gradient
/// with every element moved by one ulp, up or down (probe k's signs from
/// Rng(probe_seed() + 1000·k + t)): how far they move from the reference shows how much Dion's
/// recursion magnifies a rounding difference at this point of the trajectory, and so bounds what
/// a run that differs from the reference by rounding alone may show (trajectory_bound).
constexpr int kProbes = 3;
template <class P>
struct Probes {
  std::vector<P> partitions;
  std::vector<Weights> w;
  /// Step t on the mean gradient `gm`, nudged.
  void step(const Weights& gm, int t) {
    for (std::size_t k = 0; k < partitions.size(); ++k) {
      Rng rng(probe_seed() + 1000 * k + static_cast<std::uint64_t>(t));
      Weights g = gm;
      for (auto& v : g)
        for (float& x : v)
          x = std::nextafter(x, rng.normal() > 0.0 ? HUGE_VALF : -HUGE_VALF);
      REQUIRE(partitions[k].step(ptrs(w[k]), ptrs(g)));
    }
  }
  /// The largest of the probes' gaps from the reference's trajectory `wref` (relative_gap).
  double gap(const Weights& wref, const Weights& w0) const {
    double worst = 0.0;
    for (const Weights& x : w)
      worst = std::max(worst, relative_gap(x, wref, w0));
    return worst;
  }
};
/// kProbes partitions from `make` (each a fresh one-process partition like the reference's),
/// initialised, at the weights w0.
template <class Make>
auto probes_of(const Make& make, const Weights& w0) {
  Probes<decltype(make())> p;
  for (int k = 0; k < kProbes; ++k) {
    p.partitions.push_back(make());
    REQUIRE(p.partitions.back().init());
    p.w.push_back(w0);
  }
  return p;
}
/// The largest gap from the reference's trajectory `wref` that rounding alone explains:
/// kTrajectoryTolerance, or kProbeFactor times the probes' where the recursion magnifies it.
template <class P>
double trajectory_bound(const Probes<P>& probes, const Weights& wref, const Weights& w0) {
  return std::max(kTrajectoryTolerance, kProbeFactor * probes.gap(wref, w0));
}

/// Step t of the distributed partition `d` (this rank's gradients), of the one-process `ref`
/// (the ranks' mean gradient) and of its probes, then the trajectory against the reference
/// (within trajectory_bound) and the same bits on every rank.
template <class D, class P>
void step_along(D& d, P& ref, Probes<P>& probes, Weights& w, Weights& wref, const Weights& w0, int t) {
  auto g = passed_gradients(t), gm = mean_gradients(t);
  REQUIRE(d.step(ptrs(w), ptrs(g)).status == Status::ok);
  probes.step(gm, t);
  REQUIRE(ref.step(ptrs(wref), ptrs(gm)));
  const double gap = relative_gap(w, wref, w0), bound = trajectory_bound(probes, wref, w0);
  CAPTURE(gap);
  CAPTURE(bound);
  CHECK(gap <= bound);
  CHECK(same_on_every_rank(w));
}
/// A step of the distributed partition `d` with bf16 state (this rank's gradients `g`), of the
/// one-process fp32 `ref` and of the one-process `ref16` with d's storages (the ranks' mean
/// gradient `gm`): the trajectory within kBf16TrajectoryTolerance of ref's (the largest gap so
/// far in `worst`), on one rank ref16's bit for bit, and the same bits on every rank.
template <class D, class P, class P16>
void step_bf16_along(D& d, P& ref, P16& ref16, Weights& w, Weights& wref, Weights& w16, const Weights& w0,
                     Weights g, const Weights& gm, double& worst) {
  Weights gm32 = gm, gm16 = gm;
  REQUIRE(d.step(ptrs(w), ptrs(g)).status == Status::ok);
  REQUIRE(ref.step(ptrs(wref), ptrs(gm32)));
  REQUIRE(ref16.step(ptrs(w16), ptrs(gm16)));
  if (world().size() == 1) CHECK(w == w16);
  worst = std::max(worst, relative_gap(w, wref, w0));
  CHECK(relative_gap(w, wref, w0) <= kBf16TrajectoryTolerance);
  CHECK(same_on_every_rank(w));
}

/// Saves `d`'s checkpoint (step 4, its signature) to `path`, reads the file back and returns
/// how many of its fields, the bias's left out, end in `suffix` (the Dion states' "/m" or "/q"),
/// each checked to hold bf16 values only (bf16 state is saved as the floats it holds).
template <class D>
std::size_t saved_bf16_fields(D& d, const std::string& path, const std::string& suffix) {
  io::CheckpointHeader h;
  h.step = 4;
  h.signature = d.signature();
  std::string err;
  REQUIRE(distributed::save_checkpoint(path, d, h, &err) == Status::ok);
  io::FieldSet file;
  io::CheckpointHeader fh;
  REQUIRE(io::read_checkpoint(path, file, fh, &err) == Status::ok);
  std::size_t count = 0;
  for (const auto& field : file) {
    const std::string& name = field.first;
    if (name.size() < suffix.size() ||
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0 || name.rfind("bias", 0) == 0)
      continue;
    ++count;
    const auto& v = std::get<std::vector<float>>(field.second);
    CAPTURE(name);
    CHECK(std::all_of(v.begin(), v.end(), [](float x) { return bf16_to_float(bf16_round(x)) == x; }));
  }
  return count;
}

}  // namespace

TEST_CASE("distributed.dion: unreduced Dion is one process's Dion of the mean gradient, on every rank") {
  MESSAGE("seeds: weights " << weight_seed() << ", gradients " << gradient_seed()
                            << " + 97·step + rank, probes " << probe_seed() << " + 1000·k + step");
  auto ref = one_process();
  REQUIRE(ref.init());
  auto d = distributed_dion();
  REQUIRE(d.init());
  for (std::size_t i = 0; i < 3; ++i) {
    CHECK(d.unreduced(i));
    CHECK(d.owners()[i] == -1);
  }
  CHECK_FALSE(d.unreduced(3));
  const auto w0 = weights();
  auto w = w0, wref = w0;
  auto probes = probes_of([] { return one_process(); }, w0);
  for (int t = 0; t < 6; ++t) {
    CAPTURE(t);
    step_along(d, ref, probes, w, wref, w0, t);
  }
  // Control: a rank's own gradient alone (what a rank would do without the averages) is far
  // from the mean's trajectory once there are several ranks.
  if (world().size() > 1) {
    auto solo = one_process();
    REQUIRE(solo.init());
    auto ws = w0;
    for (int t = 0; t < 6; ++t) {
      auto g = own_gradients(world().rank(), t);
      REQUIRE(solo.step(ptrs(ws), ptrs(g)));
    }
    CHECK(relative_gap(ws, wref, w0) > 1e-2);
  }
}

TEST_CASE("distributed.dion: with one rank, the unreduced step is the one-process step bit for bit") {
  // One rank's average is itself (× 1.0f); the floor, rebuilt from the carried rms, decides no
  // Gaussian column differently. Several ranks: the averages' rounding, tested above.
  if (world().size() != 1) return;
  auto ref = one_process();
  REQUIRE(ref.init());
  auto d = distributed_dion();
  REQUIRE(d.init());
  auto w = weights(), wref = weights();
  for (int t = 0; t < 4; ++t) {
    auto g = own_gradients(0, t), gref = g;
    REQUIRE(d.step(ptrs(w), ptrs(g)).status == Status::ok);
    REQUIRE(ref.step(ptrs(wref), ptrs(gref)));
    CHECK(w == wref);
  }
}

TEST_CASE("distributed.dion: a rank-1 mean momentum gives a rank-1 update through the averaged panels") {
  // Every rank's first gradient is c_r·a bᵀ (c_r = 1 + r), so M̄ has rank 1: the averaged P̄ = B̄ Q
  // has one column above the rounding floor (built from the ranks' mean ‖B_i‖_F), the Cholesky
  // QR2 refuses it, and the Householder QR on P̄ drops the other five. The update then has rank 1
  // (‖U‖_F² = 1, before lr and the shape scale) and the trajectory, with Gaussian gradients
  // after, is one process's of the mean gradient. Tall (48 × 20, k = 6). (A P̄ that the Cholesky
  // QR2 modified before refusing it is restored from its copy: tests/kernels/test_low_rank.cpp.)
  const std::vector<ParamSpec> ps = {{"w", {48, 20}}};
  DionOptions o = low();
  o.weight_decay = 0.0;
  auto ref = optim::partition(ps, {"dion"}, route("dion", dion(o)));
  REQUIRE(ref.init());
  auto d = distributed::distributed_partition(world(), ps, {"dion"}, route("dion", dion(o)));
  d.set_layouts({Layout::unreduced});
  REQUIRE(d.init());
  std::vector<std::vector<float>> w = {std::vector<float>(48 * 20, 0.0f)}, wref = w;
  const auto w0 = w;
  double tilt = 0.0;  // of the first step's kept column (first_column_tilt), set at t = 0
  for (int t = 0; t < 3; ++t) {
    CAPTURE(t);
    std::vector<std::vector<float>> g = {std::vector<float>(48 * 20)}, gm = g;
    if (t == 0) {
      std::tie(g[0], gm[0]) = rank_one_gradients(48, 20, gradient_seed() + 7);
      tilt = first_column_tilt(gm[0], 48, 20, o.seed);
    } else {
      g = {own_gradients(world().rank(), t)[0]};
      gm = {mean_gradients(t)[0]};
    }
    const auto before = w;
    REQUIRE(d.step(ptrs(w), ptrs(g)).status == Status::ok);
    REQUIRE(ref.step(ptrs(wref), ptrs(gm)));
    if (t == 0) {  // W = 0 and no decay: the step is −lr·√(48/20)·U
      const double scale = o.lr(1) * std::sqrt(48.0 / 20.0);
      const auto u2_of = [&](const std::vector<float>& after) {  // ‖U‖²_F of the step to `after`
        double u2 = 0.0;
        for (std::size_t e = 0; e < after.size(); ++e)
          u2 += std::pow((double(after[e]) - double(before[0][e])) / scale, 2);
        return u2;
      };
      const double u2 = u2_of(w[0]), u2_ref = u2_of(wref[0]);
      // Rank 1 (float rounding of unit vectors), or 2 when a rounding column of P̄ rises above the
      // floor's factor 8 and is kept as a noise term, short of 1 by ~2e-3: the floor's documented
      // compromise (docs/kernels/low_rank.md; seed 27 of 60 here, before the floor counted the
      // kept columns' leak: none of seeds 1–150 since). The two steps round P̄
      // differently, so they may then disagree on that column and part: said, and the rest
      // skipped. (Every rank holds the same w, checked below; the flag is agreed all the same,
      // since the steps after it are collective.)
      const bool noise = noise_column_kept({u2});
      CAPTURE(u2);
      CAPTURE(u2_ref);
      CHECK((u2 == doctest::Approx(1.0).epsilon(1e-5) || noise));
      if (noise) {
        MESSAGE("a rounding column of the averaged panel survived the floor; trajectory not compared");
        return;
      }
    }
    // The panel's one kept column is P̄'s first, which is weak when q_0 is nearly orthogonal to
    // the gradient's right vector; the two runs then keep directions up to its tilt apart, and
    // the trajectories part by that much at t = 0 (diluted by the later steps). Measured over
    // seeds 1–700 on 2 and 4 ranks (AMD EPYC, 2026-12-02): at most 0.19 of the bound
    // kTrajectoryTolerance + tilt (seed 297: tilt 1.5e-2, gap 2.8e-3, where the bound was 1e-4
    // flat: docs/reliability.md, Finding 25; next seed 27: 6.5e-5 at tilt 4.0e-4); where the
    // tilt is below 1e-5, at most 2.8e-6.
    CAPTURE(tilt);
    CHECK(relative_gap(w, wref, w0) <= kTrajectoryTolerance + tilt);
    CHECK(same_on_every_rank(w));
  }
}

TEST_CASE("distributed.dion: the panels cross the wire, not the gradient") {
  // One unreduced 64 × 32 matrix at rank fraction 0.25: k = 8, L = 64, S = 32. Per step each
  // rank receives the averages of P (L·k + 1 floats) and R (S·k floats), plus the step's
  // agreements: the gradient check with the clip and the policy (9 int64: a failure key and two
  // hashes), the updates' hash check (5), the outcomes of
  // the steps that may fail and of the rest (1 each: Partition::step_fallible, step_finish),
  // and the check that no rank has stopped before each average and at the end of the
  // unreduced step (1 each: 3). All-reducing its gradient instead would deliver L·S = 2048
  // floats.
  const std::vector<ParamSpec> ps = {{"w", {64, 32}}};
  DionOptions o;
  o.rank_fraction = 0.25;
  auto d = distributed::distributed_partition(world(), ps, {"dion"}, route("dion", dion(o)));
  d.set_layouts({Layout::unreduced});
  REQUIRE(d.init());
  std::vector<std::vector<float>> w = {std::vector<float>(64 * 32, 0.5f)};
  Rng rng(gradient_seed() + static_cast<std::uint64_t>(world().rank()));
  std::vector<std::vector<float>> g = {std::vector<float>(64 * 32)};
  for (float& x : g[0])
    x = static_cast<float>(rng.normal());
  d.communicator().reset_traffic();
  REQUIRE(d.step(ptrs(w), ptrs(g)).status == Status::ok);
  const distributed::Traffic t = d.communicator().traffic();
  const std::int64_t panels = 4 * ((64 * 8 + 1) + 32 * 8), agreements = 8 * (9 + 5 + 2 + 3);
  CHECK(t.bytes_received == (world().size() > 1 ? panels + agreements : 0));
  CHECK(panels < 4 * 64 * 32 / 2);  // under half the gradient's all-reduce
}

TEST_CASE(
    "distributed.dion: same-shape matrices split their QRs across the ranks, as microsoft/dion's batches") {
  // Five tall 40 × 24 matrices (k = 6) and three wide 24 × 40 with two power iterations
  // (k = 12), all unreduced. They form groups of at most one member per rank (2 ranks: tall
  // 2 + 2 + 1, wide 2 + 1; 4 ranks: 4 + 1 and 3; a lone member steps alone): each rank
  // orthonormalises its share of a group's averaged panels, and gathers the others' with their
  // records. The first gradient of "t1" has rank 1 on every rank (c_r·a bᵀ, c_r = 1 + r): its
  // owner drops five columns of P̄, which the other ranks learn from the record (were they
  // ignored, those ranks' Q would lose the five columns and leave the reference: checked).
  // "t3"'s first gradient is zero on every rank: its owner finds M̄ = 0, and its group goes on.
  // Against one process on the mean gradient (measured at most 3.3e-6 on 2 ranks and 3.6e-6 on
  // 4, 2026-11-30), the same bits on every rank, and the bytes (unsplit, they would differ).
  const auto [ps, ls] = same_shape_specs(5, 3);
  DionOptions lo = low(), tw = two();
  auto ref = optim::partition(ps, ls, route("dion_low", dion(lo)), route("dion_two", dion(tw)));
  REQUIRE(ref.init());
  auto d = distributed::distributed_partition(world(), ps, ls, route("dion_low", dion(lo)),
                                              route("dion_two", dion(tw)));
  d.set_layouts(std::vector<Layout>(ps.size(), Layout::unreduced));
  REQUIRE(d.init());
  const int n = world().size();
  // Bytes per step: a group of g ≥ 2 moves, per power iteration, every member's P block
  // (L·k + k + 2 floats: P̄ and its record, by the scatter and the gather) and its R (S·k); a
  // lone member P (L·k, and one float at t = 0) and R; each of these collectives (3 or 2) first
  // checks that no rank has stopped (1 int64); then the step's agreements (as above, with the
  // end of the unreduced step's check).
  const auto bytes_of = [n](int count, std::int64_t l, std::int64_t sh, std::int64_t k, int t) {
    std::int64_t floats = 0, checks = 0;
    for (int left = count; left > 0; left -= std::min(left, n)) {
      const int g = std::min(left, n);
      for (int i = 0; i < t; ++i) {
        floats += g >= 2 ? g * ((l * k + k + 2) + sh * k) : (l * k + (i == 0 ? 1 : 0)) + sh * k;
        checks += g >= 2 ? 3 : 2;
      }
    }
    return 4 * floats + 8 * checks;
  };
  const std::int64_t expected =
      n > 1 ? bytes_of(5, 40, 24, 6, 1) + bytes_of(3, 40, 24, 12, 2) + 8 * (9 + 5 + 2 + 1) : 0;
  const auto w0 = weights(ps);
  auto w = w0, wref = w0;
  // "t1" (index 1) is compared on its own. Its rank-1 first step keeps one column of P̄, which
  // can be weak (q_0 nearly orthogonal to the gradient's right vector): the two runs then keep
  // directions up to its tilt apart (first_column_tilt, as in the rank-1 test above), and the
  // trajectories part by more than rounding. Compared together with the others against
  // kTrajectoryTolerance, seeds 118, 217 and 240 failed (AMD EPYC; docs/reliability.md,
  // Finding 24). Measured over seeds 1–700 on 2 and 4 ranks (2026-12-02): t1's gap at most
  // 1.6e-4 (seed 240, tilt 4.2e-3); where the tilt is below 1e-5, at most 1.8e-5 (seed 562),
  // more than the other matrices' 8.8e-6 since it is relative to one matrix's move; the worst
  // against the bound kT1Tolerance + tilt was 0.32 of it. t1 is left out altogether once a
  // rounding column of its first step survived the floor as a noise term (below): the two runs
  // keep different ones.
  constexpr double kT1Tolerance = 5e-5;
  double t1_tilt = 0.0;  // set at t = 0
  bool skip_t1 = false;
  const auto others = [](std::vector<std::vector<float>> v) {
    v.erase(v.begin() + 1);
    return v;
  };
  const auto t1_only = [](const std::vector<std::vector<float>>& v) {
    return std::vector<std::vector<float>>{v[1]};
  };
  const auto check_trajectories = [&] {
    const double gap = relative_gap(others(w), others(wref), others(w0));
    CAPTURE(gap);
    CHECK(gap <= kTrajectoryTolerance);
    if (skip_t1) return;
    const double t1_gap = relative_gap(t1_only(w), t1_only(wref), t1_only(w0));
    CAPTURE(t1_gap);
    CAPTURE(t1_tilt);
    CHECK(t1_gap <= kT1Tolerance + t1_tilt);
  };
  for (int t = 0; t < 5; ++t) {
    CAPTURE(t);
    auto g = own_gradients(world().rank(), t, ps), gm = mean_gradients(t, ps);
    if (t == 0) {
      std::tie(g[1], gm[1]) = rank_one_gradients(40, 24, gradient_seed() + 11);
      t1_tilt = first_column_tilt(gm[1], 40, 24, lo.seed);
      std::fill(g[3].begin(), g[3].end(), 0.0f);  // every M_i zero: U = 0, told by the record
      std::fill(gm[3].begin(), gm[3].end(), 0.0f);
    }
    d.communicator().reset_traffic();
    REQUIRE(d.step(ptrs(w), ptrs(g)).status == Status::ok);
    if (t == 0) CHECK(d.communicator().traffic().bytes_received == expected);
    REQUIRE(ref.step(ptrs(wref), ptrs(gm)));
    if (t == 0) {
      // t1's step from W₀: W₁ = W₀ − lr·(√(40/24)·U + wd·W₀), so ‖U‖²_F counts its kept unit
      // columns: 1 for the rank-1 gradient, or 2 when a rounding column of P̄ rises above the
      // floor and is kept as a noise term (the floor's documented compromise, as in the rank-1
      // test above; seed 189, in both runs). The runs round P̄ differently, so their noise
      // columns differ and t1's trajectories part: said, and t1 left out of the comparison; the
      // other matrices are still compared.
      const double lr = lo.lr(1), wd = lo.weight_decay;
      const auto u2_of = [&](const std::vector<float>& after) {
        double u2 = 0.0;
        for (std::size_t e = 0; e < after.size(); ++e) {
          const double b = w0[1][e], u = ((b - double(after[e])) / lr - wd * b) / std::sqrt(40.0 / 24.0);
          u2 += u * u;
        }
        return u2;
      };
      const double u2 = u2_of(w[1]), u2_ref = u2_of(wref[1]);
      CAPTURE(u2);
      CAPTURE(u2_ref);
      const bool noise = noise_column_kept({u2, u2_ref});
      CHECK((noise || (std::abs(u2 - 1.0) <= 1e-2 && std::abs(u2_ref - 1.0) <= 1e-2)));
      if (noise) {
        MESSAGE("a rounding column of t1's panel survived the floor; t1 not compared");
        skip_t1 = true;
      }
    }
    check_trajectories();
    CHECK(same_on_every_rank(w));
  }
  // An overflow on the last rank in "t0", whose panel rank 0 orthonormalises: rank 0's record
  // tells every rank, which refuses the step with nothing changed.
  auto g = own_gradients(world().rank(), 5, ps);
  if (world().rank() == n - 1) std::fill(g[0].begin(), g[0].end(), 3e38f);
  const auto before = w;
  const StepReport r = d.step(ptrs(w), ptrs(g));
  CHECK(r.status == Status::out_of_range);
  CHECK(r.bad_param == 0);
  CHECK(w == before);
  auto gm = mean_gradients(6, ps);  // and the trajectory goes on
  g = own_gradients(world().rank(), 6, ps);
  REQUIRE(d.step(ptrs(w), ptrs(g)).status == Status::ok);
  REQUIRE(ref.step(ptrs(wref), ptrs(gm)));
  check_trajectories();
  CHECK(same_on_every_rank(w));
}

TEST_CASE(
    "distributed.dion: reduce_scatter_sum, the collective behind the split QRs, sums each rank's block") {
  // Rank r holds (r + 1)·(e + 1) at every element e (small integers: every sum is exact in any
  // order). Block r has r floats (rank 0's is empty, as for a rank that owns no member of a
  // group). Afterwards rank r's block, at its own place, holds Σ_s (s + 1)·(e + 1), and this
  // rank received its block's floats.
  const distributed::Communicator c = world();
  const int n = c.size(), me = c.rank();
  std::vector<std::int64_t> counts;
  std::int64_t at = 0, total = 0;
  for (int r = 0; r < n; ++r) {
    counts.push_back(r);
    if (r < me) at += r;
    total += r;
  }
  std::vector<float> buf(static_cast<std::size_t>(total) + 1);  // one float past the blocks
  for (std::size_t e = 0; e < buf.size(); ++e)
    buf[e] = static_cast<float>((me + 1) * static_cast<int>(e + 1));
  const float past = buf.back();
  c.reset_traffic();
  c.reduce_scatter_sum(buf.data(), counts);
  const float ranks = static_cast<float>(n * (n + 1) / 2);
  for (std::int64_t e = at; e < at + me; ++e) {
    CAPTURE(e);
    CHECK(buf[static_cast<std::size_t>(e)] == ranks * static_cast<float>(e + 1));
  }
  CHECK(buf.back() == past);  // nothing beyond the blocks is touched
  CHECK(c.traffic().bytes_received == (n > 1 ? 4 * me : 0));
}

TEST_CASE("distributed.dion: a NaN or an overflow on one rank refuses the step on every rank") {
  // The last rank's gradient holds a NaN (caught by the step's agreed scan), or 3e38 everywhere
  // in "tall" (finite, so only its rule sees it: M Q overflows there, the NaN-carrying average
  // brings the failure to the other ranks). Every rank refuses, with nothing changed: the
  // parameters keep their bits and the trajectory continues as if the step never happened.
  for (const bool overflow : {false, true}) {
    CAPTURE(overflow);
    auto ref = one_process();
    REQUIRE(ref.init());
    auto d = distributed_dion();
    REQUIRE(d.init());
    const auto w0 = weights();
    auto w = w0, wref = w0;
    auto probes = probes_of([] { return one_process(); }, w0);
    const int last = world().size() - 1;
    for (int t = 0; t < 4; ++t) {
      CAPTURE(t);
      if (t == 1) {
        auto g = passed_gradients(t);
        if (world().rank() == last) {
          if (overflow)
            std::fill(g[0].begin(), g[0].end(), 3e38f);
          else
            g[1][7] = std::numeric_limits<float>::quiet_NaN();
        }
        const auto before = w;
        const StepReport r = d.step(ptrs(w), ptrs(g));
        CHECK(r.status == (overflow ? Status::out_of_range : Status::non_finite_input));
        CHECK(r.bad_param == (overflow ? 0 : 1));
        CHECK(w == before);
        continue;  // the reference never sees this step
      }
      step_along(d, ref, probes, w, wref, w0, t);
    }
  }
}

TEST_CASE(
    "distributed.dion: a failure after the unreduced step puts their states back from their partition's "
    "backups") {
  // The unreduced parameters' updates run before the ranks agree (their partition's
  // step_fallible), so a failure that only comes later must undo them on every rank: here the
  // bias's rule fails at step 1 on its owner (test::FailOnMagic), after every rank's Dion states
  // advanced. They must be back bit for bit, and the trajectory must go on as if the step never
  // happened. They come back from the backups their partition holds anyway (with replicas Dion
  // is not prechecked: DionDirection::precheck_covers), not from a copy the step takes:
  // memory_use()'s backups are exactly the unreduced states' bytes (the bias's rule keeps only a
  // count), and stay as they were at init() over the steps.
  std::vector<std::string> ls = labels();
  ls[3] = "fragile";
  const auto one = [&] {
    return optim::partition(specs(), ls, route("dion_low", dion(low())), route("dion_full", dion(full())),
                            route("dion_two", dion(two())), route("fragile", test::FailOnMagic{}));
  };
  auto ref = one();
  REQUIRE(ref.init());
  auto d = distributed::distributed_partition(
      world(), specs(), ls, route("dion_low", dion(low())), route("dion_full", dion(full())),
      route("dion_two", dion(two())), route("fragile", test::FailOnMagic{}));
  d.set_layouts(layouts());
  REQUIRE(d.init());
  const optim::MemoryUse at_init = d.memory_use();
  optim::detail::BufferBytes unreduced;
  d.visit_replicas(unreduced);
  CHECK(unreduced.bytes > 0);
  CHECK(at_init.backups == unreduced.bytes);  // one copy of each Dion state (M and Q)
  const auto w0 = weights();
  auto w = w0, wref = w0;
  auto probes = probes_of(one, w0);
  for (int t = 0; t < 4; ++t) {
    CAPTURE(t);
    if (t == 1) {
      auto g = passed_gradients(t);
      g[3][0] = test::FailOnMagic::magic;  // the replicated bias: the same on every rank
      io::FieldSet before, after;
      io::FieldCollector take_before{&before}, take_after{&after};
      d.visit_replicas(take_before);
      const auto w_before = w;
      const StepReport r = d.step(ptrs(w), ptrs(g));
      CHECK(r.status == Status::breakdown);
      CHECK(r.bad_param == 3);
      CHECK(w == w_before);
      d.visit_replicas(take_after);
      CHECK(before.size() > 3);  // the states of the three Dion matrices
      CHECK(after == before);
      continue;  // the reference never sees this step
    }
    step_along(d, ref, probes, w, wref, w0, t);
  }
  const optim::MemoryUse after_steps = d.memory_use();
  CHECK(after_steps.backups == at_init.backups);
  CHECK(after_steps.total() == at_init.total());
}

/// Step 1 of the distributed partition `d` with the last rank refusing its 1st, 2nd, … host
/// allocation (support/allocations.hpp), until an attempt meets no refusal (the test case
/// below); `ref` is the one-process partition over `ps`, `passed(t)` the gradients this rank
/// passes at step t and `mean(t)` the reference's. Returns the last rank's refusals.
template <class D, class P, class Passed, class Mean>
int refuse_each_allocation(D& d, P& ref, const std::vector<ParamSpec>& ps, const Passed& passed,
                           const Mean& mean) {
  const auto w0 = weights(ps);
  auto w = w0, wref = w0;
  {  // step 0: past the first step's growth, the steady state
    auto g = passed(0), gm = mean(0);
    REQUIRE(d.step(ptrs(w), ptrs(g)).status == Status::ok);
    REQUIRE(ref.step(ptrs(wref), ptrs(gm)));
  }
  const bool here = world().rank() == world().size() - 1;
  const auto g = passed(1);
  io::FieldSet before_r, before_l;
  io::FieldCollector take_r{&before_r}, take_l{&before_l};
  d.visit_replicas(take_r);
  d.visit_local(take_l);
  const auto w_before = w;
  int refusals = 0;
  for (std::int64_t k = 1;; ++k) {
    CAPTURE(k);
    REQUIRE(k < 100000);
    auto gk = g;                                            // every attempt starts from the same gradients
    const std::vector<float*> wp = ptrs(w), gp = ptrs(gk);  // before the probe
    const auto a = schatten::test::refusing_allocation_if(here, k, [&] { return d.step(wp, gp); });
    REQUIRE_FALSE(a.threw);
    const auto code = static_cast<std::int64_t>(a.result.status);
    CHECK(world().allreduce_min(code) == code);  // the same status on every rank
    CHECK(-world().allreduce_min(-code) == code);
    const bool refused = world().allreduce_min(a.refused ? 0 : 1) == 0;
    if (a.result) {
      CHECK_FALSE(refused);
      auto gm = mean(1);
      REQUIRE(ref.step(ptrs(wref), ptrs(gm)));
      CHECK(relative_gap(w, wref, w0) <= kTrajectoryTolerance);
      CHECK(same_on_every_rank(w));
      return refusals;
    }
    ++refusals;
    CHECK(refused);
    CHECK(a.result.status == Status::out_of_memory);
    CHECK(w == w_before);
    io::FieldSet after_r, after_l;
    io::FieldCollector again_r{&after_r}, again_l{&after_l};
    d.visit_replicas(again_r);
    d.visit_local(again_l);
    CHECK(after_r == before_r);
    CHECK(after_l == before_l);
  }
}

TEST_CASE("distributed.dion: heap exhaustion on one rank refuses the step on every rank, and none waits") {
  // The unreduced parameters' kernel runs collectives of its own (the averages of the panels,
  // kernels/low_rank.hpp "Replicas"), so a rank whose host allocation fails between them must
  // not stop alone: the others would wait in the next average (a hang fails the test by ctest's
  // timeout). In step 1 the last rank refuses each of its host allocations in turn
  // (refuse_each_allocation): every rank must return the same status, no exception may leave
  // the call, a refused step changes no parameter and no state on any rank (bit for bit), and
  // the attempt without a refusal is the one-process step of the mean gradient. Three times:
  // the matrices of three shapes (each rank takes every QR: DionDirection::update); same-shape
  // matrices whose QRs split across the ranks (update_batch; groups on 2 and 4 ranks); and the
  // three shapes with each Dion chain ending in test::AllocatesPerCall, which allocates after
  // the kernel, so that the refused rank stops between the kernels of two parameters while the
  // others go on to the next kernel's collectives. Prechecks as by default (with replicas Dion
  // is not prechecked: its partition keeps the backups that undo a refused step).
  // On Kokkos 3.4 (measured 2026-12-04, 1, 2 and 4 ranks) the first two make no host allocation
  // in such a step, so no refusal; the third refuses once per Dion parameter. Kokkos 4 allocates
  // inside its own calls, also between the kernel's averages (an execution-space instance's
  // shared pointer, named fences, Kokkos Kernels' profiling regions): there every sweep refuses
  // many times. Without DistributedPartition's stop protocol (ReplicaCollectives::proceed and
  // finish), the third sweep hung on 2 ranks on Kokkos 3.4 until the timeout (2026-12-05), and
  // on Kokkos 4.6.01 the first failed (the other ranks' next collective: MPI_ERR_TRUNCATE).
  auto ref = one_process();
  REQUIRE(ref.init());
  auto d = distributed_dion();
  REQUIRE(d.init());
  const int shapes =
      refuse_each_allocation(d, ref, specs(), passed_gradients, [](int t) { return mean_gradients(t); });
  // Not a structured binding: the lambdas below cannot capture one in C++17 (clang).
  const auto split_specs = same_shape_specs(4, 3);
  const std::vector<ParamSpec>& ps = split_specs.first;
  const std::vector<std::string>& ls = split_specs.second;
  auto ref_split = optim::partition(ps, ls, route("dion_low", dion(low())), route("dion_two", dion(two())));
  REQUIRE(ref_split.init());
  auto d_split = distributed::distributed_partition(world(), ps, ls, route("dion_low", dion(low())),
                                                    route("dion_two", dion(two())));
  d_split.set_layouts(std::vector<Layout>(ps.size(), Layout::unreduced));
  REQUIRE(d_split.init());
  const int split = refuse_each_allocation(
      d_split, ref_split, ps, [&](int t) { return own_gradients(world().rank(), t, ps); },
      [&](int t) { return mean_gradients(t, ps); });
  // test::AllocatesPerCall leaves the update as it is: the reference is one_process() again.
  const auto allocating = [](const DionOptions& o) { return test::ending_in_allocation(dion(o)); };
  auto ref_alloc = one_process();
  REQUIRE(ref_alloc.init());
  auto d_alloc = distributed::distributed_partition(
      world(), specs(), labels(), route("dion_low", allocating(low())),
      route("dion_full", allocating(full())), route("dion_two", allocating(two())), route("adamw", adamw()));
  d_alloc.set_layouts(layouts());
  REQUIRE(d_alloc.init());
  const int between = refuse_each_allocation(d_alloc, ref_alloc, specs(), passed_gradients,
                                             [](int t) { return mean_gradients(t); });
  CHECK(between >= 3);  // at least one per Dion parameter, after its kernel
  if (world().rank() == world().size() - 1)
    MESSAGE("refusals on the last rank in an unreduced step: "
            << shapes << " (three shapes), " << split << " (same shapes, QRs split), " << between
            << " (three shapes, allocating after the kernel)");
}

TEST_CASE("distributed.dion: checkpoints hold the mean momentum and load on n ranks and on one process") {
  auto ref = one_process();
  REQUIRE(ref.init());
  auto d = distributed_dion();
  REQUIRE(d.init());
  const auto w0 = weights();
  auto w = w0, wref = w0;
  auto probes = probes_of([] { return one_process(); }, w0);
  for (int t = 0; t < 3; ++t)
    step_along(d, ref, probes, w, wref, w0, t);
  const std::string path = shared_path("ckpt");
  io::CheckpointHeader h;
  h.step = 3;
  h.signature = d.signature();
  CHECK(h.signature == ref.signature());
  std::string err;
  REQUIRE(distributed::save_checkpoint(path, d, h, &err) == Status::ok);
  // The file has the one-process partition's fields. Q and the counts are the same on every rank
  // and come back bit for bit (their double mean); M is the ranks' mean, which the reference's
  // M (the mean gradient's) equals to rounding.
  io::FieldSet file, mine, want = io::capture(ref);
  io::CheckpointHeader fh;
  REQUIRE(io::read_checkpoint(path, file, fh, &err) == Status::ok);
  io::FieldCollector c{&mine};
  d.visit_replicas(c);
  CHECK(file.size() == want.size());
  for (const auto& field : want) {
    const std::string& name = field.first;  // (no structured binding: doctest's CAPTURE is a lambda)
    const io::FieldValue& value = field.second;
    CAPTURE(name);
    REQUIRE(file.count(name) == 1);
    const auto* fv = std::get_if<std::vector<float>>(&file[name]);
    const auto* rv = std::get_if<std::vector<float>>(&value);
    if (name.size() > 2 && name.compare(name.size() - 2, 2, "/m") == 0 && name.rfind("bias", 0) != 0) {
      REQUIRE(fv);
      double gap = 0.0, size = 0.0;
      for (std::size_t e = 0; e < fv->size(); ++e) {
        gap = std::max(gap, std::fabs(double((*fv)[e]) - double((*rv)[e])));
        size = std::max(size, std::fabs(double((*rv)[e])));
      }
      CHECK(gap <= kMomentumTolerance * size);
    } else if (name.rfind("bias", 0) != 0 && name != "_partition/skipped_steps") {
      CHECK(file[name] == mine[name]);  // this rank's Q and count, unchanged by the mean
    }
  }
  // Restored on n ranks (every rank's M is the mean) and on one process: both continue along
  // the reference.
  auto d2 = distributed_dion();
  REQUIRE(d2.init());
  io::CheckpointHeader h2;
  CHECK(distributed::load_checkpoint(path, d2, h2, ref.signature(), &err) == Status::ok);
  CAPTURE(err);
  auto one = one_process();
  REQUIRE(one.init());
  REQUIRE(io::load_checkpoint(path, one, h2, ref.signature(), &err) == Status::ok);
  auto w2 = w, w1 = w;
  for (int t = 3; t < 6; ++t) {
    CAPTURE(t);
    auto g = passed_gradients(t), g2 = g;
    auto gm = mean_gradients(t), gm1 = gm;
    REQUIRE(d.step(ptrs(w), ptrs(g)).status == Status::ok);
    REQUIRE(d2.step(ptrs(w2), ptrs(g2)).status == Status::ok);
    REQUIRE(one.step(ptrs(w1), ptrs(gm1)));
    probes.step(gm, t);
    REQUIRE(ref.step(ptrs(wref), ptrs(gm)));
    const double bound = trajectory_bound(probes, wref, w0);
    CAPTURE(bound);
    CHECK(relative_gap(w2, wref, w0) <= bound);
    CHECK(relative_gap(w1, wref, w0) <= bound);
    CHECK(same_on_every_rank(w2));
  }
  world().allreduce_min(0);
  if (world().rank() == 0) std::filesystem::remove(path);
}

TEST_CASE(
    "distributed.dion: a bf16 momentum steps unreduced, its refusal reaches every rank, its mean is saved") {
  // Each rank keeps its own M_i in bf16 (docs/optim.md "State precision"), rounded once per step
  // after the feedback, so the mean of the stored M_i is not the rounded mean: the trajectory
  // is checked against the one-process fp32 Dion of the mean gradient to bf16's tolerance
  // (below), and on one rank against the one-process bf16 Dion bit for bit (one replica's
  // average is itself). At step 2 the last rank's sum exceeds what bf16 holds (two elements of
  // 2.5e38 in "tall": each finite in bf16, ‖M + G‖_F above kBf16Max): that rank poisons its
  // widened sum, the first average brings the NaN to the others, and every rank refuses with
  // out_of_range (DionDirection::verdict()) and the weights kept.
  // Then a checkpoint: the ranks' mean M rounded to bf16, which loads into a bf16 partition on n
  // ranks and into one process.
  const StateStorage bf16 = Precision::bf16;
  auto ref = one_process();
  REQUIRE(ref.init());
  auto ref16 = one_process(bf16);
  REQUIRE(ref16.init());
  auto d = distributed_dion(bf16);
  REQUIRE(d.init());
  CHECK(d.signature() == ref16.signature());
  const auto w0 = weights();
  auto w = w0, wref = w0, w16 = w0;
  const int last = world().size() - 1;
  double worst = 0.0;
  for (int t = 0; t < 5; ++t) {
    CAPTURE(t);
    auto g = passed_gradients(t);
    if (t == 2) {
      if (world().rank() == last) g[0][0] = g[0][1] = 2.5e38f;
      const auto before = w;
      const StepReport r = d.step(ptrs(w), ptrs(g));
      CHECK(r.status == Status::out_of_range);
      CHECK(r.bad_param == 0);
      CHECK(w == before);
      continue;  // the references never see this step
    }
    step_bf16_along(d, ref, ref16, w, wref, w16, w0, g, mean_gradients(t), worst);
  }
  const std::string path = shared_path("ckpt_bf16");
  CHECK(saved_bf16_fields(d, path, "/m") == 3);
  std::string err;
  auto d2 = distributed_dion(bf16);
  REQUIRE(d2.init());
  io::CheckpointHeader h2;
  CHECK(distributed::load_checkpoint(path, d2, h2, d.signature(), &err) == Status::ok);
  CAPTURE(err);
  auto one = one_process(bf16);
  REQUIRE(one.init());
  REQUIRE(io::load_checkpoint(path, one, h2, d.signature(), &err) == Status::ok);
  auto w2 = w, w1 = w;
  for (int t = 5; t < 7; ++t) {
    CAPTURE(t);
    auto g = passed_gradients(t);
    auto gm = mean_gradients(t), gm1 = gm;
    REQUIRE(d2.step(ptrs(w2), ptrs(g)).status == Status::ok);
    REQUIRE(one.step(ptrs(w1), ptrs(gm1)));
    REQUIRE(ref.step(ptrs(wref), ptrs(gm)));
    worst = std::max({worst, relative_gap(w2, wref, w0), relative_gap(w1, wref, w0)});
    CHECK(relative_gap(w2, wref, w0) <= kBf16TrajectoryTolerance);
    CHECK(relative_gap(w1, wref, w0) <= kBf16TrajectoryTolerance);
    CHECK(same_on_every_rank(w2));
  }
  MESSAGE("bf16 against the fp32 mean trajectory: " << worst << " on " << world().size() << " rank(s)");
  world().allreduce_min(0);
  if (world().rank() == 0) std::filesystem::remove(path);
}

TEST_CASE("distributed.dion: a bf16 Q steps unreduced, alone and in split groups, the same on every rank") {
  // Q in bf16 (DionOptions::q_storage, microsoft/dion's Q_dtype) with M in bf16 too, over the
  // same-shape matrices of the split-QR case (on 2 and 4 ranks a group's members widen their Q
  // into slots of one shared float scratch, DionDirection::kernel_q; on one rank each steps
  // alone). Every rank rounds the same Q′ alike, so the weights stay the same on every rank; the
  // trajectory stays within kBf16TrajectoryTolerance of the one-process fp32 Dion of the mean
  // gradient (Q's rounding, 2⁻⁹ of each entry, only moves the next warm start, less than M's
  // rounding does), and on one rank it is the one-process step of the same storages bit for
  // bit. The checkpoint holds Q as bf16 values and loads into one process. Measured (default
  // seed, 2026-12-04): 9.4e-3 on 1 rank, 4.7e-3 on 2, 4.3e-3 on 4; with every member's Q widened
  // into the same slot (a broken kernel_q), 0.58 and 0.65 on 2 and 4 ranks.
  const auto specs_and_labels = same_shape_specs(3, 2);  // (not a structured binding: a lambda takes them)
  const std::vector<ParamSpec>& ps = specs_and_labels.first;
  const std::vector<std::string>& ls = specs_and_labels.second;
  DionOptions lo = low(), tw = two();
  lo.mu_storage = tw.mu_storage = Precision::bf16;
  lo.q_storage = tw.q_storage = Precision::bf16;
  const auto one_process_of = [&](const DionOptions& a, const DionOptions& b) {
    return optim::partition(ps, ls, route("dion_low", dion(a)), route("dion_two", dion(b)));
  };
  auto ref = one_process_of(low(), two());
  REQUIRE(ref.init());
  auto ref16 = one_process_of(lo, tw);
  REQUIRE(ref16.init());
  auto d = distributed::distributed_partition(world(), ps, ls, route("dion_low", dion(lo)),
                                              route("dion_two", dion(tw)));
  d.set_layouts(std::vector<Layout>(ps.size(), Layout::unreduced));
  REQUIRE(d.init());
  CHECK(d.signature().find("q_storage=bf16") != std::string::npos);
  const auto w0 = weights(ps);
  auto w = w0, wref = w0, w16 = w0;
  double worst = 0.0;
  for (int t = 0; t < 4; ++t) {
    CAPTURE(t);
    step_bf16_along(d, ref, ref16, w, wref, w16, w0, own_gradients(world().rank(), t, ps),
                    mean_gradients(t, ps), worst);
  }
  MESSAGE("bf16 M and Q against the fp32 mean trajectory: " << worst << " on " << world().size()
                                                            << " rank(s)");
  const std::string path = shared_path("ckpt_q_bf16");
  CHECK(saved_bf16_fields(d, path, "/q") == ps.size());
  std::string err;
  auto one = one_process_of(lo, tw);
  REQUIRE(one.init());
  io::CheckpointHeader h2;
  CHECK(io::load_checkpoint(path, one, h2, d.signature(), &err) == Status::ok);
  CAPTURE(err);
  world().allreduce_min(0);
  if (world().rank() == 0) std::filesystem::remove(path);
}

/// A rule that takes replicas (optim::takes_replicas: it has `replicas`) and has a precheck that
/// covers it: the kind of route an unreduced parameter cannot have (init, below). It declares a
/// gradient limit and its bound (u passes through), so that its route keeps no copy of its state
/// for want of one (optim/rule.hpp, update_may_overflow_of).
struct PrecheckedReplica {
  static constexpr const char* name = "prechecked_replica";
  static constexpr bool may_fail = true;
  Replicas replicas;
  struct State {};
  State init(const BlockShape&) const { return {}; }
  double max_gradient() const { return 1e30; }
  double update_bound(double in, const BlockShape&) const { return in; }
  Status precheck(ConstBlock, const State&, ConstBlock, float*) const { return Status::ok; }
  Status update(Block, State&, ConstBlock) const { return Status::ok; }
  template <class V>
  friend void visit_fields(V&, State&) {}
};

TEST_CASE("distributed.dion: init refuses what an unreduced parameter cannot be, on every rank") {
  {  // a route whose rule averages nothing: AdamW would step each rank's own gradient
    auto d = distributed::distributed_partition(world(), specs(), labels(), route("dion_low", dion(low())),
                                                route("dion_full", dion(full())),
                                                route("dion_two", dion(two())), route("adamw", adamw()));
    d.set_layouts({Layout::unreduced, Layout::unreduced, Layout::unreduced, Layout::unreduced});
    const StepReport r = d.init();
    CHECK(r.status == Status::invalid_argument);
    CHECK(r.bad_param == 3);
    CHECK(std::string(r.message).find("does not take replicas") != std::string::npos);
  }
  {  // bounds and unreduced
    auto d = distributed_dion();
    d.set_row_bounds({distributed::chunk_bounds(48, world().size()), {}, {}, {}});
    const StepReport r = d.init();
    CHECK(r.status == Status::invalid_argument);
    CHECK(std::string(r.message).find("Layout::unreduced") != std::string::npos);
  }
  if (world().size() > 1) {  // layouts that differ between the ranks: "tall" unreduced on rank 0 only
    auto d = distributed_dion();
    std::vector<Layout> l = layouts();
    if (world().rank() != 0) l[0] = Layout::replicated;
    d.set_layouts(l);
    const StepReport r = d.init();
    CHECK(r.status == Status::invalid_argument);
    CHECK(std::string(r.message).find("the layouts") != std::string::npos);
  }
  {  // global clipping would clip each rank's own gradient, not the mean
    auto d = distributed_dion();
    d.set_global_clip(1.0);
    CHECK(d.init().status == Status::invalid_argument);
  }
  {  // a rule taking replicas whose precheck covers it: its update would run after the agreement,
     // where the step can neither hash it first nor undo it (DistributedPartition::init)
    auto d = distributed::distributed_partition(
        world(), specs(), labels(), route("dion_low", dion(low())), route("dion_full", dion(full())),
        route("dion_two", PrecheckedReplica{}), route("adamw", adamw()));
    d.set_layouts(layouts());
    const StepReport r = d.init();
    CHECK(r.status == Status::internal_error);
    CHECK(std::string(r.message).find("prechecked or cannot fail") != std::string::npos);
  }
  // A failed init leaves no partition to step.
  auto d = distributed_dion();
  d.set_global_clip(1.0);
  (void)d.init();
  auto w = weights();
  auto g = passed_gradients(0);
  CHECK(d.step(ptrs(w), ptrs(g)).status == Status::invalid_argument);
}

}  // namespace distributed_test_mpi_dion
