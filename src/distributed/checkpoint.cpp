// SPDX-License-Identifier: Apache-2.0
/// \file
/// The collective parts of the distributed checkpoints (include/schatten/distributed/mpi_step.hpp):
/// fields to rank 0, the file written or read there, the outcome to every rank.
#include <algorithm>
#include <cstdint>

#include "schatten/distributed/mpi_step.hpp"

namespace schatten::distributed::detail {

io::FieldSet gather_fields(const Communicator& comm, const io::FieldSet& mine) {
  const std::vector<std::vector<char>> parts = comm.gather_bytes(serialize(mine, nullptr), 0);
  io::FieldSet all;
  for (const std::vector<char>& b : parts) {  // in rank order
    io::FieldSet f;
    if (!deserialize(b, f, nullptr)) continue;  // written by serialize() of the same build
    for (auto& [name, value] : f) {
      auto [at, fresh] = all.emplace(name, value);
      if (fresh) continue;
      // A field of a parameter stepped by rows, held by several ranks: its buffers are the
      // ranks' rows, appended in rank order; its scalars are equal everywhere (the lowest
      // rank's is kept).
      auto* whole = std::get_if<std::vector<float>>(&at->second);
      const auto* rows = std::get_if<std::vector<float>>(&value);
      if (whole && rows) whole->insert(whole->end(), rows->begin(), rows->end());
    }
  }
  return all;
}

void average_fields(const Communicator& comm, io::FieldSet& fields, const std::vector<std::string>& bf16) {
  const double n = static_cast<double>(comm.size());
  std::vector<double> sum;
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
}

Status write_on_root(const Communicator& comm, const std::string& path, const io::FieldSet& fields,
                     const io::CheckpointHeader& header, std::string* error) {
  std::string message;
  std::int64_t status = 0;
  if (comm.rank() == 0)
    status = static_cast<std::int64_t>(io::write_checkpoint(path, fields, header, &message));
  comm.bcast(&status, sizeof status, 0);
  if (status != 0) {
    message = comm.bcast_string(message, 0);
    if (error) *error = message;
  }
  return static_cast<Status>(status);
}

Status broadcast_checkpoint(const Communicator& comm, const std::string& path, io::FieldSet& fields,
                            io::CheckpointHeader& header, std::string* error) {
  std::vector<char> bytes;
  std::string message;
  std::int64_t status = 0;
  if (comm.rank() == 0) {
    io::FieldSet f;
    io::CheckpointHeader h;
    status = static_cast<std::int64_t>(io::read_checkpoint(path, f, h, &message));
    if (status == 0) bytes = serialize(f, &h);
  }
  comm.bcast(&status, sizeof status, 0);
  if (status != 0) {
    message = comm.bcast_string(message, 0);
    if (error) *error = message;
    return static_cast<Status>(status);
  }
  comm.bcast_bytes(bytes, 0);
  io::FieldSet f;
  io::CheckpointHeader h;
  if (!deserialize(bytes, f, &h)) {  // cannot happen between ranks of one build
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
