"""ASHA that promotes ties (pruner ``asha-ties``).

Asynchronous successive halving stops a trial at a rung unless it is in the best ``1/η`` of
the trials that reached that rung. Once a sampler has converged, its trials are near copies of
each other, and that rank rule still stops ``1 − 1/η`` of them, whatever their values. On the
search benchmark's two real tasks (24 full trials' FLOPs per study, 5 seeds each), ``dqn``
under ASHA completed 2–9 of its 71–151 trials; 5–56 of each study's stopped trials were within
0.5 % of their rung's cut-off.

This pruner asks the same question of Optuna's :class:`~optuna.pruners.SuccessiveHalvingPruner`
(the rungs, the promotion rule and the bookkeeping are Optuna's). It overrules a stop when the
trial's value lies within ``tolerance`` (relative) of the rung's promotion cut-off: a gap that
small is not evidence that the trial is worse. A trial so spared counts as promoted, and meets
the next rung's cut-off there.
"""

from __future__ import annotations

import math

from optuna.pruners import BasePruner, SuccessiveHalvingPruner
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial

TIE_TOLERANCE = 0.005
"""Relative gap to the cut-off that still counts as a tie: 0.5 %, half the "within 1 %" that
the search benchmark counts as having found the optimum."""


def _rung_key(rung: int) -> str:
    """The system attribute in which Optuna's ASHA records a trial's value at ``rung``."""
    return f"completed_rung_{rung}"


class TieTolerantHalving(BasePruner):
    """ASHA (Optuna's) whose stops are overruled for ties with the rung's cut-off."""

    def __init__(self, reduction_factor: int = 3, tolerance: float = TIE_TOLERANCE) -> None:
        if not tolerance >= 0:
            raise ValueError(f"tolerance must be >= 0, got {tolerance}")
        self._asha = SuccessiveHalvingPruner(reduction_factor=reduction_factor)
        self._eta = reduction_factor
        self.tolerance = tolerance

    def prune(self, study: Study, trial: FrozenTrial) -> bool:
        if not self._asha.prune(study, trial):
            return False
        step = trial.last_step
        value = trial.intermediate_values[step] if step is not None else math.nan
        if not math.isfinite(value):
            return True
        # the rung it was just stopped at: ASHA recorded its value there
        now = study._storage.get_trial(trial._trial_id)
        rung = -1
        while _rung_key(rung + 1) in now.system_attrs:
            rung += 1
        if rung < 0:
            return True
        key = _rung_key(rung)
        values = [t.system_attrs[key] for t in study.get_trials(deepcopy=False)
                  if key in t.system_attrs]
        return not self.is_tie(value, values, study.direction)

    def is_tie(self, value: float, rung_values: list[float], direction: StudyDirection) -> bool:
        """Whether ``value`` is within the tolerance of the promotion cut-off of a rung whose
        recorded values are ``rung_values`` (``value`` among them)."""
        ordered = sorted(rung_values, reverse=direction == StudyDirection.MAXIMIZE)
        cut = ordered[max(0, len(ordered) // self._eta - 1)]
        gap = (cut - value) if direction == StudyDirection.MAXIMIZE else (value - cut)
        return gap <= self.tolerance * abs(cut)
