"""Language-alignment data and DeepSpeed instruction tuning (`import bayling_local.training`).

Installed as `bayling_local.training`. Map of the package:
- `config.py` (+ `typed.py`): the recipe YAML (`data:` and `train:`) as typed, validated dataclasses;
- `data/`: readers (Alpaca, messages, ShareGPT; FLORES-style folders/archives, TSV, aligned files),
  cross-lingual builders with our EN/ZH wordings (`wordings.py`), the mixer, stats; `build_mix`;
- `tokenization.py`: chat-format rendering, assistant-only labels, truncation, packing;
- `sft.py`: `python -m bayling_local.training.sft RECIPE.yaml`, the entry every launcher runs;
  `trainer.py` holds its HF Trainer pieces, `deepspeed/` the ZeRO-2/3 (+offload) configs,
  `chat_templates.py` the Jinja templates saved with the model, `launch.py` the deepspeed/torchrun
  command of `bayling-local train sft --gpus N --hostfile F`;
- `recipes/`: bayling-2-7b, bayling-2-13b, bayling-3-8b (8 x 80 GB), tiny-cpu (tests).
"""
