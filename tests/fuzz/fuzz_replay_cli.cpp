// SPDX-License-Identifier: Apache-2.0
/// \file
/// libFuzzer target: schatten-replay's command line, optimizer specifications and cuts
/// (`--optimizer PRESET:key=value,...`, learning-rate schedules, `--split NAME:key=value,...`,
/// `--qk-layer KIND:key=value,...` with qk_clip, --steps, --cache-mb, ...),
/// through schatten_replay_check_command_line (src/tools/replay.cpp, linked as the object library
/// schatten_replay_core; the tool's main() is in replay_main.cpp): the arguments are parsed as the tool
/// parses them, the cuts are laid out over a small parameter list, every optimizer named is built over its
/// columns and the QK-clip layers are expanded and initialised over them — no file is read or written.
/// The input is split at NUL bytes into at most 32 arguments after the program name. Properties: the parser
/// returns (ASan/UBSan watch it) with one of its documented results (−1 valid, 0 help, 1 refused
/// specification, 2 usage error).
#include <cstdint>
#include <string>
#include <vector>

#include "schatten/core/runtime.hpp"

int schatten_replay_check_command_line(int argc, char** argv);

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static schatten::Runtime runtime;  // build() initialises optimizers (Kokkos workspaces)
  std::vector<std::string> words(1, "schatten-replay");
  std::string cur;
  for (std::size_t k = 0; k < size && words.size() < 33; ++k) {
    if (data[k] == 0) {
      words.push_back(cur);
      cur.clear();
    } else {
      cur += static_cast<char>(data[k]);
    }
  }
  if (!cur.empty() && words.size() < 33) words.push_back(cur);
  std::vector<char*> argv;
  for (std::string& w : words)
    argv.push_back(w.data());
  argv.push_back(nullptr);
  const int rc = schatten_replay_check_command_line(static_cast<int>(words.size()), argv.data());
  if (rc != -1 && rc != 0 && rc != 1 && rc != 2) __builtin_trap();
  return 0;
}
