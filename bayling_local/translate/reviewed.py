"""Reviewed translations in XLIFF and PO files, read as human units for the translation memory.

XLIFF 1.2: trans-units with `approved="yes"` or a target in state final/signed-off; XLIFF 2.x: segments in
state final/reviewed; PO: translated entries that are not fuzzy. Sources are read exactly as `translate -i`
reads them (XLIFF inline codes as `<1>…</1>`/`<2/>` tokens, PO msgctxt as the context) so that a later run
finds them as exact hits. A target's inline elements get the token of the source element with the same id;
a target whose codes do not match its source is left out, never stored broken.
"""

from __future__ import annotations

from bayling_local.errors import InputTextError
from bayling_local.languages import Language
from bayling_local.translate.format_po import parse_po
from bayling_local.translate.format_xliff import (
    V1,
    Dialect,
    child_named,
    dialect_of,
    flatten,
    is_final,
    local_name,
    parse_xliff,
    translatable_units,
)
from bayling_local.translate.memory import HUMAN, MemoryUnit
from bayling_local.translate.placeholders import MARKUP_TOKEN, problems
from bayling_local.translate.tmx import ReadUnits, language_of_tag

XLIFF_LANGUAGES = {"1.2": ("source-language", "target-language"), "2": ("srcLang", "trgLang")}


def read_reviewed_xliff(text: str, name: str, source: Language, target: Language) -> ReadUnits:
    root = parse_xliff(text, name)
    dialect = dialect_of(root)
    _check_xliff_languages(root, dialect, name, source, target)
    units, skipped = [], {}
    for _, holder in translatable_units(root, dialect):
        unit = _xliff_unit(holder, dialect, source, target)
        if isinstance(unit, str):
            skipped[unit] = skipped.get(unit, 0) + 1
        elif unit is not None:
            units.append(unit)
    return ReadUnits(units, skipped)


def _check_xliff_languages(root, dialect: Dialect, name: str, source: Language, target: Language) -> None:
    """Every declared source/target language must be the asked pair (1.2: on each <file>; 2.x: on the root)."""
    holders = [e for e in root.iter() if local_name(e) == "file"] if dialect is V1 else [root]
    for holder in holders:
        for attribute, wanted in zip(XLIFF_LANGUAGES[dialect.version], (source, target)):
            tag = holder.get(attribute)
            language = language_of_tag(tag) if tag else wanted
            if language is None or language.code != wanted.code:
                raise InputTextError(
                    f"{name}: {attribute}={tag!r} (line {holder.sourceline}) is not {wanted.code}; pass the file's "
                    "languages with --from/--to"
                )


def _xliff_unit(holder, dialect: Dialect, source: Language, target: Language) -> MemoryUnit | str | None:
    source_element, target_element = child_named(holder, "source"), child_named(holder, "target")
    if source_element is None or target_element is None or not is_final(holder, dialect):
        return None
    flat, placeholders, codes = flatten(source_element, dialect)
    translated = _flatten_target(target_element, codes, dialect)
    if not flat.strip() or not (translated or "").strip():
        return None
    if translated is None or problems(placeholders, translated):
        return "inline codes differ"
    return MemoryUnit(flat, translated, source.code, target.code, "", HUMAN)


def _flatten_target(target, codes: dict, dialect: Dialect) -> str | None:
    """The target's text with the source's tokens for its inline elements; None when one has no source twin."""
    numbers = {_code_key(code.element): MARKUP_TOKEN.match(token).group(2) for token, code in codes.items()}
    parts: list[str] = []
    return "".join(parts) if _walk(target, numbers, dialect, parts) else None


def _walk(element, numbers: dict, dialect: Dialect, parts: list[str]) -> bool:
    parts.append(element.text or "")
    for child in element:
        if isinstance(child.tag, str):
            number = numbers.get(_code_key(child))
            if number is None:
                return False
            name = local_name(child)
            if name in dialect.containers:
                parts.append(f"<{number}>")
                if not _walk(child, numbers, dialect, parts):
                    return False
                parts.append(f"</{number}>")
            elif name in dialect.pair_starts:
                parts.append(f"<{number}>")
            elif name in dialect.pair_ends:
                parts.append(f"</{number}>")
            else:
                parts.append(f"<{number}/>")
        parts.append(child.tail or "")
    return True


def _code_key(element) -> tuple[str, str]:
    """What ties a target's inline element to the source's: its name and id (2.x `<ec>`: startRef)."""
    return local_name(element), element.get("id") or element.get("startRef") or element.get("mid") or ""


def read_reviewed_po(text: str, name: str, source: Language, target: Language) -> ReadUnits:
    po = parse_po(text, name)
    declared = po.metadata.get("Language", "")
    language = language_of_tag(declared) if declared else target
    if language is None or language.code != target.code:
        raise InputTextError(f"{name}: its Language header {declared!r} is not {target.code}; pass it with --to")
    units, skipped = [], {}
    for entry in po:
        if entry.obsolete or not entry.msgid:
            continue
        if "fuzzy" in entry.flags:
            skipped["fuzzy"] = skipped.get("fuzzy", 0) + 1
            continue
        units += [
            MemoryUnit(text_, translated, source.code, target.code, entry.msgctxt or "", HUMAN)
            for text_, translated in _po_pairs(entry)
            if translated
        ]
    return ReadUnits(units, skipped)


def _po_pairs(entry) -> list[tuple[str, str]]:
    """(source, translation): msgid -> msgstr; a plural entry's msgid -> msgstr[0] and msgid_plural -> msgstr[1]
    (the first plural form; a language with one form has only msgstr[0], the plural's translation)."""
    if not entry.msgid_plural:
        return [(entry.msgid, entry.msgstr)]
    forms = entry.msgstr_plural
    if len(forms) == 1:
        return [(entry.msgid_plural, forms.get(0, ""))]
    return [(entry.msgid, forms.get(0, "")), (entry.msgid_plural, forms.get(1, ""))]
