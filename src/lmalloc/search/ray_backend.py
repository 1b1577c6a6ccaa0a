"""Trials on a Ray cluster: ``lmalloc search --backend ray --address auto|HOST:PORT``.

Why one Ray task per trial (and not one long-lived worker loop per CPU): Optuna's ask/tell
interface splits a trial into the part that needs the whole study (sampling, in the driver)
and the part that needs a machine (training, anywhere). The driver asks the study for a trial,
samples its parameters with the one sampler of the search, and submits a Ray task declaring
the trial's resources (``trial_cpus``, ``trial_gpus``); Ray places it on any node with room.
The task reopens the same Optuna storage, trains through the same objective as the local
backend (intermediate values for the pruner, user attributes, the ledger charge all go straight
to the storage and the run directory), and returns only how the trial ended; the driver then
tells the study. So a task is a plain function: Ray owns scheduling, placement and detecting
dead workers, and nothing here is cluster code.

Failures: a worker process that dies (killed, out of memory, its node lost) surfaces as a Ray
system error; its trial is recorded FAIL with ``status = "worker_died"`` and the reason, the
wall time it ran is charged to the ledger, its parameters are enqueued again (at most
``max_retry`` times, as for orphans of the local backend), and the search goes on. Ray's own
task retries are off so that every attempt is a visible trial. An exception raised by the
trial code itself is a bug: the trial is failed and the exception re-raised.

Shared files: trials write ``trials/<n>/`` and charge ``manifest.json`` in the run directory,
and reach the study through its storage URL, from the worker's machine. On one machine that
is the local disk; on several machines the run directory must be on a shared filesystem with
working ``flock`` (NFS v4, Lustre, ...), and the study should be an RDB server
(``--storage postgresql://...``) rather than SQLite on that filesystem.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from lmalloc.errors import UserError, invalid
from lmalloc.search.objective import TrialFailed
from lmalloc.search.space import SearchSpace
from lmalloc.search.storage import heartbeat
from lmalloc.search.study import (
    BudgetedObjective,
    SearchSettings,
    budget_left,
    finished_count,
    grid_done,
    make_pruner,
    open_storage,
    storage_url,
)

INSTALL_HINT = "pip install 'lmalloc[ray]'"
CONNECT_TIMEOUT_S = 5.0
_STORAGES: dict[str, optuna.storages.BaseStorage] = {}  # per Ray worker process


def import_ray() -> Any:
    """The ``ray`` module, or a :class:`UserError` saying how to install it (Ray is optional)."""
    try:
        import ray
    except ImportError:
        raise UserError(
            f"--backend ray needs Ray, which is not installed here: {INSTALL_HINT} (or use "
            "the default --backend local)"
        ) from None
    return ray


def _parse_address(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of ``HOST:PORT`` or ``ray://HOST:PORT``; None for ``auto``."""
    if address == "auto":
        return None
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise invalid("address", address, "'auto', HOST:PORT or ray://HOST:PORT of a Ray head")
    return host.strip("[]"), int(port)


def _check_address(address: str) -> None:
    """Fail fast on an unreachable ``HOST:PORT``: Ray itself retries for minutes."""
    target = _parse_address(address)
    if target is None:
        return
    try:
        socket.create_connection(target, CONNECT_TIMEOUT_S).close()
    except OSError as e:
        raise UserError(
            f"cannot reach the Ray cluster at {address!r} ({e}). Start a head there (`ray start "
            "--head`, or scripts/ensure_ray.sh for a local one) or check the address"
        ) from None


def _check_resources(ray: Any, s: SearchSettings) -> None:
    """A trial that no node can hold would wait forever: say so now instead."""
    if s.trial_cpus < 0 or s.trial_gpus < 0:
        raise invalid("trial resources", (s.trial_cpus, s.trial_gpus), "CPUs and GPUs >= 0")
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    fits = [r for r in nodes
            if r.get("CPU", 0) >= s.trial_cpus and r.get("GPU", 0) >= s.trial_gpus]
    if not fits:
        have = ", ".join(f"{r.get('CPU', 0):g} CPU/{r.get('GPU', 0):g} GPU" for r in nodes)
        raise UserError(
            f"no node of the Ray cluster can run a trial that asks for {s.trial_cpus:g} CPU(s) "
            f"and {s.trial_gpus:g} GPU(s) (nodes: {have or 'none'}); lower --trial-cpus / "
            "--trial-gpus or add nodes"
        )


@contextlib.contextmanager
def ray_session(s: SearchSettings) -> Iterator[Any]:
    """Connected to the cluster at ``s.address`` for the duration (nothing is written before).

    An already connected driver (a notebook, a Ray job) is reused and left connected.
    """
    ray = import_ray()
    _parse_address(s.address)
    if ray.is_initialized():
        _check_resources(ray, s)
        yield ray
        return
    _check_address(s.address)
    try:
        ray.init(address=s.address, log_to_driver=False, logging_level=logging.WARNING,
                 configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise UserError(
            f"cannot connect to the Ray cluster at {s.address!r}: {e}. Start one (`ray start "
            "--head`, or scripts/ensure_ray.sh) or give --address HOST:PORT"
        ) from None
    try:
        _check_resources(ray, s)
        yield ray
    finally:
        ray.shutdown()


def _portable(s: SearchSettings) -> dict[str, Any]:
    """The settings as plain data with absolute paths (a worker's cwd is not ours)."""
    url = storage_url(s.run_dir, s.storage)
    if url.startswith("journal:"):
        url = "journal:" + str(Path(url.removeprefix("journal:").removeprefix("//")).resolve())
    elif url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        url = "sqlite:///" + str(Path(url.removeprefix("sqlite:///")).resolve())
    return {**dataclasses.asdict(s), "run_dir": str(Path(s.run_dir).resolve()), "storage": url}


def run_trial_task(settings: dict[str, Any], trial_id: int, threads: int) -> dict[str, Any]:
    """The Ray task: train the trial the driver asked for and say how it ended.

    Runs in a Ray worker process. Its parameters are already in the storage (sampled by the
    driver), so the objective's ``suggest`` calls read them back; a random sampler stands in
    for the real one, which is never consulted here.
    """
    import torch

    torch.set_num_threads(threads)
    s = SearchSettings(**settings)
    url = storage_url(s.run_dir, s.storage)
    if url not in _STORAGES:  # one engine per worker process, not one per trial
        _STORAGES[url] = open_storage(url, s.max_retry)
    study = optuna.load_study(
        study_name=s.study_name, storage=_STORAGES[url],
        sampler=optuna.samplers.RandomSampler(),
        pruner=make_pruner(s.pruner, s.base_train.get("max_tokens")),
    )
    trial = optuna.Trial(study, trial_id)
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    try:  # heartbeats (shared databases only) let other workers retry it if all of Ray dies
        with heartbeat(study, trial_id):
            value = BudgetedObjective(s)(trial)
    except optuna.TrialPruned as e:
        return {"state": "pruned", "reason": str(e)}
    except TrialFailed as e:
        return {"state": "fail", "reason": str(e)}
    return {"state": "complete", "values": list(value) if isinstance(value, tuple) else [value]}


@dataclasses.dataclass
class _Flight:
    trial: optuna.Trial
    started: float


def _can_start(s: SearchSettings, study: optuna.Study, in_flight: int) -> bool:
    """Another trial fits: under ``n_trials`` and the budget pays for it and all in flight."""
    if s.n_trials is not None and finished_count(study) + in_flight >= s.n_trials:
        return False
    if s.strategy == "grid" and grid_done(study):
        return False
    left, need = budget_left(s), in_flight + 1
    if left["flops"] is not None and left["flops"] < need * max(s.trial_flops, 1e-9):
        return False
    return not (left["seconds"] is not None and left["seconds"] < need * max(s.trial_seconds,
                                                                              1e-9))


def _fail(study: optuna.Study, s: SearchSettings, flight: _Flight, status: str,
          reason: str, retry: bool) -> None:
    """Record a trial that did not end by itself as FAIL; enqueue its parameters again."""
    from lmalloc.rundir import RunDir

    trial = flight.trial
    if study._storage.get_trial(trial._trial_id).state.is_finished():
        return  # a shared database's stale-heartbeat check failed (and retried) it already
    trial.set_user_attr("status", status)
    trial.set_user_attr("reason", reason)
    RunDir(s.run_dir).charge(s.stage, 0.0, time.monotonic() - flight.started,
                             trial=trial.number, status=status)
    study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
    depth = int(trial.user_attrs.get("retry_depth", 0))
    if retry and trial.params and depth < s.max_retry:
        study.enqueue_trial(trial.params,
                            user_attrs={"retry_of": trial.number, "retry_depth": depth + 1})


def _collect(ray: Any, s: SearchSettings, study: optuna.Study, ref: Any,
             flight: _Flight) -> None:
    """Tell the study how the task of ``flight`` ended."""
    try:
        out = ray.get(ref)
    except ray.exceptions.RayTaskError as e:  # the trial's own code raised: a bug
        _fail(study, s, flight, "crashed", f"{type(e.cause).__name__}: {e.cause}", retry=False)
        if isinstance(e.cause, UserError):
            raise e.cause from None
        raise
    except ray.exceptions.RayError as e:  # the worker process or its node died
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        _fail(study, s, flight, "worker_died",
              f"its Ray worker died ({type(e).__name__}: {first})", retry=True)
        return
    if out["state"] == "complete":
        study.tell(flight.trial, out["values"], skip_if_finished=True)
    else:
        study.tell(flight.trial, state=TrialState.PRUNED if out["state"] == "pruned"
                   else TrialState.FAIL, skip_if_finished=True)


def run_trials_on_ray(s: SearchSettings, study: optuna.Study, workers: int,
                      on_poll: Callable[[optuna.Study], None] | None = None) -> None:
    """Keep ``workers`` trials in flight on the connected cluster until the search is done.

    Stops starting trials at ``n_trials`` finished (counting those in flight) or when the
    budget cannot pay for one more on top of those in flight; then waits for the rest.
    """
    ray = import_ray()
    BudgetedObjective(s)  # a bad space or recipe is the user's error here, not a task's
    space = SearchSpace.from_dict(s.space)
    task = ray.remote(run_trial_task).options(
        num_cpus=s.trial_cpus, num_gpus=s.trial_gpus, max_retries=0, name="lmalloc-trial")
    payload, threads = _portable(s), max(1, int(s.trial_cpus))
    pending: dict[Any, _Flight] = {}
    try:
        while True:
            while len(pending) < workers and _can_start(s, study, len(pending)):
                trial = study.ask()
                space.suggest(trial)
                ref = task.remote(payload, trial._trial_id, threads)
                pending[ref] = _Flight(trial, time.monotonic())
            if not pending:
                return
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=2.0)
            for ref in ready:
                _collect(ray, s, study, ref, pending.pop(ref))
            if on_poll is not None:
                on_poll(study)
    finally:
        for ref, flight in pending.items():  # interrupted: no trial is left RUNNING
            ray.cancel(ref, force=True)
            with contextlib.suppress(Exception):
                _fail(study, s, flight, "interrupted", "the search stopped while it ran; "
                      "retried", retry=True)
