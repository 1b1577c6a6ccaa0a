"""Data surprises are said, with counts: a single file is "too few documents", not "empty";
replaced bytes and heavy filtering warn; a corpus too small to train on is refused."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest

from lmalloc.data.config import PrepareConfig
from lmalloc.data.pipeline import MIN_TRAIN_TOKENS, prepare
from lmalloc.errors import UserError

WORDS = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta", "iota", "kappa"]


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choices(WORDS, k=n))


def test_a_single_20kb_file_is_too_few_documents_not_empty(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "one.txt").write_text(_words(random.Random(0), 4000))
    assert (src / "one.txt").stat().st_size > 19_000
    with pytest.raises(UserError) as e:
        prepare([src], tmp_path / "out", progress=False)
    msg = str(e.value)
    assert "empty" not in msg and "too few documents" in msg and "1 document" in msg
    assert "split the text into several files" in msg
    assert not (tmp_path / "out").exists()


def test_latin1_bytes_are_replaced_with_a_counted_warning(tmp_path: Path, caplog) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        (src / f"l{i}.txt").write_bytes(f"caf\xe9 na\xefve r\xe9sum\xe9 {i} ".encode("latin-1")
                                        * 800)
    with caplog.at_level(logging.WARNING, logger="lmalloc"):
        r = prepare([src], tmp_path / "out", PrepareConfig(vocab_size=260), progress=False)
    assert r["counts"]["invalid_utf8"] == 4 * 800 * 4
    assert r["warnings"] and "12,800 invalid UTF-8 sequences" in r["warnings"][0]
    assert "12,800 invalid UTF-8" in caplog.text and "Latin-1" in caplog.text


def test_filtering_half_the_corpus_warns_with_counts(tmp_path: Path, caplog) -> None:
    src = tmp_path / "src"
    src.mkdir()
    rng = random.Random(1)
    for i in range(10):
        (src / f"x{i}.txt").write_text(_words(rng, 300) if i % 2 else "short")
    with caplog.at_level(logging.WARNING, logger="lmalloc"):
        r = prepare([src], tmp_path / "out", PrepareConfig(vocab_size=260), progress=False)
    assert r["counts"]["documents_kept"] == 5
    assert "removed 5 of 10 documents (50%)" in caplog.text
    # a corpus that loses nothing says nothing
    caplog.clear()
    for i in range(10):
        (src / f"x{i}.txt").write_text(_words(rng, 300))
    with caplog.at_level(logging.WARNING, logger="lmalloc"):
        r = prepare([src], tmp_path / "out2", PrepareConfig(vocab_size=260), progress=False)
    assert r["warnings"] == [] and "removed" not in caplog.text


def test_a_corpus_too_small_to_train_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"f{i}.txt").write_text("a" * 40 + str(i))
    with pytest.raises(UserError, match=f"training tokens .* at least {MIN_TRAIN_TOKENS}"):
        prepare([src], tmp_path / "out", PrepareConfig(vocab_size=260, min_chars=1),
                progress=False)
    assert not (tmp_path / "out").exists()
