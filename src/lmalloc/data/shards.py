"""Token shards on disk and the loader that reads them.

A prepared data folder holds ``data.json`` (the description below), ``tokenizer.json`` and
``shards/<split>_<k>.bin``: flat little-endian arrays of token ids (``uint16``, or ``uint32``
when the vocabulary needs it), documents separated by the end-of-text id. Shards are
memory-mapped, never read whole.

The loader is a pure function of ``(seed, step, rank)``: the batch at a step does not depend
on what was read before, so a resumed run reads exactly what an uninterrupted one would, and
data-parallel ranks (or loader worker processes) draw disjoint streams without talking.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from lmalloc.errors import UserError
from lmalloc.rundir import atomic_write_bytes, atomic_write_json, read_json, safe_join, sha256_file

DATA_JSON = "data.json"
FORMAT_VERSION = 1


def token_dtype(vocab_size: int) -> np.dtype[Any]:
    """The smallest unsigned dtype that holds every id of the vocabulary."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def write_shard(path: Path, tokens: np.ndarray, dtype: np.dtype[Any]) -> str:
    """Write one shard atomically; returns its sha256 (what ``data.json`` records)."""
    data = np.ascontiguousarray(tokens, dtype=dtype.newbyteorder("<")).tobytes()
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


_VERIFIED: set[tuple[str, int, int, int, int, str]] = set()
_VERIFIED_LOCK = threading.Lock()


def verify_shard(path: Path, expected_sha256: str) -> None:
    """Check a shard against the sha256 that ``data.json`` recorded for it.

    Hashing is done once per process per file version: the result is cached under the file's
    identity and stat (device, inode, size, mtime), so a search that opens the split for every
    trial hashes each shard once (the default corpus, one 6.5 MB train shard: 10-100 ms on a
    busy 2-core machine, about 30 ms typical; later opens cost nothing extra), while a file
    replaced or rewritten in between is hashed again.
    """
    st = os.stat(path)
    key = (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, expected_sha256)
    with _VERIFIED_LOCK:
        if key in _VERIFIED:
            return
    if sha256_file(path) != expected_sha256:
        raise UserError(
            f"shard {path} does not match the sha256 recorded in {path.parent.parent / DATA_JSON}"
            ": it was altered or corrupted on disk; rerun `lmalloc prepare`"
        )
    with _VERIFIED_LOCK:
        _VERIFIED.add(key)


def write_data_json(data_dir: Path, meta: dict[str, Any]) -> None:
    atomic_write_json(Path(data_dir) / DATA_JSON, {"format_version": FORMAT_VERSION, **meta})


@dataclass
class SplitTokens:
    """The tokens of one split (``train`` or ``val``), as one virtual array over its shards."""

    name: str
    shards: list[np.memmap]
    num_bytes: int  # UTF-8 bytes of the text behind these tokens (for bits per byte)

    def __post_init__(self) -> None:
        self.lengths = np.array([len(s) for s in self.shards], dtype=np.int64)
        self.num_tokens = int(self.lengths.sum())

    def _starts_valid(self, window: int) -> np.ndarray:
        """Per shard, how many window starts fit wholly inside it."""
        return np.maximum(self.lengths - window + 1, 0)

    def window_batch(
        self, step: int, batch_size: int, seq_len: int, seed: int, rank: int = 0,
        world_size: int = 1,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Random contiguous windows: inputs ``x`` and next-token targets ``y``, both (B, T).

        Deterministic in ``(seed, step, rank)``; ranks draw independent streams. No window
        crosses the end of a shard (so never the end of the split).
        """
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of {world_size}")
        window = seq_len + 1
        starts_per_shard = self._starts_valid(window)
        total = int(starts_per_shard.sum())
        if total == 0:
            raise UserError(
                f"the {self.name} split has {self.num_tokens} tokens, fewer than one window of "
                f"{window}: use a shorter seq_len or a larger corpus"
            )
        rng = np.random.default_rng([seed, step, rank, world_size])
        flat = rng.integers(0, total, size=batch_size)
        bounds = np.cumsum(starts_per_shard)
        shard_idx = np.searchsorted(bounds, flat, side="right")
        offsets = flat - (bounds[shard_idx] - starts_per_shard[shard_idx])
        buf = np.empty((batch_size, window), dtype=np.int64)
        for i, (s, o) in enumerate(zip(shard_idx, offsets, strict=True)):
            buf[i] = self.shards[s][o : o + window]
        return buf[:, :-1], buf[:, 1:]

    def sequential_batches(
        self, batch_size: int, seq_len: int, rank: int = 0, world_size: int = 1,
        max_tokens: int | None = None,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Non-overlapping windows in order, for evaluation; window ``i`` goes to rank
        ``i % world_size``. Covers every token that fits in a whole window (at most
        ``max_tokens`` predicted tokens in all ranks together)."""
        window = seq_len + 1
        spans = [
            (s, o) for s, n in enumerate(self.lengths) for o in range(0, n - window + 1, seq_len)
        ]
        if max_tokens is not None:
            spans = spans[: max(1, max_tokens // seq_len)]
        mine = spans[rank::world_size]
        for i in range(0, len(mine), batch_size):
            chunk = mine[i : i + batch_size]
            buf = np.stack(
                [np.asarray(self.shards[s][o : o + window], dtype=np.int64) for s, o in chunk]
            )
            yield buf[:, :-1], buf[:, 1:]


class TokenSplit(Protocol):
    """What training and evaluation read from a split. :class:`SplitTokens` is the on-disk one;
    a fine-tuning task provides its own (examples padded to ``seq_len``, targets ``-1`` where
    no loss is taken), so the one :class:`~lmalloc.train.Trainer` trains on both."""

    num_tokens: int
    num_bytes: int

    def window_batch(self, step: int, batch_size: int, seq_len: int, seed: int, rank: int = 0,
                     world_size: int = 1) -> tuple[np.ndarray, np.ndarray]: ...

    def sequential_batches(self, batch_size: int, seq_len: int, rank: int = 0,
                           world_size: int = 1, max_tokens: int | None = None,
                           ) -> Iterator[tuple[np.ndarray, np.ndarray]]: ...


class TokenSource(Protocol):
    """A source of splits: :class:`TokenData` (a prepared folder) or a task's examples."""

    dir: Path
    vocab_size: int

    def split(self, name: str) -> TokenSplit: ...


class TokenData:
    """A prepared data folder: its description, tokenizer path and splits."""

    def __init__(self, data_dir: str | Path) -> None:
        self.dir = Path(data_dir)
        if not (self.dir / DATA_JSON).exists():
            raise UserError(
                f"{self.dir} is not a prepared data folder (no {DATA_JSON}); run "
                "`lmalloc prepare` first"
            )
        self.meta: dict[str, Any] = read_json(self.dir / DATA_JSON, "data description")
        if self.meta.get("format_version") != FORMAT_VERSION:
            raise UserError(
                f"{self.dir / DATA_JSON} has format version {self.meta.get('format_version')!r}, "
                f"this lmalloc reads {FORMAT_VERSION}: rerun `lmalloc prepare`"
            )
        self.vocab_size = int(self.meta["vocab_size"])
        self.eot_id = int(self.meta["eot_id"])
        self.dtype = np.dtype(self.meta["dtype"]).newbyteorder("<")

    @property
    def tokenizer_path(self) -> Path:
        return self.dir / "tokenizer.json"

    def split(self, name: str) -> SplitTokens:
        info = self.meta["splits"].get(name)
        if info is None:
            have = sorted(self.meta["splits"])
            raise UserError(f"{self.dir} has no {name!r} split (has {have})")
        shards = []
        for shard in info["shards"]:
            path = safe_join(self.dir, shard["path"])
            if not path.exists():
                raise UserError(f"shard {path} is missing; rerun `lmalloc prepare`")
            expected = int(shard["tokens"]) * self.dtype.itemsize
            if path.stat().st_size != expected:
                raise UserError(
                    f"shard {path} has {path.stat().st_size} bytes, {expected} expected: it is "
                    "truncated or altered; rerun `lmalloc prepare`"
                )
            if shard.get("sha256"):  # folders written before checksums were recorded lack it
                verify_shard(path, str(shard["sha256"]))
            if expected:
                shards.append(np.memmap(path, dtype=self.dtype, mode="r"))
        return SplitTokens(name=name, shards=shards, num_bytes=int(info["bytes"]))


def write_token_splits(
    data_dir: Path, splits: dict[str, Sequence[np.ndarray]], *, vocab_size: int, eot_id: int,
    split_bytes: dict[str, int], extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write shards and ``data.json`` for already-tokenized splits (one array per shard).

    The prepare pipeline streams into shards itself; this is the direct path for callers (and
    tests) that already hold token arrays.
    """
    dtype = token_dtype(vocab_size)
    meta: dict[str, Any] = {"vocab_size": vocab_size, "eot_id": eot_id, "dtype": dtype.name,
                            "splits": {}, **(extra or {})}
    for name, arrays in splits.items():
        shards: list[dict[str, Any]] = []
        for k, arr in enumerate(arrays):
            rel = f"shards/{name}_{k:05d}.bin"
            digest = write_shard(Path(data_dir) / rel, arr, dtype)
            shards.append({"path": rel, "tokens": int(len(arr)), "sha256": digest})
        meta["splits"][name] = {
            "shards": shards, "tokens": sum(s["tokens"] for s in shards),
            "bytes": int(split_bytes[name]),
        }
    write_data_json(Path(data_dir), meta)
    return meta
