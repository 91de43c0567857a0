"""Glossaries: the file format, the prompt hint limited to the terms a segment contains, and the
report of required terms the output lacks (stderr and the JSON log)."""

from __future__ import annotations

import json

import pytest

from bayling_local.errors import InputTextError
from bayling_local.languages import resolve
from bayling_local.translate.batch import BatchOptions, prepare_batch
from bayling_local.translate.glossary import GlossaryTerm, parse_glossary, term_occurs
from tests.conftest import run_cli

SW, ZH, FR = resolve("sw"), resolve("zh"), resolve("fr")


def test_glossary_rows_header_and_verbatim_terms():
    glossary = parse_glossary("# terms for the river report\nsource\tsw\tzh\nriver\tmto\t河\nbank\t\t银行\nBayLing\n")
    text = "The River bank of BayLing."
    assert glossary.terms_for(text, SW) == [GlossaryTerm("river", "mto"), GlossaryTerm("BayLing", "BayLing")]
    assert glossary.terms_for(text, ZH) == [
        GlossaryTerm("river", "河"),
        GlossaryTerm("bank", "银行"),
        GlossaryTerm("BayLing", "BayLing"),
    ]
    assert parse_glossary("river\tfleuve\n").terms_for("A river.", ZH) == [GlossaryTerm("river", "fleuve")]


def test_terms_match_whole_words_and_unspaced_scripts_anywhere():
    assert term_occurs("bank", "The Bank.") and not term_occurs("bank", "embankment")
    assert term_occurs("河", "这条河很长")


@pytest.mark.parametrize(
    "text, problem",
    [
        ("a\tb\tc\n", "line 1: 3 cells without a header"),
        ("source\tklingon\n", "line 1: header"),
        ("source\tsw\nriver\tmto\textra\n", "line 2: 3 cells, but the header names 2"),
        ("\tmto\n", "is empty"),
    ],
)
def test_malformed_glossary_names_the_line(text, problem):
    with pytest.raises(InputTextError, match=problem):
        parse_glossary(text, "terms.tsv")


def test_prompt_hint_carries_only_the_terms_a_segment_contains(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("The river is wide.\nThe sky is blue.\n")
    glossary = parse_glossary("river\tmto\nsky\tanga\nmountain\tmlima\n")
    plan = prepare_batch(path, [SW], BatchOptions(glossary=glossary))
    assert [item.terms for item in plan.items] == [(GlossaryTerm("river", "mto"),), (GlossaryTerm("sky", "anga"),)]


def test_missing_glossary_terms_are_reported_on_stderr_and_in_the_json_log(tmp_path):
    (tmp_path / "notes.txt").write_text("We crossed the river at noon.\nThe sky was clear.\n")
    (tmp_path / "terms.tsv").write_text("river\tQuetzalriver\nmountain\tZorblat\n")
    result = run_cli(
        "translate",
        "-i",
        str(tmp_path / "notes.txt"),
        "--to",
        "fr",
        "--max-tokens",
        "8",
        "--threads",
        "1",
        "--glossary",
        str(tmp_path / "terms.tsv"),
        "--json-log",
        "-",
    )
    assert result.returncode == 0, result.stderr
    stderr = result.stderr.decode()
    assert "glossary: 1 required term(s) missing" in stderr
    assert "line 1 fra_Latn: missing glossary term 'Quetzalriver' (for 'river')" in stderr
    assert "Zorblat" not in stderr  # `mountain` is in no segment: nothing was required
    summary = json.loads(result.stdout.decode().splitlines()[-1])
    assert summary["event"] == "summary" and summary["glossary_missing"] == [
        {"line": 1, "target": "fra_Latn", "source_term": "river", "required": "Quetzalriver"}
    ]


def test_glossary_file_errors_are_one_line(tmp_path):
    (tmp_path / "notes.txt").write_text("Hello.\n")
    (tmp_path / "terms.tsv").write_text("a\tb\tc\n")
    result = run_cli(
        "translate", "-i", str(tmp_path / "notes.txt"), "--to", "fr", "--glossary", str(tmp_path / "terms.tsv")
    )
    assert result.returncode == 2 and b"terms.tsv line 1" in result.stderr
    assert not (tmp_path / "notes.fra_Latn.txt").exists()
