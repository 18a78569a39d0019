// SPDX-License-Identifier: Apache-2.0
/// \file
/// schatten-replay end to end: a recording replayed through adamw and muon gives bit for bit
/// the trajectory of the same optimizers stepped inline on the same gradients; diagnostics and
/// signatures match; bad command lines and bad recordings fail with a message and no output.
#include <doctest/doctest.h>
#include <hdf5.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "schatten/core/random.hpp"
#include "schatten/io/recording.hpp"
#include "schatten/optim/partition.hpp"
#include "schatten/optim/presets.hpp"
#include "support/seed.hpp"

using namespace schatten;
using namespace schatten::optim;
namespace fs = std::filesystem;

namespace {

std::string temp_path(const std::string& name) {
  const fs::path p =
      fs::temp_directory_path() / ("schatten_replay_" + std::to_string(::getpid()) + "_" + name);
  std::error_code ec;
  fs::remove(p, ec);
  return p.string();
}

const std::vector<ParamSpec> kParams = {{"h.0.attn.weight", {12, 20}},
                                        {"h.0.ln.bias", {20}},
                                        {"h.0.mlp.weight", {20, 8}},
                                        {"head.weight", {5, 20}}};
constexpr int kSteps = 6;

std::vector<float> random_vec(std::size_t n, const char* what, std::uint64_t salt) {
  Rng rng(test::case_seed(what, salt));
  std::vector<float> v(n);
  for (float& x : v)
    x = static_cast<float>(0.1 * rng.normal());
  return v;
}
std::size_t numel(std::size_t i) { return std::size_t(flatten(kParams[i].shape).size()); }
std::vector<float> grad(std::size_t i, int t) {
  return random_vec(numel(i), "replay_g", 100 * std::uint64_t(t) + i);
}
std::vector<float> initial(std::size_t i) { return random_vec(numel(i), "replay_w", i); }

void write_recording(const std::string& path) {
  io::RecordingInfo info;
  info.model = "replay test";
  for (const auto& p : kParams) {
    io::RecordedParam r;
    r.name = p.name;
    r.shape = p.shape;
    r.has_initial = true;
    info.params.push_back(r);
  }
  io::Recorder rec;
  std::string err;
  REQUIRE_MESSAGE(rec.create(path, info, {}, &err) == Status::ok, err);
  std::vector<std::vector<float>> w0;
  for (std::size_t i = 0; i < kParams.size(); ++i)
    w0.push_back(initial(i));
  for (int t = 0; t < kSteps; ++t) {
    std::vector<std::vector<float>> g;
    io::StepData d;
    d.loss = 1.0 / (t + 1);
    for (std::size_t i = 0; i < kParams.size(); ++i)
      g.push_back(grad(i, t));
    for (std::size_t i = 0; i < kParams.size(); ++i) {
      d.grads.push_back(g[i].data());
      if (t == 0) d.initial.push_back(w0[i].data());
    }
    REQUIRE_MESSAGE(rec.append(d, &err) == Status::ok, err);
  }
  REQUIRE(rec.close(&err) == Status::ok);
}

std::string stderr_path() {
  return (fs::temp_directory_path() / ("schatten_replay_" + std::to_string(::getpid()) + "_stderr.txt"))
      .string();
}

/// Runs schatten-replay with `args` (stderr to stderr_path()); returns its exit status.
int run_replay(const std::string& args) {
  const std::string cmd = std::string(SCHATTEN_REPLAY_EXE) + " " + args + " 2>" + stderr_path();
  const int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}
std::string replay_stderr() {
  std::ifstream in(stderr_path());
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

/// Reads a whole float or double dataset of the output.
template <class T>
std::vector<T> read_all(hid_t f, const std::string& name) {
  const hid_t d = H5Dopen2(f, name.c_str(), H5P_DEFAULT);
  REQUIRE_MESSAGE(d >= 0, name);
  const hid_t s = H5Dget_space(d);
  std::vector<T> v(std::size_t(H5Sget_simple_extent_npoints(s)));
  REQUIRE(H5Dread(d, sizeof(T) == 4 ? H5T_NATIVE_FLOAT : H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                  v.data()) >= 0);
  H5Sclose(s);
  H5Dclose(d);
  return v;
}
std::string read_string_attr(hid_t obj, const char* name) {
  const hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
  REQUIRE(a >= 0);
  const hid_t t = H5Aget_type(a);
  std::string s(H5Tget_size(t), '\0');
  REQUIRE(H5Aread(a, t, s.data()) >= 0);
  H5Tclose(t);
  H5Aclose(a);
  return s.substr(0, s.find('\0'));
}

/// Steps `opt` inline over the recording's gradients; checks every step's parameters against
/// run `run` of the replay output bit for bit, and the update norms exactly.
template <class Opt>
void compare_inline(Opt& opt, hid_t out, int run) {
  const std::string base = "runs/" + std::to_string(run) + "/";
  std::vector<std::vector<float>> w, traj;
  for (std::size_t i = 0; i < kParams.size(); ++i) {
    w.push_back(initial(i));
    traj.push_back(read_all<float>(out, base + "params/" + std::to_string(i)));
    REQUIRE(traj.back().size() == (kSteps + 1) * numel(i));
    CHECK(std::equal(w[i].begin(), w[i].end(), traj[i].begin()));
  }
  const std::vector<double> un = read_all<double>(out, base + "update_norm");
  REQUIRE(un.size() == kSteps * kParams.size());
  for (int t = 0; t < kSteps; ++t) {
    std::vector<std::vector<float>> g;
    std::vector<float*> gp, wp;
    for (std::size_t i = 0; i < kParams.size(); ++i)
      g.push_back(grad(i, t));
    for (std::size_t i = 0; i < kParams.size(); ++i) {
      gp.push_back(g[i].data());
      wp.push_back(w[i].data());
    }
    REQUIRE(opt.step(wp, gp));
    for (std::size_t i = 0; i < kParams.size(); ++i) {
      CAPTURE(t);
      CAPTURE(i);
      const std::size_t n = numel(i);
      CHECK(std::equal(w[i].begin(), w[i].end(), traj[i].begin() + std::ptrdiff_t((t + 1) * n)));
      const BlockShape s = flatten(kParams[i].shape);
      CHECK(un[std::size_t(t) * kParams.size() + i] ==
            std::sqrt(squared_norm(ConstBlock(g[i].data(), s.rows, s.cols))));
    }
  }
  CHECK(read_string_attr(H5Gopen2(out, base.c_str(), H5P_DEFAULT), "signature") == opt.signature());
}

}  // namespace

TEST_SUITE("io.replay") {
  TEST_CASE("replay: adamw and muon reproduce the inline trajectories bit for bit") {
    const std::string rec = temp_path("rec.h5"), out = temp_path("out.h5"), json = temp_path("out.json");
    write_recording(rec);
    REQUIRE_MESSAGE(
        run_replay(rec +
                   " --optimizer adamw:lr=3e-3 --optimizer muon:lr=0.05,adamw_wd=0 --save-params --quiet"
                   " --out " +
                   out + " --json " + json) == 0,
        replay_stderr());
    REQUIRE(fs::exists(json));
    const hid_t f = H5Fopen(out.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    REQUIRE(f >= 0);
    AdamWOptions a;
    a.lr = Schedule::constant(3e-3);
    auto adamw_only =
        partition(kParams, std::vector<std::string>(kParams.size(), "adamw"), route("adamw", adamw(a)));
    REQUIRE(adamw_only.init());
    compare_inline(adamw_only, f, 0);
    MuonOptions m;
    m.lr = Schedule::constant(0.05);
    AdamWOptions side;
    side.weight_decay = 0;
    LabelPolicy policy;
    policy.spectral = "muon";
    auto mixed = partition(kParams, propose_labels(kParams, policy), route("muon", muon(m)),
                           route("adamw", adamw(side)));
    REQUIRE(mixed.init());
    compare_inline(mixed, f, 1);
    // The polar step's orthogonality error where Muon runs (the two hidden matrices), NaN elsewhere.
    const std::vector<double> oe = read_all<double>(f, "runs/1/orthogonality_error");
    for (int t = 0; t < kSteps; ++t) {
      CHECK(oe[std::size_t(t) * 4 + 0] > 0.0);
      CHECK(oe[std::size_t(t) * 4 + 0] < 1.0);
      CHECK(std::isnan(oe[std::size_t(t) * 4 + 1]));
      CHECK(oe[std::size_t(t) * 4 + 2] > 0.0);
      CHECK(std::isnan(oe[std::size_t(t) * 4 + 3]));
    }
    CHECK(read_string_attr(f, "initial") == "recorded");
    H5Fclose(f);
    fs::remove(rec);
    fs::remove(out);
    fs::remove(json);
  }

  TEST_CASE("replay: bad command lines and bad recordings fail with a message and no output") {
    const std::string rec = temp_path("rec2.h5"), out = temp_path("out2.h5");
    write_recording(rec);
    CHECK(run_replay("--help > /dev/null") == 0);
    CHECK(run_replay(rec + " --out " + out) == 2);
    CHECK(replay_stderr().find("no --optimizer") != std::string::npos);
    CHECK(run_replay(rec + " --optimizer muon:lr=fast --out " + out) == 1);
    CHECK(replay_stderr().find("'lr=fast' is not a number") != std::string::npos);
    CHECK(run_replay(rec + " --optimizer muon:lr --out " + out) == 2);
    CHECK(run_replay(rec + " --optimizer lion --out " + out) == 1);
    CHECK(replay_stderr().find("unknown preset 'lion'") != std::string::npos);
    CHECK(run_replay(temp_path("missing.h5") + " --optimizer adamw --out " + out) == 1);
    CHECK(replay_stderr().find("does not exist") != std::string::npos);
    fs::resize_file(rec, fs::file_size(rec) / 2);
    CHECK(run_replay(rec + " --optimizer adamw --out " + out) == 1);
    CHECK(replay_stderr().find("truncated or corrupt") != std::string::npos);
    CHECK_FALSE(fs::exists(out));
    CHECK_FALSE(fs::exists(out + ".tmp"));
    fs::remove(rec);
    fs::remove(stderr_path());
  }
}
