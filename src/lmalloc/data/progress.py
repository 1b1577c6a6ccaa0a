"""A rich progress display for the prepare passes (documents/s and MB/s), or nothing."""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any


class Progress:
    """``with Progress(label, enabled) as bar: bar.advance(num_chars)`` per document.

    Updates the screen every 256 documents: per-document rich calls would cost more than
    cleaning a short document.
    """

    EVERY = 256

    def __init__(self, label: str, enabled: bool = True) -> None:
        self.label, self.enabled = label, enabled
        self.docs = self.chars = self._pending = 0
        self._bar: Any = None

    def __enter__(self) -> Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import Progress as RichProgress
            from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

            self._bar = RichProgress(
                SpinnerColumn(), TextColumn("{task.description}"),
                TextColumn("{task.fields[stats]}"), TimeElapsedColumn(),
                console=Console(stderr=True), transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.label, stats="")
            self._t0 = time.perf_counter()
        return self

    def advance(self, num_chars: int) -> None:
        self.docs += 1
        self.chars += num_chars
        self._pending += 1
        if self._bar is not None and self._pending >= self.EVERY:
            self._refresh()

    def _refresh(self) -> None:
        self._pending = 0
        dt = max(time.perf_counter() - self._t0, 1e-9)
        self._bar.update(self._task, stats=f"{self.docs:,} docs  {self.docs / dt:,.0f} docs/s "
                         f" {self.chars / dt / 1e6:.1f} MB/s")

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._refresh()
            self._bar.stop()
