"""`--backend auto` between a model's GGUF and ONNX conversions: this machine's bench speed records first,
then the measured table for the detected CPU class; `--backend llama.cpp|onnx` forces one; `doctor` says
which auto picks and why. Real conversions of a tiny checkpoint, imported into a store of the test's own."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("llama_cpp")

from bayling_local.backends import choice, device
from bayling_local.backends.base import LoadOptions
from bayling_local.backends.choice import CPU_CLASSES, MeasuredRatio, cpu_class, weight_bits
from bayling_local.bench.hardware import cpu_model
from bayling_local.bench.results import RunRecord, append_record
from bayling_local.errors import UsageError
from bayling_local.families import family_members
from bayling_local.model import choose_artifact
from bayling_local.store import get_model, import_model
from tests.conftest import run_cli, write_tiny_llama

pytestmark = pytest.mark.usefixtures("store_home")

CPU = LoadOptions(device="cpu", threads=2)
AVX2_ONLY = ("AVX2", "FMA", "F16C")
AVX512_VNNI = ("AVX2", "FMA", "F16C", "AVX-512F", "AVX-512BW", "AVX-512VNNI")
SAPPHIRE_RAPIDS = (*AVX512_VNNI, "AVX-512BF16", "AMX-INT8", "AMX-BF16")


@pytest.fixture(scope="module")
def conversions(tmp_path_factory, llama3_tokenizer_path) -> dict[str, Path]:
    """A random 2-layer Llama converted by the real converters: Q4_0 and Q8_0 GGUFs, an int4 ONNX export."""
    from bayling_local.convert import to_gguf, to_onnx

    root = tmp_path_factory.mktemp("family")
    tokenizer_dir = root / "tokenizer"
    tokenizer_dir.mkdir()
    shutil.copy(llama3_tokenizer_path, tokenizer_dir / "tokenizer.json")
    checkpoint = write_tiny_llama(root / "Tiny-Family", tokenizer_dir)
    return {
        "q4_0": to_gguf(checkpoint, "q4_0", out=root / "tiny-q4_0.gguf", imatrix="none", chat_format="chatml").path,
        "q8_0": to_gguf(checkpoint, "q8_0", out=root / "tiny-q8_0.gguf", imatrix="none", chat_format="chatml").path,
        "int4": to_onnx(checkpoint, root / "tiny-onnx-int4", "int4", chat_format="chatml"),
    }


@pytest.fixture
def family(conversions) -> dict[str, str]:
    """The conversions imported into this test's store (the family link is the checkpoint hash inside each)."""
    return {quant: import_model(path, name=f"tiny-{quant}").name for quant, path in conversions.items()}


def speed_record(name: str, decode_tps: float, threads: int = 2, cpu: str | None = None) -> RunRecord:
    """A `bench speed` record as bench/speed.py writes it, measured on this CPU unless `cpu` says another."""
    stored = get_model(name)
    return RunRecord(
        kind="speed", model=name, quant=stored.manifest.quant,
        backend="onnxruntime" if stored.manifest.format == "onnx" else "llama.cpp",
        hardware={"cpu": cpu or cpu_model(), "instruction_sets": list(device.cpu_instruction_sets())},
        settings={"threads": threads, "device": "cpu", "prompt_tokens": 128, "generation_tokens": 128},
        results={"generation_tps": {"mean": decode_tps, "stddev": 1.0, "n": 3}},
        model_details={"path": str(stored.path), "format": stored.manifest.format},
    )


def detected_cpu(monkeypatch, instruction_sets: tuple[str, ...]) -> None:
    monkeypatch.setattr(device, "cpu_instruction_sets", lambda: instruction_sets)


# --- the family ---------------------------------------------------------------------------------------------


def test_a_family_is_the_same_checkpoint_at_the_same_weight_width(family):
    assert [m.name for m in family_members(get_model("tiny-q4_0"))] == ["tiny-int4"]
    assert [m.name for m in family_members(get_model("tiny-int4"))] == ["tiny-q4_0"]
    assert family_members(get_model("tiny-q8_0")) == []  # no 8-bit ONNX export: never swapped for int4
    assert family_members(get_model("smollm2-135m-instruct")) == []  # another checkpoint


def test_weight_widths_read_from_quant_names():
    assert [weight_bits(q) for q in ("Q4_0", "Q4_K_M", "IQ4_XS", "int4", "Q8_0", "int8", "BF16", "fp16", "unknown")] == [
        4, 4, 4, 4, 8, 8, 16, 16, None
    ]


# --- auto: this machine's records first ---------------------------------------------------------------------


@pytest.mark.parametrize(("onnx_tps", "gguf_tps", "loaded"), [(120.0, 100.0, "tiny-int4"), (80.0, 100.0, "tiny-q4_0")])
def test_auto_loads_the_artifact_this_machines_speed_records_show_faster(family, monkeypatch, onnx_tps, gguf_tps, loaded):
    detected_cpu(monkeypatch, AVX2_ONLY)  # the table alone would say llama.cpp
    append_record(speed_record("tiny-int4", onnx_tps))
    append_record(speed_record("tiny-q4_0", gguf_tps))

    for asked in ("tiny-q4_0", "tiny-int4"):
        chosen = choose_artifact(asked, "auto", CPU)
        assert chosen.source.name == loaded
        assert chosen.backend == ("onnxruntime" if loaded == "tiny-int4" else "llama.cpp")
        assert f"{onnx_tps / gguf_tps:.2f}x" in chosen.reason and "bench speed records (2 threads)" in chosen.reason


def test_records_of_another_cpu_or_of_one_artifact_only_leave_the_choice_to_the_table(family, monkeypatch):
    detected_cpu(monkeypatch, AVX2_ONLY)
    append_record(speed_record("tiny-int4", 500.0))  # ONNX measured here, but its GGUF never was
    append_record(speed_record("tiny-q4_0", 1.0, cpu="Some Other CPU"))

    chosen = choose_artifact("tiny-int4", "auto", CPU)

    assert chosen.source.name == "tiny-q4_0" and "0.83x" in chosen.reason and "measured:" in chosen.reason


def test_records_at_the_asked_thread_count_come_first(family, monkeypatch):
    append_record(speed_record("tiny-int4", 90.0, threads=1))
    append_record(speed_record("tiny-q4_0", 60.0, threads=1))
    append_record(speed_record("tiny-int4", 90.0, threads=2))
    append_record(speed_record("tiny-q4_0", 120.0, threads=2))

    assert choose_artifact("tiny-q4_0", "auto", LoadOptions(device="cpu", threads=1)).source.name == "tiny-int4"
    assert choose_artifact("tiny-q4_0", "auto", LoadOptions(device="cpu", threads=2)).source.name == "tiny-q4_0"


# --- auto: the measured table for the detected CPU class ------------------------------------------------------


@pytest.mark.parametrize(
    ("instruction_sets", "class_key"),
    [(AVX2_ONLY, "avx2"), (AVX512_VNNI, "avx512-vnni"), (("AVX2", "AVX-512F"), "avx512"), (SAPPHIRE_RAPIDS, "amx")],
)
def test_cpu_classes_are_matched_by_instruction_sets(instruction_sets, class_key):
    assert cpu_class(instruction_sets, "Linux").key == class_key
    assert cpu_class(("NEON",), "Darwin").key == "apple" and cpu_class(("NEON",), "Linux").key == "arm"
    assert cpu_class((), "Linux").key == "unknown"


@pytest.mark.parametrize(
    ("instruction_sets", "ratio", "chosen_name"),
    [(AVX2_ONLY, "0.83x", "tiny-q4_0"), (AVX512_VNNI, "0.93x", "tiny-q4_0"), (SAPPHIRE_RAPIDS, "1.53x", "tiny-int4")],
)
def test_without_records_auto_follows_the_measured_table_for_the_detected_class(
    family, monkeypatch, instruction_sets, ratio, chosen_name
):
    detected_cpu(monkeypatch, instruction_sets)

    chosen = choose_artifact("tiny-int4" if chosen_name == "tiny-q4_0" else "tiny-q4_0", "auto", CPU)

    assert chosen.source.name == chosen_name
    assert chosen.backend == ("llama.cpp" if chosen_name == "tiny-q4_0" else "onnxruntime")
    assert ratio in chosen.reason and cpu_class().label in chosen.reason


def test_the_table_is_data_a_class_measured_faster_on_onnx_loads_onnx(family, monkeypatch):
    detected_cpu(monkeypatch, ("AVX2", "AVX-512F"))
    assert "not measured" in choose_artifact("tiny-q4_0", "auto", CPU).reason  # AVX-512 without VNNI: no row

    monkeypatch.setattr(choice, "MEASURED_RATIOS", (MeasuredRatio("avx512", 4, 1.25, "ONNX int4 vs Q4_0", "a test row"),))
    chosen = choose_artifact("tiny-q4_0", "auto", CPU)

    assert chosen.source.name == "tiny-int4" and chosen.backend == "onnxruntime" and "1.25x" in chosen.reason


def test_auto_keeps_the_named_artifact_off_the_cpu_and_outside_a_family(family, monkeypatch):
    detected_cpu(monkeypatch, AVX2_ONLY)
    assert choose_artifact("tiny-int4", "auto", LoadOptions(device="cuda")).source.name == "tiny-int4"
    kept = choose_artifact("tiny-q8_0", "auto", CPU)
    assert kept.source.name == "tiny-q8_0" and kept.reason is None
    assert choose_artifact("tiny-int4", None, CPU).source.name == "tiny-int4"  # the API's default: exactly that


def test_every_cpu_class_row_names_its_class_and_every_ratio_its_source():
    keys = {c.key for c in CPU_CLASSES}
    assert all(r.cpu_class in keys and r.source and r.pair for r in choice.MEASURED_RATIOS)


# --- forcing a backend ----------------------------------------------------------------------------------------


def test_a_forced_backend_takes_the_familys_artifact_of_its_format(family):
    assert choose_artifact("tiny-q4_0", "onnx", CPU).source.name == "tiny-int4"
    assert choose_artifact("tiny-int4", "llama.cpp", CPU).source.name == "tiny-q4_0"
    assert choose_artifact("tiny-q4_0", "llama.cpp", CPU).reason is None
    with pytest.raises(UsageError, match="no onnx conversion"):
        choose_artifact("tiny-q8_0", "onnx", CPU)
    with pytest.raises(UsageError, match="unknown backend 'vulkan'"):
        choose_artifact("tiny-q4_0", "vulkan", CPU)


# --- the CLI and doctor ---------------------------------------------------------------------------------------


def test_generate_with_auto_loads_the_recorded_faster_artifact_and_says_so_in_one_line(family):
    append_record(speed_record("tiny-int4", 120.0))
    append_record(speed_record("tiny-q4_0", 100.0))

    auto = run_cli("generate", "Hello", "-m", "tiny-q4_0", "--max-tokens", "2", "--device", "cpu", "--threads", "2")
    forced = run_cli("generate", "Hello", "-m", "tiny-q4_0", "--max-tokens", "2", "--backend", "llama.cpp")
    refused = run_cli("generate", "Hello", "-m", "tiny-q8_0", "--backend", "onnx")

    assert auto.returncode == 0, auto.stderr.decode()
    said = (
        "--backend auto chose tiny-int4 on onnxruntime: ONNX decodes at 1.20x llama.cpp (120.0 vs 100.0 tok/s) "
        "in this machine's bench speed records (2 threads)"
    )
    assert auto.stderr.decode().strip().splitlines() == [said]
    assert forced.returncode == 0 and "--backend" not in forced.stderr.decode()
    assert refused.returncode == 2 and len(refused.stderr.decode().strip().splitlines()) == 1


def test_doctor_says_what_auto_picks_on_this_cpu_and_for_each_family_in_the_store(family):
    append_record(speed_record("tiny-int4", 80.0))
    append_record(speed_record("tiny-q4_0", 100.0))

    result = run_cli("doctor")

    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    assert f"--backend auto on this CPU ({cpu_class().label}):" in out
    assert "tiny-q4_0: --backend auto chose tiny-q4_0 on llama.cpp: ONNX decodes at 0.80x llama.cpp" in out
    assert "tiny-q8_0:" not in out  # no ONNX of its width: not a family with a choice
