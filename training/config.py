"""Training recipes: one YAML file with a `data:` section (the mix) and a `train:` section (SFT).

Every key is a typed dataclass field with help text; unknown keys and wrong types are refused with
the key named (`bayling-local train keys` prints them all). Relative paths are relative to the
recipe file; `~` and `$VARIABLES` are expanded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bayling_local.training.typed import RecipeError, from_mapping, reference, to_mapping

PARALLEL_TASKS = ("translation", "interactive", "pivot", "choice")
DEFAULT_TASK_WEIGHTS = {"translation": 0.6, "interactive": 0.2, "pivot": 0.1, "choice": 0.1}


def _doc(text: str) -> dict[str, str]:
    """Field metadata holding the help text (`bayling-local train keys` prints it)."""
    return {"help": text}


@dataclass(kw_only=True)
class SourceConfig:
    """One input of the mix: an instruction set or a parallel corpus."""

    name: str = field(metadata=_doc("Name of the source, used in stats and error messages."))
    kind: Literal["instructions", "parallel"] = field(
        metadata=_doc("'instructions' (Alpaca, messages, ShareGPT JSONL) or 'parallel'.")
    )
    path: str | None = field(default=None, metadata=_doc("A file, folder or archive (use `paths` for several files)."))
    paths: list[str] = field(
        default_factory=list,
        metadata=_doc("Several instruction files, or the two aligned text files of a parallel corpus."),
    )
    format: Literal["auto", "alpaca", "messages", "sharegpt", "flores", "tsv", "aligned"] = field(
        default="auto",
        metadata=_doc(
            "Input format; 'auto' tells Alpaca/messages/ShareGPT per line and FLORES/TSV/aligned by the path."
        ),
    )
    group: str | None = field(
        default=None, metadata=_doc("Mix group whose ratio this source shares (default: the source name).")
    )
    language: str | None = field(
        default=None,
        metadata=_doc("Language of an instruction set (code or name); a line's own 'language' field wins."),
    )
    languages: list[str] = field(
        default_factory=list,
        metadata=_doc(
            "Parallel: languages to use (default: every language in the corpus); TSV/aligned: the two "
            "languages of the columns/files, in order."
        ),
    )
    split: str | None = field(
        default=None, metadata=_doc("FLORES-style corpora: the split to read ('dev', 'devtest').")
    )
    task: str = field(default="instruction", metadata=_doc("Instruction sets: the task label in the stats."))
    tasks: dict[str, float] = field(
        default_factory=lambda: dict(DEFAULT_TASK_WEIGHTS),
        metadata=_doc(f"Parallel: relative weight of each cross-lingual task ({', '.join(PARALLEL_TASKS)})."),
    )
    max_lines: int | None = field(default=None, metadata=_doc("Parallel: use only the first N aligned lines."))

    @property
    def group_name(self) -> str:
        return self.group or self.name

    def all_paths(self) -> list[str]:
        return ([self.path] if self.path else []) + list(self.paths)


@dataclass(kw_only=True)
class MixConfig:
    """How much of each group goes into the mix, and how languages share a group."""

    ratios: dict[str, float] = field(
        metadata=_doc(
            "Share of each group in the mix, e.g. {chinese: 0.432, english: 0.262, crosslingual: 0.306} "
            "(BayLing 2); normalised to sum to 1."
        )
    )
    total: int | None = field(
        default=None,
        metadata=_doc("Examples in the mix (train + eval); default: the most the sources allow without repeats."),
    )
    temperature: float = field(
        default=1.0,
        metadata=_doc(
            "Sampling temperature across the languages of a group: 1 keeps corpus proportions, larger "
            "values move towards equal shares (language l gets n_l^(1/T))."
        ),
    )


@dataclass(kw_only=True)
class DataConfig:
    """The `data:` section: sources, cross-lingual builders, mixing and output."""

    sources: list[SourceConfig] = field(metadata=_doc("Instruction sets and parallel corpora."))
    mix: MixConfig = field(metadata=_doc("Ratios per group and temperature across languages."))
    output: str = field(metadata=_doc("Output JSONL (messages form); stats and the eval split are written beside it."))
    seed: int = field(default=0, metadata=_doc("Seed for every random choice; the same seed gives the same bytes."))
    hub_languages: list[str] = field(
        default_factory=lambda: ["eng_Latn", "zho_Hans"],
        metadata=_doc("Languages every other language is paired with for translation instructions."),
    )
    instruction_languages: list[str] = field(
        default_factory=lambda: ["eng_Latn", "zho_Hans"],
        metadata=_doc("Languages the built-in instruction wordings are written in (English and Chinese ship)."),
    )
    wordings: list[str] = field(
        default_factory=list,
        metadata=_doc("YAML wording files for further instruction languages (see training/data/wordings.py)."),
    )
    eval_size: int = field(default=0, metadata=_doc("Examples held out into <output>.eval.jsonl for the eval loss."))
    tokenizer: str | None = field(
        default=None,
        metadata=_doc("tokenizer.json (or a folder with one) to count tokens in the stats; default: characters only."),
    )


@dataclass(kw_only=True)
class TrainConfig:
    """The `train:` section: model, chat format, tokenization and the DeepSpeed run."""

    output_dir: str = field(
        metadata=_doc("Checkpoints, logs, the saved recipe and the final model (in <output_dir>/final).")
    )
    model: str | None = field(
        default=None, metadata=_doc("HF checkpoint folder (or hub id in the local cache) to fine-tune.")
    )
    init_config: dict[str, Any] | None = field(
        default=None,
        metadata=_doc("Instead of `model`: LlamaConfig keys for a randomly initialised model (tests, benchmarks)."),
    )
    tokenizer: str | None = field(default=None, metadata=_doc("Tokenizer folder (default: the model folder)."))
    chat_format: Literal["bayling-2", "bayling-3", "chatml", "template"] = field(
        metadata=_doc("Chat format to render conversations with ('template': the tokenizer's own chat template).")
    )
    data: list[str] = field(default_factory=list, metadata=_doc("Training JSONL files (default: data.output)."))
    eval_data: list[str] = field(
        default_factory=list,
        metadata=_doc("Held-out JSONL files for the eval loss (default: the data builder's eval split, if any)."),
    )
    max_length: int = field(default=2048, metadata=_doc("Tokens per sequence; longer examples are cut."))
    packing: bool = field(
        default=True,
        metadata=_doc("Pack several examples into one sequence (position ids restart, no attention across examples)."),
    )
    token_cache: str | None = field(
        default=None,
        metadata=_doc("Folder for the tokenized data (memory-mapped, keyed by data, tokenizer and settings; "
                      "default: <output_dir>/tokenized)."),
    )
    deepspeed: str | None = field(
        default="zero2",
        metadata=_doc("zero2, zero3, zero2-offload, zero3-offload, a DeepSpeed JSON path, or null for no DeepSpeed."),
    )
    torch_adam: bool = field(
        default=True,
        metadata=_doc("Use torch's AdamW inside DeepSpeed (no fused_adam build); offload configs need false."),
    )
    bf16: bool = field(default=True, metadata=_doc("Train in bfloat16."))
    gradient_checkpointing: bool = field(default=False, metadata=_doc("Recompute activations in the backward pass."))
    learning_rate: float = field(default=2e-5, metadata=_doc("Peak learning rate."))
    weight_decay: float = field(default=0.0, metadata=_doc("AdamW weight decay."))
    warmup_ratio: float = field(default=0.03, metadata=_doc("Share of the steps spent warming the learning rate up."))
    lr_scheduler: str = field(
        default="cosine", metadata=_doc("transformers scheduler name (cosine: warm-up then cosine decay).")
    )
    epochs: float = field(default=3.0, metadata=_doc("Passes over the data (ignored when max_steps is set)."))
    max_steps: int | None = field(default=None, metadata=_doc("Stop after this many optimizer steps."))
    micro_batch_size: int = field(default=1, metadata=_doc("Sequences per device per forward pass."))
    gradient_accumulation: int = field(default=1, metadata=_doc("Micro batches per optimizer step."))
    max_grad_norm: float = field(default=1.0, metadata=_doc("Gradient clipping."))
    logging_steps: int = field(default=10, metadata=_doc("Log the training loss every N steps."))
    eval_steps: int | None = field(
        default=None, metadata=_doc("Compute the eval loss every N steps (default: at save steps).")
    )
    save_steps: int = field(default=500, metadata=_doc("Write a resumable checkpoint every N steps."))
    save_total_limit: int | None = field(default=None, metadata=_doc("Keep only the last N checkpoints."))
    tensorboard: bool = field(default=True, metadata=_doc("Write TensorBoard logs (needs the tensorboard package)."))
    seed: int = field(default=42, metadata=_doc("Seed for initialisation, shuffling and dropout."))
    attn_implementation: str | None = field(
        default=None,
        metadata=_doc("transformers attention ('sdpa', 'eager', 'flash_attention_2'); default: the model's."),
    )
    dataloader_workers: int = field(default=0, metadata=_doc("DataLoader worker processes."))


@dataclass(kw_only=True)
class Recipe:
    """A whole recipe; `path` is the file it came from (relative paths are resolved against it)."""

    data: DataConfig | None = field(
        default=None, metadata=_doc("The instruction mix to build (`bayling-local train data build`).")
    )
    train: TrainConfig | None = field(default=None, metadata=_doc("The SFT run (`bayling-local train sft`)."))
    path: Path = field(default=Path("recipe.yaml"), init=False, repr=False)

    @property
    def base_dir(self) -> Path:
        return self.path.resolve().parent

    def resolve(self, path: str) -> Path:
        """A recipe path made absolute: `~` and `$VARS` expanded, relative to the recipe's folder."""
        expanded = Path(os.path.expandvars(os.path.expanduser(path)))
        return expanded if expanded.is_absolute() else self.base_dir / expanded

    def require_data(self) -> DataConfig:
        if self.data is None:
            raise RecipeError(f"{self.path}: no `data:` section; add one to build a mix")
        return self.data

    def require_train(self) -> TrainConfig:
        if self.train is None:
            raise RecipeError(f"{self.path}: no `train:` section; add one to train")
        return self.train


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe YAML file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"no recipe at {path}; see training/recipes/ for examples")
    try:
        data = yaml.safe_load(path.read_text("utf-8"))
    except yaml.YAMLError as error:
        raise RecipeError(f"{path}: not valid YAML ({_one_line(str(error))})") from error
    return recipe_from_mapping(data or {}, path)


def recipe_from_mapping(data: Any, path: Path) -> Recipe:
    """Validate an already-parsed recipe mapping (`path` is where relative paths start)."""
    recipe = from_mapping(Recipe, data, "", str(path))
    recipe.path = Path(path)
    _check(recipe)
    return recipe


def _check(recipe: Recipe) -> None:
    origin = str(recipe.path)
    if recipe.data is not None:
        _check_data(recipe.data, origin)
    if recipe.train is not None:
        _check_train(recipe.train, origin)


def _check_data(data: DataConfig, origin: str) -> None:
    names = [source.name for source in data.sources]
    duplicate = next((name for name in names if names.count(name) > 1), None)
    if duplicate:
        raise RecipeError(f"{origin}: two sources are named '{duplicate}'; give each a unique name")
    groups = {source.group_name for source in data.sources}
    for group in sorted(groups - data.mix.ratios.keys()):
        raise RecipeError(f"{origin}: data.mix.ratios has no ratio for group '{group}'; add `{group}: 0.3`")
    for group in sorted(data.mix.ratios.keys() - groups):
        raise RecipeError(f"{origin}: data.mix.ratios names '{group}', which no source belongs to")
    if any(ratio < 0 for ratio in data.mix.ratios.values()) or sum(data.mix.ratios.values()) <= 0:
        raise RecipeError(f"{origin}: data.mix.ratios must be non-negative and not all zero")
    if data.mix.temperature <= 0:
        raise RecipeError(f"{origin}: data.mix.temperature must be positive (1 keeps corpus proportions)")
    for source in data.sources:
        _check_source(source, origin)


def _check_source(source: SourceConfig, origin: str) -> None:
    where = f"{origin}: source '{source.name}'"
    if not source.all_paths():
        raise RecipeError(f"{where} has no `path` or `paths`")
    unknown_tasks = sorted(source.tasks.keys() - set(PARALLEL_TASKS))
    if unknown_tasks:
        raise RecipeError(
            f"{where}: unknown task '{unknown_tasks[0]}' in tasks; choose from {', '.join(PARALLEL_TASKS)}"
        )
    if source.kind == "parallel" and source.format in ("alpaca", "messages", "sharegpt"):
        raise RecipeError(f"{where}: format '{source.format}' is for instruction sets, not parallel corpora")
    if source.kind == "instructions" and source.format in ("flores", "tsv", "aligned"):
        raise RecipeError(f"{where}: format '{source.format}' is for parallel corpora, not instruction sets")


def _check_train(train: TrainConfig, origin: str) -> None:
    if (train.model is None) == (train.init_config is None):
        raise RecipeError(f"{origin}: train needs exactly one of `model` (a checkpoint) or `init_config` (random init)")
    if train.init_config is not None and train.tokenizer is None:
        raise RecipeError(f"{origin}: train.init_config needs train.tokenizer (a tokenizer folder)")
    for key in ("max_length", "micro_batch_size", "gradient_accumulation", "save_steps", "logging_steps"):
        if getattr(train, key) < 1:
            raise RecipeError(f"{origin}: train.{key} must be at least 1")
    if not 0 <= train.warmup_ratio < 1:
        raise RecipeError(
            f"{origin}: train.warmup_ratio ({train.warmup_ratio}) is a share of the steps, from 0 up to (not "
            "including) 1; e.g. 0.03"
        )


def recipe_reference() -> list[tuple[str, str, str]]:
    """Every recipe key with its default and help text."""
    return reference(Recipe)


def recipe_to_mapping(recipe: Recipe) -> dict:
    return to_mapping(recipe)


def save_recipe(recipe: Recipe, path: Path) -> None:
    """Write the validated recipe (defaults filled in) as YAML, atomically."""
    import yaml

    text = f"# recipe used for this run (from {recipe.path}); relative paths were relative to that file\n"
    text += yaml.safe_dump(recipe_to_mapping(recipe), sort_keys=False, allow_unicode=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, "utf-8")
    os.replace(temporary, path)


def _one_line(text: str) -> str:
    return " ".join(text.split())
