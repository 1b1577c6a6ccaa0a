"""Golden per-step losses of the tiny recipe (configs/tiny.toml) under a fixed seed.

Any change to the model, the initialisation, the optimizer, the schedule or the data order
moves these numbers; if the change is intended, regenerate the file and review the diff:

    LMALLOC_REGEN_GOLDEN=1 OMP_NUM_THREADS=1 \
        .venv/bin/pytest tests/integration/test_train_golden.py

The stored values come from torch 2.13.0 on CPU, fp32, one thread; other torch versions are
skipped (kernels change the last bits).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from _train_data import VOCAB, make_data

from lmalloc.train import Trainer, load_recipe, read_metrics

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden" / "tiny_losses.json"
STEPS = 30


def run_tiny(tmp: Path) -> list[float]:
    from lmalloc.model.config import GPTConfig

    model_kw, train = load_recipe(REPO / "configs" / "tiny.toml")
    train = train.replace(max_tokens=None, max_steps=STEPS, device="cpu", precision="fp32",
                          compile=False, eval_every=0, checkpoint_every=0)
    Trainer(GPTConfig(vocab_size=VOCAB, **model_kw), train, make_data(tmp / "data"),
            tmp / "out").fit()
    return [r["loss"] for r in read_metrics(tmp / "out" / "metrics.jsonl")
            if r["kind"] == "train"]


def test_tiny_recipe_matches_golden_losses(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    losses = run_tiny(tmp_path)
    assert len(losses) == STEPS
    if os.environ.get("LMALLOC_REGEN_GOLDEN"):
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps({
            "torch": torch.__version__, "recipe": "configs/tiny.toml", "steps": STEPS,
            "data": "tests/integration/_train_data.py make_data", "losses": losses,
        }, indent=1) + "\n")
        pytest.skip("golden file regenerated")
    golden = json.loads(GOLDEN.read_text())
    if golden["torch"].split("+")[0].rsplit(".", 1)[0] != torch.__version__.split("+")[0].rsplit(
            ".", 1)[0]:
        pytest.skip(f"golden losses are from torch {golden['torch']}, this is {torch.__version__}")
    assert losses == pytest.approx(golden["losses"], abs=1e-4)
