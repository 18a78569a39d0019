// SPDX-License-Identifier: Apache-2.0
/// \file
/// Prescribed-spectrum test matrices.
#include "support/spectra.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "schatten/reference/polar.hpp"

namespace schatten::test {

Eigen::MatrixXd make_matrix(const SpectrumCase& c, std::uint64_t seed) {
  Eigen::MatrixXd a(c.rows, c.cols);
  if (reference::matrix_with_spectrum(MatrixRef<double>::col_major(a.data(), c.rows, c.cols), c.sigma,
                                      seed) != Status::ok)
    throw std::invalid_argument("make_matrix: bad spectrum case " + c.name);
  return a;
}

std::vector<double> geometric(index_t k, double ratio, double top) {
  std::vector<double> s(static_cast<std::size_t>(k));
  for (index_t i = 0; i < k; ++i)
    s[static_cast<std::size_t>(i)] = k == 1 ? top : top * std::pow(ratio, double(i) / double(k - 1));
  return s;
}

std::vector<SpectrumCase> standard_spectra() {
  std::vector<SpectrumCase> cases;
  cases.push_back({"geometric_square_64", 64, 64, geometric(64, 1e-3)});
  cases.push_back({"geometric_wide_48x130", 48, 130, geometric(48, 1e-3)});
  cases.push_back({"geometric_tall_150x40", 150, 40, geometric(40, 1e-3)});
  cases.push_back({"ill_conditioned_1e6_37x53", 37, 53, geometric(37, 1e-6)});
  {
    std::vector<double> s(40);
    for (std::size_t i = 0; i < s.size(); ++i)
      s[i] = i < 20 ? 1.0 - 1e-6 * double(i) : 0.5 - 1e-6 * double(i);
    cases.push_back({"clustered_40x96", 40, 96, s});
  }
  {
    std::vector<double> s = geometric(48, 1e-2);
    std::fill(s.begin() + 24, s.end(), 0.0);
    cases.push_back({"rank_deficient_72x48", 72, 48, s});
  }
  cases.push_back({"tiny_scale_1e-30_32x64", 32, 64, geometric(32, 1e-2, 1e-30)});
  cases.push_back({"huge_scale_1e30_64x32", 64, 32, geometric(32, 1e-2, 1e30)});
  cases.push_back({"one_by_one", 1, 1, {2.5}});
  cases.push_back({"row_vector_1x17", 1, 17, {0.75}});
  cases.push_back({"column_vector_23x1", 23, 1, {3.0}});
  cases.push_back({"two_by_two", 2, 2, {1.0, 0.1}});
  return cases;
}

}  // namespace schatten::test
