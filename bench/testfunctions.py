"""Test functions with known optima for the search-efficiency benchmark.

Each :class:`TestFunction` carries its search space (a :class:`lmalloc.search.SearchSpace`),
the noiseless function ``f(params)``, the observation noise, the known optimum ``f_star`` and a
reference value ``f_ref``: the median of ``f`` over uniformly random points (what a "typical
random configuration" scores), used to turn "within 1 %" into a scale-free gap
(see ``bench/search_efficiency.py``).

References: Branin and Hartmann-6 as in Jones, Schonlau & Welch (1998) and the Virtual Library
of Simulation Experiments (Surjanovic & Bingham, sfu.ca/~ssurjano); Levy ibid.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from lmalloc.search import SearchSpace


@dataclass(frozen=True)
class TestFunction:
    name: str
    space: SearchSpace
    f: Callable[[dict[str, Any]], float]
    f_star: float
    noise_sd: float = 0.0

    def observe(self, params: dict[str, Any], rng: np.random.Generator) -> float:
        """What the searcher sees: ``f`` plus Gaussian noise of sd ``noise_sd``."""
        value = self.f(params)
        return value + self.noise_sd * float(rng.normal()) if self.noise_sd else value

    def f_ref(self, n: int = 4000, seed: int = 12345) -> float:
        """Median of ``f`` over ``n`` random points drawn as ``RandomSampler`` would (uniform,
        in log space for log parameters, conditions respected; fixed seed)."""
        rng = np.random.default_rng(seed)
        return float(np.median([self.f(random_params(self.space, rng)) for _ in range(n)]))


def random_params(space: SearchSpace, rng: np.random.Generator) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in space.order:
        p = space[name]
        if not space.is_active(name, values):
            continue
        if p.type == "categorical":
            values[name] = p.choices[int(rng.integers(len(p.choices)))]
            continue
        assert p.low is not None and p.high is not None
        lo, hi = (math.log(p.low), math.log(p.high)) if p.log else (p.low, p.high)
        v = float(rng.uniform(lo, hi))
        values[name] = math.exp(v) if p.log else v
        if p.type == "int":
            values[name] = int(round(values[name]))
    return values


def _box(names: list[str], low: float, high: float) -> SearchSpace:
    return SearchSpace.from_dict(
        {"params": {n: {"type": "float", "low": low, "high": high} for n in names}}
    )


def branin(p: dict[str, Any]) -> float:
    """Branin-Hoo on [-5, 10] x [0, 15]; f* = 0.397887 at three points."""
    x1, x2 = p["x1"], p["x2"]
    b, c = 5.1 / (4 * math.pi**2), 5 / math.pi
    t = 1 / (8 * math.pi)
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


_H6_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
_H6_A = np.array(
    [
        [10, 3, 17, 3.5, 1.7, 8],
        [0.05, 10, 17, 0.1, 8, 14],
        [3, 3.5, 1.7, 10, 17, 8],
        [17, 8, 0.05, 10, 0.1, 14],
    ]
)
_H6_P = 1e-4 * np.array(
    [
        [1312, 1696, 5569, 124, 8283, 5886],
        [2329, 4135, 8307, 3736, 1004, 9991],
        [2348, 1451, 3522, 2883, 3047, 6650],
        [4047, 8828, 8732, 5743, 1091, 381],
    ]
)


def hartmann6(p: dict[str, Any]) -> float:
    """Hartmann-6 on [0, 1]^6; f* = −3.32237."""
    x = np.array([p[f"x{i}"] for i in range(6)])
    return float(-np.sum(_H6_ALPHA * np.exp(-np.sum(_H6_A * (x - _H6_P) ** 2, axis=1))))


def levy(p: dict[str, Any]) -> float:
    """Levy in any dimension; f* = 0 at x = (1, ..., 1). The benchmark uses the box
    [-5, 15]^d rather than the usual [-10, 10]^d: there the optimum sits next to the box's
    centre, which a sampler that starts at the centre (CMA-ES) would find by construction."""
    x = np.array([p[f"x{i}"] for i in range(len(p))])
    w = 1 + (x - 1) / 4
    head = math.sin(math.pi * w[0]) ** 2
    mid = np.sum((w[:-1] - 1) ** 2 * (1 + 10 * np.sin(math.pi * w[:-1] + 1) ** 2))
    tail = (w[-1] - 1) ** 2 * (1 + math.sin(2 * math.pi * w[-1]) ** 2)
    return float(head + mid + tail)


# A stand-in for the real task with its structure: a log learning rate whose optimum moves
# with a categorical batch size (interaction), a schedule choice whose best option has a
# conditional parameter (cooldown_frac only for wsd), and a few weak knobs. Loss-like scale:
# f* = 3.0, differences of a few hundredths matter, noise sd 0.005 (seed-to-seed val loss).
_TINY_GPT_LIKE = SearchSpace.from_dict(
    {
        "params": {
            "lr": {"type": "float", "low": 1e-4, "high": 3e-2, "log": True},
            "batch_tokens": {"type": "categorical", "choices": [4096, 8192, 16384]},
            "warmup_frac": {"type": "float", "low": 0.0, "high": 0.2},
            "weight_decay": {"type": "float", "low": 0.0, "high": 0.2},
            "schedule": {"type": "categorical", "choices": ["cosine", "wsd", "constant"]},
            "cooldown_frac": {
                "type": "float",
                "low": 0.05,
                "high": 0.5,
                "when": {"schedule": "wsd"},
            },
            "beta2": {"type": "float", "low": 0.9, "high": 0.999},
        }
    }
)


def tiny_gpt_like(p: dict[str, Any]) -> float:
    """Synthetic loss surface shaped like a tiny-GPT tuning problem; f* = 3.0."""
    lr_star = 3e-3 * math.sqrt(p["batch_tokens"] / 8192)
    loss = 3.0 + 0.15 * math.log10(p["lr"] / lr_star) ** 2
    loss += 0.02 * abs(math.log2(p["batch_tokens"] / 8192))
    loss += 0.5 * (p["warmup_frac"] - 0.05) ** 2 + 0.3 * (p["weight_decay"] - 0.1) ** 2
    loss += 2.0 * (p["beta2"] - 0.95) ** 2
    if p["schedule"] == "wsd":
        loss += 0.6 * (p["cooldown_frac"] - 0.25) ** 2
    else:
        loss += {"cosine": 0.02, "constant": 0.08}[p["schedule"]]
    return loss


_BRANIN_SPACE = SearchSpace.from_dict(
    {
        "params": {
            "x1": {"type": "float", "low": -5, "high": 10},
            "x2": {"type": "float", "low": 0, "high": 15},
        }
    }
)

FUNCTIONS: dict[str, TestFunction] = {
    "branin": TestFunction("branin", _BRANIN_SPACE, branin, 0.397887),
    "hartmann6": TestFunction(
        "hartmann6", _box([f"x{i}" for i in range(6)], 0, 1), hartmann6, -3.32237
    ),
    "tiny_gpt_like": TestFunction(
        "tiny_gpt_like", _TINY_GPT_LIKE, tiny_gpt_like, 3.0, noise_sd=0.005
    ),
    # Noise sd 3.7 is about 1 % of f_ref (~374): the relative size of run-to-run noise in a
    # validation loss.
    "levy20_noisy": TestFunction(
        "levy20_noisy", _box([f"x{i}" for i in range(20)], -5, 15), levy, 0.0, noise_sd=3.7
    ),
}
