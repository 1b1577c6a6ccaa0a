"""Hyperparameter search: spaces, strategies (Optuna samplers) and the RL searchers.

Every strategy is an Optuna sampler and every study an Optuna study, so storages, pruners and
parallel workers are Optuna's. The objective that trains a model per trial, the pruner wiring
and budget-aware stopping build on these pieces (see ``make_sampler`` and ``SearchSpace``).
"""

from __future__ import annotations

from lmalloc.search.bandit import EpsilonGreedySampler
from lmalloc.search.dqn import DQNSampler
from lmalloc.search.pg import PolicyGradientSampler
from lmalloc.search.space import DEFAULT_GRID_POINTS, Param, SearchSpace
from lmalloc.search.strategies import (
    AUTO_GP,
    all_strategies,
    make_sampler,
    register_strategy,
    strategy_names,
)

__all__ = [
    "AUTO_GP",
    "DEFAULT_GRID_POINTS",
    "DQNSampler",
    "EpsilonGreedySampler",
    "Param",
    "PolicyGradientSampler",
    "SearchSpace",
    "make_sampler",
    "register_strategy",
    "all_strategies",
    "strategy_names",
]
