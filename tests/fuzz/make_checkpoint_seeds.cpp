// SPDX-License-Identifier: Apache-2.0
/// \file
/// Writes the seed checkpoints of tests/fuzz/corpus/fuzz_checkpoint (small, valid, and covering
/// every field kind the reader knows):
///     make_checkpoint_seeds DIR
/// partition.h5   SGD + AdamW partition state matching the fuzz target's optimizer (loads)
/// rng.h5         a state with the optional RNG header and a double field
/// empty.h5       no fields at all, empty signature
/// edge.h5        an empty float vector, a negative step, nested field names
#include <cstdio>
#include <string>
#include <vector>

#include "schatten/core/random.hpp"
#include "schatten/io/checkpoint.hpp"
#include "schatten/optim/partition.hpp"
#include "schatten/optim/presets.hpp"

using namespace schatten;

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_checkpoint_seeds DIR\n");
    return 2;
  }
  const std::string dir = argv[1];
  int failures = 0;
  auto put = [&](const char* name, const io::FieldSet& f, const io::CheckpointHeader& h) {
    std::string error;
    if (io::write_checkpoint(dir + "/" + name, f, h, &error) != Status::ok) {
      std::fprintf(stderr, "%s: %s\n", name, error.c_str());
      ++failures;
    }
  };
  // The optimizer of fuzz_checkpoint.cpp after one step.
  const std::vector<optim::ParamSpec> params = {{"w", {4}}, {"m", {2, 2}}};
  auto opt = optim::partition(params, {"sgd", "adamw"}, optim::route("sgd", optim::sgd()),
                              optim::route("adamw", optim::adamw()));
  if (!opt.init()) return 1;
  std::vector<float> w(4, 0.5f), m(4, -0.25f), gw = {1, 2, 3, 4}, gm = {-1, 0, 1, 2};
  if (!opt.step({w.data(), m.data()}, {gw.data(), gm.data()})) return 1;
  io::CheckpointHeader h;
  h.step = 1;
  h.signature = opt.signature();
  h.shapes = io::detail::shapes_of(opt);  // what save_checkpoint writes
  put("partition.h5", io::capture(opt), h);

  io::FieldSet f;
  f["x/count"] = std::int64_t(3);
  f["x/rbar"] = 0.125;
  f["x/mu"] = std::vector<float>{1.0f, -2.0f};
  Rng rng(42);
  rng.normal();
  io::CheckpointHeader hr;
  hr.step = 3;
  hr.signature = "seed";
  hr.rng = rng.state();
  put("rng.h5", f, hr);

  put("empty.h5", {}, io::CheckpointHeader{});

  io::FieldSet e;
  e["a/b/c/empty"] = std::vector<float>{};
  e["a/b/count"] = std::int64_t(-7);
  io::CheckpointHeader he;
  he.step = -1;
  he.signature = "edge";
  put("edge.h5", e, he);
  return failures == 0 ? 0 : 1;
}
