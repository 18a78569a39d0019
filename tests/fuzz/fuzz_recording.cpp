// SPDX-License-Identifier: Apache-2.0
/// \file
/// libFuzzer target: the HDF5 recording reader (io::open_recording, RecordingReader) on
/// arbitrary bytes, written to a temporary file. Properties checked (a violation traps, which
/// libFuzzer reports as a crash with the input saved):
///   - open returns (ASan/UBSan watch our code; HDF5 itself is not instrumented) and every
///     refusal carries a message;
///   - an accepted file describes itself consistently (shapes within the 2^40-element bound,
///     steps ≥ 0) and every read of every completed step either succeeds with finite-sized
///     buffers or is refused with a message — never a crash or an out-of-bounds write (the
///     buffers are sized from the metadata only, so a reader writing past them is caught by ASan);
///   - check_recording agrees with open on acceptance.
/// Reads are capped (the first 8 steps, buffers ≤ 16 MiB) so that one input stays fast.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "schatten/io/recording.hpp"

using namespace schatten;

namespace {

std::string temp_path() {
  const char* dir = std::getenv("TMPDIR");
  std::string p = std::string(dir && *dir ? dir : "/tmp") + "/schatten-fuzz-recording-XXXXXX";
  const int fd = mkstemp(p.data());
  if (fd < 0) std::abort();
  close(fd);
  return p;
}

void require(bool ok) {
  if (!ok) __builtin_trap();
}

/// A refusal must say why.
void refused_with_message(Status s, const std::string& err) { require(s == Status::ok || !err.empty()); }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::string path = temp_path();
  {
    std::FILE* f = std::fopen(path.c_str(), "wb");
    if (f == nullptr) std::abort();
    if (size > 0 && std::fwrite(data, 1, size, f) != size) std::abort();
    std::fclose(f);
  }
  io::RecordingReader reader;
  std::string err;
  const Status s = io::open_recording(path, reader, &err);
  refused_with_message(s, err);
  std::string check_err;
  io::RecordingInfo checked;
  const Status c = io::check_recording(path, &checked, &check_err);
  refused_with_message(c, check_err);
  if (s != Status::ok) {
    require(c != Status::ok);  // check_recording opens the same way
    return 0;
  }
  const io::RecordingInfo& info = reader.info();
  require(info.steps >= 0 && info.schema_version >= 1 && info.schema_version <= io::kRecordingSchemaVersion);
  const std::int64_t steps = info.steps < 8 ? info.steps : 8;
  for (std::size_t i = 0; i < info.params.size(); ++i) {
    const io::RecordedParam& p = info.params[i];
    require(p.rows >= 0 && p.cols >= 0);
    const double n = double(p.rows) * double(p.cols);
    require(n <= double(std::int64_t(1) << 40));
    if (n > double(4 << 20)) continue;  // ≤ 16 MiB of floats per buffer
    std::vector<float> buf(static_cast<std::size_t>(n) + 1);
    for (std::int64_t t = 0; t < steps; ++t) {
      err.clear();
      refused_with_message(reader.read_grad(t, i, buf.data(), &err), err);
      if (p.has_value) {
        err.clear();
        refused_with_message(reader.read_value(t, i, buf.data(), &err), err);
      }
      if (p.has_act_gram && double(p.cols) * double(p.cols) <= double(4 << 20)) {
        std::vector<float> gram(static_cast<std::size_t>(p.cols * p.cols) + 1);
        err.clear();
        refused_with_message(reader.read_act_gram(t, i, gram.data(), &err), err);
      }
    }
    err.clear();
    const Status init = reader.read_initial(i, buf.data(), &err);
    refused_with_message(init, err);
  }
  for (std::int64_t t = 0; t < steps; ++t) {
    double loss = 0.0;
    err.clear();
    refused_with_message(reader.read_loss(t, &loss, &err), err);
  }
  require(info.max_logit_heads >= 0);
  if (info.max_logit_heads > 0 && info.max_logit_heads <= (4 << 20) && steps > 0) {
    std::vector<float> logits(static_cast<std::size_t>(steps * info.max_logit_heads));
    err.clear();
    refused_with_message(reader.read_max_logits(0, steps, logits.data(), &err), err);
  }
  // Reads outside the recorded range are refused, never performed.
  if (!info.params.empty()) {
    std::vector<float> one(static_cast<std::size_t>(1));
    err.clear();
    require(reader.read_grad(info.steps, 0, nullptr, &err) != Status::ok);
    err.clear();
    require(reader.read_grad(-1, 0, one.data(), &err) != Status::ok);
  }
  return 0;
}
