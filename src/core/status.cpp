// SPDX-License-Identifier: Apache-2.0
/// \file
/// String names of the core enumerations.
#include "schatten/core/status.hpp"
#include "schatten/core/types.hpp"

namespace schatten {

const char* to_string(Status s) noexcept {
  switch (s) {
    case Status::ok:
      return "ok";
    case Status::invalid_argument:
      return "invalid_argument";
    case Status::non_finite_input:
      return "non_finite_input";
    case Status::unsupported:
      return "unsupported";
    case Status::not_converged:
      return "not_converged";
    case Status::breakdown:
      return "breakdown";
    case Status::out_of_memory:
      return "out_of_memory";
    case Status::out_of_range:
      return "out_of_range";
    case Status::internal_error:
      return "internal_error";
  }
  return "unknown_status";
}

const char* to_string(Precision p) noexcept {
  switch (p) {
    case Precision::automatic:
      return "automatic";
    case Precision::bf16:
      return "bf16";
    case Precision::fp16:
      return "fp16";
    case Precision::fp32:
      return "fp32";
    case Precision::fp64:
      return "fp64";
  }
  return "unknown_precision";
}

}  // namespace schatten
