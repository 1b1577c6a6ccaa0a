"""``bench/gpu_check.py --cpu-smoke``: every code path of the GPU check, on CPU with tiny
shapes, so the one short GPU run is not spent finding a bug in the script."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_cpu_smoke_writes_every_section(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--cpu-smoke",
                        "--out", str(out)], env=env, capture_output=True, text=True,
                       timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["smoke"] is True and doc["done"] == "configs"
    assert doc["device"]["device"] == "cpu"
    assert "P_head" in doc["profile"]["utilisation"] and doc["profile"]["measured"]["train"]
    assert [m["compile"] for m in doc["mfu"]] == [None, "aot_eager"]
    assert all(0 < m["mfu"] < 1 and m["flops_per_s"] > 0 for m in doc["mfu"])
    rows = doc["configs"]
    assert len(rows) >= 6 and {r["activation_checkpointing"] for r in rows} == {True, False}
    for row in rows:
        assert row["seconds_per_step"] > 0 and row["memory_predicted_step"] > 0
        assert math.isfinite(row["time_predicted_fitted"]) and row["time_predicted_fitted"] > 0
        assert row["time_error_datasheet"] is None  # no datasheet for a CPU
    summary = doc["summary"]
    assert summary["mfu_compiled"] is not None and summary["time_median_abs_error_fitted"] >= 0
    assert "met" not in summary  # a smoke run claims no target


def test_without_cuda_the_real_check_refuses_cleanly(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the real check would run")
    out = tmp_path / "x.json"
    r = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--out",
                        str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "no CUDA device" in r.stderr and not out.exists()
