"""The ``compress`` stage: optionally prune (and recover), measure per-layer sensitivities
with the quantization method that will be used, allocate formats under the deployment budget,
quantize, evaluate with the same code as the original, and write ``RUN/compressed/``."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lmalloc.compress.allocate import (
    KLDivergence,
    Problem,
    Quantizer,
    check_budget,
    layer_nbytes,
    measure_sensitivity,
    pareto,
    proxy_sensitivity,
    rtn_quantizer,
    solve_greedy,
    solve_milp,
    spearman,
)
from lmalloc.compress.gptq import METHODS, collect_hessians, gptq_linear, gptq_quantize_model
from lmalloc.compress.prune import PruneSpec, prune_model, sparsity, structure_of
from lmalloc.compress.quantize import (
    KEEP,
    TIED,
    QuantFormat,
    quantizable_layers,
    quantize_model,
)
from lmalloc.compress.quantize import size_bytes as model_size
from lmalloc.errors import invalid

SENSITIVITY = ("kl", "loss")


@dataclass(frozen=True)
class CompressSettings:
    """What ``lmalloc compress`` does besides the budget (recorded in the result).

    Attributes:
        bits, group_sizes: candidate formats are every (bits, group size) pair, plus ``keep``.
        method: ``rtn`` (round to nearest) or ``gptq`` (error-compensating, calibrated).
        sensitivity: ``kl`` (KL divergence from the original model's predictions) or ``loss``
            (the calibration loss increase; noisier).
        calib_tokens: train-split tokens for GPTQ Hessians, Wanda norms and (the next ones)
            sensitivity measurement; the validation split is never used to choose.
        prune: a :class:`PruneSpec` text (``2:4``, ``wanda:0.5``, ``heads:1``...) or None.
        recover_steps: fine-tuning steps after pruning (0: none).
        embedding: the tied embedding / output head is a layer the allocator chooses a format
            for (else it stays in its precision, a fixed cost).
    """

    bits: Sequence[int] = (8, 4, 3, 2)
    group_sizes: Sequence[int] = (64,)
    symmetric: bool = False
    method: str = "gptq"
    sensitivity: str = "kl"
    calib_tokens: int = 8192
    eval_tokens: int | None = None
    prune: str | None = None
    recover_steps: int = 0
    recover_lr: float = 1e-3
    embedding: bool = True
    damp: float = field(default=0.01)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise invalid("--method", self.method, f"one of {', '.join(METHODS)}")
        if self.sensitivity not in SENSITIVITY:
            raise invalid("--sensitivity", self.sensitivity, f"one of {', '.join(SENSITIVITY)}")
        if self.calib_tokens < 1:
            raise invalid("--calib-tokens", self.calib_tokens, "a positive integer")
        if self.recover_steps < 0 or (self.recover_steps and not self.prune):
            raise invalid("--recover-steps", self.recover_steps, "≥ 0, and only with --prune")
        for b in self.bits:
            for g in self.group_sizes:
                QuantFormat(b, g, self.symmetric)  # validates
        if self.prune is not None:
            PruneSpec.parse(self.prune)

    def formats(self) -> list[str]:
        names = [QuantFormat(b, g, self.symmetric).name for b in self.bits
                 for g in self.group_sizes]
        return [KEEP, *dict.fromkeys(names)]

    def to_dict(self) -> dict[str, Any]:
        return {"bits": list(self.bits), "group_sizes": list(self.group_sizes),
                "symmetric": self.symmetric, "method": self.method,
                "sensitivity": self.sensitivity, "calib_tokens": self.calib_tokens,
                "eval_tokens": self.eval_tokens, "prune": self.prune,
                "recover_steps": self.recover_steps, "recover_lr": self.recover_lr,
                "embedding": self.embedding, "damp": self.damp}


def build_problem(model: nn.Module, formats: Sequence[str], cost: np.ndarray,
                  tied: bool = False) -> Problem:
    """Bytes per (layer, format) and the fixed bytes of everything that is not a choice."""
    layers = quantizable_layers(model, tied)
    nbytes = np.array([[layer_nbytes(lin, f) for f in formats] for lin in layers.values()])
    keep_all = sum(layer_nbytes(lin, KEEP) for lin in layers.values())
    return Problem(list(layers), list(formats), cost, nbytes, model_size(model) - keep_all)


@dataclass
class Calibration:
    """Train-split batches: ``fit`` for Hessians/norms, ``score`` for sensitivities."""

    fit: list[torch.Tensor]
    score: list[torch.Tensor]
    score_targets: list[torch.Tensor]

    @classmethod
    def from_split(cls, split: Any, tokens: int, seq_len: int) -> Calibration:
        batch = max(1, min(8, tokens // seq_len))
        pairs = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in
                 split.sequential_batches(batch, seq_len, max_tokens=2 * tokens)]
        if len(pairs) < 2:
            raise invalid("--calib-tokens", tokens, f"enough for two batches of {batch} × "
                          f"{seq_len} tokens, and a train split that has them")
        half = len(pairs) // 2
        return cls([x for x, _ in pairs[:half]], [x for x, _ in pairs[half:]],
                   [y for _, y in pairs[half:]])


def make_quantizer(model: nn.Module, settings: CompressSettings, calib: Calibration,
                   masks: dict[str, torch.Tensor]) -> Quantizer:
    """Per-layer quantizer for sensitivity measurement: RTN, or GPTQ with each layer's
    Hessian from the (unquantized) model's own inputs."""
    if settings.method == "rtn":
        return rtn_quantizer
    hessians = collect_hessians(model, calib.fit)

    def quantize(name: str, lin: nn.Linear, fmt: QuantFormat) -> nn.Module:
        if name == TIED:  # see gptq_quantize_model
            return rtn_quantizer(name, lin, fmt)
        return gptq_linear(lin, hessians[name], fmt, settings.damp, masks.get(name))
    return quantize


def quantize_final(model: nn.Module, chosen: dict[str, str], settings: CompressSettings,
                   calib: Calibration, masks: dict[str, torch.Tensor]) -> nn.Module:
    if settings.method == "rtn":
        return quantize_model(model, chosen)
    return gptq_quantize_model(model, chosen, calib.fit, settings.damp, masks)


def _loss_fn(model: nn.Module, settings: CompressSettings, calib: Calibration) -> Any:
    if settings.sensitivity == "kl":
        return KLDivergence(model, calib.score)

    @torch.no_grad()
    def loss(m: nn.Module) -> float:
        pairs = zip(calib.score, calib.score_targets, strict=True)
        return float(np.mean([float(m(x, y)[1]) for x, y in pairs]))
    return loss


def choose_jointly(model: nn.Module, problem: Problem, budget: int, s: CompressSettings,
                   calib: Calibration, masks: dict[str, torch.Tensor], loss_fn: Any
                   ) -> tuple[str, nn.Module, dict[str, dict[str, Any]]]:
    """Quantize the MILP and greedy allocations and every uniform format that fits, measure
    each whole model (the same metric as the sensitivities, on the same calibration tokens)
    and keep the best: per-layer increases need not add up (layers interact, and GPTQ's later
    layers compensate earlier ones), so the joint measurement has the last word.

    Returns the winner's name, its quantized model and every candidate's record.
    """
    options = {"milp": solve_milp(problem, budget), "greedy": solve_greedy(problem, budget)}
    for j, fmt in enumerate(problem.formats):
        uniform = [j] * len(problem.layers)
        if fmt != KEEP and problem.total(uniform)[1] <= budget:
            options[f"uniform:{fmt}"] = uniform
    seen: dict[tuple[int, ...], str] = {}
    out: dict[str, dict[str, Any]] = {}
    best: tuple[float, str, nn.Module | None] = (float("inf"), "", None)
    for name, choice in options.items():
        key = tuple(choice)
        if key in seen:  # e.g. greedy = MILP: measured once
            out[name] = {**out[seen[key]], "same_as": seen[key]}
            continue
        seen[key] = name
        q = quantize_final(model, problem.as_formats(choice), s, calib, masks)
        measured = float(loss_fn(q))
        pred, used = problem.total(choice)
        out[name] = {"choice": choice, "predicted_increase": pred, "bytes": used,
                     "measured": measured}
        if measured < best[0]:
            best = (measured, name, q)
    assert best[2] is not None
    return best[1], best[2], out


def _prune(model: nn.Module, root: Path, settings: CompressSettings,
           calib: Calibration) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """Prune in place (and fine-tune when asked); the keep-masks and the recovery result."""
    if settings.prune is None:
        return {}, None
    masks = prune_model(model, PruneSpec.parse(settings.prune), calib.fit)
    if not settings.recover_steps:
        return masks, None
    from lmalloc.compress.recover import recover

    with tempfile.TemporaryDirectory(prefix="recover-", dir=root) as tmp:
        res = recover(model, model.cfg, root / "data", tmp, settings.recover_steps, masks,
                      lr=settings.recover_lr)
    return masks, res


def compress_run(run_dir: str | os.PathLike[str], budget_bytes: int,
                 settings: CompressSettings | None = None) -> dict[str, Any]:
    """Compress ``RUN/final`` to at most ``budget_bytes`` and write ``RUN/compressed/``
    (``model.safetensors`` and ``result.json``: formats, sizes, losses before and after,
    the settings, sensitivities, MILP and greedy, the predicted Pareto curve).

    Raises:
        UserError: no final model or data, a checkpoint that is not ours, a bad setting, or a
            budget below the smallest size the formats allow (the message gives that size).
    """
    from lmalloc.data.shards import TokenData
    from lmalloc.model.io import load_model
    from lmalloc.rundir import RunDir

    s = settings or CompressSettings()
    t0 = time.perf_counter()
    root = RunDir(run_dir).root  # its writes stay inside the run (rundir.confined)
    original, cfg = load_model(root / "final")
    data = TokenData(root / "data")
    calib = Calibration.from_split(data.split("train"), s.calib_tokens, cfg.seq_len)
    model = load_model(root / "final")[0]
    masks, recovery = _prune(model, root, s, calib)
    formats = s.formats()
    tied = s.embedding
    zeros = np.zeros((len(quantizable_layers(model, tied)), len(formats)))
    check_budget(build_problem(model, formats, zeros, tied), budget_bytes)  # before slow part
    loss_fn = _loss_fn(model, s, calib)
    base, measured = measure_sensitivity(model, formats, loss_fn,
                                         make_quantizer(model, s, calib, masks), tied)
    problem = build_problem(model, formats, np.maximum(measured, 0.0), tied)
    pick, qmodel, candidates = choose_jointly(model, problem, budget_bytes, s, calib, masks,
                                              loss_fn)
    choice = candidates[pick]["choice"]
    chosen = problem.as_formats(choice)
    result = _result(original, model, qmodel, problem, choice, budget_bytes, data, s, cfg)
    result["chosen_by"] = pick
    result["candidates"] = {k: {kk: vv for kk, vv in v.items() if kk != "choice"}
                            for k, v in candidates.items()}
    proxy = proxy_sensitivity(model, formats, calib.fit[0], tied)
    result.update({
        "recovery": recovery, "sparsity": sparsity(model), "structure": structure_of(model),
        "proxy_spearman": spearman(measured, proxy, formats),
        "sensitivity": {"formats": formats, "metric": s.sensitivity, "calib_base": base,
                        "measured": measured.tolist(), "proxy": proxy.tolist()},
        "seconds": time.perf_counter() - t0})
    _write(root, qmodel, chosen, result)
    return result


def _result(original: nn.Module, pruned: nn.Module, qmodel: nn.Module, problem: Problem,
            choice: list[int], budget: int, data: Any, s: CompressSettings,
            cfg: Any) -> dict[str, Any]:
    from lmalloc.evaluate.perplexity import evaluate_lm

    def ev(m: nn.Module) -> dict[str, Any]:
        return evaluate_lm(m, data.split("val"), seq_len=cfg.seq_len, batch_size=8,
                           max_tokens=s.eval_tokens)

    before, after = ev(original), ev(qmodel)
    greedy = solve_greedy(problem, budget)
    top = problem.min_bytes(), problem.total([0] * len(problem.layers))[1]
    return {
        "size_bytes": model_size(qmodel), "bpb": after["bpb"], "loss": after["loss"],
        "budget_bytes": int(budget), "formats": problem.as_formats(choice),
        "settings": s.to_dict(), "method": s.method, "prune": s.prune,
        "baseline_bpb": before["bpb"], "baseline_loss": before["loss"],
        "baseline_size_bytes": model_size(original), "min_size_bytes": top[0],
        "pruned_bpb": ev(pruned)["bpb"] if s.prune else None,
        "predicted_increase": problem.total(choice)[0],
        "greedy_predicted_increase": problem.total(greedy)[0],
        "greedy_formats": problem.as_formats(greedy),
        "pareto": pareto(problem, np.geomspace(top[0], top[1], 8).round().astype(int).tolist()),
    }


def _write(root: Path, qmodel: nn.Module, chosen: dict[str, str],
           result: dict[str, Any]) -> None:
    from lmalloc.compress.store import save_quantized
    from lmalloc.model.gpt import GPT
    from lmalloc.rundir import atomic_dir, atomic_write_json

    assert isinstance(qmodel, GPT)
    with atomic_dir(root / "compressed") as tmp:
        save_quantized(qmodel, chosen, tmp / "model.safetensors")
        atomic_write_json(tmp / "result.json", result)
