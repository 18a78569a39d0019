// SPDX-License-Identifier: Apache-2.0
/// \file
/// Plain-array entry points of polar() on the default execution space, and the explicit
/// instantiations behind the extern templates of <schatten/kokkos/polar.hpp>.
#include "schatten/kokkos/polar.hpp"

#include <Kokkos_Core.hpp>

#include <exception>
#include <optional>

#include "schatten/core/runtime.hpp"
#include "workspace_impl.hpp"

namespace schatten {
namespace kokkos::detail {

using Exec = Kokkos::DefaultExecutionSpace;
using Mem = Exec::memory_space;

template PolarReport polar_strided<Exec, float, float>(const Exec&, const Strided3<const float, Mem>&,
                                                       const Strided3<float, Mem>&, const PolarOptions&,
                                                       Workspace<Mem>&);
template PolarReport polar_strided<Exec, float, double>(const Exec&, const Strided3<const float, Mem>&,
                                                        const Strided3<float, Mem>&, const PolarOptions&,
                                                        Workspace<Mem>&);
template PolarReport polar_strided<Exec, double, float>(const Exec&, const Strided3<const double, Mem>&,
                                                        const Strided3<double, Mem>&, const PolarOptions&,
                                                        Workspace<Mem>&);
template PolarReport polar_strided<Exec, double, double>(const Exec&, const Strided3<const double, Mem>&,
                                                         const Strided3<double, Mem>&, const PolarOptions&,
                                                         Workspace<Mem>&);

namespace {

/// True when `Exec` can dereference memory of this kind without a copy.
constexpr bool directly_accessible(MemoryKind kind) {
  return kind == MemoryKind::device || Kokkos::SpaceAccessibility<Exec, Kokkos::HostSpace>::accessible;
}

template <class T>
Strided3<T, Mem> strided_view(const BatchedMatrixRef<T>& m) {
  return Strided3<T, Mem>(
      m.data, Kokkos::LayoutStride(m.batch, m.batch_stride, m.rows, m.row_stride, m.cols, m.col_stride));
}

/// Host matrices on a device build: packed copies in device memory (batch, rows, cols).
template <class T>
using Packed = Kokkos::View<T***, Kokkos::LayoutRight, Mem>;

template <class T>
Packed<T> upload(const BatchedMatrixRef<const T>& a) {
  Packed<T> d(Kokkos::view_alloc(Kokkos::WithoutInitializing, "schatten::staging_in"), a.batch, a.rows,
              a.cols);
  auto h = Kokkos::create_mirror_view(d);
  for (index_t b = 0; b < a.batch; ++b)
    for (index_t i = 0; i < a.rows; ++i)
      for (index_t j = 0; j < a.cols; ++j)
        h(b, i, j) = a[b](i, j);
  Kokkos::deep_copy(d, h);
  return d;
}

template <class T>
void download(const Packed<T>& d, const BatchedMatrixRef<T>& q) {
  auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), d);
  for (index_t b = 0; b < q.batch; ++b)
    for (index_t i = 0; i < q.rows; ++i)
      for (index_t j = 0; j < q.cols; ++j)
        q[b](i, j) = h(b, i, j);
}

template <class T>
PolarReport polar_plain(const BatchedMatrixRef<const T>& a, const BatchedMatrixRef<T>& q,
                        const PolarOptions& options, schatten::Workspace* workspace) {
  schatten::detail::ensure_runtime();
  if (const char* msg = schatten::detail::check_layout(a, false))
    return polar_failure(Status::invalid_argument, msg);
  if (const char* msg = schatten::detail::check_layout(q, true))
    return polar_failure(Status::invalid_argument, msg);
  if (a.batch != q.batch || a.rows != q.rows || a.cols != q.cols)
    return polar_failure(Status::invalid_argument, "input and output shapes differ");

  std::optional<schatten::Workspace> local;
  if (workspace == nullptr) workspace = &local.emplace();
  Workspace<Mem>& ws = workspace->impl().ws;
  const Exec space;
  try {
    if (directly_accessible(a.memory) && directly_accessible(q.memory))
      return polar_dispatch<Exec, T>(space, strided_view(a), strided_view(q), options, ws);
    // Staging through device memory; the user's q is written only on success.
    Packed<T> din = directly_accessible(a.memory) ? Packed<T>() : upload(a);
    Packed<T> dout(Kokkos::view_alloc(Kokkos::WithoutInitializing, "schatten::staging_out"), q.batch, q.rows,
                   q.cols);
    const Strided3<const T, Mem> sa = din.data() ? Strided3<const T, Mem>(din) : strided_view(a);
    PolarReport r = polar_dispatch<Exec, T>(space, sa, Strided3<T, Mem>(dout), options, ws);
    if (r.status == Status::ok) {
      if (directly_accessible(q.memory)) {
        Kokkos::deep_copy(space, strided_view(q), dout);
        space.fence();
      } else {
        download(dout, q);
      }
    }
    return r;
  } catch (const std::bad_alloc&) {
    return polar_failure(Status::out_of_memory, "allocation failed");
  } catch (const std::exception&) {
    return polar_failure(Status::internal_error, "unexpected exception in polar()");
  }
}

}  // namespace
}  // namespace kokkos::detail

PolarReport polar(BatchedMatrixRef<const float> a, BatchedMatrixRef<float> q, const PolarOptions& options,
                  Workspace* workspace) {
  return kokkos::detail::polar_plain<float>(a, q, options, workspace);
}

PolarReport polar(BatchedMatrixRef<const double> a, BatchedMatrixRef<double> q, const PolarOptions& options,
                  Workspace* workspace) {
  return kokkos::detail::polar_plain<double>(a, q, options, workspace);
}

std::size_t polar_workspace_bytes(index_t rows, index_t cols, index_t batch, const PolarOptions& options,
                                  Precision input) {
  const kokkos::detail::PolarShape s(batch, rows, cols, false);  // orientation: same bytes
  const bool fp64 = options.compute == Precision::fp64 ||
                    (options.compute == Precision::automatic && input == Precision::fp64);
  return fp64 ? kokkos::detail::polar_bytes<double, kokkos::detail::Mem>(s, options.method)
              : kokkos::detail::polar_bytes<float, kokkos::detail::Mem>(s, options.method);
}

}  // namespace schatten
