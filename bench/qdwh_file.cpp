// SPDX-License-Identifier: Apache-2.0
/// \file
/// schatten-qdwh-file: QDWH on a matrix read from a raw file, for side-by-side comparisons with
/// other implementations on the same input (bench/gpu/jax_qdwh.py writes one and times JAX).
///
/// Usage: schatten-qdwh-file FILE ROWS COLS [--float] [--reps N]
/// FILE holds ROWS·COLS little-endian doubles, row-major. The matrix is copied once into the
/// default execution space's memory; each of N calls (after one warm-up) is timed as a
/// synchronous qdwh() on that memory. Prints the median time, the iteration counts and the
/// orthogonality ‖U Uᵀ − I‖_F/√k reported by the kernel.
#include <Kokkos_Core.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <type_traits>
#include <vector>

#include "cli.hpp"
#include "schatten/core/runtime.hpp"
#include "schatten/kernels/qdwh.hpp"

using namespace schatten;
using namespace schatten::bench;

namespace {
template <class T>
int run(const std::vector<double>& host, index_t r, index_t c, int reps) {
  using Mem = Kokkos::DefaultExecutionSpace::memory_space;
  constexpr MemoryKind kind =
      std::is_same<Mem, Kokkos::HostSpace>::value ? MemoryKind::host : MemoryKind::device;
  const std::size_t n = host.size();
  Kokkos::View<T*, Mem> a("a", n), u("u", n);
  {
    auto h = Kokkos::create_mirror_view(a);
    for (std::size_t i = 0; i < n; ++i)
      h(i) = static_cast<T>(host[i]);
    Kokkos::deep_copy(a, h);
  }
  QdwhOptions o;
  o.compute_orthogonality_error = true;
  Workspace ws;
  QdwhReport rep;
  std::vector<double> t;
  for (int i = 0; i <= reps; ++i) {
    Kokkos::Timer timer;
    rep = qdwh(MatrixRef<const T>(a.data(), r, c, kind), MatrixRef<T>(u.data(), r, c, kind), o, &ws);
    const double s = timer.seconds();
    if (rep.status != Status::ok) {
      std::fprintf(stderr, "qdwh: %s (%s)\n", to_string(rep.status), rep.message);
      return 1;
    }
    if (i > 0) t.push_back(s);  // the first call allocates the workspace
  }
  std::sort(t.begin(), t.end());
  std::printf(
      "schatten qdwh %s %tdx%td: median %.3f ms of %d (min %.3f), iterations %d (QR %d), l0 %.3g, "
      "orth |UU^T-I|_F/sqrt(k) %.3e; %s\n",
      sizeof(T) == 4 ? "float" : "double", r, c, t[t.size() / 2] * 1e3, reps, t.front() * 1e3, rep.iterations,
      rep.qr_iterations, rep.lower_bound, rep.orthogonality_error, runtime_description().c_str());
  return 0;
}
}  // namespace

int main(int argc, char** argv) {
  if (wants_help(argc, argv)) {  // before Kokkos, which would print its own help first
    std::fputs(qdwh_file_usage(), stdout);
    return 0;
  }
  Runtime runtime(argc, argv);
  QdwhFileArgs args;
  if (const std::string error = parse_qdwh_file_args(argc, argv, args); !error.empty()) {
    std::fprintf(stderr, "%s\n", error.c_str());
    return 2;
  }
  const index_t r = args.rows, c = args.cols;
  std::vector<double> host(static_cast<std::size_t>(r * c));
  std::ifstream f(args.file, std::ios::binary);
  if (!f.read(reinterpret_cast<char*>(host.data()),
              static_cast<std::streamsize>(host.size() * sizeof(double)))) {
    std::fprintf(stderr, "could not read %td doubles from %s\n", r * c, args.file.c_str());
    return 1;
  }
  return args.single ? run<float>(host, r, c, args.reps) : run<double>(host, r, c, args.reps);
}
