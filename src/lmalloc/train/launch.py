"""Training a run directory's model: what ``lmalloc train`` and ``python -m lmalloc.train``
(``torchrun ... -m lmalloc.train``) call.

Reads the prepared data in ``runs/<name>/data``, takes the model and train settings from a
recipe (or from ``plan.json`` when no recipe is given), trains into ``runs/<name>/final/``,
charges the budget ledger and records the stage. Under ``torchrun`` only rank 0 writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmalloc.errors import UserError
from lmalloc.rundir import RunDir, read_json
from lmalloc.train.config import TrainConfig, load_recipe


def resolve_settings(run: RunDir, recipe: str | Path | None) -> tuple[dict[str, Any],
                                                                       TrainConfig, str]:
    """Model keyword arguments, train config and where they came from."""
    if recipe is not None:
        model_kw, train = load_recipe(recipe)
        return model_kw, train, str(recipe)
    plan_path = run.root / "plan.json"
    if plan_path.exists():
        run.verify_artifact("plan.json")  # an altered plan must not be trained silently
        plan = read_json(plan_path, "plan")
        if isinstance(plan.get("model"), dict) and isinstance(plan.get("train"), dict):
            model_kw = {k: v for k, v in plan["model"].items() if k != "vocab_size"}
            return model_kw, TrainConfig.from_dict(plan["train"]), str(plan_path)
    raise UserError(
        f"no settings to train {run.root} with: pass --recipe (e.g. configs/tiny.toml) or run "
        "`lmalloc plan` first"
    )


def apply_overrides(train: TrainConfig, max_tokens: int | None = None,
                    max_seconds: float | None = None, lr: float | None = None) -> TrainConfig:
    """CLI overrides: ``max_tokens`` sets the run's length (replacing the recipe's token, step
    and FLOP limits); ``max_seconds`` adds a time limit; ``lr`` sets the peak lr."""
    changes: dict[str, Any] = {}
    if max_tokens is not None:
        changes.update(max_tokens=max_tokens, max_steps=None, max_flops=None)
    if max_seconds is not None:
        changes["max_seconds"] = max_seconds
    if lr is not None:
        changes["lr"] = lr
    return train.replace(**changes) if changes else train


def train_run(run_dir: str | Path, recipe: str | Path | None = None, *,
              max_tokens: int | None = None, max_seconds: float | None = None,
              lr: float | None = None, resume: bool = True,
              progress: bool = False) -> dict[str, Any]:
    """Train the run's final model; returns the :class:`TrainResult` as a dict."""
    from lmalloc.data.shards import DATA_JSON, TokenData
    from lmalloc.model.config import GPTConfig

    run = RunDir(run_dir)
    if not (run.data / DATA_JSON).exists():
        raise UserError(
            f"{run.data} holds no prepared data: run `lmalloc prepare --run {run.root}` first"
        )
    data = TokenData(run.data)
    model_kw, train, source = resolve_settings(run, recipe)
    train = apply_overrides(train, max_tokens, max_seconds, lr)
    model_kw.setdefault("seq_len", train.seq_len)
    model_cfg = GPTConfig(vocab_size=data.vocab_size, **model_kw)
    from lmalloc.train.trainer import Trainer  # torch: only once the inputs are valid

    trainer = Trainer(model_cfg, train, run.data, run.final, resume=resume, progress=progress)
    result = trainer.fit()
    if trainer.ctx.is_main:
        run.charge("train", result.session_flops, result.session_seconds,
                   status=result.status)
        run.record_stage("train", settings=source, status=result.status,
                         reason=result.reason, out="final", steps=result.steps,
                         tokens=result.tokens, val_loss=result.val_loss,
                         val_bpb=result.val_bpb)
    return result.to_dict()
