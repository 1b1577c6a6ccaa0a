"""The progress display and the streaming shard writer / document spool."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from lmalloc.data.pack import DocSpool, ShardWriter
from lmalloc.data.progress import Progress


def test_progress_counts_and_can_be_disabled() -> None:
    for enabled in (True, False):
        with Progress("x", enabled) as bar:
            for _ in range(600):
                bar.advance(10)
        assert (bar.docs, bar.chars) == (600, 6000)


def test_spool_round_trips_unicode(tmp_path: Path) -> None:
    spool = DocSpool(tmp_path / "s")
    docs = ["a", "", "żółw 🐢\n\tx", "b" * 10000]
    for d in docs:
        spool.append(d)
    assert list(spool) == docs and list(spool) == docs and spool.count == 4
    spool.remove()
    assert not (tmp_path / "s").exists()


def test_shard_writer_splits_and_hashes(tmp_path: Path) -> None:
    w = ShardWriter(tmp_path, "train", np.dtype(np.uint16), shard_tokens=1024)
    arrays = [np.arange(700) for _ in range(3)]
    for a in arrays:
        w.write(a, num_bytes=5)
    info = w.finish()
    assert [s["tokens"] for s in info["shards"]] == [1024, 1024, 52]
    assert info["tokens"] == 2100 and info["bytes"] == 15 and info["documents"] == 3
    flat = np.concatenate([np.fromfile(tmp_path / s["path"], dtype="<u2")
                           for s in info["shards"]])
    assert np.array_equal(flat, np.concatenate(arrays))
    for s in info["shards"]:
        assert s["sha256"] == hashlib.sha256((tmp_path / s["path"]).read_bytes()).hexdigest()
