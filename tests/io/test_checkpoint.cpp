// SPDX-License-Identifier: Apache-2.0
/// \file
/// HDF5 checkpoints: resume ≡ uninterrupted bit for bit, header and RNG round trip, clear
/// errors for other configurations, signatures, corrupt/truncated/missing files, atomic
/// writes that never damage the previous checkpoint, and heap exhaustion in save and load.
#include <doctest/doctest.h>

#include <hdf5.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <string>
#include <system_error>
#include <vector>

#include "schatten/core/random.hpp"
#include "schatten/io/checkpoint.hpp"
#include "schatten/optim/partition.hpp"
#include "schatten/optim/presets.hpp"
#include "schatten/optim/schatten_p.hpp"
#include "schatten/optim/split.hpp"
#include "support/allocations.hpp"
#include "support/files.hpp"
#include "support/hdf5_threads.hpp"
#include "support/random_floats.hpp"
#include "support/seed.hpp"
#include "support/threads.hpp"

namespace io_test_checkpoint {  // this file's scope in a unity build (tests/CMakeLists.txt)

using namespace schatten;
using namespace schatten::optim;
namespace fs = std::filesystem;
using schatten::test::random_vec;

namespace {
const std::vector<ParamSpec> kParams = {
    {"h.0.attn.weight", {12, 20}}, {"h.0.ln.bias", {20}}, {"h.0.mlp.weight", {20, 8}}};

/// Muon and AdamW, their momentum and first moment in `storage` (docs/optim.md "State precision").
auto make_opt(Precision storage = Precision::fp32) {
  MuonOptions m;
  m.mu_storage = storage;
  AdamWOptions a;
  a.mu_storage = storage;
  auto p = partition(kParams, propose_labels(kParams), route("muon", muon(m)), route("adamw", adamw(a)));
  REQUIRE(p.init());
  return p;
}

struct Model {
  std::vector<std::vector<float>> w;
  Model() {
    for (std::size_t i = 0; i < kParams.size(); ++i)
      w.push_back(random_vec(static_cast<std::size_t>(flatten(kParams[i].shape).size()), 100 + i));
  }
  template <class Opt>
  void steps(Opt& opt, int from, int to) {
    for (int t = from; t < to; ++t) {
      std::vector<std::vector<float>> g;
      std::vector<float*> gp, wp;
      for (std::size_t i = 0; i < w.size(); ++i)
        g.push_back(random_vec(w[i].size(), schatten::test::case_seed("ckpt_g", std::uint64_t(100 * t) + i)));
      for (std::size_t i = 0; i < w.size(); ++i) {
        gp.push_back(g[i].data());
        wp.push_back(w[i].data());
      }
      REQUIRE(opt.step(wp, gp));
    }
  }
};

/// This process's scratch directory; removed, with whatever the cases left in it, at exit.
const fs::path& scratch_dir() {
  static const struct Dir {
    fs::path path = fs::temp_directory_path() / ("schatten_test_ckpt_" + std::to_string(::getpid()));
    ~Dir() {
      std::error_code ec;
      fs::remove_all(path, ec);
    }
  } dir;
  return dir.path;
}

fs::path scratch(const char* name) {
  fs::create_directories(scratch_dir());
  return scratch_dir() / name;
}
/// Saves `src` to `path` and loads the file into `swapped` (two routes exchanged: the same
/// signature, which cannot tell): refused with `message` and nothing changed. Then into `same`:
/// ok, with `routes` recorded in the header. The check of the routing tests, for a Partition and a
/// SplitPartition alike.
template <class Opt>
void check_swapped_routes(const fs::path& path, Opt& src, Opt& swapped, Opt& same, const std::string& message,
                          const std::map<std::string, std::string>& routes) {
  REQUIRE(io::save_checkpoint(path.string(), src, io::CheckpointHeader{1, 1, src.signature(), {}, {}}) ==
          Status::ok);
  CHECK(swapped.signature() == src.signature());  // why the signature cannot tell
  const auto before = io::capture(swapped);
  io::CheckpointHeader h;
  std::string err;
  CHECK(io::load_checkpoint(path.string(), swapped, h, swapped.signature(), &err) ==
        Status::invalid_argument);
  CHECK(err.find(message) != std::string::npos);
  CHECK(io::capture(swapped) == before);
  REQUIRE(io::load_checkpoint(path.string(), same, h, same.signature(), &err) == Status::ok);
  CHECK(h.routes == routes);
}

}  // namespace

TEST_SUITE("io.checkpoint") {
  TEST_CASE("save at step 3 then load into a fresh optimizer: 3 more steps equal 6 uninterrupted") {
    const fs::path path = scratch("resume.h5");
    Model a, b;
    auto oa = make_opt();
    a.steps(oa, 0, 6);
    auto ob = make_opt();
    b.steps(ob, 0, 3);
    io::CheckpointHeader h;
    h.step = 3;
    h.signature = "muon+adamw v1";
    Rng rng(77);
    rng.normal();  // leaves a spare normal in the state
    h.rng = rng.state();
    std::string err;
    REQUIRE(io::save_checkpoint(path.string(), ob, h, &err) == Status::ok);
    CHECK_FALSE(fs::exists(path.string() + ".tmp"));
    auto fresh = make_opt();
    io::CheckpointHeader got;
    REQUIRE_MESSAGE(io::load_checkpoint(path.string(), fresh, got, "muon+adamw v1", &err) == Status::ok, err);
    CHECK(got.step == 3);
    CHECK(got.signature == "muon+adamw v1");
    REQUIRE(got.rng.has_value());
    Rng r2(0);
    r2.set_state(*got.rng);
    CHECK(r2.normal() == rng.normal());  // the spare is restored too
    b.steps(fresh, 3, 6);
    CHECK(a.w == b.w);
    fs::remove(path);
  }

  TEST_CASE("bf16 states: the file holds their exact floats; resuming equals the uninterrupted run") {
    const fs::path path = scratch("resume_bf16.h5");
    Model a, b;
    auto oa = make_opt(Precision::bf16);
    a.steps(oa, 0, 6);
    auto ob = make_opt(Precision::bf16);
    b.steps(ob, 0, 3);
    io::CheckpointHeader h;
    h.step = 3;
    h.signature = ob.signature();
    std::string err;
    REQUIRE_MESSAGE(io::save_checkpoint(path.string(), ob, h, &err) == Status::ok, err);
    // The file's momentum is the state's bf16 values widened: floats whose low 16 bits are zero.
    io::FieldSet fields;
    io::CheckpointHeader read;
    REQUIRE(io::read_checkpoint(path.string(), fields, read, &err) == Status::ok);
    const auto& mu = std::get<std::vector<float>>(fields.at("h.0.attn.weight/0_trace_momentum/mu"));
    REQUIRE(mu.size() == 240u);
    std::size_t low_bits = 0, nonzero = 0;
    for (float x : mu) {
      std::uint32_t u;
      std::memcpy(&u, &x, sizeof u);
      low_bits += (u & 0xFFFFu) != 0;
      nonzero += x != 0.0f;
    }
    CHECK(low_bits == 0);
    CHECK(nonzero == 240u);
    auto fresh = make_opt(Precision::bf16);
    io::CheckpointHeader got;
    REQUIRE_MESSAGE(io::load_checkpoint(path.string(), fresh, got, ob.signature(), &err) == Status::ok, err);
    b.steps(fresh, 3, 6);
    CHECK(a.w == b.w);
    CHECK(io::capture(fresh) == io::capture(oa));
    // The fp32 optimizer's signature differs (mu_storage=bf16 is in the file's).
    auto fp32 = make_opt();
    CHECK(io::load_checkpoint(path.string(), fp32, got, fp32.signature(), &err) == Status::invalid_argument);
    CHECK(err.find("optimizer signature differs") != std::string::npos);
    fs::remove(path);
  }

  TEST_CASE("loading into another configuration or signature fails naming the mismatch") {
    const fs::path path = scratch("config.h5");
    Model m;
    auto opt = make_opt();
    m.steps(opt, 0, 2);
    REQUIRE(io::save_checkpoint(path.string(), opt, io::CheckpointHeader{1, 2, "muon+adamw", {}, {}}) ==
            Status::ok);
    // The hidden matrices routed to SGD instead of Muon: other field names.
    auto other = partition(kParams, {"sgd", "adamw", "sgd"}, route("sgd", sgd()), route("adamw", adamw()));
    REQUIRE(other.init());
    const auto before = io::capture(other);
    io::CheckpointHeader h;
    std::string err;
    CHECK(io::load_checkpoint(path.string(), other, h, "", &err) == Status::invalid_argument);
    CAPTURE(err);
    // The recorded routes tell first (since 2026-12-07); a file without them, by its fields.
    CHECK(err.find("parameter 'h.0.attn.weight' takes route 'muon' in the checkpoint, 'sgd' here") !=
          std::string::npos);
    CHECK(io::capture(other) == before);
    REQUIRE(io::write_checkpoint(path.string() + ".old", io::capture(opt),
                                 io::CheckpointHeader{1, 2, "muon+adamw", {}, {}}) == Status::ok);
    CHECK(io::load_checkpoint(path.string() + ".old", other, h, "", &err) == Status::invalid_argument);
    CHECK(err.find("h.0.attn.weight/") != std::string::npos);
    CHECK(io::capture(other) == before);
    fs::remove(path.string() + ".old");
    // A different shape: same names, other sizes.
    const std::vector<ParamSpec> wider = {
        {"h.0.attn.weight", {12, 24}}, {"h.0.ln.bias", {20}}, {"h.0.mlp.weight", {20, 8}}};
    auto w = partition(wider, propose_labels(wider), route("muon", muon()), route("adamw", adamw()));
    REQUIRE(w.init());
    CHECK(io::load_checkpoint(path.string(), w, h, "", &err) == Status::invalid_argument);
    CHECK(err.find("parameter 'h.0.attn.weight' has shape [12, 20] in the checkpoint, [12, 24] here") !=
          std::string::npos);
    // Without the recorded shapes (write_checkpoint with none), the field sizes still differ.
    REQUIRE(io::write_checkpoint(path.string(), io::capture(opt),
                                 io::CheckpointHeader{1, 2, "muon+adamw", {}, {}}) == Status::ok);
    CHECK(io::load_checkpoint(path.string(), w, h, "", &err) == Status::invalid_argument);
    CHECK(err.find("elements") != std::string::npos);
    // The signature.
    auto same = make_opt();
    CHECK(io::load_checkpoint(path.string(), same, h, "muon+adamw lr=0.05", &err) ==
          Status::invalid_argument);
    CHECK(err.find("signature") != std::string::npos);
  }

  TEST_CASE("each parameter's route is recorded: a swapped routing is refused") {
    // Two routes whose rules keep the same fields (muon and scion) swapped between two
    // parameters loaded with ok, and the signature (the routes' rules, not who takes them) was
    // the same (audit of 2026-12-07). Files written before routes were recorded load as before.
    const fs::path path = scratch("routes.h5");
    const std::vector<ParamSpec> ps = {{"w1", {6, 4}}, {"w2", {6, 4}}};
    const auto make = [&](const char* l1, const char* l2) {
      auto p = optim::partition(ps, {l1, l2}, route("a", muon()), route("b", scion()));
      REQUIRE(p.init());
      return p;
    };
    auto src = make("a", "b");
    std::vector<float> w1(24, 0.5f), w2(24, -0.25f), g1(24), g2(24);
    for (std::size_t k = 0; k < 24; ++k) {
      g1[k] = 0.01f * float(k % 5) - 0.02f;
      g2[k] = 0.02f * float(k % 3) - 0.01f;
    }
    REQUIRE(src.step({w1.data(), w2.data()}, {g1.data(), g2.data()}));
    auto swapped = make("b", "a"), same = make("a", "b");
    check_swapped_routes(path, src, swapped, same,
                         "parameter 'w1' takes route 'a' in the checkpoint, 'b' here",
                         {{"w1", "a"}, {"w2", "b"}});
    io::CheckpointHeader h;
    std::string err;
    // A file without routes (written as before: write_checkpoint with a header that has none).
    REQUIRE(io::write_checkpoint(path.string(), io::capture(src),
                                 io::CheckpointHeader{1, 1, src.signature(), {}, {}}) == Status::ok);
    CHECK(io::load_checkpoint(path.string(), swapped, h, swapped.signature(), &err) == Status::ok);
  }

  TEST_CASE("a split partition records each piece's route: swapped pieces are refused") {
    // The routes were recorded by params(), the fused parameters, and a split partition named no
    // labels: q → muon, k → scion loaded into q → scion, k → muon with ok, signature and all (a
    // fuzzer of the split partition, 2026-12-07). They are recorded by piece now.
    const fs::path path = scratch("split_routes.h5");
    const SplitLayout layout({{"w", {6, 4}}}, {SplitSpec{"w", 0, {3, 3}, 0, {"q", "k"}}});
    const auto make = [&](const char* q, const char* k) {
      auto s = split_partition(
          layout, partition(layout.pieces(), {q, k}, route("muon", muon()), route("scion", scion())));
      REQUIRE(s.init());
      return s;
    };
    auto src = make("muon", "scion");
    std::vector<float> w(24), g(24);
    for (std::size_t k = 0; k < 24; ++k) {
      w[k] = 0.1f * float(k % 7) - 0.3f;
      g[k] = 0.05f * float(k % 5) - 0.1f;
    }
    REQUIRE(src.step({w.data()}, {g.data()}));
    auto swapped = make("scion", "muon"), same = make("muon", "scion");
    check_swapped_routes(path, src, swapped, same,
                         "parameter 'w[q]' takes route 'muon' in the checkpoint, 'scion' here",
                         {{"w[q]", "muon"}, {"w[k]", "scion"}});
  }

  TEST_CASE("a signature beyond an attribute's 64 KiB is saved, read back and compared") {
    // HDF5's earliest format keeps an attribute within 64 KiB: the signature of a per-head cut of
    // a large model (18,144 pieces: 79 KB) made every save fail with "cannot write '….tmp'"
    // (audit of 2026-12-07). Beyond 60,000 bytes it is a dataset now; shorter ones stay the
    // attribute they were. The file stays untimed (its bytes a function of its contents).
    const fs::path path = scratch("long_signature.h5");
    Model m;
    auto opt = make_opt();
    m.steps(opt, 0, 2);
    for (std::size_t bytes : {std::size_t(59999), std::size_t(60001), std::size_t(200000)}) {
      CAPTURE(bytes);
      std::string sig(bytes, 'x');
      for (std::size_t k = 0; k < bytes; k += 97)
        sig[k] = char('a' + k % 26);
      REQUIRE(io::save_checkpoint(path.string(), opt, io::CheckpointHeader{1, 2, sig, {}, {}}) == Status::ok);
      auto again = make_opt();
      io::CheckpointHeader h;
      std::string err;
      REQUIRE(io::load_checkpoint(path.string(), again, h, sig, &err) == Status::ok);
      CHECK(h.signature == sig);
      std::string other = sig;
      other.back() = '!';
      CHECK(io::load_checkpoint(path.string(), again, h, other, &err) == Status::invalid_argument);
      CHECK(err.find("signature differs") != std::string::npos);
      const std::string first = test::file_bytes(path.string());
      REQUIRE(io::save_checkpoint(path.string(), opt, io::CheckpointHeader{1, 2, sig, {}, {}}) == Status::ok);
      CHECK((test::file_bytes(path.string()) == first));
    }
  }

  TEST_CASE("values no state holds are refused on load: NaN, infinities, negative counts and steps") {
    // Finding 42: an AdamW count of -1, a negative or NaN ν, a NaN μ loaded with ok and the next
    // step wrote NaN into the parameters; an all-zero RNG state loaded and normal() then never
    // returned; a NaN spare was the next normal deviate.
    const fs::path good = scratch("values.h5"), bad = scratch("values_bad.h5");
    Model m;
    auto opt = make_opt();
    m.steps(opt, 0, 2);
    io::CheckpointHeader h{1, 2, opt.signature(), Rng(5).state(), {}};
    std::string err;
    REQUIRE(io::save_checkpoint(good.string(), opt, h, &err) == Status::ok);
    io::FieldSet fields;
    io::CheckpointHeader read;
    REQUIRE(io::read_checkpoint(good.string(), fields, read, &err) == Status::ok);
    std::string count, nu, mu;  // AdamW's fields of h.0.ln.bias
    for (const auto& [name, value] : fields)
      if (name.rfind("h.0.ln.bias/", 0) == 0) {
        const std::string leaf = name.substr(name.rfind('/') + 1);
        if (leaf == "count") count = name;
        if (leaf == "nu") nu = name;
        if (leaf == "mu") mu = name;
      }
    REQUIRE(!count.empty());
    REQUIRE(!nu.empty());
    REQUIRE(!mu.empty());
    const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
    struct Edit {
      std::string field;
      io::FieldValue value;
      const char* message;
    };
    const auto with = [&](const std::string& name, float v) {
      auto x = std::get<std::vector<float>>(fields.at(name));
      x[1] = v;
      return io::FieldValue(x);
    };
    const Edit edits[] = {{count, std::int64_t(-1), "is -1: a count or step cannot be negative"},
                          {nu, with(nu, nan), "element 1 is nan, not a finite number"},
                          {nu, with(nu, -inf), "element 1 is -inf, not a finite number"},
                          {mu, with(mu, nan), "element 1 is nan"},
                          {mu, with(mu, inf), "element 1 is inf"}};
    Model fresh_model;
    for (const Edit& e : edits) {
      CAPTURE(e.field);
      CAPTURE(e.message);
      io::FieldSet edited = fields;
      edited[e.field] = e.value;
      REQUIRE(io::write_checkpoint(bad.string(), edited, read, &err) == Status::ok);
      auto target = make_opt();
      const auto before = io::capture(target);
      io::CheckpointHeader untouched{1, 77, "untouched", {}, {}};
      CHECK(io::load_checkpoint(bad.string(), target, untouched, target.signature(), &err) ==
            Status::invalid_argument);
      CHECK_MESSAGE(err.find("field '" + e.field + "'") != std::string::npos, err);
      CHECK_MESSAGE(err.find(e.message) != std::string::npos, err);
      CHECK(io::capture(target) == before);
      CHECK(untouched.step == 77);
      CHECK(untouched.signature == "untouched");
    }
    // The header: a negative step, an all-zero RNG state, a spare that is not finite.
    std::vector<std::pair<io::CheckpointHeader, const char*>> headers;
    headers.push_back({io::CheckpointHeader{1, -1, opt.signature(), {}, {}}, "step -1 is negative"});
    io::CheckpointHeader zero = read;
    zero.rng->words = {0, 0, 0, 0};
    headers.push_back({zero, "rng_words are all zero"});
    io::CheckpointHeader spare = read;
    spare.rng->spare = std::numeric_limits<double>::quiet_NaN();
    spare.rng->has_spare = true;
    headers.push_back({spare, "rng_spare is nan"});
    for (const auto& [header, message] : headers) {
      const std::string msg = message;
      CAPTURE(msg);
      REQUIRE(io::write_checkpoint(bad.string(), fields, header, &err) == Status::ok);
      auto target = make_opt();
      const auto before = io::capture(target);
      io::CheckpointHeader untouched{1, 77, "untouched", {}, {}};
      CHECK(io::load_checkpoint(bad.string(), target, untouched, "", &err) == Status::invalid_argument);
      CHECK_MESSAGE(err.find(msg) != std::string::npos, err);
      CHECK(io::capture(target) == before);
      CHECK(untouched.step == 77);
    }
    // The unedited file still loads.
    auto target = make_opt();
    CHECK_MESSAGE(io::load_checkpoint(good.string(), target, read, target.signature(), &err) == Status::ok,
                  err);
    fs::remove(good);
    fs::remove(bad);
  }

  TEST_CASE("schatten_muon's sentinels load: next_criterion and activation_step -1, log_objective -inf") {
    auto p =
        partition(kParams, propose_labels(kParams), route("muon", schatten_muon()), route("adamw", adamw()));
    REQUIRE(p.init());
    io::FieldSet fields = io::capture(p);
    std::string next, logobj;
    for (const auto& [name, value] : fields) {
      if (io::detail::field_is(name, "next_criterion")) next = name;
      if (io::detail::field_is(name, "log_objective")) logobj = name;
    }
    REQUIRE(!next.empty());
    REQUIRE(!logobj.empty());
    std::string err;
    // A fresh state holds activation_step = -1 (no statistics yet): it loads as it was saved.
    CHECK_MESSAGE(io::restore(p, fields, &err) == Status::ok, err);
    fields[next] = std::int64_t(-1);
    fields[logobj] = -std::numeric_limits<double>::infinity();
    CHECK_MESSAGE(io::restore(p, fields, &err) == Status::ok, err);
    fields[next] = std::int64_t(-2);
    CHECK(io::restore(p, fields, &err) == Status::invalid_argument);
    CHECK(err.find("is -2") != std::string::npos);
    fields[next] = std::int64_t(-1);
    for (const double v :
         {std::numeric_limits<double>::infinity(), std::numeric_limits<double>::quiet_NaN()}) {
      fields[logobj] = v;
      CHECK(io::restore(p, fields, &err) == Status::invalid_argument);
      CHECK(err.find("not a finite number") != std::string::npos);
    }
  }

  TEST_CASE("a refused load leaves schatten_muon's activation statistics as they were") {
    // Found by an audit (2026-12-06): the statistics sit behind a shared_ptr, so restore()'s
    // trial copy shared them with the target, and the trial wrote h.0.attn.weight's Gram and
    // sample count into the live optimizer before h.0.mlp.weight's NaN momentum refused the
    // load. The fields are now checked in a pass that writes nothing.
    auto p =
        partition(kParams, propose_labels(kParams), route("muon", schatten_muon()), route("adamw", adamw()));
    REQUIRE(p.init());
    const auto x10 = random_vec(10 * 20, schatten::test::case_seed("ckpt_stats_x10"));
    const auto x4 = random_vec(4 * 20, schatten::test::case_seed("ckpt_stats_x4"));
    REQUIRE(accumulate_activations(p, "h.0.attn.weight", MatrixRef<const float>(x10.data(), 10, 20)) ==
            Status::ok);
    io::FieldSet fields = io::capture(p);  // 10 samples
    REQUIRE(clear_activations(p, "h.0.attn.weight") == Status::ok);
    REQUIRE(accumulate_activations(p, "h.0.attn.weight", MatrixRef<const float>(x4.data(), 4, 20)) ==
            Status::ok);
    std::string mu;  // h.0.mlp.weight's momentum, visited after h.0.attn.weight's statistics
    for (const auto& [name, value] : fields)
      if (name.rfind("h.0.mlp.weight/", 0) == 0 && io::detail::field_is(name, "mu")) mu = name;
    REQUIRE(!mu.empty());
    auto m = std::get<std::vector<float>>(fields.at(mu));
    m[0] = std::numeric_limits<float>::quiet_NaN();
    fields[mu] = m;
    const io::FieldSet before = io::capture(p);  // 4 samples
    std::string err;
    CHECK(io::restore(p, fields, &err) == Status::invalid_argument);
    CHECK_MESSAGE(err.find("field '" + mu + "' element 0 is nan") != std::string::npos, err);
    CHECK(io::capture(p) == before);
    CHECK(activation_gram(p, "h.0.attn.weight").samples != nullptr);
    CHECK(*activation_gram(p, "h.0.attn.weight").samples == 4);
  }

  TEST_CASE("parameter shapes are recorded: transposed, reshaped or other parameters are refused") {
    const fs::path path = scratch("shapes.h5");
    const std::vector<ParamSpec> specs = {{"w", {8, 6}}, {"conv", {4, 3, 3, 3}}, {"b", {6}}, {"s", {}}};
    const std::vector<std::string> labels = {"muon", "muon", "adamw", "adamw"};
    auto make = [&](const std::vector<ParamSpec>& ps) {
      auto p = partition(ps, std::vector<std::string>(labels.begin(), labels.begin() + ps.size()),
                         route("muon", muon()), route("adamw", adamw()));
      REQUIRE(p.init());
      return p;
    };
    auto opt = make(specs);
    std::vector<std::vector<float>> w, g;
    for (std::size_t i = 0; i < specs.size(); ++i) {
      const auto n = static_cast<std::size_t>(flatten(specs[i].shape).size());
      w.push_back(random_vec(n, 300 + i));
      g.push_back(random_vec(n, 400 + i));
    }
    std::vector<float*> wp, gp;
    for (std::size_t i = 0; i < specs.size(); ++i) {
      wp.push_back(w[i].data());
      gp.push_back(g[i].data());
    }
    REQUIRE(opt.step(wp, gp));
    std::string err;
    REQUIRE(io::save_checkpoint(path.string(), opt, io::CheckpointHeader{1, 1, "", {}, {}}, &err) ==
            Status::ok);
    {
      io::FieldSet f;
      io::CheckpointHeader h;
      REQUIRE(io::read_checkpoint(path.string(), f, h, &err) == Status::ok);
      const io::ShapeMap expected = {{"w", {8, 6}}, {"conv", {4, 3, 3, 3}}, {"b", {6}}, {"s", {}}};
      CHECK(h.shapes == expected);
    }
    // Each target has fields of the same names and sizes as the file (8 × 6 and 6 × 8; the
    // conv weight declared 4 × 27), which restore() alone accepted.
    auto refused = [&](std::vector<ParamSpec> ps, const std::string& expected) {
      auto target = make(ps);
      const auto before = io::capture(target);
      io::CheckpointHeader h;
      CHECK(io::load_checkpoint(path.string(), target, h, "", &err) == Status::invalid_argument);
      CHECK_MESSAGE(err.find(expected) != std::string::npos, err);
      CHECK(io::capture(target) == before);
    };
    refused({{"w", {6, 8}}, specs[1], specs[2], specs[3]},
            "parameter 'w' has shape [8, 6] in the checkpoint, [6, 8] here");
    refused({specs[0], {"conv", {4, 27}}, specs[2], specs[3]},
            "parameter 'conv' has shape [4, 3, 3, 3] in the checkpoint, [4, 27] here");
    refused({specs[0], specs[1], specs[2], {"s", {1}}},
            "parameter 's' has shape [] in the checkpoint, [1] here");
    refused({specs[0], specs[1], specs[2]},
            "the checkpoint has a parameter 's' this optimizer does not have");
    refused({specs[0], specs[1], specs[2], {"t", {}}}, "the checkpoint has no parameter 't'");
    // The same shapes load, and so does a file without shapes (written before they were
    // recorded), checked by its fields alone: there the transposed target loads.
    auto same = make(specs);
    io::CheckpointHeader h;
    CHECK_MESSAGE(io::load_checkpoint(path.string(), same, h, "", &err) == Status::ok, err);
    CHECK(io::capture(same) == io::capture(opt));
    REQUIRE(io::write_checkpoint(path.string(), io::capture(opt), io::CheckpointHeader{1, 1, "", {}, {}}) ==
            Status::ok);
    auto transposed = make({{"w", {6, 8}}, specs[1], specs[2], specs[3]});
    CHECK_MESSAGE(io::load_checkpoint(path.string(), transposed, h, "", &err) == Status::ok, err);
    CHECK(h.shapes.empty());
    fs::remove(path);
  }

  TEST_CASE("a split partition's checkpoint records its pieces' shapes: another cut is refused") {
    // Found by an audit (2026-12-06), fixed 2026-12-07: the file recorded the caller's (fused)
    // shapes only, so a row cut of a 6 × 6 weight (pieces 2 × 6) loaded into a column cut
    // (pieces 6 × 2), whose fields have the same names and sizes, and its momenta were read
    // transposed, with the default (empty) expected signature.
    const fs::path path = scratch("split_shapes.h5");
    const std::vector<ParamSpec> specs = {{"w", {6, 6}}, {"b", {6}}};
    auto make = [&](int axis) {
      const SplitLayout layout(specs, {{"w", axis, {}, 3, {}}});
      REQUIRE_MESSAGE(bool(layout), layout.message());
      auto s = split_partition(layout, partition(layout.pieces(), propose_labels(layout.pieces()),
                                                 route("muon", muon()), route("adamw", adamw())));
      REQUIRE(s.init());
      return s;
    };
    auto rows = make(0);
    std::vector<std::vector<float>> w = {random_vec(36, 500), random_vec(6, 501)};
    for (std::uint64_t t = 0; t < 2; ++t) {
      std::vector<std::vector<float>> g = {random_vec(36, 510 + t), random_vec(6, 520 + t)};
      REQUIRE(rows.step({w[0].data(), w[1].data()}, {g[0].data(), g[1].data()}));
    }
    std::string err;
    REQUIRE(io::save_checkpoint(path.string(), rows, io::CheckpointHeader{1, 2, "", {}, {}}, &err) ==
            Status::ok);
    io::FieldSet fields;
    {
      io::CheckpointHeader h;
      REQUIRE(io::read_checkpoint(path.string(), fields, h, &err) == Status::ok);
      const io::ShapeMap expected = {
          {"w", {6, 6}}, {"w[0]", {2, 6}}, {"w[1]", {2, 6}}, {"w[2]", {2, 6}}, {"b", {6}}};
      CHECK(h.shapes == expected);
    }
    auto columns = make(1);
    const io::FieldSet before = io::capture(columns);
    io::CheckpointHeader h;
    CHECK(io::load_checkpoint(path.string(), columns, h, "", &err) == Status::invalid_argument);
    CHECK_MESSAGE(err == "parameter 'w[0]' has shape [2, 6] in the checkpoint, [6, 2] here", err);
    CHECK(io::capture(columns) == before);
    auto same = make(0);
    CHECK_MESSAGE(io::load_checkpoint(path.string(), same, h, "", &err) == Status::ok, err);
    CHECK(io::capture(same) == io::capture(rows));
    // A plain partition over the pieces has no fused 'w': refused, as before.
    auto plain = partition(same.layout().pieces(), propose_labels(same.layout().pieces()),
                           route("muon", muon()), route("adamw", adamw()));
    REQUIRE(plain.init());
    CHECK(io::load_checkpoint(path.string(), plain, h, "", &err) == Status::invalid_argument);
    CHECK_MESSAGE(err == "the checkpoint has a parameter 'w' this optimizer does not have", err);
    // A file written before the pieces were recorded (the caller's shapes only) is checked by
    // those, as then: it loads into either cut (docs/optim.md, "Fused parameters").
    REQUIRE(io::write_checkpoint(path.string(), fields,
                                 io::CheckpointHeader{1, 2, "", {}, {{"w", {6, 6}}, {"b", {6}}}}) ==
            Status::ok);
    auto old_columns = make(1);
    CHECK_MESSAGE(io::load_checkpoint(path.string(), old_columns, h, "", &err) == Status::ok, err);
    // A piece named like another parameter would give one name two shapes: refused by the layout.
    const SplitLayout clash({{"w", {6, 6}}, {"w[0]", {2, 6}}}, {{"w", 0, {}, 3, {}}});
    CHECK(clash.message() == "split: 'w[0]' names a piece and another parameter or piece");
    const SplitLayout clash_split({{"w", {6, 6}}, {"w[0]", {2, 6}}},
                                  {{"w", 0, {}, 3, {}}, {"w[0]", 0, {}, 2, {}}});
    CHECK(clash_split.message() == "split: 'w[0]' names a piece and another parameter or piece");
    fs::remove(path);
  }

  TEST_CASE("rules with the same state load each other's files: only the signature tells them apart") {
    // Finding 43 (documentation): muon's checkpoint loads into scion with the default, empty,
    // expected signature; with the target's signature() it is refused.
    const fs::path path = scratch("kinds.h5");
    Model m;
    auto opt = make_opt();
    m.steps(opt, 0, 2);
    REQUIRE(io::save_checkpoint(path.string(), opt, io::CheckpointHeader{1, 2, opt.signature(), {}, {}}) ==
            Status::ok);
    auto other = partition(kParams, propose_labels(kParams), route("muon", scion()), route("adamw", adamw()));
    REQUIRE(other.init());
    io::CheckpointHeader h;
    std::string err;
    CHECK_MESSAGE(io::load_checkpoint(path.string(), other, h, "", &err) == Status::ok, err);
    CHECK(io::load_checkpoint(path.string(), other, h, other.signature(), &err) == Status::invalid_argument);
    CHECK(err.find("optimizer signature differs") != std::string::npos);
    fs::remove(path);
  }

  TEST_CASE("a checkpoint's bytes depend only on its contents: no object carries a time") {
    // HDF5 stamps every object with the second it was written unless told not to; two saves of
    // one state a second apart then differed in 15 places. Every object of a saved checkpoint
    // (groups, datasets, the root) must have no access, modification, change or birth time.
    const fs::path path = scratch("untimed.h5");
    Model m;
    auto opt = make_opt();
    m.steps(opt, 0, 2);
    REQUIRE(io::save_checkpoint(path.string(), opt, io::CheckpointHeader{1, 2, "s", {}, {}}) == Status::ok);
    hid_t file = H5Fopen(path.string().c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    REQUIRE(file >= 0);
    struct Seen {
      int objects = 0, timed = 0;
    } seen;
#if H5_VERSION_GE(1, 12, 0)
    using Info = H5O_info2_t;
#define SCHATTEN_TEST_OVISIT H5Ovisit3
#else
    using Info = H5O_info_t;
#define SCHATTEN_TEST_OVISIT H5Ovisit2
#endif
    const auto visit = [](hid_t, const char*, const Info* info, void* data) -> herr_t {
      auto* s = static_cast<Seen*>(data);
      ++s->objects;
      if (info->atime != 0 || info->mtime != 0 || info->ctime != 0 || info->btime != 0) ++s->timed;
      return 0;
    };
    const herr_t rc = SCHATTEN_TEST_OVISIT(file, H5_INDEX_NAME, H5_ITER_NATIVE, visit, &seen, H5O_INFO_TIME);
#undef SCHATTEN_TEST_OVISIT
    H5Fclose(file);
    REQUIRE(rc >= 0);
    CHECK(seen.objects >= 15);  // the root, /schatten, the fields and the shapes
    CHECK(seen.timed == 0);
  }

  TEST_CASE("two threads save and load checkpoints of their own optimizers at once") {
    // The thread contract (docs/conventions.md "Threads"): separate files from separate threads,
    // where HDF5 is built thread-safe (Debian's is: one lock around every HDF5 call). Each
    // thread saves its optimizer 10 times and loads each save into an optimizer of its own; every
    // file must have the bytes of the same save made alone (a checkpoint's bytes depend only on
    // its contents), and every load must succeed with the saved states.
    if (!schatten::test::hdf5_thread_safe()) return;
    constexpr int kThreads = 2, kRounds = 10;
    std::vector<decltype(make_opt())> opts, loaded;
    opts.reserve(kThreads);  // no reallocation: a copied partition would share its scratch
    loaded.reserve(kThreads);
    std::vector<std::string> alone;
    for (int t = 0; t < kThreads; ++t) {
      Model m;
      opts.push_back(make_opt());
      m.steps(opts.back(), 0, 2 + 3 * t);  // another state per thread
      loaded.push_back(make_opt());
      const fs::path p = scratch(("alone" + std::to_string(t) + ".h5").c_str());
      REQUIRE(io::save_checkpoint(p.string(), opts.back(), io::CheckpointHeader{1, t, "threads", {}, {}}) ==
              Status::ok);
      alone.push_back(test::file_bytes(p));
    }
    std::vector<int> failed(kThreads, 0), differing(kThreads, 0);
    test::run_together(kThreads, [&](int t) {
      const std::size_t i = static_cast<std::size_t>(t);
      const fs::path p = scratch_dir() / ("together" + std::to_string(t) + ".h5");
      for (int r = 0; r < kRounds; ++r) {
        io::CheckpointHeader h;
        failed[i] += io::save_checkpoint(p.string(), opts[i],
                                         io::CheckpointHeader{1, t, "threads", {}, {}}) == Status::ok
                         ? 0
                         : 1;
        differing[i] += test::file_bytes(p) == alone[i] ? 0 : 1;
        failed[i] +=
            io::load_checkpoint(p.string(), loaded[i], h, "threads") == Status::ok && h.step == t ? 0 : 1;
      }
    });
    for (std::size_t t = 0; t < kThreads; ++t) {
      CAPTURE(t);
      CHECK(failed[t] == 0);
      CHECK(differing[t] == 0);
      // What each thread loaded saves to the bytes its optimizer saved alone.
      const fs::path p = scratch(("reloaded" + std::to_string(t) + ".h5").c_str());
      REQUIRE(io::save_checkpoint(p.string(), loaded[t],
                                  io::CheckpointHeader{1, static_cast<std::int64_t>(t), "threads", {}, {}}) ==
              Status::ok);
      CHECK((test::file_bytes(p) == alone[t]));  // parenthesised: doctest prints no bytes
    }
  }

  TEST_CASE("missing, corrupt and truncated files are errors, and a crashed write leaves the old file") {
    const fs::path path = scratch("atomic.h5");
    Model m;
    auto opt = make_opt();
    m.steps(opt, 0, 1);
    REQUIRE(io::save_checkpoint(path.string(), opt, io::CheckpointHeader{1, 1, "s", {}, {}}) == Status::ok);
    io::FieldSet f;
    io::CheckpointHeader h;
    std::string err;
    CHECK(io::read_checkpoint(scratch("nope.h5").string(), f, h, &err) == Status::invalid_argument);
    CHECK(err.find("missing") != std::string::npos);
    {  // garbage
      std::ofstream(scratch("garbage.h5"), std::ios::binary) << "this is not an HDF5 file at all";
      CHECK(io::read_checkpoint(scratch("garbage.h5").string(), f, h, &err) == Status::invalid_argument);
    }
    {  // truncated: the first half of a valid file
      const std::string bytes = test::file_bytes(path);
      std::ofstream(scratch("half.h5"), std::ios::binary) << bytes.substr(0, bytes.size() / 2);
      CHECK(io::read_checkpoint(scratch("half.h5").string(), f, h, &err) == Status::invalid_argument);
      CHECK(f.empty());
    }
    // A crash in the middle of the next write leaves "<path>.tmp" behind; the checkpoint itself
    // is the old one and loads.
    std::ofstream(path.string() + ".tmp", std::ios::binary) << "partial";
    auto fresh = make_opt();
    CHECK(io::load_checkpoint(path.string(), fresh, h, "s", &err) == Status::ok);
    // A write that cannot happen (no such directory) fails cleanly.
    CHECK(io::save_checkpoint((scratch("x") / "no_dir" / "c.h5").string(), opt, h, &err) ==
          Status::invalid_argument);
    // The next successful save replaces the stale temporary file and the checkpoint.
    CHECK(io::save_checkpoint(path.string(), opt, io::CheckpointHeader{1, 2, "s", {}, {}}) == Status::ok);
    CHECK_FALSE(fs::exists(path.string() + ".tmp"));
    CHECK(io::read_checkpoint(path.string(), f, h, &err) == Status::ok);
    CHECK(h.step == 2);
    fs::remove_all(path.parent_path());
  }

  TEST_CASE("heap exhaustion in save and load: a status, and the file or the optimizer as before") {
    // Each host allocation of save_checkpoint() and then of load_checkpoint() refused in turn
    // (support/allocations.hpp; HDF5's own mallocs are not seen). No exception may leave them.
    // A refused save leaves the previous checkpoint, which loads; a refused load leaves the
    // optimizer bit for bit as it was. The first attempt that meets no refusal succeeds.
    const fs::path path = scratch("heap.h5");
    const std::string file = path.string();  // not inside a probe: the conversion allocates
    Model a;
    auto oa = make_opt();
    a.steps(oa, 0, 2);
    io::CheckpointHeader h;
    h.step = 2;
    h.signature = "muon+adamw v1";
    REQUIRE(io::save_checkpoint(file, oa, h) == Status::ok);
    const io::FieldSet at2 = io::capture(oa);
    a.steps(oa, 2, 3);
    const io::FieldSet at3 = io::capture(oa);
    REQUIRE(at2 != at3);
    h.step = 3;
    int refused_saves = 0, refused_loads = 0;
    for (std::int64_t k = 1;; ++k) {
      CAPTURE(k);
      REQUIRE(k < 100000);
      std::string err;
      const auto attempt =
          schatten::test::refusing_allocation(k, [&] { return io::save_checkpoint(file, oa, h, &err); });
      const Status s = attempt.result;
      const bool failed = attempt.refused;
      REQUIRE_FALSE(attempt.threw);
      auto check = make_opt();
      io::CheckpointHeader got;
      REQUIRE(io::load_checkpoint(file, check, got) == Status::ok);
      if (!failed) {
        REQUIRE(s == Status::ok);
        CHECK(io::capture(check) == at3);
        break;
      }
      if (s != Status::ok) {
        ++refused_saves;
        CHECK(s == Status::out_of_memory);
        CHECK(io::capture(check) == at2);  // the previous checkpoint, whole
        CHECK(got.step == 2);
      } else {
        CHECK(io::capture(check) == at3);  // a refusal some code absorbed: the new one, whole
      }
    }
    CHECK(refused_saves > 0);
    // The file holds step 3; load it, with each allocation refused, into an optimizer at step 2.
    Model b;
    auto ob = make_opt();
    b.steps(ob, 0, 2);
    REQUIRE(io::capture(ob) == at2);
    for (std::int64_t k = 1;; ++k) {
      CAPTURE(k);
      REQUIRE(k < 100000);
      io::CheckpointHeader got;
      got.step = -1;
      const auto attempt = schatten::test::refusing_allocation(
          k, [&] { return io::load_checkpoint(file, ob, got, "muon+adamw v1"); });
      const Status s = attempt.result;
      const bool failed = attempt.refused;
      REQUIRE_FALSE(attempt.threw);
      if (!failed || s == Status::ok) {
        REQUIRE(s == Status::ok);
        CHECK(io::capture(ob) == at3);
        CHECK(got.step == 3);
        if (!failed) break;
        REQUIRE(io::restore(ob, at2) == Status::ok);  // back to step 2 for the next attempt
        continue;
      }
      ++refused_loads;
      CHECK(s == Status::out_of_memory);  // not "corrupt file": the file is fine
      CHECK(io::capture(ob) == at2);
      CHECK(got.step == -1);
    }
    CHECK(refused_loads > 0);
    MESSAGE("refused saves " << refused_saves << ", refused loads " << refused_loads);
    fs::remove(path);
  }

  TEST_CASE("hostile sizes in a file are refused before anything is read into our buffers") {
    // Found by fuzz_checkpoint: H5Aread writes as many values as the attribute holds, and the
    // reader sized its buffers from the file. Each file below is valid HDF5 with one size edited.
    const fs::path dir = scratch("hostile");
    fs::create_directories(dir);
    io::FieldSet fields;
    fields["w"] = std::vector<float>{1, 2, 3};
    Rng rng(1);
    io::CheckpointHeader header{io::kCheckpointSchemaVersion, 4, "sig", rng.state(), {{"w", {3}}}};
    auto edited = [&](const char* name, auto edit) {
      const std::string path = (dir / name).string();
      REQUIRE(io::write_checkpoint(path, fields, header) == Status::ok);
      const hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
      REQUIRE(file >= 0);
      edit(file);
      H5Fclose(file);
      io::FieldSet f;
      io::CheckpointHeader h;
      std::string err;
      const Status s = io::read_checkpoint(path, f, h, &err);
      CAPTURE(err);
      CHECK(s == Status::invalid_argument);
      CHECK(f.empty());
    };
    auto replace_attr = [](hid_t obj, const char* name, hid_t type, hsize_t n, const void* data) {
      H5Adelete(obj, name);
      const hid_t space = H5Screate_simple(1, &n, nullptr);
      const hid_t attr = H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
      REQUIRE(attr >= 0);
      H5Awrite(attr, type, data);
      H5Aclose(attr);
      H5Sclose(space);
    };
    edited("rng_words_64.h5", [&](hid_t file) {  // 64 words where the state has 4
      const std::vector<std::uint64_t> words(64, 7);
      replace_attr(file, "rng_words", H5T_NATIVE_UINT64, 64, words.data());
    });
    edited("version_float.h5", [&](hid_t file) {  // schema_version 1.5 as a double (HDF5 would read 1)
      const double v = 1.5;
      replace_attr(file, "schema_version", H5T_NATIVE_DOUBLE, 1, &v);
    });
    edited("step_float.h5", [&](hid_t file) {  // the step as a double
      const double v = 3.0;
      replace_attr(file, "step", H5T_NATIVE_DOUBLE, 1, &v);
    });
    edited("version_array.h5", [&](hid_t file) {  // schema_version as 1000 ints
      const std::vector<int> v(1000, io::kCheckpointSchemaVersion);
      replace_attr(file, "schema_version", H5T_NATIVE_INT, 1000, v.data());
    });
    // A dataset declaring 2^40 elements with none stored (chunked): no reader may size a buffer
    // from it.
    auto huge_dataset = [](hid_t file, const char* path, hid_t type) {
      const hsize_t n = hsize_t(1) << 40, chunk = 1024;
      const hid_t space = H5Screate_simple(1, &n, nullptr);
      const hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
      H5Pset_chunk(dcpl, 1, &chunk);
      const hid_t set = H5Dcreate2(file, path, type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
      REQUIRE(set >= 0);
      H5Dclose(set);
      H5Pclose(dcpl);
      H5Sclose(space);
    };
    edited("huge_extent.h5",
           [&](hid_t file) { huge_dataset(file, "/schatten/optimizer/huge", H5T_NATIVE_FLOAT); });
    // The parameter shapes: a negative dimension, floats, 2^40 dimensions, a stray dataset.
    auto replace_shape = [](hid_t file, const char* path, hid_t type, hsize_t n, const void* data) {
      H5Ldelete(file, "/schatten/parameters/w/shape", H5P_DEFAULT);
      const hid_t space = H5Screate_simple(1, &n, nullptr);
      const hid_t set = H5Dcreate2(file, path, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
      REQUIRE(set >= 0);
      if (data) H5Dwrite(set, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
      H5Dclose(set);
      H5Sclose(space);
    };
    edited("shape_negative.h5", [&](hid_t file) {
      const std::int64_t d = -3;
      replace_shape(file, "/schatten/parameters/w/shape", H5T_NATIVE_INT64, 1, &d);
    });
    edited("shape_float.h5", [&](hid_t file) {
      const double d = 3.0;
      replace_shape(file, "/schatten/parameters/w/shape", H5T_NATIVE_DOUBLE, 1, &d);
    });
    edited("shape_stray.h5", [&](hid_t file) {
      const std::int64_t d = 3;
      replace_shape(file, "/schatten/parameters/w/dims", H5T_NATIVE_INT64, 1, &d);
    });
    edited("shape_huge.h5", [&](hid_t file) {  // 2^40 dimensions
      H5Ldelete(file, "/schatten/parameters/w/shape", H5P_DEFAULT);
      huge_dataset(file, "/schatten/parameters/w/shape", H5T_NATIVE_INT64);
    });
    fs::remove_all(dir);
  }
}

}  // namespace io_test_checkpoint
