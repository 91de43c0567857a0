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


# --- reference renderers, written from the released templates (not from bayling_local.prompts) ---------
#
# ictnlp/BayLing, bayling/conversation.py (commit 8f6ecb91db5375184610e4c3e71e0fd3de8f9685, Dec 2024),
# `Conversation.get_prompt`:
#
#     elif self.sep_style == SeparatorStyle.BAYLING:
#         seps = [self.sep, self.sep2]
#         ret = self.system + seps[0]
#         for i, (role, message) in enumerate(self.messages):
#             if message:
#                 ret += role + message + seps[i % 2]
#                 if i % 2 == 1:
#                     ret += "\n"
#             else:
#                 ret += role
#         return ret
#     elif self.sep_style == SeparatorStyle.LLAMA3:
#         ret = "<|begin_of_text|>"
#         seps = [self.sep, self.sep2]
#         ret = self.system + seps[0]
#         for i, (role, message) in enumerate(self.messages):
#             if message:
#                 ret += f"{role}"
#                 ret += f"{message.strip()}"+self.sep2
#             else:
#                 ret += f"{role}"
#         return ret
#
# and the templates registered there:
#
#     Conversation(name="BayLing",
#         system="I am an intelligent language assistant developed by the NLP Group of ICT/CAS.\nBelow is a
#                 dialog consisting of instructions and responses. Write a response that completes the request.\n",
#         roles=("### Instruction:\n", "### Response:\n"), sep_style=SeparatorStyle.BAYLING, sep="\n", sep2="</s>")
#     Conversation(name="BayLing-3",
#         system="<|start_header_id|>system<|end_header_id|>\n\nI am BayLing developed by the NLP Group of ICT/CAS.<|eot_id|>",
#         roles=("<|start_header_id|>user<|end_header_id|>\n\n", "<|start_header_id|>assistant<|end_header_id|>\n\n"),
#         sep_style=SeparatorStyle.LLAMA3, sep="", sep2="<|eot_id|>", stop_str="<|eot_id|>", stop_token_ids=[2,128001,128009])
#
# The prompt is completed by appending (assistant role, None). bayling/inference.py tokenizes it with
# `tokenizer(prompt).input_ids`, which adds the BOS token: `<s>` (Llama-2) or `<|begin_of_text|>`
# (Llama-3; the LLAMA3 branch's own `ret = "<|begin_of_text|>"` is overwritten on the next line).
# Meta's Llama-3 instruct template (meta-llama/Meta-Llama-3-8B-Instruct, tokenizer_config.json) renders
# the same layout: bos_token, then '<|start_header_id|>' + role + '<|end_header_id|>\n\n' +
# content | trim + '<|eot_id|>' per message, then the assistant header for add_generation_prompt.

UPSTREAM_BAYLING2_SYSTEM = (
    "I am an intelligent language assistant developed by the NLP Group of ICT/CAS.\n"
    "Below is a dialog consisting of instructions and responses. Write a response that completes the request.\n"
)
UPSTREAM_BAYLING3_SYSTEM = (
    "<|start_header_id|>system<|end_header_id|>\n\nI am BayLing developed by the NLP Group of ICT/CAS.<|eot_id|>"
)


def upstream_bayling_prompt(system: str, turns: list[str]) -> str:
    """get_prompt for sep_style BAYLING; `turns` alternate user/assistant, the assistant's None appended."""
    roles, seps = ("### Instruction:\n", "### Response:\n"), ["\n", "</s>"]
    messages = [(roles[i % 2], text) for i, text in enumerate(turns)] + [(roles[1], None)]
    ret = system + seps[0]
    for i, (role, message) in enumerate(messages):
        if message:
            ret += role + message + seps[i % 2]
            if i % 2 == 1:
                ret += "\n"
        else:
            ret += role
    return ret


def upstream_llama3_prompt(system: str, turns: list[str]) -> str:
    """get_prompt for sep_style LLAMA3, with the BOS the tokenizer adds in front."""
    roles = ("<|start_header_id|>user<|end_header_id|>\n\n", "<|start_header_id|>assistant<|end_header_id|>\n\n")
    messages = [(roles[i % 2], text) for i, text in enumerate(turns)] + [(roles[1], None)]
    ret = system + ""
    for role, message in messages:
        if message:
            ret += f"{role}" + f"{message.strip()}" + "<|eot_id|>"
        else:
            ret += f"{role}"
    return "<|begin_of_text|>" + ret


def as_messages(turns: list[str]) -> list[dict]:
    return [{"role": ("user", "assistant")[i % 2], "content": text} for i, text in enumerate(turns)]


TURNS = ["Hello", "Hi there", "Translate: cat"]


def test_bayling2_renders_the_released_bayling_template_exactly():
    expected = upstream_bayling_prompt(UPSTREAM_BAYLING2_SYSTEM, TURNS)
    assert expected.startswith(UPSTREAM_BAYLING2_SYSTEM + "\n### Instruction:\nHello\n### Response:\nHi there</s>\n")
    assert get_chat_format("bayling-2").render(as_messages(TURNS)) == expected
    assert get_chat_format("bayling-2").render(as_messages(TURNS[:1])) == upstream_bayling_prompt(
        UPSTREAM_BAYLING2_SYSTEM, TURNS[:1]
    )


def test_bayling3_renders_the_released_bayling3_template_exactly():
    turns = ["Hello", "  Hi there\n", "Translate: cat "]  # the released template strips every message
    expected = upstream_llama3_prompt(UPSTREAM_BAYLING3_SYSTEM, turns)
    assert get_chat_format("bayling-3").render(as_messages(turns)) == expected
    assert expected.endswith("Translate: cat<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")


def test_a_system_message_replaces_the_default_system_text():
    messages = [{"role": "system", "content": "Be brief.\n"}, {"role": "user", "content": "Hi"}]
    assert get_chat_format("bayling-2").render(messages) == upstream_bayling_prompt("Be brief.\n", ["Hi"])
    own_system = "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
    assert get_chat_format("bayling-3").render(messages) == upstream_llama3_prompt(own_system, ["Hi"])


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
