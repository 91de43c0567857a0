"""The engine: requests join a queue at any time and each streams its own pieces and Completion.

`create_engine` picks the implementation for a loaded model; front ends only know the `Engine`
protocol and `RequestHandle` (`requests.py`).
"""

from __future__ import annotations

from bayling_local.engine.requests import Engine, EngineStats, RequestHandle
from bayling_local.engine.serial import SerialEngine

__all__ = ["Engine", "EngineStats", "RequestHandle", "SerialEngine", "create_engine"]


def create_engine(model, parallel: int = 1) -> Engine:
    """An engine over `model`'s backend with `parallel` slots: continuous batching on llama.cpp and ONNX
    Runtime (cache rows), one request at a time on backends without it."""
    backend_name = getattr(model.backend, "name", None)
    if backend_name == "llama.cpp":
        from bayling_local.engine.continuous import ContinuousEngine  # imports llama.cpp's bindings lazily

        return ContinuousEngine(model.backend, parallel)
    if backend_name == "onnxruntime":
        from bayling_local.engine.onnx_rows import OnnxRowsEngine

        return OnnxRowsEngine(model.backend, parallel)
    return SerialEngine(model.backend)
