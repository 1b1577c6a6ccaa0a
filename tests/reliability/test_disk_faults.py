"""Disk full and read-only folders: writing an artifact that the file system refuses fails
cleanly — a :class:`UserError` (exit code 2 from the CLI) naming the path, the previous version
intact and still valid, no temporary files left behind.

We run as root in CI, so ``chmod`` cannot make a folder read-only: the errors are injected at
each system call of a write (``mkstemp``, ``write``, ``fsync``, ``rename``), with the exact
exception each library raises on a really full disk (measured on a 256 KiB tmpfs: safetensors
says ``SafetensorError(... (os error 28))``, SQLite through Optuna ``StorageInternalError`` on
``database or disk is full``). Where the machine lets us mount a tmpfs, one more test fills a
real one and remounts it read-only.
"""

from __future__ import annotations

import errno
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import lmalloc.rundir as rd
from lmalloc.errors import UserError
from lmalloc.rundir import RunDir, atomic_write_json, disk_error

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
EROFS = OSError(errno.EROFS, os.strerror(errno.EROFS))


def _temps(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp") or ".old-" in p.name]


class _FullFile(io.RawIOBase):
    """A file object whose writes fail as on a full disk."""

    def __init__(self, f: io.BufferedWriter) -> None:
        self.f = f

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # type: ignore[override]
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def fileno(self) -> int:
        return self.f.fileno()

    def close(self) -> None:
        self.f.close()
        super().close()


def _inject(monkeypatch, where: str) -> None:
    def fail(err: OSError):
        def f(*a, **k):
            raise err
        return f

    if where == "mkstemp":  # a read-only folder: the temp file cannot even be created
        monkeypatch.setattr(rd.tempfile, "mkstemp", fail(EROFS))
    elif where == "write":
        real = os.fdopen
        monkeypatch.setattr(rd.os, "fdopen", lambda fd, *a, **k: _FullFile(real(fd, *a, **k)))
    elif where == "fsync":
        monkeypatch.setattr(rd.os, "fsync", fail(ENOSPC))
    elif where == "replace":
        monkeypatch.setattr(rd.os, "replace", fail(EROFS))


@pytest.mark.parametrize("where", ["mkstemp", "write", "fsync", "replace"])
def test_refused_artifact_write_keeps_the_old_file(tmp_path: Path, monkeypatch,
                                                   where: str) -> None:
    plan = tmp_path / "run" / "plan.json"
    atomic_write_json(plan, {"N": 1})
    _inject(monkeypatch, where)
    with pytest.raises(UserError, match=rf"cannot write {plan}: the (disk is full|file system "
                       r"is read-only).*previous version.*intact") as e:
        atomic_write_json(plan, {"N": 2, "pad": "x" * 10_000})
    assert isinstance(e.value.__cause__, OSError)
    monkeypatch.undo()
    assert json.loads(plan.read_text()) == {"N": 1}
    assert _temps(tmp_path) == []


@pytest.mark.parametrize("where", ["write", "replace"])
def test_ledger_and_manifest_survive_a_full_disk(tmp_path: Path, monkeypatch,
                                                 where: str) -> None:
    run = RunDir(tmp_path / "run")
    run.charge("search", 1e9, 2.0, trial=0)
    run.record_stage("split", out="split.json")
    before = run.manifest_path.read_bytes()
    _inject(monkeypatch, where)
    for write in (lambda: run.charge("search", 1e9, 2.0, trial=1),
                  lambda: run.record_stage("search", out="search.json"),
                  lambda: run.update_manifest(note="x")):
        with pytest.raises(UserError, match="manifest.json"):
            write()
    monkeypatch.undo()
    assert run.manifest_path.read_bytes() == before
    assert run.spent() == {"flops": 1e9, "seconds": 2.0}
    assert _temps(tmp_path) == []


@pytest.fixture()
def checkpoint(tmp_path: Path):
    import torch

    from lmalloc.model import GPTConfig
    from lmalloc.model.gpt import GPT
    from lmalloc.train.checkpoint import full_state, write_checkpoint

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=32, n_layer=1, n_head=2, d_model=16, seq_len=8))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    path = write_checkpoint(tmp_path / "trials" / "0" / "checkpoint", *full_state(model, opt),
                            {"step": 1})
    return path, model, opt


@pytest.mark.parametrize("which", ["model", "optimizer", "state"])
def test_checkpoint_save_on_a_full_disk_keeps_the_previous_one(checkpoint, monkeypatch,
                                                               which: str) -> None:
    import torch
    from safetensors import SafetensorError

    from lmalloc.train import checkpoint as ck

    path, model, opt = checkpoint
    files = {p.name: p.read_bytes() for p in path.iterdir()}
    full = SafetensorError("Error while serializing: I/O error: No space left on device "
                           "(os error 28)")  # what safetensors raises on a full tmpfs

    def refuse(*a, **k):
        raise full

    if which == "model":
        monkeypatch.setattr(ck, "save_model", refuse)
    elif which == "optimizer":
        monkeypatch.setattr(ck, "save_file", refuse)
    else:
        _inject(monkeypatch, "write")  # state.json goes through atomic_write_json
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    with pytest.raises(UserError, match=rf"cannot write {path}.*disk is full"):
        ck.write_checkpoint(path, *ck.full_state(model, opt), {"step": 2})
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in path.iterdir()} == files
    assert _temps(path.parent) == []
    assert ck.load_checkpoint(path, model, opt)["step"] == 1  # still valid


def test_prepare_on_a_full_disk_exits_2_naming_the_path(tmp_path: Path, monkeypatch,
                                                        capsys) -> None:
    """``lmalloc prepare`` writing its shards into a full disk: exit 2, nothing half-written."""
    import lmalloc.data.pack as pack
    from lmalloc.cli import main

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(6):
        (corpus / f"d{i}.txt").write_text(f"document {i} " + "lorem ipsum dolor " * 40)
    real_open = open

    def full_open(file, mode="r", *a, **k):
        f = real_open(file, mode, *a, **k)
        return _FullFile(f) if str(file).endswith(".bin") and "w" in mode else f

    monkeypatch.setattr(pack, "open", full_open, raising=False)
    run = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", ["lmalloc", "prepare", "--run", str(run), str(corpus),
                                      "--vocab-size", "300", "--json"])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    assert "cannot write" in err and str(run / "data") in err.replace("\n", "")
    assert "disk is full" in err and "Traceback" not in err
    assert not (run / "data").exists() and _temps(tmp_path) == []


def test_a_full_study_database_is_recognised() -> None:
    """SQLite's full-disk error arrives wrapped by SQLAlchemy and Optuna; it is still a clear
    disk error (the search and ``lmalloc run`` turn it into exit code 2)."""
    import sqlite3

    from optuna.exceptions import StorageInternalError

    try:
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.OperationalError as inner:
            raise StorageInternalError("An exception is raised during the commit.") from inner
    except StorageInternalError as outer:
        err = disk_error("/runs/r/study.db", outer)
    assert err is not None and "cannot write /runs/r/study.db: the disk is full" in str(err)
    assert disk_error("/x", ValueError("unrelated")) is None
    assert disk_error("/x", OSError(errno.EIO, "I/O error")) is None  # a real fault: a bug


def test_a_search_on_a_full_disk_is_a_user_error(tmp_path: Path, monkeypatch) -> None:
    """``lmalloc search`` (not only ``lmalloc run``) turns the study's full disk into exit 2."""
    import sqlite3

    from _reliability_tiny import tiny_data, tiny_settings
    from optuna.exceptions import StorageInternalError

    from lmalloc.search import study as st

    def full(*a, **k):
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.OperationalError as inner:
            raise StorageInternalError("An exception is raised during the commit.") from inner

    tiny_data(tmp_path / "run" / "data")
    s = tiny_settings(tmp_path / "run", n_trials=2)
    monkeypatch.setattr(st, "recover_orphans", full)
    with pytest.raises(UserError, match="the disk is full"):
        st.run_search(s)


def _can_mount(where: Path) -> bool:
    where.mkdir()
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(where)],
                        capture_output=True).returncode == 0
    return ok


def test_real_full_and_read_only_tmpfs(tmp_path: Path) -> None:
    """A real 256 KiB tmpfs, filled and then remounted read-only (skipped where mounting is
    not allowed: it needs root with CAP_SYS_ADMIN)."""
    mnt = tmp_path / "mnt"
    if not _can_mount(mnt):
        pytest.skip("cannot mount a tmpfs here")
    try:
        run = RunDir(mnt / "run")
        atomic_write_json(run.path("plan.json"), {"N": 1})
        run.record_artifact("plan.json")
        run.charge("search", 1.0, 1.0)
        with open(mnt / "filler", "wb") as f:  # fill the disk to the last byte
            with pytest.raises(OSError):
                f.write(b"\0" * 400_000)
                f.flush()
        before = run.manifest_path.read_bytes()
        with pytest.raises(UserError, match="plan.json: the disk is full"):
            atomic_write_json(run.path("plan.json"), {"N": 2, "pad": "x" * 100_000})
        with pytest.raises(UserError, match="manifest.json: the disk is full"):
            run.charge("search", 1.0, 1.0, note="y" * 100_000)
        assert run.manifest_path.read_bytes() == before
        run.verify_artifact("plan.json")
        assert _temps(mnt) == []
        (mnt / "filler").unlink()
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        with pytest.raises(UserError, match="plan.json: the file system is read-only"):
            atomic_write_json(run.path("plan.json"), {"N": 3})
        run.verify_artifact("plan.json")
        assert json.loads(run.path("plan.json").read_text()) == {"N": 1}
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
