"""A shared study on a real PostgreSQL server: three ``lmalloc search --worker`` processes, one
killed mid-trial; a trial orphaned after the last worker; and the bad inputs (an unreachable
or silent database, a study of another space).

The server is the project's own (scripts/ensure_postgres.sh: Debian's package, on 127.0.0.1);
without it these tests skip with the script's reason. Each test works in a database of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from _train_data import LR_SCHEDULE_SPACE_TOML, make_data, tiny_recipe_toml

from lmalloc.errors import UserError
from lmalloc.rundir import RunDir
from lmalloc.search import study as st

pytestmark = pytest.mark.postgres

REPO = Path(__file__).resolve().parents[2]

RECIPE = tiny_recipe_toml(max_tokens=1024, eval_every=2, eval_tokens=256)

SPACE = LR_SCHEDULE_SPACE_TOML

OTHER_SPACE = SPACE.replace("high = 1e-2", "high = 3e-2")

N_TRIALS = 30
# heartbeats every second; a trial silent for 8 s is dead (defaults: 30 s and 120 s)
FAST_HEARTBEAT = {"LMALLOC_HEARTBEAT_INTERVAL": "1", "LMALLOC_HEARTBEAT_GRACE": "8"}


@pytest.fixture(scope="module")
def server() -> str:
    """The URL of the project's PostgreSQL server (started by the script when needed)."""
    pytest.importorskip("psycopg", reason="the postgres extra (psycopg) is not installed")
    res = subprocess.run(["sh", str(REPO / "scripts" / "ensure_postgres.sh")],
                         capture_output=True, text=True, timeout=180)
    lines = res.stdout.strip().splitlines()
    if res.returncode != 0 or not lines:
        pytest.skip(f"no PostgreSQL server: {res.stderr.strip() or 'the script printed no URL'}")
    import psycopg

    try:
        psycopg.connect(admin_url(lines[-1]), connect_timeout=10).close()
    except psycopg.Error as e:
        pytest.skip(f"the PostgreSQL server at {lines[-1]} does not answer: {e}")
    return lines[-1]


def admin_url(url: str) -> str:
    """The libpq form of a SQLAlchemy URL (psycopg connects with it directly)."""
    return url.replace("postgresql+psycopg://", "postgresql://")


@pytest.fixture
def db_url(server: str) -> Iterator[str]:
    """A fresh database on the server, dropped afterwards."""
    import psycopg

    name = f"lmalloc_test_{uuid.uuid4().hex[:10]}"
    admin = admin_url(server)
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield server.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "tiny.toml").write_text(RECIPE)
    (tmp_path / "space.toml").write_text(SPACE)
    (tmp_path / "other.toml").write_text(OTHER_SPACE)
    make_data(tmp_path / "run0" / "data")
    return tmp_path


def lmalloc_cmd(*args: str) -> list[str]:
    exe = Path(sys.executable).with_name("lmalloc")
    head = [str(exe)] if exe.exists() else [sys.executable, "-c",
                                            "from lmalloc.cli.app import main; main()"]
    return [*head, *args]


def search_args(run: Path, url: str, space: Path, *extra: str) -> list[str]:
    return lmalloc_cmd("search", "--run", str(run), "--space", str(space), "--recipe",
                       str(run.parent / "tiny.toml"), "--strategy", "random", "--pruner",
                       "none", "--storage", url, "--json", *extra)


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1", **extra}


def kill_mid_trial(proc: subprocess.Popen[str], run: Path, url: str) -> int:
    """SIGKILL ``proc`` while it trains a trial (after two of its trials); returns the trial's
    number. Each worker has its own run directory, so its trials/ folder tells which trials
    it runs, its ledger which it has charged, and the study which is still RUNNING."""
    storage = optuna.storages.RDBStorage(url)
    study_id = None
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
        trials = run / "trials"
        mine = sorted(int(p.name) for p in trials.iterdir()) if trials.is_dir() else []
        if len(mine) < 3:
            continue
        study_id = study_id or storage.get_study_id_from_name(st.STUDY_NAME)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, mine[-1])
        charged = {r["trial"] for r in RunDir(run).manifest().get("ledger", [])}
        if (mine[-1] not in charged
                and storage.get_trial(trial_id).state == optuna.trial.TrialState.RUNNING):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return mine[-1]
    raise AssertionError(f"the worker never ran a third trial (exit code {proc.poll()})")


def test_three_workers_share_a_study_and_survive_a_killed_one(
    files: Path, db_url: str
) -> None:
    for k in (1, 2):
        shutil.copytree(files / "run0" / "data", files / f"run{k}" / "data")
    t0 = time.monotonic()
    procs = [
        subprocess.Popen(
            ["nice", "-n", "5", *search_args(files / f"run{k}", db_url, files / "space.toml",
                                             "--worker", "--trials", str(N_TRIALS), "--seed",
                                             str(k))],
            env=env(**FAST_HEARTBEAT), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        for k in range(3)
    ]
    try:
        killed = kill_mid_trial(procs[0], files / "run0", db_url)
        state = optuna.load_study(study_name=st.STUDY_NAME, storage=db_url).trials[killed].state
        assert state == optuna.trial.TrialState.RUNNING, "the kill missed the trial"
        outs = [p.communicate(timeout=240) for p in procs[1:]]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (out, err) in zip(procs[1:], outs, strict=True):
        assert p.returncode == 0, err[-2000:]
        json.loads(out)
    trials = optuna.load_study(study_name=st.STUDY_NAME, storage=db_url).trials
    numbers = [t.number for t in trials]
    states = [t.state.name for t in trials]
    assert numbers == list(range(len(trials)))  # none lost, none duplicated
    assert "RUNNING" not in states and "WAITING" not in states  # none stuck
    assert len(trials) >= N_TRIALS
    dead = trials[killed]
    assert dead.state.name == "FAIL" and dead.user_attrs["status"] == "orphaned"
    assert "heartbeat" in dead.user_attrs["reason"]
    retries = [t for t in trials if t.user_attrs.get("retry_of") == killed]
    assert len(retries) == 1 and retries[0].params == dead.params
    assert retries[0].state.name == "COMPLETE"
    assert states.count("FAIL") == 1 and states.count("COMPLETE") == len(trials) - 1
    # every finished trial was trained (and charged) exactly once, by one worker
    ledgers = [r["trial"] for k in range(3)
               for r in RunDir(files / f"run{k}").manifest().get("ledger", [])]
    # (a kill that lands in the few ms between the dead worker's charge and its tell leaves
    # the killed trial charged once: that compute was spent)
    assert len(ledgers) == len(set(ledgers))
    assert set(ledgers) - {killed} == set(numbers) - {killed}
    span = max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)
    print(f"\n{len(trials)} trials by 3 workers in {time.monotonic() - t0:.1f} s (trials "
          f"{span.total_seconds():.1f} s); trial {killed} killed, retried as {retries[0].number}")


def test_unreachable_database_is_a_quick_clear_error(files: Path) -> None:
    pytest.importorskip("psycopg", reason="the postgres extra (psycopg) is not installed")
    url = "postgresql+psycopg://lmalloc:s3cret@127.0.0.1:1/nowhere"  # connection refused
    res = subprocess.run(
        search_args(files / "run0", url, files / "space.toml", "--trials", "1"),
        env=env(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "127.0.0.1:1/nowhere" in res.stderr and "s3cret" not in res.stderr + res.stdout
    assert "Traceback" not in res.stderr
    assert not (files / "run0" / "trials").exists()


def test_a_server_that_never_answers_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """A port that accepts connections but never speaks: the connect timeout ends the wait."""
    pytest.importorskip("psycopg", reason="the postgres extra (psycopg) is not installed")
    monkeypatch.setenv("LMALLOC_DB_CONNECT_TIMEOUT", "2")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the handshake; nobody ever replies
        port = silent.getsockname()[1]
        t0 = time.monotonic()
        with pytest.raises(UserError, match=f"127.0.0.1:{port}/x"):
            st.open_storage(f"postgresql+psycopg://u:p@127.0.0.1:{port}/x")
        assert time.monotonic() - t0 < 15


def test_joining_with_another_space_is_refused_and_leaves_the_study_alone(
    files: Path, db_url: str
) -> None:
    s = st.build_settings(files / "run0", space=files / "space.toml",
                          recipe=files / "tiny.toml", strategy="random", n_trials=2,
                          pruner="none", storage=db_url)
    study = st.load_study(s)  # creates the study and records its space
    dists = {"lr": optuna.distributions.FloatDistribution(1e-3, 1e-2, log=True),
             "schedule": optuna.distributions.CategoricalDistribution(["cosine", "wsd"])}
    for lr in (2e-3, 4e-3):  # two finished trials (their training is not the point here)
        study.add_trial(optuna.trial.create_trial(
            params={"lr": lr, "schedule": "wsd"}, distributions=dists, value=2.0))
    before = optuna.load_study(study_name=st.STUDY_NAME, storage=db_url)
    snapshot = (before.user_attrs, [(t.number, t.state, t.params) for t in before.trials])
    assert before.user_attrs["space"] == s.space  # recorded when the study was created
    res = subprocess.run(
        search_args(files / "run0", db_url, files / "other.toml", "--worker", "--trials", "4"),
        env=env(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "another search" in res.stderr and "lr is" in res.stderr
    after = optuna.load_study(study_name=st.STUDY_NAME, storage=db_url)
    assert (after.user_attrs, [(t.number, t.state, t.params) for t in after.trials]) == snapshot
    assert optuna.get_all_study_names(db_url) == [st.STUDY_NAME]
    assert not (files / "run0" / "trials").exists()  # nothing was trained


def test_a_trial_orphaned_after_the_last_worker_is_failed_on_next_open(
    files: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No worker starts another trial: opening the study (``--status``, a new worker) is
    enough to fail the dead worker's trial and enqueue its retry."""
    monkeypatch.setenv("LMALLOC_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("LMALLOC_HEARTBEAT_GRACE", "2")
    s = st.build_settings(files / "run0", space=files / "space.toml",
                          recipe=files / "tiny.toml", strategy="random", n_trials=2,
                          pruner="none", storage=db_url)
    study = st.load_study(s)
    with warnings.catch_warnings():  # Optuna: heartbeats are meant for optimize(); ask is ours
        warnings.simplefilter("ignore", UserWarning)
        dead = study.ask({"lr": optuna.distributions.FloatDistribution(1e-3, 1e-2, log=True)})
    study._storage.record_heartbeat(dead._trial_id)  # its worker's last sign of life
    time.sleep(3.5)
    trials = st.load_study(s).trials
    assert trials[0].state.name == "FAIL" and trials[0].user_attrs["status"] == "orphaned"
    assert trials[1].state.name == "WAITING" and trials[1].user_attrs["retry_of"] == 0
    assert trials[1].system_attrs["fixed_params"] == dead.params
