// SPDX-License-Identifier: Apache-2.0
/// \file
/// Recordings of training runs in HDF5 (library schatten::hdf5; HDF5 never appears here): a
/// Recorder that a training loop calls once per step over plain float arrays, and a
/// RecordingReader that validates a file and reads one step of one parameter at a time.
/// The file format is specified in docs/replay-format.md (schema version 1).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "schatten/core/status.hpp"
#include "schatten/core/types.hpp"

namespace schatten::io {

/// The recording schema version written by this library; readers refuse larger versions.
constexpr int kRecordingSchemaVersion = 1;

/// One recorded parameter.
struct RecordedParam {
  std::string name;               ///< unique, non-empty (any characters)
  std::vector<index_t> shape;     ///< the tensor's shape (any rank; stored as a matrix, see flatten)
  std::string dtype = "float32";  ///< the training dtype, informative ("bfloat16", ...)
  bool has_initial = false;       ///< the parameter before step 0 is stored
  bool has_value = false;         ///< the parameter is stored at every step
  bool has_act_gram = false;      ///< the cols × cols input-activation Gram is stored every step
  /// Filled by the reader (ignored by the recorder): the stored matrix shape and the on-disk
  /// element type of `grad` ("float16", "float32", "float64").
  index_t rows = 0, cols = 0;
  std::string grad_dtype;
};

/// What a recording describes: the run and its parameters.
struct RecordingInfo {
  std::string model;     ///< free text (architecture, data, batch size, seed)
  std::string producer;  ///< free text (program and versions)
  std::vector<RecordedParam> params;
  /// Entries of `/max_logits` per step: the largest pre-softmax attention logit of each query
  /// head of the model's attention layers in the step's forward pass (the input of
  /// optim::QkClip::apply; docs/replay-format.md). 0 (the default): not recorded.
  std::int64_t max_logit_heads = 0;
  /// Filled by the reader: schema version and number of completed (readable) steps.
  int schema_version = kRecordingSchemaVersion;
  std::int64_t steps = 0;
};

/// Rows × cols of the matrix a tensor of `shape` is stored as (rank 0 → 1 × 1, rank 1 → 1 × n,
/// rank ≥ 2 → shape[0] × product of the rest; optim::flatten). Returns false on a negative
/// extent or an element count above 2^40 (a corrupt shape).
bool recorded_matrix_shape(const std::vector<index_t>& shape, index_t& rows, index_t& cols);

/// Options of Recorder::create.
struct RecorderOptions {
  /// Deflate level 0 (off, the default) … 9, with the shuffle filter, for every per-step
  /// dataset. Pays when gradients have structure (zero rows/columns); dense gradients shrink
  /// only 5–10 % at a cost of several ms per MB written and read.
  int gzip_level = 0;
  /// A Fletcher-32 checksum of every stored chunk (HDF5's filter, which h5py reads too; the
  /// initial values are then stored as one chunk each), verified by every read: a damaged chunk
  /// is then a read error ("damaged chunk?") instead of other values. Without it (the default)
  /// only gzip's inflate notices damage: of 7,722 copies of an uncompressed recording with one
  /// byte flipped or cut there, 377 read back with other values, 20 with it (docs/reliability.md,
  /// Finding 52). Cost: reading 4 MiB steps took 2.4–2.7 ms instead of 0.6–0.8 (the checksum
  /// runs at about 2 GB/s); writing about the same.
  bool checksum = false;
  /// Replace an existing file at the path (default: refuse with invalid_argument).
  bool overwrite = false;
  /// Chunking of the per-step datasets (docs/replay-format.md, "Storage"): a dataset whose one
  /// step is smaller than `chunk_bytes` gets k = min(max_steps_per_chunk, chunk_bytes / step
  /// bytes) steps per chunk, so that a reader fetching many steps touches few chunks; larger
  /// ones one step per chunk. Cost: each append rewrites the dataset's current chunk (at most
  /// chunk_bytes) because the flush writes whole chunks. chunk_bytes = 0: one step per chunk.
  std::size_t chunk_bytes = std::size_t(64) << 10;
  std::int64_t max_steps_per_chunk = 64;  ///< 1 … 4096
};

/// The steps per chunk Recorder::create gives a per-step dataset of `step_bytes` bytes a step
/// (RecorderOptions::chunk_bytes).
std::int64_t recorder_steps_per_chunk(std::size_t step_bytes, const RecorderOptions& options);

/// The data of one step, as plain host arrays (row-major float, one entry per parameter in the
/// order of RecordingInfo::params). Entries for data a parameter does not record must be null;
/// entries it records must be non-null. `initial` is read only by the first append.
struct StepData {
  double loss = 0.0;
  std::vector<const float*> grads;      ///< rows × cols each, required
  std::vector<const float*> values;     ///< rows × cols, for has_value parameters
  std::vector<const float*> act_grams;  ///< cols × cols, for has_act_gram parameters
  std::vector<const float*> initial;    ///< rows × cols, for has_initial parameters (step 0 only)
  /// max_logit_heads values (RecordingInfo::max_logit_heads > 0), else null. Recorded as given
  /// (NaN/Inf included: they are data; QkClip refuses them when replayed).
  const float* max_logits = nullptr;
};

/// Appends training steps to a new recording.
///
/// create() writes the metadata and empty extendible datasets; each append() writes one step
/// and flushes twice (data, then the step count), so that if the process dies every completed
/// step stays readable (docs/replay-format.md, "Crash survival"). Values are stored as given:
/// NaN/Inf gradients are recorded (they are data). Cost per step: one chunk write per dataset
/// plus two flushes (the flushes dominate for small models: about 0.1 ms).
/// Not thread-safe; one Recorder per file. Destruction closes the file (errors ignored).
/// An exhausted host heap is a status, never an exception (docs/reliability.md, Finding 78):
/// create() returns out_of_memory with no file left, append() out_of_memory with nothing
/// written (the step not counted, the recorder usable: append it again), and a successful
/// append() or close() allocates nothing on the host (HDF5's own allocations aside), so the
/// destructor cannot throw.
class Recorder {
 public:
  Recorder();
  ~Recorder();
  Recorder(Recorder&&) noexcept;
  Recorder& operator=(Recorder&&) noexcept;
  Recorder(const Recorder&) = delete;
  Recorder& operator=(const Recorder&) = delete;

  /// Creates `path`. Checks first (invalid_argument, no file created): at least one
  /// parameter, names non-empty and unique, shapes valid, act_gram only on matrices (rank ≥ 2),
  /// max_logit_heads in 0..2^30 − 1 (one step in one HDF5 chunk), gzip level 0–9, no existing
  /// file unless `overwrite`. Then it allocates the disk the metadata takes (64 KiB and 8 KiB a
  /// parameter): when that fails (a full disk, a file-size limit), internal_error naming the
  /// system's reason, with no file left and no HDF5 call made. A failure while writing removes
  /// the partial file (internal_error). `error` names the problem.
  Status create(const std::string& path, const RecordingInfo& info, const RecorderOptions& options = {},
                std::string* error = nullptr);

  /// Writes step `steps()`. Checks every pointer first (invalid_argument, nothing written: one
  /// entry per parameter in each vector that must be used, non-null exactly where recorded;
  /// max_logits non-null exactly when max_logit_heads > 0).
  /// Then it allocates the disk the step can take (fallocate, past the end of the file's
  /// allocation; docs/reliability.md, Finding 47; on a file system without fallocate, by writing
  /// a zero byte per block and fdatasync, Finding 89): when that fails (a full disk, a file-size
  /// limit) it returns internal_error naming the system's reason, with nothing written, the
  /// recorder still usable and the step not counted (append it again once there is room). A
  /// write failure after that (copy-on-write metadata, or a file system that stores zero blocks
  /// as holes) returns internal_error: the step is not counted and the recorder refuses further
  /// appends.
  /// The unused part of the allocation (at most one step's) is given back by close().
  Status append(const StepData& step, std::string* error = nullptr);

  /// Completed steps so far.
  std::int64_t steps() const;

  /// Closes the file (idempotent). internal_error if the final flush fails.
  Status close(std::string* error = nullptr);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  /// create() and append() without the catch of std::bad_alloc; `touched`: `path` was created
  /// or truncated by this call (the catch removes it).
  Status create_unguarded(const std::string& path, const RecordingInfo& info, const RecorderOptions& options,
                          std::string* error, bool& touched);
  Status append_unguarded(const StepData& step, std::string* error);
};

/// Reads a recording one parameter at a time, one step or a range of steps per call (memory:
/// the caller's buffer, plus HDF5's chunk cache of at most 1 MiB per compressed dataset;
/// uncompressed chunks are read straight into the buffer). Dataset handles stay open between
/// calls; a range read is one HDF5 call (schatten-replay's step cache uses it).
///
/// open() validates everything the format requires before returning ok (from the metadata
/// alone: the file is opened once and each dataset once, no data is read) — format and schema
/// version, the step count, every parameter's attributes, the presence, class (float of 2, 4
/// or 8 bytes), rank and extents of every dataset (≥ completed steps; rows × cols matching the
/// shape) — and reports the first problem as invalid_argument with a message naming the file,
/// the dataset and what is wrong. It never aborts on a bad file: missing, truncated, random
/// bytes, another format, a future schema version, wrong dtypes or shapes all give a message.
/// Damage inside the chunk data (a corrupt compressed chunk) is found when that step is read:
/// the read returns invalid_argument and the buffer's contents are unspecified.
/// An exhausted host heap is out_of_memory, never an exception: open() leaves the reader
/// closed, a read leaves it as it was.
/// Not thread-safe: use one reader from one thread at a time. Readers and recorders of separate
/// files may run in separate threads where HDF5 is thread-safe (docs/conventions.md "Threads").
class RecordingReader {
 public:
  RecordingReader();
  ~RecordingReader();
  RecordingReader(RecordingReader&&) noexcept;
  RecordingReader& operator=(RecordingReader&&) noexcept;
  RecordingReader(const RecordingReader&) = delete;
  RecordingReader& operator=(const RecordingReader&) = delete;

  /// Opens and validates `path` (see the class comment); any file already open is closed first.
  Status open(const std::string& path, std::string* error = nullptr);
  bool is_open() const;
  /// The metadata (valid after a successful open).
  const RecordingInfo& info() const;

  /// Step `step` of parameter `param` into `out` (rows × cols floats, row-major), converting
  /// float16/float64 to float. invalid_argument for a step outside [0, info().steps), a
  /// parameter index out of range, a null buffer, or a chunk that cannot be read.
  Status read_grad(std::int64_t step, std::size_t param, float* out, std::string* error = nullptr) const;
  /// Steps [first, first + count) of parameter `param` into `out` (count × rows × cols floats,
  /// step-major) in one HDF5 read; invalid_argument when the range is empty or leaves
  /// [0, info().steps), and as read_grad.
  Status read_grads(std::int64_t first, std::int64_t count, std::size_t param, float* out,
                    std::string* error = nullptr) const;
  /// The stored parameter at step `step` (requires has_value).
  Status read_value(std::int64_t step, std::size_t param, float* out, std::string* error = nullptr) const;
  /// Range form of read_value (as read_grads).
  Status read_values(std::int64_t first, std::int64_t count, std::size_t param, float* out,
                     std::string* error = nullptr) const;
  /// The parameter before step 0: `initial` if stored, else value[0]; invalid_argument if neither.
  Status read_initial(std::size_t param, float* out, std::string* error = nullptr) const;
  /// The cols × cols activation Gram at step `step` (requires has_act_gram).
  Status read_act_gram(std::int64_t step, std::size_t param, float* out, std::string* error = nullptr) const;
  /// Range form of read_act_gram: count × cols × cols floats (as read_grads).
  Status read_act_grams(std::int64_t first, std::int64_t count, std::size_t param, float* out,
                        std::string* error = nullptr) const;
  /// The loss of step `step`.
  Status read_loss(std::int64_t step, double* out, std::string* error = nullptr) const;
  /// The losses of steps [first, first + count) into `out` (count doubles) in one HDF5 read;
  /// invalid_argument when the range is empty or leaves [0, info().steps).
  Status read_losses(std::int64_t first, std::int64_t count, double* out, std::string* error = nullptr) const;
  /// The max logits of steps [first, first + count) into `out` (count × info().max_logit_heads
  /// floats, step-major) in one HDF5 read; invalid_argument when the recording has none, and as
  /// read_losses.
  Status read_max_logits(std::int64_t first, std::int64_t count, float* out,
                         std::string* error = nullptr) const;

  void close();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  /// The calls without their catch of std::bad_alloc (the .cpp: out_of_memory).
  Status open_unguarded(const std::string& path, std::string* error);
  Status read_initial_unguarded(std::size_t param, float* out, std::string* error) const;
  Status read_losses_unguarded(std::int64_t first, std::int64_t count, double* out, std::string* error) const;
  Status read_max_logits_unguarded(std::int64_t first, std::int64_t count, float* out,
                                   std::string* error) const;
};

/// The entry point for tools and fuzzers: opens `path` into `reader` (RecordingReader::open).
Status open_recording(const std::string& path, RecordingReader& reader, std::string* error = nullptr);

/// Opens `path` and reads every completed step of every dataset once (bounded memory: one
/// step of the largest parameter), so that damaged chunks are found too. On success `info`
/// (if non-null) receives the metadata. Cost: one pass over the file.
Status check_recording(const std::string& path, RecordingInfo* info = nullptr, std::string* error = nullptr);

}  // namespace schatten::io
