"""The `bayling-local` command as a user runs it: real subprocesses, the real bundled model."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from tests.conftest import run_cli

HEAVY_MODULES = ("torch", "transformers", "llama_cpp", "onnxruntime", "textual", "numpy", "deepspeed")


def assert_one_line_error(result, *, code=None, contains=""):
    stderr = result.stderr.decode("utf-8")
    assert result.returncode != 0, stderr
    if code is not None:
        assert result.returncode == code, stderr
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert stderr.startswith("bayling-local: error:"), stderr
    assert contains in stderr, stderr


def test_help_imports_no_heavy_library():
    code = (
        "import sys; from bayling_local.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]"
    assert "translate" in result.stdout and "chat" in result.stdout


# --- start-up: the root help imports typer and the verb table, nothing a verb needs ---------------

ROOT_HELP_MUST_NOT_IMPORT = (
    *HEAVY_MODULES,
    "rich",  # typer's rich help costs ~40% of `--help` on a slow CPU; the root prints plain click help
    "bayling_local.model",
    "bayling_local.store",
    "bayling_local.backends",
    "bayling_local.translate",
    "bayling_local.bench",
    "bayling_local.config",
    "bayling_local.catalog",
    "bayling_local.languages",
    "bayling_local.prompts",
    "bayling_local.cli.options",
    "bayling_local.cli.loading",
    "bayling_local.cli.output",
)


def modules_loaded_by(argv: list[str]) -> list[str]:
    """sys.modules after `bayling-local ARGV` runs in a fresh interpreter (its output discarded)."""
    code = (
        "import contextlib, io, json, sys; from bayling_local.cli import main\n"
        f"with contextlib.redirect_stdout(io.StringIO()): code = main({argv!r})\n"
        "print(json.dumps([code, sorted(sys.modules)]))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    code, modules = json.loads(result.stdout)
    assert code == 0, result.stderr
    return modules


def test_root_help_imports_no_verb_module_nor_what_verbs_need():
    from bayling_local.cli import VERBS

    forbidden = (*ROOT_HELP_MUST_NOT_IMPORT, *(verb.target.partition(":")[0] for verb in VERBS))
    modules = modules_loaded_by(["--help"])
    assert [m for m in modules if any(m == name or m.startswith(f"{name}.") for name in forbidden)] == []


def test_a_verbs_own_help_imports_only_that_verb():
    modules = modules_loaded_by(["chat", "--help"])
    assert "bayling_local.cli.chat" in modules
    others = ("translate", "generate", "languages", "models", "bench", "tui")
    assert [m for m in modules if m in {f"bayling_local.cli.{v}" for v in others}] == []
    assert "bayling_local.model" not in modules and "llama_cpp" not in modules


def test_root_help_lists_every_verb_with_the_first_paragraph_of_its_own_help():
    from bayling_local.cli import VERBS

    stdout = run_cli("--help").stdout.decode("utf-8")
    for verb in VERBS:
        command = verb.load()
        own = command.short_help or (command.help or "").split("\n\n")[0]
        assert " ".join(verb.summary.split()) == " ".join(own.split()), verb.name
        assert f"\n  {verb.name} " in stdout


def test_bare_command_in_a_pipe_prints_the_root_help():
    result = run_cli()  # stdin is not a terminal: no TUI
    assert result.returncode == 0, result.stderr
    assert "Commands:" in result.stdout.decode("utf-8") and "translate" in result.stdout.decode("utf-8")


def test_lazily_registered_verbs_still_suggest_the_closest_name_and_show_their_own_help():
    assert_one_line_error(run_cli("chta"), code=2, contains="Did you mean 'chat'?")
    models_help = run_cli("models", "--help").stdout.decode("utf-8")
    assert "Usage: bayling-local models [OPTIONS] COMMAND" in models_help and "import" in models_help
    assert "--install-completion" not in models_help


def test_translate_one_target_prints_one_line_per_input_line():
    result = run_cli("translate", "--to", "fr", "--max-tokens", "12", stdin="Good morning.\nThank you.\n")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode("utf-8").splitlines()
    assert len(lines) == 2 and all(line.strip() for line in lines)


def test_translate_several_targets_prints_code_tab_translation_grouped_by_line():
    result = run_cli("translate", "--to", "sw,yo,zh", "--max-tokens", "10", stdin="Good morning.\nThank you.\n")
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t", 1) for line in result.stdout.decode("utf-8").splitlines()]
    assert [code for code, _ in rows] == ["swh_Latn", "yor_Latn", "zho_Hans"] * 2


def test_translate_text_arguments_are_one_text():
    result = run_cli("translate", "--to", "de", "--max-tokens", "10", "Good", "morning")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.decode("utf-8").splitlines()) == 1


def test_chat_streams_an_answer_and_handles_commands():
    result = run_cli("chat", "--max-tokens", "16", "--seed", "3", stdin="Hello!\n/reset\n/exit\nignored\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode("utf-8").strip()
    assert "conversation cleared" in result.stderr.decode("utf-8")


def test_generate_continues_raw_text():
    result = run_cli("generate", "--max-tokens", "8", "The river flows")
    assert result.returncode == 0 and result.stdout.strip()


def test_languages_lists_all_candidates_and_fails_on_no_match():
    result = run_cli("languages", "zh")
    codes = [line.split("\t")[0] for line in result.stdout.decode("utf-8").splitlines()]
    assert codes[:2] == ["zho_Hans", "zho_Hant"]
    assert len(run_cli("languages").stdout.decode("utf-8").splitlines()) == 204
    assert_one_line_error(run_cli("languages", "qqqq"), code=2)


def test_doctor_reports_backends():
    result = run_cli("doctor")
    assert result.returncode == 0
    assert "llama.cpp\tyes" in result.stdout.decode("utf-8")


def test_doctor_shows_the_cpus_instruction_sets_and_llama_cpps_repacking_default():
    from bayling_local.backends.device import describe_instruction_sets, llama_cpp_extra_buffers_default

    stdout = run_cli("doctor").stdout.decode("utf-8")
    assert f"CPU instruction sets: {describe_instruction_sets()}\n" in stdout
    assert f"llama.cpp extra buffer types (weight repacking): {llama_cpp_extra_buffers_default()}\n" in stdout
    on_amx = llama_cpp_extra_buffers_default(("AVX512", "AMX_INT8", "REPACK"))
    assert on_amx.startswith("on (AMX, CPU_REPACK)") and "off for GGUFs with Q4_0/Q4_1/Q8_0/K-quant weights" in on_amx
    assert "Q4_1" not in llama_cpp_extra_buffers_default(("AVX2", "REPACK"))
    assert "no extra buffer types" in llama_cpp_extra_buffers_default(("AVX2",))


def test_models_list_shows_the_bundled_model():
    result = run_cli("models", "list")
    assert result.stdout.decode("utf-8").startswith("smollm2-135m-instruct\tgguf\tQ4_1")


# --- bad input: one clear line, a non-zero exit, no traceback -----------------------------------


def test_unknown_language_suggests_the_closest():
    assert_one_line_error(run_cli("translate", "--to", "swahilli", "hi"), code=2, contains="swh_Latn")


def test_empty_stdin_is_a_usage_error():
    assert_one_line_error(run_cli("translate", "--to", "fr", stdin=b""), code=2, contains="empty")


def test_non_utf8_stdin_is_a_usage_error():
    assert_one_line_error(run_cli("translate", "--to", "fr", stdin=b"caf\xe9\n"), code=2, contains="UTF-8")


def test_unknown_model_name_names_the_fix():
    assert_one_line_error(run_cli("chat", "--model", "no-such-model"), code=1, contains="models list")
    assert_one_line_error(
        run_cli("translate", "--model", "bayling-3-8b", "--to", "fr", "hi"), code=1, contains="models pull bayling-3-8b"
    )


def test_missing_model_file_is_an_error():
    assert_one_line_error(run_cli("generate", "--model", "/nonexistent/model.gguf", "hi"), contains="does not exist")


@pytest.fixture(scope="module")
def half_gguf(tmp_path_factory, bundled_gguf):
    path = tmp_path_factory.mktemp("bad") / "half.gguf"
    with bundled_gguf.open("rb") as source, path.open("wb") as target:
        target.write(source.read(bundled_gguf.stat().st_size // 2))
    return path


def test_truncated_gguf_is_refused_and_left_untouched(half_gguf):
    before = half_gguf.read_bytes()
    assert_one_line_error(run_cli("generate", "--model", str(half_gguf), "hi"), contains="truncated")
    assert half_gguf.read_bytes() == before


def test_non_gguf_file_is_refused(tmp_path):
    fake = tmp_path / "notes.gguf"
    fake.write_text("this is not a model\n")
    assert_one_line_error(run_cli("generate", "--model", str(fake), "hi"), contains="not a GGUF")
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    assert_one_line_error(run_cli("generate", "--model", str(empty), "hi"), contains="not a GGUF")


def test_corrupt_gguf_header_is_refused(tmp_path, bundled_gguf):
    corrupt = tmp_path / "corrupt.gguf"
    data = bytearray(bundled_gguf.read_bytes()[:4096])
    data[16:24] = (2**40).to_bytes(8, "little")  # an absurd metadata count
    corrupt.write_bytes(bytes(data))
    assert_one_line_error(run_cli("generate", "--model", str(corrupt), "hi"), contains="corrupt")


def test_usage_errors_exit_2_on_one_line():
    assert_one_line_error(run_cli("translate", "hi"), code=2, contains="--to")
    assert_one_line_error(run_cli("chat", "--device", "quantum"), code=2, contains="device")


def test_debug_shows_the_traceback():
    result = run_cli("--debug", "languages", "qqqq")
    assert "Traceback" in result.stderr.decode("utf-8")


def test_gguf_of_an_architecture_llama_cpp_lacks_is_refused(tmp_path):
    gguf = pytest.importorskip("gguf")
    import numpy as np

    path = tmp_path / "bogus.gguf"
    writer = gguf.GGUFWriter(str(path), "bogusarch")
    writer.add_block_count(1)
    writer.add_context_length(128)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert_one_line_error(run_cli("generate", "--model", str(path), "hi"), code=1, contains="bogusarch architecture")


def test_ctrl_c_stops_the_answer_without_leaving_the_chat():
    import os
    import signal

    process = subprocess.Popen(
        [sys.executable, "-m", "bayling_local", "chat", "--max-tokens", "1500", "--temperature", "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=os.environ.copy(),
    )
    try:
        process.stdin.write(b"Write a very long story about a river, with many chapters.\n")
        process.stdin.flush()
        assert process.stdout.read(1)  # the answer has started streaming
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(b"/exit\n", timeout=120)
    finally:
        process.kill()
    assert process.returncode == 0, stderr.decode()
    assert "(stopped)" in stderr.decode()


def test_models_import_then_use_by_name_then_rm(tmp_path, bundled_gguf):
    env = {"BAYLING_HOME": str(tmp_path / "home")}
    imported = run_cli("models", "import", str(bundled_gguf), "--name", "smol", env=env)
    assert imported.returncode == 0, imported.stderr
    info = run_cli("models", "info", "smol", env=env)
    assert '"quant": "Q4_1"' in info.stdout.decode() and '"sha256": "' in info.stdout.decode()
    used = run_cli("generate", "--model", "smol", "--max-tokens", "4", "Rivers", env=env)
    assert used.returncode == 0, used.stderr
    assert run_cli("models", "rm", "smol", env=env).returncode == 0
    assert_one_line_error(run_cli("models", "info", "smol", env=env), code=1, contains="no model 'smol'")


def test_models_pull_offline_fails_at_once_with_the_import_hint(tmp_path):
    result = run_cli("models", "pull", "bayling-3-8b", env={"BAYLING_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"})
    assert_one_line_error(result, code=1, contains="models import")


def test_default_model_comes_from_env_then_config_file(tmp_path, bundled_gguf):
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text('model = "from-config"\n')
    from_config = run_cli("generate", "hi", env={"BAYLING_HOME": str(home)})
    assert_one_line_error(from_config, contains="'from-config'")
    from_env = run_cli("generate", "hi", env={"BAYLING_HOME": str(home), "BAYLING_MODEL": "from-env"})
    assert_one_line_error(from_env, contains="'from-env'")
    (home / "config.toml").write_text('modle = "typo"\n')
    assert_one_line_error(run_cli("generate", "hi", env={"BAYLING_HOME": str(home)}), code=2, contains="modle")


def test_config_switches_take_true_or_false_and_doctor_shows_them(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text('huge_pages = "no"\n')
    error = run_cli("doctor", env={"BAYLING_HOME": str(home)})
    assert_one_line_error(error, code=2, contains="huge_pages must be true or false")
    (home / "config.toml").write_text("huge_pages = false\n")
    result = run_cli("doctor", env={"BAYLING_HOME": str(home)})
    out = result.stdout.decode("utf-8")
    assert result.returncode == 0, result.stderr
    if importlib.util.find_spec("onnxruntime"):
        assert "ONNX Runtime on the CPU: weights in 4 KiB pages (huge_pages = false)" in out


def test_chat_format_override_is_validated():
    assert_one_line_error(run_cli("chat", "--chat-format", "alpaca"), code=2, contains="bayling-2")
