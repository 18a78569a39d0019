// SPDX-License-Identifier: Apache-2.0
/// \file
/// Example (compiled and run by the tests): orthogonalise a batch of row-major gradients with
/// Polar Express, compare with the exact polar factor, and handle a bad input.
#include <schatten/schatten.hpp>

#include <cmath>
#include <cstdio>
#include <limits>
#include <vector>

int main(int argc, char** argv) {
  schatten::Runtime runtime(argc, argv);  // initialises Kokkos unless the program already did
  using schatten::index_t;

  // Two 64 × 256 "gradients" with a prescribed power-law spectrum, row-major, one after the other.
  const index_t batch = 2, rows = 64, cols = 256, k = rows;
  std::vector<double> sigma(k);
  for (index_t i = 0; i < k; ++i)
    sigma[i] = 1.0 / std::sqrt(double(i + 1));
  std::vector<double> a(batch * rows * cols);
  for (index_t b = 0; b < batch; ++b)
    schatten::reference::matrix_with_spectrum(
        schatten::MatrixRef<double>(a.data() + b * rows * cols, rows, cols), sigma, /*seed=*/42 + b);
  std::vector<float> g(a.begin(), a.end()), q(g.size());

  // One call for the whole batch; the workspace is reused by later calls.
  schatten::Workspace ws;
  schatten::PolarOptions opt;  // Polar Express, 5 steps
  opt.compute_orthogonality_error = true;
  const schatten::PolarReport r =
      schatten::polar(schatten::BatchedMatrixRef<const float>(g.data(), batch, rows, cols),
                      schatten::BatchedMatrixRef<float>(q.data(), batch, rows, cols), opt, &ws);
  if (!r) {
    std::fprintf(stderr, "polar: %s (%s)\n", schatten::to_string(r.status), r.message);
    return 1;
  }
  std::printf("Polar Express, %d steps: RMS orthogonality error %.3f\n", r.iterations, r.orthogonality_error);

  // The exact polar factor of the first matrix, and the distance to it.
  std::vector<double> exact(rows * cols);
  schatten::reference::polar(schatten::MatrixRef<const double>(a.data(), rows, cols),
                             schatten::MatrixRef<double>(exact.data(), rows, cols));
  double d = 0;
  for (index_t i = 0; i < rows * cols; ++i)
    d += std::pow(q[i] - exact[i], 2);
  std::printf("RMS distance to U V^T: %.3f\n", std::sqrt(d / k));

  // Eight steps converge: the reference table keeps improving after step 5.
  opt.iterations = 8;
  schatten::polar(schatten::BatchedMatrixRef<const float>(g.data(), batch, rows, cols),
                  schatten::BatchedMatrixRef<float>(q.data(), batch, rows, cols), opt, &ws);
  d = 0;
  for (index_t i = 0; i < rows * cols; ++i)
    d += std::pow(q[i] - exact[i], 2);
  std::printf("8 steps: RMS distance to U V^T: %.2e\n", std::sqrt(d / k));
  if (std::sqrt(d / k) > 1e-3) return 1;

  // A NaN in the second matrix: nothing is written, and the report says which matrix.
  g[rows * cols + 5] = std::numeric_limits<float>::quiet_NaN();
  const schatten::PolarReport bad =
      schatten::polar(schatten::BatchedMatrixRef<const float>(g.data(), batch, rows, cols),
                      schatten::BatchedMatrixRef<float>(q.data(), batch, rows, cols), opt, &ws);
  std::printf("with a NaN: %s, matrix %td: %s\n", schatten::to_string(bad.status), bad.bad_item, bad.message);
  return bad.status == schatten::Status::non_finite_input && bad.bad_item == 1 ? 0 : 1;
}
