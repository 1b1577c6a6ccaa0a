"""Hardware profiles: built-ins, names, JSON save/load."""

from __future__ import annotations

import json

import pytest

from lmalloc.cost.hardware import (
    BUILTIN,
    DEFAULT_UTILISATION,
    HardwareProfile,
    default_hardware,
    get_hardware,
)
from lmalloc.errors import UserError


@pytest.fixture(autouse=True)
def _profile_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LMALLOC_PROFILE_DIR", str(tmp_path / "profiles"))
    return tmp_path / "profiles"


def test_builtins_are_dense_and_sourced() -> None:
    for name in ("h100-sxm", "h100-pcie", "h200", "a100-40gb", "a100-80gb", "l4", "a10g",
                 "rtx4090", "cpu"):
        p = BUILTIN[name]
        assert p.source and p.memory_bytes > 0 and p.bandwidth > 0
        if p.kind == "gpu":
            assert "dense" in p.source
            assert p.peak_flops["bf16"] > p.peak_flops["fp32"]
    assert BUILTIN["h100-sxm"].peak("bf16") == 989.5e12  # 1979 sparse / 2
    assert BUILTIN["a100-40gb"].memory_bytes == 40e9


@pytest.mark.parametrize(("spec", "name", "count"),
                         [("8xH100", "h100-sxm", 8), ("A100", "a100-80gb", 1),
                          ("2 x l4", "l4", 2), ("4090", "rtx4090", 1),
                          ("h100-pcie", "h100-pcie", 1)])
def test_names_and_counts(spec: str, name: str, count: int) -> None:
    hw = get_hardware(spec)
    assert (hw.name, hw.count) == (name, count)


def test_save_load_round_trip_and_lookup_by_name(_profile_dir) -> None:
    prof = HardwareProfile(name="mybox", peak_flops={"fp32": 5e10}, memory_bytes=8e9,
                           bandwidth=1e10, source="test", default_dtype="fp32", kind="cpu",
                           measured={"train": [{"flops_per_s": 2e10}, {"flops_per_s": 3e10},
                                               {"flops_per_s": 1e10}]})
    path = prof.save(_profile_dir / "mybox.json")
    assert json.loads(path.read_text())["name"] == "mybox"
    assert HardwareProfile.load(path) == prof
    again = get_hardware("2xmybox")
    assert again.count == 2 and again.peak_flops == prof.peak_flops
    assert get_hardware(str(path)).name == "mybox"
    assert prof.sustained_flops() == 2e10  # the median measured throughput


def test_default_hardware_prefers_saved_local(_profile_dir) -> None:
    assert default_hardware().name == "cpu"
    BUILTIN["l4"].save(_profile_dir / "local.json")
    assert default_hardware().name == "l4"


def test_datasheet_sustained_uses_assumed_utilisation() -> None:
    assert BUILTIN["a100-80gb"].sustained_flops() == pytest.approx(312e12 * DEFAULT_UTILISATION)


def test_bad_profiles_are_user_errors(tmp_path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="corrupt"):
        get_hardware(str(bad))
    bad.write_text(json.dumps({"name": "x", "wat": 1}))
    with pytest.raises(UserError, match="unknown fields"):
        HardwareProfile.load(bad)
    with pytest.raises(UserError, match="unknown hardware"):
        get_hardware("tpu-v9")
