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


def check_budget(problem: Problem, budget: int) -> None:
    """Raise a UserError naming the smallest achievable size when ``budget`` is below it."""
    if budget < problem.min_bytes():
        raise UserError(f"deploy memory {budget} bytes is below the smallest this model can be "
                        f"made with formats {problem.formats}: {problem.min_bytes()} bytes; "
                        "give at least that, or allow fewer bits")


def dominated(problem: Problem) -> np.ndarray:
    """``(L, F)`` mask of formats no optimum needs: another format of the same layer is no
    larger and no worse, and better in one (the usual multiple-choice knapsack reduction;
    ties keep the first)."""
    c, b = problem.cost, problem.nbytes
    le = (c[:, None, :] <= c[:, :, None]) & (b[:, None, :] <= b[:, :, None])  # k beats j
    strict = (c[:, None, :] < c[:, :, None]) | (b[:, None, :] < b[:, :, None])
    n_f = c.shape[1]
    earlier = np.tril(np.ones((n_f, n_f), dtype=bool), -1)  # [j, k]: k < j (identical ties)
    beats = le & (strict | earlier[None])
    beats[:, np.arange(n_f), np.arange(n_f)] = False
    return np.asarray(beats.any(axis=2))


def solve_milp(problem: Problem, budget: int, time_limit: float = 60.0) -> list[int]:
    """The exact optimum: one format index per layer (see the module docstring); dominated
    formats are fixed to 0 first. After ``time_limit`` seconds HiGHS returns its best
    feasible allocation (within budget, possibly not optimal)."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    check_budget(problem, budget)
    n_l, n_f = problem.cost.shape
    one_each = np.kron(np.eye(n_l), np.ones((1, n_f)))  # (L, L·F)
    cons = [LinearConstraint(one_each, 1, 1),
            LinearConstraint(problem.nbytes.reshape(1, -1).astype(float), -np.inf,
                             budget - problem.fixed)]
    upper = np.where(dominated(problem), 0.0, 1.0).reshape(-1)
    res = milp(problem.cost.reshape(-1), constraints=cons, integrality=np.ones(n_l * n_f),
               bounds=Bounds(0, upper), options={"time_limit": time_limit})
    if res.x is None:  # feasible by check_budget; a solver failure is a bug
        raise RuntimeError(f"milp failed: {res.message}")
    return [int(j) for j in np.round(res.x).reshape(n_l, n_f).argmax(axis=1)]


def solve_greedy(problem: Problem, budget: int) -> list[int]:
    """Start every layer at its smallest format; repeatedly take the upgrade that saves the
    most predicted loss per extra byte and still fits, until none does."""
    check_budget(problem, budget)
    cost, nbytes = problem.cost, problem.nbytes.astype(float)
    rows = np.arange(len(problem.layers))
    choice = nbytes.argmin(axis=1)
    used = problem.fixed + nbytes[rows, choice].sum()
    while True:
        gain = cost[rows, choice][:, None] - cost  # (L, F)
        extra = nbytes - nbytes[rows, choice][:, None]
        ok = (gain > 0) & (used + extra <= budget)
        if not ok.any():
            return [int(j) for j in choice]
        ratio = np.where(ok, gain / np.maximum(extra, 1e-9), -np.inf)
        ratio[ok & (extra <= 0)] = np.inf  # better and no larger: always take
        l_, j = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
        used += extra[l_, j]
        choice[l_] = j


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


Quantizer = Callable[[str, nn.Linear, QuantFormat], nn.Module]


def rtn_quantizer(_name: str, lin: nn.Linear, fmt: QuantFormat) -> nn.Module:
    """Round-to-nearest: the layer alone, no calibration."""
    return QuantLinear.from_linear(lin, fmt)


def measure_sensitivity(model: nn.Module, formats: Sequence[str],
                        loss_fn: Callable[[nn.Module], float],
                        quantizer: Quantizer = rtn_quantizer,
                        tied: bool = False) -> tuple[float, np.ndarray]:
    """Base loss and ``(L, F)`` loss increases, one layer in one format at a time, each layer
    quantized by ``quantizer`` (the method the final model will use); ``tied``: the tied
    head/embedding is one of the layers."""
    layers = quantizable_layers(model, tied)
    base = loss_fn(model)
    out = np.zeros((len(layers), len(formats)))
    for i, (name, lin) in enumerate(layers.items()):
        for j, fmt in enumerate(formats):
            if fmt == KEEP:
                continue
            set_module(model, name, quantizer(name, lin, QuantFormat.parse(fmt)))
            try:
                out[i, j] = loss_fn(model) - base
            finally:
                set_module(model, name, lin)
    return base, out


class KLDivergence:
    """``loss_fn`` for :func:`measure_sensitivity`: the mean KL(p_ref ‖ p_model) of next-token
    distributions over fixed calibration batches, against the reference model's.

    Why not the loss itself: a one-layer change moves the loss on a few thousand tokens by
    less than its sampling noise (measured increases come out negative), while the KL of a
    perturbed model from the original is ≥ 0, has no data-noise term of its own (both models
    see the same tokens) and, for a well-fit model, equals the expected loss increase to
    first order. The reference log-probabilities are kept in fp16 (tokens × vocab × 2 bytes).
    """

    def __init__(self, reference: nn.Module, batches: Sequence[torch.Tensor]) -> None:
        self.batches = list(batches)
        with torch.no_grad():
            self.ref = [torch.log_softmax(reference(x)[0].float(), -1).half()
                        for x in self.batches]

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> float:
        total = 0.0
        for x, ref in zip(self.batches, self.ref, strict=True):
            lp, lq = ref.float(), torch.log_softmax(model(x)[0].float(), -1)
            total += float((lp.exp() * (lp - lq)).sum(-1).mean())
        return total / len(self.batches)


@torch.no_grad()
def input_power(model: nn.Module, idx: torch.Tensor,
                tied: bool = False) -> dict[str, torch.Tensor]:
    """Mean squared input activation per input channel of each quantizable layer."""
    acc: dict[str, torch.Tensor] = {}
    hooks = []
    for name, lin in quantizable_layers(model, tied).items():
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
def proxy_sensitivity(model: nn.Module, formats: Sequence[str], idx: torch.Tensor,
                      tied: bool = False) -> np.ndarray:
    """``(L, F)`` proxy: Σ_{o,i} (W − Q(W))²_{oi} · E[x_i²] (diagonal-Hessian weighted
    quantization error of the layer's output), from one calibration batch ``idx``."""
    power = input_power(model, idx, tied)
    layers = quantizable_layers(model, tied)
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
