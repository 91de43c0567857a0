"""Packed rows cannot leak: a micro-batch of two packed rows gives each example the logits and loss it
has alone, and attention settings that would let examples see each other are refused up front."""

from __future__ import annotations

import pytest

from bayling_local.errors import UsageError
from bayling_local.training.packing import check_packed_attention
from bayling_local.training.tokenization import IGNORE_INDEX, EncodedExample, SftCollator, pack
from tests.conftest import write_tiny_llama
from tests.fixtures.training.support import build_llama2_style_tokenizer

LENGTHS = [(5, 7), (9, 3, 4)]  # two rows of packed examples, the second shorter (padded)


@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory):
    tokenizer_dir = build_llama2_style_tokenizer(tmp_path_factory.mktemp("tok"))
    return write_tiny_llama(tmp_path_factory.mktemp("llama"), tokenizer_dir)


def _examples(lengths, seed):
    import torch

    generator = torch.Generator().manual_seed(seed)
    examples = []
    for length in lengths:
        ids = torch.randint(3, 1900, (length,), generator=generator).tolist()
        # The first token of an example (BOS or markup in real data) is never learned, so the row's
        # shifted loss never asks one example to predict the next one's first token.
        examples.append(EncodedExample(ids, [IGNORE_INDEX] + ids[1:]))
    return examples


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_two_packed_rows_give_each_example_its_own_logits_and_loss(tiny_llama_dir, attention):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir), attn_implementation=attention).eval()
    model.config.use_cache = False  # as trainer.build_model sets it: a cache turns the packed-sequence mask off
    rows = [pack(_examples(lengths, seed), 64)[0] for seed, lengths in enumerate(LENGTHS)]
    batch = SftCollator(pad_token_id=0)(rows)
    assert batch["input_ids"].shape[0] == 2
    with torch.no_grad():
        packed = model(**batch)
        separate_loss, separate_tokens = 0.0, 0
        for row_index, lengths in enumerate(LENGTHS):
            start = 0
            for example in _examples(lengths, row_index):
                alone = model(input_ids=torch.tensor([example.input_ids]), labels=torch.tensor([example.labels]))
                end = start + len(example.input_ids)
                torch.testing.assert_close(packed.logits[row_index, start:end], alone.logits[0], atol=1e-4, rtol=1e-4)
                learned = len(example.input_ids) - 1
                separate_loss, separate_tokens = separate_loss + alone.loss.item() * learned, separate_tokens + learned
                start = end
    assert packed.loss.item() == pytest.approx(separate_loss / separate_tokens, abs=1e-4)


def test_flash_attention_with_several_packed_rows_per_micro_batch_is_refused():
    with pytest.raises(UsageError, match="set train.micro_batch_size: 1 and raise train.gradient_accumulation"):
        check_packed_attention("flash_attention_2", 2, packing=True)
    with pytest.raises(UsageError, match="attend to each other"):
        check_packed_attention("kernels-community/flash-attn3", 4, packing=True)
    check_packed_attention("flash_attention_2", 1, packing=True)  # one row: restarts become varlen boundaries
    check_packed_attention("flash_attention_2", 4, packing=False)
    check_packed_attention("sdpa", 4, packing=True)
