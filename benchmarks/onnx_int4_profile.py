"""Where our ONNX int4 decode stands against llama.cpp Q4_0, one knob at a time (issue 11, item 4): MatMulNBits
`accuracy_level` 4 vs 1, block size 32 vs 128, an 8-bit vs a 4-bit output layer, and the thread count.

    .venv/bin/python benchmarks/onnx_int4_profile.py CHECKPOINT [--threads 1,2] [--tokens 128] [--repeats 5]
        [--variants shipped,acc1,bs128,out8,apart,4k,q4_0[,genai]] [--fidelity] [--work DIR] [--json PATH]

Variants, each built once from CHECKPOINT (a Hugging Face Llama folder) and cached in --work/<folder name>:
  int4            our export as shipped (convert/onnx.py): 4-bit MatMulNBits, block 32, accuracy_level 4
                  (int8 activations), symmetric blocks, 4-bit output layer, the embedding in its own 8-bit table
  int4 acc1       the same graph and weights with accuracy_level 1 (fp32 activations) on every MatMulNBits
  int4 bs128      exported with --block-size 128
  int4 out8       an 8-bit output layer (`convert --output-bits 8`; a tied embedding then reads its blocks)
  int4 gate-up apart  the shipped graph with each layer's packed gate+up MatMulNBits as two (same logits)
  int4 4k pages   the shipped export with its weights left in 4 KiB pages (huge_pages false)
  ort-genai int4  (only when asked for: `genai`) the ONNX Runtime GenAI builder's int4 through its C++ generator,
                  the peer a user would pick instead (onnxruntime-genai and onnx_ir installed)
  llama.cpp Q4_0  the baseline, at llama.cpp's defaults for this CPU (extra buffer types / weight repacking on)
Each thread count is its own pass: every artifact is loaded at that count. Within a pass, runs alternate (each
round runs every artifact once, the order rotated by the round) after one warm-up each; a ratio is the median
over rounds of (variant decode / Q4_0 decode in the same round), so that load from other processes, which
changes between rounds, cancels. Each artifact runs in its own worker process (onnx_vs_gguf.py's workers: one
runtime's state in a process slowed another's decode). Decode is (tokens - 1) / time after the first token,
greedy, through end-of-text, on the same 128 prompt token ids (onnx_vs_gguf.py's measuring code). The hardware line and
the load average before and after each pass are printed: on a shared machine, read the ratios, not the tok/s.
--fidelity adds KL divergence / top-1 agreement against the fp32 export (convert/verify.py's sentences).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import onnx_vs_gguf as shared  # the sibling benchmark: artifacts, runners and the measuring loop

from bayling_local.errors import BaylingError

BASELINE_LABEL = "llama.cpp Q4_0"
SHIPPED_LABEL = "int4"
GENAI_LABEL = "ort-genai int4"


@dataclass(frozen=True)
class Variant:
    key: str
    """Its name for --variants."""
    label: str
    knob: str
    """What differs from the shipped int4 export."""
    runtime: str
    """`onnx` or `gguf` (onnx_vs_gguf.Artifact's runtime)."""
    build: Callable[[Path, Path], Path]
    """(checkpoint, work folder) -> the artifact's path, built unless a complete one is cached."""
    load_options: tuple[tuple[str, object], ...] = ()
    """`LoadOptions` fields that differ from the defaults."""


def shipped_int4(checkpoint: Path, work: Path) -> Path:
    return shared.build_artifact(shared.Artifact(SHIPPED_LABEL, "onnx", "int4"), checkpoint, work)


def q4_0_gguf(checkpoint: Path, work: Path) -> Path:
    return shared.build_artifact(shared.Artifact(BASELINE_LABEL, "gguf", "q4_0"), checkpoint, work)


def block_128(checkpoint: Path, work: Path) -> Path:
    from bayling_local.backends.onnxrt import FORMAT_VERSION
    from bayling_local.convert import to_onnx

    path = work / f"onnx-v{FORMAT_VERSION}-int4-bs128"
    if not exported(path):
        progress(f"exporting int4 with block size 128 to {path}")
        to_onnx(checkpoint, path, "int4", block_size=128)
    return path


def accuracy_level_1(checkpoint: Path, work: Path) -> Path:
    """The shipped export's graph with accuracy_level 1 (an external weights file is hard-linked, never written)."""

    def rewrite(proto, config: dict) -> None:
        set_accuracy_level(proto, 1)
        config["accuracy_level"] = 1
        config["quantization"]["accuracy_level"] = 1

    return rewritten_shipped(checkpoint, work, "acc1", "MatMulNBits accuracy_level 1", rewrite, load_weights=False)


def separate_gate_up(checkpoint: Path, work: Path) -> Path:
    """The shipped export with each layer's packed gate+up MatMulNBits split back into two (as earlier exports
    and the GenAI builder's graph have them): the same weights and logits, one kernel more a layer."""
    return rewritten_shipped(checkpoint, work, "gate-up-apart", "gate and up as two MatMulNBits",
                             lambda proto, config: unpack_gate_up(proto), load_weights=True)


def rewritten_shipped(checkpoint: Path, work: Path, suffix: str, what: str, rewrite, load_weights: bool) -> Path:
    """The shipped export with its graph changed by `rewrite(proto, config)`; external weights (if any) are
    hard-linked, never written, unless `load_weights` (the rewrite changes initializers: saved inline)."""
    import onnx

    from bayling_local.backends.onnxrt import CONFIG_FILE

    source = shipped_int4(checkpoint, work)
    path = source.with_name(f"{source.name}-{suffix}")
    if exported(path):
        return path
    progress(f"writing {path}: the int4 graph with {what}")
    with staged(path) as staging:
        config = json.loads((source / CONFIG_FILE).read_text("utf-8"))
        for file in source.iterdir():  # the external weights (if any) linked, the rest copied
            if file.name != config["model_file"] and not (load_weights and file.name.endswith(".data")):
                (os.link if file.name.endswith(".data") else shutil.copy2)(file, staging / file.name)
        proto = onnx.load(source / config["model_file"], load_external_data=load_weights)
        rewrite(proto, config)
        onnx.save_model(proto, staging / config["model_file"])
        write_config(staging / CONFIG_FILE, config)
    return path


def unpack_gate_up(proto) -> None:
    """Each `MatMulNBits` whose output a `Split` cuts in two becomes two MatMulNBits, one per half of its
    rows (B is [N, blocks, bytes], scales [N * blocks]: a half is a contiguous slice)."""
    from onnx import helper, numpy_helper

    graph = proto.graph
    weights = {tensor.name: tensor for tensor in graph.initializer}
    producers = {node.output[0]: node for node in graph.node}
    nodes = []
    for node in graph.node:
        packed = producers.get(node.input[0]) if node.op_type == "Split" else None
        if packed is None or packed.op_type != "MatMulNBits":
            nodes.append(node)
            continue
        attributes = {a.name: helper.get_attribute_value(a) for a in packed.attribute}
        half = attributes["N"] // 2
        arrays = [numpy_helper.to_array(weights[name]) for name in packed.input[1:]]
        nodes.remove(packed)
        for index, output in enumerate(node.output):
            names = []
            for name, array in zip(packed.input[1:], arrays):
                rows = array.shape[0] // 2  # B: N rows; scales: N * blocks entries
                names.append(f"{name}_half{index}")
                graph.initializer.append(numpy_helper.from_array(array[index * rows:(index + 1) * rows], names[-1]))
            nodes.append(helper.make_node("MatMulNBits", [packed.input[0], *names], [output],
                                          name=f"{packed.name}_half{index}", domain="com.microsoft",
                                          **{**attributes, "N": half}))
        for name in [*packed.input[1:], node.input[1]]:  # the packed weights and the split sizes
            graph.initializer.remove(weights[name])
    del graph.node[:]
    graph.node.extend(nodes)


def set_accuracy_level(proto, level: int) -> None:
    for node in proto.graph.node:
        if node.op_type == "MatMulNBits":
            for attribute in node.attribute:
                if attribute.name == "accuracy_level":
                    attribute.i = level


def output_layer_8bit(checkpoint: Path, work: Path) -> Path:
    """int4 with an 8-bit output layer (`--output-bits 8`; a tied embedding then reads its blocks)."""
    from bayling_local.backends.onnxrt import FORMAT_VERSION
    from bayling_local.convert import to_onnx

    path = work / f"onnx-v{FORMAT_VERSION}-int4-out8"
    if not exported(path):
        progress(f"exporting int4 with an 8-bit output layer to {path}")
        to_onnx(checkpoint, path, "int4", output_bits=8)
    return path


def genai_builder_int4(checkpoint: Path, work: Path) -> Path:
    if not shared.genai_installed():
        raise BaylingError("--variants genai needs onnxruntime-genai and onnx_ir "
                           "(pip install onnxruntime-genai onnx_ir)")
    return shared.build_artifact(shared.Artifact(GENAI_LABEL, "genai", "int4"), checkpoint, work)


ALWAYS = ("shipped", "q4_0")
"""Measured in every run: the ratios are to Q4_0, and the shipped export is what the others differ from."""
VARIANTS = (
    Variant("shipped", SHIPPED_LABEL, "shipped: block 32, accuracy 4, 4-bit output", "onnx", shipped_int4),
    Variant("acc1", "int4 acc1", "accuracy_level 1 (fp32 activations)", "onnx", accuracy_level_1),
    Variant("bs128", "int4 bs128", "block size 128", "onnx", block_128),
    Variant("out8", "int4 out8", "8-bit output layer", "onnx", output_layer_8bit),
    Variant("apart", "int4 gate-up apart", "gate and up as two MatMulNBits", "onnx", separate_gate_up),
    Variant("4k", "int4 4k pages", "weights in 4 KiB pages (huge_pages false)", "onnx", shipped_int4,
            (("huge_pages", False),)),
    Variant("q4_0", BASELINE_LABEL, "baseline, llama.cpp defaults", "gguf", q4_0_gguf),
    Variant("genai", GENAI_LABEL, "the ORT GenAI builder's int4, its generator", "genai", genai_builder_int4),
)
DEFAULT_VARIANTS = ("shipped", "acc1", "bs128", "out8", "q4_0")
"""Without --variants: the knobs (`genai` is asked for by name: it needs onnxruntime-genai installed)."""


# --- small helpers --------------------------------------------------------------------------------------------


def exported(folder: Path) -> bool:
    """A folder written through `staged` (or by to_onnx, which also renames a finished folder into place)."""
    from bayling_local.backends.onnxrt import CONFIG_FILE

    return (folder / CONFIG_FILE).is_file()


class staged:
    """A `.partial` folder renamed to `target` when the block finishes; removed when it fails."""

    def __init__(self, target: Path):
        self.target, self.staging = target, target.with_name(target.name + ".partial")

    def __enter__(self) -> Path:
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir(parents=True)
        return self.staging

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            return
        shutil.rmtree(self.target, ignore_errors=True)
        self.staging.rename(self.target)


def write_config(path: Path, config: dict) -> None:
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False), "utf-8")


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


# --- measuring ------------------------------------------------------------------------------------------------


@dataclass
class Pass:
    """Every decode run of every variant at one thread count."""

    threads: int
    load_before: str
    load_after: str = ""
    decode_tps: dict[str, list[float]] = field(default_factory=dict)
    settings: dict[str, dict] = field(default_factory=dict)

    def ratio_to_baseline(self, label: str, baseline: str = BASELINE_LABEL) -> float:
        """Median over rounds of this variant's decode / the baseline's (Q4_0's) decode in the same round."""
        return statistics.median(v / b for v, b in zip(self.decode_tps[label], self.decode_tps[baseline]))

    def as_json(self) -> dict:
        return {
            "threads": self.threads, "load_average_before": self.load_before, "load_average_after": self.load_after,
            "settings": self.settings,
            "decode_tps_median": {k: statistics.median(v) for k, v in self.decode_tps.items()},
            "ratio_to_q4_0": {k: self.ratio_to_baseline(k) for k in self.decode_tps},
            **({"ratio_to_genai": {k: self.ratio_to_baseline(k, GENAI_LABEL) for k in self.decode_tps}}
               if GENAI_LABEL in self.decode_tps else {}),
            "decode_tps_runs": self.decode_tps,
        }


def measure_pass(variants: list[Variant], paths: dict[str, Path], threads: int, tokens: int, repeats: int) -> Pass:
    measured = Pass(threads, load_average())
    artifacts = [(shared.Artifact(v.label, v.runtime, "q4_0" if v.runtime == "gguf" else "int4", v.load_options),
                  paths[v.label]) for v in variants]
    with shared.artifact_workers(artifacts, threads) as workers:  # one process each, as onnx_vs_gguf.py measures
        for label, worker in workers.items():
            measured.settings[label] = worker.call("runtime_settings")
        ids = shared.reference_prompt_ids(workers[SHIPPED_LABEL]).main
        for worker in workers.values():
            worker.call("prefill_and_decode", ids, shared.WARMUP_TOKENS)
        labels = list(workers)
        measured.decode_tps = {label: [] for label in labels}
        for round_index in range(repeats):
            for label in shared.rotated(labels, round_index):
                measured.decode_tps[label].append(workers[label].call("prefill_and_decode", ids, tokens)[1])
    measured.load_after = load_average()
    return measured


def fidelity(variants: list[Variant], paths: dict[str, Path], checkpoint: Path, work: Path, threads: int) -> dict[str, dict]:
    """KL / top-1 of every variant against the fp32 export (onnx_vs_gguf.py's fidelity)."""
    rows = {
        v.label: shared.Row(shared.Artifact(v.label, v.runtime, "int4"), paths[v.label], shared.artifact_size(paths[v.label]))
        for v in variants
    }
    shared.fidelity(rows, shared.build_artifact(shared.BASELINE, checkpoint, work), threads)
    return {label: row.fidelity for label, row in rows.items()}


# --- reporting ------------------------------------------------------------------------------------------------


def print_pass(variants: list[Variant], measured: Pass, sizes: dict[str, int], quality: dict[str, dict] | None) -> None:
    print(f"\nthreads={measured.threads}; load average {measured.load_before} before, {measured.load_after} after")
    for label, settings in measured.settings.items():
        shown = {k: v for k, v in settings.items() if "accuracy" in k or "buffer" in k or "thread" in k
                 or k in ("flash_attn", "cpu_features", "huge_pages")}
        print(f"  settings {label}: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    genai = GENAI_LABEL if GENAI_LABEL in measured.decode_tps else None  # a second column of ratios
    width = max(len(v.label) for v in variants) + 2
    header = f"{'variant':<{width}}{'differs in':<46}{'MB':>7}{'decode tok/s':>14}{'x Q4_0':>8}"
    print(header + (f"{'x GenAI':>9}" if genai else "") + "  runs" + ("   KL      top-1" if quality else ""))
    for variant in variants:
        runs = measured.decode_tps[variant.label]
        line = (f"{variant.label:<{width}}{variant.knob:<46}{sizes[variant.label] / 1e6:>7.1f}"
                f"{statistics.median(runs):>14.1f}{measured.ratio_to_baseline(variant.label):>7.2f}x"
                + (f"{measured.ratio_to_baseline(variant.label, genai):>8.2f}x" if genai else "") + "  "
                + " ".join(f"{r:.0f}" for r in runs))
        if quality and quality.get(variant.label):
            line += f"   {quality[variant.label]['kl_divergence']:.4f}  {quality[variant.label]['top1_agreement']:.1%}"
        print(line, flush=True)


def run(args: argparse.Namespace) -> dict:
    from bayling_local.bench.hardware import detect_hardware

    work = args.work.expanduser() / args.checkpoint.name
    work.mkdir(parents=True, exist_ok=True)
    variants = [v for v in VARIANTS if v.key in args.variants or v.key in ALWAYS]
    paths = {v.label: v.build(args.checkpoint, work) for v in variants}
    sizes = {label: shared.artifact_size(path) for label, path in paths.items()}
    hardware = detect_hardware().describe()
    print(f"hardware: {hardware}")
    print(f"model: {args.checkpoint}; prompt {shared.PROMPT_TOKENS} tokens, decode {args.tokens} tokens, "
          f"{args.repeats} alternating rounds after a warm-up; {os.cpu_count()} CPUs")
    quality = fidelity(variants, paths, args.checkpoint, work, max(args.threads)) if args.fidelity else None
    passes = []
    for threads in args.threads:
        passes.append(measure_pass(variants, paths, threads, args.tokens, args.repeats))
        print_pass(variants, passes[-1], sizes, quality)
    return {"hardware": hardware, "checkpoint": str(args.checkpoint), "tokens": args.tokens, "repeats": args.repeats,
            "sizes": sizes, "fidelity": quality, "passes": [p.as_json() for p in passes]}


def thread_counts(spec: str) -> list[int]:
    counts = [int(part) for part in spec.split(",") if part.strip()]
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("--threads takes counts like 1,2")
    return counts


def variant_keys(spec: str) -> list[str]:
    keys = [part.strip() for part in spec.split(",") if part.strip()]
    unknown = [k for k in keys if k not in {v.key for v in VARIANTS}]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown variants {unknown}; choose from {[v.key for v in VARIANTS]}")
    return keys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="Hugging Face Llama checkpoint folder")
    parser.add_argument("--threads", type=thread_counts, default=[1, 2], help="thread counts, one pass each (1,2)")
    parser.add_argument("--tokens", type=int, default=128, help="tokens to generate per run")
    parser.add_argument("--repeats", type=int, default=5, help="alternating rounds per pass")
    parser.add_argument("--variants", type=variant_keys, default=list(DEFAULT_VARIANTS),
                        help=f"which to measure, comma-separated: {','.join(v.key for v in VARIANTS)} (default: "
                        f"{','.join(DEFAULT_VARIANTS)}; {' and '.join(ALWAYS)} always)")
    parser.add_argument("--fidelity", action="store_true", help="also KL / top-1 against the fp32 export")
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "bayling-local-bench" / "onnx_vs_gguf",
                        help="where artifacts are cached (shared with onnx_vs_gguf.py)")
    parser.add_argument("--json", type=Path, help="also write every run to this file")
    args = parser.parse_args()
    if args.tokens < 2 or args.repeats < 1:
        parser.error("--tokens must be at least 2 and --repeats at least 1")
    try:
        figures = run(args)
    except BaylingError as error:
        sys.exit(f"error: {error}")
    except KeyboardInterrupt:
        sys.exit("interrupted (every worker process ended)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", "utf-8")


if __name__ == "__main__":
    main()
