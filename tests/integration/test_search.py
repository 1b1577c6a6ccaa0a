"""The search end to end on tiny trials: real trainings, pruning, failures recorded, budget
stop, orphaned trials retried after a kill, parallel workers on one SQLite study."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from _train_data import make_data, tiny_recipe_toml
from typer.testing import CliRunner

from lmalloc.cli import app, register
from lmalloc.errors import UserError
from lmalloc.rundir import RunDir
from lmalloc.search import study as st

RECIPE = tiny_recipe_toml()

SPACE = """
[params.lr]
type = "float"
low = 1e-4
high = 3e-2
log = true
[params.schedule]
type = "categorical"
choices = ["cosine", "wsd"]
[params.cooldown_frac]
type = "float"
low = 0.1
high = 0.5
when = { schedule = "wsd" }
"""


@pytest.fixture
def run(tmp_path: Path) -> Path:
    root = tmp_path / "run"
    make_data(root / "data")
    (tmp_path / "tiny.toml").write_text(RECIPE)
    (tmp_path / "space.toml").write_text(SPACE)
    return root


def settings(run: Path, **kw: object) -> st.SearchSettings:
    args = {"space": run.parent / "space.toml", "recipe": run.parent / "tiny.toml",
            "strategy": "random", "n_trials": 4, "pruner": "none", **kw}
    return st.build_settings(run, **args)  # type: ignore[arg-type]


def test_search_trains_trials_and_charges_the_ledger(run: Path) -> None:
    summary = st.run_search(settings(run))
    assert summary["counts"] == {"complete": 4}
    values = [r["value"] for r in summary["trials"]]
    assert all(0 < v < 20 for v in values)  # bits per byte of a real run
    assert summary["best"][0]["values"][0] == min(values)
    ledger = RunDir(run).manifest()["ledger"]
    assert [r["trial"] for r in ledger] == [0, 1, 2, 3]
    assert all(r["stage"] == "explore" and r["flops"] > 0 for r in ledger)
    for n in range(4):
        assert (run / "trials" / str(n) / "metrics.jsonl").exists()
    # resuming with a larger trial count continues the same study
    summary = st.run_search(settings(run, n_trials=5))
    assert summary["counts"] == {"complete": 5}


def test_trials_train_on_the_main_thread_while_a_helper_polls(
        run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # torch's CPU kernels ran 1.5x slower per step on a helper thread (bench/thread_step.py)
    import threading

    from lmalloc.train.trainer import Trainer

    fit, trained_on, polled_on = Trainer.fit, [], []

    def spy(self: Trainer) -> object:
        trained_on.append(threading.current_thread() is threading.main_thread())
        return fit(self)

    monkeypatch.setattr(Trainer, "fit", spy)
    summary = st.run_search(settings(run, n_trials=2),
                            on_poll=lambda study: polled_on.append(threading.current_thread()))
    assert summary["counts"] == {"complete": 2}
    assert trained_on == [True, True]
    assert polled_on  # at least the closing poll, on the main thread once training is over


@pytest.mark.parametrize("pruner", ["none", "asha"])
def test_a_trial_is_evaluated_along_the_way_only_for_a_pruner(run: Path, pruner: str) -> None:
    # a recipe that asks for one closing evaluation: without a pruner nothing reads more
    (run.parent / "tiny.toml").write_text(tiny_recipe_toml(eval_every=0))
    st.run_search(settings(run, n_trials=1, pruner=pruner))
    rows = (run / "trials" / "0" / "metrics.jsonl").read_text().splitlines()
    evals = sum('"kind": "eval"' in line for line in rows)
    assert evals == 1 if pruner == "none" else evals > 1


def test_a_second_study_in_the_run_keeps_its_own_trials(run: Path) -> None:
    from dataclasses import replace

    st.run_search(settings(run, n_trials=2))
    other = st.run_search(replace(settings(run, n_trials=2), study_name="horizon"))
    assert other["study"] == "horizon" and other["counts"] == {"complete": 2}
    for n in range(2):  # the first study's trial folders are not reused
        assert (run / "trials" / str(n) / "metrics.jsonl").exists()
        assert (run / "trials" / f"horizon-{n}" / "metrics.jsonl").exists()
    assert len(RunDir(run).manifest()["ledger"]) == 4


def test_diverged_trial_is_recorded_and_search_goes_on(run: Path) -> None:
    space = run.parent / "space.toml"
    space.write_text('[params.lr]\ntype = "categorical"\nchoices = [1e3, 3e-3]\n')
    summary = st.run_search(settings(run, strategy="grid", n_trials=2))
    by_lr = {r["params"]["lr"]: r for r in summary["trials"]}
    assert by_lr[1e3]["state"] == "fail"
    assert by_lr[1e3]["status"] == "diverged"
    assert by_lr[3e-3]["state"] == "complete"


def test_orphaned_running_trial_is_failed_and_retried(run: Path) -> None:
    s = settings(run, n_trials=2)
    study = st.load_study(s)
    space = {"lr": optuna.distributions.FloatDistribution(1e-4, 3e-2, log=True),
             "schedule": optuna.distributions.CategoricalDistribution(["cosine", "wsd"])}
    dead = study.ask(space)  # a worker killed mid-trial leaves this RUNNING, params set
    dead_params = dead.params
    summary = st.run_search(s)
    states = {r["number"]: r for r in summary["trials"]}
    assert states[0]["state"] == "fail" and states[0]["status"] == "orphaned"
    assert states[1]["params"] == dead_params  # the retry ran the same configuration
    assert states[1]["state"] == "complete"


def test_budget_stops_the_search_and_counts_every_trial(run: Path) -> None:
    s = settings(run, n_trials=None, budget="2e9flops", hardware="cpu")
    assert 0 < s.trial_flops < 1e9
    summary = st.run_search(s)
    per_trial = [r["flops"] for r in RunDir(run).manifest()["ledger"]]
    assert len(per_trial) == len(summary["trials"]) == int(2e9 // s.trial_flops)
    # every trial is charged in full; none starts that the rest of the budget cannot pay for
    assert sum(per_trial) <= 2e9 < sum(per_trial) + s.trial_flops * 1.001


def test_two_workers_share_one_study_without_loss(run: Path) -> None:
    summary = st.run_search(settings(run, n_trials=6), workers=2)
    numbers = sorted(r["number"] for r in summary["trials"])
    assert numbers == list(range(len(numbers)))
    assert summary["counts"].get("complete", 0) >= 6
    assert len(RunDir(run).manifest()["ledger"]) == len(numbers)


def test_bad_input_is_a_clear_error(run: Path) -> None:
    with pytest.raises(UserError, match="unknown search strategy"):
        settings(run, strategy="bogus")
    with pytest.raises(UserError, match="smaller than one trial"):
        settings(run, n_trials=None, budget="1e6flops", hardware="cpu")
    (run.parent / "space.toml").write_text('[params.lrr]\ntype = "float"\nlow = 1\nhigh = 2\n')
    with pytest.raises(UserError, match="neither model nor trainer fields"):
        st.run_search(settings(run))
    with pytest.raises(UserError, match="cannot open the study storage"):
        st.open_storage("postgresql://nobody@127.0.0.1:1/none")


def test_cli_search_json_and_status(run: Path) -> None:
    register()
    args = ["search", "--run", str(run), "--space", str(run.parent / "space.toml"),
            "--recipe", str(run.parent / "tiny.toml"), "--trials", "2", "--strategy", "tpe",
            "--json"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["counts"] == {"complete": 2}
    res = CliRunner().invoke(app, [*args[:7], "--status", "--json"])
    assert res.exit_code == 0 and len(json.loads(res.output)["trials"]) == 2
    res = CliRunner().invoke(app, [*args[:7], "--strategy", "nope", "--trials", "1"])
    assert res.exit_code != 0


def test_configuration_over_the_memory_limit_is_rejected_before_it_runs(run: Path) -> None:
    s = settings(run, n_trials=2)
    s.memory_bytes = 1024.0  # no model fits in 1 KiB
    summary = st.run_search(s)
    assert summary["counts"] == {"infeasible": 2}
    assert all("predicted peak memory" in r["reason"] for r in summary["trials"])
    assert not (run / "trials").exists()  # nothing was trained
    frozen = st.load_study(s).trials[0]
    assert any(k.startswith("constraints") for k in frozen.system_attrs)


def test_pareto_search_without_pruner_trains_every_trial_fully(run: Path) -> None:
    s = settings(run, n_trials=2, pruner="none", second_objective="flops")
    summary = st.run_search(s)
    assert summary["counts"] == {"complete": 2}
    assert all(len(b["values"]) == 2 and b["values"][1] > 0 for b in summary["best"])


@pytest.mark.parametrize("pruner", ["asha", "hyperband"])
def test_single_objective_pruners_prune_and_charge_partial_flops(run: Path, pruner: str) -> None:
    """A wide learning-rate range gives clearly worse trials; the pruner stops some of them
    early, and the ledger charges a pruned trial what it trained (less than a full one)."""
    s = settings(run, n_trials=10, pruner=pruner, strategy="random")
    summary = st.run_search(s)
    states = {r["number"]: r["state"] for r in summary["trials"]}
    pruned = [n for n, state in states.items() if state == "pruned"]
    assert pruned and "complete" in states.values(), summary["counts"]
    flops = {r["trial"]: r["flops"] for r in RunDir(run).manifest()["ledger"]}
    full = max(flops[n] for n, state in states.items() if state == "complete")
    assert all(0 < flops[n] < full for n in pruned)


def test_pareto_search_prunes_dominated_trials_at_rungs(run: Path) -> None:
    """Two objectives (val bpb, parameters): Optuna cannot prune here; the Pareto rung rule
    does, and no trial on the final front of the completed ones was a pruned one."""
    (run.parent / "space.toml").write_text(SPACE + """[params.d_model]
type = "categorical"
choices = [16, 32, 64]
""")
    s = settings(run, n_trials=12, pruner="asha", second_objective="params")
    summary = st.run_search(s)
    assert summary["counts"].get("pruned", 0) >= 1, summary["counts"]
    reasons = [r["reason"] for r in summary["trials"] if r["state"] == "pruned"]
    assert all("Pareto rung" in r for r in reasons)
    assert all(len(b["values"]) == 2 for b in summary["best"])
