"""The Typer application and the one registry of commands.

Each stage's commands live in ``lmalloc/cli/<stage>.py`` and register themselves on ``app``;
``COMMAND_MODULES`` below is the registry (a snapshot test keeps the surface reviewed).
Commands are thin: parse, call one library function, print.
"""

from __future__ import annotations

import importlib
import sys

import typer

from lmalloc.errors import UserError

app = typer.Typer(
    name="lmalloc",
    help="Globally optimal allocation of a language-model training budget.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

# The registry: one module per stage, in pipeline order.
COMMAND_MODULES: tuple[str, ...] = ("prepare", "train", "cost", "search", "fit", "model",
                                     "plan")

_registered = False


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
