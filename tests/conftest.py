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


def _tiny_doc(rng: random.Random, n_words: int) -> str:
    syll = ["ka", "lo", "mi", "ne", "ru", "ta", "vo", "shi", "en", "da", "po", "ri"]
    words = ["".join(rng.choices(syll, k=rng.randint(1, 3))) for _ in range(n_words)]
    lines = [" ".join(words[i : i + 12]).capitalize() + "." for i in range(0, n_words, 12)]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def tiny_corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small mixed corpus (txt, md, jsonl, a nested folder): 40 distinct documents.

    Written once per session; tests must not modify it (copy it first).
    """
    import json

    root = tmp_path_factory.mktemp("tiny_corpus")
    rng = random.Random(1234)
    (root / "sub").mkdir()
    for i in range(20):
        (root / ("sub" if i % 2 else ".") / f"doc{i:02d}.txt").write_text(_tiny_doc(rng, 120))
    (root / "notes.md").write_text("# Notes\n\n" + _tiny_doc(rng, 150))
    with open(root / "docs.jsonl", "w") as f:
        for _ in range(19):
            f.write(json.dumps({"text": _tiny_doc(rng, 100), "id": 1}) + "\n")
    return root
