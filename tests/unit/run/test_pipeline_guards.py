"""``lmalloc run``'s guards around its stages: one run per directory at a time, leftovers of
killed writes removed on restart, a refused disk write turned into a clear UserError."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

import pytest

from lmalloc.errors import UserError
from lmalloc.run import RunOptions, run_pipeline
from lmalloc.run.context import RunContext


def _stop_after_lock(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    def first_stage(_ctx: RunContext) -> None:
        raise exc

    monkeypatch.setattr("lmalloc.run.pipeline.check_options", first_stage)


def test_a_second_run_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    with open(root / ".run.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another `lmalloc run` holds it
        with pytest.raises(UserError, match="another `lmalloc run` is running"):
            run_pipeline(root, RunOptions())


def test_stale_temps_are_removed_and_disk_errors_are_user_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "r"
    (root / ".data.abc.tmp" / "shards").mkdir(parents=True)  # a prepare killed halfway
    (root / ".plan.json.x1.tmp").write_text("{")
    (root / "plan.json").write_text("{}")
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(root / "trials/3/metrics.jsonl"))
    _stop_after_lock(monkeypatch, full)
    with pytest.raises(UserError, match=r"cannot write .*trials/3/metrics\.jsonl: the disk is "
                       "full") as e:
        run_pipeline(root, RunOptions())
    assert e.value.__cause__ is full
    assert sorted(os.listdir(root)) == [".run.lock", "plan.json"]


def test_other_errors_keep_their_traceback(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    _stop_after_lock(monkeypatch, KeyError("a bug"))
    with pytest.raises(KeyError):
        run_pipeline(tmp_path / "r", RunOptions())
