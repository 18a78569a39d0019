// SPDX-License-Identifier: Apache-2.0
/// \file
/// A character-level MLP language model for bench/mlp_rules.cpp: the second, larger model on
/// which the adaptive rules are trained (docs/benchmarks/cpu-mlp-rules.md). Bengio et al.'s
/// neural probabilistic LM at byte level: the 8 previous characters, each embedded in 24
/// numbers, are concatenated (192) and go through two ReLU layers of 512 to the logits of the
/// next character (128 ASCII codes). The hidden matrices are 512 × 192 and 512 × 512, the shapes
/// where Muon's orthogonalisation does its work; the embedding and the output layer are trained by
/// AdamW, as in Muon's own recipe.
///
/// The text is every regular file of a directory, read in name order; the last file is held out.
/// The default, /usr/share/common-licenses, is in Debian's essential base-files package, so every
/// machine that builds the library has it (Debian 12: 14 files, 237 KB, MPL-2.0 held out).
///
/// The products go through Eigen in float (row-major maps over the parameters); one step of
/// 256 windows costs about 0.65 GFLOP forward and backward.
#pragma once

#include <schatten/schatten.hpp>

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace charlm {
using schatten::index_t;
namespace opt = schatten::optim;

constexpr index_t kContext = 8, kEmbed = 24, kIn = kContext * kEmbed, kHidden = 512, kVocab = 128;

struct Text {
  std::vector<std::uint8_t> train, held_out;  // ASCII codes; anything else becomes '?'
  std::string held_out_name;
  std::uint64_t hash = 0;  // FNV-1a of every byte read, in order: which text was trained on
};

/// Reads the regular files of `dir` in name order (symbolic links skipped, so an alias is not
/// read twice); the last one is held out. False when fewer than two files or either part is
/// shorter than 4096 characters.
inline bool load(const std::string& dir, Text& t) {
  namespace fs = std::filesystem;
  std::error_code ec;
  std::vector<fs::path> files;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (!it->is_symlink(ec) && it->is_regular_file(ec)) files.push_back(it->path());
  if (ec || files.size() < 2) return false;
  std::sort(files.begin(), files.end());
  t.hash = 14695981039346656037ull;
  for (std::size_t f = 0; f < files.size(); ++f) {
    std::ifstream in(files[f], std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (!in.good() && !in.eof()) return false;
    auto& part = f + 1 < files.size() ? t.train : t.held_out;
    for (const char c : bytes) {
      const auto b = static_cast<std::uint8_t>(c);
      t.hash = (t.hash ^ b) * 1099511628211ull;
      part.push_back(b < kVocab ? b : std::uint8_t('?'));
    }
  }
  t.held_out_name = files.back().filename().string();
  return t.train.size() >= 4096 && t.held_out.size() >= 4096;
}

/// The model's parameters, in the order of `specs()`; matrices row-major (out × in).
struct Model {
  std::vector<float> embed = std::vector<float>(kVocab * kEmbed), w1 = std::vector<float>(kHidden * kIn),
                     b1 = std::vector<float>(kHidden), w2 = std::vector<float>(kHidden * kHidden),
                     b2 = std::vector<float>(kHidden), head = std::vector<float>(kVocab * kHidden),
                     bh = std::vector<float>(kVocab);
  static std::vector<opt::ParamSpec> specs() {
    return {{"embed.weight", {kVocab, kEmbed}},
            {"fc1.weight", {kHidden, kIn}},
            {"fc1.bias", {kHidden}},
            {"fc2.weight", {kHidden, kHidden}},
            {"fc2.bias", {kHidden}},
            {"head.weight", {kVocab, kHidden}},
            {"head.bias", {kVocab}}};
  }
  /// The group of each parameter, for opt::partition: the two hidden matrices "matrix", the rest
  /// "adamw".
  static std::vector<std::string> groups() {
    return {"adamw", "matrix", "adamw", "matrix", "adamw", "adamw", "adamw"};
  }
  std::vector<float*> pointers() {
    return {embed.data(), w1.data(), b1.data(), w2.data(), b2.data(), head.data(), bh.data()};
  }
  /// Embedding N(0, 1); the layers N(0, 2/fan_in) (He), the head N(0, 1/fan_in); biases 0.
  void init(schatten::Rng& rng) {
    for (float& v : embed)
      v = float(rng.normal());
    for (float& v : w1)
      v = float(rng.normal() * std::sqrt(2.0 / kIn));
    for (float& v : w2)
      v = float(rng.normal() * std::sqrt(2.0 / kHidden));
    for (float& v : head)
      v = float(rng.normal() * std::sqrt(1.0 / kHidden));
  }
};

using Rows = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstMap = Eigen::Map<const Rows>;
using Map = Eigen::Map<Rows>;

/// The activations of one batch, kept for the backward pass and the activation Grams: x (the
/// concatenated embeddings, n × 192) and the two hidden layers (n × 512 each).
struct Activations {
  Rows x, h1, h2;
};

/// Mean cross-entropy of predicting text[p + kContext] from text[p .. p + kContext) over the
/// windows p of `starts`, with the gradient into `g` (zeroed first) when non-null. `a` receives
/// the activations. The softmax is shifted by its maximum, its sums in double. Precondition:
/// p + kContext < text.size() for every p. Cost: 6·n·(192·512 + 512² + 512·128) flops with a
/// gradient, a third of that without.
inline double loss_and_grad(const Model& m, const std::vector<std::uint8_t>& text,
                            const std::vector<index_t>& starts, Activations& a, Model* g) {
  const index_t n = index_t(starts.size());
  a.x.resize(n, kIn);
  for (index_t s = 0; s < n; ++s)
    for (index_t c = 0; c < kContext; ++c)
      std::copy_n(m.embed.data() + text[starts[s] + c] * kEmbed, kEmbed, a.x.data() + s * kIn + c * kEmbed);
  const ConstMap w1(m.w1.data(), kHidden, kIn), w2(m.w2.data(), kHidden, kHidden),
      head(m.head.data(), kVocab, kHidden);
  const Eigen::Map<const Eigen::RowVectorXf> b1(m.b1.data(), kHidden), b2(m.b2.data(), kHidden),
      bh(m.bh.data(), kVocab);
  a.h1 = ((a.x * w1.transpose()).rowwise() + b1).cwiseMax(0.0f);
  a.h2 = ((a.h1 * w2.transpose()).rowwise() + b2).cwiseMax(0.0f);
  Rows z = (a.h2 * head.transpose()).rowwise() + bh;
  double loss = 0.0;
  for (index_t s = 0; s < n; ++s) {
    const int label = text[starts[s] + kContext];
    const float top = z.row(s).maxCoeff();
    double sum = 0.0;
    for (index_t k = 0; k < kVocab; ++k)
      sum += std::exp(double(z(s, k) - top));
    loss += std::log(sum) - double(z(s, label) - top);
    if (g)  // z ← dloss/dz = (softmax − onehot)/n
      for (index_t k = 0; k < kVocab; ++k)
        z(s, k) = float((std::exp(double(z(s, k) - top)) / sum - (k == label ? 1.0 : 0.0)) / double(n));
  }
  if (!g) return loss / double(n);
  *g = Model{};
  Map(g->head.data(), kVocab, kHidden).noalias() = z.transpose() * a.h2;
  Eigen::Map<Eigen::RowVectorXf>(g->bh.data(), kVocab) = z.colwise().sum();
  Rows dh2 = (z * head).cwiseProduct((a.h2.array() > 0.0f).cast<float>().matrix());
  Map(g->w2.data(), kHidden, kHidden).noalias() = dh2.transpose() * a.h1;
  Eigen::Map<Eigen::RowVectorXf>(g->b2.data(), kHidden) = dh2.colwise().sum();
  Rows dh1 = (dh2 * w2).cwiseProduct((a.h1.array() > 0.0f).cast<float>().matrix());
  Map(g->w1.data(), kHidden, kIn).noalias() = dh1.transpose() * a.x;
  Eigen::Map<Eigen::RowVectorXf>(g->b1.data(), kHidden) = dh1.colwise().sum();
  const Rows dx = dh1 * w1;
  for (index_t s = 0; s < n; ++s)
    for (index_t c = 0; c < kContext; ++c) {
      float* e = g->embed.data() + text[starts[s] + c] * kEmbed;
      for (index_t j = 0; j < kEmbed; ++j)
        e[j] += dx(s, c * kEmbed + j);
    }
  return loss / double(n);
}

/// Mean cross-entropy (nats per character) over every window of `text` (more than kContext
/// characters), in batches of 4096.
inline double loss(const Model& m, const std::vector<std::uint8_t>& text) {
  const index_t windows = index_t(text.size()) - kContext;
  Activations a;
  std::vector<index_t> starts;
  double sum = 0.0;
  for (index_t p = 0; p < windows; p += 4096) {
    starts.clear();
    for (index_t s = p; s < std::min(windows, p + 4096); ++s)
      starts.push_back(s);
    sum += loss_and_grad(m, text, starts, a, nullptr) * double(starts.size());
  }
  return sum / double(windows);
}

}  // namespace charlm
