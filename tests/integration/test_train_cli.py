"""``lmalloc train`` and ``lmalloc eval`` through the CLI (in process)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _train_data import make_data
from typer.testing import CliRunner

from lmalloc.cli.app import register

RECIPE = """
[model]
n_layer = 2
n_head = 2
d_model = 32
seq_len = 32

[train]
batch_tokens = 256
micro_batch = 4
seq_len = 32
max_steps = 6
eval_tokens = 256
device = "cpu"
"""


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    torch.set_num_threads(1)
    p = tmp_path / "tiny.toml"
    p.write_text(RECIPE)
    return p


def invoke(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(register(), list(args))
    return r.exit_code, r.output


def test_train_then_eval(tmp_path: Path, recipe: Path) -> None:
    run = tmp_path / "run"
    make_data(run / "data", tokenizer=True)
    code, out = invoke("train", "--run", str(run), "--recipe", str(recipe),
                       "--max-tokens", "1024", "--json")
    assert code == 0, out
    res = json.loads(out)
    assert res["status"] == "completed" and res["tokens"] == 1024 and res["steps"] == 4
    assert (run / "final" / "checkpoint" / "model.safetensors").exists()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["stages"]["train"]["status"] == "completed"
    [charge] = [r for r in manifest["ledger"] if r["stage"] == "train"]
    assert charge["flops"] == pytest.approx(res["flops"]) and charge["seconds"] > 0

    code, out = invoke("eval", "--run", str(run), "--json")
    assert code == 0, out
    ev = json.loads(out)
    assert ev["loss"] == pytest.approx(res["val_loss"], rel=1e-5) or ev["tokens"] > 256
    text = tmp_path / "t.txt"
    text.write_text(" ".join(f"t{(5 * i + 3) % 256}" for i in range(200)))
    code, out = invoke("eval", "--run", str(run), "--text", str(text), "--json")
    assert code == 0, out
    doc = json.loads((run / "eval.json").read_text())
    assert set(doc["perplexity"]) == {"val", "text:t.txt"}
    assert doc["perplexity"]["text:t.txt"]["tokens"] == 199


def test_missing_data_exits_2_naming_prepare(tmp_path: Path, recipe: Path) -> None:
    cmd = [sys.executable, "-c", "from lmalloc.cli import main; main()", "train", "--run",
           str(tmp_path / "nothing"), "--recipe", str(recipe)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "lmalloc prepare" in r.stderr
    assert "Traceback" not in r.stderr


def test_eval_without_training_is_a_user_error(tmp_path: Path) -> None:
    from lmalloc.errors import UserError
    from lmalloc.evaluate.perplexity import evaluate_run

    make_data(tmp_path / "run" / "data")
    with pytest.raises(UserError, match="lmalloc train"):
        evaluate_run(tmp_path / "run")
