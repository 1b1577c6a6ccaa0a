"""Evaluation: perplexity and bits per byte, downstream tasks, generation metrics."""
