// SPDX-License-Identifier: Apache-2.0
/// \file
/// Rules that fail on purpose, for the all-or-nothing tests of chains and partitions.
#pragma once

#include <cstdint>
#include <tuple>
#include <vector>

#include "schatten/optim/chain.hpp"
#include "schatten/optim/rule.hpp"

namespace schatten::test {

/// Fails (out_of_memory, as a kernel whose allocation failed would) at its `fail_at`-th call,
/// after counting it; touches no memory, so it is device-capable (rule.hpp).
struct FailOnCall {
  static constexpr const char* name = "fail_on_call";
  static constexpr bool may_fail = true;
  static constexpr bool device_capable = true;
  std::int64_t fail_at = 2;
  struct State {
    std::int64_t count = 0;
  };
  State init(const optim::BlockShape&) const { return {}; }
  Status update(optim::Block, State& s, optim::ConstBlock) const {
    return ++s.count == fail_at ? Status::out_of_memory : Status::ok;
  }
  template <class V>
  friend void visit_fields(V& v, State& s) {
    v("count", s.count);
  }
};

/// Fails (breakdown) when the gradient's first element is 12345: a failure that only the rank
/// owning the parameter sees, at the step the caller chooses. Otherwise u ← −0.01·u and a count.
struct FailOnMagic {
  static constexpr const char* name = "fail_on_magic";
  static constexpr bool may_fail = true;
  static constexpr float magic = 12345.0f;
  struct State {
    std::int64_t count = 0;
  };
  State init(const optim::BlockShape&) const { return {}; }
  Status update(optim::Block u, State& s, optim::ConstBlock) const {
    if (u.size() > 0 && u.data[0] == magic) return Status::breakdown;
    optim::scale(u, -0.01f);
    ++s.count;
    return Status::ok;
  }
  template <class V>
  friend void visit_fields(V& v, State& s) {
    v("count", s.count);
  }
};

/// Copies the block into a fresh host vector and back on every call (u unchanged), counting
/// calls: an allocation inside a rule's update, as a kernel with per-call host vectors makes,
/// for the heap-exhaustion sweeps now that the library's kernels make none in a steady state. A
/// refused allocation throws std::bad_alloc before anything is written. Host memory only.
struct AllocatesPerCall {
  static constexpr const char* name = "allocates_per_call";
  static constexpr bool may_fail = true;  // its allocation
  struct State {
    std::int64_t count = 0;
  };
  State init(const optim::BlockShape&) const { return {}; }
  Status update(optim::Block u, State& s, optim::ConstBlock) const {
    const std::vector<float> copy(u.data, u.data + u.size());
    for (std::size_t e = 0; e < copy.size(); ++e)
      u.data[e] = copy[e];
    ++s.count;
    return Status::ok;
  }
  template <class V>
  friend void visit_fields(V& v, State& s) {
    v("count", s.count);
  }
};

/// `c` (an optim::chain) with AllocatesPerCall appended as its last link: the chain's updates,
/// then an allocation per call, for the heap-exhaustion sweeps.
template <class Chain>
auto ending_in_allocation(const Chain& c) {
  return std::apply([](const auto&... r) { return optim::chain(r..., AllocatesPerCall{}); }, c.rules());
}

}  // namespace schatten::test
