"""Pieces every backend's decoding loop shares: UTF-8 assembly, stop strings, stop tokens.

A token can end in the middle of a multi-byte character, and a stop string can span several tokens;
`TextAssembler` emits only text that is final, so no stop string and no broken character leaks out.
"""

from __future__ import annotations

import codecs
import threading
from collections.abc import Iterable

from bayling_local.errors import ContextOverflowError, InputTextError

REPLACEMENT_CHAR = "\ufffd"


class TextAssembler:
    """Release generated text piece by piece: never past a stop string, never half a character.

    Backends that see each token's bytes call `feed`; backends that re-decode all generated ids each
    step call `update` with the whole text. A tail that could still grow into a stop string is held
    back, and so is a trailing U+FFFD (bytes the next token may complete); bytes of a character cut in
    half when generation ends are dropped, not shown.
    """

    def __init__(self, stop_strings: Iterable[str] = ()):
        self.stop_strings = tuple(stop for stop in stop_strings if stop)
        self.text = ""
        """Everything released so far: the completion's text."""
        self.stopped = False
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._decoded = ""

    def feed(self, token_bytes: bytes) -> str:
        """Add one token's bytes; return the text that can be shown now ('' while holding back)."""
        self._decoded += self._decoder.decode(token_bytes)
        return self.update(self._decoded)

    def update(self, generated: str) -> str:
        """`generated` is all text so far; return the part newly safe to show."""
        if self.stopped:
            return ""
        stop_at = self._first_stop(generated)
        if stop_at is not None:
            self.stopped = True
            return self._release(generated, stop_at)
        end = self._complete_end(generated)
        held = max((_overlap(generated[:end], stop) for stop in self.stop_strings), default=0)
        return self._release(generated, end - held)

    def finish(self, generated: str | None = None) -> str:
        """Release what was held back when generation ends for another reason than a stop string."""
        if self.stopped:
            return ""
        generated = self._decoded if generated is None else generated
        return self._release(generated, self._complete_end(generated))

    def _first_stop(self, generated: str) -> int | None:
        # Released text never holds the start of a stop string, so a match begins after it.
        found = [generated.find(stop, len(self.text)) for stop in self.stop_strings]
        return min((i for i in found if i >= 0), default=None)

    def _complete_end(self, generated: str) -> int:
        end = len(generated)
        while end > len(self.text) and generated[end - 1] == REPLACEMENT_CHAR:
            end -= 1
        return end

    def _release(self, generated: str, end: int) -> str:
        piece = generated[len(self.text) : max(end, len(self.text))]
        self.text += piece
        return piece


def _overlap(text: str, stop: str) -> int:
    """Length of the longest tail of `text` that is a proper prefix of `stop`."""
    for length in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:length]):
            return length
    return 0


_TOKENIZERS_LOCK = threading.Lock()


def encode_with_tokenizers(tokenizer, text: str, *, special: bool = True) -> list[int]:
    """Ids of `text` from a `tokenizers.Tokenizer`, nothing added; `special=False` encodes special-token
    texts (`<|eot_id|>`) as plain text. The switch is a property of the shared tokenizer, so it is set
    and read under a lock."""
    with _TOKENIZERS_LOCK:
        tokenizer.encode_special_tokens = not special
        try:
            return tokenizer.encode(text, add_special_tokens=False).ids
        finally:
            tokenizer.encode_special_tokens = False


def prompt_token_ids(backend, prompt) -> list[int]:
    """Ids of a prompt that leaves room to generate: text gets the model's BOS, ids are checked as given.

    Text is a raw prompt: special tokens written in it are parsed. Chat prompts arrive as ids
    (`Model.prompt_ids`), where only the chat format's markup became special tokens."""
    info = backend.info
    if isinstance(prompt, str):
        ids = backend.tokenize(prompt, add_bos=True)
    else:
        ids = [int(token) for token in prompt]
        bad = [token for token in ids if not 0 <= token < info.vocab_size]
        if bad:
            raise InputTextError(f"token id {bad[0]} is outside this model's vocabulary (0..{info.vocab_size - 1})")
    if not ids:
        raise InputTextError("the prompt is empty and the model adds no BOS token to start from")
    if len(ids) >= info.context_length:
        raise ContextOverflowError(
            f"the input is {len(ids)} tokens; the context window is {info.context_length} "
            "(shorten the input or raise --context)"
        )
    return ids


def continuation_ids(backend, prompt, prompt_ids: list[int], text: str) -> list[int]:
    """Tokens of `text` as they follow the prompt (merged at the boundary the way the model sees it)."""
    if isinstance(prompt, str):
        joined = backend.tokenize(prompt + text, add_bos=True)
        if joined[: len(prompt_ids)] == prompt_ids and len(joined) > len(prompt_ids):
            return joined[len(prompt_ids) :]
    return backend.tokenize(text, add_bos=False)


def resolve_stop_token_ids(tokenize, stop_tokens: Iterable[str]) -> tuple[set[int], tuple[str, ...]]:
    """Map special-token texts to ids with the model's vocabulary.

    Texts that are not one token in this vocabulary become stop *strings* instead, so a format's stop
    still works with a vocabulary that spells it in pieces. Returns (ids, leftover stop strings).
    """
    ids, strings = set(), []
    for text in stop_tokens:
        token_ids = tokenize(text)
        if len(token_ids) == 1:
            ids.add(token_ids[0])
        else:
            strings.append(text)
    return ids, tuple(strings)


def stop_token_set(info, config) -> frozenset[int]:
    """Token ids that end generation: `config.stop_token_ids`, and the model's end-of-generation ids
    (`info.end_of_generation_ids`) unless `config.ignore_eos`."""
    model_ids = frozenset() if config.ignore_eos else info.end_of_generation_ids
    return model_ids | frozenset(config.stop_token_ids)
