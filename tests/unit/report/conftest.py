"""Small synthetic run directories shaped like the pipeline's real artifacts.

``make_run(root, upto)`` writes the artifacts of the stages up to ``upto`` (in pipeline order),
so tests can build a finished run or one stopped after any stage without training anything.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lmalloc.rundir import atomic_write_json
from lmalloc.scaling import ParametricFit, save_laws

ORDER = ("split", "search", "ladder", "fit", "plan", "train", "eval", "summary")
PARAMS = {"E": 1.8, "A": 40.0, "B": 90.0, "alpha": 0.34, "beta": 0.28}
N_FINAL, D_FINAL = 4.0e5, 6.0e6
ACHIEVED = 3.45
MODEL = {"vocab_size": 512, "n_layer": 2, "n_head": 2, "d_model": 64, "seq_len": 64}
BACKTEST = {"available": True, "held_out_N": 2e5, "inside": 3, "of": 3,
            "mean_abs_error": 0.004, "points": []}


def law_loss(N: float, D: float) -> float:
    p = PARAMS
    return p["E"] + p["A"] * N ** -p["alpha"] + p["B"] * D ** -p["beta"]


def _fit() -> ParametricFit:
    rng = np.random.default_rng(0)
    names = ("E", "A", "B", "alpha", "beta")
    base = np.array([PARAMS[n] for n in names])
    samples = base * rng.lognormal(0.0, 0.03, size=(30, 5))
    return ParametricFit(
        law="chinchilla", params=dict(PARAMS),
        theta=(math.log(40.0), math.log(90.0), math.log(1.8), 0.34, 0.28), samples=samples,
        level=0.9, delta=1e-3, param_convention="non_embedding", flops_per_token_per_param=6.0,
        n_points=9, objective=0.01, converged=True,
        input_range={"N": (5e4, 2e5), "D": (2e5, 8e5), "C": (6e10, 9.6e11)})


def _metrics(path: Path, N: float, tokens: int, steps: int = 12, partial: bool = False) -> None:
    rows = []
    for s in range(1, steps + 1):
        t = tokens * s // steps
        rows.append({"kind": "train", "step": s, "tokens": t, "flops": 6 * N * t,
                     "seconds": 0.1 * s, "loss": law_loss(N, t) + 0.05})
    rows.append({"kind": "eval", "step": steps, "tokens": tokens, "flops": 6 * N * tokens,
                 "seconds": 0.1 * steps, "val_loss": law_loss(N, tokens), "val_tokens": 4096,
                 "val_bpb": law_loss(N, tokens) / 2.4})
    rows.append({"kind": "end", "step": steps, "status": "completed"})
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in rows)
    path.write_text(text + ('{"kind": "train", "st' if partial else ""))


def _study(root: Path, n_complete: int, params: tuple[str, ...]) -> None:
    import optuna
    from optuna.distributions import FloatDistribution

    study = optuna.create_study(study_name="explore", storage=f"sqlite:///{root / 'study.db'}")
    rng = np.random.default_rng(1)
    dists = {p: FloatDistribution(1e-4, 1.0, log=True) for p in params}
    for i in range(n_complete + 3):
        values = {p: float(rng.uniform(1e-3, 0.5)) for p in params}
        state = (optuna.trial.TrialState.COMPLETE if i < n_complete
                 else optuna.trial.TrialState.PRUNED)
        study.add_trial(optuna.trial.create_trial(
            params=values, distributions=dists, value=3.0 - 0.1 * values[params[0]] + 0.01 * i,
            state=state, user_attrs={"flops": 1e11 if state.name == "COMPLETE" else 3e10},
            intermediate_values={1000: 3.1}))


def _ledger(upto: str) -> list[dict[str, Any]]:
    rows = [{"stage": "prepare", "flops": 0.0, "seconds": 3.0},
            {"stage": "split", "flops": 0.0, "seconds": 0.1}]
    if ORDER.index(upto) >= ORDER.index("search"):
        rows += [{"stage": "search", "flops": 1e11, "seconds": 9.0, "trial": i} for i in range(4)]
    if ORDER.index(upto) >= ORDER.index("ladder"):
        rows.append({"stage": "ladder", "flops": 2e12, "seconds": 90.0, "size": 0})
    if ORDER.index(upto) >= ORDER.index("train"):
        rows.append({"stage": "train", "flops": 1.44e13, "seconds": 600.0})
    return rows


def make_run(root: Path, upto: str = "summary", n_complete: int = 20,
             params: tuple[str, ...] = ("lr", "warmup")) -> Path:
    """A run directory with the artifacts of every stage up to ``upto``."""
    root.mkdir(parents=True, exist_ok=True)
    k = ORDER.index(upto)
    stages: dict[str, Any] = {s: {"finished_at": 0.0} for s in ("prepare", *ORDER[:k + 1])}
    atomic_write_json(root / "data" / "data.json", {
        "counts": {"documents": 40, "tokens": 12_000_000},
        "splits": {"train": {"tokens": 11_000_000}, "val": {"tokens": 1_000_000}},
        "removed": {"exact_duplicate": 2}})
    atomic_write_json(root / "hardware.json", {"name": "local", "kind": "cpu", "count": 1})
    atomic_write_json(root / "split.json", {"explore_fraction": 0.2})
    if k >= ORDER.index("search"):
        _study(root, n_complete, params)
        atomic_write_json(root / "search.json", {
            "study": "explore", "counts": {"complete": n_complete, "pruned": 3},
            "best": [{"number": 0, "params": {"lr": 0.01}, "values": [2.9]}],
            "best_params": {"lr": 0.01, "warmup": 0.1}})
        for i in range(2):
            _metrics(root / "trials" / str(i) / "metrics.jsonl", 5e4, 100_000)
    if k >= ORDER.index("ladder"):
        lines = ["N,D,C,loss,bpb,size,branch,status"]
        for j, N in enumerate((5e4, 1e5, 2e5)):
            for C in (6e10, 2.4e11, 9.6e11):
                D = C / (6 * N)
                lines.append(f"{N:.0f},{D:.0f},{C},{law_loss(N, D)},{law_loss(N, D) / 2.4},"
                             f"{j},{D:.0f},completed")
            _metrics(root / "ladder" / str(j) / "stable" / "metrics.jsonl", N, 400_000)
        (root / "ladder.csv").write_text("\n".join(lines) + "\n")
    if k >= ORDER.index("fit"):
        save_laws(root / "laws.json", {"parametric": _fit(), "warnings": [], "degeneracy": {
            "degenerate": False, "problems": [], "remedy": None, "prior": None,
            "plain_params": dict(PARAMS)}, "backtest": BACKTEST})
    if k >= ORDER.index("plan"):
        v = law_loss(N_FINAL, D_FINAL)
        loss = {"value": v, "low": v - 0.1, "high": v + 0.2, "level": 0.9}
        atomic_write_json(root / "plan.json", {
            "model": MODEL, "train": {"lr": 0.01, "batch_tokens": 1024, "schedule": "wsd"},
            "predicted": {"N": N_FINAL, "D": D_FINAL, "flops": 1.44e13, "seconds": 620.0,
                          "memory_bytes": 2e8, "loss": loss,
                          "bpb": {"value": 1.3, "low": 1.2, "high": 1.4, "level": 0.9}},
            "data": {"tokens": D_FINAL, "unique_tokens": 1.1e7, "epochs": D_FINAL / 1.1e7,
                     "effective_tokens": D_FINAL},
            "allocation": {"sensitivity": [
                {"N_factor": 0.5, "N": 2e5, "D": 1.2e7, "loss": loss, "delta_loss": 0.02}]}})
    if k >= ORDER.index("train"):
        _metrics(root / "final" / "metrics.jsonl", N_FINAL, int(D_FINAL), steps=30,
                 partial=True)
        stages["train"] = {"finished_at": 0.0, "status": "completed", "steps": 30,
                           "tokens": D_FINAL, "val_loss": ACHIEVED, "val_bpb": 1.31}
    if k >= ORDER.index("eval"):
        atomic_write_json(root / "eval.json", {
            "perplexity": {"val": {"loss": 3.1, "bpb": 1.3, "tokens": 9000}},
            "tasks": {"sst2": {"accuracy": 0.71, "f1": 0.69, "n": 200}}})
    if k >= ORDER.index("summary"):
        atomic_write_json(root / "summary.json", {
            "achieved": {"val_loss": ACHIEVED}, "budget": {"unit": "flops", "total": 2e13},
            "shares": {"search": {"share": 1e12, "spent": 4e11},
                       "ladder": {"share": 3.6e12, "spent": 2e12},
                       "train": {"share": 1.6e13, "spent": 1.44e13}},
            "final_share": None, "ladder_dropped": []})
    atomic_write_json(root / "manifest.json", {
        "stages": stages, "ledger": _ledger(upto), "artifacts": {},
        "run_options": {"budget": "2e13flops", "hardware": None},
        "budget_split": {"unit": "flops", "total": 2e13, "explore_fraction": 0.2,
                         "search": 1e12, "ladder": 3e12, "final": 1.6e13}})
    return root


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete synthetic run, built once per module (tests must not modify it)."""
    return make_run(tmp_path_factory.mktemp("run") / "r")


@pytest.fixture
def run_factory(tmp_path: Path) -> Callable[..., Path]:
    return lambda upto="summary", **kw: make_run(tmp_path / f"r-{upto}", upto, **kw)
