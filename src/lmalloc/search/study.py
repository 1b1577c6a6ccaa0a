"""Running a search: the Optuna study, its storage, budget-aware stopping, crash recovery and
parallel local workers.

Lifecycle of :func:`run_search`:

1. open (or create) the study ``explore`` in the storage — SQLite ``study.db`` in the run
   directory by default, any Optuna storage URL otherwise (``journal:PATH`` for Optuna's
   journal file);
2. recover: trials left RUNNING by a dead worker are marked FAIL and their parameters are
   enqueued again (at most ``max_retry`` times). For SQLite and journal files a lock in the run
   directory proves no other local search is alive; a shared database (PostgreSQL) relies on
   Optuna's heartbeats instead (``heartbeat_interval``, ``RetryFailedTrialCallback``);
3. optimise with one process per worker (threads of the machine split between them), each a
   plain ``study.optimize`` on the shared storage, until ``n_trials`` trials have finished or
   the budget is spent. The budget counts what the ledger says was spent by finished, pruned
   and failed trials alike; each trial may use at most what is left when it starts.
"""

from __future__ import annotations

import contextlib
import fcntl
import multiprocessing as mp
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import TrialState

from lmalloc.errors import UserError
from lmalloc.rundir import RunDir, confined, refused_writes
from lmalloc.search.objective import STUDY_NAME, Limits, TrialFailed, TrialObjective
from lmalloc.search.space import SearchSpace

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
PRUNERS = ("asha", "asha-ties", "hyperband", "median", "none")


@dataclass
class SearchSettings:
    """Everything a worker needs to rebuild the objective (plain data: it crosses processes)."""

    run_dir: str
    space: dict[str, Any]
    base_model: dict[str, Any]
    base_train: dict[str, Any]
    strategy: str = "auto"
    n_trials: int | None = None
    budget_seconds: float | None = None
    budget_flops: float | None = None
    memory_bytes: float | None = None
    storage: str | None = None
    pruner: str = "asha"
    seed: int = 0
    metric: str = "val_bpb"
    second_objective: str | None = None
    max_retry: int = 2
    stage: str = "explore"
    trial_flops: float = 0.0  # predicted cost of one base-recipe trial: never start one
    trial_seconds: float = 0.0  # that the budget cannot pay for
    study_name: str = STUDY_NAME
    hardware: str | None = None  # profile for the time and memory checks (None: this machine)
    backend: str = "local"  # where trials run: local processes, or tasks on a Ray cluster
    address: str = "auto"  # the Ray cluster (backend ray): auto or HOST:PORT of its head
    trial_cpus: float = 1.0  # what one Ray task declares (and the torch threads it uses)
    trial_gpus: float = 0.0


def storage_url(run_dir: str | Path, storage: str | None) -> str:
    if storage is None:
        confined(Path(run_dir) / "study.db")  # SQLite would follow a link out of the run
    return storage or f"sqlite:///{Path(run_dir).resolve() / 'study.db'}"


def open_storage(url: str, max_retry: int = 2) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url``; an unreachable one is a :class:`UserError` (quickly: a
    shared database has a connect timeout). Details in :mod:`lmalloc.search.storage`."""
    from lmalloc.search import storage

    return storage.open_storage(url, max_retry)


def _local(url: str) -> bool:
    return url.startswith(("sqlite:", "journal:"))


def make_pruner(name: str, max_tokens: int | None) -> optuna.pruners.BasePruner:
    """ASHA, Hyperband or median pruning with training tokens as the resource (single-objective
    studies; a Pareto study with any pruner but ``none`` is pruned by
    :mod:`lmalloc.search.pareto_prune` in the objective instead)."""
    if name == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(reduction_factor=3)
    if name == "asha-ties":
        from lmalloc.search.halving import TieTolerantHalving

        return TieTolerantHalving(reduction_factor=3)
    if name == "hyperband":
        top = max_tokens or "auto"
        low = max(1, max_tokens // 9) if max_tokens else 1
        return optuna.pruners.HyperbandPruner(min_resource=low, max_resource=top,
                                              reduction_factor=3)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=4)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise UserError(f"unknown pruner {name!r}: expected one of {', '.join(PRUNERS)}")


def load_study(s: SearchSettings, worker: int = 0, check_space: bool = True) -> optuna.Study:
    """Open (or create) the study of ``s``.

    Joining an existing study checks that it holds the same search (space and number of
    objectives): another one is a :class:`UserError` and the study is left untouched. A study
    this call creates and cannot finish setting up is deleted again (no partial study). With a
    shared database, trials of workers that stopped sending heartbeats are failed and retried.

    Args:
        check_space: False for read-only views (``--status``) that may not know the space.
    """
    from lmalloc.search import storage as stg
    from lmalloc.search.strategies import make_sampler

    space = SearchSpace.from_dict(s.space)
    auto = ({"pruned": s.pruner != "none", "objectives": 2 if s.second_objective else 1}
            if s.strategy == "auto" else {})
    sampler = make_sampler(s.strategy, space, seed=s.seed + worker, **auto)
    directions = [StudyDirection.MINIMIZE] * (2 if s.second_objective else 1)
    url = storage_url(s.run_dir, s.storage)
    storage = open_storage(url, s.max_retry)
    existed = stg.study_exists(storage, s.study_name)
    study = optuna.create_study(
        study_name=s.study_name, storage=storage, sampler=sampler,
        pruner=make_pruner(s.pruner, s.base_train.get("max_tokens")),
        directions=directions, load_if_exists=True,
    )
    if check_space:  # before anything is written to it
        stg.check_same_search(study, s.space, len(directions), url)
    try:
        _label_study(study, s, sampler)
    except BaseException:
        if not existed:
            stg.drop_if_empty(storage, s.study_name)
        raise
    stg.fail_stale_trials(study)
    return study


def _label_study(study: optuna.Study, s: SearchSettings, sampler: Any) -> None:
    """Record what the report labels the history with, and the space later workers must share."""
    from lmalloc.search.storage import SPACE_ATTR

    attrs = study.user_attrs
    if "strategy" not in attrs:
        chosen = type(sampler).__name__
        study.set_user_attr("strategy", s.strategy if s.strategy != "auto" else f"auto={chosen}")
    if SPACE_ATTR not in attrs:
        study.set_user_attr(SPACE_ATTR, s.space)


@contextlib.contextmanager
def local_search_lock(run_dir: str | Path) -> Iterator[None]:
    """Held by the one local search of a run; proves RUNNING trials of SQLite are orphans."""
    path = confined(Path(run_dir) / ".search.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"another search is running on {run_dir} (lock {path}); wait for it, or use a "
                "shared --storage with --worker to join it"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def recover_orphans(study: optuna.Study, max_retry: int = 2) -> list[int]:
    """Fail trials left RUNNING by a dead worker and enqueue their parameters again."""
    retried = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(t._trial_id, "status", "orphaned")
        study._storage.set_trial_user_attr(
            t._trial_id, "reason", "its worker died (left RUNNING); retried"
        )
        study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
        depth = int(t.user_attrs.get("retry_depth", 0))
        if t.params and depth < max_retry:
            study.enqueue_trial(
                t.params, user_attrs={"retry_of": t.number, "retry_depth": depth + 1}
            )
            retried.append(t.number)
    return retried


def budget_left(s: SearchSettings) -> dict[str, float | None]:
    """Seconds and FLOPs this stage may still spend (None = unlimited)."""
    spent = RunDir(s.run_dir).spent(s.stage)
    left: dict[str, float | None] = {"seconds": None, "flops": None}
    if s.budget_seconds is not None:
        left["seconds"] = s.budget_seconds - spent["seconds"]
    if s.budget_flops is not None:
        left["flops"] = s.budget_flops - spent["flops"]
    return left


def _exhausted(s: SearchSettings) -> bool:
    """True when what is left cannot pay for one more trial (the rest goes back to the run)."""
    left = budget_left(s)
    return (left["flops"] is not None and left["flops"] < max(s.trial_flops, 1e-9)) or (
        left["seconds"] is not None and left["seconds"] < max(s.trial_seconds, 1e-9))


def finished_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


class BudgetedObjective(TrialObjective):
    """The trial objective with each trial capped at what is left of the budget."""

    def __init__(self, s: SearchSettings) -> None:
        from lmalloc.cost.hardware import get_hardware
        from lmalloc.train.config import TrainConfig

        super().__init__(
            SearchSpace.from_dict(s.space), Path(s.run_dir) / "data", RunDir(s.run_dir),
            s.base_model, TrainConfig.from_dict(s.base_train), metric=s.metric,
            limits=Limits(memory_bytes=s.memory_bytes, trial_seconds=s.budget_seconds,
                          hardware=get_hardware(s.hardware) if s.hardware else None),
            second_objective=s.second_objective, stage=s.stage,
            pareto_pruning=s.pruner != "none",
        )
        self.settings = s

    def _train(
        self, trial: optuna.Trial, model_cfg: Any, train_cfg: Any
    ) -> float | tuple[float, float]:
        # A safety net: a trial slower than predicted stops when the time budget is spent
        # (status time_limit, recorded as pruned: a shortened schedule is a lower fidelity).
        left = budget_left(self.settings)["seconds"]
        if left is not None:
            train_cfg = train_cfg.replace(
                max_seconds=max(1.0, min(left, train_cfg.max_seconds or 1e30)))
        return super()._train(trial, model_cfg, train_cfg)


def _optimize(s: SearchSettings, worker: int) -> None:
    """One worker: trials until the study has ``n_trials`` finished or the budget is spent."""
    study = load_study(s, worker)
    objective = BudgetedObjective(s)

    def stop_when_done(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if _exhausted(s) or (s.n_trials is not None and finished_count(study) >= s.n_trials):
            study.stop()

    # on a local file the workers are this search's processes: a trial another one runs will
    # finish (or the search fails), so it counts now; on a shared database it may be an
    # orphan that heartbeats will fail and retry, so only finished ones count, and a worker
    # that is done waits for the others' trials and runs any retry they leave
    local = _local(storage_url(s.run_dir, s.storage))
    count = _claimed_count if local else finished_count
    while not _exhausted(s):
        if s.n_trials is not None and count(study) >= s.n_trials:
            if local or not _await_others(study):
                break
        if s.strategy == "grid" and grid_done(study):
            break
        study.optimize(objective, n_trials=1, catch=(TrialFailed,),
                       callbacks=[stop_when_done], gc_after_trial=True)


def _claimed_count(study: optuna.Study) -> int:
    """Finished trials plus those other workers are running: a worker starts a trial only
    while this is below ``n_trials``, so parallel workers do not overshoot it (two that ask at
    the same instant still can, by one)."""
    return len(study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING)))


def _await_others(study: optuna.Study, poll_s: float = 1.0) -> bool:
    """Wait until no trial of another worker is RUNNING (a dead worker's is failed by its
    stale heartbeat and re-queued); True when a re-queued trial is WAITING to be run. Without
    heartbeats nothing could tell a dead worker from a slow one: no waiting."""
    from lmalloc.search.storage import fail_stale_trials, has_heartbeats

    while has_heartbeats(study):
        if study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            return True
        if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            return False
        time.sleep(poll_s)
        fail_stale_trials(study)
    return False


def grid_done(study: optuna.Study) -> bool:
    sampler = study.sampler
    return bool(getattr(sampler, "is_exhausted", lambda s: False)(study))


def _worker_main(s: SearchSettings, worker: int, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    _optimize(s, worker)


def run_search(
    s: SearchSettings, workers: int = 1, on_poll: Callable[[optuna.Study], None] | None = None,
    join_existing: bool = False,
) -> dict[str, Any]:
    """Run (or resume) the search described by ``s`` and return its summary.

    Args:
        s: the settings; workers: parallel local processes (1 = this process), or with
            ``s.backend == "ray"`` the trials in flight on the cluster at once.
        on_poll: called with the study every couple of seconds (the CLI's live table).
        join_existing: a ``--worker`` joining a shared study: no lock, no orphan recovery.
    """
    if workers < 1:
        raise UserError(f"invalid workers = {workers}: expected at least 1")
    if s.backend not in ("local", "ray"):
        raise UserError(f"invalid backend = {s.backend!r}: expected local or ray")
    SearchSpace.from_dict(s.space)  # validate before anything is created
    confined(RunDir(s.run_dir).trial(0))  # trials/ linking out: exit 2 here, not per worker
    url = storage_url(s.run_dir, s.storage)
    lock = (local_search_lock(s.run_dir) if _local(url) and not join_existing
            else contextlib.nullcontext())
    cluster: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if s.backend == "ray":  # connect first: an unreachable cluster leaves no study behind
        from lmalloc.search import ray_backend

        cluster = ray_backend.ray_session(s)
    with refused_writes(s.run_dir), cluster, lock:  # a full disk: exit 2, not a trace
        study = load_study(s)
        if _local(url) and not join_existing:
            recover_orphans(study, s.max_retry)
        if s.backend == "ray":
            ray_backend.run_trials_on_ray(s, study, workers, on_poll)
        elif workers == 1:
            _run_inline(s, study, on_poll)
        else:
            _run_processes(s, workers, study, on_poll)
    return summarize(load_study(s))


class _Interrupted(BaseException):
    """Ctrl-C during an inline search. Optuna records a KeyboardInterrupt raised in a trial as a
    failed trial and logs its traceback; this passes through it instead, leaving the trial
    RUNNING for the rerun's orphan recovery to retry (as a killed worker's is)."""


def _run_inline(s: SearchSettings, study: optuna.Study,
                on_poll: Callable[[optuna.Study], None] | None) -> None:
    """Train the trials on the calling thread and poll from a helper thread. Not the other way
    round: torch's OpenMP pool serves the thread that started the process, and a training on
    another thread ran 1.5x slower per step on 2 cores, as if on one (bench/thread_step.py)."""
    import signal
    import threading

    done = threading.Event()
    errors: list[BaseException] = []

    def poll() -> None:
        while on_poll is not None and not done.wait(2.0):
            try:
                on_poll(study)
            except BaseException as e:  # re-raised in the caller's thread
                errors.append(e)
                return

    def interrupt(_sig: int, _frame: Any) -> None:
        raise _Interrupted

    # only where Ctrl-C would raise KeyboardInterrupt (not off the main thread, not ignored)
    main = (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    before = signal.signal(signal.SIGINT, interrupt) if main else None
    t = threading.Thread(target=poll, daemon=True)
    t.start()
    try:
        _optimize(s, 0)
    except _Interrupted:
        raise KeyboardInterrupt from None
    finally:
        if main:
            signal.signal(signal.SIGINT, before)
        done.set()
        t.join()
    if errors:
        raise errors[0]
    if on_poll is not None:
        on_poll(study)


def _run_processes(s: SearchSettings, workers: int, study: optuna.Study,
                   on_poll: Callable[[optuna.Study], None] | None) -> None:
    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker_main, args=(s, w, threads)) for w in range(workers)]
    for p in procs:
        p.start()
    try:
        while any(p.is_alive() for p in procs):
            time.sleep(2.0)
            if on_poll is not None:
                on_poll(study)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join()
    bad = [p.exitcode for p in procs if p.exitcode]
    if bad:
        raise RuntimeError(f"search worker(s) exited with codes {bad}")


def summarize(study: optuna.Study) -> dict[str, Any]:
    """Counts by state, the best trial(s), and one row per trial."""
    trials = study.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for t in trials:
        key = t.user_attrs.get("status") if t.state == TrialState.PRUNED else None
        name = "infeasible" if key == "infeasible" else t.state.name.lower()
        counts[name] = counts.get(name, 0) + 1
    rows = [
        {"number": t.number, "state": t.state.name.lower(), "params": t.params,
         "value": t.values[0] if t.values else None,
         "status": t.user_attrs.get("status"), "reason": t.user_attrs.get("reason"),
         "tokens": t.user_attrs.get("tokens"), "seconds": t.user_attrs.get("seconds")}
        for t in trials
    ]
    best: list[dict[str, Any]] = []
    if any(t.state == TrialState.COMPLETE for t in trials):
        best = [{"number": t.number, "values": t.values, "params": t.params}
                for t in study.best_trials]
    return {"study": study.study_name, "counts": counts, "best": best, "trials": rows}


# shipped in the package (configs/ at the repository root links to them), so the defaults
# resolve wherever the command runs
DEFAULT_SPACE = Path(__file__).resolve().parents[1] / "configs" / "space_tiny.toml"
DEFAULT_RECIPE = Path(__file__).resolve().parents[1] / "configs" / "tiny.toml"


def build_settings(
    run_dir: str | Path, space: str | Path | None = None, recipe: str | Path | None = None,
    budget: str | None = None, strategy: str = "auto", n_trials: int | None = None,
    storage: str | None = None, pruner: str = "asha", seed: int = 0, metric: str = "val_bpb",
    second_objective: str | None = None, hardware: str | None = None,
) -> SearchSettings:
    """Turn command-line choices into :class:`SearchSettings`, checking them up front: the data
    exists, the space and recipe are valid, the budget fits at least one trial."""
    from lmalloc.data.shards import TokenData
    from lmalloc.train.config import load_recipe

    run = RunDir(run_dir)
    TokenData(run.data)  # a clear error when `lmalloc prepare` has not run
    space_obj = SearchSpace.from_toml(space or DEFAULT_SPACE)
    base_model, base_train = load_recipe(recipe or DEFAULT_RECIPE)
    if n_trials is None and budget is None:
        raise UserError("give a budget (--budget 10m) or a number of trials (--trials 20)")
    if n_trials is not None and n_trials < 1:
        raise UserError(f"invalid trials = {n_trials}: expected at least 1")
    make_pruner(pruner, base_train.max_tokens)
    s = SearchSettings(
        run_dir=str(run.root), space=space_obj.to_dict(), base_model=base_model,
        base_train=base_train.to_dict(), strategy=strategy, n_trials=n_trials,
        storage=storage, pruner=pruner, seed=seed, metric=metric,
        second_objective=second_objective,
    )
    from lmalloc.search.strategies import make_sampler

    make_sampler(strategy, space_obj, seed=seed)  # unknown strategy: clear error now
    if budget is not None:
        _apply_budget(s, budget, hardware, base_model, base_train)
    return s


def _apply_budget(s: SearchSettings, text: str, hardware: str | None,
                  base_model: dict[str, Any], base_train: Any) -> None:
    from lmalloc.cost.budget import parse_budget
    from lmalloc.data.shards import TokenData
    from lmalloc.search.objective import configs_for, violations

    b = parse_budget(text, hardware=hardware)
    s.budget_seconds, s.budget_flops = b.seconds, b.flops_given
    s.memory_bytes = b.memory_bytes  # mem= if given, else the device's own
    s.hardware = b.hardware
    vocab = TokenData(Path(s.run_dir) / "data").vocab_size
    model_cfg, train_cfg = configs_for({}, base_model, base_train, vocab)
    from lmalloc.cost.hardware import get_hardware
    from lmalloc.cost.time_model import predict_time
    from lmalloc.model.accounting import train_flops_per_token

    tokens = train_cfg.max_tokens or train_cfg.batch_tokens * (train_cfg.max_steps or 1)
    s.trial_flops = train_flops_per_token(model_cfg, train_cfg.seq_len) * tokens
    s.trial_seconds = predict_time(
        model_cfg, tokens, get_hardware(b.hardware, b.devices),
        batch_tokens=train_cfg.batch_tokens, micro_batch=train_cfg.micro_batch,
        seq_len=train_cfg.seq_len, eval_every=train_cfg.eval_every,
        eval_tokens=train_cfg.eval_tokens).seconds
    if s.budget_flops is not None:
        need = s.trial_flops
        if need > s.budget_flops:
            raise UserError(
                f"the budget {text!r} is smaller than one trial of the base recipe (needs "
                f"{need:.3g} FLOPs); give a larger budget or a shorter recipe (max_tokens)"
            )
    if s.budget_seconds is not None:
        _, reason = violations(model_cfg, train_cfg, Limits(trial_seconds=s.budget_seconds))
        if reason:
            raise UserError(
                f"the budget {text!r} is smaller than one trial of the base recipe ({reason}); "
                "give a larger budget or a shorter recipe (max_tokens)"
            )
