"""A tiny run (byte-level BPE tokenizer + random GPT) and task files written in tmp_path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from _evaldata import write_tokenizer

from lmalloc.model.config import GPTConfig
from lmalloc.model.gpt import GPT
from lmalloc.model.io import save_model


@pytest.fixture
def tiny_run(tmp_path: Path) -> Path:
    """runs/demo with data/tokenizer.json and final/{config.json, checkpoint/}."""
    torch.manual_seed(0)
    root = tmp_path / "runs" / "demo"
    write_tokenizer(root / "data" / "tokenizer.json")
    cfg = GPTConfig(vocab_size=300, n_layer=1, n_head=2, d_model=16, seq_len=64)
    save_model(GPT(cfg), root / "final", extra={"train": {"seq_len": 64}})
    return root


@pytest.fixture
def tokenizer(tiny_run: Path) -> Any:
    """The tiny run's ``tokenizers.Tokenizer``."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(tiny_run / "data" / "tokenizer.json"))
