// SPDX-License-Identifier: Apache-2.0
/// \file
/// Whether HDF5 may be called from several threads at once, for the io tests of the thread
/// contract (docs/conventions.md "Threads").
#pragma once

#include <doctest/doctest.h>
#include <hdf5.h>

namespace schatten::test {

/// True where HDF5 is built thread-safe (H5is_library_threadsafe; Debian's is: one lock around
/// every HDF5 call). Otherwise says that the case is skipped, and false.
inline bool hdf5_thread_safe() {
  hbool_t safe = 0;
  if (H5is_library_threadsafe(&safe) >= 0 && safe) return true;
  MESSAGE("HDF5 is not thread-safe here: the case is skipped");
  return false;
}

}  // namespace schatten::test
