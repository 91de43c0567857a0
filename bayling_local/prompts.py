"""Chat formats (BayLing-2, BayLing-3, ChatML, a carried Jinja template) and task prompts.

A chat format turns a list of messages into the exact prompt a model was trained on, and says which
strings and special tokens end the assistant's turn. It renders *segments*: the format's own markup
(`### Instruction:`, `<|start_header_id|>`, ...) apart from the messages' text, so that only markup is
tokenized with special-token parsing and a message that spells `<|eot_id|>` stays text (`prompt_runs`).
Format ids (`bayling-2`, `bayling-3`, `chatml`, `template`) are stable: store manifests, GGUF metadata
(`GGUF_CHAT_FORMAT_KEY`), ONNX configs and training recipes use them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from bayling_local.errors import TemplateError, UnknownChatFormatError

Role = Literal["system", "user", "assistant"]
Message = Mapping[str, str]  # {"role": ..., "content": ...}

GGUF_CHAT_FORMAT_KEY = "bayling.chat_format"
"""GGUF metadata key holding the chat format id (written by `convert`, read when a GGUF is opened by path)."""

# The released BayLing-2 template (ictnlp/BayLing, bayling/conversation.py, "BayLing"): the system text
# ends in a newline and the separator adds another, so a blank line precedes the first instruction.
BAYLING2_SYSTEM = (
    "I am an intelligent language assistant developed by the NLP Group of ICT/CAS.\n"
    "Below is a dialog consisting of instructions and responses. "
    "Write a response that completes the request.\n"
)
# The released BayLing-3 template (same file, "BayLing-3"): Llama-3 headers around this system text.
BAYLING3_SYSTEM = "I am BayLing developed by the NLP Group of ICT/CAS."


@dataclass(frozen=True)
class Segment:
    """A piece of a rendered prompt: the format's markup (`role` None) or the text of a message."""

    text: str
    role: str | None = None
    """The role of the message this text comes from; None for markup."""

    @property
    def is_content(self) -> bool:
        return self.role is not None


def markup(text: str) -> Segment:
    return Segment(text)


def content(role: str, text: str) -> Segment:
    return Segment(text, role)


@dataclass(frozen=True)
class ChatFormat:
    """A chat format described as data: how turns render and what ends the assistant's turn."""

    id: str
    description: str
    default_system: str | None
    render_segments: Callable[[Sequence[Message], str | None], list[Segment]]
    """(messages, system text) -> segments of a prompt ending where the assistant's answer begins."""
    stop_strings: tuple[str, ...] = ()
    stop_tokens: tuple[str, ...] = ()
    """Special tokens (by text) that end generation; resolved to ids with the model's vocabulary."""

    def segments(self, messages: Sequence[Message]) -> list[Segment]:
        """The prompt for `messages` as segments (a leading system message replaces the default system text)."""
        system, turns = split_system(messages, self.default_system)
        return self.render_segments(turns, system)

    def render(self, messages: Sequence[Message]) -> str:
        """The prompt for `messages` as one string (for display and identity; tokenize `segments`)."""
        return "".join(segment.text for segment in self.segments(messages))


def split_system(messages: Sequence[Message], default: str | None) -> tuple[str | None, list[Message]]:
    """Separate a leading system message from the turns; fall back to the format's default."""
    turns = list(messages)
    if turns and turns[0]["role"] == "system":
        return turns[0]["content"], turns[1:]
    return default, turns


def _segments_bayling2(turns: Sequence[Message], system: str | None) -> list[Segment]:
    # Separator style BAYLING: system + "\n"; "### Instruction:\n" + user + "\n";
    # "### Response:\n" + assistant + "</s>" + "\n"; the prompt ends with "### Response:\n".
    parts = [] if system is None else [content("system", system), markup("\n")]
    for message in turns:
        if message["role"] == "user":
            parts += [markup("### Instruction:\n"), content("user", message["content"]), markup("\n")]
        elif message["role"] == "assistant":
            parts += [markup("### Response:\n"), content("assistant", message["content"]), markup("</s>\n")]
    return [*parts, markup("### Response:\n")]


def _llama3_turn(role: str, text: str) -> list[Segment]:
    # Both the released template (`message.strip()`) and Meta's (`content | trim`) strip every message.
    header = markup(f"<|start_header_id|>{role}<|end_header_id|>\n\n")
    return [header, content(role, text.strip()), markup("<|eot_id|>")]


def _segments_bayling3(turns: Sequence[Message], system: str | None) -> list[Segment]:
    parts = [markup("<|begin_of_text|>")]
    if system:
        parts += _llama3_turn("system", system)
    for message in turns:
        parts += _llama3_turn(message["role"], message["content"])
    return [*parts, markup("<|start_header_id|>assistant<|end_header_id|>\n\n")]


def _segments_chatml(turns: Sequence[Message], system: str | None) -> list[Segment]:
    messages = ([{"role": "system", "content": system}] if system else []) + list(turns)
    parts = []
    for message in messages:
        role = message["role"]
        parts += [markup(f"<|im_start|>{role}\n"), content(role, message["content"]), markup("<|im_end|>\n")]
    return [*parts, markup("<|im_start|>assistant\n")]


BAYLING_2 = ChatFormat(
    id="bayling-2",
    description="BayLing-2 on Llama-2 (### Instruction: / ### Response:)",
    default_system=BAYLING2_SYSTEM,
    render_segments=_segments_bayling2,
    stop_strings=("### Instruction:",),
    stop_tokens=("</s>",),
)
BAYLING_3 = ChatFormat(
    id="bayling-3",
    description="BayLing-3 on Llama-3 (header tokens, turns end with <|eot_id|>)",
    default_system=BAYLING3_SYSTEM,
    render_segments=_segments_bayling3,
    stop_tokens=("<|eot_id|>", "<|end_of_text|>"),
)
CHATML = ChatFormat(
    id="chatml",
    description="ChatML (<|im_start|>role ... <|im_end|>)",
    default_system=None,
    render_segments=_segments_chatml,
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


# --- tokenizing a rendered prompt -----------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """A stretch of a prompt tokenized in one call: with special-token parsing (markup and ordinary
    message text) or without (a special token's spelling inside a message)."""

    text: str
    start: int
    """Where the run begins in the rendered prompt (0: the run starts the prompt)."""
    special: bool


def prompt_runs(segments: Sequence[Segment], spells_special: Callable[[str], bool]) -> list[Run]:
    """Group segments into runs so that special tokens come only from the format's markup.

    Tokenizers split text at special tokens and tokenize the pieces between them independently, so
    message text that spells no special token (`spells_special(text)` false) stays inside its markup
    run: the ids are exactly those of tokenizing the whole prompt, as `apply_chat_template` does. Where
    a message spells one (`<|eot_id|>`, `</s>`), that spelling becomes a run of its own, tokenized as
    plain text; the text around it stays in the runs it belongs to.
    """
    runs: list[Run] = []
    pending, start, position = "", 0, 0
    for text, special in _pieces(segments, spells_special):
        if special:
            if not pending:
                start = position
            pending += text
        else:
            if pending:
                runs.append(Run(pending, start, True))
            runs.append(Run(text, position, False))
            pending = ""
        position += len(text)
    if pending:
        runs.append(Run(pending, start, True))
    return runs


def _pieces(segments: Sequence[Segment], spells_special: Callable[[str], bool]):
    """(text, may parse special tokens) for every piece of the prompt, in order."""
    for segment in segments:
        if not (segment.is_content and segment.text and spells_special(segment.text)):
            yield segment.text, True
            continue
        done = 0
        for begin, end in _special_spellings(segment.text, spells_special):
            yield segment.text[done:begin], True
            yield segment.text[begin:end], False
            done = end
        yield segment.text[done:], True


def _special_spellings(text: str, spells_special: Callable[[str], bool]) -> list[tuple[int, int]]:
    """Where `text` spells special tokens, found by bisection: a prefix spells one once it holds one,
    and so does a suffix of that prefix until it cuts into the token."""
    spans, start = [], 0
    while start < len(text) and spells_special(text[start:]):
        spans.append(_next_spelling(text, start, spells_special))
        start = spans[-1][1]
    return spans


def _next_spelling(text: str, start: int, spells_special: Callable[[str], bool]) -> tuple[int, int]:
    end = _first(lambda k: spells_special(text[start:k]), start + 1, len(text))
    return _last(lambda j: spells_special(text[j:end]), start, end - 1), end


def _first(holds: Callable[[int], bool], low: int, high: int) -> int:
    """The smallest k in [low, high] where `holds` (false, then true; true at `high`)."""
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if holds(middle) else (middle + 1, high)
    return low


def _last(holds: Callable[[int], bool], low: int, high: int) -> int:
    """The largest j in [low, high] where `holds` (true, then false; true at `low`)."""
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if holds(middle) else (low, middle - 1)
    return low


def tokenize_run(run: Run, tokenize: Callable[[str, bool], list[int]]) -> list[int]:
    """Ids of one run; `tokenize(text, special)` tokenizes a text that starts a prompt.

    A run inside the prompt (it follows message text) is tokenized after a newline that is then removed:
    SentencePiece tokenizers put a space before the start of a text, which text inside a prompt never gets.
    """
    if run.start == 0:
        return tokenize(run.text, run.special)
    newline = tokenize("\n", run.special)
    ids = tokenize("\n" + run.text, run.special)
    if newline and ids[: len(newline)] == newline:
        return ids[len(newline) :]
    return tokenize(run.text, run.special)  # the newline merged with the run's first characters


def with_leading_bos(segments: list[Segment], bos_token: str | None) -> list[Segment]:
    """`segments` starting with the BOS text as markup, unless they already do (BayLing-3 writes its own)."""
    if not bos_token or (segments and segments[0].text.startswith(bos_token) and not segments[0].is_content):
        return segments
    return [markup(bos_token), *segments]


# --- Jinja templates carried by a GGUF or tokenizer_config.json -------------------------------------

# Message text is replaced by these markers for one render, so the template's markup can be told apart
# from the text. Private-use characters: a template has no reason to write them.
_CONTENT_MARK = "\ue000{}\ue001"
_CONTENT_MARK_RE = re.compile("\ue000([0-9]+)\ue001")


def jinja_chat_format(template: str, *, bos_token: str = "", eos_token: str = "") -> ChatFormat:
    """A ChatFormat that renders `template` in Jinja's immutable sandbox, as transformers does."""
    compiled = _compile_template(template)

    def render(messages: list[dict]) -> str:
        try:
            return compiled.render(
                messages=messages, add_generation_prompt=True, bos_token=bos_token, eos_token=eos_token
            )
        except TemplateError:
            raise
        except Exception as error:  # the template is third-party code: any failure is its failure
            raise TemplateError(f"the model's chat template failed to render: {error}") from error

    def segments(turns: Sequence[Message], system: str | None) -> list[Segment]:
        messages = ([{"role": "system", "content": system}] if system else []) + [dict(m) for m in turns]
        # An empty text stays empty: a template may test for it (`{% if message.content %}`).
        marked = [{**m, "content": _CONTENT_MARK.format(i) if m["content"] else ""} for i, m in enumerate(messages)]
        return _align_contents(_CONTENT_MARK_RE.split(render(marked)), messages, render(messages))

    # The template decides the default system prompt itself, so none is added here.
    stops = (eos_token,) if eos_token else ()
    return ChatFormat(TEMPLATE_FORMAT_ID, "the chat template carried by the model", None, segments, (), stops)


def _align_contents(pieces: list[str], messages: list[dict], rendered: str) -> list[Segment]:
    """Segments from a render with marked contents (`pieces` alternate markup and message index),
    checked against the real render; a template may strip the text (`| trim`), nothing else."""
    segments, position = [], 0
    for index, piece in enumerate(pieces):
        if index % 2 == 0:
            if not rendered.startswith(piece, position):
                raise _unfollowable_template()
            segments.append(markup(piece))
        else:
            message = messages[int(piece)]
            following = pieces[index + 1]
            text = _content_at(rendered, position, message["content"], following)
            segments.append(content(message["role"], text))
        position += len(segments[-1].text)
    if position != len(rendered):
        raise _unfollowable_template()
    return [segment for segment in segments if segment.text]


def _content_at(rendered: str, position: int, text: str, following: str) -> str:
    for variant in dict.fromkeys((text, text.strip(), text.rstrip(), text.lstrip())):
        end = position + len(variant)
        if rendered.startswith(variant, position) and rendered.startswith(following, end):
            return variant
    raise _unfollowable_template()


def _unfollowable_template() -> TemplateError:
    return TemplateError(
        "the model's chat template rewrites message text, so bayling-local cannot keep it apart from the "
        f"template's special tokens; pass --chat-format with one of: {', '.join(BUILTIN_FORMATS)}"
    )


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
    if "### Instruction:" in template and "ICT/CAS" in template:
        return "bayling-2"
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
