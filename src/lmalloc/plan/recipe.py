"""The settings every run of one exploration shares (:class:`Recipe`), and what the search
found (:class:`SearchResult`, the one reader of ``search.json``).

A recipe is not a second set of training defaults: it names only what an exploration fixes
for all its runs, and :meth:`Recipe.train_config` turns it into the one
:class:`~lmalloc.train.config.TrainConfig`. Where a field is left at its default here, the
default *is* ``TrainConfig``'s. The fields that differ are the tiny-CPU exploration's own
choices: a small batch (many steps from few tokens), a short evaluation, the WSD schedule the
ladder branches, and a learning rate that is the centre of the search's range under μP at the
proxy's width (the search refines it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmalloc.train.config import TrainConfig

_TRAIN: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(TrainConfig)}


@dataclass(frozen=True)
class Recipe:
    """The fixed settings of every exploration and final run (a tiny-CPU default)."""

    seq_len: int = _TRAIN["seq_len"]
    batch_tokens: int = 2048
    micro_batch: int = 16
    eval_tokens: int = 16384
    evals_per_run: int = 4
    lr: float = 1e-2  # under μP at the base width; the search refines it
    warmup: float = _TRAIN["warmup"]
    weight_decay: float = _TRAIN["weight_decay"]
    min_lr_ratio: float = _TRAIN["min_lr_ratio"]
    cooldown_frac: float = _TRAIN["cooldown_frac"]
    min_params: float = 1e5  # smallest ladder model (non-embedding parameters)
    seed: int = _TRAIN["seed"]

    def train_config(self, **changes: Any) -> TrainConfig:
        """The run of this recipe, with ``changes`` (a stop condition among them)."""
        return TrainConfig(**{
            "seq_len": self.seq_len, "batch_tokens": self.batch_tokens,
            "micro_batch": self.micro_batch, "eval_tokens": self.eval_tokens,
            "lr": self.lr, "warmup": self.warmup, "weight_decay": self.weight_decay,
            "min_lr_ratio": self.min_lr_ratio, "schedule": "wsd",
            "cooldown_frac": self.cooldown_frac, "seed": self.seed, **changes})


@dataclass(frozen=True)
class SearchResult:
    """``search.json``: the best hyperparameters on the μP proxy, and the trials."""

    lr: float
    warmup: float
    proxy: dict[str, Any]  # the proxy model (its width is the μP base width)
    trials: list[dict[str, Any]]

    @property
    def base_width(self) -> int:
        return int(self.proxy["d_model"])

    @classmethod
    def load(cls, path: str | Path, recipe: Recipe) -> SearchResult:
        """Read ``search.json``; a missing warmup is the recipe's."""
        from lmalloc.rundir import read_json

        doc = read_json(path, "search summary")
        best = doc["best_params"]
        return cls(lr=float(best["lr"]), warmup=float(best.get("warmup", recipe.warmup)),
                   proxy=dict(doc["proxy"]), trials=list(doc.get("trials", [])))
