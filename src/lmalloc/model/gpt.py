"""A decoder-only GPT: RoPE, RMSNorm, SwiGLU, grouped-query attention, no biases.

The whole architecture in one file, nothing else (no I/O, no training). Module names follow
GPT-2 / nanoGPT (``transformer.h.{i}.attn.c_attn``) and the math follows Llama (RoPE in the
``rotate_half`` convention of Hugging Face's Llama, SwiGLU, RMSNorm), so exporting to
``LlamaForCausalLM`` is a key map plus splitting the fused QKV and gate/up matrices.

Speed: one fused QKV matmul, one fused gate/up matmul, RoPE from precomputed cos/sin tables,
``scaled_dot_product_attention`` with ``is_causal=True`` (and native GQA), loss via one
``cross_entropy`` over (B·T, V) (on CPU training: fused with the output projection, chunked).

Activation checkpointing (``model.activation_checkpointing = True``; the trainer sets it from
``TrainConfig.activation_checkpointing``): each block runs under non-reentrant
``torch.utils.checkpoint``, so only block inputs are saved and each block's forward runs
again in backward (same numbers: dropout's RNG state is replayed).

Init (GPT-2): every matrix ~ N(0, init_std²); the residual output projections (``attn.c_proj``,
``mlp.c_proj``) are scaled by 1/sqrt(2·n_layer) (Radford et al. 2019, §2.3).

μP (``cfg.mup_base_width`` set; Yang et al. 2022, "Tensor Programs V", Table 3 with Adam, in
the simplified form of Cerebras-GPT / μTransfer, with width multiplier m = d_model / base):

* hidden matrices (QKV, attention output, gate/up, down): init std = init_std / sqrt(m)
  (∝ 1/sqrt(fan_in)), and Adam learning rate lr / m (``optim_groups``);
* embedding, norms: init and learning rate unchanged (vector-like);
* output logits multiplied by 1/m (the readout weight then keeps init and lr unchanged,
  tied or not);
* attention scores scaled by 1/d_head instead of 1/sqrt(d_head).

At m = 1 μP equals the standard parametrisation except for the attention scale.

Depth scaling (``cfg.mup_base_depth`` set; CompleteP, Dey et al. 2025, arXiv:2505.01618, with
``depth_alpha = 1``; depth-μP, Yang et al. 2023 / Bordelon et al. 2024, with 0.5), depth
multiplier ``L_m = n_layer / mup_base_depth``:

* every residual branch (attention and MLP output) is multiplied by ``L_m ** -depth_alpha``;
* the residual projections' init is the base depth's, ``init_std / sqrt(2 mup_base_depth)``
  (the branch multiplier, not the init, now accounts for depth);
* hidden matrices' Adam learning rate is multiplied by ``L_m ** (depth_alpha - 1)`` (1 under
  CompleteP, ``1 / sqrt(L_m)`` under depth-μP).

At ``n_layer = mup_base_depth`` this is the width-only parametrisation exactly.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from lmalloc.model.config import GPTConfig
from lmalloc.model.loss import LinearCrossEntropyCPU


def rope_tables(head_dim: int, length: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and signed sin tables (length, head_dim) in the rotate_half layout of HF Llama:
    frequencies repeated over the two halves of the head dimension; the sin table carries the
    sign of rotate_half (-sin on the first half), which saves a negation per call."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(length, dtype=torch.float64), inv_freq)  # (T, hd/2)
    cos = torch.cat((angles.cos(), angles.cos()), dim=-1)  # (T, hd)
    sin = torch.cat((-angles.sin(), angles.sin()), dim=-1)  # (T, hd)
    return cos.float(), sin.float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (i, i + hd/2) of x (..., T, heads, hd) by position-dependent angles:
    x·cos + rotate_half(x)·sin with rotate_half(x) = (-x2, x1); cos, sin are (T, 1, hd)."""
    x1, x2 = x.chunk(2, dim=-1)  # (..., hd/2) each
    swapped = torch.cat((x2, x1), dim=-1)  # (..., hd); rotate_half(x) = swapped * sign
    return x * cos + swapped * sin  # sin is signed, see rope_tables


_FUSED_RMS = hasattr(torch.ops.aten, "_fused_rms_norm")


def _cpu_train(x: torch.Tensor) -> bool:
    """Whether the CPU autograd Functions below apply: fp32 on CPU with autograd recording."""
    return x.device.type == "cpu" and torch.is_grad_enabled() and x.dtype == torch.float32


class _RMSNormCPU(torch.autograd.Function):
    """RMSNorm with torch's fused forward kernel and an analytic backward: on CPU, torch's
    composite RMSNorm backward is several times slower (measured fwd+bwd at (8, 128, 384),
    2 threads: composite 4.3 ms, this ~1.1 ms).

    y = x·r·w with r = 1/sqrt(mean(x²) + eps);
    ∂w = Σ g·x·r;  ∂x = g·w·r − x·r²·mean(g·w·r·x) (= r·(g·w − x̂·mean(g·w·x̂)), x̂ = x·r).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
        if _FUSED_RMS:
            y, r = torch.ops.aten._fused_rms_norm(x, [x.shape[-1]], w, eps)  # (..., C), (..., 1)
        else:  # torch < 2.8 has no fused kernel
            r = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
            y = x * r * w
        ctx.save_for_backward(x, r, w)
        return y  # type: ignore[no-any-return]

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        x, r, w = ctx.saved_tensors
        C = x.shape[-1]
        gr = g * r  # (..., C)
        gw = (gr * x).reshape(-1, C).sum(0)  # (C,)
        gxr = gr * w  # (..., C)
        coef = torch.linalg.vecdot(gxr, x).unsqueeze(-1) * (r * r / C)  # (..., 1)
        return torch.addcmul(gxr, x, coef, value=-1.0), gw, None


class _RopeQKVCPU(torch.autograd.Function):
    """Split the fused QKV projection (B, T, H + 2KV, hd) into q, k (rotated by RoPE) and v,
    all three views of one output buffer, and write the backward's three gradients into one
    buffer again. Against the composite (chunk, cat, mul, add, split) this saves three
    full-size concatenations per layer in the backward and keeps no activations: the
    backward is the inverse rotation (measured ~6 % of a 2 × 128 training step, 2 threads).

    With c, s = cos, sin of each pair's angle: y1 = x1·c − x2·s, y2 = x2·c + x1·s
    (HF Llama's rotate_half layout); ∂x1 = g1·c + g2·s, ∂x2 = g2·c − g1·s.
    """

    @staticmethod
    def forward(ctx: Any, qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                nq: int, nkv: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        half, nqk = qkv.shape[-1] // 2, nq + nkv
        c, s = cos[..., :half], sin[..., half:]  # (T, 1, hd/2); sin table is signed
        out = torch.empty_like(qkv)  # (B, T, H + 2KV, hd)
        _rotate(qkv[:, :, :nqk], out[:, :, :nqk], c, s)
        out[:, :, nqk:] = qkv[:, :, nqk:]
        ctx.save_for_backward(c, s)
        ctx.nq, ctx.nqk = nq, nqk
        return out[:, :, :nq], out[:, :, nq:nqk], out[:, :, nqk:]

    @staticmethod
    def backward(ctx: Any, gq: torch.Tensor, gk: torch.Tensor, gv: torch.Tensor,
                 ) -> tuple[torch.Tensor, None, None, None, None]:
        c, s = ctx.saved_tensors
        nq, nqk = ctx.nq, ctx.nqk
        B, T, _, hd = gq.shape
        gqkv = gq.new_empty(B, T, nqk + gv.shape[2], hd)  # (B, T, H + 2KV, hd)
        _rotate(gq, gqkv[:, :, :nq], c, -s)  # the inverse rotation
        _rotate(gk, gqkv[:, :, nq:nqk], c, -s)
        gqkv[:, :, nqk:] = gv
        return gqkv, None, None, None, None


def _rotate(x: torch.Tensor, out: torch.Tensor, c: torch.Tensor, s: torch.Tensor) -> None:
    """out = x rotated by angles (c, s) per channel pair (i, i + hd/2), written in place."""
    half = x.shape[-1] // 2
    x1, x2, o1, o2 = x[..., :half], x[..., half:], out[..., :half], out[..., half:]
    torch.mul(x1, c, out=o1).addcmul_(x2, s, value=-1.0)
    torch.mul(x2, c, out=o2).addcmul_(x1, s)


class _SwiGLUCPU(torch.autograd.Function):
    """silu(gate)·up from the fused [gate; up] projection (..., 2F), with a backward that
    writes both gradients into one (..., 2F) buffer instead of concatenating them.

    ∂up = g·silu(gate); ∂gate = silu'(gate)·g·up.
    """

    @staticmethod
    def forward(ctx: Any, h: torch.Tensor) -> torch.Tensor:
        gate, up = h.chunk(2, dim=-1)  # (..., F) each
        sg = F.silu(gate)
        ctx.save_for_backward(gate, up, sg)
        return sg * up

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        gate, up, sg = ctx.saved_tensors
        gh = g.new_empty(*g.shape[:-1], 2 * g.shape[-1])  # (..., 2F)
        ggate, gup = gh.chunk(2, dim=-1)
        torch.mul(g, sg, out=gup)
        torch.ops.aten.silu_backward.grad_input(g * up, gate, grad_input=ggate)
        return gh


class RMSNorm(nn.RMSNorm):
    """``nn.RMSNorm`` (same parameters and math), with the faster backward above on CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _cpu_train(x):
            eps = self.eps if self.eps is not None else torch.finfo(x.dtype).eps
            out: torch.Tensor = _RMSNormCPU.apply(x, self.weight, eps)
            return out
        return super().forward(x)


class KVCache:
    """Keys and values of past positions, preallocated for ``max_len`` positions."""

    def __init__(self, cfg: GPTConfig, batch_size: int, max_len: int,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        shape = (batch_size, cfg.kv_heads, max_len, cfg.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]
        self.max_len = max_len
        self.pos = 0  # number of positions already stored

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor,
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, KV, T, hd) at the current position; return all keys and values."""
        end = self.pos + k.size(2)
        self.k[layer][:, :, self.pos:end] = k
        self.v[layer][:, :, self.pos:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]  # (B, KV, end, hd)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig, layer: int) -> None:
        super().__init__()
        self.layer, self.n_head, self.n_kv = layer, cfg.n_head, cfg.kv_heads
        self.head_dim = cfg.head_dim
        self.c_attn = nn.Linear(cfg.d_model, (cfg.n_head + 2 * cfg.kv_heads) * cfg.head_dim,
                                bias=False)
        self.c_proj = nn.Linear(cfg.n_head * cfg.head_dim, cfg.d_model, bias=False)
        self.c_proj.residual = True  # type: ignore[assignment]  # marks 1/sqrt(2L) init
        self.dropout = cfg.dropout
        self.resid_dropout = nn.Dropout(cfg.dropout)
        mup = cfg.mup_base_width is not None
        self.scale = 1.0 / self.head_dim if mup else 1.0 / math.sqrt(self.head_dim)
        self.branch_mult = cfg.residual_mult  # depth scaling (1 without it)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: KVCache | None = None) -> torch.Tensor:
        B, T, _ = x.shape  # (B, T, C)
        hd, nq, nkv = self.head_dim, self.n_head, self.n_kv
        qkv = self.c_attn(x).view(B, T, nq + 2 * nkv, hd)  # (B, T, H + 2KV, hd)
        cos, sin = cos.to(qkv.dtype)[:, None], sin.to(qkv.dtype)[:, None]  # (T, 1, hd)
        if _cpu_train(qkv):
            q, k, v = _RopeQKVCPU.apply(qkv, cos, sin, nq, nkv)  # (B, T, H|KV, hd)
        else:
            qk, v = torch.split(qkv, [nq + nkv, nkv], dim=2)
            qk = apply_rope(qk, cos, sin)  # (B, T, H + KV, hd), one pass for q and k
            q, k = torch.split(qk, [nq, nkv], dim=2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H|KV, T, hd)
        causal, mask = True, None
        if cache is not None:
            past = cache.pos
            k, v = cache.update(self.layer, k, v)  # (B, KV, past + T, hd)
            if past > 0:  # queries at past..past+T-1 see keys up to their own position
                causal = False
                if T > 1:
                    qpos = torch.arange(past, past + T, device=x.device)[:, None]
                    mask = torch.arange(past + T, device=x.device)[None, :] <= qpos
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal, scale=self.scale,
            dropout_p=self.dropout if self.training else 0.0, enable_gqa=nkv != nq,
        )  # (B, H, T, hd)
        y = y.transpose(1, 2).reshape(B, T, nq * hd)  # (B, T, C)
        out: torch.Tensor = self.resid_dropout(self.c_proj(y))  # (B, T, C)
        return out * self.branch_mult if self.branch_mult != 1.0 else out


class MLP(nn.Module):
    """SwiGLU (Shazeer 2020): down(silu(gate(x)) · up(x)), gate and up in one matmul."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(cfg.d_model, 2 * cfg.ff_dim, bias=False)  # [gate; up]
        self.c_proj = nn.Linear(cfg.ff_dim, cfg.d_model, bias=False)
        self.c_proj.residual = True  # type: ignore[assignment]
        self.dropout = nn.Dropout(cfg.dropout)
        self.branch_mult = cfg.residual_mult  # depth scaling (1 without it)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c_fc(x)  # (B, T, 2F) = [gate; up]
        if _cpu_train(h):
            a = _SwiGLUCPU.apply(h)  # (B, T, F)
        else:
            gate, up = h.chunk(2, dim=-1)  # (B, T, F) each
            a = F.silu(gate) * up
        out: torch.Tensor = self.dropout(self.c_proj(a))  # (B, T, C)
        return out * self.branch_mult if self.branch_mult != 1.0 else out


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig, layer: int) -> None:
        super().__init__()
        self.ln_1 = RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.attn = CausalSelfAttention(cfg, layer)
        self.ln_2 = RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cos, sin, cache)  # (B, T, C)
        out: torch.Tensor = x + self.mlp(self.ln_2(x))  # (B, T, C)
        return out


class Transformer(nn.Module):
    """The trunk (GPT-2's ``transformer``): embedding, blocks, final norm."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.h = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.ln_f = RMSNorm(cfg.d_model, eps=cfg.norm_eps)


class GPT(nn.Module):
    """The language model: ``forward(idx, targets=None, cache=None) -> (logits, loss)``."""

    rope_cos: torch.Tensor
    rope_sin: torch.Tensor

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.transformer = Transformer(cfg)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.transformer.wte.weight
        self.logit_scale = 1.0 / cfg.mup_width_mult  # μP output multiplier (1 in SP)
        self.activation_checkpointing = False  # a training choice (TrainConfig), not the shape
        cos, sin = rope_tables(cfg.head_dim, cfg.seq_len, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)  # (T, hd)
        self.register_buffer("rope_sin", sin, persistent=False)  # (T, hd)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """GPT-2 init (μP-scaled hidden matrices when configured); see the module docstring."""
        cfg = self.cfg
        hidden_std = cfg.init_std / math.sqrt(cfg.mup_width_mult)
        for module in self.modules():
            if isinstance(module, nn.Linear) and module is not self.lm_head:
                std = hidden_std
                if getattr(module, "residual", False):
                    std /= math.sqrt(2 * (cfg.mup_base_depth or cfg.n_layer))
                nn.init.normal_(module.weight, mean=0.0, std=std)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=cfg.init_std)
            elif isinstance(module, nn.RMSNorm):
                nn.init.ones_(module.weight)
        if not cfg.tie_embeddings:
            nn.init.normal_(self.lm_head.weight, mean=0.0, std=cfg.init_std)

    def new_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        """An empty KV cache for up to ``max_len`` (default and at most ``seq_len``) positions."""
        max_len = self.cfg.seq_len if max_len is None else min(max_len, self.cfg.seq_len)
        w = self.lm_head.weight
        return KVCache(self.cfg, batch_size, max_len, device=w.device, dtype=w.dtype)

    def hidden_states(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """The trunk's output after the final norm, (B, T, C): what the LM head reads (and what
        a task head reads, e.g. :class:`lmalloc.evaluate.finetune.GPTClassifier`)."""
        T = idx.size(1)
        start = 0 if cache is None else cache.pos
        if start + T > self.rope_cos.size(0):
            raise ValueError(f"sequence of {start + T} tokens exceeds seq_len {self.cfg.seq_len}")
        cos = self.rope_cos[start:start + T]  # (T, hd)
        sin = self.rope_sin[start:start + T]  # (T, hd)
        x = self.transformer.drop(self.transformer.wte(idx))  # (B, T, C)
        recompute = self.activation_checkpointing and cache is None and torch.is_grad_enabled()
        for block in self.transformer.h:
            if recompute:  # keep only the block's input; rerun its forward in backward
                x = checkpoint(block, x, cos, sin, use_reentrant=False)  # (B, T, C)
            else:
                x = block(x, cos, sin, cache)  # (B, T, C)
        if cache is not None:
            cache.pos += T
        out: torch.Tensor = self.transformer.ln_f(x)  # (B, T, C)
        return out

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                cache: KVCache | None = None) -> tuple[Any, torch.Tensor | None]:
        """Logits (B, T, V) for token ids ``idx`` (B, T), and the mean cross entropy against
        ``targets`` (B, T) when given (ids < 0 are ignored). With ``cache``, ``idx`` continues
        the sequence stored in it (positions ``cache.pos`` onwards) and is appended to it.

        Training on CPU in fp32 (targets given, autograd recording, no autocast) returns
        ``(None, loss)``: the loss is computed chunk by chunk without materializing the logits
        (see :class:`lmalloc.model.loss.LinearCrossEntropyCPU`); for logits, call without
        targets or under ``torch.no_grad()``."""
        B, T = idx.shape
        x = self.hidden_states(idx, cache)  # (B, T, C)
        if targets is not None and _cpu_train(x) and not torch.is_autocast_enabled("cpu"):
            loss = LinearCrossEntropyCPU.apply(x.reshape(B * T, -1), self.lm_head.weight,
                                                targets.reshape(B * T), self.logit_scale)
            return None, loss
        logits = self.lm_head(x)  # (B, T, V)
        if self.logit_scale != 1.0:
            logits = logits * self.logit_scale
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.view(B * T, -1).float(), targets.reshape(B * T),
                               ignore_index=-1)
        return logits, loss

    def optim_groups(self, lr: float, weight_decay: float,
                     decay_embeddings: bool = False) -> list[dict[str, Any]]:
        """AdamW parameter groups.

        Weight decay only on the block matrices (and an untied output projection); never on
        norms, nor on the embedding unless ``decay_embeddings``. Under μP the hidden matrices
        get learning rate lr / m (m = d_model / mup_base_width), times
        ``L_m ** (depth_alpha - 1)`` with depth scaling; everything else keeps ``lr``.
        Each group carries ``lr_mult`` (its lr relative to ``lr``) for schedules.
        """
        m = self.cfg.mup_width_mult / self.cfg.depth_mult ** (self.cfg.depth_alpha - 1.0)
        wte = self.transformer.wte.weight
        hidden = [p for n, p in self.transformer.h.named_parameters() if p.dim() >= 2]
        hidden_ids = {id(p) for p in hidden}
        embed: list[torch.Tensor] = [wte]
        vector: list[torch.Tensor] = []
        readout: list[torch.Tensor] = []
        for p in self.parameters():  # parameters() yields a tied weight once
            if p is wte or id(p) in hidden_ids:
                continue
            (readout if p is self.lm_head.weight else vector).append(p)
        groups = [
            {"params": hidden, "weight_decay": weight_decay, "lr": lr / m, "lr_mult": 1.0 / m},
            {"params": readout, "weight_decay": weight_decay, "lr": lr, "lr_mult": 1.0},
            {"params": embed, "weight_decay": weight_decay if decay_embeddings else 0.0,
             "lr": lr, "lr_mult": 1.0},
            {"params": vector, "weight_decay": 0.0, "lr": lr, "lr_mult": 1.0},
        ]
        return [g for g in groups if g["params"]]
