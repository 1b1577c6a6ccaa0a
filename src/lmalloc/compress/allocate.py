"""Per-layer sensitivity and the global choice of one format per layer under a byte budget.

Sensitivity ``s[l, f]``: the measured increase of validation loss when only layer ``l`` takes
format ``f`` (all others unchanged). Assuming increases add up (first-order, layers
independent), the best allocation solves the multiple-choice knapsack

    minimise  Σ_{l,f} s[l,f] · x[l,f]
    s.t.      Σ_f x[l,f] = 1  for each l,   Σ_{l,f} bytes[l,f] · x[l,f] ≤ budget − fixed,
              x ∈ {0, 1},

solved exactly by :func:`solve_milp` (``scipy.optimize.milp``, HiGHS branch and bound).
:func:`solve_greedy` is the usual baseline (best loss saved per extra byte first).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lmalloc.compress.quantize import (
    KEEP,
    QuantFormat,
    QuantLinear,
    fake_quantize,
    quantizable_layers,
    set_module,
)
from lmalloc.errors import UserError


@dataclass(frozen=True)
class Problem:
    """``cost[l][f]`` (predicted loss increase) and ``nbytes[l][f]`` per layer and format;
    ``fixed`` bytes (embedding, norms) are spent whatever the choice."""

    layers: list[str]
    formats: list[str]
    cost: np.ndarray  # (L, F)
    nbytes: np.ndarray  # (L, F) int
    fixed: int

    def min_bytes(self) -> int:
        return int(self.fixed + self.nbytes.min(axis=1).sum())

    def total(self, choice: Sequence[int]) -> tuple[float, int]:
        """(predicted increase, total bytes) of one format index per layer."""
        idx = np.arange(len(self.layers)), np.asarray(choice)
        return float(self.cost[idx].sum()), int(self.fixed + self.nbytes[idx].sum())

    def as_formats(self, choice: Sequence[int]) -> dict[str, str]:
        return {lay: self.formats[j] for lay, j in zip(self.layers, choice, strict=True)}


def layer_nbytes(linear: nn.Linear, fmt: str) -> int:
    """Stored bytes of ``linear`` in ``fmt`` (``keep``: its current dtype)."""
    if fmt == KEEP:
        return linear.weight.numel() * linear.weight.element_size()
    return QuantFormat.parse(fmt).nbytes(linear.out_features, linear.in_features)


def _check_budget(problem: Problem, budget: int) -> None:
    if budget < problem.min_bytes():
        raise UserError(f"deploy memory {budget} bytes is below the smallest this model can be "
                        f"made with formats {problem.formats}: {problem.min_bytes()} bytes; "
                        "give at least that, or allow fewer bits")


def solve_milp(problem: Problem, budget: int) -> list[int]:
    """The exact optimum: one format index per layer (see the module docstring)."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    _check_budget(problem, budget)
    n_l, n_f = problem.cost.shape
    one_each = np.kron(np.eye(n_l), np.ones((1, n_f)))  # (L, L·F)
    cons = [LinearConstraint(one_each, 1, 1),
            LinearConstraint(problem.nbytes.reshape(1, -1).astype(float), -np.inf,
                             budget - problem.fixed)]
    res = milp(problem.cost.reshape(-1), constraints=cons, integrality=np.ones(n_l * n_f),
               bounds=Bounds(0, 1))
    if res.x is None:  # feasible by _check_budget; a solver failure is a bug
        raise RuntimeError(f"milp failed: {res.message}")
    return [int(j) for j in np.round(res.x).reshape(n_l, n_f).argmax(axis=1)]


def solve_greedy(problem: Problem, budget: int) -> list[int]:
    """Start every layer at its smallest format; repeatedly take the upgrade that saves the
    most predicted loss per extra byte and still fits, until none does."""
    _check_budget(problem, budget)
    choice = list(problem.nbytes.argmin(axis=1))
    while True:
        cost, used = problem.total(choice)
        best, best_ratio = None, 0.0
        for l_, j_now in enumerate(choice):
            for j in range(len(problem.formats)):
                gain = problem.cost[l_, j_now] - problem.cost[l_, j]
                extra = problem.nbytes[l_, j] - problem.nbytes[l_, j_now]
                if gain <= 0 or used + extra > budget:
                    continue
                ratio = gain / max(extra, 1e-9)
                if ratio > best_ratio:
                    best, best_ratio = (l_, j), ratio
        if best is None:
            return choice
        choice[best[0]] = best[1]


def pareto(problem: Problem, budgets: Sequence[int]) -> list[dict[str, float]]:
    """The MILP optimum at each budget ≥ the minimum: ``{budget_bytes, size_bytes,
    predicted_increase}`` (the size–quality curve, predicted)."""
    out = []
    for b in sorted(set(int(x) for x in budgets)):
        if b < problem.min_bytes():
            continue
        cost, used = problem.total(solve_milp(problem, b))
        out.append({"budget_bytes": b, "size_bytes": used, "predicted_increase": cost})
    return out


def measure_sensitivity(model: nn.Module, formats: Sequence[str],
                        loss_fn: Callable[[nn.Module], float]) -> tuple[float, np.ndarray]:
    """Base loss and ``(L, F)`` loss increases, one layer in one format at a time."""
    layers = quantizable_layers(model)
    base = loss_fn(model)
    out = np.zeros((len(layers), len(formats)))
    for i, (name, lin) in enumerate(layers.items()):
        for j, fmt in enumerate(formats):
            if fmt == KEEP:
                continue
            set_module(model, name, QuantLinear.from_linear(lin, QuantFormat.parse(fmt)))
            try:
                out[i, j] = loss_fn(model) - base
            finally:
                set_module(model, name, lin)
    return base, out


@torch.no_grad()
def input_power(model: nn.Module, idx: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mean squared input activation per input channel of each quantizable layer."""
    acc: dict[str, torch.Tensor] = {}
    hooks = []
    for name, lin in quantizable_layers(model).items():
        def hook(_m: nn.Module, inp: tuple[torch.Tensor, ...], _o: torch.Tensor,
                 name: str = name) -> None:
            acc[name] = inp[0].float().pow(2).reshape(-1, inp[0].shape[-1]).mean(0)
        hooks.append(lin.register_forward_hook(hook))
    try:
        model(idx)
    finally:
        for h in hooks:
            h.remove()
    return acc


@torch.no_grad()
def proxy_sensitivity(model: nn.Module, formats: Sequence[str],
                      idx: torch.Tensor) -> np.ndarray:
    """``(L, F)`` proxy: Σ_{o,i} (W − Q(W))²_{oi} · E[x_i²] (diagonal-Hessian weighted
    quantization error of the layer's output), from one calibration batch ``idx``."""
    power = input_power(model, idx)
    layers = quantizable_layers(model)
    out = np.zeros((len(layers), len(formats)))
    for i, (name, lin) in enumerate(layers.items()):
        for j, fmt in enumerate(formats):
            if fmt != KEEP:
                err = (lin.weight - fake_quantize(lin.weight, QuantFormat.parse(fmt))).pow(2)
                out[i, j] = float((err * power[name][None, :]).sum())
    return out


def spearman(measured: np.ndarray, proxy: np.ndarray, formats: Sequence[str]) -> float:
    """Rank correlation of proxy and measured sensitivities over quantized (layer, format)
    pairs (``keep`` columns are zero in both and left out)."""
    from scipy.stats import spearmanr

    cols = [j for j, f in enumerate(formats) if f != KEEP]
    rho = spearmanr(measured[:, cols].reshape(-1), proxy[:, cols].reshape(-1)).statistic
    return float(rho)
