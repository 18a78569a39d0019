// SPDX-License-Identifier: Apache-2.0
/// \file
/// Flattening and the label proposal of optim/partition.hpp.
#include "schatten/optim/partition.hpp"

#include <algorithm>
#include <cctype>
#include <string>

namespace schatten::optim {

BlockShape flatten(const std::vector<index_t>& shape) {
  if (shape.empty()) return {1, 1};
  if (shape.size() == 1) return {1, shape[0]};
  index_t rest = 1;
  for (std::size_t i = 1; i < shape.size(); ++i)
    rest *= shape[i];
  return {shape[0], rest};
}

bool valid_param_shape(const std::vector<index_t>& shape) {
  index_t rest = 1;  // flatten()'s product of the dimensions after the first, checked as it grows
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] < 0) return false;
    if (i == 0) continue;
    if (shape[i] != 0 && rest > kMaxBlockElements / shape[i]) return false;
    rest *= shape[i];
  }
  return shape.size() < 2 || valid_shape(shape[0], rest);
}

bool valid_param_name(const std::string& name) {
  std::size_t start = 0;
  while (true) {
    const std::size_t end = std::min(name.find('/', start), name.size());
    const std::size_t n = end - start;
    if (n == 0 || (n == 1 && name[start] == '.') || (n == 2 && name.compare(start, 2, "..") == 0))
      return false;
    if (end == name.size()) return true;
    start = end + 1;
  }
}

std::string params_problem(const std::vector<ParamSpec>& params, std::ptrdiff_t* bad) {
  for (std::size_t i = 0; i < params.size(); ++i) {
    if (!valid_param_shape(params[i].shape)) {
      *bad = static_cast<std::ptrdiff_t>(i);
      return "parameter '" + params[i].name +
             "': its shape has a negative dimension or more than 2^58 elements";
    }
    if (!valid_param_name(params[i].name)) {
      *bad = static_cast<std::ptrdiff_t>(i);
      return "parameter '" + params[i].name +
             "': its name cannot name checkpoint fields (empty, a leading or trailing '/', or an empty, "
             "'.' or '..' part between slashes)";
    }
  }
  std::vector<std::size_t> by_name(params.size());
  for (std::size_t i = 0; i < params.size(); ++i)
    by_name[i] = i;
  std::stable_sort(by_name.begin(), by_name.end(),
                   [&](std::size_t a, std::size_t b) { return params[a].name < params[b].name; });
  for (std::size_t k = 1; k < by_name.size(); ++k)
    if (params[by_name[k]].name == params[by_name[k - 1]].name) {
      *bad = static_cast<std::ptrdiff_t>(by_name[k]);
      return "two parameters are named '" + params[by_name[k]].name +
             "' (their checkpoint fields would collide)";
    }
  // Fields are "<name>/<index>_<rule>/<field>" beside "_partition/skipped_steps": a name under
  // "_partition/", or under another parameter's name ("a" and "a/0_adamw_update/mu"), could
  // name a field of another, and the first save failed (audit of 2026-12-07).
  const auto named = [&](const std::string& n) {
    const auto it = std::lower_bound(by_name.begin(), by_name.end(), n,
                                     [&](std::size_t a, const std::string& x) { return params[a].name < x; });
    return it != by_name.end() && params[*it].name == n;
  };
  for (std::size_t i = 0; i < params.size(); ++i) {
    const std::string& n = params[i].name;
    if (n.rfind("_partition/", 0) == 0 || n == "_partition") {
      *bad = static_cast<std::ptrdiff_t>(i);
      return "parameter '" + n + "': names under '_partition' are the partition's own checkpoint fields";
    }
    for (std::size_t at = n.find('/'); at != std::string::npos; at = n.find('/', at + 1))
      if (named(n.substr(0, at))) {
        *bad = static_cast<std::ptrdiff_t>(i);
        return "parameter '" + n + "' lies under parameter '" + n.substr(0, at) +
               "' (its checkpoint fields could collide with that one's)";
      }
  }
  return {};
}

namespace {
/// True when `word` occurs in `name` at the start of a word: at the start of the name or after a
/// character that is not a letter ("lm_head", "transformer.wte", "tok_embeddings", "heads.0"),
/// not inside one ("multihead_attn": torch's nn.MultiheadAttention layers are hidden matrices;
/// a plain substring match sent them to AdamW until the audit of 2026-12-07). A word that does
/// not start with a letter (".gate.") counts wherever it occurs.
bool excludes(const std::string& name, const std::string& word) {
  if (word.empty()) return false;
  const bool anchored = !std::isalpha(static_cast<unsigned char>(word[0]));
  for (std::size_t at = name.find(word); at != std::string::npos; at = name.find(word, at + 1))
    if (anchored || at == 0 || !std::isalpha(static_cast<unsigned char>(name[at - 1]))) return true;
  return false;
}
}  // namespace

std::vector<std::string> propose_labels(const std::vector<ParamSpec>& params, const LabelPolicy& policy) {
  std::vector<std::string> labels;
  labels.reserve(params.size());
  for (const ParamSpec& p : params) {
    bool spectral = p.shape.size() >= 2;
    const BlockShape s = flatten(p.shape);
    if (s.rows < policy.min_side || s.cols < policy.min_side) spectral = false;
    for (const std::string& x : policy.exclude)
      if (excludes(p.name, x)) spectral = false;
    labels.push_back(spectral ? policy.spectral : policy.other);
  }
  return labels;
}

}  // namespace schatten::optim
