"""Fine-tuning a trained run on a downstream task, through the one :class:`~lmalloc.train.Trainer`.

A task's examples become a :class:`~lmalloc.data.shards.TokenSource` (:class:`ExampleSource`):
each example is tokenised with the run's tokenizer into one fixed-length row ``x`` and a
target row ``y`` (``-1`` where no loss is taken), so the trainer reads them exactly like
token shards.

* **Classification**: :class:`GPTClassifier` puts a linear head on the trunk's final hidden
  state at the last prompt token. Encoding: ``x`` is the prompt padded on the right with the
  end-of-text id; ``y[:, 0]`` is the label's index in ``task.labels``, ``y[:, 1]`` the position
  of the last prompt token, every other entry ``-1``. Metrics (:mod:`lmalloc.evaluate.metrics`,
  scikit-learn): accuracy, macro-F1 and the confusion matrix, beside the majority-class
  baseline (the most frequent train label, predicted for every example).
* **Generation**: the plain GPT is trained as a conditional LM on
  ``prompt + task.answer(ex) + eot`` (the answer is the task's delimiter + target) with the
  loss masked (``-1``) on the prompt and the padding; dev/test prompts are decoded greedily
  and with beam search (:mod:`lmalloc.evaluate.decode`) and scored with BLEU (sacrebleu,
  signature reported) and ROUGE-1/2/L F-measure (rouge-score), via
  :mod:`lmalloc.evaluate.metrics`; the outputs go to ``out_dir/predictions.json``.

Truncation: a prompt longer than the room left is cut on the **left** (its end, where the
template puts the question, is kept); a generation target keeps at most half the context.
The fine-tuning sequence length is the longest encoded example, capped at the model's context.
(The trainer's bits per byte on these splits means nothing; its val loss is the task loss on
the first 256 eval examples, a progress signal only: nothing is selected on it.)

Weights start from the run's ``final/`` model; the fine-tuned state lives in
``out_dir/checkpoint`` (default ``run_dir/finetune/<task>/seed<k>``), so an interrupted call
resumes.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lmalloc.errors import UserError
from lmalloc.rundir import atomic_write_json
from lmalloc.train.device import device_type

if TYPE_CHECKING:
    from lmalloc.evaluate.tasks import Example, Task
    from lmalloc.model.gpt import GPT

EVAL_SPLITS = ("dev", "test")


# -- examples as a token source -----------------------------------------------------------------
class ExampleSplit:
    """Encoded examples as a :class:`~lmalloc.data.shards.TokenSplit`: rows ``x``, ``y``
    of shape (N, T). Batches are drawn epoch by epoch from a seeded permutation, a pure
    function of ``(seed, step, rank)``, so resume and data-parallel ranks stay exact."""

    def __init__(self, x: np.ndarray, y: np.ndarray, num_bytes: int) -> None:
        if x.shape != y.shape or x.ndim != 2 or len(x) == 0:
            raise UserError(f"an example split needs equal non-empty (N, T) rows, got "
                            f"{x.shape} and {y.shape}")
        self.x, self.y = x.astype(np.int64), y.astype(np.int64)
        self.num_tokens = int((self.y >= 0).sum())
        self.num_bytes = int(num_bytes)

    def __len__(self) -> int:
        return len(self.x)

    def _check_len(self, seq_len: int) -> None:
        if seq_len != self.x.shape[1]:
            raise ValueError(f"examples are encoded to {self.x.shape[1]} tokens, not {seq_len}")

    def window_batch(self, step: int, batch_size: int, seq_len: int, seed: int, rank: int = 0,
                     world_size: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``[(step * world_size + rank) * batch_size, ... + batch_size)`` of the
        endless sequence of per-epoch permutations (epoch ``e`` seeded by ``(seed, e)``)."""
        self._check_len(seq_len)
        n = len(self.x)
        start = (step * world_size + rank) * batch_size
        pos = np.arange(start, start + batch_size)
        idx = np.empty(batch_size, dtype=np.int64)
        for epoch in np.unique(pos // n):
            perm = np.random.default_rng([seed, int(epoch)]).permutation(n)
            sel = pos // n == epoch
            idx[sel] = perm[pos[sel] % n]
        return self.x[idx], self.y[idx]

    def sequential_batches(self, batch_size: int, seq_len: int, rank: int = 0,
                           world_size: int = 1, max_tokens: int | None = None,
                           ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every example once, in order; row ``i`` goes to rank ``i % world_size``; stops
        once ``max_tokens`` scored targets (all ranks together, estimated) are covered."""
        self._check_len(seq_len)
        rows = np.arange(rank, len(self.x), world_size)
        if max_tokens:
            per_row = max(1.0, self.num_tokens / len(self.x))
            rows = rows[: max(1, math.ceil(max_tokens / per_row / world_size))]
        for i in range(0, len(rows), batch_size):
            sel = rows[i:i + batch_size]
            yield self.x[sel], self.y[sel]


class ExampleSource:
    """A :class:`~lmalloc.data.shards.TokenSource` of encoded task splits."""

    def __init__(self, dir: Path, vocab_size: int, splits: Mapping[str, ExampleSplit]) -> None:
        self.dir, self.vocab_size, self.splits = Path(dir), int(vocab_size), dict(splits)

    def split(self, name: str) -> ExampleSplit:
        if name not in self.splits:
            raise UserError(f"the task has no {name!r} split (has {sorted(self.splits)})")
        return self.splits[name]


# -- encoding -----------------------------------------------------------------------------------
def _ids(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    return [list(e.ids) for e in tokenizer.encode_batch(list(texts))]


def label_index(task: Task, ex: Example) -> int:
    """The position of ``ex.label`` in ``task.labels`` (UserError when it is not there)."""
    if ex.label not in task.labels:
        raise UserError(f"task {task.name!r}: label {ex.label!r} is not one of the task's "
                        f"labels {list(task.labels)}")
    return task.labels.index(ex.label)


def encode_classification(task: Task, examples: Sequence[Example], tokenizer: Any,
                          seq_len: int, pad_id: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Rows ``x``, ``y`` (N, seq_len) in the classification encoding of the module docstring
    and the number of prompts cut on the left to fit."""
    prompts = _ids(tokenizer, [task.prompt(ex) for ex in examples])
    x = np.full((len(examples), seq_len), pad_id, dtype=np.int64)
    y = np.full((len(examples), seq_len), -1, dtype=np.int64)
    cut = 0
    for i, (ex, ids) in enumerate(zip(examples, prompts, strict=True)):
        if not ids:
            raise UserError(f"task {task.name!r}: example {i} has an empty prompt")
        cut += len(ids) > seq_len
        ids = ids[-seq_len:]
        x[i, :len(ids)] = ids
        y[i, 0] = label_index(task, ex) if ex.label is not None else -1
        y[i, 1] = len(ids) - 1
    return x, y, cut


def encode_generation(task: Task, examples: Sequence[Example], tokenizer: Any, seq_len: int,
                      eot_id: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Rows ``x`` = (prompt + target + eot)[:-1] and ``y`` = the same shifted by one, with
    ``y = -1`` on every prompt position and on the padding, and the number of cut prompts."""
    prompts = [task.prompt(ex) for ex in examples]
    p_ids = _ids(tokenizer, prompts)
    t_ids = _ids(tokenizer, [task.answer(ex) for ex in examples])
    x = np.full((len(examples), seq_len), eot_id, dtype=np.int64)
    y = np.full((len(examples), seq_len), -1, dtype=np.int64)
    cut = 0
    for i, (p, t) in enumerate(zip(p_ids, t_ids, strict=True)):
        t = (t + [eot_id])[: max(1, seq_len // 2)]
        room = seq_len + 1 - len(t)
        cut += len(p) > room
        p = p[-room:]
        if not p:
            raise UserError(f"task {task.name!r}: example {i} has an empty prompt")
        full = p + t
        x[i, :len(full) - 1] = full[:-1]
        y[i, len(p) - 1:len(full) - 1] = t  # the prompt's last position predicts t[0]
    return x, y, cut


def encoded_length(task: Task, examples: Sequence[Example], tokenizer: Any) -> int:
    """The longest encoded example (prompt, plus target and eot for generation)."""
    prompts = [task.prompt(ex) for ex in examples]
    lengths = [len(ids) for ids in _ids(tokenizer, prompts)]
    if task.kind == "generation":
        targets = _ids(tokenizer, [task.answer(ex) for ex in examples])
        lengths = [a + len(b) for a, b in zip(lengths, targets, strict=True)]
    return max(lengths)


# -- the classification model -------------------------------------------------------------------
class GPTClassifier(nn.Module):
    """A trained GPT trunk with a linear head on the hidden state at the last prompt token.

    ``forward(x, y)`` takes the classification encoding (``y[:, 0]`` label index,
    ``y[:, 1]`` last prompt position) and returns ``(logits (B, K), cross-entropy)``; rows
    with label ``-1`` take no loss. The trunk is the GPT itself (``gpt.*``, shared, not
    copied); its LM head is unused.
    """

    def __init__(self, gpt: GPT, num_labels: int) -> None:
        super().__init__()
        self.cfg = gpt.cfg
        self.gpt = gpt  # its LM head is tied to the embedding or unused: no extra weights
        self.head = nn.Linear(self.cfg.d_model, num_labels)
        nn.init.normal_(self.head.weight, std=self.cfg.init_std)
        nn.init.zeros_(self.head.bias)

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        """The trunk's output after the final norm, (B, T, C)."""
        return self.gpt.hidden_states(idx)

    def classify(self, idx: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """Label logits (B, K) from the hidden state at positions ``last`` (B,)."""
        h = self.hidden(idx)  # (B, T, C)
        rows = torch.arange(idx.size(0), device=idx.device)
        logits: torch.Tensor = self.head(h[rows, last])  # (B, K)
        return logits

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if targets is None:
            raise ValueError("GPTClassifier needs targets: y[:, 1] holds the last position")
        logits = self.classify(idx, targets[:, 1])  # (B, K)
        loss = F.cross_entropy(logits.float(), targets[:, 0], ignore_index=-1)
        return logits, loss


@torch.no_grad()
def predict_labels(model: GPTClassifier, split: ExampleSplit, batch_size: int = 64,
                   ) -> np.ndarray:
    """The predicted label index of every row of ``split``."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    try:
        for x, y in split.sequential_batches(batch_size, split.x.shape[1]):
            logits = model.classify(torch.from_numpy(x).to(device),
                                    torch.from_numpy(y[:, 1]).to(device))
            out.append(logits.argmax(-1).cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(out)


def _steps_default(n_train: int, batch_size: int) -> int:
    """About three epochs, between 50 and 1000 steps."""
    return int(min(1000, max(50, math.ceil(3 * n_train / batch_size))))


def _examples(task: Task, split: str) -> list[Example]:
    return list(task.splits.get(split, ()))


def _eval_splits(task: Task, max_eval: int | None) -> dict[str, list[Example]]:
    """The dev/test examples with a reference (label or target), at most ``max_eval`` each."""
    out = {}
    for name in EVAL_SPLITS:
        exs = [ex for ex in _examples(task, name)
               if (ex.label if task.kind == "classification" else ex.target) is not None]
        if exs:
            out[name] = exs[:max_eval] if max_eval else exs
    if not out:
        raise UserError(f"task {task.name!r} has no labelled dev or test examples to evaluate")
    return out


# -- the public entry ---------------------------------------------------------------------------
def finetune_task(run_dir: Path, task: Task, *, seed: int = 0, steps: int | None = None,
                  out_dir: Path | None = None, batch_size: int = 32, lr: float = 1e-3,
                  max_eval: int | None = None, beam: int = 4,
                  device: str | None = None) -> dict[str, Any]:
    """Fine-tune the run's final model on ``task``'s train split and score dev/test.

    Args:
        run_dir: a run directory with ``data/`` (tokenizer, eot id) and ``final/``.
        task: a classification or generation task (``lmalloc.evaluate.tasks.Task``).
        seed: head initialisation and data order.
        steps: optimizer steps (default: about three epochs, 50 to 1000).
        out_dir: checkpoints and predictions (default ``run_dir/finetune/<task>/seed<k>``); a
            finished or interrupted run there with the same settings is resumed.
        batch_size: examples per step; lr: peak learning rate (cosine schedule, 10 % warmup).
        max_eval: score at most this many examples of each eval split.
        beam: beam width for generation tasks (greedy is always reported too).
        device: ``cpu``/``cuda`` (default: CUDA when available).

    Returns:
        ``{"mode": "finetune", "task", "kind", "metrics": {split: {...}}, "baseline":
        {split: {...}}, "n_train", "n_eval": {split: n}, "steps", "seconds", "seed", ...}``.
    """
    if task.kind not in ("classification", "generation"):
        raise UserError(f"task {task.name!r} is {task.kind!r}: fine-tuning supports "
                        "classification and generation tasks (score multiple choice instead)")
    if not _examples(task, "train"):
        raise UserError(f"task {task.name!r} has no train examples to fine-tune on")
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    default = run_dir / "finetune" / task.name / f"seed{seed}"
    out = Path(out_dir) if out_dir is not None else default
    dev = device or device_type()
    ctx = _load_run(run_dir, dev)
    evals = _eval_splits(task, max_eval)
    train = _examples(task, "train")
    seq_len = min(ctx.cfg.seq_len, encoded_length(task, train + sum(evals.values(), []),
                                                      ctx.tokenizer))
    seq_len = min(ctx.cfg.seq_len, -(-seq_len // 8) * 8)  # round up to a multiple of 8
    n_steps = steps if steps is not None else _steps_default(len(train), batch_size)
    tc = _train_config(seq_len, n_steps, batch_size, lr, seed, dev)
    if task.kind == "classification":
        body = _classification(ctx, task, train, evals, tc, out, seed)
    else:
        body = _generation(ctx, task, train, evals, tc, out, beam)
    res = body.pop("train_result")
    result = {"mode": "finetune", "task": task.name, "kind": task.kind, **body,
              "n_train": len(train), "n_eval": {k: len(v) for k, v in evals.items()},
              "steps": res.steps, "seq_len": seq_len, "seconds": time.perf_counter() - t0,
              "seed": seed, "status": res.status, "train_loss": res.train_loss,
              "val_loss": res.val_loss, "out_dir": str(out)}
    atomic_write_json(out / "result.json", result)
    _charge(run_dir, task.name, res)
    return result


@dataclasses.dataclass
class _Run:
    """What fine-tuning needs from a run directory."""

    model: GPT
    cfg: Any
    tokenizer: Any
    eot_id: int
    vocab_size: int
    final: Path


def _load_run(run_dir: Path, device: str) -> _Run:
    from tokenizers import Tokenizer

    from lmalloc.model.io import find_eot_id, find_tokenizer, load_model, model_dir

    model, cfg = load_model(run_dir, device)
    tok_path = find_tokenizer(run_dir)
    eot = find_eot_id(tok_path)
    if eot is None:
        raise UserError(f"{tok_path} has no end-of-text token: fine-tuning pads with it")
    return _Run(model, cfg, Tokenizer.from_file(str(tok_path)), eot, cfg.vocab_size,
                model_dir(run_dir))


def _train_config(seq_len: int, steps: int, batch_size: int, lr: float, seed: int,
                  device: str) -> Any:
    """Cosine schedule with 10 % warmup; no spike detection (a new head's first losses jump);
    the val loss is computed once, at the end."""
    from lmalloc.train import TrainConfig

    return TrainConfig(lr=lr, schedule="cosine", warmup=0.1, weight_decay=0.01,
                       batch_tokens=batch_size * seq_len, micro_batch=batch_size,
                       seq_len=seq_len, max_steps=steps, eval_every=0, eval_tokens=0,
                       seed=seed, device=device, compile=False, spike_factor=0.0,
                       log_every=10)


def _val_split(x: np.ndarray, y: np.ndarray, n: int = 256) -> ExampleSplit:
    """The trainer's val loss is a progress signal only: the first ``n`` eval rows."""
    return ExampleSplit(x[:n], y[:n], num_bytes=int((y[:n] >= 0).sum()))


def _fit(ctx: _Run, tc: Any, source: ExampleSource, out: Path,
         model: nn.Module | None) -> Any:
    from lmalloc.train import Trainer

    init = None if model is not None else ctx.final / "checkpoint"
    trainer = Trainer(ctx.cfg, tc, source, out, model=model, init_from=init)
    res = trainer.fit()
    if res.status not in ("completed", "time_limit"):
        raise UserError(f"fine-tuning stopped early ({res.status}: {res.reason}); try a "
                        "lower lr")
    return res, trainer.model


def _classification(ctx: _Run, task: Task, train: list[Example],
                    evals: dict[str, list[Example]], tc: Any, out: Path,
                    seed: int) -> dict[str, Any]:
    if not task.labels:
        raise UserError(f"classification task {task.name!r} declares no labels")
    x, y, cut = encode_classification(task, train, ctx.tokenizer, tc.seq_len, ctx.eot_id)
    enc = {k: encode_classification(task, v, ctx.tokenizer, tc.seq_len, ctx.eot_id)
           for k, v in evals.items()}
    first = next(iter(enc.values()))
    source = ExampleSource(out, ctx.vocab_size, {
        "train": ExampleSplit(x, y, num_bytes=len(x)), "val": _val_split(first[0], first[1])})
    torch.manual_seed(seed)
    model = GPTClassifier(ctx.model, len(task.labels))
    res, model = _fit(ctx, tc, source, out, model)
    from lmalloc.evaluate.metrics import classification_metrics, majority_baseline

    train_labels = [str(ex.label) for ex in train if ex.label is not None]
    metrics, baseline = {}, {}
    for name, (ex_x, ex_y, _) in enc.items():
        pred = predict_labels(model, ExampleSplit(ex_x, ex_y, num_bytes=len(ex_x)))
        gold = [str(ex.label) for ex in evals[name]]
        metrics[name] = classification_metrics(gold, [task.labels[k] for k in pred],
                                               task.labels)
        best = majority_baseline(train_labels, gold)["label"]
        baseline[name] = {"label": best, **classification_metrics(
            gold, [best] * len(gold), task.labels)}
    truncated = cut + sum(e[2] for e in enc.values())
    return {"metrics": metrics, "baseline": {"majority_class": baseline},
            "truncated_prompts": truncated, "train_result": res}


def _generation(ctx: _Run, task: Task, train: list[Example], evals: dict[str, list[Example]],
                tc: Any, out: Path, beam: int) -> dict[str, Any]:
    from lmalloc.evaluate.decode import beam_search, greedy
    from lmalloc.evaluate.metrics import generation_metrics

    x, y, cut = encode_generation(task, train, ctx.tokenizer, tc.seq_len, ctx.eot_id)
    first = next(iter(evals.values()))
    vx, vy, _ = encode_generation(task, first, ctx.tokenizer, tc.seq_len, ctx.eot_id)
    source = ExampleSource(out, ctx.vocab_size, {
        "train": ExampleSplit(x, y, num_bytes=len(x)), "val": _val_split(vx, vy)})
    res, model = _fit(ctx, tc, source, out, None)
    max_new = max(1, tc.seq_len // 2)
    metrics: dict[str, Any] = {}
    predictions: dict[str, Any] = {}
    copy: dict[str, Any] = {}  # the floor: the source text itself as the "translation"
    for name, exs in evals.items():
        prompts = _ids(ctx.tokenizer, [task.prompt(ex) for ex in exs])
        refs = [str(ex.target) for ex in exs]
        copy[name] = generation_metrics([ex.text for ex in exs], refs)
        hyps: dict[str, list[str]] = {"greedy": [], f"beam{beam}": []}
        for ids in prompts:
            ids = ids[-(ctx.cfg.seq_len - max_new):] or [ctx.eot_id]
            for key, new in (("greedy", greedy(model, ids, max_new, ctx.eot_id)),
                             (f"beam{beam}", beam_search(model, ids, beam, max_new,
                                                         ctx.eot_id))):
                hyps[key].append(_detok(ctx, new))
        metrics[name] = {k: generation_metrics(v, refs) for k, v in hyps.items()}
        predictions[name] = [{"prompt": task.prompt(ex), "reference": r,
                              **{k: v[i] for k, v in hyps.items()}}
                             for i, (ex, r) in enumerate(zip(exs, refs, strict=True))]
    atomic_write_json(out / "predictions.json", predictions)
    return {"metrics": metrics, "baseline": {"copy_source": copy}, "truncated_prompts": cut,
            "max_new": max_new,
            "beam": beam, "train_result": res}


def _detok(ctx: _Run, new: list[int]) -> str:
    ids = new[:-1] if new and new[-1] == ctx.eot_id else new
    return str(ctx.tokenizer.decode(ids)).strip()


def _charge(run_dir: Path, task_name: str, res: Any) -> None:
    """Record the fine-tuning spend in the run's ledger (when it is a run directory)."""
    from lmalloc.rundir import RunDir

    rd = RunDir(run_dir)
    if rd.manifest_path.exists():
        rd.charge("finetune", flops=res.session_flops, **res.ledger(),
                  task=task_name)
