"""Training faults inside a real search: a NaN loss, a loss spike, an out-of-memory error (in a
training step or in an evaluation) and a plain crash are each recorded on their trial with a
status and a reason, charged to the ledger, and the search goes on to finish its other trials.

The faults are injected into the real trainer of a real tiny search (``run_search``, one
process): a wrapper around ``Trainer._train_step`` scales the model's loss (NaN, x50) or
raises at a chosen step of a chosen trial, so detection, backward and optimizer paths are the
trainer's own.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _reliability_tiny import tiny_settings

from lmalloc.rundir import RunDir
from lmalloc.search import study as st
from lmalloc.train import trainer as tr

# trial number -> (fault, step at which it strikes)
FAULTS = {1: ("nan", 2), 2: ("spike", 4), 3: ("oom", 1), 4: ("oom_runtime", 3),
          5: ("oom_eval", 0), 6: ("crash", 2)}
N_TRIALS = 9


def _scaled_forward(model: torch.nn.Module, factor: float):
    orig = model.forward

    def forward(x, y=None):
        logits, loss = orig(x, y)
        return logits, (None if loss is None else loss * factor)

    return forward


@pytest.fixture()
def faulty_trainer(monkeypatch):
    """Inject ``FAULTS`` into the trainer; the trial is read from its out dir (trials/<n>)."""
    real_step, real_eval = tr.Trainer._train_step, tr.evaluate_lm
    current: dict[str, int] = {}

    def step(self):
        fault, at = FAULTS.get(int(self.out_dir.name), (None, -1))
        current["trial"] = int(self.out_dir.name)
        if self.step != at or fault is None:
            return real_step(self)
        if fault == "oom":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB "
                                         "(injected)")
        if fault == "oom_runtime":
            raise RuntimeError("CUDA out of memory. Tried to allocate 8.00 GiB (injected)")
        if fault == "crash":
            raise ValueError("injected crash inside a training step")
        factor = {"nan": float("nan"), "spike": 50.0}.get(fault)
        if factor is None:
            return real_step(self)
        self.train_model.forward = _scaled_forward(self.train_model, factor)
        try:
            return real_step(self)
        finally:
            del self.train_model.forward  # back to the class's forward

    def evaluate(*args, **kw):
        if FAULTS.get(current.get("trial", -1), (None,))[0] == "oom_eval":
            raise torch.OutOfMemoryError("CUDA out of memory during evaluation (injected)")
        return real_eval(*args, **kw)

    monkeypatch.setattr(tr.Trainer, "_train_step", step)
    monkeypatch.setattr(tr, "evaluate_lm", evaluate)


def test_faults_are_recorded_and_the_search_finishes(tiny_run: Path, faulty_trainer) -> None:
    summary = st.run_search(tiny_settings(tiny_run, N_TRIALS))
    rows = {r["number"]: r for r in summary["trials"]}
    assert sorted(rows) == list(range(N_TRIALS))  # every trial ran, none was lost
    expect = {"nan": ("diverged", r"non-finite loss nan"),
              "spike": ("diverged", r"loss spike at step 5"),
              "oom": ("oom", r"out of memory.*20\.00 GiB"),
              "oom_runtime": ("oom", r"out of memory.*8\.00 GiB"),
              "oom_eval": ("oom", r"OutOfMemoryError: CUDA out of memory during evaluation"),
              "crash": ("crashed", r"ValueError: injected crash")}
    import re

    for n, (fault, _) in FAULTS.items():
        status, reason = expect[fault]
        assert rows[n]["state"] == "fail", (fault, rows[n])
        assert rows[n]["status"] == status, (fault, rows[n])
        assert re.search(reason, rows[n]["reason"]), (fault, rows[n]["reason"])
    healthy = [rows[n] for n in rows if n not in FAULTS]
    assert all(r["state"] == "complete" and 0 < r["value"] < 20 for r in healthy)
    assert summary["counts"] == {"fail": len(FAULTS), "complete": N_TRIALS - len(FAULTS)}
    ledger = RunDir(tiny_run).manifest()["ledger"]
    assert sorted(r["trial"] for r in ledger) == list(range(N_TRIALS))  # each charged once
    by_trial = {r["trial"]: r for r in ledger}
    assert by_trial[1]["status"] == "diverged" and by_trial[1]["flops"] > 0  # partial cost
    assert by_trial[3]["status"] == "oom"


def test_non_finite_validation_is_a_failure_with_a_reason(tiny_run: Path, monkeypatch) -> None:
    real_eval = tr.evaluate_lm

    def nan_eval(*args, **kw):
        res = dict(real_eval(*args, **kw))
        res["bpb"] = res["loss"] = float("nan")
        return res

    monkeypatch.setattr(tr, "evaluate_lm", nan_eval)
    summary = st.run_search(tiny_settings(tiny_run, 2))
    assert [r["state"] for r in summary["trials"]] == ["fail", "fail"]
    ledger = RunDir(tiny_run).manifest()["ledger"]
    assert [r["status"] for r in ledger] == ["diverged", "diverged"]  # as in the study
    assert all(r["status"] == "diverged" and "non-finite val_bpb" in r["reason"]
               for r in summary["trials"])
