"""The model: its shape (``GPTConfig``), exact parameter and FLOP counts, and shape choice.

This package imports without torch, so ``cost`` and ``scaling`` can count parameters and FLOPs
on machines without it. The module itself: ``from lmalloc.model.gpt import GPT``.
"""

from __future__ import annotations

from lmalloc.model.accounting import (
    forward_flops_per_token,
    param_count,
    train_flops_per_token,
)
from lmalloc.model.config import GPTConfig
from lmalloc.model.shape import shape_for

__all__ = [
    "GPTConfig",
    "forward_flops_per_token",
    "param_count",
    "shape_for",
    "train_flops_per_token",
]
