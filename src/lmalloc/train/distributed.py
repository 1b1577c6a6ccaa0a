"""Data parallelism through ``torchrun``: process group setup and the few collectives we use.

The trainer is the same program on one process and on many: ``torchrun --nproc_per_node K``
sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`init_distributed` reads them and joins
the group (gloo on CPU, NCCL on CUDA). Without them everything here is a no-op. Only rank 0
writes files; each rank reads its own micro-batches (see ``Trainer``'s data rule), gradients
are averaged by DDP (or reduce-scattered by FSDP), and losses are averaged with
:func:`all_reduce_mean`.

Two layouts (``parallel``): ``ddp`` replicates the model and optimizer on every rank;
``fsdp`` shards weights, gradients and optimizer state over the ranks with torch's FSDP2
(:func:`torch.distributed.fsdp.fully_shard`, ZeRO-3), one unit per transformer block plus
the root (embeddings, tied output head, final norm), for models whose replicas do not fit.
Which one a run uses is decided by :func:`lmalloc.train.launch.choose_parallel`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

PARALLEL_MODES = ("ddp", "fsdp")


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: its rank, the world size and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(pref: str, local_rank: int = 0) -> torch.device:
    """``auto`` → CUDA when available (this process's local GPU), else CPU."""
    from lmalloc.train.device import device_type

    if device_type(pref) == "cpu":
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


def init_distributed(device_pref: str = "auto") -> DistContext:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_pref, local)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                                rank=rank, world_size=world)
    return DistContext(rank=rank, world_size=world, local_rank=local, device=device)


def all_reduce_mean(value: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """The mean of ``value`` over ranks (a copy; identity on one process)."""
    if not ctx.enabled:
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / ctx.world_size


def broadcast_int(value: int, ctx: DistContext) -> int:
    """Rank 0's ``value`` on every rank (so all ranks stop at the same step, alike)."""
    if not ctx.enabled:
        return value
    t = torch.tensor([value], device=ctx.device)
    dist.broadcast(t, src=0)
    return int(t.item())


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def wrap_ddp(model: nn.Module, ctx: DistContext) -> nn.Module:
    """``model`` under DDP (gradients all-reduced at the last micro-batch of a step)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DDP(model, device_ids=ids)


def shard_fsdp(model: nn.Module, ctx: DistContext) -> None:
    """Shard ``model`` in place with FSDP2: each transformer block, then the root.

    Must run before the optimizer is built (the parameters become ``DTensor`` shards). Tied
    weights (embedding = output head) both live in the root unit, so they stay tied.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(ctx.device.type, (ctx.world_size,))
    blocks = getattr(getattr(model, "transformer", None), "h", None)
    for block in blocks if isinstance(blocks, nn.ModuleList) else ():
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)


@contextlib.contextmanager
def grad_sync(model: nn.Module, parallel: str, ctx: DistContext, sync: bool) -> Iterator[None]:
    """Skip the gradient reduction of a micro-batch that is not the last of its step.

    DDP: ``model.no_sync()``; FSDP2: ``set_requires_gradient_sync(False)`` (gradients stay
    unsharded and accumulate locally until the last micro-batch reduce-scatters them).
    """
    if sync or not ctx.enabled:
        yield
    elif parallel == "fsdp":
        model.set_requires_gradient_sync(False)  # type: ignore[operator]
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)  # type: ignore[operator]
    else:
        with model.no_sync():  # type: ignore[operator]
            yield


def to_full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a ``DTensor`` shard (a collective: every rank calls it), else
    ``t`` itself."""
    full = getattr(t, "full_tensor", None)
    return full() if callable(full) else t
