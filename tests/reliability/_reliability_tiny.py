"""Tiny data and search settings shared by the reliability tests (beside them, not in
conftest.py, so that subprocesses and test modules can import them by a unique name)."""

from __future__ import annotations

from pathlib import Path


def tiny_data(data_dir: Path, vocab: int = 64, train_tokens: int = 20_000) -> Path:
    """A prepared data folder of a learnable synthetic stream (no tokenizer run needed)."""
    import numpy as np

    from lmalloc.data.shards import write_token_splits

    rng = np.random.default_rng(0)
    x = np.empty(train_tokens + 4_000, dtype=np.int64)
    x[0] = 1
    noise = rng.integers(0, vocab, len(x))
    for i in range(1, len(x)):
        x[i] = noise[i] if noise[i] % 10 == 0 else (5 * x[i - 1] + 3) % vocab
    write_token_splits(data_dir, {"train": [x[:train_tokens]], "val": [x[train_tokens:]]},
                       vocab_size=vocab, eot_id=0,
                       split_bytes={"train": 3 * train_tokens, "val": 12_000})
    return data_dir


TINY_MODEL = {"n_layer": 1, "n_head": 2, "d_model": 16, "seq_len": 16}


def tiny_settings(run: Path, n_trials: int, steps: int = 6, **kw: object):
    """Search settings for near-free trials: a 1-layer, 16-wide model, ``steps`` steps of 128
    tokens, one evaluation at the end (random lr, no pruning)."""
    from lmalloc.search.study import SearchSettings
    from lmalloc.train.config import TrainConfig

    train = TrainConfig(lr=3e-3, batch_tokens=128, micro_batch=8, seq_len=16,
                        max_tokens=128 * steps, eval_every=steps, eval_tokens=256,
                        precision="fp32", device="cpu", seed=1)
    space = {"params": {"lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}}}
    args: dict[str, object] = {"strategy": "random", "n_trials": n_trials, "pruner": "none",
                               **kw}
    return SearchSettings(run_dir=str(run), space=space, base_model=dict(TINY_MODEL),
                          base_train=train.to_dict(), **args)  # type: ignore[arg-type]



def fast_worker_main(s, worker: int, threads: int) -> None:
    """A search worker process whose trials skip the training (for many-trial concurrency
    tests): the objective still runs in full around it — the study's ask/tell in the shared
    SQLite file, the trial's user attributes, a metrics file, the ledger charge under the
    manifest lock — so only the time of the model's training is saved. Spawned by
    ``run_search`` in place of :func:`lmalloc.search.study._worker_main` (which also imports
    torch, seconds per process)."""
    import os
    import time

    from lmalloc.rundir import atomic_write_text
    from lmalloc.search import objective
    from lmalloc.search import study as st

    def fake_train(self, trial, model_cfg, train_cfg):
        t0 = time.perf_counter()
        lr = float(trial.params["lr"])
        value = 2.0 + abs(lr - 4e-3) * 10  # a smooth function of the parameter
        out = self.run.trial(trial.number)
        atomic_write_text(out / "metrics.jsonl", f'{{"step": 1, "val_bpb": {value}}}\n')
        flops = 1e6 * (1 + trial.number)
        self.run.charge(self.stage, flops, time.perf_counter() - t0, trial=trial.number,
                        status="completed", pid=os.getpid())
        for key, v in (("status", "completed"), ("reason", "fake"), ("flops", flops),
                       ("worker_pid", os.getpid())):
            trial.set_user_attr(key, v)
        return value

    objective.TrialObjective._train = fake_train  # type: ignore[method-assign]
    os.environ["OMP_NUM_THREADS"] = str(threads)
    st._optimize(s, worker)
