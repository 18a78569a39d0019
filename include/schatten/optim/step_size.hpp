// SPDX-License-Identifier: Apache-2.0
/// \file
/// Distance-aware step sizes for normalised directions (algorithms.md §4c, DA/SC-Muon). The
/// papers' exact rules are not public [U]; these are the proposals of §4c [P], documented in
/// docs/optim.md. Both produce the final update −η_t·D_t (they replace ScaleByLearningRate) and
/// cap η_t by η_max.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>

#include "schatten/core/workspace.hpp"
#include "schatten/kernels/polar.hpp"
#include "schatten/optim/chain.hpp"
#include "schatten/optim/rule.hpp"
#include "schatten/optim/transforms.hpp"

namespace schatten::optim {

/// DA-Muon [P] (DoG-style "radius explored"): with W₀ the parameter at the first step,
///   r̄_t = max(r_ε, max_{s≤t} ‖W_s − W₀‖_F / √min(r, c)),   η_t = min(η_max, r̄_t / √(t + 1)),
/// u ← −η_t·u. The Frobenius distance divided by √min(r, c) is comparable to a spectral distance
/// for a full-rank difference ([P], one pass over W per step instead of power iterations).
/// Place it after the direction (Orthogonalize) and use no other learning rate.
struct DistanceAwareStep {
  static constexpr const char* name = "distance_aware_step";
  double eta_max = 0.02;
  double r_eps = 1e-3;

  struct State {
    std::int64_t count = 0;
    double rbar = 0.0;  ///< r̄_t (0 before the first step)
    Buffer anchor;      ///< W₀, allocated at init, filled at the first update
  };
  State init(const BlockShape& s) const {
    return State{0, 0.0, Buffer(static_cast<std::size_t>(s.size()), 0.0f)};
  }

  /// η for the (0-based) step t given the running radius.
  static double eta(double eta_max, double rbar, std::int64_t t) {
    return std::min(eta_max, rbar / std::sqrt(double(t) + 1.0));
  }
  Status update(Block u, State& s, ConstBlock p) const {
    const auto n = static_cast<std::size_t>(u.size());
    if (s.anchor.size() != n || p.size() != u.size()) return Status::invalid_argument;
    if (s.count == 0) std::copy(p.data, p.data + n, s.anchor.begin());
    double ss = 0.0;
    for (std::size_t k = 0; k < n; ++k) {
      const double d = double(p.data[k]) - double(s.anchor[k]);
      ss += d * d;
    }
    const double r = std::sqrt(ss / double(std::max<index_t>(1, std::min(u.rows, u.cols))));
    s.rbar = std::max({s.rbar, r_eps, r});
    scale(u, static_cast<float>(-eta(eta_max, s.rbar, s.count)));
    ++s.count;
    return Status::ok;
  }
  template <class V>
  friend void visit_fields(V& v, State& s) {
    v("count", s.count);
    v("rbar", s.rbar);
    v("anchor", s.anchor);
  }
  std::string config() const { return Signature(name).add("eta_max", eta_max).add("r_eps", r_eps).str(); }
};

/// SC-Muon [P]: momentum (EMA, Nesterov), D_t = polar(m_t), and the step
///   κ_t = clip(⟨g_t, D_t⟩ / ⟨m_t, D_t⟩, 0, 1),   η_t = η_max·κ_t,   u ← −η_t·D_t,
/// where ⟨m_t, D_t⟩ = ‖m_t‖_* for the exact polar factor (so κ_t is the share of the momentum's
/// descent that the current gradient confirms) and m_t is the vector orthogonalised (the Nesterov
/// output). κ_t = 0 — no step — when the direction does not descend for the current gradient.
/// One rule, because the certificate needs the raw gradient and the momentum.
struct ScaleCalibratedDirection {
  static constexpr const char* name = "scale_calibrated_direction";
  static constexpr bool may_fail = true;
  double beta = 0.95;
  bool nesterov = true;
  double eta_max = 0.02;
  PolarOptions polar{};

  struct State {
    std::int64_t count = 0;
    Buffer mu;         ///< momentum
    double kappa = 0;  ///< κ of the last step (observable)
    /// Scratch, allocated at init and not part of the checkpoint: g_t, the next momentum (the
    /// state changes only once the polar call succeeded) and the vector that is orthogonalised.
    Buffer gradient, next_mu, direction_in;
    std::shared_ptr<Workspace> workspace = std::make_shared<Workspace>();
  };
  State init(const BlockShape& s) const {
    const auto n = static_cast<std::size_t>(s.size());
    State st;
    st.mu.assign(n, 0.0f);
    st.gradient.assign(n, 0.0f);
    st.next_mu.assign(n, 0.0f);
    st.direction_in.assign(n, 0.0f);
    st.workspace->reserve(polar_workspace_bytes(s.rows, s.cols, 1, polar, Precision::fp32));
    return st;
  }
  Status update(Block u, State& s, ConstBlock) const {
    const auto n = static_cast<std::size_t>(u.size());
    if (s.mu.size() != n || s.gradient.size() != n || s.next_mu.size() != n || s.direction_in.size() != n)
      return Status::invalid_argument;
    const float b = static_cast<float>(beta);
    for (std::size_t k = 0; k < n; ++k) {
      s.gradient[k] = u.data[k];
      s.next_mu[k] = s.mu[k];
      u.data[k] = TraceMomentum::step(u.data[k], s.next_mu[k], b, nesterov, TraceMomentum::Form::ema);
      s.direction_in[k] = u.data[k];
    }
    const PolarReport r = schatten::polar(MatrixRef<const float>(u), u, polar, s.workspace.get());
    if (r.status != Status::ok) {  // nothing of the state changed; give the gradient back
      std::copy(s.gradient.begin(), s.gradient.end(), u.data);
      return r.status;
    }
    double md = 0.0, gd = 0.0;
    for (std::size_t k = 0; k < n; ++k) {
      md += double(s.direction_in[k]) * double(u.data[k]);
      gd += double(s.gradient[k]) * double(u.data[k]);
    }
    s.kappa = md > 0.0 ? std::clamp(gd / md, 0.0, 1.0) : 0.0;
    scale(u, static_cast<float>(-eta_max * s.kappa));
    s.mu.swap(s.next_mu);
    ++s.count;
    return Status::ok;
  }
  template <class V>
  friend void visit_fields(V& v, State& s) {
    v("count", s.count);
    v("mu", s.mu);
    v("kappa", s.kappa);
  }
  std::string config() const {
    return Signature(name)
        .add("beta", beta)
        .add("nesterov", nesterov)
        .add("eta_max", eta_max)
        .add("polar", polar_config(polar))
        .str();
  }
};

/// DA-Muon: EMA Nesterov momentum → orthogonalise → distance-aware step (no other lr).
struct DaMuonOptions {
  double eta_max = 0.02;
  double r_eps = 1e-3;
  double momentum = 0.95;
  bool nesterov = true;
  PolarOptions polar = PolarOptions{};
};
inline auto da_muon(const DaMuonOptions& o = {}) {
  return chain(TraceMomentum{o.momentum, o.nesterov, TraceMomentum::Form::ema}, Orthogonalize{o.polar},
               DistanceAwareStep{o.eta_max, o.r_eps});
}

/// SC-Muon: the certificate-scaled step of ScaleCalibratedDirection.
struct ScMuonOptions {
  double eta_max = 0.02;
  double momentum = 0.95;
  bool nesterov = true;
  PolarOptions polar = PolarOptions{};
};
inline auto sc_muon(const ScMuonOptions& o = {}) {
  return chain(ScaleCalibratedDirection{o.momentum, o.nesterov, o.eta_max, o.polar});
}

}  // namespace schatten::optim
