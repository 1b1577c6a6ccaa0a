"""The exploration stages of ``lmalloc run``: the small-scale search and the scaling ladder.

Both spend the exploration budget with the one trainer and charge the run's ledger, and both
resume after a kill: the search through its Optuna study (``lmalloc.search``), the ladder run
by run (a finished stable run or cooldown branch leaves ``result.json`` and is not run again;
an interrupted one resumes from its checkpoint).

**Hyperparameter transfer.** The search tunes the learning rate and warmup on the ladder's
smallest model under μP (``mup_base_width`` = that model's width) and CompleteP
(``mup_base_depth`` = its depth), so the same learning rate is used unchanged by every wider
and deeper ladder model and by the final run (``lmalloc.model.gpt``
documents the μP rules; the transfer is tested in ``tests/integration/test_mup_transfer.py``).
What they do not carry is the training horizon: the search stage also runs a study of the
same proxy at 4× shorter trials (``stages.HORIZON_RATIO``), and the fit stage fits the
learning-rate law lr*(D) through the two horizons' optima. Batch size is held fixed at the
run's recipe: with one batch size per exploration a batch-size law cannot be fitted (see the
closing note of the planner issue).

**Ladder.** Each model size of the design (:mod:`lmalloc.plan.ladder`) trains once with a WSD
schedule and no cooldown, keeping snapshots; each snapshot then gets a short linear cooldown
branch (``Trainer(branch_from=..., cooldown_tokens=...)``), whose final validation loss is one
(N, D, loss) point of the runs table ``ladder.csv`` that the fit reads.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmalloc.layout import LADDER_CSV
from lmalloc.plan.ladder import MIN_SIZES, CostFn, Ladder, LadderRun
from lmalloc.plan.recipe import Recipe
from lmalloc.rundir import RunDir, atomic_write_json, atomic_write_text, ledger_parts, read_json
from lmalloc.scaling.parametric import MIN_POINTS_MAP as MIN_FIT_POINTS

if TYPE_CHECKING:
    from lmalloc.train.config import TrainConfig

LADDER_COLUMNS = ("N", "D", "C", "loss", "bpb", "size", "branch", "status")
# Val tokens of a trial's evaluations before its last (what the pruner compares). Trials are
# evaluated on the same tokens, so what must be resolved is a paired difference: measured on
# WikiText-2 at 2 x 64 (bench/eval_noise.py) its standard error at 4096 tokens is 0.009 nats
# against 0.07 for either loss alone, below the 0.02-0.1 nats between learning rates the
# pruner sees early; the last evaluation keeps recipe.eval_tokens for the final ranking.
INTERIM_EVAL_TOKENS = 4096


def eval_every(trial_tokens: int, recipe: Recipe, pruner: str) -> int:
    """Steps between a search trial's evaluations: ``recipe.evals_per_run`` of them for the
    pruner to compare, and only the closing one without a pruner (nothing reads the rest)."""
    steps = max(1, trial_tokens // recipe.batch_tokens)
    return 0 if pruner == "none" else max(1, steps // recipe.evals_per_run)


def trial_seconds(trial: dict[str, Any], every: int, recipe: Recipe,
                  train: Callable[[Any, float], float],
                  evaluation: Callable[[Any, int], float], cfg: Any) -> float:
    """Predicted seconds of one search trial as it ran (its ``tokens``, its ``state``):
    ``train(cfg, tokens)``, an interim evaluation (``evaluation(cfg, val_tokens)``) every
    ``every`` steps and, unless a pruner stopped it there, the closing full one. Predicting
    every trial with a whole trial's evaluations made the time scale of the demo's search
    0.86 where its trainings ran 1.2x slower than the time model, and the ladder designed
    with it overran its share by a size."""
    steps = math.ceil(float(trial["tokens"]) / recipe.batch_tokens)
    pruned = trial.get("state") == "pruned"
    interim = (steps - (0 if pruned else 1)) // every if every else 0
    return (train(cfg, float(trial["tokens"]))
            + interim * evaluation(cfg, min(recipe.eval_tokens, INTERIM_EVAL_TOKENS))
            + (0.0 if pruned else evaluation(cfg, recipe.eval_tokens)))


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
                     on_poll: Callable[[Any], None] | None = None,
                     study_name: str | None = None, pruner: str = "asha",
                     trial_seconds: float = 0.0) -> dict[str, Any]:
    """Tune lr and warmup on the μP proxy until the search stage has spent ``budget``
    (``unit``: flops or seconds; what an earlier study of the stage spent counts) and return
    the search summary with ``best_params``. ``study_name``: a second study of the run (its
    trials in ``trials/NAME-N``); ``pruner``: ASHA by default, ``"none"`` to train every
    trial to the end; ``trial_seconds``: a whole trial's predicted time, so that a time budget
    starts no trial it cannot pay for (what is left goes back to the run)."""
    from lmalloc.search.study import STUDY_NAME, SearchSettings, run_search

    # the schedule of the ladder and the final run (WSD), so the lr found is theirs
    base_train = recipe.train_config(
        max_tokens=trial_tokens, eval_every=eval_every(trial_tokens, recipe, pruner),
        interim_eval_tokens=min(recipe.eval_tokens, INTERIM_EVAL_TOKENS)).to_dict()
    model = {k: v for k, v in proxy.items() if k != "vocab_size"}
    s = SearchSettings(
        run_dir=str(run.root), space=search_space(recipe.lr), base_model=model,
        base_train=base_train, strategy=strategy, seed=recipe.seed, stage="search",
        budget_flops=budget if unit == "flops" else None,
        budget_seconds=budget if unit == "seconds" else None, hardware=hardware,
        study_name=study_name or STUDY_NAME, pruner=pruner,
    )
    from lmalloc.model.accounting import train_flops_per_token
    from lmalloc.model.config import GPTConfig

    s.trial_flops = train_flops_per_token(GPTConfig.from_dict(proxy)) * trial_tokens
    s.trial_seconds = trial_seconds
    summary = run_search(s, on_poll=on_poll)
    summary["eval_every"] = base_train["eval_every"]
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
        for key in ("session_flops", "session_seconds", "session_eval_seconds",
                    "session_checkpoint_seconds", "startup_seconds"):
            result[key] = 0.0  # charged when it ran
        charge(result)
        return result
    from lmalloc.model.config import GPTConfig
    from lmalloc.train.trainer import Trainer

    res = Trainer(GPTConfig.from_dict(model), train, data_dir, out,
                  resume=True, **branch).fit().to_dict()
    charge(res)
    atomic_write_json(done, res)
    return res


LADDER_TOLERANCE = 0.05
"""How far past its share the ladder may go: its time model's error on one training (the
decisions below use the calibrated model; the hard time cap is the share times 1 + this)."""


@dataclass(frozen=True)
class LadderAllowance:
    """The ladder's share of the budget and how it predicts a training's cost *now*.

    ``scale()`` is the run's measured-over-predicted time so far (``RunContext.time_scale``;
    1 for FLOP budgets), so each decision uses everything measured up to that boundary."""

    share: float
    unit: str
    scale: Callable[[], float] = lambda: 1.0
    tolerance: float = LADDER_TOLERANCE

    def left(self, run: RunDir) -> float:
        return self.share * (1 + self.tolerance) - float(run.spent("ladder")[self.unit])

    def fits(self, run: RunDir, predicted: float) -> bool:
        """Would a training the uncalibrated model prices at ``predicted`` end in the share?"""
        return predicted * self.scale() <= self.left(run)


def _size_cost(lr_run: LadderRun, cost: CostFn) -> float:
    from lmalloc.model.config import GPTConfig

    cfg = GPTConfig.from_dict(lr_run.model)
    return cost(cfg, float(lr_run.stable_tokens)) + sum(
        cost(cfg, float(b.cooldown_tokens)) for b in lr_run.branches)


def _ladder_size(run: RunDir, i: int, lr_run: LadderRun, recipe: Recipe,
                 train: dict[str, Any], cost: CostFn, allow: LadderAllowance | None,
                 say: Callable[[str], None], must_keep: int = 0) -> list[dict[str, Any]]:
    """The stable run of one ladder size and its cooldown branches: one table row each.
    Each ledger row carries the cost the design predicted (for the time-model calibration).

    Under a time share the stable run is capped at what is left of it, and a branch that the
    calibrated time model says would end past the share is not started: a machine slower than
    its profile loses ladder points, never the final run's share, except the first
    ``must_keep`` branches, which the fit cannot do without (no cap then, and said so)."""
    from lmalloc.model.config import GPTConfig

    cfg = GPTConfig.from_dict(lr_run.model)
    root = run.path(f"ladder/{i}")
    snaps = tuple(sorted({b.snapshot_tokens for b in lr_run.branches}))
    cap = {}
    if must_keep and allow is not None:  # no cap: its first points are needed
        if not allow.fits(run, _size_cost(lr_run, cost)):
            say(f"ladder: size {i} trains past the ladder's share: the fit needs "
                f"{MIN_FIT_POINTS} points and the rest of the ladder cannot give them")
    elif allow is not None and allow.unit == "seconds":
        done_before = _seconds_so_far(root / "stable")
        cap = {"max_seconds": max(1.0, done_before + allow.left(run))}
    stable = recipe.train_config(**train, max_tokens=lr_run.stable_tokens, cooldown_frac=0.0,
                                 snapshot_tokens=snaps, eval_every=0, **cap)

    def charge(part: str, tokens: float) -> Callable[[dict[str, Any]], None]:
        return lambda r: run.charge("ladder", r["session_flops"], **ledger_parts(r), size=i,
                                    part=part, status=r["status"], predicted=cost(cfg, tokens))

    res = _trained(root / "stable", lr_run.model, stable, run.data,
                   charge("stable", float(lr_run.stable_tokens)))
    rows = []
    for k, b in enumerate(lr_run.branches):
        snap = root / "stable" / "snapshots" / str(b.snapshot_tokens)
        if b.snapshot_tokens >= lr_run.stable_tokens and not snap.exists() \
                and res["status"] == "completed":
            snap = root / "stable" / "checkpoint"  # the last snapshot is the end of the run
        branch_dir = root / f"branch-{b.tokens}"
        if not (branch_dir / "result.json").exists():
            if not snap.exists():  # the stable run stopped (time cap) before this snapshot
                say(f"ladder: size {i} branch {b.tokens} skipped (the stable run stopped at "
                    f"{res['tokens']} tokens: {res['status']})")
                continue
            if allow is not None and not branch_dir.exists() and k >= must_keep \
                    and not allow.fits(run, cost(cfg, float(b.cooldown_tokens))):
                say(f"ladder: size {i} branch {b.tokens} dropped (it would end past the "
                    f"ladder's share of {allow.share:.4g} {allow.unit})")
                continue
        r = _trained(branch_dir, lr_run.model, recipe.train_config(**train, max_tokens=b.tokens),
                     run.data, charge(f"branch-{b.tokens}", float(b.cooldown_tokens)),
                     branch_from=snap, cooldown_tokens=b.cooldown_tokens)
        rows.append({"N": lr_run.N, "D": r["tokens"], "C": r["flops"], "loss": r["val_loss"],
                     "bpb": r["val_bpb"], "size": i, "branch": b.tokens, "status": r["status"]})
    return rows


def _seconds_so_far(out: Path) -> float:
    """Seconds an interrupted training already ran (its checkpoint's state), else 0."""
    state = out / "checkpoint" / "state.json"
    if not state.exists():
        return 0.0
    try:
        return float(read_json(state, "checkpoint state").get("seconds", 0.0))
    except Exception:  # noqa: BLE001 - an unreadable state is the trainer's to report
        return 0.0


def run_ladder_stage(run: RunDir, ladder: Ladder, recipe: Recipe, lr: float,
                     warmup: float, mup_base_width: int, cost: CostFn,
                     allow: LadderAllowance | None = None,
                     on_size: Callable[[], None] | None = None,
                     say: Callable[[str], None] = lambda _m: None,
                     min_sizes: int = MIN_SIZES,
                     mup_base_depth: int | None = None) -> list[dict[str, Any]]:
    """Train every ladder size and branch (smallest first); write ``ladder.csv``; return its
    rows.

    With ``allow`` the ladder holds its share at every training boundary: before a size
    starts, the largest planned sizes are dropped (down to ``min_sizes``) while the calibrated
    time model says the rest would not fit; once ``min_sizes`` sizes are done, a size that does
    not fit is not started; inside a size, see :func:`_ladder_size`. What was dropped is said
    and recorded in the manifest (``ladder_dropped``)."""
    train = {"lr": lr, "warmup": warmup}
    kept = sorted(ladder.runs, key=lambda r: r.N)
    rows: list[dict[str, Any]] = []
    dropped: list[str] = []

    def planned(sizes: list[LadderRun]) -> int:  # points the rest of the ladder will give
        return len(rows) + sum(len(r.branches) for r in sizes)

    i = 0
    while i < len(kept):
        started = run.path(f"ladder/{i}/stable").exists()
        if allow is not None and not started:
            while len(kept) > max(i + 1, min_sizes) and planned(kept[i:-1]) >= MIN_FIT_POINTS \
                    and not allow.fits(run, sum(_size_cost(r, cost) for r in kept[i:])):
                gone = kept.pop()
                dropped.append(f"size {len(kept)} (N={gone.N})")
                say(f"ladder: dropped its largest planned size (N={gone.N}): the calibrated "
                    f"time model says the rest would not fit the share of {allow.share:.4g} "
                    f"{allow.unit}")
            over = allow.left(run) <= 0 or (
                i >= min_sizes and not allow.fits(run, _size_cost(kept[i], cost)))
            if over and len(rows) >= MIN_FIT_POINTS:
                dropped.extend(f"size {j} (N={r.N})" for j, r in enumerate(kept[i:], i))
                say(f"ladder: stopped after {i} sizes: its share of {allow.share:.4g} "
                    f"{allow.unit} is spent")
                break
        # the fit needs MIN_FIT_POINTS points: those the later sizes cannot give are kept here
        # even past the share (the final run's note then says what that cost)
        must_keep = max(0, MIN_FIT_POINTS - planned(kept[i + 1:]))
        model = {**kept[i].model, "mup_base_width": mup_base_width,
                 "mup_base_depth": mup_base_depth}
        rows.extend(_ladder_size(run, i, replace(kept[i], model=model), recipe, train, cost,
                                 allow, say, must_keep))
        if on_size is not None:
            on_size()
        i += 1
    if dropped:
        run.update_manifest(ladder_dropped=dropped)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=LADDER_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(run.path(LADDER_CSV), buf.getvalue())
    return rows


def run_seed_repeat(run: RunDir, ladder: Ladder, recipe: Recipe, lr: float, warmup: float,
                    mup_base_width: int, cost: CostFn, rows: list[dict[str, Any]],
                    mup_base_depth: int | None = None,
                    allowed: float = float("inf")) -> dict[str, Any] | None:
    """Train the smallest size's shortest branch again with another seed (a fresh WSD run with
    the branch's lr schedule in tokens: the same warmup tokens, peak lr and cooldown), so the
    fit can measure one run's seed noise. Returns ``{"N", "D", "losses": [first, repeat]}``,
    or None when the branch's schedule cannot be reproduced as one run or its predicted cost
    exceeds ``allowed`` (in ``cost``'s unit)."""
    from lmalloc.model.config import GPTConfig

    small = min(ladder.runs, key=lambda r: r.N)
    b = min(small.branches, key=lambda x: x.tokens)
    first = [r for r in rows if r["N"] == small.N and r["branch"] == b.tokens]
    warm = warmup * small.stable_tokens if warmup < 1 else warmup  # in tokens, as the stable run
    cfg = GPTConfig.from_dict(small.model)
    if not first or warm + b.cooldown_tokens >= b.tokens or cost(cfg, float(b.tokens)) > allowed:
        return None
    model = {**small.model, "mup_base_width": mup_base_width, "mup_base_depth": mup_base_depth}
    train = recipe.train_config(lr=lr, warmup=float(max(warm, 1.0)), max_tokens=b.tokens,
                                cooldown_frac=b.cooldown_tokens / b.tokens,
                                seed=recipe.seed + 1)
    r = _trained(run.path("ladder/seed-repeat"), model, train, run.data,
                 lambda res: run.charge("ladder", res["session_flops"], **ledger_parts(res),
                                        part="seed-repeat", status=res["status"],
                                        predicted=cost(cfg, float(b.tokens))))
    return {"N": small.N, "D": b.tokens, "losses": [float(first[0]["loss"]),
                                                     float(r["val_loss"])]}


def read_ladder(run: RunDir) -> list[dict[str, str]]:
    """The rows :func:`run_ladder_stage` wrote to ``ladder.csv`` (values as text)."""
    with open(run.path(LADDER_CSV), newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))
