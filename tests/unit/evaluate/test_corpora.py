"""Held-out corpora: names resolve under the data root; unknown names list the known ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmalloc.errors import UserError
from lmalloc.evaluate.corpora import corpus_path


def test_names_resolve_under_the_data_root(tmp_path: Path) -> None:
    (tmp_path / "ptb").mkdir()
    (tmp_path / "ptb" / "ptb.test.txt").write_text(" a b \n")
    assert corpus_path("ptb", tmp_path) == ("ptb", tmp_path / "ptb" / "ptb.test.txt")
    with pytest.raises(UserError, match="LMALLOC_SHARED_DATA"):
        corpus_path("wikitext2", tmp_path)


def test_text_file_and_unknown_name(tmp_path: Path) -> None:
    f = tmp_path / "notes.txt"
    f.write_text("hello")
    assert corpus_path(str(f)) == ("text:notes.txt", f)
    with pytest.raises(UserError, match="ptb"):
        corpus_path("enwik8")


@pytest.mark.shared_data
def test_shared_test_files_exist(shared_data: Path) -> None:
    for name in ("wikitext2", "ptb"):
        _, path = corpus_path(name, shared_data)
        assert path.name.endswith("test.txt") and path.stat().st_size > 400_000
