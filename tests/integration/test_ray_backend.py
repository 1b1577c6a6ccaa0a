"""``lmalloc search --backend ray`` against a real local Ray head with 2 worker CPUs.

The head is started by the project's own script (``scripts/ensure_ray.sh``, idempotent, left
running for the next module; ``sh scripts/ensure_ray.sh stop`` ends it). Ray binds every
interface, so the script starts it only inside a loopback-only network namespace:
``test_closed_doors.py`` runs this module in one it makes (``scripts/private_net.sh``), and
outside one the head's tests skip with that reason. Everything is skipped with a reason when the
``ray`` extra is missing or the head cannot start.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from _train_data import LR_SCHEDULE_SPACE_TOML, make_data, tiny_recipe_toml
from typer.testing import CliRunner

from lmalloc.cli import app, register
from lmalloc.errors import UserError
from lmalloc.rundir import RunDir
from lmalloc.search import study as st

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[2]
PORT = int(os.environ.get("LMALLOC_RAY_PORT", "6390"))
ADDRESS = f"127.0.0.1:{PORT}"

RECIPE = tiny_recipe_toml()

SPACE = LR_SCHEDULE_SPACE_TOML


@pytest.fixture(scope="module")
def ray_head() -> str:
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install "
                        "'lmalloc[ray]')")
    try:
        proc = subprocess.run(["sh", str(REPO / "scripts" / "ensure_ray.sh"), "start"],
                              capture_output=True, text=True, timeout=240,
                              env={**os.environ, "LMALLOC_RAY_PORT": str(PORT)})
    except subprocess.TimeoutExpired:
        pytest.skip("the local Ray head did not start within 240 s")
    if proc.returncode == 3 and "refusing" in proc.stderr:
        pytest.skip("outside a loopback-only network namespace: test_closed_doors.py runs "
                    "these tests in one (or: sh scripts/private_net.sh pytest -m ray ...)")
    if proc.returncode != 0:
        pytest.skip(f"cannot start a local Ray head: {(proc.stderr or proc.stdout)[-400:]}")
    return ADDRESS


@pytest.fixture(scope="module")
def ray_driver(ray_head: str) -> Iterator[str]:
    """This process connected once for the module: the searches reuse the connection (as in a
    notebook), so the Ray workers that imported torch stay warm from one test to the next."""
    import logging

    import ray

    ray.init(address=ray_head, log_to_driver=False, configure_logging=False,
             logging_level=logging.WARNING)
    yield ray_head
    ray.shutdown()


def _run(tmp_path: Path, name: str) -> Path:
    root = tmp_path / name
    make_data(root / "data")
    (tmp_path / "tiny.toml").write_text(RECIPE)
    (tmp_path / "space.toml").write_text(SPACE)
    return root


def _settings(run: Path, **kw: Any) -> st.SearchSettings:
    s = st.build_settings(run, space=run.parent / "space.toml", recipe=run.parent / "tiny.toml",
                          strategy="random", n_trials=kw.pop("n_trials", 4), pruner="none")
    for key, value in kw.items():
        setattr(s, key, value)
    return s


def _trials(run: Path) -> list[optuna.trial.FrozenTrial]:
    storage = f"sqlite:///{run.resolve() / 'study.db'}"
    return optuna.load_study(study_name=st.STUDY_NAME, storage=storage).trials


def test_connects_checks_resources_and_disconnects(ray_head: str) -> None:
    code = f"""
import ray
from lmalloc.errors import UserError
from lmalloc.search.ray_backend import ray_session
from lmalloc.search.study import SearchSettings
s = SearchSettings(run_dir=".", space={{}}, base_model={{}}, base_train={{}},
                   backend="ray", address="{ray_head}")
with ray_session(s) as r:
    print("cpus", r.cluster_resources().get("CPU"))
print("connected after", ray.is_initialized())
s.trial_cpus = 64
try:
    with ray_session(s):
        pass
except UserError as e:
    print("error", e)
print("connected after", ray.is_initialized())
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "cpus 2.0" and lines[1] == lines[3] == "connected after False"
    assert "no node of the Ray cluster can run a trial that asks for 64 CPU(s)" in lines[2]


@pytest.mark.slow  # a new Ray job starts workers that import torch
def test_cli_ray_search_runs_trials_in_two_workers(tmp_path: Path, ray_driver: str) -> None:
    run = _run(tmp_path, "ray")
    register()
    res = CliRunner().invoke(app, [
        "search", "--run", str(run), "--space", str(tmp_path / "space.toml"), "--recipe",
        str(tmp_path / "tiny.toml"), "--strategy", "random", "--trials", "4", "--pruner",
        "none", "--backend", "ray", "--address", ray_driver, "--workers", "2", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["counts"] == {"complete": 4}
    trials = _trials(run)
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert all(t.state == optuna.trial.TrialState.COMPLETE and 0 < t.value < 20 for t in trials)
    workers = {t.user_attrs["worker"] for t in trials}
    assert len(workers) == 2 and all(w.split(":")[-1] != str(os.getpid()) for w in workers)
    ledger = RunDir(run).manifest()["ledger"]
    assert sorted(r["trial"] for r in ledger) == [0, 1, 2, 3]
    assert all((run / "trials" / str(n) / "metrics.jsonl").exists() for n in range(4))
    # the same record as a trial of the local backend (plus which worker ran it)
    local = _run(tmp_path, "local")
    st.run_search(_settings(local, n_trials=1))
    reference = _trials(local)[0]
    assert set(trials[0].user_attrs) == set(reference.user_attrs) | {"worker"}
    assert set(trials[0].system_attrs) == set(reference.system_attrs)
    assert len(trials[0].intermediate_values) == len(reference.intermediate_values) > 0


def _running_workers(run: Path) -> list[tuple[int, str]]:
    """``(trial number, worker)`` of RUNNING trials, read straight from SQLite, read-only (a
    second Optuna client creating the schema beside the driver would race it)."""
    db = run / "study.db"
    if not db.exists():
        return []
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
            rows = con.execute(
                "SELECT t.number, a.value_json FROM trials t JOIN trial_user_attributes a "
                "ON a.trial_id = t.trial_id WHERE t.state = 'RUNNING' AND a.key = 'worker' "
                "ORDER BY t.number").fetchall()
    except sqlite3.Error:  # the schema is not there yet
        return []
    return [(int(n), json.loads(w)) for n, w in rows]


def _kill_first_running(run: Path, killed: list[int], stop: threading.Event) -> None:
    """Kill the Ray worker of the first trial seen RUNNING (its pid is a user attribute)."""
    while not stop.is_set() and not killed:
        running = _running_workers(run)
        if running:
            number, worker = running[0]
            os.kill(int(worker.split(":")[-1]), signal.SIGKILL)
            killed.append(number)
        time.sleep(0.05)


@pytest.mark.slow  # a new Ray job starts workers that import torch
def test_killed_worker_fails_its_trial_and_the_study_goes_on(tmp_path: Path,
                                                              ray_driver: str) -> None:
    run = _run(tmp_path, "kill")
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_first_running, args=(run, killed, stop))
    killer.start()
    try:
        summary = st.run_search(_settings(run, backend="ray", address=ray_driver), workers=2)
    finally:
        stop.set()
        killer.join()
    assert len(killed) == 1
    rows = {r["number"]: r for r in summary["trials"]}
    dead = rows[killed[0]]
    assert dead["state"] == "fail" and dead["status"] == "worker_died"
    assert "Ray worker died" in dead["reason"]
    assert summary["counts"] == {"fail": 1, "complete": 3}
    retry = [t for t in _trials(run) if t.user_attrs.get("retry_of") == killed[0]]
    assert len(retry) == 1 and retry[0].params == dead["params"]
    assert retry[0].state == optuna.trial.TrialState.COMPLETE
    ledger = RunDir(run).manifest()["ledger"]
    assert sorted(r["trial"] for r in ledger) == sorted(rows)  # the killed one is charged too
    assert not any(t.state == optuna.trial.TrialState.RUNNING for t in _trials(run))


def test_budget_stops_the_ray_search_with_trials_in_flight(tmp_path: Path,
                                                           ray_driver: str) -> None:
    run = _run(tmp_path, "budget")
    s = st.build_settings(run, space=tmp_path / "space.toml", recipe=tmp_path / "tiny.toml",
                          strategy="random", budget="2e9flops", hardware="cpu", pruner="none")
    s.backend, s.address = "ray", ray_driver
    summary = st.run_search(s, workers=2)
    per_trial = [r["flops"] for r in RunDir(run).manifest()["ledger"]]
    assert len(per_trial) == len(summary["trials"]) == int(2e9 // s.trial_flops) >= 2
    # a trial starts only if the budget pays for it and for every trial already in flight
    assert sum(per_trial) <= 2e9 < sum(per_trial) + s.trial_flops * 1.001


def _main(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    """The real entry point (CliRunner calls the Typer app, not the main() that exits 2)."""
    code = "import sys; from lmalloc.cli import main; sys.argv[0] = 'lmalloc'; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1", **env})


def test_unreachable_address_is_exit_2_and_leaves_nothing(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="the ray extra is not installed")
    run = _run(tmp_path, "unreachable")
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    t0 = time.monotonic()
    proc = _main(["search", "--run", str(run), "--space", str(tmp_path / "space.toml"),
                  "--recipe", str(tmp_path / "tiny.toml"), "--trials", "2", "--backend", "ray",
                  "--address", "127.0.0.1:1"])
    assert proc.returncode == 2, proc.stderr
    assert "cannot reach the Ray cluster at '127.0.0.1:1'" in " ".join(proc.stderr.split())
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - t0 < 60  # Ray alone would retry for minutes
    after = sorted(p.relative_to(run) for p in run.rglob("*") if p.name != "lmalloc.log")
    assert after == before  # no study.db, no lock, no trials/
    with pytest.raises(UserError, match="invalid address"):
        st.run_search(_settings(run, backend="ray", address="nowhere"))


def test_ray_backend_without_ray_is_exit_2_and_local_needs_no_ray(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    run = _run(tmp_path, "noray")
    register()
    res = CliRunner().invoke(app, [
        "search", "--run", str(run), "--space", str(tmp_path / "space.toml"), "--recipe",
        str(tmp_path / "tiny.toml"), "--trials", "2", "--backend", "ray"])
    assert isinstance(res.exception, UserError), res.output
    assert res.exception.exit_code == 2
    assert "pip install 'lmalloc[ray]'" in str(res.exception)
    assert not (run / "study.db").exists()
    with pytest.raises(UserError, match="invalid backend"):
        st.run_search(_settings(run, backend="slurm"))
    assert st.run_search(_settings(run, n_trials=1))["counts"] == {"complete": 1}
