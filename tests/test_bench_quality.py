"""Quality benchmarks on the real bundled model: FLORES-200 translation and multiple choice."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from bayling_local.backends.base import LoadOptions
from bayling_local.bench import translation
from bayling_local.bench.choice import ChoiceItem, accuracy, get_task, score_items, xcopa_choice_item
from bayling_local.bench.translation import MalformedPairsError, parse_pairs, score_pair
from bayling_local.evaldata import XcopaItem
from bayling_local.languages import resolve


def shared_data() -> Path:
    return Path(os.environ.get("BAYLING_SHARED_DATA") or Path(__file__).parent.parents[1] / "shared" / "data")


def needs(name: str) -> Path:
    path = shared_data() / name
    if not path.is_file():
        pytest.skip(f"{path} not found (set BAYLING_SHARED_DATA to the folder with the evaluation archives)")
    return path


@pytest.fixture(scope="module")
def one_thread_model():
    from bayling_local.model import open_model

    model = open_model(None, options=LoadOptions(device="cpu", threads=1, context_length=512))
    yield model
    model.close()


# --- translation ----------------------------------------------------------------------------------


def test_cli_translate_prints_bleu_and_chrf_with_signatures(cli, tmp_path):
    needs("flores200_dev_devtest_204langs.tar.xz")
    home = tmp_path / "home"
    result = cli(
        "bench", "translate", "--data", str(shared_data()), "--pairs", "eng_Latn-swh_Latn,en-fr",
        "--limit", "3", "--max-tokens", "16", "--threads", "1", "--device", "cpu",
        "--json", str(tmp_path / "t.json"), env={"BAYLING_HOME": str(home)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    out = result.stdout.decode()
    for text in ("eng_Latn-swh_Latn", "eng_Latn-fra_Latn", "BLEU", "chrF++", "average"):
        assert text in out
    assert "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:" in out  # BLEU signature
    assert "nrefs:1|case:mixed|eff:yes|nc:6|nw:2|space:no|version:" in out  # chrF++ signature
    record = json.loads((tmp_path / "t.json").read_text("utf-8"))["records"][0]
    pairs = record["results"]["pairs"]
    assert [p["sentences"] for p in pairs] == [3, 3]
    assert all(0 <= p["chrf"] <= 100 and 0 <= p["bleu"] <= 100 for p in pairs)
    assert record["kind"] == "translate" and (home / "results.jsonl").is_file()


def test_cli_all_from_pairs_the_source_with_every_language_of_the_data(cli, tmp_path):
    data = tmp_path / "flores"
    (data / "dev").mkdir(parents=True)
    (data / "dev" / "eng_Latn.dev").write_text("Good morning.\n", encoding="utf-8")
    (data / "dev" / "fra_Latn.dev").write_text("Bonjour.\n", encoding="utf-8")
    result = cli(
        "bench", "translate", "--data", str(data), "--split", "dev", "--pairs", "all-from", "eng_Latn",
        "--max-tokens", "4", "--threads", "1", "--device", "cpu", env={"BAYLING_HOME": str(tmp_path / "home")},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    assert "eng_Latn-fra_Latn" in result.stdout.decode()


def test_pairs_accept_codes_aliases_and_all_from():
    pairs = parse_pairs("eng_Latn-swh_Latn, en-zh-Hant")
    assert [p.name for p in pairs] == ["eng_Latn-swh_Latn", "eng_Latn-zho_Hant"]
    assert [p.name for p in parse_pairs("all-from:en", ["eng_Latn", "fra_Latn", "swh_Latn"])] == [
        "eng_Latn-fra_Latn",
        "eng_Latn-swh_Latn",
    ]
    assert parse_pairs("all-from eng_Latn", ["eng_Latn", "fra_Latn"])[0].name == "eng_Latn-fra_Latn"
    for bad in ("eng_Latn", "eng_Latn-", "eng_Latn-eng_Latn", "eng_Latn-swh_Latn,,", "xx-yy"):
        with pytest.raises(MalformedPairsError):
            parse_pairs(bad)


def test_spbleu_is_skipped_without_downloading_when_its_tokenizer_is_absent(tmp_path, monkeypatch):
    from sacrebleu.tokenizers import tokenizer_spm

    def no_network(*args, **kwargs):
        raise AssertionError("spBLEU tried to download its tokenizer")

    monkeypatch.setattr(tokenizer_spm, "SACREBLEU_DIR", str(tmp_path))
    monkeypatch.setattr(tokenizer_spm, "download_file", no_network)
    reason = translation.spbleu_unavailable_reason()
    assert reason and str(tmp_path / "models" / "flores200sacrebleuspm") in reason


def test_spbleu_is_scored_when_its_tokenizer_is_cached(tmp_path, monkeypatch):
    import io

    import sentencepiece
    from sacrebleu.tokenizers import tokenizer_spm

    sentences = [f"the cat number {i} sat on the mat and looked at the dog" for i in range(50)]
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=model, vocab_size=40, hard_vocab_limit=False
    )
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "flores200sacrebleuspm").write_bytes(model.getvalue())
    monkeypatch.setattr(tokenizer_spm, "SACREBLEU_DIR", str(tmp_path))
    assert translation.spbleu_unavailable_reason() is None
    scores = score_pair(["the cat sat on the mat"], ["the cat sat on the mat"], resolve("en"), with_spbleu=True)
    assert scores["spbleu"] == pytest.approx(100.0)
    assert "tok:flores200" in scores["spbleu_signature"]


def test_bleu_tokenizes_chinese_by_character():
    scores = score_pair(["我喜欢猫"], ["我喜欢狗"], resolve("zh"), with_spbleu=False)
    assert "tok:zh" in scores["bleu_signature"] and scores["bleu"] > 0


# --- multiple choice ------------------------------------------------------------------------------


def test_scoring_picks_fluent_english_over_shuffled_characters(one_thread_model):
    fluent = [
        ("The capital of France is", "Paris, a city famous for the Eiffel Tower."),
        ("My favourite colour is", "blue, like the sky on a clear summer day."),
        ("Every morning I drink a cup of", "coffee with milk before I go to work."),
        ("The children played in the", "park until it was time to go home for dinner."),
    ]
    items = []
    for index, (prompt, answer) in enumerate(fluent):
        shuffled = "".join(random.Random(index).sample(answer, len(answer)))
        choices = (answer, shuffled) if index % 2 == 0 else (shuffled, answer)
        items.append(ChoiceItem(prompt, choices, label=index % 2))
    result = accuracy("en", score_items(one_thread_model, items))
    assert result.acc == 1.0 and result.acc_norm == 1.0


def test_acc_norm_divides_by_utf8_bytes():
    from bayling_local.backends.base import ContinuationScore
    from bayling_local.bench.choice import score_item

    class FixedScores:
        """Answer 0 is 2 characters / 6 bytes, answer 1 is 4 characters / 4 bytes."""

        def score(self, prompt, continuations):
            return [ContinuationScore(c, (1,), (lp,)) for c, lp in zip(continuations, (-5.4, -4.4))]

    score = score_item(FixedScores(), ChoiceItem("Q:", ("因为", "abcd"), label=0))
    assert score.byte_lengths == (6, 4)
    assert score.prediction == 1  # the higher sum
    assert score.normalized_prediction == 0  # -0.9 per byte beats -1.1 (per character it would lose: -2.7)


def test_xcopa_prompt_follows_lm_eval():
    item = XcopaItem(
        0, "The man broke his toe.", "He dropped a hammer on his foot.", "He got a hole in his sock.", "cause", 0
    )
    english = xcopa_choice_item(item, "sw")
    assert english.prompt == "The man broke his toe because"
    assert english.continuations() == [" he dropped a hammer on his foot.", " he got a hole in his sock."]
    native = xcopa_choice_item(XcopaItem(0, "Mtu alivunja kidole.", "A.", "B.", "effect", 1), "sw", "native")
    assert native.prompt == "Mtu alivunja kidole kwa hiyo"


def test_cli_choice_xcopa_prints_accuracy_per_language(cli, tmp_path):
    needs("xcopa.tar.xz")
    result = cli(
        "bench", "choice", "--task", "xcopa", "--data", str(shared_data()), "--langs", "sw,zh",
        "--limit", "6", "--threads", "1", "--device", "cpu", "--markdown", str(tmp_path / "c.md"),
        env={"BAYLING_HOME": str(tmp_path / "home")},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    out = result.stdout.decode()
    assert "acc_norm" in out and "chance = 0.50" in out
    lines = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 3}
    assert {"sw", "zh", "average"} <= set(lines)
    assert "| sw | 6 |" in (tmp_path / "c.md").read_text("utf-8")


def test_belebele_folder_is_scored_per_language(one_thread_model, tmp_path):
    from bayling_local.bench.choice import ChoiceSettings, run_choice_benchmark

    row = {
        "flores_passage": "Tom has a red bicycle. He rides it to school every day.",
        "question": "What colour is Tom's bicycle?",
        "mc_answer1": "Blue",
        "mc_answer2": "Red",
        "mc_answer3": "Green",
        "mc_answer4": "Black",
        "correct_answer_num": "2",
    }
    (tmp_path / "eng_Latn.jsonl").write_text(json.dumps(row) + "\n", encoding="utf-8")
    report = run_choice_benchmark(one_thread_model, tmp_path, None, ChoiceSettings("belebele"))
    assert [(a.language, a.items) for a in report.languages] == [("eng_Latn", 1)]
    assert report.chance == 0.25


def test_unknown_task_is_named():
    from bayling_local.bench.choice import UnknownTaskError

    with pytest.raises(UnknownTaskError, match="choose one of: xcopa, belebele"):
        get_task("hellaswag")
