// SPDX-License-Identifier: Apache-2.0
/// \file
/// Example (compiled and run by the tests): Muon on a fused QKV projection, orthogonalised as
/// one matrix and as its Q, K and V pieces (optim/split.hpp). The weight is stored as a GPT-2
/// Conv1D stores it, (d, 3d) with Q, K and V side by side in its columns, so the pieces are
/// column pieces. After one step from the same gradient the example measures how far the update
/// of each piece is from a multiple of an orthogonal matrix: cut, each piece is orthogonalised
/// on its own (the residual of Muon's NS5 alone); fused, only the whole (d, 3d) update has
/// orthonormal rows, and its three blocks share them (B_q B_qᵀ + B_k B_kᵀ + B_v B_vᵀ = I), so
/// each block is far from orthogonal. The cut update must be the more orthogonal one.
#include <schatten/optim/presets.hpp>
#include <schatten/optim/split.hpp>
#include <schatten/schatten.hpp>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

namespace {
namespace opt = schatten::optim;
constexpr int kD = 48;  // model width: c_attn is kD × 3kD

/// RMS distance of the kD × kD column block `b` of the kD × 3kD update u from the orthogonal
/// matrix nearest in Gram: ‖BᵀB / (tr(BᵀB)/kD) − I‖_F / √kD (0 for a multiple of an orthogonal
/// matrix).
double block_error(const std::vector<float>& u, int b) {
  std::vector<double> g(kD * kD, 0.0);
  for (int r = 0; r < kD; ++r)
    for (int i = 0; i < kD; ++i)
      for (int j = 0; j < kD; ++j)
        g[i * kD + j] += double(u[r * 3 * kD + b * kD + i]) * double(u[r * 3 * kD + b * kD + j]);
  double trace = 0.0;
  for (int i = 0; i < kD; ++i)
    trace += g[i * kD + i];
  double e = 0.0;
  for (int i = 0; i < kD; ++i)
    for (int j = 0; j < kD; ++j)
      e += std::pow(g[i * kD + j] / (trace / kD) - (i == j ? 1.0 : 0.0), 2);
  return std::sqrt(e / kD);
}
}  // namespace

int main(int argc, char** argv) {
  schatten::Runtime runtime(argc, argv);
  const std::vector<opt::ParamSpec> params = {{"h.0.attn.c_attn.weight", {kD, 3 * kD}},
                                              {"h.0.attn.c_attn.bias", {3 * kD}},
                                              {"h.0.attn.c_proj.weight", {kD, kD}}};
  // The cut: the columns of c_attn into three equal pieces named q, k and v.
  const opt::SplitLayout layout(params, {{"h.0.attn.c_attn.weight", 1, {}, 3, {"q", "k", "v"}}});
  if (!layout) {
    std::fprintf(stderr, "%s\n", layout.message().c_str());
    return 1;
  }
  auto cut = opt::split_partition(
      layout, opt::partition(layout.pieces(), opt::propose_labels(layout.pieces()),
                             opt::route("muon", opt::muon()), opt::route("adamw", opt::adamw())));
  auto fused = opt::partition(params, opt::propose_labels(params), opt::route("muon", opt::muon()),
                              opt::route("adamw", opt::adamw()));
  for (const opt::StepReport& r : {cut.init(), fused.init()})
    if (!r) {
      std::fprintf(stderr, "init: %s\n", r.message);
      return 1;
    }
  std::printf("pieces:");
  for (const opt::ParamSpec& p : layout.pieces())
    std::printf(" %s", p.name.c_str());
  std::printf(
      "\nbatched groups of the cut optimizer: %zu (the q, k, v pieces and c_proj: %zu matrices)\n",
      cut.partition().batch_groups().size(),
      cut.partition().batch_groups().empty() ? std::size_t(0) : cut.partition().batch_groups()[0].size());

  // The same parameters and gradient for both; the update is W1 − W0.
  schatten::Rng rng(2026);
  std::vector<std::vector<float>> w0, g0;
  for (const opt::ParamSpec& p : params) {
    std::vector<float> w(static_cast<std::size_t>(opt::flatten(p.shape).size())), g(w.size());
    for (float& x : w)
      x = static_cast<float>(0.02 * rng.normal());
    for (float& x : g)
      x = static_cast<float>(rng.normal());
    w0.push_back(w);
    g0.push_back(g);
  }
  double err[2][3];
  for (int which = 0; which < 2; ++which) {
    std::vector<std::vector<float>> w = w0, g = g0;
    std::vector<float*> wp, gp;
    for (std::size_t i = 0; i < params.size(); ++i) {
      wp.push_back(w[i].data());
      gp.push_back(g[i].data());
    }
    const opt::StepReport r = which == 0 ? cut.step(wp, gp) : fused.step(wp, gp);
    if (!r) {
      std::fprintf(stderr, "step: %s\n", r.message);
      return 1;
    }
    std::vector<float> u(w[0].size());
    for (std::size_t k = 0; k < u.size(); ++k)
      u[k] = w[0][k] - w0[0][k];
    for (int b = 0; b < 3; ++b)
      err[which][b] = block_error(u, b);
  }
  std::printf("distance of each block's update from an orthogonal matrix (RMS of the normalised Gram):\n");
  std::printf("  block   cut (q, k, v apart)   fused (one 48 x 144 matrix)\n");
  bool better = true;
  for (int b = 0; b < 3; ++b) {
    std::printf("  %c       %.3f                 %.3f\n", "qkv"[b], err[0][b], err[1][b]);
    better = better && err[0][b] < 0.5 * err[1][b];
  }
  if (!better) {
    std::fprintf(stderr, "the cut update should be the more orthogonal one\n");
    return 1;
  }
  // A cut that does not fit is refused with a message, before any state exists.
  const opt::SplitLayout bad(params, {{"h.0.attn.c_attn.weight", 1, {}, 5, {}}});
  std::printf("a bad cut: %s\n", bad.message().c_str());
  return bad ? 1 : 0;
}
