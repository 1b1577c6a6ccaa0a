"""``prepare`` on real corpora: the built-in default corpus and wikitext-2 (shared data)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmalloc.data import PrepareConfig, prepare
from lmalloc.data.builtin import builtin_files
from lmalloc.data.shards import TokenData


def _fingerprint(meta: dict) -> tuple:
    shards = [(s["path"], s["tokens"], s["sha256"]) for v in meta["splits"].values()
              for s in v["shards"]]
    return meta["counts"], meta["removed"], shards


def test_builtin_corpus_files_are_stdlib_sources() -> None:
    files = builtin_files()
    assert len(files) > 300 and files == sorted(files)
    assert all(f.suffix == ".py" for f in files)
    assert not [f for f in files if "site-packages" in f.parts or "test" in f.parts]
    assert any(f.name == "topics.py" and f.parent.name == "pydoc_data" for f in files)


def test_builtin_corpus_prepares_deterministically(tmp_path: Path) -> None:
    # A 0.6 MB cap keeps this fast; the whole corpus is exercised by the benchmark.
    cfg = PrepareConfig(vocab_size=1024, max_bytes=600_000)
    a = prepare(None, tmp_path / "a", cfg, progress=False)
    b = prepare([], tmp_path / "b", cfg, progress=False)
    assert a["sources"]["builtin"] and _fingerprint(a) == _fingerprint(b)
    assert prepare(None, tmp_path / "a", cfg, progress=False)["reused"] is True
    data = TokenData(tmp_path / "a")
    assert data.split("val").num_tokens > 0 and data.split("train").num_tokens > 50_000
    assert a["counts"]["documents_kept"] > 20


@pytest.mark.shared_data
@pytest.mark.slow
def test_wikitext2_prepares_deterministically(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "wikitext-2"
    if not src.is_dir():
        pytest.skip("wikitext-2 not in the shared data")
    cfg = PrepareConfig(vocab_size=2048, chunk_bytes=100_000, max_bytes=1_500_000)
    a = prepare([src], tmp_path / "a", cfg, progress=False)
    b = prepare([src], tmp_path / "b", cfg, progress=False)
    assert _fingerprint(a) == _fingerprint(b)
    assert a["counts"]["documents"] >= 15 and a["splits"]["val"]["tokens"] > 0
    assert TokenData(tmp_path / "a").split("train").num_tokens > 200_000
