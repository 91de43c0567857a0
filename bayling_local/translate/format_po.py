"""gettext PO/POT (through polib): untranslated entries are translated; everything else is copied.

msgctxt goes into the prompt and the memory key; `#.` and `#` comments are notes for the model. A plural
entry is two segments (msgid, msgid_plural): msgstr[0] gets the singular's translation and every further
form the plural's, as many as the target's Plural-Forms has. Plural-Forms come from `PLURAL_FORMS`, a table
of gettext's usual expressions (babel/CLDR is not a dependency); languages not in it get `(n != 1)`.
python-format/c-format/python-brace-format specifiers must survive exactly (see `placeholders`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bayling_local.errors import InputTextError
from bayling_local.languages import resolve
from bayling_local.translate.document import Document, ReadOptions, Segment
from bayling_local.translate.placeholders import format_placeholders

FLAG_NOTE = "bayling-local: machine translation rejected"
_RUSSIAN = "(n%10==1 && n%100!=11 ? 0 : n%10>=2 && n%10<=4 && (n%100<10 || n%100>=20) ? 1 : 2)"
_ONE = ("nplurals=1; plural=0;", ("zh", "ja", "ko", "vi", "th", "id", "ms", "yo", "lo", "km", "my", "ig"))
_N_NOT_1 = "nplurals=2; plural=(n != 1);"
_ROWS = (
    _ONE,
    ("nplurals=2; plural=(n > 1);", ("fr", "pt_BR", "hy", "ln", "wa", "oc", "br", "am", "ti")),
    (f"nplurals=3; plural={_RUSSIAN};", ("ru", "uk", "be", "sr", "hr", "bs")),
    (
        "nplurals=3; plural=(n==1 ? 0 : n%10>=2 && n%10<=4 && (n%100<10 || n%100>=20) ? 1 : 2);",
        ("pl",),
    ),
    ("nplurals=3; plural=(n==1) ? 0 : (n>=2 && n<=4) ? 1 : 2;", ("cs", "sk")),
    ("nplurals=3; plural=(n%10==1 && n%100!=11 ? 0 : n%10>=2 && (n%100<10 || n%100>=20) ? 1 : 2);", ("lt",)),
    ("nplurals=3; plural=(n%10==1 && n%100!=11 ? 0 : n != 0 ? 1 : 2);", ("lv",)),
    ("nplurals=3; plural=(n==1 ? 0 : (n==0 || (n%100 > 0 && n%100 < 20)) ? 1 : 2);", ("ro",)),
    ("nplurals=4; plural=(n%100==1 ? 0 : n%100==2 ? 1 : n%100==3 || n%100==4 ? 2 : 3);", ("sl",)),
    ("nplurals=5; plural=(n==1 ? 0 : n==2 ? 1 : n<7 ? 2 : n<11 ? 3 : 4);", ("ga",)),
    (
        "nplurals=6; plural=(n==0 ? 0 : n==1 ? 1 : n==2 ? 2 : n%100>=3 && n%100<=10 ? 3 : n%100>=11 ? 4 : 5);",
        ("ar",),
    ),
)
PLURAL_FORMS: dict[str, str] = {code: forms for forms, codes in _ROWS for code in codes}
"""ISO 639-1 code -> gettext Plural-Forms (gettext manual, "Plural forms"); others: `(n != 1)`."""


@dataclass
class PoEntryPlace:
    entry: int
    """Index among the file's entries (header excluded)."""
    singular: int
    plural: int | None = None


@dataclass
class PoLayout:
    text: str
    places: list[PoEntryPlace]
    mark_fuzzy: bool


def parse_po(text: str, name: str):
    import polib

    try:
        return polib.pofile(text, wrapwidth=0)
    except (OSError, ValueError) as error:
        problem = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputTextError(f"{name} is not a valid PO file ({problem}); fix it (`msgfmt -c` shows where)") from None


def read_po(text: str, options: ReadOptions) -> Document:
    po = parse_po(text, options.name)
    document = Document([], PoLayout(text, [], options.mark_fuzzy))
    for index, entry in enumerate(_entries(po)):
        if _needs_translation(entry):
            document.layout.places.append(_place(entry, index, document.segments))
    return document


def _entries(po) -> list:
    return [entry for entry in po if not entry.obsolete and entry.msgid != ""]


def _needs_translation(entry) -> bool:
    if entry.msgid_plural:
        return not any(entry.msgstr_plural.values())
    return not entry.msgstr


def _place(entry, index: int, segments: list[Segment]) -> PoEntryPlace:
    place = PoEntryPlace(index, _add(entry, entry.msgid, segments))
    if entry.msgid_plural:
        place.plural = _add(entry, entry.msgid_plural, segments)
    return place


def _add(entry, text: str, segments: list[Segment]) -> int:
    printf = "python-format" in entry.flags or "c-format" in entry.flags
    brace = "python-format" in entry.flags or "python-brace-format" in entry.flags
    notes = "\n".join(part for part in (entry.comment, entry.tcomment) if part)
    segments.append(
        Segment(text, entry.linenum or 0, entry.msgctxt or "", notes, format_placeholders(text, printf, brace))
    )
    return len(segments) - 1


def plural_forms(code: str) -> str:
    language = resolve(code)
    return PLURAL_FORMS.get(language.iso639_1 or language.iso639_3, _N_NOT_1)


def header_language(code: str) -> str:
    language = resolve(code)
    return language.iso639_1 or language.iso639_3


def write_po(
    document: Document, translations: Mapping[str, Sequence[str]], flags: Mapping[str, Mapping[int, str]] = {}
) -> str:
    ((code, translated),) = translations.items()
    layout: PoLayout = document.layout
    po = parse_po(layout.text, "the input")
    po.metadata["Language"] = header_language(code)
    po.metadata["Plural-Forms"] = plural_forms(code)
    nplurals = int(po.metadata["Plural-Forms"].split("nplurals=")[1].split(";")[0])
    entries = _entries(po)
    rejected = flags.get(code, {})
    for place in layout.places:
        _fill(entries[place.entry], place, translated, rejected, nplurals, layout.mark_fuzzy)
    output = po.__unicode__()
    parse_po(output, "the PO written")  # never write a file polib cannot read back
    return output


def _fill(entry, place: PoEntryPlace, translated, rejected, nplurals: int, mark_fuzzy: bool) -> None:
    problems = [rejected[i] for i in (place.singular, place.plural) if i is not None and i in rejected]
    if problems:  # never write a translation that lost a placeholder: empty msgstr, flagged for review
        entry.tcomment = "\n".join(part for part in (entry.tcomment, f"{FLAG_NOTE}: {'; '.join(problems)}") if part)
        _add_flag(entry, "fuzzy")
        if place.plural is not None:
            entry.msgstr_plural = dict.fromkeys(range(nplurals), "")
        return
    if place.plural is None:
        entry.msgstr = translated[place.singular]
    else:
        singular, plural = translated[place.singular], translated[place.plural]
        forms = [plural] if nplurals == 1 else [singular] + [plural] * (nplurals - 1)
        entry.msgstr_plural = dict(enumerate(forms))
    if mark_fuzzy:
        _add_flag(entry, "fuzzy")


def _add_flag(entry, flag: str) -> None:
    if flag not in entry.flags:
        entry.flags.insert(0, flag)
