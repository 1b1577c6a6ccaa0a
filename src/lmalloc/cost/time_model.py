"""The time model: wall time of a training run from its shape, tokens, batch and hardware.

A constant MFU is not good enough: small widths and small micro-batches use a device badly,
and memory-bound work (norms, activations, the softmax over the vocabulary, the AdamW update)
does not scale with FLOPs. One optimizer step of one device is modelled per component::

    t_micro = c_micro · n_layer                                  (launch / Python overhead)
            + τ · (F − 6dV) / (P_max · u(d, τ))                  (block matmuls, attention)
            + τ · 6dV / (P_head · u(d, τ))                       (output-layer matmul)
            + τ · e · (n_layer · (d + d_ff) + V)                 (memory-bound elementwise)
    t_step  = A · t_micro + c_param · N + c_step + t_comm        (AdamW update, step overhead)

    u(d, τ) = d / (d + d_half) · τ / (τ + tau_half)              (saturating utilisation)

with τ = micro_batch · seq_len tokens per forward pass, F = ``train_flops_per_token`` (from
:mod:`lmalloc.model.accounting`, the one FLOP count), A micro-batches of gradient
accumulation, N parameters, and ``t_comm`` a ring all-reduce of the gradients,
``2(k-1)/k · N · grad_bytes / interconnect`` (not overlapped with compute: conservative).

The output layer (``(τ × d) · (d × V)`` forward and its two backward matmuls, ``6dV`` FLOPs
per token) has its own rate ``P_head``: its shape differs from the blocks' (one wide matrix,
``V ≫ d``), so one rate for both mispredicts shapes whose vocabulary share differs from the
fit shapes' (it was the largest held-out error before this term). A profile fitted before
this term has no ``P_head``; it then equals ``P_max`` (the old model).

The eight parameters θ = (P_max, P_head, d_half, tau_half, e, c_micro, c_step, c_param) are
fitted
with :func:`scipy.optimize.least_squares` on the log step times the profile measured
(:func:`fit_time_model`), so the error is relative. A datasheet profile has no measurements;
it uses :func:`default_params`: P_max = 0.55 × peak (saturating near the 40-50 % MFU that
large dense runs report), elementwise and optimizer traffic at the memory bandwidth.
Evaluation (forward only: F/3 per token) and checkpoint writes (weights + AdamW state at
``checkpoint_bandwidth``) are added on top.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from lmalloc.cost.hardware import HardwareProfile
from lmalloc.errors import invalid
from lmalloc.model.accounting import param_count, train_flops_per_token
from lmalloc.model.config import GPTConfig

PARAM_NAMES = ("P_max", "P_head", "d_half", "tau_half", "e", "c_micro", "c_step", "c_param")
CHECKPOINT_BANDWIDTH = 1e9  # bytes/s written to disk per checkpoint (a conservative SSD)


@dataclass(frozen=True)
class StepShape:
    """What one measured (or predicted) optimizer step did."""

    d_model: int
    n_layer: int
    d_ff: int
    vocab_size: int
    params: int
    flops_per_token: float
    micro_batch: int
    seq_len: int
    grad_accum: int = 1

    @classmethod
    def of(cls, cfg: GPTConfig, micro_batch: int, seq_len: int | None = None,
           grad_accum: int = 1) -> StepShape:
        T = int(seq_len or cfg.seq_len)
        return cls(cfg.d_model, cfg.n_layer, cfg.ff_dim, cfg.vocab_size, param_count(cfg),
                   train_flops_per_token(cfg, T), micro_batch, T, grad_accum)

    @property
    def tokens(self) -> int:
        return self.micro_batch * self.seq_len * self.grad_accum


def step_time(shape: StepShape, params: dict[str, float]) -> float:
    """Seconds of one optimizer step of one device (no communication), per the model above."""
    p = params
    tau = shape.micro_batch * shape.seq_len
    u = shape.d_model / (shape.d_model + p["d_half"]) * tau / (tau + p["tau_half"])
    elems = shape.n_layer * (shape.d_model + shape.d_ff) + shape.vocab_size
    head = 6.0 * shape.d_model * shape.vocab_size  # output-layer FLOPs per token
    body = max(shape.flops_per_token - head, 0.0)
    t_micro = (p["c_micro"] * shape.n_layer + tau * body / (p["P_max"] * u)
               + tau * head / (p.get("P_head", p["P_max"]) * u) + tau * p["e"] * elems)
    return shape.grad_accum * t_micro + p["c_param"] * shape.params + p["c_step"]


def default_params(hw: HardwareProfile, dtype: str | None = None) -> dict[str, float]:
    """Time-model parameters for a profile: fitted ones if present, else datasheet-based."""
    fitted = set(PARAM_NAMES) - {"P_head"}  # a profile fitted before the head term lacks it
    if hw.utilisation and fitted <= set(hw.utilisation):
        out = {k: float(hw.utilisation[k]) for k in fitted}
        out["P_head"] = float(hw.utilisation.get("P_head", out["P_max"]))
        return out
    act_bytes = 4 if (dtype or hw.default_dtype) == "fp32" else 2
    return {
        "P_max": 0.55 * hw.peak(dtype),
        "P_head": 0.55 * hw.peak(dtype),
        "d_half": 64.0,
        "tau_half": 256.0,
        # ~12 passes over each activation element forward and backward, memory-bound
        "e": 12 * act_bytes / hw.bandwidth,
        "c_micro": 2e-5 if hw.kind == "gpu" else 1e-4,
        "c_step": 1e-3,
        # AdamW reads p, g, m, v and writes p, m, v in fp32: 28 bytes per parameter
        "c_param": 28 / hw.bandwidth,
    }


def fit_time_model(
    shapes: Sequence[StepShape], seconds: Sequence[float], init: dict[str, float] | None = None,
    tie_head: bool = False,
) -> dict[str, float]:
    """Fit θ to measured step times by least squares on log time (relative error).

    ``tie_head`` fixes ``P_head = P_max`` (the model without an output-layer term, kept as
    the peer that ``bench/time_model.py`` compares against).

    Parameters are optimised in log space (so all stay positive) from a few starting points;
    the best fit wins. Returns the parameters and ``rmse_log`` (root mean square log error).

    Example:
        >>> true = {"P_max": 5e10, "P_head": 3e10, "d_half": 100.0, "tau_half": 300.0,
        ...         "e": 2e-9, "c_micro": 1e-4, "c_step": 1e-3, "c_param": 1e-9}
        >>> shapes = [StepShape(d, l, 3 * d, 512, 13 * d * d * l + 512 * d,
        ...                     6 * (13 * d * d * l + 512 * d), b, t)
        ...           for d in (32, 128, 512)
        ...           for l, b, t in ((1, 2, 32), (3, 8, 128), (2, 4, 512))]
        >>> fit = fit_time_model(shapes, [step_time(s, true) for s in shapes])
        >>> round(fit["rmse_log"], 6)
        0.0
    """
    from scipy.optimize import least_squares

    if len(shapes) != len(seconds) or len(shapes) < 4:
        raise invalid("measurements", len(shapes), "at least 4 (shape, seconds) pairs")
    y = np.log(np.asarray(seconds, dtype=float))

    names = [k for k in PARAM_NAMES if not (tie_head and k == "P_head")]

    def residual(log_theta: np.ndarray) -> np.ndarray:
        p = dict(zip(names, np.exp(log_theta), strict=True))
        r: np.ndarray = np.array([math.log(step_time(s, p)) for s in shapes]) - y
        return r

    best: Any = None
    flops_scale = float(np.median([s.tokens * s.flops_per_token / t
                                   for s, t in zip(shapes, seconds, strict=True)]))
    starts = [init] if init else []
    starts += [{"P_max": flops_scale * m, "P_head": flops_scale * m, "d_half": dh,
                "tau_half": th, "e": 1e-9, "c_micro": 1e-4, "c_step": 1e-3, "c_param": 1e-9}
               for m, dh, th in ((2.0, 64.0, 128.0), (1.2, 16.0, 16.0), (4.0, 256.0, 512.0))]
    for start in starts:
        x0 = np.log([max(start.get(k, start["P_max"]), 1e-30) for k in names])
        res = least_squares(residual, x0, bounds=(x0 - 25, x0 + 25), method="trf",
                            x_scale=1.0, max_nfev=2000)
        if best is None or res.cost < best.cost:
            best = res
    fitted = {k: float(v) for k, v in zip(names, np.exp(best.x), strict=True)}
    fitted.setdefault("P_head", fitted["P_max"])
    fitted["rmse_log"] = float(math.sqrt(2 * best.cost / len(shapes)))
    return fitted


@dataclass(frozen=True)
class TimeEstimate:
    """Predicted wall time of a training run (seconds) and what it is made of."""

    seconds: float
    train_seconds: float
    eval_seconds: float
    checkpoint_seconds: float
    comm_seconds: float
    steps: int
    step_seconds: float
    flops: float
    flops_per_s: float
    mfu: float
    devices: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def predict_time(
    cfg: GPTConfig,
    tokens: float,
    hardware: HardwareProfile,
    batch_tokens: int | None = None,
    micro_batch: int | None = None,
    seq_len: int | None = None,
    precision: str | None = None,
    eval_every: int = 0,
    eval_tokens: int = 0,
    checkpoint_every: int = 0,
    activation_checkpointing: bool = False,
    parallel: str = "ddp",
) -> TimeEstimate:
    """Predict the wall time of training ``cfg`` on ``tokens`` tokens on ``hardware``.

    Args:
        cfg: model shape; tokens: training tokens D.
        hardware: profile (``count`` devices, data parallel).
        batch_tokens: global tokens per optimizer step (default: 16 sequences per device).
        micro_batch: sequences per forward pass per device (default: the device's share).
        seq_len: default ``cfg.seq_len``; precision: default the profile's dtype.
        eval_every, eval_tokens: an evaluation of ``eval_tokens`` every ``eval_every`` steps
            (and one at the end when ``eval_tokens`` > 0).
        checkpoint_every: a checkpoint every so many steps (and one at the end).
        activation_checkpointing: recompute each block's forward in backward: the step costs
            4/3 of the compute (forward twice, backward once); FLOPs and MFU stay model FLOPs.
        parallel: ``ddp``/``zero1``/``zero2`` move the gradients once per step (an all-reduce
            or reduce-scatter + all-gather); ``zero3``/``fsdp`` also all-gather the weights
            for backward: 1.5 × the traffic (Rajbhandari et al. 2020, Sec. 7).

    Example:
        >>> from lmalloc.cost.hardware import get_hardware
        >>> from lmalloc.model.config import GPTConfig
        >>> cfg = GPTConfig(vocab_size=50304, n_layer=24, n_head=16, d_model=2048, seq_len=2048)
        >>> est = predict_time(cfg, 26e9, get_hardware("8xH100"), batch_tokens=2**20)
        >>> 0.2 < est.mfu < 0.55
        True
    """
    if not (0 < tokens < math.inf):  # also refuses NaN
        raise invalid("tokens", tokens, "a positive finite number")
    k = hardware.count
    T = int(seq_len or cfg.seq_len)
    bt = int(batch_tokens or 16 * T * k)
    per_device = max(1, bt // (T * k))
    mb = int(micro_batch or per_device)
    if mb < 1:
        raise invalid("micro_batch", mb, "at least 1")
    accum = max(1, math.ceil(per_device / mb))
    shape = StepShape.of(cfg, mb, T, accum)
    params = default_params(hardware, precision)
    comm = _allreduce_seconds(shape.params, hardware, precision)
    if parallel in ("zero3", "fsdp"):
        comm *= 1.5
    compute = step_time(shape, params)
    if activation_checkpointing:
        compute *= 4 / 3
    step = compute + comm
    steps = max(1, math.ceil(tokens / (shape.tokens * k)))
    train_s = steps * step
    eval_s = 0.0
    if eval_tokens > 0:
        n_evals = (steps // eval_every if eval_every > 0 else 0) + 1
        fwd_per_token = step_time(StepShape.of(cfg, mb, T), params) / (mb * T) / 3
        eval_s = n_evals * eval_tokens / k * fwd_per_token
    ckpt_s = 0.0
    if checkpoint_every > 0:
        n_ckpt = steps // checkpoint_every + 1
        ckpt_s = n_ckpt * shape.params * 12 / CHECKPOINT_BANDWIDTH  # fp32 weights + m + v
    flops = shape.flops_per_token * steps * shape.tokens * k
    rate = flops / train_s
    return TimeEstimate(
        seconds=train_s + eval_s + ckpt_s, train_seconds=train_s, eval_seconds=eval_s,
        checkpoint_seconds=ckpt_s, comm_seconds=steps * comm, steps=steps, step_seconds=step,
        flops=flops, flops_per_s=rate, mfu=rate / (k * hardware.peak(precision)), devices=k,
    )


def _allreduce_seconds(N: int, hw: HardwareProfile, precision: str | None) -> float:
    """Ring all-reduce of the gradients: 2(k-1)/k · N · bytes over the interconnect."""
    k = hw.count
    if k == 1:
        return 0.0
    link = hw.interconnect or hw.bandwidth / 10
    grad_bytes = 2 if (precision or hw.default_dtype) != "fp32" else 4
    return 2 * (k - 1) / k * N * grad_bytes / link
