"""A quantized GPT in one safetensors file; the JSON header says each layer's format.

The header's ``__metadata__`` holds ``lmalloc.model`` (the GPT config), ``lmalloc.formats``
(``{layer: format name}``) and ``lmalloc.structure`` (each block's head count and MLP width,
which structured pruning changes); the tensors are exactly the state dict that
:func:`lmalloc.compress.quantize.size_bytes` counts, so the file is that size plus the header.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from lmalloc.compress.prune import apply_structure, structure_of
from lmalloc.compress.quantize import KEEP, QuantFormat, QuantLinear, set_module
from lmalloc.errors import UserError
from lmalloc.model.config import GPTConfig
from lmalloc.model.gpt import GPT


def _unique_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with tied tensors kept once (safetensors refuses shared storage)."""
    seen: set[int] = set()
    out = {}
    for name, t in model.state_dict().items():
        key = t.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            out[name] = t.contiguous()
    return out


def save_quantized(model: GPT, formats: dict[str, str], path: str | os.PathLike[str]) -> Path:
    """Write ``model`` (as returned by ``quantize_model``) and its formats to ``path``."""
    from safetensors.torch import save_file

    meta = {"lmalloc.model": json.dumps(model.cfg.to_dict()),
            "lmalloc.formats": json.dumps(formats, sort_keys=True),
            "lmalloc.structure": json.dumps(structure_of(model), sort_keys=True)}
    save_file(_unique_state(model), str(path), metadata=meta)
    return Path(path)


def load_quantized(path: str | os.PathLike[str]) -> tuple[GPT, dict[str, str]]:
    """The model written by :func:`save_quantized`, in eval mode, and its formats."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise UserError(f"{path} is not a readable safetensors file ({e})") from None
    if "lmalloc.model" not in meta or "lmalloc.formats" not in meta:
        raise UserError(f"{path} has no lmalloc header: not a model `lmalloc compress` wrote")
    cfg = GPTConfig.from_dict(json.loads(meta["lmalloc.model"]))
    formats: dict[str, str] = json.loads(meta["lmalloc.formats"])
    model = GPT(cfg)
    apply_structure(model, json.loads(meta.get("lmalloc.structure", "{}")))
    for name, fmt in formats.items():
        if fmt != KEEP:
            lin = model.get_submodule(name)
            assert isinstance(lin, torch.nn.Linear)
            set_module(model, name, QuantLinear(lin.in_features, lin.out_features,
                                                QuantFormat.parse(fmt)))
    tied_fp = cfg.tie_embeddings and formats.get("lm_head", KEEP) == KEEP
    if tied_fp and "transformer.wte.weight" not in state:
        state["transformer.wte.weight"] = state["lm_head.weight"]
    if tied_fp and "lm_head.weight" not in state:
        state["lm_head.weight"] = state["transformer.wte.weight"]
    model.load_state_dict(state, strict=True)
    return model.eval(), formats
