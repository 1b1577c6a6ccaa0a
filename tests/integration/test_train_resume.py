"""Exact resume: a training process killed with SIGKILL and resumed writes the same loss curve
as an uninterrupted run with the same seed (CPU, one thread, bit for bit)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _train_data import make_data

from lmalloc.train import read_metrics

RECIPE = """
[model]
n_layer = 2
n_head = 2
d_model = 32
seq_len = 32

[train]
lr = 3e-3
batch_tokens = 256
micro_batch = 4
seq_len = 32
max_steps = {steps}
warmup = 0.1
eval_every = 20
eval_tokens = 256
checkpoint_every = 5
seed = 11
device = "cpu"
"""


def start(run: Path, recipe: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "lmalloc.train", "--run", str(run),
                             "--recipe", str(recipe)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def losses(run: Path) -> dict[int, float]:
    rows = read_metrics(run / "final" / "metrics.jsonl")
    return {r["step"]: r["loss"] for r in rows if r["kind"] == "train"}


def state_step(run: Path) -> int:
    try:
        return int(json.loads((run / "final" / "checkpoint" / "state.json").read_text())["step"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


def kill_after_checkpoint(proc: subprocess.Popen[bytes], run: Path, ckpt_step: int) -> int:
    """SIGKILL ``proc`` once a checkpoint at ``ckpt_step`` or later exists and at least two
    more steps are in the metrics; returns the last step written before the kill."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        saved = state_step(run)
        if saved >= ckpt_step and max(losses(run), default=0) >= saved + 2:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return max(losses(run))
        time.sleep(0.005)
    err = proc.stderr.read() if proc.stderr else b""
    raise AssertionError(f"no kill point: exit {proc.poll()}, {err!r}")


@pytest.mark.slow  # three torch processes: ~15 s idle, ~40 s on a loaded 2-core box
def test_sigkill_then_resume_matches_uninterrupted(tmp_path: Path) -> None:
    steps = 60
    recipe = tmp_path / "r.toml"
    recipe.write_text(RECIPE.format(steps=steps))
    ref, run = tmp_path / "ref", tmp_path / "run"
    make_data(ref / "data")
    make_data(run / "data")

    proc = start(run, recipe)
    reference = start(ref, recipe)  # runs alongside; threads are pinned to one each
    last = kill_after_checkpoint(proc, run, ckpt_step=10)
    assert proc.returncode == -signal.SIGKILL
    killed_at = state_step(run)
    assert last > killed_at, "the kill should land after the checkpoint, mid-run"

    resumed = start(run, recipe)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err.decode()
    assert json.loads(out)["status"] == "completed"
    assert reference.wait(timeout=300) == 0

    got, want = losses(run), losses(ref)
    assert sorted(got) == list(range(1, steps + 1)) == sorted(want)
    assert got == want  # bit for bit
    rows = read_metrics(run / "final" / "metrics.jsonl")
    assert len([r for r in rows if r["kind"] == "train"]) == steps  # no duplicate rows
    evals = [(r["step"], r["val_loss"]) for r in rows if r["kind"] == "eval"]
    ref_evals = [(r["step"], r["val_loss"])
                 for r in read_metrics(ref / "final" / "metrics.jsonl") if r["kind"] == "eval"]
    assert evals == ref_evals
