"""Evaluation: perplexity and bits per byte, downstream tasks, generation metrics.

Torch-free names are exported here (task declarations and metrics); the scorers live in
``lmalloc.evaluate.scoring`` (zero/few-shot log-likelihood), ``perplexity`` and ``corpora``
(held-out text), ``suite`` (``lmalloc eval --task/--corpus``), which import torch.
"""

from lmalloc.evaluate.metrics import bleu, classification_metrics, majority_baseline, rouge
from lmalloc.evaluate.tasks import Example, Task, builtin_tasks, load_task

__all__ = ["Example", "Task", "bleu", "builtin_tasks", "classification_metrics", "load_task",
           "majority_baseline", "rouge"]
