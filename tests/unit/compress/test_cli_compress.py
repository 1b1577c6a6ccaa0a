from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from typer.testing import CliRunner

from lmalloc.cli.app import app, register
from lmalloc.compress.store import load_quantized
from lmalloc.model.io import load_model
from lmalloc.testing.cli import invoke


def test_compress_end_to_end(tiny_compress_run: Path) -> None:
    register()
    run = tiny_compress_run
    base_bytes = 4 * sum(p.numel() for p in load_model(run / "final")[0].state_dict().values()
                         if p is not None)  # upper bound (tied counted twice)
    budget = base_bytes // 4
    res = CliRunner().invoke(app, ["compress", "--run", str(run), "--deploy-memory",
                                   f"{budget}B", "--bits", "8,4,2", "--group-size", "16",
                                   "--calib-tokens", "512", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["size_bytes"] <= budget == out["budget_bytes"]
    assert out["predicted_increase"] <= out["greedy_predicted_increase"] + 1e-12
    assert out["pareto"] and -1 <= out["proxy_spearman"] <= 1
    assert out["bpb"] > 0 and out["baseline_bpb"] > 0
    saved = json.loads((run / "compressed" / "result.json").read_text())
    assert saved["formats"] == out["formats"]
    model, fmts = load_quantized(run / "compressed" / "model.safetensors")
    assert fmts == out["formats"]
    file_size = (run / "compressed" / "model.safetensors").stat().st_size
    assert out["size_bytes"] < file_size < out["size_bytes"] + 4096
    idx = torch.zeros(1, 8, dtype=torch.long)
    assert torch.isfinite(model(idx)[0]).all()


def test_compress_budget_too_small_exits_2(tiny_compress_run: Path) -> None:
    code, out = invoke("compress", "--run", str(tiny_compress_run), "--deploy-memory", "1KB",
                       "--calib-tokens", "256")
    assert code == 2
    assert re.search(r"smallest this model can be made .*: \d+ bytes", out), out
