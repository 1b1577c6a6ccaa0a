from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
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
                                   f"{budget}B", "--bits", "8,2", "--group-size", "16",
                                   "--calib-tokens", "256", "--json"])
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


def test_compress_rtn_prune_and_recover(tiny_compress_run: Path) -> None:
    run = tiny_compress_run
    code, out = invoke("compress", "--run", str(run), "--deploy-memory", "10MB",
                       "--method", "rtn", "--bits", "8", "--group-size", "16,32",
                       "--calib-tokens", "256", "--prune", "2:4", "--recover-steps", "3",
                       "--json")
    assert code == 0, out
    res = json.loads(out)
    assert res["method"] == "rtn" and res["prune"] == "2:4"
    assert res["settings"]["group_sizes"] == [16, 32] and res["recovery"]["steps"] == 3
    assert res["sparsity"] == pytest.approx(0.5, abs=1e-3)
    model, _ = load_quantized(run / "compressed" / "model.safetensors")
    for lin in model.modules():
        if hasattr(lin, "weight_fp32"):  # int8 codes of pruned weights dequantize to 0
            w = lin.weight_fp32()
            assert int((w != 0).reshape(w.shape[0], -1, 4).sum(-1).max()) <= 2


@pytest.mark.parametrize(("flag", "value", "match"), [
    ("--method", "awq", "--method"), ("--prune", "3:4", "--prune"),
    ("--prune", "heads:9", "every head"), ("--bits", "5", "bits"),
    ("--sensitivity", "fisher", "--sensitivity")])
def test_compress_bad_settings_exit_2(tiny_compress_run: Path, flag: str, value: str,
                                      match: str) -> None:
    code, out = invoke("compress", "--run", str(tiny_compress_run), "--deploy-memory", "10MB",
                       "--calib-tokens", "256", flag, value)
    assert code == 2 and match in out, out


def test_compress_foreign_checkpoint_exits_2(tiny_compress_run: Path) -> None:
    from safetensors.torch import save_file

    weights = tiny_compress_run / "final" / "checkpoint" / "model.safetensors"
    save_file({"encoder.weight": torch.zeros(3, 3)}, str(weights))
    code, out = invoke("compress", "--run", str(tiny_compress_run), "--deploy-memory", "10MB")
    assert code == 2 and "not an lmalloc GPT checkpoint" in out, out


def test_compress_heads_pruned_model_saves_its_structure(tiny_compress_run: Path) -> None:
    code, out = invoke("compress", "--run", str(tiny_compress_run), "--deploy-memory", "10MB",
                       "--bits", "8", "--group-size", "16", "--calib-tokens", "256",
                       "--prune", "heads:1", "--recover-steps", "2", "--json")
    assert code == 0, out
    res = json.loads(out)
    assert all(b["heads"] == 1 for b in res["structure"].values())
    model, _ = load_quantized(tiny_compress_run / "compressed" / "model.safetensors")
    assert all(b.attn.c_proj.in_features == 16 for b in model.transformer.h)
    assert res["size_bytes"] < res["baseline_size_bytes"] and res["recovery"]["steps"] == 2
