"""The typed configuration of ``lmalloc prepare``.

Every field is validated when the config is built (a bad value raises a
:class:`~lmalloc.errors.UserError` naming the field, the value and what is allowed), and the
field docs in :data:`FIELD_HELP` double as the CLI help, so the two never drift apart.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from lmalloc.errors import invalid

FIELD_HELP: dict[str, str] = {
    "vocab_size": "BPE vocabulary size, end-of-text token included (257..1048576).",
    "tokenizer": "Reuse this tokenizer.json instead of training one (its vocabulary wins).",
    "min_frequency": "Minimum pair count for a BPE merge when training.",
    "tokenizer_train_bytes": "Train the tokenizer on at most this many bytes of kept text, "
    "the first documents in order (0 = all of it); bounds the trainer's memory.",
    "text_field": "JSONL key that holds the document text.",
    "parquet_column": "Parquet column that holds the document text.",
    "include": "Glob patterns (on paths inside a source folder) of files to read; "
    "default: every supported type.",
    "exclude": "Glob patterns of files to skip inside a source folder.",
    "chunk_bytes": "Large .txt/.md/.py files are cut into documents of at most about this "
    "many bytes, at paragraph bounds (keeps memory bounded).",
    "max_bytes": "Stop after reading this many bytes of documents (0 = no limit).",
    "normalize_unicode": "Apply Unicode NFC normalisation.",
    "strip_control": "Remove control characters (tab and newline are kept).",
    "normalize_whitespace": "Strip trailing spaces and squeeze runs of more than two blank "
    "lines (indentation is kept).",
    "min_chars": "Drop documents shorter than this many characters after cleaning.",
    "min_alnum_frac": "Drop documents whose non-space characters are less than this share "
    "alphanumeric (0 disables).",
    "max_dup_line_frac": "Drop documents in which more than this share of non-blank lines "
    "repeat an earlier line (1 disables).",
    "dedup_exact": "Drop exact duplicates (same text after cleaning).",
    "dedup_near": "Drop near duplicates (MinHash LSH over word shingles).",
    "shingle_size": "Words per shingle for near-duplicate detection.",
    "jaccard_threshold": "Estimated Jaccard similarity at or above which a document is a near "
    "duplicate of an earlier one.",
    "num_perm": "MinHash permutations (more: sharper estimate, slower).",
    "val_fraction": "Share of documents (chosen by hash) held out for validation; at least "
    "one document always is.",
    "shard_tokens": "Tokens per shard file.",
    "max_malformed_frac": "Fail when more than this share of JSONL lines is malformed.",
    "batch_docs": "Documents per tokenizer encode_batch call.",
    "seed": "Seed of the MinHash permutations and the train/val split.",
}


@dataclass(frozen=True)
class PrepareConfig:
    """How ``prepare`` reads, cleans, deduplicates, tokenizes and packs a corpus.

    The defaults suit a CPU run: a small 4096-token vocabulary, MinHash with 64 permutations.
    """

    vocab_size: int = 4096
    tokenizer: str | None = None
    min_frequency: int = 2
    tokenizer_train_bytes: int = 200_000_000
    text_field: str = "text"
    parquet_column: str = "text"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    chunk_bytes: int = 262_144
    max_bytes: int = 0
    normalize_unicode: bool = True
    strip_control: bool = True
    normalize_whitespace: bool = True
    min_chars: int = 32
    min_alnum_frac: float = 0.25
    max_dup_line_frac: float = 0.5
    dedup_exact: bool = True
    dedup_near: bool = True
    shingle_size: int = 5
    jaccard_threshold: float = 0.8
    num_perm: int = 64
    val_fraction: float = 0.02
    shard_tokens: int = 50_000_000
    max_malformed_frac: float = 0.1
    batch_docs: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "include", tuple(self.include))
        object.__setattr__(self, "exclude", tuple(self.exclude))
        _check_int(self, "vocab_size", 257, 1 << 20)
        _check_int(self, "min_frequency", 1, 1 << 30)
        _check_int(self, "tokenizer_train_bytes", 0, None)
        _check_int(self, "chunk_bytes", 1024, 1 << 30)
        _check_int(self, "max_bytes", 0, None)
        _check_int(self, "min_chars", 0, None)
        _check_frac(self, "min_alnum_frac", 0.0, 1.0)
        _check_frac(self, "max_dup_line_frac", 0.0, 1.0)
        _check_int(self, "shingle_size", 1, 64)
        _check_frac(self, "jaccard_threshold", 0.0, 1.0, open_low=True)
        _check_int(self, "num_perm", 16, 512)
        _check_frac(self, "val_fraction", 0.0, 0.5, open_low=True)
        _check_int(self, "shard_tokens", 1024, None)
        _check_frac(self, "max_malformed_frac", 0.0, 1.0)
        _check_int(self, "batch_docs", 1, 1 << 20)
        _check_int(self, "seed", 0, (1 << 32) - 1)
        for name in ("text_field", "parquet_column"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise invalid(name, getattr(self, name), "a non-empty string")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["include"], d["exclude"] = list(self.include), list(self.exclude)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PrepareConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise invalid("prepare config key", unknown[0], f"one of {sorted(known)}")
        return cls(**d)


def _check_int(cfg: PrepareConfig, name: str, lo: int, hi: int | None) -> None:
    v = getattr(cfg, name)
    ok = isinstance(v, int) and not isinstance(v, bool) and v >= lo and (hi is None or v <= hi)
    if not ok:
        rng = f"an integer in [{lo}, {hi}]" if hi is not None else f"an integer >= {lo}"
        raise invalid(name, v, rng)


def _check_frac(
    cfg: PrepareConfig, name: str, lo: float, hi: float, open_low: bool = False
) -> None:
    v = getattr(cfg, name)
    ok = isinstance(v, int | float) and not isinstance(v, bool)
    ok = ok and (v > lo if open_low else v >= lo) and v <= hi
    if not ok:
        raise invalid(name, v, f"a number in {'(' if open_low else '['}{lo}, {hi}]")
