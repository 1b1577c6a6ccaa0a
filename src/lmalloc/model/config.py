"""The shape of a GPT: one frozen, validated dataclass. Torch-free.

Names follow the papers (``n_layer``, ``n_head``, ``d_model``) so a config reads like a row of
Table A9 in Chinchilla or Table 1 in GPT-3. Derived quantities (``head_dim``, ``kv_heads``,
``ff_dim``) are properties, so the stored dict stays minimal and round-trips exactly.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from lmalloc.errors import UserError, invalid


def default_ff_dim(d_model: int) -> int:
    """SwiGLU hidden width: 8/3·d_model (so the three SwiGLU matrices hold the same 8·d² weights
    as a 4·d GELU MLP, Shazeer 2020), rounded up to a multiple of 64, or of 16 when
    d_model < 256 (so tiny models are not inflated by the rounding)."""
    multiple = 64 if d_model >= 256 else 16
    return multiple * math.ceil(8 * d_model / 3 / multiple)


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


_OPTIONAL_DEFAULTS: dict[str, Any] = {"mup_base_depth": None, "depth_alpha": 1.0}


@dataclass(frozen=True)
class GPTConfig:
    """A decoder-only transformer (RoPE, RMSNorm, SwiGLU, no biases).

    Attributes:
        vocab_size: number of token ids (the tokenizer's vocabulary).
        n_layer: transformer blocks.
        n_head: query heads; must divide ``d_model``, and ``d_model / n_head`` must be even
            (rotary embeddings rotate pairs of channels).
        d_model: residual-stream width.
        n_kv_head: key/value heads (grouped-query attention); ``None`` means ``n_head``.
            Must divide ``n_head``.
        d_ff: SwiGLU hidden width; ``None`` means :func:`default_ff_dim`.
        seq_len: context length the model is trained at (and the RoPE table's length).
        dropout: dropout on embeddings, attention weights and residual branches, in [0, 1).
        tie_embeddings: share the input embedding with the output projection.
        rope_theta: RoPE base frequency.
        norm_eps: RMSNorm epsilon.
        init_std: standard deviation of the normal init (GPT-2: 0.02).
        mup_base_width: when set, use μP (see :mod:`lmalloc.model.gpt`) with this base width:
            hyperparameters tuned at ``d_model = mup_base_width`` transfer to wider models.
        mup_base_depth: when set, also scale with depth (CompleteP / depth-μP, see
            :mod:`lmalloc.model.gpt`): residual branches are multiplied by
            ``(mup_base_depth / n_layer) ** depth_alpha``, so hyperparameters tuned at
            ``n_layer = mup_base_depth`` transfer to deeper models. Off by default.
        depth_alpha: the depth exponent: 1 is CompleteP (Dey et al. 2025), 0.5 depth-μP
            (Yang et al. 2023); only used with ``mup_base_depth``.
    """

    vocab_size: int
    n_layer: int
    n_head: int
    d_model: int
    n_kv_head: int | None = None
    d_ff: int | None = None
    seq_len: int = 256
    dropout: float = 0.0
    tie_embeddings: bool = True
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    init_std: float = 0.02
    mup_base_width: int | None = None
    mup_base_depth: int | None = None
    depth_alpha: float = 1.0

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_layer", "n_head", "d_model", "seq_len"):
            value = getattr(self, name)
            if not _is_int(value) or value <= 0:
                raise invalid(f"model.{name}", value, "a positive integer")
        for name in ("n_kv_head", "d_ff", "mup_base_width", "mup_base_depth"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value <= 0):
                raise invalid(f"model.{name}", value, "a positive integer or null (default)")
        for name in ("rope_theta", "norm_eps", "init_std"):
            value = getattr(self, name)
            if not _is_num(value) or value <= 0:
                raise invalid(f"model.{name}", value, "a positive number")
        if not _is_num(self.depth_alpha) or not 0.5 <= self.depth_alpha <= 1.0:
            raise invalid("model.depth_alpha", self.depth_alpha,
                          "a number in [0.5, 1] (1: CompleteP, 0.5: depth-μP)")
        if not _is_num(self.dropout) or not 0 <= self.dropout < 1:
            raise invalid("model.dropout", self.dropout, "a number in [0, 1)")
        if not isinstance(self.tie_embeddings, bool):
            raise invalid("model.tie_embeddings", self.tie_embeddings, "true or false")
        self._check_heads()

    def _check_heads(self) -> None:
        if self.d_model % self.n_head:
            divisors = [h for h in range(1, self.d_model + 1) if self.d_model % h == 0]
            raise invalid("model.n_head", self.n_head,
                          f"a divisor of d_model = {self.d_model} (one of {divisors[:12]}...)")
        if self.head_dim % 2:
            raise UserError(
                f"invalid model.n_head = {self.n_head}: head_dim = d_model / n_head = "
                f"{self.head_dim} must be even for rotary position embeddings"
            )
        if self.n_head % self.kv_heads:
            divisors = [h for h in range(1, self.n_head + 1) if self.n_head % h == 0]
            raise invalid("model.n_kv_head", self.n_kv_head,
                          f"a divisor of n_head = {self.n_head} (one of {divisors})")

    # -- derived ----------------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def kv_heads(self) -> int:
        return self.n_head if self.n_kv_head is None else self.n_kv_head

    @property
    def ff_dim(self) -> int:
        return default_ff_dim(self.d_model) if self.d_ff is None else self.d_ff

    @property
    def mup_width_mult(self) -> float:
        """d_model / mup_base_width (1.0 without μP)."""
        return 1.0 if self.mup_base_width is None else self.d_model / self.mup_base_width

    @property
    def depth_mult(self) -> float:
        """n_layer / mup_base_depth (1.0 without depth scaling)."""
        return 1.0 if self.mup_base_depth is None else self.n_layer / self.mup_base_depth

    @property
    def residual_mult(self) -> float:
        """Multiplier of every residual branch: ``depth_mult ** -depth_alpha`` (1 when off)."""
        return self.depth_mult ** -self.depth_alpha

    # -- (de)serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The fields; the depth-scaling ones only when set, so configs without it (every
        stored run, plan and checkpoint before it existed) keep their exact dicts."""
        d = asdict(self)
        for name, default in _OPTIONAL_DEFAULTS.items():
            if d[name] == default:
                del d[name]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GPTConfig:
        """Build from :meth:`to_dict` output; unknown keys are a :class:`UserError`."""
        if not isinstance(d, dict):
            raise invalid("model", d, "a table of GPTConfig fields")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UserError(
                f"unknown model config field(s) {unknown}: allowed are {sorted(known)}"
            )
        missing = sorted(f.name for f in fields(cls) if f.name in
                         ("vocab_size", "n_layer", "n_head", "d_model") and f.name not in d)
        if missing:
            raise UserError(f"model config is missing required field(s) {missing}")
        return cls(**d)
