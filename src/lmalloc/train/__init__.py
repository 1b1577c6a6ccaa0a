"""The one training loop (every stage trains through :class:`Trainer`), its config,
schedules, optimizer, callbacks, checkpoints and data parallelism.

``TrainConfig`` and recipes import without torch; the rest loads torch on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from lmalloc.train.config import TrainConfig, load_recipe, round_batch_tokens

_LAZY = {
    "Trainer": "lmalloc.train.trainer",
    "TrainResult": "lmalloc.train.trainer",
    "Callback": "lmalloc.train.callbacks",
    "StopTraining": "lmalloc.train.callbacks",
    "MetricsFile": "lmalloc.train.callbacks",
    "ProgressBar": "lmalloc.train.callbacks",
    "read_metrics": "lmalloc.train.callbacks",
}

__all__ = ["TrainConfig", "load_recipe", "round_batch_tokens", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lmalloc.train' has no attribute {name!r}")
