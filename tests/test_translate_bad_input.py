"""Bad input to `translate -i`: one clear line on stderr, a non-zero exit, the input untouched and no
output (or half-written output) left behind."""

from __future__ import annotations

import json

import pytest

from bayling_local.languages import resolve
from bayling_local.translate.batch import BatchOptions, translate_file
from tests.conftest import run_cli
from tests.test_cli import assert_one_line_error
from tests.test_translate_formats import bundled_model

ONE_THREAD = ("--max-tokens", "4", "--threads", "1")  # see test_translate_resume.FLAGS


def refused(folder, input_name, *args, contains, code=2):
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    result = run_cli("translate", "-i", str(folder / input_name), "--to", "fr", *ONE_THREAD, *args)
    assert_one_line_error(result, code=code, contains=contains)
    after = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    assert after == before  # input untouched, nothing written (no output, temporary file or journal)
    return result


def test_missing_input_file(tmp_path):
    refused(tmp_path, "nothing.txt", contains="does not exist")


def test_input_that_is_a_folder(tmp_path):
    (tmp_path / "folder.txt").mkdir()
    refused(tmp_path, "folder.txt", contains="is a folder")


def test_non_utf8_input_names_the_line(tmp_path):
    (tmp_path / "latin1.txt").write_bytes(b"Good morning.\nCaf\xe9 au lait.\n")
    refused(tmp_path, "latin1.txt", contains="not UTF-8 text (byte 0xe9 on line 2)")


def test_malformed_jsonl_line_names_the_line_and_the_way_out(tmp_path):
    (tmp_path / "data.jsonl").write_text('{"text": "Hello."}\n\n{"text": "Bye.",}\n')
    result = refused(tmp_path, "data.jsonl", contains="data.jsonl line 3: not valid JSON")
    assert b"--skip-bad" in result.stderr


def test_jsonl_line_without_the_field(tmp_path):
    (tmp_path / "data.jsonl").write_text('{"text": "Hello."}\n{"body": "Bye."}\n')
    refused(tmp_path, "data.jsonl", contains="line 2: no field 'text' (fields: body; choose one with --field)")


def test_jsonl_field_that_is_not_text(tmp_path):
    (tmp_path / "data.jsonl").write_text('{"text": 3}\n')
    refused(tmp_path, "data.jsonl", contains="line 1: field 'text' is not a string")


def test_skip_bad_copies_bad_lines_through_and_reports_them(tmp_path):
    lines = ['{"text": "Good morning."}', "{broken", '{"body": "no text field"}', '{"text": "Good night."}']
    (tmp_path / "data.jsonl").write_text("\n".join(lines) + "\n")
    result = run_cli(
        "translate",
        "-i",
        str(tmp_path / "data.jsonl"),
        "--to",
        "fr",
        *ONE_THREAD,
        "--skip-bad",
        "--json-log",
        str(tmp_path / "log.jsonl"),
    )
    assert result.returncode == 0, result.stderr
    out = (tmp_path / "data.fra_Latn.jsonl").read_text().splitlines()
    assert out[1:3] == lines[1:3] and "text_fra_Latn" in json.loads(out[3])
    stderr = result.stderr.decode()
    assert "line 2: copied untranslated (not valid JSON" in stderr and "line 3: copied untranslated (no field" in stderr
    summary = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[-1])
    assert [s["line"] for s in summary["skipped"]] == [2, 3]


def test_srt_with_a_broken_timing_line_names_the_line(tmp_path):
    (tmp_path / "film.srt").write_text("1\n00:00:01,000 --> 00:00:02,000\nHello.\n\n2\n00:00:03 -> 00:00:04\nBye.\n")
    refused(tmp_path, "film.srt", contains="film.srt line 6: expected a timing line")


def test_table_without_the_column(tmp_path):
    (tmp_path / "table.tsv").write_text("id\tbody\n1\tHello.\n")
    refused(tmp_path, "table.tsv", contains="no column 'text' in its header row (columns: id, body)")


def test_output_equal_to_the_input(tmp_path):
    (tmp_path / "notes.txt").write_text("Hello.\n")
    refused(tmp_path, "notes.txt", "-o", str(tmp_path / "notes.txt"), contains="is the input file")


def test_unknown_target_language(tmp_path):
    (tmp_path / "notes.txt").write_text("Hello.\n")
    result = run_cli("translate", "-i", str(tmp_path / "notes.txt"), "--to", "fr,swahilli")
    assert_one_line_error(result, code=2, contains="did you mean: Swahili (swh_Latn)")


def test_unknown_format(tmp_path):
    (tmp_path / "notes.txt").write_text("Hello.\n")
    refused(tmp_path, "notes.txt", "--format", "pdf", contains="unknown format 'pdf'; choose one of: text, jsonl")


def test_unknown_extension_asks_for_a_format(tmp_path):
    (tmp_path / "notes.pdf").write_text("Hello.\n")
    refused(tmp_path, "notes.pdf", contains="pass --format")


def test_several_targets_into_one_named_file_need_the_lang_placeholder(tmp_path):
    (tmp_path / "notes.md").write_text("Hello.\n")
    result = refused(tmp_path, "notes.md", "--to", "fr,sw", "-o", str(tmp_path / "out.md"), contains="{lang}")
    assert result.returncode == 2


def test_file_options_without_an_input_file_are_refused():
    assert_one_line_error(run_cli("translate", "--to", "fr", "-o", "out.txt", "Hello"), code=2, contains="with -i")


def test_a_failure_during_translation_leaves_no_output(tmp_path):
    model = bundled_model()
    path = tmp_path / "notes.txt"
    path.write_text("Hello.\nGood night.\n")

    class Broken(Exception):
        pass

    def explode(progress):
        if progress.batch == 1:
            raise Broken

    with pytest.raises(Broken):
        translate_file(model, path, [resolve("fr")], options=BatchOptions(max_tokens=4, batch_size=1), progress=explode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.fra_Latn.txt.journal", "notes.txt"]
