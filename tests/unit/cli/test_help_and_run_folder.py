"""What a new user meets first: every ``--help`` has a working example, shows no value hint a
flag would refuse, cuts nothing at 80 columns; a ``--run`` that cannot be a run folder is one
clear error (exit 2) before any work, never a traceback or a write into the current folder."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from lmalloc.cli import app, register
from lmalloc.cli.app import EXAMPLES
from lmalloc.errors import UserError

NARROW = {"COLUMNS": "80", "TERM": "dumb"}


def _commands() -> list[str]:
    return sorted(typer.main.get_command(register()).commands)  # type: ignore[attr-defined]


def _help(*args: str) -> str:
    res = CliRunner().invoke(app, [*args, "--help"], env=NARROW)
    assert res.exit_code == 0, res.output
    return res.output


def test_every_command_has_an_example_that_parses() -> None:
    group = typer.main.get_command(register())
    assert sorted(EXAMPLES) == _commands()
    for name in _commands():
        assert f"Example: lmalloc {name}" in " ".join(_help(name).split()), name
        words = shlex.split(EXAMPLES[name])
        assert words[:2] == ["lmalloc", name]
        cmd = group.get_command(typer.Context(group), name)  # type: ignore[attr-defined]
        cmd.make_context(name, words[2:])  # unknown options or missing values raise here


@pytest.mark.parametrize("args", [[]] + [[c] for c in ["run", "search", "status", "prepare"]])
def test_flags_show_no_value_hint(args: list[str]) -> None:
    out = _help(*args)
    assert "<bool>" not in out and "<int>  Show INFO" not in out
    if not args:
        assert "-v  " in out or "-v " in out


def test_nothing_is_cut_at_80_columns() -> None:
    for name in [[], *([c] for c in _commands())]:
        out = _help(*name)
        assert "…" not in out, f"lmalloc {' '.join(name)} --help cuts text:\n{out}"
    assert "dqn" in _help("search") and "auto" in _help("search")


@pytest.mark.parametrize("cmd", ["status", "report"])
def test_status_and_report_accept_run_as_option(tmp_path: Path, cmd: str) -> None:
    res = CliRunner().invoke(app, [cmd, "--run", str(tmp_path / "none")])
    assert isinstance(res.exception, UserError) and "not a run directory" in str(res.exception)
    res = CliRunner().invoke(app, [cmd])
    assert isinstance(res.exception, UserError) and "--run" in str(res.exception)


def test_search_defaults_resolve_from_the_package(tmp_path: Path, monkeypatch) -> None:
    from lmalloc.search.space import SearchSpace
    from lmalloc.search.study import DEFAULT_RECIPE, DEFAULT_SPACE
    from lmalloc.train.config import load_recipe

    monkeypatch.chdir(tmp_path)  # nothing called configs/ here
    assert DEFAULT_SPACE.is_absolute() and DEFAULT_RECIPE.is_absolute()
    SearchSpace.from_toml(DEFAULT_SPACE)
    load_recipe(DEFAULT_RECIPE)


@pytest.mark.parametrize("kind", ["file", "under_file", "proc", "long", "empty", "empty_eq"])
def test_bad_run_folders_are_one_clear_error(tmp_path: Path, monkeypatch, kind: str) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    run = {"file": ["--run", "afile"], "under_file": ["--run", "afile/sub"],
           "proc": ["--run", "/proc/x"], "long": ["--run", "a" * 300],
           "empty": ["--run", ""], "empty_eq": ["--run="]}[kind]
    want = {"file": "is a file", "under_file": "is a file", "proc": "pseudo-file system",
            "long": "300 characters", "empty": "--run is empty", "empty_eq": "--run is empty"}
    for cmd in ("prepare", "run", "status"):
        res = CliRunner().invoke(app, [cmd, *run])
        assert isinstance(res.exception, UserError), (cmd, res.output, res.exception)
        assert want[kind] in str(res.exception)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # nothing written


def test_empty_run_exits_2_through_the_entry_point(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-c", "from lmalloc.cli import main; main()", "run",
                          "--run", ""], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert res.returncode == 2 and "--run is empty" in res.stderr
    assert "Traceback" not in res.stderr and list(tmp_path.iterdir()) == []
