"""The Typer application and the one registry of commands.

Each stage's commands live in ``lmalloc/cli/<stage>.py`` and register themselves on ``app``;
``COMMAND_MODULES`` below is the registry (a snapshot test keeps the surface reviewed).
Commands are thin: parse, call one library function, print.
"""

from __future__ import annotations

import importlib
import sys
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from lmalloc.errors import UserError
from lmalloc.rundir import check_run_folder

# One example per command, shown at the end of its --help.
EXAMPLES: dict[str, str] = {
    "prepare": "lmalloc prepare --run runs/demo ../shared/data/tinystories",
    "train": "lmalloc train --run runs/demo --recipe configs/tiny.toml",
    "eval": "lmalloc eval --run runs/demo",
    "profile": "lmalloc profile --name laptop",
    "estimate": "lmalloc estimate --params 1.3e9 --tokens 26e9 --hardware 8xH100",
    "search": "lmalloc search --run runs/demo --budget 10m --workers 2",
    "fit": "lmalloc fit runs.csv --bootstrap 200",
    "generate": "lmalloc generate --run runs/demo --prompt 'Once upon a time'",
    "export": "lmalloc export --run runs/demo --format hf --out runs/demo/hf",
    "run": "lmalloc run --run runs/demo --budget 15m",
    "plan": "lmalloc plan --from runs/demo --budget 8xH100:24h --out plan.json",
    "compress": "lmalloc compress --run runs/demo --deploy-memory 2MB",
    "report": "lmalloc report --run runs/demo",
    "status": "lmalloc status --run runs/demo",
}


def _plain_flags(params: list[Any]) -> None:
    """Flags and counters take no value: show no ``<bool>``/``<int>`` hint that would fail
    when typed (``-q <bool>``, ``-v <int>``). (Typer carries its own copy of click, hence
    the duck typing.)"""
    for p in params:
        if getattr(p, "is_flag", False) or getattr(p, "count", False):
            p.metavar = ""


class _Group(TyperGroup):
    """Keeps the words the user typed (``ctx.meta``) so the run log can record them; gives each
    command its example and plain flags in ``--help``."""

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None:
            _plain_flags(cmd.get_params(ctx))
            if cmd_name in EXAMPLES and not cmd.epilog:
                cmd.epilog = f"Example: {EXAMPLES[cmd_name]}"
        return cmd

    def format_help(self, ctx: Any, formatter: Any) -> None:
        _plain_flags(self.get_params(ctx))
        super().format_help(ctx, formatter)

    def parse_args(  # type: ignore[override]
        self, ctx: typer.Context, args: list[str]
    ) -> list[str]:
        ctx.meta.setdefault("lmalloc.argv", list(args))
        for raw in _run_values(args):
            check_run_folder(raw)
        return super().parse_args(ctx, args)


def _run_values(args: list[str]) -> list[str]:
    """The raw ``--run`` values the user typed (before Typer turns "" into ".")."""
    out = []
    for i, a in enumerate(args):
        if a == "--run" and i + 1 < len(args):
            out.append(args[i + 1])
        elif a.startswith("--run="):
            out.append(a.removeprefix("--run="))
    return out


app = typer.Typer(
    name="lmalloc",
    cls=_Group,
    help="Globally optimal allocation of a language-model training budget.",
    epilog="Commands that work on a run directory append a DEBUG log to RUN/lmalloc.log.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

# The registry: one module per stage, in pipeline order.
COMMAND_MODULES: tuple[str, ...] = ("prepare", "train", "cost", "search", "fit", "model",
                                     "plan", "compress", "report")

_registered = False


@app.callback()
def _options(
    ctx: typer.Context,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="Show INFO "
                                         "messages; twice (-vv): DEBUG too.")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Warnings and errors only; "
                                        "no progress bars.")] = False,
) -> None:
    """Options of every command: how much the terminal shows (see ``lmalloc.cli.logs``)."""
    from lmalloc.cli import logs

    if verbose and quiet:
        raise UserError("--quiet and --verbose contradict each other; give one of them")
    logs.configure(-1 if quiet else verbose, ctx.meta.get("lmalloc.argv"))
    ctx.call_on_close(logs.finish)


def register() -> typer.Typer:
    """Import every command module once so its commands attach to ``app``."""
    global _registered
    if not _registered:
        for name in COMMAND_MODULES:
            importlib.import_module(f"lmalloc.cli.{name}")
        _registered = True
    return app


def main() -> None:
    """Entry point: user errors end with one clear paragraph and exit code 2; Ctrl-C with 130
    and a note that the rerun resumes."""
    register()
    try:
        app()
    except UserError as e:
        from rich.markup import escape

        from lmalloc.cli.output import err_console

        # escaped: a message naming a TOML table ([recipe]) is text, not markup
        err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False,
                          soft_wrap=True)
        sys.exit(e.exit_code)
    except SystemExit as e:  # Typer turns Ctrl-C into exit 130
        if e.code != 130:
            raise
        _interrupted()
    except KeyboardInterrupt:
        _interrupted()


def _interrupted() -> NoReturn:
    """Exit 130 at once. Not through the interpreter's shutdown: a search's trial thread may
    still be inside torch, and tearing the interpreter down under it aborts the process
    ("terminate called without an active exception", exit 134). What finished is on disk
    (every artifact is written atomically; the study is a database), so nothing is lost."""
    import logging
    import os

    from lmalloc.cli.output import err_console

    err_console.print("interrupted: what finished is kept; rerun the same command to resume",
                      highlight=False, soft_wrap=True)
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(130)
