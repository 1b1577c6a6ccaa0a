"""A progress bar of what a stage has charged against its share of the budget.

The exploration stages of ``lmalloc run`` (search, ladder) are many short trainings; a bar per
training would flicker, so this one bar follows the run's ledger (``RunDir.spent(stage)``),
the same numbers the budget is enforced on, with rich's elapsed time and ETA, on stderr.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from lmalloc.rundir import RunDir


class BudgetBar:
    """``with BudgetBar(run, "ladder", total, unit, enabled) as bar: ... bar.update()``."""

    def __init__(self, run: RunDir, stage: str, total: float, unit: str,
                 enabled: bool = True) -> None:
        self.run, self.stage, self.total, self.unit = run, stage, total, unit
        self.enabled = enabled and total > 0
        self._bar: Any = None

    def __enter__(self) -> BudgetBar:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                Progress,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn(f"[bold]{self.stage}"), BarColumn(), TaskProgressColumn(),
                TextColumn(f"of its {self.unit} budget"), TimeElapsedColumn(),
                TimeRemainingColumn(), console=Console(stderr=True), transient=True)
            self._bar.start()
            self._task = self._bar.add_task(self.stage, total=self.total)
            self.update()
        return self

    def update(self, *_: Any) -> None:
        """Redraw from the ledger (takes and ignores a study: usable as a search ``on_poll``)."""
        if self._bar is not None:
            done = float(self.run.spent(self.stage)[self.unit])
            self._bar.update(self._task, completed=min(done, self.total))

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
