"""Corpora to token shards: reading, cleaning, deduplication, BPE, packing, loading."""

from __future__ import annotations
