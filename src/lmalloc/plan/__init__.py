"""Turning a budget into an allocation: the final run's shape, tokens and predicted outcome."""

from __future__ import annotations
