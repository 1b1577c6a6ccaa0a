"""Document cleaning and quality filters.

Cleaning rules rewrite a document; filters drop it. Each is a small pure function so each can
be tested alone, and :class:`Cleaner` applies the ones a :class:`PrepareConfig` switches on,
counting how many documents each rule changed and each filter removed (``data.json`` keeps the
counts). Whitespace normalisation keeps indentation, so source code stays valid.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

import numpy as np

from lmalloc.data.config import PrepareConfig

# C0 and C1 controls and DEL, except tab (\x09) and newline (\x0a); \r is handled first.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_TRAILING_CHARS = " \t\u00a0\u3000"
_BLANK_RUN = re.compile(r"\n{4,}")  # 4 newlines = 3 blank lines
_SPACE = re.compile(r"\s+")
_NOT_ALNUM = re.compile(r"[\W_]+")  # \w is letters, digits and underscore
_ASCII_SPACE = np.array([chr(i).isspace() for i in range(256)])
_ASCII_ALNUM = np.array([i < 128 and chr(i).isalnum() for i in range(256)])


def normalize_unicode(text: str) -> str:
    """Unicode NFC, so the same text always has the same code points (and hash)."""
    return text if unicodedata.is_normalized("NFC", text) else unicodedata.normalize("NFC", text)


def strip_control(text: str) -> str:
    """Turn CRLF / CR into LF and delete other control characters (tab and LF are kept)."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL.sub("", text)


def normalize_whitespace(text: str) -> str:
    """Strip trailing spaces, squeeze more than two blank lines into two, trim blank ends.

    Leading indentation is untouched: in code it carries meaning.
    """
    # Line-wise rstrip: several times faster than a multiline regex on space-heavy text.
    text = "\n".join(line.rstrip(_TRAILING_CHARS) for line in text.split("\n"))
    text = _BLANK_RUN.sub("\n\n\n", text)
    return text.strip("\n")


def alnum_fraction(text: str) -> float:
    """Share of non-whitespace characters that are letters or digits (1.0 for empty text)."""
    data = text.encode("utf-8")
    if len(data) == len(text):  # pure ASCII, the common case: count with a lookup table
        b = np.frombuffer(data, dtype=np.uint8)
        nonspace = int(np.count_nonzero(~_ASCII_SPACE[b]))
        alnum = int(np.count_nonzero(_ASCII_ALNUM[b]))
    else:
        nonspace = len(_SPACE.sub("", text))
        alnum = len(_NOT_ALNUM.sub("", text))
    return alnum / nonspace if nonspace else 1.0


def dup_line_fraction(text: str) -> float:
    """Share of non-blank lines that repeat an earlier line of the same document."""
    lines = [ln.strip() for ln in text.split("\n")]
    lines = [ln for ln in lines if ln]
    if not lines:
        return 0.0
    counts = Counter(lines)
    return (len(lines) - len(counts)) / len(lines)


class Cleaner:
    """Apply the configured rules and filters, counting what each did."""

    FILTERS = ("empty", "min_chars", "min_alnum_frac", "max_dup_line_frac")

    def __init__(self, cfg: PrepareConfig) -> None:
        self.cfg = cfg
        self.modified: Counter[str] = Counter()
        self.removed: Counter[str] = Counter({f: 0 for f in self.FILTERS})

    def _rule(self, name: str, fn: object, text: str) -> str:
        out: str = fn(text)  # type: ignore[operator]
        if out != text:
            self.modified[name] += 1
        return out

    def __call__(self, text: str) -> str | None:
        """The cleaned document, or None if a filter removed it (the first one that fails)."""
        cfg = self.cfg
        if cfg.normalize_unicode:
            text = self._rule("normalize_unicode", normalize_unicode, text)
        if cfg.strip_control:
            text = self._rule("strip_control", strip_control, text)
        if cfg.normalize_whitespace:
            text = self._rule("normalize_whitespace", normalize_whitespace, text)
        reason = self.reject_reason(text)
        if reason is not None:
            self.removed[reason] += 1
            return None
        return text

    def reject_reason(self, text: str) -> str | None:
        cfg = self.cfg
        if not text.strip():
            return "empty"
        if len(text) < cfg.min_chars:
            return "min_chars"
        if cfg.min_alnum_frac > 0 and alnum_fraction(text) < cfg.min_alnum_frac:
            return "min_alnum_frac"
        if cfg.max_dup_line_frac < 1 and dup_line_fraction(text) > cfg.max_dup_line_frac:
            return "max_dup_line_frac"
        return None
