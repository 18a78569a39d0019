// SPDX-License-Identifier: Apache-2.0
/// \file
/// Recordings (docs/replay-format.md): C++ round trip, C++ ↔ h5py in both directions, crash
/// survival of completed steps, and a clear error for every kind of bad file.
#include <doctest/doctest.h>
#include <hdf5.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "io/disk.hpp"
#include "schatten/core/random.hpp"
#include "schatten/io/recording.hpp"
#include "support/allocations.hpp"
#include "support/child.hpp"
#include "support/files.hpp"
#include "support/hdf5_threads.hpp"
#include "support/seed.hpp"
#include "support/threads.hpp"

namespace io_test_recording {  // this file's scope in a unity build (tests/CMakeLists.txt)

using namespace schatten;
using namespace schatten::io;
namespace fs = std::filesystem;

namespace {

/// A fresh path in the temporary directory (removed first).
std::string temp_path(const std::string& name) {
  const fs::path p = fs::temp_directory_path() / ("schatten_rec_" + std::to_string(::getpid()) + "_" + name);
  std::error_code ec;
  fs::remove(p, ec);
  return p.string();
}

/// support/child.hpp's in_child, for a child that must exit normally: what it returned.
template <class F>
std::string in_child(F body) {
  const std::pair<std::string, int> result = schatten::test::in_child(body);
  const std::string& out = result.first;  // (not a structured binding: CAPTURE's lambda takes it)
  CAPTURE(out);
  REQUIRE(result.second == 0);
  return out;
}

/// Writes past `bytes` fail with EFBIG from here on (SIGXFSZ ignored), as writes to a full file
/// system fail with ENOSPC; RLIM_INFINITY lifts the limit (the hard limit stays unlimited).
void limit_file_size(rlim_t bytes) {
  std::signal(SIGXFSZ, SIG_IGN);
  struct rlimit l {
    bytes, RLIM_INFINITY
  };
  ::setrlimit(RLIMIT_FSIZE, &l);
}

/// A model of four parameters covering every rank and every optional dataset, with the max
/// logits of three attention heads.
RecordingInfo test_info() {
  RecordingInfo info;
  info.model = "test model";
  info.producer = "tests/io/test_recording.cpp";
  auto param = [](std::string name, std::vector<index_t> shape) {
    RecordedParam p;
    p.name = std::move(name);
    p.shape = std::move(shape);
    return p;
  };
  RecordedParam w = param("layer.0.weight", {6, 5});
  w.has_initial = w.has_value = w.has_act_gram = true;
  RecordedParam b = param("layer.0.bias", {6});
  b.has_initial = true;
  b.dtype = "bfloat16";
  RecordedParam conv = param("conv/weight", {3, 2, 2, 2});  // '/' in a name is fine: names are attributes
  conv.has_value = true;
  RecordedParam s = param("gain", {});
  info.params = {w, b, conv, s};
  info.max_logit_heads = 3;
  return info;
}

/// Deterministic random data of one step: grads, values, grams, initial, per parameter.
struct StepArrays {
  std::vector<std::vector<float>> grad, value, gram, initial;
  std::vector<float> logits;
  double loss = 0;
  StepData view(const RecordingInfo& info) const {
    StepData d;
    d.loss = loss;
    d.max_logits = info.max_logit_heads > 0 ? logits.data() : nullptr;
    for (std::size_t i = 0; i < info.params.size(); ++i) {
      const auto& p = info.params[i];
      d.grads.push_back(grad[i].data());
      d.values.push_back(p.has_value ? value[i].data() : nullptr);
      d.act_grams.push_back(p.has_act_gram ? gram[i].data() : nullptr);
      d.initial.push_back(p.has_initial ? initial[i].data() : nullptr);
    }
    return d;
  }
};

StepArrays make_step(const RecordingInfo& info, int t) {
  Rng rng(test::case_seed("recording", std::uint64_t(t)));
  StepArrays s;
  for (const auto& p : info.params) {
    index_t r = 0, c = 0;
    REQUIRE(recorded_matrix_shape(p.shape, r, c));
    auto fill = [&](std::size_t n) {
      std::vector<float> v(n);
      for (float& x : v)
        x = float(rng.normal());
      return v;
    };
    s.grad.push_back(fill(std::size_t(r * c)));
    s.value.push_back(fill(std::size_t(r * c)));
    s.gram.push_back(fill(std::size_t(c * c)));
    s.initial.push_back(fill(std::size_t(r * c)));
  }
  for (index_t h = 0; h < info.max_logit_heads; ++h)
    s.logits.push_back(float(100.0 * rng.uniform()));
  s.loss = 2.0 / (t + 1);
  return s;
}

void write_recording(const std::string& path, int steps, int gzip = 0,
                     std::size_t chunk_bytes = RecorderOptions{}.chunk_bytes, bool checksum = false) {
  const RecordingInfo info = test_info();
  Recorder rec;
  std::string err;
  RecorderOptions o;
  o.gzip_level = gzip;
  o.chunk_bytes = chunk_bytes;
  o.checksum = checksum;
  REQUIRE_MESSAGE(rec.create(path, info, o, &err) == Status::ok, err);
  for (int t = 0; t < steps; ++t) {
    const StepArrays s = make_step(info, t);
    REQUIRE_MESSAGE(rec.append(s.view(info), &err) == Status::ok, err);
  }
  REQUIRE(rec.steps() == steps);
  REQUIRE(rec.close(&err) == Status::ok);
}

/// The steps per chunk of dataset `name` in `path`.
hsize_t steps_per_chunk(const std::string& path, const char* name) {
  const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  const hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
  const hid_t plist = H5Dget_create_plist(d);
  hsize_t chunk[8] = {0};
  const int rank = H5Pget_chunk(plist, 8, chunk);
  H5Pclose(plist);
  H5Dclose(d);
  H5Fclose(f);
  return rank > 0 ? chunk[0] : 0;
}

/// Every stored value of the first `steps` steps equals what make_step() produced, read one step
/// at a time and as one range per dataset.
void check_contents(const RecordingReader& r, int steps) {
  const RecordingInfo info = test_info();
  std::string err;
  for (std::size_t i = 0; i < info.params.size(); ++i) {
    const auto& p = r.info().params[i];
    const std::size_t n = std::size_t(p.rows * p.cols), g = std::size_t(p.cols * p.cols);
    std::vector<float> all(std::size_t(steps) * std::max(n, g));
    REQUIRE_MESSAGE(r.read_grads(0, steps, i, all.data(), &err) == Status::ok, err);
    for (int t = 0; t < steps; ++t) {
      const StepArrays s = make_step(info, t);
      CHECK(std::equal(s.grad[i].begin(), s.grad[i].end(), all.begin() + std::ptrdiff_t(std::size_t(t) * n)));
    }
    if (p.has_act_gram && steps > 1) {  // a range that starts inside the data
      REQUIRE(r.read_act_grams(1, steps - 1, i, all.data(), &err) == Status::ok);
      for (int t = 1; t < steps; ++t) {
        const StepArrays s = make_step(info, t);
        CHECK(std::equal(s.gram[i].begin(), s.gram[i].end(),
                         all.begin() + std::ptrdiff_t(std::size_t(t - 1) * g)));
      }
    }
    if (p.has_value) {
      REQUIRE(r.read_values(0, steps, i, all.data(), &err) == Status::ok);
      const StepArrays s = make_step(info, steps - 1);
      CHECK(std::equal(s.value[i].begin(), s.value[i].end(),
                       all.begin() + std::ptrdiff_t(std::size_t(steps - 1) * n)));
    }
  }
  REQUIRE(r.info().max_logit_heads == info.max_logit_heads);
  std::vector<float> logits(std::size_t(steps * info.max_logit_heads));
  REQUIRE_MESSAGE(r.read_max_logits(0, steps, logits.data(), &err) == Status::ok, err);
  for (int t = 0; t < steps; ++t) {
    const StepArrays s = make_step(info, t);
    CHECK(std::equal(s.logits.begin(), s.logits.end(), logits.begin() + std::ptrdiff_t(t * 3)));
  }
  CHECK(r.read_max_logits(0, steps + 1, logits.data(), &err) == Status::invalid_argument);
  CHECK(err.find("out of range") != std::string::npos);
  std::vector<double> losses(std::size_t(steps) + 1, -1.0);
  REQUIRE_MESSAGE(r.read_losses(0, steps, losses.data(), &err) == Status::ok, err);
  CHECK(losses[std::size_t(steps)] == -1.0);  // nothing written past the range
  CHECK(r.read_losses(1, steps, losses.data(), &err) == Status::invalid_argument);
  CHECK(r.read_losses(0, 0, losses.data(), &err) == Status::invalid_argument);
  for (int t = 0; t < steps; ++t) {
    const StepArrays s = make_step(info, t);
    double loss = 0;
    REQUIRE(r.read_loss(t, &loss, &err) == Status::ok);
    CHECK(loss == s.loss);
    CHECK(losses[std::size_t(t)] == s.loss);
    for (std::size_t i = 0; i < info.params.size(); ++i) {
      const auto& p = r.info().params[i];
      std::vector<float> buf(std::size_t(std::max(p.rows * p.cols, p.cols * p.cols)));
      REQUIRE_MESSAGE(r.read_grad(t, i, buf.data(), &err) == Status::ok, err);
      CHECK(std::equal(s.grad[i].begin(), s.grad[i].end(), buf.begin()));
      if (p.has_value) {
        REQUIRE(r.read_value(t, i, buf.data(), &err) == Status::ok);
        CHECK(std::equal(s.value[i].begin(), s.value[i].end(), buf.begin()));
      }
      if (p.has_act_gram) {
        REQUIRE(r.read_act_gram(t, i, buf.data(), &err) == Status::ok);
        CHECK(std::equal(s.gram[i].begin(), s.gram[i].end(), buf.begin()));
      }
      if (t == 0 && p.has_initial) {
        REQUIRE(r.read_initial(i, buf.data(), &err) == Status::ok);
        CHECK(std::equal(s.initial[i].begin(), s.initial[i].end(), buf.begin()));
      }
    }
  }
}

std::string python() { return SCHATTEN_TEST_PYTHON; }
std::string script() { return std::string(SCHATTEN_TEST_SOURCE_DIR) + "/io/h5py_recording.py"; }

/// Opening `path` fails with invalid_argument and a message containing `expected`.
void check_refused(const std::string& path, const std::string& expected) {
  RecordingReader r;
  std::string err;
  CHECK(r.open(path, &err) == Status::invalid_argument);
  CHECK_FALSE(r.is_open());
  INFO("message: " << err);
  CHECK(err.find(expected) != std::string::npos);
}

/// Runs `edit` on the recording opened read-write with HDF5 directly.
template <class F>
void edit_file(const std::string& path, F edit) {
  const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  REQUIRE(f >= 0);
  edit(f);
  REQUIRE(H5Fclose(f) >= 0);
}

/// Replaces dataset `name` with one of the given type and dims (zeros).
void replace_dataset(hid_t f, const char* name, hid_t type, std::vector<hsize_t> dims) {
  REQUIRE(H5Ldelete(f, name, H5P_DEFAULT) >= 0);
  const hid_t space = H5Screate_simple(int(dims.size()), dims.data(), nullptr);
  const hid_t set = H5Dcreate2(f, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  REQUIRE(set >= 0);
  H5Dclose(set);
  H5Sclose(space);
}

}  // namespace

TEST_SUITE("io.recording") {
  TEST_CASE(
      "recording: C++ writer and C++ reader agree bit for bit with and without gzip or multi-step chunks") {
    for (const auto& config : {std::pair<int, std::size_t>{0, 0}, {4, 0}, {0, 256}, {4, 256}}) {
      const int gzip = config.first;  // clang: CAPTURE cannot capture structured bindings
      const std::size_t chunk_bytes = config.second;
      CAPTURE(gzip);
      CAPTURE(chunk_bytes);
      const std::string path = temp_path("roundtrip.h5");
      write_recording(path, 5, gzip, chunk_bytes);
      // 256-byte chunks: the 120-byte gradient of layer.0.weight gets 2 steps a chunk, the 4-byte
      // gain 64 (the cap); the 128-byte conv gradient 2; without chunk_bytes one step each.
      CHECK(steps_per_chunk(path, "params/0/grad") == (chunk_bytes ? 2 : 1));
      CHECK(steps_per_chunk(path, "params/3/grad") == (chunk_bytes ? 64 : 1));
      CHECK(steps_per_chunk(path, "params/2/grad") == (chunk_bytes ? 2 : 1));
      RecordingReader r;
      std::string err;
      REQUIRE_MESSAGE(open_recording(path, r, &err) == Status::ok, err);
      const RecordingInfo& info = r.info();
      CHECK(info.steps == 5);
      CHECK(info.schema_version == kRecordingSchemaVersion);
      CHECK(info.model == "test model");
      REQUIRE(info.params.size() == 4);
      CHECK(info.params[0].name == "layer.0.weight");
      CHECK(info.params[1].dtype == "bfloat16");
      CHECK(info.params[2].name == "conv/weight");
      CHECK(info.params[2].rows == 3);
      CHECK(info.params[2].cols == 8);
      CHECK(info.params[3].shape.empty());
      CHECK(info.params[3].rows * info.params[3].cols == 1);
      CHECK(info.params[0].has_act_gram);
      CHECK_FALSE(info.params[1].has_value);
      CHECK(info.params[0].grad_dtype == "float32");
      check_contents(r, 5);
      // Out-of-range and absent data are errors with a message, not crashes.
      std::vector<float> buf(64);
      CHECK(r.read_grad(5, 0, buf.data(), &err) == Status::invalid_argument);
      CHECK(err.find("step 5 out of range") != std::string::npos);
      CHECK(r.read_grad(0, 4, buf.data(), &err) == Status::invalid_argument);
      CHECK(r.read_value(0, 1, buf.data(), &err) == Status::invalid_argument);
      CHECK(err.find("has no value") != std::string::npos);
      CHECK(r.read_initial(3, buf.data(), &err) == Status::invalid_argument);
      CHECK(r.read_grad(0, 0, nullptr, &err) == Status::invalid_argument);
      CHECK(r.read_grads(3, 3, 0, buf.data(), &err) == Status::invalid_argument);
      CHECK(err.find("steps [3, 6) out of range (5 completed steps)") != std::string::npos);
      CHECK(r.read_grads(0, 0, 0, buf.data(), &err) == Status::invalid_argument);
      // A huge count is refused without overflowing first + count in the message (UBSan).
      const std::int64_t huge = std::numeric_limits<std::int64_t>::max();
      CHECK(r.read_grads(1, huge, 0, buf.data(), &err) == Status::invalid_argument);
      CHECK(err.find("steps [1, 1 + 9223372036854775807) out of range") != std::string::npos);
      CHECK(r.read_losses(2, huge, std::vector<double>(4).data(), &err) == Status::invalid_argument);
      CHECK(r.read_max_logits(3, huge, buf.data(), &err) == Status::invalid_argument);
      CHECK(err.find("max_logits steps [3, 3 + 9223372036854775807)") != std::string::npos);
      CHECK(check_recording(path, nullptr, &err) == Status::ok);
      fs::remove(path);
    }
  }

  TEST_CASE("recording: two threads write and read their own recordings at once") {
    // The thread contract (docs/conventions.md "Threads"): separate files from separate threads,
    // where HDF5 is built thread-safe (Debian's is: one lock around every HDF5 call). Each thread
    // writes 8 steps to its own recording (one gzip-compressed, one not) and reads every
    // gradient back while the other writes; the files are then checked whole from this thread.
    if (!schatten::test::hdf5_thread_safe()) return;
    constexpr int kThreads = 2, kSteps = 8;
    const RecordingInfo info = test_info();
    std::vector<StepArrays> steps;
    for (int t = 0; t < kSteps; ++t)
      steps.push_back(make_step(info, t));
    std::vector<std::string> paths;
    for (int t = 0; t < kThreads; ++t)
      paths.push_back(temp_path("threads" + std::to_string(t) + ".h5"));
    std::vector<int> failed(kThreads, 0), differing(kThreads, 0);
    schatten::test::run_together(kThreads, [&](int t) {
      const std::size_t i = static_cast<std::size_t>(t);
      RecorderOptions o;
      o.gzip_level = t == 0 ? 0 : 4;
      Recorder rec;
      failed[i] += rec.create(paths[i], info, o) == Status::ok ? 0 : 1;
      for (const StepArrays& s : steps)
        failed[i] += rec.append(s.view(info)) == Status::ok ? 0 : 1;
      failed[i] += rec.close() == Status::ok ? 0 : 1;
      RecordingReader r;
      failed[i] += r.open(paths[i]) == Status::ok ? 0 : 1;
      std::vector<float> buf(64);
      for (int k = 0; k < kSteps && r.is_open(); ++k)
        for (std::size_t p = 0; p < info.params.size(); ++p) {
          const std::vector<float>& want = steps[static_cast<std::size_t>(k)].grad[p];
          failed[i] += r.read_grad(k, p, buf.data()) == Status::ok ? 0 : 1;
          differing[i] += std::equal(want.begin(), want.end(), buf.begin()) ? 0 : 1;
        }
    });
    for (std::size_t t = 0; t < kThreads; ++t) {
      CAPTURE(t);
      CHECK(failed[t] == 0);
      CHECK(differing[t] == 0);
      RecordingReader r;
      REQUIRE(r.open(paths[t]) == Status::ok);
      CHECK(r.info().steps == kSteps);
      check_contents(r, kSteps);
      CHECK(check_recording(paths[t]) == Status::ok);
      fs::remove(paths[t]);
    }
  }

  TEST_CASE("recording: the recorder refuses bad metadata and bad steps without writing") {
    const std::string path = temp_path("refused.h5");
    std::string err;
    {
      RecordingInfo info = test_info();
      info.params[1].name = info.params[0].name;
      Recorder rec;
      CHECK(rec.create(path, info, {}, &err) == Status::invalid_argument);
      CHECK(err.find("appears twice") != std::string::npos);
      CHECK_FALSE(fs::exists(path));
    }
    {
      RecordingInfo info = test_info();
      info.params[1].has_act_gram = true;  // a vector has no input-activation Gram
      Recorder rec;
      CHECK(rec.create(path, info, {}, &err) == Status::invalid_argument);
      CHECK(err.find("not a matrix") != std::string::npos);
      info = test_info();
      info.params[0].shape = {4, -1};
      CHECK(rec.create(path, info, {}, &err) == Status::invalid_argument);
      CHECK(rec.create(path, RecordingInfo{}, {}, &err) == Status::invalid_argument);
      RecorderOptions o;
      o.gzip_level = 10;
      CHECK(rec.create(path, test_info(), o, &err) == Status::invalid_argument);
      info = test_info();
      info.max_logit_heads = -1;
      CHECK(rec.create(path, info, {}, &err) == Status::invalid_argument);
      CHECK(err.find("max_logit_heads -1 is not in 0..") != std::string::npos);
      CHECK_FALSE(fs::exists(path));
    }
    {
      const RecordingInfo info = test_info();
      Recorder rec;
      REQUIRE(rec.create(path, info, {}, &err) == Status::ok);
      StepArrays s = make_step(info, 0);
      StepData d = s.view(info);
      d.grads[2] = nullptr;
      CHECK(rec.append(d, &err) == Status::invalid_argument);
      CHECK(err.find("grads[2]") != std::string::npos);
      d = s.view(info);
      d.act_grams[1] = s.gram[1].data();  // the bias records no Gram
      CHECK(rec.append(d, &err) == Status::invalid_argument);
      d = s.view(info);
      d.values.pop_back();
      CHECK(rec.append(d, &err) == Status::invalid_argument);
      d = s.view(info);
      d.max_logits = nullptr;
      CHECK(rec.append(d, &err) == Status::invalid_argument);
      CHECK(err.find("max_logits must be non-null") != std::string::npos);
      CHECK(rec.steps() == 0);
      {  // and a recording without heads takes none
        RecordingInfo none = info;
        none.max_logit_heads = 0;
        Recorder other;
        const std::string p2 = temp_path("refused_no_logits.h5");
        REQUIRE(other.create(p2, none, {}, &err) == Status::ok);
        CHECK(other.append(s.view(info), &err) == Status::invalid_argument);
        CHECK(err.find("max_logits must be null") != std::string::npos);
        CHECK(other.steps() == 0);
        REQUIRE(other.close(&err) == Status::ok);
        fs::remove(p2);
      }
      REQUIRE(rec.append(s.view(info), &err) == Status::ok);
      REQUIRE(rec.close(&err) == Status::ok);
      Recorder again;  // an existing file is not replaced unless asked
      CHECK(again.create(path, info, {}, &err) == Status::invalid_argument);
      CHECK(err.find("exists") != std::string::npos);
      RecordingReader r;
      REQUIRE(r.open(path, &err) == Status::ok);
      CHECK(r.info().steps == 1);
      check_contents(r, 1);
    }
    fs::remove(path);
  }

  TEST_CASE("recording: every completed step is readable after the writer dies without closing") {
    const std::string path = temp_path("crash.h5");
    const int steps = 3;
    std::fflush(nullptr);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {  // the "training process": writes, then dies without closing anything
      const RecordingInfo info = test_info();
      Recorder rec;
      if (rec.create(path, info) != Status::ok) ::_exit(2);
      for (int t = 0; t < steps; ++t)
        if (rec.append(make_step(info, t).view(info)) != Status::ok) ::_exit(3);
      ::_exit(0);
    }
    int wstatus = 0;
    REQUIRE(::waitpid(pid, &wstatus, 0) == pid);
    REQUIRE(WIFEXITED(wstatus));
    REQUIRE(WEXITSTATUS(wstatus) == 0);
    RecordingReader r;
    std::string err;
    REQUIRE_MESSAGE(r.open(path, &err) == Status::ok, err);
    CHECK(r.info().steps == steps);
    check_contents(r, steps);
    r.close();
    // A step count beyond the data (a writer that died between extending and counting, seen
    // the other way round) is refused rather than read as garbage.
    edit_file(path, [&](hid_t f) {
      const std::int64_t more = steps + 1;
      const hid_t a = H5Aopen(f, "completed_steps", H5P_DEFAULT);
      REQUIRE(H5Awrite(a, H5T_NATIVE_INT64, &more) >= 0);
      H5Aclose(a);
    });
    check_refused(path, "expected (≥4");
    fs::remove(path);
  }

  TEST_CASE("recording: a full disk refuses the step before anything is written; the steps survive") {
    // Finding 47: an append that failed on a full disk left the file unreadable (every step
    // lost) and its HDF5 handle open for good, so the process crashed at exit. A child process
    // stands for the training process: a file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored) makes
    // writes past it fail with EFBIG as a full file system fails with ENOSPC. It appends until
    // refused, lifts the limit (the disk freed), appends one more step, closes, and reports.
    // `emulate`: as on a file system without fallocate (NFS v3, many FUSE file systems), where
    // the reservation writes a zero byte per block instead (Finding 89). Before, it reserved
    // nothing there: at extra = 0 the write failed inside HDF5 ("cannot write step 64 … (disk
    // full?)"), the step could not be appended again, and the completed steps did not read back.
    const std::string path = temp_path("full.h5");
    const RecordingInfo info = test_info();
    for (const bool emulate : {false, true})
      for (const int gzip : {0, 6})
        for (const long extra : {0L, 100L, 20000L, 150000L}) {
          CAPTURE(emulate);
          CAPTURE(gzip);
          CAPTURE(extra);
          const std::string out = in_child([&]() -> std::string {
            io::detail::emulate_fallocate().store(emulate);
            Recorder rec;
            RecorderOptions o;
            o.gzip_level = gzip;
            o.overwrite = true;
            std::string err, refusal = "none";
            int done = 0;
            if (rec.create(path, info, o, &err) != Status::ok) return "create failed: " + err;
            for (; done < 2; ++done)
              if (rec.append(make_step(info, done).view(info), &err) != Status::ok)
                return "append failed: " + err;
            struct stat st {};
            ::stat(path.c_str(), &st);
            limit_file_size(rlim_t(st.st_size + extra));
            for (; done < 2000; ++done)
              if (rec.append(make_step(info, done).view(info), &err) != Status::ok) {
                refusal = err;
                break;
              }
            const std::int64_t steps_after_refusal = rec.steps();
            limit_file_size(RLIM_INFINITY);
            const Status retry = rec.append(make_step(info, done).view(info), &err);
            const Status closed = rec.close(&err);
            return std::to_string(done) + "|" + std::to_string(steps_after_refusal) + "|" + to_string(retry) +
                   "|" + to_string(closed) + "|" +
                   std::to_string(H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL)) + "|" + refusal;
          });
          CAPTURE(out);
          int done = -1;
          long steps_after_refusal = -1;
          char retry[32] = {}, closed[32] = {};
          int open = -1;
          REQUIRE(std::sscanf(out.c_str(), "%d|%ld|%31[^|]|%31[^|]|%d|", &done, &steps_after_refusal, retry,
                              closed, &open) == 5);
          const std::string refusal = out.substr(out.rfind('|') + 1);
          CHECK(done < 2000);  // the limit was reached
          CHECK(steps_after_refusal == done);
          CHECK(refusal.rfind("cannot reserve", 0) == 0);
          CHECK(refusal.find("File too large") != std::string::npos);
          CHECK(refusal.find("nothing was written") != std::string::npos);
          CHECK(std::string(retry) == "ok");  // the refused step, appended again once there is room
          CHECK(std::string(closed) == "ok");
          CHECK(open == 0);  // no HDF5 file left open: the process exits cleanly
          RecordingReader r;
          std::string err;
          REQUIRE_MESSAGE(r.open(path, &err) == Status::ok, err);
          CHECK(r.info().steps == done + 1);
          check_contents(r, done + 1);
        }
    // create() on a full disk: refused before any HDF5 call (H5Fcreate itself, at a limit of 0,
    // left HDF5 unable to shut down), no file left, and HDF5 shuts down cleanly.
    for (const bool emulate : {false, true})
      for (const rlim_t limit : {rlim_t(0), rlim_t(100), rlim_t(4096), rlim_t(30000)}) {
        CAPTURE(emulate);
        CAPTURE(limit);
        fs::remove(path);
        const std::string out = in_child([&]() -> std::string {
          io::detail::emulate_fallocate().store(emulate);
          limit_file_size(limit);
          Recorder rec;
          std::string err;
          const Status s = rec.create(path, info, {}, &err);
          return std::string(to_string(s)) + "|" +
                 std::to_string(H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL)) + "|" +
                 std::to_string(H5close()) + "|" + err;
        });
        CAPTURE(out);
        CHECK(out.rfind("internal_error|0|0|cannot reserve", 0) == 0);
        CHECK(out.find("File too large (nothing created)") != std::string::npos);
        CHECK_FALSE(fs::exists(path));
      }
    fs::remove(path);
  }

  TEST_CASE("recording: an exhausted heap is out_of_memory, never an exception, and loses no step") {
    // Finding 78: create(), append(), close(), open() and the reads let std::bad_alloc escape
    // (a Status function that throws), create() then left its partial file, a first append()
    // could leave some initial datasets written (the retry then failed for good), and close()
    // copied the path first: the destructor, which calls it, could end the program. Each call
    // runs with its k-th host allocation refused, k = 1, 2, … until it meets no refusal
    // (support/allocations.hpp; HDF5's own mallocs are not seen).
    using schatten::test::refusing_allocation;
    const std::string path = temp_path("heap.h5");
    const RecordingInfo info = test_info();
    const StepArrays s0 = make_step(info, 0), s1 = make_step(info, 1);
    const StepData d0 = s0.view(info), d1 = s1.view(info);
    StepData bad = d0;
    bad.grads.pop_back();
    std::string err;
    Recorder rec;
    std::int64_t k = 1;
    for (;; ++k) {
      CAPTURE(k);
      const auto a = refusing_allocation(k, [&] { return rec.create(path, info, {}, &err); });
      REQUIRE_FALSE(a.threw);
      if (!a.refused) {
        REQUIRE_MESSAGE(a.result == Status::ok, err);
        break;
      }
      CHECK(a.result == Status::out_of_memory);
      CHECK(err.find("host memory ran out") != std::string::npos);
      CHECK_FALSE(fs::exists(path));                            // no partial file left
      CHECK(rec.append(d0, &err) == Status::invalid_argument);  // not created
    }
    MESSAGE("create: " << k - 1 << " allocations refused in turn");
    CHECK(k > 1);
    // A refused step under a refused allocation: out_of_memory, nothing written, still usable.
    for (k = 1;; ++k) {
      const auto a = refusing_allocation(k, [&] { return rec.append(bad, &err); });
      REQUIRE_FALSE(a.threw);
      if (!a.refused) {
        CHECK(a.result == Status::invalid_argument);
        break;
      }
      CHECK(a.result == Status::out_of_memory);
      CHECK(err.find("nothing was written") != std::string::npos);
      CHECK(rec.steps() == 0);
    }
    CHECK(k > 1);
    // The first step (initial values: datasets created) and the second: no host allocation.
    for (const StepData* d : {&d0, &d1}) {
      const auto a = refusing_allocation(1, [&] { return rec.append(*d, &err); });
      CHECK_FALSE(a.threw);
      CHECK_FALSE(a.refused);
      CHECK_MESSAGE(a.result == Status::ok, err);
    }
    CHECK(rec.steps() == 2);
    const auto closed = refusing_allocation(1, [&] { return rec.close(&err); });
    CHECK_FALSE(closed.threw);
    CHECK_FALSE(closed.refused);
    CHECK(closed.result == Status::ok);
    // The reader: open with each allocation refused (closed after each), then reads whose
    // messages cannot be composed.
    RecordingReader r;
    for (k = 1;; ++k) {
      CAPTURE(k);
      const auto a = refusing_allocation(k, [&] { return r.open(path, &err); });
      REQUIRE_FALSE(a.threw);
      if (!a.refused) {
        REQUIRE_MESSAGE(a.result == Status::ok, err);
        break;
      }
      CHECK(a.result == Status::out_of_memory);
      CHECK_FALSE(r.is_open());
    }
    MESSAGE("open: " << k - 1 << " allocations refused in turn");
    std::vector<float> buf(64);
    double loss = 0.0;
    const std::vector<std::function<Status()>> reads = {
        [&] { return r.read_grad(5, 0, buf.data(), &err); },  // out of range: a message
        [&] { return r.read_initial(9, buf.data(), &err); }, [&] { return r.read_loss(7, &loss, &err); },
        [&] { return r.read_max_logits(3, 1, buf.data(), &err); },
        [&] { return check_recording(path, nullptr, &err); }};
    for (std::size_t i = 0; i < reads.size(); ++i) {
      CAPTURE(i);
      for (k = 1;; ++k) {
        const auto a = refusing_allocation(k, reads[i]);
        REQUIRE_FALSE(a.threw);
        if (!a.refused) break;
        CHECK(a.result == Status::out_of_memory);
        CHECK(err.find("host memory ran out") != std::string::npos);
      }
      CHECK(k > 1);
    }
    REQUIRE(r.is_open());
    check_contents(r, 2);  // both steps whole
    r.close();
    fs::remove(path);
  }

  TEST_CASE("recording: C++ writer and h5py reader agree bit for bit") {
    const std::string path = temp_path("to_h5py.h5"), out = temp_path("from_h5py.bin");
    write_recording(path, 3, 1);
    const std::string cmd = python() + " " + script() + " read " + path + " " + out;
    REQUIRE_MESSAGE(std::system(cmd.c_str()) == 0, "failed: " << cmd << " (needs python3-h5py)");
    const std::string got = schatten::test::file_bytes(out);
    // The same order the script writes: per parameter initial, then per step grad/value/gram.
    const RecordingInfo info = test_info();
    std::string want;
    auto put = [&](const void* p, std::size_t bytes) { want.append(static_cast<const char*>(p), bytes); };
    std::vector<StepArrays> s;
    for (int t = 0; t < 3; ++t)
      s.push_back(make_step(info, t));
    for (std::size_t i = 0; i < info.params.size(); ++i) {
      const auto& p = info.params[i];
      if (p.has_initial) put(s[0].initial[i].data(), s[0].initial[i].size() * 4);
      for (int t = 0; t < 3; ++t) {
        put(s[t].grad[i].data(), s[t].grad[i].size() * 4);
        if (p.has_value) put(s[t].value[i].data(), s[t].value[i].size() * 4);
        if (p.has_act_gram) put(s[t].gram[i].data(), s[t].gram[i].size() * 4);
      }
    }
    for (int t = 0; t < 3; ++t)
      put(&s[t].loss, 8);
    CHECK(got.size() == want.size());
    CHECK((got == want));  // parenthesised: doctest prints no bytes
    fs::remove(path);
    fs::remove(out);
  }

  TEST_CASE("recording: h5py writer and C++ reader agree with float16 and float64 data") {
    const std::string path = temp_path("from_h5py.h5");
    const std::string cmd = python() + " " + script() + " write " + path;
    REQUIRE_MESSAGE(std::system(cmd.c_str()) == 0, "failed: " << cmd << " (needs python3-h5py)");
    RecordingReader r;
    std::string err;
    REQUIRE_MESSAGE(r.open(path, &err) == Status::ok, err);
    const RecordingInfo& info = r.info();
    REQUIRE(info.params.size() == 3);
    CHECK(info.steps == 4);
    CHECK(info.producer == "tests/io/h5py_recording.py");
    CHECK(info.params[0].name == "enc.layers.0.weight");
    CHECK(info.params[0].rows == 6);
    CHECK(info.params[0].cols == 4);
    CHECK(info.params[0].grad_dtype == "float16");
    CHECK(info.params[1].grad_dtype == "float32");
    CHECK(info.params[2].grad_dtype == "float64");
    CHECK(info.params[2].shape.empty());
    CHECK(info.params[0].has_value);
    // value(p, t, k) of the script: multiples of 1/8 in [−1, 1], exact in every float type.
    auto value = [](int p, int t, int k) { return float(((p * 7 + t * 3 + k) % 17 - 8) / 8.0); };
    for (int t = 0; t < 4; ++t) {
      double loss = 0;
      REQUIRE(r.read_loss(t, &loss, &err) == Status::ok);
      CHECK(loss == 1.0 / (t + 1));
      for (int p = 0; p < 3; ++p) {
        const auto& rp = info.params[std::size_t(p)];
        std::vector<float> g(std::size_t(rp.rows * rp.cols));
        REQUIRE_MESSAGE(r.read_grad(t, std::size_t(p), g.data(), &err) == Status::ok, err);
        for (int k = 0; k < int(g.size()); ++k)
          CHECK(g[std::size_t(k)] == value(p, t, k));
      }
      std::vector<float> v(24);
      REQUIRE(r.read_value(t, 0, v.data(), &err) == Status::ok);
      CHECK(v[5] == -value(0, t, 5));
    }
    CHECK(check_recording(path, nullptr, &err) == Status::ok);
    fs::remove(path);
  }

  TEST_CASE("recording: bad files give a clear error naming the problem") {
    const std::string good = temp_path("good.h5"), bad = temp_path("bad.h5");
    write_recording(good, 3);
    auto fresh = [&] {
      fs::copy_file(good, bad, fs::copy_options::overwrite_existing);
      return bad;
    };
    SUBCASE("missing file") { check_refused(temp_path("nonexistent.h5"), "does not exist"); }
    SUBCASE("random bytes") {
      Rng rng(test::case_seed("random_bytes"));
      std::ofstream o(bad, std::ios::binary);
      for (int k = 0; k < 4096; ++k)
        o.put(char(rng.next() & 0xff));
      o.close();
      check_refused(bad, "not an HDF5 file");
    }
    SUBCASE("truncated file") {
      fresh();
      fs::resize_file(bad, fs::file_size(bad) / 2);
      check_refused(bad, "truncated or corrupt");
    }
    SUBCASE("not a recording") {
      const hid_t f = H5Fcreate(bad.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
      REQUIRE(f >= 0);
      H5Fclose(f);
      check_refused(bad, "not a schatten recording");
    }
    SUBCASE("future schema version") {
      edit_file(fresh(), [](hid_t f) {
        const int v = kRecordingSchemaVersion + 1;
        const hid_t a = H5Aopen(f, "schema_version", H5P_DEFAULT);
        REQUIRE(H5Awrite(a, H5T_NATIVE_INT, &v) >= 0);
        H5Aclose(a);
      });
      check_refused(bad, "schema version 2 is newer");
    }
    SUBCASE("missing gradient dataset") {
      edit_file(fresh(), [](hid_t f) { REQUIRE(H5Ldelete(f, "params/2/grad", H5P_DEFAULT) >= 0); });
      check_refused(bad, "/params/2 ('conv/weight')/grad is missing");
    }
    SUBCASE("completed steps beyond the allocated storage (extents extended without data)") {
      // Finding 44: 2^61 (or 2^40) completed steps in an 84 KB file opened fine, then
      // check_recording looped over them for ever and schatten-replay aborted (length_error).
      for (const std::int64_t steps : {std::int64_t(1) << 61, std::int64_t(1) << 40}) {
        CAPTURE(steps);
        edit_file(fresh(), [&](hid_t f) {
          const auto extend = [&](const std::string& name) {
            if (H5Lexists(f, name.c_str(), H5P_DEFAULT) <= 0) return;
            const hid_t d = H5Dopen2(f, name.c_str(), H5P_DEFAULT);
            const hid_t sp = H5Dget_space(d);
            hsize_t dims[3];
            const int rank = H5Sget_simple_extent_dims(sp, dims, nullptr);
            REQUIRE(rank >= 1);
            dims[0] = hsize_t(steps);
            REQUIRE(H5Dset_extent(d, dims) >= 0);
            H5Sclose(sp);
            H5Dclose(d);
          };
          extend("loss");
          for (int i = 0; H5Lexists(f, ("params/" + std::to_string(i)).c_str(), H5P_DEFAULT) > 0; ++i)
            for (const char* what : {"grad", "value", "act_gram"})
              extend("params/" + std::to_string(i) + "/" + what);
          const hid_t a = H5Aopen(f, "completed_steps", H5P_DEFAULT);
          REQUIRE(H5Awrite(a, H5T_NATIVE_INT64, &steps) >= 0);
          H5Aclose(a);
        });
        check_refused(bad, "completed_steps is " + std::to_string(steps) + " but /loss has storage for");
        std::string err;
        CHECK(check_recording(bad, nullptr, &err) == Status::invalid_argument);
      }
    }
    SUBCASE("missing loss") {
      edit_file(fresh(), [](hid_t f) { REQUIRE(H5Ldelete(f, "loss", H5P_DEFAULT) >= 0); });
      check_refused(bad, "/loss is missing");
    }
    SUBCASE("missing parameter group") {
      edit_file(fresh(), [](hid_t f) { REQUIRE(H5Ldelete(f, "params/3", H5P_DEFAULT) >= 0); });
      check_refused(bad, "group /params/3 is missing");
    }
    SUBCASE("wrong dtype") {
      edit_file(fresh(), [](hid_t f) { replace_dataset(f, "params/0/grad", H5T_STD_I32LE, {3, 6, 5}); });
      check_refused(bad, "has type integer of 4 bytes");
    }
    SUBCASE("a float type without IEEE layout") {
      // One flipped bit of a type message (found by a byte-flip sweep of a recording with
      // checksums, 2026-12-05): HDF5 converts whatever layout a file declares, so an exponent
      // bias of 126 read every value doubled, without an error.
      for (const char* name : {"params/0/grad", "loss"}) {
        CAPTURE(name);
        edit_file(fresh(), [&](hid_t f) {
          const bool grad = name[0] == 'p';
          const hid_t t = H5Tcopy(grad ? H5T_IEEE_F32LE : H5T_IEEE_F64LE);
          REQUIRE(H5Tset_ebias(t, grad ? 126 : 1022) >= 0);
          replace_dataset(f, name, t, grad ? std::vector<hsize_t>{3, 6, 5} : std::vector<hsize_t>{3});
          H5Tclose(t);
        });
        check_refused(bad, std::string("has type float of ") + (name[0] == 'p' ? "4" : "8") +
                               " bytes without IEEE layout");
      }
    }
    SUBCASE("wrong shape") {
      edit_file(fresh(), [](hid_t f) { replace_dataset(f, "params/0/grad", H5T_IEEE_F32LE, {3, 5, 6}); });
      check_refused(bad, "has shape (3, 5, 6); expected (≥3, 6, 5)");
    }
    SUBCASE("too few steps in a dataset") {
      edit_file(fresh(), [](hid_t f) { replace_dataset(f, "params/0/act_gram", H5T_IEEE_F32LE, {2, 5, 5}); });
      check_refused(bad, "act_gram has shape (2, 5, 5)");
    }
    SUBCASE("max logits of the wrong rank, type or length") {
      edit_file(fresh(), [](hid_t f) { replace_dataset(f, "max_logits", H5T_IEEE_F32LE, {3}); });
      check_refused(bad, "dataset /max_logits is not a 2-D (steps, heads) array");
      edit_file(fresh(), [](hid_t f) { replace_dataset(f, "max_logits", H5T_STD_I64LE, {3, 3}); });
      check_refused(bad, "/max_logits has type integer of 8 bytes");
      edit_file(fresh(), [](hid_t f) { replace_dataset(f, "max_logits", H5T_IEEE_F32LE, {2, 3}); });
      check_refused(bad, "/max_logits has shape (2, 3); expected (≥3, 3)");
      edit_file(fresh(), [](hid_t f) { replace_dataset(f, "max_logits", H5T_IEEE_F32LE, {3, 0}); });
      check_refused(bad, "/max_logits has 0 heads");
    }
    SUBCASE("no max logits: optional, and reading them is an error") {
      edit_file(fresh(), [](hid_t f) { REQUIRE(H5Ldelete(f, "max_logits", H5P_DEFAULT) >= 0); });
      RecordingReader r;
      std::string err;
      REQUIRE_MESSAGE(r.open(bad, &err) == Status::ok, err);
      CHECK(r.info().max_logit_heads == 0);
      std::vector<float> buf(3);
      CHECK(r.read_max_logits(0, 1, buf.data(), &err) == Status::invalid_argument);
      CHECK(err.find("has no /max_logits") != std::string::npos);
      CHECK(check_recording(bad, nullptr, &err) == Status::ok);
    }
    SUBCASE("wrong shape attribute") {
      edit_file(fresh(), [](hid_t f) {
        const hid_t g = H5Gopen2(f, "params/1", H5P_DEFAULT);
        REQUIRE(H5Adelete(g, "shape") >= 0);
        H5Gclose(g);
      });
      check_refused(bad, "attribute 'shape' is missing");
    }
    SUBCASE("damaged chunk shape") {
      // One flipped byte in a dataset's stored chunk shape (the audit's gzip recording: a chunk of
      // 65288 rows in a dataset of 8, at two offsets) made HDF5 1.10's H5Dread crash with SIGSEGV.
      // The reader now refuses a chunk shape HDF5 would never create, at open(). The chunk
      // dimensions sit in the layout message as 4-byte little-endian values, followed by the
      // element size; the test finds that run and flips the second byte of the second dimension.
      const std::string z = temp_path("gz_shape.h5");
      write_recording(z, 3, 6);
      hsize_t chunk[3] = {0, 0, 0};
      {
        const hid_t f = H5Fopen(z.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
        const hid_t d = H5Dopen2(f, "params/0/grad", H5P_DEFAULT);
        const hid_t plist = H5Dget_create_plist(d);
        REQUIRE(H5Pget_chunk(plist, 3, chunk) == 3);
        H5Pclose(plist);
        H5Dclose(d);
        H5Fclose(f);
      }
      const std::string bytes = schatten::test::file_bytes(z);
      std::string run;
      for (const std::uint32_t v :
           {std::uint32_t(chunk[0]), std::uint32_t(chunk[1]), std::uint32_t(chunk[2]), 4u})
        for (int b = 0; b < 4; ++b)
          run.push_back(char((v >> (8 * b)) & 0xff));
      const std::size_t at = bytes.find(run);
      REQUIRE(at != std::string::npos);
      {
        std::fstream io(z, std::ios::in | std::ios::out | std::ios::binary);
        io.seekp(std::streamoff(at + 5));
        io.put(char(bytes[at + 5] ^ char(0xff)));
      }
      check_refused(z, "chunk shape no HDF5 writer can create");
      std::string err;
      CHECK(check_recording(z, nullptr, &err) == Status::invalid_argument);
      fs::remove(z);
    }
    SUBCASE("damaged chunk") {
      // Overwrite one byte, or all bytes, of one stored gradient chunk (one step per chunk:
      // step 0 stays readable). open() still succeeds (the metadata is intact). With gzip the
      // chunk no longer inflates, and with RecorderOptions::checksum its Fletcher-32 fails:
      // reading that step is an error. Uncompressed and without the checksum the damaged step
      // reads back as other values: what the option is for.
      struct Layout {
        int gzip;
        bool checksum, whole_chunk;
      };
      for (const Layout l : {Layout{6, false, true}, Layout{6, true, false}, Layout{0, true, false},
                             Layout{0, false, false}}) {
        CAPTURE(l.gzip);
        CAPTURE(l.checksum);
        const std::string z = temp_path("damaged.h5");
        write_recording(z, 3, l.gzip, 0, l.checksum);
        haddr_t addr = 0;
        hsize_t size = 0;
        {
          const hid_t f = H5Fopen(z.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
          const hid_t d = H5Dopen2(f, "params/0/grad", H5P_DEFAULT);
          hsize_t offset[3] = {1, 0, 0};
          unsigned mask = 0;
          REQUIRE(H5Dget_chunk_info_by_coord(d, offset, &mask, &addr, &size) >= 0);
          H5Dclose(d);
          H5Fclose(f);
        }
        REQUIRE(size > 8);
        {
          std::fstream io(z, std::ios::in | std::ios::out | std::ios::binary);
          if (l.whole_chunk) {
            io.seekp(std::streamoff(addr));
            for (hsize_t k = 0; k < size; ++k)
              io.put(char(0xA5));
          } else {  // the low byte of element 3 (a mantissa byte: still a finite float)
            io.seekg(std::streamoff(addr + 12));
            const char c = char(io.get());
            io.seekp(std::streamoff(addr + 12));
            io.put(char(c ^ 0x10));
          }
        }
        RecordingReader r;
        std::string err;
        REQUIRE(r.open(z, &err) == Status::ok);
        std::vector<float> buf(30);
        CHECK(r.read_grad(0, 0, buf.data(), &err) == Status::ok);
        if (l.gzip == 0 && !l.checksum) {
          CHECK(r.read_grad(1, 0, buf.data(), &err) == Status::ok);
          CHECK(buf[3] != make_step(test_info(), 1).grad[0][3]);  // silently other data
          CHECK(check_recording(z, nullptr, &err) == Status::ok);
        } else {
          CHECK(r.read_grad(1, 0, buf.data(), &err) == Status::invalid_argument);
          CHECK(err.find("cannot read step 1 of 'layer.0.weight'/grad") != std::string::npos);
          CHECK(r.read_grads(0, 3, 0, std::vector<float>(90).data(), &err) == Status::invalid_argument);
          CHECK(err.find("cannot read steps 0–2 of 'layer.0.weight'/grad") != std::string::npos);
          CHECK(check_recording(z, nullptr, &err) == Status::invalid_argument);
        }
        fs::remove(z);
      }
    }
    fs::remove(good);
    fs::remove(bad);
  }
}

}  // namespace io_test_recording
