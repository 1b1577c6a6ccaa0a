"""The one training loop: search trials, the scaling ladder, the final run, fine-tuning and
recovery after pruning all go through :class:`Trainer`.

Data rule (what makes resume exact and DDP match one process): the optimizer step ``s`` reads
``A = batch_tokens / (micro_batch * seq_len)`` micro-batches in all; micro-batch ``j`` is
``split.window_batch(s * A + j, micro_batch, seq_len, seed)``, a pure function of
``(seed, s, j)``. Rank ``r`` of ``W`` takes ``j = r * A/W ... (r+1) * A/W - 1``, so the global
batch of a step does not depend on the number of processes, and a resumed run at step ``s``
reads what an uninterrupted one would. A run resumed on another number of processes keeps
the micro-batch size its checkpoint was drawn with (and so the same batches), or refuses
(:func:`lmalloc.train.config.batch_layout`).

Data parallelism (under ``torchrun``): ``parallel="ddp"`` replicates the model,
``parallel="fsdp"`` shards it (:mod:`lmalloc.train.distributed`); both give the one-process
result up to float reduction order, and both write the one-process checkpoint format.

Out folder: ``config.json`` (model and train config, hash), ``metrics.jsonl``,
``checkpoint/`` (latest, resumable) and ``snapshots/<tokens>/`` (kept checkpoints).
"""

from __future__ import annotations

import collections
import contextlib
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lmalloc.data.shards import TokenData, TokenSource
from lmalloc.errors import UserError
from lmalloc.rundir import atomic_write_json, ledger_parts, read_json
from lmalloc.train import checkpoint as ckpt
from lmalloc.train.callbacks import Callback, MetricsFile, ProgressBar, StopTraining
from lmalloc.train.config import TrainConfig, batch_layout
from lmalloc.train.device import uses_bf16
from lmalloc.train.distributed import (
    PARALLEL_MODES,
    DistContext,
    all_reduce_mean,
    broadcast_int,
    grad_sync,
    init_distributed,
    shard_fsdp,
    to_full,
    wrap_ddp,
)
from lmalloc.train.optim import build_optimizer, set_lr
from lmalloc.train.schedules import Schedule, branch, make_schedule
from lmalloc.train.validation import evaluate_lm

FILL_TARGET = 0.98
"""``fill_time`` ends the run at this share of ``max_seconds`` (the rest: the step time's
drift during the cooldown)."""
FILL_MIN_STEPS = 20  # steps measured before fill_time decides anything
FILL_WINDOW = 0.02
"""fill_time's step time is that of the steps in the last this share of ``max_seconds`` (at
least :data:`FILL_MIN_STEPS` of them): recent enough for a neighbour that starts, long
enough that one evaluation or checkpoint does not move it much."""
FILL_SHORTEN = 0.98  # a cooldown is shortened when the time left holds less than this of it
STATUSES = ("completed", "diverged", "pruned", "stopped", "time_limit", "oom")
_STOP_CODES = {0: None, 1: "pruned", 2: "stopped"}
OOM_ERRORS: tuple[type[BaseException], ...] = (
    getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError),
)


@dataclass
class TrainResult:
    """How a run ended. ``session_*`` is what this call spent (for the budget ledger):
    ``session_seconds`` runs from the first step to the end and includes the evaluations
    (``session_eval_seconds``) and checkpoint writes (``session_checkpoint_seconds``);
    ``startup_seconds`` is the time before the first step (building the model, opening the
    data, loading a checkpoint), which ``seconds`` does not count."""

    status: str
    reason: str
    steps: int
    tokens: int
    flops: float
    seconds: float
    train_loss: float | None
    val_loss: float | None
    val_bpb: float | None
    out_dir: str
    session_flops: float = 0.0
    session_seconds: float = 0.0
    session_eval_seconds: float = 0.0
    session_checkpoint_seconds: float = 0.0
    startup_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def ledger(self) -> dict[str, float]:
        """What this call spent, as ledger fields: ``seconds`` (all of it, start-up
        included) and its parts ``train_seconds``, ``eval_seconds``, ``checkpoint_seconds``,
        ``startup_seconds``; pass to ``RunDir.charge(stage, flops, **result.ledger())``."""
        return ledger_parts(self.to_dict())


def model_flops_per_token(model_cfg: Any, seq_len: int) -> float:
    """Training FLOPs per token of ``model_cfg`` at the training ``seq_len``."""
    from lmalloc.model.accounting import train_flops_per_token

    return float(train_flops_per_token(model_cfg, seq_len))


def _config_dict(model_cfg: Any) -> dict[str, Any]:
    return model_cfg.to_dict() if hasattr(model_cfg, "to_dict") else asdict(model_cfg)


SLOWDOWN_ENV = "LMALLOC_SLOWDOWN"


def slowdown() -> float:
    """``$LMALLOC_SLOWDOWN`` (default 1): every training step then takes that many times its
    time, as on a machine that slowed down after it was profiled (another job started). For
    testing that time budgets hold; a value that is not a number ≥ 1 is ignored."""
    try:
        f = float(os.environ.get(SLOWDOWN_ENV, "1"))
    except ValueError:
        return 1.0
    return f if math.isfinite(f) and f >= 1.0 else 1.0


class Trainer:
    """Train a GPT on a prepared data folder, writing metrics and checkpoints to ``out_dir``.

    Args:
        model_cfg: the model's ``GPTConfig``.
        train_cfg: the :class:`TrainConfig`.
        data_dir: a prepared data folder (``lmalloc prepare``), or any
            :class:`~lmalloc.data.shards.TokenSource` (a fine-tuning task's examples).
        out_dir: where config, metrics and checkpoints go.
        callbacks: extra :class:`Callback` s (a ``MetricsFile`` is always attached).
        resume: continue from ``out_dir/checkpoint`` when present (the configs must match,
            else :class:`UserError`); ``False`` starts over and overwrites.
        model: train this module instead of a new ``GPT(model_cfg)`` (fine-tuning, recovery
            after pruning); ``model_cfg`` still describes it for FLOP accounting.
        init_from: a checkpoint folder whose weights start the run (fresh optimizer, step 0).
        branch_from: a WSD checkpoint (stable phase) to continue from with only the cooldown:
            weights, optimizer state and counters come from it and the run cools down
            linearly to ``min_lr_ratio`` over ``cooldown_tokens`` tokens. The token, step and
            FLOP limits of ``train_cfg`` are then ignored (``max_seconds`` still applies).
        cooldown_tokens: length of the branch's cooldown (required with ``branch_from``).
        progress: show a progress bar (only on a terminal).
        parallel: ``ddp`` or ``fsdp``: how several processes (``torchrun``) share the model;
            ignored on one process.
    """

    def __init__(
        self, model_cfg: Any, train_cfg: TrainConfig, data_dir: str | Path | TokenSource,
        out_dir: str | Path, callbacks: tuple[Callback, ...] | list[Callback] = (),
        resume: bool = True, *, model: nn.Module | None = None,
        init_from: str | Path | None = None, branch_from: str | Path | None = None,
        cooldown_tokens: int | None = None, progress: bool = False, parallel: str = "ddp",
    ) -> None:
        self._created = time.perf_counter()  # start-up runs from here to the first step
        self.model_cfg, self.cfg = model_cfg, train_cfg
        self._slowdown = slowdown()
        self.out_dir = Path(out_dir)
        self.resume, self.init_from = resume, init_from
        self.branch_from = Path(branch_from) if branch_from is not None else None
        self.cooldown_tokens = cooldown_tokens
        self._check_branch_args()
        if parallel not in PARALLEL_MODES:
            raise UserError(f"invalid parallel = {parallel!r}: expected one of "
                            f"{', '.join(PARALLEL_MODES)}")
        self.ctx: DistContext = init_distributed(train_cfg.device)
        self.parallel = parallel if self.ctx.enabled else "single"
        self.data: TokenSource = (TokenData(data_dir) if isinstance(data_dir, (str, Path))
                                  else data_dir)
        self._check_shapes()
        self.micro, self.accum = batch_layout(train_cfg, self.ctx.world_size)
        self.flops_per_token = model_flops_per_token(model_cfg, train_cfg.seq_len)
        self._given_model = model
        self.callbacks: list[Callback] = []
        if self.ctx.is_main:
            self.callbacks.append(MetricsFile(self.out_dir / "metrics.jsonl"))
            if progress:
                self.callbacks.append(ProgressBar())
        self.callbacks.extend(callbacks)
        self.step = 0
        self.total_steps: int | None = None

    # -- checks -----------------------------------------------------------------------------
    def _check_branch_args(self) -> None:
        if (self.branch_from is None) != (self.cooldown_tokens is None):
            raise UserError("branch_from and cooldown_tokens go together: give both or neither")
        if self.cooldown_tokens is not None and self.cooldown_tokens <= 0:
            raise UserError(f"invalid cooldown_tokens = {self.cooldown_tokens}: expected > 0")
        if self.branch_from is not None and self.cfg.schedule != "wsd":
            raise UserError(f"branching needs schedule = 'wsd', not {self.cfg.schedule!r}")
        if self.branch_from is not None and self.init_from is not None:
            raise UserError("give init_from or branch_from, not both")

    def _check_shapes(self) -> None:
        vocab = getattr(self.model_cfg, "vocab_size", self.data.vocab_size)
        if vocab < self.data.vocab_size:
            raise UserError(f"model vocab_size {vocab} is smaller than the data's "
                            f"{self.data.vocab_size} ({self.data.dir})")
        ctx_len = getattr(self.model_cfg, "seq_len", self.cfg.seq_len)
        if self.cfg.seq_len > ctx_len:
            raise UserError(f"train seq_len {self.cfg.seq_len} is longer than the model's "
                            f"context seq_len {ctx_len}")

    def config_hash(self) -> str:
        """What a resume must match: model, the math of the train config, the branch."""
        import hashlib
        import json

        doc = {"model": _config_dict(self.model_cfg), "train": self.cfg.resume_hash(),
               "branch": [str(self.branch_from), self.cooldown_tokens, str(self.init_from)]}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]

    # -- setup ------------------------------------------------------------------------------
    def _precision(self) -> torch.dtype | None:
        p, dev = self.cfg.precision, self.ctx.device
        if uses_bf16(p, dev.type):
            return torch.bfloat16
        return None

    def _build(self) -> None:
        torch.manual_seed(self.cfg.seed)
        if self._given_model is not None:
            model = self._given_model
        else:
            from lmalloc.model.gpt import GPT

            model = GPT(self.model_cfg)
        self.model = model.to(self.ctx.device)
        self.model.train()
        set_activation_checkpointing(self.model, self.cfg.activation_checkpointing)
        if self.init_from is not None:
            ckpt.load_weights(self.init_from, self.model)
        if self.parallel == "fsdp":
            shard_fsdp(self.model, self.ctx)  # before the optimizer: it holds the shards
        self.optimizer = build_optimizer(self.model, self.cfg, self.ctx.device)
        self.autocast_dtype = self._precision()
        self.train_model: nn.Module = self.model
        use_compile = (self.cfg.compile if self.cfg.compile is not None
                       else self.ctx.device.type == "cuda")
        if use_compile:
            self.train_model = torch.compile(self.model)  # type: ignore[assignment]
        if self.parallel == "ddp":
            self.train_model = wrap_ddp(self.train_model, self.ctx)

    def _limit_steps(self) -> int | None:
        c, lims = self.cfg, []
        if c.max_steps is not None:
            lims.append(c.max_steps)
        if c.max_tokens is not None:
            lims.append(math.ceil(c.max_tokens / c.batch_tokens))
        if c.max_flops is not None:
            lims.append(math.ceil(c.max_flops / (self.flops_per_token * c.batch_tokens)))
        return min(lims) if lims else None

    def _fresh_state(self) -> dict[str, Any]:
        return {"step": 0, "tokens": 0, "flops": 0.0, "seconds": 0.0, "min_loss": None,
                "train_loss": None, "last_eval_step": None, "last_eval": None,
                "filling": False}

    def _plan(self) -> None:
        """Restore or start the state and fix the schedule and the number of steps."""
        self.state = self._fresh_state()
        here = self.out_dir / "checkpoint"
        if self.resume and ckpt.has_checkpoint(here):
            self._check_resumable(here)
            self.state.update(ckpt.load_checkpoint(here, self.model, self.optimizer))
            self.micro, self.accum = batch_layout(self.cfg, self.ctx.world_size,
                                                  self.state.get("micro_batch"),
                                                  self.state.get("world_size"))
            self.schedule = Schedule.from_dict(self.state["schedule"])
            self.total_steps = self.state["total_steps"]
        elif self.branch_from is not None:
            self._start_branch()
        else:
            self.total_steps = self._limit_steps()
            if self.total_steps is None and self.cfg.schedule != "constant":
                raise UserError(
                    f"schedule {self.cfg.schedule!r} needs a length: set max_tokens, max_steps "
                    "or max_flops (max_seconds alone only works with schedule = 'constant')")
            self.schedule = make_schedule(self.cfg, self.total_steps)
            self.state["filling"] = self.cfg.fill_time
        self.step = int(self.state["step"])

    def _start_branch(self) -> None:
        assert self.branch_from is not None and self.cooldown_tokens is not None
        if not ckpt.has_checkpoint(self.branch_from):
            raise UserError(f"branch_from {self.branch_from} is not a checkpoint folder")
        parent = ckpt.load_checkpoint(self.branch_from, self.model, self.optimizer)
        at = int(parent["step"])
        try:
            self.schedule = branch(Schedule.from_dict(parent["schedule"]), at,
                                   math.ceil(self.cooldown_tokens / self.cfg.batch_tokens))
        except ValueError as e:
            raise UserError(f"cannot branch from {self.branch_from}: {e}") from None
        self.total_steps = self.schedule.decay_end
        for key in ("step", "tokens", "flops", "seconds", "min_loss", "train_loss"):
            self.state[key] = parent[key]

    def _check_resumable(self, here: Path) -> None:
        saved = ckpt.read_state(here)
        if saved.get("config_hash") == self.config_hash():
            return
        old = read_json(self.out_dir / "config.json", "run config") if (
            self.out_dir / "config.json").exists() else {}
        new = {"model": _config_dict(self.model_cfg), "train": self.cfg.to_dict()}
        changed = [f"{sect}.{k}: {old.get(sect, {}).get(k)!r} -> {v!r}"
                   for sect in ("model", "train") for k, v in new[sect].items()
                   if old.get(sect, {}).get(k) != v]
        raise UserError(
            f"{self.out_dir} holds a checkpoint of a different configuration "
            f"({'; '.join(changed) or 'branch or init changed'}); resume with the same "
            "settings, pick another output folder, or start over with resume=False "
            "(--no-resume)")

    def _write_config(self) -> None:
        if self.ctx.is_main:
            atomic_write_json(self.out_dir / "config.json", {
                "model": _config_dict(self.model_cfg), "train": self.cfg.to_dict(),
                "data": {"dir": str(self.data.dir), "vocab_size": self.data.vocab_size},
                "branch_from": str(self.branch_from) if self.branch_from else None,
                "cooldown_tokens": self.cooldown_tokens,
                "init_from": str(self.init_from) if self.init_from else None,
                "world_size": self.ctx.world_size, "parallel": self.parallel,
                "micro_batch": self.micro, "config_hash": self.config_hash(),
                "schedule": self.schedule.to_dict(), "total_steps": self.total_steps,
                "flops_per_token": self.flops_per_token,
            })

    # -- the loop ---------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        """Run to a stop condition; returns how it ended (never raises for divergence/OOM)."""
        self._eval_s = self._save_s = 0.0
        self._last_eval_full = True  # whether the latest evaluation read eval_tokens
        self._build()
        self._plan()
        self._write_config()
        self.split = self.data.split("train")
        self.val = self.data.split("val")
        self._t0 = time.perf_counter()
        self._startup_s = self._t0 - self._created
        self._seconds0 = float(self.state["seconds"])
        self._flops0 = float(self.state["flops"])
        # fill_time's recent steps of this session: (step, seconds)
        self._fill_window: collections.deque[tuple[int, float]] = collections.deque()
        self._last_eval_s: float | None = None
        self._last_save_s = 0.0
        self._call("on_train_start")
        status, reason = self._loop()
        return self._finish(status, reason)

    def seconds(self) -> float:
        return self._seconds0 + time.perf_counter() - self._t0

    def _stop_reason(self) -> tuple[str, str] | None:
        c = self.cfg
        if self.total_steps is not None and self.step >= self.total_steps \
                and not self.state.get("filling"):  # else the length is not known yet
            return "completed", f"reached {self.total_steps} steps"
        if c.max_seconds is not None:
            over = self.ctx.is_main and self.seconds() >= c.max_seconds
            if broadcast_int(int(over), self.ctx):
                return "time_limit", f"reached max_seconds = {c.max_seconds}"
        return None

    def _fill_time(self) -> None:
        """``fill_time``: while the run is in its stable phase, start the cooldown at the
        first step where the time left (less the closing evaluation and checkpoint, at their
        measured cost) holds no more steps than a cooldown of ``cooldown_frac`` of the run;
        once cooling down, shorten the rest of the cooldown (from the lr it has reached) when
        the time left no longer holds it. The step time is that of the recent steps
        (:data:`FILL_WINDOW`), so it follows a busy machine: the session's average let a
        neighbour that slowed the steps 2.7x during the cooldown cut a demo's run at 43 % of
        its tokens. Rank 0 decides for all."""
        c = self.cfg
        cooling = (not self.state.get("filling") and self.total_steps is not None
                   and self.schedule.decay_start <= self.step < self.total_steps)
        if not c.fill_time or not (self.state.get("filling") or cooling):
            return
        window = self._fill_window
        window.append((self.step, self.seconds()))
        while len(window) > FILL_MIN_STEPS + 1 and (
                window[-1][1] - window[1][1] >= FILL_WINDOW * float(c.max_seconds or 0.0)):
            window.popleft()
        end = 0
        (s0, t0), (s1, t1) = self._fill_window[0], self._fill_window[-1]
        if self.ctx.is_main and s1 - s0 >= FILL_MIN_STEPS:
            per_step = (t1 - t0) / (s1 - s0)
            closing = (self._last_eval_s if self._last_eval_s is not None
                       else per_step * (c.eval_tokens or self.val.num_tokens)
                       / c.batch_tokens / 3) + self._last_save_s
            left = FILL_TARGET * float(c.max_seconds or 0.0) - t1 - closing
            steps = max(1, int(left / per_step))
            if self.state.get("filling"):
                if steps <= round(c.cooldown_frac * (self.step + steps)):
                    end = self.step + steps
            elif steps < FILL_SHORTEN * ((self.total_steps or 0) - self.step):
                end = self.step + steps
        end = broadcast_int(end, self.ctx)
        if not end:
            return
        if self.state.get("filling"):
            self.schedule = replace(self.schedule, decay_start=self.step, decay_end=end,
                                    warmup_steps=min(self.schedule.warmup_steps, self.step))
        else:  # the same straight line down to the floor, from where it is now, by ``end``
            low = self.schedule.min_lr_ratio
            f = (self.schedule(self.step) - low) / (1.0 - low) if low < 1 else 0.0
            start = round((self.step - (1 - f) * end) / f) if f > 0 else self.step
            self.schedule = replace(self.schedule, decay_start=min(start, self.step),
                                    decay_end=end)
        self.total_steps, self.state["filling"] = end, False

    def _loop(self) -> tuple[str, str]:
        while (stop := self._stop_reason()) is None:
            self._fill_time()
            try:
                row = self._train_step()
            except OOM_ERRORS as e:
                return "oom", _oom_reason(e)
            except RuntimeError as e:
                if "out of memory" not in str(e):
                    raise
                return "oom", _oom_reason(e)
            diverged = self._divergence(row)
            if (self.step % self.cfg.log_every == 0 or diverged
                    or self.step == self.total_steps):
                code = self._call_stoppable("on_step", row)
                if code:
                    return code
            if diverged:
                return "diverged", diverged
            if self.cfg.eval_every and self.step % self.cfg.eval_every == 0:
                code = self._evaluate(final=self.step == self.total_steps)
                if code:
                    return code
            self._maybe_save()
        return stop

    def _train_step(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        stable = self.state.get("filling") and self.step >= self.schedule.warmup_steps
        lr = self.cfg.lr * (1.0 if stable else self.schedule(self.step))
        set_lr(self.optimizer, lr)
        loss_sum = torch.zeros((), device=self.ctx.device, dtype=torch.float32)
        for m in range(self.accum):
            x, y = self._micro_batch(self.step, m)
            sync_model = self.model if self.parallel == "fsdp" else self.train_model
            with grad_sync(sync_model, self.parallel, self.ctx, sync=m == self.accum - 1):
                with self._autocast():
                    _, loss = self.train_model(x, y)
                (loss / self.accum).backward()
            loss_sum += loss.detach().float()
        loss_t = all_reduce_mean(loss_sum / self.accum, self.ctx)
        clip = self.cfg.grad_clip if self.cfg.grad_clip > 0 else float("inf")
        grad_norm = to_full(torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip))
        loss_v, norm_v = float(loss_t), float(grad_norm)
        if math.isfinite(loss_v) and math.isfinite(norm_v):
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ctx.device.type == "cuda":
            torch.cuda.synchronize(self.ctx.device)
        if self._slowdown > 1.0:  # a simulated slower machine (tests of budget holding)
            time.sleep((self._slowdown - 1.0) * (time.perf_counter() - t0))
        dt = time.perf_counter() - t0
        self.step += 1
        s = self.state
        s["step"], s["tokens"] = self.step, s["tokens"] + self.cfg.batch_tokens
        s["flops"] = s["flops"] + self.flops_per_token * self.cfg.batch_tokens
        s["seconds"], s["train_loss"] = self.seconds(), loss_v
        return {"step": self.step, "tokens": s["tokens"], "flops": s["flops"],
                "seconds": s["seconds"], "lr": lr, "loss": loss_v, "grad_norm": norm_v,
                "tokens_per_s": self.cfg.batch_tokens / max(dt, 1e-9)}

    def _micro_batch(self, step: int, m: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Micro-batch ``m`` of this rank at ``step`` (see the module's data rule)."""
        j = self.ctx.rank * self.accum + m
        x, y = self.split.window_batch(step * self.accum * self.ctx.world_size + j,
                                       self.micro, self.cfg.seq_len, self.cfg.seed)
        dev = self.ctx.device
        return (torch.from_numpy(np.ascontiguousarray(x)).to(dev, non_blocking=True),
                torch.from_numpy(np.ascontiguousarray(y)).to(dev, non_blocking=True))

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.ctx.device.type, dtype=self.autocast_dtype)

    def _divergence(self, row: dict[str, Any]) -> str | None:
        loss, lo = row["loss"], self.state["min_loss"]
        if not math.isfinite(loss) or not math.isfinite(row["grad_norm"]):
            return f"non-finite loss {loss} / grad norm {row['grad_norm']} at step {row['step']}"
        f = self.cfg.spike_factor
        if f and lo is not None and loss > f * lo:
            return (f"loss spike at step {row['step']}: {loss:.4g} > spike_factor {f} x lowest "
                    f"loss {lo:.4g}")
        self.state["min_loss"] = loss if lo is None else min(lo, loss)
        return None

    def _evaluate(self, final: bool = True) -> tuple[str, str] | None:
        # FSDP gathers weights in every forward, so all ranks must run the same batches: each
        # evaluates the whole (small, eval_tokens-capped) val sample rather than a share of it
        split_eval = self.parallel != "fsdp"
        t0 = time.perf_counter()
        n = self.cfg.eval_tokens if final else (self.cfg.interim_eval_tokens
                                                or self.cfg.eval_tokens)
        self._last_eval_full = n == self.cfg.eval_tokens
        res = evaluate_lm(self.model, self.val, seq_len=self.cfg.seq_len,
                          batch_size=self.micro, max_tokens=n or None,
                          autocast_dtype=self.autocast_dtype,
                          rank=self.ctx.rank if split_eval else 0,
                          world_size=self.ctx.world_size if split_eval else 1)
        if not split_eval:  # the root unit stays gathered after a forward without backward
            self.model.reshard()  # type: ignore[operator]
        self._eval_s += time.perf_counter() - t0
        if self._last_eval_full:  # what the closing evaluation will cost
            self._last_eval_s = time.perf_counter() - t0
        s = self.state
        row = {"step": self.step, "tokens": s["tokens"], "flops": s["flops"],
               "seconds": self.seconds(), "val_loss": res["loss"], "val_bpb": res["bpb"],
               "val_perplexity": res["perplexity"], "val_tokens": res["tokens"],
               "val_loss_se": res["loss_se"], "eval_seconds": time.perf_counter() - t0}
        s["last_eval_step"], s["last_eval"] = self.step, row
        return self._call_stoppable("on_eval", row)

    def _maybe_save(self) -> None:
        c, s = self.cfg, self.state
        if c.checkpoint_every and self.step % c.checkpoint_every == 0:
            self.save(self.out_dir / "checkpoint")
        for t in c.snapshot_tokens:
            if s["tokens"] - c.batch_tokens < t <= s["tokens"]:
                self.save(self.out_dir / "snapshots" / str(t))

    def save(self, path: Path) -> None:
        """Write a resumable checkpoint of the current state (rank 0 writes; under FSDP every
        rank takes part in gathering the shards)."""
        if self.parallel != "fsdp" and not self.ctx.is_main:
            return
        t0 = time.perf_counter()
        model_sd, optim_sd = ckpt.full_state(self.model, self.optimizer)
        if self.ctx.is_main:
            state = {**self.state, "seconds": self.seconds(), "config_hash": self.config_hash(),
                     "schedule": self.schedule.to_dict(), "total_steps": self.total_steps,
                     "micro_batch": self.micro, "world_size": self.ctx.world_size,
                     "parallel": self.parallel}
            ckpt.write_checkpoint(path, model_sd, optim_sd, state)
        self._save_s += time.perf_counter() - t0
        self._last_save_s = time.perf_counter() - t0

    def _finish(self, status: str, reason: str) -> TrainResult:
        s = self.state
        if status not in ("diverged", "oom"):
            # a closing full evaluation, unless a pruner stopped the run at its interim one: its
            # value is the pruner's and nothing reads another (it cost a pruned search trial a
            # quarter of its time)
            if (s["last_eval_step"] != self.step or not self._last_eval_full) and self.step > 0 \
                    and status != "pruned":
                code = self._evaluate()  # a pruner may still stop here; the run is over anyway
                if code and status == "completed":
                    status, reason = code
            self.save(self.out_dir / "checkpoint")
        ev = s["last_eval"] or {}
        seconds = self.seconds()
        result = TrainResult(
            status=status, reason=reason, steps=self.step, tokens=int(s["tokens"]),
            flops=float(s["flops"]), seconds=seconds, train_loss=s["train_loss"],
            val_loss=ev.get("val_loss"), val_bpb=ev.get("val_bpb"), out_dir=str(self.out_dir),
            session_flops=float(s["flops"]) - self._flops0,
            session_seconds=seconds - self._seconds0, session_eval_seconds=self._eval_s,
            session_checkpoint_seconds=self._save_s, startup_seconds=self._startup_s)
        self._call("on_train_end", result)
        return result

    # -- callbacks --------------------------------------------------------------------------
    def _call(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            fn = getattr(cb, hook, None)
            if fn is not None:
                fn(self, *args)

    def _call_stoppable(self, hook: str, row: dict[str, Any]) -> tuple[str, str] | None:
        """Run a hook; a :class:`StopTraining` on rank 0 stops every rank."""
        stop: StopTraining | None = None
        try:
            self._call(hook, row)
        except StopTraining as e:
            stop = e
        code = {None: 0, "pruned": 1, "stopped": 2}[stop.status if stop else None]
        code = broadcast_int(code, self.ctx)
        if not code:
            return None
        status = _STOP_CODES[code] or "stopped"
        return status, (stop.reason if stop else f"{status} on rank 0")


def set_activation_checkpointing(model: nn.Module, on: bool) -> None:
    """Switch per-block recomputation on every GPT inside ``model`` (a task head's trunk
    too); a model without blocks to checkpoint cannot honour ``on`` and is refused."""
    found = [m for m in model.modules() if hasattr(m, "activation_checkpointing")]
    if on and not found:
        raise UserError(f"activation_checkpointing: {type(model).__name__} has no GPT blocks "
                        "to checkpoint; set activation_checkpointing = false")
    for m in found:
        m.activation_checkpointing = on


def _oom_reason(e: BaseException) -> str:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return f"out of memory: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
