// SPDX-License-Identifier: Apache-2.0
/// \file
/// A Communicator from an MPI communicator: the one public header of schatten::mpi that
/// includes <mpi.h>.
#pragma once

#include <mpi.h>

#include "schatten/distributed/communicator.hpp"

namespace schatten::distributed {

/// Wraps `comm` (not duplicated, not freed: it must outlive the Communicator and its copies).
/// Precondition: MPI is initialised. All ranks of `comm` take part in the collectives.
Communicator communicator(MPI_Comm comm);

}  // namespace schatten::distributed
