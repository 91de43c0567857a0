"""The 204 FLORES-200 languages (codes, ISO 639 codes, English and native names, scripts) and the one
resolver that turns whatever a user types (`sw`, `Kiswahili`, `swh-Latn`, `zh-Hant`) into a row.
"""

from __future__ import annotations

import csv
import difflib
import functools
import unicodedata
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from bayling_local.errors import UnknownLanguageError

LANGUAGES_TSV = Path(__file__).parent / "data" / "languages.tsv"
SEARCH_HINT = "Run `bayling-local languages QUERY` to search."
MAX_SUGGESTIONS = 3
# difflib's default (0.6) pairs "Arabik" with "Panjabi"; real typos of names score above 0.8.
SUGGESTION_CUTOFF = 0.75
# Latin letters make many accidental substrings ("an" is in dozens of names); other scripts do not.
MIN_LATIN_SUBSTRING = 3
MIN_OTHER_SUBSTRING = 2
LATIN_SCRIPT_END = "\u0250"  # end of Latin Extended-B


@dataclass(frozen=True)
class Language:
    """One FLORES-200 row: a language written in one script."""

    code: str  # FLORES-200 code, `<iso639_3>_<Script>`, e.g. swh_Latn
    iso639_3: str
    script: str  # ISO 15924, e.g. Latn, Hans
    english_name: str  # unique across the table, so prompts can tell variants apart
    native_name: str
    iso639_1: str | None
    aliases: tuple[str, ...]

    def __str__(self) -> str:
        return self.code


# Which row answers a name that several rows share. Keys are lower-case.
DEFAULT_VARIANTS: dict[str, str] = {
    # Acehnese, Banjar, Minangkabau, Central Kanuri, Tamasheq: the Latin script is what their
    # speakers write today; the Arabic (Jawi, Ajami) and Tifinagh rows are the minority scripts.
    "ace": "ace_Latn",
    "acehnese": "ace_Latn",
    "achinese": "ace_Latn",
    "bjn": "bjn_Latn",
    "banjar": "bjn_Latn",
    "banjarese": "bjn_Latn",
    "min": "min_Latn",
    "minangkabau": "min_Latn",
    "minang": "min_Latn",
    "knc": "knc_Latn",
    "kr": "knc_Latn",
    "kau": "knc_Latn",
    "kanuri": "knc_Latn",
    "central kanuri": "knc_Latn",
    "taq": "taq_Latn",
    "tmh": "taq_Latn",
    "tamasheq": "taq_Latn",
    "tamashek": "taq_Latn",
    "tuareg": "taq_Latn",
    # Kashmiri: Perso-Arabic is the official script in Jammu and Kashmir.
    "kas": "kas_Arab",
    "ks": "kas_Arab",
    "kashmiri": "kas_Arab",
    # Arabic: Modern Standard Arabic is the written standard every dialect row shares `ar` with.
    "ar": "arb_Arab",
    "ara": "arb_Arab",
    "arb": "arb_Arab",
    "arabic": "arb_Arab",
    # Persian: Iranian Persian has most speakers and is what `fa` tools and corpora mean.
    "fa": "pes_Arab",
    "fas": "pes_Arab",
    "per": "pes_Arab",
    "persian": "pes_Arab",
    # Azerbaijani: North Azerbaijani is the official language of Azerbaijan (`az` in CLDR).
    "az": "azj_Latn",
    "aze": "azj_Latn",
    "azerbaijani": "azj_Latn",
    "azeri": "azj_Latn",
    # Kurdish: Kurmanji is spoken by most Kurds.
    "ku": "kmr_Latn",
    "kur": "kmr_Latn",
    "kurdish": "kmr_Latn",
    # Norwegian: Bokmål is the written form of about nine in ten Norwegians.
    "no": "nob_Latn",
    "nor": "nob_Latn",
    "norwegian": "nob_Latn",
    # Chinese: Simplified is the script of mainland China and Singapore, and most of BayLing's data.
    "zh": "zho_Hans",
    "zho": "zho_Hans",
    "chi": "zho_Hans",
    "chinese": "zho_Hans",
    "mandarin": "zho_Hans",
    "中文": "zho_Hans",
}


def resolve(name: str) -> Language:
    """The language a code, ISO code, alias, English or native name (any case) stands for."""
    candidates = _candidates(name)
    if not candidates:
        raise UnknownLanguageError(_unknown_language_message(name))
    return candidates[0]


def resolve_many(spec: str) -> list[Language]:
    """The languages of a comma-separated list such as `sw,yo,zh`, in order, without repeats."""
    items = [item.strip() for item in spec.split(",")]
    if not all(items):
        raise UnknownLanguageError(
            f"empty item in language list {_one_line(spec)!r}; separate names with single commas, e.g. sw,yo,zh"
        )
    return list(dict.fromkeys(resolve(item) for item in items))


def search(query: str) -> list[Language]:
    """Every language a query could mean, the default variant first; [] when none matches."""
    exact = _candidates(query)
    if exact:
        return list(exact)
    return _names_containing(_normalize(query))


def display_name(lang: Language) -> str:
    """The name prompts and listings use (English, already telling script variants apart)."""
    return lang.english_name


def _read_table(path: Path = LANGUAGES_TSV) -> tuple[Language, ...]:
    with path.open(encoding="utf-8", newline="") as table:
        rows = csv.DictReader(table, delimiter="\t", quoting=csv.QUOTE_NONE)
        return tuple(_language_from_row(row) for row in rows)


def _language_from_row(row: dict[str, str]) -> Language:
    return Language(
        code=row["code"],
        iso639_3=row["code"].partition("_")[0],
        script=row["script"],
        english_name=row["english_name"],
        native_name=row["native_name"],
        iso639_1=row["iso639_1"] or None,
        aliases=tuple(alias.strip() for alias in row["aliases"].split(",") if alias.strip()),
    )


LANGUAGES: tuple[Language, ...] = _read_table()


def _normalize(name: str) -> str:
    # `swh-Latn` and `swh_Latn` are the same key; NFC so that a typed "ü" matches a stored "ü".
    collapsed = " ".join(unicodedata.normalize("NFC", name).split())
    return collapsed.casefold().replace("-", "_")


def _keys_of(lang: Language) -> tuple[str, ...]:
    names = (lang.code, lang.iso639_3, lang.iso639_1 or "", lang.english_name, lang.native_name, *lang.aliases)
    return tuple(dict.fromkeys(_normalize(name) for name in names if name))


@functools.cache
def _index() -> dict[str, tuple[Language, ...]]:
    """Every key to the rows answering to it, the default variant first."""
    rows_by_key: dict[str, list[Language]] = defaultdict(list)
    for lang in LANGUAGES:
        for key in _keys_of(lang):
            rows_by_key[key].append(lang)
    _check_default_variants(rows_by_key)
    return {key: _default_first(key, rows) for key, rows in rows_by_key.items()}


def _check_default_variants(rows_by_key: dict[str, list[Language]]) -> None:
    # A shared name without a default would silently resolve to whichever row the TSV lists first.
    shared = {key for key, rows in rows_by_key.items() if len(rows) > 1}
    missing = sorted(shared - DEFAULT_VARIANTS.keys())
    stale = sorted(DEFAULT_VARIANTS.keys() - shared)
    wrong = sorted(
        key for key in shared & DEFAULT_VARIANTS.keys()
        if DEFAULT_VARIANTS[key] not in {lang.code for lang in rows_by_key[key]}
    )
    if missing or stale or wrong:
        raise RuntimeError(
            f"DEFAULT_VARIANTS out of step with {LANGUAGES_TSV.name}: "
            f"shared keys without a default {missing}, defaults for unshared keys {stale}, "
            f"defaults naming a row without the key {wrong}"
        )


def _default_first(key: str, rows: list[Language]) -> tuple[Language, ...]:
    default_code = DEFAULT_VARIANTS.get(key)
    return tuple(sorted(rows, key=lambda lang: lang.code != default_code))


def _candidates(name: str) -> tuple[Language, ...]:
    key = _normalize(name)
    index = _index()
    if key in index:
        return index[key]
    return _candidates_in_script(key, index)


def _candidates_in_script(key: str, index: dict[str, tuple[Language, ...]]) -> tuple[Language, ...]:
    """`zh_hant`, `ks-Deva`, `ar-Latn`: the rows answering to the part before the script code."""
    base, separator, script = key.rpartition("_")
    if not separator or len(script) != 4 or not script.isalpha():
        return ()
    return tuple(lang for lang in index.get(base, ()) if lang.script.casefold() == script)


def _names_containing(needle: str) -> list[Language]:
    is_latin = all(char < LATIN_SCRIPT_END for char in needle)
    if len(needle) < (MIN_LATIN_SUBSTRING if is_latin else MIN_OTHER_SUBSTRING):
        return []
    return [
        lang for lang in LANGUAGES
        if needle in _normalize(lang.english_name) or needle in _normalize(lang.native_name)
    ]


def _unknown_language_message(name: str) -> str:
    shown = _one_line(name)
    if not shown:
        return f"empty language name; give a code or name such as swh_Latn, sw or Swahili. {SEARCH_HINT}"
    suggestions = ", ".join(f"{lang.english_name} ({lang.code})" for lang in _close_matches(shown))
    if not suggestions:
        return f"unknown language {shown!r}. {SEARCH_HINT}"
    return f"unknown language {shown!r}; did you mean: {suggestions}? {SEARCH_HINT}"


def _close_matches(name: str) -> list[Language]:
    index = _index()
    # Ask difflib for more keys than we show: several keys (code, alias, name) often name one row.
    close_keys = difflib.get_close_matches(
        _normalize(name), index.keys(), n=4 * MAX_SUGGESTIONS, cutoff=SUGGESTION_CUTOFF
    )
    rows = dict.fromkeys(index[key][0] for key in close_keys)
    return list(rows)[:MAX_SUGGESTIONS]


def _one_line(text: str) -> str:
    return " ".join(text.split())
