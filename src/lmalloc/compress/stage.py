"""The ``compress`` stage: measure sensitivities, allocate formats under the deployment budget,
quantize, evaluate with the same code as the original, and write ``RUN/compressed/``."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmalloc.compress.allocate import (
    Problem,
    layer_nbytes,
    measure_sensitivity,
    pareto,
    proxy_sensitivity,
    solve_greedy,
    solve_milp,
    spearman,
)
from lmalloc.compress.quantize import KEEP, QuantFormat, quantizable_layers, quantize_model
from lmalloc.compress.quantize import size_bytes as model_size


def build_problem(model: torch.nn.Module, formats: Sequence[str], cost: np.ndarray) -> Problem:
    """Bytes per (layer, format) and the fixed bytes of everything that is not a choice."""
    layers = quantizable_layers(model)
    nbytes = np.array([[layer_nbytes(lin, f) for f in formats] for lin in layers.values()])
    keep_all = sum(layer_nbytes(lin, KEEP) for lin in layers.values())
    return Problem(list(layers), list(formats), cost, nbytes, model_size(model) - keep_all)


def compress_run(run_dir: str | os.PathLike[str], budget_bytes: int,
                 bits: Sequence[int] = (8, 4, 3, 2), group_size: int = 64,
                 symmetric: bool = False, calib_tokens: int = 8192,
                 eval_tokens: int | None = None) -> dict[str, Any]:
    """Compress ``RUN/final`` to at most ``budget_bytes`` and write ``RUN/compressed/``.

    Sensitivities are measured on the first ``calib_tokens`` tokens of the TRAIN split (the
    validation split, which the result reports, is never used to choose); increases measured
    below zero are noise at this token count and enter the allocation as 0. The final model
    is evaluated on ``eval_tokens`` validation tokens (all by default).

    Raises:
        UserError: no final model or data, a bad format, or a budget below the minimum size.
    """
    from lmalloc.compress.store import save_quantized
    from lmalloc.data.shards import TokenData
    from lmalloc.evaluate.perplexity import evaluate_lm
    from lmalloc.model.gpt import GPT
    from lmalloc.model.io import load_model
    from lmalloc.rundir import atomic_dir, atomic_write_json

    t0 = time.perf_counter()
    root = Path(run_dir)
    model, cfg = load_model(root / "final")
    data = TokenData(root / "data")
    val, calib = data.split("val"), data.split("train")
    formats = [KEEP] + [QuantFormat(b, group_size, symmetric).name for b in bits]

    def loss_on(m: torch.nn.Module, tokens: int | None, split: Any = val) -> dict[str, Any]:
        return evaluate_lm(m, split, seq_len=cfg.seq_len, batch_size=8, max_tokens=tokens)

    base, measured = measure_sensitivity(model, formats,
                                         lambda m: loss_on(m, calib_tokens, calib)["loss"])
    problem = build_problem(model, formats, np.maximum(measured, 0.0))
    choice = solve_milp(problem, budget_bytes)  # raises UserError below the minimum
    greedy = solve_greedy(problem, budget_bytes)
    x, _ = next(iter(calib.sequential_batches(8, cfg.seq_len, max_tokens=calib_tokens)))
    proxy = proxy_sensitivity(model, formats, torch.from_numpy(x))
    chosen = problem.as_formats(choice)
    qmodel = quantize_model(model, chosen)
    assert isinstance(qmodel, GPT)
    before, after = loss_on(model, eval_tokens), loss_on(qmodel, eval_tokens)
    top = problem.min_bytes(), problem.total([0] * len(problem.layers))[1]
    result = {
        "size_bytes": model_size(qmodel), "bpb": after["bpb"], "loss": after["loss"],
        "budget_bytes": int(budget_bytes), "formats": chosen,
        "baseline_bpb": before["bpb"], "baseline_loss": before["loss"],
        "baseline_size_bytes": model_size(model), "min_size_bytes": top[0],
        "predicted_increase": problem.total(choice)[0],
        "greedy_predicted_increase": problem.total(greedy)[0],
        "greedy_formats": problem.as_formats(greedy),
        "pareto": pareto(problem, np.geomspace(top[0], top[1], 8).round().astype(int).tolist()),
        "proxy_spearman": spearman(measured, proxy, formats),
        "sensitivity": {"formats": formats, "calib_loss": base,
                        "measured": measured.tolist(), "proxy": proxy.tolist()},
        "seconds": time.perf_counter() - t0,
    }
    with atomic_dir(root / "compressed") as tmp:
        save_quantized(qmodel, chosen, tmp / "model.safetensors")
        atomic_write_json(tmp / "result.json", result)
    return result
