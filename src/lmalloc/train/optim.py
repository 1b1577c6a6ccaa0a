"""AdamW with per-group learning-rate multipliers.

The model decides its parameter groups (``model.optim_groups(lr, weight_decay)``: decay only
on matmul weights, μP scaling when configured). Each group's ``lr`` relative to the base lr is
kept as ``lr_mult``, so the schedule sets ``group["lr"] = lr(step) * group["lr_mult"]``.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from lmalloc.train.config import TrainConfig


def param_groups(model: nn.Module, lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """The model's groups with ``lr_mult`` set; a model without ``optim_groups`` gets the
    usual split (decay on tensors with ≥ 2 dims)."""
    if hasattr(model, "optim_groups"):
        groups = [dict(g) for g in model.optim_groups(lr, weight_decay)]  # type: ignore[operator]
    else:
        params = [p for p in model.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
    for g in groups:
        g["params"] = list(g["params"])
        g.setdefault("lr_mult", g.get("lr", lr) / lr)
        g["lr"] = lr * g["lr_mult"]
    return [g for g in groups if g["params"]]


def fused_available(device: torch.device) -> bool:
    """Whether this torch has a fused AdamW kernel for ``device`` (CUDA, and CPU since torch
    2.4, where it measured ~1 ms a step against ~11 ms for ``foreach`` on a 1M-parameter
    model, 2 threads)."""
    if "fused" not in inspect.signature(torch.optim.AdamW).parameters:
        return False
    try:
        p = torch.zeros(1, device=device, requires_grad=True)
        torch.optim.AdamW([p], fused=True)
        return True
    except (RuntimeError, ValueError):
        return False


def build_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW (fused where available, else foreach) over the model's groups."""
    groups = param_groups(model, cfg.lr, cfg.weight_decay)
    kind = {"fused": True} if fused_available(device) else {"foreach": True}
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                             **kind)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's lr to ``lr`` times its multiplier."""
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_mult", 1.0)
