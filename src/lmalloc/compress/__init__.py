"""Compression to a deployment budget: group-wise weight quantization with exact sizes
(``quantize``), safetensors storage (``store``), per-layer sensitivity and the global format
allocation under a byte budget (``allocate``), and the ``compress`` stage (``stage``).

Pruning and error-compensating (GPTQ-style) quantization are not here yet.
"""
