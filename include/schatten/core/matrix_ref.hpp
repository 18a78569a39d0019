// SPDX-License-Identifier: Apache-2.0
/// \file
/// Non-owning references to matrices and batches of same-shape matrices held in plain arrays.
///
/// Conventions (see docs/conventions.md):
///  * A matrix is `rows x cols`; element (i, j) lives at `data[i*row_stride + j*col_stride]`.
///    The default constructor arguments describe a contiguous **row-major** matrix
///    (`row_stride = cols`, `col_stride = 1`), the layout of PyTorch/NumPy/C arrays.
///    Column-major (Fortran, Eigen's default) is `MatrixRef::col_major(p, rows, cols)`.
///  * Strides are in elements, never negative. Inputs may use any strides (even 0, which repeats
///    an element). Outputs must not overlap themselves: the library checks that every element has
///    its own address and returns Status::invalid_argument otherwise.
///  * An output may alias its input exactly (in-place call): every kernel reads its whole input
///    before it writes its output. Any other overlap between an output and an input or another
///    output is refused with Status::invalid_argument (detail::check_aliasing).
///  * `memory` says where `data` lives. Host memory given to a GPU build is staged through device
///    memory; device memory on a CPU-only build is the same host memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "schatten/core/types.hpp"

namespace schatten {

template <class T>
struct MatrixRef {
  T* data = nullptr;
  index_t rows = 0;
  index_t cols = 0;
  index_t row_stride = 0;  ///< elements from (i, j) to (i+1, j)
  index_t col_stride = 1;  ///< elements from (i, j) to (i, j+1)
  MemoryKind memory = MemoryKind::host;

  constexpr MatrixRef() = default;
  /// Contiguous row-major `rows x cols` matrix.
  constexpr MatrixRef(T* p, index_t r, index_t c, MemoryKind mem = MemoryKind::host)
      : data(p), rows(r), cols(c), row_stride(c), col_stride(1), memory(mem) {}

  /// Row-major with leading dimension `ld >= cols` (distance between rows).
  static constexpr MatrixRef row_major(T* p, index_t r, index_t c, index_t ld,
                                       MemoryKind mem = MemoryKind::host) {
    return strided(p, r, c, ld, 1, mem);
  }
  /// Column-major with leading dimension `ld >= rows` (distance between columns).
  static constexpr MatrixRef col_major(T* p, index_t r, index_t c, index_t ld,
                                       MemoryKind mem = MemoryKind::host) {
    return strided(p, r, c, 1, ld, mem);
  }
  static constexpr MatrixRef col_major(T* p, index_t r, index_t c) { return col_major(p, r, c, r); }
  /// Any strides.
  static constexpr MatrixRef strided(T* p, index_t r, index_t c, index_t rs, index_t cs,
                                     MemoryKind mem = MemoryKind::host) {
    MatrixRef m;
    m.data = p;
    m.rows = r;
    m.cols = c;
    m.row_stride = rs;
    m.col_stride = cs;
    m.memory = mem;
    return m;
  }

  /// From a reference to compatible elements (e.g. MatrixRef<float> → MatrixRef<const float>).
  template <class U,
            class = std::enable_if_t<std::is_convertible<U*, T*>::value && !std::is_same<U, T>::value>>
  constexpr MatrixRef(const MatrixRef<U>& m)  // NOLINT(google-explicit-constructor)
      : data(m.data),
        rows(m.rows),
        cols(m.cols),
        row_stride(m.row_stride),
        col_stride(m.col_stride),
        memory(m.memory) {}

  constexpr index_t size() const { return rows * cols; }
  constexpr bool empty() const { return rows == 0 || cols == 0; }
  /// The transpose, as a view of the same memory.
  constexpr MatrixRef transposed() const { return strided(data, cols, rows, col_stride, row_stride, memory); }
  /// Element access; valid only for host memory.
  constexpr T& operator()(index_t i, index_t j) const { return data[i * row_stride + j * col_stride]; }
};

/// `batch` matrices of the same shape; matrix b starts at `data + b*batch_stride`.
template <class T>
struct BatchedMatrixRef {
  T* data = nullptr;
  index_t batch = 0;
  index_t rows = 0;
  index_t cols = 0;
  index_t batch_stride = 0;
  index_t row_stride = 0;
  index_t col_stride = 1;
  MemoryKind memory = MemoryKind::host;

  constexpr BatchedMatrixRef() = default;
  /// `batch` contiguous row-major matrices stored one after the other (a C array [b][r][c]).
  constexpr BatchedMatrixRef(T* p, index_t b, index_t r, index_t c, MemoryKind mem = MemoryKind::host)
      : data(p), batch(b), rows(r), cols(c), batch_stride(r * c), row_stride(c), col_stride(1), memory(mem) {}
  /// One matrix as a batch of one (implicit, so single-matrix calls share the batched path).
  template <class U, class = std::enable_if_t<std::is_convertible<U*, T*>::value>>
  constexpr BatchedMatrixRef(const MatrixRef<U>& m)  // NOLINT(google-explicit-constructor)
      : data(m.data),
        batch(1),
        rows(m.rows),
        cols(m.cols),
        batch_stride(0),
        row_stride(m.row_stride),
        col_stride(m.col_stride),
        memory(m.memory) {}
  /// From a batch of compatible elements (e.g. float → const float).
  template <class U,
            class = std::enable_if_t<std::is_convertible<U*, T*>::value && !std::is_same<U, T>::value>>
  constexpr BatchedMatrixRef(const BatchedMatrixRef<U>& m)  // NOLINT(google-explicit-constructor)
      : data(m.data),
        batch(m.batch),
        rows(m.rows),
        cols(m.cols),
        batch_stride(m.batch_stride),
        row_stride(m.row_stride),
        col_stride(m.col_stride),
        memory(m.memory) {}

  static constexpr BatchedMatrixRef strided(T* p, index_t b, index_t r, index_t c, index_t bs, index_t rs,
                                            index_t cs, MemoryKind mem = MemoryKind::host) {
    BatchedMatrixRef m;
    m.data = p;
    m.batch = b;
    m.rows = r;
    m.cols = c;
    m.batch_stride = bs;
    m.row_stride = rs;
    m.col_stride = cs;
    m.memory = mem;
    return m;
  }

  constexpr index_t size() const { return batch * rows * cols; }
  constexpr bool empty() const { return batch == 0 || rows == 0 || cols == 0; }
  /// Matrix b of the batch.
  constexpr MatrixRef<T> operator[](index_t b) const {
    return MatrixRef<T>::strided(data + b * batch_stride, rows, cols, row_stride, col_stride, memory);
  }
};

namespace detail {
/// Checks a strided layout: non-negative extents and strides, a non-null pointer when it has
/// elements, offsets that fit in index_t and, for outputs, no two elements at one address.
/// Returns nullptr when valid, else a static message naming the problem.
const char* check_layout(const void* data, index_t batch, index_t rows, index_t cols, index_t batch_stride,
                         index_t row_stride, index_t col_stride, bool is_output) noexcept;

template <class T>
const char* check_layout(const BatchedMatrixRef<T>& m, bool is_output) noexcept {
  return check_layout(static_cast<const void*>(m.data), m.batch, m.rows, m.cols, m.batch_stride, m.row_stride,
                      m.col_stride, is_output);
}

/// True when the byte ranges [a, a + a_bytes) and [b, b + b_bytes) share an address (an empty
/// range shares none): the one overlap test behind the aliasing rules of every kernel.
inline bool ranges_overlap(const void* a, std::size_t a_bytes, const void* b, std::size_t b_bytes) noexcept {
  const std::uintptr_t x = reinterpret_cast<std::uintptr_t>(a), y = reinterpret_cast<std::uintptr_t>(b);
  return a_bytes > 0 && b_bytes > 0 && x < y + b_bytes && y < x + a_bytes;
}

/// The aliasing rule between an output (`out_*`) and another array of the same call (an input,
/// or another output): nullptr when their address ranges, each from its first element to the
/// end of its last, are disjoint, or when `may_alias` and the two are one layout at one address
/// (`same_layout`: the in-place call); else a static message. Ranges, not elements: two
/// interleaved layouts with no element in common are refused too (a conservative rule that costs
/// O(1)). Partial overlap is refused because a kernel may read its input again while it writes
/// (the blend of spectral_clip) or write one output over another (qdwh's u and h).
inline const char* check_aliasing(const void* other, std::size_t other_bytes, const void* out,
                                  std::size_t out_bytes, bool may_alias, bool same_layout) noexcept {
  if (!ranges_overlap(other, other_bytes, out, out_bytes)) return nullptr;
  if (may_alias && same_layout && other == out) return nullptr;
  return may_alias ? "output overlaps another array partially (only an exact in-place alias is allowed)"
                   : "output overlaps another output of the call";
}

/// Bytes from the first element of a valid layout (check_layout) to the end of its last; 0 when
/// it is empty.
template <class T>
std::size_t span_bytes(const BatchedMatrixRef<T>& m) noexcept {
  if (m.empty()) return 0;
  const index_t last =
      (m.batch - 1) * m.batch_stride + (m.rows - 1) * m.row_stride + (m.cols - 1) * m.col_stride;
  return static_cast<std::size_t>(last + 1) * sizeof(T);
}

/// check_aliasing() of two batches given as plain arrays (same_layout: equal shape and strides).
template <class T, class U>
const char* check_aliasing(const BatchedMatrixRef<T>& other, const BatchedMatrixRef<U>& out,
                           bool may_alias) noexcept {
  const bool same = sizeof(T) == sizeof(U) && other.batch == out.batch && other.rows == out.rows &&
                    other.cols == out.cols && (other.batch <= 1 || other.batch_stride == out.batch_stride) &&
                    (other.rows <= 1 || other.row_stride == out.row_stride) &&
                    (other.cols <= 1 || other.col_stride == out.col_stride);
  return check_aliasing(static_cast<const void*>(other.data), span_bytes(other),
                        static_cast<const void*>(out.data), span_bytes(out), may_alias, same);
}
}  // namespace detail

}  // namespace schatten
