"""The memory model: peak training memory per device, and inference memory.

Training memory of one device is split into a **static** part that lives the whole run and a
**dynamic** part that lives within a step::

    static  = weights + optimizer state                        (each divided by ZeRO stage)
    dynamic = max(activations + logits/loss + buffers + live gradients,   (start of backward)
                  gradients + optimizer-step temporaries)                 (optimizer step)
    peak    = static + dynamic

At the start of the backward pass every activation is alive and the gradients that exist are
the tied embedding/output matrix's (the first one backward produces) or, with gradient
accumulation (``grad_accum > 1``), all of them from the earlier micro-batches; at the
optimizer step the activations are gone and all gradients exist.

Bytes per parameter (N parameters, AdamW with two moment tensors):

==============  =======  =====  =================  ==============================
precision       weights  grads  optimizer (m, v)   activations
==============  =======  =====  =================  ==============================
``fp32``        4        4      8                  fp32
``bf16``        4 + 2*   4      8                  bf16 matmuls, fp32 residual stream
``bf16-pure``   2        2      4                  bf16
==============  =======  =====  =================  ==============================

``bf16`` is autocast mixed precision (fp32 master weights; the trainer's ``bf16``); * the
bf16 weight copies autocast makes live through forward and backward (counted in buffers).

Parallelism across ``k`` devices (Rajbhandari et al. 2020, "ZeRO: Memory Optimizations Toward
Training Trillion Parameter Models", Sec. 5): ``ddp`` replicates everything and adds gradient
buckets (PyTorch DDP keeps a flat copy of all gradients); ``zero1`` shards the optimizer state
(÷k), ``zero2`` also the gradients, ``zero3``/``fsdp`` also the weights, plus the gathered
working set of two units (the current and the prefetched block) in full.

Activations follow Korthikanti et al. 2022, "Reducing Activation Recomputation in Large
Transformer Models" (Sec. 4.1, eq. 1: ``sbh(34 + 5as/h)`` bytes per layer for their GPT),
re-derived for THIS architecture by listing the tensors autograd saves per layer and token:
residual input and RMSNorm output before attention and before the MLP (``4d``, residual
dtype), the fused QKV output and the rotated q, k (``2d + 3d_kv``; ``d + 2d_kv`` on the
fp32 CPU path, whose RoPE Function keeps only its rotated copy), the attention output
and its ``(B, T, C)`` copy (``2d``), the SwiGLU gate input, its SiLU, the up projection
and their product (``4 d_ff``), the bf16 casts of both norm outputs under autocast
(``2d``), and dropout masks (1 byte). This list was checked against the tensors autograd
actually saves (``torch.autograd.graph.saved_tensors_hooks``) for ``lmalloc.model.gpt``.
Fused attention (SDPA flash / memory-efficient kernels) keeps only a log-sum-exp per head;
math attention also keeps the ``T × T`` softmax probabilities of every head (``a T`` per
token; in fp32 under autocast, plus the bf16 copy the second matmul saves). With activation
checkpointing per block only the block inputs are kept (``d`` per layer and token), plus
one block's activations while it is recomputed and that block's backward working set (the
gradients of the SwiGLU hidden ``2 d_ff``, of its activation and of the product
``2 d_ff``, and of the block's output and input ``2d``, in the residual dtype); the peak
is at the first block, recomputed last, when the gradients of all later blocks exist. This
happens after the loss's buffers are freed (so the larger of the two counts). Without the
working set and the later blocks' gradients the prediction was 5-27 MiB (up to 24 %) low on
four small-vocabulary CPU shapes (issue 20); with them, +2 % to +12 % high.

Logits: the caller holds the logits (compute dtype), the loss keeps the fp32 log-softmax, and
backward makes the fp32 gradients of the log-softmax output and input: ``16 · B·T·V`` bytes
in fp32, ``14 · B·T·V`` under bf16 autocast (checked on CPU: ``bench/memory_model.py``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from lmalloc.errors import UserError, invalid
from lmalloc.model.accounting import param_count
from lmalloc.model.config import GPTConfig

PRECISIONS = ("fp32", "bf16", "bf16-pure")
PARALLEL = ("single", "ddp", "zero1", "zero2", "zero3", "fsdp")
ATTENTION = ("sdpa", "math")
ZERO_BUCKET_BYTES = 2 * 25 * 2**20  # reduce-scatter buckets in flight (25 MiB each, DDP default)
# bytes per parameter: (weights, grads, optimizer) and bytes per activation: (residual, compute)
_PARAM_BYTES = {"fp32": (4, 4, 8), "bf16": (4, 4, 8), "bf16-pure": (2, 2, 4)}
_ACT_BYTES = {"fp32": (4, 4), "bf16": (4, 2), "bf16-pure": (2, 2)}


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak training memory of ONE device, by component (bytes)."""

    weights: float
    gradients: float
    optimizer: float
    activations: float
    logits: float
    buffers: float
    optimizer_temp: float
    peak: float
    params: int
    micro_batch: int
    seq_len: int
    precision: str
    parallel: str
    devices: int
    activation_checkpointing: bool

    @property
    def static(self) -> float:
        return self.weights + self.gradients + self.optimizer

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check(precision: str, parallel: str, attention: str, devices: int) -> str:
    precision = "bf16" if precision == "bf16-mixed" else precision
    if precision not in PRECISIONS:
        raise invalid("precision", precision, f"one of {', '.join(PRECISIONS)}")
    if parallel not in PARALLEL:
        raise invalid("parallel", parallel, f"one of {', '.join(PARALLEL)}")
    if attention not in ATTENTION:
        raise invalid("attention", attention, f"one of {', '.join(ATTENTION)}")
    if devices < 1:
        raise invalid("devices", devices, "at least 1")
    return precision


def activation_bytes_per_token(
    cfg: GPTConfig, seq_len: int, precision: str = "fp32", attention: str = "sdpa",
    activation_checkpointing: bool = False, cpu_path: bool = False,
) -> float:
    """Bytes of saved activations per token for the whole model (see the module docstring).

    With checkpointing: the block inputs and the final norm's tensors (the block being
    recomputed is :func:`layer_bytes_per_token`, alive only after the loss's memory is freed).

    >>> from lmalloc.model.config import GPTConfig
    >>> cfg = GPTConfig(vocab_size=256, n_layer=2, n_head=2, d_model=64, d_ff=128)
    >>> activation_bytes_per_token(cfg, 64) == 2 * (4*4*64 + 4*(7*64 + 4*128) + 4*2) + 4*3*64
    True
    """
    hi, lo = _ACT_BYTES[precision]
    d = cfg.d_model
    final = hi * 3 * d + (lo * d if precision == "bf16" else 0)  # last output, final norm
    if activation_checkpointing:
        return float(cfg.n_layer * hi * d + final)
    layer = layer_bytes_per_token(cfg, seq_len, precision, attention, cpu_path)
    return float(cfg.n_layer * layer + final)


def layer_bytes_per_token(cfg: GPTConfig, seq_len: int, precision: str = "fp32",
                          attention: str = "sdpa", cpu_path: bool = False) -> float:
    """Bytes one transformer block saves for backward, per token.

    ``cpu_path``: the fp32 CPU training path of :mod:`lmalloc.model.gpt` (its RoPE autograd
    Function writes q, k, v into one new buffer and saves nothing else, so the fused QKV
    output is not kept: ``d + 2 d_kv`` instead of ``2d + 3 d_kv``).
    """
    d, f, a = cfg.d_model, cfg.ff_dim, cfg.n_head
    d_kv = cfg.kv_heads * cfg.head_dim
    hi, lo = _ACT_BYTES[precision]
    qkv = d + 2 * d_kv if cpu_path and precision == "fp32" else 2 * d + 3 * d_kv
    per_layer = hi * 4 * d + lo * (2 * d + qkv + 4 * f) + 4 * a
    if precision == "bf16":
        per_layer += lo * 2 * d  # autocast's bf16 copies of the two norm outputs
    if cfg.dropout > 0:
        per_layer += 2 * d + (a * seq_len if attention == "math" else 0)  # bool masks
    if attention == "math":  # the softmax probabilities (fp32, + their bf16 cast)
        per_layer += a * seq_len * (hi + (lo if precision == "bf16" else 0))
    return float(per_layer)


def logits_bytes_per_token(cfg: GPTConfig, precision: str = "fp32") -> float:
    """Bytes per token at the loss: ``(12 + b) V`` with b the logits' bytes (16 V in fp32).

    The logits the caller holds (compute dtype), the fp32 log-softmax cross entropy saves, and
    in backward the fp32 gradients of the log-softmax output and of its input, all alive
    while the log-softmax backward runs.
    """
    _, lo = _ACT_BYTES[precision]
    return float(cfg.vocab_size * (lo + 4 + 4 + 4))


def estimate_memory(
    cfg: GPTConfig,
    micro_batch: int,
    seq_len: int | None = None,
    precision: str = "fp32",
    parallel: str = "single",
    devices: int = 1,
    activation_checkpointing: bool = False,
    attention: str = "sdpa",
    grad_accum: int = 1,
    device: str = "cuda",
) -> MemoryEstimate:
    """Peak training memory of one device for a GPT, micro-batch and parallelism.

    Args:
        cfg: the model shape; micro_batch: sequences per forward pass on one device.
        seq_len: tokens per sequence (default ``cfg.seq_len``).
        precision: ``fp32``, ``bf16`` (autocast, fp32 master weights) or ``bf16-pure``.
        parallel: ``single``, ``ddp``, ``zero1``, ``zero2``, ``zero3`` (= ``fsdp``).
        devices: data-parallel devices k (sharding divides by k).
        activation_checkpointing: recompute each block in backward.
        attention: ``sdpa`` (fused kernel) or ``math`` (materialises T×T scores).
        grad_accum: micro-batches per optimizer step (> 1 keeps all gradients alive).
        device: ``cuda`` or ``cpu`` (fp32 on CPU takes the model's CPU autograd path, which
            saves less per block; see :func:`layer_bytes_per_token`).

    Example:
        >>> from lmalloc.model.config import GPTConfig
        >>> cfg = GPTConfig(vocab_size=50304, n_layer=12, n_head=12, d_model=768)
        >>> one = estimate_memory(cfg, 8, 1024, "bf16")
        >>> z3 = estimate_memory(cfg, 8, 1024, "bf16", parallel="zero3", devices=8)
        >>> round(one.weights / z3.weights)
        8
    """
    precision = _check(precision, parallel, attention, devices)
    if device not in ("cuda", "cpu"):
        raise invalid("device", device, "cuda or cpu")
    if micro_batch < 1:
        raise invalid("micro_batch", micro_batch, "at least 1 sequence")
    T = int(seq_len or cfg.seq_len)
    if T < 1:
        raise invalid("seq_len", seq_len, "at least 1 token")
    N = param_count(cfg)
    k = devices if parallel not in ("single", "ddp") else 1
    w_b, g_b, o_b = _PARAM_BYTES[precision]
    stage = {"single": 0, "ddp": 0, "zero1": 1, "zero2": 2, "zero3": 3, "fsdp": 3}[parallel]
    weights = N * w_b / (k if stage >= 3 else 1)
    grads = N * g_b / (k if stage >= 2 else 1)
    optim = N * o_b / (k if stage >= 1 else 1)
    tokens = micro_batch * T
    cpu_path = device == "cpu"
    acts = tokens * activation_bytes_per_token(cfg, T, precision, attention,
                                               activation_checkpointing, cpu_path)
    logits = tokens * logits_bytes_per_token(cfg, precision)
    # checkpointing: the recomputed block lives after the loss's buffers are freed
    hi = _ACT_BYTES[precision][0]
    # the first block, recomputed last: its activations and backward working set, with the
    # gradients of every later block already made
    later_grads = (param_count(cfg, non_embedding=True) * (cfg.n_layer - 1) / cfg.n_layer
                   * g_b / (k if stage >= 2 else 1))
    recompute = tokens * (layer_bytes_per_token(cfg, T, precision, attention, cpu_path)
                          + hi * (4 * cfg.ff_dim + 2 * cfg.d_model)) + later_grads
    loss_or_recompute = max(logits, recompute if activation_checkpointing else 0.0)
    buffers = _buffers(cfg, N, precision, parallel, stage, devices)
    opt_temp = N * o_b / 2 / (k if stage >= 1 else 1)  # foreach AdamW: one state-sized temp
    live = grads if grad_accum > 1 else grads * cfg.vocab_size * cfg.d_model / N
    peak = weights + optim + max(acts + loss_or_recompute + buffers + live, grads + opt_temp)
    return MemoryEstimate(
        weights=weights, gradients=grads, optimizer=optim, activations=acts, logits=logits,
        buffers=buffers, optimizer_temp=opt_temp, peak=peak, params=N, micro_batch=micro_batch,
        seq_len=T, precision=precision, parallel=parallel, devices=devices,
        activation_checkpointing=activation_checkpointing,
    )


def _buffers(cfg: GPTConfig, N: int, precision: str, parallel: str, stage: int,
             devices: int) -> float:
    """Autocast weight copies, DDP gradient buckets, ZeRO buckets and FSDP's gathered units."""
    _, g_b, _ = _PARAM_BYTES[precision]
    cast = 2 * N if precision == "bf16" else 0.0
    if parallel == "ddp" and devices > 1:
        return cast + N * g_b
    if stage == 2 and devices > 1:
        return cast + ZERO_BUCKET_BYTES
    if stage == 3 and devices > 1:
        unit = float(max(param_count(cfg, non_embedding=True) / cfg.n_layer,
                         cfg.vocab_size * cfg.d_model))
        compute_b = 2 if precision != "fp32" else 4
        return 2 * unit * compute_b + unit * g_b + cast / devices
    return cast


@dataclass(frozen=True)
class InferenceMemory:
    """Memory to serve a model: quantized weights, KV cache, a step's activations (bytes)."""

    weights: float
    kv_cache: float
    activations: float
    total: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def inference_memory(
    cfg: GPTConfig, batch: int = 1, context: int | None = None, weight_bits: float = 16,
    kv_bits: float = 16, group_size: int = 128,
) -> InferenceMemory:
    """Weights at ``weight_bits`` (+ one 16-bit scale per group below 16 bits) and KV cache.

    KV cache = ``2 · n_layer · batch · context · n_kv_head · head_dim · kv_bits/8`` (keys and
    values of every past position; grouped-query attention shrinks it by n_head/n_kv_head).

    >>> from lmalloc.model.config import GPTConfig
    >>> cfg = GPTConfig(vocab_size=256, n_layer=2, n_head=4, d_model=64, n_kv_head=2)
    >>> inference_memory(cfg, batch=1, context=100).kv_cache  # 2*2*1*100*2*16*2 bytes
    25600.0
    """
    if batch < 1 or weight_bits <= 0 or kv_bits <= 0 or group_size < 1:
        raise UserError("inference memory needs batch >= 1, positive bits and group_size >= 1")
    ctx = int(context or cfg.seq_len)
    N = param_count(cfg)
    scales = N / group_size * 16 if weight_bits < 16 else 0.0
    weights = (N * weight_bits + scales) / 8
    kv = 2.0 * cfg.n_layer * batch * ctx * cfg.kv_heads * cfg.head_dim * kv_bits / 8
    acts = batch * (4 * cfg.d_model + cfg.ff_dim) * 2 * 2 + batch * cfg.vocab_size * 4
    return InferenceMemory(weights=weights, kv_cache=kv, activations=acts,
                           total=weights + kv + acts)


def min_devices_to_fit(cfg: GPTConfig, memory_bytes: float, seq_len: int, precision: str,
                       limit: int = 1 << 16) -> int | None:
    """The fewest devices on which ZeRO-3 with checkpointing fits micro-batch 1, or None."""
    k = 1
    while k <= limit:
        est = estimate_memory(cfg, 1, seq_len, precision, "zero3" if k > 1 else "single", k,
                              activation_checkpointing=True)
        if est.peak <= memory_bytes:
            return k
        k *= 2
    return None


def gib(x: float) -> str:
    """Human-readable GiB for messages."""
    return f"{x / 2**30:.2f} GiB" if math.isfinite(x) else "inf"


@dataclass(frozen=True)
class Recommendation:
    """How to lay out one training step on the devices so it fits in memory.

    ``fits`` False means nothing fits; ``suggestion`` then names the smallest change that would.
    """

    micro_batch: int
    grad_accum: int
    parallel: str
    activation_checkpointing: bool
    fits: bool
    memory: MemoryEstimate
    memory_limit: float
    suggestion: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["memory"] = self.memory.to_dict()
        return d


# Cheapest first: checkpointing costs ~1/3 more compute, FSDP (ZeRO-3) more communication.
# Only layouts ``lmalloc train`` runs (``parallel`` ddp/fsdp, TrainConfig's
# ``activation_checkpointing``): ZeRO-1/2 stay in :func:`estimate_memory` for comparison but
# are never recommended, since the trainer has no ZeRO-1/2 layout.
_LAYOUTS_MULTI = [("ddp", False), ("fsdp", False), ("ddp", True), ("fsdp", True)]
_LAYOUTS_ONE = [("single", False), ("single", True)]
HEADROOM = 0.90  # leave 10 % for the allocator's fragmentation, CUDA context, the data loader


def recommend(
    cfg: GPTConfig,
    memory_bytes: float,
    batch_tokens: int,
    seq_len: int | None = None,
    precision: str = "bf16",
    devices: int = 1,
    attention: str = "sdpa",
) -> Recommendation:
    """The cheapest layout (parallelism, checkpointing) and largest micro-batch that fit.

    Only layouts the trainer runs: ``single``/``ddp``/``fsdp`` (the names of
    ``lmalloc train --parallel``), each without and with activation checkpointing. Tries
    layouts from cheapest to dearest and, within one, the largest power-of-two
    micro-batch that divides each device's share of the batch and fits in
    ``HEADROOM × memory_bytes`` (pass ``hardware.memory_bytes`` or a ``mem=`` budget).

    Example:
        >>> from lmalloc.model.config import GPTConfig
        >>> cfg = GPTConfig(vocab_size=50304, n_layer=24, n_head=16, d_model=2048)
        >>> r = recommend(cfg, 80e9, batch_tokens=2**20, seq_len=2048, devices=8)
        >>> r.fits, r.parallel
        (True, 'ddp')
    """
    T = int(seq_len or cfg.seq_len)
    if batch_tokens < T * devices:
        raise invalid("batch_tokens", batch_tokens,
                      f"at least seq_len × devices = {T * devices} tokens")
    if memory_bytes <= 0:
        raise invalid("memory_bytes", memory_bytes, "a positive number of bytes")
    per_device = batch_tokens // (T * devices)  # sequences per device per optimizer step
    limit = HEADROOM * memory_bytes
    layouts = _LAYOUTS_MULTI if devices > 1 else _LAYOUTS_ONE
    for parallel, ckpt in layouts:
        mb = 1 << int(math.log2(per_device))
        while mb >= 1:
            if per_device % mb == 0:
                est = estimate_memory(cfg, mb, T, precision, parallel, devices, ckpt, attention,
                                      grad_accum=per_device // mb)
                if est.peak <= limit:
                    return Recommendation(mb, per_device // mb, parallel, ckpt, True, est, limit)
            mb //= 2
    parallel, ckpt = layouts[-1]
    est = estimate_memory(cfg, 1, T, precision, parallel, devices, ckpt, attention)
    return Recommendation(1, per_device, parallel, ckpt, False, est, limit,
                          _suggest(cfg, est, limit, T, precision, devices))


def _suggest(cfg: GPTConfig, est: MemoryEstimate, limit: float, T: int, precision: str,
             devices: int) -> str:
    """The smallest change that would fit: more devices, more memory, or a shorter sequence."""
    need = est.peak / HEADROOM
    parts = [f"the model ({est.params:.3g} parameters) needs {gib(est.peak)} per device even "
             f"with micro-batch 1, {'FSDP and ' if devices > 1 else ''}activation "
             f"checkpointing, over the {gib(limit)} usable ({HEADROOM:.0%} of the memory)"]
    k = min_devices_to_fit(cfg, limit, T, precision)
    if k is not None and k > devices:
        parts.append(f"use at least {k} devices with ZeRO-3/FSDP")
    parts.append(f"or devices with at least {gib(need)} memory")
    if precision == "fp32":
        parts.append("or train in bf16")
    return "; ".join(parts)
