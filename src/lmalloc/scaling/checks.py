"""Input checks shared by the fitters: enough points, no degenerate columns, extrapolation.

A fit that cannot work raises :class:`lmalloc.errors.UserError` saying what is missing and how
much more is needed; a fit that works but is asked about a compute far outside its data warns
with :class:`ExtrapolationWarning` (a prediction, not a refusal).
"""

from __future__ import annotations

import warnings

import numpy as np
from numpy.typing import NDArray

from lmalloc.errors import UserError

MAX_EXTRAPOLATION = 1e3
"""How far (as a factor in compute) a target may lie beyond the runs before we warn.

Chinchilla-style studies routinely extrapolate one to two orders of magnitude; beyond three the
fitted exponents' uncertainty dominates and the interval, not the point, is the answer.
"""


class ExtrapolationWarning(UserWarning):
    """A prediction was asked for far outside the range of the fitted runs."""


def require_positive_finite(name: str, values: NDArray[np.float64]) -> None:
    """Raise if any value is non-finite or not strictly positive (logs are taken of all)."""
    bad = np.flatnonzero(~np.isfinite(values) | (values <= 0))
    if bad.size:
        i = int(bad[0])
        raise UserError(
            f"{name} must be positive and finite for a scaling fit; entry {i} is {values[i]!r}"
            f" ({bad.size} bad value(s) in all)"
        )


def require_varied(
    name: str, values: NDArray[np.float64], param: str, min_distinct: int = 3
) -> None:
    """Raise if a column has fewer than ``min_distinct`` distinct values (cannot fit ``param``)."""
    distinct = np.unique(values).size
    if distinct == 1:
        raise UserError(
            f"all {name} values are equal ({values[0]:.4g}): cannot fit {param}, which needs "
            f"runs at {min_distinct} or more different {name}"
        )
    if distinct < min_distinct:
        raise UserError(
            f"only {distinct} distinct {name} values: fitting {param} needs at least "
            f"{min_distinct}; add runs at {min_distinct - distinct} more {name} value(s)"
        )


def require_points(count: int, needed: int, what: str) -> None:
    """Raise if ``count`` < ``needed``, saying how many more runs are required."""
    if count < needed:
        raise UserError(
            f"{what} needs at least {needed} distinct runs; got {count}: add {needed - count} more"
        )


def warn_extrapolation(
    target: float,
    low: float,
    high: float,
    what: str = "target compute",
    limit: float = MAX_EXTRAPOLATION,
) -> float:
    """Warn when ``target`` lies more than ``limit``× outside ``[low, high]``; return the factor.

    The factor is ``target / high`` above the data, ``low / target`` below it, 1 inside.
    """
    factor = target / high if target > high else (low / target if target < low else 1.0)
    if factor > limit:
        where = "beyond the largest" if target > high else "below the smallest"
        edge = high if target > high else low
        warnings.warn(
            f"{what} {target:.3g} is {factor:.3g}x {where} run ({edge:.3g});"
            " the prediction is an extrapolation, trust its interval rather than its value",
            ExtrapolationWarning,
            stacklevel=3,
        )
    return float(factor)
