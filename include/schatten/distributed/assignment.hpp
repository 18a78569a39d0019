// SPDX-License-Identifier: Apache-2.0
/// \file
/// Pure, MPI-free pieces of the distributed step (library schatten::mpi): the row split of a
/// sharded parameter, the flop model and the owner assignment, and the byte format in which
/// checkpoint fields travel between ranks.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "schatten/core/types.hpp"
#include "schatten/io/checkpoint.hpp"
#include "schatten/optim/rule.hpp"

namespace schatten::distributed {

/// Rows [begin, end) of a flattened parameter.
struct RowRange {
  index_t begin = 0, end = 0;
  index_t size() const { return end - begin; }
};

/// The rows rank `rank` of `ranks` holds of a row-sharded parameter with `rows` rows: torch.chunk
/// along dim 0 (FSDP2's layout without its padding): chunk = ⌈rows / ranks⌉, rank r holds
/// [min(r·chunk, rows), min((r+1)·chunk, rows)); trailing ranks may hold none (rows need not be
/// divisible by the rank count). ranks < 1, rank outside [0, ranks) or rows < 0: the empty
/// range {0, 0}.
RowRange shard_rows(index_t rows, int rank, int ranks);

/// The same split as boundaries: ranks + 1 values, rank r holding rows [b[r], b[r+1]) =
/// shard_rows(rows, r, ranks). What DistributedPartition::set_row_bounds and
/// optim::SplitPartition::set_source_rows take for an FSDP2-sharded parameter. ranks < 1: {0}.
std::vector<index_t> chunk_bounds(index_t rows, int ranks);

/// The flat bounds (DistributedPartition::set_flat_bounds) of the parameters of one flat buffer
/// partitioned among the ranks — ZeRO-1/2's and Megatron's distributed optimizer's grad and
/// main-parameter buffers, FSDP1's flat parameter. Parameter i occupies buffer elements
/// [offsets[i], offsets[i] + sizes[i]) (any order; gaps are padding), rank r holds buffer
/// elements [buffer_bounds[r], buffer_bounds[r+1]) (for an even split of a buffer padded to a
/// multiple of the ranks: chunk_bounds(padded size, ranks)); parameter i's bounds are
/// b[r] = clamp(buffer_bounds[r] − offsets[i], 0, sizes[i]), so rank r holds elements
/// [b[r], b[r+1]) of it, possibly none. A parameter that does not lie inside the buffer gets
/// bounds that init() refuses (not ending at its size); offsets and sizes of different lengths
/// give one malformed entry, also refused. Cost: O(parameters · ranks).
std::vector<std::vector<index_t>> flat_bounds(const std::vector<index_t>& offsets,
                                              const std::vector<index_t>& sizes,
                                              const std::vector<index_t>& buffer_bounds);

/// A flat buffer of parameters cut into equal parts among the ranks (what flat_bounds takes, and
/// its result).
struct FlatBuffer {
  std::vector<index_t> offsets;              ///< per parameter: where its elements begin in the buffer
  index_t size = 0;                          ///< the buffer's floats, padding included
  std::vector<index_t> parts;                ///< ranks + 1 boundaries: rank r holds [parts[r], parts[r+1])
  std::vector<std::vector<index_t>> bounds;  ///< flat_bounds(offsets, sizes, parts)
};

/// Megatron-Core's layout of a distributed optimizer's buffer: the parameters of `sizes` (floats
/// each) in reverse order, each start aligned to `align` floats, the buffer padded to a multiple
/// of align · ranks and cut into equal parts. For a framework that lays its buffer out
/// otherwise, compute the offsets and call flat_bounds. align ≥ 1 and ranks ≥ 1, else an empty
/// FlatBuffer (no offsets, parts or bounds; size 0).
FlatBuffer reversed_flat_buffer(const std::vector<index_t>& sizes, index_t align, int ranks);

/// The default cost of one parameter's update, in flop-equivalents:
///   element-wise rules: 64 · rows · cols — a memory-bound pass over a handful of arrays; 64 is
///     the ratio of the GEMM flop rate (≈ 60 GFLOP/s) to the streamed element rate (≈ 1 G
///     elements/s, AdamW reads and writes ~5 floats per element) on the 2-core CI machine
///     (tunable: pass a cost model of your own for other ratios);
///   matrix-function rules: that plus polar_flops(rows, cols) of Keller Jordan's Newton–Schulz
///     (5 steps), the dominant term: 2 GEMMs per step on the short side.
double default_cost(const optim::BlockShape& shape, bool matrix_function);

/// Greedy longest-processing-time assignment: parameters by decreasing cost (ties: lower index
/// first), each to the rank with the least total so far (ties: lower rank). Deterministic, so
/// every rank computes the same owners. Makespan ≤ 4/3 of the optimum (Graham 1969). Empty when
/// ranks < 1. A NaN cost is placed last, as −∞ would be (DistributedPartition::init refuses a
/// cost model's NaN, infinite or negative cost).
std::vector<int> assign_owners(const std::vector<double>& costs, int ranks);

/// assign_owners where parameters prefer the ranks that hold them: parameter i goes to the
/// least loaded (ties: lower rank) of the ranks whose held[i][r] — how many of its elements rank
/// r holds — is largest; an entry not of `ranks` values leaves parameter i free, as above. A
/// parameter that lies wholly on one rank is then stepped there (no traffic), one spread evenly
/// (FSDP2's row shards) goes where LPT puts it. The balance is then the layout's, not LPT's.
std::vector<int> assign_owners(const std::vector<double>& costs, int ranks,
                               const std::vector<std::vector<index_t>>& held);

/// The cost, in the cost model's unit, of one float sent from rank `from` to rank `to`, for
/// every ordered pair of `ranks` ranks: per_pair[from · ranks + to] (the diagonal is not used).
/// uniform() is one rate for every pair (DistributedPartition::set_transfer_cost); a matrix
/// tells ranks on one node from ranks on others (set_transfer_costs; measure_transfer_costs).
struct TransferCosts {
  int ranks = 0;
  std::vector<double> per_pair;
  static TransferCosts uniform(int ranks, double per_float) {
    const auto r = static_cast<std::size_t>(ranks < 0 ? 0 : ranks);
    return {ranks, std::vector<double>(r * r, per_float)};
  }
  double operator()(std::size_t from, std::size_t to) const {
    return per_pair[from * static_cast<std::size_t>(ranks) + to];
  }
  /// nullptr when usable: ranks ≥ 1, ranks² entries, every entry off the diagonal finite and ≥ 0.
  const char* check() const noexcept;
};

/// The step an assignment gives in a simple model of the distributed step (cost units): the
/// owners compute in parallel, so the work takes as long as the largest rank's `work`; the
/// gathers and scatters of sharded parameters run one after another around it, each as long as
/// the floats through its owner take: for each rank r ≠ owner o holding e_r of its elements,
/// e_r · (2·c(r, o) + c(o, r)) (the parameter and the gradient in, the update out) — with one
/// rate c, 3·c per element the owner does not hold. Replicated parameters' all-gather moves the
/// same floats whichever rank computes them and is left out.
struct ModelledStep {
  std::vector<double> work;  ///< per rank: the costs of the parameters it owns
  double exchange = 0.0;     ///< the gathers and scatters
  double time() const {
    double most = 0.0;
    for (double w : work)
      most = most > w ? most : w;
    return most + exchange;
  }
};

/// That model for given owners (−1: stepped where it lies, no work for an owner, no exchange;
/// an owner ≥ ranks counts nowhere either). held[i][r]: elements of parameter i on rank r
/// (`ranks` values); an entry not of `ranks` values is a parameter that is not exchanged
/// (replicated). ranks < 1: no work entries; a per_float or `transfer` that is not usable (as
/// assign_owners_with_transfers refuses it): exchange NaN, so that time() is NaN.
ModelledStep modelled_step(const std::vector<double>& costs, int ranks, const std::vector<int>& owners,
                           const std::vector<std::vector<index_t>>& held, double per_float);
/// The same with a cost per pair of ranks (`transfer.ranks` == ranks, transfer.check() passed).
ModelledStep modelled_step(const std::vector<double>& costs, int ranks, const std::vector<int>& owners,
                           const std::vector<std::vector<index_t>>& held, const TransferCosts& transfer);

/// Owners that make modelled_step().time() short (OwnerChoice::transfer_aware): a matrix moves
/// away from where it lies only when the balance gained pays for its transfer. A heuristic:
/// three starts — assign_owners(costs, ranks, held) (where the parameters lie), LPT with the
/// exchange counted (parameters by decreasing cost, each to the rank giving the shortest
/// modelled step so far), and assign_owners(costs, ranks) (LPT) — each improved by local search
/// (repeatedly the single move of one parameter to the least loaded rank that lowers the
/// modelled time the most; at most 2·parameters + 8 moves); the shortest wins (ties: the
/// earlier start), timed by modelled_step() itself, with the two plain assignments as candidates
/// too. Its modelled time is therefore never longer than either assign_owners's, to the last
/// bit. On the test's random instances (3–7 parameters on 2–3 ranks; 8 on 4) it comes 0.8 % (2.1 %) above
/// the exhaustive optimum on average and 16 % (23 %) at worst; LPT with the exchange counted
/// alone can do worse than both plain assignments (docs/distributed.md, "Choosing owners").
/// per_float = 0 balances the work alone; a per_float so large that any transfer outweighs all
/// the work keeps every exchanged parameter on a rank holding the most of it. Deterministic;
/// Empty when ranks < 1 or per_float is negative or not finite. Cost: O(moves · (parameters +
/// ranks)).
std::vector<int> assign_owners_with_transfers(const std::vector<double>& costs, int ranks,
                                              const std::vector<std::vector<index_t>>& held,
                                              double per_float);
/// The same with a cost per pair of ranks (`transfer.ranks` == ranks, transfer.check() passed):
/// on two nodes whose link is dear, a matrix held on one node is computed on that node unless
/// the balance gained pays for the dear transfer. Empty when ranks < 1 or `transfer` is for
/// another rank count or fails check(). Cost: O(parameters · ranks²) to tabulate each
/// parameter's exchange under each owner, then the search above.
std::vector<int> assign_owners_with_transfers(const std::vector<double>& costs, int ranks,
                                              const std::vector<std::vector<index_t>>& held,
                                              const TransferCosts& transfer);

/// A checkpoint's fields and header as bytes (little-endian host layout; for the transfer
/// between ranks of one job, not a file format) and back. deserialize returns false on a
/// malformed buffer.
std::vector<char> serialize(const io::FieldSet& fields, const io::CheckpointHeader* header);
bool deserialize(const std::vector<char>& bytes, io::FieldSet& fields, io::CheckpointHeader* header);

}  // namespace schatten::distributed
