"""Top-1 agreement and KL divergence of our ONNX int8/int4 exports against the fp32 export, per language, on
whatever x86 CPU class runs it: run it natively, then under `QEMU_CPU=Haswell qemu-x86_64` to see what an
AVX2-only CPU (no AVX-512, no VNNI, no AMX) computes.

    .venv/bin/python benchmarks/onnx_avx2_check.py prepare CHECKPOINT [--work DIR]
    .venv/bin/python benchmarks/onnx_avx2_check.py measure [--work DIR] [--threads 2]
    QEMU_CPU=Haswell qemu-x86_64 .venv/bin/python benchmarks/onnx_avx2_check.py measure [--work DIR] [--threads 2]

`prepare` (natively) exports fp32, int8 and int4 with `bayling_local.convert.to_onnx`, builds the int8 that
bayling-local wrote before (ONNX Runtime dynamic quantization, U8S8 per channel; `down_proj` weight-only
8-bit) as `int8-dynamic` for comparison, tokenizes a few sentences per language and saves the fp32
export's logits as the reference. `measure` loads each quantized export with plain onnxruntime (no torch,
no transformers: cheap under emulation), runs each sentence in one forward and prints top-1 / KL per
language. qemu user mode makes CPUID report the emulated CPU, so MLAS picks the kernels it would on a
Haswell-class AVX2 machine; timings under qemu mean nothing (20-50x slower), only the numbers do.
Where the CPU has CPUID faulting (`cpuid_fault` in /proc/cpuinfo), `LD_PRELOAD` of
tests/support/cpuid_avx2.c built as a shared library does the same at native speed (README, Development;
`tests/test_onnx_export.py` runs the int8/int4 checks that way in CI).

Figures (SmolLM2-135M-Instruct, onnxruntime 1.32.0, 2 sentences per language, 2 threads; top-1 / KL in nats):

    native: AMD EPYC [AVX2 FMA F16C AVX-VNNI AVX-512F AVX-512BW AVX-512VNNI AVX-512BF16; no AMX]
    int8-dynamic  en 0.80 / 0.101  de 0.65 / 0.142  fr 0.71 / 0.141  zh 0.79 / 0.119
    int8          en 0.97 / 0.007  de 0.92 / 0.014  fr 0.95 / 0.013  zh 0.96 / 0.009
    int4          en 0.57 / 0.557  de 0.40 / 0.892  fr 0.38 / 0.731  zh 0.51 / 0.562
    QEMU_CPU=Haswell qemu-x86_64 (qemu 7.2; CPUID: AVX2 FMA F16C, no AVX-512, no VNNI)
    int8-dynamic  en 0.30 / 3.890  de 0.17 / 4.522  fr 0.15 / 4.889  zh 0.39 / 1.321
    int8          en 1.00 / 0.007  de 0.92 / 0.013  fr 0.89 / 0.012  zh 0.96 / 0.010
    int4          en 0.57 / 0.556  de 0.37 / 0.904  fr 0.36 / 0.739  zh 0.51 / 0.565

The old int8 fails under emulation as it did on a real AVX2-only EPYC (en 0.27 / 5.7), so the emulation
reaches the AVX2 kernels; int8 (weight-only 8-bit MatMulNBits) and int4 give the native figures there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
from pathlib import Path

import numpy as np

TEXTS = {
    "en": ["The library opens at nine and closes when the last reader leaves.",
           "Heavy rain is expected tomorrow, so the football match has been moved to Sunday."],
    "de": ["Die Bibliothek öffnet um neun und schließt, wenn der letzte Leser geht.",
           "Für morgen ist starker Regen angesagt, deshalb wurde das Spiel auf Sonntag verlegt."],
    "fr": ["La bibliothèque ouvre à neuf heures et ferme quand le dernier lecteur part.",
           "De fortes pluies sont attendues demain, le match a donc été déplacé à dimanche."],
    "zh": ["图书馆九点开门，最后一位读者离开时关门。", "明天预计有大雨，所以足球比赛改到了星期天。"],
}
EXPORTS = ("int8-dynamic", "int8", "int4")
REFERENCE_FILE = "reference.npz"


# --- prepare (native) --------------------------------------------------------------------------------


def prepare(checkpoint: Path, work: Path) -> None:
    from transformers import AutoTokenizer

    from bayling_local.convert import to_onnx

    work.mkdir(parents=True, exist_ok=True)
    for quant in ("fp32", "int8", "int4"):
        to_onnx(checkpoint, work / quant, quant)
    legacy_dynamic_int8(work / "fp32", work / "int8-dynamic")
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    import onnxruntime

    session = onnxruntime.InferenceSession(str(work / "fp32" / "model.onnx"), providers=["CPUExecutionProvider"])
    arrays = {}
    for language, lines in TEXTS.items():
        for i, line in enumerate(lines):
            ids = tokenizer.encode(line, add_special_tokens=True)
            arrays[f"{language}/{i}/ids"] = np.array(ids, dtype=np.int64)
            arrays[f"{language}/{i}/logits"] = forward_logits(session, ids)
    np.savez_compressed(work / REFERENCE_FILE, **arrays)
    print(f"prepared {', '.join(EXPORTS)} and the fp32 reference in {work}")


def legacy_dynamic_int8(fp32: Path, out: Path) -> None:
    """The int8 export as bayling-local wrote it before weight-only 8-bit: `quantize_dynamic` (u8
    activations, s8 weights per channel) on every MatMul but `down_proj` (weight-only 8-bit)."""
    import onnx
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from bayling_local.convert.onnx import quantize_embedding, quantize_weight_only, save_model

    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(fp32, out)
    model = out / "model.onnx"
    excluded = [n.name for n in onnx.load(model, load_external_data=False).graph.node
                if n.op_type == "MatMul" and "down_proj" in n.name]
    quantize_dynamic(model, model, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"], per_channel=True,
                     nodes_to_exclude=excluded,
                     extra_options={"MatMulConstBOnly": True, "DefaultTensorType": TensorProto.FLOAT})
    proto = quantize_weight_only(onnx.load(model), bits=8, select=lambda name: "down_proj" in name)
    save_model(quantize_embedding(proto), model)
    config = json.loads((out / "bayling_onnx.json").read_text("utf-8"))
    config["precision"] = "int8"
    (out / "bayling_onnx.json").write_text(json.dumps(config, indent=2), "utf-8")


# --- measure (native or emulated) ---------------------------------------------------------------------


def forward_logits(session, ids: list[int]) -> np.ndarray:
    """Logits [len(ids), vocab] of one sequence from an empty cache, in one run (no I/O binding)."""
    feeds = {"input_ids": np.array([ids], dtype=np.int64), "attention_mask": np.ones((1, len(ids)), np.int64),
             "num_logits_to_keep": np.array([0], dtype=np.int64)}
    for graph_input in session.get_inputs():
        if graph_input.name.startswith("past_key_values."):
            _, kv_heads, _, head_dim = graph_input.shape
            feeds[graph_input.name] = np.zeros((1, kv_heads, 0, head_dim), np.float32)
    return session.run(["logits"], feeds)[0][0]


def top1_and_kl(reference: np.ndarray, candidate: np.ndarray) -> tuple[int, float]:
    """(positions whose arg-max agrees, summed KL(reference || candidate) in nats)."""
    def log_softmax(x):
        x = x.astype(np.float64)
        x = x - x.max(-1, keepdims=True)
        return x - np.log(np.exp(x).sum(-1, keepdims=True))

    p, q = log_softmax(reference), log_softmax(candidate)
    kl = float((np.exp(p) * (p - q)).sum())
    return int((reference.argmax(-1) == candidate.argmax(-1)).sum()), kl


def measure(work: Path, threads: int, exports: list[str]) -> dict:
    import onnxruntime

    reference = np.load(work / REFERENCE_FILE)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    results = {}
    for name in exports:
        session = onnxruntime.InferenceSession(str(work / name / "model.onnx"), options,
                                               providers=["CPUExecutionProvider"])
        per_language = {}
        for language, lines in TEXTS.items():
            agree, kl, positions = 0, 0.0, 0
            for i in range(len(lines)):
                ids = reference[f"{language}/{i}/ids"].tolist()
                a, k = top1_and_kl(reference[f"{language}/{i}/logits"], forward_logits(session, ids))
                agree, kl, positions = agree + a, kl + k, positions + len(ids)
            per_language[language] = (agree / positions, kl / positions)
        results[name] = per_language
        print(f"{name:<13} " + "  ".join(f"{lang} {t:.2f} / {k:.3f}" for lang, (t, k) in per_language.items()),
              flush=True)
    return results


def hardware_line() -> str:
    """The hardware line; under qemu user mode /proc/cpuinfo is the host's while CPUID is the emulated CPU's."""
    from bayling_local.bench.hardware import detect_hardware

    line = detect_hardware().describe()
    emulated = os.environ.get("QEMU_CPU")  # qemu-x86_64 reads -cpu from it, and the guest sees it
    return line + (f" [emulated: qemu-x86_64 -cpu {emulated}; CPUID is the emulated CPU's]" if emulated else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("prepare", "measure"))
    parser.add_argument("checkpoint", type=Path, nargs="?", help="Hugging Face Llama checkpoint folder (prepare)")
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "bayling-local-bench" / "onnx_avx2_check")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--exports", default=",".join(EXPORTS), help=f"which to measure (default {','.join(EXPORTS)})")
    args = parser.parse_args()
    if args.step == "prepare":
        if args.checkpoint is None:
            parser.error("prepare needs CHECKPOINT")
        prepare(args.checkpoint, args.work)
        return
    if not (args.work / REFERENCE_FILE).is_file():
        sys.exit(f"error: no {REFERENCE_FILE} in {args.work}; run `prepare CHECKPOINT` natively first")
    import onnxruntime

    print(hardware_line())
    print(f"onnxruntime {onnxruntime.__version__}, {platform.python_version()}, intra-op threads {args.threads}; "
          "top-1 agreement / KL (nats) against the fp32 export, per language")
    measure(args.work, args.threads, args.exports.split(","))


if __name__ == "__main__":
    main()
