"""The final run under torchrun with 2 CPU processes (gloo): FSDP reaches the loss of one
process at the same global batch, and checkpoints move between world sizes (2 -> 1, 1 -> 2).

The 2-process DDP run against one process is ``test_train_ddp.py`` (same recipe, reused).

Tolerance: the runs differ only in float32 summation order (gradients reduce-scattered over
2 ranks instead of summed over 4 micro-batches in one process); measured: <= 1e-7 relative on
every loss. The loss falls by >= 2.8e-3 relative per step here, and a real fault (a rank
training on half the batch without gradient sync, a lost optimizer state, another lr or
batch) moves it by more than that from the step it starts. rel = 1e-4 is 1000x the noise and
~30x below the smallest step.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _train_data import make_data
from safetensors.torch import load_file
from test_train_ddp import RECIPE

from lmalloc.testing.cli import invoke
from lmalloc.train import read_metrics

pytestmark = pytest.mark.slow
# the DDP test's recipe (8 steps of 16 sequences), keeping a checkpoint after step 4
SNAPSHOT = 4 * 512
RECIPE_SNAP = RECIPE.replace('device = "cpu"', f'device = "cpu"\nsnapshot_tokens = [{SNAPSHOT}]')
LMALLOC = [sys.executable, "-c", "from lmalloc.cli import main; main()"]


def train(run: Path, recipe: Path, *extra: str) -> dict[str, object]:
    """``lmalloc train --json``: in this process for one process (it is the cheap case; most
    of a torchrun test's time is starting processes), else in a subprocess that launches
    torchrun (one thread per process, as on CI)."""
    args = ["train", "--run", str(run), "--recipe", str(recipe), "--json", *extra]
    if "--nproc" not in extra:
        code, text = invoke(*args)
        assert code == 0, text
    else:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        r = subprocess.run([*LMALLOC, *args], env=env, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        text = r.stdout
    out: dict[str, object] = json.loads(text)
    return out


def losses(run: Path) -> dict[int, float]:
    rows = read_metrics(run / "final" / "metrics.jsonl")
    return {r["step"]: r["loss"] for r in rows if r["kind"] == "train"}


def new_run(root: Path, name: str, from_checkpoint: Path | None = None) -> Path:
    run = root / name
    make_data(run / "data")
    if from_checkpoint is not None:
        shutil.copytree(from_checkpoint, run / "final" / "checkpoint")
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One process, and 2 processes where the memory model picks FSDP (2 MiB devices)."""
    root = tmp_path_factory.mktemp("torchrun")
    recipe = root / "r.toml"
    recipe.write_text(RECIPE_SNAP)
    one, fsdp = new_run(root, "one"), new_run(root, "fsdp")
    train(one, recipe)
    train(fsdp, recipe, "--nproc", "2", "--memory", "2MiB")
    return {"root": root, "recipe": recipe, "one": one, "fsdp": fsdp}


def test_fsdp_matches_one_process(runs: dict[str, Path]) -> None:
    one, fsdp = losses(runs["one"]), losses(runs["fsdp"])
    assert sorted(one) == sorted(fsdp) == list(range(1, 9))
    assert [fsdp[s] for s in one] == pytest.approx(list(one.values()), rel=1e-4)
    stage = json.loads((runs["fsdp"] / "manifest.json").read_text())["stages"]["train"]
    assert stage["parallel"] == "fsdp" and stage["nproc"] == 2
    assert "DDP replica does not fit" in stage["parallel_reason"]
    assert "warning" not in stage["parallel_reason"]  # FSDP fits the 2 MiB
    val = [json.loads((runs[k] / "manifest.json").read_text())["stages"]["train"]["val_loss"]
           for k in ("one", "fsdp")]
    assert val[1] == pytest.approx(val[0], rel=1e-4)
    # the same single-file checkpoint as one process: same tensors, same values
    a, b = (load_file(str(runs[k] / "final" / "checkpoint" / f)) for k in ("one", "fsdp")
            for f in ("model.safetensors",))
    assert sorted(a) == sorted(b)
    assert all(float((a[k] - b[k]).abs().max()) < 1e-5 for k in a)


def test_checkpoint_of_two_processes_resumes_on_one(runs: dict[str, Path]) -> None:
    snap = runs["fsdp"] / "final" / "snapshots" / str(SNAPSHOT)
    run = new_run(runs["root"], "fsdp_to_one", snap)
    result = train(run, runs["recipe"])
    assert result["steps"] == 8 and result["parallel"]["parallel"] == "single"
    resumed, full = losses(run), losses(runs["fsdp"])
    assert sorted(resumed) == [5, 6, 7, 8]  # continued from step 4, not restarted
    assert [resumed[s] for s in resumed] == pytest.approx([full[s] for s in resumed], rel=1e-4)


def test_checkpoint_of_one_process_resumes_on_two(runs: dict[str, Path]) -> None:
    snap = runs["one"] / "final" / "snapshots" / str(SNAPSHOT)
    run = new_run(runs["root"], "one_to_fsdp", snap)
    result = train(run, runs["recipe"], "--nproc", "2", "--parallel", "fsdp")
    assert result["steps"] == 8 and result["parallel"]["parallel"] == "fsdp"
    resumed, full = losses(run), losses(runs["one"])
    assert sorted(resumed) == [5, 6, 7, 8]
    assert [resumed[s] for s in resumed] == pytest.approx([full[s] for s in resumed], rel=1e-4)
    state = json.loads((run / "final" / "checkpoint" / "state.json").read_text())
    assert state["world_size"] == 2 and state["micro_batch"] == 4
