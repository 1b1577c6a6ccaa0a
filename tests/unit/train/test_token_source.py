"""The Trainer and evaluate_lm read any TokenSource, not only a prepared folder (fine-tuning)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from lmalloc.evaluate.perplexity import evaluate_lm
from lmalloc.model.config import GPTConfig
from lmalloc.train import TrainConfig, Trainer

T = 16


class CopySplit:
    """Sequences ``a b c ... | a b c ...``: the second half repeats the first; the loss is
    taken on the second half only (targets -1 on the first), like a prompt → answer task."""

    def __init__(self, n: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        half = rng.integers(1, 30, size=(n, T // 2 + 1))
        self.x = np.concatenate([half, half], axis=1)[:, :T]
        self.y = np.concatenate([half, half], axis=1)[:, 1:T + 1].copy()
        self.y[:, : T // 2 - 1] = -1
        self.num_tokens = int((self.y >= 0).sum())
        self.num_bytes = self.num_tokens

    def window_batch(self, step: int, batch_size: int, seq_len: int, seed: int, rank: int = 0,
                     world_size: int = 1) -> tuple[np.ndarray, np.ndarray]:
        idx = np.random.default_rng((seed, step, rank)).integers(0, len(self.x), batch_size)
        return self.x[idx], self.y[idx]

    def sequential_batches(self, batch_size: int, seq_len: int, rank: int = 0,
                           world_size: int = 1, max_tokens: int | None = None,
                           ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for i in range(rank * batch_size, len(self.x), batch_size * world_size):
            yield self.x[i:i + batch_size], self.y[i:i + batch_size]


class CopyTask:
    def __init__(self, root: Path) -> None:
        self.dir, self.vocab_size = root, 32
        self._splits = {"train": CopySplit(256, 0), "val": CopySplit(64, 1)}

    def split(self, name: str) -> CopySplit:
        return self._splits[name]


def test_trainer_learns_a_masked_task_from_a_token_source(tmp_path: Path) -> None:
    torch.manual_seed(0)
    task = CopyTask(tmp_path)
    cfg = GPTConfig(vocab_size=32, n_layer=1, n_head=2, d_model=32, seq_len=T, dropout=0.0)
    tc = TrainConfig(lr=1e-2, batch_tokens=16 * T, micro_batch=16, seq_len=T, max_steps=100,
                     eval_every=100, eval_tokens=0, warmup=0.05, device="cpu", compile=False)
    res = Trainer(cfg, tc, task, tmp_path / "out", resume=False).fit()
    assert res.status == "completed"
    val = task.split("val")
    # only the unmasked targets count; copying the first half makes them predictable
    ev = evaluate_lm(_load(tmp_path / "out", cfg), val, seq_len=T, batch_size=16)
    assert ev["tokens"] == val.num_tokens
    assert res.val_loss is not None and res.val_loss < 0.5 * np.log(29)  # chance: ln 29
    assert abs(ev["loss"] - res.val_loss) < 1e-4


def _load(out: Path, cfg: GPTConfig) -> torch.nn.Module:
    from lmalloc.model.gpt import GPT
    from lmalloc.train.checkpoint import load_weights

    model = GPT(cfg)
    load_weights(out / "checkpoint", model)
    return model
