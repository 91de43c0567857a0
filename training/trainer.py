"""The pieces of an SFT run on the HF Trainer: tokenizer, datasets, model, arguments, final save.

`bayling_local.training.sft` puts them together. Everything here imports torch/transformers, so it is
only imported once a run starts.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback, TrainingArguments

from bayling_local.errors import UsageError
from bayling_local.prompts import ChatFormat, get_chat_format
from bayling_local.training.chat_templates import CHAT_TEMPLATES
from bayling_local.training.config import Recipe, TrainConfig, save_recipe
from bayling_local.training.data.build import MixPaths
from bayling_local.training.data.records import DataError
from bayling_local.training.token_cache import CacheSpec, TokenCache, build_or_open

LOG_FILE = "train_log.jsonl"
FINAL_DIR = "final"


# --- process environment -------------------------------------------------------------------------


def ensure_distributed_env() -> None:
    """Rank/master variables for a run without a launcher (else DeepSpeed looks for MPI)."""
    if "RANK" in os.environ or "OMPI_COMM_WORLD_RANK" in os.environ:
        return
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(_free_port()))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def skip_shared_memory_comm_build_on_cpu() -> None:
    """On the CPU accelerator, let DeepSpeed all-reduce through gloo instead of JIT-compiling its
    shared-memory comm op.

    DeepSpeed's `TorchBackend` (deepspeed/comm/torch.py, `build_shm_op`) compiles `deepspeed_shm_comm`
    with ninja on every start whose $TORCH_EXTENSIONS_DIR lacks it: 2-6 minutes of a tiny CPU run on a
    fresh 2-core machine, for an op that only speeds up all-reduce between ranks on one node. Its
    bf16/fp16 kernels also need AVX-512BW (see the comment there); AVX2-only CPUs are the common case for
    CPU runs. GPU runs use NCCL and never build it. `build_shm_op` reads `deepspeed.ops.__compatible_ops__`
    (a dict cached on first access, documented there as the place whose edits persist), so marking the op
    incompatible is the switch.
    """
    from deepspeed.accelerator import get_accelerator

    if get_accelerator().device_name() != "cpu":
        return
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def warn_if_bf16_is_emulated(train: TrainConfig) -> None:
    """bf16 on a CPU without native bf16 (AVX-512 BF16 or AMX) runs through emulated kernels, several
    times slower than fp32; say so once, since the run still works."""
    from bayling_local.backends.device import cpu_instruction_sets

    if not train.bf16 or torch.cuda.is_available() or not is_main_process():
        return
    native = {"AVX-512BF16", "AMX-BF16", "NEON"} & set(cpu_instruction_sets())
    if not native:
        print(
            "note: train.bf16 on this CPU (no AVX-512 BF16 or AMX) is emulated and several times slower than "
            "fp32; set train.bf16: false for CPU runs",
            file=sys.stderr,
        )


def is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


# --- tokenizer and chat format ----------------------------------------------------------------------


def load_tokenizer(recipe: Recipe, train: TrainConfig):
    source = train.tokenizer or train.model
    path = recipe.resolve(source)
    location = str(path) if path.exists() else source  # a hub id in the local cache
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot load a tokenizer from {source}: {' '.join(str(error).split())[:200]}") from None
    if not getattr(tokenizer, "is_fast", False):
        raise UsageError(f"the tokenizer at {source} is not a fast tokenizer (no tokenizer.json); assistant labels need offsets")
    return tokenizer


def chat_format_for(train: TrainConfig, tokenizer) -> ChatFormat:
    return get_chat_format(
        train.chat_format, template=tokenizer.chat_template,
        bos_token=tokenizer.bos_token or "", eos_token=tokenizer.eos_token or "",
    )


def attach_chat_template(tokenizer, chat_format: ChatFormat) -> None:
    """Set the format's template on the tokenizer, so every save (checkpoint-N, final) carries it."""
    if chat_format.id in CHAT_TEMPLATES:
        tokenizer.chat_template = CHAT_TEMPLATES[chat_format.id]


def pad_token_id(tokenizer) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return candidate
    return 0


# --- datasets -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Datasets:
    train: TokenCache
    eval: TokenCache | None
    examples: int
    dropped: int


def data_paths(recipe: Recipe, train: TrainConfig) -> tuple[list[Path], list[Path]]:
    """Training and eval JSONL files: the recipe's own, else the data builder's output."""
    if train.data:
        return [recipe.resolve(p) for p in train.data], [recipe.resolve(p) for p in train.eval_data]
    if recipe.data is None:
        raise UsageError(f"{recipe.path}: set train.data, or add a `data:` section and build it first")
    mix = MixPaths.for_output(recipe.resolve(recipe.data.output))
    if not mix.train.is_file():
        raise DataError(f"no training data at {mix.train}; run `bayling-local train data build {recipe.path}` first")
    evals = [recipe.resolve(p) for p in train.eval_data] or ([mix.eval] if _has_lines(mix.eval) else [])
    return [mix.train], evals


def _has_lines(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


def build_datasets(recipe: Recipe, train: TrainConfig, tokenizer, chat_format: ChatFormat) -> Datasets:
    """Training and eval rows, tokenized once into the on-disk cache and mapped by every process."""
    train_paths, eval_paths = data_paths(recipe, train)
    train_set = _cached(recipe, train, train_paths, tokenizer, chat_format)
    if len(train_set) == 0:
        raise DataError(f"no usable training examples in {', '.join(map(str, train_paths))}")
    eval_set = _cached(recipe, train, eval_paths, tokenizer, chat_format) if eval_paths else None
    return Datasets(train_set, eval_set, train_set.examples, train_set.dropped)


def token_cache_dir(recipe: Recipe, train: TrainConfig) -> Path:
    return recipe.resolve(train.token_cache) if train.token_cache else recipe.resolve(train.output_dir) / "tokenized"


def _cached(recipe: Recipe, train: TrainConfig, paths: list[Path], tokenizer, chat_format: ChatFormat) -> TokenCache:
    spec = CacheSpec(tuple(paths), train.max_length, train.packing)
    return build_or_open(token_cache_dir(recipe, train), spec, tokenizer, chat_format, announce=_note)


def _note(text: str) -> None:
    print(text, file=sys.stderr)


# --- model ----------------------------------------------------------------------------------------


def build_model(recipe: Recipe, train: TrainConfig, tokenizer, dtype: torch.dtype):
    """The model to fine-tune, or a random one from `init_config` (seeded)."""
    extra = {"attn_implementation": train.attn_implementation} if train.attn_implementation else {}
    torch.manual_seed(train.seed)
    if train.model is not None:
        path = recipe.resolve(train.model)
        model = AutoModelForCausalLM.from_pretrained(str(path) if path.exists() else train.model, dtype=dtype, **extra)
    else:
        model = AutoModelForCausalLM.from_config(_random_config(train, tokenizer), dtype=dtype, **extra)
    model.config.use_cache = False  # a cache would disable the packed-sequence masks while training
    return model


def _random_config(train: TrainConfig, tokenizer):
    from transformers import LlamaConfig

    settings = {
        "vocab_size": len(tokenizer),
        "max_position_embeddings": max(train.max_length, 128),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": pad_token_id(tokenizer),
        "tie_word_embeddings": False,
        **(train.init_config or {}),
    }
    try:
        return LlamaConfig(**settings)
    except (TypeError, ValueError) as error:
        raise UsageError(f"train.init_config is not a valid LlamaConfig: {error}") from None


# --- training arguments ---------------------------------------------------------------------------


def training_arguments(train: TrainConfig, output_dir: Path, ds_config: dict | None, has_eval: bool) -> TrainingArguments:
    """TrainingArguments for the recipe; creating them with DeepSpeed readies ZeRO-3 model init."""
    on_cpu = not torch.cuda.is_available()
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=train.micro_batch_size,
        per_device_eval_batch_size=train.micro_batch_size,
        gradient_accumulation_steps=train.gradient_accumulation,
        learning_rate=train.learning_rate,
        weight_decay=train.weight_decay,
        lr_scheduler_type=train.lr_scheduler,
        **warmup_arguments(train.warmup_ratio),
        num_train_epochs=train.epochs,
        max_steps=train.max_steps or -1,
        max_grad_norm=train.max_grad_norm,
        bf16=train.bf16,
        use_cpu=on_cpu,  # bf16 on CPU needs it
        gradient_checkpointing=train.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if train.gradient_checkpointing else None,
        logging_steps=train.logging_steps,
        logging_first_step=True,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=(train.eval_steps or train.save_steps) if has_eval else None,
        save_strategy="steps",
        save_steps=train.save_steps,
        save_total_limit=train.save_total_limit,
        seed=train.seed,
        data_seed=train.seed,
        deepspeed=ds_config,
        report_to=report_targets(train),
        remove_unused_columns=False,
        dataloader_num_workers=train.dataloader_workers,
        dataloader_pin_memory=not on_cpu,
        disable_tqdm=not sys.stderr.isatty(),
        include_num_input_tokens_seen="all",  # logs tokens seen and train_tokens_per_second
    )


def warmup_arguments(ratio: float) -> dict:
    """The warm-up as a share of the total steps: `warmup_ratio` where TrainingArguments still has it
    (transformers 4), else `warmup_steps`, which transformers 5 reads as a ratio below 1 (the recipe
    check keeps it below 1, so it is never taken for a step count)."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    return {"warmup_ratio": ratio} if "warmup_ratio" in names else {"warmup_steps": ratio}


def report_targets(train: TrainConfig) -> list[str]:
    if not train.tensorboard:
        return []
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None and importlib.util.find_spec("tensorboardX") is None:
        if is_main_process():
            print("note: tensorboard is not installed; logging to train_log.jsonl only "
                  "(pip install tensorboard for TensorBoard logs)", file=sys.stderr)
        return []
    return ["tensorboard"]


class JsonlLogCallback(TrainerCallback):
    """Appends every log entry (loss, learning rate, eval loss) with its step to train_log.jsonl."""

    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            with self.path.open("a", encoding="utf-8") as log:
                log.write(json.dumps({"step": state.global_step, **logs}) + "\n")


class StopAfterStep(TrainerCallback):
    """Ends training after `step` with a checkpoint, like a job whose time ran out."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_save = True
            control.should_training_stop = True
        return control


# --- the final model ------------------------------------------------------------------------------


def save_final(trainer, tokenizer, recipe: Recipe, chat_format: ChatFormat, target: Path) -> None:
    """The consolidated checkpoint (16-bit gather under ZeRO-3), tokenizer, chat template, recipe."""
    model = trainer.model
    model.config.use_cache = True
    stop_ids = _stop_token_ids(tokenizer, chat_format)
    if stop_ids:
        model.generation_config.eos_token_id = stop_ids
        model.generation_config.pad_token_id = pad_token_id(tokenizer)
    trainer.save_model(str(target))  # every rank takes part in the ZeRO-3 gather
    if trainer.is_world_process_zero():
        attach_chat_template(tokenizer, chat_format)
        tokenizer.save_pretrained(str(target))
        save_recipe(recipe, target / "bayling_recipe.yaml")
        (target / "training_args.bin").unlink(missing_ok=True)  # pickled; converters need not read it


def _stop_token_ids(tokenizer, chat_format: ChatFormat) -> list[int]:
    vocabulary = tokenizer.get_vocab()
    ids = [vocabulary[token] for token in chat_format.stop_tokens if token in vocabulary]
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return sorted(set(ids))
