"""The built-in default corpus: this Python interpreter's own standard library.

Every Python install carries its standard library as ``.py`` source, so ``lmalloc prepare``
with no source works offline, anywhere. The corpus is every ``*.py`` file under
``sysconfig.get_paths()["stdlib"]`` (``pydoc_data/topics.py``, the bundled documentation of
the language, included), in sorted path order, leaving out test suites (``test/``, ``tests/``,
``idle_test/``), installed packages (``site-packages/``, ``dist-packages/``) and bytecode
caches. Code keeps its indentation through cleaning.

Measured on CPython 3.11.7 (Linux): 734 files, 12.1 MB of source, read as 733 documents
(6 empty files hold none; the 3 files over 256 KiB, ``pydoc_data/topics.py``
among them, are cut into paragraph-bounded pieces). With the default
:class:`~lmalloc.data.config.PrepareConfig` (vocabulary 4096), 716 documents are kept (2 exact
and 15 near duplicates removed) and packed into 3.37 million tokens: 3.32 M train (703
documents), 50 K val (13 documents). The counts are stable for a given Python version
(another version has another standard library, hence other counts).
"""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path

EXCLUDED_DIRS = frozenset(
    {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
)


def builtin_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def builtin_files() -> list[Path]:
    """The files of the built-in corpus, in a deterministic order."""
    root = builtin_root()
    files = []
    for folder, dirs, names in os.walk(root):
        # Prune in place so os.walk never descends into site-packages or test suites.
        dirs[:] = [d for d in dirs if d not in EXCLUDED_DIRS and not d.startswith(".")]
        files += [Path(folder) / n for n in names if n.endswith(".py")]
    return sorted(f for f in files if f.is_file())
