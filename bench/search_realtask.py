"""The real tasks of the search benchmark: tuning a tiny GPT on Tiny Shakespeare (2 layers) or
on WikiText-2 (4 layers, shifted learning-rate range; :data:`TASKS`) under a FLOPs budget,
every trial a real training through the product's own search path.

Each study is ``lmalloc.search.study.run_search`` — what ``lmalloc search`` runs — on its own
run directory (SQLite study, budget ledger) with a FLOPs budget of ``budget_trials`` full
trials of the base recipe; the study stops when the ledger (finished, pruned and failed
trials' measured training FLOPs, ``TrainResult.session_flops``) cannot pay for another full
trial. lmalloc's strategies run with lmalloc's default pruner (ASHA, fidelity = training
tokens); the peers, Optuna's default ``TPESampler()`` and ``RandomSampler()``, run without
pruning. The peers are added to the strategy registry with ``register_strategy``, the public
extension point, so they run through exactly the same code.

The objective is deterministic (fixed training seed, fixed validation tokens, one thread), so
the value of a trial is its true value: the incumbent is simply the best completed trial.

Compute is training FLOPs as the trainer counts them (``6N`` + attention per token); the
evaluations that feed the pruner are not counted (they cost the same for every strategy).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("LMALLOC_BENCH_CACHE", "/tmp/lmalloc_bench"))
SOURCE = "tinyshakespeare/input.txt"
PEERS = ("peer:tpe_default", "peer:random")
PEER = "peer:tpe_default"
CANDIDATE = "cand:tpe_startup5"

SPACE: dict[str, Any] = {
    "grid_points": 3,
    "params": {
        "lr": {"type": "float", "low": 1e-4, "high": 3e-2, "log": True},
        "warmup_frac": {"type": "float", "low": 0.0, "high": 0.2},
        "weight_decay": {"type": "float", "low": 0.0, "high": 0.2},
        "schedule": {"type": "categorical", "choices": ["cosine", "wsd"]},
        "cooldown_frac": {
            "type": "float", "low": 0.1, "high": 0.5, "when": {"schedule": "wsd"}
        },
        "beta2": {"type": "float", "low": 0.9, "high": 0.999, "grid": [0.95, 0.99]},
        "batch_tokens": {"type": "categorical", "choices": [512, 1024, 2048]},
    },
}
"""``configs/space_tiny.toml`` without the shape parameters: every trial has the same model,
so every full trial costs the same FLOPs and the budget is a number of full trials."""

BASE_MODEL: dict[str, Any] = {"n_layer": 2, "n_head": 4, "d_model": 64, "seq_len": 64}
BASE_TRAIN: dict[str, Any] = {
    "lr": 3e-3, "min_lr_ratio": 0.1, "schedule": "cosine", "warmup": 0.1,
    "weight_decay": 0.1, "grad_clip": 1.0, "batch_tokens": 1024, "micro_batch": 16,
    "seq_len": 64, "max_tokens": 24576, "eval_every": 0, "eval_tokens": 4096,
    "checkpoint_every": 0, "log_every": 8, "seed": 1337, "precision": "fp32", "device": "cpu",
}
"""24 steps of 1024 tokens (3-8 s on one busy core); ``eval_every = 0`` lets the objective
report to the pruner 8 times per trial, at the same token fractions whatever the batch size."""

QUICK_TRAIN = {"max_tokens": 8192, "eval_tokens": 1024}

WIKI_SPACE: dict[str, Any] = {
    "grid_points": 3,
    "params": {
        **SPACE["params"],
        "lr": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True},
    },
}
"""The second task's space: the first's with the learning-rate range **shifted**: 1e-5 to
1e-1, log-centre 1e-3, where the first task's range (1e-4 to 3e-2) centres on 1.7e-3. Short
trainings of small models want larger rates than the centre (the best trials found are in
the results), so a searcher that starts at the centre is not helped by the range."""

WIKI_MODEL: dict[str, Any] = {"n_layer": 4, "n_head": 4, "d_model": 64, "seq_len": 64}
WIKI_SOURCE, WIKI_BYTES = "wikitext-2/train.txt", 1_500_000


@dataclass(frozen=True)
class TaskSpec:
    """One real task: corpus (first ``max_bytes`` of ``source``), tokenizer size, model and
    search space; the trainer recipe is :data:`BASE_TRAIN` for both."""

    name: str
    title: str
    source: str
    max_bytes: int | None
    vocab: int
    space: dict[str, Any]
    model: dict[str, Any]


TASKS = {
    "shakespeare": TaskSpec(
        "shakespeare", "tiny GPT (2 layers, d 64, seq 64, BPE-1024) on Tiny Shakespeare",
        SOURCE, None, 1024, SPACE, BASE_MODEL),
    "wikitext2": TaskSpec(
        "wikitext2", "tiny GPT (4 layers, d 64, seq 64, BPE-2048) on WikiText-2 (first 1.5 MB "
        "of train.txt), lr range shifted to 1e-5..1e-1", WIKI_SOURCE, WIKI_BYTES, 2048,
        WIKI_SPACE, WIKI_MODEL),
}

PARETO_SPACE: dict[str, Any] = {
    "grid_points": 3,
    "params": {
        "lr": SPACE["params"]["lr"],
        "warmup_frac": SPACE["params"]["warmup_frac"],
        "n_layer": {"type": "int", "low": 1, "high": 3},
        "d_model": {"type": "categorical", "choices": [32, 64, 96]},
    },
}
"""The Pareto task's space: learning rate and warmup with the model's depth and width, so the
second objective (parameters) trades against val bpb (``bench/search_pareto.py``)."""

TASKS["shakespeare_pareto"] = TaskSpec(
    "shakespeare_pareto", "tiny GPT (1-3 layers, d 32-96) on Tiny Shakespeare, (val bpb, "
    "params)", SOURCE, None, 1024, PARETO_SPACE, BASE_MODEL)


@dataclass(frozen=True)
class Task:
    """The benchmark's knobs: which task, budget per study in full trials, a trial's tokens."""

    budget_trials: float = 12
    max_tokens: int = BASE_TRAIN["max_tokens"]
    quick: bool = False
    name: str = "shakespeare"

    @property
    def spec(self) -> TaskSpec:
        return TASKS[self.name]

    def train(self) -> dict[str, Any]:
        return {**BASE_TRAIN, "max_tokens": self.max_tokens, **(QUICK_TRAIN if self.quick else {})}

    def tag(self) -> str:
        """A folder name that changes with every setting of the task (the first task keeps
        the tags its saved studies were written under)."""
        spec = self.spec
        blob = json.dumps([spec.space, spec.model, self.train()], sort_keys=True)
        digest = hashlib.sha256(blob.encode()).hexdigest()[:8]
        prefix = "" if spec.name == "shakespeare" else f"{spec.name}_"
        return f"{prefix}{'quick' if self.quick else 'full'}_b{self.budget_trials:g}_{digest}"


def shared_data_dir() -> Path:
    return Path(os.environ.get("LMALLOC_SHARED_DATA", REPO.parent / "shared" / "data"))


def prepare_data(quiet: bool = True, task: str = "shakespeare") -> Path:
    """The task's corpus → BPE shards in ``CACHE/data`` (``CACHE/data_<task>``) via lmalloc's
    own ``prepare`` (reused when already there)."""
    from lmalloc.data.config import PrepareConfig
    from lmalloc.data.pipeline import prepare

    spec = TASKS[task]
    src = shared_data_dir() / spec.source
    if not src.is_file():
        raise SystemExit(f"the real task needs {src} (set LMALLOC_SHARED_DATA)")
    out = CACHE / ("data" if spec.source == SOURCE else f"data_{task}")
    if spec.max_bytes is not None:  # a prefix of a larger corpus, cut at a line end
        from lmalloc.rundir import atomic_write_bytes

        head = src.read_bytes()[: spec.max_bytes]
        cut = CACHE / f"{task}_{spec.max_bytes}.txt"
        if not cut.is_file():
            atomic_write_bytes(cut, head[: head.rfind(b"\n") + 1])
        src = cut
    # 8 KB documents: ~135 of them (Shakespeare), so the hash split gives a ~10 % val set
    cfg = PrepareConfig(vocab_size=spec.vocab, chunk_bytes=8192, val_fraction=0.1)
    prepare([src], out, cfg, progress=not quiet)
    return out


def _register_peers() -> None:
    import optuna

    from lmalloc.search.strategies import register_strategy, strategy_names

    if PEER in strategy_names():
        return
    register_strategy(
        PEER, lambda space, seed, **kw: optuna.samplers.TPESampler(seed=seed),
        "peer: Optuna's default TPESampler()",
    )
    register_strategy(
        "peer:random", lambda space, seed, **kw: optuna.samplers.RandomSampler(seed=seed),
        "peer: RandomSampler()",
    )
    register_strategy(
        CANDIDATE, lambda space, seed, **kw: optuna.samplers.TPESampler(
            seed=seed, multivariate=True, constant_liar=True, n_startup_trials=5),
        "a candidate for auto's conditional branch: TPE with 5 random startup trials",
    )


def base_trial_flops(data_dir: Path, task: Task) -> float:
    """Training FLOPs of one full trial of the base recipe (the unit of the budget)."""
    from lmalloc.data.shards import TokenData
    from lmalloc.model.accounting import train_flops_per_token
    from lmalloc.model.config import GPTConfig

    train = task.train()
    cfg = GPTConfig(vocab_size=TokenData(data_dir).vocab_size, **task.spec.model)
    return float(train_flops_per_token(cfg, train["seq_len"]) * train["max_tokens"])


def pruner_of(strategy: str) -> str:
    """The pruner an arm runs with: ``name@pruner``'s, else none for the peers, ASHA for
    lmalloc's strategies."""
    name, _, pruner = strategy.partition("@")
    return pruner or ("none" if name in PEERS else "asha")


def run_study(strategy: str, seed: int, task: Task, keep: bool = False,
              pruner: str | None = None, second_objective: str | None = None,
              label: str = "") -> dict[str, Any]:
    """One study through ``run_search``; returns its trials in the order they were charged
    (with ``second_objective``, a Pareto study: each completed trial's ``values`` too).
    ``pruner``: default ASHA for lmalloc's strategies, none for the peers; a strategy written
    ``name@pruner`` (``dqn@hyperband``) runs ``name`` with that pruner, saved as its own arm."""
    import optuna
    import torch

    from lmalloc.rundir import RunDir
    from lmalloc.search.study import SearchSettings, run_search

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", message="Constraints have been set")  # cmaes: all 0
    _register_peers()
    data = prepare_data(task=task.name)
    root = CACHE / "studies" / task.tag() / f"{strategy.replace(':', '_')}{label}_s{seed}"
    shutil.rmtree(root, ignore_errors=True)  # an interrupted study restarts from scratch
    root.mkdir(parents=True)
    (root / "data").symlink_to(data.resolve(), target_is_directory=True)
    unit, budget = base_trial_flops(data, task), task.budget_trials
    s = SearchSettings(
        run_dir=str(root), space=task.spec.space, base_model=task.spec.model,
        base_train=task.train(), strategy=strategy.partition("@")[0],
        budget_flops=budget * unit, trial_flops=unit, seed=seed,
        second_objective=second_objective, pruner=pruner or pruner_of(strategy),
    )
    t0 = time.perf_counter()
    summary = run_search(s)
    seconds = time.perf_counter() - t0
    trials = _charged_trials(RunDir(root), summary)
    if second_objective:
        from lmalloc.search.study import load_study

        study = load_study(s)
        values = {t.number: t.values for t in study.get_trials(deepcopy=False) if t.values}
        for t in trials:
            t["values"] = values.get(t["number"])
    if not keep:
        shutil.rmtree(root / "trials", ignore_errors=True)
    return {"strategy": strategy, "seed": seed, "seconds": seconds, "unit_flops": unit,
            "budget_flops": budget * unit, "counts": summary["counts"], "trials": trials}


def _charged_trials(run: Any, summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Ledger rows (charge order) joined with the study's values and parameters."""
    by_number = {row["number"]: row for row in summary["trials"]}
    out = []
    for row in run.manifest().get("ledger", []):
        if row.get("stage") != "explore":
            continue
        t = by_number.get(row["trial"], {})
        complete = t.get("state") == "complete"
        out.append({"number": row["trial"], "flops": row["flops"], "status": row["status"],
                    "value": t.get("value") if complete else None,
                    "params": t.get("params", {})})
    return out


# ---------------------------------------------------------------- summaries

OTHER_TOLS = (0.02, 0.005)
"""Looser and tighter relative tolerances, to show how the ranking depends on the 1 %."""

REL_TOL = 0.01
""""Within 1 %": a plain relative 1 % of the best val bpb anyone found (bpb is a positive loss
with a meaningful zero, unlike the test functions)."""

CHECKPOINTS = (1, 2, 3, 4, 6, 8, 10, 12, 16, 24)
"""Anytime-curve read-outs, in full-trial FLOP equivalents."""


def incumbent_curve(trials: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """Cumulative FLOPs after each charged trial and the best completed value so far."""
    flops, best, spent, inc = [], [], 0.0, math.inf
    for t in trials:
        spent += t["flops"]
        if t["value"] is not None and math.isfinite(t["value"]):
            inc = min(inc, t["value"])
        flops.append(spent)
        best.append(inc)
    return flops, best


def flops_to(curve: tuple[list[float], list[float]], target: float) -> float:
    for f, v in zip(*curve, strict=True):
        if v <= target:
            return f
    return math.inf


def best_at(curve: tuple[list[float], list[float]], flops: float) -> float:
    inc = math.inf
    for f, v in zip(*curve, strict=True):
        if f > flops * (1 + 1e-9):
            break
        inc = v
    return inc


def summarise(runs: dict[str, list[dict[str, Any]]],
              f_best: float | None = None) -> dict[str, Any]:
    """Per strategy, medians over seeds: FLOPs to within 1 %, to the peer's final value,
    the anytime curve at :data:`CHECKPOINTS`, final best, trial counts. ``f_best``: the
    reference value (default: the best any of ``runs`` found)."""
    curves = {s: [incumbent_curve(r["trials"]) for r in rs] for s, rs in runs.items()}
    unit = next(iter(runs.values()))[0]["unit_flops"]
    if f_best is None:
        f_best = min(c[1][-1] for cs in curves.values() for c in cs if c[1])
    target = f_best * (1 + REL_TOL)
    out: dict[str, Any] = {"f_best_found": f_best, "target_1pct": target,
                           "unit_flops": unit, "curve_units": _grid(runs), "by": {}}
    for s, cs in curves.items():
        to = [flops_to(c, target) / unit for c in cs]
        finals = [c[1][-1] if c[1] else math.inf for c in cs]
        out["by"][s] = {
            "seeds": len(cs),
            "median_trials": float(np.median([len(r["trials"]) for r in runs[s]])),
            "median_complete": float(np.median(
                [sum(t["value"] is not None for t in r["trials"]) for r in runs[s]])),
            "spent_units": float(np.median([c[0][-1] / unit for c in cs])),
            "final": finals, "median_final": float(np.median(finals)),
            "units_to_1pct": to, "median_units_to_1pct": float(np.median(to)),
            "reached_1pct": sum(math.isfinite(x) for x in to),
            **{f"median_units_to_{tol:g}": float(np.median(
                [flops_to(c, f_best * (1 + tol)) / unit for c in cs])) for tol in OTHER_TOLS},
            "anytime": {str(k): float(np.median([best_at(c, k * unit) for c in cs]))
                        for k in CHECKPOINTS if k <= _grid(runs)[-1]},
            "sec_per_study": float(np.median([r["seconds"] for r in runs[s]])),
            "median_curve": [float(np.median([best_at(c, x * unit) for c in cs]))
                             for x in _grid(runs)],
        }
    _add_peer_ratios(out["by"], curves, unit)
    return out


def _grid(runs: dict[str, list[dict[str, Any]]]) -> list[float]:
    """Where the median anytime curve is read: every quarter of a full trial's FLOPs."""
    top = max(r["budget_flops"] / r["unit_flops"] for rs in runs.values() for r in rs)
    return [float(x) for x in np.arange(0.25, top + 1e-9, 0.25)]


def plot(summary: dict[str, Any], path: Path, title: str = "tiny GPT on Tiny Shakespeare") -> None:
    """Median best val bpb against FLOPs spent, one line per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    x = np.array(summary["curve_units"]) * summary["unit_flops"]
    for s, r in summary["by"].items():
        y = np.array(r["median_curve"])
        style = "--" if s in PEERS else ("-" if s in ("auto", "gp", "tpe") else ":")
        ax.plot(x, np.where(np.isinf(y), np.nan, y), style, label=s, lw=2 if s == "auto" else 1)
    ax.axhline(summary["target_1pct"], color="k", lw=0.5, label="within 1 % of best")
    ax.set_xlabel("training FLOPs spent by the study")
    ax.set_ylabel("median best val bits per byte")
    ax.set_title(f"{title}: anytime curves (median over seeds)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _add_peer_ratios(by: dict[str, Any], curves: dict[str, Any], unit: float) -> None:
    if PEER not in by:
        return
    peer_to = by[PEER]["median_units_to_1pct"]
    peer_final = by[PEER]["median_final"]
    peer_spent = by[PEER]["spent_units"]
    for s, row in by.items():
        # the peer never got within 1 %: a ratio to its whole budget is an upper bound
        row["ratio_is_upper_bound"] = math.isinf(peer_to)
        row["ratio_to_1pct_vs_peer"] = row["median_units_to_1pct"] / (
            peer_spent if math.isinf(peer_to) else peer_to)
        to_final = [flops_to(c, peer_final) / unit for c in curves[s]]
        row["median_units_to_peer_final"] = float(np.median(to_final))
        row["to_peer_final_vs_peer_budget"] = row["median_units_to_peer_final"] / peer_spent


def _u(x: float) -> str:
    return "never" if math.isinf(x) else f"{x:.1f}"


def table(summary: dict[str, Any]) -> str:
    """Markdown: per strategy, compute in full-trial FLOP units (medians over seeds)."""
    lines = [
        "| strategy | pruner | trials (complete) | median final bpb | to within 1 % "
        "(seeds reaching) | × default TPE | to 2 % | to 0.5 % | to TPE's final (× TPE budget) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s, r in summary["by"].items():
        ratio = r.get("ratio_to_1pct_vs_peer", math.nan)
        ratio_s = "—" if not math.isfinite(ratio) else f"{ratio:.2f}"
        if r.get("ratio_is_upper_bound") and math.isfinite(ratio):
            ratio_s = f"< {ratio:.2f}"
        tf = r.get("median_units_to_peer_final", math.inf)
        tf_s = "never" if math.isinf(tf) else f"{tf:.1f} ({r['to_peer_final_vs_peer_budget']:.2f})"
        lines.append(
            f"| {s} | {pruner_of(s)} | {r['median_trials']:.0f} "
            f"({r['median_complete']:.0f}) | {r['median_final']:.4f} | "
            f"{_u(r['median_units_to_1pct'])} ({r['reached_1pct']}/{r['seeds']}) | {ratio_s} | "
            f"{_u(r['median_units_to_0.02'])} | {_u(r['median_units_to_0.005'])} | {tf_s} |"
        )
    return "\n".join(lines)


def anytime_table(summary: dict[str, Any]) -> str:
    """Median best val bpb after k full trials' worth of FLOPs."""
    ks = list(next(iter(summary["by"].values()))["anytime"])
    lines = [f"| strategy | {' | '.join(ks)} |", "|---|" + "---|" * len(ks)]
    for s, r in summary["by"].items():
        cells = ["—" if math.isinf(v) else f"{v:.4f}" for v in r["anytime"].values()]
        lines.append(f"| {s} | {' | '.join(cells)} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- the run

DEFAULT_STRATEGIES = (
    "peer:tpe_default", "peer:random", "tpe", "gp", "auto", "random", "cmaes", "qmc", "nsga2",
    "pg", "dqn", "bandit", "grid", CANDIDATE,
)
"""In this order, so an interrupted run has the peers and auto's candidates first."""

ESSENTIAL = ("peer:tpe_default", "peer:random", "tpe", "gp", "auto")

_SAME_TPE = ("_n_startup_trials", "_n_ei_candidates", "_multivariate", "_group",
             "_constant_liar", "_gamma", "_weights", "_constraints_func")


def auto_alias(space_dict: dict[str, Any] = SPACE) -> str | None:
    """The lmalloc strategy ``auto`` is identical to on this space (same class and settings,
    same seeds, deterministic objective → the same study), or None."""
    import optuna

    from lmalloc.search import SearchSpace, make_sampler
    from lmalloc.search.strategies import auto_choice

    space = SearchSpace.from_dict(space_dict)
    name = auto_choice(space)
    a, b = make_sampler("auto", space, 0), make_sampler(name, space, 0)
    if type(a) is not type(b):
        return None
    if isinstance(a, optuna.samplers.TPESampler):
        # multivariate=None is Optuna 5's default: True for one objective (ours)
        def settings(x: Any) -> list[Any]:
            return [True if k == "_multivariate" and getattr(x, k) is None
                    else getattr(x, k, None) for k in _SAME_TPE]

        same = settings(a) == settings(b)
    else:
        same = getattr(a, "_n_startup_trials", 0) == getattr(b, "_n_startup_trials", 0)
    return name if same else None


def _study_path(task: Task, strategy: str, seed: int) -> Path:
    """Where a finished study is saved; the name changes with the task's settings."""
    return CACHE / "results" / task.tag() / f"{strategy.replace(':', '_')}_s{seed}.json"


def _run_and_save(strategy: str, seed: int, task: Task) -> str:
    from lmalloc.rundir import atomic_write_json

    r = run_study(strategy, seed, task)
    atomic_write_json(_study_path(task, strategy, seed), r)
    n = len(r["trials"])
    return f"{strategy:18s} seed {seed}: {n:3d} trials, {r['seconds']:6.1f} s"


def run_all(strategies: list[str], seeds: int, task: Task,
            jobs: int) -> dict[str, list[dict[str, Any]]]:
    """Every (strategy, seed) study not already saved, ``jobs`` processes of one thread each."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from lmalloc.rundir import read_json

    os.environ["OMP_NUM_THREADS"] = "1"
    prepare_data(task=task.name)  # once, before the workers race for it
    alias = auto_alias(task.spec.space) if "auto" in strategies else None
    todo = [(s, k) for s in strategies for k in range(seeds)
            if not (s == "auto" and alias in strategies)
            and not _study_path(task, s, k).is_file()] if jobs > 0 else []
    # the peers and auto's candidates first, whole; then seed by seed, so that a run cut short
    # has every other strategy on some seeds rather than some strategies on none
    todo.sort(key=lambda sk: (0, strategies.index(sk[0]), sk[1]) if sk[0] in ESSENTIAL
              else (1, sk[1], strategies.index(sk[0])))
    if alias in strategies:
        print(f"auto = {alias} on this space (same sampler, same seeds): not run twice")
    t0 = time.perf_counter()
    if todo:
        with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
            futs = [pool.submit(_run_and_save, s, k, task) for s, k in todo]
            for f in futs:
                print(f"{f.result()}   [{time.perf_counter() - t0:7.1f} s]", flush=True)
    runs: dict[str, list[dict[str, Any]]] = {}
    for s in strategies:
        src = alias if s == "auto" and alias in strategies else s
        paths = [_study_path(task, src, k) for k in range(seeds)]
        done = [read_json(p) for p in paths if p.is_file()]  # jobs=0 collects what is saved
        if done:
            runs[s] = done
    return runs


def main(strategies: list[str] | None, seeds: int, task: Task, jobs: int,
         out: Path) -> dict[str, Any]:
    import optuna

    from lmalloc.rundir import atomic_write_json

    strategies = strategies or list(DEFAULT_STRATEGIES)
    t0 = time.perf_counter()
    runs = run_all(strategies, seeds, task, jobs)
    summary = summarise(runs)
    alias = auto_alias(task.spec.space)
    results = {
        "task": f"{task.spec.title}, val bpb", "task_name": task.name,
        "quick": task.quick, "seeds": seeds, "budget_trials": task.budget_trials,
        "space": task.spec.space, "base_model": task.spec.model, "base_train": task.train(),
        "auto_is": alias, "optuna": optuna.__version__,
        "wall_seconds_this_call": time.perf_counter() - t0,
        "summary": summary, "runs": slim(runs),
    }
    atomic_write_json(out, results)
    print(table(summary), anytime_table(summary), sep="\n\n")
    return results


def slim(runs: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Per-trial rows without parameters, except each study's best trial (keeps the JSON
    small; the full studies stay in the cache)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for s, rs in runs.items():
        out[s] = []
        for r in rs:
            done = [t for t in r["trials"] if t["value"] is not None]
            best = min(done, key=lambda t: t["value"]) if done else None
            trials = [{k: v for k, v in t.items() if k != "params"} for t in r["trials"]]
            out[s].append({**r, "trials": trials, "best_trial": best})
    return out


def resummarise(path: Path) -> dict[str, Any]:
    from lmalloc.rundir import atomic_write_json, read_json

    results: dict[str, Any] = read_json(path, "benchmark results")
    order = [s for s in DEFAULT_STRATEGIES if s in results["runs"]]
    results["summary"] = summarise({s: results["runs"][s] for s in order})
    atomic_write_json(path, results)
    print(table(results["summary"]), anytime_table(results["summary"]), sep="\n\n")
    return results


QUICK_RESULTS = CACHE / "search_realtask_quick.json"
"""``--quick`` writes outside the repository: a smoke check is not a result."""
