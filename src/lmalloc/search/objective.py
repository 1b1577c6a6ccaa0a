"""The search objective: one trial trains one proxy model with the one trainer.

A trial's parameters (free-form names from the :class:`~lmalloc.search.space.SearchSpace`) are
mapped onto the model (``GPTConfig`` fields, or ``params`` = a target N turned into a shape by
:func:`~lmalloc.model.shape.shape_for`) and the trainer (``TrainConfig`` fields; ``warmup_frac``
is an alias of ``warmup``). Before a trial runs, the cost package predicts its peak memory and
wall time; a configuration over a limit is *infeasible*: it is recorded with its reason and its
constraint values (Optuna's ``Trial.set_constraint``, read by TPE, GP and NSGA-II) and never
trained.

Multi-fidelity: the trainer reports validation bits per byte at every evaluation with the
training tokens as the step, and an Optuna pruner (ASHA or Hyperband) may stop the trial.
Partial runs are comparable because every trial of a study has the same token budget: at a
rung, all trials are at the same fraction of their own schedule, and the pruner compares ranks
at the same rung only. (The WSD alternative — a short cooldown branch at each rung — costs
extra compute per rung; the ladder uses it, the search does not.)

Failures never stop the search: divergence (NaN, spikes), out of memory and crashes end the
trial as FAIL with the reason in its user attributes; the partial cost is charged to the ledger.
"""

from __future__ import annotations

import dataclasses
import math
import time
import traceback
from pathlib import Path
from typing import Any

import optuna

from lmalloc.errors import UserError
from lmalloc.rundir import OutsideRunError, RunDir
from lmalloc.search.space import SearchSpace
from lmalloc.train.callbacks import Callback, StopTraining

STUDY_NAME = "explore"
"""A run's search study; another study in the same run keeps its trials in trials/NAME-N."""

TRAIN_ALIASES = {"warmup_frac": "warmup"}
SECOND_OBJECTIVES = ("flops", "memory", "params")
CONSTRAINT_ATTR = "constraint"


class TrialFailed(Exception):
    """A trial ended without a usable value (diverged, out of memory, crashed)."""


def _model_fields() -> set[str]:
    from lmalloc.model.config import GPTConfig

    return {f.name for f in dataclasses.fields(GPTConfig)} | {"params"}


def _train_fields() -> set[str]:
    from lmalloc.train.config import TrainConfig

    return {f.name for f in dataclasses.fields(TrainConfig)} | set(TRAIN_ALIASES)


def check_space_names(space: SearchSpace) -> None:
    """Every parameter must name a model or trainer field: a typo is an error, not a no-op."""
    known = _model_fields() | _train_fields()
    unknown = sorted(set(space.names) - known)
    if unknown:
        raise UserError(
            f"search space parameter(s) {unknown} are neither model nor trainer fields; "
            f"allowed: {', '.join(sorted(known))}"
        )


def configs_for(
    params: dict[str, Any], base_model: dict[str, Any], base_train: Any, vocab_size: int
) -> tuple[Any, Any]:
    """The ``(GPTConfig, TrainConfig)`` of one trial: the base recipe with ``params`` applied.

    Width changes keep the base head size (``n_head = d_model / head_dim``); a batch change
    keeps the micro-batch when it divides, else uses the whole batch per forward pass.
    """
    from lmalloc.model.config import GPTConfig
    from lmalloc.model.shape import shape_for

    model_fields = _model_fields()
    model = {**base_model, **{k: v for k, v in params.items() if k in model_fields}}
    train = {TRAIN_ALIASES.get(k, k): v for k, v in params.items() if k not in model_fields}
    seq_len = int(train.get("seq_len", base_train.seq_len))
    model.setdefault("seq_len", seq_len)
    if "params" in model:
        shape = shape_for(float(model.pop("params")), vocab_size=vocab_size, seq_len=seq_len)
        model.update(n_layer=shape.n_layer, n_head=shape.n_head, d_model=shape.d_model)
    elif "d_model" in params and "n_head" not in params:
        head_dim = max(1, int(base_model["d_model"]) // int(base_model["n_head"]))
        model["n_head"] = max(1, int(model["d_model"]) // head_dim)
        model.pop("n_kv_head", None)
    model_cfg = GPTConfig(vocab_size=vocab_size, **model)
    batch = int(train.get("batch_tokens", base_train.batch_tokens))
    sequences = max(1, batch // seq_len)
    micro = int(train.get("micro_batch", base_train.micro_batch))
    if sequences % micro:
        train["micro_batch"] = sequences
    return model_cfg, base_train.replace(**train)


@dataclasses.dataclass
class Limits:
    """What a single trial may use; ``None`` = unlimited."""

    memory_bytes: float | None = None
    trial_seconds: float | None = None
    hardware: Any = None  # a cost.HardwareProfile; None = this machine's default


def violations(model_cfg: Any, train_cfg: Any, limits: Limits) -> tuple[list[float], str]:
    """Predicted constraint violations (relative excess, > 0 = infeasible) and the reason."""
    from lmalloc.cost.hardware import default_hardware
    from lmalloc.cost.memory import estimate_memory
    from lmalloc.cost.time_model import predict_time

    hw = limits.hardware or default_hardware()
    precision = "fp32" if train_cfg.precision in ("auto", "fp32") else train_cfg.precision
    mem = estimate_memory(model_cfg, train_cfg.micro_batch, train_cfg.seq_len, precision)
    tokens = train_cfg.max_tokens or (train_cfg.max_steps or 0) * train_cfg.batch_tokens
    secs = predict_time(
        model_cfg, max(tokens, train_cfg.batch_tokens), hw, batch_tokens=train_cfg.batch_tokens,
        micro_batch=train_cfg.micro_batch, seq_len=train_cfg.seq_len, precision=precision,
        eval_every=train_cfg.eval_every, eval_tokens=train_cfg.eval_tokens,
    ).seconds
    out, reasons = [0.0, 0.0], []
    if limits.memory_bytes is not None and mem.peak > limits.memory_bytes:
        out[0] = mem.peak / limits.memory_bytes - 1.0
        reasons.append(
            f"predicted peak memory {mem.peak / 2**30:.2f} GiB > limit "
            f"{limits.memory_bytes / 2**30:.2f} GiB"
        )
    if limits.trial_seconds is not None and secs > limits.trial_seconds:
        out[1] = secs / limits.trial_seconds - 1.0
        reasons.append(f"predicted time {secs:.0f} s > limit {limits.trial_seconds:.0f} s")
    return out, "; ".join(reasons)


def _set_constraints(trial: optuna.Trial, cons: list[float]) -> None:
    trial.set_user_attr(CONSTRAINT_ATTR, cons)
    trial.set_constraint("memory", cons[0])
    trial.set_constraint("time", cons[1])


class _ReportToPruner(Callback):
    """Trainer callback: report val bits per byte at each evaluation, stop when pruned.

    One objective: Optuna's pruner decides (``trial.report`` / ``should_prune``). Two
    objectives, where Optuna cannot prune: with ``pareto`` on, the rule of
    :mod:`lmalloc.search.pareto_prune` decides at its rungs, from what the other trials of the
    study recorded there; with it off the trial trains to the end.
    """

    def __init__(self, trial: optuna.Trial, metric: str, pareto: bool = False,
                 cost: float | None = None, max_tokens: int = 0) -> None:
        from lmalloc.search.pareto_prune import rung_tokens

        self.trial, self.metric = trial, metric
        self.single = len(trial.study.directions) == 1
        self.cost = cost
        self.rungs = rung_tokens(max_tokens) if pareto and not self.single and max_tokens else []
        self.recorded: dict[str, float] = {}
        self.reported: set[int] = set()

    def on_eval(self, trainer: Any, row: dict[str, Any]) -> None:
        value = row.get(self.metric)
        if value is None or not math.isfinite(value):
            return
        tokens = int(row["tokens"])
        if self.single:
            if tokens in self.reported:  # the run's closing evaluation at its last interim
                return                   # step: Optuna would ignore it, with a warning
            self.reported.add(tokens)
            self.trial.report(float(value), step=tokens)
            if self.trial.should_prune():
                raise StopTraining("pruned", f"pruned at {tokens} tokens ({value:.4f})")
        elif self._pareto_prune(tokens, float(value)):
            raise StopTraining("pruned", f"pruned at {tokens} tokens ({value:.4f}): dominated "
                                         "at equal fidelity (Pareto rung)")

    def _pareto_prune(self, tokens: int, value: float) -> bool:
        from lmalloc.search.pareto_prune import COST_ATTR, RUNG_ATTR, should_prune

        new = [str(r) for r in self.rungs if r <= tokens and str(r) not in self.recorded]
        if not new or self.cost is None:
            return False
        for r in new:
            self.recorded[r] = value
        self.trial.set_user_attr(RUNG_ATTR, dict(self.recorded))
        others = [t for t in self.trial.study.get_trials(deepcopy=False)
                  if t.number != self.trial.number and COST_ATTR in t.user_attrs]
        for r in new:
            peers = [(t.user_attrs[RUNG_ATTR][r], t.user_attrs[COST_ATTR]) for t in others
                     if r in t.user_attrs.get(RUNG_ATTR, {})]
            if should_prune((value, self.cost), peers):
                return True
        return False


def second_value(kind: str, model_cfg: Any, train_cfg: Any) -> float:
    """The second objective of a configuration, known before training: ``flops`` (of the
    whole token budget), ``memory`` (predicted peak bytes) or ``params``."""
    from lmalloc.model.accounting import param_count, train_flops_per_token

    if kind == "flops":
        tokens = train_cfg.max_tokens or (train_cfg.max_steps or 0) * train_cfg.batch_tokens
        return float(train_flops_per_token(model_cfg, train_cfg.seq_len) * tokens)
    if kind == "memory":
        from lmalloc.cost.memory import estimate_memory

        return float(estimate_memory(model_cfg, train_cfg.micro_batch, train_cfg.seq_len).peak)
    return float(param_count(model_cfg))


class TrialObjective:
    """``objective(trial) -> value`` for :meth:`optuna.Study.optimize`.

    Args:
        space: the search space; data_dir: prepared shards; run: the run directory (trials
            write to ``trials/<n>/`` and charge the ledger's ``stage``).
        base_model: GPTConfig keyword arguments without ``vocab_size``; base_train: the
            TrainConfig every trial starts from (its token budget is the fidelity's maximum).
        metric: ``val_bpb`` (default) or ``val_loss``.
        limits: memory and time limits checked before a trial runs.
        second_objective: ``None``, ``"flops"``, ``"memory"`` or ``"params"`` for a Pareto
            search.
        pareto_pruning: prune a Pareto search's trials by :mod:`lmalloc.search.pareto_prune`.
    """

    def __init__(
        self, space: SearchSpace, data_dir: str | Path, run: RunDir, base_model: dict[str, Any],
        base_train: Any, metric: str = "val_bpb", limits: Limits | None = None,
        second_objective: str | None = None, stage: str = "explore",
        pareto_pruning: bool = False,
    ) -> None:
        from lmalloc.data.shards import TokenData

        check_space_names(space)
        if metric not in ("val_bpb", "val_loss"):
            raise UserError(f"invalid metric = {metric!r}: expected val_bpb or val_loss")
        if second_objective not in (None, *SECOND_OBJECTIVES):
            raise UserError(f"invalid second objective = {second_objective!r}: expected "
                            f"{', '.join(SECOND_OBJECTIVES)}")
        self.space, self.data_dir, self.run = space, Path(data_dir), run
        self.base_model, self.base_train, self.metric = base_model, base_train, metric
        self.limits = limits or Limits()
        self.second, self.stage = second_objective, stage
        self.pareto_pruning = pareto_pruning
        self.vocab_size = TokenData(data_dir).vocab_size

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        params = self.space.suggest(trial)
        try:
            model_cfg, train_cfg = configs_for(
                params, self.base_model, self.base_train, self.vocab_size
            )
        except UserError as e:
            self._infeasible(trial, [1.0, 0.0], f"contradictory configuration: {e}")
        cons, reason = violations(model_cfg, train_cfg, self.limits)
        if reason:
            self._infeasible(trial, cons, reason)
        _set_constraints(trial, cons)
        trial.set_user_attr("model", model_cfg.to_dict())
        return self._train(trial, model_cfg, train_cfg)

    def _infeasible(self, trial: optuna.Trial, cons: list[float], reason: str) -> None:
        _set_constraints(trial, cons)
        trial.set_user_attr("status", "infeasible")
        trial.set_user_attr("reason", reason)
        raise optuna.TrialPruned(f"infeasible: {reason}")

    def _train(
        self, trial: optuna.Trial, model_cfg: Any, train_cfg: Any
    ) -> float | tuple[float, float]:
        from lmalloc.train.trainer import Trainer

        pruned = self.pareto_pruning or not isinstance(trial.study.pruner,
                                                       optuna.pruners.NopPruner)
        if train_cfg.eval_every == 0 and pruned:  # the pruner needs intermediate reports
            steps = (train_cfg.max_tokens or 0) // train_cfg.batch_tokens
            train_cfg = train_cfg.replace(eval_every=max(1, steps // 8) if steps else 0)
        name = trial.study.study_name
        out = self.run.trial(trial.number, None if name == STUDY_NAME else name)
        cost = None
        if self.second:
            from lmalloc.search.pareto_prune import COST_ATTR

            cost = second_value(self.second, model_cfg, train_cfg)
            trial.set_user_attr(COST_ATTR, cost)
        budget = train_cfg.max_tokens or (train_cfg.max_steps or 0) * train_cfg.batch_tokens
        reporter = _ReportToPruner(trial, self.metric, self.pareto_pruning, cost, budget)
        t0 = time.perf_counter()
        try:
            result = Trainer(
                model_cfg, train_cfg, self.data_dir, out,
                callbacks=[reporter],
                resume=False,
            ).fit()
        except OutsideRunError:  # the run folder's fault, not the trial's: stop the search
            raise
        except Exception as e:  # a crash fails this trial only; the search goes on
            # the trainer turns an OOM in a training step into status "oom"; one elsewhere
            # (building the model, an evaluation) arrives here and is recorded as oom too
            status = "oom" if _is_oom(e) else "crashed"
            self.run.charge(self.stage, 0.0, time.perf_counter() - t0, trial=trial.number,
                            status=status)
            trial.set_user_attr("status", status)
            trial.set_user_attr("reason", f"{type(e).__name__}: {e}")
            trial.set_user_attr("traceback", traceback.format_exc(limit=8))
            raise TrialFailed(f"{status}: {type(e).__name__}: {e}") from e
        status, reason = result.status, result.reason
        value = getattr(result, self.metric)
        if status not in ("diverged", "oom", "pruned", "time_limit") and (
                value is None or not math.isfinite(value)):
            # trained without a usable measurement (e.g. a NaN validation loss): say so,
            # rather than a FAIL whose status reads "completed"
            status = "no_value" if value is None else "diverged"
            reason = (f"{'non-finite ' if value is not None else ''}{self.metric} = {value} "
                      f"after {result.steps} steps ({result.reason})")
        self.run.charge(self.stage, result.session_flops, **result.ledger(),
                        trial=trial.number, status=status)
        for key in ("tokens", "flops", "seconds", "val_loss", "val_bpb"):
            trial.set_user_attr(key, getattr(result, key))
        trial.set_user_attr("status", status)
        trial.set_user_attr("reason", reason)
        if status in ("pruned", "time_limit"):
            raise optuna.TrialPruned(reason)
        if status in ("diverged", "oom", "no_value"):
            raise TrialFailed(f"{status}: {reason}")
        assert value is not None  # no_value otherwise
        if self.second == "flops":
            return float(value), float(result.flops)
        if self.second is not None:
            return float(value), second_value(self.second, model_cfg, train_cfg)
        return float(value)


def _is_oom(e: BaseException) -> bool:
    """An out-of-memory error from torch (CUDA, MPS or the CPU allocator's RuntimeError)."""
    import torch

    oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    return isinstance(e, (oom, MemoryError)) or (
        isinstance(e, RuntimeError) and "out of memory" in str(e).lower())
