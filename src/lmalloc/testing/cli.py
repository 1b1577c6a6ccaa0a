"""Run ``lmalloc`` commands in process, for tests of the command line."""

from __future__ import annotations

from typer.testing import CliRunner

from lmalloc.cli.app import register
from lmalloc.errors import UserError


def invoke(*args: str) -> tuple[int, str]:
    """``(exit code, output)`` of ``lmalloc ARGS``; a UserError counts as exit 2 with its
    message (what :func:`lmalloc.cli.app.main` turns it into); other exceptions propagate."""
    result = CliRunner().invoke(register(), list(args))
    if isinstance(result.exception, UserError):
        return result.exception.exit_code, str(result.exception)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output
