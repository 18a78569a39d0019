// SPDX-License-Identifier: Apache-2.0
/// \file
/// Row split, cost model, owner assignment and field serialisation of
/// include/schatten/distributed/assignment.hpp.
#include "schatten/distributed/assignment.hpp"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "schatten/kernels/polar.hpp"
#include "schatten/optim/presets.hpp"

namespace schatten::distributed {

RowRange shard_rows(index_t rows, int rank, int ranks) {
  const index_t chunk = (rows + ranks - 1) / ranks;
  return {std::min(index_t(rank) * chunk, rows), std::min(index_t(rank + 1) * chunk, rows)};
}

std::vector<index_t> chunk_bounds(index_t rows, int ranks) {
  std::vector<index_t> b(1, 0);
  for (int r = 0; r < ranks; ++r)
    b.push_back(shard_rows(rows, r, ranks).end);
  return b;
}

std::vector<std::vector<index_t>> flat_bounds(const std::vector<index_t>& offsets,
                                              const std::vector<index_t>& sizes,
                                              const std::vector<index_t>& buffer_bounds) {
  if (offsets.size() != sizes.size()) return {{-1}};  // refused by init(), see the header
  std::vector<std::vector<index_t>> out(sizes.size());
  for (std::size_t i = 0; i < out.size(); ++i)
    for (index_t t : buffer_bounds)
      out[i].push_back(std::clamp(t - offsets[i], index_t(0), std::max(sizes[i], index_t(0))));
  return out;
}

FlatBuffer reversed_flat_buffer(const std::vector<index_t>& sizes, index_t align, int ranks) {
  FlatBuffer b;
  b.offsets.resize(sizes.size());
  index_t end = 0;
  for (std::size_t k = sizes.size(); k-- > 0;) {
    b.offsets[k] = (end + align - 1) / align * align;
    end = b.offsets[k] + sizes[k];
  }
  const index_t quantum = align * index_t(ranks);
  b.size = (end + quantum - 1) / quantum * quantum;
  b.parts = chunk_bounds(b.size, ranks);
  b.bounds = flat_bounds(b.offsets, sizes, b.parts);
  return b;
}

double default_cost(const optim::BlockShape& s, bool matrix_function) {
  double c = 64.0 * double(s.size());
  if (matrix_function && s.rows >= 2 && s.cols >= 2)
    c += polar_flops(s.rows, s.cols, optim::MuonOptions::keller_polar());
  return c;
}

std::vector<int> assign_owners(const std::vector<double>& costs, int ranks) {
  return assign_owners(costs, ranks, {});
}

std::vector<int> assign_owners(const std::vector<double>& costs, int ranks,
                               const std::vector<std::vector<index_t>>& held) {
  std::vector<std::size_t> order(costs.size());
  std::iota(order.begin(), order.end(), std::size_t(0));
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return costs[a] > costs[b]; });
  std::vector<double> load(static_cast<std::size_t>(ranks), 0.0);
  std::vector<int> owner(costs.size(), 0);
  for (std::size_t i : order) {
    // The candidates: the ranks holding the most of parameter i, or every rank.
    const std::vector<index_t>* h =
        i < held.size() && held[i].size() == static_cast<std::size_t>(ranks) ? &held[i] : nullptr;
    const index_t most = h ? *std::max_element(h->begin(), h->end()) : 0;
    std::size_t best = load.size();
    for (std::size_t r = 0; r < load.size(); ++r)
      if ((!h || (*h)[r] == most) && (best == load.size() || load[r] < load[best])) best = r;
    owner[i] = static_cast<int>(best);
    load[best] += costs[i];
  }
  return owner;
}

namespace {

template <class T>
void put(std::vector<char>& b, const T& v) {
  const std::size_t at = b.size();
  b.resize(at + sizeof(T));
  std::memcpy(b.data() + at, &v, sizeof(T));
}
void put_bytes(std::vector<char>& b, const void* p, std::size_t n) {
  const std::size_t at = b.size();
  b.resize(at + n);
  if (n) std::memcpy(b.data() + at, p, n);
}
void put_string(std::vector<char>& b, const std::string& s) {
  put(b, std::uint64_t(s.size()));
  put_bytes(b, s.data(), s.size());
}

struct Reader {
  const std::vector<char>& b;
  std::size_t at = 0;
  bool ok = true;
  template <class T>
  T get() {
    T v{};
    if (at + sizeof(T) > b.size()) {
      ok = false;
      return v;
    }
    std::memcpy(&v, b.data() + at, sizeof(T));
    at += sizeof(T);
    return v;
  }
  std::string get_string() {
    const auto n = get<std::uint64_t>();
    if (!ok || n > b.size() - at) {
      ok = false;
      return {};
    }
    std::string s(b.data() + at, n);
    at += n;
    return s;
  }
};

}  // namespace

std::vector<char> serialize(const io::FieldSet& fields, const io::CheckpointHeader* header) {
  std::vector<char> b;
  put(b, std::uint8_t(header ? 1 : 0));
  if (header) {
    put(b, std::int64_t(header->schema_version));
    put(b, header->step);
    put_string(b, header->signature);
    put(b, std::uint8_t(header->rng ? 1 : 0));
    if (header->rng) {
      for (std::uint64_t w : header->rng->words)
        put(b, w);
      put(b, header->rng->spare);
      put(b, std::uint8_t(header->rng->has_spare ? 1 : 0));
    }
  }
  put(b, std::uint64_t(fields.size()));
  for (const auto& [name, value] : fields) {
    put_string(b, name);
    put(b, std::uint8_t(value.index()));
    if (const auto* i = std::get_if<std::int64_t>(&value)) {
      put(b, *i);
    } else if (const auto* d = std::get_if<double>(&value)) {
      put(b, *d);
    } else {
      const auto& v = std::get<std::vector<float>>(value);
      put(b, std::uint64_t(v.size()));
      put_bytes(b, v.data(), v.size() * sizeof(float));
    }
  }
  return b;
}

bool deserialize(const std::vector<char>& bytes, io::FieldSet& fields, io::CheckpointHeader* header) {
  Reader r{bytes};
  const bool has_header = r.get<std::uint8_t>() != 0;
  io::CheckpointHeader h;
  if (has_header) {
    h.schema_version = static_cast<int>(r.get<std::int64_t>());
    h.step = r.get<std::int64_t>();
    h.signature = r.get_string();
    if (r.get<std::uint8_t>() != 0) {
      Rng::State s;
      for (std::uint64_t& w : s.words)
        w = r.get<std::uint64_t>();
      s.spare = r.get<double>();
      s.has_spare = r.get<std::uint8_t>() != 0;
      h.rng = s;
    }
  }
  io::FieldSet f;
  const auto n = r.get<std::uint64_t>();
  for (std::uint64_t k = 0; k < n && r.ok; ++k) {
    std::string name = r.get_string();
    const auto type = r.get<std::uint8_t>();
    if (type == 0) {
      f[name] = r.get<std::int64_t>();
    } else if (type == 1) {
      f[name] = r.get<double>();
    } else if (type == 2) {
      const auto m = r.get<std::uint64_t>();
      if (!r.ok || m > (bytes.size() - r.at) / sizeof(float)) return false;
      std::vector<float> v(m);
      if (m) std::memcpy(v.data(), bytes.data() + r.at, m * sizeof(float));
      r.at += m * sizeof(float);
      f[name] = std::move(v);
    } else {
      return false;
    }
  }
  if (!r.ok || r.at != bytes.size()) return false;
  fields = std::move(f);
  if (header && has_header) *header = std::move(h);
  return true;
}

}  // namespace schatten::distributed
