"""The CLI surface is a reviewed decision: a snapshot of every command and option.

Regenerate after an intended change with::

    LMALLOC_UPDATE_SNAPSHOT=1 .venv/bin/pytest tests/unit/test_cli.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import typer
from typer.testing import CliRunner

from lmalloc.cli import app, register

SNAPSHOT = Path(__file__).parents[1] / "golden" / "cli_surface.json"


def _opts(params: list[Any]) -> list[str]:
    return sorted(opt for p in params for opt in getattr(p, "opts", []))


def surface() -> dict[str, list[str]]:
    cmd = typer.main.get_command(register())
    out = {"lmalloc": _opts(cmd.params)}  # the options every command shares (-v, -q, ...)
    for name, sub in sorted(cmd.commands.items()):  # type: ignore[attr-defined]
        out[name] = _opts(sub.params)
    return out


def test_cli_surface_matches_snapshot() -> None:
    current = surface()
    if os.environ.get("LMALLOC_UPDATE_SNAPSHOT"):
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    assert current == json.loads(SNAPSHOT.read_text())


def test_every_command_has_one_line_help() -> None:
    # --json on every command (nested ones too): tests/unit/cli/test_cli_conventions.py
    cmd = typer.main.get_command(register())
    for name, sub in cmd.commands.items():  # type: ignore[attr-defined]
        assert sub.help and sub.help.strip(), f"{name} has no help"
    res = CliRunner().invoke(app, ["--help"])
    assert res.exit_code == 0
    for name in cmd.commands:  # type: ignore[attr-defined]
        assert name in res.output


def test_user_error_exits_2_without_traceback(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-c", "from lmalloc.cli import main; main()", "train", "--run",
         str(tmp_path / "nope"), "--recipe", "configs/tiny.toml"],
        capture_output=True, text=True, cwd=Path(__file__).parents[2],
    )
    assert res.returncode == 2, res.stderr
    assert "error:" in res.stderr and "lmalloc prepare" in res.stderr
    assert "Traceback" not in res.stderr + res.stdout
