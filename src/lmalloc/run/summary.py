"""``summary.json``: predicted against achieved, and where the budget went."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

from lmalloc.layout import (
    COMPRESSED_RESULT,
    EVAL_JSON,
    LAWS_JSON,
    PLAN_JSON,
    SEARCH_JSON,
    SUMMARY_JSON,
)
from lmalloc.report.artifacts import read_metrics
from lmalloc.report.verdicts import judge
from lmalloc.run.context import RunContext
from lmalloc.rundir import atomic_write_json, ledger_by_stage, read_json
from lmalloc.scaling.degeneracy import EXPONENT_RANGE


def fit_warnings(params: dict[str, float]) -> list[str]:
    """Plain-language warnings about a degenerate L(N, D) fit: an exponent at an extreme means
    the ladder could not see that term (e.g. larger models no better at the token counts
    explored), and the plan then follows the other term alone."""
    out = []
    lo, hi = EXPONENT_RANGE
    for name, term in (("alpha", "model size"), ("beta", "training tokens")):
        v = params.get(name)
        if v is not None and not lo <= v <= hi:
            out.append(f"the fitted exponent {name} = {v:.3g} is outside [{lo}, {hi}]: the "
                       f"ladder did not resolve the effect of {term}; the plan's choice of it "
                       "rests on the edge of the explored range (give a larger budget)")
    return out


def _deploy_summary(ctx: RunContext, plan: dict[str, Any]) -> dict[str, Any] | None:
    """Predicted (law + plan) versus achieved (compressed model) after compression."""
    limit, shipped = ctx.allowance.deploy, plan.get("deploy")
    if limit is None or not shipped or shipped.get("loss") is None:
        return None
    got = read_json(ctx.run.path(COMPRESSED_RESULT), "compression result")
    pred = shipped["loss"]
    lo, hi = pred.get("low"), pred.get("high")
    return {"limit_bytes": limit, "planned_bits": shipped.get("bits"),
            "predicted": {"loss": pred, "bpb": shipped.get("bpb")},
            "achieved": {"loss": got["loss"], "bpb": got["bpb"],
                         "size_bytes": got["size_bytes"], "formats": got["formats"]},
            "within_interval": lo is not None and hi is not None and lo <= got["loss"] <= hi}


def stage_shares(manifest: dict[str, Any], unit: str) -> dict[str, dict[str, float]]:
    """Each budgeted stage's share (from the split) against what it spent, in ``unit``.
    The ladder's share is what the search left of exploration, as the ladder stage uses it."""
    split = manifest.get("budget_split") or {}
    spent: dict[str, float] = {}
    for row in manifest.get("ledger", []):
        spent[row["stage"]] = spent.get(row["stage"], 0.0) + float(row[unit])
    if not split:
        return {}
    search = float(split["search"])
    ladder = search + float(split["ladder"]) - spent.get("search", 0.0)
    return {"search": {"share": search, "spent": spent.get("search", 0.0)},
            "ladder": {"share": ladder, "spent": spent.get("ladder", 0.0)},
            "train": {"share": float(split["final"]), "spent": spent.get("train", 0.0)}}


def _verdicts(ctx: RunContext, plan: dict[str, Any], summary: dict[str, Any],
              final: dict[str, Any], evaluation: dict[str, Any],
              metrics: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The report's verdicts (:func:`~lmalloc.report.verdicts.judge`), as the report has
    them."""
    search = ctx.run.path(SEARCH_JSON)
    return [v.to_dict() for v in judge(
        laws=read_json(ctx.run.path(LAWS_JSON), "laws file"),
        search=read_json(search, "search summary") if search.is_file() else None,
        plan=plan, summary=summary, train=final, evaluation=evaluation, final_metrics=metrics)]


def write_summary(ctx: RunContext) -> None:
    plan = read_json(ctx.run.path(PLAN_JSON), "plan")
    m = ctx.run.manifest()
    final = m["stages"]["train"]
    evaluation = read_json(ctx.run.path(EVAL_JSON), "evaluation")
    ev = evaluation["perplexity"]["val"]
    pred = plan["predicted"]
    lo, hi = pred["loss"]["low"], pred["loss"]["high"]
    achieved = final.get("val_loss")
    metrics_path = ctx.run.final / "metrics.jsonl"
    metrics = read_metrics(metrics_path) if metrics_path.is_file() else []
    own = [r for r in metrics if r.get("kind") == "eval" and r.get("val_tokens")]
    by_stage = ledger_by_stage(m.get("ledger", []))
    a = ctx.allowance
    summary = {
        "allocation": {"N": pred["N"], "D": pred["D"], "model": plan["model"],
                       "lr": plan["train"]["lr"],
                       "batch_tokens": plan["train"]["batch_tokens"]},
        "predicted": {"loss": pred["loss"], "bpb": pred["bpb"]},
        "achieved": {"val_loss": achieved, "val_bpb": final.get("val_bpb"),
                     "status": final.get("status"), "eval_bpb": ev["bpb"],
                     "eval_loss": ev["loss"],
                     # val_*: the final run's own validation (the first val_tokens of the val
                     # split, what the plan predicts); eval_*: lmalloc eval, the whole split
                     "val_tokens": own[-1]["val_tokens"] if own else None,
                     "eval_tokens": ev.get("tokens")},
        "within_interval": achieved is not None and math.isfinite(achieved)
        and lo is not None and hi is not None and lo <= achieved <= hi,
        "spent": ctx.run.spent(), "by_stage": by_stage,
        "time_scale": ctx.time_scale(),
        "warnings": m["stages"]["fit"].get("warnings", []),
        "budget": {"text": a.text, "unit": a.unit, "total": a.total},
        "split": m.get("budget_split"),
        "shares": stage_shares(m, a.unit),
        "final_share": m.get("final_share"),
        "ladder_dropped": m.get("ladder_dropped", []),
        "deploy": _deploy_summary(ctx, plan),
        "fit": {"remedy": m["stages"]["fit"].get("remedy"),
                "backtest_error": m["stages"]["fit"].get("backtest_error"),
                "extrapolation_error": m["stages"]["fit"].get("extrapolation_error")},
        "interval_parts": (pred.get("interval") or {}).get("parts"),
        "data": plan.get("data"),
        "recipe": {**asdict(ctx.recipe), "vocab_size": ctx.vocab},
    }
    summary["verdicts"] = _verdicts(ctx, plan, summary, final, evaluation, metrics)
    atomic_write_json(ctx.run.path(SUMMARY_JSON), summary)
    ctx.run.record_stage("summary", out=SUMMARY_JSON)
