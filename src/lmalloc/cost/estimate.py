"""One answer to "what would this run cost?": time, money, memory per device, layout, fit.

This is what ``lmalloc estimate`` prints and what the planner can call for a candidate
allocation: it combines :func:`lmalloc.cost.time_model.predict_time`,
:func:`lmalloc.cost.memory.recommend` and the profile's price.
"""

from __future__ import annotations

import math
from typing import Any

from lmalloc.cost.hardware import HardwareProfile, get_hardware
from lmalloc.cost.memory import gib, inference_memory, recommend
from lmalloc.cost.time_model import predict_time
from lmalloc.errors import UserError, invalid
from lmalloc.model.accounting import param_count
from lmalloc.model.config import GPTConfig
from lmalloc.model.shape import shape_for

DEFAULT_VOCAB = 50304


def config_for_params(params: float, vocab_size: int = DEFAULT_VOCAB,
                      seq_len: int = 2048) -> GPTConfig:
    """A GPT shape with about ``params`` non-embedding parameters (Kaplan's N, the convention
    of :func:`lmalloc.model.shape.shape_for`); the estimate reports the total count."""
    if not (params > 0 and math.isfinite(params)):
        raise invalid("params", params, "a positive number of parameters")
    return shape_for(params, vocab_size, seq_len)


def estimate_run(
    cfg: GPTConfig,
    tokens: float,
    hardware: str | HardwareProfile,
    seq_len: int | None = None,
    batch_tokens: int | None = None,
    precision: str | None = None,
    memory_bytes: float | None = None,
    price_per_device_hour: float | None = None,
) -> dict[str, Any]:
    """Time, cost, memory per device, recommended layout and whether the run fits.

    Example:
        >>> from lmalloc.model.config import GPTConfig
        >>> cfg = GPTConfig(vocab_size=50304, n_layer=24, n_head=16, d_model=2048, seq_len=2048)
        >>> r = estimate_run(cfg, 26e9, "8xH100", batch_tokens=2**20)
        >>> r["fits"], r["layout"]["parallel"]
        (True, 'ddp')
    """
    hw = get_hardware(hardware)
    T = int(seq_len or cfg.seq_len)
    precision = precision or hw.default_dtype
    bt = int(batch_tokens or max(T * hw.count, 2**19 // T * T))
    if bt <= 0:
        raise invalid("batch_tokens", bt, "a positive number of tokens")
    mem_limit = float(memory_bytes or hw.memory_bytes)
    rec = recommend(cfg, mem_limit, bt, T, precision, hw.count)
    time = predict_time(cfg, tokens, hw, batch_tokens=bt, micro_batch=rec.micro_batch,
                        seq_len=T, precision=precision,
                        activation_checkpointing=rec.activation_checkpointing,
                        parallel=rec.parallel)
    price = price_per_device_hour if price_per_device_hour is not None else hw.price_per_hour
    cost = time.seconds / 3600 * hw.count * price if price is not None else None
    return {
        "hardware": hw.label, "source": hw.source, "params": param_count(cfg),
        "model": cfg.to_dict(), "tokens": float(tokens), "seq_len": T, "batch_tokens": bt,
        "precision": precision, "time": time.to_dict(), "cost": cost,
        "price_per_device_hour": price, "fits": rec.fits, "suggestion": rec.suggestion,
        "layout": {"parallel": rec.parallel, "micro_batch": rec.micro_batch,
                   "grad_accum": rec.grad_accum,
                   "activation_checkpointing": rec.activation_checkpointing},
        "memory": {**rec.memory.to_dict(), "limit": rec.memory_limit,
                   "peak_gib": gib(rec.memory.peak)},
        "inference_bf16": inference_memory(cfg, batch=1, context=T).to_dict(),
    }


def require_fit(result: dict[str, Any]) -> dict[str, Any]:
    """Raise the smallest-change suggestion as a :class:`UserError` when nothing fits."""
    if not result["fits"]:
        raise UserError(f"does not fit on {result['hardware']}: {result['suggestion']}")
    return result
