"""Command-line interface (``lmalloc --help``). No logic lives here."""

from __future__ import annotations

from lmalloc.cli.app import app, main, register

__all__ = ["app", "main", "register"]
