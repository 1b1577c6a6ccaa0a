"""Checkpoints: weights, optimizer state and progress, without pickle.

A checkpoint folder holds

* ``model.safetensors``: the weights (tied tensors stored once, via ``safetensors.torch``);
* ``optimizer.safetensors``: AdamW's per-parameter tensors under ``state.<i>.<name>``;
* ``state.json``: progress (step, tokens, FLOPs, seconds, lowest loss), the optimizer's
  scalars and group settings, the RNG states (base64 of torch's byte tensors) and the
  config hash that a resume must match.

It is written into a temporary folder and renamed (:func:`lmalloc.rundir.atomic_dir`), so a
killed process leaves the previous checkpoint or the new one, never a mix.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file, save_model
from safetensors.torch import load_model as st_load_model
from torch import nn

from lmalloc.errors import UserError
from lmalloc.rundir import atomic_dir, atomic_write_json, read_json

MODEL_FILE = "model.safetensors"
OPTIM_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DDP and ``torch.compile`` wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod  # type: ignore[assignment]
        else:
            return model


# -- RNG --------------------------------------------------------------------------------------
def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode("ascii")


def _unb64(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8).clone()


def rng_state() -> dict[str, Any]:
    """torch's CPU (and CUDA) generator states, base64-encoded."""
    state: dict[str, Any] = {"torch_cpu": _b64(torch.get_rng_state())}
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        state["torch_cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(_unb64(state["torch_cpu"]))
    if "torch_cuda" in state and torch.cuda.is_available():
        cuda = [_unb64(s) for s in state["torch_cuda"]]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


# -- optimizer --------------------------------------------------------------------------------
def _split_optimizer(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors (for safetensors) and everything else (for JSON) of an optimizer state dict."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for name, v in st.items():
            if isinstance(v, torch.Tensor) and v.dim() > 0:
                tensors[f"state.{idx}.{name}"] = v.detach().cpu().contiguous()
            elif isinstance(v, torch.Tensor):
                scalars.setdefault(str(idx), {})[name] = {
                    "value": v.item(), "dtype": str(v.dtype).removeprefix("torch.")}
            else:
                scalars.setdefault(str(idx), {})[name] = {"value": v}
    return tensors, {"scalars": scalars, "param_groups": sd["param_groups"]}


def _join_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, t in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = t
    for idx, names in meta["scalars"].items():
        for name, v in names.items():
            value = v["value"]
            if "dtype" in v:
                value = torch.tensor(value, dtype=getattr(torch, v["dtype"]))
            state.setdefault(int(idx), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


# -- save / load ------------------------------------------------------------------------------
def save_checkpoint(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None,
                    state: dict[str, Any]) -> Path:
    """Write a checkpoint folder atomically; ``state`` is progress (JSON-able)."""
    state = {**state, "rng": rng_state()}
    with atomic_dir(path) as tmp:
        save_model(unwrap(model), str(tmp / MODEL_FILE))
        if optimizer is not None:
            tensors, meta = _split_optimizer(optimizer.state_dict())
            save_file(tensors, str(tmp / OPTIM_FILE))
            state["optimizer"] = meta
        atomic_write_json(tmp / STATE_FILE, state)
    return Path(path)


def read_state(path: str | Path) -> dict[str, Any]:
    """The ``state.json`` of a checkpoint folder (UserError when missing or corrupt)."""
    data: dict[str, Any] = read_json(Path(path) / STATE_FILE, "checkpoint state")
    return data


def has_checkpoint(path: str | Path) -> bool:
    p = Path(path)
    return (p / STATE_FILE).exists() and (p / MODEL_FILE).exists()


def _unreadable(file: Path, e: Exception) -> UserError:
    return UserError(f"{file} is not a readable safetensors file ({e}): it is truncated, "
                     "altered or not an lmalloc checkpoint; delete the checkpoint folder and "
                     "rerun the stage that writes it")


def check_shapes(path: str | Path, model: nn.Module) -> None:
    """Raise :class:`UserError` when the checkpoint's tensors do not fit ``model``."""
    file = Path(path) / MODEL_FILE
    if not file.exists():
        raise UserError(f"no weights at {file}: not a checkpoint folder")
    expected = {k: tuple(v.shape) for k, v in unwrap(model).state_dict().items()}
    try:
        with safe_open(str(file), framework="pt") as f:
            stored = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as e:
        raise _unreadable(file, e) from None
    for name, shape in stored.items():
        if name in expected and expected[name] != shape:
            raise UserError(
                f"checkpoint {path} holds {name} of shape {list(shape)}, the model has "
                f"{list(expected[name])}: it was written for another model shape"
            )
        if name not in expected:
            raise UserError(f"checkpoint {path} holds {name!r}, which this model does not have")


def load_weights(path: str | Path, model: nn.Module) -> None:
    """Load ``model.safetensors`` into ``model`` (shape-checked)."""
    check_shapes(path, model)
    try:
        missing, unexpected = st_load_model(unwrap(model), str(Path(path) / MODEL_FILE),
                                            strict=False)
    except (SafetensorError, OSError) as e:
        raise _unreadable(Path(path) / MODEL_FILE, e) from None
    if unexpected or missing:
        raise UserError(f"checkpoint {path} does not match the model: missing {missing}, "
                        f"unexpected {unexpected}")


def load_checkpoint(path: str | Path, model: nn.Module,
                    optimizer: torch.optim.Optimizer | None = None,
                    restore_rng: bool = True) -> dict[str, Any]:
    """Restore weights (and optimizer state and RNG) from a checkpoint; returns its state."""
    state = read_state(path)
    load_weights(path, model)
    if optimizer is not None and "optimizer" in state:
        try:
            tensors = load_file(str(Path(path) / OPTIM_FILE))
        except (SafetensorError, OSError) as e:
            raise _unreadable(Path(path) / OPTIM_FILE, e) from None
        sd = _join_optimizer(tensors, state["optimizer"])
        try:
            optimizer.load_state_dict(sd)
        except (ValueError, KeyError) as e:
            raise UserError(f"optimizer state in {path} does not match this model: {e}") from None
    if restore_rng and "rng" in state:
        set_rng_state(state["rng"])
    return state


