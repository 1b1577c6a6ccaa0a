"""``lmalloc profile``: measure THIS machine and save a :class:`HardwareProfile`.

Three measurements, each the median of repeated timings (robust to a busy machine):

1. matmul FLOP/s per dtype (``2 n³`` FLOPs per ``n × n`` product; fp32 and bf16, plus fp16
   and tf32 on CUDA) — the "peak" the rest of the tool uses in place of a datasheet;
2. memory bandwidth: a large tensor copy (read + write = 2 × bytes);
3. training throughput of several small GPT shapes: forward, backward and an AdamW step of
   :class:`lmalloc.model.gpt.GPT` with its ``optim_groups``, after warm-up steps. The step
   times are what :func:`lmalloc.cost.time_model.fit_time_model` fits.

torch is imported inside the functions, so ``lmalloc.cost`` stays importable without it.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmalloc.cost.hardware import GB, HardwareProfile, profile_dir
from lmalloc.cost.time_model import StepShape, fit_time_model
from lmalloc.errors import invalid
from lmalloc.model.accounting import param_count, train_flops_per_token
from lmalloc.model.config import GPTConfig


@dataclass(frozen=True)
class BenchShape:
    """One GPT shape to time: width, depth, heads, vocabulary, micro-batch, sequence."""

    d_model: int
    n_layer: int
    n_head: int
    vocab_size: int
    micro_batch: int
    seq_len: int

    def config(self) -> GPTConfig:
        return GPTConfig(vocab_size=self.vocab_size, n_layer=self.n_layer, n_head=self.n_head,
                         d_model=self.d_model, seq_len=self.seq_len)


# Spread over width, depth, tokens per step and vocabulary so the fit can separate the terms;
# about 60 s on 2 CPU cores for the full set.
DEFAULT_SHAPES = (
    BenchShape(64, 2, 2, 512, 4, 64),
    BenchShape(64, 4, 2, 2048, 16, 128),
    BenchShape(128, 2, 4, 512, 8, 128),
    BenchShape(128, 4, 4, 4096, 4, 256),
    BenchShape(192, 3, 3, 1024, 16, 64),
    BenchShape(256, 2, 4, 2048, 2, 128),
    BenchShape(256, 4, 4, 512, 8, 128),
    BenchShape(320, 2, 5, 4096, 4, 128),
    BenchShape(384, 2, 6, 1024, 2, 256),
    BenchShape(384, 3, 6, 512, 8, 64),
    BenchShape(512, 2, 8, 2048, 2, 128),
    BenchShape(96, 6, 3, 1024, 8, 128),
)
# Seconds, for tests and a first look: too small to fit a trustworthy time model.
QUICK_SHAPES = (BenchShape(32, 1, 2, 128, 2, 16), BenchShape(64, 2, 2, 256, 4, 32),
                BenchShape(48, 1, 2, 512, 2, 32), BenchShape(32, 2, 2, 128, 8, 16),
                BenchShape(64, 1, 4, 256, 4, 64))


def _timings(fn: Callable[[], None], repeats: int, sync: Callable[[], None],
             ) -> tuple[list[float], list[float]]:
    """Wall and process CPU seconds of each of ``repeats`` calls. With one thread, CPU time
    is what the call costs on an idle machine: time spent descheduled by other processes
    counts in wall time only."""
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        sync()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return wall, cpu


def _median_seconds(fn: Callable[[], None], repeats: int, sync: Callable[[], None]) -> float:
    return statistics.median(_timings(fn, repeats, sync)[0])


def _sync(device: Any) -> Callable[[], None]:
    import torch

    if device.type == "cuda":
        return torch.cuda.synchronize
    return lambda: None


def measure_matmul(device: str = "cpu", n: int = 1024, repeats: int = 5) -> dict[str, float]:
    """FLOP/s of an ``n × n`` matmul per dtype the device supports (2 n³ FLOPs each)."""
    import torch

    dev = torch.device(device)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    if dev.type == "cuda":
        dtypes["fp16"] = torch.float16
    out: dict[str, float] = {}
    for name, dt in dtypes.items():
        try:
            a = torch.randn(n, n, device=dev, dtype=dt)
            b = torch.randn(n, n, device=dev, dtype=dt)
            a @ b  # warm-up (and the check that the dtype is supported)
            out[name] = 2 * n**3 / _matmul_seconds(a, b, repeats, _sync(dev))
        except (RuntimeError, TypeError):
            continue
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        a = torch.randn(n, n, device=dev)
        a @ a
        out["tf32"] = 2 * n**3 / _matmul_seconds(a, a, repeats, _sync(dev))
        torch.backends.cuda.matmul.allow_tf32 = False
    return out


def _matmul_seconds(a: Any, b: Any, repeats: int, sync: Callable[[], None]) -> float:
    def run() -> None:
        a @ b

    return _median_seconds(run, repeats, sync)


def measure_bandwidth(device: str = "cpu", mbytes: int = 256, repeats: int = 5) -> float:
    """Bytes/s of copying a ``mbytes`` MB tensor (counts the read and the write)."""
    import torch

    dev = torch.device(device)
    src = torch.ones(mbytes * 10**6 // 4, device=dev)
    dst = torch.empty_like(src)
    dst.copy_(src)
    seconds = _median_seconds(lambda: None if dst.copy_(src) is None else None, repeats,
                              _sync(dev))
    return 2 * src.numel() * 4 / seconds


def measure_training(
    shape: BenchShape, device: str = "cpu", warmup: int = 2, steps: int = 3,
    precision: str = "fp32", seed: int = 0, activation_checkpointing: bool = False,
    compile_backend: str | None = None,
) -> dict[str, Any]:
    """Median seconds of one training step (forward, backward, AdamW) of one GPT shape.

    On CUDA also the peak memory of the steps (``torch.cuda.max_memory_allocated``, with the
    weights allocated before them as ``memory_weights_bytes``), for the memory model.
    ``compile_backend`` (e.g. ``inductor``) runs the model under ``torch.compile`` with that
    backend; its compilation falls in the warm-up.
    """
    import torch

    from lmalloc.model.gpt import GPT

    torch.manual_seed(seed)
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    cfg = shape.config()
    model = GPT(cfg).to(dev)
    model.activation_checkpointing = activation_checkpointing
    weights = torch.cuda.memory_allocated(dev) if cuda else None
    opt = torch.optim.AdamW(model.optim_groups(lr=1e-4, weight_decay=0.1), lr=1e-4)
    x = torch.randint(0, cfg.vocab_size, (shape.micro_batch, shape.seq_len), device=dev)
    y = torch.roll(x, -1, dims=1)
    use_bf16 = precision.startswith("bf16")
    run = torch.compile(model, backend=compile_backend) if compile_backend else model

    def step() -> None:
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_bf16):
            _, loss = run(x, y)
        assert loss is not None
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    wall, cpu = _timings(step, steps, _sync(dev))
    sec = statistics.median(wall)
    tokens = shape.micro_batch * shape.seq_len
    fpt = train_flops_per_token(cfg)
    return {
        "d_model": cfg.d_model, "n_layer": cfg.n_layer, "n_head": cfg.n_head,
        "d_ff": cfg.ff_dim, "vocab_size": cfg.vocab_size, "micro_batch": shape.micro_batch,
        "seq_len": shape.seq_len, "params": param_count(cfg), "flops_per_token": fpt,
        "seconds_per_step": sec, "tokens_per_s": tokens / sec,
        "flops_per_s": tokens * fpt / sec, "precision": precision,
        "cpu_seconds_per_step": statistics.median(cpu),
        "activation_checkpointing": activation_checkpointing, "compile": compile_backend,
        "memory_weights_bytes": weights,
        "memory_peak_bytes": torch.cuda.max_memory_allocated(dev) if cuda else None,
    }


def step_shape(row: dict[str, Any]) -> StepShape:
    """The time-model view of one measured row."""
    return StepShape(int(row["d_model"]), int(row["n_layer"]), int(row["d_ff"]),
                     int(row["vocab_size"]), int(row["params"]), float(row["flops_per_token"]),
                     int(row["micro_batch"]), int(row["seq_len"]))


def profile_machine(
    name: str = "local", device: str = "cpu", quick: bool = False,
    shapes: Sequence[BenchShape] | None = None, precision: str = "fp32",
) -> HardwareProfile:
    """Measure this machine and return its profile (with the time model fitted to it)."""
    import psutil
    import torch

    if device not in ("cpu", "cuda"):
        raise invalid("device", device, "cpu or cuda")
    shapes = shapes or (QUICK_SHAPES if quick else DEFAULT_SHAPES)
    matmul = measure_matmul(device, n=256 if quick else 1024, repeats=3 if quick else 5)
    bw = measure_bandwidth(device, mbytes=16 if quick else 256, repeats=3 if quick else 5)
    rows = [measure_training(s, device, warmup=1 if quick else 2, steps=2 if quick else 3,
                             precision=precision) for s in shapes]
    fit = fit_time_model([step_shape(r) for r in rows], [r["seconds_per_step"] for r in rows])
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        mem, host = float(props.total_memory), props.name
    else:
        mem, host = float(psutil.virtual_memory().total), platform.processor() or "cpu"
    return HardwareProfile(
        name=name,
        peak_flops=dict(matmul),
        memory_bytes=mem,
        bandwidth=bw,
        source=f"measured by `lmalloc profile` on {platform.node()} ({host}, "
               f"{torch.get_num_threads()} threads, torch {torch.__version__}) "
               f"at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}",
        default_dtype=precision if precision != "bf16-pure" else "bf16",
        kind="gpu" if device == "cuda" else "cpu",
        interconnect=None if device == "cpu" else 32 * GB,
        measured={"matmul_flops": matmul, "bandwidth": bw, "train": rows,
                  "threads": torch.get_num_threads(), "cpu_count": os.cpu_count()},
        utilisation=fit,
    )


def save_profile(prof: HardwareProfile, out: str | os.PathLike[str] | None = None) -> Path:
    """Save to ``out`` or ``<profile dir>/<name>.json``."""
    path = Path(out) if out else profile_dir() / f"{prof.name}.json"
    return prof.save(path)
