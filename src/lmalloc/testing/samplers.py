"""A pytest conformance suite that every search strategy (every Optuna sampler) must pass.

To test a new sampler, add one line to the ``sampler_case`` fixture's list in a test module
that subclasses :class:`SamplerConformance`::

    import pytest
    from lmalloc.testing.samplers import SamplerCase, SamplerConformance, strategy_case

    @pytest.fixture(params=[strategy_case("random", learns=False), strategy_case("pg"),
                            SamplerCase("mine", lambda space, seed: MySampler(seed=seed))],
                    ids=lambda c: c.name)
    def sampler_case(request):
        return request.param

(wrap a case in ``pytest.param(case, marks=pytest.mark.slow)`` for a slow sampler; pass
``ids`` a function that returns ``c.name`` for cases).

    class TestSamplers(SamplerConformance):
        pass

What it checks, each on a tiny study (a few to a few dozen trials):

* suggested values lie inside their distributions (float, log float, stepped float, int,
  log int, stepped int, categorical of mixed types) and have the right Python type;
* conditional parameters are suggested exactly when active (including a nested condition);
* the sampler works on SQLite storage and a *fresh* sampler instance (another process's)
  continues a study it did not start;
* the same seed gives the same first suggestions in a fresh study;
* failed and pruned trials (with and without intermediate values) do not crash it;
* ``study.optimize(n_jobs=2)`` runs without errors;
* (for samplers declared ``learns=True``) it improves on a simple quadratic, minimised and
  maximised: the median of the last trials beats the median of the first ones. Weak, but a
  sampler that ignores its history or has the direction backwards fails it.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers import BaseSampler
from optuna.trial import TrialState

from lmalloc.search.space import SearchSpace

SamplerFactory = Callable[[SearchSpace, int], BaseSampler]


@dataclass(frozen=True)
class SamplerCase:
    """One sampler under test.

    Attributes:
        name: Test id.
        factory: ``factory(space, seed) -> sampler`` (a fresh instance on every call).
        learns: Whether the improvement check applies (not for random, grid, QMC, or a
            genetic algorithm whose first generation outlasts the check).
        deterministic: Whether the same seed must give the same suggestions.
    """

    name: str
    factory: SamplerFactory
    learns: bool = True
    deterministic: bool = True


def strategy_case(name: str, learns: bool = True, **kw: Any) -> SamplerCase:
    """A case for a strategy of :func:`lmalloc.search.make_sampler`."""
    from lmalloc.search.strategies import make_sampler

    return SamplerCase(name, lambda space, seed: make_sampler(name, space, seed, **kw), learns)


MIXED_SPACE = SearchSpace.from_dict(
    {
        "params": {
            "f": {"type": "float", "low": -1.0, "high": 2.0},
            "f_log": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True},
            "f_step": {"type": "float", "low": 0.0, "high": 1.0, "step": 0.25},
            "i": {"type": "int", "low": -3, "high": 4},
            "i_log": {"type": "int", "low": 1, "high": 1024, "log": True},
            "i_step": {"type": "int", "low": 16, "high": 256, "step": 16},
            "c": {"type": "categorical", "choices": ["cosine", "wsd", 3, 0.5, True]},
        }
    },
)

COND_SPACE = SearchSpace.from_dict(
    {
        "params": {
            "schedule": {"type": "categorical", "choices": ["cosine", "wsd", "const"]},
            "cooldown_frac": {
                "type": "float",
                "low": 0.05,
                "high": 0.5,
                "when": {"schedule": "wsd"},
            },
            "cooldown_shape": {
                "type": "categorical",
                "choices": ["linear", "sqrt"],
                "when": {"schedule": "wsd"},
            },
            "sqrt_power": {
                "type": "float",
                "low": 0.3,
                "high": 0.7,
                "when": {"cooldown_shape": "sqrt"},
            },
            "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        }
    },
)

QUADRATIC_SPACE = SearchSpace.from_dict(
    {
        "params": {
            "x": {"type": "float", "low": -4.0, "high": 4.0},
            "y": {"type": "float", "low": -4.0, "high": 4.0},
            "lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
        }
    }
)


def quadratic(params: dict[str, Any]) -> float:
    """Minimum 0 at x = 1, y = −0.5, lr = 1e-2."""
    x, y, lr = float(params["x"]), float(params["y"]), float(params["lr"])
    return (x - 1) ** 2 + (y + 0.5) ** 2 + (math.log10(lr) + 2) ** 2


def _check_inside(trial: optuna.trial.FrozenTrial) -> None:
    for name, value in trial.params.items():
        dist = trial.distributions[name]
        if isinstance(dist, CategoricalDistribution):
            assert value in dist.choices, (name, value)
            continue
        assert dist._contains(dist.to_internal_repr(value)), (name, value, dist)
        if isinstance(dist, IntDistribution):
            assert isinstance(value, int) and not isinstance(value, bool), (name, value)
        if isinstance(dist, FloatDistribution):
            assert isinstance(value, float), (name, value)


def _first_params(
    case: SamplerCase, space: SearchSpace, seed: int, k: int
) -> list[dict[str, Any]]:
    study = optuna.create_study(sampler=case.factory(space, seed))
    study.optimize(lambda t: quadratic(space.suggest(t)), n_trials=k)
    return [t.params for t in study.trials]


class SamplerConformance:
    """The checks; a subclass named ``Test...`` and a ``sampler_case`` fixture run them."""

    n_trials = 12

    @pytest.fixture(autouse=True)
    def _quiet(self) -> Iterator[None]:
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
        optuna.logging.set_verbosity(verbosity)

    def test_values_inside_distributions(self, sampler_case: SamplerCase) -> None:
        study = optuna.create_study(sampler=sampler_case.factory(MIXED_SPACE, 0))
        study.optimize(lambda t: float(len(str(MIXED_SPACE.suggest(t)))), n_trials=self.n_trials)
        assert len(study.trials) == self.n_trials
        for trial in study.trials:
            assert set(trial.params) == set(MIXED_SPACE.names)
            _check_inside(trial)

    def test_conditional_params_only_when_active(self, sampler_case: SamplerCase) -> None:
        def objective(t: optuna.Trial) -> float:
            p = COND_SPACE.suggest(t)
            cooldown, power = float(p.get("cooldown_frac", 0.2)), float(p.get("sqrt_power", 0.0))
            return abs(cooldown - 0.2) + power + float(p["lr"])

        study = optuna.create_study(sampler=sampler_case.factory(COND_SPACE, 1))
        study.optimize(objective, n_trials=2 * self.n_trials)
        for trial in study.trials:
            active = {n for n in COND_SPACE.names if COND_SPACE.is_active(n, trial.params)}
            assert set(trial.params) == active
            _check_inside(trial)

    def test_continues_from_storage_with_a_fresh_instance(
        self, sampler_case: SamplerCase, tmp_path: Path
    ) -> None:
        storage = f"sqlite:///{tmp_path / 'study.db'}"
        space = QUADRATIC_SPACE
        first = optuna.create_study(
            study_name="s", storage=storage, sampler=sampler_case.factory(space, 2)
        )
        half = self.n_trials // 2 + 1  # SQLite commits are slow; the second half still learns
        first.optimize(lambda t: quadratic(space.suggest(t)), n_trials=half)
        again = optuna.load_study(
            study_name="s", storage=storage, sampler=sampler_case.factory(space, 2)
        )
        again.optimize(lambda t: quadratic(space.suggest(t)), n_trials=half)
        trials = again.get_trials(states=(TrialState.COMPLETE,))
        assert len(trials) == 2 * half
        for trial in trials:
            _check_inside(trial)

    def test_same_seed_same_suggestions(self, sampler_case: SamplerCase) -> None:
        if not sampler_case.deterministic:
            pytest.skip(f"{sampler_case.name} is declared non-deterministic")
        a = _first_params(sampler_case, QUADRATIC_SPACE, 3, self.n_trials)
        b = _first_params(sampler_case, QUADRATIC_SPACE, 3, self.n_trials)
        assert a == b

    def test_failed_and_pruned_trials(self, sampler_case: SamplerCase) -> None:
        space = QUADRATIC_SPACE

        def objective(t: optuna.Trial) -> float:
            value = quadratic(space.suggest(t))
            if t.number % 4 == 1:
                raise RuntimeError("a crashed trial")
            if t.number % 4 == 2:
                t.report(value + 1.0, step=1)  # pruned with an intermediate value
                raise optuna.TrialPruned()
            if t.number % 8 == 3:
                raise optuna.TrialPruned()  # pruned without one
            return value

        study = optuna.create_study(sampler=sampler_case.factory(space, 4))
        study.optimize(objective, n_trials=2 * self.n_trials, catch=(RuntimeError,))
        trial = study.ask()
        space.suggest(trial)
        study.tell(trial, state=TrialState.FAIL)
        states = {t.state for t in study.trials}
        assert {TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL} <= states
        study.optimize(lambda t: quadratic(space.suggest(t)), n_trials=2)
        for t in study.trials:
            _check_inside(t)

    def test_parallel_workers(self, sampler_case: SamplerCase) -> None:
        study = optuna.create_study(sampler=sampler_case.factory(QUADRATIC_SPACE, 5))
        study.optimize(
            lambda t: quadratic(QUADRATIC_SPACE.suggest(t)), n_trials=self.n_trials, n_jobs=2
        )
        trials = study.get_trials(states=(TrialState.COMPLETE,))
        assert len(trials) == self.n_trials
        for trial in trials:
            _check_inside(trial)

    @pytest.mark.parametrize("direction", ["minimize", "maximize"])
    def test_improves_on_a_quadratic(
        self, sampler_case: SamplerCase, direction: Literal["minimize", "maximize"]
    ) -> None:
        if not sampler_case.learns:
            pytest.skip(f"{sampler_case.name} is declared not to learn")
        sign = 1.0 if direction == "minimize" else -1.0
        study = optuna.create_study(
            direction=direction, sampler=sampler_case.factory(QUADRATIC_SPACE, 6)
        )
        study.optimize(lambda t: sign * quadratic(QUADRATIC_SPACE.suggest(t)), n_trials=30)
        losses = [quadratic(t.params) for t in study.trials]
        assert statistics.median(losses[-10:]) < statistics.median(losses[:10]), losses
