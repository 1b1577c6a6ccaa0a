"""Activation checkpointing under DDP and FSDP (2 CPU processes, gloo): the same losses as
one process without it (float reduction order only; see test_torchrun_fsdp.py for why
rel = 1e-4 separates that noise from a real fault)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_torchrun_fsdp import losses, new_run, train
from test_train_ddp import RECIPE

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_checkpointed_data_parallel_matches_one_plain_process(tmp_path: Path,
                                                              parallel: str) -> None:
    plain, ckpt = tmp_path / "plain.toml", tmp_path / "ckpt.toml"
    plain.write_text(RECIPE)
    ckpt.write_text(RECIPE.replace('device = "cpu"',
                                   'device = "cpu"\nactivation_checkpointing = true'))
    one, two = new_run(tmp_path, "one"), new_run(tmp_path, parallel)
    train(one, plain)
    result = train(two, ckpt, "--nproc", "2", "--parallel", parallel)
    assert result["parallel"]["parallel"] == parallel  # type: ignore[index]
    config = json.loads((two / "final" / "config.json").read_text())
    assert config["train"]["activation_checkpointing"] is True
    a, b = losses(one), losses(two)
    assert sorted(a) == sorted(b) == list(range(1, 9))
    assert [b[s] for s in a] == pytest.approx(list(a.values()), rel=1e-4)
