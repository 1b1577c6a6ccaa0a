"""Each cleaning rule and quality filter, alone and through the Cleaner's counts."""

from __future__ import annotations

import unicodedata

import pytest

from lmalloc.data.clean import (
    Cleaner,
    alnum_fraction,
    dup_line_fraction,
    normalize_unicode,
    normalize_whitespace,
    strip_control,
)
from lmalloc.data.config import PrepareConfig


def test_nfc_composes_combining_marks() -> None:
    decomposed = "Cafe\u0301"
    out = normalize_unicode(decomposed)
    assert out == "Caf\u00e9" and unicodedata.is_normalized("NFC", out)


def test_control_chars_removed_but_tab_newline_kept() -> None:
    assert strip_control("a\x00b\x07c\td\ne\x7f\x85f") == "abc\td\nef"


def test_crlf_and_cr_become_newlines() -> None:
    assert strip_control("a\r\nb\rc") == "a\nb\nc"


def test_whitespace_keeps_indentation_strips_trailing_and_squeezes_blank_lines() -> None:
    code = "def f():  \n    return 1\t\n\n\n\n\n\nx = 2\n\n"
    assert normalize_whitespace(code) == "def f():\n    return 1\n\n\nx = 2"


def test_alnum_fraction() -> None:
    assert alnum_fraction("ab cd") == 1.0
    assert alnum_fraction("a#$%") == 0.25
    assert alnum_fraction("   ") == 1.0


def test_dup_line_fraction() -> None:
    assert dup_line_fraction("a\nb\nc") == 0.0
    assert dup_line_fraction("x\nx\nx\nx") == 0.75
    assert dup_line_fraction("a\n\n\nb") == 0.0  # blank lines are not duplicates


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("   \n\n ", "empty"),
        ("short", "min_chars"),
        ("#### $$$$ %%%% &&&& **** #### $$$$ %%%% &&&& ****", "min_alnum_frac"),
        ("same line here\n" * 10, "max_dup_line_frac"),
    ],
)
def test_filters_remove_and_count(text: str, reason: str) -> None:
    c = Cleaner(PrepareConfig(min_chars=20))
    assert c(text) is None
    assert c.removed[reason] == 1 and sum(c.removed.values()) == 1


def test_cleaner_keeps_good_text_and_counts_modifications() -> None:
    c = Cleaner(PrepareConfig(min_chars=5))
    out = c("Caf\u0065\u0301 is open   \r\nevery day of the week\x00")
    assert out == "Caf\u00e9 is open\nevery day of the week"
    assert c.modified["normalize_unicode"] == 1
    assert c.modified["strip_control"] == 1
    assert c.modified["normalize_whitespace"] == 1


def test_rules_can_be_switched_off() -> None:
    c = Cleaner(PrepareConfig(min_chars=1, strip_control=False, normalize_whitespace=False,
                              min_alnum_frac=0.0, max_dup_line_frac=1.0))
    assert c("x\x00  \nx\nx") == "x\x00  \nx\nx"
