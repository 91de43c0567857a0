"""`bayling-local convert` refuses options the chosen --to does not read, instead of dropping them."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from conftest import run_cli, write_tiny_llama

pytestmark = pytest.mark.usefixtures("store_home")


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, sentencepiece_tokenizer_dir) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("convert-cli") / "tiny", sentencepiece_tokenizer_dir)


def one_error_line(result) -> str:
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize(
    ("to", "options", "named"),
    [
        ("onnx", ["--imatrix", "none"], "--imatrix"),
        ("onnx", ["--calibration", "flores", "--imatrix", "auto"], "--imatrix, --calibration"),
        ("onnx", ["--verify", "--texts", "t.txt"], "--verify, --texts"),
        ("onnx", ["--allow-pickle"], "--allow-pickle"),
        ("gguf", ["--block-size", "64"], "--block-size"),
        ("gguf", ["--export-device", "cpu"], "--export-device"),  # given, even if equal to the default
    ],
)
def test_options_of_the_other_format_are_refused_in_one_line_and_nothing_is_written(
    to, options, named, tiny_checkpoint, store_home, tmp_path
):
    out = tmp_path / ("out.gguf" if to == "gguf" else "out-onnx")
    result = run_cli("convert", str(tiny_checkpoint), "--to", to, "--quant", "f32", "--out", str(out), *options)
    assert result.returncode == 2
    other = "onnx" if to == "gguf" else "gguf"
    assert one_error_line(result) == (
        f"bayling-local: error: {named} only with --to {other}, not with --to {to}; "
        f"drop {'them' if ',' in named else 'it'} or change --to"
    )
    assert not out.exists() and not store_home.exists()
    assert result.stdout == b""


def test_onnx_options_are_refused_when_to_is_left_at_its_default_gguf(tiny_checkpoint, store_home):
    result = run_cli("convert", str(tiny_checkpoint), "--block-size", "128")
    assert result.returncode == 2 and "--block-size only with --to onnx" in one_error_line(result)
    assert not store_home.exists()


def test_defaults_of_the_other_format_are_not_refused(tiny_checkpoint, tmp_path):
    # --imatrix defaults to auto and --block-size to 32: neither was given, so neither is refused.
    gguf = run_cli("convert", str(tiny_checkpoint), "--quant", "f32", "--out", str(tmp_path / "t.gguf"))
    assert gguf.returncode == 0, gguf.stderr.decode()
    assert (tmp_path / "t.gguf").is_file()
    pytest.importorskip("onnx")
    onnx = run_cli("convert", str(tiny_checkpoint), "--to", "onnx", "--quant", "fp32", "--block-size", "32",
                   "--out", str(tmp_path / "t-onnx"))
    assert onnx.returncode == 0, onnx.stderr.decode()
    assert (tmp_path / "t-onnx" / "model.onnx").is_file()
