"""XLIFF 1.2 and 2.x through the real bundled model: targets written with their inline codes back, everything
else unchanged, final units untouched, reruns served by the translation memory, broken answers flagged."""

from __future__ import annotations

import copy
import shutil
from collections import Counter
from pathlib import Path

import pytest
from lxml import etree

from bayling_local.backends.base import Completion
from bayling_local.languages import resolve
from bayling_local.translate.batch import BatchOptions, translate_file
from tests.conftest import run_cli
from tests.test_translate_formats import bundled_model

FIXTURES = Path(__file__).parent / "fixtures" / "formats"
FR, SW = resolve("fr"), resolve("sw")
INLINE = {"g", "x", "bx", "ex", "bpt", "ept", "ph", "it", "mrk", "pc", "sc", "ec", "cp", "sm", "em"}


class CountingModel:
    """The real model, counting the conversations sent to it."""

    def __init__(self, model):
        self._model = model
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self._model, name)

    def chat_batch(self, conversations, *args, **kwargs):
        self.calls += len(conversations)
        return self._model.chat_batch(conversations, *args, **kwargs)


class FixedAnswerModel(CountingModel):
    """The real model for everything but the answer, which is always `answer`: the subject is our
    handling of a bad answer, not the model's behaviour."""

    def __init__(self, model, answer: str):
        super().__init__(model)
        self.answer = answer

    def chat_batch(self, conversations, *args, **kwargs):
        self.calls += len(conversations)
        return [Completion(self.answer, [1, 2]) for _ in conversations]


def copy_fixture(name: str, folder: Path) -> Path:
    return Path(shutil.copy(FIXTURES / name, folder / name))


def local(element) -> str:
    return etree.QName(element).localname


def without_targets(path: Path) -> bytes:
    """The file with what a translation may change removed: targets, target languages, segment states, our notes."""
    root = etree.parse(str(path)).getroot()
    for element in list(root.iter()):
        if not isinstance(element.tag, str):
            continue
        if local(element) == "target" or (
            local(element) == "note" and element.get("from", element.get("category")) == "bayling-local"
        ):
            element.getparent().remove(element)
        for attribute in ("target-language", "trgLang", "state"):
            element.attrib.pop(attribute, None)
    for notes in [n for n in root.iter() if isinstance(n.tag, str) and local(n) == "notes" and len(n) == 0]:
        notes.getparent().remove(notes)
    return etree.tostring(root, method="c14n")


def inline_ids(element) -> Counter:
    return Counter((local(e), e.get("id") or e.get("startRef")) for e in element.iter() if local(e) in INLINE)


def holders(path: Path):
    """(element holding source/target/state, its source, its target) per unit or segment."""
    root = etree.parse(str(path)).getroot()
    for holder in root.iter():
        if isinstance(holder.tag, str) and local(holder) in ("trans-unit", "segment"):
            children = {local(c): c for c in holder if isinstance(c.tag, str)}
            yield holder, children.get("source"), children.get("target")


def check_round_trip(original: Path, output: Path) -> None:
    assert without_targets(output) == without_targets(original)
    for holder, source, target in holders(output):
        assert target is not None, f"unit {holder.get('id')} has no target"
        assert inline_ids(target) == inline_ids(source), f"inline codes lost in {holder.get('id')}"


@pytest.fixture
def model():
    return bundled_model()


def test_xliff12_two_targets_keep_codes_and_everything_but_targets(model, tmp_path):
    from translate.storage.xliff import xlifffile

    path = copy_fixture("app-1.2.xlf", tmp_path)
    report = translate_file(model, path, [FR, SW], options=BatchOptions(max_tokens=40, memory=tmp_path / "tm.sqlite"))
    assert report.completed and report.segments == 5
    for target in ("fra_Latn", "swh_Latn"):
        output = tmp_path / f"app-1.2.{target}.xlf"
        check_round_trip(path, output)
        store = xlifffile.parsefile(str(output))  # the format's own library reads it
        units = {unit.getid().split("\x04")[-1]: unit for unit in store.units}
        assert (
            units["signed"].target == "Merci pour votre commande." and units["final"].target == "Votre panier est vide."
        )
        assert units["plain"].target and units["plain"].target != units["plain"].source
        root = etree.parse(str(output)).getroot()
        assert root.find(".//{*}file").get("target-language") == {"fra_Latn": "fr", "swh_Latn": "sw"}[target]
        states = {u.get("id"): u.find("{*}target").get("state") for u in root.iter("{*}trans-unit")}
        assert states["signed"] == "signed-off" and states["final"] == "final"
        assert {states[k] for k in ("save", "logo", "bold", "nested", "plain")} <= {
            "translated",
            "needs-review-translation",
        }
    assert path.read_bytes() == (FIXTURES / "app-1.2.xlf").read_bytes()


def test_xliff2_nested_pc_round_trip(model, tmp_path):
    path = copy_fixture("app-2.0.xlf", tmp_path)
    report = translate_file(model, path, [FR, SW], options=BatchOptions(max_tokens=40))
    assert report.completed and report.segments == 3
    for target in ("fra_Latn", "swh_Latn"):
        output = tmp_path / f"app-2.0.{target}.xlf"
        check_round_trip(path, output)
        segments = list(etree.parse(str(output)).getroot().iter("{*}segment"))
        assert segments[2].get("state") == "final" and segments[2].find("{*}target").text == "Bonne nuit."
        assert {segments[i].get("state") for i in (0, 1, 3)} <= {"translated", "initial"}


def test_second_run_makes_zero_model_calls_and_identical_output(model, tmp_path):
    path = copy_fixture("app-1.2.xlf", tmp_path)
    options = BatchOptions(max_tokens=40, memory=tmp_path / "tm.sqlite")
    first = CountingModel(model)
    translate_file(first, path, [FR, SW], options=options)
    written = {p.name: p.read_bytes() for p in tmp_path.glob("app-1.2.*_Latn.xlf")}
    second = CountingModel(model)
    report = translate_file(second, path, [FR, SW], options=options)
    assert first.calls >= 10 and second.calls == 0
    assert report.tm_exact == report.pieces == 10 and report.translated == 0
    assert {p.name: p.read_bytes() for p in tmp_path.glob("app-1.2.*_Latn.xlf")} == written


def test_answer_that_drops_a_code_is_retried_then_flagged_and_never_written(model, tmp_path):
    path = copy_fixture("app-1.2.xlf", tmp_path)
    bad = FixedAnswerModel(model, "Cliquez pour garder vos changements.")
    report = translate_file(bad, path, [FR], options=BatchOptions(max_tokens=40))
    assert bad.calls == 5 + 4  # one retry for each of the four units with codes
    assert sorted(f.line for f in report.flagged) == [9, 13, 16, 20]
    output = tmp_path / "app-1.2.fra_Latn.xlf"
    check_round_trip(path, output)
    units = {u.get("id"): u for u in etree.parse(str(output)).getroot().iter("{*}trans-unit")}
    save = units["save"]
    assert save.find("{*}target").get("state") == "needs-review-translation"
    assert etree.tostring(save.find("{*}target"), method="text") == etree.tostring(
        save.find("{*}source"), method="text"
    )
    assert "machine translation rejected: </1> missing" in save.findall("{*}note")[-1].text.replace("<1> missing; ", "")
    assert units["plain"].find("{*}target").text == "Cliquez pour garder vos changements."


def test_final_units_change_only_with_overwrite_final(model, tmp_path):
    path = copy_fixture("app-1.2.xlf", tmp_path)
    answer = FixedAnswerModel(model, "Texte traduit.")
    kept = translate_file(answer, path, [FR], options=BatchOptions(output=str(tmp_path / "kept.xlf")))
    forced = translate_file(
        answer, path, [FR], options=BatchOptions(output=str(tmp_path / "all.xlf"), overwrite_final=True)
    )
    assert kept.segments == 5 and forced.segments == 7
    finals = {
        u.get("id"): u.find("{*}target").text for u in etree.parse(str(tmp_path / "all.xlf")).iter("{*}trans-unit")
    }
    assert finals["signed"] == finals["final"] == "Texte traduit."


@pytest.mark.parametrize("name", ["malformed.xlf"])
def test_malformed_xml_is_one_line_and_writes_nothing(tmp_path, name):
    path = copy_fixture(name, tmp_path)
    result = run_cli("translate", "-i", str(path), "--to", "fr", "--no-tm")
    stderr = result.stderr.decode()
    assert result.returncode == 2 and len(stderr.strip().splitlines()) == 1
    assert "not well-formed XML" in stderr and "Traceback" not in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_copied_codes_keep_their_elements_and_order():
    from bayling_local.translate.document import Document
    from bayling_local.translate.format_xliff import V1, XliffLayout, flatten, parse_xliff, write_xliff

    text = (FIXTURES / "app-1.2.xlf").read_text()
    source = parse_xliff(text, "x").find(".//{*}trans-unit[@id='nested']/{*}source")
    flat, _placeholders, _ = flatten(copy.deepcopy(source), V1)
    assert flat == "Read the <1>terms of <2>service</2></1> before you buy."
    from bayling_local.translate.document import ReadOptions
    from bayling_local.translate.format_xliff import read_xliff

    document = read_xliff(text, ReadOptions("x"))
    answers = ["a", "b", "c", "Lisez les <1>conditions du <2>service</2></1> avant.", "e"]
    written = write_xliff(document, {"fra_Latn": answers})
    target = parse_xliff(written, "y").find(".//{*}trans-unit[@id='nested']/{*}target")
    assert (
        etree.tostring(target, encoding="unicode")
        .split(">", 1)[1]
        .startswith('Lisez les <g id="4">conditions du <g id="5">service</g></g> avant.')
    )
    assert isinstance(document, Document) and isinstance(document.layout, XliffLayout)
