// SPDX-License-Identifier: Apache-2.0
/// \file
/// Many parameters: labels that route each parameter to a chain (Muon for hidden matrices, AdamW
/// for the rest), the helper that proposes those labels from names and shapes, and the
/// multi-parameter step over plain arrays.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <new>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "schatten/optim/chain.hpp"

namespace schatten::optim {

/// A parameter as the caller describes it: a name and the shape of its tensor (any rank).
struct ParamSpec {
  std::string name;
  std::vector<index_t> shape;
};

/// The matrix a tensor is optimised as: rank 0 → 1 × 1, rank 1 → 1 × n, rank ≥ 2 →
/// shape[0] × (product of the rest) (conv (out, in, kh, kw) → out × in·kh·kw; a stacked-expert
/// tensor (experts, out, in) is flattened the same way unless it is cut into its experts,
/// which is what spectral rules want: split.hpp's stack_of()).
BlockShape flatten(const std::vector<index_t>& shape);
/// True when flatten(shape) is a valid_shape() (rule.hpp): no negative dimension, at most
/// kMaxBlockElements elements, and no product of dimensions that overflows on the way.
/// Partition::init refuses the other shapes.
bool valid_param_shape(const std::vector<index_t>& shape);

/// True when `name` is a path of non-empty parts other than "." and "..", without a leading or
/// trailing '/': a name HDF5 keeps as written when checkpoint fields are stored under it. It
/// rewrites the others ('a//b' as 'a/b', 'x/' as 'x', '.' as the group itself), so a checkpoint
/// saved under such a name could not be loaded (found by an audit, 2026-12-06).
bool valid_param_name(const std::string& name);

/// "" when every parameter has a valid_param_shape() and a name of its own that can name
/// checkpoint fields, else what Partition::init (and distributed::DistributedPartition::init, on
/// every rank) refuses: the first parameter whose shape is invalid or whose name is empty, starts
/// or ends with '/', or has an empty, "." or ".." part between slashes (HDF5 would store its
/// fields under another name, and the checkpoint would not load), else the second of two of one
/// name (names prefix every checkpoint field: the two would share their fields), its index in
/// *bad. Cost: one pass over the shapes and names and a sort of the names.
std::string params_problem(const std::vector<ParamSpec>& params, std::ptrdiff_t* bad);

/// How propose_labels() decides.
struct LabelPolicy {
  std::string spectral = "muon";  ///< label of hidden matrices
  std::string other = "adamw";    ///< label of everything else
  /// Parameters in whose name one of these begins a word (at the start, or after a character
  /// that is not a letter: "lm_head.weight", "tok_embeddings", "transformer.wte", "heads.0")
  /// go to `other` even when they are matrices (Keller Jordan / Moonlight routing: embeddings
  /// and the output head, algorithms.md §1.4). Inside a word they do not count: torch's
  /// "multihead_attn" is a hidden attention layer (until 2026-12-07 any substring counted, and
  /// sent it to AdamW); "unembed" (TransformerLens' output head) is listed for that reason. An
  /// entry that starts with another character (".gate.") counts wherever it occurs.
  std::vector<std::string> exclude = {"embed", "unembed", "wte", "wpe", "lm_head", "head", "classifier"};
  /// Rank ≥ 2 tensors whose flattened matrix has a side smaller than this go to `other`
  /// (e.g. 1 × n after flattening).
  index_t min_side = 2;
};

/// Labels for a parameter list: `spectral` for rank ≥ 2 tensors with both flattened sides ≥
/// min_side and no excluded word in the name (LabelPolicy::exclude), `other` otherwise (biases,
/// norms, gains, embeddings, heads).
std::vector<std::string> propose_labels(const std::vector<ParamSpec>& params, const LabelPolicy& policy = {});

/// A label and the rule that serves it.
template <class R>
struct Route {
  std::string label;
  R rule;
};
template <class R>
Route<R> route(std::string label, R rule) {
  return Route<R>{std::move(label), std::move(rule)};
}

/// What a step does with a NaN/Inf gradient, or a finite one beyond its route's max_gradient()
/// (e.g. |g| > 2^63 through AdamW): refuse with non_finite_input / out_of_range (default), or
/// skip the whole step (nothing changes), count it and report ok with `skipped` set.
enum class NonFinitePolicy { error, skip };

/// Rules (chains) that offer an update without their own NaN scan and rollback.
template <class R, class = void>
struct has_update_unguarded : std::false_type {};
template <class R>
struct has_update_unguarded<
    R, std::void_t<decltype(std::declval<const R&>().update_unguarded(
           std::declval<Block>(), std::declval<typename R::State&>(), std::declval<ConstBlock>()))>>
    : std::true_type {};

/// The bytes a partition holds, by kind (Partition::memory_use(); docs/optim.md "Memory"). All
/// but `workspace` are in the partition's memory() kind; the workspace is in the memory of
/// Kokkos::DefaultExecutionSpace; `exchange` is host memory.
struct MemoryUse {
  std::size_t state = 0;    ///< the states' buffers (what a checkpoint holds)
  std::size_t backups = 0;  ///< the copies of the states of routes that may fail, not prechecked
  std::size_t scratch = 0;  ///< the rules' scratch buffers, each shared one counted once
  std::size_t batches = 0;  ///< the same-shape groups' batch buffers
  /// The kernel workspace the states and groups share, its host scratch and staging copies too.
  std::size_t workspace = 0;
  /// A distributed partition's buffers for the parameters, gradients and updates it moves
  /// between ranks, and its activation Gram sums (distributed::DistributedPartition::
  /// memory_use); 0 for a Partition.
  std::size_t exchange = 0;
  /// A SplitPartition's copies of its column and grouped pieces (parameter and gradient, in the
  /// partition's memory() kind; split.hpp); 0 for a Partition.
  std::size_t pieces = 0;
  std::size_t total() const { return state + backups + scratch + batches + workspace + exchange + pieces; }
  /// Adds another partition's bytes, kind by kind.
  MemoryUse& operator+=(const MemoryUse& o) {
    state += o.state;
    backups += o.backups;
    scratch += o.scratch;
    batches += o.batches;
    workspace += o.workspace;
    exchange += o.exchange;
    pieces += o.pieces;
    return *this;
  }
};

namespace detail {
/// Sums the bytes of the buffers a visit names, each buffer once (by address: a shared scratch
/// is named once per parameter).
struct BufferBytes {
  std::set<const void*> seen;
  std::size_t bytes = 0;
  template <class T>
  void operator()(const std::string&, BasicBuffer<T>& b) {
    if (b.size() > 0 && seen.insert(b.data()).second) bytes += b.size() * sizeof(T);
  }
  template <class T>
  void operator()(const std::string&, T&) {}  // counts and scalars
};
}  // namespace detail

/// Outcome of a multi-parameter step.
struct StepReport {
  Status status = Status::ok;
  const char* message = "";
  std::ptrdiff_t bad_param = -1;  ///< index of the parameter that made the step fail (or skip)
  bool skipped = false;           ///< NonFinitePolicy::skip dropped this step
  explicit operator bool() const noexcept { return status == Status::ok; }
};

/// The report of a refused init or step: `status`, the message (a string that outlives the
/// report) and the offending parameter (−1: none in particular).
inline StepReport refusal(const char* message, std::ptrdiff_t bad_param,
                          Status status = Status::invalid_argument) {
  StepReport r;
  r.status = status;
  r.message = message;
  r.bad_param = bad_param;
  return r;
}

/// "" when `b` splits the `total` rows, columns or elements (`unit`) of parameter `name` among
/// `parts` processes — parts + 1 nondecreasing boundaries from 0 to total, process r holding
/// [b[r], b[r+1]) — otherwise what is wrong, naming the `kind` of bounds. The one check of
/// distributed::DistributedPartition's set_row_bounds, set_column_bounds and set_flat_bounds
/// and of SplitPartition::set_source_rows.
inline std::string split_problem(const std::vector<index_t>& b, std::size_t parts, index_t total,
                                 const std::string& name, const char* kind = "row",
                                 const char* unit = "rows") {
  bool ok = b.size() == parts + 1 && b.front() == 0 && b.back() == total;
  for (std::size_t r = 1; ok && r < b.size(); ++r)
    ok = b[r - 1] <= b[r];
  if (ok) return {};
  return std::string("the ") + kind + " bounds of '" + name + "' are not " + std::to_string(parts + 1) +
         " nondecreasing boundaries from 0 to its " + std::to_string(total) + " " + unit;
}

/// The blocks of a band of a flattened row-major matrix with `ld` columns that a run of its
/// elements [begin, end) holds (a flat shard): calls f(at, rows, width) for each nonempty block,
/// in element order — `rows` rows of `width` elements at stride ld, the first at element `at`.
/// The band is rows [start, start + width) when axis = 0, contiguous, so at most one block, given
/// as one row of its held elements; or columns [start, start + width) of every row when axis = 1,
/// met by the run in at most three blocks: the end of the run's first row, its whole rows, the
/// start of its last row. Preconditions: 0 <= begin, end <= the matrix's elements (axis 1).
/// Cost O(1). The one geometry of QkClip's slices and SplitLayout's copied pieces over shards.
template <class F>
void for_each_band_block(index_t ld, index_t begin, index_t end, int axis, index_t start, index_t width,
                         F&& f) {
  if (axis == 0) {
    const index_t lo = std::max(start * ld, begin), hi = std::min((start + width) * ld, end);
    if (hi > lo) f(lo, index_t(1), hi - lo);
    return;
  }
  if (ld == 0 || end <= begin) return;
  // Columns [start, start + width) of row r, within elements [from, to) of that row.
  auto part_of_row = [&](index_t r, index_t from, index_t to) {
    const index_t lo = std::max(start, from - r * ld), hi = std::min(start + width, to - r * ld);
    if (hi > lo) f(r * ld + lo, index_t(1), hi - lo);
  };
  const index_t full_first = (begin + ld - 1) / ld, full_end = end / ld;  // whole rows [.., ..)
  if (full_first > full_end) {                                            // the run lies inside one row
    part_of_row(begin / ld, begin, end);
    return;
  }
  if (begin < full_first * ld) part_of_row(full_first - 1, begin, full_first * ld);
  if (full_end > full_first) f(full_first * ld + start, full_end - full_first, width);
  if (end > full_end * ld) part_of_row(full_end, full_end * ld, end);
}

/// The count check of every step over pointer lists: one parameter and one gradient pointer
/// for each of `count` parameters. ok, or invalid_argument. Also the whole first check of the
/// steps whose callers may pass null for what they do not hold (SplitPartition over shards,
/// distributed::DistributedPartition).
inline StepReport check_counts(std::size_t count, const std::vector<float*>& params,
                               const std::vector<float*>& grads) {
  if (params.size() != count || grads.size() != count)
    return refusal("step: one parameter and one gradient pointer per parameter", -1);
  return StepReport{};
}

/// Global clipping's factor for a gradient norm (torch.nn.utils.clip_grad_norm_'s
/// clip_coef = max_norm/(total_norm + 1e-6), clamped to 1; 1: nothing to scale). Applied with
/// scale_by(), in double, so that a factor below FLT_MIN (gradients near FLT_MAX) keeps its
/// precision. Until 2026-12-07 the factor was max_norm/norm without the 1e-6, applied as one
/// float: 2.6× torch's at max_norm 1e-7, and a clipped norm of 1.0001 for 3e38 gradients
/// (audit of that day).
inline double global_clip_factor(double norm, double max_norm) {
  const double f = max_norm / (norm + 1e-6);
  return f < 1.0 ? f : 1.0;
}

/// The check of a global clip setting (Partition and distributed::DistributedPartition
/// set_global_clip, at init() and at every step): ok for max_norm ≥ 0 (0 disables clipping, +Inf
/// clips nothing), else invalid_argument: a NaN or negative max_norm would turn clipping off
/// without a word.
inline StepReport check_global_clip(double max_norm) {
  if (max_norm >= 0.0) return StepReport{};
  return refusal("set_global_clip: max_norm must be >= 0 (0 disables clipping)", -1);
}

/// The first check of the steps over whole arrays (Partition, kokkos::step): check_counts, and
/// no pointer null unless its parameter is empty. ok, or invalid_argument naming the first
/// offender.
inline StepReport check_pointers(const std::vector<ParamSpec>& specs, const std::vector<float*>& params,
                                 const std::vector<float*>& grads) {
  if (StepReport r = check_counts(specs.size(), params, grads); !r) return r;
  for (std::size_t i = 0; i < specs.size(); ++i)
    if ((params[i] == nullptr || grads[i] == nullptr) && flatten(specs[i].shape).size() > 0)
      return refusal("null pointer", static_cast<std::ptrdiff_t>(i));
  return StepReport{};
}

namespace detail {
/// One array of a step: its first byte, its length in bytes, its parameter.
struct AddressRange {
  std::uintptr_t start, bytes;
  std::size_t param;
};
/// What a refusal of overlapping arrays says after the two parameters' names (Partition and
/// SplitPartition).
inline constexpr const char* kOverlapping =
    ": arrays that overlap (each parameter and each gradient needs its own)";
/// The first two of a step's arrays (params[i] and grads[i], elements(i) floats each; empty
/// ones skipped) that overlap, as their parameters' indices (the lower first), or {n, n} when
/// none do. `ranges` is scratch: reserve 2n entries and nothing is allocated. Cost: a sort of
/// the 2n address ranges.
template <class Elements>
std::pair<std::size_t, std::size_t> first_overlap(std::vector<AddressRange>& ranges,
                                                  const std::vector<float*>& params,
                                                  const std::vector<float*>& grads, Elements elements) {
  ranges.clear();
  for (std::size_t i = 0; i < params.size(); ++i) {
    const auto n = static_cast<std::uintptr_t>(elements(i)) * sizeof(float);
    if (n == 0) continue;
    ranges.push_back({reinterpret_cast<std::uintptr_t>(params[i]), n, i});
    ranges.push_back({reinterpret_cast<std::uintptr_t>(grads[i]), n, i});
  }
  std::sort(ranges.begin(), ranges.end(),
            [](const AddressRange& a, const AddressRange& b) { return a.start < b.start; });
  for (std::size_t k = 1; k < ranges.size(); ++k)
    if (ranges[k].start - ranges[k - 1].start < ranges[k - 1].bytes)
      return {std::min(ranges[k - 1].param, ranges[k].param), std::max(ranges[k - 1].param, ranges[k].param)};
  return {params.size(), params.size()};
}
}  // namespace detail

/// Routes each parameter to the rule of its label. The state is one State per parameter, held
/// by the partition; `step` updates all parameters or none:
///   1. every gradient is checked for NaN/Inf (non_finite_input) and against its route's
///      max_gradient() (out_of_range; after global clipping when that is on), bad_param set,
///      nothing touched; NonFinitePolicy::skip turns both refusals into a reported skip. Every
///      parameter is checked for NaN/Inf too (non_finite_input under either policy: a skip
///      would not repair it), since its rules would carry it into their states (sgd's
///      momentum, DF-Muon's curvature estimate) where it outlives a repaired parameter, and,
///      where its state is not copied (step 3), for entries beyond FLT_MAX/4 (out_of_range:
///      its W + u could overflow where nothing could undo its state; docs/optim.md "The float
///      range of W + u"); cost: one read of the parameters;
///   2. the parameters whose rule tells its failures in advance (rule.hpp, precheck; Muon's
///      chain and its variants) are prechecked: a refusal (for Muon, a momentum or gradient
///      entry beyond TraceMomentum::overflow_bound(), out_of_range) leaves everything as it was;
///   3. each parameter's update is computed into its gradient buffer, after a copy of its state
///      when its route may fail and was not prechecked;
///   4. if a rule fails, every state already advanced is restored and the step fails; so too
///      when the update of a parameter whose state was copied would carry it beyond the float
///      range (W + u overflows: out_of_range; docs/optim.md "The float range of W + u");
///   5. only then are all updates added to the parameters.
/// Parameters are host arrays, row-major in their flattened shape. Gradient buffers are consumed:
/// after a step, successful or not, they hold updates or partial results. Cost beyond the rules:
/// for each parameter whose route may fail, either its precheck (Muon: one read of the gradient
/// and the momentum) or one copy per step of its state (the price of all-or-nothing steps for
/// the routes that cannot tell their failures in advance: Freon, schatten_muon, QDWH Muon, …; AdamW and
/// SGD cannot fail and need neither, since the routes that may fail run first); the copies
/// are allocated once, at init().
///
/// **Same-shape batching** (on by default, set_batching()): when a route's rule has a batched
/// form (has_update_batch: a chain containing Orthogonalize, OrthogonalizeWeights,
/// MuAdamDirection, SpectralPower, SpectralClip, SpectralClipWeights, KaonSpectrum,
/// Dion2Direction, or DionDirection whose replicas split their QRs) that it uses at init()
/// (optim::batch_enabled), init() groups the parameters of that route whose flattened shapes are equal
/// (groups of two or more). In step 2 a group is one unit: its gradients are copied into a
/// contiguous batch buffer, the chain runs stage by stage over the group (element-wise rules
/// per block, the matrix function as ONE batched kernel call), and the updates are copied back
/// into the gradient buffers. Each block gets the same arithmetic as without batching (the
/// batched kernels compute every matrix of a batch as they compute a single one; tested bit for
/// bit). Memory: one extra copy of each group's blocks (the batch buffer), and the kernels'
/// workspace grows to the largest group's batch; both are reserved at init(), so step allocates
/// no buffer (nor host scratch on Kokkos 3.4: set_prechecks). Time: two extra
/// passes (copy in, copy out) over the grouped gradients; the gain is one kernel launch sequence
/// per group instead of one per parameter (the point on GPUs). States, checkpoints (names and
/// visit order), NaN policy, global clipping and all-or-nothing are the same with and without
/// batching.
///
/// **Shared scratch** (docs/optim.md "Memory"): every state and group uses the partition's one
/// kernel workspace (rule.hpp, visit_workspaces), grown at init() to the largest reservation,
/// and the states of one route and shape share the rules' shareable scratch
/// (visit_shareable_scratch). So a partition is stepped from one thread at a time; two
/// partitions never share either (a copy shares them until its next init()).
///
/// **Device-resident steps** (init(MemoryKind::device)): the states, the batch buffers and the
/// state backups live in the memory space of Kokkos::DefaultExecutionSpace, and step() takes
/// pointers to parameters and gradients in that memory. Every element-wise pass (the scans,
/// clipping, the rules, the copies, param += u) is then a kernel of that space and the matrix
/// functions run on the device memory in place: no byte crosses to the host but the scalars of
/// the reductions (the scans, norms and inner products) and, on schatten_muon's criterion steps,
/// the criterion's inputs (docs/optim.md). Requires device-capable routes (rule.hpp,
/// is_device_capable: every rule and preset of the library). Same contract,
/// same checkpoints (visit() reaches device buffers; the checkpoint code copies them through
/// the host). On a Kokkos Serial build (the CPU default) device memory is host memory and the
/// results equal the host path's bit for bit (the same formulas in the same order,
/// tests/optim/test_optim_device.cpp), but for global clipping, whose squared norm is summed
/// per parameter and then across (clip_gradients), so that its factor may differ by an ulp (a
/// fuzzer's case: 895,215 of 10⁶ elements one ulp apart); with OpenMP the block norms of ClipByNorm and
/// ScaleToPolarNorm and the inner products of DA/SC/DF-Muon are summed in another order, and on
/// a GPU a fused multiply-add may differ: there they agree to rounding (schatten_muon's p within
/// its criterion's search tolerance, docs/optim.md).
/// "label=signature|label=signature…" of `routes` (Partition::signature()).
template <class... Rules>
std::string routes_signature(const std::tuple<Route<Rules>...>& routes) {
  std::string s;
  std::apply(
      [&](const auto&... r) { ((s += (s.empty() ? "" : "|") + r.label + "=" + config_of(r.rule)), ...); },
      routes);
  return s;
}

template <class... Rules>
class Partition {
 public:
  /// True when every route can run on device memory (init(MemoryKind::device) accepts it).
  static constexpr bool device_capable = (is_device_capable<Rules>::value && ...);

  Partition(std::vector<ParamSpec> params, std::vector<std::string> labels, Route<Rules>... routes)
      : params_(std::move(params)), labels_(std::move(labels)), routes_(std::move(routes)...) {}

  /// Checks the routes' hyper-parameters (their rules' check(), rule.hpp), the names (unique)
  /// and the labels (one per parameter, each served by a route) and allocates every state in
  /// `memory` (class comment: device-resident steps). invalid_argument with a message naming the
  /// route and the field, or the first offending parameter, otherwise; unsupported for device
  /// memory when a route is not device-capable; out_of_memory when device or host memory runs
  /// out (a std::bad_alloc from the states' containers is caught). On failure the partition is
  /// not initialised (step refuses) whatever it was before.
  StepReport init(MemoryKind memory = MemoryKind::host) {
    try {
      return init_unguarded(memory);
    } catch (const std::bad_alloc&) {
      // Whatever was built stays allocated until the next init() or the destructor; step()
      // refuses until an init() succeeds (which_ is its mark of a complete init()).
      which_.clear();
      return refusal("init: host memory ran out", -1, Status::out_of_memory);
    }
  }

 private:
  StepReport init_unguarded(MemoryKind memory) {
    StepReport r;
    which_.clear();
    if (labels_.size() != params_.size()) return refusal("labels and parameters differ in number", -1);
    // Unusable hyper-parameters (a NaN learning rate, β ≥ 1; rule.hpp, check_of), route by route.
    message_.clear();
    const auto check_route = [&](const auto& route) {
      if (const char* bad = message_.empty() ? check_of(route.rule) : nullptr)
        message_ = "route '" + route.label + "': " + bad;
    };
    std::apply([&](const auto&... route) { (check_route(route), ...); }, routes_);
    if (!message_.empty()) return refusal(message_.c_str(), -1);
    // Two routes of one label: route_index() would pick the first and the second would never run.
    std::vector<std::string> route_labels;
    std::apply([&](const auto&... route) { (route_labels.push_back(route.label), ...); }, routes_);
    for (std::size_t a = 0; a < route_labels.size(); ++a)
      for (std::size_t b = a + 1; b < route_labels.size(); ++b)
        if (route_labels[a] == route_labels[b]) {
          message_ = "two routes have the label '" + route_labels[a] + "' (the second would never run)";
          return refusal(message_.c_str(), -1);
        }
    if (StepReport c = check_global_clip(clip_); !c) return c;
    std::ptrdiff_t bad = -1;
    if (message_ = params_problem(params_, &bad); !message_.empty()) return refusal(message_.c_str(), bad);
    if constexpr (!device_capable) {
      if (memory == MemoryKind::device)
        return refusal(
            "init: a route's rule has no device form (rule.hpp, is_device_capable); step on the host", -1,
            Status::unsupported);
    }
    which_.assign(params_.size(), -1);
    slot_.assign(params_.size(), 0);
    for (std::size_t i = 0; i < params_.size(); ++i) {
      which_[i] = route_index(labels_[i]);
      if (which_[i] < 0) {
        which_.clear();
        message_ = "no route for the label of parameter '" + params_[i].name + "'";
        return refusal(message_.c_str(), static_cast<std::ptrdiff_t>(i));
      }
    }
    workspace_ = std::make_shared<Workspace>();
    init_states(std::index_sequence_for<Rules...>{});
    // The flags of first_outside(), run_prechecks() and first_overflowing() (device memory).
    scan_ = Buffer(params_.size(), 0.0f);
    scan_host_.assign(params_.size(), 0.0f);
    if (memory == MemoryKind::device &&
        !(move_states(MemoryKind::device) && scan_.move_to(MemoryKind::device))) {
      which_.clear();
      return refusal("init: device memory for the optimizer state could not be allocated", -1,
                     Status::out_of_memory);
    }
    memory_ = memory;
    group_of_.assign(params_.size(), -1);
    groups_.clear();
    if (batching_) {
      init_groups(std::index_sequence_for<Rules...>{});
      for (std::size_t k = 0; k < groups_.size(); ++k)
        for (std::size_t i : groups_[k].members)
          group_of_[i] = static_cast<int>(k);
      for (Group& grp : groups_)
        if (!grp.reserved || !grp.buffer.move_to(memory_)) {
          groups_.clear();
          group_of_.assign(params_.size(), -1);
          which_.clear();
          return refusal("init: the workspace of a batched group could not be allocated", -1,
                         Status::out_of_memory);
        }
    }
    if (!reserve_staging()) {
      which_.clear();
      return refusal("init: staging copies for the kernels' host arrays could not be allocated", -1,
                     Status::out_of_memory);
    }
    // Which states step() copies before changing them: those of routes that may fail, unless
    // the rule's precheck tells every failure for that state here (chain.hpp,
    // covered_by_precheck: Muon's chain); step() then prechecks those parameters first. Also
    // those of routes whose update may carry W + u beyond the float range (rule.hpp,
    // update_may_overflow_of: lr·λ > 3, a learning rate near the float range, AdamW's tiny ε,
    // and a rule of the user's that declares no bound), so that step_fallible()'s exact W + u
    // test can refuse such a step and put the state back.
    prechecked_.assign(params_.size(), 0);
    backed_up_.assign(params_.size(), 0);
    limit_bits_.assign(params_.size(), magnitude_bits(HUGE_VAL));
    for (std::size_t i = 0; i < params_.size(); ++i)
      dispatch(i, [&](auto tag) {
        constexpr std::size_t I = decltype(tag)::value;
        const auto& rule = std::get<I>(routes_).rule;
        const bool may_fail = rule_may_fail<std::tuple_element_t<I, std::tuple<Rules...>>>::value;
        const bool may_overflow = update_may_overflow_of(rule, flatten(params_[i].shape));
        // A route kept with copies for its bound is still prechecked where its precheck covers it
        // (it runs in step_fallible() then): the rules that rely on their precheck for a finite
        // state (Dion2's M) lost it when the bounds first made such routes copy (a fuzzer,
        // 2026-12-07: ok with an infinite M).
        prechecked_[i] =
            prechecks_ && !copy_all_ && may_fail &&
            covered_by_precheck(rule, std::get<I>(states_)[slot_[i]], flatten(params_[i].shape), memory_);
        backed_up_[i] = copy_all_ || may_overflow || (may_fail && !prechecked_[i]);
        limit_bits_[i] = magnitude_bits(max_gradient_of(rule, flatten(params_[i].shape)));
        return Status::ok;
      });
    // The backups: allocated here, so that a step never allocates (Buffer assignment reuses an
    // allocation of the same size).
    init_backups(std::index_sequence_for<Rules...>{});
    touched_.assign(params_.size(), 0);
    ranges_.reserve(2 * params_.size());
    skipped_ = 0;  // fresh states: the count of skipped steps starts again with them
    return r;
  }
  /// step_message_ ← the concatenation of `parts` (C strings and std::strings), cut at its 511
  /// characters: the step's refusal messages, composed without allocating, so that a refusal
  /// throws nothing even under heap exhaustion (no exception leaves step()), and a fixed array
  /// so that no copy of the partition (restore()'s trial) loses the room.
  template <class... P>
  const char* compose(const P&... parts) {
    std::size_t n = 0;
    const auto add = [&](std::string_view part) {
      const std::size_t k = std::min(part.size(), step_message_.size() - 1 - n);
      std::memcpy(step_message_.data() + n, part.data(), k);
      n += k;
    };
    (add(std::string_view(parts)), ...);
    step_message_[n] = '\0';
    return step_message_.data();
  }

 public:
  const std::vector<ParamSpec>& params() const { return params_; }
  /// Where the states live and where step() expects parameters and gradients (init()).
  MemoryKind memory() const { return memory_; }
  /// Same-shape batching (class comment), on by default. Switching it on after init() takes
  /// effect at the next init() (which reserves the batch buffers); switching it off takes
  /// effect at the next step.
  /// `max_group` > 0 splits larger groups into groups of at most that many parameters (taken
  /// at the next init()): on CPUs a batch whose working set leaves the cache runs slower than
  /// one matrix at a time (256 × 64² in one batch: 1.24× the unbatched step; groups of 16: the
  /// same time, docs/benchmarks/cpu-optim.md), so the default is 16 — on GPUs still 16× fewer
  /// launch sequences. 0 = no limit (one batch per shape and route).
  void set_batching(bool on, std::size_t max_group = kDefaultMaxGroup) {
    batching_ = on;
    max_group_ = max_group;
  }
  bool batching() const { return batching_; }
  /// Groups that step() runs as one batch: the parameter indices of each (empty when batching
  /// was off at init()).
  std::vector<std::vector<std::size_t>> batch_groups() const {
    std::vector<std::vector<std::size_t>> g;
    for (const Group& grp : groups_)
      g.push_back(grp.members);
    return g;
  }
  void set_non_finite_policy(NonFinitePolicy p) { policy_ = p; }
  /// Prechecks instead of state copies (on by default; taken at the next init()). A prechecked
  /// route's precheck promises that its update cannot fail, so step() keeps no copy of its state
  /// (docs/optim.md "Prechecks instead of copies": Muon's chain and most presets; 340 MB less
  /// for GPT-2 small under schatten_muon). Under host-heap exhaustion the promise holds on the
  /// default build (Kokkos 3.4): the prechecked kernels allocate nothing on the host during a
  /// step (their scratch is reserved at init(); docs/reliability.md "Heap exhaustion"). On
  /// Kokkos 4 Kokkos itself may allocate a few bytes inside its calls, and when even that fails a
  /// prechecked update fails after its state has advanced: step() then returns internal_error
  /// with no parameter changed and those states advanced. Off, every route that
  /// may fail has its state copied at init() and restored on any failure, so a step is all or
  /// nothing under allocation failure too (docs/reliability.md "Heap exhaustion"), at the
  /// price of that copy's memory and one copy pass per step.
  void set_prechecks(bool on) { prechecks_ = on; }
  bool prechecks() const { return prechecks_; }
  /// Copies of every route's state, the routes that cannot fail and the prechecked ones too
  /// (off by default; taken at the next init()). Then every update runs in step_fallible(),
  /// whose test of W + u (docs/optim.md "The float range of W + u") covers every parameter, and
  /// no parameter limit applies: a step is all or nothing whatever the hyper-parameters, the
  /// one case the default leaves open (an update beyond 2.6e38 from a checkpoint's state beyond
  /// what its rule writes, in a route without copies) included, and under host allocation
  /// failure too (as set_prechecks(false)).
  /// The price: one copy of every state (AdamW: both moments, 8 bytes per element) and one copy pass over
  /// them per step, as memory_use().backups reports.
  void set_copy_all_states(bool on) { copy_all_ = on; }
  bool copy_all_states() const { return copy_all_; }
  /// The scan of the parameters for NaN/Inf, and for entries beyond FLT_MAX/4 where no copy of
  /// the state is kept (class comment, step 1; on by default). It costs one
  /// read of every parameter per step, which an element-wise rule feels most: AdamW over GPT-2
  /// small's 39.5 M non-matrix elements, 95–98 → 116–124 ms per step on one CPU core
  /// (docs/benchmarks/cpu-optim.md, "Parameter scan"); Muon's step, about +5 %. Off, a caller
  /// that keeps its parameters finite itself saves that read; a non-finite parameter is then
  /// stepped as any other value, and may enter the states of the rules that read the parameter
  /// (coupled decay, DA/DF-Muon's distances, MuonHyperball's norm).
  void set_parameter_check(bool on) { check_params_ = on; }
  bool parameter_check() const { return check_params_; }
  /// Clips the gradients of all parameters together to global Frobenius norm ≤ max_norm before
  /// the rules run (torch.nn.utils.clip_grad_norm_); 0 (default) disables it. The norm is
  /// accumulated in double. A NaN or negative max_norm makes the next init() and step() refuse
  /// (invalid_argument); +Inf clips nothing.
  void set_global_clip(double max_norm) { clip_ = max_norm; }
  /// Steps dropped by NonFinitePolicy::skip since the last successful init() (checkpointed as
  /// "_partition/skipped_steps").
  std::int64_t skipped_steps() const { return skipped_; }

  /// "label=signature|label=signature…": every route's rule with its hyper-parameters; store it
  /// in a checkpoint header and pass it as the expected signature when loading.
  std::string signature() const { return routes_signature(routes_); }
  const std::vector<std::string>& labels() const { return labels_; }

  /// One optimizer step: params[i] and grads[i] point to the flattened row-major arrays of
  /// parameter i, in memory() (host memory unless init(MemoryKind::device)). grads are consumed
  /// (they hold the updates afterwards). All or nothing: a step that fails changes no parameter
  /// and no state. For that, the parameters whose rule tells its failures in advance (rule.hpp,
  /// precheck: Muon's chain) are prechecked before any state changes; the states of the other
  /// routes that may fail are copied before they change and restored on a failure; routes
  /// that cannot fail (AdamW, SGD) need neither. A device step has finished (fenced) when it
  /// returns. The three stages below, in order.
  StepReport step(const std::vector<float*>& params, const std::vector<float*>& grads) {
    if (StepReport r = step_prepare(params, grads); !r || r.skipped) return r;
    if (StepReport r = step_fallible(params, grads); !r) return r;
    return step_finish(params, grads);
  }

  /// step() in stages, for a caller that agrees with other processes between them
  /// (distributed::DistributedPartition), with the same params and grads throughout:
  ///  1. step_prepare: the pointer checks, the gradient scan, clipping and the prechecks. A
  ///     refusal (or a skip, StepReport::skipped) changes nothing; stop there.
  ///  2. step_fallible: the routes that may fail and are not prechecked, each state copied
  ///     first. A failure restores those states and changes nothing else; stop there. After
  ///     success the copies still hold the states before the step, so step_undo() can put them
  ///     back (another process failed): nothing else has changed yet.
  ///  3. step_finish: the routes that cannot fail, then the prechecked ones, then the
  ///     parameters. It fails only when a rule breaks the protocol (internal_error: states may
  ///     have advanced, parameters are untouched).
  StepReport step_prepare(const std::vector<float*>& params, const std::vector<float*>& grads) {
    if (which_.size() != params_.size()) return refusal("step before a successful init()", -1);
    if (StepReport r = check_pointers(params_, params, grads); !r) return r;
    if (StepReport r = check_overlaps(params, grads); !r) return r;
    if (StepReport c = check_global_clip(clip_); !c) return c;
    // One scan per gradient: finiteness, and the route's limit unless clipping comes first; and
    // one per parameter: finiteness (a NaN there would enter the momenta and stay after the
    // caller repaired the parameter) and, where no copy of its state is kept, param_limit_bits().
    if (const std::ptrdiff_t i = first_outside(grads, clip_ > 0.0, check_params_ ? &params : nullptr);
        i >= 0) {
      const auto k = static_cast<std::size_t>(i);
      if (all_within(block(grads[k], k), clip_ > 0.0 ? magnitude_bits(HUGE_VAL) : limit_bits_[k]))
        return param_refusal(i, params);
      // A skip must not hide a non-finite parameter, which a skip cannot repair: a NaN weight
      // gives NaN gradients at every step, and the skips would go on for ever (found by an
      // audit, 2026-12-06). So the scan of the gradients stopped at i; the parameters are
      // scanned to the end first.
      if (policy_ != NonFinitePolicy::error && check_params_)
        if (const std::ptrdiff_t j = first_outside(params, true, nullptr, true); j >= 0)
          return param_refusal(j, params);
      return refuse(i, grads);
    }
    if (clip_ > 0.0) {
      clip_gradients(grads);
      if (const std::ptrdiff_t i = first_outside(grads, false); i >= 0) return refuse(i, grads);
    }
    // touched_[i]: parameter i's state was copied to its backup this step (and may have
    // advanced); exactly those are restored on failure, or by step_undo(). None yet, so that
    // step_undo() after a refusal here changes nothing.
    std::fill(touched_.begin(), touched_.end(), char(0));
    // The prechecks, before any state changes: a refusal here leaves everything as it was.
    return run_prechecks(params, grads);
  }
  /// Stage 2 (step_prepare above, which cleared touched_). Its updates are final when their
  /// rules return (each depends on its own state only), so W + u is tested here, where the
  /// copies can still put the states back: an update that would carry its parameter beyond the
  /// float range is refused (out_of_range, under either NonFinitePolicy: a skip would not
  /// repair the weights or the hyper-parameters that cause it) and the states are restored.
  StepReport step_fallible(const std::vector<float*>& params, const std::vector<float*>& grads) {
    if (StepReport r = run_passes(params, grads, 0, 1); !r) return r;
    const std::ptrdiff_t bad = first_overflowing(params, grads);
    if (bad < 0) return StepReport{};
    step_undo();
    return refusal(compose("the update of parameter '", params_[static_cast<std::size_t>(bad)].name,
                           "' would carry it beyond the float range (W + u overflows); no parameter or "
                           "state was changed"),
                   bad, Status::out_of_range);
  }
  /// True after a successful init() when every parameter's update runs in step_fallible(): each
  /// route may fail and none is prechecked, so every state has its backup. After that stage the
  /// grads then hold every update, and step_finish() only applies them (it runs no rule, so it
  /// cannot fail). distributed::DistributedPartition relies on it for its unreduced parameters,
  /// which it hashes between the stages and undoes with step_undo() when another rank failed.
  bool every_update_fallible() const {
    return which_.size() == params_.size() &&
           std::all_of(backed_up_.begin(), backed_up_.end(), [](char b) { return b != 0; });
  }
  /// Puts back the states step_fallible() advanced, from their copies. Only between a
  /// successful step_fallible() and step_finish(); a no-op otherwise.
  void step_undo() {
    for (std::size_t i = 0; i < params_.size(); ++i)
      if (touched_[i]) restore_one(i);
    std::fill(touched_.begin(), touched_.end(), char(0));
    if (memory_ == MemoryKind::device) device_kernels::fence();  // the restoring copies
  }
  /// Stage 3 (step_prepare above).
  StepReport step_finish(const std::vector<float*>& params, const std::vector<float*>& grads) {
    // The rest cannot fail, and so needs no backup: nothing runs after it that could undo the
    // step. The routes that cannot fail at all come before the prechecked ones, so that a rule
    // breaking the protocol there (the internal_error of run_passes) fails before those states
    // advance. Each parameter's update depends on its own state only, so the order does not
    // change any result. (On such a failure the states of stage 2 are put back too.)
    if (StepReport r = run_passes(params, grads, 1, 3); !r) return r;
    std::fill(touched_.begin(), touched_.end(), char(0));  // step_undo() has nothing left to do
    for (std::size_t i = 0; i < params_.size(); ++i)
      apply_updates(block(params[i], i), block(grads[i], i));
    if (memory_ == MemoryKind::device) device_kernels::fence();
    return StepReport{};
  }

  /// visit_fields over every parameter's state, named "<param name>/<index>_<rule>/<field>",
  /// and the partition's own counter "_partition/skipped_steps". Before a successful init()
  /// (none yet, or the last one refused) there are no states: only the counter is visited (a
  /// checkpoint's load then refuses the file's other fields).
  template <class V>
  void visit(V& v) {
    v(std::string("_partition/skipped_steps"), skipped_);
    if (which_.size() != params_.size()) return;  // which_: the mark of a complete init()
    for (std::size_t i = 0; i < params_.size(); ++i)
      visit_param<false>(v, i, std::index_sequence_for<Rules...>{});
  }
  /// The rules' scratch Buffers (rule.hpp, visit_scratch), named like visit(): not checkpointed;
  /// they live where the state lives (init moves them with it). None before a successful init().
  template <class V>
  void visit_scratch(V& v) {
    if (which_.size() != params_.size()) return;
    for (std::size_t i = 0; i < params_.size(); ++i)
      visit_param<true>(v, i, std::index_sequence_for<Rules...>{});
  }
  /// The bytes this partition holds, by kind (MemoryUse; all zero before init()). Counted: the
  /// buffers its visits name and its own batch buffers and workspace; not counted: scalars,
  /// host-side vectors of a few floats per row or column, and the workspace of a rule that does
  /// not name it (rule.hpp, visit_workspaces). Cost: one pass over the states' names, no data.
  MemoryUse memory_use() {
    MemoryUse m;
    if (which_.size() != params_.size()) return m;
    detail::BufferBytes state, backups, scratch;
    visit(state);
    visit_scratch(scratch);
    for (std::size_t i = 0; i < params_.size(); ++i)
      dispatch(i, [&](auto tag) {
        constexpr std::size_t I = decltype(tag)::value;
        auto& b = std::get<I>(backups_);
        if (slot_[i] < b.size() && b[slot_[i]]) visit_fields(backups, *b[slot_[i]]);
        return Status::ok;
      });
    m.state = state.bytes;
    m.backups = backups.bytes;
    m.scratch = scratch.bytes;
    for (const Group& g : groups_)
      m.batches += g.buffer.size() * sizeof(float);
    m.workspace = workspace_
                      ? workspace_->capacity() + workspace_->host_capacity() + workspace_->staging_capacity()
                      : 0;
    return m;
  }

 private:
  /// Parameter i's array `p` (its value, gradient or a batch slot) as a block of memory_.
  MatrixRef<float> block(float* p, std::size_t i) const {
    const BlockShape s = flatten(params_[i].shape);
    return MatrixRef<float>(p, s.rows, s.cols, memory_);
  }
  void clip_gradients(const std::vector<float*>& grads) const {
    double ss = 0.0;
    if (memory_ == MemoryKind::device) {  // one reduction per gradient, summed in double
      for (std::size_t i = 0; i < params_.size(); ++i)
        ss += squared_norm(block(grads[i], i));
    } else {  // one running sum in parameter order (distributed::DistributedPartition repeats it)
      for (std::size_t i = 0; i < params_.size(); ++i)
        for (index_t k = 0, n = flatten(params_[i].shape).size(); k < n; ++k)
          ss += double(grads[i][k]) * double(grads[i][k]);
    }
    const double f = global_clip_factor(std::sqrt(ss), clip_);
    if (f == 1.0) return;
    for (std::size_t i = 0; i < params_.size(); ++i)
      scale_by(block(grads[i], i), f);
  }
  /// The first parameter whose gradient holds a NaN/Inf, or (unless `finite_only`) a value
  /// beyond its route's max_gradient(), or, with `params`, whose parameter fails
  /// param_limit_bits(); −1 when there is none (the caller tells which of the two failed). On
  /// the host one scan per array, stopping at the first bad one; on the device every scan is
  /// launched before one read-back of their flags (one synchronisation per step instead of one
  /// per parameter; a parameter's test ORs into its gradient's flag). With finite_only and no
  /// `params` it scans any per-parameter arrays for NaN/Inf alone, or with `as_params` the
  /// parameters against param_limit_bits() (step_prepare's scan of the parameters before a skip).
  std::ptrdiff_t first_outside(const std::vector<float*>& grads, bool finite_only,
                               const std::vector<float*>* params = nullptr, bool as_params = false) {
    const auto limit = [&](std::size_t i) {
      return !finite_only ? limit_bits_[i] : as_params ? param_limit_bits(i) : magnitude_bits(HUGE_VAL);
    };
    if (memory_ == MemoryKind::host) {
      for (std::size_t i = 0; i < params_.size(); ++i)
        if (!all_within(block(grads[i], i), limit(i)) ||
            (params && !all_within(block((*params)[i], i), param_limit_bits(i))))
          return static_cast<std::ptrdiff_t>(i);
      return -1;
    }
    for (std::size_t i = 0; i < params_.size(); ++i) {
      const MatrixRef<const float> g = block(grads[i], i);
      if (g.empty()) continue;
      device_kernels::flag_outside(g.data, g.size(), limit(i), scan_.data() + i);
      if (params)
        device_kernels::flag_outside_or((*params)[i], g.size(), param_limit_bits(i), scan_.data() + i);
    }
    scan_.copy_to(scan_host_.data(), scan_host_.size());
    for (std::size_t i = 0; i < params_.size(); ++i)
      if (scan_host_[i] > 0.0f) return static_cast<std::ptrdiff_t>(i);
    return -1;
  }
  /// The first parameter of step_fallible() (backed_up_) whose update u, held in its gradient
  /// buffer, makes W + u overflow as apply_updates() rounds it (sum_finite), −1 when there is
  /// none. On the device every test is queued before one read-back of their flags, as in
  /// first_outside(). Cost: one read of each such parameter and update; nothing when no
  /// parameter is backed up.
  std::ptrdiff_t first_overflowing(const std::vector<float*>& params, const std::vector<float*>& grads) {
    if (memory_ == MemoryKind::host) {
      for (std::size_t i = 0; i < params_.size(); ++i)
        if (backed_up_[i] && !sum_finite(block(params[i], i), block(grads[i], i)))
          return static_cast<std::ptrdiff_t>(i);
      return -1;
    }
    bool queued = false;
    for (std::size_t i = 0; i < params_.size(); ++i) {
      const index_t n = flatten(params_[i].shape).size();
      if (!backed_up_[i] || n == 0) continue;
      device_kernels::flag_sum_outside(params[i], grads[i], n, scan_.data() + i);
      queued = true;
    }
    if (!queued) return -1;
    scan_.copy_to(scan_host_.data(), scan_host_.size());
    for (std::size_t i = 0; i < params_.size(); ++i)
      if (backed_up_[i] && scan_host_[i] > 0.0f) return static_cast<std::ptrdiff_t>(i);
    return -1;
  }
  /// Visitor that moves every Buffer of a state into `to` memory.
  struct BufferMover {
    MemoryKind to;
    bool ok = true;
    template <class T>
    void operator()(const std::string&, BasicBuffer<T>& b) {  // float and bf16 state
      ok = b.move_to(to) && ok;
    }
    void operator()(const std::string&, std::int64_t&) {}
    void operator()(const std::string&, double&) {}
  };
  /// Moves every state's buffers, scratch included, into `to` memory; false when an allocation
  /// failed.
  bool move_states(MemoryKind to) {
    BufferMover mover{to};
    visit(mover);
    visit_scratch(mover);
    return mover.ok;
  }
  /// invalid_argument, naming a parameter, when two of the arrays overlap: two parameters (one
  /// buffer passed twice, tied weights), a gradient and a parameter (the update, written into the
  /// gradient buffer, would overwrite the weights a rule reads for decay), or two gradients.
  /// Each array is written by the step, so an overlap gives a wrong result with ok (found by an
  /// audit, 2026-12-06: one buffer passed as two batched parameters moved by 1.3e-2 from a
  /// single step's result). Empty arrays are skipped. Cost: a sort of the 2n address ranges in
  /// a vector reserved at init(), no allocation.
  StepReport check_overlaps(const std::vector<float*>& params, const std::vector<float*>& grads) {
    const auto [a, b] = detail::first_overlap(
        ranges_, params, grads, [&](std::size_t i) { return flatten(params_[i].shape).size(); });
    if (a == params_.size()) return StepReport{};
    return refusal(compose("parameter '", params_[a].name, "' and parameter '", params_[b].name,
                           a == b ? "' (its gradient)" : "'", detail::kOverlapping),
                   static_cast<std::ptrdiff_t>(b));
  }
  /// The largest |W| the scan of the parameters accepts in parameter i (magnitude_bits): any
  /// finite value where a copy of its state is kept, since step_fallible() then tests W + u
  /// itself and can put the state back; a quarter of the float range elsewhere (kUnguardedParameter),
  /// so that W + u cannot overflow unless |u| exceeds three quarters of it (2.6e38), where no
  /// copy could restore the state that produced u. Conservative, like TraceMomentum's bound: a
  /// weight beyond 8.5e37 is no trained value (any forward pass through it overflows).
  std::uint32_t param_limit_bits(std::size_t i) const {
    return magnitude_bits(backed_up_[i] ? HUGE_VAL : kUnguardedParameter);
  }
  /// The refusal of a step whose parameter k fails param_limit_bits(), under either policy (a
  /// skip would not repair it): non_finite_input for a NaN/Inf, out_of_range for a finite value
  /// beyond the limit.
  StepReport param_refusal(std::ptrdiff_t k, const std::vector<float*>& params) {
    const auto i = static_cast<std::size_t>(k);
    if (all_finite(block(params[i], i)))
      return refusal(compose("parameter '", params_[i].name,
                             "' holds a value beyond 8.5e37 (a quarter of the float range), where its update "
                             "could overflow it; nothing was changed"),
                     k, Status::out_of_range);
    return refusal(
        compose("parameter '", params_[i].name,
                "' contains NaN or Inf (its optimizer state would keep them); nothing was changed"),
        k, Status::non_finite_input);
  }
  /// The refusal of a step whose gradient i failed the scan: non_finite_input (NaN/Inf) or
  /// out_of_range (finite, beyond the route's max_gradient()), or a skip under the skip policy.
  /// The message names the parameter ("gradient of 'h.3.w' contains NaN or Inf").
  StepReport refuse(std::ptrdiff_t bad, const std::vector<float*>& grads) {
    const auto k = static_cast<std::size_t>(bad);
    const bool finite = all_finite(block(grads[k], k));
    const bool skip = policy_ != NonFinitePolicy::error;
    compose(
        skip ? "step skipped: " : "", "gradient of '", params_[k].name,
        finite ? "' too large for its rule's float state (beyond max_gradient)" : "' contains NaN or Inf");
    if (!skip)
      return refusal(step_message_.data(), bad, finite ? Status::out_of_range : Status::non_finite_input);
    ++skipped_;
    StepReport r = refusal(step_message_.data(), bad, Status::ok);
    r.skipped = true;
    return r;
  }
  int route_index(const std::string& label) const {
    int found = -1, k = 0;
    std::apply([&](const auto&... r) { ((found = (found < 0 && r.label == label) ? k : found, ++k), ...); },
               routes_);
    return found;
  }
  template <std::size_t... I>
  void init_states(std::index_sequence<I...>) {
    (init_route<I>(), ...);
  }
  template <std::size_t I>
  void init_route() {
    auto& states = std::get<I>(states_);
    states.clear();
    ScratchByShape seen;
    for (std::size_t i = 0; i < params_.size(); ++i)
      if (which_[i] == static_cast<int>(I)) {
        slot_[i] = states.size();
        const BlockShape shape = flatten(params_[i].shape);
        // The state's index within its route: a rule whose state depends on it (rule.hpp,
        // has_ordinal_init) gets the same state from every init().
        states.push_back(init_at(std::get<I>(routes_).rule, shape, states.size()));
        share_workspaces(states.back());
        share_scratch(states.back(), shape, seen);
      }
  }
  /// The first scratch of each (place in the state's visit, shape) of one route.
  using ScratchByShape = std::map<std::tuple<std::size_t, index_t, index_t>, std::shared_ptr<void>>;
  /// Points the state's shareable scratch (rule.hpp, visit_shareable_scratch) at the one of the
  /// first state of its route and shape (its own is freed then): one route has one State type,
  /// so the place in the visit fixes the scratch's type.
  template <class S>
  static void share_scratch(S& state, const BlockShape& shape, ScratchByShape& seen) {
    std::size_t place = 0;
    auto share = [&](auto& scratch) {
      using T = typename std::decay_t<decltype(scratch)>::element_type;
      const auto [it, first] = seen.try_emplace({place++, shape.rows, shape.cols}, scratch);
      if (!first) scratch = std::static_pointer_cast<T>(it->second);
    };
    detail::shareable_scratch_of(share, state);
  }
  /// Points the state's kernel workspaces at workspace_, grown to what each had reserved (its
  /// own is freed then). A failed reservation leaves workspace_ smaller: the kernel then grows it
  /// at the step or reports out_of_memory, as it would a workspace of the state's own.
  template <class S>
  void share_workspaces(S& state) {
    auto share = [this](std::shared_ptr<Workspace>& w) {
      if (w && w != workspace_) workspace_->reserve(w->capacity(), 1, w->host_capacity());
      w = workspace_;
    };
    detail::workspaces_of(share, state);
  }
  /// On a build whose kernels stage host arrays (a GPU build; memory::kernels_access), a
  /// partition on host memory reserves, in its workspace, the staging copies of the kernel calls
  /// its routes that may fail make: rule_staged_arrays of them (chain.hpp; two, a call's input
  /// and output, or Dion's three) of the largest such parameter's block, or of a batched
  /// group's blocks together. The prechecks then see them (detail::polar_total_on_finite,
  /// DionDirection::precheck_covers: Workspace::staging_covers), so that those routes keep no
  /// state copies on host memory either, and a step allocates no staging copy. Nothing to do
  /// with prechecks off (the copies then make every step all or nothing, and the kernels grow
  /// the staging at the first step) or on device memory; Workspace::reserve_staging does nothing
  /// where the kernels read host memory in place. False when the allocation failed.
  bool reserve_staging() {
    if (!prechecks_ || copy_all_ || memory_ != MemoryKind::host) return true;
    std::size_t largest = 0;  // elements
    int arrays = 0;
    const auto count = [&](auto tag, std::size_t elements) {
      using R = std::tuple_element_t<decltype(tag)::value, std::tuple<Rules...>>;
      if (!rule_may_fail<R>::value) return;
      largest = std::max(largest, elements);
      arrays = std::max(arrays, rule_staged_arrays<R>::value);
    };
    for (std::size_t i = 0; i < params_.size(); ++i)
      dispatch(i, [&](auto tag) {
        count(tag, static_cast<std::size_t>(flatten(params_[i].shape).size()));
        return Status::ok;
      });
    for (const Group& g : groups_)
      dispatch_route(g.route, [&](auto tag) {
        count(tag, static_cast<std::size_t>(g.shape.size()) * g.members.size());
      });
    return largest == 0 ||
           workspace_->reserve_staging(static_cast<std::size_t>(arrays), largest * sizeof(float));
  }
  /// A copy of each state that backed_up_ names, no copy of the others.
  template <std::size_t... I>
  void init_backups(std::index_sequence<I...>) {
    (std::get<I>(backups_).assign(std::get<I>(states_).size(), std::nullopt), ...);
    for (std::size_t i = 0; i < params_.size(); ++i)
      if (backed_up_[i])
        dispatch(i, [&](auto tag) {
          constexpr std::size_t J = decltype(tag)::value;
          std::get<J>(backups_)[slot_[i]].emplace(std::get<J>(states_)[slot_[i]]);
          return Status::ok;
        });
  }
  /// Copies parameter i's state to its backup when it has one (the routes that may fail and
  /// are not prechecked: step() runs those first, and a failure restores every state copied).
  template <std::size_t I>
  void back_up(std::size_t i) {
    if (!backed_up_[i]) return;
    *std::get<I>(backups_)[slot_[i]] = std::get<I>(states_)[slot_[i]];
    touched_[i] = 1;
  }
  /// Passes [first, last) of a step over the parameters: 0, those whose states are backed up
  /// (routes that may fail, not prechecked); 1, the routes that cannot fail; 2, the prechecked
  /// ones. A batch group runs at its first member. On a failure every state backed up this
  /// step (touched_) is restored, the failing one included (a bare rule, not a chain, may
  /// have advanced its state before failing), and the refusal names the parameter; a failure
  /// of a parameter without a backup is a protocol violation (internal_error).
  StepReport run_passes(const std::vector<float*>& params, const std::vector<float*>& grads, int first,
                        int last) {
    const bool batched = batching_ && group_of_.size() == params_.size();
    Status failed = Status::ok;
    std::size_t bad = 0;
    int bad_group = -1;
    for (int pass = first; pass < last && failed == Status::ok; ++pass)
      for (std::size_t i = 0; i < params_.size() && failed == Status::ok; ++i) {
        if ((backed_up_[i] ? 0 : prechecked_[i] ? 2 : 1) != pass) continue;
        const int k = batched ? group_of_[i] : -1;
        if (k < 0) {
          // An exception from a rule (a std::bad_alloc from its own containers) becomes its
          // status (schatten::detail::status_guard), and the step fails as for a returned one:
          // the states with backups are put back, and no exception leaves step().
          failed = schatten::detail::status_guard([&] { return update_one(i, params[i], grads[i]); });
        } else if (groups_[static_cast<std::size_t>(k)].members.front() == i) {
          failed = schatten::detail::status_guard(
              [&] { return update_group(groups_[static_cast<std::size_t>(k)], params, grads); });
          if (failed != Status::ok) bad_group = k;
        }  // else: updated with its group at the group's first member
        if (failed != Status::ok) bad = i;
      }
    if (failed == Status::ok) return StepReport{};
    step_undo();
    // A rule failed that declared it cannot, or after its precheck passed (a protocol
    // violation, or the host heap exhausted inside a kernel: set_prechecks): its state, and those
    // of the other parameters without a backup, may have advanced (those with one were put back
    // above). No parameter has changed.
    if (!backed_up_[bad])
      return refusal(failed == Status::out_of_memory
                         ? "a prechecked rule ran out of memory (out_of_memory) after its precheck passed; "
                           "states may have advanced, no parameter changed (set_prechecks(false) copies them)"
                         : "a rule failed without declaring may_fail, or after its precheck passed; states "
                           "may have advanced, no parameter changed",
                     static_cast<std::ptrdiff_t>(bad), Status::internal_error);
    // A batched call reports no item, so a group's failure names the group (bad_param: its first
    // member), not the parameter at fault, which the same step with batching off would name.
    char count[24];  // the group's size, formatted without allocating
    std::snprintf(
        count, sizeof count, "%zu",
        bad_group >= 0 ? groups_[static_cast<std::size_t>(bad_group)].members.size() : std::size_t(0));
    if (bad_group >= 0)
      compose("the rule failed (", to_string(failed), ") on the batched group of ", count,
              " same-shape parameters led by '", params_[bad].name,
              "' (the one at fault may be another; set_batching(false) names it); no parameter or state was "
              "changed");
    else
      compose("the rule of parameter '", params_[bad].name, "' failed (", to_string(failed),
              "); no parameter or state was changed");
    StepReport r = refusal(step_message_.data(), static_cast<std::ptrdiff_t>(bad));
    r.status = failed;
    return r;
  }
  /// Parameter i's precheck (prechecked_[i]: its rule has one that covers its state), its
  /// tests on values queued into *flag when `flag` is given (rule.hpp).
  Status precheck_one(std::size_t i, float* p, float* g, float* flag) {
    return dispatch(i, [&](auto tag) -> Status {
      constexpr std::size_t I = decltype(tag)::value;
      using R = std::tuple_element_t<I, std::tuple<Rules...>>;
      if constexpr (has_precheck<R>::value)
        return std::get<I>(routes_).rule.precheck(block(g, i), std::get<I>(states_)[slot_[i]], block(p, i),
                                                  flag);
      else
        return Status::internal_error;  // prechecked_ names rules with a precheck only
    });
  }
  /// The cause parameter i's rule names for its precheck's refusal (rule.hpp,
  /// precheck_detail), nullptr if none.
  const char* precheck_detail_one(std::size_t i, float* g, Status refused) {
    const char* detail = nullptr;
    dispatch(i, [&](auto tag) -> Status {
      constexpr std::size_t I = decltype(tag)::value;
      detail =
          precheck_detail_of(std::get<I>(routes_).rule, block(g, i), std::get<I>(states_)[slot_[i]], refused);
      return Status::ok;
    });
    return detail;
  }
  /// Every prechecked parameter's precheck, in order; the refusal of the first that refuses.
  /// On device memory the value tests of all of them are queued into scan_ (one flag per
  /// parameter) and read back with one transfer, as first_outside() does; the first flagged
  /// parameter is then prechecked again, waited for, for its status.
  StepReport run_prechecks(const std::vector<float*>& params, const std::vector<float*>& grads) {
    const bool deferred = memory_ == MemoryKind::device;
    std::ptrdiff_t bad = -1;
    Status status = Status::ok;
    bool queued = false;
    for (std::size_t i = 0; i < params_.size() && bad < 0; ++i) {
      if (!prechecked_[i]) continue;
      status = precheck_one(i, params[i], grads[i], deferred ? scan_.data() + i : nullptr);
      if (status != Status::ok) bad = static_cast<std::ptrdiff_t>(i);
      queued = queued || deferred;
    }
    if (bad < 0 && queued) {
      scan_.copy_to(scan_host_.data(), scan_host_.size());
      for (std::size_t i = 0; i < params_.size() && bad < 0; ++i)
        if (prechecked_[i] && scan_host_[i] > 0.0f) {
          bad = static_cast<std::ptrdiff_t>(i);
          status = precheck_one(i, params[i], grads[i], nullptr);
          if (status == Status::ok) status = Status::internal_error;  // the two tests disagree
        }
    }
    if (bad < 0) return StepReport{};
    const auto b = static_cast<std::size_t>(bad);
    const char* detail = precheck_detail_one(b, grads[b], status);
    compose("the rule of parameter '", params_[b].name, "' refused the step (", to_string(status),
            ") in its precheck", detail != nullptr ? ": " : "", detail != nullptr ? detail : "",
            "; no parameter or state was changed");
    StepReport r = refusal(step_message_.data(), bad);
    r.status = status;
    return r;
  }
  template <std::size_t I>
  Status update_route(std::size_t i, float* p, float* g) {
    auto& st = std::get<I>(states_)[slot_[i]];
    back_up<I>(i);
    const auto& rule = std::get<I>(routes_).rule;
    const Block u = block(g, i);
    const ConstBlock w = block(p, i);
    // step() has scanned every gradient and restores states itself: a chain need not repeat
    // either (its own copy of state and buffer would double the cost of the rollback).
    if constexpr (has_update_unguarded<std::tuple_element_t<I, std::tuple<Rules...>>>::value)
      return rule.update_unguarded(u, st, w);
    else
      return rule.update(u, st, w);
  }
  /// A group of same-shape parameters of one route, run as one batch (class comment).
  struct Group {
    std::size_t route = 0;
    BlockShape shape{};
    std::vector<std::size_t> members;      ///< parameter indices, ascending
    Buffer buffer;                         ///< members.size() blocks, contiguous
    std::vector<const float*> params;      ///< the members' parameters, filled at each step
    std::shared_ptr<Workspace> workspace;  ///< the partition's workspace_
    bool reserved = true;                  ///< the workspace reservation succeeded
  };
  /// Context of a group's StateList: state b is the route's state of the group's member b.
  struct GroupRef {
    Partition* self;
    const Group* group;
  };
  template <std::size_t I>
  static auto& group_state(void* context, index_t b) {
    const auto* ref = static_cast<const GroupRef*>(context);
    return std::get<I>(
        ref->self->states_)[ref->self->slot_[ref->group->members[static_cast<std::size_t>(b)]]];
  }
  template <std::size_t... I>
  void init_groups(std::index_sequence<I...>) {
    (init_route_groups<I>(), ...);
    std::sort(groups_.begin(), groups_.end(),
              [](const Group& a, const Group& b) { return a.members.front() < b.members.front(); });
  }
  template <std::size_t I>
  void init_route_groups() {
    using R = std::tuple_element_t<I, std::tuple<Rules...>>;
    if constexpr (has_update_batch<R>::value) {
      if (!batch_enabled(std::get<I>(routes_).rule)) return;  // declined now: per parameter
      std::vector<Group> found;
      for (std::size_t i = 0; i < params_.size(); ++i) {
        if (which_[i] != static_cast<int>(I)) continue;
        const BlockShape s = flatten(params_[i].shape);
        if (s.size() == 0) continue;
        auto it = std::find_if(found.begin(), found.end(), [&](const Group& g) { return g.shape == s; });
        if (it != found.end() && max_group_ > 0 && it->members.size() >= max_group_) {
          it->shape = BlockShape{};  // full: later parameters of this shape start a new group
          it = found.end();
        }
        if (it == found.end()) {
          found.emplace_back();
          found.back().route = I;
          found.back().shape = s;
          it = found.end() - 1;
        }
        it->members.push_back(i);
      }
      for (Group& g : found) {
        if (g.members.size() < 2) continue;                   // a batch of one gains nothing
        g.shape = flatten(params_[g.members.front()].shape);  // (reset when the group filled)
        const auto nb = static_cast<index_t>(g.members.size());
        g.buffer.assign(static_cast<std::size_t>(g.shape.size() * nb), 0.0f);
        g.params.assign(g.members.size(), nullptr);
        g.workspace = workspace_;  // the groups and the states' kernels run one after the other
        const auto& rule = std::get<I>(routes_).rule;
        g.reserved =
            g.workspace->reserve(rule.batch_workspace_bytes(g.shape, nb), static_cast<std::size_t>(nb),
                                 optim::batch_host_bytes(rule, g.shape, nb));
        groups_.push_back(std::move(g));
      }
    }
  }
  template <std::size_t I>
  Status update_group_route(Group& grp, const std::vector<float*>& params, const std::vector<float*>& grads) {
    using R = std::tuple_element_t<I, std::tuple<Rules...>>;
    if constexpr (has_update_batch<R>::value) {
      const index_t n = grp.shape.size();
      const auto nb = static_cast<index_t>(grp.members.size());
      for (index_t b = 0; b < nb; ++b) {
        const std::size_t i = grp.members[static_cast<std::size_t>(b)];
        back_up<I>(i);
        copy_block(block(grp.buffer.data() + b * n, i), block(grads[i], i));
        grp.params[static_cast<std::size_t>(b)] = params[i];
      }
      GroupRef ref{this, &grp};
      const StateList<typename R::State> list{&ref, &group_state<I>, nb};
      const BatchedMatrixRef<float> u(grp.buffer.data(), nb, grp.shape.rows, grp.shape.cols, memory_);
      const Status s = std::get<I>(routes_).rule.update_batch(
          u, list, ParamList{grp.params.data(), grp.shape, nb, memory_}, *grp.workspace);
      if (s != Status::ok) return s;
      for (index_t b = 0; b < nb; ++b) {
        const std::size_t i = grp.members[static_cast<std::size_t>(b)];
        copy_block(block(grads[i], i), block(grp.buffer.data() + b * n, i));
      }
      return Status::ok;
    } else {
      return Status::internal_error;  // groups exist only for routes with a batched form
    }
  }
  Status update_group(Group& grp, const std::vector<float*>& params, const std::vector<float*>& grads) {
    Status s = Status::internal_error;
    dispatch_route(grp.route, [&](auto tag) {
      return s = update_group_route<decltype(tag)::value>(grp, params, grads);
    });
    return s;
  }
  template <class F>
  void dispatch_route(std::size_t route, const F& f) {
    dispatch_route_impl(route, f, std::index_sequence_for<Rules...>{});
  }
  template <class F, std::size_t... I>
  void dispatch_route_impl(std::size_t route, const F& f, std::index_sequence<I...>) {
    ((route == I ? (f(std::integral_constant<std::size_t, I>{}), 0) : 0), ...);
  }
  Status update_one(std::size_t i, float* p, float* g) {
    return dispatch(i, [&](auto tag) { return update_route<decltype(tag)::value>(i, p, g); });
  }
  void restore_one(std::size_t i) {
    dispatch(i, [&](auto tag) {
      constexpr std::size_t I = decltype(tag)::value;
      std::get<I>(states_)[slot_[i]] = *std::get<I>(backups_)[slot_[i]];
      return Status::ok;
    });
  }
  template <class F>
  Status dispatch(std::size_t i, const F& f) {
    return dispatch_impl(i, f, std::index_sequence_for<Rules...>{});
  }
  template <class F, std::size_t... I>
  Status dispatch_impl(std::size_t i, const F& f, std::index_sequence<I...>) {
    Status s = Status::internal_error;
    ((which_[i] == static_cast<int>(I) ? (s = f(std::integral_constant<std::size_t, I>{}), 0) : 0), ...);
    return s;
  }
  /// Parameter i's fields (kScratch false) or scratch Buffers (true).
  template <bool kScratch, class V, std::size_t... I>
  void visit_param(V& v, std::size_t i, std::index_sequence<I...>) {
    ((which_[i] == static_cast<int>(I) ? (visit_one<kScratch, I>(v, i), 0) : 0), ...);
  }
  template <bool kScratch, std::size_t I, class V>
  void visit_one(V& v, std::size_t i) {
    detail::PrefixVisitor<V> p{v, params_[i].name + "/"};
    if constexpr (kScratch)
      detail::scratch_of(p, std::get<I>(states_)[slot_[i]]);
    else
      visit_fields(p, std::get<I>(states_)[slot_[i]]);
  }

  std::vector<ParamSpec> params_;
  std::vector<std::string> labels_;
  std::tuple<Route<Rules>...> routes_;
  std::tuple<std::vector<typename Rules::State>...> states_;
  /// Per parameter slot: the copy step() restores on a failure (backed_up_), else none.
  std::tuple<std::vector<std::optional<typename Rules::State>>...> backups_;
  std::vector<int> which_;
  std::vector<std::size_t> slot_;
  std::vector<Group> groups_;
  /// The kernel workspace of every state (rule.hpp, visit_workspaces) and group, grown at init()
  /// to the largest reservation among them.
  std::shared_ptr<Workspace> workspace_;
  std::vector<int> group_of_;  ///< group of each parameter, −1 when it is stepped alone
  std::vector<char> touched_;  ///< per step: state backed up (restore on failure)
  /// check_overlaps()' ranges: 2n, reserved at init() so that a step allocates nothing.
  std::vector<detail::AddressRange> ranges_;
  std::vector<char> backed_up_;   ///< per parameter: its route may fail and is not prechecked
  std::vector<char> prechecked_;  ///< per parameter: its route may fail, and its precheck tells when
  static constexpr std::size_t kDefaultMaxGroup = 16;
  bool batching_ = true;
  bool prechecks_ = true;  ///< set_prechecks()
  bool copy_all_ = false;  ///< set_copy_all_states()
  std::size_t max_group_ = kDefaultMaxGroup;
  std::vector<std::uint32_t> limit_bits_;  ///< per parameter: magnitude_bits of its route's max_gradient
  std::string message_;
  std::array<char, 512> step_message_{};  ///< compose()
  MemoryKind memory_ = MemoryKind::host;
  bool check_params_ = true;  ///< set_parameter_check()
  Buffer scan_;  ///< per parameter: > 0 when its gradient failed the scan or its precheck (device)
  std::vector<float> scan_host_;  ///< scan_ read back
  NonFinitePolicy policy_ = NonFinitePolicy::error;
  double clip_ = 0.0;
  std::int64_t skipped_ = 0;
};

/// visit_fields for a whole partition: every parameter's state (checkpoints use this).
template <class V, class... Rules>
void visit_fields(V& v, Partition<Rules...>& p) {
  p.visit(v);
}

/// partition(params, labels, route("muon", muon()), route("adamw", adamw())). Call it qualified
/// (optim::partition) when passing a single route: with three arguments of std types,
/// argument-dependent lookup also finds std::partition.
template <class... Rules>
Partition<Rules...> partition(std::vector<ParamSpec> params, std::vector<std::string> labels,
                              Route<Rules>... routes) {
  return Partition<Rules...>(std::move(params), std::move(labels), std::move(routes)...);
}

}  // namespace schatten::optim
