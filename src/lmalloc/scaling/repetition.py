"""Data-constrained scaling: what repeated tokens are worth (Muennighoff et al. 2023).

Training ``D`` tokens drawn from ``U`` unique ones repeats the data ``R = D / U - 1`` times
beyond the first epoch. Muennighoff et al. 2023 ("Scaling Data-Constrained Language Models",
arXiv:2305.16264, eq. 5) fit the value of repeated data as an exponentially decaying return:
the loss behaves as if the model had seen

    D' = U + U R* (1 - exp(-R / R*)),    R* = 15.4 (their fitted R*_D),

unique tokens. A few epochs are worth almost as much as fresh data (4 epochs: D' = 0.93 D);
beyond about R* repetitions extra passes add almost nothing (D' ≤ U (1 + R*)). A law fitted on
unique data (the ladder's runs see each token at most once or so) then predicts
``L(N, D')`` for a run that repeats, so a data-constrained plan prefers a larger model and
fewer passes.

>>> round(effective_tokens(4e6, 1e6) / 4e6, 2)
0.93
>>> effective_tokens(5e5, 1e6)
500000.0
"""

from __future__ import annotations

import math

from lmalloc.errors import invalid

R_STAR_D = 15.4
"""Muennighoff et al. 2023's fitted decay constant for repeated tokens (R*_D)."""
MANY_EPOCHS = 4.0
"""Beyond this many passes repeated data is clearly worth less than fresh (Muennighoff et al.
2023, Fig. 3: up to ~4 epochs the loss is close to unique data)."""


def effective_tokens(D: float, unique: float, r_star: float = R_STAR_D) -> float:
    """``D'``: the unique-token equivalent of training ``D`` tokens from ``unique`` ones."""
    if not (unique > 0 and math.isfinite(unique)):
        raise invalid("unique tokens", unique, "a positive number of tokens")
    if not r_star > 0:
        raise invalid("r_star", r_star, "a positive decay constant")
    if D <= unique:
        return float(D)
    R = D / unique - 1.0
    return float(unique + unique * r_star * (1.0 - math.exp(-R / r_star)))


def epochs(D: float, unique: float) -> float:
    """Passes over the unique tokens (``D / U``)."""
    if not unique > 0:
        raise invalid("unique tokens", unique, "a positive number of tokens")
    return float(D / unique)
