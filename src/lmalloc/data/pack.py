"""Streaming token packing: documents in, fixed-size shard files out, hashed as written."""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

_LEN = struct.Struct("<Q")


class DocSpool:
    """A temporary file of length-prefixed UTF-8 documents: the kept corpus between passes.

    Holding the kept documents on disk (not in memory) is what lets the tokenizer pass and
    the encoding pass stream over them without re-reading and re-cleaning the sources.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._f: IO[bytes] | None = open(path, "wb")
        self.count = 0

    def append(self, text: str) -> None:
        assert self._f is not None
        data = text.encode("utf-8")
        self._f.write(_LEN.pack(len(data)))
        self._f.write(data)
        self.count += 1

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __iter__(self) -> Iterator[str]:
        self.close()
        with open(self.path, "rb", buffering=1 << 20) as f:
            while head := f.read(_LEN.size):
                (n,) = _LEN.unpack(head)
                yield f.read(n).decode("utf-8")

    def remove(self) -> None:
        self.close()
        os.unlink(self.path)


class ShardWriter:
    """Append token arrays to ``shards/<split>_<k>.bin``, starting a new shard every
    ``shard_tokens`` tokens; records each shard's token count and sha256."""

    def __init__(self, data_dir: Path, split: str, dtype: np.dtype[Any], shard_tokens: int):
        self.dir, self.split, self.shard_tokens = data_dir, split, shard_tokens
        self.dtype = dtype.newbyteorder("<")
        self.shards: list[dict[str, Any]] = []
        self.bytes = 0  # UTF-8 bytes of the documents behind the tokens
        self.documents = 0
        self._f: IO[bytes] | None = None
        self._hash = hashlib.sha256()
        self._n = 0

    def _open(self) -> None:
        rel = f"shards/{self.split}_{len(self.shards):05d}.bin"
        (self.dir / "shards").mkdir(parents=True, exist_ok=True)
        self._f = open(self.dir / rel, "wb")
        self._hash, self._n = hashlib.sha256(), 0
        self.shards.append({"path": rel, "tokens": 0})

    def _close(self) -> None:
        if self._f is not None:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            self._f = None
            self.shards[-1].update(tokens=self._n, sha256=self._hash.hexdigest())

    def write(self, tokens: np.ndarray, num_bytes: int) -> None:
        self.bytes += num_bytes
        self.documents += 1
        arr = np.ascontiguousarray(tokens, dtype=self.dtype)
        while arr.size:
            if self._f is None:
                self._open()
            take = min(arr.size, self.shard_tokens - self._n)
            data = arr[:take].tobytes()
            assert self._f is not None
            self._f.write(data)
            self._hash.update(data)
            self._n += take
            arr = arr[take:]
            if self._n >= self.shard_tokens:
                self._close()

    def finish(self) -> dict[str, Any]:
        self._close()
        return {"shards": self.shards, "tokens": sum(s["tokens"] for s in self.shards),
                "bytes": self.bytes, "documents": self.documents}
