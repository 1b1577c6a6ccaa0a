"""The run report: a static, self-contained HTML page that opens from disk, and its figures.

* :mod:`lmalloc.report.page` — the stage-independent page machinery (sections, tables,
  embedded figures, escaping, atomic write).
* :mod:`lmalloc.report.artifacts` — a run directory's artifacts in one object
  (:func:`load_run`), tolerant of stages that have not run; :func:`run_status`.
* :mod:`lmalloc.report.verdicts` — ``ok`` / ``warning`` / ``problem`` findings on the fit, the
  search, the interval, the budget and the data, from the artifacts as plain JSON
  (:func:`~lmalloc.report.verdicts.judge`); the page shows them first.
* :mod:`lmalloc.report.plots` — one matplotlib figure per stage (PNG and SVG in ``plots/``);
  matplotlib and Optuna are imported only when a figure is drawn.
* :mod:`lmalloc.report.build` — :func:`build_report` writes ``RUN/report.html``.
"""

from __future__ import annotations

from lmalloc.report.artifacts import RunArtifacts, load_run, run_status
from lmalloc.report.build import build_report, summary_text
from lmalloc.report.page import Page, Section, format_cell, image_data_uri
from lmalloc.report.plots import Plot, make_plots
from lmalloc.report.verdicts import Verdict, judge

__all__ = [
    "Page",
    "Plot",
    "RunArtifacts",
    "Section",
    "Verdict",
    "build_report",
    "format_cell",
    "image_data_uri",
    "judge",
    "load_run",
    "make_plots",
    "run_status",
    "summary_text",
]
