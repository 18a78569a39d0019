// SPDX-License-Identifier: Apache-2.0
/// \file
/// The smallest program a user writes: orthogonalise a row-major float matrix in place.
#include <schatten/schatten.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

int main(int argc, char** argv) {
  schatten::Runtime runtime(argc, argv);
  const schatten::index_t rows = 3, cols = 4;
  std::vector<float> g = {1, 2, 0, 0, 0, 1, 1, 0, 0.5f, 0, 0, 2};
  schatten::PolarOptions options;  // Polar Express, 5 steps
  const schatten::PolarReport r = schatten::polar(schatten::MatrixRef<const float>(g.data(), rows, cols),
                                                  schatten::MatrixRef<float>(g.data(), rows, cols), options);
  if (!r) {
    std::fprintf(stderr, "polar failed: %s (%s)\n", schatten::to_string(r.status), r.message);
    return 1;
  }
  // Rows of the result are near-orthonormal: within Polar Express' band.
  for (int i = 0; i < rows; ++i) {
    double n = 0;
    for (int j = 0; j < cols; ++j)
      n += double(g[i * cols + j]) * g[i * cols + j];
    std::printf("row %d norm %.3f\n", i, std::sqrt(n));
    if (std::fabs(std::sqrt(n) - 1.0) > 0.2) return 1;
  }
  std::printf("schatten %s OK\n", SCHATTEN_VERSION_STRING);
  return 0;
}
