"""The tokenized cache: the same rows as in-memory tokenization and packing, built once and reused."""

from __future__ import annotations

import json
import pickle

import pytest

from bayling_local.prompts import get_chat_format
from bayling_local.training import token_cache
from bayling_local.training.token_cache import CacheSpec, TokenCache, build_or_open
from bayling_local.training.tokenization import encode_all, pack, unpacked
from tests.fixtures.training.support import build_llama2_style_tokenizer
from tests.test_training_tokenization import CONVERSATIONS


@pytest.fixture(scope="module")
def llama2_style(tmp_path_factory):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(build_llama2_style_tokenizer(tmp_path_factory.mktemp("l2")))


def write_jsonl(path, conversations):
    path.write_text("".join(json.dumps({"messages": c}, ensure_ascii=False) + "\n" for c in conversations), "utf-8")
    return path


def rows_of(dataset) -> list[tuple[list, list, list]]:
    return [(row["input_ids"], row["labels"], row["position_ids"]) for row in (dataset[i] for i in range(len(dataset)))]


@pytest.mark.parametrize("packing", [True, False], ids=["packed", "unpacked"])
def test_cached_rows_equal_in_memory_tokenization_and_packing(tmp_path, llama2_style, packing):
    chat_format = get_chat_format("bayling-2")
    conversations = CONVERSATIONS * 7  # several rows of several examples each
    data = write_jsonl(tmp_path / "train.jsonl", conversations)
    cache = build_or_open(tmp_path / "cache", CacheSpec((data,), 512, packing), llama2_style, chat_format)
    examples, dropped = encode_all(conversations, llama2_style, chat_format, 512)
    expected = pack(examples, 512) if packing else unpacked(examples)
    assert [(r.input_ids, r.labels, r.position_ids) for r in expected] == rows_of(cache)
    assert (cache.examples, cache.dropped, cache.tokens()) == (len(examples), dropped, sum(map(len, expected)))
    assert len(cache) == len(expected) and (not packing or len(cache) < len(examples))


def test_second_open_maps_the_cache_and_a_changed_file_or_setting_rebuilds(tmp_path, llama2_style):
    chat_format = get_chat_format("bayling-2")
    data = write_jsonl(tmp_path / "train.jsonl", CONVERSATIONS)
    built = []
    first = build_or_open(tmp_path / "cache", CacheSpec((data,), 512, True), llama2_style, chat_format, announce=built.append)
    again = build_or_open(tmp_path / "cache", CacheSpec((data,), 512, True), llama2_style, chat_format, announce=built.append)
    assert len(built) == 1 and again.folder == first.folder and rows_of(again) == rows_of(first)
    other_length = build_or_open(tmp_path / "cache", CacheSpec((data,), 256, True), llama2_style, chat_format)
    other_format = build_or_open(tmp_path / "cache", CacheSpec((data,), 512, True), llama2_style, get_chat_format("chatml"))
    write_jsonl(data, CONVERSATIONS[:2])
    changed = build_or_open(tmp_path / "cache", CacheSpec((data,), 512, True), llama2_style, chat_format)
    assert len({first.folder, other_length.folder, other_format.folder, changed.folder}) == 4
    assert changed.examples == 2 and not list((tmp_path / "cache").glob("*.partial-*"))


def test_dataset_pickles_as_its_folder_and_reads_the_same_rows(tmp_path, llama2_style):
    data = write_jsonl(tmp_path / "train.jsonl", CONVERSATIONS)
    cache = build_or_open(tmp_path / "cache", CacheSpec((data,), 512, True), llama2_style, get_chat_format("bayling-2"))
    cache[0]  # maps the columns
    copied = pickle.loads(pickle.dumps(cache))
    assert isinstance(copied, TokenCache) and len(pickle.dumps(cache)) < 2000
    assert rows_of(copied) == rows_of(cache)
    with pytest.raises(IndexError):
        cache[len(cache)]


def test_a_build_tells_how_far_it_is_and_how_fast(tmp_path, llama2_style, monkeypatch):
    monkeypatch.setattr(token_cache, "PROGRESS_EVERY", 4)
    data = write_jsonl(tmp_path / "train.jsonl", CONVERSATIONS * 3)  # 9 conversations
    told = []
    build_or_open(tmp_path / "cache", CacheSpec((data,), 512, True), llama2_style, get_chat_format("bayling-2"),
                  announce=told.append)
    assert told[0].startswith("tokenizing ") and len(told) == 3
    assert [line.split(" conversations,")[0] for line in told[1:]] == ["tokenized 4", "tokenized 8"]
    assert all(line.endswith(" conversations/s)") for line in told[1:])
