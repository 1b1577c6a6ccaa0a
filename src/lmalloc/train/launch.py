"""Training a run directory's model: what ``lmalloc train`` and ``python -m lmalloc.train``
(``torchrun ... -m lmalloc.train``) call.

Reads the prepared data in ``runs/<name>/data``, takes the model and train settings from a
recipe (or from ``plan.json`` when no recipe is given), trains into ``runs/<name>/final/``,
charges the budget ledger and records the stage. Under ``torchrun`` only rank 0 writes.

Several processes (:func:`launch_train`, ``lmalloc train --nproc N``): the launcher checks the
request (processes vs devices, the batch rule on N ranks, a checkpoint's data layout), picks
the layout — DDP unless the memory model (:func:`lmalloc.cost.memory.estimate_memory`) says
a DDP replica does not fit in one device, then FSDP (:func:`choose_parallel`) — and runs
``python -m torch.distributed.run --standalone --nproc_per_node N -m lmalloc.train ...``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lmalloc.errors import UserError, invalid
from lmalloc.rundir import RunDir, atomic_write_json, read_json
from lmalloc.train.config import TrainConfig, batch_layout, load_recipe
from lmalloc.train.device import device_type, uses_bf16

PARALLEL_CHOICES = ("auto", "ddp", "fsdp")
RESULT_ENV = "LMALLOC_TRAIN_RESULT"  # where rank 0 of a launched run leaves its result


@dataclass(frozen=True)
class ParallelChoice:
    """How the processes of a run share the model, and why (printed and recorded)."""

    parallel: str  # "single", "ddp" or "fsdp"
    reason: str
    nproc: int = 1
    ddp_peak: float | None = None  # memory model: peak bytes per device
    fsdp_peak: float | None = None
    memory_bytes: float | None = None  # one device's memory the choice was made against

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_settings(run: RunDir, recipe: str | Path | None) -> tuple[dict[str, Any],
                                                                       TrainConfig, str]:
    """Model keyword arguments, train config and where they came from."""
    if recipe is not None:
        model_kw, train = load_recipe(recipe)
        return model_kw, train, str(recipe)
    plan_path = run.root / "plan.json"
    if plan_path.exists():
        run.verify_artifact("plan.json")  # an altered plan must not be trained silently
        plan = read_json(plan_path, "plan")
        if isinstance(plan.get("model"), dict) and isinstance(plan.get("train"), dict):
            model_kw = {k: v for k, v in plan["model"].items() if k != "vocab_size"}
            return model_kw, TrainConfig.from_dict(plan["train"]), str(plan_path)
    raise UserError(
        f"no settings to train {run.root} with: pass --recipe (e.g. configs/tiny.toml) or run "
        "`lmalloc plan` first"
    )


def apply_overrides(train: TrainConfig, max_tokens: int | None = None,
                    max_seconds: float | None = None, lr: float | None = None) -> TrainConfig:
    """CLI overrides: ``max_tokens`` sets the run's length (replacing the recipe's token, step
    and FLOP limits, and a plan's ``fill_time``); ``max_seconds`` adds a time limit; ``lr``
    sets the peak lr."""
    changes: dict[str, Any] = {}
    if max_tokens is not None:
        changes.update(max_tokens=max_tokens, max_steps=None, max_flops=None, fill_time=False)
    if max_seconds is not None:
        changes["max_seconds"] = max_seconds
    if lr is not None:
        changes["lr"] = lr
    return train.replace(**changes) if changes else train


def run_settings(run: RunDir, recipe: str | Path | None = None,
                 max_tokens: int | None = None, max_seconds: float | None = None,
                 lr: float | None = None) -> tuple[Any, TrainConfig, str]:
    """The ``GPTConfig``, train config (overrides applied) and their source for a run."""
    from lmalloc.data.shards import DATA_JSON, TokenData
    from lmalloc.model.config import GPTConfig

    if not (run.data / DATA_JSON).exists():
        raise UserError(
            f"{run.data} holds no prepared data: run `lmalloc prepare --run {run.root}` first"
        )
    data = TokenData(run.data)
    model_kw, train, source = resolve_settings(run, recipe)
    train = apply_overrides(train, max_tokens, max_seconds, lr)
    model_kw.setdefault("seq_len", train.seq_len)
    return GPTConfig(vocab_size=data.vocab_size, **model_kw), train, source


def train_run(run_dir: str | Path, recipe: str | Path | None = None, *,
              max_tokens: int | None = None, max_seconds: float | None = None,
              lr: float | None = None, resume: bool = True, progress: bool = False,
              parallel: str = "auto", parallel_reason: str | None = None,
              memory_bytes: float | None = None) -> dict[str, Any]:
    """Train the run's final model in this process (one of ``torchrun``'s, or alone);
    returns the :class:`TrainResult` as a dict, plus the layout as ``parallel``."""
    run = RunDir(run_dir)
    model_cfg, train, source = run_settings(run, recipe, max_tokens, max_seconds, lr)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if parallel == "auto" or world == 1:
        source = "given"
        if memory_bytes is None and world > 1:  # this node's processes share its RAM
            local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
            memory_bytes, source = device_memory(train.device, local)
        choice = choose_parallel(model_cfg, train, world, memory_bytes,
                                 "auto" if world == 1 else parallel, memory_source=source)
    else:
        choice = ParallelChoice(parallel, parallel_reason or f"--parallel {parallel}", world)
    from lmalloc.train.trainer import Trainer  # torch: only once the inputs are valid

    trainer = Trainer(model_cfg, train, run.data, run.final, resume=resume, progress=progress,
                      parallel=choice.parallel if world > 1 else "ddp")
    result = trainer.fit()
    if trainer.ctx.is_main:
        run.charge("train", result.session_flops, **result.ledger(), status=result.status)
        run.record_stage("train", settings=source, status=result.status,
                         reason=result.reason, out="final", steps=result.steps,
                         tokens=result.tokens, val_loss=result.val_loss,
                         val_bpb=result.val_bpb, nproc=world, parallel=choice.parallel,
                         parallel_reason=choice.reason)
    return {**result.to_dict(), "parallel": choice.to_dict()}


# -- choosing the layout ----------------------------------------------------------------------
def max_processes(device_pref: str = "auto") -> tuple[int, str]:
    """How many training processes this machine can host: one per GPU, or one per CPU core
    (the cores this process may run on) when training on the CPU."""
    if device_type(device_pref) == "cuda":
        import torch

        return torch.cuda.device_count(), "CUDA devices"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return int(cores or 1), "CPU cores"


def check_nproc(nproc: int, device_pref: str = "auto") -> None:
    """Raise :class:`UserError` unless 1 <= ``nproc`` <= the devices of this machine."""
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise invalid("nproc", nproc, "a whole number of processes >= 1")
    most, what = max_processes(device_pref)
    if nproc > most:
        raise UserError(
            f"invalid nproc = {nproc}: more processes than devices ({most} {what} here); "
            f"use --nproc 1 to {most}, or run `torchrun --nnodes ...` on several machines "
            "(docs/scale-out.md)")


def check_parallel_request(nproc: int, parallel: str = "auto",
                           device_pref: str | None = "auto") -> None:
    """Reject a bad ``--nproc``/``--parallel`` pair up front (before a pipeline spends its
    budget); ``device_pref`` None checks only what needs no device (nproc >= 1, the names)."""
    if parallel not in PARALLEL_CHOICES:
        raise invalid("parallel", parallel, f"one of {', '.join(PARALLEL_CHOICES)}")
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise invalid("nproc", nproc, "a whole number of processes >= 1")
    if nproc == 1 and parallel != "auto":
        raise invalid("parallel", parallel, "auto with one process (--nproc 1): DDP and "
                      "FSDP need at least 2 processes")
    if device_pref is not None:
        check_nproc(nproc, device_pref)


def device_memory(device_pref: str, nproc: int) -> tuple[float, str]:
    """One process's device memory and where the number comes from: the GPU's total memory,
    or on the CPU the machine's RAM split between the ``nproc`` processes."""
    if device_type(device_pref) == "cuda":
        import torch

        props = torch.cuda.get_device_properties(0)
        return float(props.total_memory), f"{props.name} memory"
    import psutil

    return psutil.virtual_memory().total / nproc, f"RAM / {nproc} process(es)"


def memory_precision(train: TrainConfig, dev_type: str) -> str:
    """The memory model's precision for the trainer's (``auto``: bf16 on CUDA when
    supported, as :class:`~lmalloc.train.trainer.Trainer` does)."""
    if train.precision != "auto":
        return train.precision
    return "bf16" if uses_bf16(train.precision, dev_type) else "fp32"


def choose_parallel(model_cfg: Any, train: TrainConfig, nproc: int, memory_bytes: float | None,
                    requested: str = "auto", *, memory_source: str = "given",
                    precision: str | None = None) -> ParallelChoice:
    """DDP when the memory model says a full replica (weights, gradients, AdamW state,
    activations of one micro-batch, DDP's gradient buckets) fits in ``HEADROOM`` of one
    device's ``memory_bytes``; FSDP (ZeRO-3) otherwise. ``requested`` ``ddp``/``fsdp`` forces
    the layout (the estimates are still reported). ``memory_bytes`` None: this machine's.
    """
    from lmalloc.cost.memory import HEADROOM, estimate_memory

    if requested not in PARALLEL_CHOICES:
        raise invalid("parallel", requested, f"one of {', '.join(PARALLEL_CHOICES)}")
    if nproc == 1:
        if requested != "auto":
            raise invalid("parallel", requested, "auto with one process (--nproc 1): DDP and "
                          "FSDP need at least 2 processes")
        return ParallelChoice("single", "one process: no data parallelism", 1)
    if memory_bytes is None:
        memory_bytes, memory_source = device_memory(train.device, nproc)
    if precision is None:
        precision = memory_precision(train, device_type(train.device))
    micro, accum = batch_layout(train, nproc)
    peaks = {mode: estimate_memory(model_cfg, micro, train.seq_len, precision, mode, nproc,
                                   train.activation_checkpointing, grad_accum=accum).peak
             for mode in ("ddp", "fsdp")}
    limit = HEADROOM * memory_bytes
    usable = f"{_size(limit)} usable ({HEADROOM:.0%} of {_size(memory_bytes)}, {memory_source})"
    ckpt = ", activation checkpointing" if train.activation_checkpointing else ""
    est = (f"memory model, {precision}, micro-batch {micro}{ckpt}: DDP {_size(peaks['ddp'])}, "
           f"FSDP {_size(peaks['fsdp'])} per device; {usable}")
    if requested != "auto":
        reason = f"forced with --parallel {requested} ({est})"
        parallel = requested
    elif peaks["ddp"] <= limit:
        parallel, reason = "ddp", f"a DDP replica fits ({est})"
    else:
        parallel, reason = "fsdp", f"a DDP replica does not fit, FSDP shards it ({est})"
    if peaks[parallel] > limit:
        reason += f"; warning: {parallel.upper()} is over the usable memory and may run out"
    return ParallelChoice(parallel, reason, nproc, peaks["ddp"], peaks["fsdp"], memory_bytes)


def _size(n: float) -> str:
    """Bytes for a message, in the largest binary unit that keeps a number >= 1."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} B"


# -- launching torchrun -----------------------------------------------------------------------
def launch_train(run_dir: str | Path, recipe: str | Path | None = None, *, nproc: int = 1,
                 parallel: str = "auto", memory_bytes: float | None = None,
                 max_tokens: int | None = None, max_seconds: float | None = None,
                 lr: float | None = None, resume: bool = True, progress: bool = False,
                 say: Callable[[str], None] = lambda _m: None,
                 memory_source: str = "--memory") -> dict[str, Any]:
    """Train the run's final model on ``nproc`` processes (``torchrun`` when > 1).

    Everything a user can get wrong is checked here, before any process starts; the
    layout (:func:`choose_parallel`) is announced through ``say``. Returns rank 0's
    result, as :func:`train_run`.
    """
    check_parallel_request(nproc, parallel, device_pref=None)
    run = RunDir(run_dir)
    model_cfg, train, _ = run_settings(run, recipe, max_tokens, max_seconds, lr)
    check_nproc(nproc, train.device)  # the device (CPU or GPUs) comes from the settings
    if nproc == 1:
        return train_run(run_dir, recipe, max_tokens=max_tokens, max_seconds=max_seconds,
                         lr=lr, resume=resume, progress=progress)
    _check_resume_layout(run, train, nproc, resume)
    choice = choose_parallel(model_cfg, train, nproc, memory_bytes, parallel,
                             memory_source=memory_source)
    say(f"{nproc} processes, {choice.parallel.upper()}: {choice.reason}")
    args = {"--recipe": recipe, "--max-tokens": max_tokens, "--max-seconds": max_seconds,
            "--lr": lr, "--parallel": choice.parallel, "--parallel-reason": choice.reason}
    cmd = torchrun_command(nproc, ["--run-dir", str(run.root),
                                   *[str(x) for k, v in args.items() if v is not None
                                     for x in (k, v)],
                                   *([] if resume else ["--no-resume"])])
    return _run_torchrun(cmd, nproc, train.device)


def _check_resume_layout(run: RunDir, train: TrainConfig, nproc: int, resume: bool) -> None:
    """Refuse before launching when a checkpoint cannot continue on ``nproc`` processes."""
    state_path = run.final / "checkpoint" / "state.json"  # checkpoint.STATE_FILE, torch-free
    if resume and state_path.exists():
        saved = read_json(state_path, "checkpoint state")
        batch_layout(train, nproc, saved.get("micro_batch"), saved.get("world_size"))
    else:
        batch_layout(train, nproc)


def torchrun_command(nproc: int, program_args: list[str]) -> list[str]:
    """The single-node ``torchrun`` command line of ``python -m lmalloc.train``."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
            "--nproc_per_node", str(nproc), "-m", "lmalloc.train", *program_args]


def _run_torchrun(cmd: list[str], nproc: int, device_pref: str) -> dict[str, Any]:
    """Run ``cmd``; its output goes to our stderr (our stdout stays for the result)."""
    with tempfile.TemporaryDirectory(prefix="lmalloc-train-") as tmp:
        result_file = Path(tmp) / "result.json"
        env = {**os.environ, RESULT_ENV: str(result_file)}
        if device_type(device_pref) == "cpu" and "OMP_NUM_THREADS" not in env:
            env["OMP_NUM_THREADS"] = str(max(1, max_processes("cpu")[0] // nproc))
        code = _wait_for(cmd, env)
        doc = read_json(result_file, "training result") if result_file.exists() else {}
    if "error" in doc:
        raise UserError(str(doc["error"]))
    if code != 0 or "result" not in doc:
        raise RuntimeError(f"torchrun exited with code {code} (command: {' '.join(cmd)}); "
                           "its output is above")
    result: dict[str, Any] = doc["result"]
    return result


def _wait_for(cmd: list[str], env: dict[str, str]) -> int:
    """Run ``cmd`` to its end; interrupted, stop it with SIGTERM (torchrun passes it on to
    its workers), then SIGKILL after 30 s."""
    try:
        fd: int | None = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # stderr is not a file (in-process tests)
        fd = None
    proc = subprocess.Popen(cmd, env=env, text=True,
                            stdout=subprocess.PIPE if fd is None else fd,
                            stderr=subprocess.STDOUT if fd is None else fd,
                            preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    try:
        out, _ = proc.communicate()
    except BaseException:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    if out:
        sys.stderr.write(out)
    return proc.returncode


def _die_with_parent() -> None:
    """In torchrun's process, before it starts (Linux): SIGTERM when the launcher dies, even
    by SIGKILL, so no workers train on unattended."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def write_result(doc: dict[str, Any]) -> bool:
    """Leave ``doc`` where :func:`launch_train` looks for it; False when not launched by it."""
    path = os.environ.get(RESULT_ENV)
    if not path:
        return False
    atomic_write_json(Path(path), doc)
    return True
