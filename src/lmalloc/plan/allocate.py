"""From a fitted scaling law and a budget to the final run's allocation.

The closed-form optimum (Chinchilla eq. 4) assumes ``C = k N D`` and any N. Real models come in
shapes, pay an attention term per token, and must fit a device's memory and a deadline. So
:func:`allocate` searches the shapes themselves: for sizes on a log grid around the closed-form
N*, it takes the shape :func:`~lmalloc.model.shape.shape_for` gives, counts its exact training
FLOPs per token, spends the whole compute budget on tokens ``D = C / flops_per_token``, asks the
cost package whether the run fits the memory and time limits, and keeps the feasible shape of
lowest predicted loss. Every prediction carries the fit's bootstrap interval.

Torch-free: it uses only ``scaling``, ``cost`` and the model's accounting.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from lmalloc.cost.hardware import HardwareProfile
from lmalloc.cost.memory import recommend
from lmalloc.cost.time_model import predict_time
from lmalloc.errors import UserError
from lmalloc.model.accounting import param_count, train_flops_per_token
from lmalloc.model.config import GPTConfig
from lmalloc.model.shape import shape_for
from lmalloc.scaling.estimate import Estimate
from lmalloc.scaling.optimal import compute_optimal
from lmalloc.scaling.parametric import ParametricFit

GRID_OCTAVES = 3.0  # candidates span N*/8 .. 8 N*
GRID_POINTS = 25


@dataclass(frozen=True)
class Candidate:
    """One shape at the budget: its size, tokens, predicted loss, time and memory."""

    model: dict[str, Any]
    N: int
    D: float
    flops: float
    loss: Estimate
    seconds: float
    memory_bytes: float
    micro_batch: int
    parallel: str
    activation_checkpointing: bool
    feasible: bool
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["loss"] = self.loss.to_dict()
        return d


@dataclass(frozen=True)
class Allocation:
    """The chosen final run, the closed-form reference and the sensitivity table."""

    chosen: Candidate
    closed_form: dict[str, Any]
    sensitivity: list[dict[str, Any]] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "chosen": self.chosen.to_dict(),
            "closed_form": self.closed_form,
            "sensitivity": self.sensitivity,
            "candidates": [c.to_dict() for c in self.candidates],
        }


def _candidate(
    fit: ParametricFit, cfg: GPTConfig, C: float, hw: HardwareProfile, batch_tokens: int,
    precision: str, seconds: float | None, memory_bytes: float,
) -> Candidate:
    non_emb = fit.param_convention == "non_embedding"
    N = param_count(cfg, non_embedding=non_emb)
    fpt = train_flops_per_token(cfg)
    D = C / fpt
    rec = recommend(cfg, memory_bytes, batch_tokens, cfg.seq_len, precision, hw.count)
    t = predict_time(cfg, D, hw, batch_tokens=batch_tokens, micro_batch=rec.micro_batch,
                     seq_len=cfg.seq_len, precision=precision).seconds
    reasons = []
    if not rec.fits:
        reasons.append(f"does not fit in memory ({rec.suggestion})")
    if seconds is not None and t > seconds:
        reasons.append(f"predicted {t:.0f} s > {seconds:.0f} s")
    if D < batch_tokens:
        reasons.append("fewer tokens than one batch")
    return Candidate(
        model=cfg.to_dict(), N=N, D=float(D), flops=float(C), loss=fit.predict_estimate(N, D),
        seconds=float(t), memory_bytes=float(rec.memory.peak), micro_batch=rec.micro_batch,
        parallel=rec.parallel, activation_checkpointing=rec.activation_checkpointing,
        feasible=not reasons, reason="; ".join(reasons),
    )


def allocate(
    fit: ParametricFit, C: float, hardware: HardwareProfile, vocab_size: int, seq_len: int,
    batch_tokens: int, *, seconds: float | None = None, memory_bytes: float | None = None,
    precision: str = "fp32", grid_points: int = GRID_POINTS,
) -> Allocation:
    """The feasible GPT shape of lowest predicted loss for final-run compute ``C``.

    Args:
        fit: an L(N, D) fit (approach 3) in its parameter convention.
        C: FLOPs for the final run; hardware: the profile it runs on.
        vocab_size, seq_len, batch_tokens: fixed by the data, the recipe and the HP laws.
        seconds: wall-time limit (None = none); memory_bytes: per device (default: device's).
        precision: training precision for the time and memory models.

    Raises:
        UserError: no shape on the grid fits the limits (the message names the nearest miss).
    """
    closed = compute_optimal(fit, C)
    mem = memory_bytes if memory_bytes is not None else hardware.memory_bytes
    non_emb = fit.param_convention == "non_embedding"
    targets = closed.N.value * 2.0 ** np.linspace(-GRID_OCTAVES, GRID_OCTAVES, grid_points)
    seen: dict[tuple[int, int, int], Candidate] = {}
    for n in targets:
        cfg = shape_for(float(n), vocab_size=vocab_size, seq_len=seq_len,
                        non_embedding=non_emb)
        key = (cfg.n_layer, cfg.d_model, cfg.n_head)
        if key not in seen:
            seen[key] = _candidate(fit, cfg, C, hardware, batch_tokens, precision, seconds, mem)
    cands = sorted(seen.values(), key=lambda c: c.N)
    feasible = [c for c in cands if c.feasible]
    if not feasible:
        near = min(cands, key=lambda c: c.N)
        raise UserError(
            f"no model fits the budget: even the smallest candidate ({near.N:,} parameters, "
            f"{near.D:.3g} tokens) {near.reason}. Give more time or memory, or less compute"
        )
    best = min(feasible, key=lambda c: c.loss.value)
    return Allocation(
        chosen=best, closed_form=closed.to_dict(),
        sensitivity=_sensitivity(fit, best, C, hardware, batch_tokens, precision, seconds, mem),
        candidates=cands,
    )


def _sensitivity(
    fit: ParametricFit, best: Candidate, C: float, hw: HardwareProfile, batch_tokens: int,
    precision: str, seconds: float | None, mem: float,
) -> list[dict[str, Any]]:
    """Predicted loss if N is halved or doubled at the same compute."""
    base = GPTConfig.from_dict(best.model)
    rows = []
    for factor in (0.5, 1.0, 2.0):
        cfg = base if factor == 1.0 else shape_for(
            best.N * factor, vocab_size=base.vocab_size, seq_len=base.seq_len,
            non_embedding=fit.param_convention == "non_embedding")
        c = _candidate(fit, cfg, C, hw, batch_tokens, precision, seconds, mem)
        rows.append({"N_factor": factor, "N": c.N, "D": c.D, "loss": c.loss.to_dict(),
                     "delta_loss": c.loss.value - best.loss.value, "feasible": c.feasible})
    return rows
