// SPDX-License-Identifier: Apache-2.0
/// \file
/// The models that the optimizer benches and examples train (docs/examples/digits_mlp.hpp,
/// bench/char_mlp.hpp): their hand-written gradients against central differences of an
/// independent forward pass in double, and the text reader of the character model. A wrong
/// gradient would make every table of docs/benchmarks/cpu-mlp-rules.md measure the rules on
/// another function than the loss it reports.
///
/// Tolerance: the parameters are floats, exactly representable in double, so the oracle computes
/// the same function; its central difference with h = 1e-6 is off by O(h²·f‴) plus about
/// 1e-16/h = 1e-10 of rounding. The float gradient is a sum of at most 512 products per entry,
/// each rounded at u = 2⁻²⁴. The bound is 1e-6 + 1e-4·|∂f/∂w|; over seeds 1–300 the largest
/// error was 4.6 % of it (digits' head.weight; typically 1e-9 to 4e-7 absolute). Each of these
/// was checked to fail: a missing ReLU mask (either model), a transposed product, an embedding
/// row off by one entry, and a bias gradient 1 % too large. Entries whose ±h perturbation flips a
/// ReLU are redrawn: the loss has a kink there and a central difference does not measure the
/// gradient.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "../../bench/char_mlp.hpp"
#include "../../docs/examples/digits_mlp.hpp"
#include "schatten/core/random.hpp"
#include "support/seed.hpp"

namespace optim_test_bench_models {  // this file's scope in a unity build (tests/CMakeLists.txt)

using schatten::index_t;
using schatten::Rng;
using schatten::test::case_seed;

namespace {

/// A double forward pass: the loss and a fingerprint of the ReLU pattern (which units are on).
struct Forward {
  double loss = 0.0;
  std::uint64_t pattern = 0;
};

/// Adds the on/off state of a ReLU unit to the pattern fingerprint.
void mix(std::uint64_t& pattern, bool on) { pattern = (pattern * 1099511628211ull) ^ (on ? 1u : 2u); }

/// max(W x + b, 0) in double, W row-major n × m.
std::vector<double> relu_layer(const std::vector<double>& w, const std::vector<double>& b,
                               const std::vector<double>& x, std::uint64_t& pattern) {
  const std::size_t n = b.size(), m = x.size();
  std::vector<double> out(n);
  for (std::size_t i = 0; i < n; ++i) {
    double a = b[i];
    for (std::size_t j = 0; j < m; ++j)
      a += w[i * m + j] * x[j];
    mix(pattern, a > 0.0);
    out[i] = std::max(a, 0.0);
  }
  return out;
}

/// −log softmax(W h + b)_label in double.
double cross_entropy(const std::vector<double>& w, const std::vector<double>& b, const std::vector<double>& h,
                     int label) {
  const std::size_t k = b.size(), m = h.size();
  std::vector<double> z(k);
  for (std::size_t i = 0; i < k; ++i) {
    z[i] = b[i];
    for (std::size_t j = 0; j < m; ++j)
      z[i] += w[i * m + j] * h[j];
  }
  const double top = *std::max_element(z.begin(), z.end());
  double sum = 0.0;
  for (const double v : z)
    sum += std::exp(v - top);
  return std::log(sum) - (z[static_cast<std::size_t>(label)] - top);
}

using Params = std::vector<std::vector<double>>;

Params to_double(const std::vector<float*>& p, const std::vector<schatten::optim::ParamSpec>& specs) {
  Params out;
  for (std::size_t k = 0; k < p.size(); ++k) {
    std::size_t n = 1;
    for (const auto d : specs[k].shape)
      n *= static_cast<std::size_t>(d);
    out.emplace_back(p[k], p[k] + n);
  }
  return out;
}

/// Compares `gradient` (the float gradients, in the order of `specs`) with central differences of
/// `forward` at `per_parameter` entries of each parameter; `entry(k, r)` proposes the r-th entry
/// of parameter k (proposals that cross a ReLU kink are replaced by the next).
void check_gradient(Params& p, const std::vector<float*>& gradient,
                    const std::vector<schatten::optim::ParamSpec>& specs,
                    const std::function<Forward(const Params&)>& forward,
                    const std::function<std::size_t(std::size_t, int)>& entry, int per_parameter) {
  constexpr double h = 1e-6;
  for (std::size_t k = 0; k < p.size(); ++k) {
    int checked = 0;
    double worst = 0.0;  // the largest error as a fraction of its bound
    for (int r = 0; checked < per_parameter && r < 10 * per_parameter; ++r) {
      const std::size_t i = entry(k, r);
      const double w = p[k][i];
      p[k][i] = w + h;
      const Forward plus = forward(p);
      p[k][i] = w - h;
      const Forward minus = forward(p);
      p[k][i] = w;
      if (plus.pattern != minus.pattern) continue;  // a kink between the two points
      const double fd = (plus.loss - minus.loss) / (2.0 * h), g = gradient[k][i];
      const double bound = 1e-6 + 1e-4 * std::abs(fd);
      worst = std::max(worst, std::abs(fd - g) / bound);
      CHECK_MESSAGE(std::abs(fd - g) <= bound,
                    specs[k].name << "[" << i << "]: gradient " << g << ", central difference " << fd);
      ++checked;
    }
    CHECK_MESSAGE(checked == per_parameter, specs[k].name << ": too many entries at a kink");
    MESSAGE(specs[k].name << ": largest gradient error " << worst << " of its bound over " << checked
                          << " entries");
  }
}

}  // namespace

TEST_CASE("digits MLP: gradient against central differences of a double forward pass") {
  const std::uint64_t seed = case_seed("digits MLP gradient");
  MESSAGE("seed " << seed);
  Rng rng(seed);
  constexpr index_t kN = 8;
  std::vector<float> x(static_cast<std::size_t>(kN * digits::kIn));
  std::vector<int> y(kN);
  for (float& v : x)
    v = float(rng.uniform());
  for (int& l : y)
    l = int(rng.next() % digits::kOut);
  digits::Mlp m;
  std::vector<std::vector<float>*> all = {&m.w1, &m.b1, &m.w2, &m.b2};
  for (auto* v : all)
    for (float& w : *v)
      w = float(0.2 * rng.normal());
  digits::Mlp g;
  const double loss = digits::loss_and_grad(m, x.data(), y.data(), kN, &g);
  const auto specs = digits::Mlp::specs();
  Params p = to_double(m.pointers(), specs);
  const auto forward = [&](const Params& q) {
    Forward f;
    for (index_t s = 0; s < kN; ++s) {
      const std::vector<double> xs(x.begin() + s * digits::kIn, x.begin() + (s + 1) * digits::kIn);
      f.loss += cross_entropy(q[2], q[3], relu_layer(q[0], q[1], xs, f.pattern), y[s]);
    }
    f.loss /= double(kN);
    return f;
  };
  // The float loss is the same function, summed in float per sample.
  CHECK(std::abs(forward(p).loss - loss) <= 1e-5 * std::abs(loss));
  check_gradient(
      p, g.pointers(), specs, forward,
      [&](std::size_t k, int) { return std::size_t(rng.next() % p[k].size()); }, 12);
}

TEST_CASE("character MLP LM: gradient against central differences of a double forward pass") {
  const std::uint64_t seed = case_seed("character MLP LM gradient");
  MESSAGE("seed " << seed);
  Rng rng(seed);
  charlm::Text t;
  const std::string text =
      "The licensee may copy and distribute verbatim copies of the Program's source code.";
  t.train.assign(text.begin(), text.end());
  std::vector<index_t> starts(6);
  for (index_t& s : starts)
    s = index_t(rng.next() % (t.train.size() - charlm::kContext));
  charlm::Model m;
  m.init(rng);
  for (float& v : m.b1)  // non-zero biases, so that a swapped bias gradient shows
    v = float(0.1 * rng.normal());
  for (float& v : m.b2)
    v = float(0.1 * rng.normal());
  for (float& v : m.bh)
    v = float(0.1 * rng.normal());
  charlm::Activations a;
  charlm::Model g;
  const double loss = charlm::loss_and_grad(m, t.train, starts, a, &g);
  const auto specs = charlm::Model::specs();
  Params p = to_double(m.pointers(), specs);
  const auto forward = [&](const Params& q) {
    Forward f;
    for (const index_t s : starts) {
      std::vector<double> x;
      for (index_t c = 0; c < charlm::kContext; ++c) {
        const auto row = q[0].begin() + t.train[static_cast<std::size_t>(s + c)] * charlm::kEmbed;
        x.insert(x.end(), row, row + charlm::kEmbed);
      }
      const std::vector<double> h1 = relu_layer(q[1], q[2], x, f.pattern);
      f.loss += cross_entropy(q[5], q[6], relu_layer(q[3], q[4], h1, f.pattern),
                              t.train[static_cast<std::size_t>(s + charlm::kContext)]);
    }
    f.loss /= double(starts.size());
    return f;
  };
  CHECK(std::abs(forward(p).loss - loss) <= 1e-5 * std::abs(loss));
  // The embedding's entries are drawn from the rows of characters in the windows (the others
  // have no gradient); the other parameters' uniformly.
  const auto entry = [&](std::size_t k, int) {
    if (k != 0) return std::size_t(rng.next() % p[k].size());
    const index_t s = starts[rng.next() % starts.size()] + index_t(rng.next() % charlm::kContext);
    return std::size_t(t.train[static_cast<std::size_t>(s)]) * charlm::kEmbed + rng.next() % charlm::kEmbed;
  };
  check_gradient(p, g.pointers(), specs, forward, entry, 8);
}

TEST_CASE("character MLP LM: the text reader") {
  namespace fs = std::filesystem;
  const fs::path dir =
      fs::temp_directory_path() / ("schatten_charlm_" + std::to_string(case_seed("charlm reader")));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const auto write = [&](const char* name, const std::string& text) { std::ofstream(dir / name) << text; };
  charlm::Text t;
  SUBCASE("fewer than two files is refused") {
    write("a", std::string(5000, 'x'));
    CHECK_FALSE(charlm::load(dir.string(), t));
  }
  SUBCASE("a missing directory is refused") { CHECK_FALSE(charlm::load((dir / "none").string(), t)); }
  SUBCASE("a held-out file under 4096 characters is refused") {
    write("a", std::string(5000, 'x'));
    write("b", std::string(100, 'y'));
    CHECK_FALSE(charlm::load(dir.string(), t));
  }
  SUBCASE("files in name order, the last held out, links skipped, non-ASCII bytes as '?'") {
    write("b", std::string(3000, 'b'));
    write("a", std::string(3000, 'a') + "\xc3\xa9");
    write("c", std::string(4096, 'c'));
    fs::create_symlink(dir / "a", dir / "z");
    REQUIRE(charlm::load(dir.string(), t));
    CHECK(t.held_out_name == "c");
    CHECK(t.train.size() == 6002);
    CHECK(t.train[0] == 'a');
    CHECK(t.train[3000] == '?');
    CHECK(t.train[3001] == '?');
    CHECK(t.train[3002] == 'b');
    CHECK(t.held_out == std::vector<std::uint8_t>(4096, 'c'));
  }
  fs::remove_all(dir);
}

}  // namespace optim_test_bench_models
