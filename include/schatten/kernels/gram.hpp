// SPDX-License-Identifier: Apache-2.0
/// \file
/// Gram matrices of activations: the statistic the adaptive Schatten-p criterion needs per layer
/// (algorithms.md §4a.2: the Gram AᵀA of the layer's inputs, summable across data-parallel ranks).
#pragma once

#include "schatten/core/matrix_ref.hpp"
#include "schatten/core/status.hpp"
#include "schatten/core/workspace.hpp"

namespace schatten {

/// gram += xᵀ x, with x the layer's inputs as tokens × d_in (a Linear layer's input reshaped to
/// (tokens, d_in); a convolution's im2col patches (N·patches, C·kh·kw)).
///
/// One symmetric product on the execution space of the build (fp32, accumulated into the fp32
/// `gram`): the lower triangle by a vendor SYRK (host BLAS, cuBLAS), about half a GEMM's
/// 2·tokens·d² flops, or else by GEMM row panels where they pay (kernels/polar.md; one GEMM
/// below that size), and the upper triangle copied from it, so `gram` (symmetric
/// on entry, as every sum of Grams is) stays exactly symmetric. Sums of calls — and of ranks — are
/// sums of Grams, so statistics are collected in pieces and all-reduced as plain arrays. `x`:
/// any strides and memory kind (staged when the device cannot read it); contiguous row-major, it
/// is read in place (it is xᵀ column-major), other strides are copied into xᵀ first. `gram`:
/// d_in × d_in in host memory (any strides, copied through a device buffer), or contiguous
/// row-major in device memory (an optimizer's statistics after `Partition::init` on
/// MemoryKind::device; updated there, never copied to the host). Errors (gram unchanged): shapes
/// disagree, or x and gram overlap other than as one array (x = gram, in place) →
/// invalid_argument; NaN/Inf in x, or a sum that overflows float → non_finite_input.
/// Synchronous.
///
/// Memory: the sum is formed in a d_in × d_in float copy (so that an overflow leaves `gram` as
/// it was), in `workspace` when one is given, which keeps it for the next calls together with
/// the call's copies: a strided x's xᵀ, and on a GPU build the staging of host arrays and the
/// host image of a strided host `gram`. With one Workspace kept for the calls, only the first
/// call of a size allocates, in any layout. Without one, every call allocates and frees its own
/// (on a GPU, a device allocation and free per call).
Status gram_accumulate(MatrixRef<const float> x, MatrixRef<float> gram, Workspace* workspace = nullptr);

}  // namespace schatten
