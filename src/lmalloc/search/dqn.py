"""``dqn``: a deep Q-network searcher, as an Optuna sampler.

The episode: a trial chooses its parameters **one at a time**, in the order the objective
suggests them. Each parameter is discretised into bins (see :func:`lmalloc.search.rl.bin_count`:
``n_bins`` equal slices of a numeric parameter's unit interval, one bin per choice of a
categorical); an *action* is a bin, and the value is then drawn uniformly inside it.

* State: the bins chosen so far (a one-hot block per parameter known to the study, zero when
  not chosen yet or inactive) and a one-hot of the parameter to choose next.
* Reward: 0 for every step but the last; the last step's reward is the trial's normalised
  value, ``−loss`` standardised over the study's history and clipped to ±3
  (:func:`lmalloc.search.rl.standardised_rewards`). Undiscounted (γ = 1): an episode has as
  many steps as the trial has active parameters.
* Q-network: an MLP ``state → Q(state, bin)`` (two hidden layers of ``hidden`` ReLU units;
  one output per bin of the widest parameter, the ones a parameter lacks masked out).
* Experience replay: every step of every finished trial is a transition ``(s, a, r, s')``
  in the replay buffer; each update is one Adam step on the Huber TD loss of a minibatch of
  ``batch_size`` transitions drawn uniformly from the buffer.
* Target network: TD targets ``r + max_a' Q_target(s', a')`` use a copy of the Q-network that
  is synchronised every ``target_every`` updates.
* ε-greedy: the first ``n_startup_trials`` are uniform random; then, with ``t`` finished
  trials, ``ε_t = eps_end + (eps_start − eps_end) · exp(−(t − n_startup_trials) / eps_decay)``
  (defaults 0.5 → 0.05 with a 30-trial time constant), and at *each step* the action is a
  uniformly random bin with probability ``ε_t``, the greedy bin otherwise.

Statelessness (as for every learner of :mod:`lmalloc.search.rl`): before each trial the
network is trained **from scratch** on the replay buffer rebuilt from the study's finished
trials (``updates`` Adam steps, torch seeded from ``(seed, number of finished trials)``), so
a fresh sampler in another process reads the same study and acts the same. It costs
~0.1–0.3 s of CPU per trial, nothing next to a training. Pruned trials count with their last
intermediate value, failed ones not at all; multi-objective studies are refused.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial

from lmalloc.errors import invalid
from lmalloc.search.rl import (
    EpsilonGreedyBins,
    Record,
    bin_count,
    bin_of,
    bin_value,
    standardised_rewards,
)

Key = tuple[str, BaseDistribution]


@dataclass
class _QModel:
    """A trained Q-network and the layout of its state vector."""

    keys: list[Key]
    offsets: dict[Key, int]  # where each parameter's one-hot block starts
    widths: dict[Key, int]  # bins of each parameter
    net: Any  # torch.nn.Module: state -> Q over max(widths) bins

    def state(self, chosen: dict[str, Any], distributions: dict[str, BaseDistribution],
              current: Key | None, n_bins: int) -> np.ndarray:
        """The state vector: chosen bins (one-hot blocks) and the parameter to choose."""
        width = sum(self.widths.values())
        x = np.zeros(width + len(self.keys), dtype=np.float32)
        for name, value in chosen.items():
            key = (name, distributions[name])
            if key in self.offsets:
                x[self.offsets[key] + bin_of(key[1], value, n_bins)] = 1.0
        if current is not None:
            x[width + self.keys.index(current)] = 1.0
        return x


class DQNSampler(EpsilonGreedyBins):
    """A deep Q-network choosing parameters one at a time (see the module docstring).

    Args:
        seed: Seed of every draw and of the network's training (``None``: random).
        n_startup_trials: Uniform random trials before the network is used.
        n_bins: Bins per numeric parameter.
        eps_start: ε right after the startup trials.
        eps_end: ε reached asymptotically.
        eps_decay: Time constant of ε's exponential decay, in trials.
        hidden: Units of each of the two hidden layers.
        updates: Adam steps per training (the network is retrained before each trial).
        batch_size: Transitions per minibatch drawn from the replay buffer.
        target_every: Updates between synchronisations of the target network.
        lr: Adam's learning rate.
        include_pruned: Learn from pruned trials' last intermediate values.

    Example:
        >>> import optuna
        >>> study = optuna.create_study(sampler=DQNSampler(seed=0))
        >>> study.optimize(lambda t: (t.suggest_float("x", -3, 3) - 1) ** 2, n_trials=15)
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
        hidden: int = 64,
        updates: int = 200,
        batch_size: int = 64,
        target_every: int = 25,
        lr: float = 3e-3,
        include_pruned: bool = True,
    ) -> None:
        super().__init__(
            seed=seed, n_startup_trials=n_startup_trials, include_pruned=include_pruned,
            n_bins=n_bins, eps_start=eps_start, eps_end=eps_end, eps_decay=eps_decay,
        )
        if lr <= 0:
            raise invalid("lr", lr, "a positive number")
        if min(hidden, updates, batch_size, target_every) < 1:
            raise invalid("hidden/updates/batch_size/target_every",
                          (hidden, updates, batch_size, target_every), "positive integers")
        self.hidden, self.updates, self.batch_size = hidden, updates, batch_size
        self.target_every, self.lr = target_every, lr

    def transitions(self, model: _QModel, records: list[Record]) -> dict[str, np.ndarray]:
        """The replay buffer: one transition per parameter choice of every finished trial."""
        rewards = standardised_rewards([r.loss for r in records])
        s, a, r, s2, next_key, done = [], [], [], [], [], []
        for rec, reward in zip(records, rewards, strict=True):
            names = list(rec.params)  # the order the objective suggested them in
            for i, name in enumerate(names):
                key = (name, rec.distributions[name])
                chosen = {n: rec.params[n] for n in names[:i]}
                last = i == len(names) - 1
                nxt = None if last else (names[i + 1], rec.distributions[names[i + 1]])
                s.append(model.state(chosen, rec.distributions, key, self.n_bins))
                a.append(bin_of(key[1], rec.params[name], self.n_bins))
                r.append(float(reward) if last else 0.0)
                s2.append(model.state({**chosen, name: rec.params[name]}, rec.distributions,
                                      nxt, self.n_bins))
                next_key.append(-1 if nxt is None else model.keys.index(nxt))
                done.append(last)
        return {"s": np.array(s), "a": np.array(a), "r": np.array(r, dtype=np.float32),
                "s2": np.array(s2), "next_key": np.array(next_key), "done": np.array(done)}

    def build(self, records: list[Record]) -> _QModel:
        """Train a fresh Q-network on the replay buffer of ``records``."""
        import torch

        keys = sorted({(n, r.distributions[n]) for r in records for n in r.params},
                      key=lambda k: (k[0], repr(k[1])))
        widths = {k: bin_count(k[1], self.n_bins) for k in keys}
        offsets, width = {}, 0
        for k in keys:
            offsets[k], width = width, width + widths[k]
        n_out = max(widths.values())
        with _one_thread(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self._seed) * 100_003 + len(records))
            net = _mlp(width + len(keys), self.hidden, n_out)
            model = _QModel(keys, offsets, widths, net)
            buffer = self.transitions(model, records)
            # mask[k, b]: bin b exists for parameter k (the widest parameter has them all)
            mask = torch.zeros(len(keys) + 1, n_out, dtype=torch.bool)
            for i, k in enumerate(keys):
                mask[i, : widths[k]] = True
            mask[-1, :] = True  # terminal rows: index -1, never used (done)
            self._fit(net, buffer, mask)
        net.eval()
        return model

    def _fit(self, net: Any, buf: dict[str, np.ndarray], mask: Any) -> None:
        import copy

        import torch

        s, s2 = torch.from_numpy(buf["s"]), torch.from_numpy(buf["s2"])
        a, r = torch.from_numpy(buf["a"]).long(), torch.from_numpy(buf["r"])
        done = torch.from_numpy(buf["done"])
        next_mask = mask[torch.from_numpy(buf["next_key"]).long()]
        target = copy.deepcopy(net)
        opt = torch.optim.Adam(net.parameters(), lr=self.lr)
        for step in range(self.updates):
            if step % self.target_every == 0:
                target.load_state_dict(net.state_dict())
            idx = torch.randint(len(a), (min(self.batch_size, len(a)),))
            with torch.no_grad():
                q_next = target(s2[idx]).masked_fill(~next_mask[idx], -math.inf).amax(dim=1)
                y = torch.where(done[idx], r[idx], r[idx] + q_next)
            q = net(s[idx]).gather(1, a[idx, None]).squeeze(1)
            loss = torch.nn.functional.smooth_l1_loss(q, y)
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()

    def q_values(self, model: _QModel, chosen: dict[str, Any],
                 distributions: dict[str, BaseDistribution], key: Key) -> np.ndarray:
        """Q of each bin of parameter ``key`` after ``chosen``."""
        import torch

        x = model.state(chosen, distributions, key, self.n_bins)
        with _one_thread(), torch.no_grad():
            q = model.net(torch.from_numpy(x)[None])[0].numpy()
        out: np.ndarray = q[: model.widths[key]]
        return out

    def draw(
        self,
        model: Any,
        n_records: int,
        name: str,
        dist: BaseDistribution,
        rng: np.random.Generator,
        trial: FrozenTrial,
    ) -> Any:
        qm: _QModel = model
        key = (name, dist)
        n = bin_count(dist, self.n_bins)
        explore = rng.random() < self.epsilon(n_records)
        if key not in qm.offsets or explore:
            return bin_value(dist, int(rng.integers(n)), n, rng)
        q = self.q_values(qm, trial.params, trial.distributions, key)
        best = np.flatnonzero(q >= q.max() - 1e-9)
        return bin_value(dist, int(best[rng.integers(len(best))]), n, rng)


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Torch on one thread: the network is tiny, and on 2 busy cores two threads made one
    training ~100x slower (38 s vs 0.35 s, measured)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _mlp(n_in: int, hidden: int, n_out: int) -> Any:
    import torch

    return torch.nn.Sequential(
        torch.nn.Linear(n_in, hidden), torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
        torch.nn.Linear(hidden, n_out),
    )
