// SPDX-License-Identifier: Apache-2.0
/// \file
/// QK-clip (Kimi K2's MuonClip, anchors.md c.11): after an optimizer step, the query and key
/// projections of every attention head whose largest pre-softmax logit exceeded a threshold τ
/// are scaled down so that, on the same inputs, that logit would be τ. MuonClip is
/// `muon()` (presets.hpp) with Moonlight's scale and weight decay, followed by QkClip::apply after
/// every step (docs/optim.md "QK-clip").
///
/// The rule (Kimi K2 report, arXiv 2507.20534, §2.1 and Algorithm 1; docs/optim.md records the
/// choices marked [P]):
///  * Head h reports S_h = max over the batch of q_i·k_j/√d in the forward pass of the step
///    (before the update: Algorithm 1 clips the updated weights with the factor of the logits
///    the forward pass saw). The caller's attention computes it (with flash attention, the
///    kernel's running maximum); under data parallelism it is all-reduced with MAX first, so
///    that every replica clips alike.
///  * A key head g serves the query heads of its group (grouped-query attention: query head h
///    uses key head h / (heads / kv_heads); multi-head attention is the group of one). The group
///    is clipped by η_g = min(1, τ / max_{h ∈ g} S_h) [P: Megatron-Core's per-group rule
///    (SelfAttention.clip_qk), which never enlarges a weight; the quiet heads of a firing group
///    are clipped with it].
///  * The group's query slices are multiplied by η_g^α and its key slice by η_g^(1−α) (α = 0.5,
///    the report's balance), so every logit of the group is multiplied by η_g exactly; under
///    multi-head latent attention the per-head rotary query slice carries η_g whole and the
///    shared rotary key is not listed (it has no per-head parameters).
///  * Biases of the projections are scaled like their rows [P]: a logit is bilinear in (Wx + b),
///    so scaling W alone would not scale it by η.
///  * S_h ≤ τ (zero or negative included) leaves the group unchanged; NaN or ±Inf is refused
///    (a logit that overflowed says nothing about the factor, and η = 0 would erase the head).
///
/// Row-sharded parameters (FSDP by dim 0, distributed::DistributedPartition's row_sharded
/// layout): set_rows() tells the clip which rows of each parameter this process holds;
/// flat-sharded ones (ZeRO, Megatron's distributed optimizer: flat_sharded), set_elements()
/// which run of its elements; column-sharded ones (tensor parallelism of (in, out) kernels:
/// column_sharded), set_columns() which columns of every row. Every process calls apply() with
/// the same (all-reduced) logits and scales the part of each slice it holds. The factors depend
/// on the logits only, so the shards together equal one process's clip bit for bit, with no
/// communication.
///
/// Cost: one pass over the slices of clipped groups only (none when no head exceeds τ); on the
/// device one kernel per clipped slice. Accuracy: each slice element is multiplied once by a
/// float factor computed in double (η^α rounded to float), so the clipped maximum logit is τ to
/// within a few float roundings of the logit itself. Stateless: nothing to checkpoint.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <limits>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "schatten/optim/partition.hpp"

namespace schatten::optim {

/// Which power of its group's factor η a slice is multiplied by.
enum class QkRole {
  query,         ///< η^α: a query head's projection (or MLA's q_C, the head's non-rotary query)
  key,           ///< η^(1−α): a key head's projection (MLA's k_C, inside the kv up-projection)
  query_rotary,  ///< η: MLA's per-head rotary query q_R, whose key (k_R) is shared by all heads
};

/// The slices of one parameter that belong to the heads of a layer: for head k (query heads for
/// query roles, key heads for `key`), rows (axis 0) or columns (axis 1) starts[k] …
/// starts[k] + width − 1 of the parameter's flattened matrix (optim::flatten: a rank-1 bias is
/// 1 × n, so its slices are columns).
struct QkBlock {
  std::string param;            ///< the parameter's ParamSpec::name, exactly
  QkRole role = QkRole::query;  ///< which power of η
  int axis = 0;                 ///< 0: rows (torch.nn.Linear (out, in)); 1: columns (Conv1D, flax, biases)
  index_t width = 0;            ///< rows or columns per head
  std::vector<index_t> starts;  ///< first row (column) of each head's slice: heads or kv_heads entries
};

/// One attention layer: its query heads (entries of the max-logit vector), its key heads and the
/// slices to scale. Build it with the helpers below or by hand (any layout of heads).
struct QkLayer {
  std::string name;      ///< for messages
  index_t heads = 0;     ///< query heads: this layer's entries in the max-logit vector
  index_t kv_heads = 0;  ///< key heads, dividing heads (heads: multi-head; 1: multi-query)
  std::vector<QkBlock> blocks;
};

/// `count` starts, the first at `offset`, `stride` apart.
inline std::vector<index_t> head_starts(index_t count, index_t offset, index_t stride) {
  std::vector<index_t> s(static_cast<std::size_t>(count > 0 ? count : 0));
  for (std::size_t k = 0; k < s.size(); ++k)
    s[k] = offset + static_cast<index_t>(k) * stride;
  return s;
}

/// Separate query and key projections: q_proj (heads·head_dim outputs) and k_proj (kv_heads·
/// head_dim outputs), heads contiguous along the output axis: rows of a torch.nn.Linear weight
/// (axis 0, the default), columns of a flax/JAX (in, out) kernel (axis 1).
/// gated: attention with an output gate computed by the query projection, as Qwen3-Next and
/// Qwen3.5 store it: q_proj has 2·heads·head_dim outputs, per head its query then its gate
/// (head_dim each). The gate does not enter the logits and is not scaled.
inline QkLayer qk_separate(std::string name, std::string query, std::string key, index_t heads,
                           index_t kv_heads, index_t head_dim, int axis = 0, bool gated = false) {
  QkLayer l{std::move(name), heads, kv_heads, {}};
  l.blocks.push_back(
      {std::move(query), QkRole::query, axis, head_dim, head_starts(heads, 0, (gated ? 2 : 1) * head_dim)});
  l.blocks.push_back({std::move(key), QkRole::key, axis, head_dim, head_starts(kv_heads, 0, head_dim)});
  return l;
}

/// One fused projection laid out [Q | K | V] along its output axis: Q heads·head_dim, then K and
/// V kv_heads·head_dim each (GPT-2's c_attn (d, 3d) Conv1D weight: axis 1; a (3d, d) nn.Linear
/// weight such as Phi-3's qkv_proj: axis 0).
inline QkLayer qk_fused(std::string name, std::string qkv, index_t heads, index_t kv_heads, index_t head_dim,
                        int axis = 0) {
  QkLayer l{std::move(name), heads, kv_heads, {}};
  l.blocks.push_back({qkv, QkRole::query, axis, head_dim, head_starts(heads, 0, head_dim)});
  l.blocks.push_back(
      {std::move(qkv), QkRole::key, axis, head_dim, head_starts(kv_heads, heads * head_dim, head_dim)});
  return l;
}

/// Megatron-Core's fused linear_qkv: rows grouped by key head, each group
/// [its heads/kv_heads query heads | its key head | its value head], head_dim rows each.
/// gated: attention_output_gate, each group [query heads | as many gate heads | key | value];
/// the gate rows are not scaled (split_qkv_grouped() in split.hpp cuts the same layouts).
inline QkLayer qk_grouped(std::string name, std::string qkv, index_t heads, index_t kv_heads,
                          index_t head_dim, bool gated = false) {
  QkLayer l{std::move(name), heads, kv_heads, {}};
  const index_t per = kv_heads > 0 ? heads / kv_heads : 0;
  const index_t q_rows = (gated ? 2 : 1) * per * head_dim;  // the group's query (and gate) heads
  const index_t group_rows = q_rows + 2 * head_dim;
  std::vector<index_t> q;
  for (index_t g = 0; g < kv_heads; ++g)
    for (index_t i = 0; i < per; ++i)
      q.push_back(g * group_rows + i * head_dim);
  l.blocks.push_back({qkv, QkRole::query, 0, head_dim, std::move(q)});
  l.blocks.push_back({std::move(qkv), QkRole::key, 0, head_dim, head_starts(kv_heads, q_rows, group_rows)});
  return l;
}

/// Multi-head latent attention (DeepSeek-V2/V3, Kimi K2) as the report clips it: the query
/// (up-)projection's rows per head are [q_C (nope_dim) | q_R (rope_dim)], the kv up-projection's
/// rows per head [k_C (nope_dim) | v (v_dim)]; q_C and k_C get √η (α = 0.5), q_R gets η, the
/// shared rotary key and the values are not touched. Every head is its own group.
inline QkLayer qk_mla(std::string name, std::string q_up, std::string kv_up, index_t heads, index_t nope_dim,
                      index_t rope_dim, index_t v_dim) {
  QkLayer l{std::move(name), heads, heads, {}};
  l.blocks.push_back({q_up, QkRole::query, 0, nope_dim, head_starts(heads, 0, nope_dim + rope_dim)});
  l.blocks.push_back({std::move(q_up), QkRole::query_rotary, 0, rope_dim,
                      head_starts(heads, nope_dim, nope_dim + rope_dim)});
  l.blocks.push_back({std::move(kv_up), QkRole::key, 0, nope_dim, head_starts(heads, 0, nope_dim + v_dim)});
  return l;
}

/// The layer with every slice of `weight` repeated on `bias` (the weight's output-axis bias: a
/// rank-1 tensor, so its slices are columns): biased projections (GPT-2's c_attn, Qwen2's q/k
/// projections; call once per biased weight). When no block of the layer is on `weight` (a
/// misspelt name), it adds an empty block on `bias` (width 0, no starts), which QkClip::init
/// refuses naming both, rather than leaving the bias unscaled without a word.
inline QkLayer with_bias(QkLayer layer, const std::string& weight, const std::string& bias) {
  const std::size_t n = layer.blocks.size();
  for (std::size_t b = 0; b < n; ++b)
    if (layer.blocks[b].param == weight) {
      QkBlock twin = layer.blocks[b];
      twin.param = bias;
      twin.axis = 1;
      layer.blocks.push_back(std::move(twin));
    }
  if (layer.blocks.size() == n) layer.blocks.push_back({bias, QkRole::query, 1, 0, {}});
  return layer;
}

/// τ and α.
struct QkClipOptions {
  double threshold = 100.0;  ///< τ: Kimi K2's value (report §2.1); finite, > 0
  double balance = 0.5;      ///< α: the query's share of η (the key gets 1 − α); in [0, 1]
};

/// Outcome of QkClip::apply.
struct QkClipReport {
  Status status = Status::ok;
  const char* message = "";       ///< valid until the next call on the QkClip
  std::ptrdiff_t bad_param = -1;  ///< a refused pointer's parameter index
  std::ptrdiff_t bad_head = -1;   ///< a refused logit's index in the max-logit vector
  double max_logit = -std::numeric_limits<double>::infinity();  ///< max_h S_h (what trainers log)
  index_t clipped_heads = 0;  ///< query heads whose logits were scaled (η < 1)
  double min_factor = 1.0;    ///< the smallest η applied
  explicit operator bool() const noexcept { return status == Status::ok; }
};

/// QK-clip over the caller's parameter arrays (file comment for the rule). Build it from the
/// layers and options, init() it against the parameter list the optimizer steps (names and
/// shapes: a Partition's or SplitLayout's params(), so that fused tensors are addressed whole),
/// then call apply() after each optimizer step with that step's max logits.
class QkClip {
 public:
  QkClip() = default;
  explicit QkClip(std::vector<QkLayer> layers, QkClipOptions options = {})
      : layers_(std::move(layers)), options_(options) {}

  /// Checks the options and every layer against `params` and resolves the slices: each block's
  /// parameter exists, its axis is 0 or 1, width ≥ 1, one start per head (query roles) or key
  /// head (`key`), every slice inside the matrix; every layer has heads ≥ 1, kv_heads dividing
  /// them, a query (or rotary query) block and a key block; no element belongs to two slices
  /// (it would be scaled twice) and a parameter is sliced along one axis only. Where every
  /// block of a layer sits on a matrix (rank 2) or a bias (rank 0 or 1), a head's query slices
  /// on matrices add up to the width of its key slices (q·k needs one width; the rotary query
  /// is not counted), and a role's bias slices, where it has any, to that of its matrix slices;
  /// a layer with a parameter of rank 3 or more (several features per row) is not checked
  /// so. invalid_argument naming the layer otherwise, out_of_memory when the host heap runs out
  /// (a std::bad_alloc from the tables is caught); either way the QkClip is then not ready.
  /// `memory`: where apply()'s parameter pointers live (device: Kokkos::DefaultExecutionSpace's
  /// memory).
  StepReport init(const std::vector<ParamSpec>& params, MemoryKind memory = MemoryKind::host) {
    try {
      return init_unguarded(params, memory);
    } catch (const std::bad_alloc&) {
      constexpr const char* kRanOut = "qk_clip: init: host memory ran out";
      ready_ = false;  // what was built stays allocated until the next init() or the destructor
      slices_.clear();
      offsets_.clear();
      heads_ = 0;
      try {
        message_ = kRanOut;
      } catch (const std::bad_alloc&) {
        message_.clear();  // message() then stays empty; the report still says why
      }
      return refusal(kRanOut, -1, Status::out_of_memory);
    }
  }

 private:
  StepReport init_unguarded(const std::vector<ParamSpec>& params, MemoryKind memory) {
    ready_ = false;
    message_.clear();
    slices_.clear();
    offsets_.clear();
    specs_ = params;
    memory_ = memory;
    heads_ = 0;
    if (!(std::isfinite(options_.threshold) && options_.threshold > 0.0))
      return refuse("qk_clip: the threshold must be finite and > 0");
    if (!(options_.balance >= 0.0 && options_.balance <= 1.0))
      return refuse("qk_clip: the balance must be in [0, 1]");
    if (layers_.empty()) return refuse("qk_clip: no layers");
    std::vector<int> axis_of(params.size(), -1);
    for (std::size_t li = 0; li < layers_.size(); ++li) {
      const QkLayer& l = layers_[li];
      const std::string where = "qk_clip: layer '" + l.name + "'";
      if (l.heads < 1 || l.kv_heads < 1 || l.heads % l.kv_heads != 0)
        return refuse(where + ": kv_heads (" + std::to_string(l.kv_heads) +
                      ") must be >= 1 and divide heads (" + std::to_string(l.heads) + ")");
      bool has_query = false, has_key = false;
      // Per head, the summed widths of the query and key slices on matrices of rank 2 (rows or
      // columns are then output features) and on biases (rank 1); `features` false when a block
      // sits on a parameter of rank 3 or more, whose rows hold several features.
      index_t weight_width[2] = {0, 0}, bias_width[2] = {0, 0};
      bool features = true;
      for (const QkBlock& b : l.blocks) {
        const std::string blk = where + ", block on '" + b.param + "'";
        if (b.width == 0 && b.starts.empty())  // with_bias() found no block on the weight
          return refuse(blk +
                        ": with_bias() found no block of this layer on the weight named for it "
                        "(a misspelt name?)");
        std::size_t p = 0;
        while (p < params.size() && params[p].name != b.param)
          ++p;
        if (p == params.size()) return refuse(blk + ": no parameter has that name");
        if (b.axis != 0 && b.axis != 1) return refuse(blk + ": the axis must be 0 (rows) or 1 (columns)");
        if (axis_of[p] >= 0 && axis_of[p] != b.axis)
          return refuse(blk + ": the parameter is sliced along both axes");
        axis_of[p] = b.axis;
        if (b.width < 1) return refuse(blk + ": the width must be >= 1");
        const index_t owners = b.role == QkRole::key ? l.kv_heads : l.heads;
        if (static_cast<index_t>(b.starts.size()) != owners)
          return refuse(blk + ": " + std::to_string(b.starts.size()) + " starts for " +
                        std::to_string(owners) + (b.role == QkRole::key ? " key heads" : " query heads"));
        const BlockShape m = flatten(params[p].shape);
        const index_t side = b.axis == 0 ? m.rows : m.cols;
        for (std::size_t k = 0; k < b.starts.size(); ++k) {
          if (b.starts[k] < 0 || b.starts[k] > side - b.width)
            return refuse(blk + ": head " + std::to_string(k) + "'s slice " + std::to_string(b.starts[k]) +
                          "+" + std::to_string(b.width) + " leaves its " + std::to_string(side) +
                          (b.axis == 0 ? " rows" : " columns"));
          Slice s;
          s.param = p;
          s.axis = b.axis;
          s.start = b.starts[k];
          s.width = b.width;
          s.layer = li;
          s.group = b.role == QkRole::key ? static_cast<index_t>(k)
                                          : static_cast<index_t>(k) / (l.heads / l.kv_heads);
          s.role = b.role;
          slices_.push_back(s);
        }
        has_query = has_query || b.role != QkRole::key;
        has_key = has_key || b.role == QkRole::key;
        if (b.role == QkRole::query_rotary) continue;  // its key is shared and not listed
        const int k = b.role == QkRole::key ? 1 : 0;
        const std::size_t rank = params[p].shape.size();
        features = features && rank <= 2;
        (rank == 2 ? weight_width : bias_width)[k] += b.width;
      }
      if (!has_query || !has_key) return refuse(where + ": needs a query block and a key block");
      // A logit q·k needs one width: a layout whose query heads are wider than its key heads
      // (or a bias sliced otherwise than its weight) would scale a part of each head only, and
      // clip to another threshold than τ (found by an audit, 2026-12-06). Rank-0 and rank-1
      // parameters count as biases; a role's biases may be absent (Whisper's k_proj has none).
      if (features) {
        if (weight_width[0] != weight_width[1])
          return refuse(where + ": its query slices are " + std::to_string(weight_width[0]) +
                        " wide per head and its key slices " + std::to_string(weight_width[1]) +
                        " (q·k needs one width)");
        for (int k = 0; k < 2; ++k)
          if (bias_width[k] != 0 && bias_width[k] != weight_width[k])
            return refuse(where + ": its " + (k ? "key" : "query") + " bias slices are " +
                          std::to_string(bias_width[k]) + " wide per head and its weight slices " +
                          std::to_string(weight_width[k]));
      }
      offsets_.push_back(heads_);
      heads_ += l.heads;
    }
    // Overlaps: sorted by (parameter, start), a slice must end before the next one begins.
    std::vector<std::size_t> order(slices_.size());
    for (std::size_t k = 0; k < order.size(); ++k)
      order[k] = k;
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
      return std::make_pair(slices_[a].param, slices_[a].start) <
             std::make_pair(slices_[b].param, slices_[b].start);
    });
    for (std::size_t k = 1; k < order.size(); ++k) {
      const Slice &x = slices_[order[k - 1]], &y = slices_[order[k]];
      if (x.param == y.param && y.start < x.start + x.width)
        return refuse("qk_clip: parameter '" + params[x.param].name + "' has overlapping slices (layers '" +
                      layers_[x.layer].name + "' and '" + layers_[y.layer].name + "')");
    }
    factors_.assign(static_cast<std::size_t>(heads_), 1.0);
    slice_factor_.assign(slices_.size(), 1.0f);
    runs_.clear();
    bands_.clear();
    for (const ParamSpec& p : params) {
      runs_.emplace_back(0, flatten(p.shape).size());
      bands_.emplace_back(0, flatten(p.shape).cols);
    }
    group_factor_.clear();
    for (const QkLayer& l : layers_)
      group_factor_.emplace_back(static_cast<std::size_t>(l.kv_heads), 1.0);
    ready_ = true;
    return StepReport{};
  }

 public:
  /// The rows [first, second) of each parameter's flattened matrix that this process holds
  /// (row-sharded parameters; after init(), which holds every row). apply()'s params[i] then
  /// points to row `first` of parameter i (row-major, all columns) and only the held part of
  /// each slice is scaled; a pointer may be null when its range misses every slice. With
  /// distributed::DistributedPartition d: {d.row_range(i).begin, d.row_range(i).end}.
  /// invalid_argument (nothing changed) before init(), for a count other than init()'s
  /// parameters, a range that is not 0 ≤ first ≤ second ≤ rows, or a part of the rows of a
  /// parameter that set_columns() gave a part of its columns. No host allocation, refused or not
  /// (as apply()).
  StepReport set_rows(const std::vector<std::pair<index_t, index_t>>& rows) { return hold(rows, Held::rows); }

  /// The run of elements [first, second) of each parameter's flattened row-major matrix that
  /// this process holds (flat-sharded parameters; after init(), which holds every element).
  /// apply()'s params[i] then points to element `first` of parameter i, and the part of each
  /// slice inside the run is scaled — for a column slice up to three blocks: the end of the
  /// run's first row, its whole rows, the start of its last row (for_each_band_block). A
  /// pointer may be null when its run misses every slice. With
  /// distributed::DistributedPartition d: {d.element_range(i).begin, d.element_range(i).end}
  /// (also right for its row-sharded and replicated parameters, and all elements for its
  /// column-sharded ones, which set_columns() then cuts). invalid_argument (nothing changed) as
  /// set_rows, for a run that is not 0 ≤ first ≤ second ≤ rows · cols.
  StepReport set_elements(const std::vector<std::pair<index_t, index_t>>& runs) {
    return hold(runs, Held::elements);
  }

  /// The columns [first, second) of each parameter's flattened matrix that this process holds,
  /// of every row (column-sharded parameters: an (in, out) kernel such as GPT-2's Conv1D c_attn
  /// sharded along its output columns; after init(), which holds every column). apply()'s params[i]
  /// then points to this process's rows × (second − first) array of parameter i, row-major with
  /// leading dimension second − first, and the part of each slice inside those columns is
  /// scaled (a column slice: its columns there; a row slice: the held part of each of its
  /// rows). With distributed::DistributedPartition d: {d.column_range(i).begin,
  /// d.column_range(i).end} (all columns for its other layouts). A parameter is held by a part
  /// of its rows or elements or by a part of its columns, not both. invalid_argument (nothing
  /// changed) as set_rows, for a range that is not 0 ≤ first ≤ second ≤ cols.
  StepReport set_columns(const std::vector<std::pair<index_t, index_t>>& columns) {
    return hold(columns, Held::columns);
  }

  /// Clips after an optimizer step. `params`: one pointer per parameter given to init(), in
  /// init()'s memory, row-major in its flattened shape, or its held rows after set_rows() or run
  /// after set_elements() (null allowed for parameters no slice touches). `max_logits`: host
  /// array of heads() values, the layers' query heads in order (S_h as the file comment defines
  /// it). All or nothing: a wrong
  /// count, a null pointer, a NaN/±Inf logit (invalid_argument / non_finite_input, naming the
  /// head) or a factor η^p below the smallest normal float (out_of_range: τ tiny against S) is
  /// refused before anything is scaled. On success factors() holds each query head's η. No host
  /// allocation, refused or not (the messages are composed in a fixed buffer, a layer's name cut
  /// at 256 characters), so nothing is thrown even on an exhausted heap.
  QkClipReport apply(const std::vector<float*>& params, const float* max_logits, std::size_t count) {
    QkClipReport r;
    if (!ready_) return refuse_apply(r, "qk_clip: apply before a successful init()");
    if (params.size() != specs_.size())
      return refuse_apply(r, "qk_clip: one pointer per parameter given to init()");
    for (const Slice& s : slices_)
      if (params[s.param] == nullptr && touches(s)) {
        r.bad_param = static_cast<std::ptrdiff_t>(s.param);
        return refuse_apply(r, "qk_clip: null pointer for a clipped parameter");
      }
    if (count != static_cast<std::size_t>(heads_) || (count > 0 && max_logits == nullptr)) {
      std::snprintf(apply_message_.data(), apply_message_.size(),
                    "qk_clip: %zu max logits for %lld query heads", count, static_cast<long long>(heads_));
      return refuse_apply(r, apply_message_.data());
    }
    for (std::size_t li = 0; li < layers_.size(); ++li)
      for (index_t h = 0; h < layers_[li].heads; ++h) {
        const index_t i = offsets_[li] + h;
        if (!std::isfinite(max_logits[i])) {
          r.bad_head = static_cast<std::ptrdiff_t>(i);
          std::snprintf(apply_message_.data(), apply_message_.size(),
                        "qk_clip: layer '%.256s', head %lld: the max logit is not finite",
                        layers_[li].name.c_str(), static_cast<long long>(h));
          return refuse_apply(r, apply_message_.data(), Status::non_finite_input);
        }
      }
    // η per group: τ over the group's largest logit when that exceeds τ.
    const double tau = options_.threshold;
    for (std::size_t li = 0; li < layers_.size(); ++li) {
      const QkLayer& l = layers_[li];
      const index_t per = l.heads / l.kv_heads;
      for (index_t g = 0; g < l.kv_heads; ++g) {
        double s = -std::numeric_limits<double>::infinity();
        for (index_t h = g * per; h < (g + 1) * per; ++h)
          s = std::max(s, static_cast<double>(max_logits[offsets_[li] + h]));
        group_factor_[li][static_cast<std::size_t>(g)] = s > tau ? tau / s : 1.0;
      }
    }
    // Each slice's float factor η^p; one that is not a normal float (τ tiny against S) would
    // erase or denormalise the slice: refused before anything is scaled.
    for (std::size_t k = 0; k < slices_.size(); ++k) {
      const Slice& s = slices_[k];
      const double eta = group_factor_[s.layer][static_cast<std::size_t>(s.group)];
      const double power = s.role == QkRole::query ? options_.balance
                           : s.role == QkRole::key ? 1.0 - options_.balance
                                                   : 1.0;
      slice_factor_[k] = eta < 1.0 ? static_cast<float>(std::pow(eta, power)) : 1.0f;
      if (!(slice_factor_[k] >= std::numeric_limits<float>::min())) {
        const index_t head = s.group * (layers_[s.layer].heads / layers_[s.layer].kv_heads);
        r.bad_head = static_cast<std::ptrdiff_t>(offsets_[s.layer] + head);
        std::snprintf(
            apply_message_.data(), apply_message_.size(),
            "qk_clip: layer '%.256s', head %lld: the clip factor underflows float (the threshold is "
            "tiny against the max logit)",
            layers_[s.layer].name.c_str(), static_cast<long long>(head));
        return refuse_apply(r, apply_message_.data(), Status::out_of_range);
      }
    }
    for (std::size_t li = 0; li < layers_.size(); ++li) {
      const QkLayer& l = layers_[li];
      for (index_t h = 0; h < l.heads; ++h) {
        const double eta = group_factor_[li][static_cast<std::size_t>(h / (l.heads / l.kv_heads))];
        factors_[static_cast<std::size_t>(offsets_[li] + h)] = eta;
        r.max_logit = std::max(r.max_logit, static_cast<double>(max_logits[offsets_[li] + h]));
        if (eta < 1.0) ++r.clipped_heads;
        r.min_factor = std::min(r.min_factor, eta);
      }
    }
    for (std::size_t k = 0; k < slices_.size(); ++k) {
      if (slice_factor_[k] == 1.0f) continue;
      const Slice& s = slices_[k];
      for_each_held_block(s, [&](index_t at, index_t rows, index_t width, index_t ld) {
        scale_block(MatrixRef<float>::row_major(params[s.param] + at, rows, width, ld, memory_),
                    slice_factor_[k]);
      });
    }
    if (memory_ == MemoryKind::device) device_kernels::fence();
    return r;
  }
  QkClipReport apply(const std::vector<float*>& params, const std::vector<float>& max_logits) {
    return apply(params, max_logits.data(), max_logits.size());
  }

  /// Σ heads over the layers: the length of the max-logit vector (0 before init()).
  index_t heads() const { return heads_; }
  /// η of each query head at the last successful apply() (1: not clipped).
  const std::vector<double>& factors() const { return factors_; }
  const std::vector<QkLayer>& layers() const { return layers_; }
  const QkClipOptions& options() const { return options_; }
  /// Empty when init() succeeded; else what init() refused.
  const std::string& message() const { return message_; }

 private:
  struct Slice {
    std::size_t param = 0;
    int axis = 0;
    index_t start = 0, width = 0;
    std::size_t layer = 0;
    index_t group = 0;  ///< the key head whose factor applies
    QkRole role = QkRole::query;
  };
  /// Calls f(at, rows, width, ld) for each nonempty block of slice s inside what this process
  /// holds: `rows` rows of `width` elements at stride ld, the first at element `at` of the
  /// process's array. Inside a run (for_each_band_block) a row slice is one contiguous block, as
  /// one row, and a column slice meets the run in at most three; inside a band of columns, a
  /// slice is one block (its rows × the band, or every row × its columns in the band).
  template <class F>
  void for_each_held_block(const Slice& s, F&& f) const {
    // (Not structured bindings: a lambda below captures these, which C++17 does not allow.)
    const index_t begin = runs_[s.param].first, end = runs_[s.param].second;
    const index_t c0 = bands_[s.param].first, c1 = bands_[s.param].second;
    const BlockShape m = flatten(specs_[s.param].shape);
    if (c1 - c0 == m.cols) {  // every column: a run of the row-major matrix
      for_each_band_block(
          m.cols, begin, end, s.axis, s.start, s.width,
          [&](index_t at, index_t rows, index_t w) { f(at - begin, rows, w, rows == 1 ? w : m.cols); });
      return;
    }
    const index_t ld = c1 - c0;  // every row, columns [c0, c1)
    if (s.axis == 0) {
      if (ld > 0 && s.width > 0) f(s.start * ld, index_t(1), s.width * ld, s.width * ld);
      return;
    }
    const index_t lo = std::max(s.start, c0), hi = std::min(s.start + s.width, c1);
    if (hi > lo && m.rows > 0) f(lo - c0, m.rows, hi - lo, ld);
  }
  /// What set_rows, set_elements and set_columns give.
  enum class Held { rows, elements, columns };
  /// The one check and store of the three: see set_rows.
  StepReport hold(const std::vector<std::pair<index_t, index_t>>& ranges, Held kind) {
    static constexpr const char* kName[] = {"set_rows", "set_elements", "set_columns"};
    static constexpr const char* kUnit[] = {"rows", "elements", "columns"};
    const auto k = static_cast<std::size_t>(kind);
    char* const msg = hold_message_.data();
    const std::size_t room = hold_message_.size();
    if (!ready_) {
      std::snprintf(msg, room, "qk_clip: %s before a successful init()", kName[k]);
      return refusal(msg, -1);
    }
    if (ranges.size() != specs_.size()) {
      std::snprintf(msg, room, "qk_clip: %s needs one range per parameter", kName[k]);
      return refusal(msg, -1);
    }
    for (std::size_t i = 0; i < ranges.size(); ++i) {
      const BlockShape m = flatten(specs_[i].shape);
      const index_t total = kind == Held::rows ? m.rows : kind == Held::elements ? m.size() : m.cols;
      const auto [first, second] = ranges[i];
      if (first < 0 || first > second || second > total) {
        std::snprintf(msg, room,
                      "qk_clip: %s: the range of '%.256s' is not 0 <= first <= second <= its %lld %s",
                      kName[k], specs_[i].name.c_str(), static_cast<long long>(total), kUnit[k]);
        return refusal(msg, static_cast<std::ptrdiff_t>(i));
      }
      const bool part = second - first < total;
      const bool other_part = kind == Held::columns ? runs_[i].second - runs_[i].first < m.size()
                                                    : bands_[i].second - bands_[i].first < m.cols;
      if (part && other_part) {
        std::snprintf(
            msg, room,
            "qk_clip: %s: '%.256s' would be held by a part of its rows or elements and a part of its "
            "columns",
            kName[k], specs_[i].name.c_str());
        return refusal(msg, static_cast<std::ptrdiff_t>(i));
      }
    }
    for (std::size_t i = 0; i < ranges.size(); ++i) {
      const index_t unit = kind == Held::rows ? flatten(specs_[i].shape).cols : 1;
      (kind == Held::columns ? bands_ : runs_)[i] = {ranges[i].first * unit, ranges[i].second * unit};
    }
    return StepReport{};
  }
  /// Whether this process holds any element of slice s.
  bool touches(const Slice& s) const {
    bool any = false;
    for_each_held_block(s, [&](index_t, index_t, index_t, index_t) { any = true; });
    return any;
  }
  StepReport refuse(std::string what) {
    message_ = std::move(what);
    slices_.clear();
    offsets_.clear();
    heads_ = 0;
    return refusal(message_.c_str(), -1);
  }
  /// r refused with `what` (a static string or apply_message_'s).
  QkClipReport& refuse_apply(QkClipReport& r, const char* what, Status status = Status::invalid_argument) {
    r.status = status;
    r.message = what;
    r.max_logit = -std::numeric_limits<double>::infinity();
    r.clipped_heads = 0;
    r.min_factor = 1.0;
    return r;
  }

  std::vector<QkLayer> layers_;
  QkClipOptions options_{};
  std::vector<ParamSpec> specs_;
  std::vector<Slice> slices_;
  std::vector<index_t> offsets_;                   ///< per layer: its first entry in the max-logit vector
  std::vector<std::vector<double>> group_factor_;  ///< per layer and key head: η of the last apply
  std::vector<float> slice_factor_;                ///< per slice: float(η^p) of the last apply
  std::vector<double> factors_;
  std::vector<std::pair<index_t, index_t>>
      runs_;  ///< per parameter: the elements held (set_rows, set_elements)
  std::vector<std::pair<index_t, index_t>> bands_;  ///< per parameter: the columns held (set_columns)
  index_t heads_ = 0;
  MemoryKind memory_ = MemoryKind::host;
  std::string message_;
  /// The refusals of apply() and of set_rows/set_elements/set_columns, composed with snprintf
  /// (no allocation; cut at 511 characters): each report's message stays valid until the next
  /// call of its kind.
  std::array<char, 512> apply_message_{}, hold_message_{};
  bool ready_ = false;
};

}  // namespace schatten::optim
