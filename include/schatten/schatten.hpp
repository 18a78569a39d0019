// SPDX-License-Identifier: Apache-2.0
/// \file
/// Umbrella header: the plain-array API of schatten (no Kokkos types). The Kokkos View overloads
/// are in <schatten/kokkos/polar.hpp>.
#pragma once

#include "schatten/config.hpp"
#include "schatten/core/matrix_ref.hpp"
#include "schatten/core/random.hpp"
#include "schatten/core/runtime.hpp"
#include "schatten/core/status.hpp"
#include "schatten/core/types.hpp"
#include "schatten/core/workspace.hpp"
#include "schatten/kernels/coefficients.hpp"
#include "schatten/kernels/inner_product.hpp"
#include "schatten/kernels/low_rank.hpp"
#include "schatten/kernels/polar.hpp"
#include "schatten/kernels/polar_express_coefficients.hpp"
#include "schatten/kernels/qdwh.hpp"
#include "schatten/kernels/randomized_svd.hpp"
#include "schatten/kernels/spectral_power.hpp"
#include "schatten/optim/dion.hpp"
#include "schatten/optim/partition.hpp"
#include "schatten/optim/presets.hpp"
#include "schatten/optim/qk_clip.hpp"
#include "schatten/optim/split.hpp"
#include "schatten/optim/step_size.hpp"
#include "schatten/reference/polar.hpp"
#include "schatten/surrogate/descent.hpp"
