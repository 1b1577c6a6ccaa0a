"""Fixtures shared by every test: seeds, a temporary run directory, the shared data sets."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """``../shared/data`` beside the checkout, or ``$LMALLOC_SHARED_DATA``."""
    return Path(os.environ.get("LMALLOC_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    np.random.seed(0)


@pytest.fixture
def shared_data() -> Path:
    """The real data sets; the test is skipped cleanly when they are absent."""
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"shared data sets not found at {path}")
    return path


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path / "run"
