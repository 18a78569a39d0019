// SPDX-License-Identifier: Apache-2.0
/// \file
/// The collective parts of the distributed checkpoints (include/schatten/distributed/mpi_step.hpp):
/// fields to rank 0, the file written or read there, the outcome to every rank.
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <new>

#include "schatten/distributed/mpi_step.hpp"

namespace schatten::distributed::detail {

namespace {

/// Rank 0's merge of the ranks' serialised parts, in rank order (gather_fields).
void merge_parts(const std::vector<std::vector<char>>& parts, io::FieldSet& all) {
  all.clear();
  for (const std::vector<char>& b : parts) {  // in rank order
    io::FieldSet f;
    if (!deserialize(b, f, nullptr)) continue;  // written by serialize() of the same build
    for (auto& [name, value] : f) {
      // Moved in, not copied (detail::copied says why); try_emplace leaves `value` alone when
      // the name is there already.
      auto [at, fresh] = all.try_emplace(name, std::move(value));
      if (fresh) continue;
      // A field of a parameter stepped by rows, held by several ranks: its buffers are the
      // ranks' rows, appended in rank order; its scalars are equal everywhere (the lowest
      // rank's is kept).
      auto* whole = std::get_if<std::vector<float>>(&at->second);
      const auto* rows = std::get_if<std::vector<float>>(&value);
      if (whole && rows) whole->insert(whole->end(), rows->begin(), rows->end());
    }
  }
}

}  // namespace

Status gather_fields(const Communicator& comm, const io::FieldSet& mine, io::FieldSet& all) {
  const bool root = comm.rank() == 0;
  const auto n = static_cast<std::size_t>(comm.size());
  std::vector<char> bytes;
  std::vector<std::int64_t> sizes;
  if (!on_every_rank(comm, locally([&] {
                       bytes = serialize(mine, nullptr);
                       sizes.assign(n, 0);
                     })))
    return Status::out_of_memory;
  const auto count = static_cast<std::int64_t>(bytes.size());
  comm.allgather(&count, 1, sizes.data());
  std::vector<std::vector<char>> parts;  // rank 0's receive buffers, sized before any data moves
  if (!on_every_rank(comm, !root || locally([&] {
                       parts.resize(n);
                       for (std::size_t r = 1; r < n; ++r)
                         parts[r].resize(static_cast<std::size_t>(sizes[r]));
                     })))
    return Status::out_of_memory;
  comm.gather_bytes_into(bytes, parts, 0);
  if (root) parts[0] = std::move(bytes);
  const bool merged = !root || locally([&] { merge_parts(parts, all); });
  if (!on_every_rank(comm, merged)) {
    all.clear();
    return Status::out_of_memory;
  }
  return Status::ok;
}

Status average_fields(const Communicator& comm, io::FieldSet& fields, const std::vector<std::string>& bf16) {
  const double n = static_cast<double>(comm.size());
  std::vector<double> sum;
  std::size_t largest = 0;
  for (const auto& [name, value] : fields)
    if (const auto* v = std::get_if<std::vector<float>>(&value)) largest = std::max(largest, v->size());
  // The sums' buffer once, agreed: the loop below allocates nothing (assign within capacity).
  if (!on_every_rank(comm, locally([&] { sum.reserve(largest); }))) return Status::out_of_memory;
  for (auto& [name, value] : fields) {  // in name order, the same on every rank
    auto* v = std::get_if<std::vector<float>>(&value);
    if (!v || v->empty()) continue;
    sum.assign(v->begin(), v->end());
    comm.allreduce_sum(sum.data(), sum.size());
    const bool rounded = std::find(bf16.begin(), bf16.end(), name) != bf16.end();
    for (std::size_t e = 0; e < v->size(); ++e) {
      const float mean = static_cast<float>(sum[e] / n);
      (*v)[e] = rounded ? bf16_to_float(bf16_round(mean)) : mean;
    }
  }
  return Status::ok;
}

void bcast_message(const Communicator& comm, const char* message, int root, std::string* error) {
  std::array<char, 512> text{};
  if (comm.rank() == root) std::strncpy(text.data(), message, text.size() - 1);
  comm.bcast(text.data(), text.size(), root);
  if (!error) return;
  try {
    *error = text.data();
  } catch (const std::bad_alloc&) {
    error->clear();
  }
}

namespace {

/// Rank 0's failure (`status`) to every rank's *error (collective): its message, else the
/// message for running out of host memory or for another failure.
void root_failure(const Communicator& comm, std::int64_t status, const std::string& message,
                  const char* out_of_memory, const char* other, std::string* error) {
  const bool oom = status == static_cast<std::int64_t>(Status::out_of_memory);
  bcast_message(comm, !message.empty() ? message.c_str() : oom ? out_of_memory : other, 0, error);
}

}  // namespace

Status write_on_root(const Communicator& comm, const std::string& path, const io::FieldSet& fields,
                     const io::CheckpointHeader& header, std::string* error) {
  std::string message;
  std::int64_t status = 0;
  if (comm.rank() == 0 && !locally([&] {
        status = static_cast<std::int64_t>(io::write_checkpoint(path, fields, header, &message));
      })) {
    status = static_cast<std::int64_t>(Status::out_of_memory);
    message.clear();  // (no allocation)
  }
  comm.bcast(&status, sizeof status, 0);
  if (status != 0)
    root_failure(comm, status, message, "save_checkpoint: host memory ran out on rank 0",
                 "save_checkpoint: writing the file failed", error);
  return static_cast<Status>(status);
}

Status broadcast_checkpoint(const Communicator& comm, const std::string& path, io::FieldSet& fields,
                            io::CheckpointHeader& header, std::string* error) {
  std::vector<char> bytes;
  std::string message;
  std::int64_t status = 0;
  if (comm.rank() == 0 && !locally([&] {
        io::FieldSet f;
        io::CheckpointHeader h;
        status = static_cast<std::int64_t>(io::read_checkpoint(path, f, h, &message));
        if (status == 0) bytes = serialize(f, &h);
      })) {
    status = static_cast<std::int64_t>(Status::out_of_memory);
    message.clear();  // (no allocation)
  }
  comm.bcast(&status, sizeof status, 0);
  if (status != 0) {
    root_failure(comm, status, message, "load_checkpoint: host memory ran out on rank 0",
                 "load_checkpoint: reading the file failed", error);
    return static_cast<Status>(status);
  }
  // The bytes: their count, the receive buffers (agreed), then the bytes themselves.
  std::int64_t count = static_cast<std::int64_t>(bytes.size());
  comm.bcast(&count, sizeof count, 0);
  if (!on_every_rank(comm, locally([&] { bytes.resize(static_cast<std::size_t>(count)); })))
    return io::detail::out_of_memory(error, "load_checkpoint: host memory ran out on a rank");
  comm.bcast(bytes.data(), bytes.size(), 0);
  io::FieldSet f;
  io::CheckpointHeader h;
  bool read = true;  // deserialize cannot fail between ranks of one build
  if (!on_every_rank(comm, locally([&] { read = deserialize(bytes, f, &h); })))
    return io::detail::out_of_memory(error, "load_checkpoint: host memory ran out on a rank");
  if (!read) {
    if (error) *error = "checkpoint transfer between ranks was corrupted";
    return Status::internal_error;
  }
  fields = std::move(f);
  header = std::move(h);
  return Status::ok;
}

std::ptrdiff_t param_of_field(const std::vector<optim::ParamSpec>& params, const std::string& field) {
  std::ptrdiff_t best = -1;
  std::size_t best_len = 0;
  for (std::size_t i = 0; i < params.size(); ++i) {
    const std::string& n = params[i].name;
    if (field.size() > n.size() && field.compare(0, n.size(), n) == 0 && field[n.size()] == '/' &&
        (best < 0 || n.size() > best_len)) {
      best = static_cast<std::ptrdiff_t>(i);
      best_len = n.size();
    }
  }
  return best;
}

}  // namespace schatten::distributed::detail
