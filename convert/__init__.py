"""Checkpoint conversion (`import bayling_local.convert`): HF checkpoint -> GGUF / ONNX, quantize, verify.

Installed as `bayling_local.convert`; the converters land with their own issues.
"""
