// SPDX-License-Identifier: Apache-2.0
/// \file
/// A rule that fails on purpose, for the all-or-nothing tests of chains and partitions.
#pragma once

#include <cstdint>

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

}  // namespace schatten::test
