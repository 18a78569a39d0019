// SPDX-License-Identifier: Apache-2.0
/// \file
/// libFuzzer target: the HDF5 checkpoint reader (io::read_checkpoint, io::restore) on arbitrary
/// bytes. Each input is written to a temporary file and read back. Properties checked (a
/// violation traps, which libFuzzer reports as a crash with the input saved):
///   - the reader returns (ASan/UBSan watch our code; HDF5 itself is not instrumented);
///   - every refusal carries a message;
///   - an accepted file either loads into an optimizer state or is refused with a message;
///   - an accepted file round-trips: written again and re-read, the fields and header are equal
///     bit for bit.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "schatten/io/checkpoint.hpp"
#include "schatten/optim/partition.hpp"
#include "schatten/optim/presets.hpp"

using namespace schatten;

namespace {

/// A per-process temporary file name (libFuzzer's fork mode runs several processes).
std::string temp_path(const char* tag) {
  const char* dir = std::getenv("TMPDIR");
  std::string p = std::string(dir && *dir ? dir : "/tmp") + "/schatten-fuzz-" + tag + "-XXXXXX";
  const int fd = mkstemp(p.data());
  if (fd < 0) std::abort();
  close(fd);
  return p;
}

struct Paths {
  std::string in = temp_path("in"), again = temp_path("again");
  ~Paths() {
    std::remove(in.c_str());
    std::remove(again.c_str());
    std::remove((again + ".tmp").c_str());
  }
};

bool same_bits(const io::FieldValue& a, const io::FieldValue& b) {
  if (a.index() != b.index()) return false;
  if (const auto* x = std::get_if<std::vector<float>>(&a)) {
    const auto& y = std::get<std::vector<float>>(b);
    // memcmp only when non-empty: an empty vector's data() may be null, and memcmp(null, …, 0)
    // is undefined behaviour (UBSan's nonnull-attribute check).
    return x->size() == y.size() &&
           (x->empty() || std::memcmp(x->data(), y.data(), x->size() * sizeof(float)) == 0);
  }
  if (const auto* x = std::get_if<double>(&a))
    return std::memcmp(x, &std::get<double>(b), sizeof(double)) == 0;
  return std::get<std::int64_t>(a) == std::get<std::int64_t>(b);
}

void check(bool ok) {
  if (!ok) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static Paths paths;
  if (FILE* f = std::fopen(paths.in.c_str(), "wb")) {
    check(size == 0 || std::fwrite(data, 1, size, f) == size);
    std::fclose(f);
  } else {
    std::abort();
  }
  io::FieldSet fields;
  io::CheckpointHeader header;
  std::string error;
  if (io::read_checkpoint(paths.in, fields, header, &error) != Status::ok) {
    check(!error.empty());
    return 0;
  }
  // Load into a small SGD/AdamW partition (no Kokkos needed): a match or a message.
  const std::vector<optim::ParamSpec> params = {{"w", {4}}, {"m", {2, 2}}};
  auto opt = optim::partition(params, {"sgd", "adamw"}, optim::route("sgd", optim::sgd()),
                              optim::route("adamw", optim::adamw()));
  check(static_cast<bool>(opt.init()));
  std::string restore_error;
  if (io::restore(opt, fields, &restore_error) != Status::ok) check(!restore_error.empty());
  // The recorded shapes against the partition's (load_checkpoint's check): a match or a message
  // that names a parameter.
  const std::string shape_error = io::detail::shape_mismatch(header.shapes, opt.params());
  check(shape_error.empty() || shape_error.find("parameter '") != std::string::npos);
  // Round trip: what was accepted is written and read back unchanged (field names the writer
  // refuses are reported as errors, which is also fine).
  std::string write_error;
  if (io::write_checkpoint(paths.again, fields, header, &write_error) != Status::ok) {
    check(!write_error.empty());
    return 0;
  }
  io::FieldSet again;
  io::CheckpointHeader header_again;
  std::string read_error;
  check(io::read_checkpoint(paths.again, again, header_again, &read_error) == Status::ok);
  check(again.size() == fields.size());
  for (const auto& [name, value] : fields) {
    const auto it = again.find(name);
    check(it != again.end() && same_bits(value, it->second));
  }
  check(header_again.step == header.step && header_again.signature == header.signature);
  check(header_again.rng.has_value() == header.rng.has_value());
  check(header_again.shapes == header.shapes);
  return 0;
}
