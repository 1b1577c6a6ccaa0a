"""Muennighoff et al.'s effective data: exact below one epoch, decaying returns above."""

from __future__ import annotations

import math

import pytest

from lmalloc.errors import UserError
from lmalloc.scaling.repetition import R_STAR_D, effective_tokens, epochs


def test_unique_data_is_taken_at_face_value() -> None:
    assert effective_tokens(1e6, 1e6) == 1e6 and effective_tokens(3e5, 1e6) == 3e5


def test_repeats_are_worth_less_and_saturate() -> None:
    U = 1e6
    prev = U
    for e in (2, 4, 8, 16, 64):
        d = effective_tokens(e * U, U)
        assert prev < d < e * U  # more passes help, each less than fresh data
        prev = d
    assert effective_tokens(1e4 * U, U) == pytest.approx(U * (1 + R_STAR_D), rel=1e-6)
    # the formula itself: one repeat (2 epochs) is worth R*(1 - exp(-1/R*)) of a fresh epoch
    assert effective_tokens(2 * U, U) == pytest.approx(
        U + U * R_STAR_D * (1 - math.exp(-1 / R_STAR_D)))
    assert epochs(4e6, 1e6) == 4.0


def test_bad_unique_count() -> None:
    with pytest.raises(UserError):
        effective_tokens(1e6, 0.0)
