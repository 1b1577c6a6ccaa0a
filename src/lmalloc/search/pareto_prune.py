"""Pruning in multi-objective (Pareto) studies, which Optuna does not do.

Optuna's ``trial.report`` raises in a multi-objective study (optuna#3450), so a Pareto search
would train every trial to the end. Here the objective layer prunes instead, by a
successive-halving rule generalised to two objectives (loss, cost):

* **Rungs** sit at the fractions ``η^-k`` of a trial's token budget (``η = 3``; ``k = 1, 2,
  3``: 1/3, 1/9, 1/27). At the first evaluation at or after a rung a trial records its loss
  there (user attribute ``"rungs"``, beside its cost: the second objective, known before
  training from the configuration — FLOPs, peak memory or parameters — so it is the same at
  every fidelity).
* **Rule**: at a rung reached by ``n`` trials (itself included; trials still running count
  with what they recorded), a trial is pruned when ``n ≥ η + 1`` and it is *dominated at that
  fidelity* by at least ``max(1, ⌊n/η⌋)`` of them — dominated meaning another trial has a
  loss and a cost both no worse, one of them better.

With one objective's worth of information (all costs equal) this is ASHA: a trial is stopped
when ``⌊n/η⌋`` trials are better at the rung, i.e. when it is not in the top ``1/η``. A trial
that nobody dominates at the rung — on the rung's own Pareto front — is never stopped there,
so a trial whose learning curve keeps its rank (the planted case of the tests) and that ends
on the front is never pruned. The rule cannot know the future either: a trial dominated early
that would have caught up late is lost, as under ASHA.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

ETA = 3
RUNG_LEVELS = 3
RUNG_ATTR = "rungs"
COST_ATTR = "pareto_cost"


def rung_tokens(max_tokens: int, eta: int = ETA, levels: int = RUNG_LEVELS) -> list[int]:
    """Token counts of the rungs, smallest first (``max_tokens · η^-k``, k = levels … 1)."""
    return sorted({max(1, int(max_tokens / eta**k)) for k in range(1, levels + 1)})


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """``a`` is no worse than ``b`` in every objective and better in one (minimising)."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(
        x < y for x, y in zip(a, b, strict=True))


def should_prune(mine: Sequence[float], others: Iterable[Sequence[float]],
                 eta: int = ETA) -> bool:
    """The rule of the module docstring: ``mine`` = (loss at the rung, cost); ``others`` =
    the other trials' points at the same rung."""
    peers = [p for p in others if all(math.isfinite(v) for v in p)]
    n = len(peers) + 1
    if n < eta + 1:
        return False
    dominated_by = sum(dominates(p, mine) for p in peers)
    return dominated_by >= max(1, n // eta)


def pareto_front(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the non-dominated points."""
    return [i for i, p in enumerate(points)
            if not any(dominates(q, p) for j, q in enumerate(points) if j != i)]


def hypervolume_2d(points: Iterable[Sequence[float]], ref: Sequence[float]) -> float:
    """Area dominated by ``points`` and bounded by ``ref`` (both objectives minimised)."""
    inside = sorted((float(a), float(b)) for a, b in points if a < ref[0] and b < ref[1])
    area, best_b = 0.0, float(ref[1])
    for a, b in inside:  # by the first objective; each point adds the strip it improves
        if b < best_b:
            area += (ref[0] - a) * (best_b - b)
            best_b = b
    return area
