"""``lmalloc run``: every stage of :data:`lmalloc.layout.STAGES` under one budget, in one run
directory (the stages themselves: :mod:`lmalloc.run.stages`).

A rerun skips finished stages and resumes the interrupted one (the search from its study, the
ladder run by run, the final run from its checkpoint), so a run killed at any point continues
where it was. The options of a run are stored in the manifest: resuming with different ones
is an error rather than a silent mix of two runs (unless nothing was trained yet).
"""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lmalloc.errors import UserError
from lmalloc.layout import SUMMARY_JSON
from lmalloc.run.context import RunContext, RunOptions
from lmalloc.run.stages import REGISTRY
from lmalloc.rundir import confined, read_json, refused_writes, remove_stale_temps


def run_pipeline(run_dir: str | Path, options: RunOptions | None = None,
                 say: Callable[[str], None] = lambda _m: None, progress: bool = False,
                 nproc: int = 1, parallel: str = "auto", until: str | None = None,
                 ) -> dict[str, Any]:
    """Run (or resume) every stage; returns ``summary.json``. One ``lmalloc run`` per run
    directory at a time (a lock); what killed writes left behind is removed first; a write
    the disk refuses (full, read-only) is a :class:`UserError` naming the file. ``nproc`` and
    ``parallel``: the final run's processes and layout (``train.launch.launch_train``).
    ``until``: stop before the stage of that name (the benchmarks that study the
    exploration alone); returns ``{}`` then."""
    ctx = RunContext(run_dir, options or RunOptions(), say, progress, nproc, parallel)
    ctx.options.recipe.check()  # before the run folder exists
    with run_lock(ctx.run.root), refused_writes(ctx.run.root):
        remove_stale_temps(ctx.run.root)
        check_options(ctx)
        done = [stage.name for stage in REGISTRY if stage.is_done(ctx)]
        if done:
            say(f"resuming {ctx.run.root}: done earlier: {', '.join(done)}")
        for stage in REGISTRY:
            if stage.name == until:
                return {}
            if stage.skip(ctx):
                continue
            if stage.is_done(ctx):
                say(f"{stage.name}: done earlier, skipped")
                continue
            say(f"[bold]{stage.name}[/]{stage.title}")
            t = time.perf_counter()
            charged = ctx.run.spent(stage.name)["seconds"]
            stage.run(ctx)
            wall = time.perf_counter() - t
            if not stage.charges_itself:
                ctx.run.charge(stage.name, 0.0, wall)
            else:  # what none of the stage's rows charged: scheduling, Optuna, the ledger
                idle = wall - (ctx.run.spent(stage.name)["seconds"] - charged)
                if idle > 0:
                    ctx.run.charge(stage.name, 0.0, idle, part="idle", idle_seconds=idle)
        result: dict[str, Any] = read_json(ctx.run.path(SUMMARY_JSON), "run summary")
        return result


# The stages that charge the ledger before any model is trained.
BEFORE_TRAINING = frozenset({"prepare", "profile", "split"})


def check_options(ctx: RunContext) -> None:
    """Store the options of a new run; refuse to resume one with other options. An attempt
    that stopped before any training (a typo in --data, a budget too small) does not lock the
    folder: the new options replace it and its stages run again (prepare reuses identical
    data, the profile is kept when the hardware option did not change)."""
    m = ctx.run.manifest()
    saved, mine = m.get("run_options"), ctx.options.to_dict()
    if saved is None or saved == mine:
        if saved is None:
            ctx.run.update_manifest(run_options=mine)
        return
    changed = ", ".join(f"{k} {a!r} → {b!r}" for k, a, b in changed_options(saved, mine))
    trained = sorted({str(r.get("stage")) for r in m.get("ledger", [])} - BEFORE_TRAINING)
    if not trained:
        ctx.say(f"the earlier attempt in {ctx.run.root} stopped before any training: starting "
                f"again with the new options ({changed})")
        keep = {k: v for k, v in m.get("stages", {}).items()
                if k == "profile" and saved.get("hardware") == mine.get("hardware")}
        ctx.run.update_manifest(run_options=mine, stages=keep, budget_split=None)
        return
    raise UserError(
        f"{ctx.run.root} holds a run with other options ({changed}) that has trained already "
        f"({', '.join(trained)}): resume it with its own options, or start the new ones in "
        "another folder (--run runs/NEW) or after deleting this one")


def changed_options(saved: dict[str, Any], mine: dict[str, Any]
                    ) -> list[tuple[str, Any, Any]]:
    """``(name, old, new)`` of each option that differs: ``--budget`` and the like by their
    flag, the recipe field by field (``recipe.seq_len``)."""
    out = []
    for k in sorted(set(saved) | set(mine)):
        a, b = saved.get(k), mine.get(k)
        if k == "recipe" and isinstance(a, dict) and isinstance(b, dict):
            out += [(f"recipe.{f}", a.get(f), b.get(f)) for f in sorted(set(a) | set(b))
                    if a.get(f) != b.get(f)]
        elif a != b:
            out.append((f"--{k.replace('_', '-')}", a, b))
    return out


@contextlib.contextmanager
def run_lock(root: Path) -> Iterator[None]:
    """Held for a whole ``lmalloc run``; a second one on the same directory is refused."""
    path = confined(root / ".run.lock")
    with refused_writes(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "a+")  # noqa: SIM115 - held for the whole run
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another `lmalloc run` is running on {root} (lock {path}); wait "
                            "for it to finish") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
