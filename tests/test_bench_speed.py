"""`bench speed` on the real bundled model: exact token counts, our clock agrees with llama.cpp's."""

from __future__ import annotations

import json

import pytest

from bayling_local.backends.base import LoadOptions
from bayling_local.bench.results import read_records
from bayling_local.bench.speed import SpeedSettings, measure_speed, prompt_ids

AGREEMENT = 0.05


@pytest.fixture(scope="module")
def one_thread_model():
    """The bundled model on one thread: two threads on the shared 2-core test machines wait on each
    other's OpenMP barriers and make prompt processing tens of times slower."""
    from bayling_local.model import open_model

    model = open_model(None, options=LoadOptions(device="cpu", threads=1, context_length=256))
    yield model
    model.close()


def test_runs_process_the_whole_prompt_and_generate_every_token(one_thread_model):
    settings = SpeedSettings(prompt_tokens=48, generation_tokens=24, repetitions=2, warmup=True)
    runs = measure_speed(one_thread_model, settings)
    assert len(runs) == 2
    for run in runs:
        # llama.cpp re-uses the KV cache of a prefix shared with the previous run; every run must
        # still process all 48 prompt tokens, or prompt tokens/s would be inflated.
        assert run.engine["prompt_tokens"] == 48
        assert run.generated_tokens == 24
        assert run.engine["generation_tokens"] == 23  # the first token comes from the prompt's logits


def test_progress_is_reported_and_cancel_stops_the_job(one_thread_model):
    import threading

    from bayling_local.bench.jobs import BenchmarkCancelled
    from bayling_local.bench.speed import benchmark_loaded_model

    events = []
    result = benchmark_loaded_model(one_thread_model, SpeedSettings(16, 4, 2, warmup=False), 1, events.append)
    assert [(e.done, e.total) for e in events] == [(0, 2), (1, 2), (2, 2)]
    assert result.generated_tokens == 4 and result.model.quant == "Q4_1"
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(BenchmarkCancelled):
        measure_speed(one_thread_model, SpeedSettings(16, 4, 1), cancel=cancel)


def test_prompt_is_exactly_n_tokens(one_thread_model):
    backend = one_thread_model.backend
    for length in (1, 7, 300):
        assert len(prompt_ids(backend, length)) == length
    assert prompt_ids(backend, 10, 0) != prompt_ids(backend, 10, 1)


def test_cli_speed_agrees_with_llama_cpp_counters_and_writes_reports(cli, tmp_path, bundled_gguf):
    out_json, out_md = tmp_path / "speed.json", tmp_path / "speed.md"
    result = cli(
        "bench", "speed", "smollm2-135m-instruct", str(bundled_gguf), "-p", "64", "-n", "32", "-r", "1",
        "--threads", "1", "--device", "cpu",
        "--json", str(out_json), "--markdown", str(out_md), env={"BAYLING_HOME": str(tmp_path / "home")},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    stdout = result.stdout.decode()
    assert "tg t/s measured" in stdout and "backend build: llama.cpp" in stdout and "hardware:" in stdout
    assert "llama.cpp settings: threads=1, batch_threads=1, flash_attention=off" in stdout

    records = json.loads(out_json.read_text("utf-8"))["records"]
    assert [r["model"] for r in records] == ["smollm2-135m-instruct", bundled_gguf.name]  # one table, two rows
    for record in records:
        results = record["results"]
        measured, engine = results["generation_tps"]["mean"], results["engine_generation_tps"]["mean"]
        assert abs(measured - engine) / engine < AGREEMENT, (measured, engine)
        assert results["generated_tokens"] == 32
        assert record["quant"] == "Q4_1" and record["settings"]["context_length"] == 96
        runtime = record["settings"]["runtime_settings"]
        assert runtime["threads"] == "1" and runtime["type_k"] == "f16" and runtime["extra_buffers"]
        assert results["peak_rss_bytes"] > 50 * 2**20

    markdown = out_md.read_text("utf-8")
    assert markdown.startswith("## speed") and "| smollm2-135m-instruct | Q4_1 |" in markdown

    logged = read_records(tmp_path / "home" / "results.jsonl")
    assert [r.kind for r in logged.records] == ["speed", "speed"] and logged.bad_lines == 0
    assert len({r.run_id for r in logged.records}) == 1


def test_results_carry_the_backend_settings_into_the_table_and_the_record(one_thread_model):
    from bayling_local.bench.hardware import detect_hardware
    from bayling_local.bench.speed import benchmark_loaded_model, speed_record
    from bayling_local.bench.tables import speed_table

    result = benchmark_loaded_model(one_thread_model, SpeedSettings(8, 2, 1, warmup=False), 1)
    assert result.runtime_settings == one_thread_model.backend.runtime_settings()
    hardware = detect_hardware()
    notes = speed_table([result], hardware).notes
    assert notes[0] == f"hardware: {hardware.describe()}" and "AVX2" in notes[0]
    settings_lines = [n for n in notes if n.startswith("llama.cpp settings: ")]
    assert len(settings_lines) == 1 and "extra_buffers=" in settings_lines[0] and "cpu_features=" in settings_lines[0]
    assert speed_record(result, hardware).settings["runtime_settings"]["threads"] == "1"


def test_records_written_before_runtime_settings_existed_still_load(tmp_path):
    old = {"kind": "speed", "model": "m", "quant": "Q4_1", "backend": "llama.cpp", "hardware": {"cpu": "x"},
           "settings": {"prompt_tokens": 8, "threads": 1}, "results": {"generated_tokens": 2}}  # fmt: skip
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(old) + "\n", "utf-8")
    loaded = read_records(path)
    assert loaded.bad_lines == 0 and "runtime_settings" not in loaded.records[0].settings
