// SPDX-License-Identifier: Apache-2.0
/// \file
/// Internal HDF5 helpers of the checkpoint and recording readers/writers and schatten-replay (not
/// installed):
/// RAII handles, error silencing, attributes that h5py also writes (fixed- or variable-length
/// strings, scalar or 1-element numbers), and hyperslab I/O of step ranges on extendible datasets.
/// Every function returns false (never throws, never aborts) when HDF5 reports an error.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "schatten/core/status.hpp"

namespace schatten::io::h5 {

/// Closes an HDF5 handle when it goes out of scope; movable, so it can live in containers.
class Handle {
 public:
  Handle() = default;
  Handle(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  ~Handle() { reset(); }
  Handle(Handle&& o) noexcept : id_(o.id_), close_(o.close_) { o.id_ = -1; }
  Handle& operator=(Handle&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = o.id_;
      close_ = o.close_;
      o.id_ = -1;
    }
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  hid_t get() const { return id_; }
  bool ok() const { return id_ >= 0; }
  /// Closes now; returns false if closing failed (for files: the final flush).
  bool reset() {
    bool good = true;
    if (id_ >= 0 && close_) good = close_(id_) >= 0;
    id_ = -1;
    return good;
  }
  /// Gives up ownership: the caller closes the handle.
  void release() { id_ = -1; }

 private:
  hid_t id_ = -1;
  herr_t (*close_)(hid_t) = nullptr;
};

/// The io calls' error report: `msg` into *error (when given), `s` returned.
inline Status fail(std::string* error, const std::string& msg, Status s = Status::invalid_argument) {
  if (error) *error = msg;
  return s;
}

/// Silences HDF5's automatic error printing while alive (errors become statuses and messages).
class QuietErrors {
 public:
  QuietErrors() {
    H5Eget_auto2(H5E_DEFAULT, &func_, &data_);
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  }
  ~QuietErrors() { H5Eset_auto2(H5E_DEFAULT, func_, data_); }
  QuietErrors(const QuietErrors&) = delete;
  QuietErrors& operator=(const QuietErrors&) = delete;

 private:
  H5E_auto2_t func_ = nullptr;
  void* data_ = nullptr;
};

inline bool exists(hid_t loc, const char* name) { return H5Lexists(loc, name, H5P_DEFAULT) > 0; }

/// A fixed-length string attribute (what h5dump shows as a plain string). `cset`: UTF-8 in
/// recordings (h5py's default); checkpoints keep ASCII, as they always stored it (HDF5 does not
/// convert one character set into the other, so the reader's memory type must match).
inline bool write_string_attr(hid_t obj, const char* name, const std::string& value,
                              H5T_cset_t cset = H5T_CSET_UTF8) {
  Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
  if (!type.ok() || H5Tset_size(type.get(), value.empty() ? 1 : value.size()) < 0) return false;
  H5Tset_cset(type.get(), cset);
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  Handle attr(H5Acreate2(obj, name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  const std::string v = value.empty() ? std::string(1, '\0') : value;
  return attr.ok() && H5Awrite(attr.get(), type.get(), v.data()) >= 0;
}

/// A numeric attribute of n elements (n = 0 gives an empty 1-D attribute).
inline bool write_attr(hid_t obj, const char* name, hid_t type, const void* value, hsize_t n = 1) {
  Handle space(H5Screate_simple(1, &n, nullptr), H5Sclose);
  Handle attr(H5Acreate2(obj, name, type, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  return attr.ok() && (n == 0 || H5Awrite(attr.get(), type, value) >= 0);
}

/// A numeric scalar attribute (an HDF5 scalar dataspace): what h5py writes for a Python number,
/// and what `int(f.attrs[name])` reads with any NumPy (a 1-element array, which write_attr gives,
/// cannot be converted by int() since NumPy 2.4). The recording's and the replay output's counts
/// use it (docs/replay-format.md); readers accept either form.
inline bool write_scalar_attr(hid_t obj, const char* name, hid_t type, const void* value) {
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  Handle attr(H5Acreate2(obj, name, type, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  return attr.ok() && H5Awrite(attr.get(), type, value) >= 0;
}

/// Overwrites an existing numeric attribute's value.
inline bool update_attr(hid_t obj, const char* name, hid_t type, const void* value) {
  Handle attr(H5Aopen(obj, name, H5P_DEFAULT), H5Aclose);
  return attr.ok() && H5Awrite(attr.get(), type, value) >= 0;
}

/// Reads a string attribute written as fixed-length (our writers) or variable-length (h5py's
/// default for `str`). False when absent or not a scalar string.
inline bool read_string_attr(hid_t obj, const char* name, std::string& out) {
  if (H5Aexists(obj, name) <= 0) return false;
  Handle attr(H5Aopen(obj, name, H5P_DEFAULT), H5Aclose);
  if (!attr.ok()) return false;
  Handle ftype(H5Aget_type(attr.get()), H5Tclose);
  Handle space(H5Aget_space(attr.get()), H5Sclose);
  if (!ftype.ok() || !space.ok() || H5Tget_class(ftype.get()) != H5T_STRING) return false;
  if (H5Sget_simple_extent_npoints(space.get()) != 1) return false;
  Handle mtype(H5Tcopy(ftype.get()), H5Tclose);
  if (!mtype.ok()) return false;
  const htri_t variable = H5Tis_variable_str(ftype.get());
  if (variable < 0) return false;
  if (variable > 0) {
    char* s = nullptr;
    if (H5Aread(attr.get(), mtype.get(), &s) < 0) return false;
    out = s ? std::string(s) : std::string();
    if (s) H5free_memory(s);
    return true;
  }
  const std::size_t n = H5Tget_size(ftype.get());
  if (n == 0 || n > (std::size_t(1) << 24)) return false;
  std::string s(n, '\0');
  if (H5Aread(attr.get(), mtype.get(), s.data()) < 0) return false;
  s.resize(std::strlen(s.c_str()));
  out = s;
  return true;
}

/// Reads a 1-element integer attribute (scalar or shape (1,)).
inline bool read_int_attr(hid_t obj, const char* name, std::int64_t& out) {
  if (H5Aexists(obj, name) <= 0) return false;
  Handle attr(H5Aopen(obj, name, H5P_DEFAULT), H5Aclose);
  if (!attr.ok()) return false;
  Handle ftype(H5Aget_type(attr.get()), H5Tclose);
  Handle space(H5Aget_space(attr.get()), H5Sclose);
  if (!ftype.ok() || !space.ok() || H5Tget_class(ftype.get()) != H5T_INTEGER) return false;
  if (H5Sget_simple_extent_npoints(space.get()) != 1) return false;
  return H5Aread(attr.get(), H5T_NATIVE_INT64, &out) >= 0;
}

/// Reads an integer attribute of rank ≤ 1 with any number of elements (also an empty or null
/// dataspace, which gives an empty vector).
inline bool read_int_array_attr(hid_t obj, const char* name, std::vector<std::int64_t>& out) {
  if (H5Aexists(obj, name) <= 0) return false;
  Handle attr(H5Aopen(obj, name, H5P_DEFAULT), H5Aclose);
  if (!attr.ok()) return false;
  Handle ftype(H5Aget_type(attr.get()), H5Tclose);
  Handle space(H5Aget_space(attr.get()), H5Sclose);
  if (!ftype.ok() || !space.ok() || H5Tget_class(ftype.get()) != H5T_INTEGER) return false;
  if (H5Sget_simple_extent_type(space.get()) == H5S_NULL) {
    out.clear();
    return true;
  }
  if (H5Sget_simple_extent_ndims(space.get()) > 1) return false;
  const hssize_t n = H5Sget_simple_extent_npoints(space.get());
  if (n < 0 || n > 64) return false;  // a tensor rank above 64 is a corrupt attribute
  std::vector<std::int64_t> v(static_cast<std::size_t>(n));
  if (n > 0 && H5Aread(attr.get(), H5T_NATIVE_INT64, v.data()) < 0) return false;
  out = std::move(v);
  return true;
}

/// Creates an extendible dataset of shape (0, inner...) with chunks of `steps_per_chunk` steps
/// (steps_per_chunk, inner...); optional shuffle + deflate, and optionally a Fletcher-32 checksum of
/// every stored chunk (after compression), which HDF5 verifies on every read.
inline hid_t create_extendible(hid_t loc, const char* name, hid_t type, const std::vector<hsize_t>& inner,
                               int gzip_level, hsize_t steps_per_chunk = 1, bool checksum = false) {
  std::vector<hsize_t> dims{0}, maxdims{H5S_UNLIMITED}, chunk{steps_per_chunk};
  for (hsize_t d : inner) {
    dims.push_back(d);
    maxdims.push_back(d);
    chunk.push_back(d);
  }
  Handle space(H5Screate_simple(int(dims.size()), dims.data(), maxdims.data()), H5Sclose);
  Handle dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  if (!space.ok() || !dcpl.ok() || H5Pset_chunk(dcpl.get(), int(chunk.size()), chunk.data()) < 0) return -1;
  if (gzip_level > 0) {
    if (H5Pset_shuffle(dcpl.get()) < 0 || H5Pset_deflate(dcpl.get(), unsigned(gzip_level)) < 0) return -1;
  }
  if (checksum && H5Pset_fletcher32(dcpl.get()) < 0) return -1;
  return H5Dcreate2(loc, name, type, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT);
}

/// Selects steps [first, first + count) along the first axis of `fspace` (every other extent
/// whole) and creates in `mspace` the matching memory dataspace. The memory space has the
/// selection's rank and extents: with a 1-D memory space for a rank-3 selection, HDF5 1.10
/// copies through its general (per-row) path, measured 100x slower than the same-shape copy
/// (docs/benchmarks/cpu-replay.md).
inline bool select_steps(hid_t fspace, hsize_t first, hsize_t count, Handle& mspace) {
  const int rank = H5Sget_simple_extent_ndims(fspace);
  if (rank < 1 || rank > 8) return false;
  hsize_t dims[8], start[8] = {first}, extent[8] = {count};
  H5Sget_simple_extent_dims(fspace, dims, nullptr);
  if (first + count > dims[0]) return false;
  for (int k = 1; k < rank; ++k) {
    start[k] = 0;
    extent[k] = dims[k];
  }
  mspace = Handle(H5Screate_simple(rank, extent, nullptr), H5Sclose);
  return mspace.ok() && H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, nullptr, extent, nullptr) >= 0;
}

/// Extends an extendible dataset to at least `first + count` along its first axis and writes
/// `data` (count × the product of the other extents, in `mem_type`) at [first, first + count).
inline bool append_steps(hid_t set, hsize_t first, hsize_t count, hid_t mem_type, const void* data) {
  Handle space(H5Dget_space(set), H5Sclose);
  if (!space.ok()) return false;
  const int rank = H5Sget_simple_extent_ndims(space.get());
  if (rank < 1 || rank > 8) return false;
  hsize_t dims[8];
  H5Sget_simple_extent_dims(space.get(), dims, nullptr);
  if (dims[0] < first + count) {
    dims[0] = first + count;
    if (H5Dset_extent(set, dims) < 0) return false;
  }
  Handle fspace(H5Dget_space(set), H5Sclose), mspace;
  return fspace.ok() && select_steps(fspace.get(), first, count, mspace) &&
         H5Dwrite(set, mem_type, mspace.get(), fspace.get(), H5P_DEFAULT, data) >= 0;
}

/// append_steps of one step.
inline bool append_step(hid_t set, hsize_t step, hid_t mem_type, const void* data) {
  return append_steps(set, step, 1, mem_type, data);
}

/// Reads indices [first, first + count) along the first axis of a dataset into `out` (count ×
/// the product of the other extents, elements of `mem_type`) in one HDF5 call. False when the
/// range exceeds the extent or HDF5 fails.
inline bool read_steps(hid_t set, hsize_t first, hsize_t count, hid_t mem_type, void* out) {
  Handle fspace(H5Dget_space(set), H5Sclose), mspace;
  return fspace.ok() && select_steps(fspace.get(), first, count, mspace) &&
         H5Dread(set, mem_type, mspace.get(), fspace.get(), H5P_DEFAULT, out) >= 0;
}

/// Reads index `step` along the first axis of a dataset into `out`.
inline bool read_step(hid_t set, hsize_t step, hid_t mem_type, void* out) {
  return read_steps(set, step, 1, mem_type, out);
}

/// A 1-D dataset of fixed-length strings (h5py reads it as bytes).
inline bool write_string_dataset(hid_t loc, const char* name, const std::vector<std::string>& values) {
  std::size_t width = 1;
  for (const auto& s : values)
    width = s.size() > width ? s.size() : width;
  std::vector<char> buf(values.size() * width, '\0');
  for (std::size_t i = 0; i < values.size(); ++i)
    std::memcpy(buf.data() + i * width, values[i].data(), values[i].size());
  Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
  if (!type.ok() || H5Tset_size(type.get(), width) < 0) return false;
  H5Tset_cset(type.get(), H5T_CSET_UTF8);
  const hsize_t n = values.size();
  Handle space(H5Screate_simple(1, &n, nullptr), H5Sclose);
  Handle set(H5Dcreate2(loc, name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose);
  return set.ok() &&
         (n == 0 || H5Dwrite(set.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()) >= 0);
}

}  // namespace schatten::io::h5
