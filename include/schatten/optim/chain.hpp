// SPDX-License-Identifier: Apache-2.0
/// \file
/// chain(r1, r2, ...): rules applied in order to the same update buffer; itself a rule.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>

#include "schatten/optim/rule.hpp"

namespace schatten::optim {

/// Rules whose update can fail after validation (the matrix-function rules: a kernel can report
/// an allocation failure) declare `static constexpr bool may_fail = true`.
template <class R, class = void>
struct rule_may_fail : std::false_type {};
template <class R>
struct rule_may_fail<R, std::void_t<decltype(R::may_fail)>> : std::bool_constant<R::may_fail> {};

/// The most host arrays one kernel call of a rule's update stages where the kernels stage host
/// memory (a GPU build: memory::kernels_access), each at most one block (a batched call: its
/// blocks together). 2 by default, a call's input and output (polar(u, u), spectral_power(in,
/// u)); a rule whose kernel stages more declares `static constexpr int staged_arrays = n`
/// (DionDirection: M, Q and U). Partition::init reserves that many staging copies on host
/// memory (Workspace::reserve_staging), which the rules' prechecks may count on
/// (Workspace::staging_covers).
template <class R, class = void>
struct rule_staged_arrays : std::integral_constant<int, 2> {};
template <class R>
struct rule_staged_arrays<R, std::void_t<decltype(R::staged_arrays)>>
    : std::integral_constant<int, R::staged_arrays> {};

/// Rules that tell their failures before changing anything (rule.hpp, precheck).
template <class R, class = void>
struct has_precheck : std::false_type {};
template <class R>
struct has_precheck<R, std::void_t<decltype(std::declval<const R&>().precheck(
                           std::declval<ConstBlock>(), std::declval<const typename R::State&>(),
                           std::declval<ConstBlock>(), std::declval<float*>()))>> : std::true_type {};
/// Rules that cannot fail on finite input (rule.hpp, total_on_finite).
template <class R, class = void>
struct has_total_on_finite : std::false_type {};
template <class R>
struct has_total_on_finite<
    R, std::void_t<decltype(std::declval<const R&>().total_on_finite(
           std::declval<const typename R::State&>(), std::declval<const BlockShape&>(), MemoryKind::host))>>
    : std::true_type {};
/// Rules whose precheck names a cause of its refusal (rule.hpp, precheck_detail).
template <class R, class = void>
struct has_precheck_detail : std::false_type {};
template <class R>
struct has_precheck_detail<
    R, std::void_t<decltype(std::declval<const R&>().precheck_detail(
           std::declval<ConstBlock>(), std::declval<const typename R::State&>(), Status::ok))>>
    : std::true_type {};
/// The cause `r`'s precheck gives for refusing with `refused`, nullptr when it names none.
template <class R>
const char* precheck_detail_of(const R& r, ConstBlock u, const typename R::State& s, Status refused) {
  if constexpr (has_precheck_detail<R>::value)
    return r.precheck_detail(u, s, refused);
  else
    return nullptr;
}

/// Rules whose precheck covers their failures only in some configurations declare
/// `bool precheck_covers(const State&, const BlockShape&, MemoryKind) const` (Chain does; so
/// do step_size.hpp's rules with their own momentum).
template <class R, class = void>
struct has_precheck_covers : std::false_type {};
template <class R>
struct has_precheck_covers<
    R, std::void_t<decltype(std::declval<const R&>().precheck_covers(
           std::declval<const typename R::State&>(), std::declval<const BlockShape&>(), MemoryKind::host))>>
    : std::true_type {};
/// True when r's precheck() tells every failure of its update() for state `s` on blocks of
/// `shape` in `memory`: then a caller that prechecks needs no copy of the state
/// (Partition::step).
template <class R>
bool covered_by_precheck(const R& r, const typename R::State& s, const BlockShape& shape, MemoryKind memory) {
  if constexpr (!has_precheck<R>::value)
    return false;
  else if constexpr (has_precheck_covers<R>::value)
    return r.precheck_covers(s, shape, memory);
  else
    return true;
}

/// Rules that act on each element alone declare `static constexpr bool row_local = true`: the
/// update of element k reads only element k of the update, the parameter and the state, plus
/// scalars that do not depend on the block (step counts, schedules, hyper-parameters), and the
/// state is such scalars plus buffers of one float per element of the block. Any run of rows
/// of a block — or any run of its row-major elements, stepped as one row — is then stepped, with
/// the state of those, exactly as it is inside the whole block: distributed::DistributedPartition
/// steps row- and flat-sharded parameters of such routes on every rank, on its own rows or run,
/// instead of gathering them to an owner.
template <class R, class = void>
struct rule_row_local : std::false_type {};
template <class R>
struct rule_row_local<R, std::void_t<decltype(R::row_local)>> : std::bool_constant<R::row_local> {};

/// `static constexpr bool goes_last = true;` marks a rule that must end its chain: it reads
/// W + u, the step's result, and sets u so that W + u lands on its own target (OnWeights:
/// OrthogonalizeWeights, SpectralClipWeights, ScaleToNormWeights; RadialBrake). A rule after it
/// would change u again (a learning rate would scale the whole correction), and the weights
/// would miss that target with no error; chain() refuses such an order at compile time. A chain
/// that ends with one goes last too, so nesting keeps the rule.
template <class R, class = void>
struct rule_goes_last : std::false_type {};
template <class R>
struct rule_goes_last<R, std::void_t<decltype(R::goes_last)>> : std::bool_constant<R::goes_last> {};

namespace detail {
/// The index of the last rule of Rules... that may fail, or −1.
template <class... Rules>
constexpr int last_may_fail() {
  constexpr bool fails[] = {rule_may_fail<Rules>::value..., false};
  int last = -1;
  for (int k = 0; k < int(sizeof...(Rules)); ++k)
    if (fails[k]) last = k;
  return last;
}
/// chain(First, Rest...) has a precheck: First has one, and every later rule up to the chain's
/// last that may fail cannot fail on finite input (those after it cannot fail at all).
template <class First, class... Rest>
constexpr bool chain_prechecks_of() {
  constexpr bool total[] = {has_total_on_finite<Rest>::value..., true};
  const int last = last_may_fail<First, Rest...>();
  bool ok = has_precheck<First>::value;
  for (int k = 1; k <= last; ++k)
    ok = ok && total[k - 1];
  return ok;
}
template <class... Rules>
constexpr bool chain_prechecks() {
  if constexpr (sizeof...(Rules) == 0)
    return false;
  else
    return chain_prechecks_of<Rules...>();
}
/// Forwards v(name, field) as v(prefix + name, field): how a chain names its children's fields
/// ("<index>_<rule name>/<field>").
template <class V>
struct PrefixVisitor {
  V& inner;
  std::string prefix;
  template <class F>
  void operator()(const std::string& name, F& field) {
    inner(prefix + name, field);
  }
};
}  // namespace detail

/// The state of chain(Rules...): the rules' states in order (a std::tuple, so std::get<I>
/// works), typed by the rules so that visit_fields can name each child.
template <class... Rules>
struct ChainState : std::tuple<typename Rules::State...> {
  using Base = std::tuple<typename Rules::State...>;
  ChainState() = default;
  ChainState(Base b, BlockShape s) : Base(std::move(b)), shape(s) {}
  /// The block shape init() sized the states for (not a checkpoint field: init recreates it).
  BlockShape shape{};
};

/// Names every field of a chain's state as "<index>_<rule name>/<field>" (nested chains nest).
template <class V, class... Rules>
void visit_fields(V& v, ChainState<Rules...>& s);
/// Names the rules' scratch Buffers (rule.hpp, visit_scratch) the same way.
template <class V, class... Rules>
void visit_scratch(V& v, ChainState<Rules...>& s);
/// Passes the rules' kernel workspaces (rule.hpp, visit_workspaces) to f, in the rules' order.
template <class F, class... Rules>
void visit_workspaces(F& f, ChainState<Rules...>& s);
/// Passes the rules' shareable scratch (rule.hpp, visit_shareable_scratch) to f, in order.
template <class F, class... Rules>
void visit_shareable_scratch(F& f, ChainState<Rules...>& s);

/// Rules applied in order. State = std::tuple of the rules' states.
///
/// update() first checks the rules' hyper-parameters (check(); invalid_argument), that the
/// blocks are contiguous row-major and of one shape (invalid_argument), the gradient for NaN/Inf
/// (non_finite_input) and against max_gradient() (out_of_range); rules with buffers check that the state was
/// initialised for this shape (invalid_argument, before touching anything). Nothing is touched on any of
/// these errors. When a rule that may fail is part of the chain, either the chain's precheck()
/// tells that failure first (below: then nothing is copied), or the state and the buffer are
/// copied before the rules run and restored if one fails; either way a failed step leaves
/// everything as it was.
///
/// **Precheck** (rule.hpp). The chain has precheck() when its first rule has one and every later
/// rule up to its last that may fail has total_on_finite(): the first rule's precheck promises a
/// finite output, which each later rule keeps finite without failing. Muon's chain is such
/// (TraceMomentum, then Orthogonalize); whether the promise holds for a state is
/// precheck_covers(), false for instance for QDWH (which may report not_converged) or a
/// workspace that could not be reserved.
namespace detail {
/// True when no rule but the last goes last (rule_goes_last).
template <class... Rules>
constexpr bool only_last_goes_last() {
  constexpr bool flags[] = {rule_goes_last<Rules>::value..., false};
  for (std::size_t i = 0; i + 1 < sizeof...(Rules); ++i)
    if (flags[i]) return false;
  return true;
}
/// True when the last rule goes last (false for no rule).
template <class... Rules>
constexpr bool last_goes_last() {
  constexpr bool flags[] = {false, rule_goes_last<Rules>::value...};
  return flags[sizeof...(Rules)];
}
}  // namespace detail

template <class... Rules>
class Chain {
  static_assert((is_rule_v<Rules> && ...), "chain(): every argument must follow the rule protocol");
  static_assert(detail::only_last_goes_last<Rules...>(),
                "chain(): a rule that reads W + u (OrthogonalizeWeights, SpectralClipWeights, "
                "ScaleToNormWeights, RadialBrake; rule_goes_last) must be the last of its chain");

 public:
  static constexpr const char* name = "chain";
  static constexpr bool may_fail = (rule_may_fail<Rules>::value || ...);
  /// Its rules' largest rule_staged_arrays (they call their kernels one after the other).
  static constexpr int staged_arrays = std::max({rule_staged_arrays<Rules>::value...});
  /// True when every rule acts on each element alone (rule_row_local).
  static constexpr bool row_local = (rule_row_local<Rules>::value && ...);
  /// True when its last rule goes last (rule_goes_last): then so does the chain.
  static constexpr bool goes_last = detail::last_goes_last<Rules...>();
  /// True when every rule runs on device memory (rule.hpp, is_device_capable).
  static constexpr bool device_capable = (is_device_capable<Rules>::value && ...);
  /// True when some rule has a batched form: then the chain offers update_batch too.
  static constexpr bool batches = (has_update_batch<Rules>::value || ...);
  /// True when the chain offers precheck() (class comment).
  static constexpr bool prechecks = detail::chain_prechecks<Rules...>();
  using State = ChainState<Rules...>;

  explicit Chain(Rules... rules) : rules_(std::move(rules)...) {}

  const std::tuple<Rules...>& rules() const { return rules_; }

  /// "chain[rule1(...);rule2(...)]": the signature of every rule in order.
  std::string config() const {
    std::string s = "chain[";
    std::apply(
        [&](const auto&... r) {
          int k = 0;
          ((s += (k++ ? ";" : "") + config_of(r)), ...);
        },
        rules_);
    return s + "]";
  }

  /// Throws std::invalid_argument for a shape that valid_shape() refuses (a negative dimension, or
  /// more than kMaxBlockElements elements), before any rule sizes a buffer from it.
  State init(const BlockShape& shape) const {
    if (!valid_shape(shape))
      throw std::invalid_argument(
          "chain init: a block shape needs rows, cols >= 0 and at most 2^58 elements");
    return std::apply([&](const auto&... r) { return State(typename State::Base{r.init(shape)...}, shape); },
                      rules_);
  }
  /// As init(shape), the state being the `ordinal`-th its caller initialises (rule.hpp,
  /// has_ordinal_init): passed to the rules that take it.
  State init(const BlockShape& shape, std::size_t ordinal) const {
    if (!valid_shape(shape))
      throw std::invalid_argument(
          "chain init: a block shape needs rows, cols >= 0 and at most 2^58 elements");
    return std::apply(
        [&](const auto&... r) { return State(typename State::Base{init_at(r, shape, ordinal)...}, shape); },
        rules_);
  }

  /// The largest |g| the chain accepts: the smallest max_gradient() of its rules. Conservative:
  /// the limit of a later rule applies to the chain's input, not to the (transformed) values
  /// that reach that rule. Where the squaring rule comes first or after momentum (an average of
  /// gradients: adamw, muadam) the two agree; behind a bounded map they do not, and the chain
  /// refuses gradients that rule would have taken (adamuon's second moment, behind the sign and
  /// the polar factor, limits its gradients to 2^63; docs/optim.md). Not conservative where an
  /// earlier rule amplifies: max_gradient(s) below, which partitions use.
  double max_gradient() const {
    return std::apply([](const auto&... r) { return std::min({HUGE_VAL, max_gradient_of(r)...}); }, rules_);
  }
  /// The largest |g| the chain accepts for blocks of shape s: max_gradient(), lowered where the
  /// rules' bounds (rule.hpp, update_bound) show that for such g the input of a later rule could
  /// exceed that rule's own max_gradient(), an amplifying rule before a limited state:
  /// chain(ScaleByLearningRate{1e10}, ScaleByAdam) took gradients up to 2^63, so that Adam's g²
  /// of 1e56 stored v = ∞ with ok (a fuzzer, 2026-12-07); its limit is now 2^63/1e10. The
  /// largest g for which no rule's input can exceed its limit, found by a bisection over the
  /// floats' bit patterns (about 31 evaluations of the bounds; one where the plain limit holds,
  /// as in every preset but sgd, whose momentum receives g + λW). Where a rule before makes no
  /// claim (NaN), the limits after it cannot be checked and stand as before; likewise where the
  /// parameters' share alone (g = 0, parameters up to kUnguardedParameter) may carry a rule's
  /// input beyond its limit (sgd with λ·8.5e37 ≥ its momentum's limit: λ ≥ 2, or λ ≥ 0.2 with
  /// the sum form at β = 0.9): no gradient limit prevents that, and the plain limit stands, the
  /// partition's exact test of W + u and its parameters' limit behind it (rule.hpp).
  double max_gradient(const BlockShape& s) const {
    const double top = max_gradient();
    const double cap = std::min(top, 3.4028234663852886e38);
    if (inputs_within(cap, s) || !inputs_within(0.0, s)) return top;
    std::uint32_t lo = 0, hi = magnitude_bits(cap);  // inputs_within(lo) holds, (hi) does not
    const auto value = [](std::uint32_t bits) {
      float f;
      std::memcpy(&f, &bits, sizeof f);
      return double(f);
    };
    while (hi - lo > 1) {
      const std::uint32_t mid = lo + (hi - lo) / 2;
      (inputs_within(value(mid), s) ? lo : hi) = mid;
    }
    return value(lo);
  }
  /// True when, for gradients within g, every rule's input is within its limit for the shape
  /// (max_gradient_of(r, s): a nested chain's own max_gradient(s)) by the bounds of the rules
  /// before it (update_bound_of; NaN, no claim, passes).
  bool inputs_within(double g, const BlockShape& s) const {
    bool ok = true;
    double in = g;
    std::apply(
        [&](const auto&... r) {
          ((ok = ok && (std::isnan(in) || in <= max_gradient_of(r, s)), in = bound_after(r, in, s)), ...);
        },
        rules_);
    return ok;
  }
  /// The rules' bounds composed (rule.hpp, update_bound): each rule's update_bound_of() for
  /// the bound of what reaches it, from `in`. NaN (no claim) when a rule declares none; +Inf
  /// once an intermediate bound exceeds FLT_MAX (update_bound_of), which every later rule keeps.
  double update_bound(double in, const BlockShape& s) const {
    std::apply([&](const auto&... r) { ((in = bound_after(r, in, s)), ...); }, rules_);
    return in;
  }

  /// The first of the rules' hyper-parameter checks that fails (rule.hpp, check_of), in order;
  /// nullptr when every rule is usable.
  const char* check() const noexcept {
    const char* m = nullptr;
    std::apply([&](const auto&... r) { ((m = m ? m : check_of(r)), ...); }, rules_);
    return m;
  }

  Status update(Block u, State& state, ConstBlock param) const {
    if (check() != nullptr) return Status::invalid_argument;  // unusable hyper-parameters
    if (const Status s = check_blocks(u, state, param); s != Status::ok) return s;
    if (!all_within(MatrixRef<const float>(u), magnitude_bits(max_gradient(state.shape))))
      return all_finite(MatrixRef<const float>(u)) ? Status::out_of_range : Status::non_finite_input;
    if constexpr (may_fail) {
      if constexpr (prechecks) {
        if (precheck_covers(state, u.memory)) {
          if (const Status s = precheck_first(u, state, param, nullptr); s != Status::ok) return s;
          // precheck_first promised success: a failure now is a broken promise, and the
          // state may have advanced (internal_error, as Partition reports it).
          const Status s = run(u, state, param, std::index_sequence_for<Rules...>{});
          return s == Status::ok ? s : Status::internal_error;
        }
      }
      State backup = state;
      Buffer saved(static_cast<std::size_t>(u.size()), u.memory);
      const MatrixRef<float> copy(saved.data(), u.rows, u.cols, u.memory);
      copy_block(copy, MatrixRef<const float>(u));
      const Status s = run(u, state, param, std::index_sequence_for<Rules...>{});
      if (s != Status::ok) {
        state = std::move(backup);
        copy_block(u, MatrixRef<const float>(copy));
      }
      return s;
    } else {
      return run(u, state, param, std::index_sequence_for<Rules...>{});
    }
  }

  /// update()'s failures before anything changes (class comment): the hyper-parameter and
  /// block checks, then the first rule's precheck (with `flag`, rule.hpp). ok promises that
  /// update_unguarded() (and update_batch() over such blocks) succeeds, when
  /// precheck_covers(state, u.memory). The gradient's NaN/Inf and max_gradient() scan is the
  /// caller's, as for update_unguarded().
  template <bool P = prechecks, std::enable_if_t<P, int> = 0>
  Status precheck(ConstBlock u, const State& state, ConstBlock param, float* flag = nullptr) const {
    if (check() != nullptr) return Status::invalid_argument;
    if (const Status s = check_blocks(u, state, param); s != Status::ok) return s;
    return precheck_first(u, state, param, flag);
  }
  /// The first rule's precheck_detail (rule.hpp), the one rule whose precheck runs.
  template <bool P = prechecks, std::enable_if_t<P, int> = 0>
  const char* precheck_detail(ConstBlock u, const State& state, Status refused) const {
    const auto& states = static_cast<const typename State::Base&>(state);
    return precheck_detail_of(std::get<0>(rules_), u, std::get<0>(states), refused);
  }
  /// True when precheck() tells every failure for this state on blocks in `memory`: the first
  /// rule's precheck covers its own (covered_by_precheck), and each later rule up to the last
  /// that may fail is total_on_finite() for the state's shape.
  template <bool P = prechecks, std::enable_if_t<P, int> = 0>
  bool precheck_covers(const State& state, MemoryKind memory) const {
    const auto& states = static_cast<const typename State::Base&>(state);
    return covered_by_precheck(std::get<0>(rules_), std::get<0>(states), state.shape, memory) &&
           totals_from_second(state, memory, std::index_sequence_for<Rules...>{});
  }
  /// The protocol's form (covered_by_precheck): the state knows its shape, which `shape`
  /// must be (else false: update() would refuse the block).
  template <bool P = prechecks, std::enable_if_t<P, int> = 0>
  bool precheck_covers(const State& state, const BlockShape& shape, MemoryKind memory) const {
    return state.shape == shape && precheck_covers(state, memory);
  }

  /// True when some rule uses its batched form now (optim::batch_enabled): otherwise a
  /// partition runs the chain per block.
  template <bool B = batches, std::enable_if_t<B, int> = 0>
  bool batch_enabled() const {
    return std::apply([](const auto&... r) { return (optim::batch_enabled(r) || ...); }, rules_);
  }

  /// Scratch bytes of update_batch for `batch` blocks of `shape`: the largest of the batched
  /// rules' (they run one after the other on one workspace).
  template <bool B = batches, std::enable_if_t<B, int> = 0>
  std::size_t batch_workspace_bytes(const BlockShape& shape, index_t batch) const {
    std::size_t bytes = 0;
    std::apply([&](const auto&... r) { ((bytes = std::max(bytes, batch_bytes_of(r, shape, batch))), ...); },
               rules_);
    return bytes;
  }
  /// Host scratch bytes of update_batch (optim::batch_host_bytes): the largest of the batched
  /// rules'.
  template <bool B = batches, std::enable_if_t<B, int> = 0>
  std::size_t batch_host_bytes(const BlockShape& shape, index_t batch) const {
    std::size_t bytes = 0;
    std::apply(
        [&](const auto&... r) {
          ((bytes = std::max(bytes, optim::batch_enabled(r) ? optim::batch_host_bytes(r, shape, batch) : 0)),
           ...);
        },
        rules_);
    return bytes;
  }

  /// The chain over `batch` same-shape blocks held contiguously in `u` (rule.hpp), stage by
  /// stage: a rule with a batched form runs once for the whole batch (one kernel call for the
  /// matrix functions), every other rule (and one that declines its batched form,
  /// optim::batch_enabled) runs per block. Each block gets exactly the arithmetic
  /// of update(). Like update_unguarded(): the caller has scanned the gradients for NaN/Inf and
  /// restores the states itself when a rule fails (u and the states may then hold partial
  /// results). invalid_argument, before anything is touched, when a state was sized for
  /// another shape or the parameters are not of u's shape.
  template <bool B = batches, std::enable_if_t<B, int> = 0>
  Status update_batch(BatchedMatrixRef<float> u, StateList<State> states, ParamList params,
                      Workspace& ws) const {
    if (states.size != u.batch || params.size != u.batch) return Status::invalid_argument;
    if (u.batch_stride != u.rows * u.cols || u.row_stride != u.cols || u.col_stride != 1)
      return Status::invalid_argument;  // not contiguous blocks
    if (!(params.shape == BlockShape{u.rows, u.cols})) return Status::invalid_argument;
    for (index_t b = 0; b < u.batch; ++b)
      if (!(states[b].shape == BlockShape{u.rows, u.cols}) || (params.data[b] == nullptr && u.size() > 0))
        return Status::invalid_argument;
    return run_batch(u, states, params, ws, std::index_sequence_for<Rules...>{});
  }

  /// update() for a caller that has already scanned the gradient for NaN/Inf and restores the
  /// state itself when a rule fails (Partition does both for all parameters at once): the block
  /// checks, then the rules, without the scan and the copies. On failure `u` and the state may
  /// hold partial results.
  Status update_unguarded(Block u, State& state, ConstBlock param) const {
    if (const Status s = check_blocks(u, state, param); s != Status::ok) return s;
    return run(u, state, param, std::index_sequence_for<Rules...>{});
  }

 private:
  /// One step of the composition of update_bound() and inputs_within(): rule r's
  /// update_bound_of() for inputs within `in`, where `in` is finite; an infinite bound stays
  /// infinite and NaN (no claim) stays NaN.
  template <class R>
  static double bound_after(const R& r, double in, const BlockShape& s) {
    return std::isfinite(in) ? update_bound_of(r, in, s) : in;
  }
  /// The first rule's precheck (called only where `prechecks`, so only instantiated there).
  Status precheck_first(ConstBlock u, const State& state, ConstBlock param, float* flag) const {
    const auto& states = static_cast<const typename State::Base&>(state);
    return std::get<0>(rules_).precheck(u, std::get<0>(states), param, flag);
  }
  /// Rules 1 … last_may_fail() are total_on_finite() for the state (chain_prechecks() made sure
  /// they have it).
  template <std::size_t... I>
  bool totals_from_second(const State& state, MemoryKind memory, std::index_sequence<I...>) const {
    const auto& states = static_cast<const typename State::Base&>(state);
    bool ok = true;
    (([&] {
       if constexpr (I >= 1 && int(I) <= detail::last_may_fail<Rules...>())
         ok = ok && std::get<I>(rules_).total_on_finite(std::get<I>(states), state.shape, memory);
     }()),
     ...);
    return ok;
  }
  template <std::size_t... I>
  Status run(Block u, State& state, ConstBlock param, std::index_sequence<I...>) const {
    Status s = Status::ok;
    // Left to right, stopping at the first failure.
    auto& states = static_cast<typename State::Base&>(state);
    ((s == Status::ok ? (s = std::get<I>(rules_).update(u, std::get<I>(states), param), 0) : 0), ...);
    return s;
  }
  template <class R>
  static std::size_t batch_bytes_of(const R& r, const BlockShape& shape, index_t batch) {
    if constexpr (has_update_batch<R>::value)
      return optim::batch_enabled(r) ? r.batch_workspace_bytes(shape, batch) : 0;
    else
      return 0;
  }
  /// State list of rule I: std::get<I> of each chain state of the batch.
  template <std::size_t I>
  static auto& child_state(void* context, index_t b) {
    auto& parent = (*static_cast<StateList<State>*>(context))[b];
    return std::get<I>(static_cast<typename State::Base&>(parent));
  }
  template <std::size_t I>
  Status stage(BatchedMatrixRef<float> u, StateList<State>& states, ParamList params, Workspace& ws) const {
    const auto& rule = std::get<I>(rules_);
    using R = std::tuple_element_t<I, std::tuple<Rules...>>;
    if constexpr (has_update_batch<R>::value) {
      if (optim::batch_enabled(rule)) {
        const StateList<typename R::State> children{&states, &child_state<I>, states.size};
        return rule.update_batch(u, children, params, ws);
      }
    }
    for (index_t b = 0; b < u.batch; ++b)
      if (const Status s = rule.update(block_of(u, b), child_state<I>(&states, b), params[b]);
          s != Status::ok)
        return s;
    return Status::ok;
  }
  template <std::size_t... I>
  Status run_batch(BatchedMatrixRef<float> u, StateList<State>& states, ParamList params, Workspace& ws,
                   std::index_sequence<I...>) const {
    Status s = Status::ok;
    ((s == Status::ok ? (s = stage<I>(u, states, params, ws), 0) : 0), ...);
    return s;
  }
  /// u and the parameter contiguous, of one shape, and of the shape the state was sized for.
  static Status check_blocks(ConstBlock u, const State& state, const ConstBlock& param) {
    if (!valid_shape(u.rows, u.cols)) return Status::invalid_argument;
    if (!is_contiguous(u) || !is_contiguous(param)) return Status::invalid_argument;
    if (param.rows != u.rows || param.cols != u.cols) return Status::invalid_argument;
    if (!(state.shape == BlockShape{u.rows, u.cols})) return Status::invalid_argument;  // another shape
    return Status::ok;
  }

  std::tuple<Rules...> rules_;
};

namespace detail {
/// Child I's fields (kScratch false) or scratch (true), named "<I>_<rule name>/…".
template <bool kScratch, std::size_t I, class R, class V>
void visit_child(V& v, typename R::State& s) {
  PrefixVisitor<V> p{v, std::to_string(I) + "_" + R::name + "/"};
  if constexpr (kScratch)
    visit_scratch(p, s);
  else
    visit_fields(p, s);
}
template <bool kScratch, class V, class... Rules, std::size_t... I>
void visit_children(V& v, ChainState<Rules...>& s, std::index_sequence<I...>) {
  (visit_child<kScratch, I, Rules>(v, std::get<I>(static_cast<typename ChainState<Rules...>::Base&>(s))),
   ...);
}
}  // namespace detail

template <class V, class... Rules>
void visit_fields(V& v, ChainState<Rules...>& s) {
  detail::visit_children<false>(v, s, std::index_sequence_for<Rules...>{});
}
template <class V, class... Rules>
void visit_scratch(V& v, ChainState<Rules...>& s) {
  detail::visit_children<true>(v, s, std::index_sequence_for<Rules...>{});
}
namespace detail {
/// g(state) for each rule's state of the chain, in the rules' order.
template <class G, class... Rules, std::size_t... I>
void for_each_child(const G& g, ChainState<Rules...>& s, std::index_sequence<I...>) {
  (g(std::get<I>(static_cast<typename ChainState<Rules...>::Base&>(s))), ...);
}
}  // namespace detail
template <class F, class... Rules>
void visit_workspaces(F& f, ChainState<Rules...>& s) {
  detail::for_each_child([&f](auto& c) { detail::workspaces_of(f, c); }, s,
                         std::index_sequence_for<Rules...>{});
}
template <class F, class... Rules>
void visit_shareable_scratch(F& f, ChainState<Rules...>& s) {
  detail::for_each_child([&f](auto& c) { detail::shareable_scratch_of(f, c); }, s,
                         std::index_sequence_for<Rules...>{});
}

/// Composes rules in order (style.md B4).
template <class... Rules>
Chain<Rules...> chain(Rules... rules) {
  return Chain<Rules...>(std::move(rules)...);
}

}  // namespace schatten::optim
