"""Allocation quality: validation bits per byte at the same total compute C.

The headline benchmark of the planner issue. Every method gets the same training compute C,
counted in FLOPs with lmalloc's exact per-token count
(:func:`lmalloc.model.accounting.train_flops_per_token`, forward + backward, the convention of
the run ledger; evaluation forward passes are not counted for any method), so runs may go in
parallel with one thread each and wall time does not enter the comparison.

Methods (one *cell* = one method × one seed):

* ``lmalloc`` — (a) ``lmalloc run --run R --data <train.txt> --budget <C>flops --seed S``:
  prepare, search, ladder, fit, plan, final training, all inside C (``RunDir(R).spent()``).
* ``rule`` — (b) the 20-tokens-per-parameter rule with nanoGPT's default hyperparameters
  (``train.py``: lr 6e-4, cosine to min_lr 6e-5, warmup 2000 of 600000 iterations → the same
  fraction 1/300, weight decay 0.1, betas (0.9, 0.95), grad clip 1.0, dropout 0). N is chosen
  so that ``train_flops_per_token(cfg) · 20 · N = C`` (the grid of shapes from
  :func:`lmalloc.model.shape.shape_for` is discrete: the shape whose product is closest is
  taken, and D = C / train_flops_per_token(cfg) exactly, so the run spends C while its
  tokens per parameter lands near 20; the ratio is reported). N convention: non-embedding
  (Kaplan's N, the one lmalloc's laws use; with a 4096-token vocabulary at this scale the total
  count is dominated by the embedding and the rule would pick 1-2-layer, 16-32-wide models);
  Chinchilla's total-parameter convention is the extra method ``rule_total``.
* ``tpe`` / ``random`` — (c)/(d) Optuna's default ``TPESampler(seed=S)`` /
  ``RandomSampler(seed=S + 10007)``: ``--trials`` k trials, each a full training of the rule's
  compute-optimal model *at C/k* (so every trial is itself a 20-tokens-per-parameter run and
  the k trials spend C), tuning lr (log-uniform 1e-4..3e-2), warmup fraction (0..0.2), weight
  decay (0..0.2) and beta2 (0.9..0.999) — the hyperparameter part of
  ``configs/space_tiny.toml`` — with the other settings at nanoGPT's defaults. The answer is
  the best trial's final validation bpb (the selection uses the same val split that is
  reported, which favours these two slightly; the held-out column does not have that bias).
  Note: Optuna's default TPE draws its first ``n_startup_trials = 10`` trials from its own
  ``RandomSampler(seed=S)``, so with k ≤ 10 it *is* random search — with the same seed it
  would draw exactly (d)'s points, hence (d)'s offset seed. That is Optuna's default behaviour
  at this budget, reported as is (``--trials 12`` or more gives TPE model-based trials, each
  at a smaller C/k).

Shared settings: WikiText-2 ``train.txt`` prepared once by ``lmalloc prepare`` (vocabulary 4096,
its own 2 % hash-chosen val split); sequences of 128 tokens, batches of 2048 tokens (16
sequences) — the settings of ``lmalloc run``'s recipe, used by every method (nanoGPT's 1024-token
context and 0.5M-token batch are far beyond these budgets). Evaluation: every method's final
model is re-evaluated by the same call, :func:`lmalloc.evaluate.perplexity.evaluate_lm`, on the
first ``--eval-tokens`` tokens of the prepared val split (``val_bpb``, the headline) and of
WikiText-2's official ``valid.txt`` tokenized with the same tokenizer (``heldout_bpb``, never
used for any selection).

Usage::

    nice -n 5 env OMP_NUM_THREADS=1 .venv/bin/python bench/allocation_quality.py \\
        --methods rule,tpe,random,lmalloc --seeds 0,1,2 --flops 1.4e13
    .venv/bin/python bench/allocation_quality.py --quick        # smoke run, ~1 min
    .venv/bin/python bench/allocation_quality.py --summary      # table from the saved cells

One cell at 1.4e13 FLOPs takes ~30 min of one busy core here (6-7 GFLOP/s per process);
``lmalloc run`` refuses budgets below ~1.34e13 FLOPs on this corpus (its ladder's minimum).

Resumable: a finished cell leaves ``<work>/cells/<C>/<method>_s<seed>.json`` and is skipped;
two processes may run different cells at once (each rewrites the aggregate JSON from all
cells on disk). Writes ``bench/results/allocation_quality.json`` (not in ``--quick``).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "allocation_quality.json"
SHARED = Path(os.environ.get("LMALLOC_SHARED_DATA", REPO.parent / "shared" / "data"))
WIKITEXT = SHARED / "wikitext-2"
METHODS = ("lmalloc", "rule", "rule_total", "tpe", "random")
LABELS = {
    "lmalloc": "(a) lmalloc run",
    "rule": "(b) 20 tok/param + nanoGPT HPs",
    "rule_total": "(b') same, total-param N",
    "tpe": "(c) Optuna TPESampler()",
    "random": "(d) Optuna RandomSampler()",
}
RULE_TOKENS_PER_PARAM = 20.0
SEQ_LEN, BATCH_TOKENS, MICRO_BATCH = 128, 2048, 16  # lmalloc run's recipe, for every method
# nanoGPT train.py defaults (learning_rate, min_lr/learning_rate, warmup_iters/max_iters, ...).
NANOGPT = {"lr": 6e-4, "min_lr_ratio": 0.1, "schedule": "cosine", "warmup": 2000 / 600000,
           "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95, "grad_clip": 1.0}
RANDOM_SEED_OFFSET = 10007
SPACE = {"lr": (1e-4, 3e-2, True), "warmup": (0.0, 0.2, False),
         "weight_decay": (0.0, 0.2, False), "beta2": (0.9, 0.999, False)}


# -- data and evaluation ------------------------------------------------------------------------
def prepare_data(work: Path, vocab_size: int) -> Path:
    """Prepare WikiText-2 train.txt once (``lmalloc prepare`` reuses an identical result)."""
    from lmalloc.data.config import PrepareConfig
    from lmalloc.data.pipeline import prepare_run

    run = work / "data_run"
    prepare_run(run, [WIKITEXT / "train.txt"], PrepareConfig(vocab_size=vocab_size))
    return run / "data"


def evaluate_model(model_dir: Path, data_dir: Path, eval_tokens: int) -> dict[str, Any]:
    """The same evaluation for every method: val split and official valid.txt, E tokens each."""
    from lmalloc.data.shards import TokenData
    from lmalloc.evaluate.perplexity import evaluate_lm
    from lmalloc.model.io import load_model

    model, _ = load_model(model_dir, "cpu")
    data = TokenData(data_dir)
    val = evaluate_lm(model, data.split("val"), seq_len=SEQ_LEN, batch_size=MICRO_BATCH,
                      max_tokens=eval_tokens)
    held = evaluate_lm(model, WIKITEXT / "valid.txt", seq_len=SEQ_LEN, batch_size=MICRO_BATCH,
                       max_tokens=eval_tokens, tokenizer_path=data.tokenizer_path)
    return {"val_bpb": val["bpb"], "val_loss": val["loss"], "val_tokens": val["tokens"],
            "heldout_bpb": held["bpb"], "heldout_loss": held["loss"],
            "heldout_tokens": held["tokens"]}


# -- the rule -----------------------------------------------------------------------------------
def rule_shape(flops: float, vocab_size: int, convention: str) -> dict[str, Any]:
    """The shape whose ``train_flops_per_token · 20 · N`` is closest to ``flops``."""
    from lmalloc.errors import UserError
    from lmalloc.model.accounting import param_count, train_flops_per_token
    from lmalloc.model.shape import shape_for

    non_emb = convention == "non_embedding"
    best: tuple[float, Any] | None = None
    for i in range(600):  # targets 1e3 .. 1e9, log-spaced
        target = 10 ** (3 + 6 * i / 599)
        try:
            cfg = shape_for(target, vocab_size, SEQ_LEN, non_embedding=non_emb)
        except UserError:
            continue
        n = param_count(cfg, non_embedding=non_emb)
        err = abs(math.log(train_flops_per_token(cfg) * RULE_TOKENS_PER_PARAM * n / flops))
        if best is None or err < best[0]:
            best = (err, cfg)
    assert best is not None
    cfg = best[1]
    fpt = train_flops_per_token(cfg)
    steps = int(flops // (fpt * BATCH_TOKENS))
    n = param_count(cfg, non_embedding=non_emb)
    return {"model": cfg, "N": n, "N_convention": convention, "flops_per_token": fpt,
            "steps": steps, "tokens": steps * BATCH_TOKENS,
            "tokens_per_param": steps * BATCH_TOKENS / n,
            "params_total": param_count(cfg), "params_non_embedding": param_count(cfg, True)}


def train_one(shape: dict[str, Any], hps: dict[str, Any], seed: int, data_dir: Path,
              out: Path, eval_tokens: int, resume: bool = True) -> Any:
    """Train the shape for its steps with nanoGPT's defaults overridden by ``hps``."""
    from lmalloc.train.config import TrainConfig
    from lmalloc.train.trainer import Trainer

    cfg = TrainConfig(**{**NANOGPT, **hps}, batch_tokens=BATCH_TOKENS, micro_batch=MICRO_BATCH,
                      seq_len=SEQ_LEN, max_steps=shape["steps"], eval_every=0,
                      eval_tokens=eval_tokens, seed=seed, log_every=10)
    return Trainer(shape["model"], cfg, data_dir, out, resume=resume).fit()


def model_info(shape: dict[str, Any]) -> dict[str, Any]:
    m = shape["model"]
    return {**{k: v for k, v in shape.items() if k != "model"},
            "shape": {"n_layer": m.n_layer, "d_model": m.d_model, "n_head": m.n_head}}


def run_rule(ctx: dict[str, Any], seed: int, convention: str, out: Path) -> dict[str, Any]:
    shape = rule_shape(ctx["flops"], ctx["vocab"], convention)
    res = train_one(shape, {}, seed, ctx["data"], out / "final", ctx["eval_tokens"])
    return {"flops": res.flops, "status": res.status, "model_dir": str(out / "final"),
            "hyperparameters": dict(NANOGPT), "allocation": model_info(shape)}


# -- Optuna peers -------------------------------------------------------------------------------
def run_optuna(ctx: dict[str, Any], seed: int, sampler_name: str, out: Path) -> dict[str, Any]:
    """k full trainings of the rule's model at C/k, sampled by Optuna's default sampler."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    k = ctx["trials"]
    shape = rule_shape(ctx["flops"] / k, ctx["vocab"], "non_embedding")
    out.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name="aq", storage=f"sqlite:///{out / 'study.db'}", load_if_exists=True,
        direction="minimize")
    done = [t for t in study.trials if t.state.is_finished()]
    # A resumed study gets a fresh stream (the same seed would redraw the first points).
    s = seed + 1000 * len(done)
    # TPESampler(seed=s) draws its startup trials from RandomSampler(seed=s): the same seed
    # would make (c) and (d) identical while k <= n_startup_trials, so (d) gets its own stream.
    study.sampler = (optuna.samplers.TPESampler(seed=s) if sampler_name == "tpe"
                     else optuna.samplers.RandomSampler(seed=s + RANDOM_SEED_OFFSET))

    def objective(trial: optuna.Trial) -> float:
        hps = {name: trial.suggest_float(name, lo, hi, log=log)
               for name, (lo, hi, log) in SPACE.items()}
        res = train_one(shape, hps, seed, ctx["data"], out / "trials" / str(trial.number),
                        ctx["eval_tokens"], resume=False)
        trial.set_user_attr("flops", res.flops)
        trial.set_user_attr("status", res.status)
        ok = res.status == "completed" and res.val_bpb is not None
        return float(res.val_bpb) if ok and math.isfinite(res.val_bpb) else float("nan")

    study.optimize(objective, n_trials=max(0, k - len(done)))
    trials = [t for t in study.trials if t.state.is_finished()]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise RuntimeError(f"{sampler_name} seed {seed}: no trial completed")
    best = min(complete, key=lambda t: t.value)
    return {
        "flops": sum(float(t.user_attrs.get("flops", 0.0)) for t in trials),
        "status": "completed", "model_dir": str(out / "trials" / str(best.number)),
        "hyperparameters": {**NANOGPT, **best.params}, "allocation": model_info(shape),
        "trials": [{"number": t.number, "state": t.state.name, "value": t.value,
                    "params": t.params, "status": t.user_attrs.get("status"),
                    "flops": t.user_attrs.get("flops")} for t in trials],
        "best_trial": best.number,
    }


# -- lmalloc run --------------------------------------------------------------------------------
def lmalloc_run_ready() -> bool:
    """Whether ``lmalloc run`` exists yet (the lead is writing it)."""
    exe = REPO / ".venv" / "bin" / "lmalloc"
    r = subprocess.run([str(exe), "run", "--help"], capture_output=True, text=True)
    return r.returncode == 0


def run_lmalloc(ctx: dict[str, Any], seed: int, out: Path) -> dict[str, Any]:
    """(a): ``lmalloc run`` in its own run directory; its ledger is its spend."""
    from lmalloc.rundir import RunDir, read_json

    if not lmalloc_run_ready():
        raise RuntimeError("`lmalloc run --help` fails: the command is not available yet")
    cmd = [str(REPO / ".venv" / "bin" / "lmalloc"), "run", "--run", str(out), "--data",
           str(WIKITEXT / "train.txt"), "--budget", f"{ctx['flops']:g}flops", "--seed",
           str(seed), *ctx["lmalloc_args"]]
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f"{out.name}.log", "a") as log:
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()
        r = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
    if r.returncode != 0:
        tail = (out.parent / f"{out.name}.log").read_text().splitlines()[-15:]
        raise RuntimeError(f"lmalloc run exited {r.returncode}:\n" + "\n".join(tail))
    summary = read_json(out / "summary.json", "run summary")
    check_same_data(out / "data", ctx["data"])
    return {"flops": RunDir(out).spent()["flops"], "status": summary.get("achieved", {}).get(
        "status", "completed"), "model_dir": str(out / "final"), "summary": summary,
        "by_stage": summary.get("by_stage")}


def check_same_data(a: Path, b: Path) -> None:
    """(a) prepares its own data: it must be the same tokenizer and val split as the peers'."""
    from lmalloc.rundir import read_json

    ja, jb = read_json(a / "data.json"), read_json(b / "data.json")
    same = (ja["tokenizer"]["sha256"] == jb["tokenizer"]["sha256"] and
            ja["splits"]["val"]["shards"] == jb["splits"]["val"]["shards"])
    if not same:
        raise RuntimeError(f"{a} differs from {b}: tokenizer or val split not identical")


# -- cells, aggregation, table ------------------------------------------------------------------
def cell_path(work: Path, flops: float, method: str, seed: int) -> Path:
    return work / "cells" / f"{flops:g}" / f"{method}_s{seed}.json"


def run_cell(ctx: dict[str, Any], method: str, seed: int) -> dict[str, Any]:
    """Run one (method, seed), evaluate its final model the common way, return its record."""
    out = ctx["work"] / "runs" / f"{ctx['flops']:g}" / method / f"s{seed}"
    t0 = time.perf_counter()
    if method == "lmalloc":
        rec = run_lmalloc(ctx, seed, out)
    elif method in ("rule", "rule_total"):
        rec = run_rule(ctx, seed, "total" if method == "rule_total" else "non_embedding", out)
    else:
        rec = run_optuna(ctx, seed, method, out)
    wall = time.perf_counter() - t0
    ev = evaluate_model(Path(rec.pop("model_dir")), ctx["data"], ctx["eval_tokens"])
    return {"method": method, "seed": seed, "budget_flops": ctx["flops"], **ev,
            "flops_ratio": rec["flops"] / ctx["flops"], "wall_seconds": wall, **rec}


def predicted_vs_achieved(cell: dict[str, Any]) -> dict[str, Any] | None:
    """(a)'s predicted loss/bpb interval against what its final run achieved."""
    s = cell.get("summary")
    if not s:
        return None
    pred, ach = s.get("predicted", {}), s.get("achieved", {})
    loss, bpb = pred.get("loss", {}), pred.get("bpb", {})

    def inside(p: dict[str, Any], v: float | None) -> bool | None:
        if v is None or p.get("low") is None or p.get("high") is None:
            return None
        return bool(p["low"] <= v <= p["high"])

    return {"pred_loss": loss, "achieved_val_loss": ach.get("val_loss"),
            "loss_inside": inside(loss, ach.get("val_loss")), "pred_bpb": bpb,
            "achieved_val_bpb": ach.get("val_bpb"), "bpb_inside": inside(bpb, ach.get("val_bpb")),
            "common_eval_bpb": cell["val_bpb"],
            "common_bpb_inside": inside(bpb, cell["val_bpb"])}


def summarise(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """Per method: median and range over seeds of both bpb columns, FLOPs spent."""
    out: dict[str, Any] = {}
    for m in METHODS:
        rows = sorted((c for c in cells if c["method"] == m), key=lambda c: c["seed"])
        if not rows:
            continue
        v, h = [c["val_bpb"] for c in rows], [c["heldout_bpb"] for c in rows]
        out[m] = {"seeds": [c["seed"] for c in rows], "val_bpb": v,
                  "val_bpb_median": statistics.median(v), "val_bpb_min": min(v),
                  "val_bpb_max": max(v), "heldout_bpb": h,
                  "heldout_bpb_median": statistics.median(h),
                  "heldout_bpb_min": min(h), "heldout_bpb_max": max(h),
                  "flops": [c["flops"] for c in rows],
                  "flops_ratio": [c["flops_ratio"] for c in rows],
                  "wall_seconds": [c["wall_seconds"] for c in rows],
                  "predicted_vs_achieved": [predicted_vs_achieved(c) for c in rows]}
    return out


def format_table(summary: dict[str, Any], flops: float) -> str:
    lines = [f"C = {flops:.3g} FLOPs per cell; bpb on the prepared val split (headline) and "
             "on WikiText-2 valid.txt (held out); median [min-max] over seeds",
             f"{'method':34s} {'seeds':>5s} {'val bpb':>22s} {'held-out bpb':>22s} "
             f"{'FLOPs/C':>12s} {'wall s':>7s}"]
    for m, s in summary.items():
        fr = s["flops_ratio"]
        lines.append(
            f"{LABELS[m]:34s} {len(s['seeds']):5d} "
            f"{s['val_bpb_median']:.4f} [{s['val_bpb_min']:.4f}-{s['val_bpb_max']:.4f}] "
            f"{s['heldout_bpb_median']:.4f} [{s['heldout_bpb_min']:.4f}-"
            f"{s['heldout_bpb_max']:.4f}] {min(fr):5.3f}-{max(fr):5.3f} "
            f"{statistics.median(s['wall_seconds']):7.0f}")
    for m, s in summary.items():
        for seed, p in zip(s["seeds"], s["predicted_vs_achieved"], strict=True):
            if p is None:
                continue
            pl, pb = p["pred_loss"], p["pred_bpb"]
            lines.append(
                f"  {m} seed {seed}: predicted loss {pl.get('value')} [{pl.get('low')}, "
                f"{pl.get('high')}] vs achieved {p['achieved_val_loss']} "
                f"(inside: {p['loss_inside']}); predicted bpb {pb.get('value')} "
                f"[{pb.get('low')}, {pb.get('high')}] vs achieved {p['achieved_val_bpb']} "
                f"(inside: {p['bpb_inside']}), common-eval bpb {p['common_eval_bpb']:.4f} "
                f"(inside: {p['common_bpb_inside']})")
    return "\n".join(lines)


def load_cells(work: Path, flops: float) -> list[dict[str, Any]]:
    from lmalloc.rundir import read_json

    folder = work / "cells" / f"{flops:g}"
    return [read_json(p) for p in sorted(folder.glob("*.json"))] if folder.exists() else []


def write_results(ctx: dict[str, Any], path: Path | None) -> dict[str, Any]:
    import platform

    import torch

    from lmalloc.rundir import atomic_write_json

    cells = load_cells(ctx["work"], ctx["flops"])
    summary = summarise(cells)
    doc = {"budget_flops": ctx["flops"], "trials_per_tuner": ctx["trials"],
           "eval_tokens": ctx["eval_tokens"], "vocab_size": ctx["vocab"], "seq_len": SEQ_LEN,
           "batch_tokens": BATCH_TOKENS, "nanogpt_defaults": NANOGPT,
           "search_space": {k: list(v) for k, v in SPACE.items()},
           "corpus": "WikiText-2 train.txt (shared/data/wikitext-2)",
           "machine": {"python": platform.python_version(), "torch": torch.__version__,
                       "threads_per_process": torch.get_num_threads()},
           "summary": summary, "cells": cells, "table": format_table(summary, ctx["flops"])}
    if path is not None:
        atomic_write_json(path, doc)
    return doc


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--flops", type=float, default=1.4e13,
                   help="total compute C per cell (lmalloc run needs >= 1.34e13 here)")
    p.add_argument("--methods", default="rule,tpe,random,lmalloc",
                   help=f"comma-separated, from {','.join(METHODS)}")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--trials", type=int, default=8, help="k trials per Optuna study")
    p.add_argument("--eval-tokens", type=int, default=65536)
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--work", type=Path, default=Path("/tmp/lmalloc_aq"),
                   help="runs and per-cell results (outside the repository)")
    p.add_argument("--lmalloc-args", default="", help="extra arguments for `lmalloc run`")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: C = 1e11, 2 trials, 1 seed, 8192 eval tokens, own work dir")
    p.add_argument("--summary", action="store_true", help="only print the saved cells' table")
    p.add_argument("--keep-going", action="store_true", help="a failed cell does not stop")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    data = prepare_data(a.work, a.vocab_size)  # shared by --quick
    if a.quick:
        a.flops, a.trials, a.eval_tokens = 1e11, 2, 8192
        a.seeds, a.work = a.seeds if a.seeds != "0,1,2" else "0", a.work / "quick"
        if a.methods == "rule,tpe,random,lmalloc":
            a.methods = "rule,tpe,random"
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    bad = sorted(set(methods) - set(METHODS))
    if bad:
        sys.exit(f"unknown method(s) {bad}; allowed: {', '.join(METHODS)}")
    from lmalloc.data.shards import TokenData

    ctx = {"flops": a.flops, "trials": a.trials, "eval_tokens": a.eval_tokens, "work": a.work,
           "data": data, "vocab": TokenData(data).vocab_size,
           "lmalloc_args": a.lmalloc_args.split()}
    results = None if a.quick else RESULTS
    failures = 0
    for seed in ([] if a.summary else [int(s) for s in a.seeds.split(",")]):
        for m in methods:
            path = cell_path(a.work, a.flops, m, seed)
            if path.exists() or not claim(path):
                continue
            try:
                print(f"[{time.strftime('%H:%M:%S')}] {m} seed {seed} ...", flush=True)
                failures += run_and_save(ctx, m, seed, path, a.keep_going)
            finally:
                path.with_suffix(".lock").unlink(missing_ok=True)
            write_results(ctx, results)
    print(write_results(ctx, results)["table"])
    return 1 if failures else 0


def claim(path: Path) -> bool:
    """Take a cell for this process (a lock file with our pid; a dead owner's lock is taken
    over), so that two copies of the command split the cells between them."""
    lock = path.with_suffix(".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            text = lock.read_text().strip()
            if not text.isdigit():
                return False  # being written by its owner this very moment
            try:
                os.kill(int(text), 0)
                return False  # its owner is alive
            except ProcessLookupError:
                lock.unlink(missing_ok=True)  # stale: the owner died
            except PermissionError:
                return False
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return True
    return False


def run_and_save(ctx: dict[str, Any], method: str, seed: int, path: Path,
                 keep_going: bool) -> int:
    from lmalloc.rundir import atomic_write_json

    try:
        cell = run_cell(ctx, method, seed)
    except Exception as e:
        if not keep_going:
            raise
        print(f"  FAILED: {type(e).__name__}: {e}", flush=True)
        return 1
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, cell)
    print(f"  val bpb {cell['val_bpb']:.4f}, held-out {cell['heldout_bpb']:.4f}, FLOPs "
          f"{cell['flops']:.3g} ({cell['flops_ratio']:.3f} C), {cell['wall_seconds']:.0f} s",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
