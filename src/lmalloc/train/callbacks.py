"""What the trainer reports to: the callback interface and the built-in callbacks.

Lifecycle of a :class:`Callback` (every hook is optional; the trainer calls only the ones a
callback defines, on rank 0 and on every other rank alike):

1. ``on_train_start(trainer)`` once, after the model, optimizer and any resumed checkpoint
   are ready (``trainer.step`` is the first step to run);
2. ``on_step(trainer, row)`` after each logged optimizer step, with the metrics row
   (``step``, ``tokens``, ``flops``, ``seconds``, ``lr``, ``loss``, ``grad_norm``,
   ``tokens_per_s``);
3. ``on_eval(trainer, row)`` after each evaluation (``val_loss``, ``val_bpb``, ...). It may
   raise :class:`StopTraining` (e.g. ``StopTraining("pruned", "below median at step 40")``):
   the run stops cleanly, writes its checkpoint and returns that status;
4. ``on_train_end(trainer, result)`` once with the :class:`~lmalloc.train.trainer.TrainResult`.

``on_step`` may raise :class:`StopTraining` too (e.g. an external budget check).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmalloc.rundir import atomic_write_text, refused_writes

if TYPE_CHECKING:
    from lmalloc.train.trainer import Trainer, TrainResult

STOP_STATUSES = ("pruned", "stopped")


class StopTraining(Exception):  # noqa: N818 - it is a signal, not an error
    """Raised from a callback hook to end the run early with ``status`` and ``reason``."""

    def __init__(self, status: str = "stopped", reason: str = "") -> None:
        if status not in STOP_STATUSES:
            raise ValueError(f"StopTraining status must be one of {STOP_STATUSES}, not {status!r}")
        super().__init__(reason or status)
        self.status = status
        self.reason = reason


class Callback:
    """Base class with no-op hooks; subclass and override the ones you need."""

    def on_train_start(self, trainer: Trainer) -> None:
        """Called once before the first step."""

    def on_step(self, trainer: Trainer, row: dict[str, Any]) -> None:
        """Called after each logged training step."""

    def on_eval(self, trainer: Trainer, row: dict[str, Any]) -> None:
        """Called after each evaluation; may raise :class:`StopTraining`."""

    def on_train_end(self, trainer: Trainer, result: TrainResult) -> None:
        """Called once at the end, whatever the status."""


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a ``metrics.jsonl``; a torn last line (killed writer) is skipped."""
    rows: list[dict[str, Any]] = []
    p = Path(path)
    if not p.exists():
        return rows
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


class MetricsFile(Callback):
    """Appends one JSON row per logged step, evaluation and end to ``metrics.jsonl``.

    Rows carry ``kind``: ``train``, ``eval`` or ``end``. On a resume the file is first cut back
    to the rows up to the checkpoint's step, so it reads as if the run had never stopped.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._f: Any = None

    def on_train_start(self, trainer: Trainer) -> None:
        kept = [r for r in read_metrics(self.path)
                if r.get("kind") != "end" and r.get("step", 0) <= trainer.step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed at the end

    def _write(self, row: dict[str, Any]) -> None:
        if self._f is not None:
            with refused_writes(self.path):
                self._f.write(json.dumps(row) + "\n")
                self._f.flush()

    def on_step(self, trainer: Trainer, row: dict[str, Any]) -> None:
        self._write({"kind": "train", **row})

    def on_eval(self, trainer: Trainer, row: dict[str, Any]) -> None:
        self._write({"kind": "eval", **row})

    def on_train_end(self, trainer: Trainer, result: TrainResult) -> None:
        self._write({"kind": "end", "step": result.steps, "status": result.status,
                     "reason": result.reason})
        if self._f is not None:
            self._f.close()
            self._f = None


class ProgressBar(Callback):
    """A rich progress bar with loss, tokens/s and ETA; silent when not on a terminal."""

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        if os.environ.get("LMALLOC_NO_PROGRESS"):
            self.enabled = False
        self._progress: Any = None
        self._task: Any = None

    def on_train_start(self, trainer: Trainer) -> None:
        if not self.enabled:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]train"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            transient=False, console=Console(stderr=True),
        )
        self._progress.start()
        total = trainer.total_steps if trainer.total_steps else None
        self._task = self._progress.add_task("train", total=total, completed=trainer.step,
                                             info="")
        self._t0 = time.perf_counter()

    def on_step(self, trainer: Trainer, row: dict[str, Any]) -> None:
        if self._progress is not None:
            info = f"loss {row['loss']:.3f}  {row['tokens_per_s']:,.0f} tok/s"
            self._progress.update(self._task, completed=row["step"], info=info)

    def on_train_end(self, trainer: Trainer, result: TrainResult) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
