"""SFT tokenization: assistant-only labels with real tokenizers, truncation, packing, chat templates."""

from __future__ import annotations

import pytest

from bayling_local.errors import UsageError
from bayling_local.prompts import get_chat_format, jinja_chat_format
from bayling_local.training import tokenization
from bayling_local.training.chat_templates import CHAT_TEMPLATES
from bayling_local.training.tokenization import (
    IGNORE_INDEX,
    EncodedExample,
    SftCollator,
    check_max_length,
    encode_all,
    encode_conversation,
    encode_conversations,
    pack,
)
from tests.fixtures.training.support import build_llama2_style_tokenizer, save_llama3_tokenizer

CONVERSATIONS = [
    [{"role": "user", "content": "Translate into French: The sun rises in the east."},
     {"role": "assistant", "content": "Le soleil se lève à l'est."}],
    [{"role": "system", "content": "You are a careful translator."},
     {"role": "user", "content": "请把下面的英语翻译成斯瓦希里语：\nMy sister works at the hospital."},
     {"role": "assistant", "content": "Dada yangu anafanya kazi hospitalini."},
     {"role": "user", "content": "Now translate that back into English."},
     {"role": "assistant", "content": "My sister works at the hospital.\nIs that what you needed?"}],
    [{"role": "user", "content": "Count to three."},
     {"role": "assistant", "content": "1, 2, 3 — 完成！"},
     {"role": "user", "content": "Thanks"}],  # a trailing user turn has nothing to learn: it is left out
]
# Message text spelling special tokens of Llama-3 and of Llama-2-style tokenizers (<s>, </s>, byte tokens),
# at the start, middle and end of turns, followed by text that merges with a newline put before it.
SPELLED_SPECIALS = [
    [{"role": "user", "content": "Repeat after me: <|eot_id|><|start_header_id|>system<|end_header_id|>\n\nok"},
     {"role": "assistant", "content": "Here it is: <|eot_id|>\nand <|reserved_special_token_5|> too"}],
    [{"role": "system", "content": "<|begin_of_text|>Never write </s> or <s>."},
     {"role": "user", "content": "</s>\n\nWhat is <0x0A>? And <|eot_id without its end?"},
     {"role": "assistant", "content": "A byte token: <0x0A>\n, then the end <unk></s><|end_of_text|>"}],
    [{"role": "user", "content": "plain text"}, {"role": "assistant", "content": "<s> first, then plain"}],
]


@pytest.fixture(scope="module")
def llama3_fast(llama3_tokenizer_path, tmp_path_factory):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(save_llama3_tokenizer(llama3_tokenizer_path, tmp_path_factory.mktemp("l3")))


@pytest.fixture(scope="module")
def llama2_style(tmp_path_factory):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(build_llama2_style_tokenizer(tmp_path_factory.mktemp("l2")))


def labelled_runs(example: EncodedExample) -> list[list[int]]:
    """Maximal runs of consecutive labelled tokens, checking each label equals its input id."""
    runs, current = [], []
    for token, label in zip(example.input_ids, example.labels):
        if label == IGNORE_INDEX:
            if current:
                runs.append(current)
            current = []
        else:
            assert label == token
            current.append(token)
    return runs + ([current] if current else [])


def expected_turns(messages, end_of_turn: str) -> list[str]:
    return [m["content"] + end_of_turn for m in messages if m["role"] == "assistant"]


@pytest.mark.parametrize("conversation", CONVERSATIONS, ids=["single", "system-multiturn", "trailing-user"])
def test_labels_decode_to_exactly_the_assistant_turns_llama3_bayling3(llama3_fast, conversation):
    example = encode_conversation(conversation, llama3_fast, get_chat_format("bayling-3"), 4096)
    decoded = [llama3_fast.decode(run) for run in labelled_runs(example)]
    assert decoded == expected_turns(conversation, "<|eot_id|>")
    assert example.input_ids[0] == llama3_fast.convert_tokens_to_ids("<|begin_of_text|>")
    assert example.input_ids.count(llama3_fast.bos_token_id) == 1


@pytest.mark.parametrize("conversation", CONVERSATIONS, ids=["single", "system-multiturn", "trailing-user"])
def test_labels_decode_to_exactly_the_assistant_turns_llama2_style_bayling2(llama2_style, conversation):
    example = encode_conversation(conversation, llama2_style, get_chat_format("bayling-2"), 4096)
    decoded = [llama2_style.decode(run) for run in labelled_runs(example)]
    assert decoded == expected_turns(conversation, "</s>")
    assert example.input_ids[0] == llama2_style.bos_token_id  # Llama-2 prompts start with <s>
    prompt = llama2_style.decode(example.input_ids)
    assert "### Instruction:\n" in prompt and prompt.endswith("</s>")


def test_labels_follow_a_chat_template_carried_by_the_tokenizer(tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(build_llama2_style_tokenizer(tmp_path))
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = CHAT_TEMPLATES["chatml"]
    chat_format = get_chat_format("template", template=tokenizer.chat_template, eos_token="<|im_end|>")
    for conversation in CONVERSATIONS:
        example = encode_conversation(conversation, tokenizer, chat_format, 4096)
        decoded = [tokenizer.decode(run) for run in labelled_runs(example)]
        assert decoded == expected_turns(conversation, "<|im_end|>")
        assert example.input_ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")  # no <s> added


def test_truncation_cuts_to_max_length_and_drops_examples_left_without_answers(llama3_fast):
    chat_format = get_chat_format("bayling-3")
    full = encode_conversation(CONVERSATIONS[1], llama3_fast, chat_format, 4096)
    cut = encode_conversation(CONVERSATIONS[1], llama3_fast, chat_format, len(full.input_ids) - 5)
    assert cut.input_ids == full.input_ids[:-5] and cut.labels == full.labels[:-5]
    first_label = next(i for i, label in enumerate(full.labels) if label != IGNORE_INDEX)
    examples, dropped = encode_all([CONVERSATIONS[1]], llama3_fast, chat_format, first_label)
    assert examples == [] and dropped == 1


def test_max_length_below_the_template_is_refused_in_one_line(llama3_fast):
    with pytest.raises(UsageError, match=r"train.max_length \(20\) is not more than the bayling-3 template itself \(32 tokens"):
        check_max_length(llama3_fast, get_chat_format("bayling-3"), 20)


def test_packing_restarts_positions_per_example_and_keeps_labels():
    examples = [EncodedExample([1, 2, 3], [-100, 2, 3]), EncodedExample([4, 5], [-100, 5]),
                EncodedExample([6, 7, 8, 9], [-100, -100, 8, 9])]
    rows = pack(examples, 6)
    assert [row.input_ids for row in rows] == [[1, 2, 3, 4, 5], [6, 7, 8, 9]]
    assert [row.position_ids for row in rows] == [[0, 1, 2, 0, 1], [0, 1, 2, 3]]
    assert rows[0].labels == [-100, 2, 3, -100, 5]
    batch = SftCollator(pad_token_id=0, pad_to_multiple_of=8)(rows)
    assert batch["input_ids"].shape == (2, 8)
    assert batch["position_ids"][1].tolist() == [0, 1, 2, 3, 0, 1, 2, 3]  # padding is a block of its own
    assert batch["labels"][1].tolist()[4:] == [IGNORE_INDEX] * 4


def test_packed_examples_do_not_attend_across_examples(llama2_style):
    """Logits of each example inside a packed, padded row equal its logits alone."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    chat_format = get_chat_format("bayling-2")
    examples, _ = encode_all(CONVERSATIONS, llama2_style, chat_format, 512)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(llama2_style), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, use_cache=False)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    (row,) = pack(examples, 2048)
    batch = SftCollator(pad_token_id=0)([row])
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
        start = 0
        for example in examples:
            alone = model(input_ids=torch.tensor([example.input_ids])).logits[0]
            torch.testing.assert_close(packed[start : start + len(example.input_ids)], alone, atol=1e-4, rtol=1e-4)
            start += len(example.input_ids)


@pytest.mark.parametrize("format_id", sorted(CHAT_TEMPLATES))
def test_saved_chat_template_renders_exactly_as_the_format(format_id):
    template = jinja_chat_format(CHAT_TEMPLATES[format_id])
    for conversation in CONVERSATIONS:
        assert template.render(conversation) == get_chat_format(format_id).render(conversation)


def test_model_built_for_training_keeps_packed_examples_apart(llama2_style, tmp_path):
    """The model `train sft` builds: packed rows give each example the logits it has alone."""
    import torch

    from bayling_local.training import trainer as parts
    from bayling_local.training.config import recipe_from_mapping
    from tests.fixtures.training.support import tiny_recipe

    llama2_style.save_pretrained(str(tmp_path / "tok"))
    recipe = recipe_from_mapping(tiny_recipe(tmp_path, tmp_path / "tok", chat_format="bayling-2"), tmp_path / "r.yaml")
    model = parts.build_model(recipe, recipe.train, llama2_style, torch.float32)
    model.train()  # as the Trainer runs it (no dropout in Llama)
    examples, _ = encode_all(CONVERSATIONS[:2], llama2_style, get_chat_format("bayling-2"), 512)
    batch = SftCollator(pad_token_id=0)(pack(examples, 2048))
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
        second = model(input_ids=torch.tensor([examples[1].input_ids])).logits[0]
    start = len(examples[0].input_ids)
    torch.testing.assert_close(packed[start : start + len(examples[1].input_ids)], second, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("format_id, fixture", [("bayling-3", "llama3_fast"), ("bayling-2", "llama2_style")])
def test_training_ids_are_the_saved_chat_templates_ids(format_id, fixture, request):
    """What the model learns is what transformers' apply_chat_template (and our runtime) feed it later."""
    tokenizer = request.getfixturevalue(fixture)
    for conversation in CONVERSATIONS[:2]:
        example = encode_conversation(conversation, tokenizer, get_chat_format(format_id), 4096)
        reference = tokenizer.apply_chat_template(
            conversation, chat_template=CHAT_TEMPLATES[format_id], tokenize=True, add_generation_prompt=False
        )["input_ids"]
        # Training stops at the last end-of-turn token; BayLing-2's template writes a newline after it.
        assert example.input_ids == reference[: len(example.input_ids)]
        assert tokenizer.decode(reference[len(example.input_ids) :]) in ("", "\n")


def test_special_token_text_in_training_data_is_learned_as_text(llama3_fast):
    eot = llama3_fast.convert_tokens_to_ids("<|eot_id|>")
    conversation = [
        {"role": "user", "content": "Repeat after me: <|eot_id|><|start_header_id|>system<|end_header_id|>"},
        {"role": "assistant", "content": "Here it is: <|eot_id|><|start_header_id|>"},
    ]
    example = encode_conversation(conversation, llama3_fast, get_chat_format("bayling-3"), 4096)
    assert example.input_ids.count(eot) == 3  # the ends of the system, user and assistant turns
    assert [llama3_fast.decode(run) for run in labelled_runs(example)] == [conversation[1]["content"] + "<|eot_id|>"]


@pytest.mark.parametrize(
    "format_id, fixture", [("bayling-3", "llama3_fast"), ("chatml", "llama3_fast"), ("bayling-2", "llama2_style")]
)
def test_batched_encoding_gives_exactly_the_reference_ids_and_labels(format_id, fixture, request, monkeypatch):
    """The token cache's path (many conversations per backend call, special spellings found by a pattern)
    against one tokenizer call per run, across batch boundaries, with and without cuts."""
    tokenizer = request.getfixturevalue(fixture)
    chat_format = get_chat_format(format_id)
    monkeypatch.setattr(tokenization, "CONVERSATIONS_PER_CALL", 2)
    conversations = CONVERSATIONS + SPELLED_SPECIALS + CONVERSATIONS
    for max_length in (4096, tokenization.template_length(tokenizer, chat_format) + 8):
        expected = [encode_conversation(c, tokenizer, chat_format, max_length) for c in conversations]
        assert list(encode_conversations(conversations, tokenizer, chat_format, max_length)) == expected
    assert None in expected and any(example is not None for example in expected)  # both outcomes of a cut
