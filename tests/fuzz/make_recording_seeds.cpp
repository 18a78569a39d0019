// SPDX-License-Identifier: Apache-2.0
/// \file
/// Writes the seed corpus of fuzz_recording (run by hand: make_recording_seeds <directory>):
///   small.h5  two parameters (a 3 × 4 matrix with values, initial and activation Gram; a
///             vector) and the max logits of 2 heads, 3 steps, multi-step chunks;
///   gzip.h5   one 4 × 2 matrix, 2 steps, gzip level 4, one step per chunk;
///   checksum.h5  the same uncompressed, with its initial value and Fletcher-32 checksums.
#include <cstdio>
#include <string>
#include <vector>

#include "schatten/io/recording.hpp"

using namespace schatten;

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_recording_seeds <directory>\n");
    return 2;
  }
  const std::string dir = argv[1];
  std::string err;
  {
    io::RecordingInfo info;
    info.model = "fuzz seed";
    info.producer = "make_recording_seeds";
    io::RecordedParam w, b;
    w.name = "w";
    w.shape = {3, 4};
    w.has_initial = w.has_value = w.has_act_gram = true;
    b.name = "b";
    b.shape = {4};
    info.params = {w, b};
    info.max_logit_heads = 2;
    io::RecorderOptions o;
    o.overwrite = true;
    io::Recorder r;
    if (r.create(dir + "/small.h5", info, o, &err) != Status::ok)
      return std::fprintf(stderr, "%s\n", err.c_str()), 1;
    std::vector<float> gw(12), vw(12), gram(16), gb(4), logits(2);
    for (int t = 0; t < 3; ++t) {
      for (int k = 0; k < 12; ++k)
        gw[k] = 0.1f * float(k - t), vw[k] = 1.0f - 0.01f * float(k * t);
      for (int k = 0; k < 16; ++k)
        gram[k] = k % 5 == 0 ? 2.0f : 0.25f;
      for (int k = 0; k < 4; ++k)
        gb[k] = -0.5f * float(k + t);
      io::StepData s;
      s.loss = 1.0 / (t + 1);
      s.grads = {gw.data(), gb.data()};
      s.values = {vw.data(), nullptr};
      s.act_grams = {gram.data(), nullptr};
      s.initial = {vw.data(), nullptr};
      logits = {50.0f * float(t + 1), -1.0f};
      s.max_logits = logits.data();
      if (r.append(s, &err) != Status::ok) return std::fprintf(stderr, "%s\n", err.c_str()), 1;
    }
    if (r.close(&err) != Status::ok) return std::fprintf(stderr, "%s\n", err.c_str()), 1;
  }
  for (const bool checksum : {false, true}) {
    io::RecordingInfo info;
    io::RecordedParam m;
    m.name = "m";
    m.shape = {4, 2};
    m.has_initial = checksum;
    info.params = {m};
    io::RecorderOptions o;
    o.overwrite = true;
    o.gzip_level = checksum ? 0 : 4;
    o.checksum = checksum;
    o.chunk_bytes = 0;
    io::Recorder r;
    if (r.create(dir + (checksum ? "/checksum.h5" : "/gzip.h5"), info, o, &err) != Status::ok)
      return std::fprintf(stderr, "%s\n", err.c_str()), 1;
    std::vector<float> g(8, 0.5f);
    for (int t = 0; t < 2; ++t) {
      io::StepData s;
      s.loss = 2.0 - t;
      s.grads = {g.data()};
      if (checksum) s.initial = {g.data()};
      if (r.append(s, &err) != Status::ok) return std::fprintf(stderr, "%s\n", err.c_str()), 1;
    }
    if (r.close(&err) != Status::ok) return std::fprintf(stderr, "%s\n", err.c_str()), 1;
  }
  return 0;
}
