// SPDX-License-Identifier: Apache-2.0
/// \file
/// The Dion family of microsoft/dion. Dion2 (Ahn et al., arXiv 2512.16928; the reference
/// `dion/dion2.py`, which recommends it over its legacy Dion): Muon that orthogonalises only the
/// fraction of the momentum's slices with the largest ℓ₁ norms, and decays only those slices of
/// the momentum (error feedback); NorDion2 / Dion3 on top of it. Dion itself (Ahn et al., arXiv
/// 2504.05295; `dion/dion_reference.py`): the momentum's low-rank orthonormal factor by one
/// amortised power iteration per step, with error feedback. Not in algorithms.md; the sources
/// are the reference code, and the choices where it is silent are marked [P] (docs/optim.md
/// "Dion2" and "Dion").
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <numeric>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "schatten/core/random.hpp"
#include "schatten/core/workspace.hpp"
#include "schatten/kernels/low_rank.hpp"
#include "schatten/kernels/polar.hpp"
#include "schatten/optim/chain.hpp"
#include "schatten/optim/presets.hpp"
#include "schatten/optim/rule.hpp"
#include "schatten/optim/transforms.hpp"

namespace schatten::optim {
namespace detail {
template <class R>
struct is_chain : std::false_type {};
template <class... Rules>
struct is_chain<Chain<Rules...>> : std::true_type {};
}  // namespace detail

namespace device_kernels {
/// Gathers the k slices `picks` (memory of the default execution space, ascending) of the block
/// `from` into the row-major buffer s (k × cols when `along_rows`, rows × k otherwise), and
/// stores them times `decay` in the same slices of m (Dion2Direction::take; m in float or bf16
/// storage, the overloads).
void gather_slices(float* s, const float* from, float* m, index_t rows, index_t cols, bool along_rows,
                   const index_t* picks, index_t k, float decay, Bf16Store how);
void gather_slices(float* s, const float* from, std::uint16_t* m, index_t rows, index_t cols, bool along_rows,
                   const index_t* picks, index_t k, float decay, Bf16Store how);
/// u ← 0, except slice i of u ← slice slot[i] of s where slot[i] ≥ 0 (slot: memory of the default
/// execution space, one entry per slice; s as gather_slices() fills it).
void place_slices(float* u, const float* s, index_t rows, index_t cols, bool along_rows, const index_t* slot,
                  index_t k);
}  // namespace device_kernels

/// Dion2's direction, one rule (its selection, decay and orthogonalisation share the momentum):
///
///   M ← M + G                                  (momentum: a plain sum, no β)
///   S ← the k slices of M with the largest ℓ₁ norms, k = max(1, ⌈f·n⌉); slices are the rows
///       when r ≤ c, else the columns (the shorter side, n = min(r, c) of them); with
///       `slices = Slices::rows` always the rows (NorDion2, whose normalisation is per row)
///   M_S ← ef·M_S                               (error feedback: only the selected slices decay)
///   u ← polar(S) in the selected slices, 0 elsewhere
///
/// Follow it with ScaleByShape (Dion2's `adjust_lr`: unit_rms_norm √(r/c) by default, moonlight
/// 0.2·√max(r, c) for "rms_norm"), AddDecayedWeights and ScaleByLearningRate (dion2(), below).
/// The polar factor is of the k × c (or r × k) submatrix only: a fraction f of Muon's NS flops
/// when the slices are rows of a wide matrix, f² of the Gram's; with f = 1 and ef = β it is
/// Muon with the sum-form momentum B ← βB + G, no Nesterov.
///
/// [P] where the reference is silent or GPU-specific: ℓ₁ norms accumulate in double and are
/// ranked as floats, ties to the lower index (the reference's `topk(sorted=False)` leaves ties
/// unspecified); S is orthogonalised in the input's precision (fp32; the reference casts to bf16)
/// unless `polar.compute` says otherwise; a block's selection is its own (the reference's
/// "global" scope, which a single process and the "local" scope share when nothing is sharded).
/// Cost per step: one read-write of M, one read of M for the norms, the gather and the scatter
/// (O(rc)), a sort of n floats on the host (on the device, n floats read back and the k
/// indices and n slots sent), and the polar factor of S. State: M (r·c floats) and the step
/// count; scratch S, the norms, and the polar workspace.
///
/// `mu_storage` [P] (docs/optim.md "State precision"; microsoft/dion's
/// `DionMixedPrecisionConfig.momentum_dtype`): M in fp32 (default) or bf16, half the state. The
/// arithmetic is float either way: M + G is computed in float from the widened M (in u's memory,
/// the gradient being spent), the ranking and S read that unrounded sum, and each element of M is
/// stored rounded to the nearest bf16 once per step: M + G, or ef·(M + G) in the selected slices.
/// A bf16 M refuses a step (`out_of_range`; the chain restores M) where a slice's ℓ₁ norm of
/// M + G exceeds kBf16Max ≈ 3.3895e38, so that no element can be stored as ∞ (a sum of gradients
/// grows without β, so a gradient limit alone would not do).
///
/// Precheck [P] (rule.hpp): M's entries, and with M in bf16 G's, within entry_bound() (FLT_MAX/2
/// in fp32, kBf16Max/(4·len) in bf16) tell every failure in advance where the polar call cannot
/// fail (precheck_covers: the default Polar Express), so that dion2() and nordion2() chains are
/// prechecked and a partition keeps no copy of M.
struct Dion2Direction {
  static constexpr const char* name = "dion2_direction";
  static constexpr bool may_fail = true;        // the polar kernel may fail (the chain restores M)
  static constexpr bool device_capable = true;  // rule.hpp helpers, the kernels above and polar()
  double fraction = 0.25;
  double ef_decay = 0.95;
  PolarOptions polar = default_polar();
  /// Which slices compete: the shorter side's (Dion2's `select_dim = -2 if rows <= cols`) or
  /// always the rows (NorDion2's `select_dim = -2`, so that a selected slice is a whole neuron).
  enum class Slices { shorter, rows };
  Slices slices = Slices::shorter;
  StateStorage mu_storage = Precision::fp32;  ///< M's storage: fp32 or bf16 (above)

  /// The reference's `polar_express` (dion/polar_express.py): the 5-row modded-nanogpt Polar
  /// Express table, X/(1.02·‖X‖_F + ε) with the optimizer's ε = 1e-8.
  static PolarOptions default_polar() { return newton_schulz_polar(schedules::polar_express_5(), 1e-8); }

  /// Scratch of one state: the norms and the ranking, which the batched form needs for every
  /// member at once, and the polar workspace (visit_workspaces).
  struct Scratch {
    Buffer sums;                       ///< the slices' ℓ₁ norms (n)
    std::vector<float> host_sums;      ///< the norms on the host, for the ranking
    std::vector<index_t> order, slot;  ///< ranking; slot[i] = place of slice i in S, else −1
    std::shared_ptr<Workspace> workspace = std::make_shared<Workspace>();
  };
  /// S (k × c or r × k): it carries nothing from one update to the next, and the batched form
  /// uses it one member at a time (gathered, then copied into the member's block; copied back
  /// and placed), so a partition gives the states of one shape one (visit_shareable_scratch):
  /// GPT-2 small's 48 hidden matrices hold 4 of them instead of 48.
  struct Selected {
    Buffer s;
    /// A ranking's picks, then its slots (Scratch::order, slot), where the device kernels read
    /// them: n, uploaded just before each use (a copy from the host fences first, so that the
    /// previous user has finished); in the state's memory, so that a device step allocates
    /// nothing for them.
    BasicBuffer<index_t> indices;
  };
  struct State : detail::FirstMoment {  // the momentum M, in its storage
    std::int64_t count = 0;
    std::shared_ptr<Scratch> scratch = std::make_shared<Scratch>();
    std::shared_ptr<Selected> selected = std::make_shared<Selected>();
  };

  /// Slices are rows when r ≤ c (the reference's `select_dim = -2 if rows <= cols`), or always
  /// with Slices::rows.
  bool along_rows(index_t rows, index_t cols) const { return slices == Slices::rows || rows <= cols; }
  /// k = max(1, ⌈f·n⌉) of n slices (n ≥ 1), as the reference's int(math.ceil(fraction·n)). f is
  /// clamped to [0, 1] first (NaN to 0), so that init() of an unusable rule, which check()
  /// refuses, still sizes its scratch without an undefined conversion.
  static index_t selected_count(double fraction, index_t n) {
    const double f = std::min(1.0, std::max(0.0, fraction));  // std::max(0.0, NaN) is 0.0
    return std::min(n, std::max<index_t>(1, static_cast<index_t>(std::ceil(f * double(n)))));
  }
  /// The shape of S for an r × c block.
  BlockShape selected_shape(index_t rows, index_t cols) const {
    if (rows == 0 || cols == 0) return {0, 0};
    return along_rows(rows, cols) ? BlockShape{selected_count(fraction, rows), cols}
                                  : BlockShape{rows, selected_count(fraction, cols)};
  }

  State init(const BlockShape& s) const {
    State st;
    detail::init_first_moment(st, static_cast<std::size_t>(s.size()), mu_storage);
    const BlockShape k = selected_shape(s.rows, s.cols);
    const index_t n = along_rows(s.rows, s.cols) ? s.rows : s.cols;
    Scratch& sc = *st.scratch;
    st.selected->s.assign(static_cast<std::size_t>(k.size()), 0.0f);
    sc.sums.assign(static_cast<std::size_t>(n), 0.0f);
    sc.host_sums.assign(static_cast<std::size_t>(n), 0.0f);
    sc.order.resize(static_cast<std::size_t>(n));
    sc.slot.resize(static_cast<std::size_t>(n));
    st.selected->indices.assign(static_cast<std::size_t>(n), index_t(0));
    if (k.size() > 0) sc.workspace->reserve(polar_workspace_bytes(k.rows, k.cols, 1, polar, Precision::fp32));
    return st;
  }

  /// Fills sc.slot from the norms in sc.host_sums: the k largest (ties to the lower index) get
  /// their places 0 … k−1 in ascending slice order, the others −1; returns the picks in
  /// sc.order[0, k). The one ranking of the host and the device paths.
  static void rank(Scratch& sc, index_t k) {
    std::vector<index_t>& order = sc.order;
    std::iota(order.begin(), order.end(), index_t(0));
    const std::vector<float>& v = sc.host_sums;
    std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](index_t a, index_t b) {
      const float x = v[static_cast<std::size_t>(a)], y = v[static_cast<std::size_t>(b)];
      return x > y || (x == y && a < b);
    });
    std::sort(order.begin(), order.begin() + k);
    std::fill(sc.slot.begin(), sc.slot.end(), index_t(-1));
    for (index_t a = 0; a < k; ++a)
      sc.slot[static_cast<std::size_t>(order[static_cast<std::size_t>(a)])] = a;
  }

  /// k, the number of slices kept, for an r × c block.
  index_t kept(index_t rows, index_t cols) const {
    const BlockShape ks = selected_shape(rows, cols);
    return along_rows(rows, cols) ? ks.rows : ks.cols;
  }
  /// True when the state was sized for an r × c block (M in this rule's storage, and S; update()
  /// refuses others).
  bool fits(const State& s, index_t rows, index_t cols) const {
    return detail::first_moment_sized(s, static_cast<std::size_t>(rows * cols), mu_storage) &&
           s.selected->s.size() == static_cast<std::size_t>(selected_shape(rows, cols).size());
  }

  /// One element of a selected slice: returns x, the unrounded M + G, and stores decay·x in M
  /// (rounded once, as `how` says, when M is bf16). The one formula of the host loop and the
  /// device kernel.
  template <class M, class H>
  SCHATTEN_HOST_DEVICE static float take(float x, M& stored, float decay, H how) {
    store_state(stored, decay * x, how);
    return x;
  }

  /// The first half of the selection of a non-empty block: M ← M + G (stored in M's storage; u
  /// ← the unrounded M + G: TraceMomentum's sum form with β = 1, where 1·b and 1·g are exact) and
  /// the slices' ℓ₁ norms of u (into the scratch; asynchronous on a GPU). pick() completes it.
  void accumulate(Block u, State& s) const {
    const Bf16Store how = detail::first_moment_store(s, s.count + 1);
    detail::with_first_moment(
        s, [&](auto* m) { TraceMomentum::apply(u, m, 1.0, false, TraceMomentum::Form::sum, {}, how); });
    slice_norms(u, along_rows(u.rows, u.cols), false, s.scratch->sums.data());  // the ℓ₁ norms
  }
  /// The second half: the norms' ranking (read back to the host: on a GPU this waits for the
  /// kernels queued so far), and S (k × c or r × k, row-major at `sel`, not u's memory) ← the k
  /// selected slices of u (M + G), which decay by ef_decay in M. out_of_range, before the
  /// ranking, when M is bf16 and a norm exceeds kBf16Max (above), or in fp32 when M + G has an
  /// entry that is not finite (one read of the block; only possible where no precheck ran).
  Status pick(Block u, State& s, float* sel) const {
    Scratch& sc = *s.scratch;
    const bool rows = along_rows(u.rows, u.cols);
    const index_t k = kept(u.rows, u.cols);
    const float decay = static_cast<float>(ef_decay);
    sc.sums.copy_to(sc.host_sums.data(), sc.host_sums.size());
    if (mu_storage.bf16()) {
      for (float n : sc.host_sums)
        if (!(n <= kBf16Max)) return Status::out_of_range;  // an element of M would round to ∞
    } else if (!all_finite(MatrixRef<const float>(u))) {
      // M + G overflowed (no precheck ran: set_prechecks(false) or set_copy_all_states(true));
      // before, the infinite M was stored with ok (a fuzzer, 2026-12-07). The chain restores M.
      return Status::out_of_range;
    }
    rank(sc, k);
    const Bf16Store how = detail::first_moment_store(s, s.count + 1);
    detail::with_first_moment(s, [&](auto* m) {
      if (u.memory == MemoryKind::device) {
        BasicBuffer<index_t>& d = s.selected->indices;
        d.copy_from(sc.order.data(), sc.order.size());  // (both sized n at init)
        device_kernels::gather_slices(sel, u.data, m, u.rows, u.cols, rows, d.data(), k, decay, how);
        return;
      }
      with_store(how, [&](auto h) {
        for (index_t a = 0; a < k; ++a) {
          const index_t i = sc.order[static_cast<std::size_t>(a)];
          if (rows) {
            for (index_t j = 0; j < u.cols; ++j)
              sel[a * u.cols + j] = take(u.data[i * u.cols + j], m[i * u.cols + j], decay, h);
          } else {
            for (index_t r = 0; r < u.rows; ++r)
              sel[r * k + a] = take(u.data[r * u.cols + i], m[r * u.cols + i], decay, h);
          }
        }
      });
    });
    return Status::ok;
  }

  /// The largest |g| the rule accepts: FLT_MAX/2, so that M + G stays finite in float while
  /// |M| ≤ FLT_MAX/2 (precheck()). Larger gradients are refused by the partition's scan
  /// (out_of_range).
  double max_gradient() const { return double(std::numeric_limits<float>::max()) / 2.0; }
  /// The bound precheck() [P] holds the entries of M (and, with M in bf16, of G) to, for an
  /// r × c block:
  ///  - fp32 M: FLT_MAX/2, so that |M + G| ≤ FLT_MAX with max_gradient(): the sum, the decayed
  ///    slices and S are finite, and polar() of a finite S is (precheck_covers());
  ///  - bf16 M: kBf16Max/(4·len), len the length of a slice (c when the slices are rows, else
  ///    r): each slice's ℓ₁ norm of M + G is then at most kBf16Max/2, half the bound pick()
  ///    refuses beyond, which leaves the float roundings of the sum and its norm a factor 2.
  ///    For GPT-2 small: 1.1e35 for the 768 × 768 matrices, 2.8e34 for the 768 × 3072 and
  ///    3072 × 768 ones (len 3072).
  /// Conservative: only a diverged run or a corrupt checkpoint holds such entries.
  double entry_bound(index_t rows, index_t cols) const {
    if (!mu_storage.bf16()) return double(std::numeric_limits<float>::max()) / 2.0;
    const index_t len = std::max<index_t>(1, along_rows(rows, cols) ? cols : rows);
    return double(kBf16Max) / (4.0 * double(len));
  }
  /// update()'s failures before it runs, touching nothing (rule.hpp, precheck), for a gradient
  /// that passed the max_gradient() scan: invalid_argument for a state of another shape or
  /// storage; non_finite_input when some entry of M is NaN or Inf (a corrupt checkpoint);
  /// out_of_range when some |M| exceeds entry_bound(), or with M in bf16 some |G| does (M + G
  /// is a plain sum, so the gradient's share of a slice's norm depends on the slice's length,
  /// which max_gradient() cannot know). Where precheck_covers(), ok promises success and a
  /// finite u. Cost: one read of M (with M in bf16, also one of G); on device memory with
  /// `flag`, kernels not waited for (M's writes the flag, G's ORs into it).
  Status precheck(ConstBlock u, const State& s, ConstBlock, float* flag = nullptr) const {
    if (!fits(s, u.rows, u.cols)) return Status::invalid_argument;
    const std::uint32_t bits = magnitude_bits(entry_bound(u.rows, u.cols));
    const Status m = detail::precheck_first_moment(s, u.memory, bits, flag);
    if (!mu_storage.bf16()) return m;
    return detail::worse(m, detail::precheck_values(u, bits, false, flag));
  }
  /// precheck() tells every failure, and u stays finite, when the polar call on S cannot fail on
  /// a finite input (detail::polar_total_on_finite for S's shape on the state's workspace; the
  /// batched form's is the partition's, reserved for the group): the default Polar Express is,
  /// so a partition keeps no copy of M (docs/optim.md "Prechecks instead of copies").
  bool precheck_covers(const State& s, const BlockShape& shape, MemoryKind memory) const {
    return detail::polar_total_on_finite(polar, s.scratch->workspace.get(),
                                         selected_shape(shape.rows, shape.cols), memory);
  }
  /// update_bound (rule.hpp): the polar factor of S in the selected slices and 0 elsewhere, at
  /// most polar_iterate_bound() whatever the input (Orthogonalize::update_bound); +Inf where
  /// that has no bound (the route keeps copies anyway).
  double update_bound(double, const BlockShape&) const {
    return polar.dual_norm_scale ? HUGE_VAL : polar_iterate_bound(polar);
  }

  /// u ← the orthogonalised S (at `sel`, not u's memory) in the selected slices, 0 elsewhere.
  void place(Block u, State& s, const float* sel) const {
    const Scratch& sc = *s.scratch;
    const bool rows = along_rows(u.rows, u.cols);
    const index_t k = kept(u.rows, u.cols);
    if (u.memory == MemoryKind::device) {
      // After the gather that read the picks: polar() fenced, and a copy from the host fences too.
      BasicBuffer<index_t>& d = s.selected->indices;
      d.copy_from(sc.slot.data(), sc.slot.size());
      device_kernels::place_slices(u.data, sel, u.rows, u.cols, rows, d.data(), k);
      return;
    }
    for (index_t i = 0; i < u.rows; ++i)
      for (index_t j = 0; j < u.cols; ++j) {
        const index_t a = sc.slot[static_cast<std::size_t>(rows ? i : j)];
        u.data[i * u.cols + j] = a < 0 ? 0.0f : (rows ? sel[a * u.cols + j] : sel[i * k + a]);
      }
  }

  Status update(Block u, State& s, ConstBlock) const {
    if (!fits(s, u.rows, u.cols)) return Status::invalid_argument;  // a state of another shape
    if (u.empty()) {
      ++s.count;
      return Status::ok;
    }
    Scratch& sc = *s.scratch;
    const BlockShape ks = selected_shape(u.rows, u.cols);
    float* sel = s.selected->s.data();
    accumulate(u, s);
    if (const Status st = pick(u, s, sel); st != Status::ok) return st;  // the chain restores M
    const MatrixRef<float> sm(sel, ks.rows, ks.cols, u.memory);
    const PolarReport r = schatten::polar(MatrixRef<const float>(sm), sm, polar, sc.workspace.get());
    if (r.status != Status::ok) return r.status;  // the chain restores M and u
    place(u, s, sel);
    ++s.count;
    return Status::ok;
  }

  /// Batched form (rule.hpp), for same-shape blocks: each block's selection as in update() (all
  /// the blocks' sums and norms first, so that a GPU reads the norms back after one wait), S_b
  /// gathered into the state's S (Selected: one member at a time, so the states of one shape
  /// may share it) and copied to the first k·c (or r·k) floats of its own block of u (whose
  /// M + G the gather has read), ONE polar() call over the strided batch of the S_b in place,
  /// then each S_b copied back to S and placed (its own ranking, Scratch). The polar
  /// kernel computes each matrix of a batch as it computes one alone, so each block gets
  /// update()'s arithmetic (tested bit for bit); the gain is one kernel launch sequence for the
  /// group (the point on GPUs). Extra cost: two copies of each S_b (k·c floats). Scratch: the
  /// polar workspace of `batch` k × c matrices.
  std::size_t batch_workspace_bytes(const BlockShape& s, index_t batch) const {
    const BlockShape k = selected_shape(s.rows, s.cols);
    return k.size() > 0 ? polar_workspace_bytes(k.rows, k.cols, batch, polar, Precision::fp32) : 0;
  }
  Status update_batch(BatchedMatrixRef<float> u, StateList<State> states, ParamList, Workspace& ws) const {
    for (index_t b = 0; b < states.size; ++b)
      if (!fits(states[b], u.rows, u.cols)) return Status::invalid_argument;
    const BlockShape ks = selected_shape(u.rows, u.cols);
    if (ks.size() > 0) {
      for (index_t b = 0; b < states.size; ++b)  // every block's kernels queued before the first read-back
        accumulate(block_of(u, b), states[b]);
      for (index_t b = 0; b < states.size; ++b) {
        const Block ub = block_of(u, b);
        float* sel = states[b].selected->s.data();
        if (const Status st = pick(ub, states[b], sel); st != Status::ok) return st;  // restored
        copy_block(MatrixRef<float>(ub.data, ks.rows, ks.cols, u.memory),
                   MatrixRef<const float>(sel, ks.rows, ks.cols, u.memory));
      }
      const auto sb = BatchedMatrixRef<float>::strided(u.data, u.batch, ks.rows, ks.cols, u.batch_stride,
                                                       ks.cols, 1, u.memory);
      const PolarReport r = schatten::polar(BatchedMatrixRef<const float>(sb), sb, polar, &ws);
      if (r.status != Status::ok) return r.status;  // the partition restores the states
      for (index_t b = 0; b < states.size; ++b) {
        const Block ub = block_of(u, b);
        const MatrixRef<float> s(states[b].selected->s.data(), ks.rows, ks.cols, u.memory);
        copy_block(s, MatrixRef<const float>(ub.data, ks.rows, ks.cols, u.memory));
        place(ub, states[b], s.data);
      }
    }
    for (index_t b = 0; b < states.size; ++b)
      ++states[b].count;
    return Status::ok;
  }

  template <class F>
  friend void visit_workspaces(F& f, State& s) {
    f(s.scratch->workspace);
  }
  template <class V>
  friend void visit_fields(V& v, State& s) {
    v("count", s.count);
    detail::visit_first_moment(v, s, "m");
  }
  /// S (Selected, above); the norms stay per state.
  template <class F>
  friend void visit_shareable_scratch(F& f, State& s) {
    f(s.selected);
  }
  template <class V>
  friend void visit_scratch(V& v, State& s) {
    v("selected", s.selected->s);
    v("sums", s.scratch->sums);
    v("indices", s.selected->indices);
  }
  /// fraction ∈ (0, 1]; ef_decay ∈ [0, 1] (1: no error feedback, the momentum only grows);
  /// usable polar options.
  const char* check() const noexcept {
    if (!(std::isfinite(fraction) && fraction > 0.0 && fraction <= 1.0))
      return "dion2_direction: fraction must be in (0, 1]";
    if (!(std::isfinite(ef_decay) && ef_decay >= 0.0 && ef_decay <= 1.0))
      return "dion2_direction: ef_decay must be in [0, 1]";
    if (slices != Slices::shorter && slices != Slices::rows) return "dion2_direction: unknown slices";
    if (!hyper::state_storage(mu_storage))
      return "dion2_direction: mu_storage must be fp32 or bf16 (stochastic rounding needs bf16)";
    return check_polar_options(polar);
  }
  /// The slices and the storage only when they are not the defaults, so that Dion2's signatures
  /// stay as they were.
  std::string config() const {
    Signature sig(name);
    sig.add("fraction", fraction).add("ef_decay", ef_decay).add("polar", polar_config(polar));
    if (slices == Slices::rows) sig.add("slices", "rows");
    return detail::add_first_moment_storage(sig, mu_storage).str();
  }
};

/// Dion2 (microsoft/dion `Dion2`): Dion2Direction, the shape scale (√(r/c), the reference's
/// `adjust_lr="spectral_norm"`), decoupled decay with the unadjusted lr, −lr. Defaults (the
/// reference's constructor): lr 0.01, fraction 0.25, ef_decay 0.95, wd 0.01, Polar Express 5 steps
/// (its `use_polar_express=True`). `mu_storage`: M in fp32 or bf16 (Dion2Direction; docs/optim.md
/// "State precision").
struct Dion2Options {
  Schedule lr = Schedule::constant(0.01);
  double fraction = 0.25;
  double ef_decay = 0.95;
  PolarOptions polar = Dion2Direction::default_polar();
  ScaleByShape shape{ScaleByShape::Rule::unit_rms_norm};  ///< "rms_norm": moonlight; None: none
  double weight_decay = 0.01;
  StateStorage mu_storage = Precision::fp32;
};
inline auto dion2(const Dion2Options& o = {}) {
  return chain(Dion2Direction{o.fraction, o.ef_decay, o.polar, Dion2Direction::Slices::shorter, o.mu_storage},
               ScaleByShape{o.shape}, AddDecayedWeights{o.weight_decay}, ScaleByLearningRate{o.lr});
}

/// NorDion2, which microsoft/dion also exports as Dion3, "the third-generation Dion update"
/// (dion/nordion2.py): Dion2's selection and error feedback applied to the NorMuon update.
///   M ← M + G;  S ← the k rows of M with the largest ℓ₁ norms (always rows:
///   Slices::rows), which decay by ef_decay in M;  O ← polar(S);
///   per selected row i: ν_i ← ν_i + (1 − β₂)(mean_j O_ij² − ν_i),  O_i ← O_i/(√ν_i + ε);
///   O ← O·‖O_before‖_F/‖O‖_F;  W ← (1 − lr·wd)·W − lr·√(r/c)·O on the selected rows.
/// That is Dion2Direction{Slices::rows}, then NormalizeNeurons with hold_zero_rows (the rows
/// that were not selected are zero and keep their moment: the reference updates ν only at the
/// selected indices), ScaleByShape, AddDecayedWeights and ScaleByLearningRate. Defaults (the
/// reference's constructor): lr 0.01, fraction 0.25, mu (ef_decay) 0.95, muon_beta2 0.95,
/// wd 0.01, epsilon 1e-8 (the Newton–Schulz normalisation's: nordion2.py passes it to the
/// orthogonalisation only), Polar Express 5 steps, adjust_lr "spectral_norm" (√(r/c)); the
/// neurons' ε is the reference's fixed 1e-8 (normuon.py, _normuon_normalization_core,
/// kNeuronEps). [P] where the reference differs by rounding: the norm-restoring factor is
/// ‖O_before‖/(‖O‖ + ε) (the reference clamps ‖O‖ at 1e-8 instead), and ν is float (the
/// reference stores it in the parameter's dtype). [P] hold_zero_rows tests a row for zero, not
/// for selection: a selected row of M + G that is exactly zero (fewer nonzero rows than k) keeps
/// its ν, as on the reference's global-selection path (nordion2_post_orthogonalize_masked, which
/// masks on nonzero rows), where its default local path decays it. `mu_storage`: M in fp32 or
/// bf16, as dion2()'s (ν stays fp32).
struct NorDion2Options {
  Schedule lr = Schedule::constant(0.01);
  double fraction = 0.25;
  double ef_decay = 0.95;
  double beta2 = 0.95;  ///< the reference's muon_beta2
  /// The reference's epsilon: the Newton–Schulz normalisation's ε, X/(1.02‖X‖_F + ε); it sets
  /// polar.schedule.normalization.eps (before 2026-12-07 it was the neurons' ε instead).
  double eps = 1e-8;
  /// The neurons' ε, fixed in the reference: O_i/(√ν_i + 1e-8).
  static constexpr double kNeuronEps = 1e-8;
  PolarOptions polar = Dion2Direction::default_polar();
  ScaleByShape shape{ScaleByShape::Rule::unit_rms_norm};  ///< "rms_norm": moonlight; None: none
  double weight_decay = 0.01;
  StateStorage mu_storage = Precision::fp32;
};
inline auto nordion2(const NorDion2Options& o = {}) {
  PolarOptions polar = o.polar;
  polar.schedule.normalization.eps = o.eps;
  return chain(Dion2Direction{o.fraction, o.ef_decay, polar, Dion2Direction::Slices::rows, o.mu_storage},
               NormalizeNeurons{o.beta2, NorDion2Options::kNeuronEps, true}, ScaleByShape{o.shape},
               AddDecayedWeights{o.weight_decay}, ScaleByLearningRate{o.lr});
}
/// Dion3: microsoft/dion's other name for NorDion2 (an alias there too: `Dion3 is NorDion2`).
using Dion3Options = NorDion2Options;
inline auto dion3(const Dion3Options& o = {}) { return nordion2(o); }

/// Dion's direction (Ahn et al., arXiv 2504.05295, Algorithm 1; microsoft/dion's `Dion`, the
/// reference dion/dion_reference.py on one process): the momentum's rank-k orthonormal factor,
/// refined by one amortised power iteration per step, with error feedback:
///
///   M ← M + G                                   (momentum: a plain sum, no β)
///   P ← orth(B Q);  R ← Bᵀ P                    (t times; B = M, or Mᵀ when r < c)
///   M ← M − (1 − μ) P Rᵀ                        (error feedback: M keeps what P missed)
///   Q ← R with unit columns (‖·‖₂ + ε);  u ← P Qᵀ (as r × c)
///
/// kernels/low_rank.hpp computes all but the sum. k = min(S, m·⌈f·S/m⌉) for S = min(r, c), the
/// rank fraction f and the multiple m (the reference's rank_fraction and rank_multiple_of). Q
/// starts Gaussian (the reference's randn) from schatten::Rng(seed), the same for every block of
/// one shape ([P]: the reference draws each from torch's global generator); its scale does not
/// matter (P is orthonormalised). Follow it with ScaleByShape (√(r/c), the reference's
/// `fan_out/fan_in` scale), AddDecayedWeights and ScaleByLearningRate (dion(), below).
///
/// With k = S and t = 1, P Pᵀ B = B (when B Q has full rank): M ← μM + G, the sum-form momentum
/// of Muon without Nesterov; the direction P Qᵀ is P times (Bᵀ P with unit columns)ᵀ, not the
/// polar factor of M. With k < S the update has rank ≤ k, and what it leaves out stays in M for
/// later steps. Cost per step: one pass over M and G for the sum (with a bf16 M two more over
/// r·c: ‖M + G‖_F and the store of M′), then the kernel's (2t + 2) GEMMs of r·c·k and t QRs of
/// max(r, c) × k. State: M (r·c floats, or bf16), Q (k·S floats) and the step count; scratch:
/// the kernel's workspace. [P] where the reference is silent or GPU-specific: the QR is a
/// Cholesky QR2 on the execution space where P is well conditioned, else a Householder QR in
/// double on the host (the reference's default is its randomized Cholesky QR); the column norms
/// are double; and the columns of B Q at float's rounding floor are
/// dropped for the step instead of becoming unit-norm noise in the update (kernels/low_rank.hpp:
/// a rank-deficient momentum, e.g. a rank-1 gradient, gives an update of its own rank).
///
/// `mu_storage` [P] (docs/optim.md "State precision"; microsoft/dion's
/// `DionMixedPrecisionConfig.momentum_dtype`): M in fp32 (default) or bf16, half its memory (Q has
/// its own storage, `q_storage`, below). The arithmetic is float either way. With bf16, M + G is
/// widened into u's memory (the gradient being spent: TraceMomentum's sum form with β = 1, as
/// Dion2's), the kernel runs on that float array and writes U over it, and M′ = M + G − (1 − μ)
/// P Rᵀ is stored rounded from float once it is final (LowRankStepOptions::store_momentum): the
/// update is the fp32 rule's from the same stored M, bit for bit, and no extra r × c array is
/// needed. A bf16 M refuses a step (`out_of_range`; the chain restores M) where ‖M + G‖_F >
/// kBf16Max ≈ 3.3895e38: the feedback removes a projection of B, so |M′_ij| ≤ ‖M′‖_F ≤ ‖M + G‖_F
/// (to P's orthonormality, O(k·u), far inside half a bf16 unit) and no element can be stored as ∞
/// (a sum of gradients, so a gradient limit alone would not do). With replicas each rounds its own
/// M_i; a replica whose sum is refused must still reach the kernel's collectives, so it poisons its
/// widened sum with a NaN instead, which the first average brings to every replica
/// (kernels/low_rank.hpp, "Replicas"), and every replica reports out_of_range (verdict()); a
/// distributed checkpoint rounds the replicas' mean M to bf16 (distributed::save_checkpoint).
///
/// `q_storage` [P] (microsoft/dion's `DionMixedPrecisionConfig.Q_dtype`): Q in fp32 (default) or
/// bf16, half its k·S floats. The kernel works on a float Q either way: with bf16 the stored Q
/// is widened (exactly) into a float scratch that the states of one shape share (k·S floats, one
/// per member of a batch), the kernel updates that, and the new Q, whose columns have unit norm,
/// is rounded into the state only once the step has succeeded (to nearest, or stochastically
/// with `StateStorage::bf16_stochastic()`): a failed step leaves it untouched. Each step's update
/// is then the fp32 rule's from the same stored Q, bit for bit; Q's rounding (2⁻⁹ relative per
/// entry) only changes the next step's warm start of the power iteration, whose P is
/// orthonormalised again. With replicas every replica rounds the same Q′ alike.
///
/// Precheck [P] (rule.hpp): in one process, M's and G's entries within entry_bound() (so that
/// ‖M + G‖_F ≤ frobenius_bound()) and Q's within 2¹⁰ tell every failure of the step in advance,
/// so that a partition keeps no copy of M and Q (docs/optim.md "Prechecks instead of copies").
/// With replicas the partition keeps its copies.
struct DionDirection {
  static constexpr const char* name = "dion_direction";
  static constexpr bool may_fail = true;        // the kernel may fail (the chain restores M and Q)
  static constexpr int staged_arrays = 3;       // M, Q and U (chain.hpp, rule_staged_arrays)
  static constexpr bool device_capable = true;  // rule.hpp helpers and low_rank_power_step()
  double rank_fraction = 1.0;
  index_t rank_multiple_of = 1;
  double mu = 0.95;
  int power_iterations = 1;
  double eps = 1e-8;
  std::uint64_t seed = 0;
  bool cholesky_qr = true;  ///< try the kernel's Cholesky QR2 first (false: always Householder)
  StateStorage mu_storage = Precision::fp32;  ///< M's storage: fp32 or bf16 (above)
  StateStorage q_storage = Precision::fp32;   ///< Q's storage: fp32 or bf16 (above)
  /// Empty: one process. Set (with_replicas(), by distributed::Layout::unreduced): the kernel's
  /// compressed data-parallel step over replicas that each sum their own, un-reduced gradients
  /// into their own M (kernels/low_rank.hpp, "Replicas"). Not part of config(): the replicas'
  /// mean momentum is the one-process state (a checkpoint holds that mean).
  Replicas replicas;

  struct State : detail::FirstMoment {  // the momentum M, in its storage
    std::int64_t count = 0;
    Buffer q;                ///< Qᵀ (k × S row-major: row j is Q's column j) in fp32 storage, else empty
    Bf16Buffer q_bf16;       ///< Qᵀ in bf16 storage, else empty
    StateStorage q_storage;  ///< which of the two holds Q (init(); not a field)
    /// With a bf16 Q, the float Qᵀ the kernel works on: k·S floats per member of the largest
    /// batch (one; one per replica when the replicas split their QRs). Carries nothing from one
    /// step to the next, so the states of one shape share it (visit_shareable_scratch): they step
    /// one after the other, and a batch uses the first state's, one slot per member.
    std::shared_ptr<Buffer> q_widened = std::make_shared<Buffer>();
    std::shared_ptr<Workspace> workspace = std::make_shared<Workspace>();
    /// update_batch()'s arrays of the members' M, Q and U, when this state is its batch's first:
    /// reserved at init() for a batch of one member per replica (DistributedPartition's groups),
    /// so that a step allocates nothing before the kernel's collectives. Shared with the state's
    /// copies (a partition's backups), which then copy no array.
    std::shared_ptr<std::vector<MatrixRef<float>>> members =
        std::make_shared<std::vector<MatrixRef<float>>>();
  };

  /// k = min(S, m·⌈f·S/m⌉) (≥ 1 for S ≥ 1). f is clamped to [0, 1] (NaN to 0) and m to ≥ 1
  /// first, so that init() of an unusable rule, which check() refuses, still sizes its state.
  static index_t rank_of(double fraction, index_t multiple, index_t s) {
    if (s <= 0) return 0;
    const double f = std::min(1.0, std::max(0.0, fraction));  // std::max(0.0, NaN) is 0.0
    const double mult = double(std::max<index_t>(1, multiple));
    const double k = mult * std::ceil(f * double(s) / mult);
    return std::max<index_t>(1, k >= double(s) ? s : static_cast<index_t>(k));
  }
  index_t rank(index_t rows, index_t cols) const {
    return rank_of(rank_fraction, rank_multiple_of, std::min(rows, cols));
  }

  State init(const BlockShape& s) const {
    State st;
    detail::init_first_moment(st, static_cast<std::size_t>(s.size()), mu_storage);
    const index_t short_side = std::min(s.rows, s.cols), k = rank(s.rows, s.cols);
    const auto nq = static_cast<std::size_t>(k * short_side);
    Rng rng(seed);
    st.q_storage = q_storage;
    if (q_storage.bf16()) {  // the same Gaussian start, rounded to nearest
      st.q_bf16 = Bf16Buffer(nq, std::uint16_t(0));
      for (std::uint16_t& h : st.q_bf16)
        h = bf16_round(static_cast<float>(rng.normal()));
      st.q_widened->assign(nq * static_cast<std::size_t>(replicas.split() ? replicas.size : 1), 0.0f);
    } else {
      st.q.assign(nq, 0.0f);
      for (float& x : st.q)
        x = static_cast<float>(rng.normal());
    }
    if (k > 0)  // (update() calls the kernel with `replicas.average` only)
      st.workspace->reserve(low_rank_workspace_bytes(s.rows, s.cols, k, bool(replicas)), 1,
                            low_rank_host_bytes(s.rows, s.cols, k, 1, Replicas(replicas.average)));
    if (replicas.split()) st.members->reserve(3 * static_cast<std::size_t>(replicas.size));
    return st;
  }
  /// True when the state was sized for an r × c block (M and Q in this rule's storages, and Q's
  /// float scratch for one member when Q is bf16; update() refuses others).
  bool fits(const State& s, index_t rows, index_t cols) const {
    const auto nq = static_cast<std::size_t>(rank(rows, cols) * std::min(rows, cols));
    return detail::first_moment_sized(s, static_cast<std::size_t>(rows * cols), mu_storage) &&
           s.q_storage == q_storage && s.q.size() + s.q_bf16.size() == nq &&
           (q_storage.bf16() ? s.q_bf16.size() == nq && s.q_widened->size() >= nq : s.q.size() == nq);
  }
  /// The float Qᵀ (k × S) the kernel works on for member `slot` of a call: the state's own Q in
  /// fp32 storage; with bf16, slot `slot` of `widened` (s's scratch, or a batch's first state's)
  /// holding s's Q widened (exact). Changes no state.
  MatrixRef<float> kernel_q(State& s, Buffer& widened, index_t slot, index_t k, index_t short_side,
                            MemoryKind memory) const {
    if (!q_storage.bf16()) return MatrixRef<float>(s.q.data(), k, short_side, memory);
    const index_t n = k * short_side;
    float* x = widened.data() + slot * n;
    if (n > 0 && memory == MemoryKind::device) {
      device_kernels::widen_bf16(x, s.q_bf16.data(), n);
    } else {
      const std::uint16_t* h = s.q_bf16.data();
      for (index_t e = 0; e < n; ++e)
        x[e] = bf16_to_float(h[e]);
    }
    return MatrixRef<float>(x, k, short_side, memory);
  }
  /// After a successful step: a bf16 Q ← the kernel's Q′ (`q`, kernel_q's) rounded as q_storage
  /// says (TraceMomentum's sum form with β = 0: b = 0·b + x = x exactly, the stored b being
  /// finite). Nothing to do in fp32 storage, where the kernel wrote the state's Q itself.
  void store_q(State& s, const MatrixRef<float>& q) const {
    if (!q_storage.bf16() || q.empty()) return;
    TraceMomentum::apply(Block(q), s.q_bf16.data(), 0.0, false, TraceMomentum::Form::sum, {},
                         Bf16Store::of(q_storage, s.count + 1));
  }

  /// What accumulate() saw of a step's sums M + G (bf16 M only).
  struct Sums {
    bool refused = false;     ///< one beyond kBf16Max, poisoned (replicas)
    bool non_finite = false;  ///< one not finite in float
  };
  /// M ← M + G for a non-empty block: u ← the unrounded M + G and M stores it (TraceMomentum's sum
  /// form with β = 1: 1·b and 1·g are exact). Returns the kernel's M in `m`: M itself when fp32,
  /// its widening in u when bf16 (mu_storage, above). When M is bf16 and ‖M + G‖_F > kBf16Max:
  /// out_of_range in one process (the chain restores M); with replicas, `sums.refused` is set and
  /// u[0] becomes NaN, so that the kernel's first average refuses the step on every replica. A
  /// non-finite M + G goes on to the kernel, which refuses it (non_finite_input).
  Status accumulate(Block u, State& s, Block& m, Sums& sums) const {
    const Bf16Store how = detail::first_moment_store(s, s.count + 1);
    detail::with_first_moment(s, [&](auto* stored) {
      TraceMomentum::apply(u, stored, 1.0, false, TraceMomentum::Form::sum, {}, how);
    });
    if (!s.storage.bf16()) {
      m = block_like(s.mu, u);
      return Status::ok;
    }
    m = u;
    const double n2 = squared_norm(u);
    sums.non_finite = sums.non_finite || !std::isfinite(n2);
    if (!(std::isfinite(n2) && n2 > double(kBf16Max) * double(kBf16Max))) return Status::ok;
    if (!replicas) return Status::out_of_range;
    sums.refused = true;
    fill(Block(u.data, 1, 1, u.memory), std::numeric_limits<float>::quiet_NaN());
    return Status::ok;
  }
  /// The step's status from the kernel's and the sums': out_of_range when a sum was refused (the
  /// kernel refused too, on the NaN). With replicas and a bf16 M, a non_finite_input while this
  /// replica's own sums were finite came through the average from a replica whose sum bf16 (or
  /// float) could not hold: out_of_range too, so that the replicas agree with the one that refused
  /// (NaN and Inf gradients never get here: the distributed step refuses them before the rule).
  Status verdict(Status kernel, const Sums& sums) const {
    if (sums.refused) return Status::out_of_range;
    if (kernel == Status::non_finite_input && replicas && mu_storage.bf16() && !sums.non_finite)
      return Status::out_of_range;
    return kernel;
  }
  /// The kernel's options for the blocks whose states `state_of(b)` gives; with a bf16 M, the hook
  /// that stores block b's final M′ rounded into its state (TraceMomentum's sum form with β = 0:
  /// b = 0·b + x = x exactly, the stored b being finite; the array keeps its values).
  template <class StateOf>
  LowRankStepOptions kernel_options(Replicas r, StateOf state_of) const {
    LowRankStepOptions o{power_iterations, 1.0 - mu, eps, cholesky_qr, std::move(r), {}};
    if (mu_storage.bf16())
      o.store_momentum = [state_of](index_t b, const MatrixRef<float>& m) {
        State& s = state_of(b);
        const Bf16Store how = detail::first_moment_store(s, s.count + 1);
        TraceMomentum::apply(Block(m), s.mu_bf16.data(), 0.0, false, TraceMomentum::Form::sum, {}, how);
      };
    return o;
  }

  Status update(Block u, State& s, ConstBlock) const {
    if (!fits(s, u.rows, u.cols)) return Status::invalid_argument;  // a state of another shape
    if (!u.empty()) {
      Block m = u;
      Sums sums;
      if (const Status st = accumulate(u, s, m, sums); st != Status::ok) return st;  // the chain restores M
      const index_t k = rank(u.rows, u.cols);
      const MatrixRef<float> q = kernel_q(s, *s.q_widened, 0, k, std::min(u.rows, u.cols), u.memory);
      // Alone, every replica takes the QR (two collectives; splitting one QR gains nothing).
      const Status st = low_rank_power_step(
          m, q, u, kernel_options(Replicas(replicas.average), [&s](index_t) -> State& { return s; }),
          s.workspace.get());
      if (const Status v = verdict(st, sums); v != Status::ok) return v;  // the chain restores M
      store_q(s, q);
    }
    ++s.count;
    return Status::ok;
  }

  /// The bound on Q's entries that precheck() [P] holds (2¹⁰): Q starts Gaussian and has unit
  /// columns after every step, so a column of Q has norm at most √S·2¹⁰.
  static constexpr double kQBound = 0x1p10;
  /// The bound precheck() [P] holds ‖B‖_F = ‖M + G‖_F to (through entry_bound()), for S =
  /// min(r, c): F = FLT_MAX/(4·√S·kQBound) with one power iteration, and at most √(FLT_MAX/4)
  /// (9.2e18) with more. Then every float the kernel forms is finite: P = B X has
  /// |P_ij| ≤ ‖B‖_F·‖x_j‖ (Cauchy–Schwarz, partial sums included), x_j a column of Q (norm
  /// ≤ √S·kQBound: |P| ≤ FLT_MAX/4) or, from the second iteration on, of the last R (‖R_j‖ ≤
  /// ‖B‖_F: |P| ≤ F² ≤ FLT_MAX/4); R = Bᵀ P̄ has |R_ij| ≤ ‖B‖_F (P̄ orthonormal); the
  /// feedback M − (1 − μ) P Rᵀ moves M by at most ‖B‖_F; U = P Qᵀ has unit-norm factors. A Gram
  /// of P that overflows in the Cholesky QR only sends the kernel to its Householder QR, in
  /// double, which does not fail. With a bf16 M, F < kBf16Max, so accumulate()'s refusal
  /// cannot occur either. Conservative: P overflows first near ‖B‖_F·‖x_j‖ = FLT_MAX, and
  /// ‖x_j‖ is √S (the Gaussian start) or 1 (later), so F lies a factor 4·2¹⁰ (start) to
  /// 4·2¹⁰·√S below that; the factor buys entry tests instead of a reduction over Q's columns.
  double frobenius_bound(index_t short_side) const {
    const double flt_max = double(std::numeric_limits<float>::max());
    const double one = flt_max / (4.0 * std::sqrt(double(std::max<index_t>(1, short_side))) * kQBound);
    return power_iterations > 1 ? std::min(one, std::sqrt(flt_max / 4.0)) : one;
  }
  /// The bound on the entries of M and of G: ‖M + G‖_F ≤ √(r·c)·2·bound = frobenius_bound(S).
  /// For GPT-2 small with one power iteration: 2.0e30 (768 × 768), 9.8e29 (768 × 3072).
  double entry_bound(index_t rows, index_t cols) const {
    return frobenius_bound(std::min(rows, cols)) /
           (2.0 * std::sqrt(double(std::max<index_t>(1, rows * cols))));
  }
  /// update_bound (rule.hpp): u = P Qᵀ with P's columns orthonormal (a row of P has norm at most
  /// 1) and Q's k ≤ S = min(r, c) columns of unit norm (a row of Q has norm at most √k), so
  /// |u_ij| ≤ √S by Cauchy–Schwarz, whatever the input; twice that for the roundings of P's
  /// orthonormality (O(k·2⁻²⁴)) and of Q's norms.
  double update_bound(double, const BlockShape& s) const {
    return 2.0 * std::sqrt(double(std::max<index_t>(1, std::min(s.rows, s.cols))));
  }
  /// update()'s failures before it runs, touching nothing (rule.hpp, precheck): invalid_argument
  /// for a state of another shape or storage; non_finite_input for a NaN or Inf in M or Q (a
  /// corrupt checkpoint); out_of_range for an entry of M or G beyond entry_bound() or of Q
  /// beyond kQBound (the gradient's bound depends on the shape, which the gradient scan cannot
  /// know). Where precheck_covers(), ok promises success and a finite u. Conservative: only a
  /// diverged run or a corrupt checkpoint holds such entries. Cost: one read of M, G and Q; on
  /// device memory with `flag`, three kernels not waited for (M's writes the flag, the others
  /// OR into it).
  Status precheck(ConstBlock u, const State& s, ConstBlock, float* flag = nullptr) const {
    if (!fits(s, u.rows, u.cols)) return Status::invalid_argument;
    const std::uint32_t bits = magnitude_bits(entry_bound(u.rows, u.cols)), q_bits = magnitude_bits(kQBound);
    const Status m = detail::precheck_first_moment(s, u.memory, bits, flag);
    if (u.empty()) return m;
    const MatrixRef<const float> q(s.q.data(), 1, static_cast<index_t>(s.q.size()), s.q.memory());
    const Status qs = s.q_storage.bf16() ? detail::precheck_values_bf16(s.q_bf16, q_bits, flag)
                                         : detail::precheck_values(q, q_bits, false, flag);
    return detail::worse(m, detail::worse(qs, detail::precheck_values(u, bits, false, flag)));
  }
  /// precheck() tells every failure, and u stays finite, in one process (with replicas a step
  /// depends on the other replicas' sums, which no precheck here reads: their partition keeps
  /// its copies, as distributed::DistributedPartition requires), with the kernel's workspace and
  /// host scratch reserved (init(): low_rank_workspace_bytes, low_rank_host_bytes, so that the
  /// step allocates nothing on the host, its Householder QR included) and no staging copies to
  /// allocate: the kernels reach the memory directly (memory::kernels_access), or the workspace
  /// holds copies for M, Q and U, one block each (Workspace::staging_covers; a partition on host
  /// memory reserves them on a GPU build, staged_arrays). A partition then keeps no copy of M
  /// and Q.
  bool precheck_covers(const State& s, const BlockShape& shape, MemoryKind memory) const {
    const index_t k = rank(shape.rows, shape.cols);
    const auto block_bytes = static_cast<std::size_t>(shape.size()) * sizeof(float);
    return !replicas && s.workspace != nullptr &&
           (memory::kernels_access(memory) || s.workspace->staging_covers(staged_arrays, block_bytes)) &&
           (k == 0 ||
            (s.workspace->capacity() >= low_rank_workspace_bytes(shape.rows, shape.cols, k, false) &&
             s.workspace->host_capacity() >= low_rank_host_bytes(shape.rows, shape.cols, k)));
  }

  /// The batched form (optim::batch_enabled) only when the replicas split their QRs
  /// (Replicas::split()): in one process, or when every replica takes every QR, a batch would
  /// only add the partition's copies.
  bool batch_enabled() const { return replicas.split(); }
  /// The kernel's workspace for `batch` members (low_rank_batch_workspace_bytes).
  std::size_t batch_workspace_bytes(const BlockShape& s, index_t batch) const {
    const index_t k = rank(s.rows, s.cols);
    return k > 0 ? low_rank_batch_workspace_bytes(s.rows, s.cols, k, batch, bool(replicas)) : 0;
  }
  /// The kernel's host scratch for `batch` members (low_rank_host_bytes).
  std::size_t batch_host_bytes(const BlockShape& s, index_t batch) const {
    const index_t k = rank(s.rows, s.cols);
    return k > 0 ? low_rank_host_bytes(s.rows, s.cols, k, batch, replicas) : 0;
  }
  /// update() of each block in one low_rank_power_step_batch() call: M_b ← M_b + G_b for every
  /// block, then the kernel (the replicas' collectives once per stage for the batch, each
  /// replica orthonormalising its share of the panels). Each block gets update()'s arithmetic,
  /// but for the averages' sums, which a reduce-scatter may add in another order than update()'s
  /// all-reduce (MPI leaves the order to the implementation; the step of the mean to rounding
  /// either way).
  Status update_batch(BatchedMatrixRef<float> u, StateList<State> states, ParamList, Workspace& ws) const {
    for (index_t b = 0; b < states.size; ++b)
      if (!fits(states[b], u.rows, u.cols)) return Status::invalid_argument;
    const index_t k = rank(u.rows, u.cols), s = std::min(u.rows, u.cols);
    Buffer& widened = *states[0].q_widened;  // one slot per member (bf16 Q)
    if (q_storage.bf16() && widened.size() < static_cast<std::size_t>(states.size * k * s))
      return Status::invalid_argument;  // a batch larger than init() sized the scratch for
    if (u.rows > 0 && u.cols > 0) {
      const auto g = static_cast<std::size_t>(states.size);
      std::vector<MatrixRef<float>>& refs = *states[0].members;  // M, then Q, then U: g each
      refs.assign(3 * g, MatrixRef<float>());  // (within its reserved capacity for g ≤ replicas)
      Sums sums;
      for (index_t b = 0; b < states.size; ++b) {
        const Block ub = block_of(u, b);
        Block m = ub;
        if (const Status st = accumulate(ub, states[b], m, sums); st != Status::ok) return st;
        const auto i = static_cast<std::size_t>(b);
        refs[i] = m;
        refs[g + i] = kernel_q(states[b], widened, b, k, s, u.memory);
        refs[2 * g + i] = ub;
      }
      const Status st = low_rank_power_step_batch(
          refs.data(), refs.data() + g, refs.data() + 2 * g, states.size,
          kernel_options(replicas, [&states](index_t b) -> State& { return states[b]; }), &ws);
      if (const Status v = verdict(st, sums); v != Status::ok) return v;  // the partition restores the states
      for (index_t b = 0; b < states.size; ++b)
        store_q(states[b], refs[g + static_cast<std::size_t>(b)]);
    }
    for (index_t b = 0; b < states.size; ++b)
      ++states[b].count;
    return Status::ok;
  }

  template <class F>
  friend void visit_workspaces(F& f, State& s) {
    f(s.workspace);
  }
  template <class F>
  friend void visit_shareable_scratch(F& f, State& s) {
    f(s.q_widened);
  }
  template <class V>
  friend void visit_scratch(V& v, State& s) {
    v("q_widened", *s.q_widened);
  }
  /// "q" is Q in its storage: checkpoints hold it as floats either way (io/checkpoint.hpp).
  template <class V>
  friend void visit_fields(V& v, State& s) {
    v("count", s.count);
    detail::visit_first_moment(v, s, "m");
    if (s.q_storage.bf16())
      v("q", s.q_bf16);
    else
      v("q", s.q);
  }
  /// rank_fraction ∈ (0, 1]; rank_multiple_of ≥ 1; mu ∈ [0, 1] (1: no error feedback);
  /// power_iterations ∈ [1, 100]; eps > 0 (the kernel's ranges).
  const char* check() const noexcept {
    if (!(std::isfinite(rank_fraction) && rank_fraction > 0.0 && rank_fraction <= 1.0))
      return "dion_direction: rank_fraction must be in (0, 1]";
    if (rank_multiple_of < 1) return "dion_direction: rank_multiple_of must be at least 1";
    if (!(std::isfinite(mu) && mu >= 0.0 && mu <= 1.0)) return "dion_direction: mu must be in [0, 1]";
    if (power_iterations < 1 || power_iterations > 100)
      return "dion_direction: power_iterations must be in [1, 100]";
    if (!hyper::positive(eps)) return "dion_direction: eps must be positive and finite";
    if (!hyper::state_storage(mu_storage))
      return "dion_direction: mu_storage must be fp32 or bf16 (stochastic rounding needs bf16)";
    if (!hyper::state_storage(q_storage))
      return "dion_direction: q_storage must be fp32 or bf16 (stochastic rounding needs bf16)";
    return nullptr;
  }
  /// The QR's choice and the storage only when they are not the defaults (the QRs agree to
  /// rounding), so that Dion's signatures stay as they were.
  std::string config() const {
    Signature sig(name);
    sig.add("rank_fraction", rank_fraction)
        .add("rank_multiple_of", std::int64_t(rank_multiple_of))
        .add("mu", mu)
        .add("power_iterations", std::int64_t(power_iterations))
        .add("eps", eps)
        .add("seed", std::int64_t(seed));
    if (!cholesky_qr) sig.add("cholesky_qr", false);
    detail::add_first_moment_storage(sig, mu_storage);
    return detail::add_first_moment_storage(sig, q_storage, "q_storage", "q_rounding").str();
  }
};

/// Rules that can step as replicas of a data-parallel step over un-reduced gradients
/// (distributed::Layout::unreduced): a rule with a `replicas` hook (DionDirection), or a chain
/// whose first rule has one — the only link that sees the replica's own gradient; the links
/// after it see the update, the same on every replica.
template <class R, class = void>
struct takes_replicas : std::false_type {};
template <class R>
struct takes_replicas<R, std::void_t<decltype(std::declval<R&>().replicas = Replicas{})>> : std::true_type {};
template <class First, class... Rest>
struct takes_replicas<Chain<First, Rest...>, void> : takes_replicas<First> {};

/// A copy of `rule` whose replicas' collectives (its own, or its first link's) are `replicas`
/// (a ReplicaAverage converts); a rule that does not take replicas comes back unchanged.
template <class R>
R with_replicas(R rule, const Replicas& replicas) {
  if constexpr (takes_replicas<R>::value) {
    if constexpr (detail::is_chain<R>::value) {
      auto links = rule.rules();
      std::get<0>(links) = with_replicas(std::get<0>(links), replicas);
      return std::make_from_tuple<R>(std::move(links));
    } else {
      rule.replicas = replicas;
    }
  }
  return rule;
}

/// Dion (microsoft/dion `Dion`, dion/dion_reference.py): DionDirection, the shape scale √(r/c)
/// (the reference's `(fan_out/fan_in)^½`), decoupled decay with the unadjusted lr, −lr:
///   W ← (1 − lr·wd)·W − lr·√(r/c)·P Qᵀ.
/// Defaults (the reference's constructor): lr 0.01, mu 0.95, rank_fraction 1, rank_multiple_of 1,
/// power_iters 1, wd 0.01, epsilon 1e-8. Route only matrices to it (the reference's scalar and
/// vector parameters go to AdamW or Lion: partition.hpp).
struct DionOptions {
  Schedule lr = Schedule::constant(0.01);
  double mu = 0.95;
  double rank_fraction = 1.0;
  index_t rank_multiple_of = 1;
  int power_iterations = 1;
  double eps = 1e-8;
  std::uint64_t seed = 0;   ///< of the initial Q
  bool cholesky_qr = true;  ///< the kernel's Cholesky QR2 first, else always the Householder QR
  ScaleByShape shape{ScaleByShape::Rule::unit_rms_norm};
  double weight_decay = 0.01;
  StateStorage mu_storage = Precision::fp32;  ///< M in fp32 or bf16 (DionDirection)
  StateStorage q_storage = Precision::fp32;   ///< Q in fp32 or bf16 (DionDirection)
};
inline auto dion(const DionOptions& o = {}) {
  return chain(DionDirection{o.rank_fraction, o.rank_multiple_of, o.mu, o.power_iterations, o.eps, o.seed,
                             o.cholesky_qr, o.mu_storage, o.q_storage, Replicas{}},
               ScaleByShape{o.shape}, AddDecayedWeights{o.weight_decay}, ScaleByLearningRate{o.lr});
}

}  // namespace schatten::optim
