// SPDX-License-Identifier: Apache-2.0
/// \file
/// Flattening and the label proposal of optim/partition.hpp.
#include "schatten/optim/partition.hpp"

#include <algorithm>
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
  return {};
}

std::vector<std::string> propose_labels(const std::vector<ParamSpec>& params, const LabelPolicy& policy) {
  std::vector<std::string> labels;
  labels.reserve(params.size());
  for (const ParamSpec& p : params) {
    bool spectral = p.shape.size() >= 2;
    const BlockShape s = flatten(p.shape);
    if (s.rows < policy.min_side || s.cols < policy.min_side) spectral = false;
    for (const std::string& x : policy.exclude)
      if (!x.empty() && p.name.find(x) != std::string::npos) spectral = false;
    labels.push_back(spectral ? policy.spectral : policy.other);
  }
  return labels;
}

}  // namespace schatten::optim
