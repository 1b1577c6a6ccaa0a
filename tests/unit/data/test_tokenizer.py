"""The byte-level BPE tokenizer: exact round trip, EOT, a vocabulary too large is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmalloc.data.tokenizer import EOT, load_tokenizer, train_tokenizer
from lmalloc.errors import UserError

TEXT = ["The quick brown fox jumps over the lazy dog. " * 20, "def f(x):\n    return x * 2\n"]


def test_round_trip_any_text(tmp_path: Path) -> None:
    tok = train_tokenizer(TEXT * 5, vocab_size=300, min_frequency=1)
    for s in ["The quick fox", "unseen 字符 and emoji 🙂\n\tindent", "def g(y):\n    pass"]:
        assert tok.decode(tok.encode(s).ids) == s
    assert tok.token_to_id(EOT) is not None
    tok.save(str(tmp_path / "t.json"))
    again = load_tokenizer(tmp_path / "t.json")
    assert again.encode("The quick").ids == tok.encode("The quick").ids


def test_vocab_too_large_for_corpus() -> None:
    with pytest.raises(UserError, match="invalid vocab_size = 50000"):
        train_tokenizer(["tiny corpus"] * 3, vocab_size=50000)


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_tokenizer(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(UserError, match="not a valid tokenizer"):
        load_tokenizer(tmp_path / "bad.json")
