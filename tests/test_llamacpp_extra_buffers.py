"""llama.cpp's extra buffer types (weight repacking): on as in a stock llama.cpp, off only where they crash
(weights of a type llama.cpp has AMX kernels for, on an AMX build) or where the weights would not fit in
memory once copied out of the mapped file, and every load says which it got."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from bayling_local.backends.base import LoadOptions
from bayling_local.backends.device import available_memory_bytes, llama_cpp_cpu_features, llama_cpp_has_amx
from bayling_local.backends.llamacpp import LlamaCppBackend, choose_extra_buffers
from bayling_local.gguf_header import read_gguf_header


def test_q4_1_weights_on_an_amx_build_load_without_extra_buffers(bundled_gguf):
    types = read_gguf_header(bundled_gguf).tensor_types()
    assert "Q4_1" in types  # the bundled model
    on_amx = choose_extra_buffers(types, has_amx=True)
    assert not on_amx.enabled and "Q4_1" in on_amx.reason and "AMX" in on_amx.reason
    assert choose_extra_buffers(types, has_amx=False).enabled


def test_every_type_with_amx_kernels_loads_without_extra_buffers_on_an_amx_build_and_float_files_keep_them(
    smollm2_quantized, smollm2_f32_gguf
):
    # Q5_0 has no AMX kernels, but llama-quantize keeps its embedding at Q8_0, which has.
    for quant, expected in (("q4_0", "Q4_0"), ("q8_0", "Q8_0"), ("q5_0", "Q8_0")):
        types = read_gguf_header(smollm2_quantized[quant]).tensor_types()
        on_amx = choose_extra_buffers(types, has_amx=True)
        assert not on_amx.enabled and expected in on_amx.reason and "AMX" in on_amx.reason
        assert choose_extra_buffers(types, has_amx=False).enabled
    assert choose_extra_buffers(read_gguf_header(smollm2_f32_gguf).tensor_types(), has_amx=True).enabled


DECODE_WITH_THE_DEFAULT_CHOICE = textwrap.dedent(
    """
    import sys
    from bayling_local.backends.llamacpp import open_llama
    from bayling_local.gguf_header import read_gguf_header

    llm, choice = open_llama(read_gguf_header(sys.argv[1]), n_ctx=128, n_threads=2, verbose=False)
    ids = llm.tokenize(b"Translate into French: the cat sat on the mat while it rained.")
    llm.eval(ids)  # a pass of many tokens (llama.cpp's batched matmuls) ...
    for token in ids[:4]:
        llm.eval([token])  # ... and passes of one
    print(choice.describe())
    """
)


def test_every_quantization_decodes_on_this_cpu_with_the_default_choice(smollm2_quantized):
    # On a 2026 Xeon with AMX, llama.cpp's AMX kernels segfaulted on Q4_0, Q8_0 and K-quants: a child
    # process, so a crash fails this test instead of the session.
    for quant in ("q4_0", "q8_0", "q5_0"):
        result = subprocess.run(
            [sys.executable, "-c", DECODE_WITH_THE_DEFAULT_CHOICE, str(smollm2_quantized[quant])],
            capture_output=True,
            timeout=300,
            check=False,
        )
        printed = (result.stdout + result.stderr).decode(errors="replace")[-2000:]
        assert result.returncode == 0, f"{quant} exited with {result.returncode}: {printed}"


def test_an_explicit_choice_wins_over_the_default(bundled_gguf):
    types = read_gguf_header(bundled_gguf).tensor_types()
    assert choose_extra_buffers(types, has_amx=True, requested=True).enabled
    forced_off = choose_extra_buffers(types, has_amx=False, requested=False)
    assert not forced_off.enabled and forced_off.describe() == "off (asked for)"


def test_weights_larger_than_the_memory_available_are_mapped_instead_of_copied_into_extra_buffers(smollm2_f32_gguf):
    """Extra buffer types (AMX takes F16 too) copy weights out of the mapped file: a BayLing-2-13B f16 GGUF
    (26 GB) failed to load on a 24 GiB AMX machine until such files kept llama.cpp's mapping."""
    header = read_gguf_header(smollm2_f32_gguf)
    types, size = header.tensor_types(), header.file_size
    roomy = choose_extra_buffers(types, has_amx=True, weights_bytes=size, available_bytes=4 * size)
    assert roomy.enabled
    tight = choose_extra_buffers(types, has_amx=True, weights_bytes=size, available_bytes=size)
    assert not tight.enabled and "would not fit in the memory available" in tight.reason
    assert choose_extra_buffers(types, has_amx=False, weights_bytes=size, available_bytes=None).enabled
    assert choose_extra_buffers(types, has_amx=False, requested=True, weights_bytes=size, available_bytes=1).enabled
    assert available_memory_bytes() is None or available_memory_bytes() > 0


def test_bundled_model_reports_the_settings_it_runs_with(bundled_gguf):
    backend = LlamaCppBackend.load(bundled_gguf, LoadOptions(device="cpu", threads=1, context_length=128))
    try:
        settings = backend.runtime_settings()
        assert settings["threads"] == "1" and settings["batch_threads"] == "1"
        assert settings["type_k"] == "f16" and settings["type_v"] == "f16"
        assert settings["flash_attention"].startswith("off")
        assert settings["n_gpu_layers"] == "0" and settings["n_batch"] == "128"
        assert settings["cpu_features"].split() == list(llama_cpp_cpu_features())
        expected = "off (Q4_1, Q8_0 weights on an AMX build" if llama_cpp_has_amx() else "on (llama.cpp's default)"
        assert settings["extra_buffers"].startswith(expected)
        assert backend.llm.model_params.use_extra_bufts is (not llama_cpp_has_amx())
    finally:
        backend.close()
    forced_off = LoadOptions(device="cpu", threads=1, context_length=128, extra_buffers=False)
    backend = LlamaCppBackend.load(bundled_gguf, forced_off)
    try:
        assert backend.runtime_settings()["extra_buffers"] == "off (asked for)"
        assert backend.llm.model_params.use_extra_bufts is False
    finally:
        backend.close()


LOAD_AND_LOG = textwrap.dedent(
    """
    import sys
    from bayling_local.backends.llamacpp import open_llama
    from bayling_local.gguf_header import read_gguf_header

    extra = {"default": None, "off": False}[sys.argv[2]]
    llm, choice = open_llama(read_gguf_header(sys.argv[1]), extra_buffers=extra, n_ctx=64, n_threads=1, verbose=True)
    llm.close()
    """
)


def _load_log(path, extra: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", LOAD_AND_LOG, str(path), extra], capture_output=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    return result.stderr.decode(errors="replace")


@pytest.mark.skipif("REPACK" not in llama_cpp_cpu_features(), reason="this llama.cpp build does not repack weights")
def test_the_choice_reaches_llama_cpp_q4_0_weights_are_repacked_unless_turned_off(smollm2_quantized):
    # llama.cpp logs one "<buffer type> model buffer size" line per buffer type holding weights.
    path = smollm2_quantized["q4_0"]
    default = _load_log(path, "default")
    if llama_cpp_has_amx():  # Q4_0 has AMX kernels: no extra buffer type at all
        assert "CPU_REPACK model buffer size" not in default and "AMX model buffer size" not in default
    else:
        assert "CPU_REPACK model buffer size" in default
    assert "CPU_REPACK model buffer size" not in _load_log(path, "off")
