"""ONNX export folders in the model store: import, convert straight into an entry, refusals, replacement."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from bayling_local.backends.base import GenerationConfig, LoadOptions
from bayling_local.backends.onnxrt import OnnxRuntimeBackend
from bayling_local.convert.onnx import to_onnx
from bayling_local.errors import StoreError
from bayling_local.model import open_model
from bayling_local.store import (
    MANIFEST_NAME,
    add_onnx_export,
    file_sha256,
    get_model,
    import_model,
    list_models,
)
from tests.conftest import run_cli, write_tiny_llama

# A Llama-3 header template that names BayLing: the store should recognise it as the bayling-3 format.
BAYLING3_TEMPLATE = (
    "{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n{{ m.content }}<|eot_id|>"
    "{% endfor %}{# You are BayLing #}<|start_header_id|>assistant<|end_header_id|>\n\n"
)
CPU = LoadOptions(device="cpu", threads=1)
FOUR_TOKENS = GenerationConfig(max_tokens=4)


pytestmark = pytest.mark.usefixtures("store_home")


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, llama3_tokenizer_path) -> Path:
    """A random 2-layer Llama with the real Llama-3 tokenizer and a BayLing-3 chat template."""
    root = tmp_path_factory.mktemp("tiny-checkpoint")
    tokenizer_dir = root / "tokenizer"
    tokenizer_dir.mkdir()
    shutil.copy(llama3_tokenizer_path, tokenizer_dir / "tokenizer.json")
    (tokenizer_dir / "tokenizer_config.json").write_text(json.dumps({"chat_template": BAYLING3_TEMPLATE}))
    return write_tiny_llama(root / "Tiny-BayLing", tokenizer_dir)


@pytest.fixture(scope="module")
def tiny_export(tiny_checkpoint, tmp_path_factory) -> Path:
    """`tiny_checkpoint` exported by the real exporter at fp32 (read-only: link or copy it to change it)."""
    return to_onnx(tiny_checkpoint, tmp_path_factory.mktemp("export") / "tiny-onnx", "fp32")


def linked_copy(folder: Path, target: Path) -> Path:
    """The export's files hard-linked into `target` (cheap); break a copy by removing files, not editing them."""
    shutil.copytree(folder, target, copy_function=os.link)
    return target


def store_contents(models: Path) -> list[str]:
    """Every name in the models folder, hidden staging folders included."""
    return sorted(os.listdir(models)) if models.exists() else []


def one_error_line(result) -> str:
    lines = result.stderr.decode().strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1, (result.returncode, lines)
    return lines[0]


def test_onnx_export_imports_with_a_sha256_per_file_and_generates_like_the_source_folder(tiny_export, store_home):
    model = import_model(tiny_export)

    manifest = model.manifest
    assert model.name == "tiny-onnx" and model.path == store_home / "tiny-onnx" / "onnx"
    assert (manifest.format, manifest.quant, manifest.chat_format) == ("onnx", "fp32", "bayling-3")
    assert (manifest.architecture, manifest.context_length) == ("llama", 2048)
    exported = sorted(p.name for p in tiny_export.iterdir())
    assert {"model.onnx", "bayling_onnx.json", "tokenizer.json"} <= set(exported)
    assert sorted(os.listdir(model.path)) == exported
    assert manifest.files == {name: file_sha256(tiny_export / name) for name in exported}
    assert manifest.size == sum((tiny_export / name).stat().st_size for name in exported)
    assert store_contents(store_home) == ["tiny-onnx"]
    assert get_model("tiny-onnx") == model and model in list_models()

    loaded = open_model("tiny-onnx", options=CPU)
    try:
        assert isinstance(loaded.backend, OnnxRuntimeBackend) and loaded.chat_format.id == "bayling-3"
        ours = loaded.complete("Watoto wanacheza", FOUR_TOKENS).collect()
    finally:
        loaded.close()
    reference = OnnxRuntimeBackend.load(tiny_export, CPU)
    try:
        assert ours.token_ids and ours.token_ids == reference.stream("Watoto wanacheza", FOUR_TOKENS).collect().token_ids
    finally:
        reference.close()


def test_link_import_of_an_onnx_export_references_its_folder(tiny_export, store_home):
    model = import_model(tiny_export / "model.onnx", name="linked", link=True)

    assert model.manifest.artifact == str(tiny_export.resolve()) and model.path == tiny_export.resolve()
    assert model.manifest.format == "onnx"
    assert os.listdir(store_home / "linked") == [MANIFEST_NAME]


def test_cli_imports_an_onnx_model_file_lists_it_and_generates_with_it(tiny_export, store_home):
    imported = run_cli("models", "import", str(tiny_export / "model.onnx"), "--name", "tiny")
    assert imported.returncode == 0, imported.stderr.decode()
    assert "imported 'tiny' (onnx, fp32" in imported.stdout.decode()

    listing = run_cli("models", "list").stdout.decode()
    row = next(line for line in listing.splitlines() if line.split()[:1] == ["tiny"])
    assert "onnx" in row and "fp32" in row and "bayling-3" in row

    generated = run_cli("generate", "-m", "tiny", "--device", "cpu", "--threads", "1", "--max-tokens", "4", "Hello")
    assert generated.returncode == 0, generated.stderr.decode()
    assert generated.stdout.decode().strip()


def _drop(name: str):
    return lambda folder: (folder / name).unlink()


def _foreign_format(folder: Path) -> None:
    config = folder / "bayling_onnx.json"
    data = json.loads(config.read_text())
    config.unlink()  # a hard link: replace the file, never write through it
    config.write_text(json.dumps({**data, "format": "someone-elses-decoder"}))


BROKEN_EXPORTS = {
    "no bayling_onnx.json": (_drop("bayling_onnx.json"), "has no bayling_onnx.json"),
    "no tokenizer": (_drop("tokenizer.json"), "has no tokenizer (tokenizer.json or tokenizer.model)"),
    "no model.onnx": (_drop("model.onnx"), "has no model.onnx"),
    "foreign format": (_foreign_format, "not 'bayling-onnx-decoder'"),
}


@pytest.mark.parametrize("case", list(BROKEN_EXPORTS))
def test_broken_onnx_export_is_refused_in_one_line_and_leaves_nothing_in_the_store(tiny_export, tmp_path, store_home, case):
    break_it, message = BROKEN_EXPORTS[case]
    folder = linked_copy(tiny_export, tmp_path / "broken")
    break_it(folder)

    result = run_cli("models", "import", str(folder))

    assert message in one_error_line(result)
    assert store_contents(store_home) == []


def test_convert_to_onnx_goes_into_the_store_refuses_a_taken_name_and_replaces_it_with_force(
    tiny_checkpoint, store_home, tmp_path
):
    converted = run_cli("convert", str(tiny_checkpoint), "--to", "onnx", "--quant", "f32")
    assert converted.returncode == 0, converted.stderr.decode()
    assert "imported 'tiny-bayling-onnx-fp32'" in converted.stdout.decode()
    assert store_contents(store_home) == ["tiny-bayling-onnx-fp32"]
    first = get_model("tiny-bayling-onnx-fp32")
    assert (first.manifest.format, first.manifest.quant, first.manifest.chat_format) == ("onnx", "fp32", "bayling-3")
    assert first.manifest.source == str(tiny_checkpoint.resolve())
    assert set(first.manifest.files) == {p.name for p in first.path.iterdir()}
    assert first.manifest.files["model.onnx"] == file_sha256(first.path / "model.onnx")
    assert not list(Path.cwd().glob("*-onnx-*")), "nothing is written to the current folder"

    refused = run_cli("convert", str(tiny_checkpoint), "--to", "onnx", "--quant", "fp32")
    assert "already in the store; pass --force" in one_error_line(refused)

    marker = store_home / "tiny-bayling-onnx-fp32" / "marker"
    marker.write_text("from the first conversion")
    replaced = run_cli("convert", str(tiny_checkpoint), "--to", "onnx", "--quant", "fp32", "--force")
    assert replaced.returncode == 0, replaced.stderr.decode()
    assert not marker.exists() and store_contents(store_home) == ["tiny-bayling-onnx-fp32"]
    again = get_model("tiny-bayling-onnx-fp32").manifest.files  # same checkpoint: the same graph (the config is dated)
    assert again["model.onnx"] == first.manifest.files["model.onnx"] and again.keys() == first.manifest.files.keys()

    named = run_cli("convert", str(tiny_checkpoint), "--to", "onnx", "-q", "fp32", "--name", "Mine", "--out", str(tmp_path / "out"))
    assert named.returncode == 0, named.stderr.decode()
    assert (tmp_path / "out" / "model.onnx").is_file() and store_contents(store_home) == ["tiny-bayling-onnx-fp32"]


def test_onnx_export_that_fails_midway_leaves_no_entry_and_no_staging_folder(store_home):
    def half_export(folder: Path) -> None:
        folder.mkdir()
        (folder / "model.onnx").write_bytes(b"half a graph")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        add_onnx_export("half", half_export, source="nowhere")
    assert store_contents(store_home) == []


def test_taken_name_is_refused_before_anything_is_exported(tiny_export, store_home):
    import_model(tiny_export, name="taken")
    exported = []

    with pytest.raises(StoreError, match="already in the store"):
        add_onnx_export("taken", exported.append, source="nowhere")
    assert exported == [] and store_contents(store_home) == ["taken"]


def test_tui_onnx_conversion_lands_in_the_store_table(tiny_checkpoint, store_home):
    pytest.importorskip("textual")
    from bayling_local.tui.screens.models import _run_conversion

    stages = []
    message = _run_conversion(str(tiny_checkpoint), "onnx:fp32", lambda stage, done, total: stages.append(stage))

    assert stages == ["onnx"] and "tiny-bayling-onnx-fp32" in message
    model = get_model("tiny-bayling-onnx-fp32")
    assert model.manifest.format == "onnx" and model in list_models()
