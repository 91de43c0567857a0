"""Chat formats render exactly what the models were trained on; stops resolve with the real vocabularies."""

from __future__ import annotations

import pytest

from bayling_local.errors import TemplateError, UnknownChatFormatError
from bayling_local.prompts import (
    CHAT_FORMAT_IDS,
    detect_chat_format,
    get_chat_format,
    translation_prompt,
)

CONVERSATION = [
    {"role": "user", "content": "Hello"},
    {"role": "assistant", "content": "Hi there"},
    {"role": "user", "content": "Translate: cat"},
]


def test_bayling2_renders_the_published_template_exactly():
    expected = (
        "I am an intelligent language assistant developed by the NLP Group of ICT/CAS.\n"
        "Below is a dialog consisting of instructions and responses. Write a response that completes the request.\n"
        "### Instruction:\nHello\n"
        "### Response:\nHi there</s>\n"
        "### Instruction:\nTranslate: cat\n"
        "### Response:\n"
    )
    assert get_chat_format("bayling-2").render(CONVERSATION) == expected


def test_bayling3_renders_llama3_headers_with_bayling_system_exactly():
    expected = (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
        "I am BayLing developed by the NLP Group of ICT/CAS.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHi there<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nTranslate: cat<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert get_chat_format("bayling-3").render(CONVERSATION) == expected


def test_a_system_message_replaces_the_default_system_text():
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert get_chat_format("bayling-2").render(messages) == "Be brief.\n### Instruction:\nHi\n### Response:\n"
    assert "I am BayLing" not in get_chat_format("bayling-3").render(messages)


def test_chatml_renders_im_start_turns():
    rendered = get_chat_format("chatml").render([{"role": "user", "content": "Hi"}])
    assert rendered == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_bayling3_stop_tokens_are_eot_and_end_of_text_never_id_2(llama3_tokenizer):
    from bayling_local.backends.decoding import resolve_stop_token_ids

    def tokenize(text):
        return llama3_tokenizer.encode(text, add_special_tokens=False).ids

    ids, leftover = resolve_stop_token_ids(tokenize, get_chat_format("bayling-3").stop_tokens)
    assert ids == {128009, 128001}
    assert leftover == ()
    assert tokenize("#") == [2]  # the id the upstream demo stopped on is '#' in this vocabulary


def test_carried_jinja_template_renders_in_the_sandbox(bundled_gguf):
    from bayling_local.gguf_header import read_gguf_header

    template = read_gguf_header(bundled_gguf).chat_template
    rendered = get_chat_format("template", template=template).render([{"role": "user", "content": "Hi"}])
    assert rendered.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert "You are a helpful AI assistant named SmolLM" in rendered


def test_sandbox_refuses_unsafe_attribute_access_in_a_template():
    hostile = "{{ messages.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(TemplateError):
        get_chat_format("template", template=hostile).render([{"role": "user", "content": "x"}])


def test_template_raise_exception_becomes_a_template_error():
    template = "{{ raise_exception('only user turns') }}"
    with pytest.raises(TemplateError, match="only user turns"):
        get_chat_format("template", template=template).render([{"role": "user", "content": "x"}])


def test_unknown_format_and_missing_template_name_the_choices():
    with pytest.raises(UnknownChatFormatError, match="bayling-2"):
        get_chat_format("alpaca")
    with pytest.raises(UnknownChatFormatError, match="needs a chat template"):
        get_chat_format("template", template=None)
    assert CHAT_FORMAT_IDS == ("bayling-2", "bayling-3", "chatml", "template")


def test_detect_chat_format_keeps_an_unknown_template_as_template():
    assert detect_chat_format("{% for m in messages %}{{ m.content }}{% endfor %}") == "template"
    assert detect_chat_format(None) == "chatml"


def test_translation_prompt_uses_bayling_evaluation_wording():
    assert (
        translation_prompt("Good morning", "Swahili")
        == "Provide the Swahili translation for this sentence: Good morning"
    )
    assert translation_prompt("早上好", "Chinese (Traditional)", instruction_language="zh") == (
        "提供这句话的Chinese (Traditional)翻译：早上好"
    )
    assert translation_prompt("I like tea", "French", glossary=["thé", "aimer"]) == (
        "Provide the French translation for this sentence: I like tea\nMake sure to include these words: thé, aimer"
    )
