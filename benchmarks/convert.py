"""Conversion figures: time and peak memory of converting a >1 GB Llama, and what a multilingual
importance matrix buys over an English-only one.

Usage:
  python benchmarks/convert.py size    [--layers 24 --hidden 2048 --ffn 5632] [--workdir DIR]
  python benchmarks/convert.py imatrix [--flores ../shared/data] [--checkpoint DIR] [--languages N]

`size` writes a random-weight bf16 Llama (24 x 2048: 1.2 B parameters, 2.4 GB) and converts it to f16 and
to q4_k_m in fresh processes, printing wall time and peak RSS of each (RSS includes pages of the
memory-mapped input that are resident at the time). `imatrix` quantizes SmolLM2 (a checkpoint made from
the bundled GGUF, as the tests do) to q4_0 and iq4_nl with no matrix, an English-only matrix and the
multilingual one, and prints the KL divergence against the f32 GGUF on held-out FLORES-200 `devtest`
sentences per language. Benchmarks are not part of CI.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# --- size: time and peak RSS ------------------------------------------------------------------------


def write_random_llama(folder: Path, layers: int, hidden: int, ffn: int, heads: int, kv_heads: int) -> Path:
    """A bf16 LlamaForCausalLM of random weights, one safetensors shard per layer (never all in memory)."""
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaTokenizer

    if (folder / "config.json").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer_source = folder / "tokenizer"
    _train_tokenizer(tokenizer_source)
    tokenizer = LlamaTokenizer.from_pretrained(tokenizer_source, add_bos_token=True)
    tokenizer.save_pretrained(folder)
    shutil.copy(tokenizer_source / "tokenizer.model", folder / "tokenizer.model")
    vocab = len(tokenizer)
    head_dim = hidden // heads
    torch.manual_seed(0)

    def rand(*shape):
        return (torch.randn(*shape) * 0.02).to(torch.bfloat16)

    weight_map = {}
    shards = {"model-embed.safetensors": {"model.embed_tokens.weight": rand(vocab, hidden),
                                          "lm_head.weight": rand(vocab, hidden),
                                          "model.norm.weight": torch.ones(hidden, dtype=torch.bfloat16)}}
    for i in range(layers):
        p = f"model.layers.{i}."
        shards[f"model-layer{i:03d}.safetensors"] = {
            p + "input_layernorm.weight": torch.ones(hidden, dtype=torch.bfloat16),
            p + "post_attention_layernorm.weight": torch.ones(hidden, dtype=torch.bfloat16),
            p + "self_attn.q_proj.weight": rand(heads * head_dim, hidden),
            p + "self_attn.k_proj.weight": rand(kv_heads * head_dim, hidden),
            p + "self_attn.v_proj.weight": rand(kv_heads * head_dim, hidden),
            p + "self_attn.o_proj.weight": rand(hidden, heads * head_dim),
            p + "mlp.gate_proj.weight": rand(ffn, hidden),
            p + "mlp.up_proj.weight": rand(ffn, hidden),
            p + "mlp.down_proj.weight": rand(hidden, ffn),
        }
    for shard, tensors in shards.items():
        save_file(tensors, str(folder / shard), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, shard))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab, "hidden_size": hidden,
        "intermediate_size": ffn, "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": kv_heads, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
        "torch_dtype": "bfloat16",
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


def _train_tokenizer(folder: Path) -> None:
    import sentencepiece as spm

    folder.mkdir(parents=True, exist_ok=True)
    corpus = folder / "corpus.txt"
    corpus.write_text("A small tokenizer for a benchmark model, trained on this line of text.\n" * 200, "utf-8")
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(folder / "tokenizer"), vocab_size=320,
                                   model_type="bpe", byte_fallback=True, minloglevel=2, hard_vocab_limit=False)


CONVERT_AND_MEASURE = """
import resource, sys, time
from bayling_local.convert import to_gguf
start = time.perf_counter()
result = to_gguf(sys.argv[1], sys.argv[2], out=sys.argv[3], force=True)
elapsed = time.perf_counter() - start
print(elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, result.size)
"""


def measure_conversion(checkpoint: Path, quant: str, out: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", CONVERT_AND_MEASURE, str(checkpoint), quant, str(out)],
                          capture_output=True, text=True, check=True)
    elapsed, peak, size = done.stdout.split()[-3:]
    out.unlink(missing_ok=True)
    return {"quant": quant, "seconds": float(elapsed), "peak_rss_bytes": int(peak), "output_bytes": int(size)}


def run_size(args) -> dict:
    folder = write_random_llama(args.workdir / "random-llama", args.layers, args.hidden, args.ffn, args.heads, args.kv_heads)
    checkpoint_bytes = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    largest = max(f.stat().st_size for f in folder.glob("*.safetensors"))
    rows = [measure_conversion(folder, quant, args.workdir / f"random-{quant}.gguf") for quant in ("f16", "q4_k_m")]
    print(f"checkpoint: {checkpoint_bytes / 1e9:.2f} GB bf16 ({args.layers} layers x {args.hidden}); largest shard "
          f"{largest / 1e6:.0f} MB")
    for row in rows:
        print(f"  -> {row['quant']:7s} {row['seconds']:7.1f} s   peak RSS {row['peak_rss_bytes'] / 1e6:7.0f} MB   "
              f"output {row['output_bytes'] / 1e9:.2f} GB")
    return {"checkpoint_bytes": checkpoint_bytes, "conversions": rows}


# --- imatrix: English-only vs multilingual ----------------------------------------------------------


def smollm2_checkpoint(folder: Path) -> Path:
    """A HF checkpoint made from the bundled SmolLM2 GGUF (the tests' fixture does the same)."""
    if (folder / "config.json").is_file():
        return folder
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import _save_smollm2_checkpoint

    from bayling_local.catalog import bundled_model_path

    folder.mkdir(parents=True, exist_ok=True)
    _save_smollm2_checkpoint(bundled_model_path(), folder)
    return folder


def run_imatrix(args) -> dict:
    from bayling_local.convert import to_gguf
    from bayling_local.convert.imatrix import calibration_texts, compute_imatrix
    from bayling_local.convert.logits import gguf_logits, kl_divergence, llama_for_logits, log_softmax
    from bayling_local.convert.quantize import quantize_gguf
    from bayling_local.evaldata import flores_languages, flores_parallel

    work = args.workdir / "imatrix"
    work.mkdir(parents=True, exist_ok=True)
    checkpoint = args.checkpoint or smollm2_checkpoint(work / "smollm2-hf")
    f32 = work / "smollm2-f32.gguf"
    if not f32.is_file():
        to_gguf(checkpoint, "f32", out=f32)
    dev = flores_parallel(args.flores, ["eng_Latn"], "dev")
    calibrations = {
        "english": {"eng_Latn": dev["eng_Latn"]},
        "multilingual": calibration_texts(args.flores, per_language=args.calibration_per_language),
    }
    matrices, tokens = {}, {}
    for label, texts in calibrations.items():
        started = time.perf_counter()
        matrix = compute_imatrix(checkpoint, texts, work / f"{label}.imatrix.gguf", threads=args.threads)
        matrices[label] = matrix.values()
        tokens[label] = matrix.counts["blk.0.attn_q.weight"]
        print(f"imatrix {label}: {len(texts)} languages, {tokens[label]} tokens, {time.perf_counter() - started:.0f} s")
    candidates = {}
    for quant in ("q4_0", "iq4_nl"):
        for label in ("none", "english", "multilingual"):
            path = work / f"smollm2-{quant}-{label}.gguf"
            quantize_gguf(f32, path, quant, imatrix=matrices.get(label))
            candidates[(quant, label)] = path
    languages = flores_languages(args.flores)[: args.languages] if args.languages else flores_languages(args.flores)
    held_out = flores_parallel(args.flores, languages, "devtest", limit=args.sentences)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    kl: dict[tuple, dict[str, float]] = {key: {} for key in candidates}
    with llama_for_logits(f32, n_ctx=args.max_tokens + 8, threads=args.threads) as base:
        opened = {key: llama_for_logits(path, n_ctx=args.max_tokens + 8, threads=args.threads) for key, path in candidates.items()}
        llms = {key: context.__enter__() for key, context in opened.items()}
        try:
            for code, lines in held_out.items():
                sums = dict.fromkeys(candidates, 0.0)
                positions = 0
                for line in lines:
                    ids = tokenizer.encode(line, add_special_tokens=True)[: args.max_tokens]
                    base_log_probs = log_softmax(gguf_logits(base, ids))
                    positions += len(ids)
                    for key, llm in llms.items():
                        sums[key] += float(kl_divergence(base_log_probs, gguf_logits(llm, ids)).sum())
                for key in candidates:
                    kl[key][code] = sums[key] / positions
        finally:
            for context in opened.values():
                context.__exit__(None, None, None)
    return summarize_imatrix(kl, tokens, len(languages), args.sentences)


def summarize_imatrix(kl: dict[tuple, dict[str, float]], tokens: dict[str, int], languages: int, sentences: int) -> dict:
    def mean(values):
        values = list(values)
        return sum(values) / len(values)

    print(f"\nKL divergence against f32 on FLORES-200 devtest ({languages} languages x {sentences} sentences); "
          "lower is better")
    print(f"{'type':8s} {'matrix':13s} {'all':>8s} {'eng_Latn':>9s} {'non-Latin':>10s} {'worst 20':>9s}")
    summary = {}
    for (quant, label), per_language in kl.items():
        non_latin = [v for code, v in per_language.items() if not code.endswith("_Latn")]
        worst = sorted(per_language.values(), reverse=True)[:20]
        row = {"all": mean(per_language.values()), "eng_Latn": per_language.get("eng_Latn", float("nan")),
               "non_latin": mean(non_latin) if non_latin else float("nan"), "worst_20": mean(worst)}
        summary[f"{quant}/{label}"] = {**row, "per_language": per_language}
        print(f"{quant:8s} {label:13s} {row['all']:8.4f} {row['eng_Latn']:9.4f} {row['non_latin']:10.4f} {row['worst_20']:9.4f}")
    for quant in ("q4_0", "iq4_nl"):
        multi, english = kl[(quant, "multilingual")], kl[(quant, "english")]
        better = sum(multi[c] < english[c] for c in multi)
        print(f"{quant}: the multilingual matrix beats the English-only one in {better} of {len(multi)} languages")
    return {"calibration_tokens": tokens, "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=("size", "imatrix"))
    parser.add_argument("--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "bayling-convert-bench")
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--ffn", type=int, default=5632)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--flores", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--checkpoint", type=Path, default=None, help="SmolLM2 HF checkpoint (default: build one)")
    parser.add_argument("--languages", type=int, default=0, help="First N FLORES languages (default: all 204)")
    parser.add_argument("--sentences", type=int, default=1, help="devtest sentences per language")
    parser.add_argument("--calibration-per-language", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="Also write the figures here")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    from bayling_local.bench.hardware import detect_hardware

    print(f"hardware: {detect_hardware().describe()}")
    figures = run_size(args) if args.part == "size" else run_imatrix(args)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
