"""The launcher's decisions, without starting processes: DDP or FSDP from the memory model,
the batch layout a resumed run may use on another number of processes, and bad --nproc."""

from __future__ import annotations

import pytest

from lmalloc.cost.memory import HEADROOM, estimate_memory
from lmalloc.errors import UserError
from lmalloc.model.config import GPTConfig
from lmalloc.train.config import TrainConfig
from lmalloc.train.launch import batch_layout, check_parallel_request, choose_parallel

# weights dominate (micro-batch 1 of 32 tokens), so sharding them over 2 ranks saves memory
CFG = GPTConfig(vocab_size=4096, n_layer=4, n_head=4, d_model=256, seq_len=32)
TRAIN = TrainConfig(batch_tokens=64, micro_batch=1, seq_len=32, max_steps=10, device="cpu",
                    precision="fp32")


def peaks(nproc: int = 2) -> tuple[float, float]:
    micro, accum = batch_layout(TRAIN, nproc)
    ddp, fsdp = (estimate_memory(CFG, micro, 32, "fp32", mode, nproc, grad_accum=accum).peak
                 for mode in ("ddp", "fsdp"))
    assert fsdp < 0.75 * ddp  # precondition of the tests below
    return ddp, fsdp


def test_ddp_when_a_replica_fits() -> None:
    ddp, _ = peaks()
    c = choose_parallel(CFG, TRAIN, 2, 2 * ddp / HEADROOM, precision="fp32")
    assert c.parallel == "ddp" and "fits" in c.reason
    assert c.ddp_peak == pytest.approx(ddp)


def test_fsdp_when_the_memory_model_says_ddp_does_not_fit() -> None:
    ddp, fsdp = peaks()
    between = (ddp + fsdp) / 2 / HEADROOM  # FSDP fits, DDP does not
    c = choose_parallel(CFG, TRAIN, 2, between, precision="fp32")
    assert c.parallel == "fsdp" and "does not fit" in c.reason and "warning" not in c.reason
    assert c.fsdp_peak == pytest.approx(fsdp) and c.memory_bytes == between


def test_neither_fits_picks_fsdp_and_warns() -> None:
    _, fsdp = peaks()
    c = choose_parallel(CFG, TRAIN, 2, fsdp / 2, precision="fp32")
    assert c.parallel == "fsdp" and "warning: FSDP is over the usable memory" in c.reason


def test_forced_layout_is_kept_and_explained() -> None:
    ddp, fsdp = peaks()
    c = choose_parallel(CFG, TRAIN, 2, (ddp + fsdp) / 2 / HEADROOM, "ddp", precision="fp32")
    assert c.parallel == "ddp" and c.reason.startswith("forced with --parallel ddp")
    assert "warning: DDP" in c.reason
    big = choose_parallel(CFG, TRAIN, 2, 10 * ddp, "fsdp", precision="fp32")
    assert big.parallel == "fsdp" and "warning" not in big.reason


def test_one_process_is_single() -> None:
    assert choose_parallel(CFG, TRAIN, 1, None).parallel == "single"
    with pytest.raises(UserError, match="parallel"):
        choose_parallel(CFG, TRAIN, 2, 1e9, "zero9", precision="fp32")


# batch 16 sequences of 32 tokens, micro-batches of 8: 1 process reads 2 x 8, 4 read 1 x 4
B16 = TrainConfig(batch_tokens=512, micro_batch=8, seq_len=32, max_steps=10, device="cpu")


def test_batch_layout_fresh_and_resumed() -> None:
    assert batch_layout(B16, 1) == (8, 2)
    assert batch_layout(B16, 2) == (8, 1)
    assert batch_layout(B16, 4) == (4, 1)
    # written by 4 processes in micro-batches of 4: 1 process keeps 4 (4 x 4), same batches
    assert batch_layout(B16, 1, data_micro=4, data_world=4) == (4, 4)
    assert batch_layout(B16, 2, data_micro=4, data_world=4) == (4, 2)
    assert batch_layout(B16, 2, data_micro=8, data_world=1) == (8, 1)


def test_batch_layout_refuses_what_cannot_keep_the_global_batch() -> None:
    # written in micro-batches of 8; on 4 processes each has only 4 sequences per step
    with pytest.raises(UserError, match=r"cannot resume on 4 processes.*\[1, 2\]"):
        batch_layout(B16, 4, data_micro=8, data_world=1)
    with pytest.raises(UserError, match="world_size"):  # 16 sequences do not split over 3
        batch_layout(B16, 3)


@pytest.mark.parametrize("nproc", [0, -2])
def test_nproc_below_one_is_refused(nproc: int) -> None:
    with pytest.raises(UserError, match="nproc"):
        check_parallel_request(nproc, "auto")


def test_more_processes_than_devices_is_refused() -> None:
    with pytest.raises(UserError, match="more processes than devices"):
        check_parallel_request(100_000, "auto", device_pref="cpu")


def test_forced_layout_needs_two_processes() -> None:
    with pytest.raises(UserError, match="at least 2 processes"):
        check_parallel_request(1, "fsdp")
    with pytest.raises(UserError, match="parallel"):
        check_parallel_request(2, "deepspeed", device_pref=None)
