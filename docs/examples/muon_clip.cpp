// SPDX-License-Identifier: Apache-2.0
/// \file
/// Example (compiled and run by the tests): MuonClip, Kimi K2's recipe, on a toy attention layer
/// whose loss rewards large logits — the "max-logit explosion" QK-clip exists for. Grouped-query
/// attention (4 query heads, 2 key heads) with separate q_proj/k_proj weights as torch.nn.Linear
/// stores them. The loss L = −mean_i Σ_h q_iʰ·k_iᵍ⁽ʰ⁾/√d pushes every head's logits up without
/// bound; plain Muon lets the largest logit grow step after step, MuonClip (the same Muon, then
/// QkClip::apply with the max logits of the step's forward pass, as the report's Algorithm 1
/// does) holds it near τ: the clip scales the updated weights by τ over the logits the forward
/// pass saw, so the next forward pass sees τ plus about one step's growth. The program prints
/// both trajectories and fails unless the unclipped run passes 2τ and no forward pass of the
/// clipped run reaches 1.5τ.
#include <schatten/optim/presets.hpp>
#include <schatten/optim/qk_clip.hpp>
#include <schatten/schatten.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

namespace {
namespace opt = schatten::optim;
constexpr int kT = 64, kD = 32, kH = 4, kG = 2, kd = 8;  // tokens, width, heads, key heads, head dim
constexpr int kSteps = 100;
constexpr double kTau = 30.0;  // the clip threshold of this toy (K2: 100)

struct Model {
  std::vector<float> wq = std::vector<float>(kH * kd * kD), wk = std::vector<float>(kG * kd * kD);
};

/// Row i of the inputs: a fixed pseudo-random vector.
std::vector<double> inputs() {
  schatten::Rng rng(7);
  std::vector<double> x(kT * kD);
  for (double& v : x)
    v = rng.normal();
  return x;
}

/// Projection of token i by rows [r0, r0 + kd) of w (kd values).
void project(const std::vector<float>& w, int r0, const double* x, double* out) {
  for (int a = 0; a < kd; ++a) {
    out[a] = 0.0;
    for (int c = 0; c < kD; ++c)
      out[a] += double(w[(r0 + a) * kD + c]) * x[c];
  }
}

/// Each query head's largest logit max_{i,j} q_iʰ·k_jᵍ/√d: what the attention's forward pass
/// reports to the optimizer.
std::vector<float> max_logits(const Model& m, const std::vector<double>& x) {
  std::vector<float> s(kH);
  std::vector<double> q(kT * kd), k(kT * kd);
  for (int h = 0; h < kH; ++h) {
    const int g = h / (kH / kG);
    for (int i = 0; i < kT; ++i) {
      project(m.wq, h * kd, &x[i * kD], &q[i * kd]);
      project(m.wk, g * kd, &x[i * kD], &k[i * kd]);
    }
    double best = -1e300;
    for (int i = 0; i < kT; ++i)
      for (int j = 0; j < kT; ++j) {
        double v = 0.0;
        for (int a = 0; a < kd; ++a)
          v += q[i * kd + a] * k[j * kd + a];
        best = std::max(best, v / std::sqrt(double(kd)));
      }
    s[h] = static_cast<float>(best);
  }
  return s;
}

/// ∂L/∂W for L = −(1/(T√d)) Σ_h Σ_i q_iʰ·k_iᵍ⁽ʰ⁾: −c·W_k^g XᵀX for query head h, −c·Σ_{h∈g} W_q^h XᵀX
/// for key head g.
void gradients(const Model& m, const std::vector<double>& xtx, std::vector<float>& gq,
               std::vector<float>& gk) {
  const double c = 1.0 / (kT * std::sqrt(double(kd)));
  std::fill(gq.begin(), gq.end(), 0.0f);
  std::fill(gk.begin(), gk.end(), 0.0f);
  for (int h = 0; h < kH; ++h) {
    const int g = h / (kH / kG);
    for (int a = 0; a < kd; ++a)
      for (int col = 0; col < kD; ++col) {
        double tq = 0.0, tk = 0.0;
        for (int l = 0; l < kD; ++l) {
          tq += double(m.wk[(g * kd + a) * kD + l]) * xtx[l * kD + col];
          tk += double(m.wq[(h * kd + a) * kD + l]) * xtx[l * kD + col];
        }
        gq[(h * kd + a) * kD + col] += static_cast<float>(-c * tq);
        gk[(g * kd + a) * kD + col] += static_cast<float>(-c * tk);
      }
  }
}
}  // namespace

int main(int argc, char** argv) {
  schatten::Runtime runtime(argc, argv);
  const std::vector<opt::ParamSpec> params = {{"layers.0.self_attn.q_proj.weight", {kH * kd, kD}},
                                              {"layers.0.self_attn.k_proj.weight", {kG * kd, kD}}};
  const std::vector<double> x = inputs();
  std::vector<double> xtx(kD * kD, 0.0);
  for (int i = 0; i < kT; ++i)
    for (int a = 0; a < kD; ++a)
      for (int b = 0; b < kD; ++b)
        xtx[a * kD + b] += x[i * kD + a] * x[i * kD + b];

  // Muon as Kimi K2 runs it: Moonlight's 0.2·√max(r, c) scale and decoupled weight decay.
  opt::MuonOptions mo;
  mo.shape = opt::ScaleByShape::Rule::moonlight;
  mo.weight_decay = 0.1;
  mo.lr = opt::Schedule::constant(0.05);
  // The clip: per query group, η = min(1, τ / the group's largest logit); q by √η, k by √η.
  opt::QkClip clip({opt::qk_separate("layers.0", "layers.0.self_attn.q_proj.weight",
                                     "layers.0.self_attn.k_proj.weight", kH, kG, kd)},
                   {kTau, 0.5});
  if (opt::StepReport r = clip.init(params); !r) {
    std::fprintf(stderr, "%s\n", r.message);
    return 1;
  }

  Model start;
  schatten::Rng rng(3);
  for (float& v : start.wq)
    v = static_cast<float>(0.05 * rng.normal());
  for (float& v : start.wk)
    v = static_cast<float>(0.05 * rng.normal());

  double plain_max = 0.0, clipped_after = 0.0;
  std::vector<std::vector<float>> trajectory(2);
  for (int run = 0; run < 2; ++run) {
    const bool with_clip = run == 1;
    Model m = start;
    auto muon = opt::partition(params, {"muon", "muon"}, opt::route("muon", opt::muon(mo)));
    if (opt::StepReport r = muon.init(); !r) {
      std::fprintf(stderr, "%s\n", r.message);
      return 1;
    }
    std::vector<float> gq(m.wq.size()), gk(m.wk.size());
    for (int step = 0; step < kSteps; ++step) {
      const std::vector<float> s = max_logits(m, x);  // the forward pass
      trajectory[static_cast<std::size_t>(run)].push_back(*std::max_element(s.begin(), s.end()));
      gradients(m, xtx, gq, gk);  // the backward pass
      if (opt::StepReport r = muon.step({m.wq.data(), m.wk.data()}, {gq.data(), gk.data()}); !r) {
        std::fprintf(stderr, "step %d: %s\n", step, r.message);
        return 1;
      }
      if (!with_clip) continue;
      const opt::QkClipReport c = clip.apply({m.wq.data(), m.wk.data()}, s);
      if (!c) {
        std::fprintf(stderr, "clip %d: %s\n", step, c.message);
        return 1;
      }
    }
    const std::vector<float> s = max_logits(m, x);
    const double last = *std::max_element(s.begin(), s.end());
    if (with_clip)
      clipped_after = last;
    else
      plain_max = last;
  }
  std::printf("step  max logit: Muon   MuonClip (tau = %.0f)\n", kTau);
  for (std::size_t t = 0; t < trajectory[0].size(); t += 10)
    std::printf("%4zu  %15.2f  %9.2f\n", t, double(trajectory[0][t]), double(trajectory[1][t]));
  std::printf("after %d steps: Muon %.2f, MuonClip %.2f\n", kSteps, plain_max, clipped_after);
  // A clip scales the logits of the step that reported them to τ; the next Muon step moves the
  // weights by at most lr·0.2·√max(r, c) in spectral norm, so the logit seen by the next forward
  // pass may exceed τ by that step's growth. Criterion: the unclipped run explodes past 2τ,
  // the clipped one stays below 1.5τ throughout.
  double worst = 0.0;
  for (float v : trajectory[1])
    worst = std::max(worst, double(v));
  std::printf("largest logit any forward pass of MuonClip saw: %.2f\n", worst);
  return plain_max > 2 * kTau && worst < 1.5 * kTau ? 0 : 1;
}
