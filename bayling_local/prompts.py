"""Chat formats (BayLing-2, BayLing-3, ChatML, a carried Jinja template) and task prompts.

A chat format turns a list of messages into the exact prompt string a model was trained on, and says
which strings and special tokens end the assistant's turn. Format ids (`bayling-2`, `bayling-3`,
`chatml`, `template`) are stable: store manifests, ONNX configs and training recipes use them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from bayling_local.errors import TemplateError, UnknownChatFormatError

Role = Literal["system", "user", "assistant"]
Message = Mapping[str, str]  # {"role": ..., "content": ...}

BAYLING2_SYSTEM = (
    "I am an intelligent language assistant developed by the NLP Group of ICT/CAS.\n"
    "Below is a dialog consisting of instructions and responses. "
    "Write a response that completes the request.\n"
)
BAYLING3_SYSTEM = "I am BayLing developed by the NLP Group of ICT/CAS."


@dataclass(frozen=True)
class ChatFormat:
    """A chat format described as data: how turns render and what ends the assistant's turn."""

    id: str
    description: str
    default_system: str | None
    render_messages: Callable[[Sequence[Message], str | None], str]
    """(messages, system text) -> prompt ending where the assistant's answer begins."""
    stop_strings: tuple[str, ...] = ()
    stop_tokens: tuple[str, ...] = ()
    """Special tokens (by text) that end generation; resolved to ids with the model's vocabulary."""

    def render(self, messages: Sequence[Message]) -> str:
        """The prompt for `messages` (a system message, if first, replaces the default system text)."""
        system, turns = split_system(messages, self.default_system)
        return self.render_messages(turns, system)


def split_system(messages: Sequence[Message], default: str | None) -> tuple[str | None, list[Message]]:
    """Separate a leading system message from the turns; fall back to the format's default."""
    turns = list(messages)
    if turns and turns[0]["role"] == "system":
        return turns[0]["content"], turns[1:]
    return default, turns


def _render_bayling2(turns: Sequence[Message], system: str | None) -> str:
    parts = [_ensure_newline(system) if system else ""]
    for message in turns:
        if message["role"] == "user":
            parts.append(f"### Instruction:\n{message['content']}\n")
        elif message["role"] == "assistant":
            parts.append(f"### Response:\n{message['content']}</s>\n")
    return "".join(parts) + "### Response:\n"


def _ensure_newline(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"


def _llama3_turn(role: str, content: str) -> str:
    return f"<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>"


def _render_bayling3(turns: Sequence[Message], system: str | None) -> str:
    parts = ["<|begin_of_text|>"]
    if system:
        parts.append(_llama3_turn("system", system))
    parts += [_llama3_turn(m["role"], m["content"]) for m in turns]
    return "".join(parts) + "<|start_header_id|>assistant<|end_header_id|>\n\n"


def _render_chatml(turns: Sequence[Message], system: str | None) -> str:
    parts = [f"<|im_start|>system\n{system}<|im_end|>\n"] if system else []
    parts += [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in turns]
    return "".join(parts) + "<|im_start|>assistant\n"


BAYLING_2 = ChatFormat(
    id="bayling-2",
    description="BayLing-2 on Llama-2 (### Instruction: / ### Response:)",
    default_system=BAYLING2_SYSTEM,
    render_messages=_render_bayling2,
    stop_strings=("### Instruction:",),
    stop_tokens=("</s>",),
)
BAYLING_3 = ChatFormat(
    id="bayling-3",
    description="BayLing-3 on Llama-3 (header tokens, turns end with <|eot_id|>)",
    default_system=BAYLING3_SYSTEM,
    render_messages=_render_bayling3,
    stop_tokens=("<|eot_id|>", "<|end_of_text|>"),
)
CHATML = ChatFormat(
    id="chatml",
    description="ChatML (<|im_start|>role ... <|im_end|>)",
    default_system=None,
    render_messages=_render_chatml,
    stop_tokens=("<|im_end|>",),
)
TEMPLATE_FORMAT_ID = "template"

BUILTIN_FORMATS: dict[str, ChatFormat] = {f.id: f for f in (BAYLING_2, BAYLING_3, CHATML)}
CHAT_FORMAT_IDS: tuple[str, ...] = (*BUILTIN_FORMATS, TEMPLATE_FORMAT_ID)


def get_chat_format(
    format_id: str, *, template: str | None = None, bos_token: str = "", eos_token: str = ""
) -> ChatFormat:
    """The format for `format_id`; `template` needs the Jinja text the artifact carries."""
    if format_id in BUILTIN_FORMATS:
        return BUILTIN_FORMATS[format_id]
    if format_id == TEMPLATE_FORMAT_ID:
        if not template:
            raise UnknownChatFormatError(
                "chat format 'template' needs a chat template in the model, and this one has none; "
                f"pass --chat-format with one of: {', '.join(BUILTIN_FORMATS)}"
            )
        return jinja_chat_format(template, bos_token=bos_token, eos_token=eos_token)
    raise UnknownChatFormatError(
        f"unknown chat format '{format_id}'; choose one of: {', '.join(CHAT_FORMAT_IDS)}"
    )


# --- Jinja templates carried by a GGUF or tokenizer_config.json -------------------------------------


def jinja_chat_format(template: str, *, bos_token: str = "", eos_token: str = "") -> ChatFormat:
    """A ChatFormat that renders `template` in Jinja's immutable sandbox, as transformers does."""
    compiled = _compile_template(template)

    def render(turns: Sequence[Message], system: str | None) -> str:
        messages = ([{"role": "system", "content": system}] if system else []) + [dict(m) for m in turns]
        try:
            return compiled.render(
                messages=messages, add_generation_prompt=True, bos_token=bos_token, eos_token=eos_token
            )
        except Exception as error:  # the template is third-party code: any failure is its failure
            raise TemplateError(f"the model's chat template failed to render: {error}") from error

    # The template decides the default system prompt itself, so none is added here.
    stops = (eos_token,) if eos_token else ()
    return ChatFormat(TEMPLATE_FORMAT_ID, "the chat template carried by the model", None, render, (), stops)


def _compile_template(template: str):
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(f"the model's chat template refused the conversation: {message}")

    def strftime_now(fmt: str) -> str:
        return datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.globals.update(raise_exception=raise_exception, strftime_now=strftime_now)
    try:
        return env.from_string(template)
    except jinja2.TemplateSyntaxError as error:
        raise TemplateError(f"the model's chat template is not valid Jinja: {error}") from error


def folder_chat_template(folder: Path) -> str | None:
    """The chat template a checkpoint or tokenizer folder carries: `chat_template.jinja` (transformers
    5 writes it there), else `tokenizer_config.json`'s `chat_template`."""
    import json

    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text("utf-8")
    tokenizer_config = folder / "tokenizer_config.json"
    if not tokenizer_config.is_file():
        return None
    template = json.loads(tokenizer_config.read_text("utf-8")).get("chat_template")
    return template if isinstance(template, str) else None


def detect_chat_format(template: str | None) -> str:
    """The built-in format a carried template implements, else `template` (render it as carried)."""
    if not template:
        return "chatml"
    if "<|start_header_id|>" in template and "BayLing" in template:
        return "bayling-3"
    return TEMPLATE_FORMAT_ID


# --- task prompts ---------------------------------------------------------------------------------

TRANSLATION_INSTRUCTIONS: dict[str, str] = {
    "en": "Provide the {target} translation for this sentence: {text}",
    "zh": "提供这句话的{target}翻译：{text}",
}
GLOSSARY_HINTS: dict[str, str] = {
    "en": "\nMake sure to include these words: {terms}",
    "zh": "\n确保包含这些词：{terms}",
}


def translation_prompt(
    text: str, target_name: str, *, glossary: Sequence[str] = (), instruction_language: str = "en"
) -> str:
    """BayLing's own evaluation instruction for translating `text` into the language `target_name`."""
    if instruction_language not in TRANSLATION_INSTRUCTIONS:
        raise UnknownChatFormatError(
            f"no translation instruction in '{instruction_language}'; "
            f"choose one of: {', '.join(TRANSLATION_INSTRUCTIONS)}"
        )
    prompt = TRANSLATION_INSTRUCTIONS[instruction_language].format(target=target_name, text=text)
    if glossary:
        separator = "、" if instruction_language == "zh" else ", "
        prompt += GLOSSARY_HINTS[instruction_language].format(terms=separator.join(glossary))
    return prompt
