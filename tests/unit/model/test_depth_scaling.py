"""Depth scaling (CompleteP / depth-μP): off by default, exact at the base depth, and the
multipliers, init and learning rates the rule states."""

from __future__ import annotations

import math

import pytest
import torch

from lmalloc.errors import UserError
from lmalloc.model.config import GPTConfig
from lmalloc.model.export import hf_state_dict
from lmalloc.model.gpt import GPT


def _cfg(**kw: object) -> GPTConfig:
    base = dict(vocab_size=64, n_layer=4, n_head=4, d_model=64, seq_len=16, mup_base_width=32)
    return GPTConfig(**{**base, **kw})  # type: ignore[arg-type]


def test_off_by_default_and_dict_unchanged() -> None:
    cfg = _cfg()
    assert cfg.residual_mult == 1.0 and cfg.depth_mult == 1.0
    assert "mup_base_depth" not in cfg.to_dict() and "depth_alpha" not in cfg.to_dict()
    deep = _cfg(mup_base_depth=2, depth_alpha=0.5)
    assert GPTConfig.from_dict(deep.to_dict()) == deep


def test_at_the_base_depth_it_is_the_width_only_model() -> None:
    idx = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    plain = GPT(_cfg())(idx)[0]
    torch.manual_seed(0)
    same = GPT(_cfg(mup_base_depth=4))(idx)[0]
    assert torch.equal(plain, same)


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_branch_multiplier_init_and_lr(alpha: float) -> None:
    torch.manual_seed(0)
    cfg = _cfg(n_layer=8, mup_base_depth=2, depth_alpha=alpha)
    model = GPT(cfg)
    assert math.isclose(cfg.residual_mult, 4.0**-alpha)
    blk = model.transformer.h[0]
    assert blk.attn.branch_mult == blk.mlp.branch_mult == cfg.residual_mult
    # the residual projections keep the base depth's init (the multiplier carries depth)
    std = float(blk.mlp.c_proj.weight.detach().std())
    want = 0.02 / math.sqrt(2.0) / math.sqrt(2 * 2)  # init_std / sqrt(m) / sqrt(2 L_base)
    assert abs(std / want - 1) < 0.1
    hidden = model.optim_groups(1e-2, 0.1)[0]
    assert math.isclose(hidden["lr"], 1e-2 / 2.0 * 4.0 ** (alpha - 1))  # / width m, depth rule


def test_branch_output_is_scaled() -> None:
    torch.manual_seed(0)
    cfg = _cfg(n_layer=8, mup_base_depth=2)
    model = GPT(cfg)
    x = torch.randn(1, 16, 64)
    mlp = model.transformer.h[0].mlp
    assert torch.allclose(mlp(x), mlp.c_proj(torch.nn.functional.silu(
        mlp.c_fc(x).chunk(2, -1)[0]) * mlp.c_fc(x).chunk(2, -1)[1]) * 0.25, atol=1e-6)


def test_export_folds_the_multiplier() -> None:
    torch.manual_seed(0)
    cfg = _cfg(n_layer=8, mup_base_depth=2)
    state = GPT(cfg).state_dict()
    hf = hf_state_dict(state, cfg)
    assert torch.allclose(hf["model.layers.0.mlp.down_proj.weight"],
                          state["transformer.h.0.mlp.c_proj.weight"] * 0.25)


def test_bad_alpha_is_a_user_error() -> None:
    with pytest.raises(UserError, match="depth_alpha"):
        _cfg(mup_base_depth=2, depth_alpha=2.0)
