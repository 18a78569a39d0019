// SPDX-License-Identifier: Apache-2.0
/// \file
/// chain(r1, r2, ...): rules applied in order to the same update buffer; itself a rule.
#pragma once

#include <algorithm>
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

namespace detail {
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
/// these errors. When a rule that may fail is part of the chain, the state and the buffer are copied before
/// the rules run and restored if one fails, so a failed step leaves everything as it was.
template <class... Rules>
class Chain {
  static_assert((is_rule_v<Rules> && ...), "chain(): every argument must follow the rule protocol");

 public:
  static constexpr const char* name = "chain";
  static constexpr bool may_fail = (rule_may_fail<Rules>::value || ...);
  /// True when every rule acts on each element alone (rule_row_local).
  static constexpr bool row_local = (rule_row_local<Rules>::value && ...);
  /// True when every rule runs on device memory (rule.hpp, is_device_capable).
  static constexpr bool device_capable = (is_device_capable<Rules>::value && ...);
  /// True when some rule has a batched form: then the chain offers update_batch too.
  static constexpr bool batches = (has_update_batch<Rules>::value || ...);
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

  State init(const BlockShape& shape) const {
    return std::apply([&](const auto&... r) { return State(typename State::Base{r.init(shape)...}, shape); },
                      rules_);
  }

  /// The largest |g| the chain accepts: the smallest max_gradient() of its rules. Conservative:
  /// the limit of a later rule applies to the chain's input, not to the (transformed) values
  /// that reach that rule; for the presets, whose squaring rules come first or after momentum
  /// (an average of gradients), the two agree.
  double max_gradient() const {
    return std::apply([](const auto&... r) { return std::min({HUGE_VAL, max_gradient_of(r)...}); }, rules_);
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
    if (!all_within(MatrixRef<const float>(u), magnitude_bits(max_gradient())))
      return all_finite(MatrixRef<const float>(u)) ? Status::out_of_range : Status::non_finite_input;
    if constexpr (may_fail) {
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
  static Status check_blocks(const Block& u, const State& state, const ConstBlock& param) {
    if (!is_contiguous(MatrixRef<const float>(u)) || !is_contiguous(param)) return Status::invalid_argument;
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
