"""Corpora to token shards: reading, cleaning, deduplication, BPE, packing, loading.

``from lmalloc.data import prepare, PrepareConfig`` is the entry point; the loader is
:class:`lmalloc.data.shards.TokenData`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmalloc.data.config import PrepareConfig

__all__ = ["PrepareConfig", "prepare"]


def prepare(
    sources: Sequence[str | Path] | None, out_dir: str | Path,
    config: PrepareConfig | None = None, progress: bool = True,
) -> dict[str, Any]:
    """See :func:`lmalloc.data.pipeline.prepare` (imported lazily: it pulls in datasketch).

    The pipeline lives in ``pipeline.py``, not ``prepare.py``: a submodule named like this
    function would replace it as an attribute of the package once imported.
    """
    from lmalloc.data.pipeline import prepare as _prepare

    return _prepare(sources, out_dir, config, progress)
