// SPDX-License-Identifier: Apache-2.0
/// \file
/// The collectives of include/schatten/distributed/communicator.hpp on MPI. MPI errors follow
/// the communicator's error handler (MPI_ERRORS_ARE_FATAL unless the caller set another).
#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "schatten/distributed/mpi_comm.hpp"

namespace schatten::distributed {

struct Communicator::Impl {
  MPI_Comm comm = MPI_COMM_NULL;
  int rank = 0, size = 1;
  Traffic traffic;
  /// MPI's int counts and displacements of the v-collectives, one per rank, allocated with the
  /// communicator: a collective allocates nothing, so that a rank whose heap is exhausted cannot
  /// fail before a collective the others have entered (docs/distributed.md "How a step works").
  std::vector<int> counts, displs;
  void received(std::int64_t bytes) {
    if (bytes > 0) {
      traffic.bytes_received += bytes;
      ++traffic.messages;
    }
  }
};

namespace {

// MPI counts are int; larger messages go in pieces of at most this many elements.
constexpr std::size_t kPiece = std::size_t(1) << 30;

/// v (one entry per rank) as MPI's ints, into `out` (sized for the ranks). The callers' counts
/// are the same on every rank (DistributedPartition::init checks the totals), so a count beyond
/// int throws on every rank alike.
const int* to_int(const std::vector<std::int64_t>& v, std::vector<int>& out) {
  if (v.size() != out.size()) throw std::invalid_argument("schatten::distributed: one count per rank");
  for (std::size_t k = 0; k < v.size(); ++k) {
    if (v[k] < 0 || v[k] > INT_MAX) throw std::length_error("schatten::distributed: count exceeds MPI's int");
    out[k] = static_cast<int>(v[k]);
  }
  return out.data();
}

}  // namespace

Communicator communicator(MPI_Comm comm) {
  auto impl = std::make_shared<Communicator::Impl>();
  impl->comm = comm;
  MPI_Comm_rank(comm, &impl->rank);
  MPI_Comm_size(comm, &impl->size);
  impl->counts.assign(static_cast<std::size_t>(impl->size), 0);
  impl->displs.assign(static_cast<std::size_t>(impl->size), 0);
  return Communicator(std::move(impl));
}

Communicator Communicator::world() { return communicator(MPI_COMM_WORLD); }
Communicator::Communicator(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
int Communicator::rank() const { return impl_->rank; }
int Communicator::size() const { return impl_->size; }
Traffic Communicator::traffic() const { return impl_->traffic; }
void Communicator::reset_traffic() const { impl_->traffic = Traffic{}; }

std::int64_t Communicator::allreduce_min(std::int64_t v) const {
  std::int64_t r = v;
  MPI_Allreduce(&v, &r, 1, MPI_INT64_T, MPI_MIN, impl_->comm);
  if (impl_->size > 1) impl_->received(8);
  return r;
}

void Communicator::allreduce_max(std::int64_t* v, std::size_t n) const {
  MPI_Allreduce(MPI_IN_PLACE, v, static_cast<int>(n), MPI_INT64_T, MPI_MAX, impl_->comm);
  if (impl_->size > 1) impl_->received(static_cast<std::int64_t>(8 * n));
}

void Communicator::allreduce_sum(std::int64_t* v, std::size_t n) const {
  MPI_Allreduce(MPI_IN_PLACE, v, static_cast<int>(n), MPI_INT64_T, MPI_SUM, impl_->comm);
  if (impl_->size > 1) impl_->received(static_cast<std::int64_t>(8 * n));
}

void Communicator::allreduce_sum(float* v, std::size_t n) const {
  for (std::size_t at = 0; at < n; at += kPiece) {
    const std::size_t len = std::min(kPiece, n - at);
    MPI_Allreduce(MPI_IN_PLACE, v + at, static_cast<int>(len), MPI_FLOAT, MPI_SUM, impl_->comm);
  }
  if (impl_->size > 1) impl_->received(static_cast<std::int64_t>(4 * n));
}

void Communicator::allreduce_sum(double* v, std::size_t n) const {
  for (std::size_t at = 0; at < n; at += kPiece) {
    const std::size_t len = std::min(kPiece, n - at);
    MPI_Allreduce(MPI_IN_PLACE, v + at, static_cast<int>(len), MPI_DOUBLE, MPI_SUM, impl_->comm);
  }
  if (impl_->size > 1) impl_->received(static_cast<std::int64_t>(8 * n));
}

void Communicator::reduce_scatter_sum(float* buf, const std::vector<std::int64_t>& counts) const {
  const int* c = to_int(counts, impl_->counts);
  std::int64_t at = 0;
  for (int r = 0; r < impl_->rank; ++r)
    at += counts[static_cast<std::size_t>(r)];
  const int mine = c[impl_->rank];
  // In place, MPI puts this rank's block at the start of buf: moved to its own place after.
  MPI_Reduce_scatter(MPI_IN_PLACE, buf, c, MPI_FLOAT, MPI_SUM, impl_->comm);
  if (at > 0 && mine > 0) std::memmove(buf + at, buf, sizeof(float) * static_cast<std::size_t>(mine));
  if (impl_->size > 1) impl_->received(4 * static_cast<std::int64_t>(mine));
}

void Communicator::allgather(const std::int64_t* in, std::size_t n, std::int64_t* out) const {
  MPI_Allgather(in, static_cast<int>(n), MPI_INT64_T, out, static_cast<int>(n), MPI_INT64_T, impl_->comm);
  impl_->received(static_cast<std::int64_t>(8 * n) * (impl_->size - 1));
}

void Communicator::allgatherv(float* buf, const std::vector<std::int64_t>& counts,
                              const std::vector<std::int64_t>& displs) const {
  const int *c = to_int(counts, impl_->counts), *d = to_int(displs, impl_->displs);
  MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, c, d, MPI_FLOAT, impl_->comm);
  std::int64_t others = 0;
  for (int r = 0; r < impl_->size; ++r)
    if (r != impl_->rank) others += counts[static_cast<std::size_t>(r)];
  impl_->received(4 * others);
}

void Communicator::gatherv(const float* send, float* recv, const std::vector<std::int64_t>& counts,
                           const std::vector<std::int64_t>& displs, int root) const {
  const int *c = to_int(counts, impl_->counts), *d = to_int(displs, impl_->displs);
  MPI_Gatherv(send, c[impl_->rank], MPI_FLOAT, recv, c, d, MPI_FLOAT, root, impl_->comm);
  if (impl_->rank == root) {
    std::int64_t others = 0;
    for (int r = 0; r < impl_->size; ++r)
      if (r != root) others += counts[static_cast<std::size_t>(r)];
    impl_->received(4 * others);
  }
}

void Communicator::scatterv(const float* send, float* recv, const std::vector<std::int64_t>& counts,
                            const std::vector<std::int64_t>& displs, int root) const {
  const int *c = to_int(counts, impl_->counts), *d = to_int(displs, impl_->displs);
  MPI_Scatterv(send, c, d, MPI_FLOAT, recv, c[impl_->rank], MPI_FLOAT, root, impl_->comm);
  if (impl_->rank != root) impl_->received(4 * counts[static_cast<std::size_t>(impl_->rank)]);
}

void Communicator::bcast(void* data, std::size_t n, int root) const {
  auto* p = static_cast<char*>(data);
  for (std::size_t off = 0; off < n; off += kPiece)
    MPI_Bcast(p + off, static_cast<int>(std::min(kPiece, n - off)), MPI_BYTE, root, impl_->comm);
  if (impl_->rank != root) impl_->received(static_cast<std::int64_t>(n));
}

void Communicator::send(const float* data, std::size_t n, int dest, int tag) const {
  for (std::size_t off = 0; off < n; off += kPiece)
    MPI_Send(data + off, static_cast<int>(std::min(kPiece, n - off)), MPI_FLOAT, dest, tag, impl_->comm);
}

void Communicator::recv(float* data, std::size_t n, int source, int tag) const {
  for (std::size_t off = 0; off < n; off += kPiece)
    MPI_Recv(data + off, static_cast<int>(std::min(kPiece, n - off)), MPI_FLOAT, source, tag, impl_->comm,
             MPI_STATUS_IGNORE);
  impl_->received(static_cast<std::int64_t>(4 * n));
}

std::vector<std::vector<char>> Communicator::gather_bytes(const std::vector<char>& mine, int root) const {
  const auto n = static_cast<std::int64_t>(mine.size());
  std::vector<std::int64_t> sizes(static_cast<std::size_t>(impl_->size), 0);
  allgather(&n, 1, sizes.data());
  std::vector<std::vector<char>> all;
  if (impl_->rank == root)
    for (int r = 0; r < impl_->size; ++r)
      all.push_back(
          r == root ? mine : std::vector<char>(static_cast<std::size_t>(sizes[static_cast<std::size_t>(r)])));
  gather_bytes_into(mine, all, root);
  return all;
}

void Communicator::gather_bytes_into(const std::vector<char>& mine, std::vector<std::vector<char>>& all,
                                     int root) const {
  constexpr int kTag = 7301;
  if (impl_->rank != root) {
    for (std::size_t off = 0; off < mine.size(); off += kPiece)
      MPI_Send(mine.data() + off, static_cast<int>(std::min(kPiece, mine.size() - off)), MPI_BYTE, root, kTag,
               impl_->comm);
    return;
  }
  for (int r = 0; r < impl_->size; ++r) {
    if (r == root) continue;
    auto& b = all[static_cast<std::size_t>(r)];
    for (std::size_t off = 0; off < b.size(); off += kPiece)
      MPI_Recv(b.data() + off, static_cast<int>(std::min(kPiece, b.size() - off)), MPI_BYTE, r, kTag,
               impl_->comm, MPI_STATUS_IGNORE);
    impl_->received(static_cast<std::int64_t>(b.size()));
  }
}

void Communicator::bcast_bytes(std::vector<char>& bytes, int root) const {
  std::int64_t n = static_cast<std::int64_t>(bytes.size());
  bcast(&n, sizeof n, root);
  bytes.resize(static_cast<std::size_t>(n));
  bcast(bytes.data(), bytes.size(), root);
}

std::string Communicator::bcast_string(const std::string& s, int root) const {
  std::vector<char> b(s.begin(), s.end());
  bcast_bytes(b, root);
  return std::string(b.begin(), b.end());
}

}  // namespace schatten::distributed
