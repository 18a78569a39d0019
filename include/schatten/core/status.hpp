// SPDX-License-Identifier: Apache-2.0
/// \file
/// Status codes returned by every kernel and optimizer call (no exceptions on hot paths).
#pragma once

#include <new>

namespace schatten {

/// Outcome of a call. Every value other than `ok` and `not_converged` guarantees that the call
/// wrote nothing to its outputs (outputs, parameters and optimizer state are never left
/// half-updated).
enum class Status {
  ok = 0,
  invalid_argument,  ///< shapes, strides or options are inconsistent (message says which)
  non_finite_input,  ///< the input contains NaN or +-Inf
  unsupported,       ///< valid request this build or method cannot serve (e.g. QDWH iterating in
                     ///< bf16; precision_supported() in polar.hpp says which)
  not_converged,     ///< an iterative method hit its iteration limit (output still written)
  breakdown,         ///< a factorisation broke down: the input is too ill-conditioned for the
                     ///< chosen precision (nothing written)
  out_of_memory,     ///< a workspace allocation failed
  out_of_range,      ///< finite input beyond what the call can represent (e.g. a gradient whose
                     ///< square overflows the float second moment of Adam); nothing written
  internal_error     ///< a bug: please report it
};

/// Short stable name of a status ("ok", "invalid_argument", ...).
const char* to_string(Status s) noexcept;

namespace detail {
/// f() (returning a Status) with an exception that leaves it turned into a status: a
/// std::bad_alloc (an exhausted host heap) into out_of_memory, anything else into
/// internal_error. The plain-array entry points (no exception leaves them) and
/// optim::Partition's step (a rule's own exception) map exceptions through it.
template <class F>
Status status_guard(const F& f) noexcept {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory;
  } catch (...) {
    return Status::internal_error;
  }
}
}  // namespace detail

}  // namespace schatten
