"""Wall time to a fixed validation loss: lmalloc's trainer and recipe against nanoGPT's train.py.

Issue 22's end-to-end comparison: tokens per second (``bench/train_throughput.py``) is half of
it; the recipe that turns those tokens into loss is the other half.

Both peers train the same shape on the same tokens — WikiText-2 ``train.txt`` prepared once by
``lmalloc prepare`` (BPE 4096); nanoGPT reads the same token ids from its ``train.bin`` /
``val.bin`` — with sequences of 128 tokens, 16 per step (2,048 tokens, one micro-batch), fp32
on CPU, dropout 0, for the same number of steps. Each uses its own default recipe:

* **lmalloc**: :class:`~lmalloc.plan.recipe.Recipe`'s defaults (lr 1e-2 at the model's own
  width as μP base, WSD with its cooldown, the trainer's warmup and weight decay): the recipe
  ``lmalloc run``'s search starts from;
* **nanoGPT**: ``train.py``'s defaults (lr 6e-4, cosine decay to 6e-5 over the run, warmup
  2000 of 600000 iterations, i.e. the same fraction 1/300 of the run, AdamW betas (0.9, 0.95),
  weight decay 0.1, grad clip 1.0), run as a subprocess from ``--nanogpt-dir``.

Each evaluates every ``--eval-every`` steps on 65,536 validation tokens (lmalloc: the first
65,536 tokens of the val split; nanoGPT: its ``estimate_loss`` with 32 random batches of 16 ×
128). Training time excludes evaluations in both: the wall time of a step that contained an
evaluation (and nanoGPT's checkpoint save) is replaced by the median step. The target is a
fixed validation loss, by default the worse of the two final losses (so both reach it); the
time to it is interpolated linearly between evaluations. Runs alternate (lmalloc, nanoGPT)
for ``--repeats`` rounds; medians are reported.

    OMP_NUM_THREADS=2 .venv/bin/python bench/time_to_loss.py --shapes 2x64,4x128 --steps 1500
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LMALLOC_SHARED_DATA", REPO.parent / "shared" / "data"))
RESULTS = REPO / "bench" / "results" / "time_to_loss.json"
SEQ, BATCH, EVAL_TOKENS = 128, 16, 65536


def prepare(work: Path, corpus: Path) -> tuple[Path, Path, float]:
    """lmalloc's prepared data dir, nanoGPT's data dir with the same token ids, and the val
    split's tokens per byte (to report bits per byte)."""
    from lmalloc.data.shards import TokenData

    data = work / "prep" / "data"
    if not (data / "data.json").exists():
        subprocess.run([str(REPO / ".venv" / "bin" / "lmalloc"), "prepare", str(corpus),
                        "--run", str(work / "prep"), "--vocab-size", "4096"], check=True)
    td = TokenData(data)
    nano = work / "nano" / "data" / "lm"
    nano.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        toks = np.concatenate([np.asarray(s) for s in td.split(split).shards]).astype(np.uint16)
        toks.tofile(nano / f"{split}.bin")
    with open(nano / "meta.pkl", "wb") as f:  # nanoGPT reads its vocabulary size from here
        pickle.dump({"vocab_size": 4096}, f)
    val = td.split("val")
    return data, nano.parent.parent, val.num_tokens / val.num_bytes


def _train_seconds(step_times: list[float], eval_steps: set[int]) -> list[float]:
    """Cumulative training seconds after each step; a step with an evaluation counts as the
    median step."""
    med = statistics.median(t for i, t in enumerate(step_times) if i not in eval_steps)
    return [float(x) for x in np.cumsum([med if i in eval_steps else t
                                          for i, t in enumerate(step_times)])]


def run_lmalloc(n_layer: int, d: int, steps: int, every: int, data: Path) -> dict[str, Any]:
    from lmalloc.model.config import GPTConfig
    from lmalloc.model.shape import heads_for
    from lmalloc.plan.recipe import Recipe
    from lmalloc.train import Callback, Trainer

    class Clock(Callback):
        def __init__(self) -> None:
            self.stamps: list[float] = []
            self.evals: list[tuple[int, float]] = []

        def on_train_start(self, trainer: Any) -> None:
            self.stamps.append(time.perf_counter())

        def on_step(self, trainer: Any, row: dict[str, Any]) -> None:
            self.stamps.append(time.perf_counter())

        def on_eval(self, trainer: Any, row: dict[str, Any]) -> None:
            self.evals.append((int(row["step"]), float(row["val_loss"])))

    cfg = GPTConfig(vocab_size=4096, n_layer=n_layer, n_head=heads_for(d), d_model=d,
                    seq_len=SEQ, dropout=0.0, mup_base_width=d, mup_base_depth=n_layer)
    train = Recipe(micro_batch=BATCH, batch_tokens=BATCH * SEQ).train_config(
        max_tokens=steps * BATCH * SEQ, eval_every=every, eval_tokens=EVAL_TOKENS,
        precision="fp32", compile=False, device="cpu")
    clock = Clock()
    with tempfile.TemporaryDirectory() as out:
        Trainer(cfg, train, data, out, resume=False, callbacks=[clock]).fit()
    times = list(np.diff(clock.stamps))
    # the interval ending at step s+1 holds the evaluation after step s
    secs = _train_seconds(times, {s for s, _ in clock.evals if s < len(times)})
    return {"curve": [(s, secs[s - 1], v) for s, v in clock.evals if s >= 1]}


def run_nanogpt(n_layer: int, d: int, steps: int, every: int, nano_work: Path,
                nanogpt: Path) -> dict[str, Any]:
    from lmalloc.model.shape import heads_for

    args = {"dataset": "lm", "device": "cpu", "compile": False, "dtype": "float32",
            "dropout": 0.0, "bias": False, "n_layer": n_layer, "n_head": heads_for(d),
            "n_embd": d, "block_size": SEQ,
            "batch_size": BATCH, "gradient_accumulation_steps": 1, "max_iters": steps,
            "lr_decay_iters": steps, "warmup_iters": max(1, round(steps / 300)),
            "eval_interval": every, "eval_iters": EVAL_TOKENS // (BATCH * SEQ),
            "log_interval": 1, "always_save_checkpoint": False}
    with tempfile.TemporaryDirectory() as out:
        (nano_work / "configurator.py").write_text((nanogpt / "configurator.py").read_text())
        cmd = [sys.executable, str(nanogpt / "train.py"), f"--out_dir={out}"] + [
            f"--{k}={v}" for k, v in args.items()]
        text = subprocess.run(cmd, cwd=nano_work, check=True, capture_output=True,
                              text=True).stdout
    times, evals = [], []
    for line in text.splitlines():
        if line.startswith("iter "):
            times.append(float(line.split("time ")[1].split("ms")[0]) / 1000)
        elif line.startswith("step "):
            evals.append((int(line.split(":")[0].split()[1]),
                          float(line.rsplit("val loss ", 1)[1])))
    # nanoGPT evaluates before iteration s trains, inside that iteration's timer
    secs = _train_seconds(times, {s for s, _ in evals})
    # after step s (s iterations trained) the loss printed at the top of iteration s
    return {"curve": [(s, secs[s - 1], v) for s, v in evals if s >= 1]}


def time_to(curve: list[tuple[int, float, float]], target: float) -> float | None:
    """Training seconds at which the evaluated loss first reaches ``target`` (linear between
    evaluations; None if it never does)."""
    prev = None
    for _, t, v in curve:
        if v <= target:
            if prev is None:
                return t
            (t0, v0) = prev
            return t0 + (t - t0) * (v0 - target) / (v0 - v)
        prev = (t, v)
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="2x64,4x128")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--target", type=float, default=None, help="val loss (nats); default: "
                    "the worse of the two peers' final losses in the first round")
    ap.add_argument("--corpus", type=Path, default=SHARED / "wikitext-2" / "train.txt")
    ap.add_argument("--work", type=Path, default=Path("/tmp/lmalloc_ttl"))
    ap.add_argument("--nanogpt-dir", type=Path,
                    default=Path(os.environ.get("NANOGPT_DIR", "/work/scratch/nanogpt")))
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args()
    if not (a.nanogpt_dir / "train.py").exists() or not a.corpus.exists():
        raise SystemExit(f"needs nanoGPT's train.py in {a.nanogpt_dir} and {a.corpus}")
    data, nano_work, tpb = prepare(a.work, a.corpus)
    out: dict[str, Any] = {"steps": a.steps, "eval_every": a.eval_every, "shapes": {},
                           "threads": os.environ.get("OMP_NUM_THREADS"),
                           "load_before": os.getloadavg()}
    for shape in a.shapes.split(","):
        n_layer, d = (int(x) for x in shape.split("x"))
        rounds = []
        for r in range(a.repeats):
            ours = run_lmalloc(n_layer, d, a.steps, a.eval_every, data)
            theirs = run_nanogpt(n_layer, d, a.steps, a.eval_every, nano_work, a.nanogpt_dir)
            rounds.append({"lmalloc": ours, "nanogpt": theirs})
            print(f"{shape} round {r}: final val loss lmalloc {ours['curve'][-1][2]:.4f} "
                  f"({ours['curve'][-1][1]:.1f} s), nanoGPT {theirs['curve'][-1][2]:.4f} "
                  f"({theirs['curve'][-1][1]:.1f} s)", flush=True)
        target = a.target if a.target is not None else max(
            rounds[0]["lmalloc"]["curve"][-1][2], rounds[0]["nanogpt"]["curve"][-1][2])
        t_ours = [time_to(x["lmalloc"]["curve"], target) for x in rounds]
        t_theirs = [time_to(x["nanogpt"]["curve"], target) for x in rounds]
        ratios = [b / o for o, b in zip(t_ours, t_theirs, strict=True) if o and b]
        res = {"target_loss": target, "target_bpb": target * tpb / np.log(2),
               "lmalloc_seconds": t_ours, "nanogpt_seconds": t_theirs,
               "speedup_median": statistics.median(ratios) if ratios else None,
               "rounds": rounds}
        out["shapes"][shape] = res
        def fmt(ts: list[float | None]) -> str:
            return ", ".join("never" if t is None else f"{t:.1f}" for t in ts)

        print(f"{shape}: to val loss {target:.4f} ({res['target_bpb']:.4f} bpb): lmalloc "
              f"{fmt(t_ours)} s, nanoGPT {fmt(t_theirs)} s; nanoGPT / lmalloc (median) "
              f"{res['speedup_median']}", flush=True)
    out["load_after"] = os.getloadavg()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
