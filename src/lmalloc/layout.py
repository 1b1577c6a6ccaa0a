"""What a run directory holds: ``lmalloc run``'s stages in order and their artifacts' names.

One home for these names (torch-free, beside :mod:`lmalloc.rundir`): the orchestrator
(:mod:`lmalloc.run`) writes them, the report (:mod:`lmalloc.report.artifacts`) and the other
commands read them, and none keeps its own copy.
"""

from __future__ import annotations

STAGES = ("prepare", "profile", "split", "search", "ladder", "fit", "precision", "plan", "train",
          "eval", "compress", "summary", "report")
DEPLOY_STAGES = ("precision", "compress")
"""Run only with a deployment limit (``deploy=`` in the budget): measure what quantizing
costs on the ladder's models before planning, and compress the final model to the limit."""

PROFILE_JSON = "hardware.json"
SPLIT_JSON = "split.json"
SEARCH_JSON = "search.json"
LADDER_JSON = "ladder.json"  # the ladder's design, fixed once its first run started
LADDER_CSV = "ladder.csv"  # the runs table the fit reads
LAWS_JSON = "laws.json"
PRECISION_JSON = "precision.json"
PLAN_JSON = "plan.json"
EVAL_JSON = "eval.json"
COMPRESSED_RESULT = "compressed/result.json"
SUMMARY_JSON = "summary.json"
REPORT_HTML = "report.html"
