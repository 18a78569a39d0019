// SPDX-License-Identifier: Apache-2.0
/// \file
/// Frobenius inner products ⟨A, B⟩ = Σ_ij a_ij b_ij of same-shape matrices, on the execution
/// space of the build (the reduction the descent diagnostics and the nuclear-norm identity need).
#pragma once

#include "schatten/core/matrix_ref.hpp"
#include "schatten/core/status.hpp"
#include "schatten/core/workspace.hpp"

namespace schatten {

/// out[b] = ⟨A_b, B_b⟩ for every matrix of the batch, accumulated in double (float inputs: every
/// product is exact in double, so the error is that of a double sum, ≤ rows·cols·2⁻⁵³·Σ|a b|).
/// Any strides and memory kinds. Host memory on a device build is staged through copies that
/// `workspace` keeps for its next calls (two arrays of batch·rows·cols elements:
/// Workspace::reserve_staging); without one each call allocates its own. Synchronous: `out` is
/// host memory and holds the result on return.
/// Any finite double entries: where the plain sum overflows (products of entries beyond ~1e154),
/// the sum is formed again of 2^−ea·A and 2^−eb·B (max-normalised by exact powers of two) and
/// scaled back, so a representable ⟨A, B⟩ is returned (0 for 1e200·[1, 1] and 1e200·[1, −1]);
/// that costs one more read of each and only then. Errors (nothing written to `out`): shapes
/// differ, `out` null with batch > 0 → invalid_argument; a NaN/Inf entry → non_finite_input;
/// finite entries whose ⟨A, B⟩ is beyond the double range → out_of_range; an allocation that
/// fails → out_of_memory.
Status frobenius_inner(BatchedMatrixRef<const float> a, BatchedMatrixRef<const float> b, double* out,
                       Workspace* workspace = nullptr);
Status frobenius_inner(BatchedMatrixRef<const double> a, BatchedMatrixRef<const double> b, double* out,
                       Workspace* workspace = nullptr);

}  // namespace schatten
