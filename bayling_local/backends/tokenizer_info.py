"""What a Hugging Face tokenizer says about prompts (BOS, carried chat template), shared by the backends
that tokenize with one (transformers, ONNX Runtime); imports nothing heavy, so the ONNX backend does
not need torch."""

from __future__ import annotations

from typing import Any


def adds_bos_by_default(tokenizer: Any) -> bool:
    """Whether the tokenizer puts its BOS token first when asked for special tokens."""
    bos_id = tokenizer.bos_token_id
    if bos_id is None:
        return False
    ids = tokenizer.encode("a", add_special_tokens=True)
    return bool(ids) and ids[0] == bos_id


def tokenizer_chat_template(tokenizer: Any) -> str | None:
    """The tokenizer's chat template; of named templates, "default" (the one used for chat)."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = template.get("default")
    return template or None
