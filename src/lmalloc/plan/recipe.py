"""The settings every run of one exploration shares (:class:`Recipe`), and what the search
found (:class:`SearchResult`, the one reader of ``search.json``).

A recipe is not a second set of training defaults: it names only what an exploration fixes
for all its runs, and :meth:`Recipe.train_config` turns it into the one
:class:`~lmalloc.train.config.TrainConfig`. Where a field is left at its default here, the
default *is* ``TrainConfig``'s. The fields that differ are the tiny-CPU exploration's own
choices: a small batch (many steps from few tokens), a short evaluation, the WSD schedule the
ladder branches, and a learning rate that is the centre of the search's range under μP at the
proxy's width (the search refines it).

A user's own recipe (``lmalloc run --recipe FILE.toml``, or ``--seq-len``, ``--batch-tokens``,
``--min-params``) changes these fields: :func:`read_recipe_file` reads and type-checks the
file, :meth:`Recipe.check` refuses a recipe the exploration cannot run before any work.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmalloc.errors import UserError, invalid
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

    def check(self) -> Recipe:
        """This recipe, or a :class:`UserError` naming the first field no exploration can run
        with: sizes that are not positive whole numbers, a smallest ladder model or learning
        rate that is not a positive number, a cooldown the ladder cannot branch (it needs a
        fraction in (0, 1)), and whatever the trainer refuses (the batch rule among them)."""
        for name in ("seq_len", "batch_tokens", "micro_batch", "eval_tokens", "evals_per_run"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise invalid(name, v, "a positive whole number")
        for name in ("lr", "min_params"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not (
                    math.isfinite(v) and v > 0):
                raise invalid(name, v, "a positive number")
        if not 0 < self.cooldown_frac < 1:
            raise invalid("cooldown_frac", self.cooldown_frac, "a fraction in (0, 1)")
        self.train_config(max_tokens=self.batch_tokens)  # the trainer's own checks
        return self


RECIPE_FILE_KEYS = tuple(f.name for f in dataclasses.fields(Recipe) if f.name != "seed") + (
    "vocab_size",)
"""What a recipe file may set: :class:`Recipe`'s fields (the seed is ``--seed``) and the
vocabulary (``--vocab-size``, a run option of its own: ``prepare`` trains the tokenizer)."""


def read_recipe_file(path: str | Path) -> dict[str, Any]:
    """The settings of a recipe TOML: a ``[recipe]`` table, or the same keys at the top level.
    An unknown key or a value of the wrong type is a :class:`UserError` naming the key (a
    whole number where a float is expected is taken as the float)."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, IsADirectoryError):
        raise UserError(f"recipe not found: {path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"recipe {path} is not valid TOML: {e}") from None
    table: Any = doc
    if {"model", "train"} & set(doc) and "recipe" not in doc:
        raise UserError(f"recipe {path} has [model]/[train] tables: that is a recipe of "
                        "`lmalloc train`; `lmalloc run --recipe` reads a [recipe] table of "
                        f"{', '.join(RECIPE_FILE_KEYS)}")
    if "recipe" in doc:
        table = doc["recipe"]
        if not isinstance(table, dict) or len(doc) > 1:
            raise UserError(f"recipe {path}: put every key in the [recipe] table or none "
                            f"(found {sorted(doc)} at the top level)")
    if "seed" in table:
        raise UserError(f"recipe {path}: seed is not a recipe setting; give it as --seed")
    unknown = sorted(set(table) - set(RECIPE_FILE_KEYS))
    if unknown:
        raise UserError(f"recipe {path}: unknown key(s) {unknown}; allowed: "
                        f"{', '.join(RECIPE_FILE_KEYS)}")
    kinds = {f.name: f.type for f in dataclasses.fields(Recipe)} | {"vocab_size": "int"}
    out: dict[str, Any] = {}
    for key, v in table.items():
        whole = isinstance(v, int) and not isinstance(v, bool)
        if kinds[key] == "int" and not whole:
            raise UserError(f"recipe {path}: {key} = {v!r} must be a whole number")
        if kinds[key] == "float" and not (whole or isinstance(v, float)):
            raise UserError(f"recipe {path}: {key} = {v!r} must be a number")
        out[key] = float(v) if kinds[key] == "float" else v
    return out


@dataclass(frozen=True)
class SearchResult:
    """``search.json``: the best hyperparameters on the μP proxy, and the trials."""

    lr: float
    warmup: float
    proxy: dict[str, Any]  # the proxy model (its width is the μP base width)
    trials: list[dict[str, Any]]
    # each study's trials and the steps between their evaluations (None: not recorded, runs
    # made before it was), for predicting what each trial cost
    studies: tuple[tuple[list[dict[str, Any]], int | None], ...] = ()

    @property
    def base_width(self) -> int:
        return int(self.proxy["d_model"])

    @property
    def base_depth(self) -> int | None:
        """The proxy's depth when the search ran under CompleteP (None: width-only μP, as
        runs made before depth transfer was on)."""
        d = self.proxy.get("mup_base_depth")
        return None if d is None else int(d)

    @classmethod
    def load(cls, path: str | Path, recipe: Recipe) -> SearchResult:
        """Read ``search.json``; a missing warmup is the recipe's."""
        from lmalloc.rundir import read_json

        doc = read_json(path, "search summary")
        best = doc["best_params"]
        studies = tuple((list(d.get("trials", [])), d.get("eval_every"))
                        for d in (doc, doc.get("horizon")) if d)
        return cls(lr=float(best["lr"]), warmup=float(best.get("warmup", recipe.warmup)),
                   proxy=dict(doc["proxy"]), trials=list(doc.get("trials", [])),
                   studies=studies)
