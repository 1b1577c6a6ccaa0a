"""Loader properties over write_token_splits: bounds, determinism, rank splitting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lmalloc.data.shards import TokenData, write_token_splits


@pytest.fixture
def data(tmp_path: Path) -> TokenData:
    shards = [np.arange(0, 100), np.arange(1000, 1037), np.arange(2000, 2300)]
    write_token_splits(tmp_path, {"train": shards, "val": [np.arange(50)]}, vocab_size=70000,
                       eot_id=0, split_bytes={"train": 1000, "val": 100})
    return TokenData(tmp_path)


def test_no_window_crosses_a_shard_end(data: TokenData) -> None:
    split = data.split("train")
    assert data.dtype.itemsize == 4  # vocab > 65536 needs uint32
    for step in range(50):
        x, y = split.window_batch(step, 16, 40, seed=3)
        window = np.concatenate([x, y[:, -1:]], axis=1)
        # Each shard is a run of consecutive ids: a window inside one shard steps by 1.
        assert (np.diff(window, axis=1) == 1).all()
        assert np.array_equal(x[:, 1:], y[:, :-1])


def test_deterministic_per_seed_and_step(data: TokenData) -> None:
    s = data.split("train")
    a, b = s.window_batch(7, 8, 16, seed=1), s.window_batch(7, 8, 16, seed=1)
    assert np.array_equal(a[0], b[0])
    assert not np.array_equal(a[0], s.window_batch(7, 8, 16, seed=2)[0])
    assert not np.array_equal(a[0], s.window_batch(8, 8, 16, seed=1)[0])


def test_ranks_draw_different_windows(data: TokenData) -> None:
    s = data.split("train")
    r0 = s.window_batch(0, 8, 16, seed=1, rank=0, world_size=2)[0]
    r1 = s.window_batch(0, 8, 16, seed=1, rank=1, world_size=2)[0]
    assert not np.array_equal(r0, r1)
    with pytest.raises(ValueError):
        s.window_batch(0, 8, 16, seed=1, rank=2, world_size=2)


def test_sequential_ranks_partition_the_windows(data: TokenData) -> None:
    s = data.split("train")
    whole = [tuple(r) for x, _ in s.sequential_batches(4, 16) for r in x.tolist()]
    parts = [[tuple(r) for x, _ in s.sequential_batches(4, 16, rank=k, world_size=3)
              for r in x.tolist()] for k in range(3)]
    assert sorted(sum(parts, [])) == sorted(whole)
    assert len(set(whole)) == len(whole) and all(parts)
    assert sum(len(p) for p in parts) == len(whole)
