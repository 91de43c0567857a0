"""GPU training throughput: a short full-parameter run of a ~1B-parameter Llama-shaped model with
random weights under DeepSpeed, through the same Trainer setup, DeepSpeed presets and packed-sequence
collator as `bayling-local train sft`. Prints tokens/s per GPU, MFU and peak GPU memory.

    bash benchmarks/train_throughput.sh            # on the GPU machine: installs carried wheels, runs this
    python -m torch.distributed.run --nproc_per_node N benchmarks/train_throughput.py [--deepspeed zero3]

Model FLOPs per token: 6 x (non-embedding parameters + output layer) + 12 x layers x hidden x sequence
(the attention scores), counted once for the forward and twice for the backward; gradient
checkpointing recomputes the forward but is not counted (MFU, not hardware utilisation).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Peak dense bf16 tensor-core throughput, TFLOP/s, by device name fragment.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 70.0, "L4": 121.0}


def _importable_from_checkout() -> None:
    """Run from a bare checkout (the GPU image does not pip-install this project)."""
    sys.path.insert(0, str(REPO))
    import bayling_local

    if str(REPO) not in bayling_local.__path__:
        bayling_local.__path__.append(str(REPO))  # bayling_local.training -> ./training


def main() -> int:
    args = _arguments()
    _importable_from_checkout()
    import torch
    from transformers import LlamaConfig

    from bayling_local.training import trainer as parts
    from bayling_local.training.config import TrainConfig
    from bayling_local.training.deepspeed import deepspeed_config

    parts.ensure_distributed_env()
    train = TrainConfig(
        output_dir=args.output_dir, init_config={}, tokenizer="-", chat_format="bayling-3",
        max_length=args.seq, deepspeed=args.deepspeed, torch_adam=not args.fused_adam, bf16=True,
        gradient_checkpointing=not args.no_checkpointing, learning_rate=1e-4, warmup_ratio=0.0,
        max_steps=args.steps, micro_batch_size=args.micro_batch, logging_steps=1, save_steps=10**9,
        tensorboard=False, attn_implementation=args.attn,
    )
    ds_config = deepspeed_config(args.deepspeed, torch_adam=not args.fused_adam)
    training_args = parts.training_arguments(train, Path(args.output_dir), ds_config, has_eval=False)
    import deepspeed

    deepspeed.init_distributed()
    config = LlamaConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
        max_position_embeddings=args.seq, tie_word_embeddings=True, use_cache=False,
    )
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation=args.attn)
    timer = _StepTimer()
    trainer = _trainer(model, training_args, _random_rows(args), timer)
    trainer.train()
    _report(args, config, timer, training_args.world_size)
    return 0


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Llama-3.2-1B's shape (1.24e9 parameters with tied embeddings).
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--intermediate", type=int, default=8192)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=128256)
    parser.add_argument("--seq", type=int, default=4096)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup-steps", type=int, default=3, help="steps left out of the timing")
    parser.add_argument("--deepspeed", default="zero2", help="zero2, zero3, zero2-offload, zero3-offload")
    parser.add_argument("--fused-adam", action="store_true",
                        help="DeepSpeed's fused Adam (JIT-compiled: needs nvcc) instead of torch's AdamW")
    parser.add_argument("--examples-per-row", type=int, default=1,
                        help="packed examples per row (>1: block-diagonal masks, slower SDPA kernels)")
    parser.add_argument("--no-checkpointing", action="store_true")
    parser.add_argument("--attn", default="sdpa")
    parser.add_argument("--output-dir", default="build/train-throughput")
    return parser.parse_args()


def _random_rows(args):
    """Rows of random tokens, all labelled; `--examples-per-row` packs that many examples per row."""
    import random

    from bayling_local.training.tokenization import PackedSequence, SftDataset

    rng = random.Random(0)
    example = args.seq // args.examples_per_row
    positions = [i % example for i in range(args.seq)]
    count = args.micro_batch * (args.steps + 2) * int(os.environ.get("WORLD_SIZE", "1"))
    rows = []
    for _ in range(count):
        ids = [rng.randrange(args.vocab) for _ in range(args.seq)]
        rows.append(PackedSequence(ids, list(ids), positions))
    return SftDataset(rows)


class _StepTimer:
    """Wall time of every optimizer step (CUDA-synchronised)."""

    def __init__(self):
        self.times: list[float] = []
        self._start = None

    def callback(self):
        from transformers import TrainerCallback

        timer = self

        class Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                _synchronize()
                timer._start = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                _synchronize()
                timer.times.append(time.perf_counter() - timer._start)

        return Callback()


def _synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _trainer(model, training_args, dataset, timer):
    from transformers import Trainer

    from bayling_local.training.tokenization import SftCollator

    return Trainer(model=model, args=training_args, train_dataset=dataset,
                   data_collator=SftCollator(pad_token_id=0), callbacks=[timer.callback()])


def _report(args, config, timer: _StepTimer, world_size: int) -> None:
    import torch

    if int(os.environ.get("RANK", "0")) != 0:
        return
    timed = timer.times[args.warmup_steps:] or timer.times
    step_seconds = sum(timed) / len(timed)
    tokens_per_gpu_step = args.micro_batch * args.seq
    tokens_per_s_gpu = tokens_per_gpu_step / step_seconds
    flops_per_token = _model_flops_per_token(config, args.seq // args.examples_per_row)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    peak = next((value for key, value in PEAK_BF16_TFLOPS.items() if key in device), None)
    mfu = tokens_per_s_gpu * flops_per_token / (peak * 1e12) if peak else None
    from bayling_local.bench.hardware import detect_hardware

    figures = {
        "hardware": detect_hardware().describe(),
        "device": device,
        "gpus": world_size,
        "parameters": _parameter_count(config),
        "deepspeed": args.deepspeed,
        "sequence": args.seq,
        "micro_batch": args.micro_batch,
        "examples_per_row": args.examples_per_row,
        "gradient_checkpointing": not args.no_checkpointing,
        "timed_steps": len(timed),
        "step_s": round(step_seconds, 3),
        "tokens_per_s_per_gpu": round(tokens_per_s_gpu),
        "mfu": round(mfu, 3) if mfu is not None else None,
        "peak_memory_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None,
        "peak_memory_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2) if torch.cuda.is_available() else None,
    }
    width = max(map(len, figures))
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")
    print(json.dumps(figures))


def _parameter_count(config) -> int:
    h, i, layers, v = config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.vocab_size
    kv = h * config.num_key_value_heads // config.num_attention_heads
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * i + 2 * h
    return layers * per_layer + v * h * (1 if config.tie_word_embeddings else 2) + h


def _model_flops_per_token(config, attended: int) -> float:
    """6 x matmul parameters (forward + backward) + 12 x layers x hidden x attended tokens."""
    h, layers, v = config.hidden_size, config.num_hidden_layers, config.vocab_size
    matmul_parameters = _parameter_count(config) - v * h * (1 if config.tie_word_embeddings else 2) + v * h
    return 6 * matmul_parameters + 12 * layers * h * attended


if __name__ == "__main__":
    sys.exit(main())
