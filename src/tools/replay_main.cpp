// SPDX-License-Identifier: Apache-2.0
/// \file
/// schatten-replay's main() (the tool is src/tools/replay.cpp, which the fuzz target
/// tests/fuzz/fuzz_replay_cli.cpp links as well).
int schatten_replay_main(int argc, char** argv);

int main(int argc, char** argv) { return schatten_replay_main(argc, argv); }
