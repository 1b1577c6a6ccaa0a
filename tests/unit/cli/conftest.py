"""CLI tests run many commands in one process: leave logging and the environment as found."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lmalloc.cli import logs


@pytest.fixture(autouse=True)
def _clean_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(logs.NO_PROGRESS_ENV, raising=False)
    yield
    logs.reset()
