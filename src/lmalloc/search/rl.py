"""What the reinforcement-learning samplers share: the history they learn from, the unit
space they act in, and the stateless sampler lifecycle.

The learning samplers (:class:`lmalloc.search.pg.PolicyGradientSampler`,
:class:`lmalloc.search.bandit.EpsilonGreedySampler` and :class:`lmalloc.search.dqn.DQNSampler`)
keep **no state that a restart would lose**: before every trial they rebuild what they learned
from the study's own trials, read back from storage, so they work with every Optuna storage
(in-memory, SQLite, RDB, journal), with many worker processes sharing one study, and after a
crash. Within one process they cache
what they can; the cache is only ever a speed-up, never a source of truth.

Lifecycle (Optuna's :class:`~optuna.samplers.BaseSampler`):

1. :meth:`before_trial` reads the finished trials (:func:`history`) and builds the model
   (a policy, or a value function) for this trial; it refuses multi-objective studies.
2. :meth:`infer_relative_search_space` returns ``{}`` and :meth:`sample_relative` nothing:
   every parameter, conditional or not, is drawn on its own in :meth:`sample_independent`
   from the model built in step 1, given the parameters this trial has chosen so far (the
   factorised pg and bandit ignore them; the DQN's state is made of them).
3. :meth:`after_trial` drops the model for the trial.

Randomness is a pure function of ``(seed, trial number, parameter name)``: the same seed gives
the same suggestions in a fresh study, and a fresh sampler instance (another process) that
reads the same study makes the same draw as the one that has been running all along.
"""

from __future__ import annotations

import abc
import math
import secrets
import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.samplers import BaseSampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from lmalloc.errors import UserError, invalid


@dataclass(frozen=True)
class Record:
    """One finished trial as the learners see it: ``loss`` is lower-is-better whatever the
    study's direction (the value itself when minimising, its negative when maximising)."""

    number: int
    params: dict[str, Any]
    distributions: dict[str, BaseDistribution]
    loss: float
    pruned: bool


def history(study: Study, include_pruned: bool = True) -> list[Record]:
    """The trials to learn from, in trial-number order (the same order in every process).

    COMPLETE trials count with their value. PRUNED trials count, when ``include_pruned``, with
    their last reported intermediate value: a lower-fidelity reward, typically worse than a
    completed trial's, which is what a pruner means by pruning it; without one they are
    skipped. FAILED trials are ignored (a crash says nothing about the objective).
    Non-finite values are ignored too.
    """
    states = (TrialState.COMPLETE, TrialState.PRUNED) if include_pruned else (TrialState.COMPLETE,)
    sign = -1.0 if study.direction == StudyDirection.MAXIMIZE else 1.0
    out = []
    for t in study.get_trials(deepcopy=False, states=states):
        if t.state == TrialState.COMPLETE:
            value = t.value
        elif t.intermediate_values:
            value = t.intermediate_values[max(t.intermediate_values)]
        else:
            continue
        if value is None or not math.isfinite(value):
            continue
        out.append(
            Record(t.number, t.params, t.distributions, sign * value, t.state == TrialState.PRUNED)
        )
    out.sort(key=lambda r: r.number)
    return out


def standardised_rewards(losses: Sequence[float], clip: float = 3.0) -> np.ndarray:
    """Reward = −loss standardised over ``losses`` (mean 0, std 1), clipped to ±``clip``.

    Standardising makes the learning rates independent of the objective's scale; clipping
    keeps one diverged trial from dominating an update.
    """
    y = -np.asarray(losses, dtype=float)
    std = y.std()
    z = (y - y.mean()) / (std if std > 0 else 1.0)
    clipped: np.ndarray = np.clip(z, -clip, clip)
    return clipped


# --- the unit space ---------------------------------------------------------------------------
# Numeric parameters are learned in [0, 1]: log space for log parameters, and for ints or
# stepped floats the range is padded by half a step on each side so that every allowed value
# owns an equal slice of [0, 1] (rounding a uniform draw gives a uniform value).


def _unit_bounds(dist: FloatDistribution | IntDistribution) -> tuple[float, float]:
    step = dist.step if dist.step is not None else 0.0
    lo, hi = dist.low - step / 2, dist.high + step / 2
    if dist.log:
        return math.log(max(lo, dist.low / 2)), math.log(hi)
    return lo, hi


def to_unit(dist: BaseDistribution, value: Any) -> float:
    """Map a numeric value to [0, 1]."""
    assert isinstance(dist, FloatDistribution | IntDistribution)
    lo, hi = _unit_bounds(dist)
    v = math.log(value) if dist.log else float(value)
    return min(max((v - lo) / (hi - lo), 0.0), 1.0)


def from_unit(dist: BaseDistribution, u: float) -> Any:
    """Map ``u`` in [0, 1] back to a value inside ``dist`` (rounded to its step, clipped)."""
    assert isinstance(dist, FloatDistribution | IntDistribution)
    lo, hi = _unit_bounds(dist)
    v = lo + min(max(u, 0.0), 1.0) * (hi - lo)
    if dist.log:
        v = math.exp(v)
    if dist.step is not None:
        v = dist.low + round((v - dist.low) / dist.step) * dist.step
    v = min(max(v, dist.low), dist.high)
    if isinstance(dist, IntDistribution):
        return int(round(v))
    return float(v)


def bin_count(dist: BaseDistribution, n_bins: int) -> int:
    """Bins of ``dist``: a categorical's choices; ``n_bins`` equal slices of a numeric unit
    interval, or one per value for ints and stepped floats with fewer values than that."""
    if isinstance(dist, CategoricalDistribution):
        return len(dist.choices)
    assert isinstance(dist, FloatDistribution | IntDistribution)
    if dist.step is not None and not dist.log:
        return min(n_bins, int(round((dist.high - dist.low) / dist.step)) + 1)
    return n_bins


def bin_of(dist: BaseDistribution, value: Any, n_bins: int) -> int:
    """The bin that ``value`` falls in (see :func:`bin_count`)."""
    if isinstance(dist, CategoricalDistribution):
        return int(dist.to_internal_repr(value))
    n = bin_count(dist, n_bins)
    return min(int(to_unit(dist, value) * n), n - 1)


def bin_value(dist: BaseDistribution, b: int, n: int, rng: np.random.Generator) -> Any:
    """A value of bin ``b`` of ``n``: the choice itself, or uniform within the slice."""
    if isinstance(dist, CategoricalDistribution):
        return dist.choices[b]
    return from_unit(dist, (b + float(rng.random())) / n)


def is_numeric(dist: BaseDistribution) -> bool:
    return not isinstance(dist, CategoricalDistribution)


def trial_rng(seed: int, number: int, name: str) -> np.random.Generator:
    """The generator for one draw: a pure function of seed, trial number and parameter."""
    return np.random.default_rng([seed, number, zlib.crc32(name.encode("utf-8"))])


# --- the lifecycle ------------------------------------------------------------------------------


class HistorySampler(BaseSampler, abc.ABC):
    """Base for samplers that rebuild a factorised model from the study before each trial.

    Subclasses implement :meth:`build` (history → model, pure and deterministic) and
    :meth:`draw` (model, distribution, generator → value).

    Args:
        seed: Seed of every draw; ``None`` picks one at random.
        n_startup_trials: Trials drawn uniformly at random before the model is used.
        include_pruned: Learn from pruned trials' last intermediate values (see
            :func:`history`).
    """

    def __init__(
        self, *, seed: int | None = None, n_startup_trials: int = 10, include_pruned: bool = True
    ) -> None:
        if n_startup_trials < 0:
            raise UserError(f"invalid n_startup_trials = {n_startup_trials}: expected >= 0")
        self._seed = secrets.randbits(31) if seed is None else int(seed)
        self._n_startup_trials = n_startup_trials
        self._include_pruned = include_pruned
        self._models: dict[int, tuple[int, Any]] = {}  # trial_id -> (history length, model)
        self._lock = threading.Lock()

    def reseed_rng(self) -> None:
        """A no-op: Optuna reseeds each worker thread of ``optimize(n_jobs>1)`` so that workers
        do not repeat each other's draws; ours are keyed by trial number, which already
        differs between workers, and keeping the seed keeps the run reproducible."""

    @abc.abstractmethod
    def build(self, records: list[Record]) -> Any:
        """Build the model from the finished trials (in trial-number order)."""

    @abc.abstractmethod
    def draw(
        self,
        model: Any,
        n_records: int,
        name: str,
        dist: BaseDistribution,
        rng: np.random.Generator,
        trial: FrozenTrial,
    ) -> Any:
        """Draw one parameter value from the model; ``trial`` holds the parameters suggested
        so far (the state of a sequential learner; the factorised ones ignore it)."""

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        if len(study.directions) > 1:
            raise UserError(
                f"{type(self).__name__} optimises one objective; this study has "
                f"{len(study.directions)}. Use the nsga2 strategy for multi-objective studies."
            )
        records = history(study, self._include_pruned)
        model = None if len(records) < self._n_startup_trials else self._build_locked(records)
        with self._lock:
            self._models[trial._trial_id] = (len(records), model)

    def _build_locked(self, records: list[Record]) -> Any:
        with self._lock:
            return self.build(records)

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return {}

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        with self._lock:
            entry = self._models.get(trial._trial_id)
        if entry is None:  # before_trial was not called (e.g. a trial created by hand)
            self.before_trial(study, trial)
            with self._lock:
                entry = self._models[trial._trial_id]
        n_records, model = entry
        rng = trial_rng(self._seed, trial.number, param_name)
        if model is None:
            return _uniform(param_distribution, rng)
        return self.draw(model, n_records, param_name, param_distribution, rng, trial)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        with self._lock:
            self._models.pop(trial._trial_id, None)


class EpsilonGreedyBins(HistorySampler):
    """Base for the ε-greedy learners over binned parameters (:mod:`lmalloc.search.bandit`,
    :mod:`lmalloc.search.dqn`): the bins and the exploration schedule they share.

    ``ε_t = eps_end + (eps_start − eps_end) · exp(−(t − n_startup_trials) / eps_decay)`` after
    ``t ≥ n_startup_trials`` finished trials, 1 before.
    """

    def __init__(self, *, seed: int | None, n_startup_trials: int, include_pruned: bool,
                 n_bins: int, eps_start: float, eps_end: float, eps_decay: float) -> None:
        super().__init__(
            seed=seed, n_startup_trials=n_startup_trials, include_pruned=include_pruned
        )
        if n_bins < 2:
            raise invalid("n_bins", n_bins, "an integer >= 2")
        if not 0 <= eps_end <= eps_start <= 1:
            raise invalid(
                "eps_start/eps_end", (eps_start, eps_end), "0 <= eps_end <= eps_start <= 1"
            )
        if eps_decay <= 0:
            raise invalid("eps_decay", eps_decay, "a positive number")
        self.n_bins = n_bins
        self.eps_start, self.eps_end, self.eps_decay = eps_start, eps_end, eps_decay

    def epsilon(self, n_records: int) -> float:
        """The exploration rate after ``n_records`` finished trials."""
        if n_records < self._n_startup_trials:
            return 1.0
        decay = math.exp(-(n_records - self._n_startup_trials) / self.eps_decay)
        return self.eps_end + (self.eps_start - self.eps_end) * decay

    def bins(self, dist: BaseDistribution) -> int:
        return bin_count(dist, self.n_bins)


def _uniform(dist: BaseDistribution, rng: np.random.Generator) -> Any:
    if isinstance(dist, CategoricalDistribution):
        return dist.choices[int(rng.integers(len(dist.choices)))]
    return from_unit(dist, float(rng.random()))


__all__ = [
    "EpsilonGreedyBins",
    "HistorySampler",
    "Record",
    "bin_count",
    "bin_of",
    "bin_value",
    "from_unit",
    "history",
    "is_numeric",
    "standardised_rewards",
    "to_unit",
    "trial_rng",
]
