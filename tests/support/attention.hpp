// SPDX-License-Identifier: Apache-2.0
/// \file
/// The attention weights of the row-shard QK-clip tests (tests/optim/test_qk_clip.cpp, one
/// process; tests/distributed/test_mpi_step.cpp, MPI ranks): layer l0 is Megatron-Core's gated
/// linear_qkv (rows cut by row shards), layer l1 GPT-2's fused c_attn Conv1D with its bias
/// (column slices, present in every held row). hidden 8, 4 heads, 2 key heads, head_dim 3.
#pragma once

#include <vector>

#include "schatten/optim/qk_clip.hpp"

namespace schatten::test {

struct ShardedAttention {
  static constexpr index_t hidden = 8, heads = 4, kv_heads = 2, head_dim = 3;
  std::vector<optim::ParamSpec> specs = {
      {"l0.linear_qkv.weight", {(2 * heads + 2 * kv_heads) * head_dim, hidden}},
      {"l1.c_attn.weight", {hidden, (heads + 2 * kv_heads) * head_dim}},
      {"l1.c_attn.bias", {(heads + 2 * kv_heads) * head_dim}}};
  std::vector<optim::QkLayer> layers = {
      optim::qk_grouped("l0", "l0.linear_qkv.weight", heads, kv_heads, head_dim, true),
      optim::with_bias(optim::qk_fused("l1", "l1.c_attn.weight", heads, kv_heads, head_dim, 1),
                       "l1.c_attn.weight", "l1.c_attn.bias")};
};

}  // namespace schatten::test
