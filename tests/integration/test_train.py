"""The Trainer end to end on CPU: artifacts, stop conditions, divergence, OOM, pruning,
resume guards and WSD branching. Tiny shapes; each test takes a few seconds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from _train_data import make_data, tiny_model, tiny_train
from torch import nn

from lmalloc.errors import UserError
from lmalloc.train import Callback, StopTraining, Trainer, read_metrics


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return make_data(tmp_path / "data")


def train_rows(out: Path, kind: str = "train") -> list[dict[str, Any]]:
    return [r for r in read_metrics(out / "metrics.jsonl") if r["kind"] == kind]


def test_tiny_run_writes_artifacts_and_learns(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = Trainer(tiny_model(), tiny_train(max_steps=30, eval_every=10), data, out).fit()
    assert (r.status, r.steps, r.tokens) == ("completed", 30, 30 * 256)
    assert r.flops == pytest.approx(30 * 256 * json.loads(
        (out / "config.json").read_text())["flops_per_token"])
    rows = train_rows(out)
    assert [x["step"] for x in rows] == list(range(1, 31))
    for key in ("tokens", "flops", "seconds", "lr", "loss", "grad_norm", "tokens_per_s"):
        assert all(key in x for x in rows)
    assert sum(x["loss"] for x in rows[-5:]) < sum(x["loss"] for x in rows[:5]) - 1.0
    evals = train_rows(out, "eval")
    assert [e["step"] for e in evals] == [10, 20, 30]
    assert r.val_loss == evals[-1]["val_loss"] and 0 < r.val_bpb < 20
    assert read_metrics(out / "metrics.jsonl")[-1]["kind"] == "end"
    assert sorted(p.name for p in (out / "checkpoint").iterdir()) == [
        "model.safetensors", "optimizer.safetensors", "state.json"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["n_layer"] == 2 and cfg["train"]["max_steps"] == 30


def test_result_splits_its_time_into_training_eval_checkpoints_and_startup(
        data: Path, tmp_path: Path) -> None:
    r = Trainer(tiny_model(), tiny_train(max_steps=6, eval_every=2, checkpoint_every=3), data,
                tmp_path / "o").fit()
    parts = r.ledger()
    assert parts["eval_seconds"] == r.session_eval_seconds > 0  # three evaluations
    assert parts["checkpoint_seconds"] == r.session_checkpoint_seconds > 0  # and three saves
    assert parts["startup_seconds"] == r.startup_seconds > 0
    assert parts["seconds"] == pytest.approx(r.session_seconds + r.startup_seconds)
    assert parts["train_seconds"] > 0 and sum(
        parts[k] for k in ("train_seconds", "eval_seconds", "checkpoint_seconds",
                           "startup_seconds")) == pytest.approx(parts["seconds"])
    assert r.session_eval_seconds + r.session_checkpoint_seconds < r.session_seconds


def test_interim_evaluations_read_fewer_tokens_the_last_reads_eval_tokens(
        data: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    r = Trainer(tiny_model(), tiny_train(max_steps=6, eval_every=2, interim_eval_tokens=128),
                data, out).fit()
    evals = train_rows(out, "eval")
    assert [(e["step"], e["val_tokens"]) for e in evals] == [(2, 128), (4, 128), (6, 512)]
    assert r.val_loss == evals[-1]["val_loss"]
    assert all(e["eval_seconds"] > 0 for e in evals)


@pytest.mark.parametrize("limit,steps", [({"max_tokens": 1000}, 4), ({"max_steps": 3}, 3)])
def test_token_and_step_limits(data: Path, tmp_path: Path, limit: dict[str, Any],
                               steps: int) -> None:
    cfg = tiny_train(**{"max_steps": None, **limit})
    r = Trainer(tiny_model(), cfg, data, tmp_path / "o").fit()
    assert r.status == "completed" and r.steps == steps


def test_flop_limit(data: Path, tmp_path: Path) -> None:
    from lmalloc.model.accounting import train_flops_per_token

    per_step = train_flops_per_token(tiny_model()) * 256
    r = Trainer(tiny_model(), tiny_train(max_steps=None, max_flops=2.5 * per_step), data,
                tmp_path / "o").fit()
    assert r.steps == 3 and r.flops >= 2.5 * per_step


def test_time_limit(data: Path, tmp_path: Path) -> None:
    cfg = tiny_train(max_steps=None, max_seconds=1e-9, schedule="constant")
    r = Trainer(tiny_model(), cfg, data, tmp_path / "o").fit()
    assert r.status == "time_limit" and r.steps == 0


def test_cosine_needs_a_length(data: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="needs a length"):
        Trainer(tiny_model(), tiny_train(max_steps=None, max_seconds=5), data, tmp_path).fit()


class Faulty(nn.Module):
    """Wraps a GPT; from training call ``at`` on, returns NaN loss or raises ``exc``."""

    def __init__(self, inner: nn.Module, at: int, exc: BaseException | None = None) -> None:
        super().__init__()
        self.inner, self.at, self.exc, self.calls = inner, at, exc, 0

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> Any:
        logits, loss = self.inner(idx, targets)
        if self.training:
            self.calls += 1
            if self.calls >= self.at:
                if self.exc is not None:
                    raise self.exc
                loss = loss * float("nan")
        return logits, loss


def gpt() -> nn.Module:
    from lmalloc.model.gpt import GPT

    return GPT(tiny_model())


def test_nan_loss_ends_as_diverged(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    # 2 micro-batches a step: the 7th forward is step 4's first
    r = Trainer(tiny_model(), tiny_train(), data, out, model=Faulty(gpt(), at=7)).fit()
    assert r.status == "diverged" and "non-finite" in r.reason and r.steps == 4
    end = read_metrics(out / "metrics.jsonl")[-1]
    assert end["status"] == "diverged" and end["reason"] == r.reason


def test_loss_spike_ends_as_diverged(data: Path, tmp_path: Path) -> None:
    class Spike(Faulty):
        def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> Any:
            logits, loss = self.inner(idx, targets)
            self.calls += self.training
            return logits, loss * (10.0 if self.calls >= self.at else 1.0)

    r = Trainer(tiny_model(), tiny_train(spike_factor=3.0), data, tmp_path / "o",
                model=Spike(gpt(), at=9)).fit()
    assert r.status == "diverged" and "spike" in r.reason and r.steps == 5


def test_out_of_memory_is_a_status(data: Path, tmp_path: Path) -> None:
    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
    r = Trainer(tiny_model(), tiny_train(), data, tmp_path / "o",
                model=Faulty(gpt(), at=3, exc=oom)).fit()
    assert r.status == "oom" and "out of memory" in r.reason and r.steps == 1


class Pruner(Callback):
    def __init__(self) -> None:
        self.seen: list[int] = []

    def on_eval(self, trainer: Trainer, row: dict[str, Any]) -> None:
        self.seen.append(row["step"])
        raise StopTraining("pruned", f"val_loss {row['val_loss']:.3f} too high")


def test_pruning_from_on_eval(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    pruner = Pruner()
    r = Trainer(tiny_model(), tiny_train(max_steps=12, eval_every=4), data, out,
                callbacks=[pruner]).fit()
    assert (r.status, r.steps, pruner.seen) == ("pruned", 4, [4])
    assert "too high" in r.reason and r.val_loss is not None
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == 4


def test_a_pruned_run_is_not_evaluated_again_in_full(data: Path, tmp_path: Path) -> None:
    # the pruner stopped it at a short interim evaluation: a closing full one is wasted time
    out = tmp_path / "o"
    r = Trainer(tiny_model(), tiny_train(max_steps=12, eval_every=4, interim_eval_tokens=128),
                data, out, callbacks=[Pruner()]).fit()
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
             if '"val_loss"' in line]
    assert r.status == "pruned" and [e["val_tokens"] for e in evals] == [128]
    assert r.val_loss == evals[0]["val_loss"]


def test_resume_with_changed_config_is_refused(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    Trainer(tiny_model(), tiny_train(max_steps=4), data, out).fit()
    before = {p.name: p.read_bytes() for p in (out / "checkpoint").iterdir()}
    config_before = (out / "config.json").read_bytes()
    with pytest.raises(UserError, match=r"train.lr: 0.003 -> 0.01"):
        Trainer(tiny_model(), tiny_train(max_steps=4, lr=1e-2), data, out).fit()
    with pytest.raises(UserError, match="different configuration"):
        Trainer(tiny_model(d_model=64), tiny_train(max_steps=4), data, out).fit()
    assert {p.name: p.read_bytes() for p in (out / "checkpoint").iterdir()} == before
    assert (out / "config.json").read_bytes() == config_before
    # a longer time limit is not a change of the run's math: resuming is allowed
    r = Trainer(tiny_model(), tiny_train(max_steps=4, max_seconds=1e6), data, out).fit()
    assert r.status == "completed" and r.session_flops == 0


def test_checkpoint_of_another_shape_is_refused(data: Path, tmp_path: Path) -> None:
    Trainer(tiny_model(), tiny_train(max_steps=2), data, tmp_path / "a").fit()
    with pytest.raises(UserError, match="another model shape"):
        Trainer(tiny_model(d_model=64), tiny_train(max_steps=2), data, tmp_path / "b",
                init_from=tmp_path / "a" / "checkpoint").fit()


def test_wsd_branch_equals_the_full_run(data: Path, tmp_path: Path) -> None:
    """Stable phase to 8 steps then a 4-step cooldown branch = a 12-step WSD run with a
    1/3 cooldown, loss for loss (same lr at every step, same data)."""
    warm = {"warmup": 512.0, "schedule": "wsd", "eval_every": 0}
    stable = tiny_train(max_steps=16, cooldown_frac=0.0, snapshot_tokens=(8 * 256,), **warm)
    Trainer(tiny_model(), stable, data, tmp_path / "stable").fit()
    snap = tmp_path / "stable" / "snapshots" / str(8 * 256)
    b = Trainer(tiny_model(), stable, data, tmp_path / "branch", branch_from=snap,
                cooldown_tokens=4 * 256).fit()
    full = Trainer(tiny_model(), tiny_train(max_steps=12, cooldown_frac=1 / 3, **warm), data,
                   tmp_path / "full").fit()
    assert (b.status, b.steps, b.tokens) == ("completed", 12, 12 * 256)
    branch_rows, full_rows = train_rows(tmp_path / "branch"), train_rows(tmp_path / "full")
    assert [r["step"] for r in branch_rows] == [9, 10, 11, 12]
    assert [r["lr"] for r in branch_rows] == pytest.approx([r["lr"] for r in full_rows[8:]])
    assert [r["loss"] for r in branch_rows] == pytest.approx(
        [r["loss"] for r in full_rows[8:]], abs=1e-6)
    assert b.val_loss == pytest.approx(full.val_loss, abs=1e-6)
    with pytest.raises(UserError, match="wsd"):
        Trainer(tiny_model(), tiny_train(), data, tmp_path / "x", branch_from=snap,
                cooldown_tokens=256)


@pytest.mark.parametrize("planned_steps, max_seconds", [(12, 1.0), (1000, 0.5)])
def test_fill_time_ends_the_cooled_down_run_at_its_time_limit(
        data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, planned_steps: int,
        max_seconds: float) -> None:
    """A clock of 10 ms per step: the run planned too short goes on to ~98 % of its time, the
    one planned too long cools down early; both end cooled down, not cut by the limit."""
    monkeypatch.setattr(Trainer, "seconds", lambda self: 0.01 * self.step)
    cfg = tiny_train(max_steps=None, max_tokens=planned_steps * 256, max_seconds=max_seconds,
                     schedule="wsd", cooldown_frac=0.2, warmup=0.05, eval_every=0,
                     fill_time=True)
    out = tmp_path / "o"
    r = Trainer(tiny_model(), cfg, data, out).fit()
    assert r.status == "completed", r.reason
    budget = int(0.98 * max_seconds / 0.01)
    assert budget - 8 <= r.steps <= budget, (r.steps, budget)
    lrs = [row["lr"] for row in read_metrics(out / "metrics.jsonl") if row.get("kind") == "train"]
    # the cooldown (after the last step at the peak) is the last cooldown_frac of the run as
    # it ended, and decays towards the floor (0.1 of the lr) in steps of ~1/10 of its length
    last_peak = max(i for i, lr in enumerate(lrs) if lr == max(lrs))
    assert abs((r.steps - 1 - last_peak) / r.steps - 0.2) < 0.05
    assert lrs[-1] < 0.25 * cfg.lr
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["total_steps"] == r.steps and state["filling"] is False


def test_fill_time_needs_a_time_limit_and_a_wsd_length() -> None:
    with pytest.raises(UserError, match="fill_time needs"):
        tiny_train(max_steps=None, max_tokens=2560, schedule="cosine", max_seconds=1.0,
                   fill_time=True)
    with pytest.raises(UserError, match="fill_time needs"):
        tiny_train(max_steps=None, max_tokens=2560, schedule="wsd", fill_time=True)


def test_fill_time_shortens_the_cooldown_when_the_machine_slows_down(
        data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Steps 3x slower from step 330, after the cooldown started at ~314: the rest of the
    cooldown is squeezed into the time left, and the run still ends cooled down, not cut."""
    def clock(self: Trainer) -> float:
        return 0.0025 * min(self.step, 330) + 0.0075 * max(0, self.step - 330)

    monkeypatch.setattr(Trainer, "seconds", clock)
    cfg = tiny_train(max_steps=None, max_tokens=1000 * 256, max_seconds=1.0, schedule="wsd",
                     cooldown_frac=0.2, warmup=0.05, eval_every=0, fill_time=True)
    out = tmp_path / "o"
    r = Trainer(tiny_model(), cfg, data, out).fit()
    assert r.status == "completed", r.reason
    assert r.seconds <= 0.98 and r.steps > 340
    lrs = [row["lr"] for row in read_metrics(out / "metrics.jsonl") if row.get("kind") == "train"]
    assert lrs[-1] < 0.25 * cfg.lr  # cooled down to near the floor
    assert all(b <= a + 1e-12 for a, b in zip(lrs[320:], lrs[321:], strict=False))  # never up
