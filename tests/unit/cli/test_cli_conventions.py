"""Conventions every command keeps: ``--json``, -q/-v, the run log, shell completion."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from lmalloc.cli import logs, register
from lmalloc.cli.output import say, show_progress
from lmalloc.errors import UserError


def _leaf_commands(cmd: Any, path: str = "lmalloc") -> Iterator[tuple[str, Any]]:
    """Every runnable command of the click tree, however deeply groups nest."""
    subs = getattr(cmd, "commands", None)
    if subs is None:
        yield path, cmd
        return
    for name, sub in subs.items():
        yield from _leaf_commands(sub, f"{path} {name}")


def test_every_registered_command_takes_json() -> None:
    leaves = dict(_leaf_commands(typer.main.get_command(register())))
    assert len(leaves) >= 10  # the walk found the registry, not an empty group
    missing = [name for name, cmd in leaves.items()
               if "--json" not in {o for p in cmd.params for o in getattr(p, "opts", [])}]
    assert not missing, f"commands without --json: {missing}"


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(register(), list(args))


def _failing_prepare(run: Path, *flags: str) -> Any:
    """A run-directory command that ends fast (its source is missing) but logs on the way."""
    r = _invoke(*flags, "prepare", "--run", str(run), str(run.parent / "missing.txt"))
    assert isinstance(r.exception, UserError), r.output
    return r


def test_verbosity_levels_on_stderr(tmp_path: Path) -> None:
    quiet = _failing_prepare(tmp_path / "q", "-q").stderr
    default = _failing_prepare(tmp_path / "d").stderr
    info = _failing_prepare(tmp_path / "v", "-v").stderr
    debug = _failing_prepare(tmp_path / "vv", "-vv").stderr
    assert "this command's log" not in quiet + default  # INFO hidden
    assert "this command's log" in info and "command line:" not in info  # INFO, no DEBUG
    assert "command line: lmalloc -vv prepare" in debug  # DEBUG shown
    assert not (quiet + default + info + debug).count("Traceback")


def test_quiet_and_verbose_contradict() -> None:
    r = _invoke("-q", "-v", "estimate", "--params", "1e6", "--tokens", "1e8")
    assert isinstance(r.exception, UserError) and "--quiet" in str(r.exception)


def test_quiet_switches_progress_off_through_the_existing_variable(tmp_path: Path) -> None:
    seen: list[bool] = []

    def fake_prepare(*_: Any, progress: bool, **__: Any) -> None:
        seen.append(progress)
        seen.append(bool(os.environ.get(logs.NO_PROGRESS_ENV)))
        raise UserError("stop here")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("lmalloc.data.pipeline.prepare_run", fake_prepare)
        _invoke("prepare", "--run", str(tmp_path / "a"))
        _invoke("-q", "prepare", "--run", str(tmp_path / "b"))
    assert seen == [True, False, False, True]
    assert not os.environ.get(logs.NO_PROGRESS_ENV)  # restored after the command
    assert show_progress(as_json=False) and not show_progress(as_json=True)


def test_run_log_is_inside_the_run_and_appends(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "a"
    _failing_prepare(run)
    _failing_prepare(run, "-q")
    log = run / logs.RUN_LOG
    lines = log.read_text().splitlines()
    assert lines[0].endswith(f"command line: lmalloc prepare --run {run} "
                             f"{run.parent / 'missing.txt'}")
    assert lines[0][:4].isdigit() and "Z " in lines[0]  # timestamped, UTC
    assert any("command line: lmalloc -q prepare" in ln for ln in lines[1:])  # appended
    failed = [ln for ln in lines if " ERROR " in ln]
    assert len(failed) == 2 and "does not exist" in failed[0]
    # nothing else written: the log is not an artifact, so no manifest entry either
    assert sorted(p.name for p in run.iterdir()) == [logs.RUN_LOG]


def test_run_log_needs_an_existing_run_unless_created(tmp_path: Path) -> None:
    assert logs.attach_run_log(tmp_path / "absent") is None
    assert not (tmp_path / "absent").exists()
    assert logs.attach_run_log(None) is None
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    (run / "manifest.json").write_text("{}")
    assert logs.run_root(run / "final") == run  # generate/export accept a run's final/
    assert logs.attach_run_log(run / "final") == run.resolve() / logs.RUN_LOG
    logs.reset()
    assert "command line:" in (run / logs.RUN_LOG).read_text()


def test_say_follows_verbosity(capsys: pytest.CaptureFixture[str]) -> None:
    shown = {}
    for level in (-1, 0, 1):
        logs.configure(level)
        say("[bold]train[/]")
        say("[yellow]warning:[/] fit is flat")
        shown[level] = capsys.readouterr().err
        logs.reset()
    assert "train" not in shown[-1] and "fit is flat" in shown[-1]  # -q: warnings only
    assert shown[0].count("train") == 1 and "fit is flat" in shown[0]
    assert "INFO" in shown[1] and shown[1].count("train") == 1  # -v: as a record, once


def test_estimate_json_is_one_document() -> None:
    r = _invoke("-v", "estimate", "--params", "1e8", "--tokens", "2e9", "--hardware",
                "a100-40gb", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["hardware"] == "a100-40gb"


def test_fit_json_is_one_document(tmp_path: Path) -> None:
    csv = tmp_path / "runs.csv"
    rows = [(n, d, 1.7 + 400 / n**0.34 + 400 / d**0.28) for n in (1e6, 4e6, 1.6e7)
            for d in (2e7, 8e7, 3.2e8)]
    csv.write_text("N,D,loss\n" + "".join(f"{n},{d},{loss}\n" for n, d, loss in rows))
    r = _invoke("-q", "fit", str(csv), "--bootstrap", "4", "--target-flops", "1e18", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["n_runs"] == 9 and "optimal" in doc


def test_bash_completion_lists_subcommands() -> None:
    env = {"_LMALLOC_COMPLETE": "complete_bash", "COMP_WORDS": "lmalloc pr", "COMP_CWORD": "1"}
    r = CliRunner().invoke(register(), [], env=env, prog_name="lmalloc")
    assert r.exit_code == 0, r.output
    assert set(r.stdout.split()) == {"prepare", "profile"}


def test_optuna_trial_lines_follow_verbosity(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    import optuna

    run = tmp_path / "run"
    shown = {}
    for level in (0, 1):
        logs.configure(level)
        logs.attach_run_log(run, create=True)
        logs.adopt_optuna()
        optuna.logging.get_logger("optuna.study.study").info("Trial %d finished", level)
        shown[level] = capsys.readouterr().err
        logs.reset()
    assert "Trial 0 finished" not in shown[0] and "Trial 1 finished" in shown[1]
    text = (run / logs.RUN_LOG).read_text()
    assert "Trial 0 finished" in text and "Trial 1 finished" in text  # both kept in the log
    assert optuna.logging.get_logger("optuna").handlers  # Optuna's own handler is back


def test_run_log_records_the_outcome_one_line_each(tmp_path: Path) -> None:
    logs.configure(0, ["train", "--run", str(tmp_path)])
    logs.attach_run_log(tmp_path)
    logs.finish()
    logs.configure(0, ["eval", "--run", str(tmp_path)])
    logs.attach_run_log(tmp_path)
    try:
        raise KeyError("a bug")
    except KeyError:
        logs.finish()  # as the app's close callback: while the exception is handled
    lines = (tmp_path / logs.RUN_LOG).read_text().splitlines()
    assert all(ln[:4].isdigit() for ln in lines)  # the traceback did not break lines
    assert " finished in " in lines[3] and "command line: lmalloc eval" in lines[4]
    assert "ERROR" in lines[-1] and "KeyError" in lines[-1] and "Traceback" in lines[-1]
