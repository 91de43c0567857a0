"""Translation quality on FLORES-200: BLEU, chrF++ and (when its tokenizer is local) spBLEU.

Sentences are translated greedily with BayLing's own instruction (`translate_lines`) and scored per
language pair with sacrebleu, whose signatures are kept beside every score so figures from different
runs can be compared honestly. Nothing is downloaded: spBLEU is skipped, with a note, unless
sacrebleu's FLORES-200 SentencePiece model is already in its cache.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bayling_local.backends.base import GenerationConfig
from bayling_local.bench.jobs import ProgressCallback, check_cancelled, report
from bayling_local.errors import UnknownLanguageError, UsageError
from bayling_local.languages import Language, resolve

ALL_FROM_PREFIX = "all-from"
# sacrebleu's default 13a tokenizer splits on spaces; scripts written without them get BLEU over
# characters instead (`zh` is sacrebleu's own tokenizer for Chinese, which splits CJK characters).
BLEU_TOKENIZER_BY_SCRIPT = {
    "Hans": "zh",
    "Hant": "zh",
    "Jpan": "char",
    "Thai": "char",
    "Laoo": "char",
    "Khmr": "char",
    "Mymr": "char",
    "Tibt": "char",
}
DEFAULT_BLEU_TOKENIZER = "13a"
CHRF_WORD_ORDER = 2  # chrF++


class MalformedPairsError(UsageError):
    """A --pairs value that is not SOURCE-TARGET[,SOURCE-TARGET…] or `all-from:CODE`."""


@dataclass(frozen=True)
class LanguagePair:
    source: Language
    target: Language

    @property
    def name(self) -> str:
        return f"{self.source.code}-{self.target.code}"


@dataclass(frozen=True)
class TranslationSettings:
    split: str = "devtest"
    """FLORES-200 split: `devtest` (1012 sentences) or `dev` (997)."""
    limit: int | None = None
    """Only the first N sentences of each pair."""
    max_tokens: int | None = None
    """Token limit per translation; None: proportional to the source's length."""


@dataclass
class PairScore:
    pair: str
    source: str
    target: str
    sentences: int
    bleu: float
    chrf: float
    spbleu: float | None
    bleu_signature: str
    chrf_signature: str
    spbleu_signature: str | None
    seconds: float
    """Time spent translating (shared evenly between pairs of one source, which translate together)."""


@dataclass
class TranslationReport:
    pairs: list[PairScore]
    settings: TranslationSettings
    spbleu_note: str | None
    average: dict = field(init=False)
    """Mean BLEU, chrF++ and spBLEU over the pairs (spBLEU None when skipped)."""
    sentences: int = field(init=False)

    def __post_init__(self):
        self.average = {
            "bleu": _mean([p.bleu for p in self.pairs]),
            "chrf": _mean([p.chrf for p in self.pairs]),
            "spbleu": _mean([p.spbleu for p in self.pairs if p.spbleu is not None]),
        }
        self.sentences = sum(p.sentences for p in self.pairs)

    def signatures(self) -> list[str]:
        """The distinct sacrebleu signatures of the scores (for footers)."""
        found = [s for p in self.pairs for s in (p.bleu_signature, p.chrf_signature, p.spbleu_signature) if s]
        return list(dict.fromkeys(found))


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


# --- pairs ----------------------------------------------------------------------------------------


def parse_pairs(spec: str, available: Sequence[str] = ()) -> list[LanguagePair]:
    """`eng_Latn-swh_Latn,en-fr` as pairs; `all-from:eng_Latn` (or `all-from eng_Latn`) as the source
    paired with every other language in `available` (the FLORES codes of the data)."""
    spec = spec.strip()
    if spec.startswith(ALL_FROM_PREFIX):
        source = resolve(spec[len(ALL_FROM_PREFIX) :].strip(" :="))
        return [LanguagePair(source, resolve(code)) for code in available if code != source.code]
    items = [item.strip() for item in spec.split(",")]
    if not spec or not all(items):
        raise MalformedPairsError(f"empty item in --pairs {spec!r}; write e.g. eng_Latn-swh_Latn,eng_Latn-fra_Latn")
    return list(dict.fromkeys(_parse_pair(item) for item in items))


def check_pairs_in_data(pairs: list[LanguagePair], available: Sequence[str]) -> None:
    """A usage error naming the languages the data lacks, before any model is loaded."""
    missing = [code for p in pairs for code in (p.source.code, p.target.code) if code not in available]
    if missing:
        raise MalformedPairsError(
            f"the FLORES-200 data has no {', '.join(dict.fromkeys(missing))}; `bayling-local languages` lists the codes"
        )
    if not pairs:
        raise MalformedPairsError("no language pairs to translate")


def _parse_pair(item: str) -> LanguagePair:
    """Split at the dash that leaves a language on both sides (names such as `zh-Hant` hold one too)."""
    splits = []
    for index, char in enumerate(item):
        if char == "-":
            pair = _try_pair(item[:index], item[index + 1 :])
            if pair is not None:
                splits.append(pair)
    if not splits:
        raise MalformedPairsError(
            f"malformed pair {item!r}: write SOURCE-TARGET with FLORES codes or names, e.g. eng_Latn-swh_Latn"
        )
    if len({(p.source.code, p.target.code) for p in splits}) > 1:
        raise MalformedPairsError(f"ambiguous pair {item!r}: use FLORES codes, e.g. eng_Latn-zho_Hant")
    pair = splits[0]
    if pair.source.code == pair.target.code:
        raise MalformedPairsError(f"pair {item!r} translates {pair.source.code} into itself")
    return pair


def _try_pair(source: str, target: str) -> LanguagePair | None:
    if not source or not target:
        return None
    try:
        return LanguagePair(resolve(source), resolve(target))
    except UnknownLanguageError:
        return None


# --- scoring --------------------------------------------------------------------------------------


def flores200_spm_path() -> Path:
    """Where sacrebleu keeps the FLORES-200 SentencePiece model that spBLEU needs (it downloads it there)."""
    from sacrebleu.tokenizers import tokenizer_spm

    url = tokenizer_spm.SPM_MODELS["flores200"]["url"]
    return Path(tokenizer_spm.SACREBLEU_DIR) / "models" / os.path.basename(url)


def spbleu_unavailable_reason() -> str | None:
    """None when spBLEU can be computed offline, else why not (and how to fix it)."""
    import importlib.util

    if importlib.util.find_spec("sentencepiece") is None:
        return "spBLEU skipped: the sentencepiece package is not installed"
    path = flores200_spm_path()
    if not path.is_file():
        return (
            f"spBLEU skipped: sacrebleu's FLORES-200 tokenizer is not in its cache ({path}); copy the "
            "flores200 SentencePiece model there (or set $SACREBLEU to a folder with models/ in it)"
        )
    return None


def bleu_tokenizer(target: Language) -> str:
    return BLEU_TOKENIZER_BY_SCRIPT.get(target.script, DEFAULT_BLEU_TOKENIZER)


def score_pair(hypotheses: list[str], references: list[str], target: Language, with_spbleu: bool) -> dict:
    """Corpus BLEU, chrF++ and optionally spBLEU (flores200 tokenizer), each with its signature."""
    from sacrebleu.metrics import BLEU, CHRF

    refs = [references]
    bleu = BLEU(tokenize=bleu_tokenizer(target))
    chrf = CHRF(word_order=CHRF_WORD_ORDER)
    scores = {
        "bleu": bleu.corpus_score(hypotheses, refs).score,
        "bleu_signature": str(bleu.get_signature()),
        "chrf": chrf.corpus_score(hypotheses, refs).score,
        "chrf_signature": str(chrf.get_signature()),
        "spbleu": None,
        "spbleu_signature": None,
    }
    if with_spbleu:
        spbleu = BLEU(tokenize="flores200")
        scores["spbleu"] = spbleu.corpus_score(hypotheses, refs).score
        scores["spbleu_signature"] = str(spbleu.get_signature())
    return scores


# --- running --------------------------------------------------------------------------------------


def translate_sentences(
    model,
    sentences: list[str],
    source: Language,
    targets: list[Language],
    settings: TranslationSettings,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> tuple[dict[str, list[str]], float]:
    """Greedy translations of `sentences` into every target, and the seconds it took."""
    from bayling_local.translate import translate_lines

    config = GenerationConfig(temperature=0.0, seed=0)
    outputs: dict[str, list[str]] = {t.code: [] for t in targets}
    stage = f"{source.code} -> {','.join(t.code for t in targets)}"
    started = time.perf_counter()
    for translation in translate_lines(
        model, sentences, targets, source=source, config=config, max_tokens=settings.max_tokens, cancel=cancel
    ):
        check_cancelled(cancel)
        outputs[translation.target.code].append(translation.text)
        report(progress, stage, translation.index + 1, len(sentences))
    return outputs, time.perf_counter() - started


def run_translation_benchmark(
    model,
    data: str | Path,
    pairs: list[LanguagePair],
    settings: TranslationSettings = TranslationSettings(),
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> TranslationReport:
    """Translate and score every pair; pairs sharing a source translate each sentence together."""
    from bayling_local.evaldata import flores_parallel

    codes = [code for p in pairs for code in (p.source.code, p.target.code)]
    texts = flores_parallel(data, codes, settings.split, settings.limit)
    note = spbleu_unavailable_reason()
    scores = []
    for source, targets in _group_by_source(pairs).items():
        hypotheses, seconds = translate_sentences(
            model, texts[source.code], source, targets, settings, progress, cancel
        )
        for target in targets:
            figures = score_pair(hypotheses[target.code], texts[target.code], target, with_spbleu=note is None)
            pair = LanguagePair(source, target)
            scores.append(
                PairScore(
                    pair.name,
                    source.code,
                    target.code,
                    len(hypotheses[target.code]),
                    seconds=seconds / len(targets),
                    **figures,
                )
            )
    order = [p.name for p in pairs]
    scores.sort(key=lambda s: order.index(s.pair))
    return TranslationReport(scores, settings, note)


def _group_by_source(pairs: list[LanguagePair]) -> dict[Language, list[Language]]:
    groups: dict[Language, list[Language]] = {}
    for pair in pairs:
        groups.setdefault(pair.source, []).append(pair.target)
    return groups


def translation_record(report: TranslationReport, model, hardware, data: str | Path):
    """The results-log record of a translation run (`model`: a `jobs.ModelSummary`)."""
    from dataclasses import asdict

    from bayling_local.bench.results import new_record

    results = {
        "pairs": report.pairs,
        "average": report.average,
        "sentences": report.sentences,
        "spbleu_note": report.spbleu_note,
    }
    return new_record("translate", model, hardware, {**asdict(report.settings), "data": str(data)}, results)
