"""The run report: a static, self-contained HTML page that opens from disk.

:mod:`lmalloc.report.page` is the stage-independent page machinery (sections, tables,
embedded figures, escaping, atomic write); the plots that fill it are made elsewhere with
matplotlib, which this package does not import.
"""

from __future__ import annotations

from lmalloc.report.page import Page, Section, format_cell, image_data_uri

__all__ = ["Page", "Section", "format_cell", "image_data_uri"]
