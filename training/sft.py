"""Full-parameter instruction tuning under DeepSpeed: `python -m bayling_local.training.sft RECIPE.yaml`.

The module `deepspeed`, `torchrun` and `accelerate launch` start on every process (one node or many);
`bayling-local train sft` builds that command. A run tokenizes the mix with the model's chat format
(assistant-only labels, packing), trains with the HF Trainer (ZeRO-2/3, bf16, cosine with warm-up,
eval loss, checkpoints every N steps, `--resume`), and writes <output_dir>/final: consolidated
safetensors, tokenizer and chat template, ready for `bayling-local convert`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bayling_local.errors import BaylingError, UsageError
from bayling_local.training.config import Recipe, load_recipe
from bayling_local.training.packing import attention_of, check_packed_attention


def run_sft(recipe: Recipe, *, resume: bool = False, stop_after: int | None = None) -> Path | None:
    """Train as the recipe says; returns the final checkpoint folder (None when stopped early).

    `stop_after` ends the run after that step with a checkpoint, as a time-boxed job would; the
    schedule still spans the whole run, and `resume` continues it.
    """
    train = recipe.require_train()
    output_dir = recipe.resolve(train.output_dir)
    checkpoint = _check_output_dir(output_dir, resume)
    ds_config = _deepspeed_config(recipe)
    check_packed_attention(train.attn_implementation, train.micro_batch_size, train.packing)

    from bayling_local.training import trainer as parts

    if ds_config is not None:
        parts.ensure_distributed_env()
    parts.warn_if_bf16_is_emulated(train)
    tokenizer = parts.load_tokenizer(recipe, train)
    chat_format = parts.chat_format_for(train, tokenizer)
    parts.attach_chat_template(tokenizer, chat_format)
    datasets = parts.build_datasets(recipe, train, tokenizer, chat_format)
    args = parts.training_arguments(train, output_dir, ds_config, datasets.eval is not None)
    if ds_config is not None:
        import deepspeed

        parts.skip_shared_memory_comm_build_on_cpu()
        deepspeed.init_distributed()  # before the model: ZeRO-3 partitions it as it is built
    model = parts.build_model(recipe, train, tokenizer, _model_dtype(train, ds_config))
    check_packed_attention(attention_of(model), train.micro_batch_size, train.packing)  # the model's default
    trainer = _trainer(parts, model, args, datasets, tokenizer, output_dir)
    if stop_after is not None:
        trainer.add_callback(parts.StopAfterStep(stop_after))
    if trainer.is_world_process_zero():
        _announce(datasets, output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        parts.save_recipe(recipe, output_dir / "recipe.yaml")
    trainer.train(resume_from_checkpoint=checkpoint)
    if trainer.state.global_step < trainer.state.max_steps:
        if trainer.is_world_process_zero():
            print(f"stopped after step {trainer.state.global_step}; continue with --resume", file=sys.stderr)
        return None
    final = output_dir / parts.FINAL_DIR
    parts.save_final(trainer, tokenizer, recipe, chat_format, final)
    return final


def _check_output_dir(output_dir: Path, resume: bool) -> str | None:
    checkpoints = sorted(output_dir.glob("checkpoint-*"), key=_step_of) if output_dir.is_dir() else []
    if resume and not checkpoints:
        raise UsageError(f"no checkpoint in {output_dir} to resume from; start without --resume")
    if not resume and checkpoints:
        raise UsageError(
            f"{output_dir} already holds checkpoints ({checkpoints[-1].name}); pass --resume to continue, "
            "or set another train.output_dir"
        )
    return str(checkpoints[-1]) if resume else None


def _step_of(path: Path) -> int:
    suffix = path.name.rpartition("-")[2]
    return int(suffix) if suffix.isdigit() else -1


def _deepspeed_config(recipe: Recipe) -> dict | None:
    from bayling_local.training.deepspeed import deepspeed_config

    train = recipe.require_train()
    if not train.deepspeed or train.deepspeed == "none":
        return None
    return deepspeed_config(train.deepspeed, torch_adam=train.torch_adam, base_dir=recipe.base_dir)


def _model_dtype(train, ds_config):
    import torch

    # DeepSpeed keeps fp32 master weights itself; without it, autocast wants fp32 parameters.
    return torch.bfloat16 if train.bf16 and ds_config is not None else torch.float32


def _trainer(parts, model, args, datasets, tokenizer, output_dir: Path):
    from transformers import Trainer

    from bayling_local.training.tokenization import SftCollator

    return Trainer(
        model=model,
        args=args,
        train_dataset=datasets.train,
        eval_dataset=datasets.eval,
        data_collator=SftCollator(parts.pad_token_id(tokenizer)),
        processing_class=tokenizer,  # saved into every checkpoint-N, with the chat template set on it
        callbacks=[parts.JsonlLogCallback(output_dir / parts.LOG_FILE)],
    )


def _announce(datasets, output_dir: Path) -> None:
    dropped = f", {datasets.dropped} dropped (nothing left to learn after the cut)" if datasets.dropped else ""
    evals = f"; eval: {len(datasets.eval)} sequences" if datasets.eval is not None else ""
    print(
        f"training on {datasets.examples} examples in {len(datasets.train)} sequences "
        f"({datasets.train.tokens()} tokens){dropped}{evals}; output: {output_dir}",
        file=sys.stderr,
    )


def main(argv: list[str] | None = None) -> int:
    """Entry for launchers; errors become one line on stderr (exit 2 for usage, 1 otherwise)."""
    parser = argparse.ArgumentParser(prog="python -m bayling_local.training.sft", description=__doc__.splitlines()[0])
    parser.add_argument("recipe", help="Recipe YAML with a train: section.")
    parser.add_argument("--resume", action="store_true", help="Continue from the last checkpoint.")
    parser.add_argument("--stop-after", type=int, default=None, metavar="STEP",
                        help="Stop after STEP with a checkpoint (a time-boxed job); --resume continues.")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        final = run_sft(load_recipe(args.recipe), resume=args.resume, stop_after=args.stop_after)
    except BaylingError as error:
        print(f"bayling-local: error: {_first_line(str(error))}", file=sys.stderr)
        return error.exit_code
    if final is not None:
        print(f"final model: {final}", file=sys.stderr)
    return 0


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "failed"


if __name__ == "__main__":
    sys.exit(main())
