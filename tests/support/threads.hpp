// SPDX-License-Identifier: Apache-2.0
/// \file
/// Running one call in several host threads at once, for the tests of the library's thread
/// contract: calls with their own workspaces (kernels) or partitions (optimizers) may run
/// concurrently and give the bits they give alone (docs/conventions.md "Threads").
#pragma once

#include <atomic>
#include <thread>
#include <vector>

namespace schatten::test {

/// Runs f(0), …, f(n − 1), each in its own thread, and returns once all have finished. The
/// threads start their calls together (each waits until all n exist), so that the calls
/// overlap. f must not throw, nor use doctest's assertions: it records what it saw, and the
/// caller checks that after this returns.
template <class F>
void run_together(int n, F&& f) {
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  threads.reserve(static_cast<std::size_t>(n));
  for (int t = 0; t < n; ++t)
    threads.emplace_back([&f, &ready, n, t] {
      ready.fetch_add(1);
      while (ready.load() < n)
        std::this_thread::yield();
      f(t);
    });
  for (std::thread& th : threads)
    th.join();
}

}  // namespace schatten::test
