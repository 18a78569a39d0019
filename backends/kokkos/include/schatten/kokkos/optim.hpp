// SPDX-License-Identifier: Apache-2.0
/// \file
/// Optimizer steps over Kokkos Views and over raw device pointers: the entry points of
/// optim::Partition::step (and of optim::SplitPartition::step, whose Views are the caller's
/// fused tensors) for callers whose parameters and gradients live in Kokkos memory.
///
/// Where the rules run depends on where the partition keeps its state:
///  * A partition initialised with MemoryKind::device (Partition::init; every preset) steps in
///    device memory: the Views (or pointers) are passed straight to Partition::step, every
///    element-wise pass is a Kokkos kernel and the matrix functions work in place. Nothing is staged; the
///    Views must be in a memory space the default execution space can access (CudaSpace, HIPSpace, UVM; any
///    space of a CPU build), else invalid_argument. This is the path for GPU training loops.
///  * A host partition (init() without arguments) runs its rules on the host, so:
///  * Views in a memory space the host can access (HostSpace, CudaUVMSpace, CudaHostPinnedSpace,
///    any space of a CPU build) go straight through: their data pointers are passed to
///    Partition::step, no copy is made, and the gradient Views hold the updates afterwards
///    (Partition::step's contract).
///  * Views the host cannot access (CudaSpace, HIPSpace) are staged: every parameter and gradient
///    is deep-copied into host buffers that StepStaging reserved once, the partition steps there,
///    and only after a successful (not skipped) step are the parameters copied back. A failed or
///    skipped step changes nothing in device memory. The device gradients are left as they were
///    (the updates stay in the host buffers, StepStaging::grads). Cost per step: 2 transfers of
///    each parameter (in and out) and 1 of each gradient, each a fenced deep_copy; the
///    arithmetic is the host's. A device-resident element-wise path (rules as Kokkos kernels,
///    the matrix functions on the device without staging) is the device partition above.
///
/// Views are rank 1 or rank 2, value type float, one parameter each, in its flattened shape
/// (optim::flatten): a rank-2 View must be rows × cols of that shape and row-major contiguous
/// (LayoutRight, or LayoutStride with those strides); a rank-1 View holds rows·cols contiguous
/// elements (stride 1). All parameter Views of one call have one type, and so have all gradient
/// Views (pass biases and matrices as rank-1 Views of their storage to mix them). Checked at
/// each call: invalid_argument with bad_param naming the first offending View, nothing touched.
///
/// No device lambdas are defined here (deep_copy only), so the header compiles unchanged with
/// Kokkos 3.4 (Serial) and Kokkos 4.x with CUDA.
#pragma once

#include <Kokkos_Core.hpp>

#include <cstddef>
#include <type_traits>
#include <vector>

#include "schatten/core/types.hpp"
#include "schatten/optim/partition.hpp"
#include "schatten/optim/split.hpp"

namespace schatten::kokkos {

/// The optimizers step() takes: a Partition, or a SplitPartition over one (optim/split.hpp),
/// whose parameters are the caller's fused tensors.
template <class P>
struct is_partition : std::false_type {};
template <class... Rules>
struct is_partition<optim::Partition<Rules...>> : std::true_type {};
template <class P>
struct is_partition<optim::SplitPartition<P>> : std::true_type {};

/// Host-side scratch of the View and device-pointer steps, reserved once after
/// Partition::init() so that a step does not allocate: a table of parameter and gradient
/// pointers (what Partition::step takes) and, for staged steps, one host buffer per parameter
/// and one per gradient (`host_copies`: the size of the model twice).
struct StepStaging {
  StepStaging() = default;
  /// Sized for `partition`'s parameters (their flattened sizes).
  template <class P>
  StepStaging(const P& partition, bool host_copies) {
    reserve(partition.params(), host_copies);
  }
  void reserve(const std::vector<optim::ParamSpec>& specs, bool host_copies) {
    params.assign(specs.size(), {});
    grads.assign(specs.size(), {});
    param_ptrs.assign(specs.size(), nullptr);
    grad_ptrs.assign(specs.size(), nullptr);
    staged = host_copies;
    for (std::size_t i = 0; i < specs.size(); ++i) {
      if (!host_copies) continue;
      const auto n = static_cast<std::size_t>(optim::flatten(specs[i].shape).size());
      params[i].assign(n, 0.0f);
      grads[i].assign(n, 0.0f);
      param_ptrs[i] = params[i].data();
      grad_ptrs[i] = grads[i].data();
    }
  }
  /// True when reserved with host copies (needed by staged steps).
  bool staged = false;
  /// Host copies (staged steps): parameter i and gradient i; after a successful staged step
  /// grads[i] holds parameter i's update.
  std::vector<std::vector<float>> params, grads;
  /// What Partition::step receives.
  std::vector<float*> param_ptrs, grad_ptrs;
};

/// StepStaging for Views in `MemorySpace`: host copies only when a host partition steps Views
/// the host cannot access.
template <class MemorySpace, class P>
StepStaging make_step_staging(const P& partition) {
  return StepStaging(partition, partition.memory() == MemoryKind::host &&
                                    !Kokkos::SpaceAccessibility<Kokkos::HostSpace, MemorySpace>::accessible);
}

namespace detail {

/// True when View `v` holds the flattened `shape` as contiguous row-major floats.
template <class V>
bool fits(const V& v, const optim::BlockShape& shape) {
  if constexpr (static_cast<int>(V::rank) == 1) {
    return static_cast<index_t>(v.extent(0)) == shape.size() && (v.extent(0) <= 1 || v.stride(0) == 1);
  } else {
    return static_cast<index_t>(v.extent(0)) == shape.rows &&
           static_cast<index_t>(v.extent(1)) == shape.cols && (v.extent(1) <= 1 || v.stride(1) == 1) &&
           (v.extent(0) <= 1 || static_cast<index_t>(v.stride(0)) == shape.cols);
  }
}

/// An unmanaged host View over `p` with the type and layout of `v` (the target or source of a
/// deep_copy that matches `v` element for element).
template <class V>
auto host_twin(float* p, const V& v) {
  using H = Kokkos::View<typename V::non_const_data_type, typename V::array_layout, Kokkos::HostSpace,
                         Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
  return H(p, v.layout());
}

/// The staged step: copy every parameter and gradient in, step on the host, and copy the
/// parameters back only after a successful, not skipped, step. `param_view(i)` and
/// `grad_view(i)` give the device Views of parameter i.
template <class P, class PV, class GV>
optim::StepReport staged_step(P& opt, StepStaging& st, const PV& param_view, const GV& grad_view) {
  const std::size_t n = opt.params().size();
  if (!st.staged || st.params.size() != n)
    return optim::refusal("step: StepStaging not reserved with host copies", -1);
  for (std::size_t i = 0; i < n; ++i) {
    const auto p = param_view(i);
    const auto g = grad_view(i);
    if (st.params[i].size() != p.size())
      return optim::refusal("step: StepStaging sized for other parameters", -1);
    Kokkos::deep_copy(host_twin(st.params[i].data(), p), p);
    Kokkos::deep_copy(host_twin(st.grads[i].data(), g), g);
  }
  const optim::StepReport r = opt.step(st.param_ptrs, st.grad_ptrs);
  if (r.status != Status::ok || r.skipped) return r;  // device memory untouched
  for (std::size_t i = 0; i < n; ++i) {
    const auto p = param_view(i);
    Kokkos::deep_copy(p, host_twin(st.params[i].data(), p));
  }
  return r;
}

/// The step on the Views' own memory: their data pointers go straight to Partition::step.
template <class P, class PView, class GView>
optim::StepReport direct_step(P& opt, const std::vector<PView>& params, const std::vector<GView>& grads,
                              StepStaging& st) {
  for (std::size_t i = 0; i < params.size(); ++i) {
    st.param_ptrs[i] = params[i].data();
    st.grad_ptrs[i] = grads[i].data();
  }
  return opt.step(st.param_ptrs, st.grad_ptrs);
}

/// The View step with the path chosen by the caller (`Staged`); step() picks it from the
/// memory space. Tests call the staged path with host Views to check it on CPU builds.
template <bool Staged, class P, class PView, class GView>
optim::StepReport step_views(P& opt, const std::vector<PView>& params, const std::vector<GView>& grads,
                             StepStaging& st) {
  static_assert(Kokkos::is_view<PView>::value && Kokkos::is_view<GView>::value,
                "schatten::kokkos::step takes Kokkos Views");
  static_assert(std::is_same<typename PView::value_type, float>::value &&
                    std::is_same<typename GView::value_type, float>::value,
                "parameter and gradient Views hold (non-const) float");
  static_assert((static_cast<int>(PView::rank) == 1 || static_cast<int>(PView::rank) == 2) &&
                    (static_cast<int>(GView::rank) == 1 || static_cast<int>(GView::rank) == 2),
                "parameter and gradient Views are rank 1 or rank 2");
  const std::vector<optim::ParamSpec>& specs = opt.params();
  if (params.size() != specs.size() || grads.size() != specs.size())
    return optim::refusal("step: one parameter and one gradient View per parameter", -1);
  if (st.param_ptrs.size() != specs.size() || st.grad_ptrs.size() != specs.size())
    return optim::refusal("step: StepStaging not reserved for this partition", -1);
  for (std::size_t i = 0; i < specs.size(); ++i) {
    const optim::BlockShape s = optim::flatten(specs[i].shape);
    if (!fits(params[i], s) || !fits(grads[i], s))
      return optim::refusal("step: a View is not the parameter's flattened shape, row-major and contiguous",
                            static_cast<std::ptrdiff_t>(i));
  }
  if (opt.memory() == MemoryKind::device) {  // device-resident partition: never staged
    if constexpr (!Kokkos::SpaceAccessibility<Kokkos::DefaultExecutionSpace,
                                              typename PView::memory_space>::accessible)
      return optim::refusal(
          "step: the partition keeps its state in device memory; pass Views the default execution space can "
          "access",
          -1);
    else
      return direct_step(opt, params, grads, st);
  }
  if constexpr (Staged)
    return staged_step(
        opt, st, [&](std::size_t i) { return params[i]; }, [&](std::size_t i) { return grads[i]; });
  else
    return direct_step(opt, params, grads, st);
}

}  // namespace detail

/// One optimizer step of `opt` (initialised) over Views: params[i] and grads[i] hold parameter
/// i and its gradient (file comment: shapes, layouts, staging). `staging` must have been
/// reserved for `opt` — make_step_staging<MemorySpace>(opt) — with host copies when the Views
/// are not host-accessible. Returns Partition::step's report (all parameters or none).
template <class P, class PView, class GView, std::enable_if_t<is_partition<P>::value, int> = 0>
optim::StepReport step(P& opt, const std::vector<PView>& params, const std::vector<GView>& grads,
                       StepStaging& staging) {
  static_assert(std::is_same<typename PView::memory_space, typename GView::memory_space>::value,
                "parameter and gradient Views live in one memory space");
  constexpr bool host =
      Kokkos::SpaceAccessibility<Kokkos::HostSpace, typename PView::memory_space>::accessible;
  return detail::step_views<!host>(opt, params, grads, staging);
}

/// The same over raw pointers: params[i] and grads[i] point to parameter i's flattened
/// row-major floats in `memory` — MemoryKind::host (passed straight to Partition::step) or
/// MemoryKind::device, the memory space of Kokkos::DefaultExecutionSpace (staged as above when
/// the host cannot access it; on a CPU build device memory is host memory and nothing is
/// copied). `staging` must hold host copies for staged device steps:
/// make_step_staging<Kokkos::DefaultExecutionSpace::memory_space>(opt). A device-resident
/// partition (init(MemoryKind::device)) takes device pointers only and never stages.
template <class P, std::enable_if_t<is_partition<P>::value, int> = 0>
optim::StepReport step(P& opt, const std::vector<float*>& params, const std::vector<float*>& grads,
                       MemoryKind memory, StepStaging& staging) {
  using DeviceMem = Kokkos::DefaultExecutionSpace::memory_space;
  constexpr bool host = Kokkos::SpaceAccessibility<Kokkos::HostSpace, DeviceMem>::accessible;
  if (opt.memory() == MemoryKind::device) {
    if (memory == MemoryKind::host && !host)
      return optim::refusal(
          "step: the partition keeps its state in device memory; pass device pointers (MemoryKind::device)",
          -1);
    return opt.step(params, grads);
  }
  if (memory == MemoryKind::host || host) return opt.step(params, grads);
  const std::vector<optim::ParamSpec>& specs = opt.params();
  if (optim::StepReport r = optim::check_pointers(specs, params, grads); !r) return r;
  using Device = Kokkos::View<float*, DeviceMem, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
  const auto size = [&](std::size_t i) {
    return static_cast<std::size_t>(optim::flatten(specs[i].shape).size());
  };
  return detail::staged_step(
      opt, staging, [&](std::size_t i) { return Device(params[i], size(i)); },
      [&](std::size_t i) { return Device(grads[i], size(i)); });
}

}  // namespace schatten::kokkos
