"""A tiny run directory (random tokens, a briefly trained 2-layer GPT) for compress tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from _compressdata import VOCAB, tiny_model

from lmalloc.data.shards import write_token_splits
from lmalloc.model.io import save_model


@pytest.fixture(scope="session")
def _compress_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built once per session (30 training steps); tests get a fresh copy."""
    root = tmp_path_factory.mktemp("compress") / "runs" / "demo"
    rng = np.random.default_rng(0)
    # a learnable stream: each token mostly follows its predecessor + 1
    steps = np.where(rng.random(6000) < 0.8, 1, rng.integers(0, VOCAB, 6000))
    toks = (np.cumsum(steps) % VOCAB).astype(np.uint16)
    write_token_splits(root / "data", {"train": [toks[:4000]], "val": [toks[4000:]]},
                       vocab_size=VOCAB, eot_id=0, split_bytes={"train": 8000, "val": 4000})
    model = tiny_model()
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x = torch.from_numpy(toks[:4000].astype(np.int64))
    for step in range(30):
        i = torch.randint(0, 4000 - 33, (8,), generator=torch.Generator().manual_seed(step))
        idx = torch.stack([x[j:j + 33] for j in i.tolist()])
        _, loss = model(idx[:, :-1], idx[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    save_model(model.eval(), root / "final", extra={"train": {"seq_len": 32}})
    return root


@pytest.fixture
def tiny_compress_run(_compress_template: Path, tmp_path: Path) -> Path:
    """runs/demo with data/ (train + val splits) and final/ (config.json, checkpoint/)."""
    root = tmp_path / "runs" / "demo"
    shutil.copytree(_compress_template, root)
    return root
