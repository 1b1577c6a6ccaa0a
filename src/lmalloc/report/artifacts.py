"""Everything a run directory holds, loaded once into one object the plots and the page read.

A report is most wanted while a run is unfinished ("what has it done so far?"), so every stage's
artifact is optional: a missing file means "not run yet" and its field is None (or empty). A
file that exists but cannot be read is different: it is corrupt, and raises a
:class:`~lmalloc.errors.UserError` naming it, because a report built around it would silently
misreport the run. Metrics files (``metrics.jsonl``) are appended while a stage trains, so a
partial *last* line is normal and skipped; a bad line before it is corruption.

Example::

    art = load_run("runs/demo")
    art.stage_state("search")   # "done", "running" or "not run"
    art.fit.predict(1e6, 2e7) if art.fit else None
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmalloc.errors import UserError
from lmalloc.layout import (
    DEPLOY_STAGES,
    EVAL_JSON,
    LADDER_CSV,
    LAWS_JSON,
    PLAN_JSON,
    PROFILE_JSON,
    SEARCH_JSON,
    SPLIT_JSON,
    STAGES,
    SUMMARY_JSON,
)
from lmalloc.rundir import MANIFEST, RunDir, read_json

LADDER_COLUMNS = ("N", "D", "C", "loss")
STATE_DONE, STATE_RUNNING, STATE_NOT_RUN = "done", "running", "not run"
STATE_FAILED, STATE_INTERRUPTED = "failed", "interrupted"


@dataclass(frozen=True)
class Curve:
    """One training run's metrics: ``train`` rows (step, tokens, loss) and ``eval`` rows."""

    label: str
    kind: str  # "trial", "ladder" or "final"
    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]


@dataclass
class RunArtifacts:
    """The artifacts of one run directory; None (or empty) where a stage has not run."""

    root: Path
    manifest: dict[str, Any]
    data: dict[str, Any] | None = None
    hardware: dict[str, Any] | None = None
    split: dict[str, Any] | None = None
    search: dict[str, Any] | None = None
    ladder_rows: list[dict[str, float | str]] = field(default_factory=list)
    laws: dict[str, Any] | None = None
    laws_doc: dict[str, Any] | None = None  # laws.json as plain JSON (what the verdicts read)
    plan: dict[str, Any] | None = None
    eval: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None
    compressed: list[dict[str, Any]] = field(default_factory=list)

    # -- derived views ------------------------------------------------------------------------
    @property
    def stages(self) -> dict[str, Any]:
        stages: dict[str, Any] = self.manifest.get("stages", {})
        return stages

    @property
    def ledger(self) -> list[dict[str, Any]]:
        ledger: list[dict[str, Any]] = self.manifest.get("ledger", [])
        return ledger

    @property
    def fit(self) -> Any:
        """The parametric :class:`~lmalloc.scaling.ParametricFit`, or None before the fit."""
        return (self.laws or {}).get("parametric")

    @property
    def study_db(self) -> Path | None:
        path = self.root / "study.db"
        return path if path.is_file() else None

    @property
    def study_url(self) -> str | None:
        """The Optuna storage URL of the run's study (what optuna-dashboard opens)."""
        db = self.study_db
        return f"sqlite:///{db.resolve()}" if db else None

    def spent(self, stage: str | None = None) -> dict[str, float]:
        rows = [r for r in self.ledger if stage in (None, r.get("stage"))]
        return {"flops": sum(float(r.get("flops", 0.0)) for r in rows),
                "seconds": sum(float(r.get("seconds", 0.0)) for r in rows)}

    def by_stage(self) -> dict[str, dict[str, float]]:
        """FLOPs, seconds and their parts per stage (:func:`lmalloc.rundir.ledger_by_stage`)."""
        from lmalloc.rundir import ledger_by_stage

        return ledger_by_stage(self.ledger)

    def stage_state(self, stage: str) -> str:
        """"done" when recorded in the manifest; "running" when it charged the ledger but did
        not finish (running now, or interrupted: a rerun resumes it), "failed" instead when the
        last command recorded a failure; else "not run"."""
        if stage in self.stages:
            return STATE_DONE
        if any(r.get("stage") == stage for r in self.ledger):
            failure = self.manifest.get("last_failure")
            if not failure:
                return STATE_RUNNING
            return (STATE_INTERRUPTED if str(failure.get("error", "")).startswith("interrupted")
                    else STATE_FAILED)
        return STATE_NOT_RUN

    def budget(self) -> dict[str, Any] | None:
        """Total, spent and left in the budget's unit (None when the split has not run)."""
        split = self.manifest.get("budget_split")
        if not split:
            return None
        unit, total = str(split["unit"]), float(split["total"])
        spent = self.spent()[unit]
        return {"unit": unit, "total": total, "spent": spent, "left": total - spent,
                "text": self.manifest.get("run_options", {}).get("budget")}

    def curves(self) -> list[Curve]:
        """Every training's metrics: search trials, ladder runs (their branches), the final."""
        out = []
        for path in sorted((self.root / "trials").glob("*/metrics.jsonl"), key=_num_key):
            out.append(_curve(path, f"trial {path.parent.name}", "trial"))
        for path in sorted((self.root / "ladder").glob("*/*/metrics.jsonl"), key=str):
            out.append(_curve(path, f"ladder {path.parent.parent.name}/{path.parent.name}",
                              "ladder"))
        final = self.root / "final" / "metrics.jsonl"
        if final.is_file():
            out.append(_curve(final, "final run", "final"))
        return out


def _num_key(p: Path) -> tuple[int, str]:
    name = p.parent.name
    return (int(name), name) if name.isdigit() else (1 << 30, name)


def _curve(path: Path, label: str, kind: str) -> Curve:
    rows = read_metrics(path)
    train = [r for r in rows if r.get("kind") == "train" and _finite(r.get("loss"))]
    ev = [r for r in rows if r.get("kind") == "eval" and _finite(r.get("val_loss"))]
    return Curve(label, kind, train, ev)


def _finite(v: object) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of a ``metrics.jsonl``; a partial last line (a write in progress) is skipped."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:
                break  # the trainer was writing it
            raise UserError(f"metrics file {path} is corrupt at line {i + 1} ({e})") from None
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _optional_json(path: Path, what: str) -> Any:
    if not path.is_file():
        return None
    doc = read_json(path, what)
    if not isinstance(doc, dict):
        raise UserError(f"{what} {path} is corrupt (expected a JSON object); delete it and "
                        "rerun the stage that writes it")
    return doc


def read_ladder_csv(path: Path) -> list[dict[str, float | str]]:
    """ladder.csv rows with N, D, C, loss (and bpb) as floats; other columns as text."""
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in LADDER_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise UserError(f"ladder table {path} is corrupt: no column {missing[0]!r}")
        rows: list[dict[str, float | str]] = []
        for line, raw in enumerate(reader, start=2):
            row: dict[str, float | str] = dict(raw)
            try:
                for c in (*LADDER_COLUMNS, "bpb"):
                    if raw.get(c) not in (None, ""):
                        row[c] = float(raw[c])
            except ValueError:
                raise UserError(f"ladder table {path} is corrupt at line {line}: "
                                f"{c} = {raw[c]!r} is not a number") from None
            rows.append(row)
    return rows


def _compressed(root: Path) -> list[dict[str, Any]]:
    """Compression results: ``compressed/*.json`` or ``compressed/*/result.json`` objects
    that carry a size (``size_bytes`` or ``bytes``); none until the compress stage exists."""
    base = root / "compressed"
    if not base.is_dir():
        return []
    out = []
    for path in sorted([*base.glob("*.json"), *base.glob("*/result.json")]):
        doc = _optional_json(path, "compression result")
        if doc and any(_finite(doc.get(k)) for k in ("size_bytes", "bytes")):
            out.append({"name": path.parent.name if path.name == "result.json" else path.stem,
                        **doc})
    return out


def load_run(run_dir: str | os.PathLike[str]) -> RunArtifacts:
    """Load what ``run_dir`` has; missing stages are None, corrupt files a UserError.

    Raises:
        UserError: ``run_dir`` is not a run directory (no manifest.json), or one of its
            files is corrupt (the message names it).
    """
    root = Path(run_dir)
    if not (root / MANIFEST).is_file():
        raise UserError(f"{root} is not a run directory, or no stage has finished in it yet "
                        f"(no {MANIFEST}); give the folder that `lmalloc run --run` wrote")
    run = RunDir(root)
    art = RunArtifacts(root=root, manifest=run.manifest())
    for attr, rel, what in (("data", "data/data.json", "data summary"),
                            ("hardware", PROFILE_JSON, "hardware profile"),
                            ("split", SPLIT_JSON, "budget split"),
                            ("search", SEARCH_JSON, "search summary"),
                            ("plan", PLAN_JSON, "plan"),
                            ("eval", EVAL_JSON, "evaluation"),
                            ("summary", SUMMARY_JSON, "run summary")):
        setattr(art, attr, _optional_json(root / rel, what))
    art.ladder_rows = read_ladder_csv(root / LADDER_CSV)
    if (root / LAWS_JSON).is_file():
        from lmalloc.scaling import load_laws

        try:
            art.laws = load_laws(root / LAWS_JSON)
            art.laws_doc = read_json(root / LAWS_JSON, "laws file")
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise UserError(f"laws file {root / LAWS_JSON} is corrupt ({type(e).__name__}: "
                            f"{e}); delete it and rerun the fit") from None
    art.compressed = _compressed(root)
    return art


def run_status(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """What ``lmalloc status`` shows: each stage's state and spend, the budget, the best trial,
    the plan's allocation and prediction, and the one-line summary (JSON-ready)."""
    from lmalloc.report.build import summary_text

    art = load_run(run_dir)
    # ``lmalloc run``'s stages in order (the deployment ones only when the budget has a
    # deployment limit); other stages a run recorded are appended
    deploy = "deploy=" in str(art.manifest.get("run_options", {}).get("budget", ""))
    names = [s for s in STAGES if deploy or s not in DEPLOY_STAGES or s in art.stages]
    names += [s for s in [*art.stages, *art.by_stage()] if s not in names]
    by = art.by_stage()
    stages = [{"stage": s, "state": art.stage_state(s), **by.get(s, {"flops": 0.0,
                                                                     "seconds": 0.0})}
              for s in dict.fromkeys(names)]
    best = ((art.search or {}).get("best") or [None])[0]
    best_trial = None if best is None else {"number": best.get("number"),
                                            "params": best.get("params"),
                                            "value": (best.get("values") or [None])[0]}
    plan = None
    if art.plan is not None:
        p = art.plan["predicted"]
        plan = {"N": p["N"], "D": p["D"], "flops": p.get("flops"), "loss": p["loss"],
                "bpb": p.get("bpb"), "seconds": p.get("seconds"), "model": art.plan["model"]}
    return {"run": str(art.root), "stages": stages, "budget": art.budget(),
            "best_trial": best_trial, "plan": plan, "summary": summary_text(art),
            "failure": art.manifest.get("last_failure"), "recipe": run_recipe(art.manifest)}


def run_recipe(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The recipe ``lmalloc run`` was given (its options in the manifest), with the
    vocabulary and without the seed (``--seed``, a run option of its own); None for a folder
    no ``lmalloc run`` made."""
    opts = manifest.get("run_options") or {}
    if "recipe" not in opts:
        return None
    return {**{k: v for k, v in opts["recipe"].items() if k != "seed"},
            "vocab_size": opts.get("vocab_size")}
