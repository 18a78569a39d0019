// SPDX-License-Identifier: Apache-2.0
/// \file
/// Helper of the fault-injection tests (test_checkpoint_faults.cpp), not a test by itself:
///
///     checkpoint_writer PATH FLOATS [COUNT]
///
/// writes checkpoints k = 0, 1, … (COUNT of them, default: until killed) to PATH, each with
/// header step k and one field "w" of FLOATS floats whose values are expected_value(k, i), and
/// prints "k\n" on stdout after each write_checkpoint returned ok. The parent kills it at random
/// times and checks that PATH then always holds one complete checkpoint k' with the values of k'.
/// Exit status: 0 after COUNT checkpoints, 1 with a message on stderr when a write fails.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "checkpoint_writer.hpp"
#include "schatten/io/checkpoint.hpp"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: checkpoint_writer PATH FLOATS [COUNT]\n");
    return 2;
  }
  const std::string path = argv[1];
  const long n = std::strtol(argv[2], nullptr, 10);
  const long count = argc > 3 ? std::strtol(argv[3], nullptr, 10) : -1;
  if (n <= 0) return 2;
  std::vector<float> w(static_cast<std::size_t>(n));
  for (long k = 0; count < 0 || k < count; ++k) {
    for (long i = 0; i < n; ++i)
      w[static_cast<std::size_t>(i)] = schatten::test::expected_value(k, i);
    schatten::io::FieldSet fields;
    fields["w"] = w;
    fields["count"] = std::int64_t(k);
    schatten::io::CheckpointHeader h;
    h.step = k;
    h.signature = "checkpoint_writer";
    std::string error;
    if (schatten::io::write_checkpoint(path, fields, h, &error) != schatten::Status::ok) {
      std::fprintf(stderr, "checkpoint_writer: %s\n", error.c_str());
      return 1;
    }
    std::printf("%ld\n", k);
    std::fflush(stdout);
  }
  return 0;
}
