"""The strategy registry: a strategy name becomes an Optuna sampler.

Every search strategy *is* an :class:`optuna.samplers.BaseSampler`, so the study, its storage,
its pruners and its parallel workers are Optuna's and any sampler can be plugged in.
:func:`make_sampler` is the one place a name (from the CLI or a config file) is turned into a
sampler; :func:`register_strategy` adds one.

============  ==================================================================================
name          sampler
============  ==================================================================================
grid          ``GridSampler`` over :meth:`SearchSpace.grid` (categorical choices, ``grid_points``
              per numeric dimension); the study stops itself when the grid is exhausted
random        ``RandomSampler``
tpe           ``TPESampler`` with Optuna's defaults (multivariate for one objective)
gp            ``GPSampler`` (Gaussian-process BO; imports torch, lazily)
cmaes         ``CmaEsSampler`` (needs the ``cmaes`` package). CMA-ES handles float and int
              parameters only: categoricals (and conditional parameters, which are not in every
              trial) are drawn by its independent sampler, ``RandomSampler`` — i.e. at random
qmc           ``QMCSampler`` (scrambled Sobol); categoricals are drawn at random as well
nsga2         ``NSGAIISampler`` (a genetic algorithm; the multi-objective strategy)
pg            :class:`lmalloc.search.pg.PolicyGradientSampler` (REINFORCE with a baseline)
dqn           :class:`lmalloc.search.dqn.DQNSampler` (a deep Q-network choosing the parameters
              one at a time: MLP Q, experience replay, target network, ε-greedy)
bandit        :class:`lmalloc.search.bandit.EpsilonGreedySampler` (ε-greedy bandit, linear Q
              over bins)
auto          the rule in :func:`auto_sampler` (GP; dqn if conditional or pruned; TPE for two
              objectives), chosen from ``bench/search_efficiency.py``
============  ==================================================================================
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.samplers import BaseSampler

from lmalloc.errors import UserError
from lmalloc.search.space import SearchSpace

Factory = Callable[..., BaseSampler]
"""``factory(space, seed, **kw) -> BaseSampler``."""


@dataclass(frozen=True)
class Strategy:
    name: str
    factory: Factory
    help: str


_REGISTRY: dict[str, Strategy] = {}


def register_strategy(name: str, factory: Factory, help: str) -> None:
    """Add (or replace) a strategy; ``factory(space, seed, **kw)`` returns the sampler."""
    _REGISTRY[name] = Strategy(name, factory, help)


def strategy_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def all_strategies() -> dict[str, Strategy]:
    return dict(_REGISTRY)


def make_sampler(
    name: str, space: SearchSpace | None = None, seed: int | None = None, **kw: Any
) -> BaseSampler:
    """The sampler for strategy ``name``.

    Args:
        name: One of :func:`strategy_names`.
        space: The search space (``grid`` needs it; ``auto`` reads it).
        seed: Seed of the sampler; the same seed gives the same suggestions.
        **kw: Extra keyword arguments for the sampler's constructor.

    Raises:
        UserError: unknown name, or an option the sampler does not take.

    >>> type(make_sampler("random", seed=0)).__name__
    'RandomSampler'
    """
    if name not in _REGISTRY:
        raise UserError(
            f"unknown search strategy {name!r}: expected one of {', '.join(_REGISTRY)}"
        )
    return _REGISTRY[name].factory(space, seed, **kw)


def _checked_kw(cls: Callable[..., Any], kw: dict[str, Any]) -> None:
    params = inspect.signature(cls).parameters
    bad = [k for k in kw if k not in params]
    if bad:
        raise UserError(
            f"strategy option {bad[0]!r} is not an option of {getattr(cls, '__name__', cls)}: "
            f"expected one of {', '.join(p for p in params if p != 'seed')}"
        )


def _simple(cls_path: str, **defaults: Any) -> Factory:
    def factory(space: SearchSpace | None, seed: int | None, **kw: Any) -> BaseSampler:
        cls = _resolve(cls_path)
        _checked_kw(cls, kw)
        with warnings.catch_warnings():  # QMC, GP... are marked experimental by Optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler: BaseSampler = cls(seed=seed, **{**defaults, **kw})
        return sampler

    return factory


def _resolve(path: str) -> Any:
    module, _, attr = path.rpartition(".")
    if module == "optuna.samplers" and attr == "CmaEsSampler":
        try:
            import cmaes  # noqa: F401
        except ImportError:
            raise UserError(
                "the cmaes strategy needs the `cmaes` package: pip install cmaes"
            ) from None
    mod = __import__(module, fromlist=[attr])
    return getattr(mod, attr)


MAX_GRID_SIZE = 100_000
"""Optuna's GridSampler materialises every grid point; beyond this it is refused."""


def _grid(space: SearchSpace | None, seed: int | None, **kw: Any) -> BaseSampler:
    if space is None:
        raise UserError("the grid strategy needs a search space to build its grid from")
    _checked_kw(optuna.samplers.GridSampler, kw)
    size = space.grid_size()
    if size > MAX_GRID_SIZE:
        raise UserError(
            f"the grid has {size:.3g} points (more than {MAX_GRID_SIZE:,}): lower grid_points "
            f"(now {space.grid_points}), list explicit `grid` values for some parameters, or use "
            "another strategy"
        )
    return optuna.samplers.GridSampler(space.grid(), seed=seed, **kw)


AUTO_GP: dict[str, Any] = {"n_startup_trials": 10}
"""``auto``'s sampler for spaces without conditional parameters: ``GPSampler(**AUTO_GP)``."""


def auto_choice(space: SearchSpace | None, pruned: bool = False, objectives: int = 1) -> str:
    """``"gp"``, ``"dqn"`` or ``"tpe"``: the sampler :func:`auto_sampler` picks for ``space``
    (``pruned``: the study prunes trials, which GP cannot learn from; ``objectives``: 2 for a
    Pareto study, which only TPE, NSGA-II, GP and random of the strategies handle — TPE, as
    NSGA-II's first generation (50 trials) outlasts a small search)."""
    if objectives > 1:
        return "tpe"
    return "dqn" if pruned or space is None or space.has_conditions else "gp"


def auto_sampler(space: SearchSpace | None, seed: int | None, pruned: bool = False,
                 objectives: int = 1, **kw: Any) -> BaseSampler:
    """The default strategy: Gaussian-process BO, the deep Q-network ``dqn`` for conditional
    spaces and for studies with a pruner (``pruned``; ``lmalloc search`` passes it, its
    default pruner is ASHA; so does ``lmalloc run``'s search stage), TPE for two objectives.

    Rule (from ``bench/search_efficiency.py``; numbers in BENCHMARKS.md):

    * no conditional parameters, no pruner → ``GPSampler(**AUTO_GP)``: the fewest trials on
      every test function (Branin, Hartmann-6, noisy 20-D Levy: Optuna's default TPE's final
      value in 0.27–0.30 of its trials). Its cost per trial (0.1–0.6 s at 60 trials on 2 CPU
      cores) is negligible next to training a model per trial.
    * a pruner, conditional parameters or no space → ``dqn`` (was ``pg`` until issue 19).
      Two real tasks (``--real-task``, ``--task wikitext2``: a 2-layer GPT on Tiny
      Shakespeare and a 4-layer GPT on WikiText-2 with the learning-rate range shifted off
      the optimum, the conditional space of ``configs/space_tiny.toml`` without shape,
      ASHA, pruned trials' partial FLOPs counted, 12 full trials' FLOPs per study): ``dqn``
      had the best median final value on both and reached within 1 % of the best found on
      more seeds than ``pg``, the bandit, GP, random or default TPE (table
      ``bench/search_two_tasks.py``). At 24 trials' FLOPs it is the only strategy ahead of
      default TPE to within 1 % on both tasks (0.60× and < 0.61×; ``pg`` < 0.46× and 1.02×).
      GP is no candidate under a pruner: ``GPSampler`` fits
      COMPLETE trials only and samples at random until 10 have completed, and ASHA
      completes about 5 of the ~50 trials such a budget buys.
    * two objectives → TPE (pg, dqn and bandit refuse them; NSGA-II's first generation of
      50 outlasts a small search).

    ``**kw`` goes to the chosen sampler's constructor.
    """
    choice = auto_choice(space, pruned, objectives)
    if choice != "gp":
        return make_sampler(choice, space, seed, **kw)
    cls: Any = optuna.samplers.GPSampler
    _checked_kw(cls, kw)
    with warnings.catch_warnings():  # GP is marked experimental by Optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler: BaseSampler = cls(seed=seed, **{**AUTO_GP, **kw})
    return sampler


register_strategy("grid", _grid, "exhaustive grid over the space's grid points")
register_strategy("random", _simple("optuna.samplers.RandomSampler"), "uniform random search")
register_strategy("tpe", _simple("optuna.samplers.TPESampler"), "TPE, Optuna's defaults")
register_strategy(
    "gp", _simple("optuna.samplers.GPSampler"), "Gaussian-process Bayesian optimisation"
)
register_strategy(
    "cmaes",
    _simple("optuna.samplers.CmaEsSampler", warn_independent_sampling=False),
    "CMA-ES (numeric parameters; categoricals at random)",
)
register_strategy("nsga2", _simple("optuna.samplers.NSGAIISampler"), "NSGA-II genetic algorithm")
register_strategy(
    "qmc",
    _simple("optuna.samplers.QMCSampler", scramble=True, warn_independent_sampling=False),
    "scrambled Sobol quasi-random search",
)
register_strategy(
    "pg",
    _simple("lmalloc.search.pg.PolicyGradientSampler"),
    "policy gradient (REINFORCE with a baseline)",
)
register_strategy(
    "dqn",
    _simple("lmalloc.search.dqn.DQNSampler"),
    "deep Q-network choosing parameters one at a time",
)
register_strategy(
    "bandit",
    _simple("lmalloc.search.bandit.EpsilonGreedySampler"),
    "epsilon-greedy bandit on a linear value function over bins",
)
register_strategy(
    "auto", auto_sampler, "the benchmarked default: GP, or dqn if conditional or pruned"
)
