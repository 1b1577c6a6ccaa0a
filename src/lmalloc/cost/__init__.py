"""The cost model: budgets, hardware profiles, the time model and the memory model.

Every budget decision in lmalloc goes through this package. It imports without torch; only the
measurement functions in :mod:`lmalloc.cost.profile` import torch, lazily.

The API other stages use:

- :func:`parse_budget` → :class:`Budget` (seconds, FLOPs, bytes; ``unit_total()``: the one
  unit a run spends it in).
- :func:`get_hardware` → :class:`HardwareProfile` (built-in datasheet or measured profile).
- :func:`predict_time` → :class:`~lmalloc.cost.time_model.TimeEstimate`.
- :func:`estimate_memory` → :class:`~lmalloc.cost.memory.MemoryEstimate`;
  :func:`recommend` → :class:`~lmalloc.cost.memory.Recommendation`; :func:`inference_memory`.
- :func:`estimate_run`: all of the above for one run (what ``lmalloc estimate`` prints).
"""

from __future__ import annotations

from lmalloc.cost.budget import Budget, parse_budget, parse_size, parse_time
from lmalloc.cost.estimate import estimate_run
from lmalloc.cost.hardware import (
    BUILTIN,
    HardwareProfile,
    default_hardware,
    get_hardware,
    known_hardware,
)
from lmalloc.cost.memory import (
    MemoryEstimate,
    Recommendation,
    estimate_memory,
    inference_memory,
    recommend,
)
from lmalloc.cost.time_model import TimeEstimate, predict_time

__all__ = [
    "BUILTIN",
    "Budget",
    "HardwareProfile",
    "MemoryEstimate",
    "Recommendation",
    "TimeEstimate",
    "default_hardware",
    "estimate_memory",
    "estimate_run",
    "get_hardware",
    "inference_memory",
    "known_hardware",
    "parse_budget",
    "parse_size",
    "parse_time",
    "predict_time",
    "recommend",
]
