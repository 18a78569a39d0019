// SPDX-License-Identifier: Apache-2.0
/// \file
/// The distributed optimizer step (library schatten::mpi, docs/distributed.md): an
/// optim::Partition whose parameters are assigned to ranks, each rank computing the updates of
/// the parameters it owns, the updates then exchanged so that every rank applies all of them.
/// Bit-identical to the single-process optim::Partition: each update is computed by exactly the
/// code and data a single process would use, and applied with the same float additions.
#pragma once

#include <algorithm>
#include <array>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "schatten/distributed/assignment.hpp"
#include "schatten/distributed/communicator.hpp"
#include "schatten/io/checkpoint.hpp"
#include "schatten/kernels/gram.hpp"
#include "schatten/optim/dion.hpp"
#include "schatten/optim/partition.hpp"
#include "schatten/optim/schatten_p.hpp"

namespace schatten::distributed {

/// How a parameter's arrays are laid out across the ranks.
enum class Layout {
  /// Every rank holds the whole parameter and the same, already all-reduced gradient
  /// (data-parallel, DDP). Only the owner computes its update; the updates are all-gathered.
  replicated,
  /// Rank r holds rows shard_rows(rows, r, ranks) of the flattened parameter and of its
  /// (already reduce-scattered) gradient, contiguous row-major (FSDP2 / ZeRO-3 by dim 0), or the
  /// rows DistributedPartition::set_row_bounds gives it. The owner gathers the whole gradient and
  /// parameter, computes the update, and scatters its rows.
  row_sharded,
  /// Rank r holds columns [b[r], b[r+1]) of every row of the flattened parameter and of its
  /// gradient, b = chunk_bounds(cols, ranks) or DistributedPartition::set_column_bounds, as one
  /// contiguous row-major rows × (b[r+1] − b[r]) array: tensor parallelism's RowParallelLinear
  /// weight (out, in) split along `in`. The owner gathers the ranks' column blocks, computes the
  /// update, and scatters its columns; element-wise routes step each rank's block.
  column_sharded,
  /// Rank r holds elements [b[r], b[r+1]) of the flattened row-major parameter and of its
  /// gradient, one contiguous run that may begin and end inside a row, b = chunk_bounds(rows ·
  /// cols, ranks) or DistributedPartition::set_flat_bounds: a partition of a flat buffer
  /// (ZeRO-1/2, Megatron's distributed optimizer, FSDP1's flat parameter; flat_bounds() cuts
  /// every parameter of such a buffer). Like row_sharded, element by element: the owner gathers
  /// the runs and scatters the update's runs back; element-wise routes step each rank's run.
  flat_sharded,
  /// Every rank holds the whole parameter (the same on every rank, as for `replicated`) and its
  /// own gradient, NOT all-reduced: the framework leaves this parameter out of its gradient
  /// all-reduce. For routes whose rule takes replicas (optim::takes_replicas: Dion,
  /// optim::dion()): every rank steps the parameter with its own momentum, and the rule averages
  /// only its low-rank panels over the ranks (microsoft/dion's compressed all-reduce,
  /// kernels/low_rank.hpp "Replicas"): (r + c)·k + 1 floats per power iteration instead of the
  /// r·c of the gradient. The result is the step of the mean gradient (DDP's average) to
  /// rounding, not bit for bit (the sums run in another order); every rank computes the same
  /// update, which is checked each step. No owner (owners() −1), no exchange of the update.
  unreduced,
};

/// How DistributedPartition::init() picks a sharded parameter's owner.
enum class OwnerChoice {
  /// Longest-processing-time over the cost model, wherever the parameter lies (the default):
  /// the best balance of the work; a shard costs its transfer to the owner and back.
  balanced,
  /// Among the ranks holding the most of the parameter's elements, the least loaded
  /// (assign_owners with `held`): a flat-sharded matrix lying wholly on one rank is stepped
  /// there and costs no traffic; the balance is then the layout's. Replicated parameters, and
  /// shards held evenly, are placed as `balanced` places them.
  where_held,
  /// Between the two: the owners that make the modelled step shortest (modelled_step(): the
  /// largest rank's work plus the exchange, each float moved at
  /// DistributedPartition::set_transfer_cost; assign_owners_with_transfers). A matrix moves to
  /// another rank only when the balance gained pays for its transfer: with free transfers the
  /// work is balanced at least as well as by `balanced`, with dear ones every gathered matrix
  /// stays on a rank holding the most of it, as under `where_held`.
  transfer_aware,
};

/// The default per-float cost of OwnerChoice::transfer_aware, in default_cost()'s unit
/// (flop-equivalents): measure_transfer_cost() on the 2-core CI machine gives 68–105 with 2
/// ranks of Open MPI over shared memory (docs/distributed.md, "Choosing owners"). Measure your
/// own machine: a GPU's flop rate against its interconnect gives thousands.
inline constexpr double kDefaultTransferCost = 100.0;

/// The per-float cost OwnerChoice::transfer_aware needs, measured on this machine and
/// communicator, in default_cost()'s unit: the rate of Keller Jordan's NS5 on a dim × dim float
/// matrix (polar_flops over its time) divided by the rate at which floats arrive at a rank in an
/// all-gather of about `floats` floats (each rank contributes s = ⌈floats / n⌉; (n − 1)·s arrive
/// at each rank). Each time is the fastest of `reps` on a rank and the slowest rank's of those,
/// so every rank returns the same value. 0 on one rank (nothing moves); −1 when the arguments
/// differ between the ranks or dim < 2, floats outside [1, 2³¹ − 1] (MPI's int counts) or
/// reps < 1. Collective; its all-gathers count in comm.traffic(). Cost: reps × (one dim × dim
/// NS5 + one all-gather), memory for dim² · 2 + n·s floats.
double measure_transfer_cost(const Communicator& comm, index_t dim = 512,
                             std::int64_t floats = std::int64_t(1) << 23, int reps = 3);

/// The per-pair costs for DistributedPartition::set_transfer_costs, measured like
/// measure_transfer_cost() but one link at a time: for every ordered pair (a, b), a sends
/// `floats` floats to b while the other ranks wait, and c(a, b) is NS5's flop rate divided by
/// the rate at which they arrive (the fastest of `reps`, timed at b). On one node the entries
/// come out alike; between nodes they show the slower link. The same matrix on every rank;
/// ranks = 1 with the one (unused) entry 0 on one rank; ranks = 0 (refused by check()) when the
/// arguments differ between the ranks or are out of range as in measure_transfer_cost().
/// Collective; the sends count in comm.traffic(). Cost: reps × (one NS5 + n(n − 1) messages).
TransferCosts measure_transfer_costs(const Communicator& comm, index_t dim = 512,
                                     std::int64_t floats = std::int64_t(1) << 22, int reps = 3);

namespace detail {
/// Between a row-major rows × cols matrix `whole` and its column blocks [b[r], b[r+1]) laid one
/// after another in rank order in `blocks` (block r, rows × its width row-major, at rows · b[r]):
/// the blocks into the matrix (unpack = true) or out of it. What a column-sharded parameter's
/// gather stages and its checkpoint buffers hold. Cost: one pass over the matrix.
inline void move_column_blocks(float* blocks, float* whole, index_t rows, index_t cols,
                               const std::vector<index_t>& b, bool unpack) {
  for (std::size_t r = 0; r + 1 < b.size(); ++r) {
    const index_t w = b[r + 1] - b[r];
    for (index_t row = 0; row < rows; ++row) {
      float* in_whole = whole + row * cols + b[r];
      float* in_block = blocks + rows * b[r] + row * w;
      if (unpack)
        std::copy(in_block, in_block + w, in_whole);
      else
        std::copy(in_whole, in_whole + w, in_block);
    }
  }
}
/// A copy of every field a state visits, in visit order (load_checkpoint: the states as they
/// were, put back when the file fails to load on some rank).
struct Snapshot {
  std::vector<std::int64_t> ints;
  std::vector<double> doubles;
  std::vector<optim::Buffer> buffers;
  std::vector<optim::Bf16Buffer> halves;  ///< bf16 state (docs/optim.md "State precision")
};
struct SnapshotTaker {
  Snapshot* s;
  std::size_t i = 0, d = 0, b = 0, h = 0;
  void operator()(const std::string&, std::int64_t& v) {
    if (i == s->ints.size()) s->ints.emplace_back();
    s->ints[i++] = v;
  }
  void operator()(const std::string&, double& v) {
    if (d == s->doubles.size()) s->doubles.emplace_back();
    s->doubles[d++] = v;
  }
  void operator()(const std::string&, optim::Buffer& v) {
    if (b == s->buffers.size()) s->buffers.emplace_back();
    s->buffers[b++] = v;  // reuses the capacity of the previous step's copy
  }
  void operator()(const std::string&, optim::Bf16Buffer& v) {
    if (h == s->halves.size()) s->halves.emplace_back();
    s->halves[h++] = v;
  }
};
struct SnapshotRestorer {
  const Snapshot* s;
  std::size_t i = 0, d = 0, b = 0, h = 0;
  void operator()(const std::string&, std::int64_t& v) { v = s->ints[i++]; }
  void operator()(const std::string&, double& v) { v = s->doubles[d++]; }
  void operator()(const std::string&, optim::Buffer& v) { v = s->buffers[b++]; }
  void operator()(const std::string&, optim::Bf16Buffer& v) { v = s->halves[h++]; }
};
/// Agreement keys: the first failing parameter (−1: none in particular, before every
/// parameter) and the status, ordered so that the minimum over ranks is the failure a single
/// process would report (the lowest parameter index).
constexpr std::int64_t kNoFailure = INT64_MAX;
inline std::int64_t failure_key(std::ptrdiff_t param, Status s) {
  return (static_cast<std::int64_t>(param + 1) << 8) | static_cast<std::int64_t>(s);
}
/// A failure key's parameter (−1: none in particular) and status.
inline std::ptrdiff_t failed_param(std::int64_t key) { return static_cast<std::ptrdiff_t>(key >> 8) - 1; }
inline Status failed_status(std::int64_t key) { return static_cast<Status>(key & 0xff); }
/// Runs f, a part of a collective call (init(), the checkpoints) local to this rank; false when
/// it ran out of host memory (std::bad_alloc), so that the rank still reaches the next
/// collective, where the ranks agree (on_every_rank). Other exceptions (a user's cost model's,
/// say) leave as they would (not noexcept: no terminate).
template <class F>
bool locally(F&& f) {
  try {
    f();
    return true;
  } catch (const std::bad_alloc&) {
    return false;
  }
}
/// Collective: true when `ok` is true on every rank (one all-reduce; allocates nothing).
inline bool on_every_rank(const Communicator& comm, bool ok) { return comm.allreduce_min(ok ? 1 : 0) == 1; }
/// FNV-1a over 64-bit values, byte by byte: what the ranks compare of their settings.
struct Fnv {
  std::uint64_t h = 1469598103934665603ull;
  void mix(std::uint64_t v) {
    for (int byte = 0; byte < 8; ++byte, v >>= 8)
      h = (h ^ (v & 0xff)) * 1099511628211ull;
  }
  void mix(const std::string& text) {
    mix(text.size());
    for (const char c : text)
      mix(static_cast<std::uint64_t>(static_cast<unsigned char>(c)));
  }
  void mix_bits(double v) {  // its bits (NaNs of one payload compare equal)
    std::uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof bits);
    mix(bits);
  }
};
}  // namespace detail

/// optim::Partition over the ranks of a communicator. Every rank constructs it with the same
/// parameter list, labels and routes, and calls init(), step(), the checkpoint functions and
/// reduce_activations() collectively (same order on every rank).
///
/// **The same on every rank.** init() compares across the ranks (hashes, one all-reduce) the
/// parameters' names and shapes, the labels, the routes' signature() (rules and
/// hyper-parameters), the owners' batching and prechecks, the global clip, the non-finite
/// policy, the layouts and bounds, the owner choice and the transfer cost, and refuses a
/// difference on every rank (invalid_argument, the message naming what differs); the clip and
/// the policy, which may change after init(), are compared again at every step, in the step's
/// first all-reduce. Any refusal of init() or a step is agreed: every rank returns the same
/// status, parameter and message (the lowest failing rank's).
///
/// **Assignment.** init() gives each parameter an owner rank: greedy longest-processing-time
/// over the cost model (default_cost(): polar flops for matrix-function routes, a memory-bound
/// pass for element-wise ones; set_cost_model() replaces it), identical on every rank (init()
/// checks: owners that differ between the ranks are refused on every rank); or, for sharded
/// parameters, where they lie or where the modelled step is shortest (set_owner_choice(),
/// OwnerChoice). The owner holds the parameter's optimizer state — optimizer memory is
/// sharded — and computes its update with an optim::Partition of its own parameters
/// (same-shape batching included).
///
/// **By rows.** A sharded parameter (rows, columns or a run of elements) whose route's rule acts
/// on each element alone (optim::rule_row_local: the adamw and sgd presets) has no owner
/// (owners() −1, by_rows()): every rank steps its own rows, column block or run with the state
/// of those, so its optimizer state is sharded like the parameter (ZeRO's layout) and nothing
/// of it is communicated. The result is the same bit for bit (the rule treats each element
/// alone); checkpoints hold the whole state, assembled from the ranks' parts in rank order at
/// save (column blocks put back into their columns) and cut into the ranks' parts at load.
///
/// **Step** (all or nothing across ranks):
///   1. every rank scans the gradients it holds; one all-reduce agrees on the first NaN/Inf or
///      null pointer (a NaN on any rank → every rank refuses, or skips under
///      NonFinitePolicy::skip);
///   2. row-, column- and flat-sharded gradients and parameters are gathered (MPI_Gatherv) to
///      their owners (not those stepped by rows; column blocks are unpacked into the matrix);
///   3. summed activation Grams are delivered to the owners (reduce_activations());
///   4. each owner computes its updates (the local Partition, on copies of the parameters);
///   5. one all-reduce agrees on success; on any failure every rank restores its states and the
///      step fails everywhere with the status of the lowest failing parameter;
///   6. updates of replicated parameters are all-gathered (one MPI_Allgatherv of the flattened
///      updates, grouped by owner); updates of sharded parameters are scattered by rows, column
///      blocks or runs of elements;
///   7. every rank adds the updates to the arrays it holds.
///
/// **Heap exhaustion.** No exception leaves init() or step(). A rank whose host allocation fails
/// fails the call on every rank (out_of_memory, agreed like any failure; nothing applied): the
/// step's collectives allocate nothing (Communicator, buffers sized by init()), and init() agrees
/// that every rank's local part succeeded before each collective. The unreduced (Dion replicas)
/// parameters' kernels make collectives of their own: each first agrees that no rank has
/// stopped, so a rank that fails between two of them is met by the others in their next one
/// (docs/distributed.md "Heap exhaustion"). Not covered: MPI's own allocations.
///
/// **Cost per step** (n ranks, P parameter floats): compute ≈ 1/n of the single-process step at
/// a balanced assignment; traffic arriving at each rank: (P_replicated − own) floats of
/// updates, plus for sharded parameters with an owner (owner) 2 × the other ranks' shards
/// (gradient and parameter) and (non-owner) its shard of the update, none for those stepped by
/// rows; 3 small all-reduces (the first of 9 integers: it compares the clip and the policy too).
/// Memory beyond the local Partition: one float buffer of all
/// replicated parameters (the all-gather target), a copy of the owned replicated parameters (the
/// local step writes into copies, so nothing is applied before the agreement), the gathered
/// whole of each owned sharded parameter (gradient and parameter; for column shards also a
/// staging buffer of the largest one), a copy of this rank's rows (run) of each parameter
/// stepped by rows. No copy of any state for the rollback when another rank fails: the routes
/// that may fail and are not prechecked run before the agreement, and the local Partition's
/// own backups of their states put them back (optim::Partition::step_undo).
///
/// **Unreduced parameters** (Layout::unreduced, Dion's routes only) form a partition of their
/// own, stepped on every rank before the owners' (its averages are collectives, in parameter
/// order on every rank). Step 1 also agrees on their gradients' max_gradient() checks, so that
/// the rule's averages are reached on every rank or on none; a local overflow inside the rule
/// reaches the others as NaN through the average (kernels/low_rank.hpp). Their updates run in
/// the partition's step_fallible() stage, before the agreement; then every rank hashes them
/// (64 bits) and the ranks compare the hashes: a difference (builds that differ, or an
/// MPI_Allreduce that gave ranks different sums) fails the step everywhere with
/// internal_error, nothing applied. Memory: a copy of each unreduced parameter and gradient per
/// rank, the rule's state (M differs between the ranks, Q and the count do not), and their
/// partition's backup of that state, from which step_undo() puts it back when any rank failed.
/// Checkpoints hold the ranks' mean of each state buffer (the mean momentum, which is all the
/// step reads; identical buffers average to themselves, in double), so they load on any rank
/// count and into a single-process optim::Partition.
///
/// **Determinism.** Bit-identical to optim::Partition on one process for the same inputs, any
/// rank count (tests/distributed), for every layout but `unreduced` (above). Global clipping
/// (set_global_clip) is supported for replicated layouts only: with row shards the norm would be a sum in
/// another order; init() and step() refuse that combination.
template <class... Rules>
class DistributedPartition {
  using Local = optim::Partition<Rules...>;

 public:
  /// Cost of one parameter (its spec and label) in any consistent unit.
  using CostModel = std::function<double(const optim::ParamSpec&, const std::string& label)>;

  DistributedPartition(Communicator comm, std::vector<optim::ParamSpec> params,
                       std::vector<std::string> labels, optim::Route<Rules>... routes)
      : comm_(std::move(comm)),
        params_(std::move(params)),
        labels_(std::move(labels)),
        routes_(std::move(routes)...) {}

  /// One Layout per parameter (before init(); default: all replicated).
  void set_layouts(std::vector<Layout> layouts) { layouts_ = std::move(layouts); }
  /// Row-sharded parameters split where the caller's sharding puts the cut (before init();
  /// default: none). bounds[i] empty leaves parameter i as set_layouts() says (row_sharded
  /// takes chunk_bounds(), FSDP2's torch.chunk split); otherwise parameter i is row_sharded and
  /// rank r holds its rows [bounds[i][r], bounds[i][r+1]): ranks + 1 boundaries from 0 to the
  /// rows, nondecreasing (a rank may hold none). Uneven shards, and the pieces of a row-sharded
  /// fused parameter (optim::SplitPartition::set_source_rows passes these). Every rank passes
  /// the same bounds: init() compares them across the ranks and refuses a difference on every
  /// rank.
  void set_row_bounds(std::vector<std::vector<index_t>> bounds) { row_bounds_ = std::move(bounds); }
  /// Column-sharded parameters split where the caller's tensor parallelism puts the cut (before
  /// init(); default: none): as set_row_bounds, with column boundaries from 0 to the flattened
  /// parameter's columns; a parameter given them is column_sharded.
  void set_column_bounds(std::vector<std::vector<index_t>> bounds) { column_bounds_ = std::move(bounds); }
  /// Flat-sharded parameters (before init(); default: none): as set_row_bounds, with element
  /// boundaries from 0 to rows · cols of the flattened parameter; a parameter given them is
  /// flat_sharded and rank r holds its elements [bounds[i][r], bounds[i][r+1]). flat_bounds()
  /// computes them for the parameters of a flat buffer partitioned among the ranks. A parameter
  /// takes bounds of one kind only (init() refuses two).
  void set_flat_bounds(std::vector<std::vector<index_t>> bounds) { flat_bounds_ = std::move(bounds); }
  /// How init() picks owners (before init(); default OwnerChoice::balanced).
  void set_owner_choice(OwnerChoice c) { choice_ = c; }
  /// The cost, in the cost model's unit, of one float moved to or from an owner in the exchange
  /// (before init(); default kDefaultTransferCost): how OwnerChoice::transfer_aware weighs a
  /// transfer against work, and what modelled() charges for it under every choice. A finite value
  /// ≥ 0 (else init() refuses), the same on every rank (measure_transfer_cost() returns one).
  void set_transfer_cost(double per_float) {
    transfer_cost_ = per_float;
    pair_costs_ = TransferCosts{};
  }
  /// A cost per ordered pair of ranks instead (before init(); replaces set_transfer_cost):
  /// ranks on one node against ranks on others (measure_transfer_costs() measures one). Must
  /// have comm.size() ranks and pass TransferCosts::check(), the same on every rank (else
  /// init() refuses).
  void set_transfer_costs(TransferCosts per_pair) { pair_costs_ = std::move(per_pair); }
  /// Replaces default_cost() (before init()). Must return the same values on every rank (init()
  /// refuses owners that differ) and a finite cost ≥ 0 for every parameter (else init() refuses,
  /// on every rank).
  void set_cost_model(CostModel m) { cost_ = std::move(m); }
  /// optim::Partition::set_batching for the owners' local partitions (before init()). The same
  /// on every rank (init() refuses a difference on every rank).
  void set_batching(bool on, std::size_t max_group = 16) {
    batching_ = on;
    max_group_ = max_group;
  }
  /// What a NaN or Inf gradient on any rank does (default: the step refuses). The same on every
  /// rank: init() and each step compare it and refuse a difference on every rank.
  void set_non_finite_policy(optim::NonFinitePolicy p) { policy_ = p; }
  /// optim::Partition::set_prechecks for the owners' local partitions (before init()): off, the
  /// prechecked routes' states are copied too, and a step is all or nothing across the ranks
  /// under host allocation failure as well. The same on every rank (init() refuses a difference
  /// on every rank: a step's failure would otherwise copy states back on some ranks only).
  void set_prechecks(bool on) { prechecks_ = on; }
  /// optim::Partition::set_copy_all_states for the owners' local partitions (before init()): a
  /// step is all or nothing whatever the hyper-parameters, at the price of a copy of every
  /// state. The same on every rank (init() refuses a difference on every rank).
  void set_copy_all_states(bool on) { copy_all_ = on; }
  /// optim::Partition::set_global_clip (replicated layouts only, see the class comment). The
  /// same on every rank. init() and each step refuse, on every rank, a NaN or negative clip, a
  /// clip > 0 with a sharded or unreduced parameter, and clips that differ between the ranks.
  void set_global_clip(double max_norm) { clip_ = max_norm; }

  /// init() for wrappers that name the memory: optim::SplitPartition over a distributed
  /// partition built over layout.pieces() (cut parameters, docs/distributed.md). Collective;
  /// its refusals below are agreed (every rank returns the lowest failing rank's).
  /// invalid_argument unless `memory` is host (parameters are host memory) and no piece was made
  /// sharded through set_layouts(): a SplitPartition lays its pieces out from the caller's fused
  /// parameters, whose shards it is told by SplitPartition::set_source_rows,
  /// set_source_elements and set_source_columns (it passes the pieces' rows, runs and columns
  /// here through set_row_bounds(), set_flat_bounds() and set_column_bounds(), replacing any
  /// given before).
  optim::StepReport init(MemoryKind memory) {
    optim::StepReport mine;
    if (memory != MemoryKind::host)
      mine = optim::refusal("a distributed partition steps host memory only", -1);
    for (std::size_t i = 0; i < layouts_.size() && mine; ++i)
      if (layouts_[i] != Layout::replicated)
        mine = optim::refusal(
            "the pieces of cut parameters (SplitPartition) are not laid out with set_layouts: shard the "
            "fused parameters with SplitPartition::set_source_rows, set_source_elements or "
            "set_source_columns",
            static_cast<std::ptrdiff_t>(i));
    // This rank's arguments: agreed, so that a rank refusing alone does not leave the others
    // waiting in init() (one all-reduce).
    if (optim::StepReport r = agreed(mine); !r) {
      local_.reset();
      replicas_.reset();
      return r;
    }
    return init();
  }

  /// Collective. Compares the settings across the ranks (class comment), checks names (unique,
  /// as optim::Partition::init), shapes, labels and layouts, assigns owners, builds the local
  /// Partition and its states, and the exchange buffers. The same failure on every rank: status,
  /// bad_param and message (the lowest failing rank's).
  optim::StepReport init() {
    const std::size_t np = params_.size();
    local_.reset();
    replicas_.reset();
    // The bounds first: a rank computing other bounds than the others is refused on every rank
    // before anything depends on them.
    // So are the owner choice and the transfer cost (its bits), which the checks below read.
    // Heap exhaustion: each part of init() local to a rank runs under locally(), and the ranks
    // agree that every part succeeded (on_every_rank) before the next collective, so a rank that
    // ran out of host memory returns out_of_memory with the others instead of leaving them
    // waiting in a collective (docs/distributed.md "How a step works").
    // Then everything else plan() and the steps read: a difference would make plan() refuse on
    // some ranks only (a label no route serves), or the ranks exchange arrays of other sizes
    // (shapes) or step with other hyper-parameters (signature()), policies or clips. Refused on
    // every rank, the message naming what differs. Cost: a hash of the names, shapes, labels and
    // routes' signatures, one all-reduce.
    std::array<std::uint64_t, kCompared> hashes{};
    const bool listed = locally([&] { hashes = setting_hashes(); });
    if (!on_every_rank(listed)) return init_out_of_memory();
    std::int64_t none = 0;
    if (const std::uint32_t differ = differing(hashes.data(), hashes.size(), none))
      return optim::refusal(differing_message(differ, 0), -1);
    const int n = comm_.size(), me = comm_.rank();
    std::vector<double> costs;
    std::vector<std::vector<index_t>> held_by, owners;
    TransferCosts transfer;
    // The layouts, the cuts and the owners (deterministic refusals: the same on every rank).
    const auto plan = [&]() -> optim::StepReport {
      if (labels_.size() != np) return optim::refusal("labels and parameters differ in number", -1);
      std::ptrdiff_t offender = -1;  // shapes and names, as optim::Partition::init refuses them
      if (message_ = optim::params_problem(params_, &offender); !message_.empty())
        return optim::refusal(message_.c_str(), offender);
      if (layouts_.empty()) layouts_.assign(np, Layout::replicated);
      if (layouts_.size() != np) return optim::refusal("layouts and parameters differ in number", -1);
      // Bounds given per kind: the layout they make, what they count.
      struct Given {
        const std::vector<std::vector<index_t>>* bounds;
        Layout layout;
        const char *kind, *unit;
      };
      const Given given[] = {{&row_bounds_, Layout::row_sharded, "row", "rows"},
                             {&column_bounds_, Layout::column_sharded, "column", "columns"},
                             {&flat_bounds_, Layout::flat_sharded, "flat", "elements"}};
      for (const Given& g : given)
        if (!g.bounds->empty() && g.bounds->size() != np) {
          message_ = std::string(g.kind) + " bounds and parameters differ in number";
          return optim::refusal(message_.c_str(), -1);
        }
      shapes_.clear();
      rows_.clear();
      cols_.clear();
      elements_.clear();
      layout_ = layouts_;
      cuts_.assign(np, {});
      for (std::size_t i = 0; i < np; ++i) {
        const optim::BlockShape s = optim::flatten(params_[i].shape);
        shapes_.push_back(s);
        const Given* from = nullptr;
        for (const Given& g : given) {
          if (g.bounds->empty() || (*g.bounds)[i].empty()) continue;
          if (from) {
            message_ = "parameter '" + params_[i].name + "' has " + from->kind + " and " + g.kind + " bounds";
            return optim::refusal(message_.c_str(), static_cast<std::ptrdiff_t>(i));
          }
          from = &g;
        }
        if (from && layout_[i] == Layout::unreduced) {
          message_ =
              "parameter '" + params_[i].name + "' has " + from->kind + " bounds and Layout::unreduced";
          return optim::refusal(message_.c_str(), static_cast<std::ptrdiff_t>(i));
        }
        if (from) layout_[i] = from->layout;
        // What rank boundaries count: rows, columns or elements of the flattened parameter.
        const index_t total = layout_[i] == Layout::row_sharded      ? s.rows
                              : layout_[i] == Layout::column_sharded ? s.cols
                                                                     : s.size();
        if (from) {
          message_ = optim::split_problem((*from->bounds)[i], static_cast<std::size_t>(n), total,
                                          params_[i].name, from->kind, from->unit);
          if (!message_.empty()) return optim::refusal(message_.c_str(), static_cast<std::ptrdiff_t>(i));
          cuts_[i] = (*from->bounds)[i];
        } else if (sharded_layout(i)) {
          cuts_[i] = chunk_bounds(total, n);
        }
        RowRange mine{0, total};  // this rank's rows, columns or elements
        if (sharded_layout(i))
          mine = RowRange{cuts_[i][static_cast<std::size_t>(me)], cuts_[i][static_cast<std::size_t>(me) + 1]};
        RowRange rows{0, s.rows}, cols{0, s.cols}, elements{0, s.size()};
        if (layout_[i] == Layout::row_sharded) {
          rows = mine;
          elements = RowRange{mine.begin * s.cols, mine.end * s.cols};
        } else if (layout_[i] == Layout::column_sharded) {
          cols = mine;
        } else if (layout_[i] == Layout::flat_sharded) {
          elements = mine;
          // The rows its elements lie in (the first and the last may be partial).
          rows = s.cols == 0 || mine.size() == 0
                     ? RowRange{0, 0}
                     : RowRange{mine.begin / s.cols, (mine.end + s.cols - 1) / s.cols};
        }
        rows_.push_back(rows);
        cols_.push_back(cols);
        elements_.push_back(elements);
      }
      if (optim::StepReport c = clip_problem(); !c) return c;
      // Owners. A sharded parameter whose rule acts on each element alone (row_local_route) has
      // none: every rank steps its own rows, column block or run with the state of those.
      costs.assign(np, 0.0);
      by_rows_.assign(np, 0);
      replica_index_.assign(np, -1);
      replicated_.clear();
      for (std::size_t i = 0; i < np; ++i) {
        const int route = route_index(labels_[i]);
        if (route < 0) {
          message_ = "no route for the label of parameter '" + params_[i].name + "'";
          return optim::refusal(message_.c_str(), static_cast<std::ptrdiff_t>(i));
        }
        if (layout_[i] == Layout::unreduced) {  // stepped on every rank (replicas), no owner
          if (!replica_route(route)) {
            message_ =
                "parameter '" + params_[i].name +
                "' is unreduced, but its route's rule does not take replicas (optim::takes_replicas: Dion)";
            return optim::refusal(message_.c_str(), static_cast<std::ptrdiff_t>(i));
          }
          replica_index_[i] = static_cast<std::ptrdiff_t>(replicated_.size());
          replicated_.push_back(i);
          costs[i] = 0.0;  // the same work on every rank: it does not change the balance
          continue;
        }
        // (An empty parameter keeps an owner, so that its empty state is still checkpointed.)
        by_rows_[i] = layout_[i] != Layout::replicated && row_local_route(route) && shapes_[i].size() > 0;
        costs[i] = by_rows_[i] ? 0.0
                   : cost_     ? cost_(params_[i], labels_[i])
                               : default_cost(shapes_[i], matrix_route(route));
        if (!optim::hyper::non_negative(costs[i])) {  // LPT would place it anywhere
          message_ = "the cost model (set_cost_model) gives parameter '" + params_[i].name +
                     "' a cost that is not finite and >= 0";
          return optim::refusal(message_.c_str(), static_cast<std::ptrdiff_t>(i));
        }
      }
      if (!optim::hyper::non_negative(transfer_cost_))  // also on one rank, where the matrix has no pair
        return optim::refusal("the transfer cost (set_transfer_cost) must be finite and >= 0", -1);
      transfer = pair_costs_.ranks > 0 ? pair_costs_ : TransferCosts::uniform(n, transfer_cost_);
      if (const char* bad = transfer.check()) return optim::refusal(bad, -1);
      if (transfer.ranks != n)
        return optim::refusal("the transfer costs (set_transfer_costs) are for another number of ranks", -1);
      // Elements of each exchanged parameter per rank (where_held, transfer_aware, modelled()).
      held_by.assign(np, {});
      for (std::size_t i = 0; i < np; ++i)
        if (exchanged(i))
          for (std::size_t r = 0; r < static_cast<std::size_t>(n); ++r)
            held_by[i].push_back((cuts_[i][r + 1] - cuts_[i][r]) * unit(i));
      owner_ = choice_ == OwnerChoice::transfer_aware
                   ? assign_owners_with_transfers(costs, n, held_by, transfer)
               : choice_ == OwnerChoice::where_held ? assign_owners(costs, n, held_by)
                                                    : assign_owners(costs, n);
      for (std::size_t i = 0; i < np; ++i)
        if (by_rows_[i] || replica_index_[i] >= 0) owner_[i] = -1;
      owners = {{owner_.begin(), owner_.end()}};
      return optim::StepReport{};
    };
    // Its refusals are the same on every rank (what they read was compared above) but for a
    // user's cost model, and host memory: agreed, with the lowest failing rank's message.
    optim::StepReport planned;
    if (!locally([&] { planned = plan(); })) planned = init_out_of_memory();
    if (planned = agreed(planned); !planned) return planned;
    // A cost model that differs between the ranks gives other owners: refused on every rank
    // before any exchange depends on them.
    if (!same_on_every_rank({&owners}))
      return optim::refusal(
          "the owners differ between the ranks (the cost model is not the same on every rank)", -1);
    // The local partitions and the exchange buffers; a failure (or an exhausted heap) on any rank
    // fails init() on every rank.
    std::vector<std::int64_t> dims;
    const auto build = [&]() -> optim::StepReport {
      modelled_ = modelled_step(costs, n, owner_, held_by, transfer);
      // The local partition of the owned parameters and of this rank's rows of the by-rows ones,
      // in global order.
      owned_.clear();
      local_index_.assign(np, -1);
      std::vector<optim::ParamSpec> specs;
      std::vector<std::string> labels;
      for (std::size_t i = 0; i < np; ++i)
        if (owner_[i] == me || (by_rows_[i] && held(i).size() > 0)) {
          local_index_[i] = static_cast<std::ptrdiff_t>(owned_.size());
          owned_.push_back(i);
          specs.push_back(by_rows_[i] ? optim::ParamSpec{params_[i].name, {held(i).rows, held(i).cols}}
                                      : params_[i]);
          labels.push_back(labels_[i]);
        }
      std::apply(
          [&](const auto&... r) {
            local_.emplace(optim::partition(std::move(specs), std::move(labels), optim::Route<Rules>(r)...));
          },
          routes_);
      local_->set_batching(batching_, max_group_);
      local_->set_prechecks(prechecks_);
      local_->set_copy_all_states(copy_all_);
      local_->set_non_finite_policy(optim::NonFinitePolicy::error);  // scanned globally in step 1
      optim::StepReport r = local_->init();
      if (!r && r.bad_param >= 0)  // the local partition's index, as a global one
        r.bad_param = static_cast<std::ptrdiff_t>(owned_[static_cast<std::size_t>(r.bad_param)]);
      // The unreduced parameters: the same partition on every rank, whose rules average over the
      // ranks (optim::with_replicas; the mean of the ranks' floats, identical on every rank).
      if (r && !replicated_.empty()) {
        std::vector<optim::ParamSpec> rspecs;
        std::vector<std::string> rlabels;
        for (std::size_t i : replicated_) {
          rspecs.push_back(params_[i]);
          rlabels.push_back(labels_[i]);
        }
        replica_collectives_ = std::make_unique<ReplicaCollectives>(comm_);
        ReplicaCollectives* rc = replica_collectives_.get();  // (all the collectives capture)
        // Each collective asks proceed() first (ReplicaCollectives): a status other than ok is
        // a rank that stopped, and the kernel passes it on.
        Replicas replicas = ReplicaAverage([rc](float* data, std::size_t count) {
          if (const Status s = rc->proceed(); s != Status::ok) return s;
          rc->comm.allreduce_sum(data, count);
          for (std::size_t e = 0; e < count; ++e)
            data[e] *= rc->inv;
          return Status::ok;
        });
        if (comm_.size() > 1) {  // the panels' QRs split across the ranks (low_rank_power_step_batch)
          replicas.average_scatter = [rc](float* data, const std::size_t* counts) {
            if (const Status s = rc->proceed(); s != Status::ok) return s;
            if (!rc->blocks(counts)) return Status::out_of_range;
            rc->comm.reduce_scatter_sum(data, rc->counts);
            const std::size_t own = static_cast<std::size_t>(rc->comm.rank());
            for (std::int64_t e = rc->displs[own]; e < rc->displs[own] + rc->counts[own]; ++e)
              data[e] *= rc->inv;
            return Status::ok;
          };
          replicas.gather = [rc](float* data, const std::size_t* counts) {
            if (const Status s = rc->proceed(); s != Status::ok) return s;
            if (!rc->blocks(counts)) return Status::out_of_range;
            rc->comm.allgatherv(data, rc->counts, rc->displs);
            return Status::ok;
          };
          replicas.rank = comm_.rank();
          replicas.size = comm_.size();
        }
        std::apply(
            [&](const auto&... rt) {
              replicas_.emplace(optim::partition(
                  std::move(rspecs), std::move(rlabels),
                  optim::Route<Rules>{rt.label, optim::with_replicas(rt.rule, replicas)}...));
            },
            routes_);
        // Groups of one member per rank, as microsoft/dion's batches: each rank orthonormalises
        // one panel of each group (a shape's last group may be smaller). In parameter order.
        replicas_->set_batching(comm_.size() > 1, static_cast<std::size_t>(comm_.size()));
        replicas_->set_non_finite_policy(optim::NonFinitePolicy::error);
        r = replicas_->init();
        if (!r && r.bad_param >= 0)
          r.bad_param = static_cast<std::ptrdiff_t>(replicated_[static_cast<std::size_t>(r.bad_param)]);
        // step() hashes their updates between step_fallible() and step_finish(), and undoes them
        // with step_undo() when a rank failed: every update must run in step_fallible(). A rule
        // that takes replicas and has a precheck covering its state (none does) would run after.
        if (r && !replicas_->every_update_fallible())
          r = optim::refusal(
              "an unreduced parameter's route is prechecked or cannot fail: its update would run after "
              "the ranks agree (DistributedPartition steps unreduced routes in step_fallible)",
              -1, Status::internal_error);
      }
      if (!r) return r;
      // Exchange buffers: replicated updates grouped by owner.
      counts_.assign(static_cast<std::size_t>(n), 0);
      for (std::size_t i = 0; i < np; ++i)
        if (layout_[i] == Layout::replicated)
          counts_[static_cast<std::size_t>(owner_[i])] += shapes_[i].size();
      displs_.assign(static_cast<std::size_t>(n), 0);
      for (int k = 1; k < n; ++k)
        displs_[static_cast<std::size_t>(k)] =
            displs_[static_cast<std::size_t>(k - 1)] + counts_[static_cast<std::size_t>(k - 1)];
      const std::int64_t total = displs_.back() + counts_.back();
      if (total > INT_MAX)
        return optim::refusal("more than 2^31 - 1 replicated floats (MPI counts are int)", -1);
      offset_.assign(np, -1);
      std::vector<std::int64_t> next = displs_;
      for (std::size_t i = 0; i < np; ++i)
        if (layout_[i] == Layout::replicated) {
          offset_[i] = next[static_cast<std::size_t>(owner_[i])];
          next[static_cast<std::size_t>(owner_[i])] += shapes_[i].size();
        }
      updates_.assign(static_cast<std::size_t>(total), 0.0f);
      copies_.assign(owned_.size(), {});
      std::size_t max_shard = 0;
      for (std::size_t k = 0; k < owned_.size(); ++k) {
        const std::size_t i = owned_[k];
        const auto size = static_cast<std::size_t>(by_rows_[i] ? held(i).size() : shapes_[i].size());
        // Replicated: a copy of the parameter for the local step. Sharded: the gathered parameter;
        // the gathered gradient (then update) follows it in the same buffer. By rows: the same
        // for this rank's rows.
        copies_[k].assign(layout_[i] == Layout::replicated ? size : 2 * size, 0.0f);
      }
      std::size_t max_stage = 0;
      for (std::size_t i = 0; i < np; ++i)
        if (exchanged(i)) {
          max_shard = std::max(max_shard, static_cast<std::size_t>(held(i).size()));
          if (layout_[i] == Layout::column_sharded && owner_[i] == me)
            max_stage = std::max(max_stage, static_cast<std::size_t>(shapes_[i].size()));
        }
      shard_update_.assign(max_shard, 0.0f);
      stage_.assign(max_stage, 0.0f);
      shard_counts_.assign(np, {});
      shard_displs_.assign(np, {});
      // The ranks' blocks in rank order: for row and flat shards the rows or runs of the whole
      // matrix itself, for column shards the staging buffer the owner unpacks (each rank's rows ×
      // its columns).
      for (std::size_t i = 0; i < np; ++i)
        if (exchanged(i)) {
          for (std::size_t k = 0; k < static_cast<std::size_t>(n); ++k) {
            shard_counts_[i].push_back((cuts_[i][k + 1] - cuts_[i][k]) * unit(i));
            shard_displs_[i].push_back(cuts_[i][k] * unit(i));
          }
        }
      local_params_.assign(owned_.size(), nullptr);
      local_grads_.assign(owned_.size(), nullptr);
      replica_copies_.assign(replicated_.size(), {});
      for (std::size_t k = 0; k < replicated_.size(); ++k)  // the parameter, then the gradient (update)
        replica_copies_[k].assign(2 * static_cast<std::size_t>(shapes_[replicated_[k]].size()), 0.0f);
      replica_params_.assign(replicated_.size(), nullptr);
      replica_grads_.assign(replicated_.size(), nullptr);
      // Activation Grams: the owner knows the dimension; every rank keeps a local sum.
      dims.assign(np, 0);
      for (std::size_t i : owned_)
        dims[i] = optim::activation_gram(*local_, params_[i].name).dim;
      return optim::StepReport{};
    };
    // The report of the lowest failing parameter, with the message of the lowest rank that
    // reported it (copied before the partitions go: r.message may point into the local one).
    optim::StepReport r;
    if (!locally([&] { r = build(); })) r = init_out_of_memory();
    if (r = agreed(r); !r) {
      local_.reset();
      replicas_.reset();
      return r;
    }
    comm_.allreduce_max(dims.data(), np);
    const bool sized = locally([&] {
      gram_dim_ = dims;
      grams_.assign(np, {});
      gram_samples_.assign(np, 0);
      gram_tag_.assign(np, -1);
      samples_mine_.assign(np, 0);
      samples_all_.assign(np * static_cast<std::size_t>(n), 0);
      std::size_t largest_gram = 0;
      for (std::size_t i = 0; i < np; ++i)
        if (dims[i] > 0) {
          grams_[i].assign(static_cast<std::size_t>(dims[i] * dims[i]), 0.0f);
          if (owner_[i] == me) largest_gram = std::max(largest_gram, grams_[i].size());
        }
      gram_scratch_.assign(largest_gram, 0.0f);  // what an owner receives the others' Grams in
      // Each parameter's route limit (max_gradient_of), for step 1's scan: none allocated there.
      grad_limit_bits_.assign(np, optim::magnitude_bits(HUGE_VAL));
      for (std::size_t i = 0; i < np; ++i)
        grad_limit_bits_[i] = optim::magnitude_bits(
            route_max_gradient(route_index(labels_[i]), optim::flatten(params_[i].shape)));
    });
    if (!on_every_rank(sized)) {
      local_.reset();
      replicas_.reset();
      return init_out_of_memory();
    }
    steps_ = 0;
    return optim::StepReport{};
  }

  /// One collective step. params[i], grads[i]: this rank's arrays of parameter i — the whole
  /// flattened row-major matrix (replicated), its rows row_range(i) (row_sharded), its columns
  /// column_range(i) of every row (column_sharded) or its elements element_range(i)
  /// (flat_sharded); null when it holds nothing of it. Gradients are read, not modified (unlike
  /// optim::Partition, whose gradient buffers hold the updates afterwards). Returns the same
  /// status, bad_param and message on every rank, also for one rank's own refusal (lists of
  /// another length, a clip set since init() that is refused or differs from the others').
  optim::StepReport step(const std::vector<float*>& params, const std::vector<float*>& grads) {
    const std::size_t np = params_.size();
    // A step before init() is refused alike on every rank (initialized() is agreed by init()).
    if (!local_) return optim::refusal("step before a successful init()", -1);
    // 1. This rank's refusals (pointer counts, the clip), finiteness and pointers, agreed in one
    //    all-reduce with the clip and the policy, which may have changed since init(). Each
    //    gradient is scanned as optim::Partition scans it: NaN/Inf, and beyond its route's
    //    max_gradient unless clipping comes first (an element-wise test, so each rank's part
    //    tests its share of the whole); after clipping the owners' partitions test the limit.
    std::int64_t key = detail::kNoFailure;
    const char* why = "";
    if (optim::StepReport r = optim::check_counts(np, params, grads); !r) {
      key = detail::failure_key(-1, r.status);
      why = r.message;
    } else if (optim::StepReport c = clip_problem(); !c) {
      key = detail::failure_key(-1, c.status);
      why = c.message;
    }
    for (std::size_t i = 0; i < np && key == detail::kNoFailure; ++i) {
      const index_t len = held(i).size();
      if (len == 0) continue;
      const auto at = static_cast<std::ptrdiff_t>(i);
      if (params[i] == nullptr || grads[i] == nullptr) {
        key = detail::failure_key(at, Status::invalid_argument);
        why = "null pointer on some rank";
      } else {
        const MatrixRef<const float> g(grads[i], held(i).rows, held(i).cols);
        // (The replicas' rule must be reached on every rank or none: their limit is always here.)
        const bool limited = clip_ <= 0.0 || replica_index_[i] >= 0;
        if (!optim::all_within(g, limited ? grad_limit_bits_[i] : optim::magnitude_bits(HUGE_VAL))) {
          const bool finite = optim::all_finite(g);
          key = detail::failure_key(at, finite ? Status::out_of_range : Status::non_finite_input);
          why = finite ? "a gradient is beyond its rule's max_gradient on some rank"
                       : "a gradient contains NaN or Inf on some rank";
        }
      }
    }
    const std::array<std::uint64_t, 2> settings = step_settings();
    const std::int64_t mine = key;
    if (const std::uint32_t differ = differing(settings.data(), settings.size(), key))
      return optim::refusal(differing_message(differ, kCompared - settings.size()), -1);
    if (key != detail::kNoFailure) {
      const std::ptrdiff_t bad = detail::failed_param(key);
      const Status status = detail::failed_status(key);
      if (status != Status::non_finite_input && status != Status::out_of_range)
        return optim::refusal(agreed_message(mine == key, why), bad, status);
      // A gradient failed. As optim::Partition does, a NaN/Inf parameter is refused first when it
      // comes before it, and under the skip policy wherever it is: a skip must not hide it (a
      // NaN weight gives NaN gradients at every step, and the skips would go on for ever). The
      // parameters are scanned only on this path (one more all-reduce): the owners' partitions
      // scan them on every step that gets that far.
      std::int64_t first_bad = INT64_MAX;
      for (std::size_t i = 0; i < np && first_bad == INT64_MAX; ++i)
        if (held(i).size() > 0 &&
            !optim::all_finite(MatrixRef<const float>(params[i], held(i).rows, held(i).cols)))
          first_bad = static_cast<std::int64_t>(i);
      first_bad = comm_.allreduce_min(first_bad);
      const bool skip = policy_ == optim::NonFinitePolicy::skip;
      if (first_bad != INT64_MAX && (skip || first_bad < bad))
        return optim::refusal(
            "a parameter contains NaN or Inf on some rank (its optimizer state would keep them); nothing was "
            "changed",
            static_cast<std::ptrdiff_t>(first_bad), Status::non_finite_input);
      if (skip) {
        ++skipped_;
        optim::StepReport r =
            optim::refusal(status == Status::non_finite_input
                               ? "step skipped: a gradient contains NaN or Inf on some rank"
                               : "step skipped: a gradient is beyond its rule's max_gradient on some rank",
                           bad, Status::ok);
        r.skipped = true;
        return r;
      }
      return optim::refusal(agreed_message(mine == key, why), bad, status);
    }
    // Global clipping (replicated only): optim::Partition's sum, in its order, on every rank.
    double clip_factor = 1.0;
    if (clip_ > 0.0) {
      double ss = 0.0;
      for (std::size_t i = 0; i < np; ++i)
        for (index_t k = 0, n = shapes_[i].size(); k < n; ++k)
          ss += double(grads[i][k]) * double(grads[i][k]);
      clip_factor = optim::global_clip_factor(std::sqrt(ss), clip_);
    }
    // 2. Owned arrays: copies of replicated parameters, gradients into the update buffer;
    //    row-sharded parameters and gradients gathered.
    for (std::size_t k = 0; k < owned_.size(); ++k) {
      const std::size_t i = owned_[k];
      if (by_rows_[i]) {  // this rank's rows: a copy of the parameter rows, then the gradient rows
        stage_copy(params[i], grads[i], held(i).size(), copies_[k], local_params_[k], local_grads_[k]);
        continue;
      }
      if (layout_[i] != Layout::replicated) continue;
      const index_t n = shapes_[i].size();
      float* u = updates_.data() + offset_[i];
      std::copy(params[i], params[i] + n, copies_[k].data());
      std::copy(grads[i], grads[i] + n, u);
      if (clip_factor != 1.0)  // as optim::Partition scales its gradients
        optim::scale_by(MatrixRef<float>(u, 1, n, MemoryKind::host), clip_factor);
      local_params_[k] = copies_[k].data();
      local_grads_[k] = u;
    }
    for (std::size_t i = 0; i < np; ++i) {
      if (!exchanged(i)) continue;
      const auto& counts = shard_counts_[i];
      const auto& displs = shard_displs_[i];
      float* whole = nullptr;
      if (owner_[i] == comm_.rank()) {
        const auto k = static_cast<std::size_t>(local_index_[i]);
        whole = copies_[k].data();
        local_params_[k] = whole;
        local_grads_[k] = whole + shapes_[i].size();
      }
      if (layout_[i] != Layout::column_sharded) {  // rows or runs: in place in the whole
        comm_.gatherv(params[i], whole, counts, displs, owner_[i]);
        comm_.gatherv(grads[i], whole ? whole + shapes_[i].size() : nullptr, counts, displs, owner_[i]);
        continue;
      }
      for (int part = 0; part < 2; ++part) {  // column blocks into the stage, then into place
        comm_.gatherv(part == 0 ? params[i] : grads[i], whole ? stage_.data() : nullptr, counts, displs,
                      owner_[i]);
        if (whole) move_columns(i, whole + part * shapes_[i].size(), true);
      }
    }
    // 3. Activation Grams to the owners.
    reduce_activations();
    // 4. Local updates (on copies: nothing is applied before the agreement): the unreduced
    //    parameters first, on every rank (their rule averages over the ranks), then the owned.
    for (std::size_t k = 0; k < replicated_.size(); ++k) {
      const std::size_t i = replicated_[k];
      stage_copy(params[i], grads[i], shapes_[i].size(), replica_copies_[k], replica_params_[k],
                 replica_grads_[k]);
    }
    // The unreduced parameters step on every rank before the local partition, in the first two
    // of optim::Partition's stages: every update runs in step_fallible() (init() checked), each
    // state copied first by their partition, so a failure on any rank is undone by its
    // step_undo(), and step_finish() applies the updates to the copies after the agreement. No
    // snapshot of their states per step (docs/distributed.md).
    std::int64_t local_key = detail::kNoFailure;
    const char* local_message = "";  // the failing report's (it lives until that partition's next call)
    if (replicas_) {
      optim::StepReport rr =
          guarded([&] { return replicas_->step_prepare(replica_params_, replica_grads_); });
      if (rr) rr = guarded([&] { return replicas_->step_fallible(replica_params_, replica_grads_); });
      // A rank that stopped early tells the ranks still in the kernels' collectives
      // (ReplicaCollectives): they return its status, and every rank gets here.
      replica_collectives_->finish(rr.status);
      // Called on every rank whatever happened (a collective); a verdict only when all succeeded.
      const bool differ = hashes_differ(rr ? replica_update_hash() : 0, !rr);
      if (!rr) {
        local_key = detail::failure_key(
            static_cast<std::ptrdiff_t>(
                replicated_[static_cast<std::size_t>(std::max<std::ptrdiff_t>(rr.bad_param, 0))]),
            rr.status);
        local_message = rr.message;
      } else if (differ) {
        local_key =
            detail::failure_key(static_cast<std::ptrdiff_t>(replicated_.front()), Status::internal_error);
        local_message =
            "the unreduced parameters' updates differ between the ranks (builds that differ, or an "
            "MPI_Allreduce whose sums differ between the ranks); nothing applied";
      }
    }
    // The local step in optim::Partition's stages: its checks and prechecks, then the routes
    // that may fail and are not prechecked (the local partition copies those states first).
    // Everything after the agreement cannot fail, so a failure on any rank is undone here by
    // step_undo() from those copies: no snapshot of the local states (docs/distributed.md).
    optim::StepReport local = guarded([&] { return local_->step_prepare(local_params_, local_grads_); });
    if (local) local = guarded([&] { return local_->step_fallible(local_params_, local_grads_); });
    // 5. Agreement.
    auto note = [&](const optim::StepReport& r) {
      if (r) return;
      const std::int64_t k =
          detail::failure_key(static_cast<std::ptrdiff_t>(
                                  owned_[static_cast<std::size_t>(std::max<std::ptrdiff_t>(r.bad_param, 0))]),
                              r.status);
      if (k < local_key) {
        local_key = k;
        local_message = r.message;
      }
    };
    note(local);
    key = comm_.allreduce_min(local_key);
    if (key == detail::kNoFailure) {
      // The rest cannot fail but by a rule breaking the protocol (internal_error: its states
      // may have advanced), which is agreed too, so that every rank returns alike and no
      // parameter moves.
      note(guarded([&] { return local_->step_finish(local_params_, local_grads_); }));
      key = comm_.allreduce_min(local_key);
    } else {
      local_->step_undo();  // nothing to undo where step_fallible() failed or did not run
    }
    if (replicas_) {
      if (key == detail::kNoFailure)
        replicas_->step_finish(replica_params_, replica_grads_);  // applies; runs no rule (above)
      else
        replicas_->step_undo();  // a no-op where their own step failed (it undid itself)
    }
    if (key != detail::kNoFailure)  // the message of the lowest rank that reported this failure
      // (the owner, or for a parameter stepped by rows the first rank whose rows failed)
      return optim::refusal(agreed_message(local_key == key, local_message), detail::failed_param(key),
                            detail::failed_status(key));
    // 6. + 7. Exchange and apply.
    if (!updates_.empty()) comm_.allgatherv(updates_.data(), counts_, displs_);
    for (std::size_t i = 0; i < np; ++i) {
      const optim::BlockShape s = shapes_[i];
      if (layout_[i] == Layout::replicated) {
        optim::apply_updates(MatrixRef<float>(params[i], s.rows, s.cols),
                             MatrixRef<const float>(updates_.data() + offset_[i], s.rows, s.cols));
        continue;
      }
      if (replica_index_[i] >= 0) {  // computed here, the same on every rank
        optim::apply_updates(
            MatrixRef<float>(params[i], s.rows, s.cols),
            MatrixRef<const float>(replica_grads_[static_cast<std::size_t>(replica_index_[i])], s.rows,
                                   s.cols));
        continue;
      }
      if (by_rows_[i]) {  // this rank's own update rows or run
        const optim::BlockShape h = held(i);
        if (h.size() > 0)
          optim::apply_updates(
              MatrixRef<float>(params[i], h.rows, h.cols),
              MatrixRef<const float>(copies_[static_cast<std::size_t>(local_index_[i])].data() + h.size(),
                                     h.rows, h.cols));
        continue;
      }
      float* whole = nullptr;
      if (owner_[i] == comm_.rank())
        whole = copies_[static_cast<std::size_t>(local_index_[i])].data() + s.size();
      if (whole && layout_[i] == Layout::column_sharded) {  // the update's column blocks, by rank
        move_columns(i, whole, false);
        whole = stage_.data();
      }
      comm_.scatterv(whole, shard_update_.data(), shard_counts_[i], shard_displs_[i], owner_[i]);
      if (held(i).size() > 0)
        optim::apply_updates(MatrixRef<float>(params[i], held(i).rows, held(i).cols),
                             MatrixRef<const float>(shard_update_.data(), held(i).rows, held(i).cols));
    }
    ++steps_;
    return optim::StepReport{};
  }

  /// Adds this rank's layer inputs X (tokens × d_in, row-major, host) of `param` to this rank's
  /// activation Gram for the coming step (not collective; the first call after a step starts a
  /// new sum, as does a call that finds this rank's sum overflowed). step() then delivers to
  /// the owner the sum over ranks, in rank order, of every rank's Gram (each accumulated as
  /// optim::accumulate_activations does), with the summed sample count. Call it on criterion
  /// steps only, as for one process. Errors: before a successful init(), no such parameter, a
  /// rule without statistics, d_in ≠ the parameter's columns → invalid_argument; NaN/Inf →
  /// non_finite_input (the sum unchanged). `workspace`: gram_accumulate()'s (keep one for these
  /// calls, so that only the first allocates).
  Status accumulate_activations(const std::string& param, MatrixRef<const float> x,
                                Workspace* workspace = nullptr) {
    const std::ptrdiff_t i = index_of(param);
    if (!initialized() || i < 0 || gram_dim_[static_cast<std::size_t>(i)] == 0 ||
        x.cols != gram_dim_[static_cast<std::size_t>(i)])
      return Status::invalid_argument;
    const auto u = static_cast<std::size_t>(i);
    const index_t d = gram_dim_[u];
    // A new sum after a step, and in place of one that overflowed on this rank (as
    // optim::accumulate_activations).
    if (gram_tag_[u] != steps_ || !optim::all_finite(MatrixRef<const float>(grams_[u].data(), d, d))) {
      std::fill(grams_[u].begin(), grams_[u].end(), 0.0f);
      gram_samples_[u] = 0;
      gram_tag_[u] = steps_;
    }
    const Status s = gram_accumulate(x, MatrixRef<float>(grams_[u].data(), d, d), workspace);
    if (s == Status::ok) gram_samples_[u] += x.rows;
    return s;
  }

  /// Drops the activation statistics of `param` for the coming step (not collective; call it on
  /// every rank): this rank's sum, and where this rank owns `param` the sum step() delivered to
  /// its rule (optim::clear_activations). The way on after a step refused an activation Gram
  /// (its message names it: a sum over ranks that overflowed), whose sums a retry would deliver
  /// again: the criterion then keeps p, or accumulate_activations() gives it new statistics.
  /// Errors: before a successful init(), no such parameter or a rule without statistics →
  /// invalid_argument. Cost: d_in² writes on the owner.
  Status clear_activations(const std::string& param) {
    const std::ptrdiff_t i = index_of(param);
    if (!initialized() || i < 0 || gram_dim_[static_cast<std::size_t>(i)] == 0)
      return Status::invalid_argument;
    const auto u = static_cast<std::size_t>(i);
    gram_tag_[u] = -1;
    gram_samples_[u] = 0;
    if (local_ && owner_[u] == comm_.rank()) return optim::clear_activations(*local_, param);
    return Status::ok;
  }

  /// True after a successful init() (the same on every rank).
  bool initialized() const { return local_.has_value(); }
  /// The partition of the parameters this rank owns (their names are the global names).
  /// Precondition (also of visit_local): initialized().
  Local& local() { return *local_; }
  const std::vector<optim::ParamSpec>& params() const { return params_; }
  const std::vector<std::string>& labels() const { return labels_; }
  /// The owner rank of each parameter (after init()); −1 for a parameter stepped by rows or
  /// unreduced.
  const std::vector<int>& owners() const { return owner_; }
  /// The step this assignment gives in the cost model (after init(); modelled_step()): each
  /// rank's work and the exchange of the gathered parameters at the transfer cost; the same on
  /// every rank. Unreduced parameters are not in it: their work is the same on every rank.
  const ModelledStep& modelled() const { return modelled_; }
  /// Whether parameter i is stepped by rows (after init()): sharded (rows, columns or a run)
  /// with a route whose rule acts on each element alone (optim::rule_row_local: AdamW, SGD).
  /// Every rank then steps its own rows, column block or run, with the state of those, and
  /// nothing of it is communicated.
  bool by_rows(std::size_t i) const { return by_rows_[i] != 0; }
  /// The boundaries of sharded parameter i among the ranks (after init()): rank r holds its
  /// rows, columns or elements (as its layout says) [b[r], b[r+1]); empty for replicated.
  const std::vector<index_t>& bounds(std::size_t i) const { return cuts_[i]; }
  /// The rows of parameter i this rank holds (all rows unless row_sharded; flat_sharded: the
  /// rows its elements lie in, the first and the last possibly partial).
  RowRange row_range(std::size_t i) const { return rows_[i]; }
  /// The elements [begin, end) of the flattened row-major parameter i this rank holds, one
  /// contiguous run: all for replicated (and column_sharded, whose columns are not one run),
  /// row_range(i) × all columns for row_sharded, the flat bounds' run for flat_sharded.
  RowRange element_range(std::size_t i) const { return elements_[i]; }
  /// The columns [begin, end) of parameter i this rank holds (all columns unless
  /// column_sharded); its array is row_range(i).size() × column_range(i).size(), row-major.
  RowRange column_range(std::size_t i) const { return cols_[i]; }
  /// Parameter i's layout after init() (row_sharded, column_sharded or flat_sharded when
  /// set_row_bounds, set_column_bounds or set_flat_bounds gave it bounds).
  Layout layout(std::size_t i) const { return layout_[i]; }
  /// Whether parameter i is unreduced and stepped on every rank (after init()).
  bool unreduced(std::size_t i) const { return replica_index_[i] >= 0; }
  /// Whether some parameter is (after init()).
  bool any_unreduced() const { return replicas_.has_value(); }
  /// optim::Partition::signature(): the same string as the single-process partition's (also
  /// before init(), which compares it across the ranks).
  std::string signature() const { return optim::routes_signature(routes_); }
  std::int64_t skipped_steps() const { return skipped_; }
  const Communicator& communicator() const { return comm_; }

  /// The visit of this rank's part of the state as optim::Partition::visit names it (owned
  /// parameters' fields; "_partition/skipped_steps" holds the distributed skip count).
  template <class V>
  void visit_local(V& v) {
    SkipCounter<V> w{v, skipped_};
    local_->visit(w);
  }
  /// The visit of the unreduced parameters' states (this rank's: M differs between the ranks),
  /// named as optim::Partition::visit names them; nothing when there are none.
  template <class V>
  void visit_replicas(V& v) {
    if (!replicas_) return;
    SkipCounter<V> w{v, skipped_};
    replicas_->visit(w);
  }
  /// What this rank's optimizer holds, by kind (optim::MemoryUse; docs/optim.md "Memory"): its
  /// local partition's and, with unreduced parameters, their partition's, summed (each has its
  /// own workspace; the latter's backups serve the cross-rank rollback); in `exchange` the
  /// buffers of docs/distributed.md "Cost and traffic": the all-gather target of the replicated updates,
  /// the owned parameters' copies (with the gathered gradients of sharded ones), the largest
  /// shard of an update and the column stage, the unreduced parameters' copies, the activation
  /// Gram sums and the buffer a Gram is received in. All zero before init().
  optim::MemoryUse memory_use() {
    optim::MemoryUse m;
    for (std::optional<Local>* p : {&local_, &replicas_})
      if (*p) m += (*p)->memory_use();
    if (!local_) return m;
    std::size_t floats = updates_.size() + shard_update_.size() + stage_.size() + gram_scratch_.size();
    for (const auto* list : {&copies_, &replica_copies_})
      for (const std::vector<float>& c : *list)
        floats += c.size();
    for (const optim::Buffer& g : grams_)
      floats += g.size();
    m.exchange = floats * sizeof(float);
    return m;
  }
  /// After a checkpoint load (load_checkpoint calls it): this rank's activation sums are dropped.
  void drop_activation_sums() { std::fill(gram_tag_.begin(), gram_tag_.end(), std::int64_t(-1)); }

 private:
  /// detail::locally() and detail::on_every_rank() over this partition's communicator.
  template <class F>
  static bool locally(F&& f) {
    return detail::locally(f);
  }
  bool on_every_rank(bool ok) const { return detail::on_every_rank(comm_, ok); }
  /// Collective, allocating nothing: ok when `r` is ok on every rank; else, on every rank, the
  /// failure of the lowest failing parameter (failure keys: −1, none in particular, first), with
  /// the message of the lowest rank that reported it (agreed_message()). Two all-reduces and a
  /// broadcast of step_message_ when some rank failed, one all-reduce otherwise.
  optim::StepReport agreed(const optim::StepReport& r) {
    const std::int64_t mine = r ? detail::kNoFailure : detail::failure_key(r.bad_param, r.status);
    const std::int64_t key = comm_.allreduce_min(mine);
    if (key == detail::kNoFailure) return optim::StepReport{};
    return optim::refusal(agreed_message(mine == key, r.message), detail::failed_param(key),
                          detail::failed_status(key));
  }
  /// Collective: the message of the lowest rank where `mine` is true (at least one is), in
  /// step_message_ on every rank (truncated to 511 bytes). Nothing allocates, so that a rank
  /// whose heap is exhausted takes part like the others. One all-reduce and one broadcast.
  const char* agreed_message(bool mine, const char* message) {
    const auto from = static_cast<int>(comm_.allreduce_min(mine ? comm_.rank() : INT64_MAX));
    if (comm_.rank() == from) {
      std::strncpy(step_message_.data(), message, step_message_.size() - 1);
      step_message_.back() = '\0';
    }
    comm_.bcast(step_message_.data(), step_message_.size(), from);
    return step_message_.data();
  }
  /// The global clip's refusal, at init() and at every step (the same on every rank: the ranks
  /// compare the clip): a NaN or negative clip (optim::check_global_clip), or a clip with sharded
  /// or unreduced parameters, whose norm would be a sum in another order than one process's
  /// (and whose arrays the step's sum does not hold whole). Cost: one pass over the layouts
  /// when clipping.
  optim::StepReport clip_problem() const {
    if (optim::StepReport c = optim::check_global_clip(clip_); !c) return c;
    if (clip_ > 0.0)
      for (const Layout l : layout_)
        if (l != Layout::replicated)
          return optim::refusal(
              "global clipping with sharded or unreduced parameters is not supported (clip before the "
              "step)",
              -1);
    return optim::StepReport{};
  }
  /// What init() returns on every rank when some rank ran out of host memory.
  optim::StepReport init_out_of_memory() {
    local_.reset();
    replicas_.reset();
    return optim::refusal("init: host memory ran out on a rank", -1, Status::out_of_memory);
  }
  /// f() (a stage of a local partition), or a refusal when an exception leaves it
  /// (std::bad_alloc: out_of_memory; none is expected, optim::Partition reports its failures),
  /// so that this rank still reaches the collectives after it, where the others wait.
  template <class F>
  static optim::StepReport guarded(F&& f) noexcept {
    try {
      return f();
    } catch (const std::bad_alloc&) {
      return optim::refusal("host memory ran out in a rank's local step", -1, Status::out_of_memory);
    } catch (...) {
      return optim::refusal("an exception left a rank's local step", -1, Status::internal_error);
    }
  }
  /// Redirects the local partition's skip counter to the distributed one.
  template <class V>
  struct SkipCounter {
    V& inner;
    std::int64_t& skipped;
    template <class F>
    void operator()(const std::string& name, F& field) {
      if constexpr (std::is_same<F, std::int64_t>::value)
        if (name == "_partition/skipped_steps") return inner(name, skipped);
      inner(name, field);
    }
  };

  /// Step 3: the summed Grams of this step, in rank order, into the owners' states.
  void reduce_activations() {
    const std::size_t np = params_.size();
    bool any = false;
    for (std::size_t i = 0; i < np; ++i)
      any = any || gram_dim_[i] > 0;
    if (!any) return;
    const int n = comm_.size(), me = comm_.rank();
    std::vector<std::int64_t>&mine = samples_mine_, &all = samples_all_;  // sized by init()
    std::fill(mine.begin(), mine.end(), std::int64_t(0));
    for (std::size_t i = 0; i < np; ++i)
      if (gram_dim_[i] > 0 && gram_tag_[i] == steps_) mine[i] = gram_samples_[i];
    comm_.allgather(mine.data(), np, all.data());
    for (std::size_t i = 0; i < np; ++i) {
      std::int64_t total = 0;
      int first = -1;
      for (int r = 0; r < n; ++r)
        if (all[static_cast<std::size_t>(r) * np + i] > 0) {
          total += all[static_cast<std::size_t>(r) * np + i];
          if (first < 0) first = r;
        }
      if (total == 0) continue;
      const auto len = grams_[i].size();
      constexpr int kTag = 7302;
      if (owner_[i] != me) {
        if (mine[i] > 0) comm_.send(grams_[i].data(), len, owner_[i], kTag);
        continue;
      }
      const optim::ActivationGramRef ref = optim::activation_gram(*local_, params_[i].name);
      if (ref.gram == nullptr) continue;  // cannot happen: the owner reported the dimension
      for (int r = first; r < n; ++r) {   // (gram_scratch_ holds the largest Gram: init())
        if (all[static_cast<std::size_t>(r) * np + i] == 0) continue;
        const float* g = grams_[i].data();
        if (r != me) {
          comm_.recv(gram_scratch_.data(), len, r, kTag);
          g = gram_scratch_.data();
        }
        if (r == first)
          std::copy(g, g + len, ref.gram);
        else
          for (std::size_t e = 0; e < len; ++e)
            ref.gram[e] += g[e];
      }
      *ref.samples = total;
      *ref.for_step = *ref.rule_step;
    }
  }
  /// The shape of this rank's array of parameter i: its rows × its columns, or one row of its
  /// elements (flat_sharded).
  optim::BlockShape held(std::size_t i) const {
    if (layout_[i] == Layout::flat_sharded) return {1, elements_[i].size()};
    return {rows_[i].size(), cols_[i].size()};
  }
  /// The floats per unit of sharded parameter i's bounds: a row's, a column's or one element.
  index_t unit(std::size_t i) const {
    return layout_[i] == Layout::row_sharded      ? shapes_[i].cols
           : layout_[i] == Layout::column_sharded ? shapes_[i].rows
                                                  : 1;
  }
  /// Whether parameter i's gradient and parameter go to an owner and its update comes back by
  /// shards (sharded, not stepped by rows).
  bool exchanged(std::size_t i) const { return sharded_layout(i) && !by_rows_[i]; }
  /// The `len` floats of a parameter and of its gradient into `buffer` (2·len), one after the
  /// other, and the step's pointers to the two copies: what a local step reads and overwrites
  /// (nothing is applied before the ranks agree).
  static void stage_copy(const float* param, const float* grad, index_t len, std::vector<float>& buffer,
                         float*& param_copy, float*& grad_copy) {
    std::copy(param, param + len, buffer.data());
    std::copy(grad, grad + len, buffer.data() + len);
    param_copy = buffer.data();
    grad_copy = buffer.data() + len;
  }
  /// Whether parameter i's layout cuts it among the ranks (rows, columns or runs).
  bool sharded_layout(std::size_t i) const {
    return layout_[i] != Layout::replicated && layout_[i] != Layout::unreduced;
  }
  /// A 64-bit hash of every unreduced update's bits (FNV-1a's step over 64-bit words: each step
  /// is a bijection of the hash, so a single differing word always changes it; one read).
  std::uint64_t replica_update_hash() const {
    std::uint64_t h = 1469598103934665603ull;
    for (std::size_t k = 0; k < replicated_.size(); ++k) {
      const float* u = replica_grads_[k];
      const std::size_t n = static_cast<std::size_t>(shapes_[replicated_[k]].size());
      std::size_t e = 0;
      for (; e + 1 < n; e += 2) {
        std::uint64_t w = 0;
        std::memcpy(&w, u + e, sizeof w);
        h = (h ^ w) * 1099511628211ull;
      }
      if (e < n) {
        std::uint32_t w = 0;
        std::memcpy(&w, u + e, sizeof w);
        h = (h ^ w) * 1099511628211ull;
      }
    }
    return h;
  }
  /// Collective: whether the ranks passed different hashes, false when some rank `failed` (its
  /// hash means nothing). One all-reduce (differing()).
  bool hashes_differ(std::uint64_t hash, bool failed = false) const {
    std::int64_t all_ran = failed ? 0 : 1;
    const std::uint32_t differ = differing(&hash, 1, all_ran);
    return all_ran == 1 && differ != 0;
  }
  /// Collective, one all-reduce of 4·k + 1 integers that allocates nothing: bit c set when
  /// hashes[c] (k ≤ kCompared) differs between the ranks (the maximum of each 32-bit half
  /// against its minimum); `key` becomes the minimum of every rank's `key` (a failure key, say).
  std::uint32_t differing(const std::uint64_t* hashes, std::size_t k, std::int64_t& key) const {
    std::array<std::int64_t, 4 * kCompared + 1> v{};
    for (std::size_t c = 0; c < k; ++c) {
      const auto lo = static_cast<std::int64_t>(hashes[c] & 0xffffffffu),
                 hi = static_cast<std::int64_t>(hashes[c] >> 32);
      v[4 * c] = lo;
      v[4 * c + 1] = -lo;
      v[4 * c + 2] = hi;
      v[4 * c + 3] = -hi;
    }
    v[4 * k] = -key;  // key ≥ 0 (kNoFailure, a failure key, a flag): its negation cannot overflow
    comm_.allreduce_max(v.data(), 4 * k + 1);
    key = -v[4 * k];
    std::uint32_t differ = 0;
    for (std::size_t c = 0; c < k; ++c)
      if (v[4 * c] != -v[4 * c + 1] || v[4 * c + 2] != -v[4 * c + 3]) differ |= 1u << c;
    return differ;
  }
  /// What init() compares across the ranks (setting_hashes()), as its refusal names it.
  static constexpr std::size_t kCompared = 7;
  static constexpr const char* kComparedWhat[kCompared] = {
      ("the shard bounds (set_row_bounds, set_column_bounds, set_flat_bounds), the layouts, the owner "
       "choice or the transfer cost"),
      "the parameters' names or shapes",
      "the labels",
      "the routes (their rules and hyper-parameters: signature())",
      "the owners' batching, prechecks or copies (set_batching, set_prechecks, set_copy_all_states)",
      "the global clip (set_global_clip)",
      "the non-finite policy (set_non_finite_policy)"};
  /// The clip and the policy (kComparedWhat's last two), hashed: step() compares them again,
  /// since they may change after init(). Allocates nothing.
  std::array<std::uint64_t, 2> step_settings() const {
    detail::Fnv clip, policy;
    clip.mix_bits(clip_);
    policy.mix(static_cast<std::uint64_t>(policy_));
    return {clip.h, policy.h};
  }
  /// One hash per entry of kComparedWhat. The layouts among them: a parameter unreduced on one
  /// rank and stepped by rows on another has no owner on either, so the owners' comparison would
  /// not see it, and only one of them would join the replicas' averages. Cost: one pass over the
  /// names, shapes, labels, bounds and the routes' signature().
  std::array<std::uint64_t, kCompared> setting_hashes() const {
    const std::size_t np = params_.size();
    std::array<detail::Fnv, kCompared> f;
    for (const auto* bounds : {&row_bounds_, &column_bounds_, &flat_bounds_})
      mix_bounds(f[0], *bounds);
    f[0].mix(layouts_.empty() ? np : layouts_.size());  // none given: every parameter replicated
    for (std::size_t i = 0; i < (layouts_.empty() ? np : layouts_.size()); ++i)
      f[0].mix(static_cast<std::uint64_t>(layouts_.empty() ? Layout::replicated : layouts_[i]));
    f[0].mix(static_cast<std::uint64_t>(choice_));
    f[0].mix(static_cast<std::uint64_t>(pair_costs_.ranks));
    for (const double c : pair_costs_.ranks > 0 ? pair_costs_.per_pair : std::vector<double>{transfer_cost_})
      f[0].mix_bits(c);
    f[1].mix(np);
    for (const optim::ParamSpec& p : params_) {
      f[1].mix(p.name);
      f[1].mix(p.shape.size());
      for (const index_t d : p.shape)
        f[1].mix(static_cast<std::uint64_t>(d));
    }
    f[2].mix(labels_.size());
    for (const std::string& l : labels_)
      f[2].mix(l);
    f[3].mix(signature());
    f[4].mix(batching_ ? 1 : 0);
    f[4].mix(batching_ ? max_group_ : 0);  // the group size means nothing unbatched
    f[4].mix(prechecks_ ? 1 : 0);
    f[4].mix(copy_all_ ? 1 : 0);
    const std::array<std::uint64_t, 2> later = step_settings();
    return {f[0].h, f[1].h, f[2].h, f[3].h, f[4].h, later[0], later[1]};
  }
  /// The refusal's message for `differ` (differing()'s bits, bit c for kComparedWhat[first + c]),
  /// in step_message_: nothing allocates.
  const char* differing_message(std::uint32_t differ, std::size_t first) {
    char* out = step_message_.data();
    std::size_t at = 0;
    const auto put = [&](const char* text) {
      for (; *text && at + 1 < step_message_.size(); ++text)
        out[at++] = *text;
    };
    for (std::size_t c = 0; first + c < kCompared; ++c)
      if (differ & (1u << c)) {
        if (differ & ((1u << c) - 1)) put("; ");
        put(kComparedWhat[first + c]);
      }
    put(" differ between the ranks (refused on every rank)");
    out[at] = '\0';
    return out;
  }
  static void mix_bounds(detail::Fnv& f, const std::vector<std::vector<index_t>>& lists) {
    f.mix(lists.size());
    for (const auto& b : lists) {
      f.mix(b.size());
      for (index_t v : b)
        f.mix(static_cast<std::uint64_t>(v));
    }
  }
  /// Column-sharded parameter i between the owner's whole row-major matrix and the stage (the
  /// ranks' rows × columns blocks in rank order, as gathered): into the matrix (unpack = true)
  /// or out of it (detail::move_column_blocks).
  void move_columns(std::size_t i, float* whole, bool unpack) {
    detail::move_column_blocks(stage_.data(), whole, shapes_[i].rows, shapes_[i].cols, cuts_[i], unpack);
  }
  /// Collective: whether every rank holds the same `lists` (a 64-bit FNV-1a hash of the sizes
  /// and values, compared across the ranks by hashes_differ()).
  bool same_on_every_rank(std::initializer_list<const std::vector<std::vector<index_t>>*> lists) const {
    detail::Fnv f;
    for (const auto* l : lists)
      mix_bounds(f, *l);
    return !hashes_differ(f.h);
  }
  int route_index(const std::string& label) const {
    int found = -1, k = 0;
    std::apply([&](const auto&... r) { ((found = (found < 0 && r.label == label) ? k : found, ++k), ...); },
               routes_);
    return found;
  }
  /// True when the route's rule can step unreduced parameters (optim::takes_replicas).
  bool replica_route(int route) const {
    constexpr bool flags[] = {optim::takes_replicas<Rules>::value...};
    return flags[route];
  }
  /// The route's optim::max_gradient_of for a parameter of shape s (the whole parameter's: the
  /// owner's partition steps it whole, and a row-local rule's limit does not depend on the shape,
  /// so that every rank scans against the limit the owner's step uses).
  double route_max_gradient(int route, const optim::BlockShape& s) const {
    double limit = HUGE_VAL;
    int k = 0;
    std::apply(
        [&](const auto&... r) {
          ((limit = (k++ == route ? optim::max_gradient_of(r.rule, s) : limit)), ...);
        },
        routes_);
    return limit;
  }
  /// True when the route's rule acts on each element alone (optim::rule_row_local).
  bool row_local_route(int route) const {
    constexpr bool flags[] = {optim::rule_row_local<Rules>::value...};
    return flags[route];
  }
  /// True when the route's rule is a matrix function (a batched form, or a rule that may fail:
  /// element-wise rules cannot).
  bool matrix_route(int route) const {
    constexpr bool flags[] = {
        (optim::has_update_batch<Rules>::value || optim::rule_may_fail<Rules>::value)...};
    return flags[route];
  }
  std::ptrdiff_t index_of(const std::string& name) const {
    for (std::size_t i = 0; i < params_.size(); ++i)
      if (params_[i].name == name) return static_cast<std::ptrdiff_t>(i);
    return -1;
  }

  Communicator comm_;
  std::vector<optim::ParamSpec> params_;
  std::vector<std::string> labels_;
  std::tuple<optim::Route<Rules>...> routes_;
  std::vector<Layout> layouts_;  ///< as set_layouts() gave them
  std::vector<std::vector<index_t>> row_bounds_, column_bounds_,
      flat_bounds_;  ///< as set_row_bounds(), set_column_bounds(), set_flat_bounds() gave them
  CostModel cost_;
  OwnerChoice choice_ = OwnerChoice::balanced;
  double transfer_cost_ = kDefaultTransferCost;
  TransferCosts pair_costs_;  ///< set_transfer_costs (ranks 0: unset, transfer_cost_ for every pair)
  ModelledStep modelled_;     ///< modelled()
  bool batching_ = true;
  bool prechecks_ = true;  ///< set_prechecks()
  bool copy_all_ = false;  ///< set_copy_all_states()
  /// Per parameter: magnitude_bits of its route's max_gradient (init()), for step 1's scan.
  std::vector<std::uint32_t> grad_limit_bits_;
  std::size_t max_group_ = 16;
  optim::NonFinitePolicy policy_ = optim::NonFinitePolicy::error;
  double clip_ = 0.0;

  std::optional<Local> local_;
  /// What the unreduced parameters' collectives (optim::with_replicas) work with: the
  /// communicator, 1/n, and the MPI counts and displacements of the split QRs' blocks, sized at
  /// init(). The collectives capture only a pointer to it, so that a copy of them (the kernel's
  /// options, built each step) allocates nothing: std::function keeps a pointer-sized callable
  /// in place (libstdc++, libc++ and MSVC alike), and a step's collectives allocate nothing on the
  /// host (docs/distributed.md "Heap exhaustion"). Declared before replicas_, whose rules point
  /// at it, so that it outlives them.
  ///
  /// They also keep the ranks in step when one of them stops on its own (a host allocation
  /// refused inside the kernel, between two of its collectives, as Kokkos 4 makes them, or in a
  /// rule's link): each collective first agrees, in an all-reduce of one integer, that no rank
  /// has stopped (proceed()), and every rank ends the unreduced step with finish(), whose
  /// all-reduce meets the others' next proceed() when it comes from a rank that stopped early.
  /// A rank that stops thus takes part in exactly one more all-reduce, and every other rank
  /// learns its status there and moves no more data in that step: no rank waits alone.
  struct ReplicaCollectives {
    Communicator comm;
    float inv;
    std::vector<std::int64_t> counts, displs;  ///< one per rank
    /// The status of a rank that stopped, once proceed() delivered it in this step.
    Status stopped = Status::ok;
    explicit ReplicaCollectives(const Communicator& c)
        : comm(c),
          inv(1.0f / static_cast<float>(c.size())),
          counts(static_cast<std::size_t>(c.size())),
          displs(counts.size()) {}
    /// Before each collective of the unreduced step (collective): ok when every rank is about
    /// to make it; else the status of a rank that stopped (its finish()), and the same at once,
    /// without communicating, for the rest of this step. Nothing allocates.
    Status proceed() {
      if (stopped != Status::ok) return stopped;
      std::int64_t v = 0;  // the largest status code a rank sends: 0 from every rank going on
      comm.allreduce_max(&v, 1);
      stopped = static_cast<Status>(v);
      return stopped;
    }
    /// After the unreduced step on every rank (collective): `mine` is this rank's outcome. Its
    /// all-reduce is skipped by a rank that proceed() already stopped, since it met this one's
    /// there; either way the next step starts afresh.
    void finish(Status mine) {
      if (stopped == Status::ok) {
        std::int64_t v = static_cast<std::int64_t>(mine);
        comm.allreduce_max(&v, 1);
      }
      stopped = Status::ok;
    }
    /// counts and displs from the kernel's block counts (one per rank); false when MPI's int
    /// counts cannot hold them (the same on every rank).
    bool blocks(const std::size_t* c) {
      std::int64_t at = 0;
      for (std::size_t r = 0; r < counts.size(); ++r) {
        counts[r] = static_cast<std::int64_t>(c[r]);
        displs[r] = at;
        at += counts[r];
      }
      return at <= std::int64_t(INT_MAX);
    }
  };
  std::unique_ptr<ReplicaCollectives> replica_collectives_;
  std::optional<Local> replicas_;                   ///< the unreduced parameters, stepped on every rank
  std::vector<std::size_t> replicated_;             ///< global indices of the unreduced parameters
  std::vector<std::ptrdiff_t> replica_index_;       ///< position in replicated_, −1 when not unreduced
  std::vector<std::vector<float>> replica_copies_;  ///< per unreduced parameter: parameter, gradient
  std::vector<float*> replica_params_, replica_grads_;
  std::vector<optim::BlockShape> shapes_;
  std::vector<RowRange> rows_;
  std::vector<RowRange> cols_;      ///< per parameter: the columns held here
  std::vector<RowRange> elements_;  ///< per parameter: element_range()
  std::vector<Layout> layout_;      ///< in effect: layouts_ with bounds_ applied
  std::vector<std::vector<index_t>>
      cuts_;  ///< per sharded parameter: rank r's rows, columns or elements [cuts[r], cuts[r+1])
  std::vector<int> owner_;
  std::vector<char> by_rows_;                ///< per parameter: stepped by rows (by_rows())
  std::vector<std::size_t> owned_;           ///< global indices of the owned parameters, ascending
  std::vector<std::ptrdiff_t> local_index_;  ///< position in owned_, −1 when not owned
  std::vector<std::int64_t> counts_, displs_, offset_;
  std::vector<std::vector<std::int64_t>> shard_counts_,
      shard_displs_;                        ///< per exchanged sharded parameter, by rank
  std::vector<float> updates_;              ///< every replicated update, grouped by owner
  std::vector<std::vector<float>> copies_;  ///< per owned parameter (see init)
  std::vector<float> shard_update_, gram_scratch_;
  std::vector<float> stage_;  ///< the owner's column blocks of a column-sharded parameter
  std::vector<float*> local_params_, local_grads_;
  std::vector<std::int64_t> gram_dim_, gram_samples_, gram_tag_;
  std::vector<optim::Buffer> grams_;
  std::vector<std::int64_t> samples_mine_, samples_all_;  ///< reduce_activations()' counts
  std::int64_t steps_ = 0, skipped_ = 0;
  std::string message_;
  std::array<char, 512> step_message_{};  ///< a failed step's message (truncated to 511 bytes)
};

/// distributed_partition(comm, params, labels, route(...), ...). Same arguments as
/// optim::partition plus the communicator.
template <class... Rules>
DistributedPartition<Rules...> distributed_partition(Communicator comm, std::vector<optim::ParamSpec> params,
                                                     std::vector<std::string> labels,
                                                     optim::Route<Rules>... routes) {
  return DistributedPartition<Rules...>(std::move(comm), std::move(params), std::move(labels),
                                        std::move(routes)...);
}

namespace detail {
/// Rank 0's merged FieldSet from every rank's part, in `all` (collective; empty on other ranks).
/// A name that several ranks hold (a parameter stepped by rows) gets their buffers appended in
/// rank order, and the lowest rank's scalars. ok, or out_of_memory on every rank when a rank's
/// host memory ran out: each local part (serialising, rank 0's receive buffers, the merge) is
/// agreed before the next collective. Cost: three more all-reduces of one integer.
Status gather_fields(const Communicator& comm, const io::FieldSet& mine, io::FieldSet& all);
/// Reads `path` on rank 0 and sends fields and header to every rank (collective). The same
/// status on every rank (out_of_memory, agreed, where a rank's host memory ran out); `error`
/// set on every rank on failure.
Status broadcast_checkpoint(const Communicator& comm, const std::string& path, io::FieldSet& fields,
                            io::CheckpointHeader& header, std::string* error);
/// Writes on rank 0, the status (and error) on every rank (collective).
Status write_on_root(const Communicator& comm, const std::string& path, const io::FieldSet& fields,
                     const io::CheckpointHeader& header, std::string* error);
/// Root's `message` into every rank's *error (when not null), through a fixed buffer (truncated
/// to 511 bytes): the broadcast allocates nothing, and *error is cleared where it cannot be set.
/// Collective.
void bcast_message(const Communicator& comm, const char* message, int root, std::string* error);
/// The parameter whose fields a checkpoint name belongs to: the longest name n with
/// field = n + "/…" (names may contain '/'); −1 for none.
std::ptrdiff_t param_of_field(const std::vector<optim::ParamSpec>& params, const std::string& field);
/// On rank 0 after gather_fields: the buffers of column-sharded parameters stepped by rows
/// arrive as the ranks' column blocks appended in rank order (rows × its columns each); this
/// puts each block back into its columns, so that the buffer is the row-major whole. Cost: one
/// pass over those buffers.
template <class P>
void columns_into_place(const P& p, io::FieldSet& all) {
  for (auto& [name, value] : all) {
    const std::ptrdiff_t i = param_of_field(p.params(), name);
    if (i < 0) continue;
    const auto k = static_cast<std::size_t>(i);
    auto* v = std::get_if<std::vector<float>>(&value);
    const optim::BlockShape s = optim::flatten(p.params()[k].shape);
    if (!v || !p.by_rows(k) || p.layout(k) != Layout::column_sharded ||
        static_cast<index_t>(v->size()) != s.size())
      continue;
    std::vector<float> whole(v->size());
    move_column_blocks(v->data(), whole.data(), s.rows, s.cols, p.bounds(k), true);
    *v = std::move(whole);
  }
}
/// A copy of a field value whose buffer is copied outside the variant and then moved in. Copying
/// the variant itself is not safe under heap exhaustion with libstdc++ 12: when the vector's copy
/// throws, the half-built variant's destructor visits an alternative that was never constructed
/// (UBSan: "execution reached an unreachable program point"; the variant counts itself never
/// valueless). Scalars are copied as they are (that copy cannot throw).
inline io::FieldValue copied(const io::FieldValue& v) {
  if (const auto* f = std::get_if<std::vector<float>>(&v)) return io::FieldValue(std::vector<float>(*f));
  return v;
}
/// A DistributedPartition's local part as io::restore sees it (copies share the partition:
/// load_checkpoint keeps its own snapshot for the all-or-nothing rule).
template <class P>
struct LocalState {
  P* p;
  template <class V>
  friend void visit_fields(V& v, LocalState& s) {
    s.p->visit_local(v);
  }
};
/// The unreduced parameters' states, likewise.
template <class P>
struct ReplicaState {
  P* p;
  template <class V>
  friend void visit_fields(V& v, ReplicaState& s) {
    s.p->visit_replicas(v);
  }
};
/// Every float buffer of `fields` replaced by its mean over the ranks, summed in double (so that
/// buffers the same on every rank come back unchanged: n·x and (n·x)/n are exact); scalars are
/// kept. The fields named in `bf16` (bf16 state, which loads only from values bf16 holds) have
/// their mean rounded to the nearest bf16, ties to even. Collective: every rank passes the same
/// names and sizes. ok, or out_of_memory on every rank (fields unchanged) when a rank cannot
/// allocate the sums' buffer (the largest field, in double: agreed before the first all-reduce).
Status average_fields(const Communicator& comm, io::FieldSet& fields,
                      const std::vector<std::string>& bf16 = {});
/// The names of a visit's bf16 fields (optim::Bf16Buffer: docs/optim.md "State precision").
struct Bf16FieldNames {
  std::vector<std::string>* names;
  void operator()(const std::string& name, optim::Bf16Buffer&) { names->push_back(name); }
  template <class T>
  void operator()(const std::string&, T&) {}
};
}  // namespace detail

/// Collective. Writes the complete state of `p` (every owner's parameters, the skip count) to
/// one file with io::write_checkpoint on rank 0 (atomic). The file is the one a single-process
/// optim::Partition with the same parameters and routes writes, field for field, so it loads
/// into a DistributedPartition on any rank count and into an optim::Partition. Unreduced
/// parameters are written as the ranks' mean state (Layout::unreduced: the mean momentum, rounded
/// to the nearest bf16 where the rule stores it in bf16, Q and the count as they are). Traffic: every owner's
/// state once to rank 0, and one all-reduce of the unreduced states (in double). Same status on
/// every rank: a rank whose host memory runs out (std::bad_alloc) fails the save on every rank
/// with out_of_memory, no exception, nothing written (each local part is agreed before the next
/// collective; a few all-reduces of one integer).
template <class... Rules>
Status save_checkpoint(const std::string& path, DistributedPartition<Rules...>& p,
                       const io::CheckpointHeader& header, std::string* error = nullptr) {
  if (!p.initialized()) {
    if (error) *error = "save_checkpoint before a successful init()";
    return Status::invalid_argument;
  }
  // Heap exhaustion: each part local to a rank runs under detail::locally(), and the ranks agree
  // that it succeeded before the next collective: out_of_memory on every rank, nothing written.
  const Communicator& comm = p.communicator();
  const auto out_of_memory = [error] {
    return io::detail::out_of_memory(error, "save_checkpoint: host memory ran out on a rank");
  };
  io::FieldSet mine, replicas, all;
  std::vector<std::string> bf16;
  io::CheckpointHeader h;
  const bool listed = detail::locally([&] {
    io::FieldCollector c{&mine};
    p.visit_local(c);
    if (comm.rank() != 0) mine.erase("_partition/skipped_steps");
    // Unreduced parameters: the ranks' mean state (their mean momentum, rounded to bf16 where it
    // is stored so; the rest is the same).
    io::FieldCollector rc{&replicas};
    p.visit_replicas(rc);
    replicas.erase("_partition/skipped_steps");
    detail::Bf16FieldNames bn{&bf16};
    p.visit_replicas(bn);
    h = header;
    h.shapes = io::detail::shapes_of(p);  // the whole parameters' shapes, as a Partition writes them
    h.routes = io::detail::routes_of(p);  // and their routes (io::save_checkpoint)
  });
  if (!detail::on_every_rank(comm, listed)) return out_of_memory();
  if (detail::gather_fields(comm, mine, all) != Status::ok) return out_of_memory();
  if (detail::average_fields(comm, replicas, bf16) != Status::ok) return out_of_memory();
  const bool merged = comm.rank() != 0 || detail::locally([&] {
                        detail::columns_into_place(p, all);
                        for (auto& [name, value] : replicas)
                          all[name] = std::move(value);
                      });
  if (!detail::on_every_rank(comm, merged)) return out_of_memory();
  return detail::write_on_root(comm, path, all, h, error);
}

/// Collective. Reads the file on rank 0, sends it to every rank, and loads into each rank's
/// owned parameters (and every rank's unreduced ones, each M from the file's mean) the fields of
/// those parameters (io::restore: every field present, same type and size). The file must have
/// no field of a parameter or name this partition lacks, match `expected_signature` when one
/// is given, and have this partition's parameter shapes when it records shapes
/// (io/checkpoint.hpp). All ranks load or none: on any failure (also an expected_signature that
/// differs on one rank, or a rank's host memory running out: out_of_memory, no exception) every
/// rank's state is as before, every rank returns the lowest failing rank's status, and `error`
/// names its problem. Works for any rank count at save and at load (the file holds every
/// parameter by name).
template <class... Rules>
Status load_checkpoint(const std::string& path, DistributedPartition<Rules...>& p,
                       io::CheckpointHeader& header, const std::string& expected_signature = {},
                       std::string* error = nullptr) {
  if (!p.initialized()) {
    if (error) *error = "load_checkpoint before a successful init()";
    return Status::invalid_argument;
  }
  const Communicator& comm = p.communicator();
  io::FieldSet all;
  io::CheckpointHeader h;
  if (Status s = detail::broadcast_checkpoint(comm, path, all, h, error); s != Status::ok) return s;
  // The file is the same on every rank, but expected_signature is each rank's own: its refusal,
  // like the others below, is agreed at the end (a rank returning alone would leave the others
  // waiting there). Heap exhaustion: the local part runs under detail::locally(), a rank that
  // ran out of host memory fails the load on every rank (out_of_memory), nothing loaded.
  std::string problem;
  io::FieldSet mine, replicas;
  detail::Snapshot before, before_replicas;
  bool snapped = false;  // the snapshot taken (what a failure puts back)
  Status st = Status::ok;
  const bool ran = detail::locally([&] {
    if (!expected_signature.empty() && h.signature != expected_signature)
      problem = "optimizer signature differs: checkpoint '" + h.signature + "', this optimizer '" +
                expected_signature + "'";
    else if (problem = io::detail::shape_mismatch(h.shapes, p.params()); problem.empty())
      problem = io::detail::route_mismatch(h.routes, p);
    // Fields of this rank's parameters, and fields that belong to nobody (identical on all ranks);
    // the unreduced parameters' fields go to every rank.
    const auto& owners = p.owners();
    const io::FieldSet none;
    for (const auto& [name, value] : problem.empty() ? all : none) {
      if (name == "_partition/skipped_steps") {
        mine[name] = detail::copied(value);
        replicas[name] = detail::copied(value);
        continue;
      }
      const std::ptrdiff_t i = detail::param_of_field(p.params(), name);
      if (i < 0) {
        if (problem.empty()) problem = "the checkpoint has field '" + name + "' of no parameter here";
        continue;
      }
      if (owners[static_cast<std::size_t>(i)] == comm.rank()) {
        mine[name] = detail::copied(value);
      } else if (p.unreduced(static_cast<std::size_t>(i))) {
        replicas[name] = detail::copied(value);
      } else if (p.by_rows(static_cast<std::size_t>(i))) {  // this rank's rows, block or run of each buffer
        const auto k = static_cast<std::size_t>(i);
        const RowRange e = p.element_range(k), c = p.column_range(k);
        const optim::BlockShape s = optim::flatten(p.params()[k].shape);
        if (e.size() == 0 || c.size() == 0) continue;  // nothing here: no state here
        const auto* whole = std::get_if<std::vector<float>>(&value);
        if (!whole) {
          mine[name] = detail::copied(value);
        } else if (static_cast<index_t>(whole->size()) != s.size()) {
          if (problem.empty())
            problem = "the checkpoint's field '" + name + "' has " + std::to_string(whole->size()) +
                      " values, not one per element of the parameter (" + std::to_string(s.size()) + ")";
        } else if (p.layout(k) == Layout::column_sharded) {  // columns [c.begin, c.end) of every row
          std::vector<float> block;
          for (index_t r = 0; r < s.rows; ++r)
            block.insert(block.end(), whole->begin() + r * s.cols + c.begin,
                         whole->begin() + r * s.cols + c.end);
          mine[name] = std::move(block);
        } else {
          mine[name] = std::vector<float>(whole->begin() + e.begin, whole->begin() + e.end);
        }
      }
    }
    if (!problem.empty()) {
      st = Status::invalid_argument;
      return;
    }
    detail::SnapshotTaker t{&before}, tr{&before_replicas};
    p.visit_local(t);
    p.visit_replicas(tr);
    snapped = true;
    detail::LocalState<DistributedPartition<Rules...>> target{&p};
    detail::ReplicaState<DistributedPartition<Rules...>> replica_target{&p};
    st = io::restore(target, mine, &problem);
    if (st == Status::ok && p.any_unreduced()) st = io::restore(replica_target, replicas, &problem);
  });
  if (!ran) st = Status::out_of_memory;
  // The lowest failing rank's status and message, on every rank (nothing here allocates).
  const std::int64_t failed =
      comm.allreduce_min(st == Status::ok ? detail::kNoFailure
                                          : (std::int64_t(comm.rank()) << 8) | static_cast<std::int64_t>(st));
  if (failed != detail::kNoFailure) {
    if (snapped) {  // same-size copies back into the states: no allocation
      detail::SnapshotRestorer r{&before}, rr{&before_replicas};
      p.visit_local(r);
      p.visit_replicas(rr);
    }
    detail::bcast_message(
        comm, ran && !problem.empty() ? problem.c_str() : "load_checkpoint: host memory ran out on a rank",
        static_cast<int>(failed >> 8), error);
    return detail::failed_status(failed);
  }
  p.drop_activation_sums();
  header = std::move(h);
  return Status::ok;
}

}  // namespace schatten::distributed
