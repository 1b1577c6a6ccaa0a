"""Activation checkpointing (``TrainConfig.activation_checkpointing``): the same losses and
gradients as without it, less memory, and the memory model's predicted saving.

The memory test measures each run in a fresh subprocess, as ``bench/memory_model.py`` does:
the resident-set high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs`` at the
start of training) minus the resident set then, with glibc returning every allocation above
64 KiB on free (``MALLOC_MMAP_THRESHOLD_``), so freed activations leave the count.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lmalloc.cost.memory import estimate_memory
from lmalloc.errors import UserError
from lmalloc.model.config import GPTConfig
from lmalloc.model.gpt import GPT
from lmalloc.train import TrainConfig, Trainer
from lmalloc.train.callbacks import Callback
from lmalloc.train.trainer import set_activation_checkpointing

VOCAB = 256


def make_data(path: Path) -> Path:
    from lmalloc.data.shards import write_token_splits

    rng = np.random.default_rng(0)
    def stream(n: int) -> np.ndarray:  # learnable: a period-17 cycle with 10 % random tokens
        x = (np.arange(n) * 37 % 17) * 13 % VOCAB
        noise = rng.random(n) < 0.1
        return np.where(noise, rng.integers(0, VOCAB, n), x)

    splits = {"train": [stream(40_000)], "val": [stream(8_000)]}
    write_token_splits(path, splits, vocab_size=VOCAB, eot_id=0,
                       split_bytes={"train": 40_000, "val": 8_000})
    return path


def _loss_and_grads(ckpt: bool, dropout: float) -> tuple[float, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=VOCAB, n_layer=3, n_head=2, d_model=32, seq_len=32,
                    dropout=dropout)
    model = GPT(cfg)
    model.activation_checkpointing = ckpt
    x = torch.randint(0, VOCAB, (4, 32), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(2)  # the dropout masks' stream
    _, loss = model(x, torch.roll(x, -1, 1))
    assert loss is not None
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()
                         if p.grad is not None}


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_checkpointed_blocks_give_the_same_loss_and_gradients(dropout: float) -> None:
    """Recomputation replays dropout's RNG state, so even with dropout nothing changes."""
    loss0, g0 = _loss_and_grads(False, dropout)
    loss1, g1 = _loss_and_grads(True, dropout)
    assert loss1 == pytest.approx(loss0, rel=1e-6)
    assert sorted(g0) == sorted(g1)
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-5, atol=1e-7)


def test_checkpointing_saves_fewer_tensors_for_backward() -> None:
    """What autograd keeps: with checkpointing, about one tensor per block (its input)."""
    cfg = GPTConfig(vocab_size=VOCAB, n_layer=4, n_head=2, d_model=32, seq_len=32)
    x = torch.randint(0, VOCAB, (2, 32))
    saved = {}
    for ckpt in (False, True):
        model = GPT(cfg)
        model.activation_checkpointing = ckpt
        nbytes = []

        def pack(t: torch.Tensor, acc: list[int] = nbytes) -> torch.Tensor:
            acc.append(t.numel() * t.element_size())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(x, x)
        saved[ckpt] = sum(nbytes)
    assert saved[True] < saved[False] / 3


def _train(tmp: Path, ckpt: bool) -> list[float]:
    cfg = GPTConfig(vocab_size=VOCAB, n_layer=2, n_head=2, d_model=32, seq_len=32)
    train = TrainConfig(batch_tokens=256, micro_batch=4, seq_len=32, max_steps=4, lr=3e-3,
                        device="cpu", eval_tokens=256, seed=3, activation_checkpointing=ckpt)
    losses: list[float] = []

    class Record(Callback):
        def on_step(self, trainer: object, row: dict[str, float]) -> None:
            losses.append(row["loss"])

    out = tmp / ("on" if ckpt else "off")
    trainer = Trainer(cfg, train, make_data(tmp / "data"), out, [Record()])
    assert trainer.fit().status == "completed"
    assert trainer.model.activation_checkpointing is ckpt  # what the setting switched
    return losses


def test_trainer_with_checkpointing_matches_without(tmp_path: Path) -> None:
    off, on = _train(tmp_path, False), _train(tmp_path, True)
    assert len(off) == len(on) == 4 and off[-1] < off[0]
    assert on == pytest.approx(off, rel=1e-5)


def test_checkpointing_is_a_validated_resumable_setting() -> None:
    with pytest.raises(UserError, match="activation_checkpointing"):
        TrainConfig(max_steps=1, activation_checkpointing="yes")  # type: ignore[arg-type]
    a = TrainConfig(max_steps=1)
    assert a.resume_hash() == a.replace(activation_checkpointing=True).resume_hash()
    with pytest.raises(UserError, match="no GPT blocks"):
        set_activation_checkpointing(torch.nn.Linear(2, 2), True)
    set_activation_checkpointing(torch.nn.Linear(2, 2), False)  # nothing to switch off: fine


# -- measured memory --------------------------------------------------------------------------
MEM_MODEL = {"vocab_size": VOCAB, "n_layer": 8, "n_head": 4, "d_model": 128, "seq_len": 256}
MEM_MICRO = 8
CHILD = r"""
import json, sys
import torch
from lmalloc.model.config import GPTConfig
from lmalloc.train import TrainConfig, Trainer
from lmalloc.train.callbacks import Callback

torch.set_num_threads(1)
spec = json.loads(sys.argv[1])

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return float(line.split()[1]) * 1024

class Peak(Callback):
    def on_train_start(self, trainer):
        self.base = status("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    def on_step(self, trainer, row):
        self.peak = status("VmHWM")
        self.losses = getattr(self, "losses", []) + [row["loss"]]

peak = Peak()
cfg = GPTConfig(**spec["model"])
train = TrainConfig(batch_tokens=spec["micro"] * cfg.seq_len, micro_batch=spec["micro"],
                    seq_len=cfg.seq_len, max_steps=3, device="cpu", eval_tokens=cfg.seq_len,
                    activation_checkpointing=spec["ckpt"], precision="fp32", compile=False)
Trainer(cfg, train, spec["data"], spec["out"], [peak]).fit()
print(json.dumps({"step_bytes": peak.peak - peak.base, "losses": peak.losses}))
"""


def _measure(tmp: Path, data: Path, ckpt: bool) -> dict[str, object]:
    spec = {"model": MEM_MODEL, "micro": MEM_MICRO, "ckpt": ckpt, "data": str(data),
            "out": str(tmp / f"mem_{ckpt}")}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536"}
    r = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out: dict[str, object] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_checkpointing_lowers_measured_memory_by_the_predicted_saving(tmp_path: Path) -> None:
    data = make_data(tmp_path / "data")
    off, on = _measure(tmp_path, data, False), _measure(tmp_path, data, True)
    assert on["losses"] == pytest.approx(off["losses"], rel=1e-5)
    cfg = GPTConfig(**MEM_MODEL)
    est = {c: estimate_memory(cfg, MEM_MICRO, cfg.seq_len, "fp32", activation_checkpointing=c,
                              device="cpu") for c in (False, True)}
    predicted = est[False].peak - est[True].peak
    measured = float(off["step_bytes"]) - float(on["step_bytes"])  # type: ignore[arg-type]
    print(f"saving: predicted {predicted / 2**20:.1f} MiB, measured {measured / 2**20:.1f} MiB;"
          f" step memory off {float(off['step_bytes']) / 2**20:.1f} MiB "  # type: ignore[arg-type]
          f"(predicted {(est[False].peak - est[False].weights) / 2**20:.1f}), on "
          f"{float(on['step_bytes']) / 2**20:.1f} MiB "  # type: ignore[arg-type]
          f"(predicted {(est[True].peak - est[True].weights) / 2**20:.1f})")
    assert measured > 0.5 * float(off["step_bytes"])  # type: ignore[arg-type]
    # the memory model's checkpointed peak is 2-12 % high on small-vocabulary CPU shapes
    # (module docstring of lmalloc.cost.memory); measured here: -0.5 % on the saving
    assert measured == pytest.approx(predicted, rel=0.15)
