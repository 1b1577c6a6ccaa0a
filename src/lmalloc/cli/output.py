"""Printing for commands: rich for people, ``--json`` for scripts.

stdout carries the command's result only (one JSON document with ``--json``); progress bars,
stage notes and log records go to stderr.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import Console

from lmalloc.cli import logs

console = Console()
err_console = Console(stderr=True)
log = logging.getLogger("lmalloc.stage")  # stage notes: ``say``

JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON only.")]


def emit(result: Any, as_json: bool, render: Callable[[Any], None]) -> None:
    """Print ``result`` as JSON (for scripts) or through ``render`` (for people)."""
    if as_json:
        typer.echo(json.dumps(result, indent=2, sort_keys=True, default=str))
    else:
        render(result)


def show_progress(as_json: bool) -> bool:
    """Whether a command asks the library for progress displays (the ``progress=`` argument).

    Off for ``--json`` and when ``LMALLOC_NO_PROGRESS`` is set (``-q`` sets it), the one switch
    the trainer's progress bar also reads.
    """
    return not as_json and not os.environ.get(logs.NO_PROGRESS_ENV)


def say(message: str, show: bool = True) -> None:
    """A stage note (rich markup) for the person watching; always kept in the run log.

    Printed on stderr at the default verbosity; with ``-v`` the INFO record shows it instead,
    with ``-q`` (or ``show`` False, e.g. under ``--json``) only notes starting with
    ``warning:`` reach the terminal, as warnings.
    """
    from rich.text import Text

    plain = Text.from_markup(message).plain
    warning = plain.lower().startswith("warning:")
    level = logging.WARNING if warning else logging.INFO
    shown_by_log = level >= logs.console_level(logs.verbosity()) and (show or warning)
    printed = show and logs.verbosity() >= 0 and not shown_by_log
    log.log(level, plain.removeprefix("warning: ") if warning else plain,
            extra={logs.NO_CONSOLE: not shown_by_log})
    if printed:
        err_console.print(message, highlight=False, soft_wrap=True)
