// SPDX-License-Identifier: Apache-2.0
/// \file
/// Plain-array entry points of polar() and qdwh() on the default execution space.
#include <exception>
#include <new>

#include "plain_io.hpp"
#include "schatten/kokkos/polar.hpp"

namespace schatten {
namespace kokkos::detail {
namespace {

template <class Report>
Report failure(Status s, const char* msg) {
  Report r;
  r.status = s;
  r.message = msg;
  return r;
}

template <class T>
PolarReport polar_plain(const BatchedMatrixRef<const T>& a, const BatchedMatrixRef<T>& q,
                        const PolarOptions& options, schatten::Workspace* workspace) {
  schatten::detail::ensure_runtime();
  if (const char* msg = check_plain(a, false)) return failure<PolarReport>(Status::invalid_argument, msg);
  if (const char* msg = check_plain(q, true)) return failure<PolarReport>(Status::invalid_argument, msg);
  if (a.batch != q.batch || a.rows != q.rows || a.cols != q.cols)
    return failure<PolarReport>(Status::invalid_argument, "input and output shapes differ");
  if (const char* msg = schatten::detail::check_aliasing(a, q, true))  // (before any staging)
    return failure<PolarReport>(Status::invalid_argument, msg);
  try {
    CallWorkspace ws(workspace);
    DeviceIO<T> io(a, ws.staging());
    const PolarReport r =
        polar_dispatch<DefaultExec, T>(DefaultExec(), io.input(), io.output(q), options, ws.get());
    if (r.status == Status::ok || r.status == Status::not_converged) io.commit();
    return r;
  } catch (const std::bad_alloc&) {
    return failure<PolarReport>(Status::out_of_memory, "allocation failed");
  } catch (const std::exception&) {
    return failure<PolarReport>(Status::internal_error, "unexpected exception in polar()");
  }
}

template <class T>
QdwhReport qdwh_plain(const BatchedMatrixRef<const T>& a, const BatchedMatrixRef<T>& u,
                      const BatchedMatrixRef<T>& h, const QdwhOptions& options,
                      schatten::Workspace* workspace) {
  schatten::detail::ensure_runtime();
  if (const char* msg = check_plain(a, false)) return failure<QdwhReport>(Status::invalid_argument, msg);
  if (const char* msg = check_plain(u, true)) return failure<QdwhReport>(Status::invalid_argument, msg);
  if (a.batch != u.batch || a.rows != u.rows || a.cols != u.cols)
    return failure<QdwhReport>(Status::invalid_argument, "input and output shapes differ");
  if (h.data != nullptr) {
    if (const char* msg = check_plain(h, true)) return failure<QdwhReport>(Status::invalid_argument, msg);
    const index_t k = std::min(a.rows, a.cols);
    if (h.batch != a.batch || h.rows != k || h.cols != k)
      return failure<QdwhReport>(Status::invalid_argument, "h must hold batch matrices of min(rows, cols)^2");
    if (const char* msg = schatten::detail::check_aliasing(u, h, false))
      return failure<QdwhReport>(Status::invalid_argument, msg);
    if (const char* msg = schatten::detail::check_aliasing(a, h, true))
      return failure<QdwhReport>(Status::invalid_argument, msg);
  }
  if (const char* msg = schatten::detail::check_aliasing(a, u, true))  // (before any staging)
    return failure<QdwhReport>(Status::invalid_argument, msg);
  try {
    CallWorkspace ws(workspace);
    DeviceIO<T> io(a, ws.staging());
    const auto du = io.output(u);
    const auto dh = io.output(h, /*optional=*/true);
    const QdwhReport r = qdwh_dispatch<DefaultExec, T>(DefaultExec(), io.input(), du, dh, options, ws.get());
    if (r.status == Status::ok || r.status == Status::not_converged) io.commit();
    return r;
  } catch (const std::bad_alloc&) {
    return failure<QdwhReport>(Status::out_of_memory, "allocation failed");
  } catch (const std::exception&) {
    return failure<QdwhReport>(Status::internal_error, "unexpected exception in qdwh()");
  }
}

template <class T>
SpectralPowerReport spectral_dispatch(const Strided3<const T, DefaultMem>& a,
                                      const Strided3<T, DefaultMem>& out, const SpectralPowerOptions& o,
                                      Workspace<DefaultMem>& ws) {
  return spectral_power_dispatch<DefaultExec, T>(DefaultExec(), a, out, o, ws);
}
template <class T>
SpectralPowerReport spectral_dispatch(const Strided3<const T, DefaultMem>& a,
                                      const Strided3<T, DefaultMem>& out, const SpectralClipOptions& o,
                                      Workspace<DefaultMem>& ws) {
  return spectral_clip_dispatch<DefaultExec, T>(DefaultExec(), a, out, o, ws);
}

/// spectral_power() and spectral_clip() on plain arrays (host or device memory).
template <class T, class Options>
SpectralPowerReport spectral_plain(const BatchedMatrixRef<const T>& a, const BatchedMatrixRef<T>& out,
                                   const Options& options, schatten::Workspace* workspace) {
  schatten::detail::ensure_runtime();
  if (const char* msg = check_plain(a, false))
    return failure<SpectralPowerReport>(Status::invalid_argument, msg);
  if (const char* msg = check_plain(out, true))
    return failure<SpectralPowerReport>(Status::invalid_argument, msg);
  if (a.batch != out.batch || a.rows != out.rows || a.cols != out.cols)
    return failure<SpectralPowerReport>(Status::invalid_argument, "input and output shapes differ");
  if (const char* msg = schatten::detail::check_aliasing(a, out, true))  // (before any staging)
    return failure<SpectralPowerReport>(Status::invalid_argument, msg);
  try {
    CallWorkspace ws(workspace);
    DeviceIO<T> io(a, ws.staging());
    const SpectralPowerReport r = spectral_dispatch<T>(io.input(), io.output(out), options, ws.get());
    if (r.status == Status::ok || r.status == Status::not_converged) io.commit();
    return r;
  } catch (const std::bad_alloc&) {
    return failure<SpectralPowerReport>(Status::out_of_memory, "allocation failed");
  } catch (const std::exception&) {
    return failure<SpectralPowerReport>(Status::internal_error, "unexpected exception in a spectral map");
  }
}

template <class T>
Status norm_plain(const BatchedMatrixRef<const T>& a, double q, double* norms,
                  const SchattenNormOptions& options, schatten::Workspace* workspace) {
  schatten::detail::ensure_runtime();
  if (check_plain(a, false) || (norms == nullptr && a.batch > 0)) return Status::invalid_argument;
  return status_guard([&] {
    CallWorkspace ws(workspace);
    DeviceIO<T> io(a, ws.staging());
    return schatten_norm_dispatch<DefaultExec, T>(DefaultExec(), io.input(), q, norms, options, ws.get());
  });
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
QdwhReport qdwh(BatchedMatrixRef<const float> a, BatchedMatrixRef<float> u, const QdwhOptions& options,
                Workspace* workspace, BatchedMatrixRef<float> h) {
  return kokkos::detail::qdwh_plain<float>(a, u, h, options, workspace);
}
QdwhReport qdwh(BatchedMatrixRef<const double> a, BatchedMatrixRef<double> u, const QdwhOptions& options,
                Workspace* workspace, BatchedMatrixRef<double> h) {
  return kokkos::detail::qdwh_plain<double>(a, u, h, options, workspace);
}

SpectralPowerReport spectral_power(BatchedMatrixRef<const float> a, BatchedMatrixRef<float> out,
                                   const SpectralPowerOptions& options, Workspace* workspace) {
  return kokkos::detail::spectral_plain<float>(a, out, options, workspace);
}
SpectralPowerReport spectral_power(BatchedMatrixRef<const double> a, BatchedMatrixRef<double> out,
                                   const SpectralPowerOptions& options, Workspace* workspace) {
  return kokkos::detail::spectral_plain<double>(a, out, options, workspace);
}
SpectralPowerReport spectral_clip(BatchedMatrixRef<const float> a, BatchedMatrixRef<float> out,
                                  const SpectralClipOptions& options, Workspace* workspace) {
  return kokkos::detail::spectral_plain<float>(a, out, options, workspace);
}
SpectralPowerReport spectral_clip(BatchedMatrixRef<const double> a, BatchedMatrixRef<double> out,
                                  const SpectralClipOptions& options, Workspace* workspace) {
  return kokkos::detail::spectral_plain<double>(a, out, options, workspace);
}
Status schatten_norm(BatchedMatrixRef<const float> a, double q, double* norms,
                     const SchattenNormOptions& options, Workspace* workspace) {
  return kokkos::detail::norm_plain<float>(a, q, norms, options, workspace);
}
Status schatten_norm(BatchedMatrixRef<const double> a, double q, double* norms,
                     const SchattenNormOptions& options, Workspace* workspace) {
  return kokkos::detail::norm_plain<double>(a, q, norms, options, workspace);
}

bool detail::lowp_symmetric_on_one_triangle() {
  // The 16-bit type polar() iterates in on the default execution space: the software types
  // (portable_sym_product at every size, batched_sym_product) or, on CUDA, cuBLAS's.
  return kokkos::detail::with_iteration_type<true, Kokkos::DefaultExecutionSpace, float>(
      Precision::bf16, [](Status, const char*) { return false; },
      [](auto tc) { return kokkos::detail::portable_storage<typename decltype(tc)::type>; });
}

bool precision_supported(Precision p, PolarMethod method) {
  if (!known_precision(p)) return false;
  if (p != Precision::bf16 && p != Precision::fp16) return true;
  return method == PolarMethod::newton_schulz || method == PolarMethod::polar_express;
}

std::size_t polar_workspace_bytes(index_t rows, index_t cols, index_t batch, const PolarOptions& options,
                                  Precision input) {
  using kokkos::detail::DefaultMem;
  const kokkos::detail::PolarShape s(batch, rows, cols, false);  // orientation: same bytes
  const bool fp64 = options.compute == Precision::fp64 ||
                    (options.compute == Precision::automatic && input == Precision::fp64);
  if (options.method == PolarMethod::qdwh)
    return fp64 ? kokkos::detail::qdwh_bytes<double, DefaultMem>(s, false)
                : kokkos::detail::qdwh_bytes<float, DefaultMem>(s, false);
  const bool aol = resolved_schedule(options).normalization.kind == Normalization::Kind::aol;
  return fp64 ? kokkos::detail::polar_bytes<double, DefaultMem>(s, options.method, aol)
              : kokkos::detail::polar_bytes<float, DefaultMem>(s, options.method, aol);
}

}  // namespace schatten
