"""From a fitted scaling law and a budget to the final run's allocation.

The closed-form optimum (Chinchilla eq. 4) assumes ``C = k N D`` and any N. Real models come in
shapes, pay an attention term per token, and must fit a device's memory and a deadline. So
:func:`allocate` searches the shapes themselves: for sizes on a log grid around the closed-form
N*, it takes the shape :func:`~lmalloc.model.shape.shape_for` gives, counts its exact training
FLOPs per token, spends the whole compute budget on tokens ``D = C / flops_per_token``, asks the
cost package whether the run fits the memory and time limits, and keeps the feasible shape of
lowest predicted loss. Every prediction carries the fit's bootstrap interval. Shapes smaller
than the smallest fitted run are never chosen: a final run is for extrapolating upwards, and a
fit that sees no benefit of size (an exponent near 0) would otherwise pick a toy model.

Data-constrained (``unique_tokens`` given): a shape whose D exceeds the unique training tokens
repeats them, and its loss is predicted at the effective tokens ``D'`` of Muennighoff et al.
2023 (:mod:`lmalloc.scaling.repetition`), so repetition is priced in and each candidate
reports its epochs.

Torch-free: it uses only ``scaling``, ``cost`` and the model's accounting.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from lmalloc.cost.hardware import HardwareProfile
from lmalloc.cost.memory import recommend
from lmalloc.cost.time_model import predict_time
from lmalloc.errors import UserError
from lmalloc.model.accounting import param_count, stored_bytes, train_flops_per_token
from lmalloc.model.config import GPTConfig
from lmalloc.model.shape import shape_for
from lmalloc.scaling.estimate import Estimate
from lmalloc.scaling.optimal import compute_optimal
from lmalloc.scaling.parametric import ParametricFit
from lmalloc.scaling.precision import PrecisionLaw
from lmalloc.scaling.repetition import effective_tokens

GRID_OCTAVES = 3.0  # candidates span N*/8 .. 8 N*
GRID_POINTS = 25
WALK_DOWN = 4  # time-bound plans: extra grids, each 2^6 smaller, when nothing fits


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
    deploy: dict[str, Any] | None = None  # the format it ships in (see :class:`Deploy`)
    epochs: float | None = None  # passes over the unique tokens (None: not data-constrained)
    effective_D: float | None = None  # Muennighoff et al.'s D' the loss was predicted at

    @property
    def objective(self) -> float:
        """What the allocation minimises: the loss as deployed (after quantization) when a
        deployment limit is set, the trained loss otherwise."""
        return float(self.deploy["loss"]["value"]) if self.deploy else self.loss.value

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["loss"] = self.loss.to_dict()
        return d


@dataclass(frozen=True)
class Deploy:
    """A deployment memory limit: the stored model (weights as ``lmalloc compress`` counts
    them) must fit ``memory_bytes``. Each shape ships in the format of ``bits`` (None:
    unquantized floats) that fits and, by the precision ``law``, loses least; without a law
    only the unquantized format is considered (nothing says what quantizing would cost)."""

    memory_bytes: float
    law: PrecisionLaw | None = None
    bits: tuple[int | None, ...] = (None, 8, 4, 3, 2)
    group_size: int = 64

    def choose(self, cfg: GPTConfig, N: float, D: float, loss: Estimate) -> dict[str, Any]:
        """The best format for this shape; ``fits`` False (smallest size named) if none fits."""
        options = self.bits if self.law is not None else (None,)
        sizes = {b: stored_bytes(cfg, b, self.group_size) for b in options}
        best: dict[str, Any] | None = None
        for b in options:
            if sizes[b] > self.memory_bytes:
                continue
            delta = self.law.predict(N, D, b) if self.law is not None else Estimate(
                0.0, 0.0, 0.0, loss.level)
            after = Estimate(loss.value + delta.value, loss.low + delta.low,
                             loss.high + delta.high, loss.level)
            if best is None or after.value < best["loss"]["value"]:
                best = {"bits": b, "group_size": self.group_size, "bytes": sizes[b],
                        "delta": delta.to_dict(), "loss": after.to_dict(), "fits": True}
        return best or {"fits": False, "smallest_bytes": min(sizes.values()),
                        "loss": loss.to_dict()}


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
    tokens_for: Callable[[GPTConfig], float] | None = None, deploy: Deploy | None = None,
    unique_tokens: float | None = None,
) -> Candidate:
    non_emb = fit.param_convention == "non_embedding"
    N = param_count(cfg, non_embedding=non_emb)
    fpt = train_flops_per_token(cfg)
    D = tokens_for(cfg) if tokens_for is not None else C / fpt
    reasons = []
    n_min = fit.input_range.get("N", (0.0, 0.0))[0]
    if N < n_min:  # the law says nothing below its runs; a flat fit would pick toy models
        reasons.append(f"smaller than any fitted run ({N:,} < {n_min:,.0f} parameters)")
    if D < batch_tokens:
        reasons.append("fewer tokens than one batch")
        D = float(batch_tokens)  # keeps the time and loss predictions defined
    C = D * fpt
    rec = recommend(cfg, memory_bytes, batch_tokens, cfg.seq_len, precision, hw.count)
    t = predict_time(cfg, D, hw, batch_tokens=batch_tokens, micro_batch=rec.micro_batch,
                     seq_len=cfg.seq_len, precision=precision, parallel=rec.parallel,
                     activation_checkpointing=rec.activation_checkpointing).seconds
    if not rec.fits:
        reasons.append(f"does not fit in memory ({rec.suggestion})")
    if seconds is not None and t > seconds:
        reasons.append(f"predicted {t:.0f} s > {seconds:.0f} s")
    D_eff = D if unique_tokens is None else effective_tokens(D, unique_tokens)
    loss = fit.predict_estimate(N, D_eff)
    shipped = None
    if deploy is not None:
        shipped = deploy.choose(cfg, N, D_eff, loss)
        if not shipped["fits"]:
            reasons.append(f"stored in {shipped['smallest_bytes']:,} bytes in its smallest "
                           f"allowed format, > the deployment limit {deploy.memory_bytes:,.0f}")
    return Candidate(
        model=cfg.to_dict(), N=N, D=float(D), flops=float(C), loss=loss,
        seconds=float(t), memory_bytes=float(rec.memory.peak), micro_batch=rec.micro_batch,
        parallel=rec.parallel, activation_checkpointing=rec.activation_checkpointing,
        feasible=not reasons, reason="; ".join(reasons), deploy=shipped,
        epochs=None if unique_tokens is None else float(D / unique_tokens),
        effective_D=None if unique_tokens is None else float(D_eff),
    )


def allocate(
    fit: ParametricFit, C: float, hardware: HardwareProfile, vocab_size: int, seq_len: int,
    batch_tokens: int, *, seconds: float | None = None, memory_bytes: float | None = None,
    precision: str = "fp32", grid_points: int = GRID_POINTS,
    tokens_for: Callable[[GPTConfig], float] | None = None, deploy: Deploy | None = None,
    unique_tokens: float | None = None, n_target: float | None = None,
) -> Allocation:
    """The feasible GPT shape of lowest predicted loss for final-run compute ``C`` (the loss
    as deployed, quantization included, when ``deploy`` limits the stored model's size).

    Args:
        fit: an L(N, D) fit (approach 3) in its parameter convention.
        C: FLOPs for the final run; hardware: the profile it runs on.
        vocab_size, seq_len, batch_tokens: fixed by the data, the recipe and the HP laws.
        seconds: wall-time limit (None = none); memory_bytes: per device (default: device's).
        precision: training precision for the time and memory models.
        tokens_for: tokens each shape trains (e.g. in a fixed time, from the time model);
            default ``C / flops_per_token``: every shape spends exactly ``C``. ``C`` then only
            centres the grid of sizes.
        deploy: a limit on the stored model and the precision law that prices quantizing.
        unique_tokens: the unique training tokens; a shape that needs more repeats them, its
            loss predicted at Muennighoff et al.'s effective D' (None: unlimited data).
        n_target: a size the optimum is known at by other means (approach 2 on the ladder's
            IsoFLOP branches, when ``fit`` is degenerate in N): the grid centres on it and
            the feasible shape nearest it is chosen, its loss still predicted by ``fit``.

    Raises:
        UserError: no shape on the grid fits the limits (the message names the nearest miss).
    """
    closed = compute_optimal(fit, C)
    mem = memory_bytes if memory_bytes is not None else hardware.memory_bytes
    non_emb = fit.param_convention == "non_embedding"
    seen: dict[tuple[int, int, int], Candidate] = {}
    centre = max(closed.N.value if n_target is None else n_target,
                 fit.input_range.get("N", (0.0, 0.0))[0])
    for _ in range(WALK_DOWN + 1):
        for n in centre * 2.0 ** np.linspace(-GRID_OCTAVES, GRID_OCTAVES, grid_points):
            try:
                cfg = shape_for(float(n), vocab_size=vocab_size, seq_len=seq_len,
                                non_embedding=non_emb)
            except UserError:  # outside the shapes a GPT can have (a wild fit's N*)
                continue
            key = (cfg.n_layer, cfg.d_model, cfg.n_head)
            if key not in seen:
                seen[key] = _candidate(fit, cfg, C, hardware, batch_tokens, precision, seconds,
                                       mem, tokens_for, deploy, unique_tokens)
        if tokens_for is None or any(c.feasible for c in seen.values()):
            break
        centre /= 2.0 ** (2 * GRID_OCTAVES)  # time-bound and nothing fits: look smaller
    cands = sorted(seen.values(), key=lambda c: c.N)
    if not cands:
        raise UserError(
            f"the fitted law puts the optimum at N = {closed.N.value:.3g} parameters for "
            f"{C:.3g} FLOPs, where no GPT shape exists: the fit is degenerate (look at its "
            "exponents) or the target is far outside the runs' range")
    feasible = [c for c in cands if c.feasible]
    if not feasible:
        near = min(cands, key=lambda c: c.N)
        raise UserError(
            f"no model fits the budget: even the smallest candidate ({near.N:,} parameters, "
            f"{near.D:.3g} tokens) {near.reason}. Give more time or memory, or less compute"
        )
    best = (min(feasible, key=lambda c: c.objective) if n_target is None
            else min(feasible, key=lambda c: abs(np.log(c.N / n_target))))
    return Allocation(
        chosen=best, closed_form=closed.to_dict(),
        sensitivity=_sensitivity(fit, best, C, hardware, batch_tokens, precision, seconds, mem,
                                 tokens_for, deploy, unique_tokens),
        candidates=cands,
    )


def _sensitivity(
    fit: ParametricFit, best: Candidate, C: float, hw: HardwareProfile, batch_tokens: int,
    precision: str, seconds: float | None, mem: float,
    tokens_for: Callable[[GPTConfig], float] | None = None, deploy: Deploy | None = None,
    unique_tokens: float | None = None,
) -> list[dict[str, Any]]:
    """Predicted loss if N is halved or doubled at the same compute (or time)."""
    base = GPTConfig.from_dict(best.model)
    rows = []
    for factor in (0.5, 1.0, 2.0):
        cfg = base if factor == 1.0 else shape_for(
            best.N * factor, vocab_size=base.vocab_size, seq_len=base.seq_len,
            non_embedding=fit.param_convention == "non_embedding")
        c = _candidate(fit, cfg, C, hw, batch_tokens, precision, seconds, mem, tokens_for,
                       deploy, unique_tokens)
        rows.append({"N_factor": factor, "N": c.N, "D": c.D, "loss": c.loss.to_dict(),
                     "delta_loss": c.objective - best.objective, "feasible": c.feasible})
    return rows
