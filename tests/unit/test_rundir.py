"""The run directory: atomic writes, checksums, the ledger, and paths that cannot escape."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from pathlib import Path

import pytest

from lmalloc.errors import UserError
from lmalloc.rundir import (
    RunDir,
    atomic_dir,
    atomic_write_json,
    atomic_write_text,
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
    with pytest.raises(OSError):
        atomic_write_text(p, "new")
    assert p.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["x.txt"]


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
