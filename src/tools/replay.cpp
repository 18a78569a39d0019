// SPDX-License-Identifier: Apache-2.0
/// \file
/// schatten-replay: runs optimizers offline on the gradients of a recording
/// (docs/replay-format.md) and writes per-step diagnostics to HDF5 and a JSON summary.
///
/// Replay is open loop: step t applies the optimizer to the gradient the training run computed
/// at its own parameters W_t, not at the replayed ones. Memory: per optimizer the
/// parameters, an update buffer, the rules' state (up to two model-sized buffers) and the
/// partition's copy of it; plus two gradient buffers; independent of the number of steps. When one step's
/// gradients reach 1 MiB, step t+1 is read on a second thread while the optimizers work on step t (HDF5 calls
/// are serialised by one mutex: the Debian HDF5 has no locks); smaller steps are read on the main thread.
#include <hdf5.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../io/hdf5_util.hpp"
#include "schatten/config.hpp"
#include "schatten/core/runtime.hpp"
#include "schatten/io/recording.hpp"
#include "schatten/optim/partition.hpp"
#include "schatten/optim/presets.hpp"

namespace {

using namespace schatten;
namespace opt = schatten::optim;
using Clock = std::chrono::steady_clock;

constexpr const char* kHelp =
    R"(usage: schatten-replay RECORDING --optimizer SPEC [--optimizer SPEC ...] [options]

Replays the gradients of RECORDING (an HDF5 recording, docs/replay-format.md) through one or
several optimizers, step by step, starting from the recorded parameters before step 0 (or from
zeros when the recording has none), and writes per-step diagnostics.

  --optimizer SPEC   an optimizer: PRESET[:KEY=VALUE[,KEY=VALUE...]]; repeat for several
  --config FILE      read more SPECs from FILE, one per line (# starts a comment)
  --out PATH         output HDF5 file (default replay.h5); written as PATH.tmp, renamed when done
  --json PATH        JSON summary (default: PATH of --out with .json instead of .h5)
  --steps N          replay only the first N steps (default: every completed step)
  --save-params      also store every parameter after every step (output grows by the model size
                     per step and optimizer)
  --no-diagnostics   skip the orthogonality error of the polar step (one Gram GEMM per matrix)
  --read-ahead       read step t+1 on a second thread while the optimizers run step t
  --no-read-ahead    read each step on the main thread (default: read ahead when one step's
                     gradients are 1 MiB or more; below that the thread hand-off costs more than
                     it hides, docs/benchmarks/cpu-replay.md)
  --quiet            no progress on stderr
  --help             this text

Presets and their keys (defaults are those of include/schatten/optim/presets.hpp):
  sgd      lr=1e-3 momentum=0 nesterov=0 wd=0                   every parameter
  adamw    lr=1e-3 b1=0.9 b2=0.999 eps=1e-8 wd=0.01              every parameter
  muon     lr=0.02 momentum=0.95 nesterov=1 wd=0 polar=keller|polar_express|qdwh iterations=5
           shape=keller|moonlight|none
  muadam   lr=0.02 b1=0.9 b2=0.999 eps=1e-8 exponent=-0.25 wd=0
  freon    lr=0.02 c=0.6667 momentum=0.95 nesterov=1 wd=0
  kaon     lr=0.02 momentum=0.95 nesterov=1 kaon_steps=5 wd=0
The matrix presets (muon, muadam, freon, kaon) serve the hidden matrices that
optim::propose_labels picks (rank >= 2, no 'embed'/'head'/... in the name); every other
parameter goes to AdamW with keys adamw_lr=1e-3 adamw_wd=0.01 adamw_b1 adamw_b2 adamw_eps.
route=all sends every parameter to the preset instead.

Example:
  schatten-replay data/replay/digits_mlp.h5 --optimizer muon --optimizer adamw:lr=3e-3,wd=0 \
      --out build/replay.h5
  /usr/bin/python3 bench/plot_replay.py build/replay.h5

Output (docs/replay-format.md): /runs/<k>/update_norm, param_norm, orthogonality_error
(steps x params), labels, and params/<i> with --save-params; the JSON summary has the final
norms per parameter and the time spent reading, stepping and writing. Exit status: 0 done,
1 a failure while running (message on stderr), 2 bad command line.
)";

// ---------------------------------------------------------------------------------------------
// Optimizer specifications

struct Spec {
  std::string text;    ///< as given on the command line
  std::string preset;  ///< sgd, adamw, muon, ...
  std::map<std::string, std::string> kv;
};

bool parse_spec(const std::string& text, Spec& s, std::string& err) {
  s = Spec{};
  s.text = text;
  const std::size_t colon = text.find(':');
  s.preset = text.substr(0, colon);
  if (s.preset.empty()) {
    err = "empty preset name in '" + text + "'";
    return false;
  }
  if (colon == std::string::npos) return true;
  std::string rest = text.substr(colon + 1);
  std::size_t pos = 0;
  while (pos <= rest.size()) {
    const std::size_t comma = std::min(rest.find(',', pos), rest.size());
    const std::string item = rest.substr(pos, comma - pos);
    const std::size_t eq = item.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == item.size()) {
      err = "'" + item + "' in '" + text + "' is not KEY=VALUE";
      return false;
    }
    if (!s.kv.emplace(item.substr(0, eq), item.substr(eq + 1)).second) {
      err = "key '" + item.substr(0, eq) + "' given twice in '" + text + "'";
      return false;
    }
    pos = comma + 1;
  }
  return true;
}

/// Consumes the keys of a Spec, converting values; the first problem is kept in `err`.
class Keys {
 public:
  explicit Keys(const Spec& s) : spec_(s), left_(s.kv) {}
  void number(const char* key, double& v) {
    auto it = left_.find(key);
    if (it == left_.end()) return;
    char* end = nullptr;
    const double d = std::strtod(it->second.c_str(), &end);
    if (end == it->second.c_str() || *end != '\0' || !std::isfinite(d))
      note(std::string("'") + key + "=" + it->second + "' is not a number");
    else
      v = d;
    left_.erase(it);
  }
  void integer(const char* key, int& v) {
    double d = v;
    number(key, d);
    if (d != std::floor(d) || d < 0 || d > 1000)
      note(std::string("'") + key + "' must be an integer in 0..1000");
    else
      v = int(d);
  }
  void flag(const char* key, bool& v) {
    auto it = left_.find(key);
    if (it == left_.end()) return;
    if (it->second == "1" || it->second == "true")
      v = true;
    else if (it->second == "0" || it->second == "false")
      v = false;
    else
      note(std::string("'") + key + "' must be 0/1 or true/false");
    left_.erase(it);
  }
  void lr(const char* key, opt::Schedule& s) {
    double v = s.peak;
    number(key, v);
    s = opt::Schedule::constant(v);
  }
  bool word(const char* key, std::string& v) {
    auto it = left_.find(key);
    if (it == left_.end()) return false;
    v = it->second;
    left_.erase(it);
    return true;
  }
  /// Call last: unknown keys are errors.
  bool done(std::string& err) {
    if (err_.empty() && !left_.empty())
      err_ = "unknown key '" + left_.begin()->first + "' for preset '" + spec_.preset + "' (see --help)";
    if (!err_.empty()) err = "--optimizer " + spec_.text + ": " + err_;
    return err_.empty();
  }
  void note(const std::string& m) {
    if (err_.empty()) err_ = m;
  }

 private:
  const Spec& spec_;
  std::map<std::string, std::string> left_;
  std::string err_;
};

// ---------------------------------------------------------------------------------------------
// Muon with its polar step observed: the same rules as optim::muon(), with Orthogonalize
// replaced by a rule that also keeps the polar kernel's ‖QQᵀ − I‖_F/√k. Q is computed exactly
// as Orthogonalize computes it (the error is one more GEMM on the result), so updates are
// bit-for-bit those of optim::muon() (tests/io/test_replay.cpp checks it).

struct ObservedOrthogonalize {
  static constexpr const char* name = "orthogonalize";
  static constexpr bool may_fail = true;
  PolarOptions polar{};
  explicit ObservedOrthogonalize(PolarOptions p) : polar(std::move(p)) {
    polar.compute_orthogonality_error = true;
  }

  struct State {
    std::int64_t count = 0;
    double orthogonality_error = std::numeric_limits<double>::quiet_NaN();
    std::shared_ptr<Workspace> workspace = std::make_shared<Workspace>();
    template <class V>
    friend void visit_fields(V& v, State& s) {
      v("count", s.count);
      v("orthogonality_error", s.orthogonality_error);
    }
  };
  State init(const opt::BlockShape& s) const {
    State st;
    st.workspace->reserve(polar_workspace_bytes(s.rows, s.cols, 1, polar, Precision::fp32));
    return st;
  }
  Status update(opt::Block u, State& s, opt::ConstBlock) const {
    const PolarReport r = schatten::polar(MatrixRef<const float>(u), u, polar, s.workspace.get());
    if (r.status != Status::ok) return r.status;
    s.orthogonality_error = r.orthogonality_error;
    ++s.count;
    return Status::ok;
  }
  std::string config() const { return opt::Signature(name).add("polar", opt::polar_config(polar)).str(); }
};

auto observed_muon(const opt::MuonOptions& o) {
  return opt::chain(opt::TraceMomentum{o.momentum, o.nesterov, o.momentum_form},
                    ObservedOrthogonalize{o.polar}, opt::ScaleByShape{o.shape},
                    opt::AddDecayedWeights{o.weight_decay}, opt::ScaleByLearningRate{o.lr});
}

/// A partition behind a virtual interface (the one place where the tool erases rule types).
class Runner {
 public:
  virtual ~Runner() = default;
  virtual opt::StepReport step(const std::vector<float*>& params, const std::vector<float*>& grads) = 0;
  virtual std::string signature() const = 0;
  virtual std::vector<std::string> labels() const = 0;
  /// The orthogonality error of each parameter's last polar step; NaN where there is none.
  virtual void orthogonality(std::vector<double>& out) = 0;
};

template <class P>
class RunnerOf final : public Runner {
 public:
  explicit RunnerOf(P p) : p_(std::move(p)) {
    for (std::size_t i = 0; i < p_.params().size(); ++i)
      keys_.emplace(p_.params()[i].name + "/1_orthogonalize/orthogonality_error", i);
  }
  opt::StepReport step(const std::vector<float*>& params, const std::vector<float*>& grads) override {
    return p_.step(params, grads);
  }
  std::string signature() const override { return p_.signature(); }
  std::vector<std::string> labels() const override { return p_.labels(); }
  void orthogonality(std::vector<double>& out) override {
    out.assign(p_.params().size(), std::numeric_limits<double>::quiet_NaN());
    Collector c{&keys_, &out};
    p_.visit(c);
  }

 private:
  struct Collector {
    const std::unordered_map<std::string, std::size_t>* keys;
    std::vector<double>* out;
    template <class F>
    void operator()(const std::string&, F&) {}
    void operator()(const std::string& name, double& v) {
      auto it = keys->find(name);
      if (it != keys->end()) (*out)[it->second] = v;
    }
  };
  P p_;
  std::unordered_map<std::string, std::size_t> keys_;
};

template <class P>
std::unique_ptr<Runner> runner(P p, const std::string& spec, std::string& err) {
  const opt::StepReport r = p.init();
  if (!r) {
    err = "--optimizer " + spec + ": " + r.message;
    return nullptr;
  }
  return std::make_unique<RunnerOf<P>>(std::move(p));
}

/// The optimizer a Spec describes, over the recording's parameters.
std::unique_ptr<Runner> build(const Spec& s, const std::vector<opt::ParamSpec>& ps, bool diagnostics,
                              std::string& err) {
  Keys k(s);
  const auto all = [&](const std::string& label) { return std::vector<std::string>(ps.size(), label); };
  if (s.preset == "sgd") {
    opt::SgdOptions o;
    k.lr("lr", o.lr);
    k.number("momentum", o.momentum);
    k.flag("nesterov", o.nesterov);
    k.number("wd", o.weight_decay);
    if (!k.done(err)) return nullptr;
    return runner(opt::partition(ps, all("sgd"), opt::route("sgd", opt::sgd(o))), s.text, err);
  }
  if (s.preset == "adamw") {
    opt::AdamWOptions o;
    k.lr("lr", o.lr);
    k.number("b1", o.b1);
    k.number("b2", o.b2);
    k.number("eps", o.eps);
    k.number("wd", o.weight_decay);
    if (!k.done(err)) return nullptr;
    return runner(opt::partition(ps, all("adamw"), opt::route("adamw", opt::adamw(o))), s.text, err);
  }
  // Matrix presets: their own keys, then the AdamW side and the routing.
  opt::AdamWOptions aw;
  k.lr("adamw_lr", aw.lr);
  k.number("adamw_wd", aw.weight_decay);
  k.number("adamw_b1", aw.b1);
  k.number("adamw_b2", aw.b2);
  k.number("adamw_eps", aw.eps);
  std::string routing = "auto";
  k.word("route", routing);
  if (routing != "auto" && routing != "all") k.note("route must be auto or all");
  opt::LabelPolicy policy;
  policy.spectral = s.preset;
  const std::vector<std::string> labels = routing == "all" ? all(s.preset) : opt::propose_labels(ps, policy);
  auto shape_rule = [&](opt::ScaleByShape::Rule& r) {
    std::string v;
    if (!k.word("shape", v)) return;
    if (v == "keller")
      r = opt::ScaleByShape::Rule::keller;
    else if (v == "moonlight")
      r = opt::ScaleByShape::Rule::moonlight;
    else if (v == "none")
      r = opt::ScaleByShape::Rule::none;
    else
      k.note("shape must be keller, moonlight or none");
  };
  auto mixed = [&](auto rule) {
    return runner(opt::partition(ps, labels, opt::route(s.preset, std::move(rule)),
                                 opt::route("adamw", opt::adamw(aw))),
                  s.text, err);
  };
  if (s.preset == "muon") {
    opt::MuonOptions o;
    k.lr("lr", o.lr);
    k.number("momentum", o.momentum);
    k.flag("nesterov", o.nesterov);
    k.number("wd", o.weight_decay);
    shape_rule(o.shape);
    std::string polar;
    if (k.word("polar", polar)) {
      if (polar == "keller" || polar == "newton_schulz") {
        o.polar = opt::MuonOptions::keller_polar();
      } else if (polar == "polar_express" || polar == "qdwh") {
        o.polar = PolarOptions{};
        o.polar.method = polar == "qdwh" ? PolarMethod::qdwh : PolarMethod::polar_express;
      } else {
        k.note("polar must be keller, polar_express or qdwh");
      }
    }
    k.integer("iterations", o.polar.iterations);
    if (!k.done(err)) return nullptr;
    if (diagnostics) return mixed(observed_muon(o));
    return mixed(opt::muon(o));
  }
  if (s.preset == "muadam") {
    opt::MuAdamOptions o;
    k.lr("lr", o.lr);
    k.number("b1", o.b1);
    k.number("b2", o.b2);
    k.number("eps", o.eps);
    k.number("exponent", o.exponent);
    k.number("wd", o.weight_decay);
    if (!k.done(err)) return nullptr;
    return mixed(opt::muadam(o));
  }
  if (s.preset == "freon") {
    opt::FreonOptions o;
    k.lr("lr", o.lr);
    k.number("c", o.c);
    k.number("momentum", o.momentum);
    k.flag("nesterov", o.nesterov);
    k.number("wd", o.weight_decay);
    shape_rule(o.shape);
    if (!k.done(err)) return nullptr;
    return mixed(opt::freon(o));
  }
  if (s.preset == "kaon") {
    opt::KaonOptions o;
    k.lr("lr", o.lr);
    k.number("momentum", o.momentum);
    k.flag("nesterov", o.nesterov);
    k.integer("kaon_steps", o.steps);
    k.number("wd", o.weight_decay);
    shape_rule(o.shape);
    if (!k.done(err)) return nullptr;
    return mixed(opt::kaon(o));
  }
  err =
      "--optimizer " + s.text + ": unknown preset '" + s.preset + "' (sgd, adamw, muon, muadam, freon, kaon)";
  return nullptr;
}

// ---------------------------------------------------------------------------------------------
// Command line

struct Options {
  std::string recording, out = "replay.h5", json;
  std::vector<Spec> specs;
  std::int64_t steps = -1;
  bool save_params = false, diagnostics = true, quiet = false;
  int read_ahead = -1;  ///< 1 on, 0 off, -1 automatic (on when a step's gradients reach 1 MiB)
};

int usage_error(const std::string& msg) {
  std::fprintf(stderr, "schatten-replay: %s\n(schatten-replay --help explains the options)\n", msg.c_str());
  return 2;
}

/// Returns -1 to continue, else the exit status.
int parse_args(int argc, char** argv, Options& o) {
  std::string err;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](std::string& v) {
      if (i + 1 >= argc) return false;
      v = argv[++i];
      return true;
    };
    std::string v;
    if (a == "--help" || a == "-h") {
      std::fputs(kHelp, stdout);
      return 0;
    } else if (a == "--optimizer") {
      if (!value(v)) return usage_error("--optimizer needs a SPEC");
      Spec s;
      if (!parse_spec(v, s, err)) return usage_error(err);
      o.specs.push_back(s);
    } else if (a == "--config") {
      if (!value(v)) return usage_error("--config needs a FILE");
      std::FILE* f = std::fopen(v.c_str(), "r");
      if (!f) return usage_error("cannot read config file '" + v + "'");
      char line[4096];
      while (std::fgets(line, sizeof line, f)) {
        std::string l = line;
        l = l.substr(0, l.find('#'));
        while (!l.empty() && std::isspace(static_cast<unsigned char>(l.back())))
          l.pop_back();
        std::size_t b = 0;
        while (b < l.size() && std::isspace(static_cast<unsigned char>(l[b])))
          ++b;
        if (b == l.size()) continue;
        Spec s;
        if (!parse_spec(l.substr(b), s, err)) {
          std::fclose(f);
          return usage_error(v + ": " + err);
        }
        o.specs.push_back(s);
      }
      std::fclose(f);
    } else if (a == "--out") {
      if (!value(o.out)) return usage_error("--out needs a PATH");
    } else if (a == "--json") {
      if (!value(o.json)) return usage_error("--json needs a PATH");
    } else if (a == "--steps") {
      char* end = nullptr;
      if (!value(v) || (o.steps = std::strtoll(v.c_str(), &end, 10), *end != '\0') || o.steps < 1)
        return usage_error("--steps needs a positive integer");
    } else if (a == "--save-params") {
      o.save_params = true;
    } else if (a == "--no-diagnostics") {
      o.diagnostics = false;
    } else if (a == "--no-read-ahead") {
      o.read_ahead = 0;
    } else if (a == "--read-ahead") {
      o.read_ahead = 1;
    } else if (a == "--quiet") {
      o.quiet = true;
    } else if (!a.empty() && a[0] == '-') {
      return usage_error("unknown option '" + a + "'");
    } else if (o.recording.empty()) {
      o.recording = a;
    } else {
      return usage_error("more than one recording given ('" + o.recording + "', '" + a + "')");
    }
  }
  if (o.recording.empty()) return usage_error("no recording given");
  if (o.specs.empty()) return usage_error("no --optimizer given");
  if (o.json.empty()) {
    o.json = o.out;
    const std::size_t dot = o.json.rfind(".h5");
    if (dot != std::string::npos && dot + 3 == o.json.size()) o.json.resize(dot);
    o.json += ".json";
  }
  return -1;
}

// ---------------------------------------------------------------------------------------------
// Output

std::string json_string(const std::string& s) {
  std::string r = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      r += '\\';
      r += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char b[8];
      std::snprintf(b, sizeof b, "\\u%04x", c);
      r += b;
    } else {
      r += c;
    }
  }
  return r + "\"";
}
std::string json_number(double v) {
  if (!std::isfinite(v)) return "null";
  char b[40];
  std::snprintf(b, sizeof b, "%.9g", v);
  return b;
}

/// One optimizer's replay: its parameters, buffers, output datasets and running figures.
struct Run {
  Spec spec;
  std::unique_ptr<Runner> runner;
  std::vector<std::vector<float>> params, work;
  std::vector<float*> pp, wp;
  io::h5::Handle group, update_norm, param_norm, ortho;
  std::vector<io::h5::Handle> trajectory;
  std::vector<double> un, pn, oe, oe_sum;
  std::vector<std::int64_t> oe_count;
  double t_step = 0, t_diag = 0, t_write = 0;
};

class Progress {
 public:
  Progress(std::int64_t total, bool quiet) : total_(total), quiet_(quiet), tty_(::isatty(2) != 0) {}
  void update(std::int64_t done) {
    if (quiet_) return;
    const double el = std::chrono::duration<double>(Clock::now() - start_).count();
    const bool last = done == total_;
    if (tty_) {
      if (!last && el - shown_ < 0.2) return;
      shown_ = el;
      const int width = 30, fill = int(width * done / std::max<std::int64_t>(1, total_));
      const double rate = done / std::max(el, 1e-9);
      std::fprintf(stderr, "\r[%s%s] %lld/%lld steps, %.1f steps/s, %.0f s left ",
                   std::string(fill, '#').c_str(), std::string(width - fill, '.').c_str(), (long long)done,
                   (long long)total_, rate, (total_ - done) / std::max(rate, 1e-9));
      if (last) std::fputc('\n', stderr);
    } else if (last || done * 10 / total_ != (done - 1) * 10 / total_) {
      std::fprintf(stderr, "schatten-replay: %lld/%lld steps (%.1f s)\n", (long long)done, (long long)total_,
                   el);
    }
  }

 private:
  std::int64_t total_;
  bool quiet_, tty_;
  Clock::time_point start_ = Clock::now();
  double shown_ = -1;
};

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

int fail_run(const std::string& msg, const std::string& tmp) {
  std::fprintf(stderr, "schatten-replay: %s\n", msg.c_str());
  if (!tmp.empty()) std::remove(tmp.c_str());
  return 1;
}

int replay(const Options& o) {
  const Clock::time_point t_start = Clock::now();
  std::mutex h5_mutex;  // every HDF5 call (reader thread, writer) holds it
  io::RecordingReader reader;
  std::string err;
  if (io::open_recording(o.recording, reader, &err) != Status::ok) return fail_run(err, "");
  const io::RecordingInfo& info = reader.info();
  if (info.steps == 0) return fail_run("'" + o.recording + "' has no completed steps", "");
  const std::int64_t steps = o.steps > 0 ? std::min(o.steps, info.steps) : info.steps;
  const std::size_t np = info.params.size();

  std::vector<opt::ParamSpec> ps;
  std::vector<std::size_t> sizes;
  bool all_recorded = true, any_recorded = false;
  for (const auto& p : info.params) {
    ps.push_back({p.name, p.shape});
    sizes.push_back(std::size_t(p.rows * p.cols));
    const bool rec = p.has_initial || p.has_value;
    all_recorded = all_recorded && rec;
    any_recorded = any_recorded || rec;
  }
  std::vector<std::vector<float>> initial(np);
  for (std::size_t i = 0; i < np; ++i) {
    initial[i].assign(sizes[i], 0.0f);
    if ((info.params[i].has_initial || info.params[i].has_value) &&
        reader.read_initial(i, initial[i].data(), &err) != Status::ok)
      return fail_run(err, "");
  }

  std::vector<Run> runs(o.specs.size());
  for (std::size_t r = 0; r < runs.size(); ++r) {
    Run& run = runs[r];
    run.spec = o.specs[r];
    run.runner = build(run.spec, ps, o.diagnostics, err);
    if (!run.runner) return fail_run(err, "");
    run.params = initial;
    run.work = initial;
    for (std::size_t i = 0; i < np; ++i) {
      run.pp.push_back(run.params[i].data());
      run.wp.push_back(run.work[i].data());
    }
    run.oe_sum.assign(np, 0.0);
    run.oe_count.assign(np, 0);
  }

  // The output, created before any work so that a bad path fails at once.
  const std::string tmp = o.out + ".tmp";
  io::h5::QuietErrors quiet;
  io::h5::Handle file(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
  if (!file.ok()) return fail_run("cannot create '" + tmp + "' (directory missing or not writable?)", "");
  const hid_t f = file.get();
  {
    const int version = 1;
    std::vector<std::string> names;
    for (const auto& p : info.params)
      names.push_back(p.name);
    bool ok = io::h5::write_string_attr(f, "format", "schatten-replay") &&
              io::h5::write_attr(f, "schema_version", H5T_NATIVE_INT32, &version) &&
              io::h5::write_string_attr(f, "recording", o.recording) &&
              io::h5::write_attr(f, "steps", H5T_NATIVE_INT64, &steps) &&
              io::h5::write_string_attr(f, "initial",
                                        all_recorded   ? "recorded"
                                        : any_recorded ? "mixed"
                                                       : "zeros") &&
              io::h5::write_string_dataset(f, "param_names", names);
    std::vector<double> loss(std::size_t(steps), 0.0);
    for (std::int64_t t = 0; ok && t < steps; ++t)
      ok = reader.read_loss(t, &loss[std::size_t(t)], &err) == Status::ok;
    if (ok) {
      const hsize_t n = hsize_t(steps);
      io::h5::Handle space(H5Screate_simple(1, &n, nullptr), H5Sclose);
      io::h5::Handle set(
          H5Dcreate2(f, "loss", H5T_IEEE_F64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
          H5Dclose);
      ok =
          set.ok() && H5Dwrite(set.get(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, loss.data()) >= 0;
    }
    io::h5::Handle runs_group(ok ? H5Gcreate2(f, "runs", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT) : -1,
                              H5Gclose);
    ok = ok && runs_group.ok();
    for (std::size_t r = 0; ok && r < runs.size(); ++r) {
      Run& run = runs[r];
      run.group = io::h5::Handle(
          H5Gcreate2(runs_group.get(), std::to_string(r).c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
          H5Gclose);
      const hid_t g = run.group.get();
      ok = run.group.ok() && io::h5::write_string_attr(g, "spec", run.spec.text) &&
           io::h5::write_string_attr(g, "signature", run.runner->signature()) &&
           io::h5::write_string_dataset(g, "labels", run.runner->labels());
      const hsize_t chunk = hsize_t(std::min<std::int64_t>(steps, 256));
      auto table = [&](const char* name) {
        return io::h5::Handle(io::h5::create_extendible(g, name, H5T_IEEE_F64LE, {hsize_t(np)}, 0, chunk),
                              H5Dclose);
      };
      if (ok) {
        run.update_norm = table("update_norm");
        run.param_norm = table("param_norm");
        run.ortho = table("orthogonality_error");
        ok = run.update_norm.ok() && run.param_norm.ok() && run.ortho.ok();
      }
      if (ok && o.save_params) {
        io::h5::Handle pg(H5Gcreate2(g, "params", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
        ok = pg.ok();
        for (std::size_t i = 0; ok && i < np; ++i) {
          run.trajectory.emplace_back(
              io::h5::create_extendible(pg.get(), std::to_string(i).c_str(), H5T_IEEE_F32LE,
                                        {hsize_t(info.params[i].rows), hsize_t(info.params[i].cols)}, 0),
              H5Dclose);
          ok = run.trajectory.back().ok() &&
               io::h5::append_step(run.trajectory.back().get(), 0, H5T_NATIVE_FLOAT, run.params[i].data());
        }
      }
    }
    if (!ok)
      return fail_run("cannot write the output header to '" + tmp + "'" + (err.empty() ? "" : ": " + err),
                      tmp);
  }

  // Reading runs one step ahead on another thread.
  std::vector<std::vector<float>> cur(np), next(np);
  for (std::size_t i = 0; i < np; ++i) {
    cur[i].resize(sizes[i]);
    next[i].resize(sizes[i]);
  }
  double t_read = 0, t_wait = 0;
  auto read_step = [&](std::int64_t t, std::vector<std::vector<float>>* into, std::string* e) {
    const Clock::time_point t0 = Clock::now();
    std::lock_guard<std::mutex> lock(h5_mutex);
    io::h5::QuietErrors q;
    for (std::size_t i = 0; i < np; ++i)
      if (reader.read_grad(t, i, (*into)[i].data(), e) != Status::ok) return false;
    t_read += seconds_since(t0);
    return true;
  };
  if (!read_step(0, &cur, &err)) return fail_run(err, tmp);
  std::size_t step_bytes = 0;
  for (std::size_t n : sizes)
    step_bytes += n * sizeof(float);
  // Tunable: measured on the 2-core CI machine (docs/benchmarks/cpu-replay.md).
  const bool read_ahead = o.read_ahead < 0 ? step_bytes >= (std::size_t(1) << 20) : o.read_ahead == 1;
  Progress progress(steps, o.quiet);
  std::vector<double> ortho;
  for (std::int64_t t = 0; t < steps; ++t) {
    std::string read_err;
    std::future<bool> ahead;
    if (t + 1 < steps && read_ahead)
      ahead = std::async(std::launch::async, read_step, t + 1, &next, &read_err);
    bool ok = true;
    for (Run& run : runs) {
      for (std::size_t i = 0; i < np; ++i)
        std::memcpy(run.work[i].data(), cur[i].data(), sizes[i] * sizeof(float));
      Clock::time_point t0 = Clock::now();
      const opt::StepReport rep = run.runner->step(run.pp, run.wp);
      run.t_step += seconds_since(t0);
      if (!rep) {
        err = "step " + std::to_string(t) + ", --optimizer " + run.spec.text + ": " + rep.message +
              (rep.bad_param >= 0 ? " (parameter '" + ps[std::size_t(rep.bad_param)].name + "')"
                                  : std::string());
        ok = false;
        break;
      }
      t0 = Clock::now();
      run.un.resize(np);
      run.pn.resize(np);
      for (std::size_t i = 0; i < np; ++i) {
        const index_t r = info.params[i].rows, c = info.params[i].cols;
        run.un[i] = std::sqrt(opt::squared_norm(opt::ConstBlock(run.work[i].data(), r, c)));
        run.pn[i] = std::sqrt(opt::squared_norm(opt::ConstBlock(run.params[i].data(), r, c)));
      }
      run.runner->orthogonality(ortho);
      for (std::size_t i = 0; i < np; ++i)
        if (std::isfinite(ortho[i])) {
          run.oe_sum[i] += ortho[i];
          ++run.oe_count[i];
        }
      run.oe = ortho;
      run.t_diag += seconds_since(t0);
      t0 = Clock::now();
      {
        std::lock_guard<std::mutex> lock(h5_mutex);
        const hsize_t ht = hsize_t(t);
        ok = io::h5::append_step(run.update_norm.get(), ht, H5T_NATIVE_DOUBLE, run.un.data()) &&
             io::h5::append_step(run.param_norm.get(), ht, H5T_NATIVE_DOUBLE, run.pn.data()) &&
             io::h5::append_step(run.ortho.get(), ht, H5T_NATIVE_DOUBLE, run.oe.data());
        for (std::size_t i = 0; ok && i < run.trajectory.size(); ++i)
          ok = io::h5::append_step(run.trajectory[i].get(), ht + 1, H5T_NATIVE_FLOAT, run.params[i].data());
      }
      run.t_write += seconds_since(t0);
      if (!ok) {
        err = "cannot write step " + std::to_string(t) + " to '" + tmp + "' (disk full?)";
        break;
      }
    }
    if (ahead.valid()) {
      const Clock::time_point t0 = Clock::now();
      const bool read_ok = ahead.get();
      t_wait += seconds_since(t0);
      if (ok && !read_ok) {
        err = read_err;
        ok = false;
      }
    }
    if (ok && !read_ahead && t + 1 < steps) {
      const Clock::time_point t0 = Clock::now();
      ok = read_step(t + 1, &next, &err);
      t_wait += seconds_since(t0);
    }
    if (!ok) return fail_run(err, tmp);
    std::swap(cur, next);
    progress.update(t + 1);
  }
  {
    std::lock_guard<std::mutex> lock(h5_mutex);
    for (Run& run : runs) {
      run.update_norm.reset();
      run.param_norm.reset();
      run.ortho.reset();
      run.trajectory.clear();
      run.group.reset();
    }
    if (!file.reset()) return fail_run("cannot close '" + tmp + "'", tmp);
  }
  if (std::rename(tmp.c_str(), o.out.c_str()) != 0)
    return fail_run("cannot rename '" + tmp + "' to '" + o.out + "'", tmp);
  const double total = seconds_since(t_start);

  // JSON summary.
  std::string j = "{\n  \"recording\": " + json_string(o.recording) +
                  ",\n  \"output\": " + json_string(o.out) + ",\n  \"steps\": " + std::to_string(steps) +
                  ",\n  \"schatten_version\": " + json_string(SCHATTEN_VERSION_STRING) +
                  ",\n  \"seconds\": {\"total\": " + json_number(total) +
                  ", \"read\": " + json_number(t_read) + ", \"read_wait\": " + json_number(t_wait) +
                  "},\n  \"read_ahead\": " + (read_ahead ? "true" : "false") + ",\n  \"runs\": [";
  for (std::size_t r = 0; r < runs.size(); ++r) {
    const Run& run = runs[r];
    const auto labels = run.runner->labels();
    j += std::string(r ? "," : "") + "\n    {\"spec\": " + json_string(run.spec.text) +
         ",\n     \"signature\": " + json_string(run.runner->signature()) +
         ",\n     \"seconds\": {\"optimizer\": " + json_number(run.t_step) +
         ", \"diagnostics\": " + json_number(run.t_diag) + ", \"write\": " + json_number(run.t_write) +
         "},\n     \"params\": [";
    for (std::size_t i = 0; i < np; ++i)
      j += std::string(i ? "," : "") + "\n       {\"name\": " + json_string(ps[i].name) +
           ", \"label\": " + json_string(labels[i]) + ", \"final_update_norm\": " + json_number(run.un[i]) +
           ", \"final_param_norm\": " + json_number(run.pn[i]) + ", \"mean_orthogonality_error\": " +
           json_number(run.oe_count[i] ? run.oe_sum[i] / double(run.oe_count[i]) : std::nan("")) + "}";
    j += "]}";
  }
  j += "\n  ]\n}\n";
  std::FILE* jf = std::fopen(o.json.c_str(), "w");
  if (!jf || std::fputs(j.c_str(), jf) < 0 || std::fclose(jf) != 0)
    return fail_run("cannot write the JSON summary '" + o.json + "' (the HDF5 output is complete)", "");
  if (!o.quiet) {
    double step_total = 0;
    for (const Run& run : runs)
      step_total += run.t_step;
    std::fprintf(
        stderr,
        "schatten-replay: %lld steps x %zu optimizer(s) in %.3f s (optimizer %.3f s, %.1f %% outside it); "
        "wrote %s and %s\n",
        (long long)steps, runs.size(), total, step_total, 100.0 * (total - step_total) / total, o.out.c_str(),
        o.json.c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  schatten::Runtime runtime(argc, argv);
  Options o;
  if (const int rc = parse_args(argc, argv, o); rc >= 0) return rc;
  return replay(o);
}
