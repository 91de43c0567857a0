"""DeepSpeed configurations: ZeRO-2, ZeRO-3 and their CPU-offload variants, as JSON beside this file.

Values marked "auto" are filled by the HF Trainer from the recipe (batch sizes, learning rate,
clipping, bf16). No scheduler is set here, so the Trainer's own (cosine with warm-up) is used.
"""

from __future__ import annotations

import json
from pathlib import Path

from bayling_local.training.typed import RecipeError

CONFIG_DIR = Path(__file__).parent
NAMED_CONFIGS = ("zero2", "zero3", "zero2-offload", "zero3-offload")


def deepspeed_config(name_or_path: str, *, torch_adam: bool, base_dir: Path | None = None) -> dict:
    """The config for a named preset or a JSON file, with the optimizer choice applied."""
    config = _read(name_or_path, base_dir)
    _check_zero3_saves_whole_weights(config, name_or_path)
    params = config.get("optimizer", {}).get("params")
    if params is not None:
        # torch's AdamW needs no C++/CUDA build; DeepSpeed's fused/CPU Adam are faster on real clusters.
        params["torch_adam"] = torch_adam
    if torch_adam and _offloads_optimizer(config):
        # Without this DeepSpeed insists on its own CPU Adam (a compiled op) for offloaded states.
        config["zero_force_ds_cpu_optimizer"] = False
    return config


def _read(name_or_path: str, base_dir: Path | None) -> dict:
    if name_or_path in NAMED_CONFIGS:
        path = CONFIG_DIR / f"{name_or_path}.json"
    else:
        path = Path(name_or_path)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if not path.is_file():
            raise RecipeError(
                f"train.deepspeed: '{name_or_path}' is neither a preset ({', '.join(NAMED_CONFIGS)}) nor a JSON file"
            )
    try:
        return json.loads(path.read_text("utf-8"))
    except json.JSONDecodeError as error:
        raise RecipeError(f"{path}: not valid JSON ({error.msg} at line {error.lineno})") from None


def _check_zero3_saves_whole_weights(config: dict, source: str) -> None:
    # Without the gather, save_model under ZeRO-3 writes only this rank's (empty) partitions into
    # final/, which no converter can read; found only after the whole run, so refuse it up front.
    if zero_stage(config) == 3 and config["zero_optimization"].get("stage3_gather_16bit_weights_on_model_save") is not True:
        raise RecipeError(
            f"train.deepspeed: {source} uses ZeRO-3 without \"stage3_gather_16bit_weights_on_model_save\": true "
            "under zero_optimization, so the final checkpoint would be unreadable shards; add it to the JSON"
        )


def _offloads_optimizer(config: dict) -> bool:
    device = config.get("zero_optimization", {}).get("offload_optimizer", {}).get("device", "none")
    return device not in ("none", None)


def zero_stage(config: dict) -> int:
    return int(config.get("zero_optimization", {}).get("stage", 0))
