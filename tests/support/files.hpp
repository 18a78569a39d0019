// SPDX-License-Identifier: Apache-2.0
/// \file
/// Reading a whole file back, for the tests that compare files byte for byte or read a tool's
/// output.
#pragma once

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

namespace schatten::test {

/// The bytes of the file at `path`, unchanged (binary mode); "" when it cannot be opened.
inline std::string file_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace schatten::test
