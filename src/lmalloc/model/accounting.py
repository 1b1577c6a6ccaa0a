"""Exact parameter and FLOP counts of :class:`lmalloc.model.gpt.GPT`. Torch-free.

Parameters are counted exactly (tests compare with ``sum(p.numel())`` of the module).

FLOPs follow the convention torch's ``FlopCounterMode`` measures, which is also Chinchilla's
(Hoffmann et al. 2022, Appendix F): a matmul of (m×k)·(k×n) costs 2·m·k·n; attention costs
its two matmuls (QKᵀ and AV) over the *full* T×T score matrix, 4·T·d_model per token per layer
in the forward pass, without halving for the causal mask (kernels that skip the masked half
exist, but the count stays comparable across kernels); the backward pass costs twice the
forward. Not counted (as in the counter): the embedding lookup (a gather), norms, RoPE,
SwiGLU's elementwise product, softmax, the loss and the optimizer: O(d) per token, under 1% at
any realistic width.

So with N_mm the weights that take part in a matmul (every block matrix plus the V·d output
projection, which is a matmul even when tied to the embedding):

    forward_flops_per_token = 2·N_mm + 4·n_layer·T·d_model
    train_flops_per_token   = 3 · forward_flops_per_token = 6·N_mm + 12·n_layer·T·d_model
"""

from __future__ import annotations

from lmalloc.model.config import GPTConfig


def _block_matmul_params(cfg: GPTConfig) -> int:
    """Weights of one block's matrices: fused QKV, attention output, fused gate/up, down."""
    d, hd = cfg.d_model, cfg.head_dim
    qkv = d * (cfg.n_head + 2 * cfg.kv_heads) * hd
    attn_out = cfg.n_head * hd * d
    mlp = 3 * d * cfg.ff_dim
    return qkv + attn_out + mlp


def param_count(cfg: GPTConfig, non_embedding: bool = False) -> int:
    """Number of parameters of ``GPT(cfg)``.

    Args:
        cfg: the model shape.
        non_embedding: count without the token embedding and the output projection (Kaplan et
            al. 2020's N: both V·d matrices are left out, tied or not, so the count is the
            same for tied and untied models). Norm weights stay in.

    >>> param_count(GPTConfig(vocab_size=100, n_layer=1, n_head=2, d_model=16, d_ff=32))
    4208
    """
    d = cfg.d_model
    blocks = cfg.n_layer * (_block_matmul_params(cfg) + 2 * d)  # + two RMSNorm weights
    non_emb = blocks + d  # + final RMSNorm
    if non_embedding:
        return non_emb
    embeddings = cfg.vocab_size * d * (1 if cfg.tie_embeddings else 2)
    return non_emb + embeddings


def matmul_params(cfg: GPTConfig) -> int:
    """Weights that take part in a matmul per token (blocks + the output projection)."""
    return cfg.n_layer * _block_matmul_params(cfg) + cfg.vocab_size * cfg.d_model


def attention_flops_per_token(cfg: GPTConfig, seq_len: int | None = None) -> float:
    """Forward FLOPs of QKᵀ and AV per token: 4·n_layer·T·d_model (full T×T, see module doc)."""
    t = cfg.seq_len if seq_len is None else seq_len
    return 4.0 * cfg.n_layer * t * cfg.n_head * cfg.head_dim


def forward_flops_per_token(cfg: GPTConfig, seq_len: int | None = None) -> float:
    """Forward FLOPs per token at context ``seq_len`` (default ``cfg.seq_len``)."""
    return 2.0 * matmul_params(cfg) + attention_flops_per_token(cfg, seq_len)


def train_flops_per_token(cfg: GPTConfig, seq_len: int | None = None) -> float:
    """Forward + backward FLOPs per training token: 3× the forward (6·N_mm + attention)."""
    return 3.0 * forward_flops_per_token(cfg, seq_len)


def block_linear_shapes(cfg: GPTConfig) -> list[tuple[int, int]]:
    """``(out, in)`` of one block's linear layers: fused QKV, attention output, fused
    gate/up, down (the layers weight-only quantization replaces)."""
    d, hd = cfg.d_model, cfg.head_dim
    return [((cfg.n_head + 2 * cfg.kv_heads) * hd, d), (d, cfg.n_head * hd),
            (2 * cfg.ff_dim, d), (d, cfg.ff_dim)]


def stored_bytes(cfg: GPTConfig, bits: int | None = None, group_size: int = 64,
                 symmetric: bool = False, float_bytes: int = 4) -> int:
    """Bytes of the model's stored weights, exactly as ``lmalloc compress`` counts them.

    ``bits=None``: every weight in floats of ``float_bytes``. Otherwise every block linear
    layer is weight-only quantized group-wise (see :mod:`lmalloc.compress.quantize`): packed
    codes ``ceil(out·in·bits/8)``, an fp16 scale per group and, for asymmetric formats, a uint8
    zero point per group; embeddings, the output projection and norms stay in floats.

    >>> cfg = GPTConfig(vocab_size=100, n_layer=1, n_head=2, d_model=16, d_ff=32)
    >>> stored_bytes(cfg) == 4 * param_count(cfg)
    True
    """
    if bits is None:
        return float_bytes * param_count(cfg)
    quantized = 0
    linear_params = 0
    for out, inp in block_linear_shapes(cfg):
        groups = out * -(-inp // group_size)
        quantized += -(-out * inp * bits // 8) + groups * (2 if symmetric else 3)
        linear_params += out * inp
    floats = param_count(cfg) - cfg.n_layer * linear_params
    return cfg.n_layer * quantized + float_bytes * floats
