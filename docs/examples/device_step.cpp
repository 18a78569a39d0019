// SPDX-License-Identifier: Apache-2.0
/// \file
/// Example (compiled and run by the tests): optimizer steps that stay in device memory. The
/// parameters and gradients are Kokkos Views of the default execution space (GPU memory on a
/// CUDA or HIP build, host memory here), the partition keeps its state there
/// (init(MemoryKind::device)), and schatten::kokkos::step passes the Views straight through:
/// nothing is copied to the host. The "model" fits two matrices and a bias to fixed targets
/// T (loss ½‖W − T‖², gradient W − T, computed on the device); the loss must fall.
#include <schatten/kokkos/optim.hpp>
#include <schatten/optim/presets.hpp>
#include <schatten/schatten.hpp>

#include <Kokkos_Core.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

namespace {
using Vec = Kokkos::View<float*, Kokkos::DefaultExecutionSpace::memory_space>;
namespace opt = schatten::optim;

/// g ← w − t and ½‖w − t‖², on the device.
double gradient(const Vec& w, const Vec& t, const Vec& g) {
  double loss = 0.0;
  Kokkos::parallel_reduce(
      "example::gradient", w.extent(0),
      KOKKOS_LAMBDA(std::size_t k, double& acc) {
        g(k) = w(k) - t(k);
        acc += 0.5 * double(g(k)) * double(g(k));
      },
      loss);
  return loss;
}

Vec filled(const char* label, std::size_t n, std::uint64_t seed, double scale) {
  schatten::Rng rng(seed);
  std::vector<float> h(n);
  for (float& x : h)
    x = static_cast<float>(scale * rng.normal());
  Vec v(std::string(label), n);
  Kokkos::deep_copy(
      v, Kokkos::View<const float*, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>(h.data(), n));
  return v;
}
}  // namespace

int main(int argc, char** argv) {
  schatten::Runtime runtime(argc, argv);
  {  // Views and device buffers must go before Kokkos is finalised
    const std::vector<opt::ParamSpec> params = {{"h.0.w", {64, 32}}, {"h.1.w", {64, 32}}, {"h.1.b", {32}}};
    auto o =
        opt::partition(params, opt::propose_labels(params), opt::route("muon", opt::muon()),
                       opt::route("adamw", opt::adamw(opt::AdamWOptions{opt::Schedule::constant(0.02)})));
    if (const opt::StepReport r = o.init(schatten::MemoryKind::device); !r) {
      std::fprintf(stderr, "init: %s\n", r.message);
      return 1;
    }
    std::vector<Vec> w, t, g;
    for (std::size_t i = 0; i < params.size(); ++i) {
      const auto n = static_cast<std::size_t>(opt::flatten(params[i].shape).size());
      w.push_back(filled("w", n, 1 + i, 0.1));
      t.push_back(filled("t", n, 11 + i, 0.1));
      g.emplace_back("g", n);
    }
    auto staging = schatten::kokkos::make_step_staging<Vec::memory_space>(o);  // no host copies
    double first = 0.0, loss = 0.0;
    for (int step = 0; step < 60; ++step) {
      loss = 0.0;
      for (std::size_t i = 0; i < w.size(); ++i)
        loss += gradient(w[i], t[i], g[i]);
      if (step == 0) first = loss;
      if (step % 20 == 0) std::printf("step %2d: loss %.5f\n", step, loss);
      if (const opt::StepReport r = schatten::kokkos::step(o, w, g, staging); !r) {
        std::fprintf(stderr, "step: %s\n", r.message);
        return 1;
      }
    }
    std::printf("after 60 steps: loss %.5f (from %.5f)\n", loss, first);
    if (!(loss < 0.5 * first)) return 1;

    // A NaN gradient is refused before anything changes, naming the parameter.
    Kokkos::deep_copy(g[2], std::numeric_limits<float>::quiet_NaN());
    const opt::StepReport r = schatten::kokkos::step(o, w, g, staging);
    std::printf("NaN gradient: %s, parameter %td ('%s')\n", schatten::to_string(r.status), r.bad_param,
                params[static_cast<std::size_t>(r.bad_param)].name.c_str());
    if (r.status != schatten::Status::non_finite_input) return 1;
  }
  return 0;
}
