// SPDX-License-Identifier: Apache-2.0
/// \file
/// Basic vocabulary types shared by every layer: index type, precisions, memory kinds.
#pragma once

#include <cstddef>
#include <cstdint>

/// Marks the small inline functions that hold an element-wise formula (Adam's moments, momentum)
/// so that the host loops and the device kernels of the Kokkos backend call the same code: one
/// formula in one place. Empty for host compilers.
#if defined(__CUDACC__) || defined(__HIPCC__)
#define SCHATTEN_HOST_DEVICE __host__ __device__
#else
#define SCHATTEN_HOST_DEVICE
#endif

namespace schatten {

/// Signed index type for matrix dimensions and strides (elements, not bytes).
using index_t = std::ptrdiff_t;

/// Floating-point formats a kernel can store or iterate in.
///
/// `automatic` means "the precision of the input". bf16 and fp16 are iteration precisions of
/// newton_schulz and polar_express on every build (cuBLAS on CUDA, a portable Kokkos GEMM
/// elsewhere); the other methods reject them with Status::unsupported
/// (schatten::precision_supported() says which).
enum class Precision { automatic, bf16, fp16, fp32, fp64 };

/// True for the five named precisions; false for a value cast from another integer, which the
/// kernels and the options' checks refuse with Status::invalid_argument and kUnknownPrecision.
constexpr bool known_precision(Precision p) noexcept {
  return p == Precision::automatic || p == Precision::bf16 || p == Precision::fp16 || p == Precision::fp32 ||
         p == Precision::fp64;
}
/// True for the 16-bit iteration precisions, bf16 and fp16 (PolarOptions::compute).
constexpr bool sixteen_bit(Precision p) noexcept { return p == Precision::bf16 || p == Precision::fp16; }
/// The message for a Precision that is not known_precision().
inline constexpr const char* kUnknownPrecision =
    "unknown precision (not automatic, bf16, fp16, fp32 or fp64)";

/// Where the memory behind a pointer lives.
///
/// `host` is ordinary CPU memory. `device` is memory of the execution space the library was
/// built for (CUDA/HIP global memory on a GPU build). On a CPU-only build both name host memory.
enum class MemoryKind { host, device };

/// Name of a precision ("fp32", ...), for logs, benchmarks and file attributes.
const char* to_string(Precision p) noexcept;

}  // namespace schatten
