"""Tiny synthetic data folders and configs for the training tests (no tokenizer run needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

VOCAB = 256


def corpus(n: int, seed: int) -> np.ndarray:
    """A learnable stream: x[t+1] = (5 x[t] + 3) mod V, with 10% random tokens."""
    rng = np.random.default_rng(seed)
    x = np.empty(n, dtype=np.int64)
    x[0] = 1
    noise = rng.random(n) < 0.1
    rand = rng.integers(0, VOCAB, n)
    for i in range(1, n):
        x[i] = rand[i] if noise[i] else (5 * x[i - 1] + 3) % VOCAB
    return x


def make_data(data_dir: Path, tokenizer: bool = False) -> Path:
    """A prepared data folder: 2 train shards, 1 val shard (3.5 bytes per token)."""
    from lmalloc.data.shards import write_token_splits

    splits = {"train": [corpus(30_000, 1), corpus(10_000, 2)], "val": [corpus(6_000, 3)]}
    write_token_splits(data_dir, splits, vocab_size=VOCAB, eot_id=0,
                       split_bytes={"train": 140_000, "val": 21_000})
    if tokenizer:
        write_tokenizer(data_dir / "tokenizer.json")
    return data_dir


def write_tokenizer(path: Path) -> None:
    """A word-level tokenizer whose words are 't0' ... 't255'."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {f"t{i}": i for i in range(VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(path))


def tiny_model(**kw: Any) -> Any:
    from lmalloc.model.config import GPTConfig

    base: dict[str, Any] = {"vocab_size": VOCAB, "n_layer": 2, "n_head": 2, "d_model": 32,
                            "seq_len": 32}
    return GPTConfig(**{**base, **kw})


def tiny_train(**kw: Any) -> Any:
    from lmalloc.train import TrainConfig

    base: dict[str, Any] = {"lr": 3e-3, "batch_tokens": 256, "micro_batch": 4, "seq_len": 32,
                            "max_steps": 12, "warmup": 0.2, "eval_every": 6,
                            "eval_tokens": 512, "device": "cpu", "seed": 7}
    return TrainConfig(**{**base, **kw})


def tiny_recipe_toml(max_tokens: int = 5120, eval_every: int = 5,
                     eval_tokens: int = 1024) -> str:
    """A recipe file for searches over :func:`make_data` (a one-layer, 32-wide model)."""
    return f"""
[model]
n_layer = 1
n_head = 2
d_model = 32
seq_len = 32
[train]
lr = 3e-3
batch_tokens = 256
micro_batch = 8
seq_len = 32
max_tokens = {max_tokens}
eval_every = {eval_every}
eval_tokens = {eval_tokens}
precision = "fp32"
device = "cpu"
"""


LR_SPACE_TOML = """
[params.lr]
type = "float"
low = 1e-3
high = 1e-2
log = true
"""
"""A one-parameter search space (log-uniform learning rate)."""

LR_SCHEDULE_SPACE_TOML = LR_SPACE_TOML + """[params.schedule]
type = "categorical"
choices = ["cosine", "wsd"]
"""
