"""Logging for the command line: what the terminal shows, and one log file per run.

Library modules log through ``logging.getLogger(__name__)`` (the ``lmalloc`` hierarchy) and
never configure handlers; the CLI configures them once per invocation, here:

* the console handler on stderr (rich for a terminal, one plain line per record otherwise) shows
  warnings and errors by default, INFO with ``-v`` and DEBUG with ``-vv``; ``-q`` keeps warnings
  and errors and also switches progress displays off through the existing ``LMALLOC_NO_PROGRESS``
  environment variable (so spawned trial workers inherit it);
* :func:`attach_run_log` appends every record, DEBUG included, to ``<run>/lmalloc.log``, the
  command line first, one timestamped line per record, the outcome last.

``lmalloc.log`` is append-only and written as it happens, so it is deliberately *not* an atomic
artifact: nothing records it with ``RunDir.record_artifact`` and it is not in the manifest's
checksums (a checksum of a file that grows would never verify). Deleting it loses nothing but
history.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmalloc.rundir import MANIFEST, register_run_root, safe_join

LOGGER = "lmalloc"
RUN_LOG = "lmalloc.log"
NO_PROGRESS_ENV = "LMALLOC_NO_PROGRESS"
# Records carrying ``extra={NO_CONSOLE: True}`` go to the run log only: the CLI already shows
# them its own way (the one-paragraph error, a stage note printed by ``say``).
NO_CONSOLE = "lmalloc_no_console"

_verbosity = 0
_argv: list[str] | None = None  # the words after ``lmalloc``, as typed
_t0 = time.perf_counter()
_handlers: list[tuple[logging.Logger, logging.Handler]] = []
_files: list[logging.Handler] = []
_adopted: list[str] = []  # other libraries' loggers routed here (adopt_optuna)
_undo: list[Callable[[], None]] = []
_levels: dict[str, int] = {}  # loggers' levels before configure, put back by reset
_UNSET: Any = object()
_no_progress_before: Any = _UNSET  # LMALLOC_NO_PROGRESS before -q set it (None: unset)
log = logging.getLogger(__name__)


def console_level(verbosity: int) -> int:
    """The console's threshold: -1 (``-q``) and 0 warn, 1 (``-v``) INFO, 2+ (``-vv``) DEBUG."""
    return logging.WARNING if verbosity < 1 else logging.INFO if verbosity == 1 else logging.DEBUG


def verbosity() -> int:
    """-1 quiet, 0 default, 1 and up verbose: as set by the last :func:`configure`."""
    return _verbosity


def configure(level: int, argv: list[str] | None = None) -> None:
    """Install the console handler for ``level`` (replacing any from an earlier invocation).

    Args:
        level: -1 quiet, 0 default, 1 INFO, 2+ DEBUG.
        argv: the command line after ``lmalloc`` (default ``sys.argv[1:]``), for the run log.
    """
    global _verbosity, _argv, _t0, _no_progress_before
    reset()
    _verbosity, _argv, _t0 = level, argv, time.perf_counter()
    if level < 0:  # the existing switch: the trainer's bar and spawned workers read it too
        _no_progress_before = os.environ.get(NO_PROGRESS_ENV)
        os.environ[NO_PROGRESS_ENV] = "1"
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=Console(stderr=True), show_path=level > 1,
                                               markup=False, rich_tracebacks=False)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.setLevel(console_level(level))
    handler.addFilter(lambda r: not getattr(r, NO_CONSOLE, False))
    _add(handler)


def reset() -> None:
    """Remove (and close) every handler this module installed; restore the progress switch."""
    global _no_progress_before
    _files.clear()
    while _handlers:
        logger, handler = _handlers.pop()
        logger.removeHandler(handler)
        handler.close()
    for name, level in _levels.items():
        logging.getLogger(name).setLevel(level)
    _levels.clear()
    _adopted.clear()
    while _undo:
        _undo.pop()()
    if _no_progress_before is not _UNSET:
        if _no_progress_before is None:
            os.environ.pop(NO_PROGRESS_ENV, None)
        else:
            os.environ[NO_PROGRESS_ENV] = _no_progress_before
        _no_progress_before = _UNSET


def adopt_optuna() -> None:
    """Send Optuna's own log (a line per finished trial) through these handlers instead.

    Optuna prints INFO on stderr with its own handler; adopted, its trial lines show with
    ``-v``, stay hidden otherwise (and with ``-q``), and always reach the run log. Spawned
    worker processes (``--workers`` > 1) keep Optuna's default.
    """
    import optuna

    optuna.logging.disable_default_handler()
    _undo.append(optuna.logging.enable_default_handler)
    _adopted.append("optuna")
    logger = logging.getLogger("optuna")
    before = logger.level  # whatever verbosity someone set: our handlers filter, not Optuna
    logger.setLevel(logging.DEBUG)
    _undo.append(lambda: logger.setLevel(before))
    for handler in dict.fromkeys(h for _, h in _handlers):
        logger.addHandler(handler)
        _handlers.append((logger, handler))


def _add(handler: logging.Handler) -> None:
    for name in (LOGGER, *_adopted):
        logger = logging.getLogger(name)
        _levels.setdefault(name, logger.level)
        logger.setLevel(logging.DEBUG)  # handlers decide what they show
        logger.addHandler(handler)
        _handlers.append((logger, handler))


class _OneLine(logging.Formatter):
    """``2026-01-02T03:04:05.678Z pid LEVEL logger: message`` with newlines escaped."""

    def converter(self, seconds: float | None) -> time.struct_time:
        return time.gmtime(seconds)  # UTC, as the trailing Z says

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\r", "").replace("\n", "\\n")


def run_root(path: str | os.PathLike[str]) -> Path:
    """The run directory of ``path``: itself, or its parent when given a run's ``final/``."""
    p = Path(path)
    if p.name == "final" and (p.parent / MANIFEST).exists() and not (p / MANIFEST).exists():
        return p.parent
    return p


def attach_run_log(run: str | os.PathLike[str] | None, create: bool = False) -> Path | None:
    """Append this invocation's records (DEBUG and up) to ``<run>/lmalloc.log``.

    Logs the command line first; :func:`finish` (which the app calls as the command ends)
    logs the outcome (seconds, or the error) and closes the file. With ``create`` False a run
    directory that does not exist yet gets no log (the command will say what is missing).

    Returns:
        The log file's path, or None when no log was attached.
    """
    if run is None:
        return None
    root = run_root(run)
    register_run_root(root)  # no write of this command follows a link out of it
    if not root.is_dir():
        if not create:
            return None
        root.mkdir(parents=True, exist_ok=True)
    path = safe_join(root, RUN_LOG)
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(_OneLine("%(asctime)s.%(msecs)03dZ %(process)d %(levelname)s "
                                  "%(name)s: %(message)s", datefmt="%Y-%m-%dT%H:%M:%S"))
    _add(handler)
    _files.append(handler)
    argv = sys.argv[1:] if _argv is None else _argv
    log.debug("command line: %s", shlex.join(["lmalloc", *argv]))
    log.debug("lmalloc %s, python %s, cwd %s", _version(), sys.version.split()[0], Path.cwd())
    log.info("this command's log: %s", path)
    return path


def finish() -> None:
    """Log how the command ended (from ``sys.exc_info()``), then undo :func:`configure`.

    The app registers this with the root context's ``call_on_close``, which runs while an
    exception that ends the command is still being handled, so the error reaches the run log.
    Undoing the configuration matters when one process runs many commands (tests).
    """
    if _files:
        e = sys.exc_info()[1]
        seconds = time.perf_counter() - _t0
        if e is None or not (getattr(e, "code", 1) and getattr(e, "exit_code", 1)):
            log.debug("finished in %.2f s", seconds)
        else:
            log.error("failed after %.2f s: %s: %s", seconds, type(e).__name__, e,
                      exc_info=not _is_user_error(e), extra={NO_CONSOLE: True})
    reset()


def _is_user_error(e: BaseException) -> bool:
    from lmalloc.errors import UserError

    return isinstance(e, UserError | KeyboardInterrupt)


def _version() -> str:
    from lmalloc import __version__

    return str(__version__)
