"""The training configuration, its validation, and recipes (``configs/*.toml``).

:class:`TrainConfig` is validated at construction: a bad value raises :class:`UserError`
naming the field, the value and what is allowed. It is torch-free so search spaces and the
planner can build and check configs without importing torch.

**The batch rule.** ``batch_tokens`` is the global batch per optimizer step. One forward pass
reads ``micro_batch`` sequences of ``seq_len`` tokens; the number of micro-batches (gradient
accumulation) is ``batch_tokens / (micro_batch * seq_len * world_size)`` and must be a whole
number. When a rank's share of the batch is smaller than ``micro_batch`` sequences the
micro-batch shrinks to that share (``batch_tokens // (seq_len * world_size)``). Nothing is
rounded silently: a batch that does not divide is a :class:`UserError` that names the nearest
valid values;
:func:`round_batch_tokens` rounds for callers (the search) that want rounding.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmalloc.errors import UserError, invalid

SCHEDULES = ("cosine", "wsd", "constant")
PRECISIONS = ("fp32", "bf16", "auto")
DEVICES = ("auto", "cpu", "cuda")
STOP_FIELDS = ("max_tokens", "max_steps", "max_flops", "max_seconds")
# Fields that may change between a run and its resumption: they do not change the math.
RESUMABLE_FIELDS = ("max_seconds", "checkpoint_every", "device", "activation_checkpointing",
                    "interim_eval_tokens", "fill_time")


@dataclass(frozen=True)
class TrainConfig:
    """How to train: optimizer, schedule, batch, stop conditions, precision, checkpoints.

    Attributes:
        lr: peak (base) learning rate; each optimizer group multiplies it by its own factor.
        min_lr_ratio: the schedule decays to ``lr * min_lr_ratio``.
        schedule: ``cosine`` (warmup, cosine decay to the end), ``wsd`` (warmup, stable,
            linear cooldown over the last ``cooldown_frac`` of the run; branchable, see
            :mod:`lmalloc.train.schedules`) or ``constant`` (warmup, then flat).
        warmup: linear warmup length: a fraction of the run when < 1, else tokens.
        cooldown_frac: WSD only: the fraction of the run spent cooling down (0 = stable only,
            for a run whose checkpoints are branched later).
        weight_decay, beta1, beta2, eps: AdamW.
        grad_clip: clip the global gradient norm to this (0 = no clipping).
        batch_tokens: global batch per optimizer step, in tokens (see the batch rule).
        micro_batch: sequences per forward pass.
        seq_len: tokens per sequence.
        max_tokens, max_steps, max_flops, max_seconds: stop conditions; any combination, at
            least one. The first one reached ends the run. The schedule's length comes from
            the token/step/FLOP limits (the smallest); a time limit cuts the schedule short.
        eval_every: evaluate on the val split every this many steps (0 = only at the end).
        eval_tokens: at most this many val tokens per evaluation (0 = the whole split).
        interim_eval_tokens: val tokens of the evaluations before the last (what a pruner
            compares), when fewer suffice (0 = ``eval_tokens``). Every evaluation reads the
            split from its start, so two runs are compared on the same tokens and the noise
            of their difference is far below that of either loss (measured on WikiText-2,
            2 x 64: 0.05 against 0.39 nats per 128-token window; BENCHMARKS.md).
        seed: initialisation and data order.
        precision: ``fp32``, ``bf16`` (autocast) or ``auto`` (bf16 on CUDA when supported,
            fp32 otherwise).
        compile: ``torch.compile`` the model; ``None`` = on for CUDA, off on CPU.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        checkpoint_every: write a resumable checkpoint every this many steps (0 = only at
            the end).
        spike_factor: the run has diverged when a step's loss exceeds this times the lowest
            loss so far (0 = off). NaN or infinite loss always counts as divergence.
        snapshot_tokens: token counts at which to keep a permanent checkpoint under
            ``out_dir/snapshots/<tokens>/`` (e.g. WSD stable-phase points to branch from).
        log_every: write a metrics row every this many steps.
        activation_checkpointing: recompute each transformer block's forward in backward
            (``torch.utils.checkpoint``, non-reentrant): only block inputs stay saved, for
            about 1/3 more compute; the losses are unchanged, so a run may resume with it
            switched. :func:`lmalloc.cost.memory.recommend` turns it on when nothing else fits.
        fill_time: WSD with ``max_seconds`` and ``max_tokens``: the run ends at its time
            limit, not at its planned length. The stable phase goes on (or stops early) until
            the time left, at the step time measured so far, fits a cooldown of
            ``cooldown_frac`` of the run, which then starts: a run planned with a cautious
            time model neither idles the rest of its time nor is cut before it cooled down.
    """

    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    schedule: str = "cosine"
    warmup: float = 0.05
    cooldown_frac: float = 0.2
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0
    batch_tokens: int = 8192
    micro_batch: int = 8
    seq_len: int = 128
    max_tokens: int | None = None
    max_steps: int | None = None
    max_flops: float | None = None
    max_seconds: float | None = None
    eval_every: int = 0
    eval_tokens: int = 65536
    interim_eval_tokens: int = 0
    seed: int = 0
    precision: str = "auto"
    compile: bool | None = None
    device: str = "auto"
    checkpoint_every: int = 0
    spike_factor: float = 4.0
    snapshot_tokens: tuple[int, ...] = field(default_factory=tuple)
    log_every: int = 1
    activation_checkpointing: bool = False
    fill_time: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "snapshot_tokens", tuple(int(t) for t in self.snapshot_tokens))
        _check_numbers(self)
        _check_choices(self)
        _check_stops(self)
        self.grad_accum(1)  # raises on a batch that does not divide

    # -- derived values ---------------------------------------------------------------------
    def micro_batch_for(self, world_size: int = 1) -> int:
        """Sequences per forward pass after the batch rule (never more than a rank's share)."""
        return max(1, min(self.micro_batch, self.batch_tokens // (self.seq_len * world_size)))

    def grad_accum(self, world_size: int = 1) -> int:
        """Micro-batches per rank per step; raises :class:`UserError` when it is not whole."""
        micro = self.micro_batch_for(world_size)
        per_pass = micro * self.seq_len * world_size
        if self.batch_tokens % per_pass:
            lo = (self.batch_tokens // per_pass) * per_pass
            hi = lo + per_pass
            raise UserError(
                f"invalid batch_tokens = {self.batch_tokens}: it must be a multiple of "
                f"micro_batch * seq_len * world_size = {micro} * "
                f"{self.seq_len} * {world_size} = {per_pass}; nearest valid values: "
                f"{', '.join(str(v) for v in (lo, hi) if v > 0)}"
            )
        return self.batch_tokens // per_pass

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["snapshot_tokens"] = list(self.snapshot_tokens)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a mapping (TOML table, JSON); unknown keys are a :class:`UserError`."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise UserError(
                f"unknown train setting(s) {unknown}; allowed: {', '.join(sorted(names))}"
            )
        return cls(**d)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    def resume_hash(self) -> str:
        """Hash of the fields that define the run's math (not :data:`RESUMABLE_FIELDS`)."""
        d = {k: v for k, v in self.to_dict().items() if k not in RESUMABLE_FIELDS}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _positive(
    cfg: TrainConfig, name: str, *, zero_ok: bool = False, integer: bool = False
) -> None:
    v = getattr(cfg, name)
    kind = "integer" if integer else "number"
    bad_type = not isinstance(v, (int, float)) or isinstance(v, bool)
    if integer and not bad_type and not float(v).is_integer():
        bad_type = True
    if bad_type or not math.isfinite(v) or v < 0 or (v == 0 and not zero_ok):
        raise invalid(name, v, f"a {'non-negative' if zero_ok else 'positive'} {kind}")


def _check_numbers(cfg: TrainConfig) -> None:
    for name in ("lr", "eps", "batch_tokens", "micro_batch", "seq_len", "log_every"):
        _positive(cfg, name, integer=name in ("batch_tokens", "micro_batch", "seq_len",
                                                "log_every"))
    for name in ("warmup", "weight_decay", "grad_clip", "spike_factor", "eval_tokens",
                 "interim_eval_tokens", "eval_every", "checkpoint_every", "seed"):
        _positive(cfg, name, zero_ok=True, integer=name in ("eval_every", "checkpoint_every",
                                                              "seed", "eval_tokens",
                                                              "interim_eval_tokens"))
    for name in ("min_lr_ratio", "cooldown_frac"):
        v = getattr(cfg, name)
        if not isinstance(v, (int, float)) or not 0 <= v <= 1:
            raise invalid(name, v, "a number in [0, 1]")
    for name in ("beta1", "beta2"):
        v = getattr(cfg, name)
        if not isinstance(v, (int, float)) or not 0 <= v < 1:
            raise invalid(name, v, "a number in [0, 1)")
    if 0 < cfg.spike_factor <= 1:
        raise invalid("spike_factor", cfg.spike_factor, "0 (off) or a number > 1")
    if cfg.batch_tokens < cfg.seq_len:
        raise UserError(
            f"invalid batch_tokens = {cfg.batch_tokens}: smaller than one sequence "
            f"(seq_len = {cfg.seq_len}); use batch_tokens >= seq_len"
        )
    if any(t <= 0 for t in cfg.snapshot_tokens):
        raise invalid("snapshot_tokens", list(cfg.snapshot_tokens), "positive token counts")


def _check_choices(cfg: TrainConfig) -> None:
    if cfg.schedule not in SCHEDULES:
        raise invalid("schedule", cfg.schedule, f"one of {', '.join(SCHEDULES)}")
    if cfg.precision not in PRECISIONS:
        raise invalid("precision", cfg.precision, f"one of {', '.join(PRECISIONS)}")
    if cfg.device not in DEVICES:
        raise invalid("device", cfg.device, f"one of {', '.join(DEVICES)}")
    if cfg.compile not in (None, True, False):
        raise invalid("compile", cfg.compile, "true, false or unset (auto)")
    if cfg.activation_checkpointing not in (True, False):
        raise invalid("activation_checkpointing", cfg.activation_checkpointing, "true or false")


def _check_stops(cfg: TrainConfig) -> None:
    if all(getattr(cfg, f) is None for f in STOP_FIELDS):
        raise UserError(
            f"no stop condition: set at least one of {', '.join(STOP_FIELDS)}"
        )
    if cfg.fill_time and (cfg.schedule != "wsd" or None in (cfg.max_seconds, cfg.max_tokens)
                          or cfg.max_steps is not None or cfg.max_flops is not None):
        raise UserError("fill_time needs schedule = 'wsd', max_seconds and max_tokens, and "
                        "neither max_steps nor max_flops (the time limit sets the length)")
    for name in STOP_FIELDS:
        if getattr(cfg, name) is not None:
            _positive(cfg, name, integer=name in ("max_tokens", "max_steps"))


def round_batch_tokens(batch_tokens: float, seq_len: int, micro_batch: int,
                       world_size: int = 1) -> int:
    """The valid ``batch_tokens`` nearest to ``batch_tokens`` under the batch rule.

    >>> round_batch_tokens(5000, seq_len=64, micro_batch=8)
    5120
    """
    per_rank = max(1, round(batch_tokens / (seq_len * world_size)))  # sequences per rank
    if per_rank < micro_batch:
        return per_rank * seq_len * world_size
    return round(per_rank / micro_batch) * micro_batch * seq_len * world_size


def load_recipe(path: str | Path) -> tuple[dict[str, Any], TrainConfig]:
    """Read a recipe TOML: ``[model]`` (GPTConfig keyword arguments without ``vocab_size``,
    which comes from the data) and ``[train]`` (a :class:`TrainConfig`)."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"recipe not found: {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"recipe {path} is not valid TOML: {e}") from None
    unknown = sorted(set(doc) - {"model", "train"})
    if unknown:
        raise UserError(f"recipe {path}: unknown table(s) {unknown}; allowed: [model], [train]")
    model = dict(doc.get("model", {}))
    if "vocab_size" in model:
        raise UserError(f"recipe {path}: [model] vocab_size comes from the data; remove it")
    try:
        train = TrainConfig.from_dict(doc.get("train", {}))
    except UserError as e:
        raise UserError(f"recipe {path}: {e}") from None
    return model, train


def batch_layout(cfg: TrainConfig, world_size: int, data_micro: int | None = None,
                 data_world: int | None = None) -> tuple[int, int]:
    """``(micro_batch, grad_accum)`` of each rank on ``world_size`` processes.

    A fresh run follows the batch rule (:mod:`lmalloc.train.config`). A resumed run keeps
    ``data_micro``, the micro-batch size its checkpoint's data order was drawn with (the
    trainer's batches are a function of that size), so the global batches after the resume
    are the ones the run would have read anyway; when a rank's share of the global batch is
    not a whole number of such micro-batches that is impossible, and a :class:`UserError`
    says which process counts work.
    """
    if data_micro is None:
        return cfg.micro_batch_for(world_size), cfg.grad_accum(world_size)
    seqs = cfg.batch_tokens // cfg.seq_len  # the global batch in sequences
    if seqs % world_size == 0 and (seqs // world_size) % data_micro == 0:
        return data_micro, seqs // world_size // data_micro
    ok = [w for w in range(1, seqs + 1) if seqs % w == 0 and (seqs // w) % data_micro == 0]
    raise UserError(
        f"cannot resume on {world_size} processes: the checkpoint was written by "
        f"{data_world or '?'} process(es) reading micro-batches of {data_micro} sequences, and "
        f"the global batch of {seqs} sequences does not split into whole micro-batches of "
        f"{data_micro} on {world_size} processes; resume with a process count in {ok} (or "
        "start over with --no-resume)")
