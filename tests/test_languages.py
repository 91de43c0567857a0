"""The FLORES-200 language table and its resolver: coverage, names, defaults for shared names, errors."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import pytest

from bayling_local.errors import UnknownLanguageError, UsageError
from bayling_local.languages import (
    DEFAULT_VARIANTS,
    LANGUAGES,
    Language,
    display_name,
    resolve,
    resolve_many,
    search,
)

FLORES_MANIFEST = "flores200_MANIFEST.tsv"


def shared_data_dir() -> Path:
    override = os.environ.get("BAYLING_SHARED_DATA")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def flores_codes_in_manifest(manifest: Path) -> set[str]:
    # Manifest rows are `dev/swh_Latn.dev<TAB>lines<TAB>sha256`.
    paths = (line.split("\t")[0] for line in manifest.read_text(encoding="utf-8").splitlines() if line.strip())
    return {Path(path).name.split(".")[0] for path in paths}


def names_of(lang: Language) -> list[str]:
    return [lang.iso639_3, lang.iso639_1 or "", lang.english_name, lang.native_name, *lang.aliases]


def rows_by_lowercase_name() -> dict[str, set[str]]:
    rows: dict[str, set[str]] = defaultdict(set)
    for lang in LANGUAGES:
        for name in filter(None, names_of(lang)):
            rows[name.casefold()].add(lang.code)
    return rows


def test_table_has_exactly_the_204_flores_codes():
    assert len(LANGUAGES) == 204
    assert len({lang.code for lang in LANGUAGES}) == 204


def test_table_codes_equal_the_codes_in_the_flores_manifest():
    manifest = shared_data_dir() / FLORES_MANIFEST
    if not manifest.is_file():
        pytest.skip(f"{manifest} not found; set BAYLING_SHARED_DATA to the folder holding {FLORES_MANIFEST}")
    assert {lang.code for lang in LANGUAGES} == flores_codes_in_manifest(manifest)


def test_every_row_is_complete_and_consistent_with_its_code():
    for lang in LANGUAGES:
        iso639_3, script = lang.code.split("_")
        assert (lang.iso639_3, lang.script) == (iso639_3, script), lang.code
        assert lang.english_name and lang.native_name, lang.code
        assert lang.iso639_1 is None or (len(lang.iso639_1) == 2 and lang.iso639_1.islower()), lang.code
        assert all(alias == alias.strip() and alias for alias in lang.aliases), lang.code


def test_english_names_are_unique_so_prompts_tell_variants_apart():
    english_names = [lang.english_name.casefold() for lang in LANGUAGES]
    assert len(set(english_names)) == len(english_names)


def test_every_code_resolves_to_itself_in_any_case_and_with_a_hyphen():
    for lang in LANGUAGES:
        assert resolve(lang.code) is lang
        assert resolve(lang.code.upper()) is lang
        assert resolve(lang.code.replace("_", "-")) is lang


def test_every_name_in_the_table_resolves_to_its_row_or_the_documented_default():
    for name, codes in rows_by_lowercase_name().items():
        expected = DEFAULT_VARIANTS[name] if len(codes) > 1 else next(iter(codes))
        assert resolve(name).code == expected, name


def test_every_shared_name_has_a_default_variant_that_carries_it():
    shared = {name: codes for name, codes in rows_by_lowercase_name().items() if len(codes) > 1}
    assert not shared.keys() - DEFAULT_VARIANTS.keys(), "shared names without a default"
    for name, codes in shared.items():
        assert DEFAULT_VARIANTS[name] in codes, name


def test_default_variants_only_name_shared_names():
    shared = {name for name, codes in rows_by_lowercase_name().items() if len(codes) > 1}
    assert set(DEFAULT_VARIANTS) <= shared
    assert all(key == key.lower() for key in DEFAULT_VARIANTS)


@pytest.mark.parametrize(
    "name", ["sw", "swa", "swh", "Swahili", "Kiswahili", "swh_Latn", "SWH_LATN", "  swahili \n"]
)
def test_every_way_of_naming_swahili_resolves_to_swh_latn(name):
    assert resolve(name).code == "swh_Latn"


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("zh", "zho_Hans"),
        ("Chinese", "zho_Hans"),
        ("zh-Hant", "zho_Hant"),
        ("zh_Hant", "zho_Hant"),
        ("ar", "arb_Arab"),
        ("ar-Latn", "arb_Latn"),
        ("ks_Deva", "kas_Deva"),
        ("ks", "kas_Arab"),
        ("fa", "pes_Arab"),
        ("Kurdish-Arab", "ckb_Arab"),
        ("Cantonese", "yue_Hant"),
        ("中文", "zho_Hans"),
    ],
)
def test_shared_names_resolve_to_the_default_unless_a_script_is_given(name, code):
    assert resolve(name).code == code


def test_unknown_language_error_is_one_line_and_suggests_the_intended_language():
    with pytest.raises(UnknownLanguageError) as caught:
        resolve("swahilli")
    message = str(caught.value)
    assert "\n" not in message
    assert "'swahilli'" in message
    assert "Swahili (swh_Latn)" in message
    assert "bayling-local languages QUERY" in message
    assert isinstance(caught.value, UsageError)


def test_unknown_language_error_without_close_names_omits_suggestions():
    with pytest.raises(UnknownLanguageError) as caught:
        resolve("qqqqqq\nqqq")
    message = str(caught.value)
    assert "\n" not in message
    assert "did you mean" not in message


def test_empty_name_is_rejected():
    with pytest.raises(UnknownLanguageError):
        resolve("   ")


def test_search_lists_both_chinese_scripts_with_simplified_first():
    assert [lang.code for lang in search("zh")] == ["zho_Hans", "zho_Hant"]


def test_search_for_ar_puts_standard_arabic_first_and_includes_the_romanized_row():
    codes = [lang.code for lang in search("ar")]
    assert codes[0] == "arb_Arab"
    assert "arb_Latn" in codes and "arz_Arab" in codes


def test_search_falls_back_to_name_substrings():
    codes = {lang.code for lang in search("chin")}
    assert {"zho_Hans", "zho_Hant", "yue_Hant"} <= codes
    assert [lang.code for lang in search("简体")] == ["zho_Hans"]


def test_search_ignores_short_latin_substrings_and_returns_empty_for_nothing():
    assert search("xq") == []
    assert search("粵") == []
    assert search("no such language") == []


def test_resolve_many_keeps_order_and_drops_repeats():
    languages = resolve_many("sw, yo,zh,swh_Latn,Chinese")
    assert [lang.code for lang in languages] == ["swh_Latn", "yor_Latn", "zho_Hans"]


@pytest.mark.parametrize("spec", ["", "sw,,yo", "sw,yo,", " , "])
def test_resolve_many_rejects_empty_items(spec):
    with pytest.raises(UnknownLanguageError):
        resolve_many(spec)


def test_resolve_many_reports_the_unknown_item():
    with pytest.raises(UnknownLanguageError, match="swahilli"):
        resolve_many("yo,swahilli")


def test_language_prints_as_its_code_and_displays_its_english_name():
    swahili = resolve("sw")
    assert str(swahili) == "swh_Latn"
    assert display_name(resolve("zh-Hant")) == "Chinese (Traditional)"
