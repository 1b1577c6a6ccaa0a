"""The budget parser: valid strings round-trip, garbage raises UserError and nothing else."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmalloc.cost.budget import parse_budget, parse_size, parse_time
from lmalloc.cost.hardware import DEFAULT_UTILISATION, get_hardware
from lmalloc.errors import UserError


@pytest.fixture(autouse=True)
def _no_saved_profiles(tmp_path, monkeypatch):
    monkeypatch.setenv("LMALLOC_PROFILE_DIR", str(tmp_path / "profiles"))


def test_full_budget_converts_to_seconds_flops_bytes() -> None:
    b = parse_budget("8xH100:24h,mem=80GB,deploy=4GB")
    assert (b.hardware, b.devices, b.seconds) == ("h100-sxm", 8, 86400.0)
    assert b.memory_bytes == 80e9 and b.deploy_bytes == 4e9
    assert b.flops == pytest.approx(86400 * 8 * 989.5e12 * DEFAULT_UTILISATION)


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("10m", 600), ("2h", 7200), ("1.5d", 129600),
                          ("10min", 600)])
def test_time_units(text: str, seconds: float) -> None:
    assert parse_budget(text, hardware="cpu").seconds == seconds


def test_spaces_and_commas_combine_and_tighter_limit_wins() -> None:
    b = parse_budget("h100 1h  1e15flops", hardware="cpu")
    assert b.hardware == "h100-sxm" and b.seconds == 3600
    assert b.flops == 1e15  # the given FLOPs are tighter than 1 h of an H100


def test_sizes_si_and_binary() -> None:
    assert parse_size("24GiB") == 24 * 2**30
    assert parse_size("80GB") == 80e9
    assert parse_budget("mem=24GiB", hardware="l4").memory_bytes == 24 * 2**30
    assert parse_budget("10m", hardware="l4").memory_bytes == 24e9  # the device's memory


def test_money_needs_a_price_and_becomes_time() -> None:
    with pytest.raises(UserError, match="price"):
        parse_budget("$500", hardware="4xA100")
    b = parse_budget("4xA100,$100", price_per_device_hour=2.5)
    assert b.seconds == pytest.approx(100 / (2.5 * 4) * 3600)
    assert b.money == 100 and b.price_per_device_hour == 2.5


@pytest.mark.parametrize(
    ("text", "match"),
    [("3e17", "no unit"), ("0s", "positive"), ("-5m", "positive"), ("10parsecs", "time"),
     ("mem=80", "size"), ("8xZ100", "lmalloc profile"), ("1h,2h", "twice"), ("", "empty"),
     ("0xH100", "count"), ("1e999flops", "finite"), ("h100:0h", "positive")])
def test_bad_budgets_raise_user_error(text: str, match: str) -> None:
    with pytest.raises(UserError, match=match):
        parse_budget(text)


def test_unknown_hardware_lists_known_ones() -> None:
    with pytest.raises(UserError) as e:
        parse_budget("2xB300:1h")
    assert "h100-sxm" in str(e.value) and "a100-40gb" in str(e.value)


def test_unit_total_is_compute_when_given_else_time() -> None:
    assert parse_budget("10m,1e15flops", hardware="h100").unit_total() == ("flops", 1e15)
    assert parse_budget("10m", hardware="h100").unit_total() == ("seconds", 600.0)
    with pytest.raises(UserError, match="neither time nor compute"):
        parse_budget("mem=8GB", hardware="h100").unit_total()


# -- properties -------------------------------------------------------------------------------
_num = st.floats(min_value=1e-3, max_value=1e6, allow_nan=False).map(lambda x: f"{x:.6g}")
_time = st.tuples(_num, st.sampled_from(["s", "m", "h", "d", "min"])).map("".join)
_flops = st.floats(min_value=1.0, max_value=1e25).map(lambda x: f"{x:.4g}flops")
_size = st.tuples(_num, st.sampled_from(["GB", "GiB", "MB", "TiB"])).map("".join)
_hw = st.tuples(st.integers(1, 64), st.sampled_from(["H100", "a100-40gb", "L4", "h200", "cpu"]))


@st.composite
def budget_strings(draw: st.DrawFn) -> str:
    terms = []
    if draw(st.booleans()):
        n, name = draw(_hw)
        terms.append(f"{n}x{name}" + (f":{draw(_time)}" if draw(st.booleans()) else ""))
    elif draw(st.booleans()):
        terms.append(draw(_time))
    for kind, strat in (("flops", _flops), ("mem", _size), ("deploy", _size)):
        if draw(st.booleans()):
            value = draw(strat)
            terms.append(value if kind == "flops" else f"{kind}={value}")
    if not terms:
        terms.append(draw(_time))
    sep = draw(st.sampled_from([",", " ", ", "]))
    return sep.join(draw(st.permutations(terms)))


@settings(max_examples=150, deadline=None)
@given(budget_strings())
def test_valid_budgets_round_trip(text: str) -> None:
    b = parse_budget(text, hardware="cpu")
    again = parse_budget(b.text, hardware="cpu")
    assert again == b
    assert b.seconds is None or b.seconds > 0
    assert b.flops is None or (b.flops > 0 and math.isfinite(b.flops))
    assert b.memory_bytes > 0 and b.devices >= 1


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=30))
def test_garbage_raises_only_user_error(text: str) -> None:
    try:
        parse_budget(text, hardware="cpu")
    except UserError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["8x", "H100", ":", "1h", "e", "-", "mem=", "GB", "$",
                                 "flops", ",", " ", "0", "1.5", "deploy=", "x", "inf"]),
                max_size=8).map("".join))
def test_near_miss_garbage_raises_only_user_error(text: str) -> None:
    try:
        parse_budget(text, hardware="cpu", price_per_device_hour=2.0)
    except UserError:
        pass


def test_parse_time_doc() -> None:
    assert parse_time("1.5h") == 5400.0
    assert get_hardware("8xH100").count == 8


def test_flops_given_only_when_the_user_gave_compute() -> None:
    assert parse_budget("10m", hardware="h100").flops_given is None
    assert parse_budget("10m", hardware="h100").flops is not None  # converted from time
    b = parse_budget("10m,1e15flops", hardware="h100")
    assert b.flops_given == 1e15 and b.flops == 1e15
