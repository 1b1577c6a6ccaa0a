"""Finding files and streaming documents: types, compression, chunking, bad input counted."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from lmalloc.data.sources import SourceStats, _paragraph_cut, discover, iter_documents
from lmalloc.errors import UserError


def _read(files: list[Path], **kw: object) -> tuple[list[str], SourceStats]:
    stats = SourceStats()
    return list(iter_documents(files, stats, **kw)), stats  # type: ignore[arg-type]


def test_discover_recursive_sorted_with_globs(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    for name in ["a.txt", "b/c.md", "b/d.jsonl", "e.bin", ".hidden.txt", "b/skip.txt"]:
        (tmp_path / name).write_text("x")
    found = [p.relative_to(tmp_path.resolve()).as_posix()
             for p in discover([tmp_path], exclude=["skip*"])]
    assert found == ["a.txt", "b/c.md", "b/d.jsonl"]
    only_md = discover([tmp_path], include=["*.md"])
    assert [p.name for p in only_md] == ["c.md"]


def test_discover_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        discover([tmp_path / "nope"])
    (tmp_path / "x.csv").write_text("a")
    with pytest.raises(UserError, match="unsupported type"):
        discover([tmp_path / "x.csv"])


def test_compressed_and_jsonl_and_parquet(tmp_path: Path) -> None:
    (tmp_path / "a.txt.gz").write_bytes(gzip.compress(b"hello gz"))
    (tmp_path / "b.md.zst").write_bytes(zstandard.ZstdCompressor().compress(b"hello zst"))
    lines = [json.dumps({"body": "one"}), "{not json", json.dumps({"other": 1}), "",
             json.dumps({"body": "two"})]
    (tmp_path / "c.jsonl").write_text("\n".join(lines))
    pq.write_table(pa.table({"body": ["p1", "p2", None]}), tmp_path / "d.parquet")
    docs, st = _read(discover([tmp_path]), text_field="body", parquet_column="body")
    assert docs == ["hello gz", "hello zst", "one", "two", "p1", "p2"]
    assert (st.jsonl_lines, st.malformed_jsonl, st.files) == (4, 2, 4)


def test_missing_parquet_column_is_user_error(tmp_path: Path) -> None:
    pq.write_table(pa.table({"x": ["a"]}), tmp_path / "d.parquet")
    with pytest.raises(UserError, match="no column 'text'"):
        _read([tmp_path / "d.parquet"])


def test_binary_skipped_and_invalid_utf8_counted(tmp_path: Path) -> None:
    (tmp_path / "bin.txt").write_bytes(b"abc\x00def" * 10)
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9 ok \xff\xfe end")
    docs, st = _read([tmp_path / "bin.txt", tmp_path / "bad.txt"])
    assert docs == ["caf\ufffd ok \ufffd\ufffd end"]
    assert st.binary_files == 1 and st.invalid_utf8 == 3


def test_large_text_is_chunked_at_paragraphs(tmp_path: Path) -> None:
    paras = [f"paragraph {i} " + "word " * 50 for i in range(200)]
    text = "\n\n".join(paras)
    (tmp_path / "big.txt").write_text(text)
    docs, _ = _read([tmp_path / "big.txt"], chunk_bytes=4096)
    assert "".join(docs) == text
    assert len(docs) > 5 and all(len(d) <= 4096 for d in docs)
    assert all(d.endswith("\n\n") for d in docs[:-1])


def test_paragraph_cut_falls_back_to_hard_limit() -> None:
    assert _paragraph_cut("x" * 100, 50) == 50
    assert _paragraph_cut("a" * 30 + "\n" + "b" * 70, 50) == 31


def test_max_bytes_stops_early(tmp_path: Path) -> None:
    for i in range(5):
        (tmp_path / f"{i}.txt").write_text("y" * 100)
    docs, st = _read(discover([tmp_path]), max_bytes=250)
    assert len(docs) == 3 and st.bytes == 300


def test_corrupt_compressed_file_is_user_error(tmp_path: Path) -> None:
    (tmp_path / "a.txt.gz").write_bytes(b"this is not gzip data at all")
    with pytest.raises(UserError, match="cannot read"):
        _read([tmp_path / "a.txt.gz"])
    (tmp_path / "b.txt.zst").write_bytes(b"nor zstd")
    with pytest.raises(UserError, match="cannot read"):
        _read([tmp_path / "b.txt.zst"])
