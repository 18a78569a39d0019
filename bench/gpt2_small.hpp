// SPDX-License-Identifier: Apache-2.0
/// \file
/// The GPT-2-small parameter set (d = 768, 12 layers, vocabulary 50257, context 1024) with
/// PyTorch's names and the (out, in) shapes of its linear layers: 124.4 M parameters, 148 tensors.
/// Used by schatten-bench-optim and schatten-bench-mpi.
#pragma once

#include <string>
#include <vector>

#include "schatten/optim/partition.hpp"

namespace schatten::bench {

inline std::vector<optim::ParamSpec> gpt2_small() {
  std::vector<optim::ParamSpec> p = {{"transformer.wte.weight", {50257, 768}},
                                     {"transformer.wpe.weight", {1024, 768}}};
  for (int l = 0; l < 12; ++l) {
    const std::string h = "transformer.h." + std::to_string(l) + ".";
    p.push_back({h + "ln_1.weight", {768}});
    p.push_back({h + "ln_1.bias", {768}});
    p.push_back({h + "attn.c_attn.weight", {2304, 768}});
    p.push_back({h + "attn.c_attn.bias", {2304}});
    p.push_back({h + "attn.c_proj.weight", {768, 768}});
    p.push_back({h + "attn.c_proj.bias", {768}});
    p.push_back({h + "ln_2.weight", {768}});
    p.push_back({h + "ln_2.bias", {768}});
    p.push_back({h + "mlp.c_fc.weight", {3072, 768}});
    p.push_back({h + "mlp.c_fc.bias", {3072}});
    p.push_back({h + "mlp.c_proj.weight", {768, 3072}});
    p.push_back({h + "mlp.c_proj.bias", {768}});
  }
  p.push_back({"transformer.ln_f.weight", {768}});
  p.push_back({"transformer.ln_f.bias", {768}});
  return p;
}

}  // namespace schatten::bench
