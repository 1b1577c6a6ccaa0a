"""The run directory: atomic writes, checksums, the ledger, and paths that cannot escape."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
from pathlib import Path

import pytest

from lmalloc.errors import UserError
from lmalloc.rundir import (
    OutsideRunError,
    RunDir,
    atomic_dir,
    atomic_write_json,
    atomic_write_text,
    confined,
    read_json,
    safe_join,
)


def test_atomic_write_replaces_whole_and_leaves_no_temp(tmp_path: Path) -> None:
    p = tmp_path / "a" / "x.json"
    atomic_write_json(p, {"v": 1})
    atomic_write_json(p, {"v": 2})
    assert read_json(p) == {"v": 2}
    assert sorted(os.listdir(p.parent)) == ["x.json"]


def test_failed_write_keeps_previous_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = tmp_path / "x.txt"
    atomic_write_text(p, "old")

    def boom(*a: object, **k: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(UserError, match=r"cannot write .*x\.txt: the disk is full"):
        atomic_write_text(p, "new")
    assert p.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["x.txt"]


def test_other_os_errors_keep_their_type(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a: object, **k: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError) as e:
        atomic_write_text(tmp_path / "x.txt", "new")
    assert not isinstance(e.value, UserError) and os.listdir(tmp_path) == []


def test_atomic_dir_is_all_or_nothing(tmp_path: Path) -> None:
    final = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_dir(final) as d:
        (d / "half.bin").write_bytes(b"x")
        raise RuntimeError("killed halfway")
    assert not final.exists()
    assert os.listdir(tmp_path) == []
    with atomic_dir(final) as d:
        (d / "whole.bin").write_bytes(b"y")
    assert (final / "whole.bin").read_bytes() == b"y"
    with atomic_dir(final) as d:  # replacing an existing folder
        (d / "new.bin").write_bytes(b"z")
    assert sorted(os.listdir(final)) == ["new.bin"]
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_atomic_dir_without_exchange_and_an_interrupted_swap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lmalloc.rundir as rd

    final = tmp_path / "ckpt"
    with atomic_dir(final) as d:
        (d / "v1").write_bytes(b"1")
    monkeypatch.setattr(rd, "_exchange", lambda a, b: False)  # a file system without it
    with atomic_dir(final) as d:
        (d / "v2").write_bytes(b"2")
    assert sorted(os.listdir(tmp_path)) == ["ckpt"] and os.listdir(final) == ["v2"]
    # a process killed between parking the old folder and renaming the new one in:
    os.replace(final, tmp_path / ".ckpt.old-999")
    with atomic_dir(tmp_path / "other"):
        pass
    assert not final.exists()  # only the folder being written is restored
    with pytest.raises(RuntimeError), atomic_dir(final):
        assert os.listdir(final) == ["v2"]  # the parked version is back before the write
        raise RuntimeError("fails")
    assert os.listdir(final) == ["v2"]


def test_remove_stale_temps(tmp_path: Path) -> None:
    from lmalloc.rundir import remove_stale_temps

    (tmp_path / "a" / ".x.json.abc.tmp").parent.mkdir()
    (tmp_path / "a" / ".x.json.abc.tmp").write_text("half")
    (tmp_path / ".checkpoint.q1.tmp" / "sub").mkdir(parents=True)
    (tmp_path / "keep.json").write_text("{}")
    assert len(remove_stale_temps(tmp_path)) == 2
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "a", "keep.json"]


def test_read_json_reports_corrupt_file(tmp_path: Path) -> None:
    p = tmp_path / "plan.json"
    p.write_text('{"truncated": ')
    with pytest.raises(UserError, match="plan.json.*corrupt"):
        read_json(p, "plan")
    with pytest.raises(UserError, match="not found"):
        read_json(tmp_path / "missing.json")


@pytest.mark.parametrize("rel", ["../x", "/etc/passwd", "a/../../x"])
def test_safe_join_refuses_escapes(tmp_path: Path, rel: str) -> None:
    with pytest.raises(UserError, match="escapes"):
        safe_join(tmp_path, rel)


def test_safe_join_refuses_symlink_escape(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    os.symlink("/etc", tmp_path / "run" / "link")
    with pytest.raises(UserError, match="escapes"):
        safe_join(tmp_path / "run", "link/passwd")
    assert safe_join(tmp_path / "run", "a/b") == (tmp_path / "run" / "a" / "b").resolve()


@pytest.mark.parametrize("sub", ["trials", "final", "ladder"])
def test_no_write_follows_a_link_out_of_a_run(tmp_path: Path, sub: str) -> None:
    """A folder of the run that links elsewhere: every write helper refuses, naming the path,
    before anything (a folder, a temp file) is created on the other side."""
    outside = tmp_path / "outside"
    outside.mkdir()
    run = RunDir(tmp_path / "run")
    run.update_manifest(stages={})
    (run.root / sub).symlink_to(outside, target_is_directory=True)
    target = run.root / sub / "3" / "result.json"
    with pytest.raises(OutsideRunError, match=f"refusing to write {re.escape(str(target))}"):
        atomic_write_json(target, {"x": 1})
    with pytest.raises(OutsideRunError, match="leads out of the run folder"):
        with atomic_dir(run.root / sub / "checkpoint"):
            pass
    with pytest.raises(OutsideRunError):  # the link itself as the target
        atomic_write_text(run.root / sub, "x")
    with pytest.raises(OutsideRunError):  # ".." out of the run, no link needed
        atomic_write_text(run.root / "a" / ".." / ".." / "escaped.txt", "x")
    assert list(outside.iterdir()) == [] and not (tmp_path / "escaped.txt").exists()


def test_links_inside_a_run_and_a_linked_run_folder_are_fine(tmp_path: Path) -> None:
    real = tmp_path / "disk" / "run"
    real.mkdir(parents=True)
    (tmp_path / "run").symlink_to(real, target_is_directory=True)  # runs/x -> /mnt/x
    run = RunDir(tmp_path / "run")
    (real / "elsewhere").mkdir()
    (real / "trials").symlink_to(real / "elsewhere", target_is_directory=True)
    atomic_write_json(run.root / "trials" / "0" / "r.json", {"ok": 1})
    assert read_json(real / "elsewhere" / "0" / "r.json") == {"ok": 1}
    (tmp_path / "free").mkdir()  # under no run folder: not checked
    (tmp_path / "free" / "l").symlink_to(tmp_path / "disk", target_is_directory=True)
    atomic_write_text(tmp_path / "free" / "l" / "x.txt", "y")
    assert confined(tmp_path / "free" / "l" / "x.txt") == tmp_path / "free" / "l" / "x.txt"


def test_checksums_detect_alteration(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    atomic_write_json(tmp_path / "plan.json", {"N": 1})
    run.record_artifact("plan.json")
    run.verify_artifact("plan.json")
    (tmp_path / "plan.json").write_text('{"N": 2}\n')
    with pytest.raises(UserError, match="checksum"):
        run.verify_artifact("plan.json")


def _charge(root: str, k: int) -> None:
    for _ in range(k):
        RunDir(root).charge("explore", flops=1.0, seconds=0.5)


def test_ledger_adds_up_under_concurrent_writers(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_charge, args=(str(tmp_path), 25)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    run = RunDir(tmp_path)
    assert run.spent() == {"flops": 100.0, "seconds": 50.0}
    assert run.spent("train") == {"flops": 0.0, "seconds": 0.0}
    assert len(json.loads(run.manifest_path.read_text())["ledger"]) == 100


def test_ledger_by_stage_sums_seconds_and_their_parts() -> None:
    from lmalloc.rundir import ledger_by_stage

    rows = [{"stage": "prepare", "flops": 0.0, "seconds": 2.0},
            {"stage": "search", "flops": 5.0, "seconds": 3.0, "train_seconds": 2.0,
             "eval_seconds": 0.5, "startup_seconds": 0.5},
            {"stage": "search", "flops": 1.0, "seconds": 1.5, "train_seconds": 1.0,
             "eval_seconds": 0.5},
            {"stage": "search", "flops": 0.0, "seconds": 0.25, "idle_seconds": 0.25}]
    by = ledger_by_stage(rows)
    assert list(by) == ["prepare", "search"]
    assert by["prepare"] == {"flops": 0.0, "seconds": 2.0}
    assert by["search"] == {"flops": 6.0, "seconds": 4.75, "train_seconds": 3.0,
                            "eval_seconds": 1.0, "startup_seconds": 0.5, "idle_seconds": 0.25}
