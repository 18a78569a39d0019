// SPDX-License-Identifier: Apache-2.0
/// \file
/// The optimizer rule protocol (style.md B4; optax's separation of configuration and state).
///
/// **Sign convention.** A rule turns a gradient into an update *in place*, and the update is
/// ADDED to the parameter: `apply_updates(param, u)` does `param += u`. `ScaleByLearningRate`
/// multiplies by −lr, so every chain that ends with it produces a descent step.
///
/// **Protocol** (checked by the trait `is_rule`; there is no base class). A rule is immutable
/// configuration — a small struct of hyper-parameters — with
///
///     static constexpr const char* name;        // "scale_by_adam": logs and checkpoint paths
///     struct State;                             // buffers and scalars, the step count included
///     State init(const BlockShape&) const;      // sized from the shape, zeroed; never lazy
///     Status update(Block u, State&, ConstBlock param) const;
///                                               // u: gradient in, update out
///     template <class V> friend void visit_fields(V& v, State& s);   // names every field once
///
/// Optional, for rules whose state depends on its place among the states a caller initialises
/// (detected by the trait `has_ordinal_init`; a Partition passes each state's index within its
/// route, so that a second init() gives what the first did; a chain forwards it):
///
///     State init(const BlockShape&, std::size_t ordinal) const;   // SchattenPDirection's chunks
///
/// Optional, for rules whose work is a matrix function that runs as one batched kernel call
/// over many same-shape blocks (detected by the trait `has_update_batch`):
///
///     std::size_t batch_workspace_bytes(const BlockShape&, index_t batch) const;
///     Status update_batch(BatchedMatrixRef<float> u, StateList<State> states,
///                         ParamList params, Workspace& ws) const;
///
/// `u` holds `batch` contiguous row-major blocks one after the other (block b at
/// u.data + b·rows·cols); `states[b]` and `params[b]` belong to block b; `ws` is scratch the
/// caller reserved with batch_workspace_bytes(). The result must equal `update` applied to each
/// block in turn. On failure the states and `u` may hold partial results: the caller (Partition)
/// restores the states from its copies. A rule whose batched form pays only in some
/// configurations may decline it at run time with
///
///     bool batch_enabled() const;                // false: run it per block (default: true)
///
/// (DionDirection batches only when its replicas split their QRs); `batch_enabled(rule)` below.
/// A batched form whose kernel also needs host scratch (Workspace::reserve()'s `host_bytes`)
/// declares how much, which the caller reserves with the rest:
///
///     std::size_t batch_host_bytes(const BlockShape&, index_t batch) const;   // default: 0
///
/// `update` may fail only before it writes anything (it returns the failing status and leaves
/// `u` and the state as they were; an exception that leaves it, such as a std::bad_alloc from
/// the rule's own containers, counts as out_of_memory, or internal_error for any other, and a
/// Partition puts back the states it copied); chains check the gradient for NaN/Inf once, before any
/// rule runs. A rule whose float state cannot hold every finite gradient also declares
///
///     double max_gradient() const;              // largest |g| it accepts (optional)
///
/// and chains and partitions refuse larger gradients with Status::out_of_range in the same scan,
/// before anything changes (Adam's g² overflows float above about 1.8e19). A rule states how
/// large its output can get:
///
///     double update_bound(double in, const BlockShape& s) const;   // optional
///
/// a bound on every |entry| of its output for an input (the gradient, or the output of the rule
/// before it in a chain) whose entries are at most `in`, parameters whose entries are at most
/// kUnguardedParameter, and a state this rule wrote from such inputs (not a checkpoint's state
/// beyond that), in exact arithmetic with the rule's float constants; +Inf when it has none
/// (update_bound_of adds the float roundings, and makes a bound beyond FLT_MAX infinite). A
/// chain composes its rules' bounds, and a Partition whose route's bound exceeds FLT_MAX −
/// kUnguardedParameter, where W + u could overflow, keeps a copy of that route's state: its exact
/// W + u test then refuses such a step and puts the state back (update_may_overflow_of; lr·λ > 3,
/// a learning rate near the float range, AdamW's tiny ε). A rule that declares no bound makes no
/// claim, and a Partition keeps copies of its route's state too: nothing says that its update
/// stays a float, and without a copy a step whose W + u must be refused would leave the state
/// advanced (a user's rule; the library's rules without one, SpectralPower, SpectralClip and
/// RadialBrake, keep copies anyway because they may fail without a precheck). Declaring a
/// bound is how a rule of your own keeps no copy. A rule with
/// hyper-parameters that can be unusable (a NaN or negative learning rate, β ≥ 1, ε ≤ 0) declares
///
///     const char* check() const noexcept;       // nullptr when usable, else a static message
///
/// naming the rule and the field (optional; the library's rules all have it, docs/optim.md
/// "Hyper-parameter checks"). Partition::init refuses a route whose rule fails it, and a chain's
/// update() returns invalid_argument, before anything is touched. `visit_fields` drives checkpoints,
/// state equality in tests and the "nothing forgotten" test: each field is reported as `v("name", field)`
/// with `field` a `std::int64_t`, a `double`, a `Buffer` or a `Bf16Buffer` (16-bit storage of a
/// momentum, docs/optim.md "State precision"; visitors that read values widen it with
/// bf16_to_float, and checkpoints store it as floats).
///
/// A rule whose State holds scratch Buffers (arrays its update fills and reads within one call,
/// neither checkpointed nor compared) names them in
///
///     template <class V> friend void visit_scratch(V& v, State& s);   // optional, like visit_fields
///
/// so that a partition moves them into device memory with the state (the default, below, names
/// none). Scratch that the partition's per-step backups need not copy sits behind a shared_ptr.
/// A rule whose State holds a kernel Workspace (a `std::shared_ptr<Workspace>`, reserved at init
/// so that update never allocates) names it in
///
///     template <class F> friend void visit_workspaces(F& f, State& s);   // f(s.workspace)
///
/// so that a partition can give all its states one workspace, grown to the largest any of them
/// reserved: a parameter set's kernel scratch then costs its largest parameter's, not the sum
/// over its parameters (docs/optim.md "Memory"). The states sharing one must be stepped one at
/// a time, as a partition steps them. Likewise a rule whose scratch (a `std::shared_ptr` to a
/// struct of scratch Buffers sized by the block's shape) carries nothing from one update to the
/// next, and which no batched form uses for several blocks at once, may name that pointer in
///
///     template <class F> friend void visit_shareable_scratch(F& f, State& s);   // f(s.scratch)
///
/// and a partition then gives the states of one route and one shape one scratch.
///
/// A rule that may fail (chain.hpp, rule_may_fail) costs a partition a copy of its state per
/// step, so that a later parameter's failure can restore it. A rule that can tell its failures
/// before it runs declares
///
///     Status precheck(ConstBlock u, const State&, ConstBlock param, float* flag) const;  // optional
///
/// which touches nothing and, for a `u` that passed the gradient scan (finite, within
/// max_gradient()), returns the status update(u, state, param) would fail with, or ok, a
/// promise that update() then succeeds and leaves `u` finite for a finite `param` (it may
/// refuse conservatively: TraceMomentum refuses values near the float range). A rule whose
/// promise holds only in some configurations also declares
///
///     bool precheck_covers(const State&, const BlockShape&, MemoryKind) const;  // optional
///
/// (SC-Muon's: its polar call total and its step unable to overflow; chain.hpp,
/// covered_by_precheck); where it is false the partition copies the state. With `flag` null
/// every test is waited for. With `flag` (one float in u's memory) the tests on the values may
/// be queued instead and not waited for: *flag then becomes > 0 when they refuse, else ≤ 0,
/// and the return value covers the other checks; a caller that finds the flag set calls
/// precheck again with null for the status. A partition on device memory thus reads the flags
/// of all its parameters with one transfer. A rule whose refusal has a cause the status alone
/// does not name (an input other than u, param and the state's own buffers) also declares
///
///     const char* precheck_detail(ConstBlock u, const State&, Status refused) const;  // optional
///
/// a static sentence, or nullptr, that the partition appends to its refusal message (a chain
/// forwards its first rule's; SchattenPDirection names its activation Gram). A rule that cannot
/// fail on finite input declares
///
///     bool total_on_finite(const State&, const BlockShape&, MemoryKind) const;   // optional
///
/// true when update() succeeds for every finite `u` of that shape in that memory and leaves it
/// finite (Orthogonalize with a polynomial method and its workspace reserved). A chain whose
/// first rule has precheck and whose later rules, up to its last that may fail, have
/// total_on_finite has a precheck too (chain.hpp); a partition prechecks such parameters before
/// changing any state and keeps no copy of theirs (docs/optim.md "Memory").
///
/// Blocks are row-major and contiguous matrices (a vector is 1 × n; conv and stacked tensors are
/// flattened by the caller as docs/optim.md says), element type float, in host memory, or in
/// device memory (MatrixRef::memory) for device-capable rules (`is_device_capable` below) run by
/// a partition initialised with MemoryKind::device.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "schatten/core/bf16.hpp"
#include "schatten/core/buffer.hpp"
#include "schatten/core/matrix_ref.hpp"
#include "schatten/core/status.hpp"
#include "schatten/core/types.hpp"
#include "schatten/core/workspace.hpp"

namespace schatten::optim {

/// Shape of a parameter block as the rules see it.
struct BlockShape {
  index_t rows = 0, cols = 0;
  constexpr index_t size() const { return rows * cols; }
  friend constexpr bool operator==(const BlockShape& a, const BlockShape& b) {
    return a.rows == b.rows && a.cols == b.cols;
  }
};

/// The most elements a block may have: 2^58 (1 EiB of floats), so that its element count and its
/// byte count in double (×8) cannot overflow index_t; far beyond any memory.
constexpr index_t kMaxBlockElements = index_t(1) << 58;
/// True when rows, cols ≥ 0 and rows·cols ≤ kMaxBlockElements (tested without overflowing):
/// the shapes a rule's init() and update() accept. A negative dimension, or two that multiply
/// past the range of index_t (2^32 × 2^32 wraps to 0), would size buffers wrongly.
constexpr bool valid_shape(index_t rows, index_t cols) {
  return rows >= 0 && cols >= 0 && (cols == 0 || rows <= kMaxBlockElements / cols);
}
constexpr bool valid_shape(const BlockShape& s) { return valid_shape(s.rows, s.cols); }

/// The update buffer a rule transforms (contiguous row-major host memory).
using Block = MatrixRef<float>;
/// The parameter a rule may read (weight decay, distance rules).
using ConstBlock = MatrixRef<const float>;
/// Owned state buffers: host memory as created by init(), device memory once a partition moved
/// them there (Partition::init(MemoryKind::device); core/buffer.hpp).
using Buffer = FloatBuffer;
/// 16-bit (bf16) state storage (core/bf16.hpp).
using Bf16Buffer = schatten::Bf16Buffer;

/// Detects the protocol of a rule type R (name, State, init, update).
template <class R, class = void>
struct is_rule : std::false_type {};
template <class R>
struct is_rule<R, std::void_t<decltype(R::name), typename R::State,
                              decltype(std::declval<const R&>().init(std::declval<const BlockShape&>())),
                              decltype(std::declval<const R&>().update(std::declval<Block>(),
                                                                       std::declval<typename R::State&>(),
                                                                       std::declval<ConstBlock>()))>>
    : std::is_same<decltype(std::declval<const R&>().update(std::declval<Block>(),
                                                            std::declval<typename R::State&>(),
                                                            std::declval<ConstBlock>())),
                   Status> {};
template <class R>
constexpr bool is_rule_v = is_rule<R>::value;

/// Rules with init(shape, ordinal) (the protocol above).
template <class R, class = void>
struct has_ordinal_init : std::false_type {};
template <class R>
struct has_ordinal_init<R, std::void_t<decltype(std::declval<const R&>().init(
                               std::declval<const BlockShape&>(), std::size_t{0}))>> : std::true_type {};
/// r.init(shape, ordinal) when R has it, else r.init(shape).
template <class R>
auto init_at(const R& r, const BlockShape& shape, std::size_t ordinal) {
  if constexpr (has_ordinal_init<R>::value)
    return r.init(shape, ordinal);
  else
    return r.init(shape);
}

/// A list of `size` states without owning them: state b is `at(context, b)`. A plain function
/// pointer and a context (no allocation), so a chain can hand each child the list of its own
/// sub-states (`std::get<I>` of each chain state) and a partition the states of a group.
template <class S>
struct StateList {
  void* context = nullptr;
  S& (*at)(void*, index_t) = nullptr;
  index_t size = 0;
  S& operator[](index_t b) const { return at(context, b); }
};

/// The parameters of a batch of same-shape blocks: `data[b]` points to block b (contiguous
/// row-major, `shape`).
struct ParamList {
  const float* const* data = nullptr;
  BlockShape shape{};
  index_t size = 0;
  MemoryKind memory = MemoryKind::host;  ///< where the blocks live (the pointer table is host memory)
  ConstBlock operator[](index_t b) const { return ConstBlock(data[b], shape.rows, shape.cols, memory); }
};

/// Block b of a contiguous batch, as the Block that `update` takes (in the batch's memory).
inline Block block_of(const BatchedMatrixRef<float>& u, index_t b) {
  return Block(u.data + b * u.batch_stride, u.rows, u.cols, u.memory);
}

/// Rules whose update runs on blocks and state in device memory declare
/// `static constexpr bool device_capable = true`: they touch memory only through the helpers
/// below (and the device kernels of transforms.hpp) or through a kernel that takes device
/// memory, and every Buffer of their state is named by visit_fields or, for scratch, by
/// visit_scratch (so that a partition can move it). A chain is device-capable when all its
/// rules are.
template <class R, class = void>
struct is_device_capable : std::false_type {};
template <class R>
struct is_device_capable<R, std::void_t<decltype(R::device_capable)>>
    : std::bool_constant<R::device_capable> {};

/// The default visit_scratch (the file comment's protocol): a state without scratch names
/// nothing. A rule's own overload (a friend taking its State) is more specialised and wins.
template <class V, class S>
void visit_scratch(V&, S&) {}
/// The default visit_workspaces (the file comment's protocol): a state without a kernel
/// workspace names none.
template <class F, class S>
void visit_workspaces(F&, S&) {}
/// The default visit_shareable_scratch: no scratch that states of one shape may share.
template <class F, class S>
void visit_shareable_scratch(F&, S&) {}
namespace detail {
/// visit_scratch(v, s) found by argument-dependent lookup, for callers (Partition) whose own
/// member of that name would hide it.
template <class V, class S>
void scratch_of(V& v, S& s) {
  visit_scratch(v, s);
}
/// visit_workspaces(f, s) found by argument-dependent lookup (as scratch_of).
template <class F, class S>
void workspaces_of(F& f, S& s) {
  visit_workspaces(f, s);
}
/// visit_shareable_scratch(f, s) found by argument-dependent lookup (as scratch_of).
template <class F, class S>
void shareable_scratch_of(F& f, S& s) {
  visit_shareable_scratch(f, s);
}
/// True when the field name `s` ends with `suffix` (how the state's visitors find a field).
inline bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
}  // namespace detail

/// The scalar state fields called `field` in `state` — a Partition or SplitPartition, a chain's
/// or a rule's State: anything with visit_fields — as (full field name, value) pairs in visit
/// order. A field matches when its name is `field` or ends with "/" + `field`, and it is a double
/// or a std::int64_t (widened to double: exact below 2⁵³). For logging what the rules adapt per
/// parameter:
///
///     for (auto& [name, eta] : state_scalars(opt, "eta")) log(name, eta);   // DF-Muon's last step
///
/// with "eta" (DF-Muon's η of the last step), "kappa" (SC-Muon's κ of the last step), "rbar"
/// (DA-Muon's radius r̄), "alpha" (NAMO's and NAMO-D's step scale), "schatten_p"
/// (schatten_p_values() in schatten_p.hpp) or "count" (the rules' step counts; step_size.hpp and
/// docs/optim.md). Empty when nothing matches. Cost: one walk over the field names; no array is
/// read.
template <class State>
std::vector<std::pair<std::string, double>> state_scalars(State& state, const std::string& field) {
  struct Collect {
    const std::string& field;
    std::vector<std::pair<std::string, double>> out;
    bool matches(const std::string& name) const {  // the whole name, or the part after a '/'
      return detail::ends_with(name, field) &&
             (name.size() == field.size() || name[name.size() - field.size() - 1] == '/');
    }
    void operator()(const std::string& name, double& v) {
      if (matches(name)) out.emplace_back(name, v);
    }
    void operator()(const std::string& name, std::int64_t& v) {
      if (matches(name)) out.emplace_back(name, static_cast<double>(v));
    }
    void operator()(const std::string&, Buffer&) {}
    void operator()(const std::string&, Bf16Buffer&) {}
  } c{field, {}};
  visit_fields(c, state);
  return std::move(c.out);
}

/// Detects the optional batched form of a rule (see the file comment).
template <class R, class = void>
struct has_update_batch : std::false_type {};
template <class R>
struct has_update_batch<
    R, std::void_t<decltype(std::declval<const R&>().update_batch(
                       std::declval<BatchedMatrixRef<float>>(), std::declval<StateList<typename R::State>>(),
                       std::declval<ParamList>(), std::declval<Workspace&>())),
                   decltype(std::declval<const R&>().batch_workspace_bytes(std::declval<const BlockShape&>(),
                                                                           index_t(1)))>> : std::true_type {};

/// Detects the optional run-time switch of a batched form (see the file comment).
template <class R, class = void>
struct has_batch_switch : std::false_type {};
template <class R>
struct has_batch_switch<R, std::void_t<decltype(bool(std::declval<const R&>().batch_enabled()))>>
    : std::true_type {};

/// Detects the optional host scratch of a batched form (see the file comment).
template <class R, class = void>
struct has_batch_host_bytes : std::false_type {};
template <class R>
struct has_batch_host_bytes<R, std::void_t<decltype(std::size_t(std::declval<const R&>().batch_host_bytes(
                                   std::declval<const BlockShape&>(), index_t(1))))>> : std::true_type {};

/// Host scratch bytes of `rule`'s batched form for `batch` blocks of `shape` (its
/// batch_host_bytes(), else 0).
template <class R>
std::size_t batch_host_bytes(const R& rule, const BlockShape& shape, index_t batch) {
  if constexpr (has_batch_host_bytes<R>::value)
    return rule.batch_host_bytes(shape, batch);
  else
    return 0;
}

/// True when `rule` has a batched form and uses it now (its batch_enabled(), else true).
template <class R>
bool batch_enabled(const R& rule) {
  if constexpr (!has_update_batch<R>::value)
    return false;
  else if constexpr (has_batch_switch<R>::value)
    return rule.batch_enabled();
  else
    return true;
}

/// Builds a rule's signature "name(key=value,...)": its name and every hyper-parameter, numbers
/// printed exactly (%.17g). Rules expose it as `std::string config() const`; checkpoints store
/// the optimizer's signature so that resuming with other hyper-parameters can be detected.
class Signature {
 public:
  explicit Signature(const char* name) : s_(name) { s_ += '('; }
  Signature& add(const char* key, double v) {
    char buf[40];
    std::snprintf(buf, sizeof buf, "%.17g", v);
    return put(key, buf);
  }
  Signature& add(const char* key, std::int64_t v) { return put(key, std::to_string(v)); }
  Signature& add(const char* key, int v) { return put(key, std::to_string(v)); }
  Signature& add(const char* key, bool v) { return put(key, v ? "true" : "false"); }
  Signature& add(const char* key, const std::string& v) { return put(key, v); }
  Signature& add(const char* key, const char* v) { return put(key, v); }
  std::string str() const { return s_ + ')'; }

 private:
  Signature& put(const char* key, const std::string& v) {
    if (s_.back() != '(') s_ += ',';
    s_ += key;
    s_ += '=';
    s_ += v;
    return *this;
  }
  std::string s_;
};

/// A rule's signature: its config() when it has one, else its name.
template <class R, class = void>
struct has_config : std::false_type {};
template <class R>
struct has_config<R, std::void_t<decltype(std::declval<const R&>().config())>> : std::true_type {};
template <class R>
std::string config_of(const R& r) {
  if constexpr (has_config<R>::value)
    return r.config();
  else
    return R::name;
}

/// True when the block is contiguous row-major (what rules require of `u` and `param`).
inline bool is_contiguous(MatrixRef<const float> m) {
  return m.empty() || ((m.rows == 1 || m.row_stride == m.cols) && (m.cols == 1 || m.col_stride == 1));
}

/// The element-wise kernels of the helpers below on device memory: Kokkos kernels of the
/// default execution space (backends/kokkos/src/optim_kernels.cpp) with the host loops'
/// arithmetic. Arrays are contiguous, n elements. Asynchronous on a GPU except the reductions;
/// fence() waits for them. Callers use the helpers, which choose by MatrixRef::memory.
namespace device_kernels {
void fence();
void scale(float* x, index_t n, float f);
void add(float* p, const float* u, index_t n);
void add_scaled(float* x, const float* w, index_t n, float l);
void add_scaled_where_aligned(float* x, const float* w, index_t n, float l);
bool all_within(const float* x, index_t n, std::uint32_t limit_bits);
/// *flag (device memory) ← 1 when some |x[k]| exceeds the float of `limit_bits` or is NaN, else a
/// value ≤ 0 (the identity of a max-reduction); asynchronous: all_within's test without waiting
/// for the answer. n > 0.
void flag_outside(const float* x, index_t n, std::uint32_t limit_bits, float* flag);
/// *flag (device memory) ← 1 when some |x[k]| exceeds the float of `limit_bits` or is NaN, else
/// left as it is: flag_outside()'s test ORed into a flag that an earlier test wrote
/// (Dion2Direction::precheck's gradient after its momentum). Not waited for. n > 0.
void flag_outside_or(const float* x, index_t n, std::uint32_t limit_bits, float* flag);
/// all_within_non_negative() of this file on device memory: every x[k] in [0, limit]. Waits.
bool all_within_non_negative(const float* x, index_t n, std::uint32_t limit_bits);
/// *flag (device memory) ← 1 when some x[k] lies outside [0, limit] (NaN included), else left
/// as it is: it ORs into a flag that flag_outside() has written (MuAdamDirection::precheck's
/// second buffer). Not waited for. n > 0.
void flag_outside_non_negative(const float* x, index_t n, std::uint32_t limit_bits, float* flag);
/// *flag (device memory) ← 1 when some p[k] + u[k], rounded to float as add() rounds it, is ±Inf
/// or NaN, else a value ≤ 0 (the identity of a max-reduction); asynchronous: sum_finite()'s test
/// without waiting for the answer (Partition's test of the updates before they are applied).
/// n > 0.
void flag_sum_outside(const float* p, const float* u, index_t n, float* flag);
void copy(float* dst, const float* src, index_t n);
/// dst(i, j) ← src(i, j) for rows × cols row-major blocks with leading dimensions dst_ld and
/// src_ld (≥ cols): the gather and scatter of a column piece (split.hpp).
void copy_rows(float* dst, index_t dst_ld, const float* src, index_t src_ld, index_t rows, index_t cols);
/// x(i, j) ← f·x(i, j) for a rows × cols row-major block with leading dimension ld (≥ cols):
/// QK-clip's column slices (qk_clip.hpp).
void scale_rows(float* x, index_t ld, index_t rows, index_t cols, float f);
void fill(float* x, index_t n, float value);
/// Σ_k detail::difference_product(x[k], a[k], y[k], b[k]) in double; a or b null stands for
/// zeros.
double inner(const float* x, const float* a, const float* y, const float* b, index_t n);
/// norms[s] ← float(detail::slice_norm(Σ over slice s of detail::slice_term(x, l2), l2)), the sum in
/// double: the rows of the rows × cols row-major block when along_rows, else its columns. One team
/// per slice.
void slice_norms(const float* x, index_t rows, index_t cols, bool along_rows, bool l2, float* norms);
}  // namespace device_kernels

namespace detail {
/// (x − a)(y − b) in double: one term of the inner products of inner_of_differences(). The one
/// formula of the host loop and the device kernel. With a = 0 (or b = 0) the difference is x
/// exactly, so ⟨x, y⟩ and ‖x − a‖² need no formula of their own.
SCHATTEN_HOST_DEVICE inline double difference_product(float x, float a, float y, float b) {
  return (double(x) - double(a)) * (double(y) - double(b));
}
/// One term of slice_norms(): x² (ℓ₂) or |x| (ℓ₁), in double.
SCHATTEN_HOST_DEVICE inline double slice_term(float x, bool l2) {
  const double v = x;
  return l2 ? v * v : (v < 0.0 ? -v : v);
}
/// The norm of a slice from its sum of terms: √sum (ℓ₂) or the sum (ℓ₁), rounded to float.
SCHATTEN_HOST_DEVICE inline float slice_norm(double sum, bool l2) {
  return static_cast<float>(l2 ? std::sqrt(sum) : sum);
}
}  // namespace detail

// The element-wise helpers of the rules. Each takes contiguous row-major blocks (apply_updates
// and all_within also strided host blocks, copy_block row-major blocks with a leading
// dimension in either memory) in host or device memory (MatrixRef::memory; both
// operands of one call in the same memory) and runs the host loop or the device kernel. These
// and the kernels of transforms.hpp are the only code that touches a rule's memory, which is
// what lets a partition keep its state and step on the device (docs/optim.md).

/// u ← f·u on a contiguous block (the scaling of many rules).
inline void scale(MatrixRef<float> u, float f) {
  if (u.memory == MemoryKind::device) return device_kernels::scale(u.data, u.size(), f);
  for (index_t k = 0, n = u.size(); k < n; ++k)
    u.data[k] *= f;
}

/// u ← f·u for a factor computed in double that may lie beyond the float range while f·u does
/// not: an update rescaled to a set norm, f = target/‖u‖, where u's entries may be as small as
/// float's smallest denormal (1.4e-45), so f can reach ~1e45·target and float(f) would be ∞
/// (∞·u, not the rescaled u); or a global clip of gradients near FLT_MAX, f = max/‖g‖ below
/// FLT_MIN, where float(f) would be subnormal (a few bits: the clipped norm off by 1e-4) or 0.
/// One pass by float(f) when f is 0 or float(f) a normal float, else two passes by float(√f) and
/// float(f/√f), each normal; every intermediate entry lies between |u_k| and f·|u_k|, so
/// neither pass overflows. Precondition: FLT_MIN² ≤ f < FLT_MAX² (≈ 1.4e-76 … 1.2e77) or f = 0.
/// Accuracy: one or two float roundings of the product per entry.
inline void scale_by(MatrixRef<float> u, double f) {
  const float once = static_cast<float>(f);
  if (f == 0.0 || (std::isfinite(once) && once >= std::numeric_limits<float>::min())) return scale(u, once);
  const double root = std::sqrt(f);
  scale(u, static_cast<float>(root));
  scale(u, static_cast<float>(f / root));
}

/// m ← f·m on a row-major block with any leading dimension (col_stride 1): one flat pass when
/// contiguous, else row by row (QK-clip's head slices, qk_clip.hpp; the same product as scale()).
inline void scale_block(MatrixRef<float> m, float f) {
  if (is_contiguous(m)) return scale(m, f);
  if (m.empty()) return;
  if (m.memory == MemoryKind::device)
    return device_kernels::scale_rows(m.data, m.row_stride, m.rows, m.cols, f);
  for (index_t i = 0; i < m.rows; ++i)
    for (index_t j = 0; j < m.cols; ++j)
      m.data[i * m.row_stride + j] *= f;
}

/// u ← u + l·w on contiguous blocks of one shape (weight decay).
inline void add_scaled(MatrixRef<float> u, MatrixRef<const float> w, float l) {
  if (u.memory == MemoryKind::device) return device_kernels::add_scaled(u.data, w.data, u.size(), l);
  float* x = u.data;
  const float* p = w.data;
  for (index_t k = 0, n = u.size(); k < n; ++k)
    x[k] += l * p[k];
}

/// u ← u + l·w where u·w > 0, elsewhere unchanged (cautious weight decay).
inline void add_scaled_where_aligned(MatrixRef<float> u, MatrixRef<const float> w, float l) {
  if (u.memory == MemoryKind::device)
    return device_kernels::add_scaled_where_aligned(u.data, w.data, u.size(), l);
  float* x = u.data;
  const float* p = w.data;
  for (index_t k = 0, n = u.size(); k < n; ++k)
    if (x[k] * p[k] > 0.0f) x[k] += l * p[k];
}

/// Σ_k (x_k − a_k)(y_k − b_k) over contiguous arrays of x's size, all in x's memory, accumulated in
/// double in index order (on the device: the execution space's order); a or b null stands for
/// zeros. ⟨x, y⟩ is inner_of_differences(x, nullptr, y, nullptr), ‖x − a‖² is
/// inner_of_differences(x, a, x.data, a): the inner products of the distance-aware rules
/// (step_size.hpp). One pass over the arrays; on the device one reduction read back.
inline double inner_of_differences(MatrixRef<const float> x, const float* a, const float* y, const float* b) {
  if (x.memory == MemoryKind::device) return device_kernels::inner(x.data, a, y, b, x.size());
  double s = 0.0;
  for (index_t k = 0, n = x.size(); k < n; ++k)
    s += detail::difference_product(x.data[k], a ? a[k] : 0.0f, y[k], b ? b[k] : 0.0f);
  return s;
}

/// The ℓ₂ (`l2`) or ℓ₁ norm of each row (`along_rows`) or column of a contiguous block, its sum
/// accumulated in double in index order, rounded to float, into `norms` (rows or cols floats in x's
/// memory): Dion2's ranking and NAMO-D's column steps. ℓ₂ norms of finite floats overflow only
/// beyond FLT_MAX/√(slice length). On the host the columns are summed 64 at a time, row by row
/// (contiguous reads, no scratch).
inline void slice_norms(MatrixRef<const float> x, bool along_rows, bool l2, float* norms) {
  if (x.memory == MemoryKind::device)
    return device_kernels::slice_norms(x.data, x.rows, x.cols, along_rows, l2, norms);
  if (along_rows) {
    for (index_t i = 0; i < x.rows; ++i) {
      double s = 0.0;
      for (index_t j = 0; j < x.cols; ++j)
        s += detail::slice_term(x.data[i * x.cols + j], l2);
      norms[i] = detail::slice_norm(s, l2);
    }
    return;
  }
  constexpr index_t kPanel = 64;
  for (index_t j0 = 0; j0 < x.cols; j0 += kPanel) {
    const index_t w = std::min(kPanel, x.cols - j0);
    double acc[kPanel] = {};
    for (index_t i = 0; i < x.rows; ++i)
      for (index_t j = 0; j < w; ++j)
        acc[j] += detail::slice_term(x.data[i * x.cols + j0 + j], l2);
    for (index_t j = 0; j < w; ++j)
      norms[j0 + j] = detail::slice_norm(acc[j], l2);
  }
}

/// ‖u‖²_F of a contiguous block, accumulated in double: ⟨u, u⟩ of inner_of_differences() (the
/// same bits as the plain sum of squares, since x − 0 is x exactly).
inline double squared_norm(MatrixRef<const float> u) {
  return inner_of_differences(u, nullptr, u.data, nullptr);
}

/// A state Buffer seen as a block of `like`'s shape and memory (the caller checked the size).
inline Block block_like(Buffer& b, MatrixRef<const float> like) {
  return Block(b.data(), like.rows, like.cols, like.memory);
}

/// Every element of a contiguous block ← value.
inline void fill(MatrixRef<float> u, float value) {
  if (u.memory == MemoryKind::device) return device_kernels::fill(u.data, u.size(), value);
  std::fill(u.data, u.data + u.size(), value);
}

/// dst ← src, blocks of one shape: contiguous, or row-major with any leading dimension
/// (col_stride 1: a column piece of a wider matrix, split.hpp), one copy per row then.
inline void copy_block(MatrixRef<float> dst, MatrixRef<const float> src) {
  if (is_contiguous(dst) && is_contiguous(src)) {
    if (dst.memory == MemoryKind::device) return device_kernels::copy(dst.data, src.data, dst.size());
    std::copy(src.data, src.data + src.size(), dst.data);
    return;
  }
  if (dst.empty()) return;
  if (dst.memory == MemoryKind::device)
    return device_kernels::copy_rows(dst.data, dst.row_stride, src.data, src.row_stride, dst.rows, dst.cols);
  for (index_t i = 0; i < dst.rows; ++i)
    std::copy(src.data + i * src.row_stride, src.data + i * src.row_stride + src.cols,
              dst.data + i * dst.row_stride);
}

/// param += u (the sign convention above). Shapes must match (checked by the caller); any
/// strides on the host, with a single flat loop when both are contiguous; contiguous blocks in
/// device memory.
inline void apply_updates(MatrixRef<float> param, MatrixRef<const float> u) {
  if (param.memory == MemoryKind::device) return device_kernels::add(param.data, u.data, param.size());
  if (is_contiguous(param) && is_contiguous(u)) {
    for (index_t k = 0, n = param.size(); k < n; ++k)
      param.data[k] += u.data[k];
    return;
  }
  for (index_t i = 0; i < param.rows; ++i)
    for (index_t j = 0; j < param.cols; ++j)
      param(i, j) += u(i, j);
}

/// The bit pattern of |x| for a limit x ≥ 0: non-negative floats (and +Inf, then NaN) order
/// like their bit patterns as unsigned integers, so |g| ≤ limit is (bits(g) & 0x7fffffff) ≤
/// magnitude_bits(limit), and NaN never passes. Limits above FLT_MAX mean "finite".
inline std::uint32_t magnitude_bits(double limit) {
  constexpr std::uint32_t kFltMaxBits = 0x7f7fffffu;  // FLT_MAX: the largest finite float
  if (!(limit < 3.4028234663852886e38)) return kFltMaxBits;
  const float f = static_cast<float>(limit);
  std::uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return bits;
}

/// True when every element is finite with |x| ≤ the float whose bits are `limit_bits` (from
/// magnitude_bits()). Contiguous blocks are scanned by an integer compare-and-OR reduction that
/// vectorises and runs at memory speed.
inline bool all_within(MatrixRef<const float> m, std::uint32_t limit_bits) {
  if (m.memory == MemoryKind::device) return device_kernels::all_within(m.data, m.size(), limit_bits);
  if (is_contiguous(m)) {
    std::uint32_t bad = 0;
    for (index_t k = 0, n = m.size(); k < n; ++k) {
      std::uint32_t bits;
      std::memcpy(&bits, m.data + k, sizeof bits);
      bad |= static_cast<std::uint32_t>((bits & 0x7fffffffu) > limit_bits);
    }
    return bad == 0;
  }
  float limit;
  std::memcpy(&limit, &limit_bits, sizeof limit);
  for (index_t i = 0; i < m.rows; ++i)
    for (index_t j = 0; j < m.cols; ++j)
      if (!(std::fabs(m(i, j)) <= limit)) return false;  // NaN fails
  return true;
}

/// True when every element is finite (no NaN, no ±Inf).
inline bool all_finite(MatrixRef<const float> m) { return all_within(m, magnitude_bits(HUGE_VAL)); }

/// True when param + u, rounded to float as apply_updates() rounds it, is finite for every
/// element: the update does not carry the parameter out of the float range (FLT_MAX ≈ 3.4e38).
/// Finite param and u can still sum to ±Inf when either lies within a factor 2 of FLT_MAX.
/// Shapes match (checked by the caller); host memory (on device memory Partition queues
/// device_kernels::flag_sum_outside). Cost: one read of each, an integer compare-and-OR
/// reduction over the sum's bits that vectorises, like all_within().
inline bool sum_finite(MatrixRef<const float> param, MatrixRef<const float> u) {
  constexpr std::uint32_t kFltMaxBits = 0x7f7fffffu;  // magnitude_bits(HUGE_VAL)
  std::uint32_t bad = 0;
  const auto test = [&](float p, float d) {
    const float s = p + d;
    std::uint32_t bits;
    std::memcpy(&bits, &s, sizeof bits);
    bad |= static_cast<std::uint32_t>((bits & 0x7fffffffu) > kFltMaxBits);
  };
  if (is_contiguous(param) && is_contiguous(u)) {
    for (index_t k = 0, n = param.size(); k < n; ++k)
      test(param.data[k], u.data[k]);
  } else {
    for (index_t i = 0; i < param.rows; ++i)
      for (index_t j = 0; j < param.cols; ++j)
        test(param(i, j), u(i, j));
  }
  return bad == 0;
}

/// True when every element x has 0 ≤ x ≤ the float of `limit_bits` (magnitude_bits; −0 counts
/// as 0, NaN fails): the test of a state that must not be negative, such as a second moment
/// (MuAdamDirection::precheck). Cost: one read.
inline bool all_within_non_negative(MatrixRef<const float> m, std::uint32_t limit_bits) {
  if (m.memory == MemoryKind::device)
    return device_kernels::all_within_non_negative(m.data, m.size(), limit_bits);
  float limit;
  std::memcpy(&limit, &limit_bits, sizeof limit);
  bool bad = false;
  for (index_t i = 0; i < m.rows; ++i)
    for (index_t j = 0; j < m.cols; ++j) {
      const float x = m(i, j);
      bad |= !(x >= 0.0f && x <= limit);
    }
  return !bad;
}

/// The largest |g| rule R accepts: its max_gradient() when it declares one, else +Inf.
template <class R, class = void>
struct has_max_gradient : std::false_type {};
template <class R>
struct has_max_gradient<R, std::void_t<decltype(std::declval<const R&>().max_gradient())>> : std::true_type {
};
/// Detects the optional check() of a rule (the file comment).
template <class R, class = void>
struct has_check : std::false_type {};
template <class R>
struct has_check<R, std::void_t<decltype(std::declval<const R&>().check())>> : std::true_type {};
/// r.check() where the rule has one, else nullptr (no hyper-parameter to refuse).
template <class R>
const char* check_of(const R& r) noexcept {
  if constexpr (has_check<R>::value)
    return r.check();
  else
    return nullptr;
}

/// The ranges the rules' check() use. "Finite" means finite as a float, |x| ≤ FLT_MAX: the
/// rules compute in float, where a learning rate or decay of 1e39 is ∞ (and the conversion of
/// such a double to float is undefined behaviour). NaN and ±Inf fail each: x ≥ 0; x > 0; x > 0
/// also once rounded to float (an ε the float arithmetic adds); a decay rate β ∈ [0, 1), also
/// once rounded to float (β = 1 freezes an EMA at its zero start, and a β just below 1 that
/// rounds to 1.0f does the same through 1.0f − β; an Adam-style bias correction 1 − β^t divides
/// by 0).
namespace hyper {
inline bool float_finite(double x) noexcept {
  return std::isfinite(x) && std::fabs(x) <= 3.4028234663852886e38;
}
inline bool non_negative(double x) noexcept { return float_finite(x) && x >= 0.0; }
inline bool positive(double x) noexcept { return float_finite(x) && x > 0.0; }
inline bool positive_float(double x) noexcept { return positive(x) && static_cast<float>(x) > 0.0f; }
inline bool decay_rate(double b) noexcept {
  return std::isfinite(b) && b >= 0.0 && b < 1.0 && static_cast<float>(b) < 1.0f;
}
/// A storage the momentum rules offer for their buffers: fp32 (with the default rounding: fp32
/// elements are never rounded, so stochastic rounding is refused there), or bf16 rounded either
/// way.
inline bool state_storage(StateStorage s) noexcept {
  return s == StateStorage(Precision::fp32) || s.precision == Precision::bf16;
}
}  // namespace hyper

template <class R>
double max_gradient_of(const R& r) {
  if constexpr (has_max_gradient<R>::value)
    return r.max_gradient();
  else
    return HUGE_VAL;
}

/// Detects the optional update_bound() of a rule (the file comment).
template <class R, class = void>
struct has_update_bound : std::false_type {};
template <class R>
struct has_update_bound<
    R, std::void_t<decltype(std::declval<const R&>().update_bound(0.0, std::declval<const BlockShape&>()))>>
    : std::true_type {};
/// The relative slack update_bound_of() adds to a rule's bound for its float roundings: 2⁻¹⁶,
/// room for about 250 roundings of 2⁻²⁴ each, far more than any rule does per element (its
/// states' 16-bit storage roundings are in the rules' own bounds).
constexpr double kUpdateBoundSlack = 0x1p-16;
/// r.update_bound(in, s)·(1 + kUpdateBoundSlack) where the rule declares one: +Inf when that
/// exceeds FLT_MAX (the output itself may then be infinite, whatever follows it in a chain);
/// NaN, "no claim", when the rule declares none (the file comment).
template <class R>
double update_bound_of(const R& r, double in, const BlockShape& s) {
  if constexpr (has_update_bound<R>::value) {
    const double b = r.update_bound(in, s) * (1.0 + kUpdateBoundSlack);
    return std::isnan(b) || b <= 3.4028234663852886e38 ? b : HUGE_VAL;  // a chain's NaN: no claim
  } else {
    return std::numeric_limits<double>::quiet_NaN();
  }
}
/// The largest |W| a Partition accepts in a parameter whose route keeps no copy of its state:
/// FLT_MAX/4 (exact), 8.5e37, so that W + u cannot overflow unless |u| exceeds three quarters of
/// the float range (Partition::param_limit_bits). The rules' update_bound() counts on it.
constexpr double kUnguardedParameter = 3.4028234663852886e38 / 4.0;

/// Detects a shape-aware max_gradient(const BlockShape&) (Chain's).
template <class R, class = void>
struct has_shape_max_gradient : std::false_type {};
template <class R>
struct has_shape_max_gradient<
    R, std::void_t<decltype(std::declval<const R&>().max_gradient(std::declval<const BlockShape&>()))>>
    : std::true_type {};
/// The largest |g| rule R accepts for blocks of shape s: its max_gradient(s) where it has one (a
/// chain, whose limit depends on what its earlier rules make of the gradient), else
/// max_gradient_of(r).
template <class R>
double max_gradient_of(const R& r, const BlockShape& s) {
  if constexpr (has_shape_max_gradient<R>::value)
    return r.max_gradient(s);
  else
    return max_gradient_of(r);
}

/// True when rule r's update for a block of shape s may carry a parameter within
/// kUnguardedParameter beyond the float range: its update_bound_of() for the gradients it
/// accepts (max_gradient_of(r, s), at most FLT_MAX) exceeds FLT_MAX − kUnguardedParameter (2.55e38),
/// or the rule makes no claim (NaN: nothing bounds its output; the file comment). A Partition
/// then keeps a copy of the route's state.
template <class R>
bool update_may_overflow_of(const R& r, const BlockShape& s) {
  const double in = std::min(max_gradient_of(r, s), 3.4028234663852886e38);
  const double b = update_bound_of(r, in, s);
  return std::isnan(b) || !(b <= 3.4028234663852886e38 - kUnguardedParameter);
}

/// The gradient limit of the rules whose state holds g² in float (Adam's second moment):
/// 2^63 ≈ 9.2e18. Why: v ← β₂ v + (1 − β₂) g² is a convex combination of earlier g² (and the
/// initial 0), so v ≤ max g² ≤ 2^126 at every step, each product is ≤ 2^126 and their rounded
/// sum < 2^127 < FLT_MAX ≈ 2^128, and |m̂| ≤ 2^63 (an average of the gradients). The quotient
/// m̂/(√v̂ + ε) is at most about 2^63/ε (ScaleByAdam::ratio_bound: below ε = 2.2e-19 its routes
/// keep copies, update_may_overflow). Above this limit, g² itself is not a float: the step is
/// refused (out_of_range), not taken with an infinite v that would freeze the parameter (m/√∞ =
/// 0) for good.
constexpr double kSquaredStateMaxGradient = 9223372036854775808.0;  // 2^63

}  // namespace schatten::optim
