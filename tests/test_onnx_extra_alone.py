"""`pip install bayling-local[onnx]` alone runs an exported model: no torch, no llama.cpp, no onnx.

The first test builds, offline and in seconds, an interpreter that sees bayling-local and exactly the
distributions that its base dependencies and the `[onnx]` extra in pyproject.toml pull in (resolved from
this environment's installed metadata, each file linked from its RECORD): what pip would install for the
extra, minus the download. In it, the CLI imports an ONNX export into the store and generates from the
entry, the same tokens as here. The second does a real `pip install '.[onnx]'` into a fresh virtualenv;
it downloads ~100 MB from PyPI, so it runs when BAYLING_TEST_PIP_INSTALL=1.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

from tests.conftest import write_tiny_llama

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")  # to make the export here (the [convert] extra)

REPOSITORY = Path(__file__).resolve().parent.parent
PROMPT = "Watoto wanacheza"
ABSENT = ("torch", "llama_cpp", "onnx", "gguf", "sentencepiece")
"""Packages of other extras that the ONNX runtime path must not need."""
RUN_IN_ISOLATION = """
import importlib.util, json, sys
from bayling_local.backends.base import GenerationConfig, LoadOptions
from bayling_local.model import open_model
absent = [name for name in sys.argv[3:] if importlib.util.find_spec(name) is None]
model = open_model(sys.argv[1], options=LoadOptions(device="cpu", threads=1))
completion = model.complete(sys.argv[2], GenerationConfig(max_tokens=8)).collect()
print(json.dumps({"absent": absent, "backend": model.backend.name, "token_ids": list(completion.token_ids)}))
"""


@pytest.fixture(scope="module")
def tiny_int4_export(tmp_path_factory, llama3_tokenizer_path) -> Path:
    from bayling_local.convert import to_onnx

    root = tmp_path_factory.mktemp("onnx-alone")
    (root / "tok").mkdir()
    shutil.copy(llama3_tokenizer_path, root / "tok" / "tokenizer.json")
    checkpoint = write_tiny_llama(root / "ckpt", root / "tok")
    return to_onnx(checkpoint, root / "tiny-int4", "int4")


@pytest.fixture(scope="module")
def expected_tokens(tiny_int4_export) -> list[int]:
    from bayling_local.backends.base import GenerationConfig, LoadOptions
    from bayling_local.model import open_model

    model = open_model(str(tiny_int4_export), options=LoadOptions(device="cpu", threads=1))
    tokens = list(model.complete(PROMPT, GenerationConfig(max_tokens=8)).collect().token_ids)
    model.close()
    return tokens


def onnx_extra_requirements() -> list[str]:
    """bayling-local's base dependencies and its [onnx] extra, as pyproject.toml declares them."""
    import tomllib

    project = tomllib.loads((REPOSITORY / "pyproject.toml").read_text("utf-8"))["project"]
    return [*project["dependencies"], *project["optional-dependencies"]["onnx"]]


def dependency_closure(requirements: list[str]) -> list[importlib.metadata.Distribution]:
    """The installed distributions `requirements` resolve to, with everything they require in turn
    (markers evaluated for this interpreter and the extras asked for)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    found: dict[str, importlib.metadata.Distribution] = {}
    seen: set[tuple[str, frozenset]] = set()
    pending = [(Requirement(r), frozenset()) for r in requirements]
    while pending:
        requirement, parent_extras = pending.pop()
        if requirement.marker and not any(requirement.marker.evaluate({"extra": e}) for e in parent_extras | {""}):
            continue
        name = canonicalize_name(requirement.name)
        key = (name, frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            distribution = importlib.metadata.distribution(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            pytest.skip(f"'{requirement}' (needed by the [onnx] extra) is not installed here")
        found[name] = distribution
        pending += [(Requirement(r), frozenset(requirement.extras)) for r in distribution.requires or []]
    return list(found.values())


def isolated_interpreter(folder: Path, distributions) -> Path:
    """A virtualenv without pip whose site-packages links the files of `distributions` and, through a
    .pth file, this working tree (so `bayling_local` is the code under test; `bayling_local.convert`,
    mapped in only by an install, stays out)."""
    venv.EnvBuilder(with_pip=False, symlinks=True).create(folder)
    python = folder / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    for distribution in distributions:
        for entry in distribution.files or []:
            source = Path(distribution.locate_file(entry))
            if ".." in Path(entry).parts or not source.is_file():
                continue  # console scripts (../../bin) are not needed: the CLI runs as `python -m`
            target = site / entry
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                target.symlink_to(source)
    (site / "bayling_local_under_test.pth").write_text(str(REPOSITORY) + "\n")
    return python


def run_isolated(python: Path, *args: str, home: Path) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "BAYLING_HOME": str(home / "bayling"),
           "PYTHONNOUSERSITE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    return subprocess.run([python, *args], check=False, capture_output=True, text=True, env=env, cwd=home, timeout=600)


def check_runs_alone(python: Path, export: Path, expected: list[int], home: Path, gguf: Path) -> None:
    """In the interpreter `python`: the export opens by path and generates `expected`; `models import`
    makes a store entry; `generate -m ENTRY` prints a completion; a GGUF is refused in one line that
    names the extra to install (transformers is there, for the tokenizer, but not torch)."""
    direct = run_isolated(python, "-c", RUN_IN_ISOLATION, str(export), PROMPT, *ABSENT, home=home)
    assert direct.returncode == 0, direct.stderr[-3000:]
    result = json.loads(direct.stdout.strip().splitlines()[-1])
    assert result["absent"] == list(ABSENT)
    assert result["backend"] == "onnxruntime" and result["token_ids"] == expected
    imported = run_isolated(python, "-m", "bayling_local", "models", "import", str(export), "--name", "tiny-onnx",
                            home=home)
    assert imported.returncode == 0, imported.stderr[-3000:]
    generated = run_isolated(python, "-m", "bayling_local", "generate", "-m", "tiny-onnx", "--device", "cpu",
                             "--max-tokens", "8", PROMPT, home=home)
    assert generated.returncode == 0 and generated.stdout.strip(), generated.stderr[-3000:]
    refused = run_isolated(python, "-m", "bayling_local", "generate", "-m", str(gguf), "--max-tokens", "2", PROMPT,
                           home=home)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr, refused.stderr[-3000:]
    assert "'llama_cpp'" in refused.stderr and "bayling-local[llama]" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr


def test_onnx_extra_alone_imports_an_export_into_the_store_and_generates(
    tiny_int4_export, expected_tokens, tmp_path, bundled_gguf
):
    pytest.importorskip("packaging")
    distributions = dependency_closure(onnx_extra_requirements())
    names = {d.metadata["Name"].lower() for d in distributions}
    assert {"onnxruntime", "transformers", "numpy"} <= names and not {"torch", "llama-cpp-python", "onnx"} & names
    python = isolated_interpreter(tmp_path / "venv", distributions)
    check_runs_alone(python, tiny_int4_export, expected_tokens, tmp_path, bundled_gguf)


@pytest.mark.slow
def test_pip_install_of_the_onnx_extra_in_a_fresh_virtualenv_generates(
    tiny_int4_export, expected_tokens, tmp_path, bundled_gguf
):
    if os.environ.get("BAYLING_TEST_PIP_INSTALL") != "1":
        pytest.skip("set BAYLING_TEST_PIP_INSTALL=1 to pip-install bayling-local[onnx] from PyPI into a fresh "
                    "virtualenv (~100 MB of downloads); the test above checks the same dependency closure offline")
    source = tmp_path / "source"  # a copy: an install builds in the source tree
    source.mkdir()
    for item in ("pyproject.toml", "README.md", "bayling_local", "convert", "training", "tui"):
        if (REPOSITORY / item).is_dir():
            shutil.copytree(REPOSITORY / item, source / item, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPOSITORY / item, source / item)
    venv.EnvBuilder(with_pip=True, symlinks=True).create(tmp_path / "venv")
    python = tmp_path / "venv" / "bin" / "python"
    installed = subprocess.run([python, "-m", "pip", "install", "--retries", "1", f"{source}[onnx]"], check=False,
                               capture_output=True, text=True, timeout=1800)
    if installed.returncode != 0 and any(s in installed.stderr for s in ("NewConnectionError", "No matching distribution")):
        pytest.skip(f"offline: pip could not install from PyPI ({installed.stderr.strip().splitlines()[-1]})")
    assert installed.returncode == 0, installed.stderr[-3000:]
    # the installed package, not this working tree: run from a folder without bayling_local in it
    check_runs_alone(python, tiny_int4_export, expected_tokens, tmp_path, bundled_gguf)
