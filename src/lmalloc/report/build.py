"""``RUN/report.html``: a plain-language summary, then one section per stage with its figures.

The page is built from whatever the run has (:func:`~lmalloc.report.artifacts.load_run`): a
stage that has not run gets a note saying so instead of a figure, so the report of a running
or interrupted run is as useful as it can be, and a finished run's report is complete.

Example::

    path = build_report("runs/demo")      # runs/demo/report.html, figures in runs/demo/plots/
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lmalloc.layout import REPORT_HTML
from lmalloc.report.artifacts import RunArtifacts, load_run, read_metrics, run_recipe
from lmalloc.report.page import Page, Section
from lmalloc.report.plots import (
    Plot,
    StudyTrials,
    importance_skip_reason,
    make_plots,
    read_studies,
)
from lmalloc.report.verdicts import Verdict, judge
from lmalloc.report.words import LOSS_UNIT, count_text, vs_interval
from lmalloc.rundir import LEDGER_PARTS

NOT_RUN = "not run yet"
FINAL_LABELS = {"val_loss": f"own validation loss ({LOSS_UNIT})",
                "val_bpb": "own validation bits/byte"}


def build_report(run_dir: str | os.PathLike[str]) -> Path:
    """Write ``RUN/report.html`` (and ``RUN/plots/*.png|svg``); returns the page's path."""
    return build_report_detailed(run_dir)[0]


def build_report_detailed(run_dir: str | os.PathLike[str]
                          ) -> tuple[Path, dict[str, Plot | None]]:
    """:func:`build_report`, also returning every figure (None where its stage has not run)."""
    art = load_run(run_dir)
    studies = read_studies(art)
    plots = make_plots(art, studies=studies)
    page = Page(f"lmalloc run {art.root.resolve().name}")
    page.verdicts((v.severity, v.topic, v.text) for v in run_verdicts(art))
    page.summary(summary_text(art))
    _budget(page.section("Budget", "budget"), art, plots)
    _prepare(page.section("Prepare: the data", "prepare"), art)
    _search(page.section("Search: hyperparameters", "search"), art, plots, studies)
    _scaling(page.section("Ladder and scaling-law fit", "scaling"), art, plots)
    _plan(page.section("Plan: the allocation", "plan"), art)
    _final(page.section("Final training", "final"), art, plots)
    _evaluation(page.section("Evaluation", "evaluation"), art)
    comp = page.section("Compression", "compression")
    if plots["compression"] is None:
        comp.note(f"Compression: {NOT_RUN}.")
    else:
        _figure(comp, plots["compression"])
    return page.write(art.root / REPORT_HTML), plots


def run_verdicts(art: RunArtifacts) -> list[Verdict]:
    """The verdicts (:func:`~lmalloc.report.verdicts.judge`) on what the run has so far."""
    final = art.root / "final" / "metrics.jsonl"
    return judge(laws=art.laws_doc, search=art.search, plan=art.plan, summary=art.summary,
                 train=art.stages.get("train"), evaluation=art.eval,
                 final_metrics=read_metrics(final) if final.is_file() else ())


# -- the summary -------------------------------------------------------------------------------
def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def hardware_text(art: RunArtifacts) -> str:
    """e.g. "1 × local (cpu)" or the named profile the run was given."""
    named = art.manifest.get("run_options", {}).get("hardware")
    if named:
        return str(named)
    hw = art.hardware or {}
    if not hw:
        return "this machine"
    return f"{hw.get('count', 1)} × {hw.get('name', 'local')} ({hw.get('kind', '?')})"


def summary_text(art: RunArtifacts) -> str:
    """The sentence a manager reads: what is trained, how long, what was predicted and got."""
    failure = art.manifest.get("last_failure")
    failed = (f"The last `lmalloc {failure['command']}` failed ({failure['error']}); rerun it "
              "to resume. " if failure else "")
    if art.plan is None:
        done = [s for s in art.stages if s != "summary"]
        last = f"; finished so far: {', '.join(done)}" if done else ""
        state = "stopped before a plan" if failure else "the run is exploring"
        return (f"{failed}No plan yet: {state} (model, data and budget not chosen yet)"
                f"{last}. Budget: {_budget_text(art)}.")
    p = art.plan["predicted"]
    loss = p["loss"]
    train = art.stages.get("train")
    secs = art.spent("train")["seconds"] if train else float(p.get("seconds", 0.0))
    when = "took" if train else "planned at"
    text = (f"Train a {count_text(float(p['N']))}-parameter model on "
            f"{count_text(float(p['D']))} tokens: "
            f"{when} {_duration(secs)} on {hardware_text(art)}; predicted validation loss "
            f"{loss['value']:.2f} {LOSS_UNIT} ({loss.get('level', 0.9):.0%} interval "
            f"{loss['low']:.2f}–{loss['high']:.2f}); ")
    if train is None:
        text += "not trained yet."
    elif train.get("val_loss") is None:
        text += f"final run ended {train.get('status', '?')} with no validation loss."
    else:
        got = float(train["val_loss"])
        text += (f"achieved {got:.2f} {LOSS_UNIT} on its own validation sample "
                 f"({vs_interval(got, loss['low'], loss['high'])}"
                 f"{'' if train.get('status') == 'completed' else ', ' + str(train['status'])}).")
    return f"{failed}{text} Budget: {_budget_text(art)}."


def _budget_text(art: RunArtifacts) -> str:
    b = art.budget()
    if b is None:
        return "not split yet"
    unit = "FLOPs" if b["unit"] == "flops" else "s"
    fmt = (lambda v: f"{v:.3g} FLOPs") if unit == "FLOPs" else _duration
    return (f"{b['text'] or fmt(b['total'])}, spent {fmt(b['spent'])} "
            f"({b['spent'] / b['total']:.0%})" if b["total"] else f"{b['text']}")


# -- sections ----------------------------------------------------------------------------------
def _figure(sec: Section, plot: Plot | None, missing: str = NOT_RUN) -> None:
    if plot is None:
        sec.note(missing)
    else:
        sec.figure(plot.png, caption=plot.caption, alt=plot.alt)


def _budget(sec: Section, art: RunArtifacts, plots: dict[str, Plot | None]) -> None:
    b = art.budget()
    if b is not None:
        sec.paragraph(f"Budget {_budget_text(art)}; left: {b['left']:.4g} "
                      f"{'FLOPs' if b['unit'] == 'flops' else 'seconds'}.")
    split = art.manifest.get("budget_split")
    if split:
        sec.table(["unit", "explore fraction", "search", "ladder", "final"],
                  [[split["unit"], split["explore_fraction"], split["search"], split["ladder"],
                    split["final"]]], caption="How the budget was split before exploring")
    recipe = run_recipe(art.manifest)
    if recipe:
        sec.table(["setting", "value"], [[k, v] for k, v in recipe.items()],
                  caption="The recipe every training shared (`lmalloc run --recipe`, "
                          "--seq-len, --batch-tokens, --min-params, --vocab-size)")
    by = art.by_stage()
    if by:
        parts = [p for p in LEDGER_PARTS if any(p in v for v in by.values())]
        sec.table(["stage", "state", "FLOPs", "seconds",
                   *(p.replace("_seconds", " s") for p in parts)],
                  [[s, art.stage_state(s), v["flops"], v["seconds"],
                    *(v.get(p, "") for p in parts)] for s, v in by.items()],
                  caption="The ledger: what each stage charged, and where its seconds went "
                          "(training steps, evaluation, checkpoints, start-up, idle)")
    _figure(sec, plots["ledger"], "nothing charged to the ledger yet")


def _prepare(sec: Section, art: RunArtifacts) -> None:
    if art.data is None:
        sec.note(f"Data preparation: {NOT_RUN}.")
        return
    counts = art.data.get("counts", {})
    rows: list[list[Any]] = [[k, v] for k, v in counts.items() if isinstance(v, int | float)]
    for name, split in (art.data.get("splits") or {}).items():
        rows += [[f"{name} {k}", v] for k, v in split.items() if isinstance(v, int | float)]
    removed = art.data.get("removed") or {}
    rows += [[f"removed: {k}", v] for k, v in removed.items()]
    sec.table(["quantity", "value"], rows, caption="The corpus after cleaning and dedup")


def _search(sec: Section, art: RunArtifacts, plots: dict[str, Plot | None],
            studies: list[StudyTrials]) -> None:
    if art.search is None and plots["search_history"] is None:
        sec.note(f"Hyperparameter search: {NOT_RUN}.")
        return
    if art.search is not None:
        counts = art.search.get("counts", {})
        sec.paragraph(f"Study {art.search.get('study', '?')!r}: "
                      + ", ".join(f"{v} {k}" for k, v in counts.items())
                      + " trials. Best hyperparameters:")
        best = art.search.get("best_params") or {}
        sec.table(["hyperparameter", "value"], [[k, v] for k, v in best.items()])
    _lr_law(sec, art)
    _figure(sec, plots["search_history"], "no finished trial in the study yet")
    if plots["importances"] is not None:
        _figure(sec, plots["importances"])
    else:
        sec.note(f"Hyperparameter importances skipped: {importance_skip_reason(studies)}.")
    if art.study_url:
        sec.paragraph("Browse the study interactively (pip install 'lmalloc[dashboard]'; it "
                      f"serves on this machine only): optuna-dashboard --host 127.0.0.1 "
                      f"{art.study_url}")


def _lr_law(sec: Section, art: RunArtifacts) -> None:
    """The shorter horizon study, the lr law lr*(D) the two horizons give (or why none), and
    whether the plan used it."""
    horizon = (art.search or {}).get("horizon")
    if horizon:
        counts = horizon.get("counts", {})
        sec.paragraph(f"Horizon study {horizon.get('study', '?')!r} "
                      f"({horizon.get('trial_tokens', 0):,} tokens per trial, against "
                      f"{(art.search or {}).get('trial_tokens', 0):,} in the main study): "
                      + ", ".join(f"{v} {k}" for k, v in counts.items()) + " trials.")
    hp = (art.laws_doc or {}).get("hyperparameters")
    if isinstance(hp, dict) and hp.get("lr"):
        law, how = hp["lr"], (art.plan or {}).get("hyperparameters", {}).get("lr_source")
        p = law["intervals"]["p"]
        sec.paragraph(
            f"Learning-rate law lr* = {law['k']:.3g}·{law['scale']}^{law['p']:.3g} (exponent "
            f"{p['low']:.2g} to {p['high']:.2g}, {p['level']:.0%} bootstrap), through the best "
            "lr at " + ", ".join(f"{law['scale']} = {s:.3g}: {h:.3g} ({m})"
                                 for s, h, m in law["optima"])
            + (f". The plan's lr: {how}." if how else "."))
    elif isinstance(hp, dict) and hp.get("reason"):
        sec.note(f"No learning-rate law: {hp['reason']}.")


def _scaling(sec: Section, art: RunArtifacts, plots: dict[str, Plot | None]) -> None:
    if not art.ladder_rows:
        sec.note(f"Scaling ladder: {NOT_RUN}.")
    else:
        _figure(sec, plots["isoflop"], "too few ladder runs for IsoFLOP profiles")
    fit = art.fit
    if fit is None:
        sec.note(f"Scaling-law fit: {NOT_RUN}.")
        return
    _figure(sec, plots["scaling_fit"], "no figure for this law's form")
    rows = [[name, e.value, e.low, e.high] for name, e in fit.estimates().items()]
    sec.paragraph(f"L(N, D) = E + A/N^alpha + B/D^beta fitted to {fit.n_points} ladder runs "
                  f"({fit.level:.0%} bootstrap intervals; N counts {fit.param_convention} "
                  "parameters):")
    sec.table(["parameter", "value", "low", "high"], rows)
    for w in (art.laws or {}).get("warnings", []):
        sec.note(f"Warning: {w}")


def _plan(sec: Section, art: RunArtifacts) -> None:
    plan = art.plan
    if plan is None:
        sec.note(f"Plan: {NOT_RUN}.")
        return
    p, m, t = plan["predicted"], plan["model"], plan.get("train", {})
    rows = [["parameters N", p["N"]], ["training tokens D", p["D"]], ["FLOPs", p["flops"]],
            ["layers × width", f"{m['n_layer']} × {m['d_model']} ({m['n_head']} heads)"],
            ["learning rate", t.get("lr")], ["batch (tokens)", t.get("batch_tokens")],
            ["schedule", t.get("schedule")],
            ["predicted loss", _interval(p["loss"])], ["predicted bits/byte", _interval(p["bpb"])],
            ["predicted time", _duration(float(p.get("seconds", 0.0)))],
            ["memory per device (GiB)", float(p.get("memory_bytes", 0.0)) / 2**30]]
    sec.table(["quantity", "value"], rows,
              caption="The chosen allocation and its predicted outcome")
    sens = plan.get("allocation", {}).get("sensitivity") or []
    if sens:
        sec.table(["N × factor", "N", "D", "predicted loss", "Δ loss"],
                  [[r["N_factor"], r["N"], r["D"], r["loss"]["value"], r["delta_loss"]]
                   for r in sens], caption="Sensitivity: the same budget at other model sizes")


def _interval(e: dict[str, Any]) -> str:
    return f"{e['value']:.4g} [{e['low']:.4g}, {e['high']:.4g}]"


def _final(sec: Section, art: RunArtifacts, plots: dict[str, Plot | None]) -> None:
    train = art.stages.get("train")
    if train is None:
        running = art.stage_state("train") == "running"
        sec.note(f"Final training: {'running (or interrupted)' if running else NOT_RUN}.")
    else:
        sec.table(["quantity", "value"], [[FINAL_LABELS.get(k, k), train.get(k)] for k in
                                          ("status", "steps", "tokens", "val_loss", "val_bpb",
                                           "reason") if k in train],
                  caption="The final run's own validation: the loss the plan predicts, on the "
                          "first tokens of the val split the trainer evaluates (eval_tokens); "
                          "the whole split's loss is under Evaluation")
    _figure(sec, plots["training_curves"], "no training has written metrics yet")
    _figure(sec, plots["predicted_vs_achieved"], "no plan, so no prediction, yet")


def _evaluation(sec: Section, art: RunArtifacts) -> None:
    if not art.eval:
        sec.note(f"Evaluation: {NOT_RUN}.")
        return
    for name, value in art.eval.items():
        rows = list(_flatten(value))
        about = (": `lmalloc eval` on the whole split (perplexity.val: every val token, not "
                 "the final run's own validation sample)" if name == "perplexity" else "")
        sec.table(["metric", "value"], rows or [["(empty)", None]],
                  caption=f"eval.json: {name}{about}")


def _flatten(value: Any, prefix: str = "") -> Any:
    """``(dotted key, scalar)`` rows of a nested dict/list, for a generic key/value table."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(value, list) and len(value) <= 20 and all(
            isinstance(v, dict | list) for v in value):
        for i, v in enumerate(value):
            yield from _flatten(v, f"{prefix}[{i}]")
    elif isinstance(value, list):
        yield prefix or "value", ", ".join(str(v) for v in value[:20]) + (
            " …" if len(value) > 20 else "")
    elif isinstance(value, str) and len(value) > 200:
        yield prefix or "value", value[:200] + " …"  # e.g. a generated sample
    else:
        yield prefix or "value", value
