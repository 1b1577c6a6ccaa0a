"""Compression to a deployment budget: group-wise weight quantization with exact sizes
(``quantize``: round-to-nearest; ``gptq``: error-compensating, calibrated), pruning
(``prune``: magnitude, Wanda, 2:4, heads, neurons; ``recover``: fine-tuning through the
trainer), safetensors storage (``store``), per-layer sensitivity and the global format
allocation under a byte budget (``allocate``), and the ``compress`` stage (``stage``).
"""
