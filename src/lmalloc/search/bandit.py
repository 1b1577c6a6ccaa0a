"""``bandit``: an ε-greedy multi-armed bandit over a discretised space, as an Optuna sampler.

What it is: each trial is an episode of one step (a bandit, not sequential RL; the deep,
sequential learner is :mod:`lmalloc.search.dqn`). The value of an action is a **linear
function over one-hot bins**, fitted by ridge least squares on every finished trial, and the
sampler acts ε-greedily on it. (Until issue 19 this sampler was registered as ``dqn``.)

Discretisation: each numeric parameter's unit interval (log space for log parameters; see
:mod:`lmalloc.search.rl`) is cut into ``n_bins`` equal bins (ints and stepped floats with
fewer values than ``n_bins`` get one bin per value); a categorical keeps its choices. The
features of a trial are the one-hot bins of its *active* parameters, so an inactive
conditional parameter contributes nothing.

Value function: ``Q(x) = w0 + Σ_d w_d[bin_d(x)]``, fitted to rewards ``r`` (−loss
standardised over the history, clipped to ±3) by minimising
``Σ_i (r_i − Q(x_i))² + ridge · ‖w‖²`` (``w0`` unpenalised). An unseen bin has ``w = 0``: as good
as the average trial. Because Q is additive, the greedy action is the best bin of each
parameter, chosen independently (ties broken at random).

Acting: the first ``n_startup_trials`` are uniform random. Afterwards, with ``t`` finished
trials, ``ε_t = eps_end + (eps_start − eps_end) · exp(−(t − n_startup_trials) / eps_decay)``
(defaults 0.5 → 0.05 with a 30-trial time constant) and *each parameter* independently takes a
uniformly random bin with probability ε_t and its greedy bin otherwise; the value is then drawn
uniformly within the chosen bin (rounded to the parameter's step).

Direction, pruned and failed trials, multi-objective refusal and statelessness are as for
:mod:`lmalloc.search.pg`: the fit is a pure function of the finished trials, recomputed from
storage before each trial.

Benchmark standing (``bench/search_efficiency.py``, 5 seeds x 100 trials, medians; see
BENCHMARKS.md): the additive model cannot represent interactions between parameters and the
bins cap precision at one bin width, so it finds the right region quickly and then stalls:
on Branin it is within 10 % of the gap in 14 trials (TPE 12, random 27) but ends at 1.94
(random 0.60); on Hartmann-6 it ends at −2.88 (TPE −3.15); on the noisy 20-D Levy at 41.7
(TPE 69.7, CMA-ES 35.8); on the conditional
``tiny_gpt_like`` surface, nearly additive by construction, it was the fastest to 5 % of the
gap (50 trials; TPE 61). A baseline for RL-style search, not a replacement for TPE or GP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial

from lmalloc.errors import invalid
from lmalloc.search.rl import (
    EpsilonGreedyBins,
    Record,
    bin_of,
    bin_value,
    standardised_rewards,
)


@dataclass(frozen=True)
class _ValueModel:
    """Fitted bin values: ``weights[(name, dist)]`` has one entry per bin."""

    weights: dict[tuple[str, BaseDistribution], np.ndarray]
    n_records: int


class EpsilonGreedySampler(EpsilonGreedyBins):
    """ε-greedy search on a linear Q over one-hot bins (see the module docstring).

    Args:
        seed: Seed of every draw (``None``: random).
        n_startup_trials: Uniform random trials before the value function is used.
        n_bins: Bins per numeric parameter.
        eps_start: ε right after the startup trials.
        eps_end: ε reached asymptotically.
        eps_decay: Time constant of ε's exponential decay, in trials.
        ridge: L2 penalty of the bin values (in units of standardised reward squared).
        include_pruned: Learn from pruned trials' last intermediate values.

    Example:
        >>> import optuna
        >>> study = optuna.create_study(sampler=EpsilonGreedySampler(seed=0))
        >>> study.optimize(lambda t: (t.suggest_float("x", -3, 3) - 1) ** 2, n_trials=30)
    """

    def __init__(
        self,
        *,
        seed: int | None = None,
        n_startup_trials: int = 10,
        n_bins: int = 10,
        eps_start: float = 0.5,
        eps_end: float = 0.05,
        eps_decay: float = 30.0,
        ridge: float = 1.0,
        include_pruned: bool = True,
    ) -> None:
        super().__init__(
            seed=seed, n_startup_trials=n_startup_trials, include_pruned=include_pruned,
            n_bins=n_bins, eps_start=eps_start, eps_end=eps_end, eps_decay=eps_decay,
        )
        if ridge <= 0:
            raise invalid("ridge", ridge, "a positive number")
        self.ridge = ridge

    def _bin(self, dist: BaseDistribution, value: Any) -> int:
        return bin_of(dist, value, self.n_bins)

    def build(self, records: list[Record]) -> _ValueModel:
        """Ridge regression of standardised rewards on one-hot bins."""
        keys = sorted(
            {(n, r.distributions[n]) for r in records for n in r.params},
            key=lambda k: (k[0], repr(k[1])),
        )
        offsets, width = {}, 0
        for key in keys:
            offsets[key] = width
            width += self.bins(key[1])
        phi = np.zeros((len(records), width))  # (trials, bins)
        for i, r in enumerate(records):
            for name, value in r.params.items():
                key = (name, r.distributions[name])
                phi[i, offsets[key] + self._bin(key[1], value)] = 1.0
        y = standardised_rewards([r.loss for r in records])
        y_c = y - y.mean()  # the unpenalised intercept, absorbed by centring
        phi_c = phi - phi.mean(axis=0)
        w = np.linalg.solve(phi_c.T @ phi_c + self.ridge * np.eye(width), phi_c.T @ y_c)
        weights = {k: w[offsets[k] : offsets[k] + self.bins(k[1])] for k in keys}
        return _ValueModel(weights, len(records))

    def draw(
        self,
        model: Any,
        n_records: int,
        name: str,
        dist: BaseDistribution,
        rng: np.random.Generator,
        trial: FrozenTrial,
    ) -> Any:
        values: _ValueModel = model
        n = self.bins(dist)
        w = values.weights.get((name, dist))
        explore = rng.random() < self.epsilon(n_records)
        if w is None or explore:
            b = int(rng.integers(n))
        else:
            best = np.flatnonzero(w >= w.max() - 1e-12)
            b = int(best[rng.integers(len(best))])
        return bin_value(dist, b, n, rng)
