"""Data parallelism: two CPU processes under torchrun (gloo) train the same global batch as one
process and give the same losses, within float reduction-order noise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
batch_tokens = 512       # 16 sequences: 4 micro-batches of 4 on one process, 2 per rank on two
micro_batch = 4
seq_len = 32
max_steps = 8
warmup = 0.25
eval_every = 4
eval_tokens = 512
seed = 5
device = "cpu"
"""


def run(cmd: list[str]) -> dict[str, object]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tmp_path: Path) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text(RECIPE)
    one, two = tmp_path / "one", tmp_path / "two"
    make_data(one / "data")
    make_data(two / "data")
    args = ["--recipe", str(recipe), "--run-dir"]
    r1 = run([sys.executable, "-m", "lmalloc.train", *args, str(one)])
    # torchrun's own options first; `-m` makes the script argument a module name
    r2 = run([sys.executable, "-m", "torch.distributed.run", "--standalone",
              "--nproc_per_node", "2", "-m", "lmalloc.train", *args, str(two)])
    assert r1["steps"] == r2["steps"] == 8 and r1["tokens"] == r2["tokens"]
    rows1 = read_metrics(one / "final" / "metrics.jsonl")
    rows2 = read_metrics(two / "final" / "metrics.jsonl")
    loss1 = [r["loss"] for r in rows1 if r["kind"] == "train"]
    loss2 = [r["loss"] for r in rows2 if r["kind"] == "train"]
    assert len(loss1) == len(loss2) == 8
    assert loss2 == pytest.approx(loss1, rel=1e-4)
    assert r2["val_loss"] == pytest.approx(r1["val_loss"], rel=1e-4)
    assert json.loads((two / "final" / "config.json").read_text())["world_size"] == 2
