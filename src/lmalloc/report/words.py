"""Words shared by the summary, ``lmalloc status`` and ``lmalloc run``'s printout, so that each
says a result the same way: losses with their unit, and on which side of its interval a result
fell."""

from __future__ import annotations

LOSS_UNIT = "nats/token"  # the cross-entropy the trainer reports (natural log)
BPB_UNIT = "bits/byte"


def vs_interval(got: float, low: float | None, high: float | None) -> str:
    """``inside the interval`` or ``OUTSIDE the interval: 0.31 above its upper end (worse than
    predicted)``; a loss, so above is worse."""
    if low is not None and got < low:
        return f"OUTSIDE the interval: {low - got:.2f} below its lower end (better than predicted)"
    if high is not None and got > high:
        return f"OUTSIDE the interval: {got - high:.2f} above its upper end (worse than predicted)"
    return "inside the interval"


def count_text(x: float) -> str:
    """A count for reading: ``3.32M``, ``400k``, ``108``."""
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if x >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.3g}"
