"""``lmalloc run`` under a time budget on a machine that slows down after it was profiled
(``LMALLOC_SLOWDOWN``: every training step takes that many times longer, as when another job
starts): every exploration stage stays within its share, and the run ends with a trained
model. The decisions themselves are tested exactly in tests/unit/run/test_ladder_budget.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from _pipeline_run import options

from lmalloc.cost.profile import profile_machine
from lmalloc.layout import PROFILE_JSON
from lmalloc.run import run_pipeline

SLOWDOWN = 2.0
TOLERANCE = 0.15
"""A stage may pass its share by this fraction, plus :data:`SLACK` seconds: the time model
prices neither a training's start-up nor its final evaluation, and the last training a stage
starts is decided on the calibration measured before it."""
SLACK = 3.0


@pytest.mark.slow
def test_every_stage_holds_its_share_when_the_machine_slows_after_profiling(
        tmp_path: Path, tiny_corpus_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "r"
    root.mkdir()
    profile_machine("local", quick=True).save(root / PROFILE_JSON)  # at full speed
    monkeypatch.setenv("LMALLOC_SLOWDOWN", str(SLOWDOWN))
    said: list[str] = []
    summary = run_pipeline(root, options(tiny_corpus_dir, budget="100s", hardware=None),
                           say=said.append)
    assert summary["time_scale"] > 1.2  # the run saw the slowdown
    shares = summary["shares"]
    for stage in ("search", "ladder"):
        s = shares[stage]
        assert s["spent"] <= s["share"] * (1 + TOLERANCE) + SLACK, (stage, s, said)
    assert summary["achieved"]["status"] in ("completed", "time_limit")
    assert summary["achieved"]["val_loss"] is not None
    total = summary["budget"]["total"]
    note = summary["final_share"]
    if note is None or not note["over_total"]:
        assert summary["spent"]["seconds"] <= total * (1 + TOLERANCE), said
