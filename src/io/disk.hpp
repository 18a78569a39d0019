// SPDX-License-Identifier: Apache-2.0
/// \file
/// Internal: the recorder's disk reservation as seen by the tests (src/io/recording.cpp).
#pragma once

#include <atomic>

namespace schatten::io::detail {

/// While true, the recorder reserves disk as on a file system without fallocate: by writing a
/// zero byte into every block past the end of the file (recording.cpp, allocate_disk). For the
/// tests, whose file systems have fallocate; the default is false.
std::atomic<bool>& emulate_fallocate() noexcept;

}  // namespace schatten::io::detail
