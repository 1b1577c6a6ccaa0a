"""Choosing a shape (depth, width, heads) for a target parameter count. Torch-free.

Published practice the rules follow:

* **Aspect ratio.** Kaplan et al. 2020 (Fig. 5) found loss nearly flat for d_model/n_layer
  between about 20 and 200 at fixed N (models of millions of parameters and up); Levine et al.
  2020 ("Limits to depth efficiencies of self-attention") show the optimal width grows faster
  than depth as N grows. Published model families follow that: GPT-2/3 small (85M
  non-embedding) have 768/12 = 64, GPT-3 1.3B 2048/24 ≈ 85, GPT-3 6.7B and 175B 128. Below
  1M parameters we measured deeper to be better (BENCHMARKS.md, "The plan checked at 10×": at
  equal compute 4×80 beat 3×96 and 2×112 by 0.26 nats; 3×48 beat 2×64; a ladder of d/L ≈ 16
  shapes gave an identifiable law where the same budget's wandering shapes did not). We aim at

      r*(N) = 16 · 2^(log10 N − 6)          for N ≤ 100M  (16 up to 1M, 32 at 10M, 64 at 100M)
      r*(N) = 64 · 2^((log10 N − 8) / 2)    above         (128 from 10B)

  clipped to [16, 128].
* **One rule for depth.** The score weighs the aspect ratio's distance from r* (in octaves,
  :data:`RATIO_WEIGHT`) against the count's (in log), so depth grows with N instead of
  wandering (it rises with N, within one layer): matching the count first let d/L swing within
  2× of its target, and depth went
  2, 3, 2, 2, 3, 4, 5, 3, 3, 6 from 100k to 1.2M parameters, which made the loss of a size
  depend on its depth more than on N.
* **Heads.** head_dim 64 (common practice since GPT-2) for d_model ≥ 512; below it
  head_dim = d_model / 8, but at least 16, so tiny models keep several heads of reasonable size.
* **Width grid.** d_model a multiple of 64 (of 16 below 256), which keeps matmuls aligned and
  head_dim an even integer (RoPE).

Counting convention: by default the target is the **non-embedding** count (Kaplan et al.'s N:
without the token embedding and the output projection; see
:func:`lmalloc.model.accounting.param_count`), which is what scaling laws are fitted in;
pass ``non_embedding=False`` to match the total count instead.
"""

from __future__ import annotations

import math
from typing import Any

from lmalloc.errors import UserError, invalid
from lmalloc.model.accounting import param_count
from lmalloc.model.config import GPTConfig

_SHAPE_FIELDS = ("vocab_size", "n_layer", "n_head", "d_model", "seq_len")


RATIO_WEIGHT = 0.5
"""Score per octave of d/L away from r*, against the count's |log| error: a shape 1.4x off in
d/L costs what a count 1.19x off does."""


def target_aspect_ratio(params: float) -> float:
    """r*(N): the d_model / n_layer we aim at for N non-embedding parameters."""
    decades = math.log10(params)
    r = (16.0 * math.pow(2.0, decades - 6.0) if decades <= 8.0
         else 64.0 * math.pow(2.0, (decades - 8.0) / 2.0))
    return min(128.0, max(16.0, r))


def heads_for(d_model: int) -> int:
    """Number of heads for a width on the grid (see the module docstring)."""
    head_dim = 64 if d_model >= 512 else max(16, d_model // 8)
    return max(1, d_model // head_dim)


def _width_grid(d: float) -> list[int]:
    """Grid widths around ``d`` (two below, two above)."""
    step = 64 if d >= 256 else 16
    lo = int(d // step) * step
    return sorted({max(16, lo + k * step) for k in (-1, 0, 1, 2)})


def _solve_width(params: float, n_layer: int, embed: float) -> float:
    """d with 12·n_layer·d² + embed·d = params (the SwiGLU/attention block is ≈ 12·d²)."""
    a, b = 12.0 * n_layer, embed
    return (-b + math.sqrt(b * b + 4 * a * params)) / (2 * a)


def shape_for(params: float, vocab_size: int, seq_len: int = 256, *,
              non_embedding: bool = True, **kw: Any) -> GPTConfig:
    """The GPT shape whose parameter count is closest to ``params``.

    Candidates: every depth, with the grid widths around the one that meets the target at that
    depth, whose aspect ratio d_model / n_layer lies within a factor 2 of r*(N) (N the
    candidate's own non-embedding count). The winner minimises
    |log(count / params)| + RATIO_WEIGHT·|log2(ratio / r*)|: the count and the ratio
    together, so depth grows with N.

    Args:
        params: target number of parameters (non-embedding unless ``non_embedding=False``).
        vocab_size: tokenizer vocabulary.
        seq_len: context length of the returned config.
        non_embedding: whether ``params`` counts non-embedding parameters (default) or all.
        **kw: other :class:`GPTConfig` fields (``dropout``, ``tie_embeddings``, ...).

    >>> cfg = shape_for(85e6, vocab_size=50304)
    >>> cfg.n_layer, cfg.d_model, cfg.n_head
    (12, 768, 12)
    """
    if not (isinstance(params, int | float) and math.isfinite(params) and params > 0):
        raise invalid("params", params, "a positive, finite number of parameters")
    fixed = sorted(set(kw) & set(_SHAPE_FIELDS))
    if fixed:
        raise UserError(f"shape_for chooses {fixed} itself; pass only other GPTConfig fields")
    tied = kw.get("tie_embeddings", True)
    embed = 0.0 if non_embedding else float(vocab_size) * (1 if tied else 2)
    best: GPTConfig | None = None
    best_score = math.inf
    for n_layer in range(1, 257):
        for d_model in _width_grid(_solve_width(params, n_layer, embed)):
            cfg = GPTConfig(vocab_size=vocab_size, n_layer=n_layer, n_head=heads_for(d_model),
                            d_model=d_model, seq_len=seq_len, **kw)
            ratio = d_model / n_layer
            r_star = target_aspect_ratio(param_count(cfg, non_embedding=True))
            if not max(16.0, r_star / 2) <= ratio <= 2 * r_star:
                continue
            count = param_count(cfg, non_embedding=non_embedding)
            score = abs(math.log(count / params)) + RATIO_WEIGHT * abs(
                math.log2(ratio / r_star))
            if score < best_score:
                best, best_score = cfg, score
    if best is None:
        raise UserError(
            f"no GPT shape has about {params:.3g} parameters with vocab_size {vocab_size}: "
            "either the embedding alone is larger (use a larger target or count non-embedding "
            "parameters) or it needs more than 256 layers"
        )
    return best
