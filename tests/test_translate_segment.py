"""Sentence splitting of long segments (joined back into one output line), and `--from auto`."""

from __future__ import annotations

import sys

import pytest

from bayling_local.errors import BackendUnavailableError
from bayling_local.languages import resolve
from bayling_local.translate.batch import BatchOptions, prepare_batch, translate_file
from bayling_local.translate.segment import join_pieces, split_segment
from tests.conftest import run_cli
from tests.test_cli import assert_one_line_error
from tests.test_translate_formats import bundled_model

PARAGRAPH = (
    "Dr. Okafor opened the small library at nine o'clock. Children came in with wet shoes and loud voices. "
    "She asked them to sit near the window and read quietly. By noon every chair was taken!"
)


def test_long_segments_split_into_sentence_groups_that_join_back():
    split = split_segment("  " + PARAGRAPH + " ", max_chars=110, source=resolve("en"))
    assert len(split.pieces) == 2 and all(len(p) <= 110 for p in split.pieces)  # two sentences a piece
    assert " ".join(split.pieces) == PARAGRAPH
    assert join_pieces(split, ["A.", "B."], resolve("fr")) == "  A. B. "
    assert join_pieces(split, ["甲。", "乙。"], resolve("zh")) == "  甲。乙。 "
    sentences = split_segment(PARAGRAPH, max_chars=0).pieces
    assert len(sentences) == 4 and sentences[0].startswith("Dr. Okafor opened")  # "Dr." ends no sentence
    assert split_segment(PARAGRAPH, max_chars=1000).pieces == (PARAGRAPH,)


def test_a_long_paragraph_gives_one_output_line(tmp_path):
    model = bundled_model()
    path = tmp_path / "story.txt"
    path.write_text(PARAGRAPH + "\nThe end.\n")
    report = translate_file(model, path, [resolve("fr")], options=BatchOptions(max_tokens=6, max_chars=0))
    assert report.segments == 2 and report.pieces == 5  # four sentences, then "The end."
    lines = (tmp_path / "story.fra_Latn.txt").read_text().split("\n")
    assert len(lines) == 3 and lines[2] == "" and all(lines[:2])
    assert len(lines[0]) > len(lines[1])


def test_from_auto_detects_the_source_language(tmp_path):
    path = tmp_path / "habari.txt"
    path.write_text("Habari za asubuhi, rafiki yangu.\nNinapenda kusoma vitabu vya historia kila siku.\n")
    plan = prepare_batch(path, [resolve("fr"), resolve("sw")], BatchOptions(detect_source=True))
    assert plan.source == resolve("sw") and plan.detected_source
    assert {item.target.code for item in plan.items} == {"fra_Latn"}  # Swahili to Swahili is copied


def test_from_auto_without_a_detector_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "py3langid", None)
    path = tmp_path / "notes.txt"
    path.write_text("Good morning.\n")
    with pytest.raises(BackendUnavailableError, match=r"pip install 'bayling-local\[detect\]'"):
        prepare_batch(path, [resolve("fr")], BatchOptions(detect_source=True))


def test_cli_from_auto_without_a_detector_is_one_line(tmp_path):
    blocker = tmp_path / "site"
    blocker.mkdir()
    (blocker / "py3langid.py").write_text("raise ImportError('not installed')\n")
    (tmp_path / "notes.txt").write_text("Good morning.\n")
    result = run_cli(
        "translate", "-i", str(tmp_path / "notes.txt"), "--to", "fr", "--from", "auto", env={"PYTHONPATH": str(blocker)}
    )
    assert_one_line_error(result, code=1, contains="--from auto needs a language detector")
    assert not (tmp_path / "notes.fra_Latn.txt").exists()
