"""A point estimate with its bootstrap (or t) interval, the unit every fit reports in.

Every quantity a fit returns to the planner (a parameter, a prediction, N*, D*) is an
:class:`Estimate`: the value from the full-data fit plus a two-sided interval at ``level``.
Intervals are *percentile* intervals of the bootstrap distribution (Efron & Tibshirani 1993,
§13.3), the method of Besiroglu et al. 2024 (arXiv:2404.10102) for the Chinchilla fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lmalloc.errors import invalid

FloatArray = NDArray[np.float64]

DEFAULT_LEVEL = 0.9
"""Nominal coverage of every interval unless the caller asks otherwise.

0.9 rather than 0.95: with 200 bootstrap resamples the 5 % tails hold 10 resamples each, a
stabler percentile than the 5 resamples a 95 % interval rests on.
"""


def check_level(level: float) -> float:
    """Validate an interval level (a probability strictly between 0 and 1)."""
    if not 0.0 < float(level) < 1.0:
        raise invalid("level", level, "a coverage probability strictly between 0 and 1")
    return float(level)


@dataclass(frozen=True)
class Estimate:
    """A value and its two-sided interval ``[low, high]`` at nominal coverage ``level``."""

    value: float
    low: float
    high: float
    level: float

    def contains(self, x: float) -> bool:
        """Whether ``x`` lies inside the interval (ends included)."""
        return bool(self.low <= x <= self.high)

    def to_dict(self) -> dict[str, float | None]:
        """JSON-ready; a missing bound (no bootstrap) is ``None``, not the invalid-JSON NaN."""
        return {
            "value": self.value,
            "low": None if np.isnan(self.low) else self.low,
            "high": None if np.isnan(self.high) else self.high,
            "level": self.level,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Estimate:
        def num(v: Any) -> float:
            return float("nan") if v is None else float(v)

        return cls(num(d["value"]), num(d["low"]), num(d["high"]), float(d["level"]))

    def __str__(self) -> str:
        return f"{self.value:.4g} [{self.low:.4g}, {self.high:.4g}]"


def percentile_interval(samples: FloatArray, level: float) -> tuple[FloatArray, FloatArray]:
    """Percentile interval of bootstrap ``samples`` along axis 0, ignoring NaN (failed fits).

    >>> lo, hi = percentile_interval(np.arange(101.0)[:, None], 0.9)
    >>> round(float(lo[0]), 6), round(float(hi[0]), 6)
    (5.0, 95.0)
    """
    tail = 100.0 * (1.0 - level) / 2.0
    q = np.nanpercentile(samples, [tail, 100.0 - tail], axis=0)
    return np.asarray(q[0], dtype=np.float64), np.asarray(q[1], dtype=np.float64)


def estimate(value: float, samples: FloatArray, level: float) -> Estimate:
    """An :class:`Estimate` from a point value and a 1-D array of bootstrap replicates."""
    if samples.size == 0 or np.all(np.isnan(samples)):
        return Estimate(float(value), float("nan"), float("nan"), level)
    lo, hi = percentile_interval(np.asarray(samples, dtype=np.float64), level)
    return Estimate(float(value), float(lo), float(hi), level)
