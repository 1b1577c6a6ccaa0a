"""Exact and near-duplicate removal: planted near duplicates go, distinct documents stay."""

from __future__ import annotations

import random

import numpy as np

from lmalloc.data.dedup import Deduplicator, MinHasher, jaccard_estimate, word_hashes


def _doc(rng: random.Random, n: int = 300) -> str:
    vocab = [f"w{i}" for i in range(2000)]
    return " ".join(rng.choice(vocab) for _ in range(n))


def _mutate(text: str, rng: random.Random, share: float) -> str:
    words = text.split()
    for i in rng.sample(range(len(words)), int(share * len(words))):
        words[i] = "zz" + words[i]
    return " ".join(words)


def test_word_hashes_are_per_word_and_case_insensitive() -> None:
    t = MinHasher(64, 3).table
    a, b = word_hashes("Hello, world! hello", t), word_hashes("hello world", t)
    assert len(a) == 3 and a[0] == a[2] == b[0] and a[1] == b[1] and a[0] != a[1]
    assert len(word_hashes(" ... ", t)) == 0


def test_signature_estimates_jaccard() -> None:
    rng = random.Random(0)
    h = MinHasher(256, 1)
    a = " ".join(f"w{i}" for i in range(1000))
    b = " ".join(f"w{i}" for i in range(500, 1500))  # true Jaccard 500/1500 = 1/3
    est = jaccard_estimate(h.signature(a), h.signature(b))
    assert abs(est - 1 / 3) < 0.1
    c = _doc(rng)
    assert jaccard_estimate(h.signature(c), h.signature(c)) == 1.0


def test_planted_near_duplicates_removed_distinct_kept() -> None:
    rng = random.Random(1)
    originals = [_doc(rng) for _ in range(30)]
    near = [_mutate(d, rng, 0.01) for d in originals[:10]]
    far = [_mutate(d, rng, 0.5) for d in originals[10:15]]
    d = Deduplicator(num_perm=128, shingle_size=5, threshold=0.8)
    verdicts = [d.check(t) for t in originals + near + far]
    assert verdicts[:30] == [None] * 30
    assert verdicts[30:40] == ["near_duplicate"] * 10
    assert verdicts[40:] == [None] * 5


def test_exact_duplicates_and_switches() -> None:
    d = Deduplicator(near=False)
    assert d.check("same text") is None and d.check("same text") == "exact_duplicate"
    off = Deduplicator(exact=False, near=False)
    assert off.check("a") is None and off.check("a") is None


def test_signature_deterministic_per_seed() -> None:
    t = _doc(random.Random(3))
    s1, s2 = MinHasher(64, 5, seed=1).signature(t), MinHasher(64, 5, seed=1).signature(t)
    s3 = MinHasher(64, 5, seed=2).signature(t)
    assert np.array_equal(s1, s2) and not np.array_equal(s1, s3)
    assert s1.dtype == np.uint32 and s1.shape == (64,)
