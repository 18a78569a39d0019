// SPDX-License-Identifier: Apache-2.0
/// \file
/// Whether the tests run under a sanitizer that changes what they may do.
#pragma once

namespace schatten::test {

/// Whether AddressSanitizer instruments this build (g++ defines the macro, clang the feature).
/// Its allocator aborts a request beyond its maximum (1 TiB) instead of failing it, unless
/// ASAN_OPTIONS has allocator_may_return_null=1; so a test that asks for more to see the
/// out_of_memory path skips that request under it. It also makes every run several times slower.
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kAddressSanitizer = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kAddressSanitizer = true;
#else
constexpr bool kAddressSanitizer = false;
#endif
#else
constexpr bool kAddressSanitizer = false;
#endif

}  // namespace schatten::test
