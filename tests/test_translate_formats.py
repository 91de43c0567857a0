"""Every file format through the real bundled model: structure kept, every segment translated,
untranslatable parts untouched, two targets at once."""

from __future__ import annotations

import functools
import json

import pytest

from bayling_local.languages import resolve
from bayling_local.translate.batch import BatchOptions, translate_file
from bayling_local.translate.document import ReadOptions
from bayling_local.translate.format_markdown import read_markdown
from bayling_local.translate.format_srt import wrap_lines

FR, SW = resolve("fr"), resolve("sw")


@functools.cache
def bundled_model():
    """The bundled model through real llama.cpp, on one thread: with two, llama.cpp's spinning worker
    threads crawl (10x slower) whenever other jobs share a 2-core machine. The other translate test
    modules use it too."""
    from bayling_local.backends.base import LoadOptions
    from bayling_local.model import open_model

    return open_model(None, options=LoadOptions(device="cpu", context_length=2048, threads=1))


@pytest.fixture
def model():
    return bundled_model()


def translate(model, path, targets=(FR, SW), **options):
    report = translate_file(model, path, list(targets), options=BatchOptions(max_tokens=8, **options))
    assert report.completed and report.empty == [] and report.translated == report.pieces > 0
    assert not list(path.parent.glob("*.journal")) and not list(path.parent.glob(".*.tmp"))
    return report


def test_text_keeps_every_line_and_writes_one_file_per_target(model, tmp_path):
    source = "Good morning.\n\nThe library opens at nine.\n2024\n  Thank you very much.\n"
    path = tmp_path / "notes.txt"
    path.write_text(source)
    report = translate(model, path)
    assert report.segments == 4 and report.pieces == 6  # `2024` has no letters: copied, not translated
    for code in ("fra_Latn", "swh_Latn"):
        lines = (tmp_path / f"notes.{code}.txt").read_text().split("\n")
        assert len(lines) == len(source.split("\n"))
        assert lines[1] == "" and lines[3] == "2024" and lines[5] == ""
        assert lines[4].startswith("  ") and all(lines[i].strip() for i in (0, 2, 4))
        assert lines[0] != "Good morning."
    assert path.read_text() == source


def test_jsonl_adds_one_field_per_target_and_keeps_the_others(model, tmp_path):
    records = [
        {"id": 1, "text": "Hello, my friend.", "meta": {"k": [1, 2]}},
        {"text": "Where is the station?", "n": 2.5},
    ]
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(records[0]) + "\n\n" + json.dumps(records[1]) + "\n")
    translate(model, path)
    lines = (tmp_path / "data.fra_Latn+swh_Latn.jsonl").read_text().split("\n")
    assert lines[1] == "" and lines[3] == "" and len(lines) == 4
    for line, record in zip((lines[0], lines[2]), records):
        out = json.loads(line)
        assert list(out) == [*record, "text_fra_Latn", "text_swh_Latn"]
        assert {k: out[k] for k in record} == record
        assert out["text_fra_Latn"].strip() and out["text_swh_Latn"].strip()


def test_jsonl_field_option_picks_the_field(model, tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"body": "Good night.", "text": 7}\n')
    translate(model, path, targets=(FR,), field="body")
    out = json.loads((tmp_path / "data.fra_Latn.jsonl").read_text())
    assert set(out) == {"body", "text", "body_fra_Latn"} and out["text"] == 7


@pytest.mark.parametrize("extension, separator", [("tsv", "\t"), ("csv", ",")])
def test_tables_add_one_column_per_target(model, tmp_path, extension, separator):
    import csv

    rows = [["id", "sentence", "note"], ["1", "Hello, my friend.", "x"], ["2", "Where is the station?", "y"]]
    path = tmp_path / f"table.{extension}"
    with path.open("w", newline="") as file:
        csv.writer(file, delimiter=separator, lineterminator="\n").writerows(rows)
    translate(model, path, column="sentence")
    with (tmp_path / f"table.fra_Latn+swh_Latn.{extension}").open(newline="") as file:
        out = list(csv.reader(file, delimiter=separator, quoting=csv.QUOTE_NONE if separator == "\t" else 0))
    assert out[0] == rows[0] + ["sentence_fra_Latn", "sentence_swh_Latn"]
    assert [row[:3] for row in out] == rows
    assert all(row[3].strip() and row[4].strip() for row in out[1:])


SRT = """1
00:00:01,000 --> 00:00:02,500
Hello, my friend.
How are you today?

2
00:00:03,000 --> 00:00:04,000
I am fine, thank you.

3
00:00:05,000 --> 00:00:07,250 X1:10 X2:20
Good night.
"""


def test_srt_keeps_numbers_and_timings_and_wraps_cues_to_their_line_count(model, tmp_path):
    path = tmp_path / "film.srt"
    path.write_text(SRT)
    report = translate(model, path, max_chars=1000)
    assert report.segments == 3  # the two-line cue is one segment
    for code in ("fra_Latn", "swh_Latn"):
        cues = (tmp_path / f"film.{code}.srt").read_text().split("\n\n")
        source_cues = SRT.split("\n\n")
        assert len(cues) == len(source_cues)
        for cue, source_cue in zip(cues, source_cues):
            lines, source_lines = cue.strip("\n").split("\n"), source_cue.strip("\n").split("\n")
            assert lines[:2] == source_lines[:2]  # number and timing untouched
            assert 1 <= len(lines) - 2 <= len(source_lines) - 2 and all(line.strip() for line in lines[2:])
            assert lines[2:] != source_lines[2:]


def test_wrap_lines_balances_at_spaces_and_never_adds_lines():
    assert wrap_lines("one two three four", 2) == ["one two", "three four"]
    assert wrap_lines("word", 2) == ["word"]
    assert wrap_lines("a b c", 3) == ["a", "b", "c"]
    assert wrap_lines("你好世界", 2) == ["你好世界"]


MARKDOWN = """---
title: Notes on rivers
tags: [water, maps]
---
# Getting started

Install it with `pip install bayling-local` and read https://example.org/docs today.

- First item with a [useful link](https://example.org/x "Title") inside.
- Second item

```bash
echo "Do not translate this sentence."
```

| Name | Value |
|------|-------|
| Speed | Fast |

    indented code stays as it is
"""


def test_markdown_reader_leaves_code_urls_and_front_matter_out_of_the_segments():
    document = read_markdown(MARKDOWN, ReadOptions("notes.md"))
    texts = [s.text for s in document.segments]
    joined = "\n".join(texts)
    for kept in ("title", "pip install", "https://", "echo", "indented code", "|", "](", "# "):
        assert kept not in joined, kept
    assert "Getting started" in texts and "useful link" in texts and any("Second item" in t for t in texts)


def test_markdown_keeps_code_urls_front_matter_and_markers(model, tmp_path):
    path = tmp_path / "notes.md"
    path.write_text(MARKDOWN)
    translate(model, path)
    source = MARKDOWN.split("\n")
    for code in ("fra_Latn", "swh_Latn"):
        out = (tmp_path / f"notes.{code}.md").read_text().split("\n")
        assert len(out) == len(source)
        assert out[:4] == source[:4]  # front matter
        assert out[11:14] == source[11:14] and out[19] == source[19]  # fenced and indented code
        assert out[4].startswith("# ") and out[4] != source[4]
        assert "`pip install bayling-local`" in out[6] and "https://example.org/docs" in out[6]
        assert out[8].startswith("- ") and '](https://example.org/x "Title")' in out[8]
        assert out[9].startswith("- ")
        assert out[16] == source[16] and out[15].count("|") == 3
