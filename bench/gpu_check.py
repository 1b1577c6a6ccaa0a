"""The GPU check: MFU, the memory model and the time model on one CUDA device, in one go.

GPU time is scarce (a machine is lent now and then, ~15 minutes in all), so this is one
command of at most about 8 minutes on one H100/H200 that writes one JSON file (rewritten
after each section, so a run cut short keeps what it measured):

    .venv/bin/python bench/gpu_check.py --out bench/results/gpu_check.json
    .venv/bin/python bench/gpu_check.py --cpu-smoke --out /tmp/gpu_check.json  # ~1 min, CPU

Sections:

* ``device``: name, capability, torch/CUDA versions, and the datasheet bf16 dense peak of
  the matching built-in profile (:mod:`lmalloc.cost.hardware`).
* ``profile``: ``lmalloc profile --device cuda --precision bf16`` (the same
  :func:`~lmalloc.cost.profile.profile_machine`): matmul FLOP/s, bandwidth, and the time
  model fitted to this device's training steps.
* ``mfu``: GPT-2-small-shaped training (12 layers × 768, context 1024, vocabulary 50304,
  bf16 autocast, AdamW) with ``torch.compile`` off and on. FLOPs per token are counted the
  torchtitan way, ``6 N + 12 L d T`` with N the matmul parameters including the output
  layer (:func:`lmalloc.model.accounting.train_flops_per_token`); MFU = achieved FLOP/s over
  the datasheet peak.
* ``configs``: 8 configurations (sizes, micro-batches, activation checkpointing on and off):
  the memory model's peak against ``torch.cuda.max_memory_allocated``, and the time model's
  step time (fitted on this device by ``profile``, and from the datasheet) against the
  measured median step.

``--cpu-smoke`` runs every code path on CPU with tiny shapes (bf16 autocast, the quick
profile, ``torch.compile`` with the ``aot_eager`` backend since inductor compiles C++ for
minutes on a small CPU; memory from the process's resident-set high-water mark): it checks
the script, its numbers mean nothing. ``tests/unit/cost/test_gpu_check.py`` runs it.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from lmalloc.cost.hardware import HardwareProfile, get_hardware
from lmalloc.cost.memory import HEADROOM, estimate_memory
from lmalloc.cost.profile import BenchShape, measure_training, profile_machine
from lmalloc.cost.time_model import predict_time
from lmalloc.rundir import atomic_write_json

GPT2_SMALL = BenchShape(768, 12, 12, 50304, 16, 1024)
# (shape, activation checkpointing): GPT-2 small to ~1B parameters, micro-batches 2-16
GPU_CONFIGS = (
    (BenchShape(768, 12, 12, 50304, 8, 1024), False),
    (BenchShape(768, 12, 12, 50304, 8, 1024), True),
    (BenchShape(768, 12, 12, 50304, 16, 1024), False),
    (BenchShape(512, 8, 8, 32000, 16, 512), False),
    (BenchShape(1024, 24, 16, 50304, 4, 1024), False),
    (BenchShape(1024, 24, 16, 50304, 4, 1024), True),
    (BenchShape(2048, 16, 16, 50304, 2, 2048), False),
    (BenchShape(2048, 16, 16, 50304, 2, 2048), True),
)
SMOKE_MFU = BenchShape(64, 2, 2, 512, 4, 64)
SMOKE_CONFIGS = (
    (BenchShape(64, 2, 2, 512, 4, 64), False),
    (BenchShape(64, 2, 2, 512, 4, 64), True),
    (BenchShape(96, 3, 3, 1024, 2, 128), False),
    (BenchShape(96, 3, 3, 1024, 2, 128), True),
    (BenchShape(128, 2, 4, 2048, 4, 64), False),
    (BenchShape(128, 2, 4, 2048, 4, 64), True),
)
TARGETS = {"mfu_compiled": 0.45, "memory_error": 0.05, "time_error": 0.10}


def datasheet(device_name: str, memory_bytes: float) -> HardwareProfile | None:
    """The built-in datasheet profile of a CUDA device name, or None when there is none."""
    name = device_name.lower()
    if "h200" in name:
        return get_hardware("h200")
    if "h100" in name:
        return get_hardware("h100-pcie" if "pcie" in name else "h100-sxm")
    if "a100" in name:
        return get_hardware("a100-80gb" if memory_bytes > 50e9 else "a100-40gb")
    return None


def device_info(device: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"device": device, "torch": torch.__version__,
                            "host": platform.node(), "python": sys.version.split()[0]}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(name=props.name, capability=f"{props.major}.{props.minor}",
                    memory_bytes=float(props.total_memory), cuda=torch.version.cuda,
                    device_count=torch.cuda.device_count())
        sheet = datasheet(props.name, props.total_memory)
        info["datasheet"] = sheet.name if sheet else None
        info["peak_bf16"] = sheet.peak("bf16") if sheet else None
    else:
        info.update(name=platform.processor() or "cpu", datasheet=None, peak_bf16=None)
    return info


def _rss_probe() -> tuple[Any, Any]:
    """CPU stand-in for the CUDA peak counters: reset the resident-set high-water mark, and
    read it back (minus the resident set at the reset)."""
    status = Path("/proc/self/status")
    clear = Path("/proc/self/clear_refs")
    if not clear.exists():
        return (lambda: None), (lambda: None)

    def field(key: str) -> float:
        for line in status.read_text().splitlines():
            if line.startswith(key + ":"):
                return float(line.split()[1]) * 1024
        raise RuntimeError(f"{key} not in {status}")

    base: dict[str, float] = {}

    def reset() -> None:
        base["rss"] = field("VmRSS")
        clear.write_text("5")

    def read() -> float:
        return field("VmHWM") - base["rss"]

    return reset, read


def measure_mfu(shape: BenchShape, device: str, backends: list[str | None], peak: float | None,
                steps: int) -> list[dict[str, Any]]:
    rows = []
    for backend in backends:
        t0 = time.time()
        r = measure_training(shape, device, warmup=3, steps=steps, precision="bf16",
                             compile_backend=backend)
        r["wall_seconds_incl_compile"] = time.time() - t0
        r["mfu"] = r["flops_per_s"] / peak if peak else None
        rows.append(r)
        print(f"mfu compile={backend}: {r['tokens_per_s']:.0f} tokens/s, "
              f"{r['flops_per_s'] / 1e12:.2f} TFLOP/s, MFU {r['mfu']}", flush=True)
    return rows


def measure_config(shape: BenchShape, ckpt: bool, device: str, fitted: HardwareProfile,
                   sheet: HardwareProfile | None, steps: int) -> dict[str, Any]:
    """One configuration: measured step time and peak memory, and both models' predictions."""
    cfg = shape.config()
    reset, read = _rss_probe()
    if device == "cpu":
        reset()
    r = measure_training(shape, device, warmup=2, steps=steps, precision="bf16",
                         activation_checkpointing=ckpt)
    est = estimate_memory(cfg, shape.micro_batch, shape.seq_len, "bf16",
                          activation_checkpointing=ckpt, device=device)
    if device == "cuda":
        measured_step = float(r["memory_peak_bytes"] - r["memory_weights_bytes"])
        source = "torch.cuda.max_memory_allocated - weights"
    else:
        rss = read()
        measured_step = None if rss is None else float(rss) - est.weights
        source = "VmHWM - RSS before (smoke only: includes allocator slack)"
    tokens = shape.micro_batch * shape.seq_len
    row: dict[str, Any] = {
        **r, "memory_source": source, "memory_measured_step": measured_step,
        "memory_predicted_step": est.peak - est.weights, "memory_predicted_peak": est.peak,
        "memory_error": (None if not measured_step
                         else (est.peak - est.weights) / measured_step - 1),
    }
    for label, hw in (("fitted", fitted), ("datasheet", sheet)):
        if hw is None:
            row[f"time_predicted_{label}"] = row[f"time_error_{label}"] = None
            continue
        pred = predict_time(cfg, tokens, hw, batch_tokens=tokens, micro_batch=shape.micro_batch,
                            seq_len=shape.seq_len, precision="bf16",
                            activation_checkpointing=ckpt).step_seconds
        row[f"time_predicted_{label}"] = pred
        row[f"time_error_{label}"] = pred / r["seconds_per_step"] - 1
    print(f"d={shape.d_model} L={shape.n_layer} B={shape.micro_batch} T={shape.seq_len} "
          f"ckpt={ckpt}: {r['seconds_per_step'] * 1e3:.1f} ms (fitted "
          f"{row['time_error_fitted']:+.1%}), memory error {row['memory_error']}", flush=True)
    return row


def _median_abs(rows: list[dict[str, Any]], key: str) -> float | None:
    vals = [abs(r[key]) for r in rows if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def summarise(doc: dict[str, Any]) -> dict[str, Any]:
    mfu = {("compiled" if r["compile"] else "eager"): r["mfu"] for r in doc.get("mfu", [])}
    rows = doc.get("configs", [])
    s: dict[str, Any] = {
        "mfu_eager": mfu.get("eager"), "mfu_compiled": mfu.get("compiled"),
        "memory_median_abs_error": _median_abs(rows, "memory_error"),
        "time_median_abs_error_fitted": _median_abs(rows, "time_error_fitted"),
        "time_median_abs_error_datasheet": _median_abs(rows, "time_error_datasheet"),
        "targets": TARGETS,
    }
    if not doc.get("smoke"):
        s["met"] = {
            "mfu": s["mfu_compiled"] is not None and s["mfu_compiled"] >= TARGETS["mfu_compiled"],
            "memory": (s["memory_median_abs_error"] is not None
                       and s["memory_median_abs_error"] <= TARGETS["memory_error"]),
            "time": (s["time_median_abs_error_fitted"] is not None
                     and s["time_median_abs_error_fitted"] <= TARGETS["time_error"]),
        }
    return s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="bench/results/gpu_check.json")
    ap.add_argument("--cpu-smoke", action="store_true",
                    help="tiny shapes on CPU: exercise every code path, measure nothing")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per measurement")
    args = ap.parse_args(argv)
    import torch

    smoke = args.cpu_smoke
    if not smoke and not torch.cuda.is_available():
        print("error: no CUDA device (use --cpu-smoke to check the script on CPU)",
              file=sys.stderr)
        return 2
    device = "cpu" if smoke else "cuda"
    steps = args.steps or (2 if smoke else 10)
    t0 = time.time()
    doc: dict[str, Any] = {"smoke": smoke, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                    time.gmtime())}

    def save(section: str) -> None:
        doc["seconds"] = time.time() - t0
        doc["done"] = section
        doc["summary"] = summarise(doc)
        atomic_write_json(args.out, doc)

    doc["device"] = info = device_info(device)
    prof = profile_machine("gpu-check", device=device, quick=smoke, precision="bf16")
    doc["profile"] = prof.to_dict()
    save("profile")
    sheet = None if smoke else datasheet(info["name"], info["memory_bytes"])
    peak = info["peak_bf16"] if not smoke else prof.peak("bf16")  # smoke: measured matmul
    doc["mfu_peak"] = {"flops": peak, "source": info["datasheet"] or "measured matmul (smoke)"}
    mfu_shape = SMOKE_MFU if smoke else GPT2_SMALL
    fits = estimate_memory(mfu_shape.config(), mfu_shape.micro_batch, mfu_shape.seq_len, "bf16",
                           device=device).peak <= HEADROOM * prof.memory_bytes
    doc["mfu"] = measure_mfu(mfu_shape, device, [None, "aot_eager" if smoke else "inductor"],
                             peak, steps) if fits else []
    save("mfu")
    doc["configs"] = []
    for shape, ckpt in SMOKE_CONFIGS if smoke else GPU_CONFIGS:
        doc["configs"].append(measure_config(shape, ckpt, device, prof, sheet, steps))
        save("configs")
    print(f"wrote {args.out} in {time.time() - t0:.0f} s: {doc['summary']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
