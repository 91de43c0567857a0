"""Backends: one protocol (`base.Backend`), one registry, one module per runtime.

Built-in backends register through the same `register_backend` hook that plugins use (entry point
group `bayling_local.backends`, each pointing at a `BackendSpec`); the heavy runtime is imported only
when a model is loaded.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

from bayling_local.backends.base import Backend, LoadOptions
from bayling_local.errors import BackendUnavailableError, UsageError

ENTRY_POINT_GROUP = "bayling_local.backends"


@dataclass(frozen=True)
class BackendSpec:
    """How to find and load one backend, described as data."""

    name: str
    formats: tuple[str, ...]
    """Artifact formats it loads: `gguf`, `onnx`, `hf`."""
    module: str
    class_name: str
    requires: str | tuple[str, ...]
    """Import names of the runtime libraries, checked before loading (one name or several)."""
    install_hint: str
    devices: tuple[str, ...] = ("cpu",)
    speculative: bool = False
    """Whether it runs speculative decoding (`--draft-model`, `--lookup-ngram`)."""

    @property
    def missing(self) -> list[str]:
        """The required packages that are not installed."""
        names = (self.requires,) if isinstance(self.requires, str) else self.requires
        return [name for name in names if importlib.util.find_spec(name) is None]

    def is_installed(self) -> bool:
        return not self.missing

    def load(self, path: Path, options: LoadOptions) -> Backend:
        missing = self.missing
        if missing:
            packages = " and ".join(f"'{name}'" for name in missing)
            raise BackendUnavailableError(
                f"the {self.name} backend needs the {packages} package{'s' if len(missing) > 1 else ''}; "
                f"{self.install_hint}"
            )
        if options.speculation is not None and options.speculation.enabled and not self.speculative:
            raise UsageError(
                f"speculative decoding (--draft-model, --lookup-ngram) runs on the llama.cpp backend, "
                f"not {self.name}; use a GGUF model or leave those options out"
            )
        backend_class = getattr(importlib.import_module(self.module), self.class_name)
        return backend_class.load(path, options)


_REGISTRY: dict[str, BackendSpec] = {}
_plugins_loaded = False


def register_backend(spec: BackendSpec) -> None:
    _REGISTRY[spec.name] = spec


def registered_backends() -> dict[str, BackendSpec]:
    _load_plugins()
    return dict(_REGISTRY)


def backend_for_format(artifact_format: str, preferred: str | None = None) -> BackendSpec:
    """The backend to load an artifact of `artifact_format` (the installed one first)."""
    candidates = [s for s in registered_backends().values() if artifact_format in s.formats]
    if preferred:
        candidates = [s for s in candidates if s.name == preferred]
    if not candidates:
        names = ", ".join(registered_backends())
        raise BackendUnavailableError(
            f"no backend {'named ' + repr(preferred) + ' ' if preferred else ''}loads '{artifact_format}' "
            f"artifacts (backends: {names})"
        )
    installed = [s for s in candidates if s.is_installed()]
    return (installed or candidates)[0]


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        register_backend(entry_point.load())


LLAMA_CPP = BackendSpec(
    name="llama.cpp",
    formats=("gguf",),
    module="bayling_local.backends.llamacpp",
    class_name="LlamaCppBackend",
    requires="llama_cpp",
    install_hint="run `pip install 'bayling-local[llama]'` (see README for CUDA and Metal builds)",
    devices=("cpu", "cuda", "metal"),
    speculative=True,
)
TRANSFORMERS = BackendSpec(
    name="transformers",
    formats=("hf", "gguf"),
    module="bayling_local.backends.hf",
    class_name="HFBackend",
    # transformers without torch is what the [onnx] extra installs (for its tokenizers): not enough.
    requires=("transformers", "torch"),
    install_hint="run `pip install 'bayling-local[convert]'`",
    devices=("cpu", "cuda"),
)
ONNX_RUNTIME = BackendSpec(
    name="onnxruntime",
    formats=("onnx",),
    module="bayling_local.backends.onnxrt",
    class_name="OnnxRuntimeBackend",
    requires="onnxruntime",
    install_hint="run `pip install 'bayling-local[onnx]'` (onnxruntime-gpu for CUDA)",
    devices=("cpu", "cuda", "coreml"),
)

REMOTE = BackendSpec(
    name="remote",
    formats=("openai",),
    module="bayling_local.backends.remote",
    class_name="RemoteBackend",
    requires="openai",
    install_hint="run `pip install 'bayling-local[serve]'`",
    devices=("cpu", "cuda", "metal", "coreml"),
)

for _spec in (LLAMA_CPP, TRANSFORMERS, ONNX_RUNTIME, REMOTE):
    register_backend(_spec)
