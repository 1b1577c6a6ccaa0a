"""The train/val choice and encode batching of the prepare pipeline."""

from __future__ import annotations

from lmalloc.data.pipeline import _batches, _capped, _choose_val


def test_val_is_hash_share_never_empty_never_all() -> None:
    scores = [i / 100 for i in range(100)]
    assert _choose_val(scores, 0.05) == {0, 1, 2, 3, 4}
    assert _choose_val([0.9, 0.5, 0.7], 0.02) == {1}  # none below: the smallest goes to val
    assert _choose_val([0.01, 0.02], 0.5) == {0}  # all below: the largest stays in train


def test_batches_bounded_by_count_and_chars() -> None:
    docs = ["a" * 10] * 7 + ["b" * 100] + ["c"]
    out = list(_batches(iter(docs), 3, 50))
    assert [len(b) for b in out] == [3, 3, 2, 1]
    assert sum(out, []) == docs
    big = list(_batches(iter(["x" * 60, "y", "z"]), 10, 50))
    assert big == [["x" * 60], ["y", "z"]]


def test_tokenizer_training_cap_counts_utf8_bytes() -> None:
    docs = ["ab", "éé", "cd", "ef"]  # 2 + 4 + 2 + 2 bytes
    assert list(_capped(iter(docs), 6)) == ["ab", "éé"]
    assert list(_capped(iter(docs), 100)) == docs
