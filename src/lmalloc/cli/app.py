"""The Typer application and the one registry of commands.

Each stage's commands live in ``lmalloc/cli/<stage>.py`` and register themselves on ``app``;
``COMMAND_MODULES`` below is the registry (a snapshot test keeps the surface reviewed).
Commands are thin: parse, call one library function, print.
"""

from __future__ import annotations

import importlib
import sys
from typing import Annotated

import typer
from typer.core import TyperGroup

from lmalloc.errors import UserError


class _Group(TyperGroup):
    """Keeps the words the user typed (``ctx.meta``) so the run log can record them."""

    def parse_args(  # type: ignore[override]
        self, ctx: typer.Context, args: list[str]
    ) -> list[str]:
        ctx.meta.setdefault("lmalloc.argv", list(args))
        return super().parse_args(ctx, args)


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
    """Entry point: user errors end with one clear paragraph and exit code 2."""
    register()
    try:
        app()
    except UserError as e:
        from lmalloc.cli.output import err_console

        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
