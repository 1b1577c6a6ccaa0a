"""``lmalloc profile`` and ``lmalloc estimate``: measure this machine; cost out a run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from lmalloc.cli.app import app
from lmalloc.cli.logs import attach_run_log
from lmalloc.cli.output import JsonFlag, console, emit


@app.command()
def profile(
    name: Annotated[str, typer.Option(help="Profile name (use it as --hardware NAME).")] = "local",
    out: Annotated[Path | None, typer.Option(help="Write the JSON here (default: "
                                             "~/.cache/lmalloc/profiles/NAME.json).")] = None,
    run: Annotated[Path | None, typer.Option("--run", help="Also save it into this run "
                                             "directory (hardware.json).")] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    precision: Annotated[str, typer.Option(help="fp32 or bf16 (autocast).")] = "fp32",
    quick: Annotated[bool, typer.Option(help="A few seconds: fewer, smaller shapes.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Measure this machine (matmul FLOP/s, bandwidth, GPT training throughput) and save it."""
    from lmalloc.cost.profile import profile_machine, save_profile

    attach_run_log(run, create=True)
    prof = profile_machine(name, device=device, quick=quick, precision=precision)
    paths = [str(save_profile(prof, out))]
    if run is not None:
        paths.append(str(save_profile(prof, run / "hardware.json")))
    emit({"profile": prof.to_dict(), "saved": paths}, as_json, _render_profile)


def _render_profile(r: dict[str, Any]) -> None:
    p = r["profile"]
    mm = ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in p["measured"]["matmul_flops"].items())
    console.print(f"[bold]{p['name']}[/]: matmul {mm}; copy {p['bandwidth'] / 1e9:.1f} GB/s")
    for row in p["measured"]["train"]:
        console.print(f"  d={row['d_model']:4d} L={row['n_layer']} B={row['micro_batch']:2d} "
                      f"T={row['seq_len']:4d}: {row['tokens_per_s']:9.0f} tok/s, "
                      f"{row['flops_per_s'] / 1e9:6.2f} GFLOP/s")
    console.print(f"time-model fit: rms log error {p['utilisation']['rmse_log']:.3f}")
    console.print("saved to " + ", ".join(r["saved"]))


@app.command()
def estimate(
    params: Annotated[float, typer.Option(help="Model parameters, e.g. 1.3e9.")],
    tokens: Annotated[float, typer.Option(help="Training tokens, e.g. 26e9.")],
    hardware: Annotated[str, typer.Option(help="e.g. 8xH100, a100-40gb, local, or a "
                                          "profile JSON.")] = "local",
    seq_len: Annotated[int, typer.Option(help="Tokens per sequence.")] = 2048,
    batch_tokens: Annotated[int | None, typer.Option(help="Global tokens per step "
                                                     "(default ~0.5M).")] = None,
    precision: Annotated[str | None, typer.Option(help="fp32, bf16 (autocast) or "
                                                  "bf16-pure.")] = None,
    vocab_size: Annotated[int, typer.Option(help="Vocabulary size.")] = 50304,
    price: Annotated[float | None, typer.Option(help="Price per device-hour.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Time, cost, memory per device, parallelism and micro-batch of a training run."""
    from lmalloc.cost.estimate import config_for_params, estimate_run, require_fit
    from lmalloc.cost.hardware import default_hardware, get_hardware

    hw = default_hardware() if hardware == "local" else get_hardware(hardware)
    cfg = config_for_params(params, vocab_size, seq_len)
    result = estimate_run(cfg, tokens, hw, seq_len, batch_tokens, precision,
                          price_per_device_hour=price)
    emit(require_fit(result), as_json, _render_estimate)


def _render_estimate(r: dict[str, Any]) -> None:
    t, m, lay = r["time"], r["memory"], r["layout"]
    hours = t["seconds"] / 3600
    cost = f", cost {r['cost']:,.0f}" if r["cost"] is not None else " (no price: --price)"
    console.print(f"[bold]{r['params']:.3g}[/] params × {r['tokens']:.3g} tokens on "
                  f"{r['hardware']} ({r['precision']}): {hours:,.2f} h{cost}, "
                  f"MFU {t['mfu']:.0%}, {t['steps']:,} steps")
    console.print(f"memory per device {m['peak_gib']} of {m['limit'] / 2**30:.1f} GiB usable; "
                  f"{lay['parallel']}, micro-batch {lay['micro_batch']} × "
                  f"{lay['grad_accum']} accumulation"
                  + (", activation checkpointing" if lay["activation_checkpointing"] else ""))
    console.print(f"[dim]{r['source']}[/]")
