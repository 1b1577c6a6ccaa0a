"""Checkpoints: weights, optimizer state and progress, without pickle.

A checkpoint folder holds

* ``model.safetensors``: the weights (tied tensors stored once, via ``safetensors.torch``);
* ``optimizer.safetensors``: AdamW's per-parameter tensors under ``state.<i>.<name>``;
* ``state.json``: progress (step, tokens, FLOPs, seconds, lowest loss), the optimizer's
  scalars and group settings, the RNG states (base64 of torch's byte tensors) and the
  config hash that a resume must match.

It is written into a temporary folder and renamed (:func:`lmalloc.rundir.atomic_dir`), so a
killed process leaves the previous checkpoint or the new one, never a mix.

The format does not depend on how the run was laid out: a model sharded with FSDP is
gathered into whole tensors first (:func:`full_state`, a collective every rank calls; rank 0
writes), and loading into a sharded model cuts the whole tensors into this rank's shards. So
a checkpoint written by N processes (DDP or FSDP) resumes on M, and on one.
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
from lmalloc.rundir import atomic_dir, atomic_write_json, read_json, sha256_file, verify_files

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


# -- sharded (FSDP) models --------------------------------------------------------------------
def is_sharded(model: nn.Module) -> bool:
    """Whether ``model``'s parameters are FSDP ``DTensor`` shards."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in unwrap(model).parameters())


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer | None
               ) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """The whole model and optimizer state dicts, on CPU when the model is sharded.

    For a sharded model this gathers every tensor: all ranks must call it, in step. Tied
    weights stay one tensor object, so the file stores them once, as for a plain model.
    """
    model = unwrap(model)
    sd = model.state_dict()
    osd = optimizer.state_dict() if optimizer is not None else None
    if not is_sharded(model):
        return sd, osd
    from lmalloc.train.distributed import to_full

    gathered: dict[int, torch.Tensor] = {}
    params = dict(model.named_parameters(remove_duplicate=False))
    full: dict[str, torch.Tensor] = {}
    for name, value in sd.items():
        p = params.get(name)
        key = id(p) if p is not None else id(value)
        if key not in gathered:
            gathered[key] = to_full((p if p is not None else value).detach()).cpu()
        full[name] = gathered[key]
    if osd is not None:  # new dicts: state_dict() shares the optimizer's own per-param dicts
        osd = {**osd, "state": {
            idx: {name: to_full(v).cpu() if isinstance(v, torch.Tensor) else v
                  for name, v in sorted(osd["state"][idx].items())}
            for idx in sorted(osd["state"])}}
    return full, osd


class _StateDictOf(nn.Module):
    """A stand-in whose ``state_dict()`` is a given dict (``save_model`` only asks for that)."""

    def __init__(self, sd: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self._sd = sd

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        return dict(self._sd)


def _shard_like(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``full`` cut like the ``DTensor`` ``like`` (this rank's shard), else ``full`` as is."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if isinstance(like, DTensor) and full.dim() > 0:
        return distribute_tensor(full.to(like.device, like.dtype), like.device_mesh,
                                 like.placements)
    return full


def _load_sharded_weights(file: Path, model: nn.Module) -> None:
    """Copy a whole-tensor file into a sharded model (every rank reads the file)."""
    try:
        tensors = load_file(str(file))
    except (SafetensorError, OSError) as e:
        raise _unreadable(file, e) from None
    params = dict(model.named_parameters(remove_duplicate=False))
    names_of: dict[int | str, list[str]] = {}  # a tied parameter has several names
    for name in model.state_dict():
        obj = params.get(name)
        names_of.setdefault(id(obj) if obj is not None else name, []).append(name)
    missing = [names[0] for names in names_of.values() if not any(n in tensors
                                                                   for n in names)]
    if missing:
        raise UserError(f"checkpoint {file.parent} does not match the model: missing {missing}")
    buffers = dict(model.named_buffers())
    with torch.no_grad():
        for names in names_of.values():
            stored = tensors[next(n for n in names if n in tensors)]
            target = params.get(names[0], buffers.get(names[0]))
            if target is not None:
                target.copy_(_shard_like(stored, target))


def _shard_optimizer_state(sd: dict[str, Any], optimizer: torch.optim.Optimizer) -> None:
    """Cut the whole optimizer tensors of ``sd`` like the parameters they belong to."""
    flat = [p for g in optimizer.param_groups for p in g["params"]]
    for idx, st in sd["state"].items():
        for name, v in st.items():
            if isinstance(v, torch.Tensor) and idx < len(flat) and v.shape == flat[idx].shape:
                st[name] = _shard_like(v, flat[idx])


# -- save / load ------------------------------------------------------------------------------
def write_checkpoint(path: str | Path, model_sd: dict[str, torch.Tensor],
                     optim_sd: dict[str, Any] | None, state: dict[str, Any]) -> Path:
    """Write whole state dicts (from :func:`full_state`, which every rank of a sharded model
    calls) as a checkpoint folder, atomically; ``state`` is progress (JSON-able)."""
    state = {**state, "rng": rng_state()}
    with atomic_dir(path) as tmp:
        save_model(_StateDictOf(model_sd), str(tmp / MODEL_FILE))
        if optim_sd is not None:
            tensors, meta = _split_optimizer(optim_sd)
            save_file(tensors, str(tmp / OPTIM_FILE))
            state["optimizer"] = meta
        state["sha256"] = {f.name: sha256_file(f) for f in (tmp / MODEL_FILE, tmp / OPTIM_FILE)
                           if f.exists()}
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
    """Load ``model.safetensors`` into ``model`` (shape-checked; sharded models: a
    collective, every rank calls it)."""
    check_shapes(path, model)
    if is_sharded(model):
        _load_sharded_weights(Path(path) / MODEL_FILE, unwrap(model))
        return
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
    verify_files(path, state, STATE_FILE)
    load_weights(path, model)
    if optimizer is not None and "optimizer" in state:
        try:
            tensors = load_file(str(Path(path) / OPTIM_FILE))
        except (SafetensorError, OSError) as e:
            raise _unreadable(Path(path) / OPTIM_FILE, e) from None
        sd = _join_optimizer(tensors, state["optimizer"])
        if is_sharded(model):
            _shard_optimizer_state(sd, optimizer)
        try:
            optimizer.load_state_dict(sd)
        except (ValueError, KeyError) as e:
            raise UserError(f"optimizer state in {path} does not match this model: {e}") from None
    if restore_rng and "rng" in state:
        set_rng_state(state["rng"])
    return state


