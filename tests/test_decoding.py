"""Text assembly shared by every backend: stop strings across tokens, characters across tokens."""

from __future__ import annotations

from bayling_local.backends.decoding import TextAssembler, resolve_stop_token_ids


def feed_all(assembler: TextAssembler, pieces: list[bytes]) -> list[str]:
    return [assembler.feed(piece) for piece in pieces]


def test_stop_string_spanning_tokens_is_cut_and_never_shown():
    assembler = TextAssembler(["###"])
    shown = feed_all(assembler, [b"Hello", b" #", b"#", b"# tail"])
    assert "".join(shown) == "Hello " and assembler.stopped
    assert assembler.text == "Hello "


def test_held_back_prefix_is_released_when_it_turns_out_not_to_be_a_stop():
    assembler = TextAssembler(["###"])
    assert feed_all(assembler, [b"a #", b"#", b"b"]) == ["a ", "", "##b"]


def test_character_split_across_tokens_comes_out_whole():
    smile = "😀".encode()
    assembler = TextAssembler()
    assert feed_all(assembler, [smile[:2], smile[2:], b"!"]) == ["", "😀", "!"]


def test_half_a_character_at_the_end_is_dropped_not_shown_as_replacement():
    assembler = TextAssembler()
    assembler.feed(b"ok " + "你".encode()[:2])
    assert assembler.finish() == ""
    assert assembler.text == "ok "


def test_whole_text_updates_hold_back_a_trailing_replacement_character():
    assembler = TextAssembler()
    assert assembler.update("caf\ufffd") == "caf"
    assert assembler.update("café") == "é"


def test_stop_tokens_that_are_not_single_tokens_become_stop_strings():
    vocab = {"<|eot_id|>": [9], "</s>": [1, 2, 3]}
    ids, strings = resolve_stop_token_ids(lambda text: vocab[text], ["<|eot_id|>", "</s>"])
    assert ids == {9} and strings == ("</s>",)
