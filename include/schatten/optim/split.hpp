// SPDX-License-Identifier: Apache-2.0
/// \file
/// Fused parameters cut into the matrices a spectral rule should see: a QKV projection stored as
/// one tensor orthogonalised as Q, K and V (or per head), a gate/up projection as two matrices,
/// a MoE layer's (experts, out, in) stack as its experts.
/// Splitting performs better than orthogonalising the fused matrix (Moonlight's authors in
/// Megatron-LM PR 1428, dion's `split_sizes`, docs/optim.md "Fused parameters"). The partition
/// is built over the pieces; SplitPartition steps it from the caller's fused arrays.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <limits>
#include <new>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "schatten/optim/partition.hpp"

namespace schatten::optim {

/// How one fused parameter is cut: along `axis` of its flattened matrix (flatten(): rows are
/// shape[0], columns the product of the rest) into pieces of `sizes`, or into `count` equal
/// pieces. Row pieces of a row-major matrix are contiguous (torch.nn.Linear's (3d, d) QKV weight:
/// axis 0); column pieces are not (the (d, 3d) weight of a GPT-2 Conv1D: axis 1), and are
/// gathered into a contiguous copy for each step.
struct SplitSpec {
  std::string name;                ///< the parameter's ParamSpec::name, exactly
  int axis = 0;                    ///< 0: cut the rows, 1: cut the columns
  std::vector<index_t> sizes;      ///< piece sizes along `axis`, each ≥ 1, summing to that side
  index_t count = 0;               ///< instead of `sizes`: this many equal pieces (must divide)
  std::vector<std::string> parts;  ///< optional piece names ("q", "k", "v"); default "0", "1", …
  /// Interleaved layouts: the side along `axis` is `groups` equal segments, each cut by `sizes`
  /// (or `count`), and piece k is the k-th cut of every segment, concatenated in segment order.
  /// Megatron-Core's linear_qkv is kv_heads segments [q_g | k_g | v_g] (gated attention:
  /// [q_g | gate_g | k_g | v_g]); groups = kv_heads makes the pieces the whole Q, K and V
  /// projections, heads in order (split_qkv_grouped()). Such pieces are not contiguous and are
  /// gathered into copies, like column pieces. 1: one segment, the plain cut.
  index_t groups = 1;
  /// Instead of a cut of the flattened matrix: the leading dimension indexes a stack of matrices
  /// (a MoE layer's experts (E, out, in), a stacked conv (E, out, in, kh, kw)), and each index
  /// becomes a piece shaped shape[1:] (flattened as usual: out × in·kh·kw). Needs rank ≥ 3,
  /// axis 0 and neither sizes nor count; the pieces are contiguous (no copies). stack_of().
  bool stack = false;
};

/// The SplitSpec that cuts a stack of matrices (experts) into one piece per leading index.
inline SplitSpec stack_of(std::string name, std::vector<std::string> parts = {}) {
  SplitSpec s;
  s.name = std::move(name);
  s.parts = std::move(parts);
  s.stack = true;
  return s;
}

/// The SplitSpec of Megatron-Core's fused linear_qkv weight (rows: kv_heads segments, each its
/// query group's heads/kv_heads query heads, then, with gated attention (attention_output_gate),
/// as many gate heads, then its key head and its value head; head_dim rows each).
///  * per_head = false: pieces "q", ["gate",] "k", "v", each the whole projection with its heads
///    in order (groups = kv_heads), as Megatron's muon_split_qkv cuts it.
///  * per_head = true: one piece per head, named "q<h>", ["gate<h>",] "k<g>", "v<g>" (global
///    head indices), contiguous; the per-head orthogonalisation of Megatron-LM PR 6326.
/// Nothing is checked here: when kv_heads does not divide heads, or the parameter's rows are not
/// (heads·(1 + gated) + 2·kv_heads)·head_dim, the sizes do not add up and the SplitLayout that
/// receives the spec refuses it with a message naming the parameter. Cost: per_head lays out
/// heads·(1 + gated) + 2·kv_heads pieces; a caller taking the sizes from outside checks that
/// side against the parameter first (schatten-replay does), or an absurd head count allocates
/// before SplitLayout can refuse it.
inline SplitSpec split_qkv_grouped(std::string name, index_t heads, index_t kv_heads, index_t head_dim,
                                   bool gated = false, bool per_head = false) {
  SplitSpec s;
  s.name = std::move(name);
  const index_t per = kv_heads > 0 ? heads / kv_heads : 0;
  if (!per_head) {
    s.groups = kv_heads;
    s.sizes = {per * head_dim};
    s.parts = {"q"};
    if (gated) {
      s.sizes.push_back(per * head_dim);
      s.parts.push_back("gate");
    }
    s.sizes.insert(s.sizes.end(), {head_dim, head_dim});
    s.parts.insert(s.parts.end(), {"k", "v"});
    return s;
  }
  for (index_t g = 0; g < kv_heads; ++g) {
    for (const char* role : {"q", "gate"}) {
      if (role[0] == 'g' && !gated) continue;
      for (index_t i = 0; i < per; ++i) {
        s.sizes.push_back(head_dim);
        s.parts.push_back(role + std::to_string(g * per + i));
      }
    }
    for (const char* role : {"k", "v"}) {
      s.sizes.push_back(head_dim);
      s.parts.push_back(role + std::to_string(g));
    }
  }
  return s;
}

/// The caller's parameters with every split one replaced, in place, by its pieces, each named
/// "<name>[<part>]" and shaped as a 2-D matrix: what the partition is built over. Checked at
/// construction; an invalid layout has no pieces, converts to false and names its first problem
/// in message() (SplitPartition::init returns it as invalid_argument).
class SplitLayout {
 public:
  /// Where piece k of the layout lives in its source parameter's flattened matrix.
  struct Piece {
    std::size_t source = 0;   ///< index of the caller's parameter
    int axis = 0;             ///< 0: row piece, 1: column piece
    index_t offset = 0;       ///< first row (axis 0) or column (axis 1) of the piece (in group 0)
    BlockShape shape{};       ///< the piece's matrix
    index_t source_cols = 0;  ///< columns of the source matrix (its leading dimension)
    index_t groups = 1;       ///< blocks the piece is made of, one per segment, stacked along axis
    index_t stride = 0;       ///< rows (axis 0) or columns (axis 1) from one block to the next
    /// Whether the piece is gathered into a contiguous copy for each step (column pieces and
    /// pieces of several blocks); otherwise it is the caller's memory itself.
    bool copied() const { return axis == 1 || groups > 1; }
    /// How many of the piece's elements (in its row-major order) come from source elements
    /// before element t of the source's flattened row-major matrix. The piece's elements follow
    /// their source elements in order (piece index to source index is increasing), so this is
    /// nondecreasing in t (0 at t <= 0, shape.size() from the piece's last source element on),
    /// and a process holding source elements [first, last) — a flat shard of the fused
    /// parameter (ZeRO, Megatron's distributed optimizer) — holds exactly one run of the piece:
    /// its elements [elements_before(first), elements_before(last)), what
    /// SplitPartition::set_source_elements gives each piece. Cost O(groups).
    index_t elements_before(index_t t) const {
      const index_t ld = source_cols;
      if (!copied()) return std::clamp<index_t>(t - offset * ld, 0, shape.size());
      index_t n = 0;
      if (axis == 0) {  // block g: source rows offset + g·stride …, whole rows, contiguous
        const index_t block = shape.rows / groups * ld;
        for (index_t g = 0; g < groups; ++g)
          n += std::clamp<index_t>(t - (offset + g * stride) * ld, 0, block);
        return n;
      }
      // Columns: the rows before t's row whole, then the part of t's row before t.
      if (ld == 0 || t <= 0) return 0;
      const index_t row = t / ld, w = shape.cols / groups;
      if (row >= shape.rows) return shape.size();
      n = row * shape.cols;
      for (index_t g = 0; g < groups; ++g)
        n += std::clamp<index_t>(t - row * ld - (offset + g * stride), 0, w);
      return n;
    }
    /// How many of the piece's rows come from source rows before source row t:
    /// elements_before(t · source_cols) / shape.cols (a piece row never straddles two source
    /// rows). A process holding source rows [first, last) — a row shard of the fused parameter
    /// (FSDP2, ZeRO-3 by dim 0) — holds the piece's rows [rows_before(first),
    /// rows_before(last)): what SplitPartition::set_source_rows gives each piece. A stack's
    /// matrix lies in one source row: a shard holds all its rows or none.
    index_t rows_before(index_t t) const {
      if (source_cols == 0 || shape.cols == 0) return std::clamp<index_t>(t - offset, 0, shape.rows);
      const index_t most = std::numeric_limits<index_t>::max() / source_cols;  // no overflow
      return elements_before(std::clamp<index_t>(t, 0, most) * source_cols) / shape.cols;
    }
    /// A piece that is not copied(): where it starts in its source's array p (row-major in the
    /// source's flattened shape); it is contiguous from there. With a window, p holds the
    /// source's elements [first, last) only (a flat shard; a row shard [a, b) is the window
    /// [a · source_cols, b · source_cols)), and the result is where the piece's elements
    /// [elements_before(first), elements_before(last)) start in p. nullptr for a null p, and
    /// when the window holds none of the piece.
    template <class T>
    T* in_place(T* p, index_t first = 0, index_t last = kAll) const {
      const index_t begin = offset * source_cols;  // the piece's first element in the source
      const index_t lo = std::max(begin, first), hi = std::min(begin + shape.size(), last);
      return p && hi > lo ? p + (lo - first) : nullptr;
    }
    /// The blocks of a copied() piece that a window of its source holds, for gathering and
    /// scattering: calls f(in_copy, in_source), two MatrixRefs of one shape, for each. `src`
    /// holds the source's elements [first, last) of its flattened row-major matrix (the whole by
    /// default), `copy` the piece's elements [elements_before(first), elements_before(last)),
    /// contiguous in the piece's row-major order. copy_block(in_copy, in_source) over every
    /// call gathers the held part of the piece; copy_block(in_source, in_copy) scatters it back.
    /// Per block of the piece (one per group: rows offset + g·stride … or columns offset +
    /// g·stride …) at most one call for rows and three for columns (for_each_band_block); none
    /// for a block outside the window. Cost O(groups²) besides the copies.
    template <class B, class S, class F>
    void for_each_block(B* copy, S* src, MemoryKind memory, F&& f, index_t first = 0,
                        index_t last = kAll) const {
      const index_t ld = source_cols, before = elements_before(first);
      const index_t end = axis == 1 ? std::min(last, shape.rows * ld) : last;
      const index_t width = (axis == 0 ? shape.rows : shape.cols) / groups;
      for (index_t g = 0; g < groups; ++g)
        for_each_band_block(
            ld, first, end, axis, offset + g * stride, width, [&](index_t at, index_t rows, index_t cols) {
              const index_t ld_copy = rows == 1 ? cols : shape.cols;
              const index_t ld_source = rows == 1 ? cols : ld;
              f(MatrixRef<B>::row_major(copy + (elements_before(at) - before), rows, cols, ld_copy, memory),
                MatrixRef<S>::row_major(src + (at - first), rows, cols, ld_source, memory));
            });
    }
    /// Whether the piece is a stack's matrix (one source row, reshaped): a band of source
    /// columns holds a run of its elements, not a band of its columns.
    bool stacked() const { return axis == 0 && groups == 1 && shape.cols != source_cols; }
    /// How many of the piece's columns come from source columns before column t, or for a
    /// stacked() matrix how many of its elements (it lies in one source row). The piece's
    /// columns follow the source's in order, so a process holding the source columns [c0, c1) of
    /// every row — a column shard of the fused parameter (tensor parallelism of an (in, out)
    /// kernel) — holds the piece's columns [columns_before(c0), columns_before(c1)) of every
    /// row (a stacked matrix: that run of its elements): what SplitPartition::set_source_columns
    /// gives each piece. A row piece holds the same columns as the source. Cost O(groups).
    index_t columns_before(index_t t) const {
      if (axis == 0) return std::clamp<index_t>(t, 0, source_cols);
      index_t n = 0;
      for (index_t g = 0; g < groups; ++g)
        n += std::clamp<index_t>(t - (offset + g * stride), 0, shape.cols / groups);
      return n;
    }
    /// A piece that is not copied(), inside a column band: where its part starts in p, which
    /// holds the source's columns [c0, c1) of every row (rows × (c1 − c0), row-major); it is
    /// contiguous from there (a row piece's rows × the band, a stacked matrix's run). nullptr
    /// for a null p and when the band holds none of the piece.
    template <class T>
    T* in_band(T* p, index_t c0, index_t c1) const {
      return p && c1 > c0 && shape.size() > 0 ? p + offset * (c1 - c0) : nullptr;
    }
    /// for_each_block for a copied() piece inside a column band: `src` holds the source's
    /// columns [c0, c1) of every row (rows × (c1 − c0), row-major), `copy` the piece's columns
    /// [columns_before(c0), columns_before(c1)) of every row, row-major. One call per group
    /// that the band meets: a block of rows × the band (axis 0), or every row × the group's
    /// columns in the band (axis 1). Cost O(groups²) besides the copies.
    template <class B, class S, class F>
    void for_each_column_block(B* copy, S* src, MemoryKind memory, F&& f, index_t c0, index_t c1) const {
      const index_t band = c1 - c0, held = columns_before(c1) - columns_before(c0);
      if (band <= 0) return;
      if (axis == 0) {
        const index_t r = shape.rows / groups;
        for (index_t g = 0; g < groups; ++g)
          if (r > 0)
            f(MatrixRef<B>::row_major(copy + g * r * band, r, band, band, memory),
              MatrixRef<S>::row_major(src + (offset + g * stride) * band, r, band, band, memory));
        return;
      }
      const index_t w = shape.cols / groups;
      for (index_t g = 0; g < groups; ++g) {
        const index_t lo = std::max(c0, offset + g * stride), hi = std::min(c1, offset + g * stride + w);
        if (hi <= lo || shape.rows == 0) continue;
        f(MatrixRef<B>::row_major(copy + (columns_before(lo) - columns_before(c0)), shape.rows, hi - lo, held,
                                  memory),
          MatrixRef<S>::row_major(src + (lo - c0), shape.rows, hi - lo, band, memory));
      }
    }
    /// "To the end of the source" as a window end.
    static constexpr index_t kAll = std::numeric_limits<index_t>::max();
  };

  SplitLayout() = default;
  SplitLayout(std::vector<ParamSpec> params, std::vector<SplitSpec> splits)
      : params_(std::move(params)), splits_(std::move(splits)) {
    // A layout the heap cannot hold (a stack of 2^40 empty matrices has 2^40 pieces) is an
    // invalid layout with a message, not an exception (found by an audit, 2026-12-06).
    try {
      build();
    } catch (const std::exception&) {
      pieces_.clear();
      map_.clear();
      message_ = "split: the pieces of this layout do not fit in host memory";
    }
  }

  explicit operator bool() const { return message_.empty(); }
  /// Empty when the layout is valid; otherwise what is wrong, naming the split.
  const std::string& message() const { return message_; }
  /// The caller's parameters (what SplitPartition::step takes pointers to).
  const std::vector<ParamSpec>& params() const { return params_; }
  const std::vector<SplitSpec>& splits() const { return splits_; }
  /// The partition's parameters: unsplit parameters as they are, split ones as their pieces.
  const std::vector<ParamSpec>& pieces() const { return pieces_; }
  const std::vector<Piece>& map() const { return map_; }
  /// "name:axis:size,size,…;…" for every split (":groups=G" appended when G > 1; "name:stack:E"
  /// for a stack), in the order given: part of SplitPartition::signature(), so that a checkpoint
  /// of another cut is refused by name.
  std::string signature() const {
    std::string s;
    for (const SplitSpec& sp : splits_) {
      if (sp.stack) {
        const std::size_t i = find(sp.name);
        s += (s.empty() ? "" : ";") + sp.name +
             ":stack:" + (i < params_.size() ? std::to_string(params_[i].shape[0]) : std::string("?"));
        continue;
      }
      s += (s.empty() ? "" : ";") + sp.name + ":" + std::to_string(sp.axis) + ":";
      const std::vector<index_t> sizes = sizes_of(sp);
      for (std::size_t k = 0; k < sizes.size(); ++k)
        s += (k ? "," : "") + std::to_string(sizes[k]);
      if (sp.groups != 1) s += ":groups=" + std::to_string(sp.groups);
    }
    return s;
  }

 private:
  std::vector<index_t> sizes_of(const SplitSpec& sp) const {
    if (!sp.sizes.empty() || sp.count <= 0) return sp.sizes;
    const std::size_t i = find(sp.name);
    if (i == params_.size()) return {};
    const BlockShape m = flatten(params_[i].shape);
    const index_t segment = (sp.axis == 0 ? m.rows : m.cols) / std::max<index_t>(sp.groups, 1);
    return std::vector<index_t>(static_cast<std::size_t>(sp.count), segment / sp.count);
  }
  std::size_t find(const std::string& name) const {
    std::size_t i = 0;
    while (i < params_.size() && params_[i].name != name)
      ++i;
    return i;
  }
  /// A name that appears twice in `names` (the first in sorted order), or "". Cost: a sort.
  static std::string repeated(std::vector<std::string> names) {
    std::sort(names.begin(), names.end());
    for (std::size_t k = 1; k < names.size(); ++k)
      if (names[k] == names[k - 1]) return names[k];
    return "";
  }
  bool refuse(const std::string& what) {
    message_ = "split: " + what;
    pieces_.clear();
    map_.clear();
    return false;
  }
  /// Checks every split, then lays out the pieces.
  bool build() {
    // Two caller parameters of one name: find() would split the first only, and a checkpoint
    // (which records shapes by name) would not load (found by an audit, 2026-12-06).
    std::vector<std::string> names;
    for (const ParamSpec& p : params_)
      names.push_back(p.name);
    if (const std::string twice = repeated(names); !twice.empty())
      return refuse("two parameters are named '" + twice + "'");
    std::vector<int> split_of(params_.size(), -1);
    for (std::size_t s = 0; s < splits_.size(); ++s) {
      const SplitSpec& sp = splits_[s];
      const std::size_t i = find(sp.name);
      if (i == params_.size()) return refuse("no parameter is named '" + sp.name + "'");
      if (split_of[i] >= 0) return refuse("'" + sp.name + "' is split twice");
      split_of[i] = static_cast<int>(s);
      if (sp.axis != 0 && sp.axis != 1)
        return refuse("the axis of '" + sp.name + "' must be 0 (rows) or 1 (columns)");
      const BlockShape m = flatten(params_[i].shape);
      if (sp.stack) {
        if (params_[i].shape.size() < 3)
          return refuse("'" + sp.name +
                        "' is a stack of matrices only with rank >= 3 (experts, out, in), not " +
                        std::to_string(params_[i].shape.size()));
        if (sp.axis != 0 || !sp.sizes.empty() || sp.count != 0 || sp.groups != 1)
          return refuse("'" + sp.name +
                        "': a stack takes axis 0 and no sizes, count or groups (one piece per index)");
        if (params_[i].shape[0] < 1)
          return refuse("'" + sp.name + "' is a stack of " + std::to_string(params_[i].shape[0]) +
                        " matrices");
        if (!sp.parts.empty() && static_cast<index_t>(sp.parts.size()) != params_[i].shape[0])
          return refuse("'" + sp.name + "' names " + std::to_string(sp.parts.size()) + " parts for " +
                        std::to_string(params_[i].shape[0]) + " pieces");
        if (const std::string twice = repeated(sp.parts); !twice.empty())
          return refuse("'" + sp.name + "' names two parts '" + twice + "'");
        continue;
      }
      const std::string unit = sp.axis == 0 ? " rows" : " columns";
      if (sp.groups < 1)
        return refuse("'" + sp.name + "' has " + std::to_string(sp.groups) + " groups (must be >= 1)");
      if ((sp.axis == 0 ? m.rows : m.cols) % sp.groups != 0)
        return refuse("'" + sp.name + "': " + std::to_string(sp.groups) + " groups do not divide its " +
                      std::to_string(sp.axis == 0 ? m.rows : m.cols) + unit);
      // With groups, each segment is cut alike: the sizes describe one segment.
      const index_t side = (sp.axis == 0 ? m.rows : m.cols) / sp.groups;
      const std::string side_text =
          std::to_string(side) + unit +
          (sp.groups > 1 ? " per group (" + std::to_string(sp.groups) + " groups)" : std::string());
      if (sp.sizes.empty() == (sp.count == 0))
        return refuse("'" + sp.name + "' needs either sizes or a count of equal pieces");
      if (sp.sizes.empty() && (sp.count < 1 || sp.count > side || side % sp.count != 0))
        return refuse("'" + sp.name + "': " + std::to_string(sp.count) + " equal pieces do not divide its " +
                      side_text);
      const std::vector<index_t> sizes = sizes_of(sp);
      index_t sum = 0;
      for (index_t z : sizes) {
        if (z < 1)
          return refuse("'" + sp.name + "' has a piece of size " + std::to_string(z) +
                        " (each must be >= 1)");
        if (z > side - sum) return refuse("the sizes of '" + sp.name + "' exceed its " + side_text);
        sum += z;
      }
      if (sum != side)
        return refuse("the sizes of '" + sp.name + "' sum to " + std::to_string(sum) + ", not to its " +
                      side_text);
      if (!sp.parts.empty() && sp.parts.size() != sizes.size())
        return refuse("'" + sp.name + "' names " + std::to_string(sp.parts.size()) + " parts for " +
                      std::to_string(sizes.size()) + " pieces");
      if (const std::string twice = repeated(sp.parts); !twice.empty())
        return refuse("'" + sp.name + "' names two parts '" + twice + "'");
    }
    // Room for every piece at once, so that a layout of more pieces than the heap holds (a stack
    // of 2^40 empty matrices) fails in one allocation (the constructor's catch), not after
    // growing the lists to the size of the machine's memory.
    std::size_t total = 0;
    for (std::size_t i = 0; i < params_.size(); ++i) {
      if (split_of[i] < 0) {
        ++total;
        continue;
      }
      const SplitSpec& sp = splits_[static_cast<std::size_t>(split_of[i])];
      total += sp.stack ? static_cast<std::size_t>(params_[i].shape[0]) : sizes_of(sp).size();
    }
    pieces_.reserve(total);
    map_.reserve(total);
    for (std::size_t i = 0; i < params_.size(); ++i) {
      const BlockShape m = flatten(params_[i].shape);
      if (split_of[i] < 0) {
        pieces_.push_back(params_[i]);
        map_.push_back(Piece{i, 0, 0, m, m.cols});
        continue;
      }
      const SplitSpec& sp = splits_[static_cast<std::size_t>(split_of[i])];
      if (sp.stack) {  // piece e: the e-th matrix, contiguous at e·(its size)
        const std::vector<index_t> inner(params_[i].shape.begin() + 1, params_[i].shape.end());
        for (index_t e = 0; e < params_[i].shape[0]; ++e) {
          const std::string part =
              sp.parts.empty() ? std::to_string(e) : sp.parts[static_cast<std::size_t>(e)];
          pieces_.push_back(ParamSpec{sp.name + "[" + part + "]", inner});
          map_.push_back(Piece{i, 0, e, flatten(inner), m.cols});
        }
        continue;
      }
      const std::vector<index_t> sizes = sizes_of(sp);
      const index_t segment = (sp.axis == 0 ? m.rows : m.cols) / sp.groups;
      index_t offset = 0;
      for (std::size_t k = 0; k < sizes.size(); ++k) {
        const index_t z = sp.groups * sizes[k];  // the piece's side: one block per group
        const BlockShape s = sp.axis == 0 ? BlockShape{z, m.cols} : BlockShape{m.rows, z};
        const std::string part = sp.parts.empty() ? std::to_string(k) : sp.parts[k];
        pieces_.push_back(ParamSpec{sp.name + "[" + part + "]", {s.rows, s.cols}});
        map_.push_back(Piece{i, sp.axis, offset, s, m.cols, sp.groups, segment});
        offset += sizes[k];
      }
    }
    // A piece named like a caller parameter other than itself ("w[q]" the piece of "w" and a
    // parameter "w[q]"): the checkpoint records both shapes by name (io/checkpoint.hpp), and
    // the partition would refuse two parameters of one name.
    names.clear();
    for (std::size_t i = 0; i < params_.size(); ++i)
      if (split_of[i] >= 0) names.push_back(params_[i].name);
    for (std::size_t k = 0; k < pieces_.size(); ++k)
      names.push_back(pieces_[k].name);  // an unsplit parameter once, as its own piece
    if (const std::string twice = repeated(std::move(names)); !twice.empty())
      return refuse("'" + twice + "' names a piece and another parameter or piece");
    return true;
  }

  std::vector<ParamSpec> params_;
  std::vector<SplitSpec> splits_;
  std::vector<ParamSpec> pieces_;
  std::vector<Piece> map_;
  std::string message_;
};

namespace detail {
/// Whether P takes row, flat and column bounds per parameter and knows its ranks
/// (distributed::DistributedPartition).
template <class P, class = void>
struct takes_shard_bounds : std::false_type {};
template <class P>
struct takes_shard_bounds<
    P, std::void_t<decltype(std::declval<P&>().set_row_bounds(std::vector<std::vector<index_t>>{})),
                   decltype(std::declval<P&>().set_flat_bounds(std::vector<std::vector<index_t>>{})),
                   decltype(std::declval<P&>().set_column_bounds(std::vector<std::vector<index_t>>{})),
                   decltype(std::declval<const P&>().communicator().rank()),
                   decltype(std::declval<const P&>().communicator().size())>> : std::true_type {};
}  // namespace detail

/// A partition built over layout.pieces(), stepped from the caller's fused arrays.
///
/// step(params, grads) takes one pointer per caller parameter (layout.params() order), row-major
/// in its flattened shape, like Partition::step. Row pieces and unsplit parameters are passed to
/// the partition as pointers into the caller's arrays (no copy); column pieces and grouped pieces
/// (SplitSpec::groups > 1) are gathered into contiguous copies of parameter and gradient before
/// the step, and the updated copies are scattered back after it (the gradient copy always, so
/// that the caller's gradient holds what the partition leaves there — the updates with
/// Partition, the gradient with distributed::DistributedPartition; the parameter copy only when
/// the step succeeded). Cost: four passes over each such parameter per step, in the partition's
/// memory (one kernel per block on the device); buffers reserved at init(), step never
/// allocates.
///
/// Contract, as Partition's: all parameters or none (a refused or failed step changes no
/// parameter and no state), StepReport::bad_param is the index of the CALLER's parameter (its
/// message names the piece), batching groups equal pieces (the Q, K and V of every layer),
/// checkpoints name the pieces ("<name>[<part>]/<index>_<rule>/<field>"). Each piece is
/// optimised bit for bit as a separate parameter holding that piece would be
/// (tests/optim/test_split.cpp); only global clipping sums the squares in another order.
///
/// P: an optim::Partition, or a distributed::DistributedPartition (the pieces spread over the
/// ranks' owners; docs/distributed.md "Cut parameters"), whose fused parameters may be
/// row-sharded (set_source_rows), flat-sharded (set_source_elements) or column-sharded
/// (set_source_columns). The SplitPartition sets that partition's row, flat and column bounds
/// itself, from those.
template <class P>
class SplitPartition {
 public:
  SplitPartition(SplitLayout layout, P partition)
      : layout_(std::move(layout)), partition_(std::move(partition)) {}

  /// Row-sharded fused parameters (FSDP2 / ZeRO-3 by dim 0; before init(); P must be a
  /// distributed::DistributedPartition, init() refuses otherwise). bounds[i] for caller parameter
  /// i: empty — every process holds it whole; otherwise ranks + 1 boundaries, nondecreasing from
  /// 0 to its rows, process r holding rows [b[r], b[r+1]) of its flattened matrix and gradient
  /// (distributed::chunk_bounds(rows, ranks) is FSDP2's split). step() then takes, for such a
  /// parameter, this process's rows (null when it holds none). Each piece is row-sharded as its
  /// rows fall (SplitLayout::Piece::rows_before: a shard of a fused QKV holds a run of Q's rows,
  /// then of K's, …; a shard of an expert stack holds whole experts); the partition gathers each
  /// piece to its owner and scatters the update back. Cost: a grouped or column piece is gathered
  /// from this process's rows into a copy and scattered back (four passes over them); the other
  /// pieces are the caller's memory. Every process passes the same bounds (the partition
  /// compares them). The result is the single process's step bit for bit (tests/distributed).
  void set_source_rows(std::vector<std::vector<index_t>> bounds) { source_rows_ = std::move(bounds); }
  /// Flat-sharded fused parameters (a flat buffer cut among the ranks: ZeRO-1/2, Megatron's
  /// distributed optimizer; before init(); P must be a distributed::DistributedPartition): as
  /// set_source_rows, with element boundaries from 0 to rows · cols of the flattened parameter,
  /// process r holding its elements [b[r], b[r+1]), which may begin and end inside rows
  /// (distributed::flat_bounds() computes them from the buffer). step() then takes, for such a
  /// parameter, this process's run (null when empty). Each piece is flat-sharded as its
  /// elements fall (SplitLayout::Piece::elements_before: the run of a fused QKV is a run of each
  /// of Q, K and V, possibly empty); the partition gathers each piece's runs to its owner, or
  /// steps them where they lie under a rule acting on each element alone. A parameter takes
  /// bounds of one kind only (init() refuses rows and elements for one parameter). Cost: a
  /// grouped or column piece is gathered from this process's run into a copy and scattered back
  /// (at most three blocks per group). The result is the single process's step bit for bit
  /// (tests/distributed).
  void set_source_elements(std::vector<std::vector<index_t>> bounds) { source_elements_ = std::move(bounds); }
  /// Column-sharded fused parameters (an (in, out) kernel sharded along its output columns:
  /// GPT-2's Conv1D c_attn under DTensor Shard(1), a kernel of interleaved query groups under
  /// tensor parallelism by heads; before init(); P must be a distributed::DistributedPartition):
  /// as set_source_rows, with column boundaries from 0 to the flattened parameter's columns,
  /// process r holding columns [b[r], b[r+1]) of every row as a rows × (its columns) row-major
  /// array. step() then takes, for such a parameter, that array (null when empty). Each piece
  /// is column-sharded as its columns fall (SplitLayout::Piece::columns_before: a row piece
  /// holds the same columns, a column piece of a [Q | K | V] kernel the part of the band inside
  /// it, possibly none); a stack's matrix, which lies in one source row, holds a run of its
  /// elements and is flat-sharded. Cost: a grouped or column piece is gathered from this
  /// process's band into a copy and scattered back (one block per group). The result is the
  /// single process's step bit for bit (tests/distributed).
  void set_source_columns(std::vector<std::vector<index_t>> bounds) { source_columns_ = std::move(bounds); }

  /// invalid_argument when the layout is invalid (its message) or the partition was not built
  /// over layout.pieces(); otherwise the column pieces' copies reserved in `memory` and the
  /// partition's init(memory). out_of_memory when the copies or the host heap run out (a
  /// std::bad_alloc is caught). Over a distributed partition init is collective: the processes
  /// agree on their own parts (the bounds, the copies, the heap) before the partition's init,
  /// and a failure on any of them is returned on every one (the lowest failing process's
  /// status, bad_param and message), so that no process is left initialised to wait at the
  /// first step for one that is not. Not initialised after a failure.
  StepReport init(MemoryKind memory = MemoryKind::host) {
    ready_ = false;
    if (!layout_) return refusal(layout_.message().c_str(), -1);
    const std::vector<ParamSpec>& built = partition_.params();
    bool same = built.size() == layout_.pieces().size();
    for (std::size_t k = 0; same && k < built.size(); ++k)
      same = built[k].name == layout_.pieces()[k].name &&
             flatten(built[k].shape) == flatten(layout_.pieces()[k].shape);
    if (!same) return refusal("split: the partition was not built over layout.pieces()", -1);
    StepReport local;  // this process's own part, before the collective init
    try {
      local = shard_pieces();
      if (local) local = reserve_pieces(memory);
    } catch (const std::bad_alloc&) {
      local = refusal("split: init: host memory ran out", -1, Status::out_of_memory);
    }
    if constexpr (detail::takes_shard_bounds<P>::value) {
      if (const StepReport a = agreed(local); !a) return a;
    } else if (!local) {
      return local;
    }
    if (const StepReport r = partition_.init(memory); !r) return to_source(r);
    memory_ = memory;
    ready_ = true;
    return StepReport{};
  }

  /// One step from the caller's arrays (class comment).
  StepReport step(const std::vector<float*>& params, const std::vector<float*>& grads) {
    if (!ready_) return refusal("step before a successful init()", -1);
    if (StepReport r = check_counts(window_.size(), params, grads); !r) return r;
    // A null array where this process holds elements: its pieces are passed as null, and the
    // partition refuses the step (a distributed one on every process, so that no process is
    // left waiting in a collective) with the piece, which to_source turns into the parameter.
    for (std::size_t i = 0; i < window_.size(); ++i)
      missing_[i] = (params[i] == nullptr || grads[i] == nullptr) && window_[i].size(layout_.params()[i]) > 0;
    // Caller arrays that overlap (one buffer passed as two parameters, a gradient aliasing its
    // parameter) are refused as Partition::step refuses them: the copies of the column and
    // grouped pieces would hide them from the partition's own check, and the step would use W
    // as its gradient with ok (found by an audit, 2026-12-06). A distributed partition is given
    // the second parameter's pieces as null, so that it refuses the step on every process.
    const auto [a, b] = detail::first_overlap(ranges_, params, grads, [&](std::size_t i) {
      return missing_[i] ? index_t(0) : window_[i].size(layout_.params()[i]);
    });
    if (a != window_.size()) {
      if constexpr (detail::takes_shard_bounds<P>::value) {
        missing_[b] = 1;
      } else {
        std::snprintf(step_message_.data(), step_message_.size(), "parameter '%s' and parameter '%s'%s%s",
                      layout_.params()[a].name.c_str(), layout_.params()[b].name.c_str(),
                      a == b ? " (its gradient)" : "", detail::kOverlapping);
        return refusal(step_message_.data(), static_cast<std::ptrdiff_t>(b));
      }
    }
    const std::vector<SplitLayout::Piece>& map = layout_.map();
    for (std::size_t k = 0; k < map.size(); ++k) {
      const SplitLayout::Piece& c = map[k];
      const Window w = window_[c.source];
      if (missing_[c.source]) {
        piece_params_[k] = piece_grads_[k] = nullptr;
      } else if (!c.copied()) {  // a row piece (or a whole parameter): the caller's memory itself
        piece_params_[k] = w.in_place(c, params[c.source]);
        piece_grads_[k] = w.in_place(c, grads[c.source]);
      } else {
        move(c, w, copies_[k].param.data(), params[c.source], true);
        move(c, w, copies_[k].grad.data(), grads[c.source], true);
        piece_params_[k] = copies_[k].param.data();
        piece_grads_[k] = copies_[k].grad.data();
      }
    }
    StepReport r = partition_.step(piece_params_, piece_grads_);
    const bool changed = r.status == Status::ok && !r.skipped;
    for (std::size_t k = 0; k < map.size(); ++k) {
      const SplitLayout::Piece& c = map[k];
      if (!c.copied() || missing_[c.source]) continue;
      const Window w = window_[c.source];
      move(c, w, copies_[k].grad.data(), grads[c.source], false);
      if (changed) move(c, w, copies_[k].param.data(), params[c.source], false);
    }
    if (memory_ == MemoryKind::device) device_kernels::fence();  // the scatters
    return to_source(r);
  }

  /// The caller's parameters (layout().params()): what step() takes pointers to.
  const std::vector<ParamSpec>& params() const { return layout_.params(); }
  /// The partition's parameters (layout().pieces()): what the checkpoint's fields are named by.
  /// A checkpoint records their shapes besides params()' (io/checkpoint.hpp), so that another
  /// cut of the same fused shape, whose fields have the same names and sizes, is refused.
  const std::vector<ParamSpec>& pieces() const { return layout_.pieces(); }
  /// The route label of each piece (the partition's labels(), in pieces() order): a checkpoint
  /// records them by piece, so that two pieces that swapped routes are refused on load.
  const std::vector<std::string>& labels() const { return partition_.labels(); }
  const SplitLayout& layout() const { return layout_; }
  P& partition() { return partition_; }
  const P& partition() const { return partition_; }
  MemoryKind memory() const { return memory_; }
  /// The partition's signature and the cut: "<partition signature>|split=<layout signature>".
  std::string signature() const { return partition_.signature() + "|split=" + layout_.signature(); }
  /// The partition's fields (named by piece): checkpoints use this.
  template <class V>
  void visit(V& v) {
    partition_.visit(v);
  }
  /// What this split partition holds (MemoryUse; docs/optim.md "Memory"): its partition's
  /// memory_use(), and in `pieces` the copies of the column and grouped pieces (parameter and
  /// gradient: 2·4 bytes per element this process holds of such a piece). All zero before a
  /// successful init(). Cost: the partition's, and one pass over the pieces.
  MemoryUse memory_use() {
    MemoryUse m;
    if (!ready_) return m;
    m = partition_.memory_use();
    for (const Copies& c : copies_)
      m.pieces += (c.param.size() + c.grad.size()) * sizeof(float);
    return m;
  }

 private:
  struct Copies {
    Buffer param, grad;  ///< a copied piece (the elements held here), contiguous, in the partition's memory
  };
  /// What this process holds of a caller parameter's flattened matrix: the elements [first,
  /// last) (a row shard's rows [a, b): [a · cols, b · cols); held whole: all of them), or, when
  /// `banded`, the columns [c0, c1) of every row (a column shard).
  struct Window {
    index_t first = 0, last = 0;
    bool banded = false;
    index_t c0 = 0, c1 = 0;
    /// Elements held of parameter p.
    index_t size(const ParamSpec& p) const {
      return banded ? flatten(p.shape).rows * (c1 - c0) : last - first;
    }
    /// Elements held of piece c (of this parameter).
    index_t held(const SplitLayout::Piece& c) const {
      if (!banded) return c.elements_before(last) - c.elements_before(first);
      const index_t cols = c.columns_before(c1) - c.columns_before(c0);
      return c.stacked() ? cols : c.shape.rows * cols;
    }
    /// A piece that is not copied(): its held part in the caller's array p (null: none).
    float* in_place(const SplitLayout::Piece& c, float* p) const {
      return banded ? c.in_band(p, c0, c1) : c.in_place(p, first, last);
    }
  };
  /// Gathers (into = true) the held part of copied piece c from the caller's array a into its
  /// copy b, or scatters it back (into = false).
  void move(const SplitLayout::Piece& c, const Window& w, float* b, float* a, bool into) const {
    auto f = [into](MatrixRef<float> in_copy, MatrixRef<float> in_source) {
      if (into)
        copy_block(in_copy, in_source);
      else
        copy_block(in_source, in_copy);
    };
    if (w.banded)
      c.for_each_column_block(b, a, memory_, f, w.c0, w.c1);
    else
      c.for_each_block(b, a, memory_, f, w.first, w.last);
  }
  /// init(): this process's windows from set_source_rows(), set_source_elements() and
  /// set_source_columns(), and each piece's row, flat or column bounds handed to the partition
  /// (which lays the pieces out over the ranks). Bounds that are wrong here are refused with
  /// their message (init() agrees the refusal over the processes before the partition's init).
  StepReport shard_pieces() {
    const std::vector<ParamSpec>& ps = layout_.params();
    window_.clear();
    for (const ParamSpec& p : ps)
      window_.push_back(Window{0, flatten(p.shape).size()});
    missing_.assign(ps.size(), 0);
    if (source_rows_.empty() && source_elements_.empty() && source_columns_.empty()) {
      if constexpr (detail::takes_shard_bounds<P>::value) {
        partition_.set_row_bounds({});
        partition_.set_flat_bounds({});
        partition_.set_column_bounds({});
      }
      return StepReport{};
    }
    if constexpr (!detail::takes_shard_bounds<P>::value) {
      return refusal(
          "split: sharded parameters (set_source_rows, set_source_elements, set_source_columns) need a "
          "distributed partition",
          -1);
    } else {
      auto refuse = [&](std::string what, std::ptrdiff_t bad) {
        message_ = "split: " + what;
        return refusal(message_.c_str(), bad);  // init() agrees it over the processes
      };
      enum class Kind { rows, elements, columns };
      struct Given {  // per kind: the bounds given, their setter, what they count
        const std::vector<std::vector<index_t>>* bounds;
        const char *setter, *kind, *unit;
        Kind what;
      };
      const Given given[] = {
          {&source_rows_, "set_source_rows", "row", "rows", Kind::rows},
          {&source_elements_, "set_source_elements", "element", "elements", Kind::elements},
          {&source_columns_, "set_source_columns", "column", "columns", Kind::columns}};
      const auto n = static_cast<std::size_t>(partition_.communicator().size());
      const auto me = static_cast<std::size_t>(partition_.communicator().rank());
      for (const Given& g : given)
        if (!g.bounds->empty() && g.bounds->size() != ps.size())
          return refuse(
              std::string(g.setter) + " needs one entry per parameter (empty: not sharded by " + g.unit + ")",
              -1);
      std::vector<const Given*> taken(ps.size(), nullptr);
      for (const Given& g : given)
        for (std::size_t i = 0; i < g.bounds->size(); ++i) {
          const std::vector<index_t>& b = (*g.bounds)[i];
          if (b.empty()) continue;
          if (taken[i])
            return refuse(
                "parameter '" + ps[i].name + "' has " + taken[i]->kind + " and " + g.kind + " bounds",
                static_cast<std::ptrdiff_t>(i));
          taken[i] = &g;
          const BlockShape m = flatten(ps[i].shape);
          const index_t total = g.what == Kind::rows ? m.rows : g.what == Kind::elements ? m.size() : m.cols;
          if (const std::string problem = split_problem(b, n, total, ps[i].name, g.kind, g.unit);
              !problem.empty())
            return refuse(problem, static_cast<std::ptrdiff_t>(i));
          if (g.what == Kind::columns)
            window_[i] = Window{0, m.size(), true, b[me], b[me + 1]};
          else
            window_[i] =
                g.what == Kind::rows ? Window{b[me] * m.cols, b[me + 1] * m.cols} : Window{b[me], b[me + 1]};
        }
      // Each piece's bounds, counted by the piece in the same cut: its rows (row shards), its
      // elements (flat shards, and a stack's matrix in a column shard), or its columns.
      const std::vector<SplitLayout::Piece>& map = layout_.map();
      std::vector<std::vector<index_t>> rows(map.size()), elements(map.size()), columns(map.size());
      for (std::size_t k = 0; k < map.size(); ++k) {
        const SplitLayout::Piece& c = map[k];
        const Given* g = taken[c.source];
        if (!g) continue;
        std::vector<index_t>& out = g->what == Kind::rows                      ? rows[k]
                                    : g->what == Kind::elements || c.stacked() ? elements[k]
                                                                               : columns[k];
        for (index_t t : (*g->bounds)[c.source])
          out.push_back(g->what == Kind::rows       ? c.rows_before(t)
                        : g->what == Kind::elements ? c.elements_before(t)
                                                    : c.columns_before(t));
      }
      partition_.set_row_bounds(std::move(rows));
      partition_.set_flat_bounds(std::move(elements));
      partition_.set_column_bounds(std::move(columns));
      return StepReport{};
    }
  }
  /// init(): the copies of the column and grouped pieces (this process's part of each) and the
  /// step's pointer tables, allocated in `memory` before the partition's init, so that nothing
  /// of init can fail on one process after the collective part succeeded everywhere.
  StepReport reserve_pieces(MemoryKind memory) {
    const std::vector<SplitLayout::Piece>& map = layout_.map();
    copies_.assign(map.size(), Copies{});
    for (std::size_t k = 0; k < map.size(); ++k) {
      if (!map[k].copied()) continue;
      const auto n = static_cast<std::size_t>(window_[map[k].source].held(map[k]));
      copies_[k].param.assign(n, 0.0f);
      copies_[k].grad.assign(n, 0.0f);
      if (!copies_[k].param.move_to(memory) || !copies_[k].grad.move_to(memory))
        return refusal("split: init could not allocate the copies of the column and grouped pieces", -1,
                       Status::out_of_memory);
    }
    piece_params_.assign(map.size(), nullptr);
    piece_grads_.assign(map.size(), nullptr);
    ranges_.reserve(2 * window_.size());
    return StepReport{};
  }
  /// Collective (a distributed partition): ok where `local` succeeded on every process, else
  /// the local report of the lowest process where it failed, on every process: its status,
  /// bad_param and message (copied into agreed_message_ without allocating, so that a process
  /// whose heap ran out takes part like the others). One all-reduce, and two broadcasts after a
  /// failure.
  StepReport agreed(const StepReport& local) {
    const auto& comm = partition_.communicator();
    constexpr std::int64_t kNone = std::numeric_limits<std::int64_t>::max();
    const std::int64_t from = comm.allreduce_min(local ? kNone : std::int64_t(comm.rank()));
    if (from == kNone) return StepReport{};
    std::int64_t code[2] = {static_cast<std::int64_t>(local.status),
                            static_cast<std::int64_t>(local.bad_param)};
    if (comm.rank() == from) {
      std::strncpy(agreed_message_.data(), local.message, agreed_message_.size() - 1);
      agreed_message_.back() = '\0';
    }
    comm.bcast(code, sizeof code, static_cast<int>(from));
    comm.bcast(agreed_message_.data(), agreed_message_.size(), static_cast<int>(from));
    return refusal(agreed_message_.data(), static_cast<std::ptrdiff_t>(code[1]),
                   static_cast<Status>(code[0]));
  }
  /// The partition's report with bad_param turned from a piece index into the caller's index.
  StepReport to_source(StepReport r) const {
    if (r.bad_param >= 0)
      r.bad_param = static_cast<std::ptrdiff_t>(layout_.map()[static_cast<std::size_t>(r.bad_param)].source);
    return r;
  }

  SplitLayout layout_;
  P partition_;
  std::vector<std::vector<index_t>> source_rows_;      ///< as set_source_rows() gave them
  std::vector<std::vector<index_t>> source_elements_;  ///< as set_source_elements() gave them
  std::vector<std::vector<index_t>> source_columns_;   ///< as set_source_columns() gave them
  std::vector<Window> window_;                         ///< per caller parameter, from init()
  std::vector<char> missing_;                          ///< per caller parameter: null at this step
  std::string message_;
  std::array<char, 512> agreed_message_{};    ///< agreed(): the failing process's message, on every one
  std::array<char, 512> step_message_{};      ///< step()'s own refusal, composed without allocating
  std::vector<detail::AddressRange> ranges_;  ///< step()'s overlap check: 2n, reserved at init()
  std::vector<Copies> copies_;                ///< per piece; buffers only for column and grouped pieces
  std::vector<float*> piece_params_;          ///< per piece, filled at each step
  std::vector<float*> piece_grads_;
  MemoryKind memory_ = MemoryKind::host;
  bool ready_ = false;
};

/// visit_fields for a split partition: the partition's fields (checkpoints use this).
template <class V, class P>
void visit_fields(V& v, SplitPartition<P>& s) {
  s.visit(v);
}

/// split_partition(layout, optim::partition(layout.pieces(), labels, routes...)).
template <class P>
SplitPartition<P> split_partition(SplitLayout layout, P partition) {
  return SplitPartition<P>(std::move(layout), std::move(partition));
}

}  // namespace schatten::optim
