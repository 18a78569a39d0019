#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Checks bench/record_torch.py end to end against schatten-replay (needs PyTorch; not part of
the test suite, whose machine has no torch).

For each case it trains a small model in PyTorch (float32, CPU, fixed seed) with an optimizer
applied inline, records the run with GradientRecorder (gradients, the initial parameters, the
parameters at every step, activation Grams), replays the recording with schatten-replay's
matching preset (--save-params) and compares the replayed parameters W_1 ... W_T with the ones
PyTorch computed (the recorded value[t] and the final parameters). Replay is open loop, so both
sides apply the same update rule to the same gradients: they differ only by the rounding of the
update arithmetic.

Cases (model / optimizer run in torch / replay preset):
  mlp   torch.optim.SGD(lr)                   sgd:lr
  mlp   float32 AdamW written in torch in the order of schatten's kernel   adamw    (bits)
  mlp   torch.optim.AdamW                     adamw:lr,b1,b2,eps,wd
  mlp   Lion on every parameter (LionTorch: dion's lion_update, torch.lerp and sign)
        lion:lr,b1,b2,wd
  mlp   NorMuon on the hidden matrices (NorMuonTorch: the reference normuon.py's formulas, NS5 in
        float32) and torch.optim.AdamW on the rest   normuon:lr,b2,wd,adamw_lr,adamw_wd
  mlp   AdaMuon the same way (AdaMuonTorch: the reference adamuon.py's formulas, one process, NS5 in
        float32)   adamuon:lr,wd,adamw_lr,adamw_wd
  mlp   NAMO the same way (NamoTorch: the reference namo.py's formulas, NS5 in float32)
        namo:lr,wd,adamw_lr,adamw_wd
  mlp   NAMO-D the same way (NamoDTorch: the reference's NAMO_D, NS5 in float32)
        namo_d:lr,wd,col_clamp,adamw_lr,adamw_wd
  mlp   Dion2 the same way (Dion2Torch: dion2.py's single-process formulas, its Polar Express in
        float32)   dion2:lr,fraction,ef_decay,wd,adamw_lr,adamw_wd
  mlp   SPEL the same way (SpelTorch: Emerging-Optimizers' Spel, its Newton-Schulz in float32)
        spel:lr,momentum,wd,adamw_lr,adamw_wd (tolerance --tol-projected)
  tfm   the same ten, on a one-layer transformer (nn.Embedding, nn.TransformerEncoderLayer with
        its attention, LayerNorms and biases, a final LayerNorm and nn.Linear head)
  tfm   NorMuon with the fused in_proj_weight (3d x d) cut into Q, K and V (each orthogonalised,
        normalised and shape-scaled as a matrix of its own)   the same preset with
        --split '*in_proj_weight:count=3,parts=q/k/v' (the replay's columns are the pieces; the
        comparison stacks them back)
  both  torch.optim.Muon (lr 0.02, momentum 0.95 Nesterov, wd 0.01) with each adjust_lr_fn -
        original, match_rms_adamw, spectral_unclamped - on the hidden matrices and
        torch.optim.AdamW on the rest   muon:...,shape=keller|moonlight|unit_rms_norm: muon_fp32
        runs torch's Newton-Schulz in float32 (_zeropower_float32, tolerance --tol-spectral),
        muon_bf16 as shipped, in bfloat16 (tolerance --tol-bf16, default 0.05: measured
        0.0055-0.032 relative over 30 steps, torch 2.15.0, where replaying with the wrong shape
        rule differs by 0.2-0.45)
  tfm   MuonClip: the muon_fp32 case with match_rms_adamw, then after every step QK-clip
        (QKClipTorch, written from the rule of docs/replay-format.md) on in_proj_weight's Q and K
        rows and in_proj_bias's entries, with the step's recorded max logits, tau = QK_TAU
        muon:...,shape=moonlight,...,qk_clip=TAU --qk-layer fused:qkv=...in_proj_weight,...,
        bias=...in_proj_bias (muonclip); the same with torch.optim.Muon stepping in_proj_weight's
        Q, K and V as three matrices, replayed with --split on the weight and on the bias and
        --qk-layer separate:q=...[q],k=...[k],...,q_bias=...[q],k_bias=...[k] (muonclip_qkv; the
        split changes Muon itself, so this case has its own torch run); qk_balance 0.75
        (muonclip_balance: with the default 0.5, Q and K get the same factor and a swap of the
        two exponents would go unseen). Tolerance --tol-spectral. Then a control (the muonclip
        recording replayed without qk_clip must differ by more than CONTROL_MIN_REL) and the
        replay's /runs/0/qk_factor against the eta torch applied (1e-12; equal in practice), and
        the JSON summary's qk_clip object (threshold, balance, heads, clipped pairs, min factor)
Every transformer recording carries /max_logits (MaxLogits, a forward pre-hook on the
attention), whose logits are checked once against nn.MultiheadAttention's attention weights.
"bits" cases must agree bit for bit; the others are reported with their max abs difference and
max |diff| / max |param| per parameter, and must stay below --tol (default 1e-5). Why they are
not bit-identical (measured with torch 2.15.0, docs/benchmarks/cpu-replay.md): torch's SGD step
p.add_(g, alpha=-lr) is one fused multiply-add, schatten rounds -lr*g first (<= 1 ulp per
step); torch's AdamW rounds the parameter twice per step (decay, then addcdiv), its float32
sqrt is not correctly rounded (schatten's kernel, like torch, takes 1 - beta in double, then
rounds it to float; until 2026-11-28 it computed 1.0f - float(beta2) = 0.00099998713, which was
most of the difference). Then the
transformer recording is replayed through muon and schatten_muon, and the outputs are checked:
every table finite where the format says it is defined, descent potential finite exactly for
the parameters that have act_gram. NorMuon's and AdaMuon's tolerance is --tol-spectral (default
2e-5; measured 2.3e-6 and 1.1e-6 on the MLP and 1.3e-6 and 1.2e-6 on the transformer over 30
steps, torch 2.15.0): torch's float32
GEMMs in Newton-Schulz round differently from schatten's, and the quintic amplifies that a little
each step; a missing or misplaced rule of the update changes the parameters by ~1e-2 relative.

  /work/venv-torch/bin/python bench/compare_torch_replay.py --replay build/schatten-replay \
      [--steps 30] [--workdir /tmp/ctr] [--tol 1e-5]
Exit status 0 when every check holds, 1 otherwise.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from record_torch import GradientRecorder  # noqa: E402

LR, B1, B2, EPS, WD = 1e-3, 0.9, 0.999, 1e-8, 0.01
SGD_LR = 0.05
LION_LR = 1e-4  # Lion's default (its update has RMS 1, AdamW's lr / 10)
# QK-clip's threshold for the MuonClip cases, as the replay's spec gets it (both sides parse
# this string into the same double). Without clipping, the transformer's largest logit per head
# is 1.7-2.7 at step 0 and grows to 3.7-5.8 over the 30 steps of Muon (torch 2.15.0); at 2.5 the
# clip acts on 65 of the 120 (step, head) pairs (muonclip), on 27 of the 30 steps and on every
# head, with eta down to 0.82, and keeps S within 1.6-3.0.
QK_TAU = "2.5"
QK_HEADS, QK_HEAD_DIM = 4, 8  # Tiny's attention: d = 32 in 4 heads
# The control (the clipped recording replayed without qk_clip) must differ from torch by more
# than this (max diff / max abs param; measured 0.27, torch 2.15.0): 500 times --tol-spectral.
CONTROL_MIN_REL = 1e-2


class Tiny(torch.nn.Module):
    """One transformer encoder layer on token embeddings, next-token loss."""

    def __init__(self, vocab=40, seq=12, d=32, heads=4, ff=64):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, d)
        self.pos_embed = torch.nn.Parameter(0.02 * torch.randn(seq, d))
        self.layer = torch.nn.TransformerEncoderLayer(d, heads, ff, dropout=0.0, batch_first=True)
        self.norm = torch.nn.LayerNorm(d)
        self.head = torch.nn.Linear(d, vocab)

    def forward(self, tokens):
        return self.head(self.norm(self.layer(self.embed(tokens) + self.pos_embed)))


def attention_logits(mha, query, key):
    """The pre-softmax logits q_i . k_j / sqrt(D) of an nn.MultiheadAttention (batch_first,
    packed in_proj_weight [Q | K | V] (3d, d) and in_proj_bias), (batch, heads, queries, keys),
    computed from its weights as F.multi_head_attention_forward does: q = x W_q^T + b_q,
    k = x W_k^T + b_k, split into heads of D = d / heads consecutive features. No masks."""
    d, heads = mha.embed_dim, mha.num_heads
    w, b = mha.in_proj_weight, mha.in_proj_bias
    q = torch.nn.functional.linear(query, w[:d], b[:d])
    k = torch.nn.functional.linear(key, w[d:2 * d], b[d:2 * d])
    (bq, lq, _), lk = q.shape, k.shape[1]
    q = q.reshape(bq, lq, heads, d // heads).transpose(1, 2)
    k = k.reshape(bq, lk, heads, d // heads).transpose(1, 2)
    return q @ k.transpose(-1, -2) / math.sqrt(d // heads)


class MaxLogits:
    """The largest pre-softmax logit of each head of `mha` over a step's forward passes
    (docs/replay-format.md, /max_logits): a forward pre-hook recomputes the logits from the
    attention's input and weights (eager attention here; record_torch.py's docstring for flash
    kernels). take() returns the step's H values (float32) and starts the next step."""

    def __init__(self, mha):
        self.mha, self.max = mha, None
        mha.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        if not torch.is_grad_enabled():  # only the step's training forward passes
            return None
        if kwargs.get("attn_mask") is not None or kwargs.get("key_padding_mask") is not None or kwargs.get("is_causal"):
            raise RuntimeError("MaxLogits: masked attention is not handled (the max must skip masked pairs)")
        with torch.no_grad():
            query = args[0] if args else kwargs["query"]
            key = args[1] if len(args) > 1 else kwargs["key"]
            m = attention_logits(module, query.detach(), key.detach()).amax(dim=(0, 2, 3))
            self.max = m if self.max is None else torch.maximum(self.max, m)
        return None

    def take(self):
        m, self.max = self.max, None
        if m is None:
            raise RuntimeError("MaxLogits: the attention did not run in this step")
        return m.numpy().astype(np.float32)


def check_attention_logits():
    """Checks attention_logits against nn.MultiheadAttention's own attention weights (softmax
    over the keys, per head, need_weights=True) on a batch of Tiny's inputs: exits unless the
    probabilities agree to 1e-6; returns their max abs difference. This covers the Q/K layout of
    in_proj, the split into heads and the 1/sqrt(D) scale, not a constant added to a whole query
    row: softmax ignores it, and the only such term is q_i . b_k, which the logits include as the
    module computes k."""
    torch.manual_seed(0)
    model = Tiny()
    x = model.embed(torch.randint(0, 40, (16, 12))) + model.pos_embed
    with torch.no_grad():
        _, weights = model.layer.self_attn(x, x, x, need_weights=True, average_attn_weights=False)
        mine = torch.softmax(attention_logits(model.layer.self_attn, x, x), dim=-1)
    diff = float((mine - weights).abs().max()) if weights.shape == mine.shape else float("inf")
    # Probabilities in [0, 1] from float32 logits rounded in another order (torch scales q before
    # q k^T): measured 8.9e-8 (torch 2.15.0); a wrong head split, scale or Q/K swap gives > 0.01.
    if not diff <= 1e-6:
        raise SystemExit("compare_torch_replay.py: the attention logits do not give nn.MultiheadAttention's "
                         "weights (max abs diff %g; shapes %s, %s)" % (diff, tuple(weights.shape), tuple(mine.shape)))
    return diff


def make(model_name):
    torch.manual_seed(0)
    if model_name == "mlp":
        model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
        x, y = torch.randn(512, 32), torch.randint(0, 10, (512,))

        def loss_fn(t):
            idx = torch.randint(0, 512, (64,), generator=torch.Generator().manual_seed(t))
            loss_fn.inputs.append(x[idx])
            return torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        loss_fn.inputs = []  # the first layer's input of each step, to check its act_gram
        loss_fn.max_logits = None  # no attention
    else:
        model = Tiny()
        data = torch.randint(0, 40, (256, 13))
        max_logits = MaxLogits(model.layer.self_attn)

        def loss_fn(t):
            b = data[torch.randint(0, 256, (16,), generator=torch.Generator().manual_seed(t))]
            logits = model(b[:, :-1])
            return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), b[:, 1:].reshape(-1))
        loss_fn.max_logits = max_logits  # every transformer recording carries /max_logits
    return model, loss_fn


class MirrorAdamW:
    """AdamW in float32 torch ops, each rounding as in schatten's adamw_kernel
    (include/schatten/optim/transforms.hpp, src/optim/kernels.cpp):
      m = b1 m + (1 - b1) g;  v = b2 v + ((1 - b2) g) g
      u = -lr ((m inv_c1) / (sqrt(v) inv_sqrt_c2 + eps) + wd w);  w = w + u
    with b1, b2, 1 - b1, 1 - b2 (computed in double), eps, wd, -lr rounded to float, the bias
    corrections computed in double and a correctly rounded square root."""

    def __init__(self, params):
        self.params = list(params)
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.t = 0
        f = np.float32
        self.b1, self.b2 = f(B1), f(B2)
        self.c1, self.c2 = f(1.0 - B1), f(1.0 - B2)  # 1 - beta in double, then float
        self.eps, self.wd, self.neg_lr = f(EPS), f(WD), f(-LR)

    @torch.no_grad()
    def step(self):
        self.t += 1
        inv_c1 = np.float32(1.0 / (1.0 - B1 ** self.t))
        inv_sqrt_c2 = np.float32(1.0 / np.sqrt(1.0 - B2 ** self.t))
        s = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731  (0-d float32 operands)
        for p, m, v in zip(self.params, self.m, self.v):
            g = p.grad
            m.copy_(s(self.b1) * m + s(self.c1) * g)
            v.copy_(s(self.b2) * v + (s(self.c2) * g) * g)
            # torch.sqrt of float32 on the CPU is not correctly rounded (torch 2.15, AVX512
            # kernels: 1 ulp off for about 0.7 % of inputs); the square root of a float in double,
            # rounded to float, is (53 >= 2 * 24 + 2), as is std::sqrt(float).
            out = (m * s(inv_c1)) / (torch.sqrt(v.double()).float() * s(inv_sqrt_c2) + s(self.eps))
            p.add_(s(self.neg_lr) * (out + s(self.wd) * p))

    def zero_grad(self):
        for p in self.params:
            p.grad = None


def ns5(g):
    """Keller Jordan's Newton-Schulz quintic in float32: X/(||X||_F + 1e-7) of the wide
    orientation, five steps of X <- aX + (bA + cA^2)X with A = XX^T."""
    tall = g.shape[0] > g.shape[1]
    x = g.T if tall else g
    x = x / (x.norm() + 1e-7)
    for _ in range(5):
        a = x @ x.T
        x = 3.4445 * x + (-4.7750 * a + 2.0315 * a @ a) @ x
    return x.T if tall else x


class NorMuonTorch:
    """NorMuon (arXiv 2510.05491) on the hidden matrices as the reference normuon.py of
    zichongli5/NorMuon computes it, but orthogonalising in float32 (the reference: bfloat16),
    and torch.optim.AdamW on the rest (biases; embeddings and the head by name), split as
    schatten's propose_labels splits them. Per matrix W (rows x cols) and step:
      m <- lerp(m, g, 1 - beta);  u = lerp(g, m, beta)            (Nesterov EMA momentum)
      O = NS5(u);  nu <- lerp(nu, mean_cols(O*O), 1 - beta2)
      O <- O / (sqrt(nu) + 1e-10), rescaled to its norm before;  O *= sqrt(max(1, rows/cols))
      W <- W (1 - lr wd) - lr O"""

    EXCLUDE = ("embed", "unembed", "wte", "wpe", "lm_head", "head", "classifier")

    @staticmethod
    def excluded(name):
        """LabelPolicy's rule (src/optim/partition.cpp): an entry counts where it begins a word of
        the name (at its start or after a character that is not a letter)."""
        for e in NorMuonTorch.EXCLUDE:
            at = name.find(e)
            while at >= 0:
                if at == 0 or not name[at - 1].isalpha():
                    return True
                at = name.find(e, at + 1)
        return False

    def __init__(self, model, lr=0.02, beta=0.95, beta2=0.95, wd=0.01, cut=None):
        """cut: (name suffix, k): matrices whose name ends so are cut into k equal row pieces."""
        self.lr, self.beta, self.beta2, self.wd = lr, beta, beta2, wd
        named = list(model.named_parameters())
        self.matrices = [p for n, p in named if p.dim() >= 2 and not self.excluded(n)]
        self.pieces = [cut[1] if cut and n.endswith(cut[0]) else 1
                       for n, p in named if p.dim() >= 2 and not self.excluded(n)]
        ids = {id(p) for p in self.matrices}
        self.adamw = torch.optim.AdamW([p for _, p in named if id(p) not in ids], lr=LR, betas=(B1, B2),
                                       eps=EPS, weight_decay=WD)
        self.m = [torch.zeros_like(p) for p in self.matrices]
        self.nu = [torch.zeros(p.shape[0], 1) for p in self.matrices]

    @torch.no_grad()
    def step(self):
        for p, m, nu, k in zip(self.matrices, self.m, self.nu, self.pieces):
            g = p.grad
            m.lerp_(g, 1 - self.beta)
            u = g.lerp(m, self.beta).reshape(p.shape[0], -1)
            parts = []
            for piece, piece_nu in zip(u.chunk(k, dim=0), nu.chunk(k, dim=0)):
                o = ns5(piece)
                before = o.norm()
                piece_nu.lerp_((o * o).mean(dim=-1, keepdim=True), 1 - self.beta2)  # a view of nu
                o = o / (piece_nu.sqrt() + 1e-10)
                o = o * (before / (o.norm() + 1e-10))
                parts.append(o * max(1.0, o.shape[0] / o.shape[1]) ** 0.5)
            p.mul_(1 - self.lr * self.wd)
            p.add_(torch.cat(parts, dim=0).reshape(p.shape), alpha=-self.lr)
        self.adamw.step()

    def zero_grad(self):
        for p in self.matrices:
            p.grad = None
        self.adamw.zero_grad()


def _zeropower_float32(grad, ns_coefficients, ns_steps, eps):
    """torch.optim._muon._zeropower_via_newtonschulz (torch 2.15) without its cast to bfloat16:
    the same operations in float32 (the muon_fp32 cases patch it in, to separate the update
    rules from bf16's rounding)."""
    a, b, c = ns_coefficients
    x = grad.to(dtype=torch.float32, copy=True)
    if grad.size(0) > grad.size(1):
        x = x.T
    x.div_(x.norm().clamp(min=eps))
    for _ in range(ns_steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if grad.size(0) > grad.size(1) else x


class TorchMuon:
    """torch.optim.Muon (lr 0.02, momentum 0.95 Nesterov, wd 0.01, `adjust_lr_fn`) on the hidden
    matrices that schatten's propose_labels picks, torch.optim.AdamW on the rest. float32=True
    runs its Newton-Schulz in float32 (_zeropower_float32) instead of torch's bfloat16.
    cut=(name suffix, k): torch.optim.Muon steps k equal row pieces of each such matrix instead of
    the matrix, each a parameter of its own (own momentum, Newton-Schulz and adjust_lr_fn of its
    shape), as the replay's --split does: the pieces are views of the parameter's storage, given
    the matching rows of its gradient before each step."""

    def __init__(self, model, adjust_lr_fn, float32, cut=None):
        import torch.optim._muon as muon_module
        self.module, self.float32 = muon_module, float32
        named = list(model.named_parameters())
        mats = [p for n, p in named if p.dim() >= 2 and not NorMuonTorch.excluded(n)]
        ids = {id(p) for p in mats}
        self.cut = [(p, list(p.detach().chunk(cut[1], dim=0))) for n, p in named
                    if cut and id(p) in ids and n.endswith(cut[0])]
        whole = {id(p) for p, _ in self.cut}
        stepped = [p for p in mats if id(p) not in whole] + [v for _, pieces in self.cut for v in pieces]
        self.muon = torch.optim.Muon(stepped, lr=0.02, weight_decay=0.01, momentum=0.95, nesterov=True,
                                     adjust_lr_fn=adjust_lr_fn)
        self.adamw = torch.optim.AdamW([p for _, p in named if id(p) not in ids], lr=LR, betas=(B1, B2),
                                       eps=EPS, weight_decay=WD)

    def step(self):
        for p, pieces in self.cut:
            for v, g in zip(pieces, p.grad.chunk(len(pieces), dim=0)):
                v.grad = g
        stock = self.module._zeropower_via_newtonschulz
        if self.float32:
            self.module._zeropower_via_newtonschulz = _zeropower_float32
        try:
            self.muon.step()
        finally:
            self.module._zeropower_via_newtonschulz = stock
        self.adamw.step()

    def zero_grad(self):
        self.muon.zero_grad()
        self.adamw.zero_grad()
        for p, _ in self.cut:
            p.grad = None


class QKClipTorch:
    """QK-clip (MuonClip, Kimi K2, arXiv 2507.20534), written here from the rule schatten-replay
    documents (docs/replay-format.md), for Tiny's nn.MultiheadAttention: after each optimizer
    step, with the max logits S_h that the step's forward pass recorded (float32, as in the
    file), per head h (each head its own group in multi-head attention):
      eta_h = min(1, tau / S_h) in double;
      Q rows [h D, (h+1) D) of in_proj_weight and their in_proj_bias entries *= float32(eta_h^alpha),
      K rows d + [h D, (h+1) D) and their bias entries                  *= float32(eta_h^(1-alpha)),
    each float32 element multiplied once; V is untouched. etas holds eta of every step and head
    (the replay's /runs/k/qk_factor)."""

    def __init__(self, mha, tau, alpha=0.5):
        self.w, self.b = mha.in_proj_weight, mha.in_proj_bias
        self.d, self.dim = mha.embed_dim, mha.head_dim
        self.tau, self.alpha = float(tau), float(alpha)
        self.etas = []

    @torch.no_grad()
    def apply(self, s):
        eta = [min(1.0, self.tau / float(v)) for v in np.asarray(s, dtype=np.float32)]
        for h, e in enumerate(eta):
            for first, power in ((h * self.dim, self.alpha), (self.d + h * self.dim, 1.0 - self.alpha)):
                factor = torch.tensor(np.float32(math.pow(e, power)))  # 0-d float32: one rounding per element
                self.w[first:first + self.dim].mul_(factor)
                self.b[first:first + self.dim].mul_(factor)
        self.etas.append(eta)


# torch.optim.Muon's adjust_lr_fn and the replay's shape rule that should match it.
MUON_SHAPES = {"original": "keller", "match_rms_adamw": "moonlight", "spectral_unclamped": "unit_rms_norm"}
# The MuonClip cases (transformer only): torch.optim.Muon with float32 Newton-Schulz and
# match_rms_adamw (the muon_fp32 case), QK-clip after every step. name: (in_proj_weight cut into
# Q, K, V?, qk_balance alpha).
CLIP_CASES = {"muonclip": (False, 0.5), "muonclip_qkv": (True, 0.5), "muonclip_balance": (False, 0.75)}


def train(model_name, optimizer, steps, path):
    model, loss_fn = make(model_name)
    clip = None  # QKClipTorch of the MuonClip cases
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=SGD_LR)
    elif optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=(B1, B2), eps=EPS, weight_decay=WD)
    elif optimizer == "normuon":
        opt = NorMuonTorch(model)
    elif optimizer == "adamuon":
        opt = AdaMuonTorch(model)
    elif optimizer == "namo":
        opt = NamoTorch(model)
    elif optimizer == "dion2":
        opt = Dion2Torch(model)
    elif optimizer == "namo_d":
        opt = NamoDTorch(model)
    elif optimizer == "lion":
        opt = LionTorch(model.parameters(), lr=LION_LR)
    elif optimizer == "spel":
        opt = SpelTorch(model)
    elif optimizer == "normuon_qkv":
        opt = NorMuonTorch(model, cut=("in_proj_weight", 3))
    elif optimizer in CLIP_CASES:
        cut, alpha = CLIP_CASES[optimizer]
        opt = TorchMuon(model, "match_rms_adamw", True, cut=("in_proj_weight", 3) if cut else None)
        clip = QKClipTorch(model.layer.self_attn, QK_TAU, alpha)
    elif optimizer.startswith("muon"):  # muon_fp32:<adjust_lr_fn> or muon_bf16:<adjust_lr_fn>
        kind, fn = optimizer.split(":")
        opt = TorchMuon(model, fn, kind == "muon_fp32")
    else:
        opt = MirrorAdamW(model.parameters())
    heads = QK_HEADS if loss_fn.max_logits else 0
    used = []  # the max logits the clip was given
    # The format asks the producer to state the order of /max_logits' heads in @model.
    described = "%s, %s, %d steps, seed 0" % (model_name, optimizer, steps) + (
        "; max_logits: heads 0-%d of layer.self_attn" % (heads - 1) if heads else "")
    with GradientRecorder(path, model, model_description=described, record_values=True,
                          max_logit_heads=heads) as rec:
        for t in range(steps):
            loss = loss_fn(t)
            loss.backward()
            s = loss_fn.max_logits.take() if heads else None
            rec.record_step(loss, s)
            opt.step()
            if clip:
                clip.apply(s)
                used.append(s)
            opt.zero_grad()
    if clip:  # the clip used the values in the file (float32, unchanged)
        with h5py.File(path, "r") as f:
            if not np.array_equal(f["max_logits"][...], np.array(used, dtype=np.float32)):
                raise SystemExit("compare_torch_replay.py: /max_logits of %s is not what the clip used" % path)
    if model_name == "mlp":  # act_gram of 0.weight = x^T x / B of the step's batch
        with h5py.File(path, "r") as f:
            for t, x in enumerate(loss_fn.inputs):
                want = (x.double().T @ x.double() / x.shape[0]).numpy()
                err = np.abs(f["params/0/act_gram"][t] - want).max() / np.abs(want).max()
                if err > 1e-6:
                    raise SystemExit("compare_torch_replay.py: act_gram of step %d is off by %g" % (t, err))
    return ([p.detach().reshape(p.shape[0] if p.dim() >= 2 else 1, -1).numpy().copy() for p in model.parameters()],
            np.array(clip.etas) if clip else None)


def crash(path, steps):
    """Child process: records `steps` steps of the MLP and dies without closing the file."""
    model, loss_fn = make("mlp")
    rec = GradientRecorder(path, model, model_description="crash test", record_values=True)
    for t in range(steps):
        loss = loss_fn(t)
        loss.backward()
        rec.record_step(loss)
        model.zero_grad()
    os._exit(0)


def replay(binary, rec, spec, out, extra=()):
    cmd = [binary, rec, "--optimizer", spec, "--out", out, "--quiet"] + list(extra)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit("compare_torch_replay.py: %s failed (%d): %s" % (" ".join(cmd), r.returncode, r.stderr))
    return cmd


def compare(rec, out, final):
    """Max abs diff, max over parameters of max|diff|/max|param|, identical elements / all, over
    every step t = 1 … T (recorded value[t] for t < T, torch's final parameters for T). With
    --split the replay's columns are pieces (/param_source); row pieces are stacked back, and
    column pieces (those with all of the parameter's rows) put side by side."""
    worst_abs = worst_rel = 0.0
    same = total = 0
    with h5py.File(rec, "r") as r, h5py.File(out, "r") as o:
        n = int(r.attrs["completed_steps"])
        source = o["param_source"][...]
        for i in range(int(r.attrs["num_params"])):
            cols = [k for k in range(len(source)) if source[k] == i]
            pieces = [o["runs/0/params/%d" % k][...] for k in cols]  # W_0 … W_T, (T+1, rows, cols) each
            rows = r["params/%d/initial" % i].shape[0]
            mine = np.concatenate(pieces, axis=2 if all(q.shape[1] == rows for q in pieces) else 1)
            theirs = np.concatenate([r["params/%d/value" % i][1:n], final[i][None]], axis=0)
            if not np.array_equal(mine[0], r["params/%d/initial" % i][...]):
                raise SystemExit("compare_torch_replay.py: replay did not start from the recorded initial value")
            d = np.abs(mine[1:].astype(np.float64) - theirs)
            worst_abs = max(worst_abs, float(d.max()))
            worst_rel = max(worst_rel, float(d.max() / max(np.abs(theirs).max(), 1e-30)))
            same += int(np.sum(mine[1:].view(np.uint32) == theirs.astype(np.float32).view(np.uint32)))
            total += d.size
    return worst_abs, worst_rel, same, total


def check_diagnostics(rec, out):
    """Returns a list of problems in a replay output of `rec` (empty when clean)."""
    problems = []
    with h5py.File(rec, "r") as r, h5py.File(out, "r") as o:
        names = [r["params/%d" % i].attrs["name"] for i in range(int(r.attrs["num_params"]))]
        has_gram = ["act_gram" in r["params/%d" % i] for i in range(len(names))]
        run = o["runs/0"]
        labels = [x.decode() for x in run["labels"][...]]
        for table in ("update_norm", "param_norm", "grad_dot", "descent_cosine"):
            if not np.all(np.isfinite(run[table][...])):
                problems.append("%s has non-finite values" % table)
        t = run["alignment"].shape[0]
        if not np.all(np.isfinite(run["alignment"][: t - 1])):
            problems.append("alignment has non-finite values before the last step")
        pot = run["potential"][...]
        for i, name in enumerate(names):
            if has_gram[i] and not np.all(np.isfinite(pot[:, i])):
                problems.append("potential of %s (has act_gram) is not finite" % name)
            if not has_gram[i] and not np.all(np.isnan(pot[:, i])):
                problems.append("potential of %s (no act_gram) is not NaN" % name)
            orth = run["orthogonality_error"][:, i]
            if labels[i] == "muon" and not np.all(np.isfinite(orth)):  # muon's polar step only
                problems.append("orthogonality_error of %s (%s) is not finite" % (name, labels[i]))
        p = run["schatten_p"][...]
        spec = run.attrs["spec"]
        if "schatten_muon" in (spec.decode() if isinstance(spec, bytes) else spec):
            for i, name in enumerate(names):
                if labels[i] != "adamw" and not np.all(np.isfinite(p[:, i])):
                    problems.append("schatten_p of %s is not finite" % name)
    return problems


class AdaMuonTorch(NorMuonTorch):
    """AdaMuon (arXiv 2507.11005) on the hidden matrices as the reference adamuon.py of
    Chongjie-Si/AdaMuon computes it (one process, no all-gather), orthogonalising in float32 (the
    reference: bfloat16), and torch.optim.AdamW on the rest, split as NorMuonTorch. Per matrix:
      m <- lerp(m, g, 1 - beta);  u = lerp(g, m, beta);  O = NS5(sign(u))
      v <- beta v + (1 - beta) O*O;  O <- O / (sqrt(v) + eps);  O *= 0.2 sqrt(rows cols) / (|O| + eps)
      W <- W (1 - lr wd) - lr O        (beta 0.95 for both moments, eps 1e-8, as the reference)"""

    def __init__(self, model, lr=0.02, beta=0.95, wd=0.01, eps=1e-8):
        super().__init__(model, lr=lr, beta=beta, wd=wd)
        self.eps = eps
        self.v = [torch.zeros_like(p) for p in self.matrices]

    @torch.no_grad()
    def step(self):
        for p, m, v in zip(self.matrices, self.m, self.v):
            g = p.grad
            m.lerp_(g, 1 - self.beta)
            u = g.lerp(m, self.beta).reshape(p.shape[0], -1)
            o = ns5(torch.sign(u))
            vv = v.view(o.shape)
            vv.mul_(self.beta).addcmul_(o, o, value=1 - self.beta)
            o = o / (vv.sqrt() + self.eps)
            o = o * (0.2 * (o.shape[0] * o.shape[1]) ** 0.5 / (o.norm() + self.eps))
            p.mul_(1 - self.lr * self.wd)
            p.add_(o.reshape(p.shape), alpha=-self.lr)
        self.adamw.step()


class NamoTorch(NorMuonTorch):
    """NAMO (arXiv 2602.17080) on the hidden matrices as the reference src/namo.py of
    minxin-zhg/namo computes it, orthogonalising in float32 (the reference: bfloat16), and
    torch.optim.AdamW on the rest, split as NorMuonTorch. Per matrix (rows A, cols B) and step t:
      gn = |g|;  m <- lerp(m, g, 1 - beta);  N = lerp(g, m, beta);  O = NS5(N)
      v <- mu2 v + (1 - mu2) gn^2  (a float32 scalar);  a = lr sqrt(1 - mu2^t)/(1 - beta^t + 1e-12) |N|/(sqrt(v) + eps)
      W <- W (1 - wd min(a, 1)) - min(a 0.2 sqrt(max(A, B)), 1) O"""

    def __init__(self, model, lr=0.01, beta=0.95, mu2=0.99, eps=1e-8, scale=0.2, wd=0.1):
        super().__init__(model, lr=lr, beta=beta, wd=wd)
        self.mu2, self.eps, self.scale = mu2, eps, scale
        self.v = [torch.zeros((), dtype=torch.float32) for _ in self.matrices]
        self.t = 0

    @torch.no_grad()
    def step(self):
        self.t += 1
        bc1, bc2 = 1.0 - self.beta ** self.t, 1.0 - self.mu2 ** self.t
        for p, m, v in zip(self.matrices, self.m, self.v):
            g = p.grad
            gn = torch.linalg.vector_norm(g)
            m.lerp_(g, 1 - self.beta)
            n = g.lerp(m, self.beta).reshape(p.shape[0], -1)
            gn_m = torch.linalg.vector_norm(n)
            v.mul_(self.mu2).add_(gn * gn, alpha=1.0 - self.mu2)
            o = ns5(n)
            a = (self.lr * math.sqrt(bc2) / (bc1 + 1e-12)) * (gn_m / (v.sqrt() + self.eps))
            step = (a * (self.scale * math.sqrt(max(o.shape)))).clamp(max=1.0)
            p.mul_(1.0 - self.wd * a.clamp(max=1.0))
            p.add_((o * step).reshape(p.shape), alpha=-1.0)
        self.adamw.step()


# dion/polar_express.py's table (microsoft/dion): 5 steps, the safety factor 1.02 folded in.
PE5 = ((8.156554524902461, -22.48329292557795, 15.878769915207462),
       (4.042929935166739, -2.808917465908714, 0.5000178451051316),
       (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
       (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
       (2.3465413258596377, -1.7097828382687081, 0.42323551169305323))


def polar_express5(g, eps):
    """dion/polar_express.py's polar_express in float32 (the reference: bfloat16):
    X/(1.02 ||X||_F + eps), then X <- aX + (bA + cA^2)X with A = XX^T (XA form when tall)."""
    x = g / (g.norm() * 1.02 + eps)
    for a, b, c in PE5:
        if g.shape[0] > g.shape[1]:
            gram = x.T @ x
            x = a * x + x @ (b * gram + c * (gram @ gram))
        else:
            gram = x @ x.T
            x = a * x + (b * gram + c * (gram @ gram)) @ x
    return x


class Dion2Torch(NorMuonTorch):
    """Dion2 (arXiv 2512.16928) on the hidden matrices as dion/dion2.py of microsoft/dion computes
    it on one process (dion2_pre_orthogonalize, polar_express, dion2_post_orthogonalize),
    orthogonalising in float32 (the reference: bfloat16), and torch.optim.AdamW on the rest, split
    as NorMuonTorch. Per matrix W (rows r, cols c) and step:
      M += g;  the k = max(1, ceil(f n)) rows (columns when r > c) of M with the largest l1 norms
      (torch.topk); S = M[k];  M[k] *= ef;  O = polar_express5(S, 1e-8)
      W <- W (1 - lr wd);  W[k] -= lr sqrt(r/c) O"""

    def __init__(self, model, lr=0.01, fraction=0.25, ef=0.95, wd=0.01):
        super().__init__(model, lr=lr, wd=wd)
        self.fraction, self.ef = fraction, ef

    @torch.no_grad()
    def step(self):
        for p, m in zip(self.matrices, self.m):
            mm = m.view(p.shape[0], -1)
            mm.add_(p.grad.reshape(mm.shape))
            rows = mm.shape[0] <= mm.shape[1]
            n = mm.shape[0] if rows else mm.shape[1]
            k = max(1, int(math.ceil(self.fraction * n)))
            idx = torch.topk(mm.norm(p=1, dim=1 if rows else 0), k, sorted=False).indices
            sub = mm[idx] if rows else mm[:, idx]
            if rows:
                mm[idx] = sub * self.ef
            else:
                mm[:, idx] = sub * self.ef
            o = polar_express5(sub, 1e-8)
            w = p.view(mm.shape)
            w.mul_(1 - self.lr * self.wd)
            scale = -self.lr * (mm.shape[0] / mm.shape[1]) ** 0.5
            if rows:
                w[idx] += scale * o
            else:
                w[:, idx] += scale * o
        self.adamw.step()


class NamoDTorch(NorMuonTorch):
    """NAMO-D (arXiv 2602.17080) on the hidden matrices as NAMO_D of the reference src/namo.py
    (minxin-zhg/namo) computes it, orthogonalising in float32, and torch.optim.AdamW on the rest,
    split as NorMuonTorch. Per matrix (rows A, cols B) and step t, column j:
      V_j <- mu2 V_j + (1 - mu2) |g_j|^2 (float32);  m <- lerp(m, g, 1 - beta);  N = lerp(g, m, beta)
      O = NS5(N);  b = lr sqrt(1 - mu2^t)/(1 - beta^t + 1e-12);  s_j = |N_j|/(sqrt(V_j) + eps),
      clamped to [mean(s) c, mean(s)/c];  W_j <- max(0, 1 - wd min(b s_j, 1)) W_j
      - min(b s_j 0.2 sqrt(max(A, B)), 1) O_j"""

    def __init__(self, model, lr=0.01, beta=0.95, mu2=0.99, eps=1e-8, scale=0.2, wd=0.1, clamp=0.75):
        super().__init__(model, lr=lr, beta=beta, wd=wd)
        self.mu2, self.eps, self.scale, self.clamp = mu2, eps, scale, clamp
        self.v = [torch.zeros(p.reshape(p.shape[0], -1).shape[1], dtype=torch.float32) for p in self.matrices]
        self.t = 0

    @torch.no_grad()
    def step(self):
        self.t += 1
        bc1, bc2 = 1.0 - self.beta ** self.t, 1.0 - self.mu2 ** self.t
        base = self.lr * math.sqrt(bc2) / (bc1 + 1e-12)
        for p, m, v in zip(self.matrices, self.m, self.v):
            g = p.grad.reshape(p.shape[0], -1)
            ncg = torch.linalg.vector_norm(g, dim=0)
            v.mul_(self.mu2).addcmul_(ncg, ncg, value=1.0 - self.mu2)
            mm = m.view(g.shape)
            mm.lerp_(g, 1 - self.beta)
            n = g.lerp(mm, self.beta)
            o = ns5(n)
            s = torch.linalg.vector_norm(n, dim=0) / (v.sqrt() + self.eps)
            mean = s.mean()
            if 0.0 < self.clamp <= 1.0 and torch.isfinite(mean) and mean > 0:
                s = s.clamp(min=mean * self.clamp, max=mean / self.clamp)
            decay = (1.0 - self.wd * (s * base).clamp(max=1.0)).clamp_min(0.0)
            w = p.view(g.shape)
            w.mul_(decay.unsqueeze(0))
            w.addcmul_(o, (s * (base * self.scale * math.sqrt(max(g.shape)))).clamp(max=1.0).unsqueeze(0), value=-1.0)
        self.adamw.step()


# You Jiacheng's table, Emerging-Optimizers' "quintic" coefficient set (its muon_utils.py).
YOU5 = ((4.0848, -6.8946, 2.9270),
        (3.9505, -6.3029, 2.6377),
        (3.7418, -5.5913, 2.3037),
        (2.8769, -3.1427, 1.2046),
        (2.8366, -3.0525, 1.2012))


def ns_you(g):
    """Emerging-Optimizers' newton_schulz(coefficient_type="quintic", steps=5) in float32: the
    wide orientation, X/max(||X||_F, 1e-15) (F.normalize), five rows of You Jiacheng's table."""
    tall = g.shape[0] > g.shape[1]
    x = g.T if tall else g
    x = torch.nn.functional.normalize(x, p=2, dim=(-2, -1), eps=1e-15)
    for a, b, c in YOU5:
        gram = x @ x.T
        x = a * x + (b * gram + c * (gram @ gram)) @ x
    return x.T if tall else x


class SpelTorch(NorMuonTorch):
    """SPEL (arXiv 2601.21487) on the hidden matrices as Emerging-Optimizers' Spel computes it
    (OrthogonalizedOptimizer.step with decoupled decay and post_weight_update_fn_inplace), its
    Newton-Schulz in float32 (the reference's default matmul precision: bfloat16), and
    torch.optim.AdamW on the rest, split as NorMuonTorch. Per matrix W and step:
      W <- W - lr wd W;  m <- lerp(m, g, 1 - beta);  W <- W - lr ns_you(m);  W <- ns_you(W)"""

    def __init__(self, model, lr=0.01, beta=0.95, wd=0.1):
        super().__init__(model, lr=lr, beta=beta, wd=wd)

    @torch.no_grad()
    def step(self):
        for p, m in zip(self.matrices, self.m):
            w = p.view(p.shape[0], -1)
            w.add_(w, alpha=-self.wd * self.lr)
            m.lerp_(p.grad, 1 - self.beta)
            w.add_(ns_you(m.view(w.shape)), alpha=-self.lr)
            w.copy_(ns_you(w))
        self.adamw.step()


class LionTorch:
    """Lion (arXiv 2302.06675) on every parameter as microsoft/dion's scalar_opts.lion_update
    computes it: U = sign(lerp(M, g, 1 - b1)); M <- lerp(M, g, 1 - b2); W <- W (1 - lr wd) - lr U."""

    def __init__(self, params, lr=1e-4, b1=0.9, b2=0.99, wd=0.01):
        self.params = list(params)
        self.lr, self.b1, self.b2, self.wd = lr, b1, b2, wd
        self.m = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self):
        for p, m in zip(self.params, self.m):
            u = m.lerp(p.grad, 1 - self.b1).sign_()
            m.lerp_(p.grad, 1 - self.b2)
            p.mul_(1 - self.lr * self.wd)
            p.add_(u, alpha=-self.lr)

    def zero_grad(self):
        for p in self.params:
            p.grad = None


def main():
    ap = argparse.ArgumentParser(description="Compare PyTorch training with schatten-replay (see the docstring).")
    ap.add_argument("--replay", default="build/schatten-replay")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--workdir", default=None, help="keep the files here (default: a temporary folder)")
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument("--tol-spectral", type=float, default=2e-5,
                    help="for normuon and muon_fp32, whose float32 Newton-Schulz GEMMs round differently in torch")
    ap.add_argument("--tol-projected", type=float, default=5e-5,
                    help="for spel, whose weights are a float32 Newton-Schulz output every step, so the two "
                         "sides' GEMM rounding reaches them unscaled by lr (measured 7e-6 to 1.9e-5 over 10 to "
                         "60 steps, torch 2.15.0; replaying with wd=0 instead is 3.4e-4 away)")
    ap.add_argument("--tol-bf16", type=float, default=5e-2,
                    help="for muon_bf16: torch.optim.Muon as shipped, Newton-Schulz in bfloat16")
    a = ap.parse_args()
    torch.set_num_threads(1)
    work = a.workdir or tempfile.mkdtemp(prefix="compare_torch_replay.")
    os.makedirs(work, exist_ok=True)
    print("torch %s, h5py %s, numpy %s; %d steps; files in %s" % (torch.__version__, h5py.__version__,
                                                                   np.__version__, a.steps, work))
    specs = {"sgd": "sgd:lr=%g" % SGD_LR,
             "mirror": "adamw:lr=%g,b1=%g,b2=%g,eps=%g,wd=%g" % (LR, B1, B2, EPS, WD),
             "adamw": "adamw:lr=%g,b1=%g,b2=%g,eps=%g,wd=%g" % (LR, B1, B2, EPS, WD),
             "normuon": "normuon:lr=0.02,b2=0.95,wd=0.01,adamw_lr=%g,adamw_wd=%g" % (LR, WD),
             "adamuon": "adamuon:lr=0.02,wd=0.01,adamw_lr=%g,adamw_wd=%g" % (LR, WD),
             "namo": "namo:lr=0.01,wd=0.1,adamw_lr=%g,adamw_wd=%g" % (LR, WD),
             "namo_d": "namo_d:lr=0.01,wd=0.1,col_clamp=0.75,adamw_lr=%g,adamw_wd=%g" % (LR, WD),
             "lion": "lion:lr=%g,b1=0.9,b2=0.99,wd=0.01" % LION_LR,
             "dion2": "dion2:lr=0.01,fraction=0.25,ef_decay=0.95,wd=0.01,adamw_lr=%g,adamw_wd=%g" % (LR, WD),
             "spel": "spel:lr=0.01,momentum=0.95,wd=0.1,adamw_lr=%g,adamw_wd=%g" % (LR, WD)}
    specs["normuon_qkv"] = specs["normuon"]
    muon_cases = []
    for fn, shape in MUON_SHAPES.items():
        for kind in ("muon_fp32", "muon_bf16"):
            muon_cases.append("%s:%s" % (kind, fn))
            specs[muon_cases[-1]] = ("muon:lr=0.02,momentum=0.95,wd=0.01,shape=%s,adamw_lr=%g,adamw_b1=%g,"
                                     "adamw_b2=%g,adamw_eps=%g,adamw_wd=%g" % (shape, LR, B1, B2, EPS, WD))
    cut = ["--split", "*in_proj_weight:count=3,parts=q/k/v"]
    # MuonClip: the muon_fp32 / match_rms_adamw preset with QK-clip, the attention described to
    # the replay as one fused [Q | K | V] projection, or (with the weight and the bias cut into
    # q, k, v pieces) as separate Q and K projections.
    muon_spec = specs["muon_fp32:match_rms_adamw"]
    for case, (_, alpha) in CLIP_CASES.items():
        specs[case] = muon_spec + ",qk_clip=%s" % QK_TAU + (",qk_balance=%g" % alpha if alpha != 0.5 else "")
    attn = "layer.self_attn."
    fused = ["--qk-layer", "fused:qkv={0}in_proj_weight,heads={1},head_dim={2},bias={0}in_proj_bias".format(
        attn, QK_HEADS, QK_HEAD_DIM)]
    separate = ["--split", "*in_proj_weight:count=3,parts=q/k/v", "--split", "*in_proj_bias:axis=1,count=3,parts=q/k/v",
                "--qk-layer", "separate:q={0}in_proj_weight[q],k={0}in_proj_weight[k],heads={1},head_dim={2},"
                "q_bias={0}in_proj_bias[q],k_bias={0}in_proj_bias[k]".format(attn, QK_HEADS, QK_HEAD_DIM)]
    extra = {"normuon_qkv": cut, "muonclip": fused, "muonclip_qkv": separate, "muonclip_balance": fused}
    finals, etas = {}, {}
    failed = False
    print("attention logits (MaxLogits) against nn.MultiheadAttention's weights: softmax differs by %.3g" %
          check_attention_logits())
    print("%-5s %-28s %-50s %9s %9s %18s" % ("model", "torch", "replay", "max abs", "max rel", "identical"))
    for model_name in ("mlp", "tfm"):
        for optimizer in (("sgd", "mirror", "adamw", "lion", "normuon", "adamuon", "namo", "namo_d", "dion2", "spel")
                          + (("normuon_qkv",) if model_name == "tfm" else ())
                          + tuple(muon_cases) + (tuple(CLIP_CASES) if model_name == "tfm" else ())):
            rec = os.path.join(work, "%s_%s.h5" % (model_name, optimizer.replace(":", "_")))
            out = os.path.join(work, "%s_%s.replay.h5" % (model_name, optimizer.replace(":", "_")))
            for f in (rec, out):
                if os.path.exists(f):
                    os.remove(f)
            final, etas[optimizer] = train(model_name, optimizer, a.steps, rec)
            finals[optimizer] = final
            replay(a.replay, rec, specs[optimizer], out, ["--save-params"] + extra.get(optimizer, []))
            worst_abs, worst_rel, same, total = compare(rec, out, final)
            bits = optimizer == "mirror"
            # MuonClip: the muon_fp32 tolerance. The clip's factors depend only on tau and the
            # recorded max logits, which both sides hold exactly (the qk_factor check below), so
            # both scale the same rows by the same float32 factor <= 1: one correctly rounded
            # product per element and step, which cannot amplify the Newton-Schulz rounding
            # differences that the tolerance is for. A wrong step, head, exponent, bias or tau is
            # 0.06-0.27 away (measured, torch 2.15.0, replaying these recordings: S of the previous
            # or next step, heads reversed, alpha 0.75 for 0.5 or 0.25 for 0.75, the bias left
            # unclipped, tau 2.4 for 2.5; no clip at all, the control below).
            tol = (a.tol_bf16 if optimizer.startswith("muon_bf16") else
                   a.tol_projected if optimizer == "spel" else
                   a.tol_spectral if optimizer.startswith(("normuon", "adamuon", "namo", "dion2", "muon_fp32")) or optimizer in CLIP_CASES
                   else a.tol)
            ok = same == total if bits else worst_rel <= tol
            failed |= not ok
            print("%-5s %-28s %-50s %9.3g %9.3g %9d/%-8d %s" % (
                model_name, optimizer, " ".join([specs[optimizer]] + extra.get(optimizer, [])), worst_abs, worst_rel,
                same, total, ("bit-identical" if same == total else "NOT bit-identical") if bits else
                ("ok" if ok else "FAIL (tol %g)" % tol)))
    # MuonClip's control: the clipped run's recording replayed without qk_clip must be far from
    # torch's clipped parameters (evidence that the rows above agree because the replay clips,
    # not because clipping changes nothing), and writes no qk_factor.
    rec = os.path.join(work, "tfm_muonclip.h5")
    out = os.path.join(work, "tfm_muonclip.noclip.replay.h5")
    if os.path.exists(out):
        os.remove(out)
    replay(a.replay, rec, muon_spec, out, ["--save-params"])
    worst_abs, worst_rel, same, total = compare(rec, out, finals["muonclip"])
    with h5py.File(out, "r") as o:
        stray = "qk_factor" in o["runs/0"]
    ok = worst_rel > CONTROL_MIN_REL and not stray
    failed |= not ok
    print("%-5s %-28s %-50s %9.3g %9.3g %9d/%-8d %s" % (
        "tfm", "muonclip (control)", muon_spec + " (no qk_clip)", worst_abs, worst_rel, same, total,
        ("differs, ok (> %g)" % CONTROL_MIN_REL if worst_rel > CONTROL_MIN_REL else "FAIL (no more than %g)"
         % CONTROL_MIN_REL) + ("; FAIL: has qk_factor" if stray else "")))
    # The clip factors: /runs/0/qk_factor (T, H) against the eta torch applied. eta = min(1, tau/S)
    # depends only on tau (the same decimal string, parsed to the nearest double by both) and the
    # recorded float32 S (read exactly): one correctly rounded division and a min, so the two
    # should be equal bit for bit. 1e-12 leaves room only for an equivalent formulation (tau * (1/S),
    # a few ulps, ~1e-16); the S of the neighbouring step or of another head changes eta by at
    # least 8.8e-5 wherever either eta is below 1 (the muonclip recording).
    for case in CLIP_CASES:
        out = os.path.join(work, "tfm_%s.replay.h5" % case)
        want = etas[case]
        with h5py.File(out, "r") as o:
            got = o["runs/0/qk_factor"][...] if "qk_factor" in o["runs/0"] else None
        if got is None or got.dtype != np.float64 or got.shape != want.shape:
            failed = True
            print("qk_factor of %-17s FAIL: %s" % (case, "missing" if got is None else "%s %s, expected float64 %s"
                                                   % (got.dtype, got.shape, want.shape)))
            continue
        diff = float(np.abs(got - want).max())
        # The JSON summary's qk_clip object: its settings, the count of clipped pairs and the
        # smallest factor (written with 9 significant digits).
        with open(out[:-len(".h5")] + ".json") as f:
            summary = json.load(f)["runs"][0].get("qk_clip", {})
        json_ok = (summary.get("threshold") == float(QK_TAU) and summary.get("balance") == CLIP_CASES[case][1]
                   and summary.get("heads") == QK_HEADS and summary.get("clipped") == int(np.sum(want < 1))
                   and abs(summary.get("min_factor", np.inf) - float(want.min())) <= 1e-8)
        ok = diff <= 1e-12 and json_ok
        failed |= not ok
        print("qk_factor of %-17s vs torch's eta: max abs diff %.3g, %d/%d equal; clipped (eta < 1): %d/%d "
              "(torch), %d (replay), min eta %.4f; JSON %s  %s" % (
                  case, diff, int(np.sum(got == want)), want.size, int(np.sum(want < 1)), want.size,
                  int(np.sum(got < 1)), float(want.min()), "agrees" if json_ok else "DIFFERS: %s" % summary,
                  "ok" if ok else "FAIL (tol 1e-12)"))
    rec = os.path.join(work, "tfm_adamw.h5")
    for spec in ("adamw", "muon", "normuon", "schatten_muon:first=1,interval=5"):
        out = os.path.join(work, "tfm_%s.diag.h5" % spec.split(":")[0])
        if os.path.exists(out):
            os.remove(out)
        replay(a.replay, rec, spec, out)
        problems = check_diagnostics(rec, out)
        failed |= bool(problems)
        print("diagnostics of %-34s %s" % (spec, "clean" if not problems else "; ".join(problems)))
    # Crash survival: a process that records 5 steps and exits without closing the file leaves a
    # recording of 5 readable steps (schatten-replay replays all of them).
    rec = os.path.join(work, "crash.h5")
    out = os.path.join(work, "crash.replay.h5")
    for f in (rec, out):
        if os.path.exists(f):
            os.remove(f)
    subprocess.run([sys.executable, os.path.abspath(__file__), "--crash-child", rec], check=True)
    replay(a.replay, rec, "sgd", out)
    with h5py.File(out, "r") as o:
        # A 1-element array attribute: NumPy 2 refuses int() of a 1-D array, so take the element.
        steps = int(np.asarray(o.attrs["steps"]).reshape(-1)[0])
    failed |= steps != 5
    print("crash survival: recorder killed after 5 steps, %d steps replayed: %s"
          % (steps, "ok" if steps == 5 else "FAIL"))
    print("FAILED" if failed else "all checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--crash-child":
        crash(sys.argv[2], 5)
    sys.exit(main())
