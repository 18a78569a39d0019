// SPDX-License-Identifier: Apache-2.0
/// \file
/// schatten-replay: runs optimizers offline on the gradients of a recording
/// (docs/replay-format.md) and writes per-step diagnostics to HDF5 and a JSON summary.
///
/// Replay is open loop: step t applies the optimizer to the gradient the training run computed
/// at its own parameters W_t, not at the replayed ones. With --split the optimizers step the
/// pieces of the cut parameters (Columns). Memory: per optimizer the parameters, an update
/// buffer, the rules' state (up to two model-sized buffers) and the partition's copy of it, with
/// diagnostics one more model-sized buffer (the previous update); plus the step cache
/// (--cache-mb, default 1 MB, at least one step) and one step's copies of the gathered pieces;
/// independent of the number of steps. The cache reads a block of steps per HDF5 call per
/// dataset; when one step is 1 MiB or more (or with --read-ahead), the next block is read on a
/// second thread while the optimizers work through the current one (HDF5 calls are serialised
/// by one mutex: the Debian HDF5 has no locks).
#include <hdf5.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <future>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../io/hdf5_util.hpp"
#include "schatten/config.hpp"
#include "schatten/core/runtime.hpp"
#include "schatten/io/recording.hpp"
#include "schatten/kernels/coefficients.hpp"
#include "schatten/optim/dion.hpp"
#include "schatten/optim/partition.hpp"
#include "schatten/optim/presets.hpp"
#include "schatten/optim/qk_clip.hpp"
#include "schatten/optim/schatten_p.hpp"
#include "schatten/optim/split.hpp"
#include "schatten/optim/step_size.hpp"

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
  --split NAME:KEYS  cut the fused parameter NAME into the matrices the optimizers see (a QKV
                     projection as Q, K and V, experts as experts; see "Cut parameters" below);
                     repeat for several
  --qk-layer KIND:KEYS  an attention layer for QK-clip (MuonClip; see "QK-clip" below);
                     repeat for several
  --config FILE      read more SPECs from FILE, one per line (# starts a comment); a line
                     "--split NAME:KEYS" adds a cut, "--qk-layer KIND:KEYS" a layer
  --out PATH         output HDF5 file (default replay.h5); written as PATH.tmp, renamed when done
  --json PATH        JSON summary (default: PATH of --out with .json instead of .h5); written
                     as PATH.tmp, renamed with the output; neither output may name the
                     recording or the other output (exit status 2)
  --steps N          replay only the first N steps (default: every completed step)
  --save-params      also store every parameter after every step (output grows by the model size
                     per step and optimizer)
  --no-diagnostics   skip the per-step diagnostics (orthogonality error of the polar step,
                     descent cosine, alignment with the next gradient, descent potential)
  --cache-mb MB      step cache: read as many steps per HDF5 call as fit in MB (default 1: larger
                     blocks were slower on the sample, their fresh pages cost more than the calls
                     they save); at least one step, whatever MB
  --read-ahead       read the next block of steps on a second thread while the optimizers work
  --no-read-ahead    read every block on the main thread (default: read ahead when one step is
                     1 MiB or more; then each of the two blocks gets half the cache)
  --quiet            no progress on stderr
  --help             this text

Presets and their keys (defaults are those of include/schatten/optim/presets.hpp):
  sgd      lr=1e-3 momentum=0 nesterov=0 wd=0 mu_storage=fp32    every parameter
  adamw    lr=1e-3 b1=0.9 b2=0.999 eps=1e-8 wd=0.01 mu_storage=fp32  every parameter
  lion     lr=1e-4 b1=0.9 b2=0.99 wd=0 mu_storage=fp32           every parameter (Lion: the sign
           of b1 m + (1-b1) g, then m <- b2 m + (1-b2) g)
  muon     lr=0.02 momentum=0.95 nesterov=1 wd=0 polar=keller|polar_express|qdwh iterations=5
           shape=keller|moonlight|none|spectral|unit_rms_norm shape_extra=1 bias_correction=0
           (optax's bias-corrected momentum; with dual_norm=1 optax's muon(adaptive=True))
           mu_storage=fp32|bf16|bf16_stochastic (the momentum buffer, AdamW's first moment, in
           bf16 storage, half their memory, rounded to nearest or stochastically; docs/optim.md
           "State precision"; also sgd, adamw, lion, mop, scion,
           normuon, adamuon, spel, muon_hyperball, muadam, freon, kaon, da_muon, sc_muon,
           df_muon, namo, namo_d, dion2, nordion2, dion and schatten_muon)
           weight_cap=B (none by default: the weights' largest singular value capped at B after
           every step) weight_cap_blend=1 (C < 1: the singular values above B move the fraction
           C of the way to B, spectral clipped weight decay) weight_cap_method=qdwh|polynomial
  mop      lr=3e-4 momentum=0.95 nesterov=0 wd=0.01 shape=none|... shape_extra=1 dual_norm=1
           (Emerging-Optimizers' MOP: the exact polar factor, by QDWH, times the momentum's
           nuclear norm; dual_norm=0 with a shape= gives its other scale modes)
  scion    lr=3e-4 momentum=0.95 spectral_radius=1 polar=keller|polar_express|qdwh iterations=5
           (Scion's hidden-matrix step: W <- (1 - lr) W - lr rho sqrt(r/c) NS(M), EMA momentum,
           no Nesterov; default polar: You Jiacheng's 5 steps, Emerging-Optimizers' "quintic")
  muon_hyperball  lr=3e-4 momentum=0.95 nesterov=0 wd=0.01 radius=1 eps=1e-15 polar=keller|...
           iterations=5 (Emerging-Optimizers' MuonHyperball: the update scaled to Frobenius norm
           radius, the step, the weights projected back to norm radius; start them there)
  normuon  lr=0.02 momentum=0.95 nesterov=1 b2=0.95 wd=0 polar=keller|polar_express|qdwh
           iterations=5 shape=keller|moonlight|none|spectral|unit_rms_norm shape_extra=1
  adamuon  lr=0.02 momentum=0.95 nesterov=1 b2=0.95 eps=1e-8 rms=0.2 wd=0.01 polar=keller|...
           iterations=5 (AdaMuon: polar factor of sign(momentum), element-wise second moment,
           update RMS set to rms)
  muadam   lr=0.02 b1=0.9 b2=0.999 eps=1e-8 exponent=-0.25 wd=0
  freon    lr=0.02 c=0.6667 momentum=0.95 nesterov=0 wd=0 shape=... shape_extra=1 (as muon)
  kaon     lr=0.02 momentum=0.95 nesterov=1 kaon_steps=5 wd=0 shape=... shape_extra=1 (as muon)
  schatten_muon  adaptive Schatten-p Muon (docs/optim.md): lr=0.02 momentum=0.95 nesterov=1
           bias_correction=1 adaptive=1 p=10 first=10 interval=100
           criterion=exact|exact_momentum|exact_tightness (exact_momentum) p_min=1.02 p_max=10
           ema=0.99 grid=24 seed=0 moment=none|parametric|nonparametric b2=0.999 eps=1e-8
           magnitude=pinned|none adam_lr adam_b1 (default: the AdamW side's lr and b1) noisy=1
           wd=0 polar=polar_express|qdwh|keller iterations=5 spectral=polynomial|rational
           (how U S^(1/p) V^T is computed: polynomial = Muon's NS cost, rational = QDWH
           accuracy) spectral_steps=5|6|8 (polynomial); its AdamW side defaults to
           adamw_lr=3e-4 adamw_b1=0.9 adamw_b2=0.95 adamw_eps=1e-10 adamw_wd=0. The recorded
           act_gram of a layer is its activation Gram on criterion steps; a layer without one
           keeps its p (without_statistics=keep_p|assume_whitened: keep_p).
  da_muon  eta_max=0.02 r_eps=1e-3 wd=0 momentum=0.95 nesterov=1 polar=... iterations=5
  sc_muon  eta_max=0.02 wd=0 momentum=0.95 nesterov=1 polar=... iterations=5
  df_muon  eta_max=0.02 rho=1 lambda=0.01 l_min=1e-8 eta0=1e-3 curvature_decay=0.9 wd=0
           momentum=0.95 nesterov=1 polar=... iterations=5
           (da/sc/df_muon: wd decays the weights by the rule's own step, W <- (1 - eta_t*wd)W)
  namo     lr=0.01 momentum=0.95 nesterov=1 mu2=0.99 eps=1e-8 scale=0.2 wd=0.1 polar=keller|...
           iterations=5 (NAMO: Muon's direction, step lr*sqrt(1-mu2^t)/(1-b^t)*|N|/sqrt(v) from
           the norms, times scale*sqrt(max(r,c)), both clamped at 1; the decay takes the step)
  namo_d   the keys of namo and col_clamp=0.75 (NAMO-D: the step per column j from |N_j| and the
           column's own moment, clamped within [mean*col_clamp, mean/col_clamp]; 0: no clamp)
  dion2    lr=0.01 fraction=0.25 ef_decay=0.95 wd=0.01 shape=unit_rms_norm|... shape_extra=1
           polar=keller|polar_express|qdwh iterations=5 (Dion2: momentum M += G; the fraction
           of M's rows (columns when tall) with the largest l1 norms is orthogonalised, the rest
           of the update is 0; those slices of M decay by ef_decay; default polar: dion's
           5-step Polar Express table)
  nordion2 (also dion3) lr=0.01 fraction=0.25 ef_decay=0.95 b2=0.95 eps=1e-8 wd=0.01
           shape=unit_rms_norm|... shape_extra=1 polar=keller|polar_express|qdwh iterations=5
           (NorDion2, microsoft/dion's Dion3: Dion2's selection, always of rows, then NorMuon's
           per-row normalisation of the orthogonalised rows, whose moments move only when
           selected; eps: the orthogonalisation's normalisation epsilon, as the reference's)
  dion     lr=0.01 mu=0.95 rank_fraction=1 rank_multiple_of=1 power_iters=1 eps=1e-8 seed=0
           cholesky_qr=1 wd=0.01 shape=unit_rms_norm|... shape_extra=1 (Dion: M += G; rank-k
           factor P Q^T of M by power iteration from the previous Q, k = rank_fraction*min(r,c)
           rounded up to a multiple; M -= (1-mu) P R^T; the update is P Q^T; seed: the first Q;
           cholesky_qr=0: always the host Householder QR) q_storage=fp32|bf16|bf16_stochastic
           (Q in bf16 storage, half its memory: microsoft/dion's Q_dtype)
  spel     lr=3e-4 momentum=0.95 nesterov=0 wd=0.1 polar=keller|polar_express|qdwh iterations=5
           (SPEL: W <- polar((1 - lr wd) W - lr polar(M)), the weights re-projected every step;
           default polar: 5 steps of You Jiacheng's table, Emerging-Optimizers' "quintic")
The matrix presets (muon … spel) serve the hidden matrices that optim::propose_labels picks
(rank >= 2, no word of the name starting with 'embed'/'head'/...); every other parameter goes
to AdamW with keys adamw_lr=1e-3 adamw_wd=0.01 adamw_b1=0.9 adamw_b2=0.999 adamw_eps=1e-8
adamw_mu_storage=fp32.
exclude=A/B/... replaces the name parts that send a matrix to AdamW (default @EXCLUDE@; e.g.
exclude=@EXCLUDE@/router for MoE routers). route=all sends every parameter to the preset
instead. polar=keller|polar_express|qdwh (muon, normuon, adamuon, namo, namo_d: keller;
dion2, nordion2: dion's 5-step table; spel, scion, muon_hyperball: You Jiacheng's; the others:
polar_express); with keller or polar_express, normalization=frobenius|schatten4|aol sets how the
input is scaled (default frobenius; schatten4 divides by the Schatten-4 norm, from the first
Gram; aol scales each row
of the short side by 1/sqrt(its absolute Gram row sum), which re-weights the rows of the
update; docs/kernels/polar.md), and schedule=NAME replaces the coefficient table by a preset
of docs/kernels/coefficients.md, one of
  @SCHEDULES@
(iterations= still counts the steps, e.g. schedule=deepseek_v4,iterations=10). dual_norm=1 multiplies each
orthogonalised update Q by <M, Q> (about the nuclear norm of the momentum M: PolarGrad, optax's
adaptive=True), on every preset with polar= except schatten_muon.

Learning rates (lr, adamw_lr) are a number or a schedule of optim::Schedule, counted in steps:
  warmup_cosine:PEAK:WARMUP:TOTAL[:FINAL]  linear 0 -> PEAK over WARMUP steps, cosine to FINAL
                                           (default 0) at TOTAL, FINAL after
  linear_decay:PEAK:HOLD:TOTAL[:FINAL]     PEAK for HOLD steps, linear to FINAL at TOTAL
  e.g. --optimizer muon:lr=warmup_cosine:0.02:10:100,momentum=0.9

Cut parameters (optim::SplitSpec, docs/optim.md "Fused parameters"): NAME is a recorded
parameter's name, where '*' matches any run of characters (every match is cut alike; a pattern
that matches nothing is an error), followed by ':' and the keys:
  axis=0|1           cut the rows (default) or the columns of the flattened matrix
  sizes=A/B/...      piece sizes along the axis   count=N   instead: N equal pieces
  groups=G           the axis is G equal segments cut alike; piece k gathers the k-th cut of each
  parts=q/k/v        piece names (default 0, 1, ...)
  stack=1            a stack of matrices (experts, out, in): one piece per leading index
  qkv=H/KV/D         Megatron-Core's linear_qkv of H query heads, KV key/value heads of D rows
                     (optim::split_qkv_grouped); gated=1 with the output gate, per_head=1 for a
                     piece per head
Every optimizer steps the pieces, each as a parameter of its own (bit for bit optim::
SplitPartition), and the output's columns are the pieces, named NAME[part].
  e.g. --split '*.attn.c_attn.weight:axis=1,count=3,parts=q/k/v'   (GPT-2's (d, 3d) Conv1D)

QK-clip (optim::QkClip, Kimi K2's MuonClip; docs/optim.md "QK-clip"): any --optimizer with
qk_clip=TAU (and qk_balance=ALPHA, default 0.5) scales, after each step, the query and key
slices of every head group whose recorded max logit of that step (the recording's /max_logits,
docs/replay-format.md) exceeds TAU, by min(1, TAU/S)^ALPHA and ^(1-ALPHA). The layers, whose
query heads in order are the entries of /max_logits:
  separate:q=NAME,k=NAME,heads=H[,kv_heads=KV],head_dim=D[,axis=0|1][,gated=1][,q_bias=NAME]
           [,k_bias=NAME]        separate projections (optim::qk_separate; axis=1 for (in, out))
  fused:qkv=NAME,heads=H[,kv_heads=KV],head_dim=D[,axis=0|1][,bias=NAME]
                                 one projection [Q | K | V] (optim::qk_fused)
  grouped:qkv=NAME,heads=H,kv_heads=KV,head_dim=D[,gated=1][,bias=NAME]
                                 Megatron-Core's linear_qkv (optim::qk_grouped)
  mla:q=NAME,kv=NAME,heads=H,nope_dim=N,rope_dim=R,v_dim=V
                                 multi-head latent attention (optim::qk_mla)
NAME is a column (a recorded parameter, or a piece NAME[part] with --split). A '*' in the first
NAME (q or qkv) matches any run of characters: every match is a layer, in column order, and the
layer's other NAMEs get the same run in place of their '*'. /runs/<k>/qk_factor holds each query
head's factor per step (1: not clipped).
  e.g. --optimizer muon:shape=moonlight,wd=0.1,qk_clip=100 \
       --qk-layer 'fused:qkv=h.*.attn.c_attn.weight,bias=h.*.attn.c_attn.bias,heads=12,head_dim=64,axis=1'

Example:
  schatten-replay data/replay/digits_mlp.h5 --optimizer muon --optimizer adamw:lr=3e-3,wd=0 \
      --out build/replay.h5
  /usr/bin/python3 bench/plot_replay.py build/replay.h5

Output (docs/replay-format.md): /runs/<k>/update_norm, param_norm, orthogonality_error,
schatten_p, grad_dot, descent_cosine, potential, next_grad_dot, alignment (steps x columns: the
parameters, or their pieces with --split; NaN where undefined), labels, and params/<i> with
--save-params; the JSON summary has the final norms and p, mean diagnostics per column and the
time spent reading, stepping and writing. Exit status: 0 done, 1 a failure while running
(message on stderr), 2 bad command line (an unknown option, preset or key, a malformed value).
)";

// ---------------------------------------------------------------------------------------------
// Optimizer specifications

struct Spec {
  std::string text;    ///< as given on the command line
  std::string preset;  ///< sgd, adamw, muon, ...
  std::map<std::string, std::string> kv;
  /// qk_clip=TAU (and qk_balance=ALPHA) were given: QK-clip after each step (take_qk_keys).
  bool qk = false;
  opt::QkClipOptions qk_options;
};

/// KEY=VALUE[,KEY=VALUE...] (`rest`, part of `text`) into `kv`.
bool parse_pairs(const std::string& rest, const std::string& text, std::map<std::string, std::string>& kv,
                 std::string& err) {
  std::size_t pos = 0;
  while (pos <= rest.size()) {
    const std::size_t comma = std::min(rest.find(',', pos), rest.size());
    const std::string item = rest.substr(pos, comma - pos);
    const std::size_t eq = item.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == item.size()) {
      err = "'" + item + "' in '" + text + "' is not KEY=VALUE";
      return false;
    }
    if (!kv.emplace(item.substr(0, eq), item.substr(eq + 1)).second) {
      err = "key '" + item.substr(0, eq) + "' given twice in '" + text + "'";
      return false;
    }
    pos = comma + 1;
  }
  return true;
}

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
  return parse_pairs(text.substr(colon + 1), text, s.kv, err);
}

/// The presets of schatten::schedules (the values of schedule=), joined by `sep`.
std::string schedule_names(const char* sep) {
  std::string list;
  for (const std::string& n : schedules::names())
    list += (list.empty() ? "" : sep) + n;
  return list;
}

/// Consumes the keys of a Spec (of `option`: an --optimizer or a --split), converting values;
/// the first problem is kept in `err`.
class Keys {
 public:
  explicit Keys(const Spec& s, const char* option = "--optimizer") : spec_(s), option_(option), left_(s.kv) {}
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
    std::int64_t w = v;
    count(key, w, 1000);
    v = int(w);
  }
  /// An integer in 0..max.
  void count(const char* key, std::int64_t& v, std::int64_t max = 1000000000) {
    auto it = left_.find(key);
    if (it == left_.end()) return;
    double d = double(v);
    number(key, d);
    if (d != std::floor(d) || d < 0 || d > double(max))
      note(std::string("'") + key + "' must be an integer in 0.." + std::to_string(max));
    else
      v = std::int64_t(d);
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
  /// A learning rate: a number (constant), or a schedule (optim::Schedule)
  ///   warmup_cosine:PEAK:WARMUP:TOTAL[:FINAL]   linear_decay:PEAK:HOLD:TOTAL[:FINAL]
  /// with integer step counts 0 ≤ WARMUP ≤ TOTAL, TOTAL ≥ 1. Returns true when the key was given.
  bool lr(const char* key, opt::Schedule& s) {
    auto it = left_.find(key);
    if (it == left_.end()) return false;
    const std::string v = it->second;
    left_.erase(it);
    std::vector<std::string> parts;
    for (std::size_t pos = 0;;) {
      const std::size_t c = v.find(':', pos);
      parts.push_back(v.substr(pos, c == std::string::npos ? std::string::npos : c - pos));
      if (c == std::string::npos) break;
      pos = c + 1;
    }
    auto num = [](const std::string& t, double& out) {
      char* end = nullptr;
      out = std::strtod(t.c_str(), &end);
      return !t.empty() && *end == '\0' && std::isfinite(out);
    };
    const std::string form = std::string("'") + key + "=" + v + "': ";
    const auto bad = [&](const std::string& m) {
      note(m);
      return true;
    };
    if (parts.size() == 1) {
      double x = 0;
      if (!num(v, x))
        return bad(std::string("'") + key + "=" + v + "' is not a number or a schedule (see --help)");
      s = opt::Schedule::constant(x);
      return true;
    }
    const std::string& kind = parts[0];
    if (kind != "warmup_cosine" && kind != "linear_decay" && kind != "constant")
      return bad(form + "unknown schedule '" + kind + "' (constant, warmup_cosine, linear_decay)");
    if (kind == "constant") {
      double x = 0;
      if (parts.size() != 2 || !num(parts[1], x)) return bad(form + "expected constant:VALUE");
      s = opt::Schedule::constant(x);
      return true;
    }
    const char* first = kind == "warmup_cosine" ? "WARMUP" : "HOLD";
    const std::string usage = form + "expected " + kind + ":PEAK:" + first + ":TOTAL[:FINAL]";
    double peak = 0, a = 0, total = 0, final_value = 0;
    if (parts.size() < 4 || parts.size() > 5 || !num(parts[1], peak) || !num(parts[2], a) ||
        !num(parts[3], total) || (parts.size() == 5 && !num(parts[4], final_value)))
      return bad(usage);
    if (a != std::floor(a) || total != std::floor(total) || a < 0 || total < 1 || a > total || total > 1e12)
      return bad(form + first + " and TOTAL must be integer steps with 0 <= " + first +
                 " <= TOTAL, TOTAL >= 1");
    s = kind == "warmup_cosine"
            ? opt::Schedule::warmup_cosine(peak, std::int64_t(a), std::int64_t(total), final_value)
            : opt::Schedule::linear_decay(peak, std::int64_t(a), std::int64_t(total), final_value);
    return true;
  }
  /// One of `choices` (given as "a|b|c"); returns the index or -1 when the key is absent.
  int choice(const char* key, const std::string& choices) {
    std::string v;
    if (!word(key, v)) return -1;
    int k = 0;
    for (std::size_t pos = 0;; ++k) {
      const std::size_t bar = choices.find('|', pos);
      if (choices.compare(pos, bar == std::string::npos ? std::string::npos : bar - pos, v) == 0 &&
          v.size() == (bar == std::string::npos ? choices.size() - pos : bar - pos))
        return k;
      if (bar == std::string::npos) break;
      pos = bar + 1;
    }
    std::string list = choices;
    for (char& c : list)
      if (c == '|') c = ',';
    note(std::string("'") + key + "=" + v + "': must be one of " + list);
    return -1;
  }
  bool word(const char* key, std::string& v) {
    auto it = left_.find(key);
    if (it == left_.end()) return false;
    v = it->second;
    left_.erase(it);
    return true;
  }
  /// A '/'-separated list of non-empty words ("q/k/v"); returns true when the key was given.
  bool words(const char* key, std::vector<std::string>& v) {
    std::string w;
    if (!word(key, w)) return false;
    v.clear();
    for (std::size_t pos = 0;;) {
      const std::size_t slash = std::min(w.find('/', pos), w.size());
      v.push_back(w.substr(pos, slash - pos));
      if (v.back().empty()) note(std::string("'") + key + "=" + w + "' has an empty item");
      if (slash == w.size()) break;
      pos = slash + 1;
    }
    return true;
  }
  /// A '/'-separated list of integers in 1..1e9 ("768/768/768"); returns true when given.
  bool sizes(const char* key, std::vector<index_t>& v) {
    std::vector<std::string> items;
    if (!words(key, items)) return false;
    v.clear();
    for (const std::string& item : items) {
      char* end = nullptr;
      const long long x = std::strtoll(item.c_str(), &end, 10);
      if (item.empty() || *end != '\0' || x < 1 || x > 1000000000) {
        note(std::string("'") + key + "' must be integers in 1..1e9 separated by '/', not '" + item + "'");
        return true;
      }
      v.push_back(index_t(x));
    }
    return true;
  }
  /// Call last: unknown keys are errors.
  bool done(std::string& err) {
    if (err_.empty() && !left_.empty())
      err_ = "unknown key '" + left_.begin()->first + "'" +
             (option_ == std::string("--optimizer") ? " for preset '" + spec_.preset + "'" : std::string()) +
             " (see --help)";
    if (!err_.empty()) err = std::string(option_) + " " + spec_.text + ": " + err_;
    return err_.empty();
  }
  void note(const std::string& m) {
    if (err_.empty()) err_ = m;
  }

 private:
  const Spec& spec_;
  const char* option_;
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
    template <class F>
    friend void visit_workspaces(F& f, State& s) {
      f(s.workspace);
    }
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
  const char* check() const noexcept { return check_polar_options(polar); }  // as Orthogonalize
  std::string config() const { return opt::Signature(name).add("polar", opt::polar_config(polar)).str(); }
};

auto observed_muon(const opt::MuonOptions& o) {
  return opt::chain(
      opt::TraceMomentum{o.momentum, o.nesterov, o.momentum_form, o.bias_correction, o.mu_storage},
      ObservedOrthogonalize{o.polar}, opt::ScaleByShape{o.shape}, opt::AddDecayedWeights{o.weight_decay},
      opt::ScaleByLearningRate{o.lr});
}

/// A partition behind a virtual interface (the one place where the tool erases rule types).
class Runner {
 public:
  virtual ~Runner() = default;
  virtual opt::StepReport step(const std::vector<float*>& params, const std::vector<float*>& grads) = 0;
  virtual std::string signature() const = 0;
  virtual std::vector<std::string> labels() const = 0;
  /// Per parameter, after a step: the orthogonality error of its last polar step and the
  /// Schatten p its rule used (SchattenPDirection's state p); NaN where there is none.
  virtual void observe(std::vector<double>& orthogonality, std::vector<double>& p) = 0;
  /// Whether parameter i's rule collects activation statistics (schatten_muon).
  virtual bool collects_gram(std::size_t i) const = 0;
  /// For each parameter i with collects_gram(i) whose rule runs its criterion at the coming
  /// step, calls gram(i) for the recorded cols × cols activation Gram of that step and stores it
  /// as the rule's statistics for the step (optim::accumulate_activations' fields, samples = 1:
  /// the criterion's choice of p does not depend on the Gram's scale). gram(i) returns nullptr
  /// on a read failure: false.
  virtual bool feed_grams(const std::function<const float*(std::size_t)>& gram) = 0;
  /// Parameter i has no recorded Gram: its rule keeps running the criterion without statistics
  /// (whitened inputs), and feed_grams does not ask for it.
  virtual void without_gram(std::size_t i) = 0;
};

template <class P>
class RunnerOf final : public Runner {
 public:
  explicit RunnerOf(P p) : p_(std::move(p)) {
    const auto& params = p_.params();
    // Every field name is "<param name>/<rule>/<field>"; the owner is the longest parameter
    // name that prefixes it (names may contain '/').
    struct Names {
      std::vector<std::string> doubles, int64s, buffers;
      void operator()(const std::string& n, double&) { doubles.push_back(n); }
      void operator()(const std::string& n, std::int64_t&) { int64s.push_back(n); }
      void operator()(const std::string& n, opt::Buffer&) { buffers.push_back(n); }
      void operator()(const std::string&, opt::Bf16Buffer&) {}  // momentum storage: nothing to read
    } names;
    p_.visit(names);
    auto owner = [&](const std::string& field) {
      std::size_t best = params.size(), len = 0;
      for (std::size_t i = 0; i < params.size(); ++i) {
        const std::string pre = params[i].name + "/";
        if (field.size() > pre.size() && field.compare(0, pre.size(), pre) == 0 && pre.size() > len) {
          best = i;
          len = pre.size();
        }
      }
      return best;
    };
    auto ends = [](const std::string& s, const std::string& t) {
      return s.size() >= t.size() && s.compare(s.size() - t.size(), t.size(), t) == 0;
    };
    gram_.resize(params.size());
    for (const std::string& n : names.doubles) {
      const std::size_t i = owner(n);
      if (i == params.size()) continue;
      if (ends(n, "/1_orthogonalize/orthogonality_error")) keys_.emplace(n, Key{i, Key::ortho});
      if (ends(n, "/schatten_p")) keys_.emplace(n, Key{i, Key::p});
    }
    for (const std::string& n : names.buffers) {
      const std::size_t i = owner(n);
      if (i < params.size() && ends(n, "/activation_gram")) {
        const std::string rule = n.substr(0, n.size() - std::string("activation_gram").size());
        gram_keys_.emplace(n, Key{i, Key::gram});
        gram_keys_.emplace(rule + "activation_samples", Key{i, Key::samples});
        gram_keys_.emplace(rule + "activation_step", Key{i, Key::for_step});
        gram_keys_.emplace(rule + "count", Key{i, Key::count});
        gram_[i].wanted = true;
      }
    }
  }
  opt::StepReport step(const std::vector<float*>& params, const std::vector<float*>& grads) override {
    return p_.step(params, grads);
  }
  std::string signature() const override { return p_.signature(); }
  std::vector<std::string> labels() const override { return p_.labels(); }
  void observe(std::vector<double>& ortho, std::vector<double>& p) override {
    const double nan = std::numeric_limits<double>::quiet_NaN();
    ortho.assign(p_.params().size(), nan);
    p.assign(p_.params().size(), nan);
    if (keys_.empty()) return;
    Collector c{&keys_, &ortho, &p};
    p_.visit(c);
  }
  bool collects_gram(std::size_t i) const override { return i < gram_.size() && gram_[i].wanted; }
  void without_gram(std::size_t i) override {
    if (i < gram_.size()) gram_[i].wanted = false;
  }
  bool feed_grams(const std::function<const float*(std::size_t)>& gram) override {
    if (gram_keys_.empty()) return true;
    GramFinder f{&gram_keys_, &gram_};
    p_.visit(f);
    for (std::size_t i = 0; i < gram_.size(); ++i) {
      GramRef& r = gram_[i];
      if (!r.wanted || !r.buffer || !r.samples || !r.for_step || !r.count) continue;
      if (!r.due(*r.count + 1)) continue;
      const float* g = gram(i);
      if (!g) return false;
      std::copy(g, g + r.buffer->size(), r.buffer->begin());
      *r.samples = 1;
      *r.for_step = *r.count;
    }
    return true;
  }
  /// When the rule of parameter i runs its criterion (set by build() for schatten_muon).
  void set_criterion_schedule(bool adaptive, std::int64_t first, std::int64_t interval) {
    for (GramRef& r : gram_)
      r.due = [=](std::int64_t t) {
        return opt::SchattenPDirection::criterion_due(t, adaptive, first, interval);
      };
  }

 private:
  struct Key {
    std::size_t param;
    enum Kind { ortho, p, gram, samples, for_step, count } kind;
  };
  struct GramRef {
    bool wanted = false;
    opt::Buffer* buffer = nullptr;
    std::int64_t *samples = nullptr, *for_step = nullptr, *count = nullptr;
    std::function<bool(std::int64_t)> due = [](std::int64_t) { return true; };
  };
  struct Collector {
    const std::unordered_map<std::string, Key>* keys;
    std::vector<double>*ortho, *p;
    void operator()(const std::string&, std::int64_t&) {}
    void operator()(const std::string&, opt::Buffer&) {}
    void operator()(const std::string&, opt::Bf16Buffer&) {}
    void operator()(const std::string& name, double& v) {
      auto it = keys->find(name);
      if (it == keys->end()) return;
      (it->second.kind == Key::ortho ? *ortho : *p)[it->second.param] = v;
    }
  };
  struct GramFinder {
    const std::unordered_map<std::string, Key>* keys;
    std::vector<GramRef>* refs;
    void operator()(const std::string&, double&) {}
    void operator()(const std::string&, opt::Bf16Buffer&) {}
    void operator()(const std::string& name, opt::Buffer& b) {
      auto it = keys->find(name);
      if (it != keys->end() && it->second.kind == Key::gram) (*refs)[it->second.param].buffer = &b;
    }
    void operator()(const std::string& name, std::int64_t& v) {
      auto it = keys->find(name);
      if (it == keys->end()) return;
      GramRef& r = (*refs)[it->second.param];
      if (it->second.kind == Key::samples) r.samples = &v;
      if (it->second.kind == Key::for_step) r.for_step = &v;
      if (it->second.kind == Key::count) r.count = &v;
    }
  };
  P p_;
  std::unordered_map<std::string, Key> keys_, gram_keys_;
  std::vector<GramRef> gram_;
};

/// The partition `p` initialised, or nullptr with `err` set and `usage` false: what the library
/// refuses over the recording's parameters (a hyper-parameter its check() refuses, out of
/// memory) is a failure while running, as for the cuts and QK-clip layers.
template <class P>
std::unique_ptr<RunnerOf<P>> runner_of(P p, const std::string& spec, std::string& err, bool& usage) {
  const opt::StepReport r = p.init();
  if (!r) {
    err = "--optimizer " + spec + ": " + r.message;
    usage = false;
    return nullptr;
  }
  return std::make_unique<RunnerOf<P>>(std::move(p));
}
template <class P>
std::unique_ptr<Runner> runner(P p, const std::string& spec, std::string& err, bool& usage) {
  return runner_of(std::move(p), spec, err, usage);
}

/// True for the options structs with a momentum storage (`mu_storage`: docs/optim.md "State
/// precision"), which then take the key mu_storage=.
template <class O, class = void>
struct has_mu_storage : std::false_type {};
template <class O>
struct has_mu_storage<O, std::void_t<decltype(std::declval<O&>().mu_storage)>> : std::true_type {};

/// The optimizer a Spec describes, over the recording's parameters; nullptr with `err` set when
/// it cannot be built. `usage` then says whether the SPEC itself is malformed (an unknown preset
/// or key, a value that is not a number, not one of the choices or out of the keys' own range:
/// exit status 2) or the library refused it (runner_of: exit status 1).
std::unique_ptr<Runner> build(const Spec& s, const std::vector<opt::ParamSpec>& ps, bool diagnostics,
                              std::string& err, bool& usage) {
  usage = true;
  Keys k(s);
  const auto all = [&](const std::string& label) { return std::vector<std::string>(ps.size(), label); };
  // mu_storage=fp32|bf16|bf16_stochastic: the momentum (AdamW: first moment) buffer's storage, the options'
  // mu_storage (docs/optim.md "State precision").
  const auto storage_key = [&](const char* key, StateStorage& p) {
    const int c = k.choice(key, "fp32|bf16|bf16_stochastic");
    if (c == 0) p = Precision::fp32;
    if (c == 1) p = Precision::bf16;
    if (c == 2) p = StateStorage::bf16_stochastic();
  };
  // Heavy-ball momentum, shared by every preset that has it (each options struct names its
  // fields momentum and nesterov), with its storage where the preset's momentum offers one.
  const auto momentum_keys = [&](auto& o) {
    k.number("momentum", o.momentum);
    k.flag("nesterov", o.nesterov);
    if constexpr (has_mu_storage<std::decay_t<decltype(o)>>::value) storage_key("mu_storage", o.mu_storage);
  };
  if (s.preset == "sgd") {
    opt::SgdOptions o;
    k.lr("lr", o.lr);
    momentum_keys(o);
    k.number("wd", o.weight_decay);
    if (!k.done(err)) return nullptr;
    return runner(opt::partition(ps, all("sgd"), opt::route("sgd", opt::sgd(o))), s.text, err, usage);
  }
  if (s.preset == "adamw") {
    opt::AdamWOptions o;
    k.lr("lr", o.lr);
    k.number("b1", o.b1);
    k.number("b2", o.b2);
    k.number("eps", o.eps);
    k.number("wd", o.weight_decay);
    storage_key("mu_storage", o.mu_storage);
    if (!k.done(err)) return nullptr;
    return runner(opt::partition(ps, all("adamw"), opt::route("adamw", opt::adamw(o))), s.text, err, usage);
  }
  if (s.preset == "lion") {
    opt::LionOptions o;
    k.lr("lr", o.lr);
    k.number("b1", o.b1);
    k.number("b2", o.b2);
    k.number("wd", o.weight_decay);
    storage_key("mu_storage", o.mu_storage);
    if (!k.done(err)) return nullptr;
    return runner(opt::partition(ps, all("lion"), opt::route("lion", opt::lion(o))), s.text, err, usage);
  }
  // Matrix presets: their own keys, then the AdamW side and the routing. schatten_muon's side
  // defaults to SMuon's auxiliary Adam (algorithms.md §4a.4: lr 3e-4, betas (0.9, 0.95), eps
  // 1e-10, no decay), whose lr and β₁ also set its κ.
  opt::AdamWOptions aw;
  if (s.preset == "schatten_muon")
    aw = opt::AdamWOptions{opt::Schedule::constant(3e-4), 0.9, 0.95, 1e-10, 0.0};
  k.lr("adamw_lr", aw.lr);
  k.number("adamw_wd", aw.weight_decay);
  k.number("adamw_b1", aw.b1);
  k.number("adamw_b2", aw.b2);
  k.number("adamw_eps", aw.eps);
  storage_key("adamw_mu_storage", aw.mu_storage);
  std::string routing = "auto";
  k.word("route", routing);
  if (routing != "auto" && routing != "all") k.note("route must be auto or all");
  opt::LabelPolicy policy;
  policy.spectral = s.preset;
  // exclude=a/b/c replaces LabelPolicy::exclude (a parameter in whose name one of them begins a word
  // goes to AdamW), e.g. to add MoE routers ("router", ".gate.") to the defaults.
  if (k.words("exclude", policy.exclude) && routing == "all") k.note("'exclude' applies to route=auto only");
  const std::vector<std::string> labels = routing == "all" ? all(s.preset) : opt::propose_labels(ps, policy);
  // shape=RULE (opt::ScaleByShape's rules by their names) and shape_extra=X (its extra factor).
  auto shape_rule = [&](opt::ScaleByShape& shape) {
    std::string names;
    for (const opt::ScaleByShape::Rule r : opt::ScaleByShape::kRules)
      names += (names.empty() ? "" : "|") + std::string(opt::ScaleByShape::rule_name(r));
    const int c = k.choice("shape", names);
    if (c >= 0) shape.rule = opt::ScaleByShape::kRules[c];
    k.number("shape_extra", shape.extra);
  };
  auto mixed = [&](auto rule) {
    return runner(opt::partition(ps, labels, opt::route(s.preset, std::move(rule)),
                                 opt::route("adamw", opt::adamw(aw))),
                  s.text, err, usage);
  };
  auto polar_rule = [&](PolarOptions& polar) {
    switch (k.choice("polar", "keller|newton_schulz|polar_express|qdwh")) {
      case 0:
      case 1:
        polar = opt::MuonOptions::keller_polar();
        break;
      case 2:
        polar = PolarOptions{};
        break;
      case 3:
        polar = PolarOptions{};
        polar.method = PolarMethod::qdwh;
        break;
      default:
        break;
    }
    // schedule=NAME: a coefficient table of schatten::schedules for the Newton-Schulz methods
    // (iterations= still counts the steps; the normalization= below then sets only the kind).
    std::string table;
    if (k.word("schedule", table)) {
      CoefficientSchedule named;
      if (polar.method == PolarMethod::qdwh) {
        k.note("'schedule' applies to the Newton-Schulz methods, not to polar=qdwh");
      } else if (!schedules::by_name(table, named)) {
        k.note("'schedule=" + table + "': must be one of " + schedule_names(","));
      } else {
        polar.schedule = named;
      }
    }
    k.integer("iterations", polar.iterations);
    k.flag("dual_norm", polar.dual_norm_scale);  // PolarOptions::dual_norm_scale
    // normalization=frobenius|schatten4|aol: how the polynomial methods scale their input
    // (Normalization::Kind; docs/kernels/polar.md "Schatten-4 normalisation", "AOL pre-scaling").
    const int nz = k.choice("normalization", "frobenius|schatten4|aol");
    if (nz >= 0 && polar.method == PolarMethod::qdwh)
      k.note("'normalization' applies to the Newton-Schulz methods, not to polar=qdwh");
    if (nz >= 0) {
      if (polar.schedule.steps.empty()) polar.schedule = resolved_schedule(polar);
      constexpr Normalization::Kind kinds[] = {Normalization::Kind::frobenius, Normalization::Kind::schatten4,
                                               Normalization::Kind::aol};
      polar.schedule.normalization.kind = kinds[nz];
    }
  };
  // Muon's chain, with the observed orthogonalisation when diagnostics are on: for muon and for
  // the presets that are muon() with other options (mop, scion), which share its instantiations.
  auto muon_runner = [&](const opt::MuonOptions& m) {
    return diagnostics ? mixed(observed_muon(m)) : mixed(opt::muon(m));
  };
  if (s.preset == "muon") {
    opt::MuonOptions o;
    k.lr("lr", o.lr);
    momentum_keys(o);
    k.flag("bias_correction", o.bias_correction);
    k.number("wd", o.weight_decay);
    shape_rule(o.shape);
    polar_rule(o.polar);
    // weight_cap=B: the weights' spectral norm capped at B after every step, Muon then
    // SpectralClipWeights{0, B} (Lipschitz-constrained training); weight_cap_blend=C moves the
    // singular values above B only the fraction C of the way (its blend: Emerging-Optimizers'
    // spectral clipped weight decay); weight_cap_method=qdwh|polynomial (SpectralClipMethod).
    // The rule's check() reports bad values when the optimizer is built.
    opt::SpectralClipWeights cap;
    const bool capped = s.kv.count("weight_cap") != 0;
    k.number("weight_cap", cap.options.upper);
    k.number("weight_cap_blend", cap.options.blend);
    if (k.choice("weight_cap_method", "qdwh|polynomial") == 1)
      cap.options.method = SpectralClipMethod::polynomial;
    if (!capped && (s.kv.count("weight_cap_blend") || s.kv.count("weight_cap_method")))
      k.note("'weight_cap_blend' and 'weight_cap_method' apply with 'weight_cap' only");
    if (!k.done(err)) return nullptr;
    if (capped)
      return diagnostics ? mixed(opt::chain(observed_muon(o), cap)) : mixed(opt::chain(opt::muon(o), cap));
    return muon_runner(o);
  }
  if (s.preset == "mop") {  // muon's chain with MOP's options: no instantiation of its own
    opt::MopOptions o;
    k.lr("lr", o.lr);
    momentum_keys(o);
    k.number("wd", o.weight_decay);
    shape_rule(o.shape);
    k.flag("dual_norm", o.polar.dual_norm_scale);  // 0 with a shape=: EO's other scale modes
    if (!k.done(err)) return nullptr;
    return muon_runner(o.muon_options());  // opt::mop(o)
  }
  if (s.preset == "scion") {  // muon's chain with Scion's options, as mop
    opt::ScionOptions o;
    k.lr("lr", o.lr);
    k.number("momentum", o.momentum);
    storage_key("mu_storage", o.mu_storage);
    k.number("spectral_radius", o.spectral_radius);
    polar_rule(o.polar);
    if (!k.done(err)) return nullptr;
    return muon_runner(o.muon_options());  // opt::scion(o)
  }
  if (s.preset == "muon_hyperball") {
    opt::MuonHyperballOptions o;
    k.lr("lr", o.lr);
    momentum_keys(o);
    k.number("wd", o.weight_decay);
    k.number("radius", o.radius);
    k.number("eps", o.eps);
    polar_rule(o.polar);
    if (!k.done(err)) return nullptr;
    return mixed(opt::muon_hyperball(o));
  }
  if (s.preset == "schatten_muon") {
    opt::SchattenMuonOptions o;
    k.lr("lr", o.lr);
    momentum_keys(o);
    k.flag("bias_correction", o.bias_correction);
    k.flag("adaptive", o.adaptive);
    k.number("p", o.p);
    k.count("interval", o.interval);
    k.count("first", o.first);
    const int c = k.choice("criterion", "exact|exact_momentum|exact_tightness");
    if (c >= 0) o.criterion.criterion = surrogate::PCriterion(c);
    k.number("p_min", o.criterion.p_min);
    k.number("p_max", o.criterion.p_max);
    k.number("ema", o.criterion.ema);
    k.integer("grid", o.criterion.grid);
    std::int64_t seed = std::int64_t(o.criterion.seed);
    k.count("seed", seed);
    o.criterion.seed = std::uint64_t(seed);
    const int m = k.choice("moment", "none|parametric|nonparametric");
    if (m >= 0) o.moment = opt::SchattenPDirection::Moment(m);
    k.number("b2", o.b2);
    k.number("eps", o.eps);
    const int g = k.choice("magnitude", "pinned|none");
    if (g >= 0)
      o.magnitude =
          g == 0 ? opt::SchattenPDirection::Magnitude::pinned : opt::SchattenPDirection::Magnitude::none;
    o.adam_lr = aw.lr.peak;
    o.adam_b1 = aw.b1;
    k.number("adam_lr", o.adam_lr);
    k.number("adam_b1", o.adam_b1);
    k.flag("noisy", o.noisy);
    const int ws = k.choice("without_statistics", "keep_p|assume_whitened");
    if (ws >= 0) o.without_statistics = opt::SchattenPDirection::WithoutStatistics(ws);
    k.number("wd", o.weight_decay);
    const int sm = k.choice("spectral", "polynomial|rational");
    if (sm >= 0)
      o.spectral.method = sm == 0 ? SpectralPowerMethod::polynomial : SpectralPowerMethod::rational;
    k.integer("spectral_steps", o.spectral.polynomial_steps);
    if (const char* bad = check_spectral_power_options(o.spectral)) k.note(bad);
    polar_rule(o.polar);
    // Its polar factor serves only the p = p_max end; scaling it alone would break the family.
    if (o.polar.dual_norm_scale) k.note("'dual_norm' does not apply to schatten_muon");
    if (const char* bad = surrogate::check_criterion_options(o.criterion)) k.note(bad);
    if (!(o.p >= 1.0)) k.note("'p' must be >= 1");
    if (!k.done(err)) return nullptr;
    auto r = runner_of(opt::partition(ps, labels, opt::route(s.preset, opt::schatten_muon(o)),
                                      opt::route("adamw", opt::adamw(aw))),
                       s.text, err, usage);
    if (r) r->set_criterion_schedule(o.adaptive, o.first, o.interval);
    return r;
  }
  if (s.preset == "muadam") {
    opt::MuAdamOptions o;
    k.lr("lr", o.lr);
    k.number("b1", o.b1);
    k.number("b2", o.b2);
    k.number("eps", o.eps);
    k.number("exponent", o.exponent);
    k.number("wd", o.weight_decay);
    storage_key("mu_storage", o.mu_storage);
    if (!k.done(err)) return nullptr;
    return mixed(opt::muadam(o));
  }
  if (s.preset == "normuon") {
    opt::NorMuonOptions o;
    k.lr("lr", o.lr);
    momentum_keys(o);
    k.number("b2", o.beta2);
    if (!(o.beta2 >= 0.0 && o.beta2 < 1.0)) k.note("'b2' must be in [0, 1)");
    k.number("wd", o.weight_decay);
    shape_rule(o.shape);
    polar_rule(o.polar);
    if (!k.done(err)) return nullptr;
    return mixed(opt::normuon(o));
  }
  if (s.preset == "adamuon") {
    opt::AdaMuonOptions o;
    k.lr("lr", o.lr);
    momentum_keys(o);
    k.number("b2", o.beta2);
    if (!(o.beta2 >= 0.0 && o.beta2 < 1.0)) k.note("'b2' must be in [0, 1)");
    k.number("eps", o.eps);
    k.number("rms", o.rms);
    k.number("wd", o.weight_decay);
    polar_rule(o.polar);
    if (!k.done(err)) return nullptr;
    return mixed(opt::adamuon(o));
  }
  if (s.preset == "freon") {
    opt::FreonOptions o;
    k.lr("lr", o.lr);
    k.number("c", o.c);
    momentum_keys(o);
    k.number("wd", o.weight_decay);
    shape_rule(o.shape);
    if (!k.done(err)) return nullptr;
    return mixed(opt::freon(o));
  }
  if (s.preset == "kaon") {
    opt::KaonOptions o;
    k.lr("lr", o.lr);
    momentum_keys(o);
    k.integer("kaon_steps", o.steps);
    if (o.steps < 1) k.note("'kaon_steps' must be >= 1");
    k.number("wd", o.weight_decay);
    shape_rule(o.shape);
    if (!k.done(err)) return nullptr;
    return mixed(opt::kaon(o));
  }
  if (s.preset == "da_muon") {
    opt::DaMuonOptions o;
    k.number("eta_max", o.eta_max);
    k.number("r_eps", o.r_eps);
    k.number("wd", o.weight_decay);
    momentum_keys(o);
    polar_rule(o.polar);
    if (!k.done(err)) return nullptr;
    return mixed(opt::da_muon(o));
  }
  if (s.preset == "sc_muon") {
    opt::ScMuonOptions o;
    k.number("eta_max", o.eta_max);
    k.number("wd", o.weight_decay);
    momentum_keys(o);
    polar_rule(o.polar);
    if (!k.done(err)) return nullptr;
    return mixed(opt::sc_muon(o));
  }
  // NAMO's keys, shared by namo and namo_d.
  const auto namo_keys = [&](opt::NamoOptions& o) {
    k.lr("lr", o.lr);
    momentum_keys(o);
    k.number("mu2", o.mu2);
    k.number("eps", o.eps);
    k.number("scale", o.scale);
    k.number("wd", o.weight_decay);
    polar_rule(o.polar);
  };
  if (s.preset == "namo") {
    opt::NamoOptions o;
    namo_keys(o);
    if (!k.done(err)) return nullptr;
    return mixed(opt::namo(o));
  }
  if (s.preset == "namo_d") {
    opt::NamoDOptions o;
    namo_keys(o);
    k.number("col_clamp", o.col_clamp);
    if (!k.done(err)) return nullptr;
    return mixed(opt::namo_d(o));
  }
  // Dion2's keys, shared by dion2 and nordion2 (both options structs name these fields alike).
  const auto dion2_keys = [&](auto& o) {
    k.lr("lr", o.lr);
    k.number("fraction", o.fraction);
    k.number("ef_decay", o.ef_decay);
    k.number("wd", o.weight_decay);
    shape_rule(o.shape);
    polar_rule(o.polar);
    storage_key("mu_storage", o.mu_storage);
  };
  if (s.preset == "dion2") {
    opt::Dion2Options o;
    dion2_keys(o);
    if (!k.done(err)) return nullptr;
    return mixed(opt::dion2(o));
  }
  if (s.preset == "nordion2" || s.preset == "dion3") {  // dion3: microsoft/dion's alias
    opt::NorDion2Options o;
    dion2_keys(o);
    k.number("b2", o.beta2);
    k.number("eps", o.eps);
    if (!k.done(err)) return nullptr;
    return mixed(opt::nordion2(o));
  }
  if (s.preset == "dion") {
    opt::DionOptions o;
    k.lr("lr", o.lr);
    k.number("mu", o.mu);
    k.number("rank_fraction", o.rank_fraction);
    std::int64_t multiple = o.rank_multiple_of;
    k.count("rank_multiple_of", multiple);
    o.rank_multiple_of = index_t(multiple);
    k.integer("power_iters", o.power_iterations);
    k.number("eps", o.eps);
    std::int64_t seed = std::int64_t(o.seed);
    k.count("seed", seed);
    o.seed = std::uint64_t(seed);
    k.flag("cholesky_qr", o.cholesky_qr);
    k.number("wd", o.weight_decay);
    shape_rule(o.shape);
    storage_key("mu_storage", o.mu_storage);
    storage_key("q_storage", o.q_storage);
    if (!k.done(err)) return nullptr;
    return mixed(opt::dion(o));
  }
  if (s.preset == "spel") {
    opt::SpelOptions o;
    k.lr("lr", o.lr);
    momentum_keys(o);
    k.number("wd", o.weight_decay);
    polar_rule(o.polar);  // both polar factors: the update's and the weights' projection
    if (!k.done(err)) return nullptr;
    return mixed(opt::spel(o));
  }
  if (s.preset == "df_muon") {
    opt::DfMuonOptions o;
    k.number("eta_max", o.eta_max);
    k.number("rho", o.rho);
    k.number("lambda", o.lambda);
    k.number("l_min", o.l_min);
    k.number("eta0", o.eta0);
    k.number("curvature_decay", o.curvature_decay);
    k.number("wd", o.weight_decay);
    momentum_keys(o);
    polar_rule(o.polar);
    if (!k.done(err)) return nullptr;
    return mixed(opt::df_muon(o));
  }
  err = "--optimizer " + s.text + ": unknown preset '" + s.preset +
        "' (sgd, adamw, lion, muon, mop, scion, muon_hyperball, normuon, adamuon, muadam, freon, kaon, "
        "schatten_muon, "
        "da_muon, sc_muon, df_muon, namo, namo_d, dion2, nordion2, dion3, dion, spel)";
  return nullptr;
}

// ---------------------------------------------------------------------------------------------
// Cut parameters (--split): the optimizers step the pieces of an optim::SplitLayout

/// One --split: a name pattern and the cut, whose name is set to each recorded parameter the
/// pattern matches.
struct SplitArg {
  std::string text;     ///< as given on the command line
  std::string pattern;  ///< '*' matches any run of characters, everything else itself
  opt::SplitSpec cut;
  /// qkv=H/KV/D: the cut is split_qkv_grouped(name, H, KV, D, gated, per_head), made for each
  /// match once its side is known to be (H·(1 + gated) + 2·KV)·D (Columns::build): a per-head
  /// cut has a piece per head, so sizes that do not fit are refused before any is laid out.
  std::vector<index_t> qkv;
  bool gated = false, per_head = false;
};

/// NAME:KEY=VALUE[,KEY=VALUE...] of --split (--help lists the keys). NAME is everything before
/// the last ':' (parameter names may hold ':'; no key or value does). The sizes are checked
/// against the recording by SplitLayout, which names the parameter.
bool parse_split(const std::string& text, SplitArg& a, std::string& err) {
  a = SplitArg{};
  a.text = text;
  const std::size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size()) {
    err = "--split " + text + ": expected NAME:KEY=VALUE[,KEY=VALUE...] (see --help)";
    return false;
  }
  a.pattern = text.substr(0, colon);
  Spec s;
  s.text = text;
  s.preset = a.pattern;
  if (!parse_pairs(text.substr(colon + 1), text, s.kv, err)) {
    err = "--split " + err;
    return false;
  }
  Keys k(s, "--split");
  opt::SplitSpec& c = a.cut;
  if (k.sizes("qkv", a.qkv)) {
    for (const char* key : {"sizes", "count", "parts", "groups", "stack"})
      if (s.kv.count(key)) k.note(std::string("'qkv' lays out the pieces itself: no '") + key + "' with it");
    k.flag("gated", a.gated);
    k.flag("per_head", a.per_head);
    if (a.qkv.size() != 3) k.note("'qkv' is HEADS/KV_HEADS/HEAD_DIM");
  } else {
    k.sizes("sizes", c.sizes);
    std::int64_t count = 0, groups = 1;
    k.count("count", count);
    k.count("groups", groups);
    c.count = index_t(count);
    c.groups = index_t(groups);
    k.words("parts", c.parts);
    k.flag("stack", c.stack);
  }
  std::int64_t axis = c.axis;
  k.count("axis", axis, 1);
  c.axis = int(axis);
  return k.done(err);
}

/// Whether `name` matches `pattern`, where '*' matches any run of characters (also none).
bool glob_match(const std::string& pattern, const std::string& name) {
  std::size_t p = 0, n = 0, star = std::string::npos, resume = 0;
  while (n < name.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      resume = n;
    } else if (p < pattern.size() && pattern[p] == name[n]) {
      ++p;
      ++n;
    } else if (star != std::string::npos) {  // let the last '*' take one more character
      p = star + 1;
      n = ++resume;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*')
    ++p;
  return p == pattern.size();
}

/// The columns of the output, which are the matrices the optimizers step: the recording's
/// parameters, or with --split their pieces (SplitLayout::pieces() order, "<name>[<part>]").
/// A piece that is not copied() (a row piece, a stack's matrix, an unsplit parameter) is its
/// parameter's recorded memory itself; a column or grouped piece is gathered into a buffer
/// (one copy_block per block). Stepping the pieces as parameters of their own is what
/// SplitPartition does (each piece is optimised bit for bit as a parameter holding it would be);
/// tests/io/test_replay.cpp checks the replay against an inline SplitPartition.
class Columns {
 public:
  bool build(const io::RecordingInfo& info, const std::vector<SplitArg>& args, std::string& err) {
    std::vector<opt::ParamSpec> ps;
    for (const auto& p : info.params)
      ps.push_back({p.name, p.shape});
    std::vector<opt::SplitSpec> cuts;
    for (const SplitArg& a : args) {
      const std::size_t before = cuts.size();
      for (const opt::ParamSpec& p : ps) {
        if (!glob_match(a.pattern, p.name)) continue;
        cuts.push_back(a.cut);
        if (a.qkv.size() == 3) {  // parse_split checked the count; each value is in 1..1e9
          const opt::BlockShape m = opt::flatten(p.shape);
          const index_t side = a.cut.axis == 0 ? m.rows : m.cols;
          const index_t want = (a.qkv[0] * (a.gated ? 2 : 1) + 2 * a.qkv[1]) * a.qkv[2];  // ≤ 4e18
          if (want != side) {
            err = "--split " + a.text + ": qkv=" + std::to_string(a.qkv[0]) + "/" + std::to_string(a.qkv[1]) +
                  "/" + std::to_string(a.qkv[2]) + " lays out " + std::to_string(want) +
                  (a.cut.axis ? " columns" : " rows") + ", '" + p.name + "' has " + std::to_string(side);
            return false;
          }
          cuts.back() = opt::split_qkv_grouped("", a.qkv[0], a.qkv[1], a.qkv[2], a.gated, a.per_head);
          cuts.back().axis = a.cut.axis;
        }
        cuts.back().name = p.name;
      }
      if (cuts.size() == before) {
        err = "--split " + a.text + ": no parameter of the recording matches '" + a.pattern + "'";
        return false;
      }
    }
    layout_ = opt::SplitLayout(std::move(ps), std::move(cuts));
    if (!layout_) {
      err = layout_.message();
      return false;
    }
    // The activation Gram of a piece, from its parameter's recorded cols × cols Gram Σ of the
    // layer's inputs: a row piece reads all of them (Σ itself), a column piece the inputs of its
    // columns (the block Σ[J, J] over its column indices J). A stack's matrix has none: the
    // recorded Gram is over the flattened (out·in) columns, not over its inputs.
    const auto& map = layout_.map();
    gram_index_.assign(map.size(), {});
    has_gram_.assign(map.size(), false);
    for (std::size_t k = 0; k < map.size(); ++k) {
      const opt::SplitLayout::Piece& c = map[k];
      const io::RecordedParam& p = info.params[c.source];
      if (!p.has_act_gram || (c.axis == 0 && c.shape.cols != p.cols)) continue;
      has_gram_[k] = true;
      if (c.axis == 1)
        for (index_t g = 0; g < c.groups; ++g)
          for (index_t j = 0; j < c.shape.cols / c.groups; ++j)
            gram_index_[k].push_back(c.offset + g * c.stride + j);
    }
    return true;
  }
  std::size_t size() const { return layout_.pieces().size(); }
  /// The columns as the optimizers' parameters.
  const std::vector<opt::ParamSpec>& specs() const { return layout_.pieces(); }
  const opt::BlockShape& shape(std::size_t k) const { return layout_.map()[k].shape; }
  std::size_t numel(std::size_t k) const { return std::size_t(shape(k).size()); }
  /// The recorded parameter column k comes from.
  std::size_t source(std::size_t k) const { return layout_.map()[k].source; }
  /// Whether any --split applies; then the signatures gain "|split=" + the layout's.
  bool split() const { return !layout_.splits().empty(); }
  std::string signature() const { return split() ? layout_.signature() : std::string(); }
  /// Column k of `p`, an array of its source parameter's flattened shape (a gradient, a value):
  /// p itself (offset) or a copy in `scratch`.
  const float* gather(std::size_t k, const float* p, std::vector<float>& scratch) const {
    const opt::SplitLayout::Piece& c = layout_.map()[k];
    if (!c.copied()) return c.in_place(p);
    scratch.resize(numel(k));
    c.for_each_block(scratch.data(), p, MemoryKind::host,
                     [](MatrixRef<float> to, MatrixRef<const float> from) { opt::copy_block(to, from); });
    return scratch.data();
  }
  /// Whether column k has an activation Gram (its parameter records one; not a stack's matrix).
  bool has_gram(std::size_t k) const { return has_gram_[k]; }
  /// Column k's cols × cols activation Gram from its parameter's recorded Gram `sigma`: sigma
  /// itself, or the block of the column's inputs in `scratch`. Cost: cols² copies.
  const float* gram(std::size_t k, const float* sigma, std::vector<float>& scratch) const {
    const std::vector<index_t>& J = gram_index_[k];
    if (J.empty()) return sigma;
    const index_t ld = layout_.map()[k].source_cols;
    scratch.resize(J.size() * J.size());
    for (std::size_t a = 0; a < J.size(); ++a)
      for (std::size_t b = 0; b < J.size(); ++b)
        scratch[a * J.size() + b] = sigma[J[a] * ld + J[b]];
    return scratch.data();
  }

 private:
  opt::SplitLayout layout_;
  std::vector<std::vector<index_t>> gram_index_;  ///< a column piece's source columns; else empty
  std::vector<bool> has_gram_;
};

// ---------------------------------------------------------------------------------------------
// QK-clip (--qk-layer, qk_clip=TAU): optim::QkClip after each step of an optimizer, fed the
// step's recorded max logits (/max_logits, docs/replay-format.md "QK-clip")

/// qk_clip=TAU and qk_balance=ALPHA of an --optimizer: taken out of its keys (they configure the
/// clip after the step, not the preset, so every preset accepts them). Their ranges are checked
/// by QkClip::init (one rule, with its message), when the run is set up.
bool take_qk_keys(Spec& s, std::string& err) {
  Spec qk;
  qk.text = s.text;
  qk.preset = s.preset;
  for (const char* key : {"qk_clip", "qk_balance"}) {
    auto it = s.kv.find(key);
    if (it == s.kv.end()) continue;
    qk.kv.insert(*it);
    s.kv.erase(it);
  }
  Keys k(qk);
  s.qk = qk.kv.count("qk_clip") > 0;
  if (!s.qk && qk.kv.count("qk_balance")) k.note("'qk_balance' needs 'qk_clip=TAU'");
  k.number("qk_clip", s.qk_options.threshold);
  k.number("qk_balance", s.qk_options.balance);
  return k.done(err);
}

/// One --qk-layer KIND:KEYS: the layout (an optim::qk_* helper), its sizes and its name
/// patterns, expanded against the replay's columns by qk_layers().
struct QkLayerArg {
  std::string text;  ///< as given on the command line
  std::string kind;  ///< separate, fused, grouped, mla
  /// (key, pattern) of every name key given; the first is the layer's primary name (q or qkv),
  /// whose matches make the layers.
  std::vector<std::pair<std::string, std::string>> names;
  std::int64_t heads = 0, kv_heads = 0, head_dim = 0, nope_dim = 0, rope_dim = 0, v_dim = 0, axis = 0;
  bool gated = false;
};

/// Parses --qk-layer (--help lists the kinds and keys). Sizes are integers ≥ 1; a name may hold
/// one '*', and then every name of the layer holds one.
bool parse_qk_layer(const std::string& text, QkLayerArg& a, std::string& err) {
  a = QkLayerArg{};
  a.text = text;
  Spec s;
  if (!parse_spec(text, s, err) || s.kv.empty()) {
    err = "--qk-layer " + (err.empty() ? text + ": expected KIND:KEY=VALUE[,...] (see --help)" : err);
    return false;
  }
  a.kind = s.preset;
  Keys k(s, "--qk-layer");
  // Per kind: its name keys (required ones first; the first is the primary) and size keys.
  struct Kind {
    const char* name;
    std::vector<const char*> required, optional;
  };
  const Kind kinds[] = {{"separate", {"q", "k"}, {"q_bias", "k_bias"}},
                        {"fused", {"qkv"}, {"bias"}},
                        {"grouped", {"qkv"}, {"bias"}},
                        {"mla", {"q", "kv"}, {}}};
  const Kind* kind = nullptr;
  for (const Kind& c : kinds)
    if (a.kind == c.name) kind = &c;
  if (!kind) {
    err = "--qk-layer " + text + ": unknown kind '" + a.kind + "' (separate, fused, grouped, mla)";
    return false;
  }
  for (const char* key : kind->required) {
    std::string v;
    if (!k.word(key, v)) k.note(std::string("needs ") + key + "=NAME");
    a.names.emplace_back(key, v);
  }
  for (const char* key : kind->optional) {
    std::string v;
    if (k.word(key, v)) a.names.emplace_back(key, v);
  }
  k.count("heads", a.heads);
  if (a.kind == "mla") {
    k.count("nope_dim", a.nope_dim);
    k.count("rope_dim", a.rope_dim);
    k.count("v_dim", a.v_dim);
    if (a.heads < 1 || a.nope_dim < 1 || a.rope_dim < 1 || a.v_dim < 1)
      k.note("needs heads, nope_dim, rope_dim and v_dim >= 1");
  } else {
    a.kv_heads = a.heads;
    k.count("kv_heads", a.kv_heads);
    k.count("head_dim", a.head_dim);
    if (a.kind != "grouped") k.count("axis", a.axis, 1);
    if (a.kind != "fused") k.flag("gated", a.gated);
    if (a.heads < 1 || a.kv_heads < 1 || a.head_dim < 1) k.note("needs heads, kv_heads and head_dim >= 1");
    if (a.kind == "grouped" && !s.kv.count("kv_heads")) k.note("needs kv_heads=KV");
  }
  const auto stars = [](const std::string& n) { return std::count(n.begin(), n.end(), '*'); };
  for (const auto& [key, pattern] : a.names) {
    if (stars(pattern) > 1) k.note("'" + key + "=" + pattern + "' has more than one '*'");
    if (stars(pattern) != stars(a.names.front().second))
      k.note("'" + key + "=" + pattern + "' and '" + a.names.front().first + "=" + a.names.front().second +
             "' must both hold one '*' or neither");
  }
  return k.done(err);
}

/// The attention layers of the --qk-layer options over the columns `ps`: each option in order,
/// and within one the columns its primary name matches, in column order (the recording's order,
/// or its pieces' with --split): the order of the heads in /max_logits. A '*' in the primary
/// name matches any run of characters; the other names get that run in place of theirs and must
/// name columns. Each layer is named after its primary column.
bool qk_layers(const std::vector<QkLayerArg>& args, const std::vector<opt::ParamSpec>& ps,
               std::vector<opt::QkLayer>& layers, std::string& err) {
  layers.clear();
  const auto has_column = [&](const std::string& n) {
    return std::any_of(ps.begin(), ps.end(), [&](const opt::ParamSpec& p) { return p.name == n; });
  };
  for (const QkLayerArg& a : args) {
    const std::string& primary = a.names.front().second;
    const std::size_t star = primary.find('*');
    const std::size_t before = layers.size();
    for (const opt::ParamSpec& p : ps) {
      if (!glob_match(primary, p.name)) continue;
      // What the one '*' matched: the name without the pattern's prefix and suffix around it.
      const std::string run = star == std::string::npos
                                  ? std::string()
                                  : p.name.substr(star, p.name.size() - (primary.size() - 1));
      std::map<std::string, std::string> name;
      for (const auto& [key, pattern] : a.names) {
        std::string n = pattern;
        if (star != std::string::npos) n.replace(n.find('*'), 1, run);
        if (!has_column(n)) {
          err = "--qk-layer " + a.text + ": no column is named '" + n + "' (" + key + " of the layer at '" +
                p.name +
                "'; the columns are the recorded parameters, or their pieces NAME[part] with --split)";
          return false;
        }
        name[key] = n;
      }
      const index_t H = index_t(a.heads), KV = index_t(a.kv_heads), D = index_t(a.head_dim);
      opt::QkLayer l;
      if (a.kind == "separate") {
        l = opt::qk_separate(p.name, name["q"], name["k"], H, KV, D, int(a.axis), a.gated);
        if (name.count("q_bias")) l = opt::with_bias(std::move(l), name["q"], name["q_bias"]);
        if (name.count("k_bias")) l = opt::with_bias(std::move(l), name["k"], name["k_bias"]);
      } else if (a.kind == "fused" || a.kind == "grouped") {
        l = a.kind == "fused" ? opt::qk_fused(p.name, name["qkv"], H, KV, D, int(a.axis))
                              : opt::qk_grouped(p.name, name["qkv"], H, KV, D, a.gated);
        if (name.count("bias")) l = opt::with_bias(std::move(l), name["qkv"], name["bias"]);
      } else {
        l = opt::qk_mla(p.name, name["q"], name["kv"], H, index_t(a.nope_dim), index_t(a.rope_dim),
                        index_t(a.v_dim));
      }
      layers.push_back(std::move(l));
    }
    if (layers.size() == before) {
      err = "--qk-layer " + a.text + ": no column matches '" + primary + "'";
      return false;
    }
  }
  return true;
}

/// The text a run's signature gains for its clip: τ, α and the layers as given.
std::string qk_signature(const opt::QkClipOptions& o, const std::vector<QkLayerArg>& args) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "|qk_clip=%.17g/%.17g", o.threshold, o.balance);
  std::string s = buf;
  for (const QkLayerArg& a : args)
    s += ";" + a.text;
  return s;
}

// ---------------------------------------------------------------------------------------------
// Command line

struct Options {
  std::string recording, out = "replay.h5", json;
  std::vector<Spec> specs;
  std::vector<SplitArg> splits;
  std::vector<QkLayerArg> qk_layers;
  std::int64_t steps = -1;
  bool save_params = false, diagnostics = true, quiet = false;
  int read_ahead = -1;  ///< 1 on, 0 off, -1 automatic (on when one step is ≥ 1 MiB)
  double cache_mb = 1;  ///< step cache budget (docs/benchmarks/cpu-replay.md: larger blocks read slower)
};

int usage_error(const std::string& msg) {
  std::fprintf(stderr, "schatten-replay: %s\n(schatten-replay --help explains the options)\n", msg.c_str());
  return 2;
}

/// The longest config line read: a file with no newline in its first MiB is not a config file
/// (a binary file passed by mistake may have none), and reading it whole would only fill memory.
constexpr std::size_t kMaxConfigLine = std::size_t(1) << 20;
enum class LineRead { line, end, too_long };
/// The next line of `f` into `line`, its newline kept, up to kMaxConfigLine bytes (fgets()
/// reads it in pieces; before, a config line was cut at 4095 bytes and its rest read as another
/// line). `end` at the end of the file or on a read error (ferror tells), with nothing read.
LineRead read_line(std::FILE* f, std::string& line) {
  line.clear();
  char piece[4096];
  while (std::fgets(piece, sizeof piece, f)) {
    line += piece;  // up to a NUL byte, as before
    if (!line.empty() && line.back() == '\n') return LineRead::line;
    if (line.size() > kMaxConfigLine) return LineRead::too_long;
  }
  return line.empty() ? LineRead::end : LineRead::line;
}

/// Whether paths `a` and `b` name the same file: the same path once made absolute and
/// normalised lexically, or (where both exist) the same device and inode, which also catches
/// links and `dir/../`. Cost: two stat calls.
bool same_file(const std::string& a, const std::string& b) {
  std::error_code ec;
  const std::filesystem::path pa = std::filesystem::absolute(a, ec).lexically_normal();
  const std::filesystem::path pb = std::filesystem::absolute(b, ec).lexically_normal();
  if (!ec && pa == pb) return true;
  struct stat sa {
  }, sb{};
  return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev &&
         sa.st_ino == sb.st_ino;
}

/// Whether `path` names an existing directory (following links). Cost: one stat call.
bool directory_exists(const std::string& path) {
  struct stat s {};
  return ::stat(path.c_str(), &s) == 0 && S_ISDIR(s.st_mode);
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
    if (a == "--help" || a == "-h") {  // with optim::LabelPolicy's default exclusions filled in
      std::string help = kHelp, words;
      for (const std::string& w : opt::LabelPolicy{}.exclude)
        words += (words.empty() ? "" : "/") + w;
      for (std::size_t at; (at = help.find("@EXCLUDE@")) != std::string::npos;)
        help.replace(at, 9, words);
      for (std::size_t at; (at = help.find("@SCHEDULES@")) != std::string::npos;)
        help.replace(at, 11, schedule_names("|"));
      std::fputs(help.c_str(), stdout);
      return 0;
    } else if (a == "--optimizer") {
      if (!value(v)) return usage_error("--optimizer needs a SPEC");
      Spec s;
      if (!parse_spec(v, s, err)) return usage_error(err);
      o.specs.push_back(s);
    } else if (a == "--split") {
      if (!value(v)) return usage_error("--split needs NAME:KEY=VALUE[,...]");
      SplitArg sa;
      if (!parse_split(v, sa, err)) return usage_error(err);
      o.splits.push_back(sa);
    } else if (a == "--qk-layer") {
      if (!value(v)) return usage_error("--qk-layer needs KIND:KEY=VALUE[,...]");
      QkLayerArg q;
      if (!parse_qk_layer(v, q, err)) return usage_error(err);
      o.qk_layers.push_back(q);
    } else if (a == "--config") {
      if (!value(v)) return usage_error("--config needs a FILE");
      std::FILE* f = std::fopen(v.c_str(), "r");
      if (!f) return usage_error("cannot read config file '" + v + "'");
      std::string l;
      for (LineRead r; (r = read_line(f, l)) != LineRead::end;) {
        if (r == LineRead::too_long) {
          std::fclose(f);
          return usage_error("config file '" + v + "' has a line longer than 1 MiB (is it a text file?)");
        }
        l.resize(std::min(l.size(), l.find('#')));
        while (!l.empty() && std::isspace(static_cast<unsigned char>(l.back())))
          l.pop_back();
        std::size_t b = 0;
        while (b < l.size() && std::isspace(static_cast<unsigned char>(l[b])))
          ++b;
        if (b == l.size()) continue;
        const std::string item = l.substr(b);
        bool ok = true;
        if (item.compare(0, 8, "--split ") == 0) {  // a cut or a layer; every other line a SPEC
          SplitArg sa;
          ok = parse_split(item.substr(item.find_first_not_of(' ', 8)), sa, err);
          if (ok) o.splits.push_back(sa);
        } else if (item.compare(0, 11, "--qk-layer ") == 0) {
          QkLayerArg q;
          ok = parse_qk_layer(item.substr(item.find_first_not_of(' ', 11)), q, err);
          if (ok) o.qk_layers.push_back(q);
        } else {
          Spec s;
          ok = parse_spec(item, s, err);
          if (ok) o.specs.push_back(s);
        }
        if (!ok) {
          std::fclose(f);
          return usage_error(v + ": " + err);
        }
      }
      // fopen() opens a directory and fgets() then fails (EISDIR): that is no empty config.
      const bool read_error = std::ferror(f) != 0;
      std::fclose(f);
      if (read_error) return usage_error("cannot read config file '" + v + "'");
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
    } else if (a == "--cache-mb") {
      char* end = nullptr;
      if (!value(v) || (o.cache_mb = std::strtod(v.c_str(), &end), *end != '\0') || !(o.cache_mb > 0) ||
          o.cache_mb > 1e6)
        return usage_error("--cache-mb needs a number of MB in (0, 1e6]");
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
  bool any_qk = false;
  for (Spec& s : o.specs) {
    if (!take_qk_keys(s, err)) return usage_error(err);
    any_qk = any_qk || s.qk;
  }
  if (any_qk && o.qk_layers.empty())
    return usage_error("qk_clip=TAU needs the attention layers: give --qk-layer (see --help)");
  if (!any_qk && !o.qk_layers.empty())
    return usage_error("--qk-layer is given but no --optimizer has qk_clip=TAU");
  if (o.json.empty()) {
    o.json = o.out;
    const std::size_t dot = o.json.rfind(".h5");
    if (dot != std::string::npos && dot + 3 == o.json.size()) o.json.resize(dot);
    o.json += ".json";
  }
  // The output is written as <out>.tmp and the summary as <json>.tmp, each renamed over its
  // path: any of them naming the recording (or another of them) would destroy it.
  const std::string tmp = o.out + ".tmp", json_tmp = o.json + ".tmp";
  for (const auto& [what, path] : {std::pair<const char*, const std::string*>{"--out", &o.out},
                                   {"--out's temporary file", &tmp},
                                   {"--json", &o.json},
                                   {"--json's temporary file", &json_tmp}})
    if (same_file(*path, o.recording))
      return usage_error(std::string(what) + " '" + *path + "' is the recording '" + o.recording + "'");
  if (same_file(o.json, o.out) || same_file(o.json, tmp) || same_file(json_tmp, o.out) ||
      same_file(json_tmp, tmp))
    return usage_error("--json '" + o.json + "' is the HDF5 output '" + o.out + "'");
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

/// A per-step table (steps × parameters, float64) of the output, buffered and written `block`
/// rows per HDF5 call (the dataset's chunk): bounded memory, few HDF5 calls.
class Table {
 public:
  bool create(hid_t group, const char* name, std::size_t width, hsize_t block) {
    width_ = width;
    block_ = block;
    set_ = io::h5::Handle(io::h5::create_extendible(group, name, H5T_IEEE_F64LE, {hsize_t(width)}, 0, block),
                          H5Dclose);
    rows_.reserve(width * block);
    return set_.ok();
  }
  /// Appends the next row (width values); writes the buffered rows when `block` are pending.
  bool push(const double* row, std::mutex& h5) {
    rows_.insert(rows_.end(), row, row + width_);
    return rows_.size() < width_ * block_ || flush(h5);
  }
  bool flush(std::mutex& h5) {
    if (rows_.empty()) return true;
    const hsize_t n = hsize_t(rows_.size() / width_);
    std::lock_guard<std::mutex> lock(h5);
    const bool ok = io::h5::append_steps(set_.get(), written_, n, H5T_NATIVE_DOUBLE, rows_.data());
    written_ += n;
    rows_.clear();
    return ok;
  }
  void close() { set_.reset(); }

 private:
  io::h5::Handle set_;
  std::size_t width_ = 0;
  hsize_t block_ = 1, written_ = 0;
  std::vector<double> rows_;
};

/// Running mean of the finite values of each parameter.
struct Means {
  std::vector<double> sum;
  std::vector<std::int64_t> n;
  void reset(std::size_t np) {
    sum.assign(np, 0.0);
    n.assign(np, 0);
  }
  void add(const std::vector<double>& v) {
    for (std::size_t i = 0; i < v.size(); ++i)
      if (std::isfinite(v[i])) {
        sum[i] += v[i];
        ++n[i];
      }
  }
  double mean(std::size_t i) const { return n[i] ? sum[i] / double(n[i]) : std::nan(""); }
};

/// One optimizer's replay: its parameters, buffers, output tables and running figures.
struct Run {
  Spec spec;
  std::unique_ptr<Runner> runner;
  std::string signature;     ///< the runner's, with the cut when --split applies
  bool feeds_grams = false;  ///< some parameter's rule takes the recorded activation Gram
  std::vector<std::vector<float>> params, work, previous_update;
  std::vector<float*> pp, wp;
  io::h5::Handle group;
  Table update_norm, param_norm, ortho, schatten_p, grad_dot, cosine, potential, next_dot, alignment;
  /// QK-clip after each step (spec.qk): the clip over the columns and η of each query head per
  /// step (/runs/k/qk_factor); the count of (step, head) pairs clipped and the smallest η.
  opt::QkClip clip;
  Table qk_factor;
  std::int64_t qk_clipped = 0;
  double qk_min_factor = 1.0;
  std::vector<io::h5::Handle> trajectory;
  std::vector<double> un, pn, oe, p, gd, cos, phi, previous_gd;
  Means oe_mean, cos_mean, align_mean, phi_mean;
  double t_step = 0, t_feed = 0, t_diag = 0, t_write = 0;
};

/// The recorded gradients (and activation Grams where wanted) of `block` consecutive steps per
/// HDF5 read, one read per dataset: memory block × one step's data, or twice that when the next
/// block is read on a second thread while the optimizers work through the current one.
class StepCache {
 public:
  StepCache(const io::RecordingReader& reader, std::mutex& h5, std::vector<std::size_t> grad_sizes,
            std::vector<std::size_t> gram_sizes, std::int64_t steps, std::int64_t block, bool read_ahead)
      : reader_(reader),
        h5_(h5),
        grad_sizes_(std::move(grad_sizes)),
        gram_sizes_(std::move(gram_sizes)),
        steps_(steps),
        block_(block),
        read_ahead_(read_ahead) {
    for (Block* b : {&cur_, &next_}) {
      if (b == &next_ && !read_ahead_) break;
      b->grad.resize(grad_sizes_.size());
      b->gram.resize(grad_sizes_.size());
      for (std::size_t i = 0; i < grad_sizes_.size(); ++i) {  // uninitialised: HDF5 fills them
        b->grad[i].reset(new float[std::size_t(block_) * grad_sizes_[i]]);
        if (gram_sizes_[i]) b->gram[i].reset(new float[std::size_t(block_) * gram_sizes_[i]]);
      }
    }
  }
  ~StepCache() {
    if (ahead_.valid()) ahead_.wait();
  }
  StepCache(const StepCache&) = delete;
  StepCache& operator=(const StepCache&) = delete;

  /// Makes step t (0 ≤ t < steps, called in increasing order) available.
  bool at(std::int64_t t, std::string& err) {
    if (t >= cur_.first && t < cur_.first + cur_.count) return true;
    const Clock::time_point t0 = Clock::now();
    const std::int64_t first = cur_.count == 0 ? 0 : cur_.first + cur_.count;
    bool ok = true;
    if (ahead_.valid()) {
      ok = ahead_.get();
      if (ok)
        std::swap(cur_, next_);
      else
        err = ahead_err_;
    } else {
      ok = fill(cur_, first, err);
    }
    wait_ += seconds_since(t0);
    const std::int64_t following = cur_.first + cur_.count;
    if (ok && read_ahead_ && following < steps_)
      ahead_ =
          std::async(std::launch::async, [this, following] { return fill(next_, following, ahead_err_); });
    return ok && t >= cur_.first && t < cur_.first + cur_.count;
  }
  const float* grad(std::int64_t t, std::size_t i) const {
    return cur_.grad[i].get() + std::size_t(t - cur_.first) * grad_sizes_[i];
  }
  /// nullptr when parameter i's Gram is not cached.
  const float* gram(std::int64_t t, std::size_t i) const {
    return gram_sizes_[i] ? cur_.gram[i].get() + std::size_t(t - cur_.first) * gram_sizes_[i] : nullptr;
  }
  double read_seconds() const { return read_; }
  double wait_seconds() const { return wait_; }

 private:
  struct Block {
    std::int64_t first = 0, count = 0;
    std::vector<std::unique_ptr<float[]>> grad, gram;
  };
  bool fill(Block& b, std::int64_t first, std::string& err) {
    const Clock::time_point t0 = Clock::now();
    b.first = first;
    b.count = std::min(block_, steps_ - first);
    std::lock_guard<std::mutex> lock(h5_);
    for (std::size_t i = 0; i < grad_sizes_.size(); ++i) {
      if (reader_.read_grads(first, b.count, i, b.grad[i].get(), &err) != Status::ok) return false;
      if (gram_sizes_[i] && reader_.read_act_grams(first, b.count, i, b.gram[i].get(), &err) != Status::ok)
        return false;
    }
    read_ += seconds_since(t0);
    return true;
  }
  static double seconds_since(Clock::time_point t0) {
    return std::chrono::duration<double>(Clock::now() - t0).count();
  }
  const io::RecordingReader& reader_;
  std::mutex& h5_;
  std::vector<std::size_t> grad_sizes_, gram_sizes_;
  std::int64_t steps_, block_;
  bool read_ahead_;
  Block cur_, next_;
  std::future<bool> ahead_;
  std::string ahead_err_;
  double read_ = 0, wait_ = 0;
};

/// Σ_i u_iᵀ S u_i = tr(U S Uᵀ) over the rows u_i of U (rows × cols) for a cols × cols S, in
/// double as docs/replay-format.md says (the inner sums S u_i were float until 2026-12-07:
/// 2e-5 to 5e-4 relative off; audit of that day).
double gram_quadratic(const float* u, index_t rows, index_t cols, const float* s) {
  double tr = 0.0;
  for (index_t i = 0; i < rows; ++i) {
    const float* ui = u + i * cols;
    for (index_t j = 0; j < cols; ++j) {
      const float* sj = s + j * cols;
      double a = 0.0;
      for (index_t k = 0; k < cols; ++k)
        a += double(sj[k]) * double(ui[k]);
      tr += a * double(ui[j]);
    }
  }
  return tr;
}

/// The Euclidean norms of a and b (n floats each) in one pass, double sums.
void squared_norms(const float* a, const float* b, std::size_t n, double& norm_a, double& norm_b) {
  double sa = 0.0, sb = 0.0;
  for (std::size_t k = 0; k < n; ++k) {
    sa += double(a[k]) * double(a[k]);
    sb += double(b[k]) * double(b[k]);
  }
  norm_a = std::sqrt(sa);
  norm_b = std::sqrt(sb);
}

double dot(const float* a, const float* b, std::size_t n) {
  double d = 0.0;
  for (std::size_t k = 0; k < n; ++k)
    d += double(a[k]) * double(b[k]);
  return d;
}

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

[[maybe_unused]] int replay(const Options& o) {  // unused in the fuzz build (no main)
  const Clock::time_point t_start = Clock::now();
  std::mutex h5_mutex;  // every HDF5 call (reader thread, writer) holds it
  io::RecordingReader reader;
  std::string err;
  if (io::open_recording(o.recording, reader, &err) != Status::ok) return fail_run(err, "");
  const io::RecordingInfo& info = reader.info();
  if (info.steps == 0) return fail_run("'" + o.recording + "' has no completed steps", "");
  const std::int64_t steps = o.steps > 0 ? std::min(o.steps, info.steps) : info.steps;
  const double nan = std::numeric_limits<double>::quiet_NaN();

  // The recorded parameters (i < nsrc) and the columns the optimizers step (k < np: the
  // parameters, or with --split their pieces).
  Columns columns;
  if (!columns.build(info, o.splits, err)) return fail_run(err, "");
  const std::vector<opt::ParamSpec>& ps = columns.specs();
  const std::size_t nsrc = info.params.size(), np = columns.size();
  std::vector<std::size_t> src_sizes, gram_sizes(nsrc, 0), sizes(np);
  bool all_recorded = true, any_recorded = false;
  for (const auto& p : info.params) {
    src_sizes.push_back(std::size_t(p.rows * p.cols));
    const bool rec = p.has_initial || p.has_value;
    all_recorded = all_recorded && rec;
    any_recorded = any_recorded || rec;
  }
  std::vector<std::vector<float>> initial(np), copies(np);
  {
    std::vector<float> whole;
    for (std::size_t i = 0; i < nsrc; ++i) {
      whole.assign(src_sizes[i], 0.0f);
      if ((info.params[i].has_initial || info.params[i].has_value) &&
          reader.read_initial(i, whole.data(), &err) != Status::ok)
        return fail_run(err, "");
      // As a NaN gradient stops the replay (the step refuses it), so does a NaN or ±Inf
      // initial value: the optimizers would carry it into every norm (Finding 41).
      const auto bad = std::find_if(whole.begin(), whole.end(), [](float v) { return !std::isfinite(v); });
      if (bad != whole.end())
        return fail_run("'" + o.recording + "': the initial value of parameter '" + info.params[i].name +
                            "' (" + (info.params[i].has_initial ? "/params/" : "step 0 of /params/") +
                            std::to_string(i) + (info.params[i].has_initial ? "/initial" : "/value") +
                            ") has a non-finite element at index " + std::to_string(bad - whole.begin()) +
                            " (" + std::to_string(*bad) + ")",
                        "");
      for (std::size_t k = 0; k < np; ++k) {
        if (columns.source(k) != i) continue;
        sizes[k] = columns.numel(k);
        const float* c = columns.gather(k, whole.data(), copies[k]);
        initial[k].assign(c, c + sizes[k]);
      }
    }
  }

  // The attention layers of --qk-layer over the columns, for the runs with qk_clip.
  std::vector<opt::QkLayer> qk;
  if (!o.qk_layers.empty() && !qk_layers(o.qk_layers, ps, qk, err)) return fail_run(err, "");
  std::vector<Run> runs(o.specs.size());
  for (std::size_t r = 0; r < runs.size(); ++r) {
    Run& run = runs[r];
    run.spec = o.specs[r];
    bool usage = false;
    run.runner = build(run.spec, ps, o.diagnostics, err, usage);
    if (!run.runner) return usage ? usage_error(err) : fail_run(err, "");
    // A SplitPartition's signature: the partition's and the cut.
    run.signature = run.runner->signature() + (columns.split() ? "|split=" + columns.signature() : "");
    if (run.spec.qk) {
      run.clip = opt::QkClip(qk, run.spec.qk_options);
      const opt::StepReport c = run.clip.init(ps);
      if (!c) return fail_run("--optimizer " + run.spec.text + ": " + c.message, "");
      if (run.clip.heads() != info.max_logit_heads)
        return fail_run(info.max_logit_heads == 0
                            ? "--optimizer " + run.spec.text +
                                  ": qk_clip needs the max logits of each step, and '" + o.recording +
                                  "' has no /max_logits (docs/replay-format.md)"
                            : "the --qk-layer layers have " + std::to_string(run.clip.heads()) +
                                  " query heads; '" + o.recording + "' records " +
                                  std::to_string(info.max_logit_heads) + " max logits per step (/max_logits)",
                        "");
      run.signature += qk_signature(run.spec.qk_options, o.qk_layers);
    }
    run.params = initial;
    run.work = initial;
    for (std::size_t i = 0; i < np; ++i) {
      run.pp.push_back(run.params[i].data());
      run.wp.push_back(run.work[i].data());
      if (!columns.has_gram(i)) run.runner->without_gram(i);
      run.feeds_grams = run.feeds_grams || run.runner->collects_gram(i);
    }
    if (o.diagnostics) {
      run.previous_update = initial;
      run.previous_gd.assign(np, nan);
    }
    for (Means* m : {&run.oe_mean, &run.cos_mean, &run.align_mean, &run.phi_mean})
      m->reset(np);
  }
  // The recorded Grams are cached with the gradients when the descent potential needs them at
  // every step; schatten_muon alone reads them only on its criterion steps.
  if (o.diagnostics)
    for (std::size_t k = 0; k < np; ++k)
      if (columns.has_gram(k)) {
        const io::RecordedParam& p = info.params[columns.source(k)];
        gram_sizes[columns.source(k)] = std::size_t(p.cols * p.cols);
      }

  // The output, created before any work so that a bad path fails at once; the summary's
  // temporary file too (a --json in a missing directory, or naming a directory, failed only
  // after the whole replay, and left the complete output behind: found by a fuzzer,
  // 2026-12-07). It is removed on every way out of this function but its last rename.
  const std::string tmp = o.out + ".tmp", json_tmp = o.json + ".tmp";
  io::h5::QuietErrors quiet;
  io::h5::Handle file(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
  if (!file.ok()) return fail_run("cannot create '" + tmp + "' (directory missing or not writable?)", "");
  struct RemovedOnExit {
    std::string path;
    ~RemovedOnExit() { std::remove(path.c_str()); }  // nothing left to remove once renamed
  } json_guard{json_tmp};
  if (directory_exists(o.json)) return fail_run("--json '" + o.json + "' is a directory", tmp);
  if (std::FILE* probe = std::fopen(json_tmp.c_str(), "w"))
    std::fclose(probe);
  else
    return fail_run("cannot create '" + json_tmp + "' (directory missing or not writable?)", tmp);
  const hid_t f = file.get();
  {
    const int version = 1;
    std::vector<std::string> names;
    std::vector<std::int64_t> source;
    for (std::size_t k = 0; k < np; ++k) {
      names.push_back(ps[k].name);
      source.push_back(std::int64_t(columns.source(k)));
    }
    // A 1-D dataset of n values of `type` (the loss, the columns' sources).
    const auto write_vector = [&](const char* name, hid_t file_type, hid_t type, const void* data,
                                  hsize_t n) {
      io::h5::Handle space(H5Screate_simple(1, &n, nullptr), H5Sclose);
      io::h5::Handle set(H5Dcreate2(f, name, file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                         H5Dclose);
      return set.ok() && H5Dwrite(set.get(), type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0;
    };
    bool ok = io::h5::write_string_attr(f, "format", "schatten-replay") &&
              io::h5::write_scalar_attr(f, "schema_version", H5T_NATIVE_INT32, &version) &&
              io::h5::write_string_attr(f, "recording", o.recording) &&
              io::h5::write_scalar_attr(f, "steps", H5T_NATIVE_INT64, &steps) &&
              io::h5::write_string_attr(f, "initial",
                                        all_recorded   ? "recorded"
                                        : any_recorded ? "mixed"
                                                       : "zeros") &&
              io::h5::write_string_attr(f, "split", columns.signature()) &&
              io::h5::write_string_dataset(f, "param_names", names) &&
              write_vector("param_source", H5T_STD_I64LE, H5T_NATIVE_INT64, source.data(), hsize_t(np));
    std::vector<double> loss(std::size_t(steps), 0.0);
    ok = ok && reader.read_losses(0, steps, loss.data(), &err) == Status::ok &&
         write_vector("loss", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, loss.data(), hsize_t(steps));
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
           io::h5::write_string_attr(g, "signature", run.signature) &&
           io::h5::write_string_dataset(g, "labels", run.runner->labels());
      const hsize_t chunk = hsize_t(std::min<std::int64_t>(steps, 256));
      const std::pair<Table*, const char*> tables[] = {
          {&run.update_norm, "update_norm"},   {&run.param_norm, "param_norm"},
          {&run.ortho, "orthogonality_error"}, {&run.schatten_p, "schatten_p"},
          {&run.grad_dot, "grad_dot"},         {&run.cosine, "descent_cosine"},
          {&run.potential, "potential"},       {&run.next_dot, "next_grad_dot"},
          {&run.alignment, "alignment"}};
      for (const auto& [table, name] : tables)
        ok = ok && table->create(g, name, np, chunk);
      if (run.spec.qk) ok = ok && run.qk_factor.create(g, "qk_factor", std::size_t(run.clip.heads()), chunk);
      if (ok && o.save_params) {
        io::h5::Handle pg(H5Gcreate2(g, "params", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
        ok = pg.ok();
        for (std::size_t i = 0; ok && i < np; ++i) {
          run.trajectory.emplace_back(
              io::h5::create_extendible(pg.get(), std::to_string(i).c_str(), H5T_IEEE_F32LE,
                                        {hsize_t(columns.shape(i).rows), hsize_t(columns.shape(i).cols)}, 0),
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

  // The step cache: as many steps per block as the budget allows (half of it each for two
  // blocks when reading ahead), at least one.
  std::size_t step_bytes = 0;
  for (std::size_t i = 0; i < nsrc; ++i)
    step_bytes += (src_sizes[i] + gram_sizes[i]) * sizeof(float);
  // As many steps per block as the budget holds (half of it each for two blocks when reading
  // ahead), at least one. Reading ahead pays only when a step is large: each hand-off to the
  // second thread costs about 0.7 ms on the CI machine (docs/benchmarks/cpu-replay.md).
  const double budget = o.cache_mb * 1024.0 * 1024.0;
  const bool read_ahead = o.read_ahead < 0 ? step_bytes >= (std::size_t(1) << 20) : o.read_ahead == 1;
  const std::int64_t block = std::clamp<std::int64_t>(
      std::int64_t(budget / (double(step_bytes) * (read_ahead ? 2.0 : 1.0))), 1, steps);
  StepCache cache(reader, h5_mutex, src_sizes, gram_sizes, steps, block, read_ahead);
  // Step t's gradient and Gram of each column (the recorded memory, or copies in `copies` and
  // `gram_copies` for the gathered pieces), shared by the runs. Grams only where the diagnostics
  // cache them with the gradients.
  std::vector<const float*> grad_of(np), gram_of(np);
  std::vector<std::vector<float>> gram_copies(np);
  // Column k's activation Gram at step t, for a rule's criterion: gram_of[k] when cached, else
  // read now (the pieces of one parameter share one read per step).
  std::vector<float> gram_scratch, gram_piece;
  std::int64_t scratch_step = -1;
  std::size_t scratch_param = 0;
  auto gram_at = [&](std::int64_t t, std::size_t k) -> const float* {
    if (gram_of[k] || !columns.has_gram(k)) return gram_of[k];
    const std::size_t i = columns.source(k);
    if (scratch_step != t || scratch_param != i) {
      gram_scratch.resize(std::size_t(info.params[i].cols * info.params[i].cols));
      std::lock_guard<std::mutex> lock(h5_mutex);
      scratch_step = -1;
      if (reader.read_act_gram(t, i, gram_scratch.data(), &err) != Status::ok) return nullptr;
      scratch_step = t;
      scratch_param = i;
    }
    return columns.gram(k, gram_scratch.data(), gram_piece);
  };
  double t_gather = 0;

  Progress progress(steps, o.quiet);
  std::vector<double> next_row(np), align_row(np);
  // Step t's recorded max logits, read when some run clips (one small HDF5 read per step).
  const bool any_qk = std::any_of(runs.begin(), runs.end(), [](const Run& r) { return r.spec.qk; });
  std::vector<float> max_logits(any_qk ? std::size_t(info.max_logit_heads) : 0);
  for (std::int64_t t = 0; t < steps; ++t) {
    if (!cache.at(t, err)) return fail_run(err, tmp);
    if (any_qk) {
      std::lock_guard<std::mutex> lock(h5_mutex);
      if (reader.read_max_logits(t, 1, max_logits.data(), &err) != Status::ok) return fail_run(err, tmp);
    }
    const Clock::time_point t_cut = Clock::now();
    for (std::size_t k = 0; k < np; ++k) {
      const std::size_t i = columns.source(k);
      grad_of[k] = columns.gather(k, cache.grad(t, i), copies[k]);
      const float* sigma = columns.has_gram(k) ? cache.gram(t, i) : nullptr;
      gram_of[k] = sigma ? columns.gram(k, sigma, gram_copies[k]) : nullptr;
    }
    t_gather += seconds_since(t_cut);
    for (Run& run : runs) {
      Clock::time_point t0 = Clock::now();
      bool fed = true;
      if (run.feeds_grams) fed = run.runner->feed_grams([&](std::size_t i) { return gram_at(t, i); });
      if (!fed)
        return fail_run(err.empty() ? "step " + std::to_string(t) + ": cannot read an activation Gram" : err,
                        tmp);
      for (std::size_t i = 0; i < np; ++i)
        std::memcpy(run.work[i].data(), grad_of[i], sizes[i] * sizeof(float));
      run.t_feed += seconds_since(t0);
      t0 = Clock::now();
      const opt::StepReport rep = run.runner->step(run.pp, run.wp);
      run.t_step += seconds_since(t0);
      if (!rep)
        return fail_run("step " + std::to_string(t) + ", --optimizer " + run.spec.text + ": " + rep.message +
                            (rep.bad_param >= 0 ? " (parameter '" + ps[std::size_t(rep.bad_param)].name + "')"
                                                : std::string()),
                        tmp);
      // QK-clip of the updated parameters with the logits of the step's forward pass (the
      // recorded run's: open loop, as the gradients). All or nothing: a refused logit (NaN, ±Inf)
      // or factor fails the replay, which then leaves no output.
      if (run.spec.qk) {
        t0 = Clock::now();
        const opt::QkClipReport c = run.clip.apply(run.pp, max_logits);
        run.t_step += seconds_since(t0);
        if (!c)
          return fail_run("step " + std::to_string(t) + ", --optimizer " + run.spec.text + ": " + c.message +
                              (c.bad_head >= 0 ? " (entry " + std::to_string(c.bad_head) + " of /max_logits)"
                                               : std::string()),
                          tmp);
        run.qk_clipped += c.clipped_heads;
        run.qk_min_factor = std::min(run.qk_min_factor, c.min_factor);
      }
      t0 = Clock::now();
      run.un.resize(np);
      run.pn.resize(np);
      for (std::size_t i = 0; i < np; ++i)  // one pass over both (a plain loop: no kernel launches)
        squared_norms(run.work[i].data(), run.params[i].data(), sizes[i], run.un[i], run.pn[i]);
      run.runner->observe(run.oe, run.p);
      run.oe_mean.add(run.oe);
      // Descent diagnostics of D_t = −u_t (docs/replay-format.md, "Replay output").
      run.gd.assign(np, nan);
      run.cos.assign(np, nan);
      run.phi.assign(np, nan);
      std::fill(next_row.begin(), next_row.end(), nan);
      std::fill(align_row.begin(), align_row.end(), nan);
      if (o.diagnostics) {
        for (std::size_t i = 0; i < np; ++i) {
          const float* g = grad_of[i];
          const float* u = run.work[i].data();
          const double gd = -dot(g, u, sizes[i]);
          const double gn = std::sqrt(dot(g, g, sizes[i]));
          run.gd[i] = gd;
          if (gn > 0.0 && run.un[i] > 0.0) run.cos[i] = gd / (gn * run.un[i]);
          if (const float* sg = gram_of[i]) {
            const double curv = gram_quadratic(u, columns.shape(i).rows, columns.shape(i).cols, sg);
            if (curv > 0.0) run.phi[i] = gd * gd / curv;
          }
          if (t > 0) {  // step t − 1's update against this step's gradient
            next_row[i] = -dot(g, run.previous_update[i].data(), sizes[i]);
            if (run.previous_gd[i] != 0.0) align_row[i] = next_row[i] / run.previous_gd[i];
          }
          std::memcpy(run.previous_update[i].data(), u, sizes[i] * sizeof(float));
        }
        run.previous_gd = run.gd;
        run.cos_mean.add(run.cos);
        run.phi_mean.add(run.phi);
        run.align_mean.add(align_row);
      }
      run.t_diag += seconds_since(t0);
      t0 = Clock::now();
      bool ok = run.update_norm.push(run.un.data(), h5_mutex) &&
                run.param_norm.push(run.pn.data(), h5_mutex) && run.ortho.push(run.oe.data(), h5_mutex) &&
                run.schatten_p.push(run.p.data(), h5_mutex) && run.grad_dot.push(run.gd.data(), h5_mutex) &&
                run.cosine.push(run.cos.data(), h5_mutex) && run.potential.push(run.phi.data(), h5_mutex);
      if (ok && t > 0)
        ok = run.next_dot.push(next_row.data(), h5_mutex) && run.alignment.push(align_row.data(), h5_mutex);
      if (ok && run.spec.qk) ok = run.qk_factor.push(run.clip.factors().data(), h5_mutex);
      if (ok && !run.trajectory.empty()) {
        std::lock_guard<std::mutex> lock(h5_mutex);
        for (std::size_t i = 0; ok && i < run.trajectory.size(); ++i)
          ok = io::h5::append_step(run.trajectory[i].get(), hsize_t(t) + 1, H5T_NATIVE_FLOAT,
                                   run.params[i].data());
      }
      run.t_write += seconds_since(t0);
      if (!ok)
        return fail_run("cannot write step " + std::to_string(t) + " to '" + tmp + "' (disk full?)", tmp);
    }
    progress.update(t + 1);
  }
  {
    // The last step has no next gradient.
    std::fill(next_row.begin(), next_row.end(), nan);
    for (Run& run : runs) {
      const Clock::time_point t0 = Clock::now();
      bool ok = run.next_dot.push(next_row.data(), h5_mutex) && run.alignment.push(next_row.data(), h5_mutex);
      for (Table* table : {&run.update_norm, &run.param_norm, &run.ortho, &run.schatten_p, &run.grad_dot,
                           &run.cosine, &run.potential, &run.next_dot, &run.alignment, &run.qk_factor})
        ok = ok && table->flush(h5_mutex);
      run.t_write += seconds_since(t0);
      if (!ok) return fail_run("cannot write the last steps to '" + tmp + "' (disk full?)", tmp);
    }
    std::lock_guard<std::mutex> lock(h5_mutex);
    for (Run& run : runs) {
      for (Table* table : {&run.update_norm, &run.param_norm, &run.ortho, &run.schatten_p, &run.grad_dot,
                           &run.cosine, &run.potential, &run.next_dot, &run.alignment, &run.qk_factor})
        table->close();
      run.trajectory.clear();
      run.group.reset();
    }
    if (!file.reset()) return fail_run("cannot close '" + tmp + "'", tmp);
  }
  const double total = seconds_since(t_start);

  // JSON summary.
  std::string j = "{\n  \"recording\": " + json_string(o.recording) +
                  ",\n  \"output\": " + json_string(o.out) + ",\n  \"steps\": " + std::to_string(steps) +
                  ",\n  \"schatten_version\": " + json_string(SCHATTEN_VERSION_STRING) +
                  ",\n  \"seconds\": {\"total\": " + json_number(total) +
                  ", \"read\": " + json_number(cache.read_seconds()) +
                  ", \"read_wait\": " + json_number(cache.wait_seconds()) +
                  ", \"gather\": " + json_number(t_gather) +
                  "},\n  \"split\": " + json_string(columns.signature()) +
                  ",\n  \"read_ahead\": " + (read_ahead ? "true" : "false") +
                  ",\n  \"cache\": {\"steps_per_block\": " + std::to_string(block) +
                  ", \"bytes_per_step\": " + std::to_string(step_bytes) + "},\n  \"runs\": [";
  for (std::size_t r = 0; r < runs.size(); ++r) {
    const Run& run = runs[r];
    const auto labels = run.runner->labels();
    j += std::string(r ? "," : "") + "\n    {\"spec\": " + json_string(run.spec.text) +
         ",\n     \"signature\": " + json_string(run.signature) +
         ",\n     \"seconds\": {\"optimizer\": " + json_number(run.t_step) +
         ", \"input\": " + json_number(run.t_feed) + ", \"diagnostics\": " + json_number(run.t_diag) +
         ", \"write\": " + json_number(run.t_write) + "}";
    if (run.spec.qk)
      j += ",\n     \"qk_clip\": {\"threshold\": " + json_number(run.spec.qk_options.threshold) +
           ", \"balance\": " + json_number(run.spec.qk_options.balance) +
           ", \"heads\": " + std::to_string(run.clip.heads()) +
           ", \"clipped\": " + std::to_string(run.qk_clipped) +
           ", \"min_factor\": " + json_number(run.qk_min_factor) + "}";
    j += ",\n     \"params\": [";
    for (std::size_t i = 0; i < np; ++i)
      j += std::string(i ? "," : "") + "\n       {\"name\": " + json_string(ps[i].name) +
           ", \"source\": " + json_string(info.params[columns.source(i)].name) +
           ", \"label\": " + json_string(labels[i]) + ", \"final_update_norm\": " + json_number(run.un[i]) +
           ", \"final_param_norm\": " + json_number(run.pn[i]) +
           ", \"final_schatten_p\": " + json_number(run.p[i]) +
           ", \"mean_orthogonality_error\": " + json_number(run.oe_mean.mean(i)) +
           ", \"mean_descent_cosine\": " + json_number(run.cos_mean.mean(i)) +
           ", \"mean_alignment\": " + json_number(run.align_mean.mean(i)) +
           ", \"mean_potential\": " + json_number(run.phi_mean.mean(i)) + "}";
    j += "]}";
  }
  j += "\n  ]\n}\n";
  // Both outputs complete in their temporary files, then renamed: the summary first, so that a
  // failure leaves neither (docs/replay-format.md: a failed replay leaves no output).
  std::FILE* jf = std::fopen(json_tmp.c_str(), "w");
  if (!jf || std::fputs(j.c_str(), jf) < 0 || std::fclose(jf) != 0)
    return fail_run("cannot write the JSON summary '" + json_tmp + "' (disk full?)", tmp);
  if (std::rename(json_tmp.c_str(), o.json.c_str()) != 0)
    return fail_run("cannot rename '" + json_tmp + "' to '" + o.json + "'", tmp);
  if (std::rename(tmp.c_str(), o.out.c_str()) != 0) {
    std::remove(o.json.c_str());
    return fail_run("cannot rename '" + tmp + "' to '" + o.out + "'", tmp);
  }
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

/// A small fixed parameter list (two matrices and a vector, with activation Grams) over which
/// the command line's optimizers are built before any file is opened.
io::RecordingInfo stand_in_parameters() {
  io::RecordingInfo info;
  for (const opt::ParamSpec& p :
       std::vector<opt::ParamSpec>{{"h.0.weight", {6, 4}}, {"h.0.bias", {6}}, {"h.1.weight", {4, 6}}}) {
    io::RecordedParam r;
    r.name = p.name;
    r.shape = p.shape;
    r.rows = opt::flatten(p.shape).rows;
    r.cols = opt::flatten(p.shape).cols;
    r.has_act_gram = true;
    info.params.push_back(r);
  }
  return info;
}

/// Exit status 2 (usage_error) when an --optimizer SPEC is malformed (build's `usage`: an
/// unknown key, a value that is not a number or not one of the choices), −1 otherwise. Each SPEC
/// is built over stand_in_parameters(), before the recording is opened, so that a malformed SPEC
/// is a bad command line whatever else would fail first (the recording, a cut, an earlier
/// SPEC the library refuses: they made it exit status 1 before, found by a fuzzer,
/// 2026-12-07). What the library refuses over the stand-ins is left to the real build (exit
/// status 1 there). Cost: one small partition per SPEC.
int check_specs(const Options& o) {
  const io::RecordingInfo info = stand_in_parameters();
  std::vector<opt::ParamSpec> ps;
  for (const io::RecordedParam& r : info.params)
    ps.push_back({r.name, r.shape});
  std::string err;
  for (const Spec& s : o.specs) {
    bool usage = false;
    if (build(s, ps, o.diagnostics, err, usage) == nullptr && usage) return usage_error(err);
  }
  return -1;
}

/// The command-line half of schatten-replay without any file: parses `argv` as main() does,
/// cuts (--split) a small fixed parameter list (two matrices, a vector) and builds every
/// optimizer it names over the columns. Returns parse_args's exit status when it stops (0 for
/// --help, 2 for a usage error), 2 when an optimizer specification is at fault (build's `usage`),
/// 1 when a cut or a QK-clip layer is refused (the message on stderr), −1 when everything is
/// valid. The fuzz target
/// tests/fuzz/fuzz_replay_cli.cpp calls it (Kokkos must be initialised).
int schatten_replay_check_command_line(int argc, char** argv) {
  Options o;
  if (const int rc = parse_args(argc, argv, o); rc >= 0) return rc;
  if (const int rc = check_specs(o); rc >= 0) return rc;
  const io::RecordingInfo info = stand_in_parameters();
  Columns columns;
  std::string err;
  if (!columns.build(info, o.splits, err)) {
    std::fprintf(stderr, "schatten-replay: %s\n", err.c_str());
    return 1;
  }
  for (const Spec& s : o.specs) {
    bool usage = false;
    if (build(s, columns.specs(), o.diagnostics, err, usage) == nullptr) {
      std::fprintf(stderr, "schatten-replay: %s\n", err.c_str());
      return usage ? 2 : 1;
    }
  }
  std::vector<opt::QkLayer> qk;
  if (!o.qk_layers.empty() && !qk_layers(o.qk_layers, columns.specs(), qk, err)) {
    std::fprintf(stderr, "schatten-replay: %s\n", err.c_str());
    return 1;
  }
  for (const Spec& s : o.specs) {
    opt::QkClip clip(qk, s.qk_options);
    const opt::StepReport c = s.qk ? clip.init(columns.specs()) : opt::StepReport{};
    if (!c) {
      std::fprintf(stderr, "schatten-replay: --optimizer %s: %s\n", s.text.c_str(), c.message);
      return 1;
    }
  }
  return -1;
}

/// The whole tool: initialises Kokkos, parses `argv` and replays. replay_main.cpp's main() calls
/// it; kept apart so that this file is compiled once for the tool and the fuzz target.
int schatten_replay_main(int argc, char** argv) {
  // HDF5 shuts down at exit only when this function asks (below): a file whose close failed
  // (a full disk) stays open inside HDF5 1.10 for good, and HDF5's own exit handler then loops
  // and crashes (exit 139 instead of 1; docs/reliability.md, Finding 39). Before any HDF5 call.
  H5dont_atexit();
  struct CloseHdf5 {
    ~CloseHdf5() {
      if (H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL) == 0) H5close();  // else the OS cleans up
    }
  } close_hdf5;
  // Kokkos reads --help too, and its initialize() printed its own page of options before the
  // tool's usage; the usage needs no Kokkos, so with --help or -h the runtime is left to start
  // on first use (a plain-array call initialises it then).
  const bool help = std::any_of(argv + 1, argv + argc, [](const char* a) {
    return !std::strcmp(a, "--help") || !std::strcmp(a, "-h");
  });
  std::unique_ptr<schatten::Runtime> runtime;
  if (!help) runtime = std::make_unique<schatten::Runtime>(argc, argv);
  Options o;
  std::string tmp;
  try {
    if (const int rc = parse_args(argc, argv, o); rc >= 0) return rc;
    if (const int rc = check_specs(o); rc >= 0) return rc;
    tmp = o.out + ".tmp";
    return replay(o);
  } catch (const std::bad_alloc&) {
    // Any allocation of the replay (the recording's blocks, the optimizers' states, the
    // diagnostics; the read-ahead thread's arrive through its future). The output's handles
    // were closed by the unwinding, so the partial output goes, as for any failed replay
    // (docs/replay-format.md), and the exit status is a failure's, not an abort.
    std::fputs("schatten-replay: out of memory\n", stderr);
    if (!tmp.empty()) std::remove(tmp.c_str());
    return 1;
  } catch (const std::length_error&) {
    // A vector asked for more elements than it can hold (sizes from a hostile recording that
    // passed the reader's checks): the same failure as bad_alloc, not an abort (Finding 44).
    std::fputs("schatten-replay: out of memory (a size beyond what can be allocated)\n", stderr);
    if (!tmp.empty()) std::remove(tmp.c_str());
    return 1;
  }
}
