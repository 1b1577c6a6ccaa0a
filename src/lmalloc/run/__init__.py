"""``lmalloc run``, the orchestrator: a registry of stages (:mod:`lmalloc.run.stages`) run in
the order of :data:`lmalloc.layout.STAGES` over one typed :class:`RunContext`
(:mod:`lmalloc.run.context`), and the exploration runners (search, ladder, precision).
docs/architecture.md describes the layout and how to add a stage.
"""

from lmalloc.run.context import Allowance, RunContext, RunOptions
from lmalloc.run.pipeline import run_pipeline

__all__ = ["Allowance", "RunContext", "RunOptions", "run_pipeline"]
