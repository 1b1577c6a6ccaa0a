"""Shared bits of the reliability suite: a per-category counter of hostile cases tried.

Set ``LMALLOC_RELIABILITY_REPORT=1`` to write the counts to
``bench/results/reliability_hostile.json`` at the end of the session.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

CASES: Counter[str] = Counter()
OUTCOMES: Counter[str] = Counter()
REPORT_ENV = "LMALLOC_RELIABILITY_REPORT"


def _tally(category: str, outcome: str) -> None:
    CASES[category] += 1
    OUTCOMES[f"{category}:{outcome}"] += 1


@pytest.fixture(scope="session")
def tally():
    """``tally(category, outcome)`` counts one hostile case (outcome: ok / user_error)."""
    return _tally


@pytest.fixture(scope="session", autouse=True)
def _write_reliability_report():
    yield
    if os.environ.get(REPORT_ENV) == "1" and CASES:
        out = Path(__file__).resolve().parents[2] / "bench" / "results"
        out.mkdir(parents=True, exist_ok=True)
        from lmalloc.rundir import atomic_write_json

        atomic_write_json(out / "reliability_hostile.json",
                          {"cases": dict(CASES), "outcomes": dict(OUTCOMES),
                           "total": sum(CASES.values())})


@pytest.fixture()
def tiny_run(tmp_path: Path) -> Path:
    """A run directory holding only a tiny prepared ``data/`` folder."""
    from _reliability_tiny import tiny_data

    root = tmp_path / "run"
    tiny_data(root / "data")
    return root
