// SPDX-License-Identifier: Apache-2.0
/// \file
/// HDF5 reader and writer of checkpoints (include/schatten/io/checkpoint.hpp).
#include "schatten/io/checkpoint.hpp"

#include <fcntl.h>
#include <hdf5.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

#include "hdf5_util.hpp"
#include "schatten/optim/partition.hpp"  // valid_param_name

// HDF5 1.10 (Debian 12) and 1.12+ name the object-visit API differently.
#if H5_VERSION_GE(1, 12, 0)
using ObjectInfo = H5O_info2_t;
#define SCHATTEN_H5O_VISIT(obj, op, data) H5Ovisit3(obj, H5_INDEX_NAME, H5_ITER_INC, op, data, H5O_INFO_BASIC)
#define SCHATTEN_H5F_IS_HDF5(name) H5Fis_accessible(name, H5P_DEFAULT)
#else
using ObjectInfo = H5O_info_t;
#define SCHATTEN_H5O_VISIT(obj, op, data) H5Ovisit2(obj, H5_INDEX_NAME, H5_ITER_INC, op, data, H5O_INFO_BASIC)
#define SCHATTEN_H5F_IS_HDF5(name) H5Fis_hdf5(name)
#endif

namespace schatten::io {
namespace {

constexpr const char* kRoot = "/schatten/optimizer";
/// Parameter shapes: `<kShapes>/<param name>/shape` (checkpoint.hpp's file comment).
constexpr const char* kShapes = "/schatten/parameters";
constexpr const char* kShapeLeaf = "/shape";
/// A signature longer than kSignatureAttributeBytes is the string dataset kSignature instead of
/// the root attribute `signature`: HDF5's earliest format, which these files use (so that every
/// HDF5 reads them, and their bytes do not depend on its version), keeps an attribute's message
/// within 64 KiB, and the signature of a per-head cut of a large model (18,144 pieces: 79 KB)
/// could not be saved (audit of 2026-12-07). Files with a shorter signature are as before.
constexpr std::size_t kSignatureAttributeBytes = 60000;
constexpr const char* kSignature = "/schatten/signature";
/// Each parameter's route (CheckpointHeader::routes): one string dataset of `<n>:<name><m>:<label>`
/// pairs (lengths in decimal: any name, any label), sorted by name. Beside /schatten/parameters,
/// not in it, so that readers before 2026-12-07, which refuse unknown datasets there, still read
/// the file.
constexpr const char* kRoutes = "/schatten/routes";

std::string encode_routes(const std::map<std::string, std::string>& routes) {
  std::string s;
  for (const auto& [name, label] : routes)
    s += std::to_string(name.size()) + ":" + name + std::to_string(label.size()) + ":" + label;
  return s;
}

/// false on a malformed text.
bool decode_routes(const std::string& s, std::map<std::string, std::string>& out) {
  std::size_t at = 0;
  const auto next = [&](std::string& item) {
    const std::size_t colon = s.find(':', at);
    if (colon == std::string::npos || colon == at || colon - at > 18) return false;
    std::size_t n = 0;
    for (std::size_t k = at; k < colon; ++k) {
      if (s[k] < '0' || s[k] > '9') return false;
      n = n * 10 + static_cast<std::size_t>(s[k] - '0');
    }
    if (n > s.size() - colon - 1) return false;
    item = s.substr(colon + 1, n);
    at = colon + 1 + n;
    return true;
  };
  while (at < s.size()) {
    std::string name, label;
    if (!next(name) || !next(label)) return false;
    out[name] = label;
  }
  return true;
}

using h5::fail;
using h5::Handle;
using h5::QuietErrors;
using h5::write_attr;

/// fsync of the directory holding `path`, so that a rename into it is durable (best effort:
/// it runs after the rename, when the checkpoint is complete, so it must not fail the write,
/// not even by an allocation failure).
void sync_parent_directory(const std::string& path) noexcept {
  try {
    const std::size_t slash = path.find_last_of('/');
    const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
    if (fd < 0) return;
    (void)::fsync(fd);
    ::close(fd);
  } catch (const std::bad_alloc&) {
  }
}

/// Reads attribute `name` into `count` values of `type`. H5Aread writes as many values as the
/// attribute holds, so an attribute of another size (a corrupt or hostile file) is refused
/// before reading: otherwise it would overflow `value`.
/// Reads `count` values of attribute `name` as `type`, which the stored type must match in class
/// (integer or float): HDF5 would convert a float 1.5 stored as schema_version to the integer 1.
bool read_attr(hid_t obj, const char* name, hid_t type, void* value, hssize_t count = 1) {
  if (H5Aexists(obj, name) <= 0) return false;
  Handle attr(H5Aopen(obj, name, H5P_DEFAULT), H5Aclose);
  if (!attr.ok()) return false;
  Handle space(H5Aget_space(attr.get()), H5Sclose);
  Handle stored(H5Aget_type(attr.get()), H5Tclose);
  return space.ok() && stored.ok() && H5Tget_class(stored.get()) == H5Tget_class(type) &&
         H5Sget_simple_extent_npoints(space.get()) == count && H5Aread(attr.get(), type, value) >= 0;
}

/// A scalar fixed-length string of 1 … max_bytes bytes, `type` and `space` those of an attribute
/// or a dataset, read through `read(memory type, buffer)` (the writer's form; variable-length
/// strings or string arrays are refused rather than read into a wrong buffer).
template <class Read>
bool read_fixed_string(hid_t type, hid_t space, std::size_t max_bytes, std::string& out, Read read) {
  if (type < 0 || space < 0 || H5Tget_class(type) != H5T_STRING || H5Tis_variable_str(type) != 0 ||
      H5Sget_simple_extent_npoints(space) != 1)
    return false;
  const std::size_t n = H5Tget_size(type);
  if (n == 0 || n > max_bytes) return false;
  std::string s(n, '\0');
  Handle mem(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(mem.get(), n);
  if (!read(mem.get(), s.data())) return false;
  s.resize(std::strlen(s.c_str()));
  out = s;
  return true;
}

/// Reads a scalar fixed-length string attribute of at most `max_bytes` bytes (read_fixed_string).
bool read_string_attr(hid_t obj, const char* name, std::string& out, std::size_t max_bytes) {
  if (H5Aexists(obj, name) <= 0) return false;
  Handle attr(H5Aopen(obj, name, H5P_DEFAULT), H5Aclose);
  if (!attr.ok()) return false;
  Handle type(H5Aget_type(attr.get()), H5Tclose);
  Handle space(H5Aget_space(attr.get()), H5Sclose);
  return read_fixed_string(type.get(), space.get(), max_bytes, out,
                           [&](hid_t mem, char* buf) { return H5Aread(attr.get(), mem, buf) >= 0; });
}

/// A scalar fixed-length ASCII string dataset (the long signature, kSignature).
bool write_string_dataset(hid_t file, hid_t lcpl, hid_t dcpl, const char* path, const std::string& value) {
  Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
  if (!type.ok() || H5Tset_size(type.get(), value.empty() ? 1 : value.size()) < 0) return false;
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  Handle set(H5Dcreate2(file, path, type.get(), space.get(), lcpl, dcpl, H5P_DEFAULT), H5Dclose);
  const std::string v = value.empty() ? std::string(1, '\0') : value;
  return set.ok() && H5Dwrite(set.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()) >= 0;
}

/// Reads write_string_dataset()'s form, at most `max_bytes` bytes; false when absent or another
/// form (read_fixed_string).
bool read_string_dataset(hid_t file, const char* path, std::string& out, std::size_t max_bytes) {
  if (H5Lexists(file, "/schatten", H5P_DEFAULT) <= 0 || H5Lexists(file, path, H5P_DEFAULT) <= 0) return false;
  Handle set(H5Dopen2(file, path, H5P_DEFAULT), H5Dclose);
  if (!set.ok()) return false;
  Handle type(H5Dget_type(set.get()), H5Tclose);
  Handle space(H5Dget_space(set.get()), H5Sclose);
  return read_fixed_string(type.get(), space.get(), max_bytes, out, [&](hid_t mem, char* buf) {
    return H5Dread(set.get(), mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0;
  });
}

bool write_field(hid_t file, hid_t lcpl, hid_t dcpl, const std::string& path, const FieldValue& v) {
  hid_t type = H5T_NATIVE_INT64;
  const void* data = nullptr;
  hsize_t n = 1;
  if (const auto* i = std::get_if<std::int64_t>(&v)) {
    data = i;
  } else if (const auto* d = std::get_if<double>(&v)) {
    type = H5T_NATIVE_DOUBLE;
    data = d;
  } else {
    const auto& b = std::get<std::vector<float>>(v);
    type = H5T_NATIVE_FLOAT;
    data = b.data();
    n = b.size();
  }
  Handle space(n == 0 ? H5Screate(H5S_NULL) : H5Screate_simple(1, &n, nullptr), H5Sclose);
  Handle set(H5Dcreate2(file, path.c_str(), type, space.get(), lcpl, dcpl, H5P_DEFAULT), H5Dclose);
  if (!set.ok()) return false;
  // A scalar field is written as a 1-element dataset marked with the attribute "scalar".
  if (!std::holds_alternative<std::vector<float>>(v)) {
    const int one = 1;
    if (!write_attr(set.get(), "scalar", H5T_NATIVE_INT, &one)) return false;
  }
  return n == 0 || H5Dwrite(set.get(), type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0;
}

/// Writes one parameter's shape as an int64 dataset (a null dataspace for rank 0).
bool write_shape(hid_t group, hid_t lcpl, hid_t dcpl, const std::string& name,
                 const std::vector<std::int64_t>& shape) {
  const hsize_t n = shape.size();
  Handle space(n == 0 ? H5Screate(H5S_NULL) : H5Screate_simple(1, &n, nullptr), H5Sclose);
  const std::string path = name + kShapeLeaf;
  Handle set(H5Dcreate2(group, path.c_str(), H5T_NATIVE_INT64, space.get(), lcpl, dcpl, H5P_DEFAULT),
             H5Dclose);
  return set.ok() &&
         (n == 0 || H5Dwrite(set.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, shape.data()) >= 0);
}

struct ReadState {
  FieldSet* fields;
  std::string error;
  hsize_t file_bytes = 0;      ///< size of the file: no dataset of ours holds more
  bool out_of_memory = false;  ///< a field's allocation failed (not the file's fault)
  ShapeMap* shapes = nullptr;  ///< set when visiting kShapes (read_one_shape) instead of fields
};

herr_t read_one_field(hid_t root, const char* name, const ObjectInfo* info, ReadState* st);
herr_t read_one_shape(hid_t group, const char* name, const ObjectInfo* info, ReadState* st);

/// H5Ovisit callback: reads one field. No exception may cross HDF5's C frames, so an allocation
/// failure becomes an error here.
herr_t read_one(hid_t root, const char* name, const ObjectInfo* info, void* op) {
  auto* st = static_cast<ReadState*>(op);
  try {
    return st->shapes ? read_one_shape(root, name, info, st) : read_one_field(root, name, info, st);
  } catch (const std::bad_alloc&) {
    st->out_of_memory = true;  // the message is read_checkpoint's (building one here may throw)
    return -1;
  }
}

herr_t read_one_field(hid_t root, const char* name, const ObjectInfo* info, ReadState* st) {
  if (info->type != H5O_TYPE_DATASET) return 0;
  Handle set(H5Dopen2(root, name, H5P_DEFAULT), H5Dclose);
  Handle type(H5Dget_type(set.get()), H5Tclose);
  Handle space(H5Dget_space(set.get()), H5Sclose);
  if (!set.ok() || !type.ok() || !space.ok()) {
    st->error = std::string("cannot open dataset '") + name + "'";
    return -1;
  }
  const hssize_t n = H5Sget_simple_extent_npoints(space.get());
  // The writer stores every dataset contiguously, so its elements fit in the file. A corrupt or
  // hostile file may declare any extent (found by fuzz_checkpoint): refuse it before allocating.
  if (n < 0 || static_cast<hsize_t>(n) > st->file_bytes / sizeof(float)) {
    st->error = std::string("dataset '") + name + "' declares more elements than the file holds";
    return -1;
  }
  const H5T_class_t cls = H5Tget_class(type.get());
  const bool scalar = H5Aexists(set.get(), "scalar") > 0;
  if (cls == H5T_INTEGER && scalar && n == 1) {
    std::int64_t v = 0;
    if (H5Dread(set.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, &v) < 0) return -1;
    (*st->fields)[name] = v;
  } else if (cls == H5T_FLOAT && scalar && n == 1) {
    double v = 0;
    if (H5Dread(set.get(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, &v) < 0) return -1;
    (*st->fields)[name] = v;
  } else if (cls == H5T_FLOAT && !scalar) {
    std::vector<float> v(static_cast<std::size_t>(n > 0 ? n : 0));
    if (n > 0 && H5Dread(set.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()) < 0) {
      st->error = std::string("cannot read dataset '") + name + "' (truncated file?)";
      return -1;
    }
    (*st->fields)[name] = std::move(v);
  } else {
    st->error = std::string("dataset '") + name + "' has an unexpected type or shape";
    return -1;
  }
  return 0;
}

/// One dataset under kShapes: `<param name>/shape`, int64, no negative dimension.
herr_t read_one_shape(hid_t group, const char* name, const ObjectInfo* info, ReadState* st) {
  if (info->type != H5O_TYPE_DATASET) return 0;
  const std::string path = name;
  const std::size_t leaf = std::strlen(kShapeLeaf);
  if (path.size() <= leaf || path.compare(path.size() - leaf, leaf, kShapeLeaf) != 0) {
    st->error = "unexpected dataset '" + path + "' among the parameter shapes";
    return -1;
  }
  Handle set(H5Dopen2(group, name, H5P_DEFAULT), H5Dclose);
  Handle type(H5Dget_type(set.get()), H5Tclose);
  Handle space(H5Dget_space(set.get()), H5Sclose);
  if (!set.ok() || !type.ok() || !space.ok()) {
    st->error = "cannot open the shape '" + path + "'";
    return -1;
  }
  const hssize_t n = H5Sget_simple_extent_npoints(space.get());
  if (H5Tget_class(type.get()) != H5T_INTEGER || n < 0 ||
      static_cast<hsize_t>(n) > st->file_bytes / sizeof(std::int64_t)) {
    st->error = "the shape '" + path + "' has an unexpected type or size";
    return -1;
  }
  std::vector<std::int64_t> shape(static_cast<std::size_t>(n));
  if (n > 0 && H5Dread(set.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, shape.data()) < 0) {
    st->error = "cannot read the shape '" + path + "' (truncated file?)";
    return -1;
  }
  for (std::int64_t d : shape)
    if (d < 0) {
      st->error = "the shape '" + path + "' has a negative dimension";
      return -1;
    }
  (*st->shapes)[path.substr(0, path.size() - leaf)] = std::move(shape);
  return 0;
}

}  // namespace

namespace {
/// The memory of HDF5's core driver, allocated through the file-image callbacks
/// (H5Pset_file_image_callbacks) only so that `data` is known: write_image() writes the file's
/// bytes from it to disk without a copy.
struct CoreImage {
  void* data = nullptr;
};
void* core_malloc(std::size_t size, H5FD_file_image_op_t, void* u) {
  void* p = std::malloc(size);
  if (p) static_cast<CoreImage*>(u)->data = p;
  return p;
}
void* core_memcpy(void* dest, const void* src, std::size_t size, H5FD_file_image_op_t, void*) {
  return std::memcpy(dest, src, size);
}
void* core_realloc(void* ptr, std::size_t size, H5FD_file_image_op_t, void* u) {
  void* p = std::realloc(ptr, size);
  if (p) static_cast<CoreImage*>(u)->data = p;
  return p;
}
herr_t core_free(void* ptr, H5FD_file_image_op_t, void* u) {
  auto* image = static_cast<CoreImage*>(u);
  if (image->data == ptr) image->data = nullptr;
  std::free(ptr);
  return 0;
}
void* core_udata_copy(void* u) { return u; }  // the fapl's copies share the one CoreImage
herr_t core_udata_free(void*) { return 0; }

/// A creation property list of class `cls` (file, group or dataset) whose objects carry no
/// modification time. -1 on error.
hid_t untimed(hid_t cls) {
  Handle plist(H5Pcreate(cls), H5Pclose);
  if (!plist.ok() || H5Pset_obj_track_times(plist.get(), 0) < 0) return -1;
  const hid_t id = plist.get();
  plist.release();
  return id;
}

/// A file-access property list for HDF5's core driver without backing store: the whole file is
/// built in memory (growing by `increment` bytes), its memory tracked in `image`. -1 on error.
hid_t core_fapl(CoreImage& image, std::size_t increment) {
  Handle fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  H5FD_file_image_callbacks_t cb{core_malloc,     core_memcpy,     core_realloc, core_free,
                                 core_udata_copy, core_udata_free, &image};
  if (!fapl.ok() || H5Pset_fapl_core(fapl.get(), increment, 0) < 0 ||
      H5Pset_file_image_callbacks(fapl.get(), &cb) < 0)
    return -1;
  const hid_t id = fapl.get();
  fapl.release();
  return id;
}

/// Writes `n` bytes to `fd` (retrying short writes); false with errno set on failure.
bool write_all(int fd, const void* data, std::size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

/// The bytes of the file a checkpoint of `fields` becomes, roughly (data plus a generous 4 KiB
/// per dataset and 64 KiB for the rest): the core driver's first allocation, so that it seldom
/// grows.
std::size_t expected_file_bytes(const FieldSet& fields) {
  std::size_t n = std::size_t(64) << 10;
  for (const auto& [name, value] : fields) {
    n += 4096 + name.size();
    if (const auto* v = std::get_if<std::vector<float>>(&value)) n += v->size() * sizeof(float);
  }
  return n;
}

/// Builds the checkpoint in memory with HDF5's core driver and writes its bytes to `tmp` with
/// POSIX calls. HDF5 never touches the disk, so no HDF5 call fails on a full disk: a failing
/// HDF5 file close leaves its handle open inside HDF5 for good (HDF5 1.10), and the library's
/// shutdown at process exit then loops and crashes (docs/reliability.md, Finding 39). Cost:
/// the file once more in memory while it is written.
Status write_checkpoint_impl(const std::string& path, const std::string& tmp, const FieldSet& fields,
                             const CheckpointHeader& header, std::string* error) {
  QuietErrors quiet;
  bool created = false;  // `tmp` is ours to remove (never a user's file or directory of that name)
  // Any failure below removes the temporary file (when this call created it) and names the
  // system's reason when there is one.
  auto give_up = [&](const std::string& what, Status s) {
    const int err = errno;
    if (created) std::remove(tmp.c_str());
    return fail(error, err != 0 ? what + ": " + std::strerror(err) : what, s);
  };
  errno = 0;
  // A directory of that name makes open() fail (EISDIR) and stays: `created` is still false.
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd < 0)
    return give_up("cannot create '" + tmp + "' (directory missing or not writable, or disk full?)",
                   Status::invalid_argument);
  created = true;
  struct FdCloser {
    int fd;
    ~FdCloser() {
      if (fd >= 0) ::close(fd);
    }
  } fd_closer{fd};
  errno = 0;  // from here on, errno holds only what the writes below set
  CoreImage image;
  Handle fapl(core_fapl(image, expected_file_bytes(fields)), H5Pclose);
  // No modification times: by default HDF5 stamps every object with the second it was written,
  // so two saves of one state differed (15 four-byte stamps in a Muon + AdamW checkpoint). Without
  // them a checkpoint's bytes are a function of its contents (docs/optim.md "Checkpoints").
  Handle fcpl(untimed(H5P_FILE_CREATE), H5Pclose), gcpl(untimed(H5P_GROUP_CREATE), H5Pclose),
      dcpl(untimed(H5P_DATASET_CREATE), H5Pclose);
  Handle file(fapl.ok() && fcpl.ok() ? H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, fcpl.get(), fapl.get()) : -1,
              H5Fclose);
  if (!file.ok() || !gcpl.ok() || !dcpl.ok())
    return give_up("cannot create the HDF5 image of '" + tmp + "'", Status::internal_error);
  Handle lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
  H5Pset_create_intermediate_group(lcpl.get(), 1);
  Handle root(H5Gcreate2(file.get(), kRoot, lcpl.get(), gcpl.get(), H5P_DEFAULT), H5Gclose);
  bool ok = root.ok();
  const int version = kCheckpointSchemaVersion;
  ok = ok && write_attr(file.get(), "schema_version", H5T_NATIVE_INT, &version);
  ok = ok && write_attr(file.get(), "step", H5T_NATIVE_INT64, &header.step);
  // The signature: an attribute, or past kSignatureAttributeBytes the dataset kSignature (HDF5's
  // earliest format, which these files use, keeps an attribute within 64 KiB).
  if (ok && !(header.signature.size() <= kSignatureAttributeBytes
                  ? h5::write_string_attr(file.get(), "signature", header.signature, H5T_CSET_ASCII)
                  : write_string_dataset(file.get(), lcpl.get(), dcpl.get(), kSignature, header.signature)))
    return give_up("cannot write the signature (" + std::to_string(header.signature.size()) +
                       " bytes) into the HDF5 image of '" + tmp + "'",
                   Status::internal_error);
  if (header.rng) {
    const int has = header.rng->has_spare ? 1 : 0;
    ok = ok && write_attr(file.get(), "rng_words", H5T_NATIVE_UINT64, header.rng->words.data(), 4);
    ok = ok && write_attr(file.get(), "rng_spare", H5T_NATIVE_DOUBLE, &header.rng->spare);
    ok = ok && write_attr(file.get(), "rng_has_spare", H5T_NATIVE_INT, &has);
  }
  if (ok && !header.routes.empty() &&
      !write_string_dataset(file.get(), lcpl.get(), dcpl.get(), kRoutes, encode_routes(header.routes)))
    return give_up("cannot write the parameters' routes into the HDF5 image of '" + tmp + "'",
                   Status::internal_error);
  if (ok && !header.shapes.empty()) {
    Handle shapes(H5Gcreate2(file.get(), kShapes, lcpl.get(), gcpl.get(), H5P_DEFAULT), H5Gclose);
    ok = shapes.ok();
    for (const auto& [name, shape] : header.shapes) {
      if (!ok) break;
      if (!optim::valid_param_name(name)) {
        errno = 0;
        return give_up("invalid parameter name '" + name + "'", Status::invalid_argument);
      }
      if (!write_shape(shapes.get(), lcpl.get(), dcpl.get(), name, shape)) {
        errno = 0;  // in memory: no system reason
        return give_up("cannot write the shape of '" + name + "' to '" + tmp + "'", Status::internal_error);
      }
    }
  }
  for (const auto& [name, value] : fields) {
    if (!ok) break;
    if (!optim::valid_param_name(name)) {  // a field's path follows the same rule
      errno = 0;
      return give_up("invalid field name '" + name + "'", Status::invalid_argument);
    }
    ok = write_field(root.get(), lcpl.get(), dcpl.get(), name, value);
    if (!ok) {
      errno = 0;  // in memory: no system reason
      return give_up("cannot write field '" + name + "' to '" + tmp + "'", Status::internal_error);
    }
  }
  root.reset();
  lcpl.reset();
  // The image is complete once flushed (H5Fget_file_image's rule); its size is the file's
  // end of allocation. The bytes are written before the (in-memory) close frees them.
  const ssize_t size =
      ok && H5Fflush(file.get(), H5F_SCOPE_GLOBAL) >= 0 ? H5Fget_file_image(file.get(), nullptr, 0) : -1;
  if (size <= 0 || image.data == nullptr) {
    errno = 0;
    return give_up("cannot write '" + tmp + "'", Status::internal_error);
  }
  errno = 0;
  if (!write_all(fd, image.data, static_cast<std::size_t>(size)))
    return give_up("cannot write '" + tmp + "'", Status::internal_error);
  // Durability: the data reach the disk before the rename makes them the checkpoint, and the
  // rename reaches it before we report success (without the fsyncs a power loss — not a process
  // crash — could leave an empty file under the checkpoint's name on some file systems).
  if (::fsync(fd) != 0) return give_up("cannot sync '" + tmp + "'", Status::internal_error);
  fd_closer.fd = -1;
  if (::close(fd) != 0) return give_up("cannot close '" + tmp + "'", Status::internal_error);
  file.reset();  // in memory: releases the image; cannot fail on the disk
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    return give_up("cannot rename '" + tmp + "' to '" + path + "'", Status::internal_error);
  sync_parent_directory(path);  // best effort: the checkpoint is complete either way
  return Status::ok;
}
}  // namespace

Status write_checkpoint(const std::string& path, const FieldSet& fields, const CheckpointHeader& header,
                        std::string* error) {
  if (path.empty()) return fail(error, "empty checkpoint path");
  std::string tmp;
  try {
    tmp = path + ".tmp";
    return write_checkpoint_impl(path, tmp, fields, header, error);
  } catch (const std::bad_alloc&) {
    // Before the rename (nothing after it allocates): `path` still holds the previous
    // checkpoint; the temporary file, if HDF5 created it, goes.
    if (!tmp.empty()) std::remove(tmp.c_str());
    return detail::out_of_memory(error, "out of memory while writing a checkpoint");
  }
}

namespace {
Status read_checkpoint_impl(const std::string& path, FieldSet& fields, CheckpointHeader& header,
                            std::string* error) {
  QuietErrors quiet;
  if (SCHATTEN_H5F_IS_HDF5(path.c_str()) <= 0)
    return fail(error, "'" + path + "' is missing or not an HDF5 file");
  Handle file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (!file.ok()) return fail(error, "cannot open '" + path + "' (corrupt?)");
  hsize_t file_bytes = 0;
  if (H5Fget_filesize(file.get(), &file_bytes) < 0) return fail(error, "'" + path + "': cannot get its size");
  CheckpointHeader h;
  if (!read_attr(file.get(), "schema_version", H5T_NATIVE_INT, &h.schema_version))
    return fail(error, "'" + path + "' is not a schatten checkpoint (no schema_version)");
  if (h.schema_version != kCheckpointSchemaVersion)
    return fail(error, "'" + path + "' has schema version " + std::to_string(h.schema_version) +
                           "; this library reads version " + std::to_string(kCheckpointSchemaVersion));
  if (!read_attr(file.get(), "step", H5T_NATIVE_INT64, &h.step) ||
      !(read_string_attr(file.get(), "signature", h.signature, static_cast<std::size_t>(file_bytes)) ||
        read_string_dataset(file.get(), kSignature, h.signature, static_cast<std::size_t>(file_bytes))))
    return fail(error, "'" + path + "' lacks its step or signature");
  if (h.step < 0) return fail(error, "'" + path + "': step " + std::to_string(h.step) + " is negative");
  if (H5Aexists(file.get(), "rng_words") > 0) {
    Rng::State r;
    int has = 0;
    if (!read_attr(file.get(), "rng_words", H5T_NATIVE_UINT64, r.words.data(), 4) ||
        !read_attr(file.get(), "rng_spare", H5T_NATIVE_DOUBLE, &r.spare) ||
        !read_attr(file.get(), "rng_has_spare", H5T_NATIVE_INT, &has))
      return fail(error, "'" + path + "' has an incomplete RNG state");
    r.has_spare = has != 0;
    // xoshiro256's all-zero state is a fixed point (normal() would never return), and a spare
    // that is not finite would be the next normal deviate: neither is a state Rng reaches.
    if (r.words == decltype(r.words){})
      return fail(error, "'" + path + "': rng_words are all zero, not a state the generator reaches");
    if (!std::isfinite(r.spare))
      return fail(error, "'" + path + "': rng_spare is " + std::to_string(r.spare) + ", not a finite number");
    h.rng = r;
  }
  if (H5Lexists(file.get(), "/schatten", H5P_DEFAULT) <= 0 || H5Lexists(file.get(), kRoot, H5P_DEFAULT) <= 0)
    return fail(error, "'" + path + "' has no " + std::string(kRoot) + " group");
  Handle root(H5Gopen2(file.get(), kRoot, H5P_DEFAULT), H5Gclose);
  FieldSet got;
  ReadState st{&got, {}, file_bytes};
  if (!root.ok() || SCHATTEN_H5O_VISIT(root.get(), read_one, &st) < 0) {
    if (st.out_of_memory)
      return detail::out_of_memory(error, "out of memory while reading the checkpoint's fields");
    return fail(error,
                "'" + path + "': " + (st.error.empty() ? std::string("cannot read the fields") : st.error));
  }
  if (H5Lexists(file.get(), kShapes, H5P_DEFAULT) > 0) {  // absent in files before shapes were recorded
    Handle shapes(H5Gopen2(file.get(), kShapes, H5P_DEFAULT), H5Gclose);
    ReadState ss{&got, {}, file_bytes, false, &h.shapes};
    if (!shapes.ok() || SCHATTEN_H5O_VISIT(shapes.get(), read_one, &ss) < 0) {
      if (ss.out_of_memory)
        return detail::out_of_memory(error, "out of memory while reading the checkpoint's shapes");
      return fail(error, "'" + path + "': " +
                             (ss.error.empty() ? std::string("cannot read the parameter shapes") : ss.error));
    }
  }
  if (H5Lexists(file.get(), kRoutes, H5P_DEFAULT) > 0) {  // absent in files before 2026-12-07
    std::string text;
    if (!read_string_dataset(file.get(), kRoutes, text, static_cast<std::size_t>(file_bytes)) ||
        !decode_routes(text, h.routes))
      return fail(error, "'" + path + "': the parameters' routes are unreadable");
  }
  fields = std::move(got);
  header = std::move(h);
  return Status::ok;
}
}  // namespace

Status read_checkpoint(const std::string& path, FieldSet& fields, CheckpointHeader& header,
                       std::string* error) {
  try {
    return read_checkpoint_impl(path, fields, header, error);
  } catch (const std::bad_alloc&) {
    return detail::out_of_memory(error, "out of memory while reading a checkpoint");
  }
}

}  // namespace schatten::io
