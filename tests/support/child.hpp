// SPDX-License-Identifier: Apache-2.0
/// \file
/// Running part of a test in a forked child (the fault-injection tests of checkpoints and
/// recordings: file-size limits, dropped capabilities, HDF5 shut down by hand).
#pragma once

#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <utility>

namespace schatten::test {

/// Runs `body` in a forked child and returns what it returned, plus its exit code (128 + the
/// signal when it was killed). The child leaves with _exit: no atexit handlers (Kokkos'
/// finalisation) run twice.
template <class F>
std::pair<std::string, int> in_child(F body) {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(fds[0]);
    const std::string out = body();
    (void)!::write(fds[1], out.data(), out.size());
    ::_exit(0);
  }
  ::close(fds[1]);
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;)
    out.append(buf, static_cast<std::size_t>(n));
  ::close(fds[0]);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  return {out, WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status)};
}

}  // namespace schatten::test
