"""The RL samplers: statelessness (rebuild from storage), update rules, unit space, history."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from lmalloc.errors import UserError
from lmalloc.search import DQNSampler, EpsilonGreedySampler, PolicyGradientSampler, SearchSpace
from lmalloc.search.rl import from_unit, history, to_unit

optuna.logging.set_verbosity(optuna.logging.ERROR)

SPACE = SearchSpace.from_dict(
    {
        "params": {
            "x": {"type": "float", "low": -2.0, "high": 2.0},
            "n": {"type": "int", "low": 1, "high": 64, "log": True},
            "s": {"type": "categorical", "choices": ["a", "b", "c"]},
            "cool": {"type": "float", "low": 0.0, "high": 1.0, "when": {"s": "b"}},
        }
    }
)


def objective(trial: optuna.Trial) -> float:
    p = SPACE.suggest(trial)
    return (p["x"] - 0.5) ** 2 + abs(math.log2(p["n"]) - 3) + {"a": 1, "b": 0, "c": 2}[p["s"]]


SAMPLERS = {
    "pg": lambda seed: PolicyGradientSampler(seed=seed, batch_size=4),
    "bandit": lambda seed: EpsilonGreedySampler(seed=seed),
    "dqn": lambda seed: DQNSampler(seed=seed, updates=60),
}


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_a_fresh_instance_rebuilds_the_same_model(name: str) -> None:
    """What a restarted process (or another worker) suggests equals what the long-running
    sampler suggests: the model is a pure function of the stored trials."""
    running = optuna.create_study(sampler=SAMPLERS[name](0))
    running.optimize(objective, n_trials=23)
    fresh = optuna.create_study(sampler=SAMPLERS[name](0))
    fresh.add_trials(running.trials)
    a, b = running.ask(), fresh.ask()
    assert a.number == b.number == 23
    assert SPACE.suggest(a) == SPACE.suggest(b)


def test_pg_cache_matches_a_replay_when_trials_finish_out_of_order() -> None:
    study = optuna.create_study(sampler=PolicyGradientSampler(seed=0))
    study.optimize(objective, n_trials=20)
    records = history(study)
    warm = PolicyGradientSampler(seed=0, batch_size=4)
    warm.build(records[1:12])  # trial 0 "still running": the cached prefix starts at 1
    cold = PolicyGradientSampler(seed=0, batch_size=4)
    assert warm.policy_summary(records) == cold.policy_summary(records)


def test_pg_learns_the_best_category_and_narrows_its_gaussian() -> None:
    errors = []
    for seed in range(3):
        sampler = PolicyGradientSampler(seed=seed)
        study = optuna.create_study(sampler=sampler)
        study.optimize(objective, n_trials=60)
        summary = sampler.policy_summary(history(study))
        probs = summary["s"]["probs"]
        assert max(probs, key=probs.get) == "b"
        assert summary["x"]["sigma"] < 0.25  # started at init_sigma = 0.25
        errors.append(abs(summary["x"]["mu"] - to_unit(SPACE["x"].distribution, 0.5)))
    assert sorted(errors)[1] < 0.15  # the median seed's mean is near the optimum x = 0.5


def test_pg_conditional_head_only_learns_from_trials_where_it_was_active() -> None:
    sampler = PolicyGradientSampler(seed=2, batch_size=2, n_startup_trials=0)
    study = optuna.create_study(sampler=sampler)
    for x, s in [(0.1, "a"), (0.2, "a"), (0.3, "c"), (0.4, "a")]:
        study.enqueue_trial({"x": x, "n": 4, "s": s})
    study.optimize(objective, n_trials=4)
    assert "cool" not in sampler.policy_summary(history(study))


def test_bandit_epsilon_schedule_and_bins() -> None:
    s = EpsilonGreedySampler(n_startup_trials=10, eps_start=0.5, eps_end=0.05, eps_decay=30)
    assert s.epsilon(0) == 1.0 and s.epsilon(9) == 1.0
    assert s.epsilon(10) == pytest.approx(0.5)
    assert s.epsilon(40) == pytest.approx(0.05 + 0.45 / math.e)
    assert s.epsilon(10_000) == pytest.approx(0.05)
    assert s.bins(IntDistribution(0, 3)) == 4  # fewer values than bins: one bin each
    assert s.bins(IntDistribution(1, 1024, log=True)) == 10
    assert s.bins(CategoricalDistribution(["a", "b"])) == 2


def test_bandit_value_function_prefers_the_best_bin() -> None:
    sampler = EpsilonGreedySampler(seed=0)
    study = optuna.create_study(sampler=sampler)
    study.optimize(objective, n_trials=60)
    model = sampler.build(history(study))
    weights = {name: w for (name, _), w in model.weights.items()}
    assert weights["s"].argmax() == 1  # "b"
    assert weights["x"].argmax() in (4, 5, 6, 7)  # x = 0.5 is in bin 6 of 10 over [-2, 2]
    assert weights["n"].argmax() in (4, 5, 6)  # n = 8 is in bin 5 (log space, 1..64)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_multi_objective_is_refused_clearly(name: str) -> None:
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=SAMPLERS[name](0))
    with pytest.raises(UserError, match="nsga2"):
        study.optimize(lambda t: (t.suggest_float("x", 0, 1), 1.0), n_trials=1)


def test_history_uses_pruned_values_ignores_failed_and_respects_direction() -> None:
    study = optuna.create_study(direction="maximize")
    for value, state in [(1.0, TrialState.COMPLETE), (None, TrialState.FAIL)]:
        t = study.ask({"x": FloatDistribution(0, 1)})
        study.tell(t, value, state=state)
    t = study.ask({"x": FloatDistribution(0, 1)})
    t.report(0.25, step=1)
    t.report(0.5, step=3)
    study.tell(t, state=TrialState.PRUNED)
    records = history(study)
    assert [(r.number, r.loss, r.pruned) for r in records] == [(0, -1.0, False), (2, -0.5, True)]
    assert [r.number for r in history(study, include_pruned=False)] == [0]


@pytest.mark.parametrize(
    "dist",
    [
        FloatDistribution(-2, 3),
        FloatDistribution(1e-5, 1e-1, log=True),
        FloatDistribution(0, 1, step=0.25),
        IntDistribution(-3, 4),
        IntDistribution(1, 1024, log=True),
        IntDistribution(16, 256, step=16),
    ],
)
def test_unit_space_round_trip_and_bounds(dist: FloatDistribution | IntDistribution) -> None:
    for u in (0.0, 0.13, 0.5, 0.77, 1.0):
        v = from_unit(dist, u)
        assert dist._contains(dist.to_internal_repr(v))
        assert from_unit(dist, to_unit(dist, v)) == pytest.approx(v)
    assert from_unit(dist, 0.0) == dist.low and from_unit(dist, 1.0) == dist.high


def test_bad_options_are_user_errors() -> None:
    with pytest.raises(UserError, match="batch_size"):
        PolicyGradientSampler(batch_size=0)
    with pytest.raises(UserError, match="init_sigma"):
        PolicyGradientSampler(init_sigma=0.9)
    with pytest.raises(UserError, match="n_bins"):
        EpsilonGreedySampler(n_bins=1)
    with pytest.raises(UserError, match="eps"):
        EpsilonGreedySampler(eps_start=0.1, eps_end=0.5)
    with pytest.raises(UserError, match="updates"):
        DQNSampler(updates=0)


def test_dqn_replay_buffer_is_one_transition_per_choice_with_the_reward_at_the_end() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=12)
    records = history(study)
    sampler = DQNSampler(seed=0, updates=5)
    model = sampler.build(records)
    buf = sampler.transitions(model, records)
    steps = sum(len(r.params) for r in records)
    assert len(buf["a"]) == steps and int(buf["done"].sum()) == len(records)
    assert (buf["r"][~buf["done"]] == 0).all() and buf["r"][buf["done"]].std() > 0
    # the state grows by one chosen bin per step; the next state of a terminal step is empty
    width = sum(model.widths.values())
    assert (buf["s2"][:, :width].sum(1) == buf["s"][:, :width].sum(1) + 1).all()
    assert (buf["next_key"][buf["done"]] == -1).all()
    assert sampler.epsilon(9) == 1.0 and sampler.epsilon(10) == pytest.approx(0.5)


PLANTED = {"a": 2, "b": 0, "c": 3}


def _planted(trial: optuna.Trial) -> float:
    """4 x 4 x 4 configurations, one optimum (0); the rest lose 1 per wrong choice."""
    return float(sum(trial.suggest_categorical(k, [0, 1, 2, 3]) != v for k, v in PLANTED.items()))


def _trials_to_optimum(sampler: optuna.samplers.BaseSampler, cap: int) -> float:
    study = optuna.create_study(sampler=sampler)
    for n in range(1, cap + 1):
        study.optimize(_planted, n_trials=1)
        if study.best_value == 0:
            return n
    return math.inf


def test_dqn_finds_a_planted_optimum_faster_than_random() -> None:
    """Median over 5 seeds of the trials needed to hit the one optimum among 64: random
    needs ~44 in median (1 − (63/64)^n = 1/2), the DQN (10 random startup trials) far fewer."""
    cap = 40
    dqn = [_trials_to_optimum(DQNSampler(seed=s, updates=100), cap) for s in range(5)]
    rnd = [_trials_to_optimum(optuna.samplers.RandomSampler(seed=s), cap) for s in range(5)]
    median_dqn, median_rnd = sorted(dqn)[2], sorted(rnd)[2]
    assert median_dqn <= 25, (dqn, rnd)
    assert median_dqn < median_rnd, (dqn, rnd)
