"""Loss, perplexity and bits per byte of a language model on a token split or a text file.

The trainer validates with this (it is the one loss-on-held-out-windows code, so that a run's
reported validation loss and ``lmalloc eval`` agree), hence it sits in ``train``, below
``evaluate``; :mod:`lmalloc.evaluate.perplexity` is its public face for a finished run.

Bits per byte makes models with different tokenizers comparable:

    bpb = (mean token cross-entropy in nats × tokens evaluated / ln 2) / bytes evaluated

For a prepared split, the bytes behind the evaluated tokens are estimated as
``split.num_bytes × tokens_evaluated / split.num_tokens`` (the split's UTF-8 size in
proportion; exact when the whole split is evaluated, up to the few tokens that do not fill a
last window). For a text file, the text is tokenized with the run's ``tokenizer.json`` and the
bytes are its UTF-8 bytes, scaled the same way when ``max_tokens`` cuts it.

Windows do not overlap: each token is predicted once, with the context since the start of its
window (the standard non-overlapping perplexity; a sliding window would give lower values).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lmalloc.data.shards import TokenSplit
from lmalloc.errors import UserError


def text_windows(ids: np.ndarray, batch_size: int, seq_len: int, rank: int = 0,
                 world_size: int = 1) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Non-overlapping windows covering every token of ``ids`` but the first; whole windows
    are batched, the shorter last one comes alone. Window ``i`` goes to rank
    ``i % world_size``."""
    spans = [(o, min(o + seq_len, len(ids) - 1)) for o in range(0, len(ids) - 1, seq_len)]
    mine = spans[rank::world_size]
    full = [s for s in mine if s[1] - s[0] == seq_len]
    groups = [full[i : i + batch_size] for i in range(0, len(full), batch_size)]
    groups += [[s] for s in mine if s[1] - s[0] != seq_len]
    for group in groups:
        x = np.stack([ids[a:b] for a, b in group]).astype(np.int64)
        y = np.stack([ids[a + 1 : b + 1] for a, b in group]).astype(np.int64)
        yield x, y


def tokenize_text(path: str | Path, tokenizer_path: str | Path) -> tuple[np.ndarray, int]:
    """Token ids of a UTF-8 text file and its size in bytes."""
    from tokenizers import Tokenizer

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"text file not found: {p}") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{p} is not UTF-8 text ({e})") from None
    if not Path(tokenizer_path).exists():
        raise UserError(f"tokenizer not found: {tokenizer_path}; run `lmalloc prepare` first")
    tok = Tokenizer.from_file(str(tokenizer_path))
    ids = np.asarray(tok.encode(text).ids, dtype=np.int64)
    if len(ids) < 2:
        raise UserError(f"{p} has fewer than 2 tokens: nothing to evaluate")
    return ids, len(text.encode("utf-8"))


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def evaluate_lm(
    model: nn.Module, source: TokenSplit | str | Path, *, seq_len: int, batch_size: int = 8,
    max_tokens: int | None = None, tokenizer_path: str | Path | None = None,
    autocast_dtype: torch.dtype | None = None, rank: int = 0, world_size: int = 1,
) -> dict[str, Any]:
    """Mean loss, perplexity and bits per byte of ``model`` on a split or a text file.

    Args:
        model: returns ``(logits, loss)`` from ``model(idx, targets)``.
        source: a split (:class:`~lmalloc.data.shards.SplitTokens` or any ``TokenSplit``;
            targets < 0 are not counted), or the path of a UTF-8 text file (then
            ``tokenizer_path`` is required).
        seq_len: window length.
        batch_size: windows per forward pass.
        max_tokens: evaluate at most this many predicted tokens (all ranks together).
        autocast_dtype: run under autocast to this dtype (e.g. ``torch.bfloat16``).
        rank, world_size: under DDP each rank takes every ``world_size``-th window; the sums
            are all-reduced, so every rank returns the same numbers.

    Returns:
        ``{"loss", "perplexity", "bpb", "tokens", "bytes", "loss_se"}`` (loss in nats per
        token; ``loss_se``: its standard error from the spread of the batches' mean losses,
        batches taken as independent samples; ``None`` with fewer than two full batches or
        under DDP). Two models evaluated on the same tokens differ by less noise than this:
        the content's difficulty is common to both.
    """
    if not isinstance(source, (str, Path)):  # SplitTokens or any TokenSplit
        batches = source.sequential_batches(batch_size, seq_len, rank, world_size, max_tokens)
        total_tokens, total_bytes = source.num_tokens, source.num_bytes
    else:
        if tokenizer_path is None:
            raise UserError("evaluating a text file needs the run's tokenizer.json")
        ids, total_bytes = tokenize_text(source, tokenizer_path)
        total_tokens = len(ids) - 1  # every token but the first is predicted
        if max_tokens is not None:
            ids = ids[: max_tokens + 1]
        batches = text_windows(ids, batch_size, seq_len, rank, world_size)
    nats, count, batch_means = _sum_loss(model, batches, autocast_dtype)
    if world_size > 1:
        import torch.distributed as dist

        t = torch.tensor([nats, count], dtype=torch.float64, device=_device_of(model))
        dist.all_reduce(t)
        nats, count = float(t[0]), float(t[1])
    if count == 0:
        raise UserError(f"nothing to evaluate: fewer than {seq_len + 1} tokens in the source")
    n_bytes = total_bytes * count / max(1, total_tokens)
    loss = nats / count
    return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)),
            "bpb": nats / math.log(2) / n_bytes, "tokens": int(count), "bytes": n_bytes,
            "loss_se": _standard_error(batch_means) if world_size == 1 else None}


def _standard_error(means: list[float]) -> float | None:
    """Standard error of the mean of ``means`` (None below two values)."""
    k = len(means)
    if k < 2:
        return None
    mu = sum(means) / k
    return math.sqrt(sum((m - mu) ** 2 for m in means) / (k - 1) / k)


def _sum_loss(model: nn.Module, batches: Iterator[tuple[np.ndarray, np.ndarray]],
              autocast_dtype: torch.dtype | None) -> tuple[float, float, list[float]]:
    """Summed cross-entropy (nats, float64), the number of predicted tokens, and the mean
    loss of each full batch (the first batch's size; a shorter last one is left out)."""
    device = _device_of(model)
    was_training = model.training
    model.eval()
    nats, count, means, full = 0.0, 0, [], 0
    ctx = (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None
           else contextlib.nullcontext())
    try:
        for x, y in batches:
            xt = torch.from_numpy(np.ascontiguousarray(x)).to(device)
            yt = torch.from_numpy(np.ascontiguousarray(y)).to(device)
            with ctx:
                _, loss = model(xt, yt)
            n = int((yt >= 0).sum())  # targets < 0 take no loss (a task's prompt, padding)
            if n:  # an all-masked batch has a NaN mean
                nats += float(loss.double()) * n
                count += n
                full = full or n
                if n == full:
                    means.append(float(loss))
    finally:
        model.train(was_training)
    return nats, count, means
