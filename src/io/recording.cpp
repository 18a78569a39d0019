// SPDX-License-Identifier: Apache-2.0
/// \file
/// HDF5 recorder and reader of training recordings (include/schatten/io/recording.hpp; the
/// format is docs/replay-format.md).
#include "schatten/io/recording.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <new>
#include <set>
#include <utility>

#include "disk.hpp"
#include "hdf5_util.hpp"
#include "schatten/io/checkpoint.hpp"  // detail::out_of_memory

namespace schatten::io {

std::atomic<bool>& detail::emulate_fallocate() noexcept {
  static std::atomic<bool> flag{false};
  return flag;
}

namespace {

using h5::fail;
using h5::Handle;

constexpr const char* kFormat = "schatten-recording";
constexpr index_t kMaxElements = index_t(1) << 40;
// HDF5 chunks are limited to 4 GiB; one step of one parameter is one chunk.
constexpr index_t kMaxChunkFloats = (index_t(1) << 30) - 1;

struct BlockDims {
  index_t rows = 0, cols = 0;
};

/// Whether float type `type` of `bytes` bytes has IEEE 754's binary16/32/64 layout (either byte
/// order): sign, exponent and mantissa where IEEE puts them, its exponent bias, no padding bits.
/// HDF5 converts on read whatever layout a file declares, so one flipped bit in a dataset's type
/// message (a bias of 126 for 127) would read every value scaled by 2 without an error.
bool ieee_layout(hid_t type, std::size_t bytes) {
  struct Layout {
    std::size_t spos, epos, esize, mpos, msize, bias;
  };
  const Layout want = bytes == 2   ? Layout{15, 10, 5, 0, 10, 15}
                      : bytes == 4 ? Layout{31, 23, 8, 0, 23, 127}
                                   : Layout{63, 52, 11, 0, 52, 1023};
  std::size_t spos = 0, epos = 0, esize = 0, mpos = 0, msize = 0;
  return H5Tget_fields(type, &spos, &epos, &esize, &mpos, &msize) >= 0 && spos == want.spos &&
         epos == want.epos && esize == want.esize && mpos == want.mpos && msize == want.msize &&
         H5Tget_ebias(type) == want.bias && H5Tget_offset(type) == 0 && H5Tget_precision(type) == 8 * bytes &&
         H5Tget_norm(type) == H5T_NORM_IMPLIED;
}

/// The floating-point element type of a dataset as a name, or "" when it is not a 2/4/8-byte
/// float of IEEE layout (ieee_layout).
std::string float_type_name(hid_t set) {
  Handle type(H5Dget_type(set), H5Tclose);
  if (!type.ok() || H5Tget_class(type.get()) != H5T_FLOAT) return "";
  const std::size_t bytes = H5Tget_size(type.get());
  if ((bytes != 2 && bytes != 4 && bytes != 8) || !ieee_layout(type.get(), bytes)) return "";
  return bytes == 2 ? "float16" : bytes == 4 ? "float32" : "float64";
}

std::string describe_type(hid_t set) {
  Handle type(H5Dget_type(set), H5Tclose);
  if (!type.ok()) return "an unreadable type";
  const char* cls = "a non-float";
  switch (H5Tget_class(type.get())) {
    case H5T_INTEGER:
      cls = "integer";
      break;
    case H5T_FLOAT:
      cls = "float";
      break;
    case H5T_STRING:
      cls = "string";
      break;
    default:
      break;
  }
  const std::size_t bytes = H5Tget_size(type.get());
  const bool odd_float = H5Tget_class(type.get()) == H5T_FLOAT && (bytes == 2 || bytes == 4 || bytes == 8) &&
                         !ieee_layout(type.get(), bytes);
  return std::string(cls) + " of " + std::to_string(bytes) + " bytes" +
         (odd_float ? " without IEEE layout" : "");
}

std::string dims_string(const std::vector<hsize_t>& d) {
  std::string s = "(";
  for (std::size_t k = 0; k < d.size(); ++k)
    s += (k ? ", " : "") + std::to_string(d[k]);
  return s + ")";
}

/// "[first, first + count)" for a refused range of steps, without overflowing when the caller
/// passed a huge count.
std::string step_range(std::int64_t first, std::int64_t count) {
  const bool fits = first <= 0 || count <= std::numeric_limits<std::int64_t>::max() - first;
  return "[" + std::to_string(first) + ", " +
         (fits ? std::to_string(first + count) : std::to_string(first) + " + " + std::to_string(count)) + ")";
}

// Disk reservation (Recorder::append). HDF5 1.10 cannot recover from a write that fails on a full
// disk: the file on disk is left unreadable (metadata pointing past its end) and its handle can
// never be closed, so that HDF5's exit handler crashes the process (docs/reliability.md, Finding
// 47). So append() first reserves, past the end of HDF5's allocation, more disk than the step can
// allocate, and refuses the step before any HDF5 call when the reservation fails. The unused
// part is given back at close() only: giving it back after every step (ftruncate, then the next
// fallocate) cost 3.5 ms a step on ext4; the fallocate alone costs about 5 µs (Finding 47).

/// Disk one append may allocate in per-step dataset `set` beyond what it holds: its chunk (written
/// whole when new; rewritten elsewhere when compressed and grown), deflate's worst-case expansion
/// (zlib's compressBound: n + n/4096 + n/16384 + 13 bytes, rounded up to n/1024 + 64) and a node
/// of the chunk index (4 KiB is more than a v1 B-tree node of 2-D chunks takes). 0 when `set`
/// cannot be queried (the reservation is then short, never wrong).
std::uint64_t append_allocation(hid_t set) {
  Handle dcpl(H5Dget_create_plist(set), H5Pclose);
  Handle type(H5Dget_type(set), H5Tclose);
  hsize_t chunk[8];
  const int rank = dcpl.ok() && type.ok() ? H5Pget_chunk(dcpl.get(), 8, chunk) : -1;
  if (rank < 1) return 0;
  std::uint64_t bytes = H5Tget_size(type.get());
  for (int k = 0; k < rank; ++k)
    bytes *= chunk[k];  // ≤ 4 GiB: an HDF5 chunk's limit
  return bytes + bytes / 1024 + 64 + 4096;
}

/// The descriptor through which HDF5 writes `file` when it uses its POSIX (sec2) driver, the
/// default; -1 for another driver (then nothing is reserved).
int posix_descriptor(hid_t file) {
  Handle fapl(H5Fget_access_plist(file), H5Pclose);
  void* handle = nullptr;
  if (!fapl.ok() || H5Pget_driver(fapl.get()) != H5FD_SEC2 ||
      H5Fget_vfd_handle(file, fapl.get(), &handle) < 0 || handle == nullptr)
    return -1;
  return *static_cast<int*>(handle);
}

/// Allocates [offset, offset + length) of the file open as `fd` on a file system without
/// fallocate, by writing: a zero byte into every block from the end of the file (st_size, which
/// may lie below `offset`: HDF5 allocates before it writes) to the range's end, its last byte
/// included, then fdatasync, so that a file system that reports a full disk only when it
/// flushes (NFS) reports it here. A block the file already holds is not written: it holds
/// HDF5's data or an earlier reservation's zeros. The step is the block size, at most 4 KiB (an
/// NFS client reports the server's transfer size instead, as glibc's posix_fallocate notes). A
/// file system that stores zero blocks as holes (compression) gains no reservation from this.
/// Cost: (end − st_size)/block one-byte writes and one fdatasync where the file grows, nothing
/// where it does not. 0 on success, else the errno (ENOSPC, EFBIG, EIO); an fdatasync the file
/// does not support (EINVAL, ENOSYS) counts as success.
int write_disk(int fd, off_t offset, off_t length) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return errno;
  const off_t end = offset + length;  // no overflow: allocate_disk clamps length
  if (st.st_size >= end) return 0;
  const off_t block = std::min<off_t>(4096, std::max<off_t>(512, off_t(st.st_blksize)));
  for (off_t at = st.st_size;;) {
    const off_t where = std::min(at, end - 1);
    ssize_t n;
    do {
      n = ::pwrite(fd, "", 1, where);
    } while (n < 0 && errno == EINTR);
    if (n != 1) return n < 0 ? errno : EIO;
    if (where == end - 1) break;
    at = (where / block + 1) * block;
  }
  const int r = ::fdatasync(fd) == 0 ? 0 : errno;
  return r == EINVAL || r == ENOSYS ? 0 : r;  // a file that cannot be synchronised: written is all
}

/// Allocates disk for [offset, offset + bytes) of the file open as `fd` (growing it), the length
/// clamped to what off_t holds: fallocate, or where the file system has none, write_disk. 0 on
/// success, else the errno (ENOSPC, EFBIG).
int allocate_disk(int fd, std::uint64_t offset, std::uint64_t bytes) {
  const std::uint64_t limit = std::uint64_t(std::numeric_limits<off_t>::max()) - offset;
  const off_t length = off_t(std::min<std::uint64_t>(bytes, limit));
  if (length <= 0) return 0;
  if (detail::emulate_fallocate().load()) return write_disk(fd, off_t(offset), length);
#ifdef __linux__
  int r;
  do {
    r = ::fallocate(fd, 0, off_t(offset), length) == 0 ? 0 : errno;
  } while (r == EINTR);
  return r == EOPNOTSUPP || r == ENOSYS ? write_disk(fd, off_t(offset), length) : r;
#else
  const int r = ::posix_fallocate(fd, off_t(offset), length);
  return r == EINVAL || r == EOPNOTSUPP ? write_disk(fd, off_t(offset), length) : r;
#endif
}

/// Allocates disk for `bytes` past the end of HDF5's allocation in `file` (H5Fget_filesize: the
/// end of the allocated address space, which HDF5's writes never pass). 0 on success, else the
/// errno (ENOSPC, EFBIG).
int reserve_disk(hid_t file, std::uint64_t bytes) {
  const int fd = posix_descriptor(file);
  hsize_t end = 0;
  if (fd < 0 || H5Fget_filesize(file, &end) < 0 || bytes == 0) return 0;
  return allocate_disk(fd, end, bytes);
}

/// Before HDF5 creates `path`: creates it (truncating, as HDF5 then does) and allocates `bytes`
/// from its start, so that a disk without room for the metadata refuses create() before any HDF5
/// call (on a full disk even H5Fcreate leaves HDF5 unable to close the library). 0 when the room
/// exists (the file is left, and `opened` set) or cannot be checked (`path` cannot be opened,
/// e.g. a directory: H5Fcreate then reports it); else the errno, with the file removed.
int probe_disk(const std::string& path, std::uint64_t bytes, bool& opened) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  opened = fd >= 0;
  if (fd < 0) return 0;
  const int r = allocate_disk(fd, 0, bytes);
  ::close(fd);
  if (r != 0) std::remove(path.c_str());
  return r;
}

/// Gives back what reserve_disk() allocated and HDF5 did not use: the file ends where HDF5's
/// allocation ends, which only grows (best effort: a failure leaves a longer file, which HDF5
/// reads as usual).
void release_disk(hid_t file) {
  const int fd = posix_descriptor(file);
  hsize_t end = 0;
  if (fd >= 0 && H5Fget_filesize(file, &end) >= 0) (void)!::ftruncate(fd, off_t(end));
}

}  // namespace

bool recorded_matrix_shape(const std::vector<index_t>& shape, index_t& rows, index_t& cols) {
  index_t r = 1, c = 1;
  for (std::size_t k = 0; k < shape.size(); ++k) {
    const index_t d = shape[k];
    if (d < 0 || (d > 0 && (k == 0 ? r : c) > kMaxElements / d)) return false;
    if (k == 0 && shape.size() >= 2)
      r = d;
    else
      c *= d;
  }
  if (r > 0 && c > kMaxElements / r) return false;
  rows = r;
  cols = c;
  return true;
}

std::int64_t recorder_steps_per_chunk(std::size_t step_bytes, const RecorderOptions& options) {
  if (step_bytes == 0 || options.chunk_bytes <= step_bytes) return 1;
  return std::max<std::int64_t>(
      1, std::min<std::int64_t>(options.max_steps_per_chunk, std::int64_t(options.chunk_bytes / step_bytes)));
}

// ---------------------------------------------------------------------------------------------
// Recorder

struct Recorder::Impl {
  std::string path;
  RecordingInfo info;
  Handle file;
  Handle loss, max_logits;
  std::vector<Handle> grad, value, gram;
  std::vector<BlockDims> dims;
  std::int64_t steps = 0;
  bool failed = false;
  bool checksum = false;  ///< RecorderOptions::checksum (the initial values too: one chunk each)
  /// Disk an append may allocate (reserve_disk): every per-step dataset's append_allocation plus
  /// 64 KiB for the rest (object headers, the step count); the first append also the initial
  /// values (contiguous datasets) and 4 KiB of header each.
  std::uint64_t step_bytes = 0, initial_bytes = 0;
};

Recorder::Recorder() = default;
Recorder::~Recorder() {
  if (impl_) close(nullptr);
}
Recorder::Recorder(Recorder&&) noexcept = default;
Recorder& Recorder::operator=(Recorder&&) noexcept = default;

std::int64_t Recorder::steps() const { return impl_ ? impl_->steps : 0; }

Status Recorder::create(const std::string& path, const RecordingInfo& info, const RecorderOptions& options,
                        std::string* error) {
  bool touched = false;
  try {
    return create_unguarded(path, info, options, error, touched);
  } catch (const std::bad_alloc&) {
    // The local Impl and its handles are gone (unwound) and impl_ was never set: the file that
    // this call created or truncated goes, as after a failed write.
    if (touched) std::remove(path.c_str());
    return detail::out_of_memory(error, "host memory ran out while creating the recording (nothing created)");
  }
}

Status Recorder::create_unguarded(const std::string& path, const RecordingInfo& info,
                                  const RecorderOptions& options, std::string* error, bool& touched) {
  if (impl_) return fail(error, "this Recorder already has a file open ('" + impl_->path + "')");
  if (path.empty()) return fail(error, "empty recording path");
  if (info.params.empty()) return fail(error, "a recording needs at least one parameter");
  if (options.gzip_level < 0 || options.gzip_level > 9)
    return fail(error, "gzip_level " + std::to_string(options.gzip_level) + " is not in 0..9");
  if (options.max_steps_per_chunk < 1 || options.max_steps_per_chunk > 4096)
    return fail(error,
                "max_steps_per_chunk " + std::to_string(options.max_steps_per_chunk) + " is not in 1..4096");
  if (info.max_logit_heads < 0 || info.max_logit_heads > kMaxChunkFloats)
    return fail(error, "max_logit_heads " + std::to_string(info.max_logit_heads) + " is not in 0.." +
                           std::to_string(kMaxChunkFloats));
  std::set<std::string> names;
  std::vector<BlockDims> dims;
  for (const RecordedParam& p : info.params) {
    if (p.name.empty()) return fail(error, "a parameter has an empty name");
    if (!names.insert(p.name).second) return fail(error, "parameter name '" + p.name + "' appears twice");
    BlockDims d;
    if (!recorded_matrix_shape(p.shape, d.rows, d.cols))
      return fail(error, "parameter '" + p.name + "' has a negative or too large extent");
    if (d.rows * d.cols == 0) return fail(error, "parameter '" + p.name + "' has no elements");
    if (d.rows * d.cols > kMaxChunkFloats || (p.has_act_gram && d.cols * d.cols > kMaxChunkFloats))
      return fail(error, "parameter '" + p.name + "' is too large for one HDF5 chunk (4 GiB)");
    if (p.has_act_gram && p.shape.size() < 2)
      return fail(error, "parameter '" + p.name + "' is not a matrix: it has no input-activation Gram");
    dims.push_back(d);
  }
  std::error_code ec;
  if (!options.overwrite && std::filesystem::exists(path, ec))
    return fail(error, "'" + path + "' exists (set RecorderOptions::overwrite to replace it)");

  // Disk for the metadata first (the reservation's comment above): 64 KiB and 8 KiB a parameter
  // (measured: 1.6 KiB a parameter with a gradient only, 67.5 KB for 41 parameters).
  const std::uint64_t metadata_bytes =
      (std::uint64_t(64) << 10) + (std::uint64_t(8) << 10) * info.params.size();
  bool probed = false;
  const int probe_error = probe_disk(path, metadata_bytes, probed);
  touched = probed;  // probe_disk created or truncated `path` (never a directory: its open failed)
  if (const int err = probe_error; err != 0)
    return fail(error,
                "cannot reserve " + std::to_string(metadata_bytes) + " bytes of disk for the metadata of '" +
                    path + "': " + std::strerror(err) + " (nothing created)",
                Status::internal_error);
  h5::QuietErrors quiet;
  auto impl = std::make_unique<Impl>();
  impl->path = path;
  impl->info = info;
  impl->dims = dims;
  impl->checksum = options.checksum;
  impl->file = Handle(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
  if (!impl->file.ok()) {
    if (probed) std::remove(path.c_str());  // the probe's file (never a directory: open failed)
    return fail(error, "cannot create '" + path + "' (directory missing or not writable?)");
  }
  touched = true;
  (void)reserve_disk(impl->file.get(), metadata_bytes);  // held from here (probe_disk checked the room)
  const hid_t f = impl->file.get();
  const int version = kRecordingSchemaVersion;
  const std::int64_t zero = 0, nparams = std::int64_t(info.params.size());
  bool ok = h5::write_string_attr(f, "format", kFormat) &&
            h5::write_scalar_attr(f, "schema_version", H5T_NATIVE_INT32, &version) &&
            h5::write_scalar_attr(f, "completed_steps", H5T_NATIVE_INT64, &zero) &&
            h5::write_scalar_attr(f, "num_params", H5T_NATIVE_INT64, &nparams) &&
            h5::write_string_attr(f, "model", info.model) &&
            h5::write_string_attr(f, "producer", info.producer);
  if (ok) {
    impl->loss =
        Handle(h5::create_extendible(f, "loss", H5T_IEEE_F64LE, {}, 0, 1024, options.checksum), H5Dclose);
    ok = impl->loss.ok();
  }
  if (ok && info.max_logit_heads > 0) {  // chunked like a parameter's per-step dataset
    const hsize_t h = hsize_t(info.max_logit_heads);
    impl->max_logits = Handle(
        h5::create_extendible(f, "max_logits", H5T_IEEE_F32LE, {h}, options.gzip_level,
                              hsize_t(recorder_steps_per_chunk(std::size_t(h) * sizeof(float), options)),
                              options.checksum),
        H5Dclose);
    ok = impl->max_logits.ok();
  }
  Handle params(ok ? H5Gcreate2(f, "params", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT) : -1, H5Gclose);
  ok = ok && params.ok();
  for (std::size_t i = 0; ok && i < info.params.size(); ++i) {
    const RecordedParam& p = info.params[i];
    Handle g(H5Gcreate2(params.get(), std::to_string(i).c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
             H5Gclose);
    std::vector<std::int64_t> shape(p.shape.begin(), p.shape.end());
    ok = g.ok() && h5::write_string_attr(g.get(), "name", p.name) &&
         h5::write_attr(g.get(), "shape", H5T_NATIVE_INT64, shape.data(), shape.size()) &&
         h5::write_string_attr(g.get(), "dtype", p.dtype);
    const hsize_t r = hsize_t(dims[i].rows), c = hsize_t(dims[i].cols);
    auto make = [&](const char* name, std::vector<hsize_t> inner) {
      const hsize_t floats = inner[0] * inner[1];
      return Handle(h5::create_extendible(g.get(), name, H5T_IEEE_F32LE, inner, options.gzip_level,
                                          hsize_t(recorder_steps_per_chunk(floats * sizeof(float), options)),
                                          options.checksum),
                    H5Dclose);
    };
    impl->grad.push_back(ok ? make("grad", {r, c}) : Handle());
    impl->value.push_back(ok && p.has_value ? make("value", {r, c}) : Handle());
    impl->gram.push_back(ok && p.has_act_gram ? make("act_gram", {c, c}) : Handle());
    ok = ok && impl->grad.back().ok() && (!p.has_value || impl->value.back().ok()) &&
         (!p.has_act_gram || impl->gram.back().ok());
  }
  params.reset();
  if (ok) {
    impl->step_bytes = std::uint64_t(64) << 10;
    for (const Handle* h : {&impl->loss, &impl->max_logits})
      if (h->ok()) impl->step_bytes += append_allocation(h->get());
    for (auto* v : {&impl->grad, &impl->value, &impl->gram})
      for (const Handle& h : *v)
        if (h.ok()) impl->step_bytes += append_allocation(h.get());
    for (std::size_t i = 0; i < info.params.size(); ++i)
      if (info.params[i].has_initial)
        impl->initial_bytes += std::uint64_t(dims[i].rows * dims[i].cols) * sizeof(float) + 4096;
  }
  if (!ok || H5Fflush(f, H5F_SCOPE_GLOBAL) < 0) {
    impl.reset();  // closes every handle before the file is removed
    std::remove(path.c_str());
    return fail(error, "cannot write the metadata of '" + path + "'", Status::internal_error);
  }
  impl_ = std::move(impl);
  return Status::ok;
}

Status Recorder::append(const StepData& step, std::string* error) {
  try {
    return append_unguarded(step, error);
  } catch (const std::bad_alloc&) {
    // Only the checks' and the failures' messages allocate: the writes themselves do not (the
    // initial datasets' names are formatted in place), so either nothing was written or a
    // failed write had already closed the recorder.
    if (impl_ && impl_->failed) {
      detail::out_of_memory(
          error,
          "a write to the recording failed (and host memory ran out composing the message); "
          "the recorder refuses further appends");
      return Status::internal_error;
    }
    return detail::out_of_memory(
        error,
        "host memory ran out before the step was written: nothing was written (append may be retried)");
  }
}

Status Recorder::append_unguarded(const StepData& step, std::string* error) {
  if (!impl_) return fail(error, "append() before a successful create()");
  if (impl_->failed)
    return fail(error, "an earlier write to '" + impl_->path + "' failed; the recorder is closed");
  const auto& ps = impl_->info.params;
  const std::size_t n = ps.size();
  // Every pointer is checked before anything is written.
  auto check = [&](const std::vector<const float*>& v, const char* what, bool (*wanted)(const RecordedParam&),
                   std::string& msg) {
    bool any = false;
    for (const auto& p : ps)
      any = any || wanted(p);
    if (!any && v.empty()) return true;
    if (v.size() != n) {
      msg = std::string("StepData::") + what + " has " + std::to_string(v.size()) + " entries; " +
            std::to_string(n) + " parameters";
      return false;
    }
    for (std::size_t i = 0; i < n; ++i)
      if ((v[i] != nullptr) != wanted(ps[i])) {
        msg = std::string("StepData::") + what + "[" + std::to_string(i) + "] ('" + ps[i].name +
              "') must be " + (wanted(ps[i]) ? "non-null" : "null");
        return false;
      }
    return true;
  };
  std::string msg;
  if (!check(
          step.grads, "grads", [](const RecordedParam&) { return true; }, msg) ||
      !check(
          step.values, "values", [](const RecordedParam& p) { return p.has_value; }, msg) ||
      !check(
          step.act_grams, "act_grams", [](const RecordedParam& p) { return p.has_act_gram; }, msg) ||
      (impl_->steps == 0 &&
       !check(
           step.initial, "initial", [](const RecordedParam& p) { return p.has_initial; }, msg)))
    return fail(error, msg);
  if ((step.max_logits != nullptr) != (impl_->info.max_logit_heads > 0))
    return fail(error, impl_->info.max_logit_heads > 0
                           ? "StepData::max_logits must be non-null (the recording has max_logit_heads = " +
                                 std::to_string(impl_->info.max_logit_heads) + ")"
                           : std::string("StepData::max_logits must be null (max_logit_heads is 0)"));

  h5::QuietErrors quiet;
  const hsize_t t = hsize_t(impl_->steps);
  // Disk for everything below first, so that a full disk refuses the step before HDF5 writes
  // (the reservation's comment above). Nothing is written then: the recorder stays usable.
  const std::uint64_t need = impl_->step_bytes + (impl_->steps == 0 ? impl_->initial_bytes : 0);
  if (const int err = reserve_disk(impl_->file.get(), need); err != 0)
    return fail(error,
                "cannot reserve " + std::to_string(need) + " bytes of disk for step " + std::to_string(t) +
                    " of '" + impl_->path + "': " + std::strerror(err) + "; nothing was written (the " +
                    std::to_string(impl_->steps) + " completed steps are intact; append may be retried)",
                Status::internal_error);
  bool ok = true;
  for (std::size_t i = 0; ok && i < n; ++i) {
    if (impl_->steps == 0 && ps[i].has_initial) {
      char name[48];  // formatted in place: no write of a step allocates (append's catch)
      std::snprintf(name, sizeof name, "params/%zu/initial", i);
      const hsize_t d[2] = {hsize_t(impl_->dims[i].rows), hsize_t(impl_->dims[i].cols)};
      Handle space(H5Screate_simple(2, d, nullptr), H5Sclose);
      // Contiguous, or with the checksum one chunk of the whole matrix (Fletcher-32 needs chunks;
      // create() limits a parameter to one chunk).
      Handle dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
      ok = dcpl.ok() &&
           (!impl_->checksum || (H5Pset_chunk(dcpl.get(), 2, d) >= 0 && H5Pset_fletcher32(dcpl.get()) >= 0));
      Handle set(ok ? H5Dcreate2(impl_->file.get(), name, H5T_IEEE_F32LE, space.get(), H5P_DEFAULT,
                                 dcpl.get(), H5P_DEFAULT)
                    : -1,
                 H5Dclose);
      ok = set.ok() &&
           H5Dwrite(set.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, step.initial[i]) >= 0;
    }
    ok = ok && h5::append_step(impl_->grad[i].get(), t, H5T_NATIVE_FLOAT, step.grads[i]);
    if (ps[i].has_value)
      ok = ok && h5::append_step(impl_->value[i].get(), t, H5T_NATIVE_FLOAT, step.values[i]);
    if (ps[i].has_act_gram)
      ok = ok && h5::append_step(impl_->gram[i].get(), t, H5T_NATIVE_FLOAT, step.act_grams[i]);
  }
  ok = ok && h5::append_step(impl_->loss.get(), t, H5T_NATIVE_DOUBLE, &step.loss);
  if (step.max_logits)
    ok = ok && h5::append_step(impl_->max_logits.get(), t, H5T_NATIVE_FLOAT, step.max_logits);
  // The data of step t reaches the OS before the count that makes it visible (crash survival).
  ok = ok && H5Fflush(impl_->file.get(), H5F_SCOPE_GLOBAL) >= 0;
  const std::int64_t completed = impl_->steps + 1;
  ok = ok && h5::update_attr(impl_->file.get(), "completed_steps", H5T_NATIVE_INT64, &completed);
  ok = ok && H5Fflush(impl_->file.get(), H5F_SCOPE_GLOBAL) >= 0;
  if (!ok) {
    impl_->failed = true;
    return fail(error, "cannot write step " + std::to_string(t) + " to '" + impl_->path + "' (disk full?)",
                Status::internal_error);
  }
  impl_->steps = completed;
  return Status::ok;
}

Status Recorder::close(std::string* error) {
  if (!impl_) return Status::ok;
  // No allocation unless the close fails: the destructor calls this, and must not throw.
  const std::unique_ptr<Impl> impl = std::move(impl_);
  h5::QuietErrors quiet;
  if (impl->file.ok()) release_disk(impl->file.get());
  impl->loss.reset();
  impl->max_logits.reset();
  for (auto* v : {&impl->grad, &impl->value, &impl->gram})
    for (Handle& h : *v)
      h.reset();
  if (impl->file.reset()) return Status::ok;
  try {
    return fail(error, "closing '" + impl->path + "' failed", Status::internal_error);
  } catch (const std::bad_alloc&) {
    detail::out_of_memory(error,
                          "closing the recording failed (and host memory ran out composing the message)");
    return Status::internal_error;
  }
}

// ---------------------------------------------------------------------------------------------
// Reader

struct RecordingReader::Impl {
  std::string path;
  RecordingInfo info;
  Handle file;
  Handle loss, max_logits;
  std::vector<Handle> grad, initial, value, gram;
};

RecordingReader::RecordingReader() = default;
RecordingReader::~RecordingReader() = default;
RecordingReader::RecordingReader(RecordingReader&&) noexcept = default;
RecordingReader& RecordingReader::operator=(RecordingReader&&) noexcept = default;

bool RecordingReader::is_open() const { return impl_ != nullptr; }
const RecordingInfo& RecordingReader::info() const {
  static const RecordingInfo empty;
  return impl_ ? impl_->info : empty;
}
void RecordingReader::close() {
  h5::QuietErrors quiet;
  impl_.reset();
}

namespace {
/// True unless `set` is chunked with a chunk shape that HDF5 itself refuses at creation: a rank
/// other than the dataset's, a zero extent, an extent beyond a fixed maximum dimension, or a
/// chunk of 4 GiB or more (HDF5's limit). Only a damaged file holds one. Cost: reads metadata.
bool chunking_possible(hid_t set, hid_t space, int rank) {
  Handle dcpl(H5Dget_create_plist(set), H5Pclose);
  Handle type(H5Dget_type(set), H5Tclose);
  if (!dcpl.ok() || !type.ok() || rank < 1 || rank > 8) return false;
  if (H5Pget_layout(dcpl.get()) != H5D_CHUNKED) return true;
  hsize_t chunk[8], dims[8], maxdims[8];
  if (H5Pget_chunk(dcpl.get(), rank, chunk) != rank) return false;
  H5Sget_simple_extent_dims(space, dims, maxdims);
  double bytes = double(H5Tget_size(type.get()));
  for (int k = 0; k < rank; ++k) {
    if (chunk[k] == 0 || (maxdims[k] != H5S_UNLIMITED && chunk[k] > maxdims[k])) return false;
    bytes *= double(chunk[k]);
  }
  return bytes < 4294967296.0;
}

/// Opens dataset `name` under `loc` and checks it: a float of 2/4/8 bytes, of the given rank;
/// extent 0 ≥ steps when `per_step`, the other extents equal to `inner`. Sets `msg` (naming
/// `where`) and returns an invalid handle on any mismatch.
Handle open_checked(hid_t loc, const char* name, const std::string& where, bool per_step, std::int64_t steps,
                    const std::vector<hsize_t>& inner, std::string& msg) {
  // Unfiltered chunks are read straight into the caller's buffer when HDF5's chunk cache is off;
  // through the cache every read is one more copy (half the read time of the earlier sample,
  // docs/benchmarks/cpu-replay.md). So a per-step dataset is opened with the cache off, and
  // opened again with the default cache only when it turns out to be filtered (gzip): a chunk of
  // several steps is then inflated once, not once per step read. One open per dataset otherwise.
  Handle dapl(per_step ? H5Pcreate(H5P_DATASET_ACCESS) : -1, H5Pclose);
  const bool no_cache = dapl.ok() && H5Pset_chunk_cache(dapl.get(), 0, 0, 1.0) >= 0;
  Handle set(H5Dopen2(loc, name, no_cache ? dapl.get() : H5P_DEFAULT), H5Dclose);
  if (!set.ok()) {
    msg = where + " cannot be opened (damaged file?)";
    return Handle();
  }
  if (float_type_name(set.get()).empty()) {
    msg = where + " has type " + describe_type(set.get()) + "; expected IEEE float16, float32 or float64";
    return Handle();
  }
  Handle space(H5Dget_space(set.get()), H5Sclose);
  const int rank = space.ok() ? H5Sget_simple_extent_ndims(space.get()) : -1;
  const int want = int(inner.size()) + (per_step ? 1 : 0);
  std::vector<hsize_t> d(rank > 0 && rank <= 8 ? std::size_t(rank) : 0);
  if (!d.empty()) H5Sget_simple_extent_dims(space.get(), d.data(), nullptr);
  std::vector<hsize_t> expect;
  if (per_step) expect.push_back(hsize_t(steps));
  expect.insert(expect.end(), inner.begin(), inner.end());
  bool good = rank == want;
  for (int k = 0; good && k < want; ++k)
    good = (per_step && k == 0) ? d[0] >= hsize_t(steps) : d[std::size_t(k)] == expect[std::size_t(k)];
  if (good && !chunking_possible(set.get(), space.get(), rank)) {
    // HDF5 1.10 trusts a stored chunk shape when it reads: a single flipped byte there (a chunk of
    // 65288 rows in a dataset of 8) made H5Dread crash (docs/reliability.md, Finding 45).
    msg = where + " has a chunk shape no HDF5 writer can create (damaged file?)";
    return Handle();
  }
  if (good && no_cache) {
    Handle dcpl(H5Dget_create_plist(set.get()), H5Pclose);
    if (!dcpl.ok() || H5Pget_nfilters(dcpl.get()) != 0) {
      Handle cached(H5Dopen2(loc, name, H5P_DEFAULT), H5Dclose);
      if (cached.ok()) set = std::move(cached);
    }
  }
  if (!good) {
    msg =
        where + " has shape " + (rank < 0 ? std::string("(unreadable)") : dims_string(d)) + "; expected " +
        (per_step ? "(≥" + std::to_string(steps) + dims_string(inner).replace(0, 1, inner.empty() ? "" : ", ")
                  : dims_string(inner));
    return Handle();
  }
  return set;
}

/// The number of steps (indices of the first axis) of a per-step dataset whose storage is
/// allocated: allocated chunks × steps per chunk, or the contiguous bytes / bytes per step; -1
/// when HDF5 cannot tell. An upper bound on the steps a writer wrote. Cost: one walk over the
/// chunk index (HDF5 1.10.5+).
std::int64_t allocated_steps(hid_t set) {
  Handle dcpl(H5Dget_create_plist(set), H5Pclose);
  Handle space(H5Dget_space(set), H5Sclose);
  Handle type(H5Dget_type(set), H5Tclose);
  if (!dcpl.ok() || !space.ok() || !type.ok()) return -1;
  const int rank = H5Sget_simple_extent_ndims(space.get());
  if (rank < 1 || rank > 8) return -1;
  hsize_t dims[8];
  H5Sget_simple_extent_dims(space.get(), dims, nullptr);
  if (H5Pget_layout(dcpl.get()) == H5D_CHUNKED) {
    hsize_t chunk[8], chunks = 0;
    if (H5Pget_chunk(dcpl.get(), rank, chunk) != rank || chunk[0] == 0) return -1;
    if (H5Dget_num_chunks(set, space.get(), &chunks) < 0) return -1;
    for (int k = 1; k < rank; ++k)  // chunks per step row
      chunks /= std::max<hsize_t>(1, (dims[k] + chunk[k] - 1) / chunk[k]);
    const hsize_t cap = hsize_t(std::numeric_limits<std::int64_t>::max());
    return chunks > cap / chunk[0] ? std::numeric_limits<std::int64_t>::max()
                                   : std::int64_t(chunks * chunk[0]);
  }
  hsize_t step_bytes = H5Tget_size(type.get());
  for (int k = 1; k < rank; ++k)
    step_bytes *= dims[k];
  if (step_bytes == 0) return -1;
  return std::int64_t(H5Dget_storage_size(set) / step_bytes);
}
}  // namespace

Status RecordingReader::open(const std::string& path, std::string* error) {
  close();
  try {
    return open_unguarded(path, error);
  } catch (const std::bad_alloc&) {  // the local Impl, unwound, closed what it had opened
    return detail::out_of_memory(error, "host memory ran out while opening the recording (not opened)");
  }
}

Status RecordingReader::open_unguarded(const std::string& path, std::string* error) {
  h5::QuietErrors quiet;
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    return fail(error, "'" + path + "' does not exist or is not a file");
  const std::string file_msg = "'" + path + "': ";
  auto impl = std::make_unique<Impl>();
  impl->path = path;
  impl->file = Handle(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (!impl->file.ok()) {
    // Which message: the signature test opens the file again, so it runs only on failure.
#if H5_VERSION_GE(1, 12, 0)
    if (H5Fis_accessible(path.c_str(), H5P_DEFAULT) <= 0)
#else
    if (H5Fis_hdf5(path.c_str()) <= 0)
#endif
      return fail(error, file_msg + "not an HDF5 file (random bytes or a damaged header)");
    return fail(error, file_msg +
                           "HDF5 cannot open it (truncated or corrupt file; or left marked open by a writer "
                           "that died using a file format newer than the earliest: `h5clear -s` clears the "
                           "mark, docs/replay-format.md)");
  }
  const hid_t f = impl->file.get();
  RecordingInfo& info = impl->info;

  std::string format;
  if (!h5::read_string_attr(f, "format", format) || format != kFormat)
    return fail(error, file_msg + "not a schatten recording (root attribute 'format' is missing or not '" +
                           std::string(kFormat) + "')");
  std::int64_t version = 0, steps = 0, nparams = 0;
  if (!h5::read_int_attr(f, "schema_version", version))
    return fail(error, file_msg + "root attribute 'schema_version' is missing or not an integer");
  if (version > kRecordingSchemaVersion)
    return fail(error, file_msg + "schema version " + std::to_string(version) +
                           " is newer than this library reads (" + std::to_string(kRecordingSchemaVersion) +
                           "): update schatten");
  if (version < 1) return fail(error, file_msg + "invalid schema version " + std::to_string(version));
  info.schema_version = int(version);
  if (!h5::read_int_attr(f, "completed_steps", steps) || steps < 0)
    return fail(error, file_msg + "root attribute 'completed_steps' is missing, not an integer or negative");
  if (!h5::read_int_attr(f, "num_params", nparams) || nparams < 1 || nparams > 1000000)
    return fail(error, file_msg + "root attribute 'num_params' is missing or not in 1..1000000");
  info.steps = steps;
  h5::read_string_attr(f, "model", info.model);  // free text; absent is fine
  h5::read_string_attr(f, "producer", info.producer);

  std::string msg;
  if (!h5::exists(f, "loss")) return fail(error, file_msg + "dataset /loss is missing");
  impl->loss = open_checked(f, "loss", "/loss", true, steps, {}, msg);
  if (!impl->loss.ok()) return fail(error, file_msg + msg);
  // Every completed step has a loss, so its storage is allocated: a count beyond the steps that
  // /loss's allocated chunks (or contiguous bytes) hold comes from a damaged or hostile file,
  // whose extents may say anything (2^61 steps in 84 KB: check_recording looped for ever).
  if (const std::int64_t held = allocated_steps(impl->loss.get()); held < steps)
    return fail(error, file_msg + "completed_steps is " + std::to_string(steps) +
                           " but /loss has storage for " +
                           (held < 0 ? std::string("an unknown number of") : std::to_string(held)) +
                           " steps (damaged file?)");
  if (h5::exists(f, "max_logits")) {  // optional: (S, H) with H ≥ 1 taken from the file
    Handle probe(H5Dopen2(f, "max_logits", H5P_DEFAULT), H5Dclose);
    Handle space(probe.ok() ? H5Dget_space(probe.get()) : -1, H5Sclose);
    hsize_t d[2] = {0, 0};
    const bool shaped = space.ok() && H5Sget_simple_extent_ndims(space.get()) == 2 &&
                        H5Sget_simple_extent_dims(space.get(), d, nullptr) == 2;
    if (!shaped)
      return fail(
          error, file_msg + "dataset /max_logits " +
                     (probe.ok() ? "is not a 2-D (steps, heads) array" : "cannot be opened (damaged file?)"));
    if (d[1] < 1 || d[1] > hsize_t(kMaxChunkFloats))
      return fail(error, file_msg + "dataset /max_logits has " + std::to_string(d[1]) +
                             " heads; expected 1.." + std::to_string(kMaxChunkFloats));
    impl->max_logits = open_checked(f, "max_logits", "dataset /max_logits", true, steps, {d[1]}, msg);
    if (!impl->max_logits.ok()) return fail(error, file_msg + msg);
    info.max_logit_heads = std::int64_t(d[1]);
  }
  if (!h5::exists(f, "params")) return fail(error, file_msg + "group /params is missing");
  Handle params(H5Gopen2(f, "params", H5P_DEFAULT), H5Gclose);
  if (!params.ok()) return fail(error, file_msg + "group /params cannot be opened");
  std::set<std::string> names;
  for (std::int64_t i = 0; i < nparams; ++i) {
    const std::string key = std::to_string(i), where = "/params/" + key;
    if (!h5::exists(params.get(), key.c_str()))
      return fail(
          error, file_msg + "group " + where + " is missing (num_params is " + std::to_string(nparams) + ")");
    Handle g(H5Gopen2(params.get(), key.c_str(), H5P_DEFAULT), H5Gclose);
    if (!g.ok()) return fail(error, file_msg + where + " is not a group");
    RecordedParam p;
    std::vector<std::int64_t> shape;
    if (!h5::read_string_attr(g.get(), "name", p.name) || p.name.empty())
      return fail(error, file_msg + where + ": attribute 'name' is missing, empty or not a string");
    if (!names.insert(p.name).second)
      return fail(error, file_msg + "parameter name '" + p.name + "' appears twice");
    if (!h5::read_int_array_attr(g.get(), "shape", shape))
      return fail(error, file_msg + where + " ('" + p.name +
                             "'): attribute 'shape' is missing or not an integer array");
    p.shape.assign(shape.begin(), shape.end());
    if (!recorded_matrix_shape(p.shape, p.rows, p.cols) || p.rows * p.cols == 0)
      return fail(error, file_msg + where + " ('" + p.name +
                             "'): attribute 'shape' has a negative, zero or huge extent");
    if (!h5::read_string_attr(g.get(), "dtype", p.dtype)) p.dtype = "";  // informative only
    const std::string pw = where + " ('" + p.name + "')";
    const hsize_t r = hsize_t(p.rows), c = hsize_t(p.cols);
    if (!h5::exists(g.get(), "grad")) return fail(error, file_msg + "dataset " + pw + "/grad is missing");
    Handle grad = open_checked(g.get(), "grad", "dataset " + pw + "/grad", true, steps, {r, c}, msg);
    if (!grad.ok()) return fail(error, file_msg + msg);
    p.grad_dtype = float_type_name(grad.get());
    Handle initial, value, gram;
    if ((p.has_initial = h5::exists(g.get(), "initial"))) {
      initial = open_checked(g.get(), "initial", "dataset " + pw + "/initial", false, steps, {r, c}, msg);
      if (!initial.ok()) return fail(error, file_msg + msg);
    }
    if ((p.has_value = h5::exists(g.get(), "value"))) {
      value = open_checked(g.get(), "value", "dataset " + pw + "/value", true, steps, {r, c}, msg);
      if (!value.ok()) return fail(error, file_msg + msg);
    }
    if ((p.has_act_gram = h5::exists(g.get(), "act_gram"))) {
      gram = open_checked(g.get(), "act_gram", "dataset " + pw + "/act_gram", true, steps, {c, c}, msg);
      if (!gram.ok()) return fail(error, file_msg + msg);
    }
    impl->grad.push_back(std::move(grad));
    impl->initial.push_back(std::move(initial));
    impl->value.push_back(std::move(value));
    impl->gram.push_back(std::move(gram));
    info.params.push_back(std::move(p));
  }
  impl_ = std::move(impl);
  return Status::ok;
}

namespace {
/// What a read returns when composing its message exhausts the heap (the reader is unchanged).
constexpr const char* kReadOutOfMemory = "host memory ran out while reading the recording";

Status read_from_unguarded(const std::string& path, const RecordingInfo& info, hid_t set, const char* what,
                           std::int64_t first, std::int64_t count, std::size_t param, float* out,
                           std::string* error) {
  const std::string where = "'" + path + "': ";
  if (param >= info.params.size())
    return fail(error, where + "parameter index " + std::to_string(param) + " out of range (" +
                           std::to_string(info.params.size()) + " parameters)");
  if (first < 0 || count < 1 || first >= info.steps || count > info.steps - first)
    return fail(error,
                where + (count == 1 ? "step " + std::to_string(first) : "steps " + step_range(first, count)) +
                    " out of range (" + std::to_string(info.steps) + " completed steps)");
  if (!out) return fail(error, "null output buffer");
  if (set < 0) return fail(error, where + "parameter '" + info.params[param].name + "' has no " + what);
  h5::QuietErrors quiet;
  if (!h5::read_steps(set, hsize_t(first), hsize_t(count), H5T_NATIVE_FLOAT, out))
    return fail(
        error, where + "cannot read " +
                   (count == 1 ? "step " + std::to_string(first)
                               : "steps " + std::to_string(first) + "–" + std::to_string(first + count - 1)) +
                   " of '" + info.params[param].name + "'/" + what + " (damaged chunk?)");
  return Status::ok;
}

Status read_from(const std::string& path, const RecordingInfo& info, hid_t set, const char* what,
                 std::int64_t first, std::int64_t count, std::size_t param, float* out, std::string* error) {
  return detail::allocation_as_status(
      [&] { return read_from_unguarded(path, info, set, what, first, count, param, out, error); }, error,
      kReadOutOfMemory);
}
}  // namespace

Status RecordingReader::read_grad(std::int64_t step, std::size_t param, float* out,
                                  std::string* error) const {
  return read_grads(step, 1, param, out, error);
}
Status RecordingReader::read_grads(std::int64_t first, std::int64_t count, std::size_t param, float* out,
                                   std::string* error) const {
  if (!impl_) return fail(error, "read before a successful open()");
  return read_from(impl_->path, impl_->info,
                   param < impl_->grad.size() ? impl_->grad[param].get() : hid_t(-1), "grad", first, count,
                   param, out, error);
}
Status RecordingReader::read_value(std::int64_t step, std::size_t param, float* out,
                                   std::string* error) const {
  return read_values(step, 1, param, out, error);
}
Status RecordingReader::read_values(std::int64_t first, std::int64_t count, std::size_t param, float* out,
                                    std::string* error) const {
  if (!impl_) return fail(error, "read before a successful open()");
  return read_from(impl_->path, impl_->info,
                   param < impl_->value.size() ? impl_->value[param].get() : hid_t(-1), "value", first, count,
                   param, out, error);
}
Status RecordingReader::read_act_gram(std::int64_t step, std::size_t param, float* out,
                                      std::string* error) const {
  return read_act_grams(step, 1, param, out, error);
}
Status RecordingReader::read_act_grams(std::int64_t first, std::int64_t count, std::size_t param, float* out,
                                       std::string* error) const {
  if (!impl_) return fail(error, "read before a successful open()");
  return read_from(impl_->path, impl_->info,
                   param < impl_->gram.size() ? impl_->gram[param].get() : hid_t(-1), "act_gram", first,
                   count, param, out, error);
}
Status RecordingReader::read_initial(std::size_t param, float* out, std::string* error) const {
  return detail::allocation_as_status([&] { return read_initial_unguarded(param, out, error); }, error,
                                      kReadOutOfMemory);
}
Status RecordingReader::read_initial_unguarded(std::size_t param, float* out, std::string* error) const {
  if (!impl_) return fail(error, "read before a successful open()");
  const std::string where = "'" + impl_->path + "': ";
  if (param >= impl_->info.params.size()) return fail(error, where + "parameter index out of range");
  if (!out) return fail(error, "null output buffer");
  if (impl_->initial[param].ok()) {
    h5::QuietErrors quiet;
    if (H5Dread(impl_->initial[param].get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0)
      return fail(error, where + "cannot read the initial value of '" + impl_->info.params[param].name + "'");
    return Status::ok;
  }
  if (impl_->value[param].ok() && impl_->info.steps > 0) return read_value(0, param, out, error);
  return fail(error, where + "parameter '" + impl_->info.params[param].name +
                         "' has neither an initial value nor recorded values");
}
Status RecordingReader::read_loss(std::int64_t step, double* out, std::string* error) const {
  return read_losses(step, 1, out, error);
}
Status RecordingReader::read_losses(std::int64_t first, std::int64_t count, double* out,
                                    std::string* error) const {
  return detail::allocation_as_status([&] { return read_losses_unguarded(first, count, out, error); }, error,
                                      kReadOutOfMemory);
}
Status RecordingReader::read_losses_unguarded(std::int64_t first, std::int64_t count, double* out,
                                              std::string* error) const {
  if (!impl_) return fail(error, "read before a successful open()");
  if (first < 0 || count < 1 || first >= impl_->info.steps || count > impl_->info.steps - first)
    return fail(error, count == 1 ? "loss step " + std::to_string(first) + " out of range"
                                  : "loss steps " + step_range(first, count) + " out of range (" +
                                        std::to_string(impl_->info.steps) + " completed steps)");
  if (!out) return fail(error, "null output buffer");
  h5::QuietErrors quiet;
  if (!h5::read_steps(impl_->loss.get(), hsize_t(first), hsize_t(count), H5T_NATIVE_DOUBLE, out))
    return fail(error,
                "'" + impl_->path + "': cannot read /loss at step" +
                    (count == 1 ? " " + std::to_string(first)
                                : "s " + std::to_string(first) + "–" + std::to_string(first + count - 1)));
  return Status::ok;
}

Status RecordingReader::read_max_logits(std::int64_t first, std::int64_t count, float* out,
                                        std::string* error) const {
  return detail::allocation_as_status([&] { return read_max_logits_unguarded(first, count, out, error); },
                                      error, kReadOutOfMemory);
}
Status RecordingReader::read_max_logits_unguarded(std::int64_t first, std::int64_t count, float* out,
                                                  std::string* error) const {
  if (!impl_) return fail(error, "read before a successful open()");
  const std::string where = "'" + impl_->path + "': ";
  if (!impl_->max_logits.ok()) return fail(error, where + "the recording has no /max_logits");
  if (first < 0 || count < 1 || first >= impl_->info.steps || count > impl_->info.steps - first)
    return fail(error, where + "max_logits steps " + step_range(first, count) + " out of range (" +
                           std::to_string(impl_->info.steps) + " completed steps)");
  if (!out) return fail(error, "null output buffer");
  h5::QuietErrors quiet;
  if (!h5::read_steps(impl_->max_logits.get(), hsize_t(first), hsize_t(count), H5T_NATIVE_FLOAT, out))
    return fail(error, where + "cannot read /max_logits at steps " + std::to_string(first) + "–" +
                           std::to_string(first + count - 1) + " (damaged chunk?)");
  return Status::ok;
}

Status open_recording(const std::string& path, RecordingReader& reader, std::string* error) {
  return reader.open(path, error);
}

namespace {
Status check_recording_unguarded(const std::string& path, RecordingInfo* info, std::string* error) {
  RecordingReader r;
  if (Status s = r.open(path, error); s != Status::ok) return s;
  const RecordingInfo& in = r.info();
  std::size_t largest = 1;
  for (const auto& p : in.params)
    largest =
        std::max({largest, std::size_t(p.rows * p.cols), p.has_act_gram ? std::size_t(p.cols * p.cols) : 0});
  std::vector<float> buf(largest);
  for (std::size_t i = 0; i < in.params.size(); ++i) {
    if (in.params[i].has_initial)
      if (Status s = r.read_initial(i, buf.data(), error); s != Status::ok) return s;
    for (std::int64_t t = 0; t < in.steps; ++t) {
      if (Status s = r.read_grad(t, i, buf.data(), error); s != Status::ok) return s;
      if (in.params[i].has_value)
        if (Status s = r.read_value(t, i, buf.data(), error); s != Status::ok) return s;
      if (in.params[i].has_act_gram)
        if (Status s = r.read_act_gram(t, i, buf.data(), error); s != Status::ok) return s;
    }
  }
  if (in.steps > 0) {
    std::vector<double> loss(std::size_t(in.steps));
    if (Status s = r.read_losses(0, in.steps, loss.data(), error); s != Status::ok) return s;
  }
  if (in.max_logit_heads > 0) {
    std::vector<float> logits(std::size_t(in.max_logit_heads));
    for (std::int64_t t = 0; t < in.steps; ++t)
      if (Status s = r.read_max_logits(t, 1, logits.data(), error); s != Status::ok) return s;
  }
  if (info) *info = in;
  return Status::ok;
}
}  // namespace

Status check_recording(const std::string& path, RecordingInfo* info, std::string* error) {
  return detail::allocation_as_status([&] { return check_recording_unguarded(path, info, error); }, error,
                                      "host memory ran out while checking the recording");
}

}  // namespace schatten::io
