"""Callbacks: the metrics file (resume truncation, torn lines), progress bar, StopTraining."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from lmalloc.train.callbacks import Callback, MetricsFile, ProgressBar, StopTraining, read_metrics


def fake_trainer(step: int) -> Any:
    return SimpleNamespace(step=step, total_steps=10)


def test_metrics_rows_and_resume_truncation(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    m = MetricsFile(path)
    m.on_train_start(fake_trainer(0))
    for s in range(1, 6):
        m.on_step(fake_trainer(s), {"step": s, "loss": 1.0 / s})
    m.on_eval(fake_trainer(5), {"step": 5, "val_loss": 0.3})
    m.on_train_end(fake_trainer(5), SimpleNamespace(steps=5, status="completed", reason="x"))
    with open(path, "a") as f:
        f.write('{"kind": "train", "st')  # torn line from a killed writer
    rows = read_metrics(path)
    assert [r["kind"] for r in rows] == ["train"] * 5 + ["eval", "end"]

    m2 = MetricsFile(path)
    m2.on_train_start(fake_trainer(3))  # resumed from a checkpoint at step 3
    m2.on_step(fake_trainer(4), {"step": 4, "loss": 9.0})
    m2.on_train_end(fake_trainer(4), SimpleNamespace(steps=4, status="completed", reason=""))
    rows = read_metrics(path)
    assert [(r["kind"], r["step"]) for r in rows] == [
        ("train", 1), ("train", 2), ("train", 3), ("train", 4), ("end", 4)]
    assert rows[3]["loss"] == 9.0
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_progress_bar_silent_off_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    bar = ProgressBar()  # pytest's stderr is not a TTY
    assert not bar.enabled
    bar.on_train_start(fake_trainer(0))
    bar.on_step(fake_trainer(1), {"step": 1, "loss": 2.0, "tokens_per_s": 10.0})
    bar.on_train_end(fake_trainer(1), SimpleNamespace())
    assert capsys.readouterr().err == ""


def test_stop_training_statuses() -> None:
    e = StopTraining("pruned", "worse than median")
    assert (e.status, e.reason) == ("pruned", "worse than median")
    with pytest.raises(ValueError, match="status"):
        StopTraining("completed")


def test_base_callback_hooks_are_no_ops() -> None:
    cb = Callback()
    t = fake_trainer(0)
    cb.on_train_start(t)
    cb.on_step(t, {})
    cb.on_eval(t, {})
    cb.on_train_end(t, SimpleNamespace())


def test_progress_bar_runs_when_enabled() -> None:
    bar = ProgressBar(enabled=True)
    bar.on_train_start(fake_trainer(0))
    bar.on_step(fake_trainer(1), {"step": 1, "loss": 2.0, "tokens_per_s": 10.0})
    bar.on_train_end(fake_trainer(1), SimpleNamespace())
    assert bar._progress is None
