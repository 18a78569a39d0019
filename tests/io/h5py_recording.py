# SPDX-License-Identifier: Apache-2.0
"""h5py side of the recording round-trip tests (tests/io/test_recording.cpp); run with a Python
that has numpy and h5py (Debian: /usr/bin/python3 with python3-h5py).

  h5py_recording.py read RECORDING OUT.bin
      Reads a recording written by the C++ Recorder with h5py only, checks the metadata the
      format requires (docs/replay-format.md), and writes, as raw little-endian float32, for each
      parameter in order: initial (if any), then for each completed step grad, value (if any),
      act_gram (if any); then the losses as float64. The C++ test compares the bytes.
  h5py_recording.py write RECORDING
      Writes a recording with h5py as a PyTorch script would (variable-length string
      attributes, float16 gradients, float64 values, an empty shape for a scalar, gzip), with
      values given by value(p, t, k) below, which the C++ test recomputes.
Exit status 0 on success; a failed check prints why and exits 1.
"""
import sys

import h5py
import numpy as np


def fail(msg):
    print("h5py_recording.py: " + msg, file=sys.stderr)
    sys.exit(1)


def read(path, out):
    with h5py.File(path, "r") as f:
        if f.attrs["format"] != "schatten-recording" and f.attrs["format"] != b"schatten-recording":
            fail("format attribute is %r" % f.attrs["format"])
        if int(f.attrs["schema_version"]) != 1:
            fail("schema_version %r" % f.attrs["schema_version"])
        n = int(f.attrs["completed_steps"])
        chunks = []
        for i in range(int(f.attrs["num_params"])):
            g = f["params/%d" % i]
            shape = [int(s) for s in g.attrs["shape"]]
            rows = shape[0] if len(shape) >= 2 else 1
            cols = int(np.prod(shape[1:] if len(shape) >= 2 else shape)) if shape else 1
            grad = g["grad"]
            if grad.shape[1:] != (rows, cols) or grad.shape[0] < n:
                fail("grad of %s has shape %r for tensor shape %r" % (g.attrs["name"], grad.shape, shape))
            # chunks of k >= 1 steps (the C++ recorder: k = min(64, 64 KiB // one step's bytes))
            if grad.chunks is None or grad.chunks[1:] != (rows, cols) or grad.chunks[0] < 1:
                fail("grad of %s has chunks %r" % (g.attrs["name"], grad.chunks))
            if grad.chunks[0] != max(1, min(64, 65536 // (4 * rows * cols))):
                fail("grad of %s has %d steps per chunk" % (g.attrs["name"], grad.chunks[0]))
            if "initial" in g:
                chunks.append(np.asarray(g["initial"], dtype="<f4").ravel())
            for t in range(n):
                chunks.append(np.asarray(grad[t], dtype="<f4").ravel())
                if "value" in g:
                    chunks.append(np.asarray(g["value"][t], dtype="<f4").ravel())
                if "act_gram" in g:
                    if g["act_gram"].shape[1:] != (cols, cols):
                        fail("act_gram shape %r" % (g["act_gram"].shape,))
                    chunks.append(np.asarray(g["act_gram"][t], dtype="<f4").ravel())
        data = np.concatenate(chunks).astype("<f4").tobytes()
        data += np.asarray(f["loss"][:n], dtype="<f8").tobytes()
    with open(out, "wb") as o:
        o.write(data)


def value(p, t, k):
    """The value the C++ test expects at parameter p, step t, element k (exact in float16)."""
    return ((p * 7 + t * 3 + k) % 17 - 8) / 8.0


def write(path):
    params = [("enc.layers.0.weight", (6, 2, 2), "float16"),   # conv-like: 6 x 4 matrix
              ("enc.layers.0.bias", (6,), "float32"),
              ("scale", (), "float64")]
    steps = 4
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "schatten-recording"          # variable-length UTF-8 strings
        f.attrs["schema_version"] = np.int32(1)
        f.attrs["num_params"] = np.int64(len(params))
        f.attrs["model"] = "h5py writer test"
        f.attrs["producer"] = "tests/io/h5py_recording.py"
        f.attrs["completed_steps"] = np.int64(0)
        loss = f.create_dataset("loss", shape=(0,), maxshape=(None,), dtype="f8", chunks=(1024,))
        sets = []
        for p, (name, shape, dtype) in enumerate(params):
            g = f.create_group("params/%d" % p)
            g.attrs["name"] = name
            g.attrs["shape"] = np.array(shape, dtype=np.int64)
            g.attrs["dtype"] = dtype
            rows = shape[0] if len(shape) >= 2 else 1
            cols = int(np.prod(shape[1:] if len(shape) >= 2 else shape)) if shape else 1
            grad = g.create_dataset("grad", shape=(0, rows, cols), maxshape=(None, rows, cols), dtype=dtype,
                                    chunks=(1, rows, cols), compression="gzip", shuffle=True)
            val = None
            if p == 0:
                val = g.create_dataset("value", shape=(0, rows, cols), maxshape=(None, rows, cols), dtype="f8",
                                       chunks=(1, rows, cols))
            sets.append((grad, val, rows, cols))
        for t in range(steps):
            for p, (grad, val, rows, cols) in enumerate(sets):
                a = np.array([value(p, t, k) for k in range(rows * cols)]).reshape(rows, cols)
                grad.resize(t + 1, axis=0)
                grad[t] = a
                if val is not None:
                    val.resize(t + 1, axis=0)
                    val[t] = -a
            loss.resize(t + 1, axis=0)
            loss[t] = 1.0 / (t + 1)
            f.flush()
            f.attrs["completed_steps"] = np.int64(t + 1)
            f.flush()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "read":
        read(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 3 and sys.argv[1] == "write":
        write(sys.argv[2])
    else:
        fail("usage: h5py_recording.py read RECORDING OUT.bin | write RECORDING")
