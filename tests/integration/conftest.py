"""Fixtures shared by integration tests: one tiny finished pipeline run per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from _pipeline_run import options

from lmalloc.run import run_pipeline


@pytest.fixture(scope="session")
def finished_run(tiny_corpus_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``lmalloc run`` under 4e10 FLOPs on the tiny corpus, report included (shared: tests
    must not change what other tests read)."""
    root = tmp_path_factory.mktemp("run") / "r"
    run_pipeline(root, options(tiny_corpus_dir))
    return root
