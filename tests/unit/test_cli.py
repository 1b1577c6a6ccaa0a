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

import typer
from typer.testing import CliRunner

from lmalloc.cli import app, register

SNAPSHOT = Path(__file__).parents[1] / "golden" / "cli_surface.json"


def surface() -> dict[str, list[str]]:
    cmd = typer.main.get_command(register())
    out = {}
    for name, sub in sorted(cmd.commands.items()):  # type: ignore[attr-defined]
        out[name] = sorted(opt for p in sub.params for opt in getattr(p, "opts", []))
    return out


def test_cli_surface_matches_snapshot() -> None:
    current = surface()
    if os.environ.get("LMALLOC_UPDATE_SNAPSHOT"):
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    assert current == json.loads(SNAPSHOT.read_text())


def test_every_command_has_one_line_help_and_json() -> None:
    cmd = typer.main.get_command(register())
    for name, sub in cmd.commands.items():  # type: ignore[attr-defined]
        assert sub.help and sub.help.strip(), f"{name} has no help"
        opts = {o for p in sub.params for o in getattr(p, "opts", [])}
        assert "--json" in opts, f"{name} has no --json"
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
