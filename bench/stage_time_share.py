"""Where an `lmalloc run`'s exploration time went: per stage, the share of wall time spent in
training steps, evaluation, checkpoints, start-up, and the rest (idle: scheduling, Optuna,
ledger writes, processes starting).

Read from the run directory alone, so it works on runs made before the ledger split its
seconds: a stage's wall time is the gap between its ``finished_at`` and the previous stage's
in ``manifest.json``; training and evaluation time come from each trainer's ``metrics.jsonl``
(an eval row's ``seconds`` minus the preceding row's is that evaluation's time, a train
row's the step's, with the loop around it). Where the ledger rows carry the parts
(``train_seconds`` ...) those are reported too.

    .venv/bin/python bench/stage_time_share.py runs/demo
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

STAGES = ("search", "ladder")
FOLDERS = {"search": "trials", "ladder": "ladder"}


def metrics_times(path: Path) -> tuple[float, float]:
    """(training seconds, evaluation seconds) of one trainer's ``metrics.jsonl``: each row's
    ``seconds`` minus the previous row's (a branch's clock starts at its parent's, so the
    first step's time is its batch over its ``tokens_per_s``)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("kind") in ("train", "eval")]
    batch = json.loads((path.parent / "config.json").read_text())["train"]["batch_tokens"]
    train = ev = 0.0
    prev: float | None = None
    for r in rows:
        if prev is None:
            dt = batch / r["tokens_per_s"] if r["kind"] == "train" else 0.0
        else:
            dt = r["seconds"] - prev
        if r["kind"] == "eval":
            ev += dt
        else:
            train += dt
        prev = r["seconds"]
    return train, ev


def stage_walls(manifest: dict[str, Any]) -> dict[str, float]:
    done = sorted((v["finished_at"], k) for k, v in manifest["stages"].items()
                  if "finished_at" in v)
    return {k: t - done[i - 1][0] for i, (t, k) in enumerate(done) if i > 0}


def main() -> None:
    run = Path(sys.argv[1])
    m = json.loads((run / "manifest.json").read_text())
    walls = stage_walls(m)
    out: dict[str, Any] = {}
    for stage in STAGES:
        if stage not in walls:
            continue
        train = ev = 0.0
        for p in sorted((run / FOLDERS[stage]).rglob("metrics.jsonl")):
            t, e = metrics_times(p)
            train, ev = train + t, ev + e
        rows = [r for r in m.get("ledger", []) if r["stage"] == stage]
        charged = sum(r["seconds"] for r in rows)
        wall = walls[stage]
        doc = {"wall_s": wall, "charged_s": charged, "train_s": train, "eval_s": ev,
               "train_share": train / wall, "eval_share": ev / wall,
               "uncharged_share": max(0.0, wall - charged) / wall}
        for part in ("train_seconds", "eval_seconds", "checkpoint_seconds", "startup_seconds",
                     "idle_seconds"):
            if any(part in r for r in rows):
                doc[f"ledger_{part}"] = sum(r.get(part, 0.0) for r in rows)
        out[stage] = doc
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
