"""Pruning: unstructured (magnitude, or activation-aware |W|·‖x‖ as in Wanda, Sun et al.
2023), 2:4 semi-structured, and structured (attention heads, MLP neurons).

Specs (the CLI's ``--prune``): ``unstructured:0.5`` (magnitude, per layer), ``wanda:0.5``
(|W_ij|·‖x_j‖ compared within each output row, as in the paper), ``2:4`` (in every group of 4
consecutive input weights of a row the 2 with the lowest Wanda score are zeroed),
``heads:2`` (remove 2 attention heads from every block), ``neurons:0.25`` (remove a quarter of
every block's MLP neurons). Structured scores are activation-aware too: a head or neuron's
importance is Σ_j ‖W_out[:, j]‖·‖x_j‖ over the output-projection columns it feeds.

Unstructured and 2:4 pruning zero weights in place; the stored size does not shrink (dense
storage; no sparse format here). Structured pruning really removes rows and columns: a pruned
block keeps its own head count and MLP width (``structure``), which the saved model records so
that :mod:`lmalloc.compress.store` can rebuild the shapes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lmalloc.compress.quantize import quantizable_layers
from lmalloc.errors import UserError, invalid

KINDS = ("unstructured", "wanda", "2:4", "heads", "neurons")
SPEC_HELP = "one of 2:4, unstructured:F, wanda:F, heads:K, neurons:F (0 < F < 1, K ≥ 1)"


@dataclass(frozen=True)
class PruneSpec:
    """A parsed ``--prune`` value: ``kind`` and ``amount`` (fraction, or heads per block)."""

    kind: str
    amount: float = 0.5

    @classmethod
    def parse(cls, text: str) -> PruneSpec:
        kind, _, arg = text.strip().partition(":")
        if text.strip() == "2:4":
            return cls("2:4", 0.5)
        if kind not in KINDS or kind == "2:4" or not arg:
            raise invalid("--prune", text, SPEC_HELP)
        try:
            amount = float(arg)
        except ValueError:
            raise invalid("--prune", text, SPEC_HELP) from None
        ok = amount >= 1 and amount.is_integer() if kind == "heads" else 0 < amount < 1
        if not ok:
            raise invalid("--prune", text, SPEC_HELP)
        return cls(kind, amount)

    @property
    def structured(self) -> bool:
        return self.kind in ("heads", "neurons")

    def __str__(self) -> str:
        if self.kind == "2:4":
            return "2:4"
        return f"{self.kind}:{int(self.amount) if self.kind == 'heads' else self.amount}"


@torch.no_grad()
def input_norms(model: nn.Module, batches: Iterable[torch.Tensor],
                names: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
    """‖x_j‖₂ over all calibration tokens, per input channel of each named linear layer."""
    mods = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    wanted = list(quantizable_layers(model)) if names is None else list(names)
    acc = {n: torch.zeros(mods[n].in_features, dtype=torch.float64) for n in wanted}

    def hook(name: str) -> Any:
        def fn(_m: nn.Module, inp: tuple[torch.Tensor, ...], _o: torch.Tensor) -> None:
            acc[name] += inp[0].detach().double().pow(2).reshape(-1, inp[0].shape[-1]).sum(0)
        return fn

    hooks = [mods[n].register_forward_hook(hook(n)) for n in wanted]
    try:
        for idx in batches:
            model(idx)
    finally:
        for h in hooks:
            h.remove()
    return {n: a.sqrt().float() for n, a in acc.items()}


def magnitude_mask(w: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask zeroing the ``sparsity`` fraction of smallest |w| in the whole matrix."""
    k = int(round(sparsity * w.numel()))
    mask = torch.ones_like(w, dtype=torch.bool)
    if k:
        mask.view(-1)[w.abs().reshape(-1).argsort()[:k]] = False
    return mask


def wanda_mask(w: torch.Tensor, norms: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask zeroing, in each output row, the ``sparsity`` fraction of lowest
    ``|W_ij|·‖x_j‖`` (Wanda's per-output comparison group)."""
    score = w.abs() * norms[None, :].to(w.dtype)
    k = int(round(sparsity * w.shape[1]))
    mask = torch.ones_like(w, dtype=torch.bool)
    if k:
        mask.scatter_(1, score.argsort(dim=1)[:, :k], False)
    return mask


def n_m_mask(w: torch.Tensor, norms: torch.Tensor | None, n: int = 2, m: int = 4) -> torch.Tensor:
    """Keep-mask with at most ``n`` nonzeros in every group of ``m`` consecutive inputs of a
    row (the ``m - n`` lowest Wanda scores, or magnitudes without ``norms``, are zeroed)."""
    out_f, in_f = w.shape
    if in_f % m:
        raise UserError(f"2:4 pruning needs input widths divisible by {m}; a layer has {in_f}")
    score = w.abs() if norms is None else w.abs() * norms[None, :].to(w.dtype)
    groups = score.reshape(out_f, in_f // m, m)
    mask = torch.ones_like(groups, dtype=torch.bool)
    mask.scatter_(2, groups.argsort(dim=2)[..., : m - n], False)
    return mask.reshape(out_f, in_f)


def unstructured_masks(model: nn.Module, spec: PruneSpec,
                       batches: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep-masks for every quantizable layer under an unstructured or 2:4 ``spec``."""
    layers = quantizable_layers(model)
    norms = {} if spec.kind == "unstructured" else input_norms(model, batches)
    masks = {}
    for name, lin in layers.items():
        w = lin.weight.detach()
        if spec.kind == "unstructured":
            masks[name] = magnitude_mask(w, spec.amount)
        elif spec.kind == "wanda":
            masks[name] = wanda_mask(w, norms[name], spec.amount)
        else:
            masks[name] = n_m_mask(w, norms[name])
    return masks


@torch.no_grad()
def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Zero the masked-out weights in place (also after each recovery step)."""
    mods = dict(model.named_modules())
    for name, mask in masks.items():
        w: Any = mods[name].weight
        w.mul_(mask.to(w.device, w.dtype))


def _linear(weight: torch.Tensor) -> nn.Linear:
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    lin.weight.data.copy_(weight)
    return lin


@torch.no_grad()
def shrink_attention(attn: Any, keep: list[int]) -> None:
    """Keep only heads ``keep`` of a multi-head attention module (q, k, v rows and the output
    projection's columns); the module's own head counts follow."""
    nq, nkv, hd = attn.n_head, attn.n_kv, attn.head_dim
    if nq != nkv:
        raise UserError("pruning heads of grouped-query attention (n_kv_head < n_head) is not "
                        "supported; prune neurons instead")
    w = attn.c_attn.weight.view(nq + 2 * nkv, hd, -1)
    rows = [h for off in (0, nq, 2 * nq) for h in (off + k for k in keep)]
    attn.c_attn = _linear(w[rows].reshape(len(rows) * hd, -1))
    cols = [k * hd + i for k in keep for i in range(hd)]
    attn.c_proj = _linear(attn.c_proj.weight[:, cols])
    attn.n_head = attn.n_kv = len(keep)


@torch.no_grad()
def shrink_mlp(mlp: Any, keep: list[int]) -> None:
    """Keep only hidden neurons ``keep`` of a SwiGLU MLP (gate and up rows, down columns)."""
    ff = mlp.c_proj.in_features
    mlp.c_fc = _linear(mlp.c_fc.weight[keep + [ff + k for k in keep]])
    mlp.c_proj = _linear(mlp.c_proj.weight[:, keep])


def _blocks(model: nn.Module) -> list[Any]:
    """The transformer blocks of a GPT (typed loosely: their parts are read by name)."""
    trunk: Any = model.transformer
    return list(trunk.h)


def structure_of(model: nn.Module) -> dict[str, dict[str, int]]:
    """``{block name: {"heads": H, "ff": F}}`` of every block (what a saved model records)."""
    return {f"transformer.h.{i}": {"heads": int(b.attn.n_head),
                                   "ff": int(b.mlp.c_proj.in_features)}
            for i, b in enumerate(_blocks(model))}


def apply_structure(model: nn.Module, structure: dict[str, dict[str, int]]) -> None:
    """Resize blocks (weights then come from a state dict) to a recorded structure."""
    for name, s in structure.items():
        block: Any = model.get_submodule(name)
        if s["heads"] != block.attn.n_head:
            shrink_attention(block.attn, list(range(s["heads"])))
        if s["ff"] != block.mlp.c_proj.in_features:
            shrink_mlp(block.mlp, list(range(s["ff"])))


def _top(scores: torch.Tensor, keep: int) -> list[int]:
    return sorted(scores.argsort(descending=True)[:keep].tolist())


@torch.no_grad()
def prune_structured(model: nn.Module, spec: PruneSpec, batches: list[torch.Tensor]) -> None:
    """Remove the least important heads or neurons of every block, in place."""
    blocks = _blocks(model)
    key = "attn.c_proj" if spec.kind == "heads" else "mlp.c_proj"
    names = [f"transformer.h.{i}.{key}" for i in range(len(blocks))]
    norms = input_norms(model, batches, names)
    for i, block in enumerate(blocks):
        col = block.get_submodule(key).weight.norm(dim=0) * norms[names[i]]  # (in,)
        if spec.kind == "heads":
            n = block.attn.n_head
            keep = n - int(spec.amount)
            if keep < 1:
                raise UserError(f"--prune {spec} removes every head: blocks have {n} heads")
            shrink_attention(block.attn, _top(col.view(n, -1).sum(1), keep))
        else:
            ff = block.mlp.c_proj.in_features
            shrink_mlp(block.mlp, _top(col, max(1, round(ff * (1 - spec.amount)))))


def prune_model(model: nn.Module, spec: PruneSpec,
                batches: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Prune ``model`` in place; returns the keep-masks (empty for structured pruning), which
    a recovery fine-tune must re-apply after each step."""
    model.eval()
    if spec.structured:
        prune_structured(model, spec, batches)
        return {}
    masks = unstructured_masks(model, spec, batches)
    apply_masks(model, masks)
    return masks


def sparsity(model: nn.Module) -> float:
    """Fraction of zero weights over the quantizable layers."""
    ws = [m.weight for m in quantizable_layers(model).values()]
    return float(sum(int((w == 0).sum()) for w in ws) / sum(w.numel() for w in ws))

