// SPDX-License-Identifier: Apache-2.0
/// \file
/// The model of docs/examples/train_mlp.cpp, shared with bench/mlp_rules.cpp: a 64-128-10
/// MLP (ReLU hidden layer) on the handwritten digits of data/digits.csv (8×8 pixels in 0…16,
/// label first), its cross-entropy with gradient, and its accuracy. Plain loops in float: the
/// point is the optimizer, not the model.
#pragma once

#include <schatten/schatten.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace digits {
using schatten::index_t;
namespace opt = schatten::optim;

constexpr index_t kIn = 64, kHidden = 128, kOut = 10;

struct Data {
  std::vector<float> x;  // n × 64, pixels scaled to [0, 1]
  std::vector<int> y;
  index_t n = 0;
};

inline bool load(const std::string& path, Data& d) {
  std::ifstream f(path);
  for (std::string line; std::getline(f, line);) {
    if (line.empty() || line[0] == '#') continue;
    std::stringstream ss(line);
    std::string v;
    std::getline(ss, v, ',');
    d.y.push_back(std::stoi(v));
    for (index_t j = 0; j < kIn && std::getline(ss, v, ','); ++j)
      d.x.push_back(std::stof(v) / 16.0f);
    ++d.n;
  }
  return d.n > 0 && d.x.size() == static_cast<std::size_t>(d.n * kIn);
}

/// The model's parameters, in the order of `specs()`.
struct Mlp {
  std::vector<float> w1 = std::vector<float>(kHidden * kIn), b1 = std::vector<float>(kHidden),
                     w2 = std::vector<float>(kOut * kHidden), b2 = std::vector<float>(kOut);
  static std::vector<opt::ParamSpec> specs() {
    return {{"fc1.weight", {kHidden, kIn}},
            {"fc1.bias", {kHidden}},
            {"head.weight", {kOut, kHidden}},
            {"head.bias", {kOut}}};
  }
  std::vector<float*> pointers() { return {w1.data(), b1.data(), w2.data(), b2.data()}; }
};

/// out = W in + b for a layer W (n × m, row-major), each sum in float starting from b.
inline void dense(const std::vector<float>& w, const std::vector<float>& b, const float* in, index_t n,
                  index_t m, float* out) {
  for (index_t i = 0; i < n; ++i) {
    float a = b[i];
    for (index_t j = 0; j < m; ++j)
      a += w[i * m + j] * in[j];
    out[i] = a;
  }
}

/// out = max(W in + b, 0) (dense() then ReLU).
inline void dense_relu(const std::vector<float>& w, const std::vector<float>& b, const float* in, index_t n,
                       index_t m, float* out) {
  dense(w, b, in, n, m, out);
  for (index_t i = 0; i < n; ++i)
    out[i] = std::max(out[i], 0.0f);
}

/// The hidden layer of one sample xs (64 floats): h = max(W₁ xs + b₁, 0), into h (128 floats).
inline void hidden_layer(const Mlp& m, const float* xs, float* h) {
  dense_relu(m.w1, m.b1, xs, kHidden, kIn, h);
}

/// −log softmax(z)_label for the kOut logits z, shifted by their maximum (the exponentials in
/// double). When dz is non-null it receives (softmax(z) − onehot(label))/n, the gradient of the
/// batch mean over n samples; dz may be z itself.
inline double softmax_cross_entropy(const float* z, int label, index_t n, float* dz) {
  float top = -1e30f;
  for (index_t k = 0; k < kOut; ++k)
    top = std::max(top, z[k]);
  double sum = 0.0;
  for (index_t k = 0; k < kOut; ++k)
    sum += std::exp(double(z[k] - top));
  const double loss = std::log(sum) - double(z[label] - top);
  if (dz)
    for (index_t k = 0; k < kOut; ++k)
      dz[k] = float((std::exp(double(z[k] - top)) / sum - (k == label ? 1.0 : 0.0)) / double(n));
  return loss;
}

/// Mean cross-entropy over rows [0, n) of a batch and its gradient (ReLU hidden layer).
inline double loss_and_grad(Mlp& m, const float* x, const int* y, index_t n, Mlp* g) {
  if (g) *g = Mlp{};
  std::vector<float> h(kHidden), p(kOut);
  double loss = 0.0;
  for (index_t s = 0; s < n; ++s) {
    const float* xs = x + s * kIn;
    hidden_layer(m, xs, h.data());
    dense(m.w2, m.b2, h.data(), kOut, kHidden, p.data());
    loss += softmax_cross_entropy(p.data(), y[s], n, g ? p.data() : nullptr);  // p ← dz with g
    if (!g) continue;
    for (index_t k = 0; k < kOut; ++k) {
      g->b2[k] += p[k];
      for (index_t i = 0; i < kHidden; ++i)
        g->w2[k * kHidden + i] += p[k] * h[i];
    }
    for (index_t i = 0; i < kHidden; ++i) {
      if (h[i] <= 0.0f) continue;
      float dh = 0.0f;
      for (index_t k = 0; k < kOut; ++k)
        dh += p[k] * m.w2[k * kHidden + i];
      g->b1[i] += dh;
      for (index_t j = 0; j < kIn; ++j)
        g->w1[i * kIn + j] += dh * xs[j];
    }
  }
  return loss / double(n);
}

inline double accuracy(Mlp& m, const Data& d) {
  index_t right = 0;
  std::vector<float> h(kHidden);
  for (index_t s = 0; s < d.n; ++s) {
    hidden_layer(m, d.x.data() + s * kIn, h.data());
    int best = 0;
    float bz = -1e30f;
    for (index_t k = 0; k < kOut; ++k) {
      float z = m.b2[k];
      for (index_t i = 0; i < kHidden; ++i)
        z += m.w2[k * kHidden + i] * h[i];
      if (z > bz) bz = z, best = int(k);
    }
    right += best == d.y[s];
  }
  return double(right) / double(d.n);
}

}  // namespace digits
