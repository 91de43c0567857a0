"""A checkpoint's tokenizer as GGUF metadata: llama.cpp's vocabulary keys plus the reference tokenizer.

The Hugging Face tokenizer (as `AutoTokenizer` loads it) is the reference. Byte-level BPE vocabularies
(Llama-3, BayLing-3, SmolLM2) become `tokenizer.ggml.model = gpt2` with merges and llama.cpp's name for
the pre-tokenizer; SentencePiece vocabularies (Llama-2, BayLing-2) become `llama` with scores and token
types from `tokenizer.model`. The reference tokenizer's JSON is carried whole under
`bayling.tokenizer_json`, so our llama.cpp backend tokenizes exactly as Hugging Face does.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from bayling_local.errors import InvalidModelFileError

TOKENIZER_JSON_KEY = "bayling.tokenizer_json"


class TokenType:
    """llama.cpp's token types (llama_token_type / gguf.TokenType)."""

    NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


LLAMA3_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
    r"\s*[\r\n]+|\s+(?!\S)|\s+"
)


@dataclass(frozen=True)
class PreTokenizerName:
    """A Hugging Face pre-tokenizer, by its signature, and the name llama.cpp knows it by."""

    name: str
    signature: str
    models: str


# Add a row to support another byte-level BPE family; the signature is `pre_tokenizer_signature`'s.
PRE_TOKENIZERS: tuple[PreTokenizerName, ...] = (
    PreTokenizerName("llama-bpe", f"Split[{LLAMA3_SPLIT_REGEX}]+ByteLevel[noregex]", "Llama-3, BayLing-3"),
    PreTokenizerName("smollm", "Digits[individual]+ByteLevel[regex]", "SmolLM, SmolLM2, StarCoder"),
    PreTokenizerName("gpt-2", "ByteLevel[regex]", "GPT-2 style byte-level BPE"),
)


def pre_tokenizer_signature(pre_tokenizer: dict | None) -> str:
    """A short canonical description of a tokenizer.json `pre_tokenizer` (what decides the splits)."""
    if not pre_tokenizer:
        return "none"
    if pre_tokenizer.get("type") == "Sequence":
        return "+".join(pre_tokenizer_signature(p) for p in pre_tokenizer.get("pretokenizers", []))
    kind = pre_tokenizer.get("type", "?")
    if kind == "Split":
        pattern = pre_tokenizer.get("pattern", {})
        return f"Split[{pattern.get('Regex', pattern.get('String', ''))}]"
    if kind == "Digits":
        return "Digits[individual]" if pre_tokenizer.get("individual_digits") else "Digits[grouped]"
    if kind == "ByteLevel":
        return "ByteLevel[regex]" if pre_tokenizer.get("use_regex", True) else "ByteLevel[noregex]"
    return kind


def llama_cpp_pre_tokenizer(pre_tokenizer: dict | None) -> str | None:
    signature = pre_tokenizer_signature(pre_tokenizer)
    return next((row.name for row in PRE_TOKENIZERS if row.signature == signature), None)


@dataclass
class GGUFVocab:
    """Everything `tokenizer.*` in a GGUF says, plus the carried reference tokenizer."""

    model: str
    """`gpt2` (byte-level BPE) or `llama` (SentencePiece)."""
    pre: str
    tokens: list[str]
    token_types: list[int]
    scores: list[float] | None
    merges: list[str]
    special_ids: dict[str, int]
    """bos, eos, eot, unk, pad -> id."""
    add_bos: bool
    add_eos: bool
    add_space_prefix: bool | None
    chat_template: str | None
    tokenizer_json: str
    warnings: list[str] = field(default_factory=list)

    def write(self, writer) -> None:
        writer.add_tokenizer_model(self.model)
        writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        writer.add_token_types(self.token_types)
        if self.scores is not None:
            writer.add_token_scores(self.scores)
        if self.merges:
            writer.add_token_merges(self.merges)
        for kind, token_id in self.special_ids.items():
            getattr(writer, f"add_{kind}_token_id")(token_id)
        writer.add_add_bos_token(self.add_bos)
        writer.add_add_eos_token(self.add_eos)
        if self.add_space_prefix is not None:
            writer.add_add_space_prefix(self.add_space_prefix)
        if self.chat_template:
            writer.add_chat_template(self.chat_template)
        writer.add_string(TOKENIZER_JSON_KEY, self.tokenizer_json)

    def token_id(self, text: str) -> int | None:
        try:
            return self.tokens.index(text)
        except ValueError:
            return None


def load_reference_tokenizer(folder: Path):
    """The checkpoint's tokenizer as transformers loads it (the reference for every parity check)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InvalidModelFileError(f"could not load the tokenizer of {folder}: {first}") from error


def build_vocab(folder: Path, vocab_size: int, config: dict, end_of_turn: str | None) -> GGUFVocab:
    """The GGUF vocabulary of the checkpoint in `folder`, padded to the model's `vocab_size`.

    `end_of_turn` is the chat format's end-of-turn token (e.g. `<|eot_id|>`): when the vocabulary has
    it, it becomes both the EOT and the EOS token, because that is where an answer ends no matter what
    config.json's eos_token_id says (BayLing-3 ships 128001, `<|end_of_text|>`).
    """
    tokenizer = load_reference_tokenizer(folder)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise InvalidModelFileError(f"the tokenizer of {folder} has no fast (tokenizers) form to carry")
    data = json.loads(backend.to_str())
    if _is_sentencepiece(data):
        vocab = _sentencepiece_vocab(folder, tokenizer, data, vocab_size)
    elif data.get("model", {}).get("type") == "BPE":
        vocab = _bpe_vocab(tokenizer, data, vocab_size)
    else:
        raise InvalidModelFileError(
            f"the tokenizer of {folder} is a {data.get('model', {}).get('type')} model; convert supports "
            "byte-level BPE (tokenizer.json) and SentencePiece (tokenizer.model)"
        )
    vocab.tokenizer_json = backend.to_str()
    vocab.special_ids = _special_ids(tokenizer, config, vocab, end_of_turn)
    vocab.add_bos, vocab.add_eos = _adds_special(tokenizer)
    template = getattr(tokenizer, "chat_template", None)
    vocab.chat_template = template.get("default") if isinstance(template, dict) else template
    return vocab


def _is_sentencepiece(data: dict) -> bool:
    model = data.get("model", {})
    return model.get("type") == "Unigram" or bool(model.get("byte_fallback"))


def _bpe_vocab(tokenizer, data: dict, vocab_size: int) -> GGUFVocab:
    pre = llama_cpp_pre_tokenizer(data.get("pre_tokenizer"))
    warnings = []
    if pre is None:
        signature = pre_tokenizer_signature(data.get("pre_tokenizer"))
        warnings.append(
            f"llama.cpp has no pre-tokenizer known to match '{signature}'; wrote 'default', so runtimes "
            "other than bayling-local may split text differently (bayling-local uses the carried tokenizer)"
        )
        pre = "default"
    tokens, types = _tokens_by_id(tokenizer, vocab_size)
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"].get("merges", [])]
    return GGUFVocab("gpt2", pre, tokens, types, None, merges, {}, False, False, None, None, "", warnings)


def _tokens_by_id(tokenizer, vocab_size: int) -> tuple[list[str], list[int]]:
    by_id = {i: token for token, i in tokenizer.get_vocab().items()}
    if by_id and max(by_id) >= vocab_size:
        raise InvalidModelFileError(
            f"the tokenizer has token id {max(by_id)}, beyond config.json's vocab_size {vocab_size}"
        )
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
        elif i in added:
            tokens.append(added[i].content)
            types.append(TokenType.CONTROL if added[i].special else TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(TokenType.NORMAL)
    return tokens, types


def _sentencepiece_vocab(folder: Path, tokenizer, data: dict, vocab_size: int) -> GGUFVocab:
    model_file = folder / "tokenizer.model"
    if not model_file.is_file():
        return _sentencepiece_vocab_from_json(tokenizer, data, vocab_size)
    from sentencepiece import SentencePieceProcessor

    processor = SentencePieceProcessor(model_file=str(model_file))
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    scores = [-10000.0] * vocab_size
    types = [TokenType.UNUSED] * vocab_size
    for i in range(min(processor.vocab_size(), vocab_size)):
        tokens[i], scores[i], types[i] = processor.id_to_piece(i), processor.get_score(i), _piece_type(processor, i)
    for i, token in tokenizer.added_tokens_decoder.items():
        if i < vocab_size and (i >= processor.vocab_size() or types[i] == TokenType.UNUSED):
            tokens[i], scores[i] = token.content, -1000.0
            types[i] = TokenType.CONTROL if token.special else TokenType.USER_DEFINED
    pieces = processor.encode("a", out_type=str)
    add_space_prefix = bool(pieces) and pieces[0].startswith("\u2581")  # SentencePiece's add_dummy_prefix
    return GGUFVocab("llama", "default", tokens, types, scores, [], {}, False, False, add_space_prefix, None, "")


def _sentencepiece_vocab_from_json(tokenizer, data: dict, vocab_size: int) -> GGUFVocab:
    """A SentencePiece vocabulary rebuilt from a byte-fallback tokenizer.json (no tokenizer.model).

    SentencePiece's BPE scores each piece by its negated rank, which is its id here; byte pieces are
    `<0xNN>`. llama.cpp's own tokenizer needs these; bayling-local tokenizes with the carried JSON anyway.
    """
    tokens, types = _tokens_by_id(tokenizer, vocab_size)
    unknown = data.get("model", {}).get("unk_token")
    scores = []
    for i, (token, kind) in enumerate(zip(tokens, types)):
        if kind == TokenType.NORMAL and re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", token):
            types[i] = TokenType.BYTE
        elif token == unknown:
            types[i] = TokenType.UNKNOWN
        scores.append(-float(i) if types[i] == TokenType.NORMAL else 0.0)
    pieces = tokenizer.tokenize("a")
    add_space_prefix = bool(pieces) and pieces[0].startswith("\u2581")
    return GGUFVocab("llama", "default", tokens, types, scores, [], {}, False, False, add_space_prefix, None, "")


def _piece_type(processor, i: int) -> int:
    if processor.is_unknown(i):
        return TokenType.UNKNOWN
    if processor.is_control(i):
        return TokenType.CONTROL
    if processor.is_unused(i):
        return TokenType.UNUSED
    if processor.is_byte(i):
        return TokenType.BYTE
    return TokenType.NORMAL


def _special_ids(tokenizer, config: dict, vocab: GGUFVocab, end_of_turn: str | None) -> dict[str, int]:
    ids = {
        "bos": tokenizer.bos_token_id if tokenizer.bos_token_id is not None else config.get("bos_token_id"),
        "eos": tokenizer.eos_token_id if tokenizer.eos_token_id is not None else _first(config.get("eos_token_id")),
        "unk": tokenizer.unk_token_id,
        "pad": tokenizer.pad_token_id,
    }
    turn_end = vocab.token_id(end_of_turn) if end_of_turn else None
    if turn_end is not None and vocab.token_types[turn_end] == TokenType.CONTROL:
        ids["eot"] = ids["eos"] = turn_end
    return {kind: int(i) for kind, i in ids.items() if isinstance(i, int) and 0 <= i < len(vocab.tokens)}


def _first(value):
    return value[0] if isinstance(value, list) and value else value


def _adds_special(tokenizer) -> tuple[bool, bool]:
    """Whether the reference tokenizer puts BOS first / EOS last when asked for special tokens."""
    plain = tokenizer.encode("a", add_special_tokens=False)
    full = tokenizer.encode("a", add_special_tokens=True)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    add_bos = bos is not None and len(full) > len(plain) and full[0] == bos
    add_eos = eos is not None and len(full) > len(plain) and full[-1] == eos
    return add_bos, add_eos
