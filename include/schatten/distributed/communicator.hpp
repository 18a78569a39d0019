// SPDX-License-Identifier: Apache-2.0
/// \file
/// The collective operations the distributed optimizer step needs, over an MPI communicator
/// (library schatten::mpi). No MPI type appears here: a Communicator is made from an MPI_Comm
/// by communicator() in <schatten/distributed/mpi_comm.hpp>, or is MPI_COMM_WORLD (world()).
///
/// Every operation is collective over the communicator unless it says otherwise: all ranks call
/// it in the same order with matching sizes. Element counts are 64-bit here; calls whose counts
/// do not fit MPI's int are split into pieces where the operation allows it (bcast, send/recv,
/// the float and double sums) and refused otherwise (allgatherv/gatherv/scatterv: ≤ 2³¹ − 1 elements in all,
/// checked by the caller, DistributedPartition::init).
///
/// **Memory.** allreduce_*, reduce_scatter_sum, allgather(v), gatherv, scatterv, bcast, send,
/// recv and gather_bytes_into allocate nothing on the host (MPI's int counts go into buffers
/// made with the communicator), so a rank whose heap is exhausted still reaches them;
/// gather_bytes, bcast_bytes and bcast_string allocate. One thread at a time per communicator
/// (copies share those buffers), as MPI's collectives on one communicator require anyway.
///
/// **Traffic.** Each Communicator counts the payload bytes that arrive at this rank (what a
/// direct algorithm must deliver to it; an MPI library's tree or ring algorithms forward more
/// between ranks, and shared-memory transports copy instead of sending). Copies share the
/// counter.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace schatten::distributed {

/// Payload bytes received by this rank since the last reset (see the file comment).
struct Traffic {
  std::int64_t bytes_received = 0;
  std::int64_t messages = 0;  ///< collective or point-to-point operations that moved data here
};

/// A handle on an MPI communicator (not owned: the caller keeps it alive and frees it).
class Communicator {
 public:
  struct Impl;
  /// MPI_COMM_WORLD. Precondition: MPI is initialised (MPI_Init) and not finalised.
  static Communicator world();
  explicit Communicator(std::shared_ptr<Impl> impl);

  int rank() const;
  int size() const;

  /// The smallest of every rank's `v` (every rank gets it).
  std::int64_t allreduce_min(std::int64_t v) const;
  /// Element-wise maximum / sum over ranks of `n` int64 values, in place.
  void allreduce_max(std::int64_t* v, std::size_t n) const;
  void allreduce_sum(std::int64_t* v, std::size_t n) const;
  /// Element-wise sum over ranks of `n` floats or doubles, in place (MPI_Allreduce, MPI_SUM;
  /// MPI leaves the order of the additions to the implementation).
  void allreduce_sum(float* v, std::size_t n) const;
  void allreduce_sum(double* v, std::size_t n) const;
  /// In place: block r is buf[displs[r], displs[r] + counts[r]) with displs[r] = Σ_{s<r} counts[s];
  /// afterwards this rank's block holds the element-wise sum over ranks of their blocks of that
  /// rank (MPI_Reduce_scatter), the other blocks unspecified. Σ counts ≤ 2³¹ − 1 (the caller checks).
  void reduce_scatter_sum(float* buf, const std::vector<std::int64_t>& counts) const;
  /// out[r·n + k] = rank r's in[k] (every rank gets all); `out` has size()·n elements.
  void allgather(const std::int64_t* in, std::size_t n, std::int64_t* out) const;
  /// In place: rank r's block is buf[displs[r], displs[r] + counts[r]); afterwards every rank
  /// holds every block.
  void allgatherv(float* buf, const std::vector<std::int64_t>& counts,
                  const std::vector<std::int64_t>& displs) const;
  /// Rank r's `send` (counts[r] floats) lands at root's recv + displs[r] (recv used at root only).
  void gatherv(const float* send, float* recv, const std::vector<std::int64_t>& counts,
               const std::vector<std::int64_t>& displs, int root) const;
  /// Root's send + displs[r] (counts[r] floats) lands in rank r's `recv`.
  void scatterv(const float* send, float* recv, const std::vector<std::int64_t>& counts,
                const std::vector<std::int64_t>& displs, int root) const;
  /// Root's n bytes at `data` are copied to every rank's `data`.
  void bcast(void* data, std::size_t n, int root) const;
  /// Point-to-point (not collective): n floats to / from one rank.
  void send(const float* data, std::size_t n, int dest, int tag) const;
  void recv(float* data, std::size_t n, int source, int tag) const;
  /// Every rank's byte string, in rank order, at `root` (empty elsewhere).
  std::vector<std::vector<char>> gather_bytes(const std::vector<char>& mine, int root) const;
  /// gather_bytes into buffers the caller sized (from an allgather of the sizes): at `root`,
  /// all[r] for r ≠ root has exactly rank r's byte count and receives its bytes (all[root] is
  /// not touched); elsewhere `all` is not used. Allocates nothing, for callers that agree on
  /// their allocations before each collective (distributed checkpoints).
  void gather_bytes_into(const std::vector<char>& mine, std::vector<std::vector<char>>& all, int root) const;
  /// Root's byte string on every rank (resized on the others).
  void bcast_bytes(std::vector<char>& bytes, int root) const;
  /// A string from `root` to every rank.
  std::string bcast_string(const std::string& s, int root) const;

  Traffic traffic() const;
  void reset_traffic() const;

  const Impl& impl() const { return *impl_; }

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace schatten::distributed
