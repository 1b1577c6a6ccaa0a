"""A short recovery fine-tune after pruning, through the one :class:`~lmalloc.train.Trainer`.

The pruned module is handed to the trainer as ``model=`` (its ``GPTConfig`` only describes it
for FLOP accounting; structurally pruned blocks keep their own shapes). For unstructured and
2:4 pruning a callback re-applies the keep-masks after every optimizer step (``log_every=1``
makes the trainer call ``on_step`` after each step), so the sparsity pattern survives.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmalloc.compress.prune import apply_masks
from lmalloc.train.callbacks import Callback


class KeepMasks(Callback):
    """Trainer callback: zero the pruned weights again after each step."""

    def __init__(self, masks: dict[str, torch.Tensor]) -> None:
        self.masks = masks

    def on_train_start(self, trainer: Any) -> None:
        apply_masks(trainer.model, self.masks)

    def on_step(self, trainer: Any, row: dict[str, Any]) -> None:
        apply_masks(trainer.model, self.masks)


def recover(model: nn.Module, model_cfg: Any, data_dir: str | os.PathLike[str],
            out_dir: str | os.PathLike[str], steps: int, masks: dict[str, torch.Tensor],
            *, lr: float = 1e-3, seq_len: int | None = None, batch_tokens: int = 4096,
            seed: int = 0) -> dict[str, Any]:
    """Fine-tune ``model`` in place for ``steps`` steps on the run's train split (constant
    LR after a short warm-up, no evaluation during the run); returns the trainer's result."""
    from lmalloc.train.config import TrainConfig
    from lmalloc.train.trainer import Trainer

    seq = seq_len or model_cfg.seq_len
    micro = max(1, min(8, batch_tokens // seq))
    cfg = TrainConfig(lr=lr, schedule="constant", warmup=0.1,
                      batch_tokens=micro * seq, micro_batch=micro, seq_len=seq,
                      max_steps=steps, eval_every=0, eval_tokens=micro * seq * 4, seed=seed,
                      device="cpu", precision="fp32", compile=False, log_every=1,
                      spike_factor=0.0)
    result = Trainer(model_cfg, cfg, Path(data_dir), Path(out_dir), callbacks=[KeepMasks(masks)],
                     resume=False, model=model).fit()
    model.eval()
    apply_masks(model, masks)
    return result.to_dict()
