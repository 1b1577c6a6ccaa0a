"""Exact and near-duplicate removal.

Exact duplicates: a BLAKE2b digest of the cleaned (NFC, whitespace-normalised) text.

Near duplicates: MinHash signatures of word shingles, indexed with ``datasketch``'s
:class:`~datasketch.MinHashLSH` (Broder 1997, "On the resemblance and containment of
documents"; Leskovec, Rajaraman & Ullman, *Mining of Massive Datasets*, ch. 3). A document is a
near duplicate when an LSH candidate already kept has an estimated Jaccard similarity at or
above the threshold; the first document seen is kept, so results follow the (sorted) input
order and are deterministic.

Signatures are computed with numpy instead of one Python hash call per shingle (which is what
makes naive MinHash slow): words are hashed with tabulation hashing over their UTF-8 bytes
(``np.bitwise_xor.reduceat``), ``k`` consecutive word hashes are mixed into a shingle hash, and
the ``num_perm`` permutations are multiply-shift hashes ``(a * x + b) >> 32`` (Dietzfelbinger
et al. 1997), evaluated as one (shingles × permutations) array per block. Memory is the
signatures (``num_perm`` × 8 bytes per kept document), never the text.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
from datasketch import LeanMinHash, MinHashLSH

_MAX_POS = 32  # tabulation table rows: byte position inside a word, modulo this
_BLOCK = 16384  # shingles per block of the (shingles × permutations) array

# Bytes that belong to words: ASCII letters and digits and every non-ASCII byte (so words in
# any script stay whole); everything else separates words.
_IS_WORD = np.zeros(256, dtype=bool)
for _c in b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_":
    _IS_WORD[_c] = True
_IS_WORD[128:] = True


def exact_key(text: str) -> bytes:
    """The exact-duplicate key of a cleaned document."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def word_hashes(text: str, table: np.ndarray) -> np.ndarray:
    """A 64-bit hash per word of ``text`` (lower-cased), by tabulation hashing; uint64 (W,)."""
    b = np.frombuffer(text.lower().encode("utf-8"), dtype=np.uint8)
    is_word = _IS_WORD[b]
    pos = np.flatnonzero(is_word)
    if pos.size == 0:
        return np.zeros(0, dtype=np.uint64)
    prev = np.empty_like(is_word)
    prev[0], prev[1:] = False, is_word[:-1]
    is_start = ~prev[pos]  # (n_word_bytes,) True at the first byte of each word
    word_id = np.cumsum(is_start) - 1
    first = np.flatnonzero(is_start)
    offset = (pos - pos[first][word_id]) % _MAX_POS
    vals = table[offset, b[pos]]
    return np.bitwise_xor.reduceat(vals, first)


class MinHasher:
    """Numpy MinHash over word ``shingle_size``-grams; signatures are uint64 (num_perm,)."""

    def __init__(self, num_perm: int, shingle_size: int, seed: int = 0) -> None:
        rng = np.random.default_rng([seed, 0x6D696E68])
        hi = np.iinfo(np.uint64).max
        self.table = rng.integers(0, hi, size=(_MAX_POS, 256), dtype=np.uint64, endpoint=True)
        self.mult = rng.integers(0, hi, size=shingle_size, dtype=np.uint64, endpoint=True) | 1
        self.a = rng.integers(0, hi, size=num_perm, dtype=np.uint64, endpoint=True) | 1
        self.b = rng.integers(0, hi, size=num_perm, dtype=np.uint64, endpoint=True)
        self.num_perm, self.k = num_perm, shingle_size

    def shingles(self, text: str) -> np.ndarray:
        """Hashes of every run of ``k`` consecutive words (one shingle if fewer words)."""
        w = word_hashes(text, self.table)
        n = max(len(w) - self.k + 1, 1)
        if len(w) == 0:
            return np.zeros(1, dtype=np.uint64)
        acc = np.zeros(n, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for j in range(min(self.k, len(w))):
                acc += w[j : j + n] * self.mult[j]  # wraps mod 2**64, as intended
            acc ^= acc >> np.uint64(31)
        return acc

    def signature(self, text: str) -> np.ndarray:
        """The MinHash signature of ``text``: uint32 (num_perm,)."""
        x = self.shingles(text)
        sig = np.full(self.num_perm, np.iinfo(np.uint64).max, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for s in range(0, len(x), _BLOCK):
                blk = x[s : s + _BLOCK, None]  # (S, 1)
                h = (blk * self.a + self.b) >> np.uint64(32)  # (S, P) multiply-shift
                np.minimum(sig, h.min(axis=0), out=sig)
        return sig.astype(np.uint32)


def jaccard_estimate(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a == b))


class Deduplicator:
    """Stateful exact + near-duplicate filter over a stream of documents.

    ``check(text)`` returns ``None`` to keep the document (and remembers it), or the name of
    the filter that removed it: ``"exact_duplicate"`` or ``"near_duplicate"``.
    """

    def __init__(
        self, exact: bool = True, near: bool = True, num_perm: int = 64, shingle_size: int = 5,
        threshold: float = 0.8, seed: int = 0,
    ) -> None:
        self.exact, self.near, self.threshold = exact, near, threshold
        self.seen: set[bytes] = set()
        self.hasher = MinHasher(num_perm, shingle_size, seed)
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self.signatures: list[np.ndarray] = []
        self.seed = seed

    def check(self, text: str) -> str | None:
        if self.exact:
            key = exact_key(text)
            if key in self.seen:
                return "exact_duplicate"
            self.seen.add(key)
        if self.near:
            sig = self.hasher.signature(text)
            # 32-bit values from our own permutations; "affine32" is datasketch's label for
            # 32-bit signatures and only guards against mixing schemes in one index.
            mh = LeanMinHash(seed=self.seed, hashvalues=sig, scheme="affine32")
            for cand in self.lsh.query(mh):
                if jaccard_estimate(sig, self.signatures[cand]) >= self.threshold:
                    return "near_duplicate"
            self.lsh.insert(len(self.signatures), mh, check_duplication=False)
            self.signatures.append(sig)
        return None

    def stats(self) -> dict[str, Any]:
        return {"num_perm": self.hasher.num_perm, "shingle_size": self.hasher.k,
                "threshold": self.threshold, "indexed": len(self.signatures)}
