// SPDX-License-Identifier: Apache-2.0
/// \file
/// schatten-low-rank-floor: the measurement behind the rounding floor of low_rank_power_step()
/// (docs/kernels/low_rank.md). For Gaussian B of rank ρ (L × S, float) and a Gaussian Q (S × k),
/// P = fl(B Q) is formed in float (Eigen's GEMM), its unpivoted Householder QR in double, and
/// each |R_jj| is divided by the floor's scale √S·u·‖B‖_F·‖q_j‖ (u = 2⁻²⁴). Printed per shape: the
/// ρ-th largest ratio (the weakest of B's ρ directions) and the (ρ+1)-th (the largest rounding
/// column). The kernel drops a column when its ratio is at most the factor of its floor.
///
///   schatten-low-rank-floor [seed]
#include <Eigen/Dense>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "schatten/core/random.hpp"

namespace {

Eigen::MatrixXf gaussian(Eigen::Index r, Eigen::Index c, schatten::Rng& rng) {
  Eigen::MatrixXf m(r, c);
  for (Eigen::Index j = 0; j < c; ++j)
    for (Eigen::Index i = 0; i < r; ++i)
      m(i, j) = static_cast<float>(rng.normal());
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  // One optional argument, the seed (a whole decimal number; default 1). Anything else, --help
  // included, used to run the whole measurement with seed 0 (strtoull's answer for no number).
  const char* const usage = "usage: schatten-low-rank-floor [SEED]   (SEED: a whole number, default 1)\n";
  if (argc > 1 && (!std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h"))) {
    std::fputs(usage, stdout);
    return 0;
  }
  std::uint64_t seed = 1;
  if (argc > 1) {
    char* end = nullptr;
    errno = 0;
    seed = std::strtoull(argv[1], &end, 10);
    if (argc > 2 || argv[1][0] == '\0' || argv[1][0] == '-' || *end != '\0' || errno != 0) {
      std::fprintf(stderr, "schatten-low-rank-floor: bad argument '%s'\n%s", argv[argc > 2 ? 2 : 1], usage);
      return 2;
    }
  }
  struct Case {
    Eigen::Index l, s, rank, k;
  };
  const Case cases[] = {{9, 6, 1, 6},          {64, 32, 4, 32},        {512, 256, 16, 128},
                        {2048, 1024, 50, 256}, {4096, 1024, 100, 256}, {2048, 2048, 200, 1024}};
  schatten::Rng rng(seed);
  std::printf("seed %llu\n%6s %6s %6s %6s  %22s  %22s  %22s  %22s\n", static_cast<unsigned long long>(seed),
              "L", "S", "rank", "k", "rho-th |R_jj|/scale", "(rho+1)-th |R_jj|/scale",
              "largest vs kept/scale", "largest off B's range/scale");
  for (const Case& c : cases) {
    // B = 0.1·G₁G₂, G₂ drawn first (the order GCC gave the one-expression form of earlier
    // versions, whose numbers docs/kernels/low_rank.md quotes).
    const Eigen::MatrixXf g2 = gaussian(c.rank, c.s, rng);
    const Eigen::MatrixXf g1 = gaussian(c.l, c.rank, rng);
    const Eigen::MatrixXf b = g1 * g2 * 0.1f;
    const Eigen::MatrixXf q = gaussian(c.s, c.k, rng);
    const Eigen::MatrixXf p = b * q;  // float GEMM, as the kernel's
    const Eigen::HouseholderQR<Eigen::MatrixXd> qr(p.cast<double>());
    const double bf = b.cast<double>().norm();
    std::vector<double> ratio(static_cast<std::size_t>(c.k)), scale(ratio.size());
    for (Eigen::Index j = 0; j < c.k; ++j) {
      const std::size_t jj = static_cast<std::size_t>(j);
      scale[jj] = std::sqrt(double(c.s)) * std::ldexp(1.0, -24) * bf * q.col(j).cast<double>().norm();
      ratio[jj] = std::abs(qr.matrixQR()(j, j)) / scale[jj];
    }
    // The kernel orthogonalises each column against the kept columns only (the QR of the kept
    // columns). With a Gaussian Q the first ρ columns carry the rank and are kept; every later
    // column is then measured against their span alone: the largest of those is the rounding
    // column the floor must drop.
    const Eigen::MatrixXd kept_basis = qr.householderQ() * Eigen::MatrixXd::Identity(c.l, c.rank);
    const Eigen::MatrixXd pd = p.cast<double>();
    const Eigen::MatrixXd range =  // B's range in exact arithmetic: that of its first factor
        Eigen::HouseholderQR<Eigen::MatrixXd>(g1.cast<double>()).householderQ() *
        Eigen::MatrixXd::Identity(c.l, c.rank);
    double against_kept = 0.0, rounding = 0.0;
    for (Eigen::Index j = c.rank; j < c.k; ++j) {
      const Eigen::VectorXd rest = pd.col(j) - kept_basis * (kept_basis.transpose() * pd.col(j));
      const Eigen::VectorXd off = pd.col(j) - range * (range.transpose() * pd.col(j));
      against_kept = std::max(against_kept, rest.norm() / scale[static_cast<std::size_t>(j)]);
      rounding = std::max(rounding, off.norm() / scale[static_cast<std::size_t>(j)]);
    }
    // Which columns carry the rank is the QR's business (a weak direction can surface in a later
    // column), so the ratios are sorted: the ρ-th largest should be kept, the (ρ+1)-th dropped.
    const double first_rho_weakest =
        *std::min_element(ratio.begin(), ratio.begin() + static_cast<std::ptrdiff_t>(c.rank));
    std::sort(ratio.begin(), ratio.end(), [](double x, double y) { return x > y; });
    const double real = ratio[static_cast<std::size_t>(c.rank - 1)];
    const double noise = ratio[static_cast<std::size_t>(c.rank)];
    std::printf("%6ld %6ld %6ld %6ld  %22.4g  %22.4g  %22.4g  %22.4g%s\n", static_cast<long>(c.l),
                static_cast<long>(c.s), static_cast<long>(c.rank), static_cast<long>(c.k), real, noise,
                against_kept, rounding,
                first_rho_weakest == real ? "" : "  (the rank not in the first columns)");
  }
  return 0;
}
