"""Bad ``--nproc`` / ``--parallel`` input on the command line: a clear message and exit code 2,
before any process starts or any budget is spent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _train_data import make_data

from lmalloc.testing.cli import invoke

RECIPE = """
[model]
n_layer = 1
n_head = 2
d_model = 16
seq_len = 32

[train]
batch_tokens = 256       # 8 sequences
micro_batch = 8
seq_len = 32
max_steps = 2
device = "cpu"
"""


@pytest.fixture()
def run(tmp_path: Path) -> tuple[Path, Path]:
    make_data(tmp_path / "r" / "data")
    recipe = tmp_path / "r.toml"
    recipe.write_text(RECIPE)
    return tmp_path / "r", recipe


@pytest.mark.parametrize(("nproc", "says"), [("0", "nproc = 0"), ("-1", "nproc = -1"),
                                             ("100000", "more processes than devices")])
def test_train_bad_nproc_exits_2(run: tuple[Path, Path], nproc: str, says: str) -> None:
    root, recipe = run
    code, out = invoke("train", "--run", str(root), "--recipe", str(recipe), "--nproc", nproc)
    assert code == 2 and says in out
    assert not (root / "final").exists()


def test_train_forced_layout_on_one_process_exits_2(run: tuple[Path, Path]) -> None:
    root, recipe = run
    code, out = invoke("train", "--run", str(root), "--recipe", str(recipe), "--parallel",
                       "fsdp")
    assert code == 2 and "at least 2 processes" in out


def test_resume_that_cannot_keep_the_global_batch_exits_2(run: tuple[Path, Path]) -> None:
    """A checkpoint read in micro-batches of 8 cannot go on with 4 sequences per process."""
    root, recipe = run
    ckpt = root / "final" / "checkpoint"
    ckpt.mkdir(parents=True)
    (ckpt / "state.json").write_text(json.dumps({"step": 1, "micro_batch": 8,
                                                 "world_size": 1}))
    code, out = invoke("train", "--run", str(root), "--recipe", str(recipe), "--nproc", "2")
    assert code == 2 and "cannot resume on 2 processes" in out and "[1]" in out


@pytest.mark.parametrize("args", [("--nproc", "0"), ("--nproc", "100000"),
                                  ("--nproc", "1", "--parallel", "ddp")])
def test_run_bad_nproc_exits_2_before_starting(tmp_path: Path, args: tuple[str, ...]) -> None:
    code, out = invoke("run", "--run", str(tmp_path / "new"), "--budget", "1m", *args)
    assert code == 2 and ("nproc" in out or "parallel" in out)
    assert not (tmp_path / "new").exists()  # nothing prepared, nothing charged
