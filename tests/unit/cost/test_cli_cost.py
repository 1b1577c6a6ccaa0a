"""``lmalloc estimate`` and ``lmalloc profile --quick`` end to end."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lmalloc.cli.app import main, register
from lmalloc.cost.hardware import HardwareProfile, get_hardware


@pytest.fixture(autouse=True)
def _profile_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LMALLOC_PROFILE_DIR", str(tmp_path / "profiles"))
    return tmp_path / "profiles"


def _exit_code(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["lmalloc", *args])
    with pytest.raises(SystemExit) as e:
        main()
    return int(e.value.code or 0)


def test_estimate_json() -> None:
    args = ["estimate", "--params", "1.3e9", "--tokens", "26e9", "--hardware", "8xH100",
            "--price", "2.5", "--json"]
    r = CliRunner().invoke(register(), args)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["fits"] and doc["hardware"] == "8xh100-sxm"
    assert 0.8e9 < doc["params"] < 1.8e9
    hours = doc["time"]["seconds"] / 3600
    assert 5 < hours < 40  # 6 N D / (8 x ~400 TFLOP/s) ~ 17 h
    assert doc["cost"] == pytest.approx(hours * 8 * 2.5)
    assert doc["memory"]["peak"] <= doc["memory"]["limit"]


def test_estimate_table() -> None:
    r = CliRunner().invoke(register(), ["estimate", "--params", "1e8", "--tokens", "2e9",
                                        "--hardware", "a100-40gb"])
    assert r.exit_code == 0, r.output
    assert "micro-batch" in r.stdout and "datasheet" in r.stdout


@pytest.mark.parametrize(("args", "needle"), [
    (["--hardware", "tpu9"], "lmalloc profile"),
    (["--params", "-5"], "params"),
    (["--params", "7e10", "--hardware", "l4"], "at least"),
])
def test_estimate_user_errors_exit_2(monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str], args: list[str],
                                     needle: str) -> None:
    base = {"--params": "1e8", "--tokens": "1e9", "--hardware": "h100"}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    flat = [x for kv in base.items() for x in kv]
    assert _exit_code(monkeypatch, "estimate", *flat) == 2
    assert needle in capsys.readouterr().err


@pytest.mark.slow  # ~8 s: importing torch and the first GPT step dominate
def test_profile_quick_saves_a_usable_profile(_profile_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    r = CliRunner().invoke(register(), ["profile", "--quick", "--name", "box", "--run",
                                        str(run), "--json"])
    assert r.exit_code == 0, r.output
    prof = HardwareProfile.load(_profile_dir / "box.json")
    assert HardwareProfile.load(run / "hardware.json") == prof
    assert prof.measured["matmul_flops"]["fp32"] > 0 and prof.bandwidth > 0
    assert len(prof.measured["train"]) >= 4 and "P_max" in prof.utilisation
    assert get_hardware("box").sustained_flops() > 0
