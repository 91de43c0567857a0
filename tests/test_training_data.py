"""The instruction-mix builder: recipes, readers, cross-lingual builders, mixer, stats, CLI."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from bayling_local.errors import UnknownLanguageError, UsageError
from bayling_local.languages import LANGUAGES
from bayling_local.training.config import load_recipe, recipe_from_mapping
from bayling_local.training.data import build_mix
from bayling_local.training.data.crosslingual import CrossLingualContext, crosslingual_pools, join_sentences
from bayling_local.training.data.instructions import read_instructions
from bayling_local.training.data.mixer import GroupPlan, allocate, plan_quotas
from bayling_local.training.data.parallel import read_parallel
from bayling_local.training.data.records import DataError
from bayling_local.training.data.wordings import CHINESE, ENGLISH, check_template, load_wordings_file
from bayling_local.training.typed import RecipeError
from tests.fixtures.training.support import FIXTURES, TINY_RECIPE, run_cli, shared_data_dir, write_recipe

PARALLEL = FIXTURES / "parallel"
HUBS = ("eng_Latn", "zho_Hans")


def _data_recipe(tmp_path: Path, **data_overrides) -> dict:
    data = {
        "output": str(tmp_path / "out" / "mix.jsonl"),
        "seed": 7,
        "eval_size": 8,
        "wordings": [str(FIXTURES / "wordings_fra.yaml")],
        "sources": [
            {"name": "chinese", "kind": "instructions", "path": str(FIXTURES / "zh_messages.jsonl"), "language": "zh"},
            {"name": "english", "kind": "instructions", "path": str(FIXTURES / "en_alpaca.jsonl"), "language": "en"},
            {"name": "crosslingual", "kind": "parallel", "path": str(PARALLEL), "split": "dev"},
        ],
        "mix": {"ratios": {"chinese": 0.432, "english": 0.262, "crosslingual": 0.306}, "total": 150},
    }
    data.update(data_overrides)
    return {"data": data}


def _build(tmp_path: Path, name: str = "recipe.yaml", **data_overrides):
    recipe = load_recipe(write_recipe(tmp_path / name, _data_recipe(tmp_path, **data_overrides)))
    return build_mix(recipe)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def _context(languages=("eng_Latn", "zho_Hans", "fra_Latn", "swh_Latn"), with_french_file=True) -> CrossLingualContext:
    corpus = read_parallel("mini", [PARALLEL], fmt="auto", languages=list(languages), split="dev")
    french = load_wordings_file(FIXTURES / "wordings_fra.yaml")
    return CrossLingualContext(
        corpus=corpus, source="mini", group="crosslingual", hubs=HUBS,
        always=(ENGLISH, CHINESE), by_language={"fra_Latn": french} if with_french_file else {},
    )


def _draw_all(pool, seed: int = 0):
    return list(pool.draw(random.Random(seed)))


# --- recipes --------------------------------------------------------------------------------------


def test_recipe_with_a_misspelt_key_names_it_and_the_likely_fix(tmp_path):
    recipe = _data_recipe(tmp_path)
    recipe["data"]["mix"]["temprature"] = 2.0
    with pytest.raises(RecipeError, match=r"unknown key 'data\.mix\.temprature'; did you mean 'temperature'\?"):
        recipe_from_mapping(recipe, tmp_path / "r.yaml")


def test_recipe_with_a_wrong_type_names_the_key(tmp_path):
    recipe = _data_recipe(tmp_path)
    recipe["data"]["seed"] = "seven"
    with pytest.raises(RecipeError, match=r"data\.seed must be an integer"):
        recipe_from_mapping(recipe, tmp_path / "r.yaml")


def test_recipe_ratio_for_a_group_without_sources_is_refused(tmp_path):
    recipe = _data_recipe(tmp_path)
    recipe["data"]["mix"]["ratios"]["japanese"] = 0.1
    with pytest.raises(RecipeError, match="'japanese', which no source belongs to"):
        recipe_from_mapping(recipe, tmp_path / "r.yaml")


def test_shipped_recipes_validate():
    for path in sorted(TINY_RECIPE.parent.glob("*.yaml")):
        recipe = load_recipe(path)
        assert recipe.train is not None, path
    assert {p.stem for p in TINY_RECIPE.parent.glob("*.yaml")} >= {"bayling-2-7b", "bayling-2-13b", "bayling-3-8b", "tiny-cpu"}


# --- readers --------------------------------------------------------------------------------------


def test_alpaca_messages_and_sharegpt_lines_become_the_same_turns():
    alpaca = list(read_instructions([FIXTURES / "en_alpaca.jsonl"], source="en", group="g", task="t", language="en"))
    messages = list(read_instructions([FIXTURES / "zh_messages.jsonl"], source="zh", group="g", task="t", language="zh"))
    sharegpt = list(read_instructions([FIXTURES / "fr_sharegpt.jsonl"], source="fr", group="g", task="t", language="fr"))
    assert alpaca[3].messages == (("user", "Rewrite the sentence in the past tense.\n\nShe walks to school."),
                                  ("assistant", "She walked to school."))
    assert alpaca[1].messages == (("user", "What is the capital of France?"), ("assistant", "The capital of France is Paris."))
    assert messages[0].messages[0] == ("user", "中国的首都是哪里？")
    assert [role for role, _ in messages[30].messages] == ["system", "user", "assistant"]
    assert sharegpt[0].messages == (("user", "Quelle est la capitale de l'Italie ?"),
                                    ("assistant", "La capitale de l'Italie est Rome."))
    assert {e.language for e in alpaca} == {"eng_Latn"} and {e.language for e in sharegpt} == {"fra_Latn"}


def test_line_without_messages_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
                    '{"prompt": "hi", "completion": "yo"}\n', "utf-8")
    with pytest.raises(DataError, match=r"bad\.jsonl:2: no messages"):
        list(read_instructions([path], source="s", group="g", task="t", language="en"))


def test_flores_folder_reads_aligned_lines_per_language():
    corpus = read_parallel("mini", [PARALLEL], fmt="auto", languages=[], split="dev")
    assert corpus.languages == ["eng_Latn", "fra_Latn", "swh_Latn", "zho_Hans"]
    assert len(corpus) == 30
    assert corpus.lines["fra_Latn"][13] == "L'eau bout à cent degrés."
    assert corpus.lines["zho_Hans"][13] == "水在一百度时沸腾。"


def test_tsv_pairs_and_two_aligned_files_are_read_in_the_given_languages():
    tsv = read_parallel("tsv", [FIXTURES / "eng_spa.tsv"], fmt="auto", languages=["en", "es"])
    aligned = read_parallel("two", [FIXTURES / "eng.txt", FIXTURES / "deu.txt"], fmt="auto", languages=["en", "de"])
    assert tsv.lines["spa_Latn"][0] == "El sol sale por el este." and tsv.lines["eng_Latn"][0] == "The sun rises in the east."
    assert aligned.lines["deu_Latn"][3] == "Die Kinder spielen im Garten." and len(aligned) == 8


def test_language_the_corpus_has_no_text_for_is_named(tmp_path):
    with pytest.raises(DataError, match=r"no text for yor_Latn \(the corpus has: eng_Latn, fra_Latn, swh_Latn, zho_Hans\)"):
        read_parallel("mini", [PARALLEL], fmt="auto", languages=["yor_Latn"], split="dev")


def test_unknown_language_name_in_a_source_is_refused():
    with pytest.raises(UnknownLanguageError, match="source 'mini'"):
        read_parallel("mini", [PARALLEL], fmt="auto", languages=["Klingonese"], split="dev")


def test_flores_archive_is_read_without_unpacking():
    archive = shared_data_dir() / "flores200_dev_devtest_204langs.tar.xz"
    if not archive.is_file():
        pytest.skip(f"FLORES-200 archive not found at {archive} (set BAYLING_SHARED_DATA)")
    corpus = read_parallel("flores", [archive], fmt="auto", languages=["sw", "yo"], split="dev", optional=list(HUBS))
    assert corpus.languages == ["eng_Latn", "swh_Latn", "yor_Latn", "zho_Hans"]
    assert len(corpus) == 997 and all(len(lines) == 997 for lines in corpus.lines.values())


# --- wordings -------------------------------------------------------------------------------------


def test_builtin_wordings_use_only_known_placeholders_and_language_codes():
    codes = {lang.code for lang in LANGUAGES}
    for wordings in (ENGLISH, CHINESE):
        for kind, templates in wordings.templates.items():
            for template in templates:
                check_template(template, kind, wordings.language)
        assert set(wordings.names) <= codes


def test_wording_file_with_an_unknown_placeholder_is_refused(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text('language: de\ntranslate: ["Übersetze ins {ziel}: {text}"]\n', "utf-8")
    with pytest.raises(RecipeError, match=r"uses \{ziel\}"):
        load_wordings_file(path)


# --- cross-lingual builders -----------------------------------------------------------------------


def test_translation_pairs_every_language_with_each_hub_in_both_directions():
    context = _context()
    pools = {(p.language, p.task): p for p in crosslingual_pools(context, {"translation": 1.0})}
    assert set(pools) == {("fra_Latn", "translation"), ("swh_Latn", "translation"), ("zho_Hans", "translation")}
    corpus = context.corpus.lines
    directions = Counter()
    for example in _draw_all(pools[("swh_Latn", "translation")]):
        (_, prompt), (_, answer) = example.messages
        line = next(i for i in range(30) if answer == corpus["eng_Latn"][i] or answer in
                    (corpus["swh_Latn"][i], corpus["zho_Hans"][i]))
        source = next(code for code in corpus if code != "fra_Latn" and corpus[code][line] in prompt)
        target = next(code for code in corpus if corpus[code][line] == answer)
        directions[(source, target)] += 1
    assert directions == {("swh_Latn", "eng_Latn"): 30, ("eng_Latn", "swh_Latn"): 30,
                          ("swh_Latn", "zho_Hans"): 30, ("zho_Hans", "swh_Latn"): 30}


def test_instruction_is_in_the_source_language_only_where_a_wording_file_exists():
    french_openings = ("Traduis ce texte", "Comment dit-on")
    context = _context()
    pools = {p.language: p for p in crosslingual_pools(context, {"translation": 1.0})}
    french_prompts = [e.messages[0][1] for e in _draw_all(pools["fra_Latn"])]
    swahili_prompts = [e.messages[0][1] for e in _draw_all(pools["swh_Latn"])]
    french_sourced = [p for p in french_prompts if p.startswith(french_openings)]
    assert french_sourced, "a French wording file exists, so some French-source instructions are in French"
    corpus = context.corpus.lines["fra_Latn"]
    assert all(any(line in p for line in corpus) for p in french_sourced), "French wordings only for French sources"
    assert not any(p.startswith(french_openings) for p in swahili_prompts)
    chinese_names = {"英语", "中文", "斯瓦希里语"}
    assert any(name in p for p in swahili_prompts for name in chinese_names), "Chinese wordings name languages in Chinese"


def test_interactive_dialogue_second_answer_comes_from_the_corpus():
    context = _context()
    pool = next(p for p in crosslingual_pools(context, {"interactive": 1.0}) if p.language == "swh_Latn")
    corpus = context.corpus.lines
    kinds = Counter()
    for example in _draw_all(pool):
        assert [role for role, _ in example.messages] == ["user", "assistant", "user", "assistant"]
        prompt, first_answer, second_answer = example.messages[0][1], example.messages[1][1], example.messages[3][1]
        line, target = next((i, c) for i in range(30) for c in corpus if corpus[c][i] == first_answer)
        source = next(c for c in corpus if c != target and corpus[c][line] in prompt)
        if second_answer == corpus[source][line]:
            kinds["back"] += 1
        elif line + 1 < 30 and second_answer == join_sentences(target, corpus[target][line], corpus[target][line + 1]):
            kinds["extend"] += 1
        else:
            assert any(corpus[c][line] == second_answer for c in corpus if c not in (source, target)), second_answer
            kinds["retarget"] += 1
    assert set(kinds) == {"back", "extend", "retarget"}


def test_joined_sentences_are_spaced_only_in_scripts_that_use_spaces():
    assert join_sentences("zho_Hans", "下了一整夜的雨。", "风从北方吹来。") == "下了一整夜的雨。风从北方吹来。"
    assert join_sentences("tha_Thai", "ก", "ข") == "กข"
    assert join_sentences("swh_Latn", "Mvua ilinyesha.", "Upepo unavuma.") == "Mvua ilinyesha. Upepo unavuma."


def test_pivot_asks_in_a_hub_language_for_a_pair_of_other_languages():
    context = _context()
    pool = next(p for p in crosslingual_pools(context, {"pivot": 1.0}) if p.language == "fra_Latn")
    corpus = context.corpus.lines
    for example in _draw_all(pool):
        (_, prompt), (_, answer) = example.messages
        line = next(i for i in range(30) if corpus["fra_Latn"][i] in prompt)
        assert answer == corpus["swh_Latn"][line]
        assert not prompt.startswith(("Traduis", "Comment")), "pivot instructions are in a hub language"


def test_choice_answer_letter_points_at_the_true_translation():
    context = _context()
    pool = next(p for p in crosslingual_pools(context, {"choice": 1.0}) if p.language == "swh_Latn")
    for example in _draw_all(pool)[:40]:
        (_, prompt), (_, answer) = example.messages
        letter, _, sentence = answer.partition(". ")
        assert f"\n{letter}. {sentence}\n" in prompt + "\n"
        options = [line for line in prompt.splitlines() if line[:3] in ("A. ", "B. ", "C. ", "D. ")]
        assert len(options) == 4 and len(set(options)) == 4


# --- mixer ----------------------------------------------------------------------------------------


def test_allocate_respects_caps_and_sums_to_the_total():
    assert allocate(100, {"zh": 0.432, "en": 0.262, "x": 0.306}, {"zh": 100, "en": 100, "x": 100}) == {"zh": 43, "en": 26, "x": 31}
    assert allocate(10, {"a": 1.0, "b": 1.0}, {"a": 2, "b": 50}) == {"a": 2, "b": 8}


def test_temperature_moves_language_shares_towards_equal():
    def pool(language, size):
        from bayling_local.training.data.crosslingual import Pool
        return Pool("s", "g", language, "t", size, lambda rng: iter(()))

    plan = GroupPlan("g", [pool("big", 1000), pool("small", 10)], {})
    caps = {0: 1000, 1: 10}
    cold, hot = plan_quotas(plan, 100, 1.0, caps), plan_quotas(plan, 100, 4.0, caps)
    assert cold == {0: 99, 1: 1} and hot == {0: 90, 1: 10}


def test_mix_follows_the_ratios_and_has_no_duplicates(tmp_path):
    result = _build(tmp_path)
    groups = {group: row["examples"] for group, row in result.stats["groups"].items()}
    assert groups == {"chinese": 65, "english": 39, "crosslingual": 46}  # 150 x (0.432, 0.262, 0.306)
    records = _lines(result.paths.train) + _lines(result.paths.eval)
    assert len(records) == 150 and len(_lines(result.paths.eval)) == 8
    keys = [json.dumps(r["messages"], ensure_ascii=False) for r in records]
    assert len(set(keys)) == len(keys)
    assert result.stats["duplicates_skipped"] >= 1  # en_alpaca.jsonl repeats one example
    # shuffled across groups: the held-out split and the head of the training file mix them
    assert len({r["group"] for r in _lines(result.paths.eval)}) >= 2
    assert len({r["group"] for r in _lines(result.paths.train)[:12]}) == 3


def test_exact_duplicates_across_sources_are_kept_once(tmp_path):
    copy = tmp_path / "copy.jsonl"
    copy.write_text((FIXTURES / "zh_messages.jsonl").read_text("utf-8"), "utf-8")
    sources = _data_recipe(tmp_path)["data"]["sources"][:2] + [
        {"name": "copy", "kind": "instructions", "path": str(copy), "language": "zh"}]
    result = _build(tmp_path, sources=sources, eval_size=0,
                    mix={"ratios": {"chinese": 0.5, "english": 0.25, "copy": 0.25}, "total": 80})
    records = _lines(result.paths.train)
    keys = [json.dumps(r["messages"], ensure_ascii=False) for r in records]
    assert len(keys) == 80 and len(set(keys)) == 80
    # "copy" may only take conversations "chinese" did not: the two share all 72, so 40 + 20 <= 72
    assert result.stats["groups"]["copy"]["examples"] == 20
    assert result.stats["duplicates_skipped"] > 5  # the copies of what "chinese" took were turned away


def test_same_seed_gives_the_same_bytes_and_another_seed_another_mix(tmp_path):
    first = _build(tmp_path / "a")
    again = _build(tmp_path / "b")
    other = _build(tmp_path / "c", seed=8)
    assert first.paths.train.read_bytes() == again.paths.train.read_bytes()
    assert first.paths.stats_json.read_text() == again.paths.stats_json.read_text()
    assert first.paths.train.read_bytes() != other.paths.train.read_bytes()


def test_stats_count_examples_and_tokens_per_language_and_task(tmp_path, llama3_tokenizer_path):
    result = _build(tmp_path, tokenizer=str(llama3_tokenizer_path))
    stats = json.loads(result.paths.stats_json.read_text("utf-8"))
    assert sum(row["examples"] for row in stats["languages"].values()) == 150
    assert set(stats["tasks"]) <= {"instruction", "translation", "interactive", "pivot", "choice"}
    assert {"translation", "instruction"} <= set(stats["tasks"])
    assert all(row["tokens"] > 0 for row in stats["language_task"].values())
    markdown = result.paths.stats_markdown.read_text("utf-8")
    assert "| swh_Latn | Swahili |" in markdown and "## Language x task" in markdown


def test_default_total_is_the_largest_mix_without_repeats(tmp_path):
    result = _build(tmp_path, mix={"ratios": {"chinese": 0.432, "english": 0.262, "crosslingual": 0.306}})
    # 72 Chinese conversations at 43.2% bound the mix: floor(72 / 0.432) = 166
    assert result.stats["examples"] == 166 and result.stats["groups"]["chinese"]["examples"] == 72


def test_asking_for_more_than_a_group_holds_names_the_group(tmp_path):
    with pytest.raises(DataError, match="group 'chinese' has only 72 distinct examples but the mix asks for 432"):
        _build(tmp_path, mix={"ratios": {"chinese": 0.432, "english": 0.262, "crosslingual": 0.306}, "total": 1000})


# --- the command ----------------------------------------------------------------------------------


def test_cli_data_build_writes_the_mix_and_says_where(tmp_path):
    path = write_recipe(tmp_path / "recipe.yaml", _data_recipe(tmp_path))
    done = run_cli("train", "data", "build", str(path), timeout=120)
    assert done.returncode == 0, done.stderr
    assert "wrote 142 train examples" in done.stderr
    assert len(_lines(tmp_path / "out" / "mix.jsonl")) == 142


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r["data"].update(sedd=1), "unknown key 'data.sedd'; did you mean 'seed'?"),
        (lambda r: r["data"]["sources"][2].update(languages=["yor_Latn"]), "no text for yor_Latn"),
    ],
    ids=["typo-key", "language-without-text"],
)
def test_cli_bad_recipe_gives_one_line(tmp_path, change, message):
    recipe = _data_recipe(tmp_path)
    change(recipe)
    done = run_cli("train", "data", "build", str(write_recipe(tmp_path / "recipe.yaml", recipe)), timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("bayling-local: error: ") and message in lines[0]


def test_cli_line_without_messages_gives_one_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "Say hi"}\n', "utf-8")
    recipe = _data_recipe(tmp_path)
    recipe["data"]["sources"][1]["path"] = str(bad)
    done = run_cli("train", "data", "build", str(write_recipe(tmp_path / "recipe.yaml", recipe)), timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "bad.jsonl:1: no messages" in lines[0]


def test_usage_errors_are_usage_errors():
    assert issubclass(DataError, UsageError) and issubclass(RecipeError, UsageError)
