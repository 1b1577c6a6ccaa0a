"""Learning-rate schedules as pure functions of the step.

Every schedule is one piecewise shape, described by a :class:`Schedule`:

* linear warmup from 0 to the peak over ``warmup_steps``;
* flat at the peak until ``decay_start``;
* a decay to ``min_lr_ratio`` of the peak between ``decay_start`` and ``decay_end``
  (cosine for ``cosine``, linear for ``wsd``);
* flat at the floor after ``decay_end``.

``cosine`` decays from the end of warmup to the end of the run (Loshchilov & Hutter 2017);
``constant`` never decays; ``wsd`` (warmup-stable-decay, Hägele et al. 2024, "Scaling Laws and
Compute-Optimal Training beyond Fixed Training Durations") stays flat and cools down over the
last ``cooldown_frac`` of the run.

**Branching WSD.** Because the stable phase does not depend on the run's length, a checkpoint
taken at any step ``s`` of the stable phase is a valid start for a cooldown of any length:
:func:`branch` returns the schedule whose decay runs from ``s`` to ``s + cooldown_steps``. The
trainer exposes it as ``Trainer(..., branch_from=<checkpoint dir>, cooldown_tokens=N)``: one
stable run (``cooldown_frac = 0``, with ``snapshot_tokens`` to keep checkpoints) gives the
loss after a full cooldown at many token counts for the price of one run plus short cooldowns
(the search's multi-fidelity and the scaling ladder use this).

>>> s = Schedule("cosine", warmup_steps=10, decay_start=10, decay_end=110, min_lr_ratio=0.1)
>>> round(s(0), 3), round(s(10), 3), round(s(110), 3)
(0.1, 1.0, 0.1)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from lmalloc.train.config import TrainConfig


@dataclass(frozen=True)
class Schedule:
    """A learning-rate multiplier ``m(step)`` in ``[0, 1]``; the lr is ``base_lr * m(step)``."""

    kind: str
    warmup_steps: int
    decay_start: int
    decay_end: int
    min_lr_ratio: float

    def __call__(self, step: int) -> float:
        """Multiplier for the update made at ``step`` (0-based)."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.kind == "constant" or step < self.decay_start:
            return 1.0
        if step >= self.decay_end:
            return self.min_lr_ratio
        t = (step - self.decay_start) / max(1, self.decay_end - self.decay_start)
        if self.kind == "cosine":
            shape = 0.5 * (1.0 + math.cos(math.pi * t))
        else:  # wsd: linear cooldown
            shape = 1.0 - t
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * shape

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Schedule:
        return cls(**d)


def warmup_steps(cfg: TrainConfig, total_steps: int) -> int:
    """Warmup in steps: ``warmup`` < 1 is a fraction of the run, else a token count."""
    if cfg.warmup < 1:
        return int(round(cfg.warmup * total_steps))
    return math.ceil(cfg.warmup / cfg.batch_tokens)


def make_schedule(cfg: TrainConfig, total_steps: int | None) -> Schedule:
    """The schedule of a run of ``total_steps`` optimizer steps (``None``: unknown length, a
    time-limited run; only ``constant`` works then, with a warmup given in tokens)."""
    if total_steps is None:
        if cfg.schedule != "constant":
            raise ValueError(f"schedule {cfg.schedule!r} needs the run's length")
        return Schedule("constant", warmup_steps(cfg, 0), 0, 0, 1.0)
    warm = min(warmup_steps(cfg, total_steps), total_steps)
    if cfg.schedule == "cosine":
        return Schedule("cosine", warm, warm, total_steps, cfg.min_lr_ratio)
    if cfg.schedule == "wsd":
        cool = int(round(cfg.cooldown_frac * total_steps))
        start = max(warm, total_steps - cool)
        return Schedule("wsd", warm, start, total_steps, cfg.min_lr_ratio)
    return Schedule("constant", warm, total_steps, total_steps, 1.0)


def branch(schedule: Schedule, at_step: int, cooldown_steps: int) -> Schedule:
    """The cooldown branch of a WSD run from a checkpoint at ``at_step``.

    The branch keeps the run's warmup and decays linearly from ``at_step`` to
    ``at_step + cooldown_steps``. Only a step in the stable phase (after warmup, before the
    parent's own cooldown) can be branched: elsewhere the lr is not at its peak.
    """
    if schedule.kind != "wsd":
        raise ValueError(f"only a wsd schedule can branch, not {schedule.kind!r}")
    if not schedule.warmup_steps <= at_step <= schedule.decay_start:
        raise ValueError(
            f"step {at_step} is not in the stable phase "
            f"[{schedule.warmup_steps}, {schedule.decay_start}]"
        )
    return replace(schedule, decay_start=at_step, decay_end=at_step + cooldown_steps)
