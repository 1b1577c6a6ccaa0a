"""lmalloc: globally optimal allocation of a language-model training budget."""

from __future__ import annotations

__version__ = "0.1.0"
