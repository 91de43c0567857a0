"""Readers of FLORES-200, XCOPA and Belebele, read in place from the shared archives."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bayling_local.errors import UnknownLanguageError
from bayling_local.evaldata import (
    EvalDataError,
    belebele_items,
    flores_languages,
    flores_parallel,
    flores_sentences,
    xcopa_items,
    xcopa_languages,
)


def shared_data() -> Path:
    path = Path(os.environ.get("BAYLING_SHARED_DATA") or Path(__file__).parent.parents[1] / "shared" / "data")
    return path


@pytest.fixture(scope="module")
def flores() -> Path:
    archive = shared_data() / "flores200_dev_devtest_204langs.tar.xz"
    if not archive.is_file():
        pytest.skip(f"FLORES-200 archive not found at {archive} (set BAYLING_SHARED_DATA)")
    return archive


@pytest.fixture(scope="module")
def xcopa() -> Path:
    archive = shared_data() / "xcopa.tar.xz"
    if not archive.is_file():
        pytest.skip(f"XCOPA archive not found at {archive} (set BAYLING_SHARED_DATA)")
    return archive


def test_flores_lists_all_204_languages(flores):
    codes = flores_languages(flores)
    assert len(codes) == 204
    assert {"eng_Latn", "swh_Latn", "zho_Hans"} <= set(codes)


def test_flores_aliases_read_the_same_aligned_lines(flores):
    by_code = flores_sentences(flores, "swh_Latn", "devtest", limit=3)
    by_alias = flores_sentences(flores.parent, "sw", "devtest", limit=3)  # the folder holding the archive works too
    assert by_code == by_alias and len(by_code) == 3
    full = flores_parallel(flores, ["eng_Latn", "fr"], "dev")
    assert len(full["eng_Latn"]) == len(full["fra_Latn"]) == 997


def test_flores_errors_name_the_problem(flores, tmp_path):
    with pytest.raises(EvalDataError, match="does not exist"):
        flores_sentences(tmp_path / "missing", "eng_Latn")
    with pytest.raises(UnknownLanguageError):
        flores_sentences(flores, "klingon")
    with pytest.raises(EvalDataError, match="split"):
        flores_sentences(flores, "eng_Latn", "train")


def test_flores_reads_an_unpacked_folder(tmp_path):
    (tmp_path / "devtest").mkdir()
    (tmp_path / "devtest" / "eng_Latn.devtest").write_text("one\ntwo\n", encoding="utf-8")
    assert flores_languages(tmp_path) == ["eng_Latn"]
    assert flores_sentences(tmp_path, "en") == ["one", "two"]
    with pytest.raises(EvalDataError, match="no FLORES-200 devtest file for fra_Latn"):
        flores_sentences(tmp_path, "fr")


def test_xcopa_question_is_taken_from_the_agreeing_languages(xcopa):
    reference = [item.question for item in xcopa_items(xcopa, "et")]
    for lang in ("sw", "th", "tr"):
        raw = [item.question for item in xcopa_items(xcopa, lang, fix_questions=False)]
        fixed = [item.question for item in xcopa_items(xcopa, lang)]
        assert raw != reference, f"{lang}: the upstream bug this fix is for is gone"
        assert fixed == reference


def test_xcopa_languages_and_aliases(xcopa):
    assert xcopa_languages(xcopa) == ["et", "ht", "id", "it", "qu", "sw", "ta", "th", "tr", "vi", "zh"]
    assert xcopa_items(xcopa, "swh_Latn", limit=2) == xcopa_items(xcopa, "Swahili", limit=2)
    assert len(xcopa_items(xcopa, "zh", "val")) == 100
    with pytest.raises(EvalDataError, match="XCOPA has no French"):
        xcopa_items(xcopa, "fr")


def test_belebele_reads_jsonl_file_and_folder(tmp_path):
    row = {
        "flores_passage": "Passage.",
        "question": "Which?",
        "mc_answer1": "a",
        "mc_answer2": "b",
        "mc_answer3": "c",
        "mc_answer4": "d",
        "correct_answer_num": "3",
        "dialect": "eng_Latn",
    }
    file = tmp_path / "eng_Latn.jsonl"
    file.write_text(json.dumps(row) + "\n", encoding="utf-8")
    items = belebele_items(file)
    assert items[0].label == 2 and items[0].answers == ("a", "b", "c", "d")
    assert belebele_items(tmp_path, "en") == items
    with pytest.raises(EvalDataError, match="has no fra_Latn.jsonl"):
        belebele_items(tmp_path, "fr")
    file.write_text('{"flores_passage": "x"}\n', encoding="utf-8")
    with pytest.raises(EvalDataError, match="not Belebele-style"):
        belebele_items(file)
