"""Weight-only, group-wise integer quantization of ``nn.Linear`` weights (round-to-nearest).

Why our own code and not torchao: torchao's CPU weight-only paths cover int8 and int4 with its
own packed layouts (tied to kernels and torch versions), not 3- and 2-bit codes, and we need
the stored bytes counted exactly (packed codes + fp16 scales + uint8 zero points) and written
to a plain safetensors file. The arithmetic is a few lines; the packing is generic.

Format: each weight row (``out`` rows, ``in`` columns) is split into groups of ``group_size``
consecutive input columns (the last group may be short). Per group:

* asymmetric: ``scale = (max - min) / (2^b - 1)``, ``zero = round(-min / scale)``,
  ``code = clamp(round(w / scale) + zero, 0, 2^b - 1)``, ``w ≈ (code - zero) · scale``;
* symmetric: ``scale = absmax / (2^(b-1) - 1)``, ``code = clamp(round(w / scale),
  -2^(b-1), 2^(b-1) - 1) + 2^(b-1)`` (the zero point ``2^(b-1)`` is implicit, not stored).

Scales are rounded to fp16 *before* the codes are computed, so what is stored is what is used.
Codes are bit-packed into uint8 as one little-endian bit stream over the row-major codes:
``ceil(out · in · b / 8)`` bytes for every ``b`` (2, 4, 8 fill bytes exactly; 3-bit codes
straddle byte boundaries, 8 codes per 3 bytes).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from lmalloc.errors import UserError, invalid

ALLOWED_BITS = (2, 3, 4, 8)
KEEP = "keep"  # the format name for "leave this layer as it is"
TIED = "lm_head"  # the output head; tied to the input embedding in lmalloc GPTs


@dataclass(frozen=True)
class QuantFormat:
    """One weight format: ``bits`` per weight, groups of ``group_size`` input columns."""

    bits: int
    group_size: int = 64
    symmetric: bool = False

    def __post_init__(self) -> None:
        if self.bits not in ALLOWED_BITS:
            raise invalid("bits", self.bits, f"one of {ALLOWED_BITS}")
        if self.group_size < 1:
            raise invalid("group_size", self.group_size, "a positive integer")

    @property
    def name(self) -> str:
        """E.g. ``int4g64a`` (asymmetric) or ``int4g64s`` (symmetric)."""
        return f"int{self.bits}g{self.group_size}{'s' if self.symmetric else 'a'}"

    @classmethod
    def parse(cls, name: str) -> QuantFormat:
        """Inverse of :attr:`name`."""
        try:
            body, kind = name[3:-1], name[-1]
            bits, group = body.split("g")
            assert name.startswith("int") and kind in "as"
            return cls(int(bits), int(group), kind == "s")
        except (ValueError, AssertionError):
            raise invalid("format", name, "a name like int4g64a or int8g128s") from None

    def nbytes(self, out_features: int, in_features: int) -> int:
        """Exact stored bytes of one quantized ``(out, in)`` weight: codes, scales, zeros."""
        groups = out_features * math.ceil(in_features / self.group_size)
        codes = math.ceil(out_features * in_features * self.bits / 8)
        return codes + 2 * groups + (0 if self.symmetric else groups)


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack integer codes in ``[0, 2^bits)`` into a uint8 bit stream (little-endian)."""
    flat = codes.reshape(-1).to(torch.uint8).numpy()
    planes = (flat[:, None] >> np.arange(bits, dtype=np.uint8)) & 1  # (n, bits)
    return torch.from_numpy(np.packbits(planes.reshape(-1), bitorder="little"))


def unpack_codes(packed: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """Inverse of :func:`pack_codes`: the first ``n`` codes, as int16."""
    stream = np.unpackbits(packed.numpy(), bitorder="little")[: n * bits].reshape(n, bits)
    weights = (1 << np.arange(bits, dtype=np.int16)).astype(np.int16)
    return torch.from_numpy(stream.astype(np.int16) @ weights)


def _grouped(w: torch.Tensor, group_size: int) -> torch.Tensor:
    """``(out, in)`` → ``(out, groups, group_size)``, the short last group padded with 0."""
    out_f, in_f = w.shape
    pad = -in_f % group_size
    return nn.functional.pad(w, (0, pad)).reshape(out_f, -1, group_size)


def quantize_weight(
    w: torch.Tensor, fmt: QuantFormat
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Round-to-nearest codes ``(out, in)`` int16, scales ``(out, groups)`` fp16 and zero
    points ``(out, groups)`` uint8 (None when symmetric)."""
    g = _grouped(w.detach().float(), fmt.group_size)  # (out, G, gs)
    qmax = 2**fmt.bits - 1
    if fmt.symmetric:
        half = 2 ** (fmt.bits - 1)
        amax = g.abs().amax(-1)
        scale = (amax / max(half - 1, 1)).half()
        s = torch.where(scale > 0, scale.float(), torch.ones_like(amax))
        codes = (torch.round(g / s[..., None]).clamp(-half, half - 1) + half)
        zero = None
    else:
        lo, hi = g.amin(-1).clamp(max=0), g.amax(-1).clamp(min=0)
        scale = ((hi - lo) / qmax).half()
        s = torch.where(scale > 0, scale.float(), torch.ones_like(lo))
        zero_f = torch.round(-lo / s).clamp(0, qmax)
        codes = (torch.round(g / s[..., None]) + zero_f[..., None]).clamp(0, qmax)
        zero = zero_f.to(torch.uint8)
    codes = codes.reshape(w.shape[0], -1)[:, : w.shape[1]].to(torch.int16)
    return codes, scale, zero


def dequantize(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None,
               fmt: QuantFormat) -> torch.Tensor:
    """The fp32 weight that ``(codes, scale, zero)`` stand for."""
    out_f, in_f = codes.shape
    g = _grouped(codes.float(), fmt.group_size)  # (out, G, gs)
    z = float(2 ** (fmt.bits - 1)) if zero is None else zero.float()[..., None]
    w = (g - z) * scale.float()[..., None]
    return w.reshape(out_f, -1)[:, :in_f]


def fake_quantize(w: torch.Tensor, fmt: QuantFormat) -> torch.Tensor:
    """``Q(W)``: quantize then dequantize (sensitivity and proxy measurements use it)."""
    return dequantize(*quantize_weight(w, fmt), fmt).to(w.dtype)


class QuantLinear(nn.Module):
    """A bias-free linear layer stored as packed codes; dequantizes on first use.

    Buffers (the state dict, i.e. what is saved and counted): ``packed`` uint8, ``scale``
    fp16, and ``zero`` uint8 for asymmetric formats.
    """

    def __init__(self, in_features: int, out_features: int, fmt: QuantFormat) -> None:
        super().__init__()
        self.in_features, self.out_features, self.fmt = in_features, out_features, fmt
        groups = math.ceil(in_features / fmt.group_size)
        n_packed = math.ceil(in_features * out_features * fmt.bits / 8)
        self.register_buffer("packed", torch.zeros(n_packed, dtype=torch.uint8))
        self.register_buffer("scale", torch.zeros(out_features, groups, dtype=torch.float16))
        if not fmt.symmetric:
            self.register_buffer("zero", torch.zeros(out_features, groups, dtype=torch.uint8))
        self._weight: torch.Tensor | None = None

    packed: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor

    @classmethod
    def from_linear(cls, linear: nn.Linear, fmt: QuantFormat) -> QuantLinear:
        if linear.bias is not None:
            raise UserError("quantizing a linear layer with a bias is not supported; "
                            "lmalloc GPT layers have none: is this checkpoint ours?")
        return cls.from_codes(linear.in_features, linear.out_features, fmt,
                              *quantize_weight(linear.weight, fmt))

    @classmethod
    def from_codes(cls, in_features: int, out_features: int, fmt: QuantFormat,
                   codes: torch.Tensor, scale: torch.Tensor,
                   zero: torch.Tensor | None) -> QuantLinear:
        """Pack ``(codes, scale, zero)`` as returned by any quantizer of this format (RTN
        here, GPTQ in :mod:`lmalloc.compress.gptq`)."""
        q = cls(in_features, out_features, fmt)
        q.packed.copy_(pack_codes(codes, fmt.bits))
        q.scale.copy_(scale)
        if zero is not None:
            q.zero.copy_(zero)
        return q

    def weight_fp32(self) -> torch.Tensor:
        """The dequantized ``(out, in)`` weight (cached; the buffers are the stored truth)."""
        if self._weight is None:
            n = self.in_features * self.out_features
            codes = unpack_codes(self.packed.cpu(), self.fmt.bits, n)
            codes = codes.reshape(self.out_features, self.in_features)
            zero = None if self.fmt.symmetric else self.zero.cpu()
            w = dequantize(codes, self.scale.cpu(), zero, self.fmt)
            self._weight = w.to(self.scale.device)
        return self._weight

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        self._weight = None  # new buffers: drop the cached weight
        super()._load_from_state_dict(*args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight_fp32().to(x.device, x.dtype))

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, fmt={self.fmt.name}"


class TiedEmbedding(nn.Module):
    """The input embedding of a model whose tied output head is a :class:`QuantLinear`:
    rows are looked up in the head's dequantized weight, so the one quantized matrix serves
    both roles and is stored once (this module has no tensors of its own)."""

    def __init__(self, head: QuantLinear, original: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "head", head)  # not a submodule: no second state-dict copy
        object.__setattr__(self, "original", original)  # what set_module restores

    head: QuantLinear
    original: nn.Module

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return nn.functional.embedding(idx, self.head.weight_fp32())


def quantizable_layers(model: nn.Module, tied: bool = False) -> dict[str, nn.Linear]:
    """The linear layers a format can be chosen for: all but ``lm_head``, and ``lm_head`` too
    when ``tied`` (for a tied model its format is the embedding's too: see
    :func:`set_module`)."""
    return {n: m for n, m in model.named_modules()
            if isinstance(m, nn.Linear) and (tied or not n.endswith(TIED))}


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule called ``name`` (dotted path) by ``module``. For the tied
    ``lm_head`` of a GPT the input embedding follows: a :class:`TiedEmbedding` reading the
    quantized head, or the original embedding again when the original head comes back."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)
    cfg = getattr(model, "cfg", None)
    if name != TIED or not getattr(cfg, "tie_embeddings", False):
        return
    trunk: Any = model.transformer
    wte = trunk.wte
    original = wte.original if isinstance(wte, TiedEmbedding) else wte
    trunk.wte = TiedEmbedding(module, original) if isinstance(module, QuantLinear) else original


def quantize_model(model: nn.Module, formats: dict[str, str]) -> nn.Module:
    """A copy of ``model`` with each named layer in its format (``"keep"``: unchanged).

    Raises:
        UserError: a name is not a quantizable layer, or a format name is malformed.
    """
    layers = quantizable_layers(model, tied=True)
    unknown = sorted(set(formats) - set(layers))
    if unknown:
        raise invalid("layer", unknown[0], f"one of the model's linear layers ({len(layers)})")
    out = copy.deepcopy(model)
    for name, fmt in formats.items():
        if fmt != KEEP:
            set_module(out, name, QuantLinear.from_linear(layers[name], QuantFormat.parse(fmt)))
    return out


def size_bytes(model: nn.Module) -> int:
    """True stored size: every tensor of the state dict once (tied weights count once) —
    packed codes, scales, zero points and whatever stays in higher precision."""
    seen: set[int] = set()
    total = 0
    for t in model.state_dict().values():
        key = t.untyped_storage().data_ptr()
        if key in seen:
            continue
        seen.add(key)
        total += t.numel() * t.element_size()
    return total
