"""Reading a trained model from disk: ``config.json`` + ``checkpoint/model.safetensors``.

The trainer writes that layout (``runs/<name>/final/``, ``runs/<name>/trials/<n>/``); this is
the one reader for commands that use a trained model (generate, export). Safetensors only:
nothing on disk is unpickled.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from lmalloc.errors import UserError
from lmalloc.model.config import GPTConfig
from lmalloc.model.gpt import GPT
from lmalloc.rundir import read_json, verify_files

CONFIG_FILE = "config.json"
WEIGHTS = Path("checkpoint") / "model.safetensors"


def model_dir(run_or_final: str | os.PathLike[str]) -> Path:
    """The folder holding the model: ``path`` itself, or ``path/final`` for a run directory."""
    path = Path(run_or_final)
    if (path / WEIGHTS).exists() or (path / CONFIG_FILE).exists():
        return path
    if (path / "final" / WEIGHTS).exists() or (path / "final" / CONFIG_FILE).exists():
        return path / "final"
    if not path.exists():
        raise UserError(f"{path} does not exist: pass a run directory or its final/ folder")
    raise UserError(
        f"no trained model in {path}: expected {WEIGHTS} and {CONFIG_FILE} there or in "
        f"{path / 'final'} (run `lmalloc train` first)"
    )


def check_state_dict(model: GPT, state: dict[str, torch.Tensor], source: Path) -> None:
    """Raise a :class:`UserError` naming every missing, unexpected or misshapen tensor."""
    expected = model.state_dict()
    tied = model.cfg.tie_embeddings
    aliases = {"lm_head.weight", "transformer.wte.weight"} if tied else set()
    present = set(state)
    missing = [k for k in expected
               if k not in present and not (k in aliases and aliases & present)]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k}: checkpoint {tuple(state[k].shape)} vs config {tuple(expected[k].shape)}"
             for k in state if k in expected and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append("mismatching shapes " + "; ".join(wrong[:6]))
        if missing:
            parts.append(f"missing tensors {missing[:6]}")
        if unexpected:
            parts.append(f"unexpected tensors {unexpected[:6]}")
        raise UserError(
            f"{source} does not match its model config ({', '.join(parts)}): the checkpoint "
            "comes from another shape or is not an lmalloc GPT checkpoint"
        )


def load_model(run_or_final_dir: str | os.PathLike[str],
               device: str | torch.device = "cpu") -> tuple[GPT, GPTConfig]:
    """The trained GPT in ``run_or_final_dir`` (a run directory or a folder with
    ``config.json`` + ``checkpoint/model.safetensors``), in eval mode, and its config."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = model_dir(run_or_final_dir)
    config = read_json(folder / CONFIG_FILE, "model config")
    if not isinstance(config, dict) or "model" not in config:
        raise UserError(f"{folder / CONFIG_FILE} has no 'model' table: not an lmalloc run config")
    cfg = GPTConfig.from_dict(config["model"])
    weights = folder / WEIGHTS
    if not weights.exists():
        raise UserError(f"{weights} is missing: the run has no finished checkpoint")
    verify_files(weights.parent)
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as e:
        raise UserError(f"{weights} is not a readable safetensors file ({e})") from None
    model = GPT(cfg)
    check_state_dict(model, state, weights)
    if cfg.tie_embeddings and "transformer.wte.weight" not in state:
        state["transformer.wte.weight"] = state["lm_head.weight"]
    model.load_state_dict(state, strict=False)  # strict checks done above (tied aliases)
    return model.to(device).eval(), cfg


def save_model(model: GPT, out_dir: str | os.PathLike[str],
               extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` in the checkpoint layout above (tests and exports use it; the trainer
    writes the same layout with its own state)."""
    from safetensors.torch import save_model as st_save_model

    from lmalloc.rundir import atomic_dir, atomic_write_json

    out = Path(out_dir)
    with atomic_dir(out / "checkpoint") as tmp:
        st_save_model(model, str(tmp / "model.safetensors"))
    atomic_write_json(out / CONFIG_FILE, {"model": model.cfg.to_dict(), **(extra or {})})
    return out


def find_tokenizer(run_or_final_dir: str | os.PathLike[str]) -> Path:
    """The tokenizer of a run: ``<run>/data/tokenizer.json`` (also found from ``final/`` or a
    trial folder), or a ``tokenizer.json`` beside the model."""
    start = Path(run_or_final_dir).resolve()
    folder = model_dir(start)
    candidates = [folder / "tokenizer.json", start / "data" / "tokenizer.json"]
    candidates += [p / "data" / "tokenizer.json" for p in folder.parents[:3]]
    for c in candidates:
        if c.is_file():
            return c
    raise UserError(
        f"no tokenizer found for {start}: expected {start / 'data' / 'tokenizer.json'} "
        "(run `lmalloc prepare` for this run)"
    )


def find_eot_id(tokenizer_json: Path) -> int | None:
    """The end-of-text id: from the run's ``data.json`` when present, else the tokenizer's
    first special token."""
    import json

    data_json = tokenizer_json.parent / "data.json"
    if data_json.is_file():
        eot = read_json(data_json, "data description").get("eot_id")
        if eot is not None:
            return int(eot)
    data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    specials = [t["id"] for t in data.get("added_tokens", []) if t.get("special")]
    return int(specials[0]) if specials else None
