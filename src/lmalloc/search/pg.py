"""``pg``: a policy-gradient searcher (REINFORCE with a baseline) as an Optuna sampler.

The policy is factorised over parameters. Each numeric parameter has a Gaussian head
(mean ``mu``, log-std ``log_sigma``) over its unit interval (log space for log parameters,
see :mod:`lmalloc.search.rl`); each categorical one a softmax over logits ``theta``. A trial
is one episode of one step: the action is the parameter vector, the reward the objective.

Update rule, replayed over the finished trials in trial-number order, in batches of
``batch_size`` (a partial batch waits). For a batch with rewards ``r_i`` (−loss standardised
over every finished trial up to and including the batch, clipped to ±3) and the baseline
``b ← b + baseline_decay · (mean_i r_i − b)`` (an exponential moving average of batch-mean
rewards that includes this batch: rewards drift upwards as the policy improves, and a
lagging baseline would add variance), the advantage is ``A_i = r_i − b`` and, averaging over
the batch's trials *in which the parameter was active* (a conditional parameter that was not
suggested gets no gradient)::

    Gaussian, z_i = (u_i − mu) / sigma, natural-gradient form of the score (Fisher-scaled,
    as in separable NES, Wierstra et al. 2014, JMLR 15):
        mu        += lr_mean  * mean(A_i * z_i) * sigma
        log_sigma += lr_sigma * (mean(A_i * (z_i**2 − 1)) / 2 + entropy / 2)
    Categorical, p = softmax(theta), entropy H = −Σ p log p:
        theta     += lr_cat * (mean(A_i * (onehot_i − p)) − entropy * p * (log p + H))

``mu`` is clipped to [0, 1] and ``sigma`` to [``min_sigma``, ``max_sigma``]. Draws come from
the Gaussian truncated to [0, 1] (resampled, then clipped) and are rounded to the
parameter's step. The first ``n_startup_trials`` are uniform random; they still feed the
first updates (off-policy: like every replayed trial, they are scored under the current
policy, not under the one that drew them — an approximation REINFORCE usually avoids; it is
what makes the sampler stateless).

Rewards and direction: lower is better for a minimised study, higher for a maximised one
(both become a loss; see :func:`lmalloc.search.rl.history`). Multi-objective studies are
refused with a :class:`~lmalloc.errors.UserError` (scalarising would hide a choice the user
should make; nsga2 is the multi-objective strategy). Pruned trials count with their last
intermediate value (``include_pruned``); failed trials are ignored.

Stateless: the policy is a pure function of the finished trials, rebuilt from storage before
each trial (incrementally within a process while the finished trials only grow at the end).

Benchmark standing (``bench/search_efficiency.py``, 5 seeds x 100 trials, medians; see
BENCHMARKS.md): it learns — better than random search on Hartmann-6 (best −2.92 vs −2.05)
and the conditional ``tiny_gpt_like`` surface (3.007 vs 3.012), and on the noisy, nearly
separable 20-D Levy it ties CMA-ES for the best value (35.7 vs 35.8; default TPE 69.7) — but
on low-dimensional problems it is a slow learner next to TPE and GP, which reuse every trial
through a surrogate model rather than a few gradient steps (Hartmann-6: TPE −3.15, GP −3.32
in 60 trials), and on multimodal Branin its Gaussian settles between optima (0.85 vs
random's 0.60). Use ``auto`` unless you are studying RL searchers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import FrozenTrial

from lmalloc.errors import invalid
from lmalloc.search.rl import HistorySampler, Record, from_unit, standardised_rewards, to_unit


@dataclass
class _Policy:
    """The policy's parameters, one head per (name, distribution)."""

    gauss: dict[tuple[str, BaseDistribution], np.ndarray] = field(default_factory=dict)
    logits: dict[tuple[str, BaseDistribution], np.ndarray] = field(default_factory=dict)
    baseline: float = 0.0
    # the trials already replayed, in order, as (number, loss): the loss too, so that a cache
    # from another study (a sampler instance reused) never passes for this one's
    numbers: tuple[tuple[int, float], ...] = ()

    def copy(self) -> _Policy:
        return _Policy(
            {k: v.copy() for k, v in self.gauss.items()},
            {k: v.copy() for k, v in self.logits.items()},
            self.baseline,
            self.numbers,
        )


def _softmax(theta: np.ndarray) -> np.ndarray:
    e = np.exp(theta - theta.max())
    p: np.ndarray = e / e.sum()
    return p


class PolicyGradientSampler(HistorySampler):
    """REINFORCE with a moving-average baseline over a factorised Gaussian/softmax policy.

    Args:
        seed: Seed of every draw (``None``: random).
        n_startup_trials: Uniform random trials before the policy is used.
        batch_size: Finished trials per policy update.
        lr_mean: Step size of the Gaussian means (natural-gradient units).
        lr_sigma: Step size of the Gaussian log-stds.
        lr_cat: Step size of the categorical logits.
        entropy: Entropy-regularisation weight (keeps exploring).
        init_sigma: Initial std of each Gaussian head, in unit space.
        min_sigma: Floor of the std (unit space), so the policy never stops exploring.
        max_sigma: Ceiling of the std (unit space).
        baseline_decay: Weight of the newest batch mean in the baseline's moving average.
        include_pruned: Learn from pruned trials' last intermediate values.

    Example:
        >>> import optuna
        >>> study = optuna.create_study(sampler=PolicyGradientSampler(seed=0))
        >>> study.optimize(lambda t: (t.suggest_float("x", -3, 3) - 1) ** 2, n_trials=30)
    """

    def __init__(
        self,
        *,
        seed: int | None = None,
        n_startup_trials: int = 10,
        batch_size: int = 5,
        lr_mean: float = 1.0,
        lr_sigma: float = 0.3,
        lr_cat: float = 1.0,
        entropy: float = 0.01,
        init_sigma: float = 0.25,
        min_sigma: float = 0.01,
        max_sigma: float = 0.5,
        baseline_decay: float = 0.3,
        include_pruned: bool = True,
    ) -> None:
        super().__init__(
            seed=seed, n_startup_trials=n_startup_trials, include_pruned=include_pruned
        )
        if batch_size < 1:
            raise invalid("batch_size", batch_size, "an integer >= 1")
        if not 0 < min_sigma <= init_sigma <= max_sigma:
            raise invalid("init_sigma", init_sigma, "0 < min_sigma <= init_sigma <= max_sigma")
        if not 0 < baseline_decay <= 1:
            raise invalid("baseline_decay", baseline_decay, "a number in (0, 1]")
        self.batch_size = batch_size
        self.lr_mean, self.lr_sigma, self.lr_cat = lr_mean, lr_sigma, lr_cat
        self.entropy = entropy
        self.init_sigma, self.min_sigma, self.max_sigma = init_sigma, min_sigma, max_sigma
        self.baseline_decay = baseline_decay
        self._cache = _Policy()

    # --- learning ---------------------------------------------------------------------------

    def build(self, records: list[Record]) -> _Policy:
        """Replay the updates over ``records``; reuse the cached prefix when it still holds."""
        n_full = len(records) // self.batch_size * self.batch_size
        numbers = tuple((r.number, r.loss) for r in records[:n_full])
        cached = self._cache
        if numbers[: len(cached.numbers)] == cached.numbers:
            policy = cached.copy()
        else:  # an earlier trial finished late (parallel workers): replay from scratch
            policy = _Policy()
        for start in range(len(policy.numbers), n_full, self.batch_size):
            self._update(policy, records[: start + self.batch_size], start)
        policy.numbers = numbers
        self._cache = policy
        return policy.copy()

    def _update(self, policy: _Policy, seen: list[Record], start: int) -> None:
        rewards = standardised_rewards([r.loss for r in seen])[start:]
        batch = seen[start:]
        # The baseline includes this batch's mean: less variance than a lagging average
        # (rewards drift upwards as the policy improves, so a stale baseline adds a bias).
        policy.baseline += self.baseline_decay * (float(rewards.mean()) - policy.baseline)
        advantages = rewards - policy.baseline
        keys = {(n, r.distributions[n]) for r in batch for n in r.params}
        for key in sorted(keys, key=lambda k: (k[0], repr(k[1]))):
            name, dist = key
            rows = [(i, r.params[name]) for i, r in enumerate(batch) if name in r.params]
            adv = advantages[[i for i, _ in rows]]
            if isinstance(dist, CategoricalDistribution):
                idx = [int(dist.to_internal_repr(v)) for _, v in rows]
                self._update_cat(policy, key, len(dist.choices), idx, adv)
            else:
                u = np.array([to_unit(dist, v) for _, v in rows])
                self._update_gauss(policy, key, u, adv)
        policy.numbers = tuple((r.number, r.loss) for r in seen)

    def _head(self, policy: _Policy, key: tuple[str, BaseDistribution]) -> np.ndarray:
        if key not in policy.gauss:
            policy.gauss[key] = np.array([0.5, math.log(self.init_sigma)])
        return policy.gauss[key]

    def _update_gauss(
        self, policy: _Policy, key: tuple[str, BaseDistribution], u: np.ndarray, adv: np.ndarray
    ) -> None:
        head = self._head(policy, key)
        mu, log_sigma = head
        sigma = math.exp(log_sigma)
        z = (u - mu) / sigma
        mu += self.lr_mean * float(np.mean(adv * z)) * sigma
        log_sigma += self.lr_sigma * (float(np.mean(adv * (z**2 - 1))) / 2 + self.entropy / 2)
        head[0] = min(max(mu, 0.0), 1.0)
        head[1] = min(max(log_sigma, math.log(self.min_sigma)), math.log(self.max_sigma))

    def _update_cat(
        self,
        policy: _Policy,
        key: tuple[str, BaseDistribution],
        n: int,
        idx: list[int],
        adv: np.ndarray,
    ) -> None:
        theta = policy.logits.setdefault(key, np.zeros(n))
        p = _softmax(theta)
        onehot = np.eye(n)[idx]  # (batch, n)
        grad = (adv[:, None] * (onehot - p)).mean(axis=0)
        log_p = np.log(p)
        h = -float(np.sum(p * log_p))
        grad -= self.entropy * p * (log_p + h)
        theta += self.lr_cat * grad

    # --- acting -----------------------------------------------------------------------------

    def draw(
        self,
        model: Any,
        n_records: int,
        name: str,
        dist: BaseDistribution,
        rng: np.random.Generator,
        trial: FrozenTrial,
    ) -> Any:
        policy: _Policy = model
        key = (name, dist)
        if isinstance(dist, CategoricalDistribution):
            theta = policy.logits.get(key, np.zeros(len(dist.choices)))
            return dist.choices[int(rng.choice(len(theta), p=_softmax(theta)))]
        mu, log_sigma = policy.gauss.get(key, np.array([0.5, math.log(self.init_sigma)]))
        sigma = math.exp(log_sigma)
        for _ in range(16):  # truncate to [0, 1] by resampling, clip as a last resort
            u = float(rng.normal(mu, sigma))
            if 0.0 <= u <= 1.0:
                break
        return from_unit(dist, u)

    def policy_summary(self, records: list[Record]) -> dict[str, dict[str, Any]]:
        """The policy after ``records``, readable: per parameter its mean/std (unit space) or
        its choice probabilities. For reports and tests."""
        policy = self.build(records)
        out: dict[str, dict[str, Any]] = {}
        for (name, _), (mu, log_sigma) in policy.gauss.items():
            out[name] = {"mu": float(mu), "sigma": math.exp(log_sigma)}
        for (name, dist), theta in policy.logits.items():
            assert isinstance(dist, CategoricalDistribution)
            out[name] = {"probs": dict(zip(dist.choices, _softmax(theta).tolist(), strict=True))}
        return out
