"""Fine-tune the bundled SmolLM2-135M-Instruct (dequantized to a HF checkpoint) for a few steps on CPU
under DeepSpeed, and print training tokens/s and peak memory.

    python benchmarks/train_cpu.py [--steps 6] [--max-length 256] [--micro-batch 2] [--deepspeed zero2]

The mix is built from FLORES-200 `dev` (../shared/data, or --data) for a few languages, or from the
test fixtures when that archive is absent. The first run dequantizes the GGUF into --workdir (cached).
A benchmark, not a test: it is slow on small machines and stays out of CI.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "training"
DEFAULT_DATA = Path(os.environ.get("BAYLING_SHARED_DATA") or REPO.parent / "shared" / "data")
FLORES = "flores200_dev_devtest_204langs.tar.xz"
LANGUAGES = ["fra_Latn", "swh_Latn", "yor_Latn", "hin_Deva", "arb_Arab", "rus_Cyrl"]


def main() -> int:
    args = _arguments()
    workdir = Path(args.workdir).expanduser()
    checkpoint = dequantized_smollm2(workdir / "smollm2-135m-hf")
    recipe_path = write_recipe(workdir, checkpoint, args)
    _run([sys.executable, "-m", "bayling_local", "train", "data", "build", str(recipe_path)])
    started = time.perf_counter()
    _run([sys.executable, "-m", "bayling_local.training.sft", str(recipe_path)])
    wall = time.perf_counter() - started
    peak_rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
    report(workdir / "run", args, wall, peak_rss_mb)
    return 0


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--micro-batch", type=int, default=2)
    parser.add_argument("--deepspeed", default="zero2", help="zero2, zero3, or none")
    parser.add_argument("--fp32", action="store_true", help="train in float32 instead of bfloat16")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="folder holding the FLORES-200 archive")
    parser.add_argument("--workdir", default="~/.cache/bayling-local/bench/train-cpu")
    return parser.parse_args()


def dequantized_smollm2(target: Path) -> Path:
    """The bundled Q4_1 GGUF as a float32 HF checkpoint (transformers dequantizes it), made once."""
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from bayling_local.catalog import bundled_model_path

    gguf = bundled_model_path()
    print(f"dequantizing {gguf.name} into {target} (once)", file=sys.stderr)
    dequantized = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    settings = dequantized.config.to_dict()
    settings.pop("quantization_config", None)  # the weights are plain float32 now; transformers refuses
    model_type = settings.pop("model_type")  # to save a model it still believes is GGUF-quantized
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **settings), dtype=torch.float32)
    model.load_state_dict(dequantized.state_dict())
    staging = target.with_name(target.name + ".tmp")
    model.save_pretrained(str(staging))
    tokenizer.save_pretrained(str(staging))
    os.replace(staging, target)
    return target


def write_recipe(workdir: Path, checkpoint: Path, args: argparse.Namespace) -> Path:
    archive = Path(args.data) / FLORES
    if archive.is_file():
        parallel = {"name": "crosslingual", "kind": "parallel", "path": str(archive), "split": "dev",
                    "languages": LANGUAGES, "max_lines": 200}
    else:
        parallel = {"name": "crosslingual", "kind": "parallel", "path": str(FIXTURES / "parallel"), "split": "dev"}
    recipe = {
        "data": {
            "output": str(workdir / "mix.jsonl"),
            "seed": 1,
            "sources": [
                {"name": "english", "kind": "instructions", "path": str(FIXTURES / "en_alpaca.jsonl"), "language": "en"},
                parallel,
            ],
            "mix": {"ratios": {"english": 0.2, "crosslingual": 0.8}, "total": 300},
        },
        "train": {
            "output_dir": str(workdir / "run"),
            "model": str(checkpoint),
            "chat_format": "chatml",
            "max_length": args.max_length,
            "deepspeed": None if args.deepspeed == "none" else args.deepspeed,
            "bf16": not args.fp32,
            "gradient_checkpointing": args.gradient_checkpointing,
            "learning_rate": 2e-5,
            "warmup_ratio": 0.0,
            "max_steps": args.steps,
            "micro_batch_size": args.micro_batch,
            "logging_steps": 1,
            "save_steps": 10_000,
            "tensorboard": False,
        },
    }
    _clear(workdir / "run")
    path = workdir / "recipe.yaml"
    workdir.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), "utf-8")
    return path


def _clear(folder: Path) -> None:
    import shutil

    if folder.exists():
        shutil.rmtree(folder)


def _run(command: list[str]) -> None:
    env = {**os.environ}
    env.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "torch_extensions"))
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{done.stderr[-3000:]}")


def report(run_dir: Path, args: argparse.Namespace, wall: float, peak_rss_mb: float) -> None:
    entries = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text("utf-8").splitlines()]
    summary = next(entry for entry in reversed(entries) if "train_runtime" in entry)
    losses = [entry["loss"] for entry in entries if "loss" in entry]
    from bayling_local.bench.hardware import detect_hardware

    figures = {
        "hardware": detect_hardware().describe(),
        "model": "SmolLM2-135M-Instruct (bundled Q4_1 GGUF, dequantized)",
        "deepspeed": args.deepspeed,
        "dtype": "float32" if args.fp32 else "bfloat16",
        "steps": args.steps,
        "sequence_tokens": args.max_length,
        "micro_batch": args.micro_batch,
        "threads": int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count()),
        "tokens_seen": summary.get("num_input_tokens_seen"),
        "train_runtime_s": round(summary["train_runtime"], 1),
        "train_tokens_per_s": round(summary["num_input_tokens_seen"] / summary["train_runtime"], 1),
        "process_wall_s": round(wall, 1),
        "peak_rss_mb": round(peak_rss_mb),
        "loss_first_last": [round(losses[0], 3), round(losses[-1], 3)],
    }
    width = max(map(len, figures))
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    sys.exit(main())
