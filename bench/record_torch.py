#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Records a PyTorch training run for schatten-replay (format: docs/replay-format.md, schema 1).

Needs PyTorch >= 2.0 (forward pre-hooks with keyword arguments), numpy and h5py. Not run by the
test suite (the CI machine has no torch). Run on 2026-11-28 with torch 2.15.0+cu132 (CPU), h5py
3.7.0, numpy 1.24.2: the demo below, and bench/compare_torch_replay.py, which records an MLP and
a one-layer transformer (embeddings, attention, LayerNorms, biases) trained with SGD and AdamW,
replays each recording with schatten-replay and finds the replayed parameters equal to
PyTorch's (bit for bit where the optimizer's arithmetic is the same; docs/benchmarks/
cpu-replay.md, "PyTorch recordings"); schatten::io::check_recording accepted every recording.
On 2026-11-29 (h5py 3.16.0, NumPy 2.4.6) compare_torch_replay.py's transformer recordings
also carried /max_logits, and replaying them with QK-clip matched a MuonClip written in torch
(the same page, "MuonClip (QK-clip) against PyTorch").
A recorder killed without closing the file leaves every completed step readable.

Use in a training loop:

    from record_torch import GradientRecorder
    rec = GradientRecorder("run.h5", model, model_description="GPT-2 small, batch 64, seed 1")
    for batch in data:
        loss = model(batch).loss
        loss.backward()
        rec.record_step(loss)          # after backward, before optimizer.step() and zero_grad()
                                       # (with max_logit_heads=H: rec.record_step(loss, s), s of H values)
        optimizer.step(); optimizer.zero_grad()
    rec.close()

What is recorded, per step and parameter (requires_grad parameters, in named_parameters order):
  - the gradient, read from p.grad after backward. Reading .grad (rather than a tensor
    register_hook) gives the accumulated gradient when several backward calls make one step
    (gradient accumulation) and the unscaled gradient once a GradScaler has unscaled it;
  - the parameter before step 0 ("initial"), and optionally at every step (record_values=True);
  - for nn.Linear weights, the Gram of the layer's inputs, sum_b x_b x_b^T / B over every row of
    the input (all positions of a sequence), accumulated by a forward pre-hook over the step's
    forward calls with gradients enabled (record_act_gram=True; costs one in x in GEMM per
    forward call). Only layers whose module ran in step 0 get act_gram: the out_proj of
    nn.MultiheadAttention (and so of nn.TransformerEncoderLayer) is an nn.Linear whose weight
    attention uses without calling the module, so it has no Gram (it had one of zeros before);
  - the loss (loss.item(), the batch mean as the caller computed it);
  - optionally (max_logit_heads=H > 0) the step's largest pre-softmax attention logit of every
    query head, /max_logits (S, H) float32, which schatten-replay's QK-clip (MuonClip) reads
    (`--optimizer muon:...,qk_clip=TAU --qk-layer ...`; docs/replay-format.md). Pass the H values
    to record_step(loss, max_logits), one per query head: the heads of the first attention
    layer, then those of the next, in the order the replay's --qk-layer options list the
    layers (for one `*` pattern that names them all: the order of their parameters in the
    recording, i.e. named_parameters order); say which order in model_description (@model).

The max logits. For query head h of an attention layer, S_h is the largest q_i . k_j / sqrt(D)
(D the head dimension, q and k the head's query and key rows after their biases and any rotary
embedding) over the step's whole batch and every (query i, key j) the mask allows, computed in
the forward pass of the step, i.e. at the parameters before its update: the logit softmax
exponentiates. The recorder does not compute it (it does not know the model's attention); a
training loop does, e.g.
  - eager attention: a forward pre-hook on the attention module recomputes q and k from its
    input and weights and takes the max of q k^T / sqrt(D) (one more B*L^2*d of work per
    layer; bench/compare_torch_replay.py does this for nn.MultiheadAttention's in_proj_weight,
    and checks its logits against the module's own attention weights), or the model's attention
    function returns the max of the scores it already has;
  - flash / fused attention (F.scaled_dot_product_attention, FlashAttention): the scores never
    reach memory; the kernel keeps each query row's running max for its online softmax, and a
    kernel changed to also write that max (per row, then max over rows and batch) gives S_h
    exactly. The logsumexp such kernels return is only a bound, max <= lse <= max + log(keys):
    using it clips more than the rule says;
  - several forward passes per step (gradient accumulation): the max over them; data parallel:
    all-reduce MAX over the ranks before record_step (each rank saw only its part of the batch);
    heads sharded by tensor parallelism: gather them in head order;
  - forward passes without gradients (an evaluation) do not belong to the step.
Values are stored as float32 (rounded when given in float64), NaN and Inf as given (the replay
refuses them where it clips).
Crash survival: each step flushes its data, then sets completed_steps (in place), then flushes
again, so if training dies every completed step stays readable. Parameters without a gradient
this step (unused) are recorded as zeros. Gradients are stored as float32 unless they are
float16 or float64 (kept as is); bfloat16 is stored as float32 (exact) with dtype "bfloat16".

Demo (needs torch): python3 bench/record_torch.py --demo OUT.h5 [--steps 50]  (a few seconds)
trains a small MLP on random data and records it.
"""
import argparse
import math

import h5py
import numpy as np

try:
    import torch
except ImportError:  # the module can be imported for its docs without torch
    torch = None

SCHEMA_VERSION = 1


def steps_per_chunk(step_bytes, chunk_bytes=64 << 10, max_steps=64):
    """Steps per chunk of a per-step dataset, the C++ Recorder's rule (docs/replay-format.md,
    "Storage"): small tensors get several steps per chunk so that replay reads few chunks."""
    return max(1, min(max_steps, chunk_bytes // max(1, step_bytes)))


def matrix_shape(shape):
    """rows, cols of the matrix a tensor is stored as (schatten::optim::flatten)."""
    shape = list(shape)
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return 1, shape[0]
    return shape[0], int(math.prod(shape[1:]))


class GradientRecorder:
    def __init__(self, path, model, model_description="", record_values=False, record_act_gram=True,
                 gzip_level=None, producer=None, max_logit_heads=0, checksum=False):
        """max_logit_heads: H > 0 records /max_logits (S, H), the H values record_step is given
        each step (the module docstring: what they are, how to compute them); 0, none.
        checksum: HDF5's Fletcher-32 on every chunk, as RecorderOptions::checksum in C++ (the
        initial values then as one chunk each; docs/replay-format.md, "Storage")."""
        if torch is None:
            raise RuntimeError("record_torch.py needs PyTorch")
        if int(max_logit_heads) != max_logit_heads or max_logit_heads < 0:
            raise ValueError("max_logit_heads must be a non-negative integer, not %r" % (max_logit_heads,))
        self.max_logit_heads = int(max_logit_heads)
        self.named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not self.named:
            raise ValueError("the model has no trainable parameters")
        self.record_values = record_values
        self.step = 0
        self.f = h5py.File(path, "w-")  # refuse to overwrite, like the C++ Recorder
        f = self.f
        f.attrs["format"] = "schatten-recording"
        f.attrs["schema_version"] = np.int32(SCHEMA_VERSION)
        f.attrs["completed_steps"] = np.int64(0)
        f.attrs["num_params"] = np.int64(len(self.named))
        f.attrs["model"] = model_description
        f.attrs["producer"] = producer or "bench/record_torch.py, torch %s, h5py %s" % (torch.__version__,
                                                                                       h5py.__version__)
        compression = dict(compression="gzip", compression_opts=gzip_level, shuffle=True) if gzip_level else {}
        if checksum:
            compression["fletcher32"] = True
        self.loss = f.create_dataset("loss", shape=(0,), maxshape=(None,), dtype="f8", chunks=(1024,),
                                     fletcher32=bool(checksum))
        self.max_logits = None
        if self.max_logit_heads:  # per step, chunked like a parameter's datasets (the C++ Recorder's rule)
            h = self.max_logit_heads
            self.max_logits = f.create_dataset("max_logits", shape=(0, h), maxshape=(None, h), dtype="f4",
                                               chunks=(steps_per_chunk(4 * h), h), **compression)
        self.sets = []
        index_of = {}
        for i, (name, p) in enumerate(self.named):
            rows, cols = matrix_shape(p.shape)
            g = f.create_group("params/%d" % i)
            g.attrs["name"] = name
            g.attrs["shape"] = np.array(list(p.shape), dtype=np.int64)
            g.attrs["dtype"] = str(p.dtype).replace("torch.", "")
            store = {torch.float16: "f2", torch.float64: "f8"}.get(p.dtype, "f4")
            k = steps_per_chunk(rows * cols * np.dtype(store).itemsize)
            d = {"rows": rows, "cols": cols, "store": store,
                 "grad": g.create_dataset("grad", shape=(0, rows, cols), maxshape=(None, rows, cols), dtype=store,
                                          chunks=(k, rows, cols), **compression)}
            g.create_dataset("initial", data=self._host(p.detach(), rows, cols, store),
                             chunks=(rows, cols) if checksum else None, fletcher32=bool(checksum))
            if record_values:
                d["value"] = g.create_dataset("value", shape=(0, rows, cols), maxshape=(None, rows, cols),
                                              dtype=store, chunks=(k, rows, cols), **compression)
            self.sets.append(d)
            index_of[id(p)] = i
        # Input-activation Grams of nn.Linear weights, accumulated by forward pre-hooks. The
        # act_gram datasets are created at the first record_step, only for the layers whose hook
        # ran during that step: a Linear whose weight is used without calling the module (the
        # out_proj of nn.MultiheadAttention, which passes out_proj.weight to
        # F.multi_head_attention_forward) never runs its hooks and would get a Gram of zeros.
        self.grams = {}
        self.hooks = []
        self.compression = compression
        if record_act_gram:
            for module in model.modules():
                if isinstance(module, torch.nn.Linear) and id(module.weight) in index_of:
                    i = index_of[id(module.weight)]
                    # A weight shared by several Linear modules sums the inputs of all of them,
                    # as its gradient sums their contributions.
                    self.grams.setdefault(i, [None, 0])
                    self.hooks.append(module.register_forward_pre_hook(self._gram_hook(i), with_kwargs=True))
        f.flush()

    @staticmethod
    def _host(t, rows, cols, store):
        return t.detach().to(torch.float32 if store == "f4" else t.dtype).reshape(rows, cols).cpu().numpy()

    def _gram_hook(self, i):
        def hook(module, args, kwargs):
            # Only forward passes that build a graph: an evaluation under torch.no_grad() between
            # two steps would otherwise enter the next step's Gram.
            if not torch.is_grad_enabled():
                return None
            with torch.no_grad():
                x = args[0] if args else kwargs["input"]
                x = x.detach()
                x = x.reshape(-1, x.shape[-1]).float()
                acc = self.grams[i]
                g = x.T @ x
                acc[0] = g if acc[0] is None else acc[0] + g
                acc[1] += x.shape[0]
            return None
        return hook

    def _create_act_grams(self):
        """At the first step: an act_gram dataset for each Linear weight whose hook ran."""
        for i in list(self.grams):
            if self.grams[i][0] is None:
                del self.grams[i]
                continue
            cols = self.sets[i]["cols"]
            self.sets[i]["act_gram"] = self.f["params/%d" % i].create_dataset(
                "act_gram", shape=(0, cols, cols), maxshape=(None, cols, cols), dtype="f4",
                chunks=(steps_per_chunk(4 * cols * cols), cols, cols), **self.compression)

    @staticmethod
    def _append(dataset, t, array):
        dataset.resize(t + 1, axis=0)
        dataset[t] = array

    def _max_logit_values(self, max_logits):
        """The step's max logits as a float32 vector of max_logit_heads values, or an error."""
        h = self.max_logit_heads
        if h == 0:
            if max_logits is not None:
                raise ValueError("record_step: max_logits given, but the recorder was created with "
                                 "max_logit_heads=0 (pass max_logit_heads=H to GradientRecorder)")
            return None
        if max_logits is None:
            raise ValueError("record_step: max_logits is required (the recorder was created with "
                             "max_logit_heads=%d)" % h)
        if isinstance(max_logits, torch.Tensor):
            values = max_logits.detach().reshape(-1).float().cpu().numpy()
        elif isinstance(max_logits, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in max_logits):
            values = torch.cat([torch.as_tensor(v).detach().reshape(-1).float().cpu() for v in max_logits]).numpy()
        else:
            values = np.asarray(max_logits, dtype=np.float64).reshape(-1)
        if values.size != h:
            raise ValueError("record_step: max_logits has %d values, expected max_logit_heads = %d (one per "
                             "query head of every attention layer)" % (values.size, h))
        return values.astype(np.float32)

    def record_step(self, loss, max_logits=None):
        """Appends one step: call after backward, before the optimizer step and zero_grad.
        max_logits: the step's H = max_logit_heads values (a tensor, array or sequence; a
        sequence of per-layer tensors is concatenated), required exactly when H > 0."""
        t = self.step
        logits = self._max_logit_values(max_logits)  # checked before anything is written
        if t == 0:
            self._create_act_grams()
        for (name, p), d in zip(self.named, self.sets):
            rows, cols = d["rows"], d["cols"]
            if p.grad is None:
                grad = np.zeros((rows, cols), dtype=d["store"])
            else:
                g = p.grad.to_dense() if p.grad.is_sparse else p.grad  # nn.Embedding(sparse=True)
                grad = self._host(g, rows, cols, d["store"])
            self._append(d["grad"], t, grad)
            if self.record_values:
                self._append(d["value"], t, self._host(p.detach(), rows, cols, d["store"]))
        for i, acc in self.grams.items():
            cols = self.sets[i]["cols"]
            if acc[0] is None:  # the layer ran at step 0 but not in this step
                gram = np.zeros((cols, cols), dtype=np.float32)
            else:
                gram = (acc[0] / max(acc[1], 1)).cpu().numpy().astype(np.float32)
            self._append(self.sets[i]["act_gram"], t, gram)
            acc[0], acc[1] = None, 0
        self._append(self.loss, t, float(loss.item() if hasattr(loss, "item") else loss))
        if logits is not None:
            self._append(self.max_logits, t, logits)
        # Data first, then the count that makes the step visible (docs/replay-format.md).
        self.f.flush()
        # modify() writes the attribute in place; assigning f.attrs[...] would make h5py create
        # a temporary attribute, delete the old one and rename: a crash in between would leave
        # a file without completed_steps, which no reader opens.
        self.f.attrs.modify("completed_steps", np.int64(t + 1))
        self.f.flush()
        self.step = t + 1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        for h in self.hooks:
            h.remove()
        self.hooks = []
        if self.f:
            self.f.close()
            self.f = None


def demo(path, steps):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rec = GradientRecorder(path, model, model_description="32-64-10 MLP on random data, seed 0, AdamW 1e-3")
    x, y = torch.randn(512, 32), torch.randint(0, 10, (512,))
    for t in range(steps):
        idx = torch.randint(0, 512, (64,))
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        rec.record_step(loss)
        opt.step()
        opt.zero_grad()
    rec.close()
    print("recorded %d steps to %s" % (steps, path))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="Record a small PyTorch demo run (see the module docstring).")
    ap.add_argument("--demo", metavar="OUT.h5", required=True)
    ap.add_argument("--steps", type=int, default=50)
    a = ap.parse_args()
    if torch is None:
        raise SystemExit("record_torch.py: PyTorch is not installed")
    demo(a.demo, a.steps)
