"""Refuse packed training whose attention would let one example see another.

Packed rows carry position ids that restart per example and no attention mask. transformers turns the
restarts into a block-diagonal mask in `masking_utils` (`find_packed_sequence_indices`; older 4.x
releases applied it only on torch >= 2.6) for eager, sdpa and flex attention. Flash attention instead
reads restarts through `_is_packed_sequence`, which only looks at a batch of one row: with two or more
rows per micro-batch it runs plain causal attention over the whole row, across examples. The mask is
also skipped whenever a KV cache is in play, which is why `trainer.build_model` sets use_cache off.
"""

from __future__ import annotations

from bayling_local.errors import UsageError

MIN_TORCH_FOR_PACKED_MASKS = (2, 6)


def is_flash_attention(implementation: str) -> bool:
    """flash_attention_2/3 and hub kernels such as kernels-community/flash-attn."""
    return "flash" in implementation.replace("-", "_").lower()


def check_packed_attention(implementation: str | None, micro_batch_size: int, packing: bool) -> None:
    """Raise with the fix named when packing with this attention would leak across examples."""
    if not packing or implementation is None:
        return
    if is_flash_attention(implementation):
        if micro_batch_size > 1:
            raise UsageError(
                f"train.packing with attn_implementation '{implementation}' and micro_batch_size "
                f"{micro_batch_size} lets packed examples attend to each other (flash attention sees the "
                "restarts only in a batch of one row); set train.micro_batch_size: 1 and raise "
                "train.gradient_accumulation, or use attn_implementation: sdpa"
            )
        return
    _check_mask_support(implementation)


def _check_mask_support(implementation: str) -> None:
    import torch
    from transformers import masking_utils

    torch_version = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])
    if not hasattr(masking_utils, "find_packed_sequence_indices") or torch_version < MIN_TORCH_FOR_PACKED_MASKS:
        raise UsageError(
            f"train.packing with attn_implementation '{implementation}' needs transformers' packed-sequence "
            f"masks (transformers >= 4.53 with torch >= 2.6; found torch {torch.__version__}); upgrade them, "
            "or set train.packing: false"
        )


def attention_of(model) -> str | None:
    """The attention implementation a loaded transformers model runs with."""
    return getattr(model.config, "_attn_implementation", None)
