"""Export to a Hugging Face ``LlamaForCausalLM`` folder (config, safetensors, tokenizer).

Our GPT is a Llama in GPT-2 names: RoPE in the same ``rotate_half`` convention, RMSNorm,
SwiGLU, no biases. Export is therefore a key map plus splitting the fused matrices:

    transformer.wte            -> model.embed_tokens
    transformer.h.i.ln_1       -> model.layers.i.input_layernorm
    transformer.h.i.attn.c_attn -> q_proj | k_proj | v_proj (rows split H·hd, KV·hd, KV·hd)
    transformer.h.i.attn.c_proj -> model.layers.i.self_attn.o_proj
    transformer.h.i.ln_2       -> model.layers.i.post_attention_layernorm
    transformer.h.i.mlp.c_fc   -> gate_proj | up_proj (rows split in halves)
    transformer.h.i.mlp.c_proj -> model.layers.i.mlp.down_proj
    transformer.ln_f           -> model.norm
    lm_head                    -> lm_head (omitted when tied)

μP models differ from Llama in two scalars, folded into the weights so the export is an exact
plain Llama: the 1/d_head attention scale (q_proj multiplied by 1/sqrt(d_head), since Llama
scales by 1/sqrt(d_head)), and the 1/m output multiplier (lm_head multiplied by 1/m, which
unties it from the embedding).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from lmalloc.errors import UserError
from lmalloc.model.config import GPTConfig
from lmalloc.rundir import atomic_dir, register_run_root


def hf_config(cfg: GPTConfig, tied: bool, eos_id: int | None = None,
              bos_id: int | None = None) -> dict[str, Any]:
    """The ``config.json`` of the equivalent ``LlamaForCausalLM`` (transformers 4 and 5)."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.ff_dim,
        "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head,
        "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,  # transformers 4
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},  # 5
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "tie_word_embeddings": tied,
        "initializer_range": cfg.init_std,
        "torch_dtype": "float32",
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "use_cache": True,
    }


def hf_state_dict(state: dict[str, torch.Tensor], cfg: GPTConfig) -> dict[str, torch.Tensor]:
    """Our state dict in Hugging Face Llama names (see the module docstring)."""
    hd, H, KV, ff = cfg.head_dim, cfg.n_head, cfg.kv_heads, cfg.ff_dim
    q_mult = 1.0 / math.sqrt(hd) if cfg.mup_base_width is not None else 1.0
    r = cfg.residual_mult  # depth scaling: folded into the branches' output projections
    wte = state["transformer.wte.weight"] if "transformer.wte.weight" in state \
        else state["lm_head.weight"]
    out = {"model.embed_tokens.weight": wte, "model.norm.weight": state["transformer.ln_f.weight"]}
    for i in range(cfg.n_layer):
        src, dst = f"transformer.h.{i}.", f"model.layers.{i}."
        q, k, v = torch.split(state[src + "attn.c_attn.weight"], [H * hd, KV * hd, KV * hd])
        gate, up = torch.split(state[src + "mlp.c_fc.weight"], [ff, ff])
        out |= {
            dst + "input_layernorm.weight": state[src + "ln_1.weight"],
            dst + "self_attn.q_proj.weight": q * q_mult,
            dst + "self_attn.k_proj.weight": k,
            dst + "self_attn.v_proj.weight": v,
            dst + "self_attn.o_proj.weight": state[src + "attn.c_proj.weight"] * r,
            dst + "post_attention_layernorm.weight": state[src + "ln_2.weight"],
            dst + "mlp.gate_proj.weight": gate,
            dst + "mlp.up_proj.weight": up,
            dst + "mlp.down_proj.weight": state[src + "mlp.c_proj.weight"] * r,
        }
    if not _tied_in_hf(cfg):
        head = state.get("lm_head.weight", wte)
        out["lm_head.weight"] = head / cfg.mup_width_mult
    return {k: v.detach().to("cpu", torch.float32).contiguous().clone() for k, v in out.items()}


def _tied_in_hf(cfg: GPTConfig) -> bool:
    return cfg.tie_embeddings and cfg.mup_width_mult == 1.0


def _special_tokens(tokenizer_json: Path) -> list[str]:
    data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    return [t["content"] for t in data.get("added_tokens", []) if t.get("special")]


def _write_tokenizer(tokenizer_json: Path, out: Path, cfg: GPTConfig,
                     eos_token: str | None) -> None:
    if not tokenizer_json.is_file():
        raise UserError(
            f"tokenizer {tokenizer_json} not found: pass the run's data/tokenizer.json"
        )
    shutil.copyfile(tokenizer_json, out / "tokenizer.json")
    specials = _special_tokens(tokenizer_json)
    eos = eos_token if eos_token is not None else (specials[0] if specials else None)
    tok_cfg: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast",
                               "model_max_length": cfg.seq_len, "clean_up_tokenization_spaces":
                               False}
    if eos is not None:
        tok_cfg |= {"eos_token": eos, "bos_token": eos}
        (out / "special_tokens_map.json").write_text(
            json.dumps({"eos_token": eos, "bos_token": eos}, indent=2) + "\n")
    (out / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2) + "\n")


def _token_id(tokenizer_json: Path, token: str | None) -> int | None:
    if token is None:
        return None
    data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    for t in data.get("added_tokens", []):
        if t["content"] == token:
            return int(t["id"])
    vocab = data.get("model", {}).get("vocab", {})
    return int(vocab[token]) if isinstance(vocab, dict) and token in vocab else None


def export_hf(model_or_state: Any, cfg: GPTConfig,
              tokenizer_json_path: str | os.PathLike[str] | None,
              out_dir: str | os.PathLike[str], eos_token: str | None = None) -> Path:
    """Write a folder that ``transformers`` loads as ``LlamaForCausalLM`` (and its tokenizer).

    Args:
        model_or_state: a :class:`lmalloc.model.gpt.GPT` or its ``state_dict``.
        cfg: the model's config.
        tokenizer_json_path: the HF ``tokenizers`` file to ship (``None``: weights only).
        out_dir: the folder to write; it is replaced atomically.
        eos_token: the end-of-text token; default the tokenizer's first special token.

    Returns:
        ``out_dir``. Load it with ``AutoModelForCausalLM.from_pretrained(out_dir)`` and
        ``AutoTokenizer.from_pretrained(out_dir)``.
    """
    from safetensors.torch import save_file

    state = model_or_state.state_dict() if hasattr(model_or_state, "state_dict") \
        else dict(model_or_state)
    tensors = hf_state_dict(state, cfg)
    tok = None if tokenizer_json_path is None else Path(tokenizer_json_path)
    eos = eos_token if eos_token is not None or tok is None or not tok.is_file() \
        else next(iter(_special_tokens(tok)), None)
    eos_id = None if tok is None or not tok.is_file() else _token_id(tok, eos)
    with atomic_dir(out_dir) as tmp:
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        config = hf_config(cfg, _tied_in_hf(cfg), eos_id=eos_id, bos_id=eos_id)
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        if tok is not None:
            _write_tokenizer(tok, tmp, cfg, eos)
    return Path(out_dir)


FORMATS = ("hf",)


def export_run(run_dir: str | os.PathLike[str], fmt: str = "hf",
               out: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Export the trained model of a run (``runs/<name>`` or its ``final/``); default output
    ``<model folder>/hf``. Returns what was written."""
    from lmalloc.model.io import find_tokenizer, load_model, model_dir

    register_run_root(run_dir)  # the default output is inside it: no link out (confined)
    if fmt not in FORMATS:
        raise UserError(f"invalid format = {fmt!r}: expected one of {list(FORMATS)}")
    model, cfg = load_model(run_dir)
    target = Path(out) if out is not None else model_dir(run_dir) / "hf"
    export_hf(model, cfg, find_tokenizer(run_dir), target)
    return {"format": fmt, "out": str(target),
            "files": sorted(p.name for p in target.iterdir()),
            "architecture": "LlamaForCausalLM"}
