"""The exploration stages of ``lmalloc run``: the small-scale search and the scaling ladder.

Both spend the exploration budget with the one trainer and charge the run's ledger, and both
resume after a kill: the search through its Optuna study (``lmalloc.search``), the ladder run
by run (a finished stable run or cooldown branch leaves ``result.json`` and is not run again;
an interrupted one resumes from its checkpoint).

**Hyperparameter transfer.** The search tunes the learning rate and warmup on the ladder's
smallest model under μP (``mup_base_width`` = that model's width), so the same learning rate
is used unchanged by every wider ladder model and by the final run (``lmalloc.model.gpt``
documents the μP rules; the transfer is tested in ``tests/integration/test_mup_transfer.py``).
Batch size is held fixed at the run's recipe: with one batch size per exploration a batch-size
law cannot be fitted (see the closing note of the planner issue).

**Ladder.** Each model size of the design (:mod:`lmalloc.plan.ladder`) trains once with a WSD
schedule and no cooldown, keeping snapshots; each snapshot then gets a short linear cooldown
branch (``Trainer(branch_from=..., cooldown_tokens=...)``), whose final validation loss is one
(N, D, loss) point of the runs table ``ladder.csv`` that the fit reads.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmalloc.layout import LADDER_CSV
from lmalloc.plan.ladder import CostFn, Ladder, LadderRun
from lmalloc.plan.recipe import Recipe
from lmalloc.rundir import RunDir, atomic_write_json, atomic_write_text, read_json

if TYPE_CHECKING:
    from lmalloc.train.config import TrainConfig

LADDER_COLUMNS = ("N", "D", "C", "loss", "bpb", "size", "branch", "status")


def search_space(lr: float) -> dict[str, Any]:
    """The explore search: learning rate (a factor 10 either side of ``lr``) and warmup."""
    return {
        "params": {
            "lr": {"type": "float", "low": lr / 10, "high": lr * 10, "log": True},
            "warmup": {"type": "float", "low": 0.0, "high": 0.2},
        }
    }


def run_search_stage(run: RunDir, proxy: dict[str, Any], recipe: Recipe, *, budget: float,
                     unit: str, trial_tokens: int, strategy: str = "auto",
                     hardware: str | None = None,
                     on_poll: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """Tune lr and warmup on the μP proxy until ``budget`` (``unit``: flops or seconds) is
    spent; returns the search summary with ``best_params``."""
    from lmalloc.search.study import SearchSettings, run_search

    steps = max(1, trial_tokens // recipe.batch_tokens)
    base_train = recipe.train_config(
        max_tokens=trial_tokens, eval_every=max(1, steps // recipe.evals_per_run),
        schedule="cosine").to_dict()
    model = {k: v for k, v in proxy.items() if k != "vocab_size"}
    s = SearchSettings(
        run_dir=str(run.root), space=search_space(recipe.lr), base_model=model,
        base_train=base_train, strategy=strategy, seed=recipe.seed, stage="search",
        budget_flops=budget if unit == "flops" else None,
        budget_seconds=budget if unit == "seconds" else None, hardware=hardware,
    )
    from lmalloc.model.accounting import train_flops_per_token
    from lmalloc.model.config import GPTConfig

    s.trial_flops = train_flops_per_token(GPTConfig.from_dict(proxy)) * trial_tokens
    summary = run_search(s, on_poll=on_poll)
    best = summary.get("best") or []
    summary["best_params"] = (best[0]["params"] if best
                              else {"lr": recipe.lr, "warmup": recipe.warmup})
    return summary


def _trained(out: Path, model: dict[str, Any], train: TrainConfig, data_dir: Path,
             charge: Callable[[dict[str, Any]], None], **branch: Any) -> dict[str, Any]:
    """Train one ladder run (or branch) into ``out`` unless it already finished; ``charge``
    the ledger with what this session spent *before* ``result.json`` marks it finished, so a
    kill between the two cannot lose the charge (a rerun then resumes the finished
    checkpoint, which costs next to nothing, and charges that)."""
    done = out / "result.json"
    if done.exists():
        result: dict[str, Any] = read_json(done, "ladder result")
        result["session_flops"] = result["session_seconds"] = 0.0  # charged when it ran
        charge(result)
        return result
    from lmalloc.model.config import GPTConfig
    from lmalloc.train.trainer import Trainer

    res = Trainer(GPTConfig.from_dict(model), train, data_dir, out,
                  resume=True, **branch).fit().to_dict()
    charge(res)
    atomic_write_json(done, res)
    return res


def _ladder_size(run: RunDir, i: int, lr_run: LadderRun, recipe: Recipe,
                 train: dict[str, Any], cost: CostFn) -> list[dict[str, Any]]:
    """The stable run of one ladder size and its cooldown branches: one table row each.
    Each ledger row carries the cost the design predicted (for the time-model calibration)."""
    from lmalloc.model.config import GPTConfig

    cfg = GPTConfig.from_dict(lr_run.model)
    root = run.path(f"ladder/{i}")
    snaps = tuple(sorted({b.snapshot_tokens for b in lr_run.branches}))
    stable = recipe.train_config(**train, max_tokens=lr_run.stable_tokens, cooldown_frac=0.0,
                                 snapshot_tokens=snaps, eval_every=0)

    def charge(part: str, tokens: float) -> Callable[[dict[str, Any]], None]:
        return lambda r: run.charge("ladder", r["session_flops"], r["session_seconds"], size=i,
                                    part=part, status=r["status"], predicted=cost(cfg, tokens))

    _trained(root / "stable", lr_run.model, stable, run.data,
             charge("stable", float(lr_run.stable_tokens)))
    rows = []
    for b in lr_run.branches:
        snap = root / "stable" / "snapshots" / str(b.snapshot_tokens)
        if b.snapshot_tokens >= lr_run.stable_tokens and not snap.exists():
            snap = root / "stable" / "checkpoint"  # the last snapshot is the end of the run
        r = _trained(root / f"branch-{b.tokens}", lr_run.model,
                     recipe.train_config(**train, max_tokens=b.tokens), run.data,
                     charge(f"branch-{b.tokens}", float(b.cooldown_tokens)),
                     branch_from=snap, cooldown_tokens=b.cooldown_tokens)
        rows.append({"N": lr_run.N, "D": r["tokens"], "C": r["flops"], "loss": r["val_loss"],
                     "bpb": r["val_bpb"], "size": i, "branch": b.tokens, "status": r["status"]})
    return rows


def run_ladder_stage(run: RunDir, ladder: Ladder, recipe: Recipe, lr: float,
                     warmup: float, mup_base_width: int, cost: CostFn,
                     budget: float | None = None, unit: str = "seconds",
                     on_size: Callable[[], None] | None = None) -> list[dict[str, Any]]:
    """Train every ladder size and branch (smallest first); write ``ladder.csv``; return its
    rows. With ``budget``: once three sizes are done (enough for the fit), a size that would
    start after the ladder has already spent ``budget`` (in ``unit``) is skipped, so a
    machine slower than its profile cannot eat the final run's share."""
    train = {"lr": lr, "warmup": warmup}
    rows: list[dict[str, Any]] = []
    for i, lr_run in enumerate(sorted(ladder.runs, key=lambda r: r.N)):
        if budget is not None and i >= 3 and run.spent("ladder")[unit] >= budget:
            if not run.path(f"ladder/{i}/stable/result.json").exists():
                continue
        model = {**lr_run.model, "mup_base_width": mup_base_width}
        rows.extend(_ladder_size(run, i, replace(lr_run, model=model), recipe, train, cost))
        if on_size is not None:
            on_size()
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=LADDER_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(run.path(LADDER_CSV), buf.getvalue())
    return rows


def read_ladder(run: RunDir) -> list[dict[str, str]]:
    """The rows :func:`run_ladder_stage` wrote to ``ladder.csv`` (values as text)."""
    with open(run.path(LADDER_CSV), newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))
