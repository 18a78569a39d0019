// SPDX-License-Identifier: Apache-2.0
/// \file
/// Checkpoints of optimizer state in HDF5 (library schatten::hdf5; HDF5 never appears here).
///
/// Every state lists its fields once through `visit_fields` (optim/rule.hpp); capture() turns
/// that into a FieldSet, write_checkpoint() stores it, read_checkpoint() reads it back and
/// restore() loads it into a freshly initialised state, checking that every field the state
/// names is present with the same type, size and a valid value, and that the file has no other
/// field. That is all restore() compares: the field names (parameter names, rule positions and
/// kinds of state), types and element counts. Optimizers with the same fields — muon, mop, scion
/// and muon_hyperball; other hyper-parameters — load each other's checkpoints. To refuse those,
/// pass the target's `partition.signature()` (names, rules and hyper-parameters) as
/// load_checkpoint's `expected_signature`; the default, empty, skips that check.
///
/// Parameter shapes: save_checkpoint of a state with parameters (optim::Partition,
/// distributed::DistributedPartition: anything with `params()`) writes every parameter's shape as
/// declared (ParamSpec::shape), and load_checkpoint into such a state refuses a file whose
/// parameters have other shapes, even of the same element count (8 × 6 and 6 × 8, a conv weight
/// declared 64 × 3 × 3 × 3 and 64 × 27), or another set of parameters. Files written before the
/// shapes were recorded (no `/schatten/parameters` group) load as before, checked by fields only.
/// A state whose fields are named by other parameters than `params()` names those too, as
/// `pieces()` (optim::SplitPartition: the pieces of its cut parameters), and their shapes are
/// recorded and checked as well, so that another cut of the same fused shape (pieces 2 × 6
/// against 6 × 2, with fields of the same names and sizes) is refused; a split partition's file
/// written before the pieces were recorded (2026-12-07) is checked by the fused shapes alone.
///
/// File layout: datasets `/schatten/optimizer/<field path>` (the field names contain the
/// parameter name and `<index>_<rule>`), int64 / double / float (bf16 state as its exact
/// floats: the format is the same for either storage); a scalar field is a 1-element dataset with
/// the attribute `scalar` = 1 (the reader requires it, and tells a scalar from a buffer of one
/// element by it); root attributes `schema_version` (int) and `step` (int64), each a 1-element
/// array, `signature` (a fixed-length string; one longer than 60,000 bytes is the dataset
/// `/schatten/signature` instead, since an attribute of HDF5's earliest format, which these files
/// use, holds at most 64 KiB), and the RNG state (`rng_words` 4 × uint64, `rng_spare`,
/// `rng_has_spare`) when one is given; when the header has shapes, datasets
/// `/schatten/parameters/<param name>/shape` (int64, one per dimension; a null dataspace for a
/// rank-0 parameter); when it has routes (a Partition's labels), the string dataset
/// `/schatten/routes` of `<n>:<name><m>:<label>` pairs. Readers ignore what they do not read, so
/// the schema version is the same with and without shapes and routes. The strings are
/// fixed-length ASCII (h5py's default variable-length strings are refused).
/// Writing is atomic: the file is built in memory (HDF5's core driver), written as `<path>.tmp`,
/// synced to disk, closed, then renamed over `path`, so a crash during a write leaves the previous
/// checkpoint intact (tested by killing a writer at random times:
/// tests/io/test_checkpoint_faults.cpp), and a failed write leaves no HDF5 file open.
#pragma once

#include <cmath>
#include <cstdint>
#include <map>
#include <new>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "schatten/core/bf16.hpp"
#include "schatten/core/buffer.hpp"
#include "schatten/core/random.hpp"
#include "schatten/core/status.hpp"

namespace schatten::io {

/// The schema version written by this library; files of another version are refused.
constexpr int kCheckpointSchemaVersion = 1;

/// Parameter shapes by parameter name, as declared (optim::ParamSpec::shape).
using ShapeMap = std::map<std::string, std::vector<std::int64_t>>;

/// One field's value.
using FieldValue = std::variant<std::int64_t, double, std::vector<float>>;
/// Fields by their full name ("w1/0_trace_momentum/mu").
using FieldSet = std::map<std::string, FieldValue>;

/// What a checkpoint carries besides the fields.
struct CheckpointHeader {
  int schema_version = kCheckpointSchemaVersion;
  std::int64_t step = 0;
  /// The optimizer's description (names and hyper-parameters), compared on load when the caller
  /// asks for it. docs/optim.md suggests a format.
  std::string signature;
  std::optional<Rng::State> rng;
  /// The parameters' shapes (file comment). save_checkpoint fills them from a state with
  /// `params()`; read_checkpoint leaves them empty for a file without them.
  ShapeMap shapes;
  /// Each parameter's route, name → label (file comment). save_checkpoint fills them from a
  /// state with `params()` and `labels()` (optim::Partition); empty for a file without them.
  std::map<std::string, std::string> routes{};
};

namespace detail {
/// Whether S names its parameters: `s.params()` is a sequence of {name, shape} (optim::ParamSpec).
template <class S, class = void>
struct has_params : std::false_type {};
template <class S>
struct has_params<S, std::void_t<decltype(std::declval<const S&>().params().begin()->shape.size())>>
    : std::true_type {};

/// Whether S tells each parameter's route: `s.labels()`, one string per `params()` entry (per
/// `pieces()` entry where S has them: routed_params).
template <class S, class = void>
struct has_labels : std::false_type {};
template <class S>
struct has_labels<S, std::void_t<decltype(std::declval<const S&>().labels().begin()->size()),
                                 decltype(std::declval<const S&>().params().begin()->name)>>
    : std::true_type {};

/// Whether S also names the parameters its fields are keyed by, when they are not `params()`:
/// `s.pieces()`, a sequence of {name, shape} (optim::SplitPartition: the pieces of its cut
/// parameters, and the unsplit ones).
template <class S, class = void>
struct has_pieces : std::false_type {};
template <class S>
struct has_pieces<S, std::void_t<decltype(std::declval<const S&>().pieces().begin()->shape.size())>>
    : std::true_type {};

/// The parameters `s.labels()` names, one label each: `s.pieces()` where S has them (a split
/// partition's partition routes its pieces; a swapped routing of two pieces loaded with ok
/// until a fuzzer found it, 2026-12-07), else `s.params()`.
template <class S>
const auto& routed_params(const S& s) {
  if constexpr (has_pieces<S>::value)
    return s.pieces();
  else
    return s.params();
}

/// The routes a checkpoint of `s` records: each routed_params() entry's label, by name.
template <class S>
std::map<std::string, std::string> routes_of(const S& s) {
  std::map<std::string, std::string> routes;
  const auto& labels = s.labels();
  std::size_t i = 0;
  for (const auto& p : routed_params(s))
    if (i < labels.size()) routes[p.name] = labels[i++];
  return routes;
}

/// Why the routes a checkpoint records do not fit `s` ("" when they do, or when the file has
/// none: written before routes were recorded, 2026-12-07). Two parameters that swap routes whose
/// rules keep the same fields (muon and scion) loaded with ok, and the signature, which names the
/// routes and not who takes them, did not tell either (audit of 2026-12-07).
template <class S>
std::string route_mismatch(const std::map<std::string, std::string>& file, const S& s) {
  if (file.empty()) return {};
  const auto& labels = s.labels();
  std::size_t i = 0;
  for (const auto& p : routed_params(s)) {
    if (i >= labels.size()) break;
    const std::string& here = labels[i++];
    const auto it = file.find(p.name);
    if (it != file.end() && it->second != here)
      return "parameter '" + p.name + "' takes route '" + it->second + "' in the checkpoint, '" + here +
             "' here (another routing)";
  }
  return {};
}

/// The shapes a checkpoint of `s` records, by name: `s.params()`, and `s.pieces()` where S has
/// them and `with_pieces` (an unsplit parameter is in both, with one shape; SplitLayout refuses
/// a piece named like another parameter, so that no name has two).
template <class S>
ShapeMap shapes_of(const S& s, bool with_pieces = true) {
  ShapeMap m;
  for (const auto& p : s.params())
    m[p.name].assign(p.shape.begin(), p.shape.end());
  if constexpr (has_pieces<S>::value)
    if (with_pieces)
      for (const auto& p : s.pieces())
        m[p.name].assign(p.shape.begin(), p.shape.end());
  return m;
}

/// "[8, 6]"
inline std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string t = "[";
  for (std::size_t k = 0; k < shape.size(); ++k)
    t += (k ? ", " : "") + std::to_string(shape[k]);
  return t + "]";
}

/// Why a checkpoint's shapes `file` do not fit `params` ("" when they do, or when the file has
/// none: written before shapes were recorded). Every parameter must be in the file with its
/// shape, and the file must have no other parameter. Cost: one map lookup per parameter.
template <class Params>
std::string shape_mismatch(const ShapeMap& file, const Params& params) {
  if (file.empty()) return {};
  std::size_t found = 0;
  for (const auto& p : params) {
    const auto it = file.find(p.name);
    if (it == file.end()) return "the checkpoint has no parameter '" + p.name + "' (another model?)";
    const std::vector<std::int64_t> here(p.shape.begin(), p.shape.end());
    if (it->second != here)
      return "parameter '" + p.name + "' has shape " + shape_text(it->second) + " in the checkpoint, " +
             shape_text(here) + " here";
    ++found;
  }
  if (found != file.size()) {
    for (const auto& [name, shape] : file) {
      bool known = false;
      for (const auto& p : params)
        known = known || p.name == name;
      if (!known) return "the checkpoint has a parameter '" + name + "' this optimizer does not have";
    }
  }
  return {};
}

/// shape_mismatch for the shapes a checkpoint of `s` records (shapes_of). A file of a split
/// partition written before the pieces' shapes were recorded (before 2026-12-07: the caller's
/// shapes only) is checked by those, as it was then.
template <class S>
std::string state_shape_mismatch(const ShapeMap& file, const S& s) {
  struct Named {
    const std::string& name;
    const std::vector<std::int64_t>& shape;
  };
  const auto check = [&file](const ShapeMap& here) {
    std::vector<Named> params;
    params.reserve(here.size());
    for (const auto& [name, shape] : here)
      params.push_back(Named{name, shape});
    return shape_mismatch(file, params);
  };
  if constexpr (has_pieces<S>::value) {
    std::string m = check(shapes_of(s));
    return m.empty() || check(shapes_of(s, false)).empty() ? std::string() : m;
  } else {
    return shape_mismatch(file, s.params());
  }
}
}  // namespace detail

/// Collects every field of a visitable state (a rule state, or a Partition through its `visit`).
struct FieldCollector {
  FieldSet* out;
  void operator()(const std::string& name, std::int64_t& v) { (*out)[name] = v; }
  void operator()(const std::string& name, double& v) { (*out)[name] = v; }
  void operator()(const std::string& name, std::vector<float>& v) { (*out)[name] = v; }
  /// Host or device buffers (optimizer state): copied to the host.
  void operator()(const std::string& name, FloatBuffer& v) { (*out)[name] = v.to_vector(); }
  /// bf16 state (docs/optim.md "State precision"): stored as its floats, which are exact.
  void operator()(const std::string& name, Bf16Buffer& v) { (*out)[name] = bf16_to_floats(v.to_vector()); }
};

namespace detail {
/// Whether field `name` (a full path "w1/0_trace_momentum/mu" or a bare "mu") is `field`.
inline bool field_is(const std::string& name, const char* field) {
  const std::size_t n = std::char_traits<char>::length(field);
  return name.size() >= n && name.compare(name.size() - n, n, field) == 0 &&
         (name.size() == n || name[name.size() - n - 1] == '/');
}
/// Why a stored value cannot be optimizer state ("" when it can). Every accepted step leaves
/// every state field finite and every count and step non-negative (docs/reliability.md), so a
/// NaN, an infinity or a negative integer comes from a damaged or edited file; loaded, it would
/// write NaN into the parameters at the next step (a count of -1, a NaN or negative Adam ν).
/// Three fields of schatten_muon store sentinels and are exempt: `next_criterion` is -1 for
/// "never" and `activation_step` -1 for "no statistics collected yet" (schatten_p.hpp), and
/// `log_objective` is -inf when the criterion found no finite objective. Cost: one
/// pass over the values.
inline std::string field_value_error(const std::string& name, std::int64_t v) {
  if (v >= 0 || (v == -1 && (field_is(name, "next_criterion") || field_is(name, "activation_step"))))
    return {};
  return "field '" + name + "' is " + std::to_string(v) + ": a count or step cannot be negative";
}
inline std::string field_value_error(const std::string& name, double v) {
  if (std::isfinite(v) || (std::isinf(v) && v < 0.0 && field_is(name, "log_objective"))) return {};
  return "field '" + name + "' is " + std::to_string(v) + ", not a finite number";
}
inline std::string field_value_error(const std::string& name, const std::vector<float>& v) {
  for (std::size_t k = 0; k < v.size(); ++k)
    if (!std::isfinite(v[k]))
      return "field '" + name + "' element " + std::to_string(k) + " is " + std::to_string(v[k]) +
             ", not a finite number";
  return {};
}
}  // namespace detail

/// Loads fields into a visitable state; records the first problem (a missing field, another type
/// or size, a value no state holds: detail::field_value_error). With `write` false it only
/// checks: every test of a load, and no write (restore()'s first pass).
struct FieldLoader {
  const FieldSet* in;
  std::string error;
  std::size_t loaded = 0;
  bool check_values = true;  ///< restore()'s ValueCheck
  bool write = true;
  /// A buffer (host or device) is loaded from the field's float array.
  void operator()(const std::string& name, FloatBuffer& v) {
    const std::vector<float>* got = find<std::vector<float>>(name);
    if (!got) return;
    if (!size_matches(name, got->size(), v.size())) return;
    if (write) v.copy_from(got->data(), got->size());
    ++loaded;
  }
  /// A bf16 buffer is loaded from floats that bf16 holds exactly (those a bf16 state wrote); any
  /// other float is refused, naming the field and the element, rather than rounded: such a file
  /// was written with fp32 storage (its signature says so), and loading it would lose bits.
  void operator()(const std::string& name, Bf16Buffer& v) {
    const std::vector<float>* got = find<std::vector<float>>(name);
    if (!got) return;
    if (!size_matches(name, got->size(), v.size())) return;
    for (std::size_t k = 0; k < got->size(); ++k) {
      const float back = bf16_to_float(bf16_round((*got)[k]));
      if (!(back == (*got)[k] || (back != back && (*got)[k] != (*got)[k]))) {
        error =
            "field '" + name + "' element " + std::to_string(k) +
            " is not a bf16 value: the checkpoint holds this state in fp32 (its storage setting, mu_storage "
            "or q_storage, differs)";
        return;
      }
    }
    if (write) {
      std::vector<std::uint16_t> h(got->size());
      for (std::size_t k = 0; k < h.size(); ++k)
        h[k] = bf16_round((*got)[k]);
      v.copy_from(h.data(), h.size());
    }
    ++loaded;
  }
  template <class T>
  void operator()(const std::string& name, T& v) {
    const T* got = find<T>(name);
    if (!got) return;
    if constexpr (std::is_same<T, std::vector<float>>::value) {
      if (!size_matches(name, got->size(), v.size())) return;
    }
    if (write) v = *got;
    ++loaded;
  }

 private:
  /// The field `name` as a T, or nullptr with `error` set.
  template <class T>
  const T* find(const std::string& name) {
    if (!error.empty()) return nullptr;
    auto it = in->find(name);
    if (it == in->end()) {
      error = "checkpoint has no field '" + name + "'";
      return nullptr;
    }
    const T* got = std::get_if<T>(&it->second);
    if (!got) {
      error = "field '" + name + "' has another type in the checkpoint";
      return nullptr;
    }
    if (check_values) error = detail::field_value_error(name, *got);
    return error.empty() ? got : nullptr;
  }
  bool size_matches(const std::string& name, std::size_t stored, std::size_t here) {
    if (stored == here) return true;
    error = "field '" + name + "' has " + std::to_string(stored) + " elements in the checkpoint, " +
            std::to_string(here) + " here";
    return false;
  }
};

/// Writes fields and header to `path` atomically (see the file comment). On error returns
/// invalid_argument (bad path, unwritable directory) or internal_error (a write, close, sync or
/// rename failed, e.g. on a full disk), with `error` naming the file and, when the system gave
/// one, its reason ("Permission denied", "No space left on device", "File too large"); the
/// temporary file is removed (not a directory of that name) and the previous file at `path`, if
/// any, is untouched; no HDF5 handle stays open. Cost beyond the writes: the file's bytes once in
/// memory (about the fields' size) and two fsyncs (file, directory).
Status write_checkpoint(const std::string& path, const FieldSet& fields, const CheckpointHeader& header,
                        std::string* error = nullptr);

/// Reads a checkpoint. A missing, truncated or corrupt file, another schema version, a negative
/// step, an RNG state of four zero words (xoshiro256's fixed point: Rng::normal() would never
/// return) or a spare deviate that is not finite is invalid_argument with `error` saying which;
/// `fields` and `header` are written only on success. Field values are checked by restore().
Status read_checkpoint(const std::string& path, FieldSet& fields, CheckpointHeader& header,
                       std::string* error = nullptr);

namespace detail {
/// out_of_memory, with `error` set to `what` where a message can still be stored (else
/// cleared). Never throws. Inline: capture() and restore() are used without schatten::hdf5.
inline Status out_of_memory(std::string* error, const char* what) noexcept {
  if (error != nullptr) {
    try {
      *error = what;
    } catch (const std::bad_alloc&) {
      error->clear();
    }
  }
  return Status::out_of_memory;
}

/// f() with a std::bad_alloc turned into out_of_memory (detail::out_of_memory, with `what`): the
/// checkpoint calls copy whole states (capture, restore's trial copy), the likeliest allocations
/// of a training process to fail, and report it as a status; the recording reader's reads
/// compose their messages with it.
template <class F>
Status allocation_as_status(F&& f, std::string* error, const char* what = "out of memory") {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    return out_of_memory(error, what);
  }
}
}  // namespace detail

/// capture(state) for anything visit_fields accepts.
template <class S>
FieldSet capture(S& state) {
  FieldSet f;
  FieldCollector c{&f};
  visit_fields(c, state);
  return f;
}

/// Loads `fields` into `state` (freshly initialised with the target configuration). Every field
/// of the state must be in the checkpoint with the same type and size and a value a state can
/// hold (finite; integers ≥ 0, but for the sentinels of detail::field_value_error), and the
/// checkpoint must have no field the state lacks; otherwise invalid_argument with `error`
/// naming the first mismatch and `state` unchanged. Cost: one pass that checks every field
/// without writing, then one copy of `state` (the trial that is loaded, then moved in);
/// out_of_memory, `state` unchanged, when it cannot be allocated. The first pass matters where a
/// copy shares a field with `state` (schatten_muon's activation statistics, which the partition's
/// backups share instead of copying d_in² floats): the trial then writes that field in place, so
/// a mismatch found after it would otherwise have changed `state` (found by an audit on
/// 2026-12-06: a refused load changed another layer's activation Gram). An allocation that fails
/// during the trial's load, after such a field was written, still leaves that field loaded.
/// `values = ValueCheck::off` loads any value (names, types and sizes are still checked): for a
/// test that puts a damaged state in place on purpose, to see what the rules' prechecks make of
/// it; never for files.
enum class ValueCheck { on, off };
template <class S>
Status restore(S& state, const FieldSet& fields, std::string* error = nullptr,
               ValueCheck values = ValueCheck::on) {
  return detail::allocation_as_status(
      [&] {
        FieldLoader check{&fields, {}, 0, values == ValueCheck::on, false};
        visit_fields(check, state);  // writes nothing
        if (check.error.empty() && check.loaded != fields.size())
          check.error = "the checkpoint has " + std::to_string(fields.size() - check.loaded) +
                        " field(s) this optimizer does not have (another configuration?)";
        if (!check.error.empty()) {
          if (error) *error = check.error;
          return Status::invalid_argument;
        }
        S trial = state;
        FieldLoader l{&fields, {}, 0, false, true};  // the values were checked above
        visit_fields(l, trial);
        if (!l.error.empty()) {  // not after the check above; kept as a guard
          if (error) *error = l.error;
          return Status::internal_error;
        }
        state = std::move(trial);
        return Status::ok;
      },
      error);
}

/// Saves any visitable state (a rule state or a whole optim::Partition) with its header; a state
/// with parameters (detail::has_params) has their shapes written in place of `header.shapes`.
/// out_of_memory when the copy of its fields cannot be allocated (the file is then untouched).
template <class S>
Status save_checkpoint(const std::string& path, S& state, const CheckpointHeader& header,
                       std::string* error = nullptr) {
  return detail::allocation_as_status(
      [&] {
        if constexpr (detail::has_params<S>::value) {
          CheckpointHeader h = header;
          h.shapes = detail::shapes_of(state);
          if constexpr (detail::has_labels<S>::value) h.routes = detail::routes_of(state);
          return write_checkpoint(path, capture(state), h, error);
        } else {
          return write_checkpoint(path, capture(state), header, error);
        }
      },
      error);
}

/// Loads a checkpoint into `state` (initialised with the target configuration). When
/// `expected_signature` is non-empty it must equal the file's signature: pass the target's
/// `signature()`, since the fields alone do not tell rules with the same state apart (see the
/// file comment). A state with parameters must have the file's parameter shapes, when the file
/// has them (detail::shape_mismatch). On any error `state`
/// and `header` are unchanged and `error` names the problem (the field, the signature, the file).
template <class S>
Status load_checkpoint(const std::string& path, S& state, CheckpointHeader& header,
                       const std::string& expected_signature = {}, std::string* error = nullptr) {
  return detail::allocation_as_status(
      [&] {
        FieldSet fields;
        CheckpointHeader h;
        if (Status s = read_checkpoint(path, fields, h, error); s != Status::ok) return s;
        if (!expected_signature.empty() && h.signature != expected_signature) {
          if (error)
            *error = "optimizer signature differs: checkpoint '" + h.signature + "', this optimizer '" +
                     expected_signature + "'";
          return Status::invalid_argument;
        }
        if constexpr (detail::has_params<S>::value) {
          if (std::string m = detail::state_shape_mismatch(h.shapes, state); !m.empty()) {
            if (error) *error = std::move(m);
            return Status::invalid_argument;
          }
          if constexpr (detail::has_labels<S>::value) {
            if (std::string m = detail::route_mismatch(h.routes, state); !m.empty()) {
              if (error) *error = std::move(m);
              return Status::invalid_argument;
            }
          }
        }
        if (Status s = restore(state, fields, error); s != Status::ok) return s;
        header = std::move(h);  // moves: nothing left to fail
        return Status::ok;
      },
      error);
}

}  // namespace schatten::io
