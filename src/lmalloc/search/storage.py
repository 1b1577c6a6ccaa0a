"""The study's storage: opening it, and making sure a shared study is the one a command means.

A shared database (PostgreSQL, any Optuna RDB URL) needs what a local SQLite file does not:

- a connect timeout, so that an unreachable server is a quick, clear error rather than a hang;
- heartbeats, so that a trial whose worker died (killed, machine lost) is failed with a reason
  and its parameters run again by a surviving worker — no lock file can prove a worker on
  another machine dead;
- a record of the search space in the study, so that a worker started with another space is
  refused instead of mixing two searches in one study.

Tuning for tests and flaky networks (environment, read when a storage is opened):
``LMALLOC_HEARTBEAT_INTERVAL`` (seconds, default 30), ``LMALLOC_HEARTBEAT_GRACE`` (seconds
without a heartbeat before a RUNNING trial counts as dead, default 120) and
``LMALLOC_DB_CONNECT_TIMEOUT`` (seconds, default 10).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
import warnings
from collections.abc import Iterator
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from lmalloc.errors import UserError

SPACE_ATTR = "space"  # study user attribute: the search space the study was created with
HEARTBEAT_ENV = "LMALLOC_HEARTBEAT_INTERVAL"
GRACE_ENV = "LMALLOC_HEARTBEAT_GRACE"
CONNECT_TIMEOUT_ENV = "LMALLOC_DB_CONNECT_TIMEOUT"


def display_url(url: str) -> str:
    """The URL with its password masked (it goes into messages and logs)."""
    return re.sub(r"(://[^:/@]+:)[^@/]*@", r"\1***@", url)


def _driver_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 (the ``postgres`` extra), not SQLAlchemy's default
    psycopg2, unless psycopg2 is what is installed."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgres", "postgresql"):
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            return f"postgresql+psycopg://{rest}"
        return f"postgresql://{rest}"
    return url


def _env_seconds(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise UserError(f"invalid {name} = {text!r}: expected a whole number of seconds >= 1")
    return value


def open_storage(url: str, max_retry: int = 2) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url``; an unreachable or unusable one is a :class:`UserError`.

    Args:
        url: ``sqlite:///...``, ``journal:PATH`` or any SQLAlchemy URL Optuna's RDB storage takes.
        max_retry: times a trial whose worker stopped sending heartbeats is run again
            (shared databases only).
    """
    try:
        if url.startswith("journal:"):
            from optuna.storages.journal import JournalFileBackend

            path = url.removeprefix("journal:").removeprefix("//")
            return optuna.storages.JournalStorage(JournalFileBackend(path))
        if url.startswith("sqlite:"):
            return optuna.storages.RDBStorage(
                url, engine_kwargs={"connect_args": {"timeout": 120}}
            )
        return _open_shared(_driver_url(url), max_retry)
    except UserError:
        raise
    except Exception as e:  # sqlalchemy errors, missing drivers, bad URLs
        raise UserError(
            f"cannot open the study storage {display_url(url)!r}: {type(e).__name__}: "
            f"{_first_line(e)}. Check the URL, that the server is reachable, and that its "
            "driver is installed (pip install 'lmalloc[postgres]' for PostgreSQL)"
        ) from None


def _first_line(e: BaseException) -> str:
    lines = [line for line in str(e).splitlines() if line.strip()]
    return lines[0].rstrip(". ") if lines else ""


def _open_shared(url: str, max_retry: int) -> optuna.storages.RDBStorage:
    import sqlalchemy.exc

    grace = _env_seconds(GRACE_ENV, 120)
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith(("postgresql", "mysql")):
        timeout = _env_seconds(CONNECT_TIMEOUT_ENV, 10)
        engine_kwargs["connect_args"] = {"connect_timeout": timeout}
    for attempt in range(3):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna since 2.8
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return _HeartbeatStorage(
                    url, engine_kwargs=engine_kwargs,
                    heartbeat_interval=_env_seconds(HEARTBEAT_ENV, 30), grace_period=grace,
                    heartbeat_stale_trial_callback=RetryStaleTrial(max_retry),
                )
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            # workers creating Optuna's tables in a fresh database at the same moment: the
            # loser sees a duplicate; the tables exist now, so opening again succeeds
            if attempt == 2:
                raise
            time.sleep(0.5 + attempt)
    raise AssertionError("unreachable")


class _HeartbeatStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage, writing why a trial failed when its heartbeats stopped.

    Optuna fails such trials itself, but leaves no reason, and a FAIL trial can no longer be
    annotated: the reason is written just before, while the trial is still RUNNING.
    """

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        ids = super()._get_stale_trial_ids(study_id)
        for trial_id in ids:
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError, KeyError):
                self.set_trial_user_attr(trial_id, "status", "orphaned")
                self.set_trial_user_attr(
                    trial_id, "reason",
                    f"its worker sent no heartbeat for over {self.grace_period} s (killed, "
                    "or its machine was lost); its parameters are run again",
                )
        return ids


class RetryStaleTrial:
    """Enqueue the parameters of a trial whose worker died, at most ``max_retry`` times deep.

    Marks the retry the way :func:`lmalloc.search.study.recover_orphans` does (user attributes
    ``retry_of`` and ``retry_depth``), so both kinds of recovery read the same in the report.
    """

    def __init__(self, max_retry: int) -> None:
        self.max_retry = max_retry

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        depth = int(trial.user_attrs.get("retry_depth", 0))
        if trial.params and depth < self.max_retry:
            study.enqueue_trial(
                trial.params, user_attrs={"retry_of": trial.number, "retry_depth": depth + 1}
            )


@contextlib.contextmanager
def heartbeat(study: optuna.Study, trial_id: int) -> Iterator[None]:
    """Send a trial's heartbeats while the block runs (a no-op without heartbeat storage).

    ``Study.optimize`` does this itself; a trial asked and told by hand (the Ray backend's)
    must do it too, and Optuna offers no public API for it. This is the one place that uses
    its private ``optuna.storages._heartbeat`` module, so an Optuna release that moves it
    breaks here alone (tests/integration's Ray tests exercise it)."""
    from optuna.storages._heartbeat import get_heartbeat_thread

    with get_heartbeat_thread(trial_id, study._storage):
        yield


def has_heartbeats(study: optuna.Study) -> bool:
    """Whether the study's storage records heartbeats (so a dead worker's trial goes stale)."""
    backend = getattr(study._storage, "_backend", study._storage)  # under Optuna's cache
    return isinstance(backend, _HeartbeatStorage)


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail (and retry) trials of dead workers now, not only when the next trial starts."""
    if has_heartbeats(study):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)


def study_exists(storage: optuna.storages.BaseStorage, name: str) -> bool:
    try:
        storage.get_study_id_from_name(name)
    except KeyError:
        return False
    return True


def drop_if_empty(storage: optuna.storages.BaseStorage, name: str) -> None:
    """Delete a study this command created and could not finish setting up (no partial study
    is left behind); one that already holds trials is kept."""
    with contextlib.suppress(Exception):
        study_id = storage.get_study_id_from_name(name)
        if not storage.get_all_trials(study_id, deepcopy=False):
            storage.delete_study(study_id)


def check_same_search(
    study: optuna.Study, space: dict[str, Any], n_objectives: int, url: str
) -> None:
    """Refuse to join a study that holds another search: a different space or objectives.

    Studies created before the space was recorded pass (the caller records it then).
    """
    problems = []
    if len(study.directions) != n_objectives:
        problems.append(f"the study has {len(study.directions)} objective(s), this command "
                        f"{n_objectives} (--second-objective)")
    stored = study.user_attrs.get(SPACE_ATTR)
    if stored is not None:
        problems += space_differences(stored, json.loads(json.dumps(space)))
    if problems:
        raise UserError(
            f"the study {study.study_name!r} in {display_url(url)!r} was created with another "
            f"search: {'; '.join(problems)}. Run with the study's own --space (and objectives), "
            "or use another --storage or a new study"
        )


def space_differences(stored: dict[str, Any], ours: dict[str, Any]) -> list[str]:
    """What differs between two search spaces (``SearchSpace.to_dict`` form), in words."""
    a, b = stored.get("params", {}), ours.get("params", {})
    out = []
    if only := sorted(set(a) - set(b)):
        out.append(f"parameters only in the study: {', '.join(only)}")
    if only := sorted(set(b) - set(a)):
        out.append(f"parameters only in this command's space: {', '.join(only)}")
    for name in sorted(set(a) & set(b)):
        if a[name] != b[name]:
            out.append(f"{name} is {_compact(a[name])} in the study, {_compact(b[name])} here")
    if stored.get("grid_points") != ours.get("grid_points"):
        out.append(f"grid_points is {stored.get('grid_points')} in the study, "
                   f"{ours.get('grid_points')} here")
    return out


def _compact(d: Any) -> str:
    return json.dumps(d, sort_keys=True, separators=(",", ":"))

