"""Finding corpus files and streaming their documents.

A *document* is a whole file for ``.txt``/``.md``/``.py`` (cut into paragraph-bounded pieces of
about ``chunk_bytes`` when larger, so memory stays bounded), one line for ``.jsonl`` and one row
for ``.parquet``. Any of the text types may be compressed (``.gz``, ``.zst``). Files are read
in a sorted, deterministic order and never whole: text is decoded incrementally, parquet in
record batches.

Bad input is counted, not fatal, where it can be: files with a NUL byte in their first KB are
binary and skipped; invalid UTF-8 is replaced (U+FFFD) and counted; malformed JSONL lines are
skipped and counted (``prepare`` fails past ``max_malformed_frac``).
"""

from __future__ import annotations

import codecs
import fnmatch
import gzip
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from lmalloc.errors import UserError

TEXT_EXTS = (".txt", ".md", ".py")
JSONL_EXTS = (".jsonl",)
PARQUET_EXTS = (".parquet",)
COMPRESSIONS = ("", ".gz", ".zst")
BINARY_PROBE = 1024
READ_BLOCK = 1 << 16


@dataclass
class SourceStats:
    """What reading saw; every field ends up in ``data.json``."""

    files: int = 0
    binary_files: int = 0
    documents: int = 0
    bytes: int = 0
    invalid_utf8: int = 0
    jsonl_lines: int = 0
    malformed_jsonl: int = 0
    skipped_files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["skipped_files"] = self.skipped_files[:20]  # a sample is enough to act on
        return d


def file_kind(path: Path) -> str | None:
    """``"text"``, ``"jsonl"`` or ``"parquet"`` from the name, or None if unsupported."""
    name = path.name.lower()
    for comp in COMPRESSIONS:
        for kind, exts in (("text", TEXT_EXTS), ("jsonl", JSONL_EXTS)):
            if any(name.endswith(e + comp) for e in exts):
                return kind
    return "parquet" if name.endswith(PARQUET_EXTS) else None


def discover(
    sources: Sequence[str | Path], include: Sequence[str] = (), exclude: Sequence[str] = ()
) -> list[Path]:
    """Expand files and folders (recursively) into a sorted, de-duplicated file list."""
    found: list[Path] = []
    for src in sources:
        p = Path(src)
        if not p.exists():
            raise UserError(f"source {str(src)!r} does not exist")
        if p.is_file():
            if file_kind(p) is None:
                raise UserError(
                    f"source {str(src)!r} has an unsupported type: expected .txt, .md, .py or "
                    ".jsonl (optionally .gz/.zst) or .parquet"
                )
            found.append(p)
            continue
        for f in sorted(p.rglob("*")):
            rel = f.relative_to(p).as_posix()
            if any(part.startswith(".") for part in f.relative_to(p).parts) or not f.is_file():
                continue
            if file_kind(f) is None or not _selected(rel, include, exclude):
                continue
            found.append(f)
    unique = list(dict.fromkeys(f.resolve() for f in found))
    return unique


def _selected(rel: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    name = rel.rsplit("/", 1)[-1]

    def hit(pats: Sequence[str]) -> bool:
        return any(fnmatch.fnmatch(rel, g) or fnmatch.fnmatch(name, g) for g in pats)

    return (not include or hit(include)) and not hit(exclude)


def _open_binary(path: Path) -> IO[bytes]:
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if name.endswith(".zst"):
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)
    return open(path, "rb")


_REPLACED = [0]  # invalid UTF-8 sequences replaced so far (this process)


def _count_and_replace(e: UnicodeError) -> tuple[str, int]:
    assert isinstance(e, UnicodeDecodeError)
    _REPLACED[0] += 1
    return "\ufffd", e.end


codecs.register_error("lmalloc-count", _count_and_replace)


class _Utf8Counter:
    """An incremental UTF-8 decoder that replaces invalid bytes (U+FFFD) and counts them."""

    def __init__(self, stats: SourceStats) -> None:
        self.stats = stats
        self.dec = codecs.getincrementaldecoder("utf-8")(errors="lmalloc-count")

    def decode(self, data: bytes, final: bool = False) -> str:
        before = _REPLACED[0]
        text: str = self.dec.decode(data, final)
        self.stats.invalid_utf8 += _REPLACED[0] - before
        return text


def _probe(stream: IO[bytes], path: Path, stats: SourceStats) -> bytes | None:
    """Read the first KB; None (and counted) if it holds a NUL byte, i.e. the file is binary."""
    head = stream.read(BINARY_PROBE)
    if b"\x00" in head:
        stats.binary_files += 1
        stats.skipped_files.append(f"{path} (binary)")
        return None
    return head


def _decoded(path: Path, stats: SourceStats) -> Iterator[str]:
    """The file's text, block by block (invalid UTF-8 replaced and counted); nothing for a
    binary file."""
    with _open_binary(path) as f:
        block = _probe(f, path, stats)
        if block is None:
            return
        dec = _Utf8Counter(stats)
        while block:
            yield dec.decode(block, final=False)
            block = f.read(READ_BLOCK)
        yield dec.decode(b"", final=True)


def _text_docs(path: Path, chunk_bytes: int, stats: SourceStats) -> Iterator[str]:
    buf = ""
    for text in _decoded(path, stats):
        buf += text
        while len(buf) >= chunk_bytes:
            cut = _paragraph_cut(buf, chunk_bytes)
            yield buf[:cut]
            buf = buf[cut:]
    if buf:
        yield buf


def _paragraph_cut(buf: str, limit: int) -> int:
    """Where to cut ``buf`` (≥ ``limit`` chars): the last blank line, else line, before it."""
    for sep in ("\n\n", "\n"):
        i = buf.rfind(sep, limit // 2, limit)
        if i >= 0:
            return i + len(sep)
    return limit


def _jsonl_docs(path: Path, text_field: str, stats: SourceStats) -> Iterator[str]:
    rest = ""
    for text in _decoded(path, stats):
        lines = (rest + text).split("\n")
        rest = lines.pop()  # an unfinished line waits for the next block
        for line in lines:
            doc = _jsonl_doc(line, text_field, stats)
            if doc is not None:
                yield doc
    doc = _jsonl_doc(rest, text_field, stats)
    if doc is not None:
        yield doc


def _jsonl_doc(line: str, text_field: str, stats: SourceStats) -> str | None:
    if not line.strip():
        return None
    stats.jsonl_lines += 1
    try:
        obj = json.loads(line)
    except ValueError:
        obj = None
    text = obj.get(text_field) if isinstance(obj, dict) else None
    if not isinstance(text, str):
        stats.malformed_jsonl += 1
        return None
    return text


def _parquet_docs(path: Path, column: str, stats: SourceStats) -> Iterator[str]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a non-parquet file
        stats.skipped_files.append(f"{path} (unreadable parquet: {e})")
        stats.binary_files += 1
        return
    if column not in pf.schema_arrow.names:
        raise UserError(
            f"{path} has no column {column!r} (has {pf.schema_arrow.names}); choose one with "
            "--parquet-column"
        )
    for batch in pf.iter_batches(batch_size=1024, columns=[column]):
        for text in batch.column(0).to_pylist():
            if isinstance(text, str):
                yield text


def iter_documents(
    files: Sequence[Path], stats: SourceStats, *, text_field: str = "text",
    parquet_column: str = "text", chunk_bytes: int = 262_144, max_bytes: int = 0,
    on_file: Any = None,
) -> Iterator[str]:
    """Yield every document of ``files`` in order, updating ``stats`` as it goes.

    Stops after ``max_bytes`` bytes of documents when that is positive.
    """
    for path in files:
        kind = file_kind(path)
        stats.files += 1
        if kind == "jsonl":
            docs = _jsonl_docs(path, text_field, stats)
        elif kind == "parquet":
            docs = _parquet_docs(path, parquet_column, stats)
        else:
            docs = _text_docs(path, chunk_bytes, stats)
        for doc in _guarded(docs, path):
            stats.documents += 1
            stats.bytes += len(doc.encode("utf-8"))
            yield doc
            if max_bytes and stats.bytes >= max_bytes:
                return
        if on_file is not None:
            on_file(path)


def _guarded(docs: Iterator[str], path: Path) -> Iterator[str]:
    """Turn an unreadable file (corrupt gzip/zstd, permission, I/O error) into a UserError."""
    import zstandard

    try:
        yield from docs
    except (OSError, EOFError, zstandard.ZstdError) as e:
        raise UserError(f"cannot read {path}: {e}") from None


def fingerprint(files: Sequence[Path]) -> list[list[Any]]:
    """Path, size and mtime of each file: the cheap part of the reuse key (no re-read)."""
    out: list[list[Any]] = []
    for p in files:
        st = p.stat()
        out.append([str(p), st.st_size, st.st_mtime_ns])
    return out


