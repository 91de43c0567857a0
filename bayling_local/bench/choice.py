"""Multiple-choice accuracy by log-likelihood (XCOPA, Belebele), as lm-evaluation-harness scores it.

Each item is a prompt and a few continuations; the model's natural-log probability of each
continuation decides. `acc` takes the highest sum; `acc_norm` divides each sum by the continuation's
length in UTF-8 bytes first, so longer answers are not penalised for their length. (lm-eval's code
divides by `len(str)`, characters; the two agree on ASCII answers.)

Prompts follow lm-eval's tasks. XCOPA: the premise without its final period, a connector and the
lower-cased alternative (`The man broke his toe because` + ` he dropped a hammer on his foot.`).
The connector is English (`because`/`therefore`) by default, the same words for every language, so
that languages are compared on one prompt; `connectors="native"` uses lm-eval's translated ones
(`kwa sababu`, `因为`, …) to reproduce its figures. Belebele: lm-eval's `P:/Q:/A-D/Answer:` prompt
scored on the letters.
"""

from __future__ import annotations

import math
import statistics
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bayling_local.bench.jobs import ProgressCallback, check_cancelled, report
from bayling_local.errors import UsageError

XCOPA_CONNECTORS: dict[str, dict[str, str]] = {
    "english": {"cause": "because", "effect": "therefore"},
    # lm-evaluation-harness, lm_eval/tasks/xcopa/utils.py
    "et": {"cause": "sest", "effect": "seetõttu"},
    "ht": {"cause": "poukisa", "effect": "donk sa"},
    "it": {"cause": "perché", "effect": "quindi"},
    "id": {"cause": "karena", "effect": "maka"},
    "qu": {"cause": "imataq", "effect": "chaymi"},
    "sw": {"cause": "kwa sababu", "effect": "kwa hiyo"},
    "zh": {"cause": "因为", "effect": "所以"},
    "ta": {"cause": "காரணமாக", "effect": "எனவே"},
    "th": {"cause": "เพราะ", "effect": "ดังนั้น"},
    "tr": {"cause": "çünkü", "effect": "bu yüzden"},
    "vi": {"cause": "bởi vì", "effect": "vì vậy"},
}
CONNECTOR_STYLES = ("english", "native")
BELEBELE_LETTERS = ("A", "B", "C", "D")


class UnknownTaskError(UsageError):
    """A --task that is not one of the multiple-choice tasks."""


@dataclass(frozen=True)
class ChoiceItem:
    """A prompt and its candidate answers; the model scores `delimiter + choice` after the prompt."""

    prompt: str
    choices: tuple[str, ...]
    label: int
    delimiter: str = " "

    def continuations(self) -> list[str]:
        return [self.delimiter + choice for choice in self.choices]


@dataclass(frozen=True)
class ItemScore:
    label: int
    logprobs: tuple[float, ...]
    byte_lengths: tuple[int, ...]

    @property
    def prediction(self) -> int:
        return _argmax(self.logprobs)

    @property
    def normalized_prediction(self) -> int:
        return _argmax([lp / max(1, n) for lp, n in zip(self.logprobs, self.byte_lengths)])


def _argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=lambda i: values[i])


def score_item(model, item: ChoiceItem) -> ItemScore:
    scores = model.score(item.prompt, item.continuations())
    return ItemScore(
        item.label,
        tuple(s.logprob for s in scores),
        tuple(len(choice.encode("utf-8")) for choice in item.choices),
    )


@dataclass
class LanguageAccuracy:
    language: str
    """The language as the data names it (XCOPA: ISO 639-1; Belebele: the FLORES code)."""
    items: int
    acc: float
    acc_norm: float
    acc_stderr: float
    """Standard error of `acc` (binomial), to tell a real difference from noise."""


def accuracy(language: str, scores: list[ItemScore]) -> LanguageAccuracy:
    n = len(scores)
    acc = sum(s.prediction == s.label for s in scores) / n
    acc_norm = sum(s.normalized_prediction == s.label for s in scores) / n
    stderr = math.sqrt(acc * (1 - acc) / (n - 1)) if n > 1 else 0.0
    return LanguageAccuracy(language, n, acc, acc_norm, stderr)


# --- tasks as data --------------------------------------------------------------------------------


def xcopa_choice_item(item, lang: str, connectors: str = "english") -> ChoiceItem:
    words = XCOPA_CONNECTORS.get("english" if connectors == "english" else lang)
    if words is None:
        raise UsageError(f"no native XCOPA connectors for '{lang}'; use --connectors english")
    premise = item.premise.strip()
    prompt = premise[:-1] + " " + words[item.question]  # drop the final period, as lm-eval does
    return ChoiceItem(prompt, (_lower_first(item.choice1), _lower_first(item.choice2)), item.label)


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def belebele_choice_item(item) -> ChoiceItem:
    answers = "".join(f"{letter}: {answer}\n" for letter, answer in zip(BELEBELE_LETTERS, item.answers))
    prompt = f"P: {item.passage}\nQ: {item.question.strip()}\n{answers}Answer:"
    return ChoiceItem(prompt, BELEBELE_LETTERS, item.label)


def _xcopa_items(data, lang: str, split: str, limit: int | None, connectors: str) -> list[ChoiceItem]:
    from bayling_local.evaldata import xcopa_items

    return [xcopa_choice_item(item, lang, connectors) for item in xcopa_items(data, lang, split, limit)]


def _xcopa_languages(data) -> list[str]:
    from bayling_local.evaldata import xcopa_languages

    if Path(data).suffix == ".jsonl":
        return [Path(data).name.split(".")[-2]]  # test.sw.jsonl
    return xcopa_languages(data)


def _belebele_items(data, lang: str, split: str, limit: int | None, connectors: str) -> list[ChoiceItem]:
    from bayling_local.evaldata import belebele_items

    file_given = Path(data).is_file()
    return [belebele_choice_item(item) for item in belebele_items(data, None if file_given else lang, limit)]


def _belebele_languages(data) -> list[str]:
    from bayling_local.evaldata import belebele_languages

    return belebele_languages(data)


def _xcopa_code_of(data, lang: str) -> str:
    from bayling_local.evaldata import xcopa_code

    return lang if Path(data).suffix == ".jsonl" else xcopa_code(data, lang)


def _belebele_code_of(data, lang: str) -> str:
    from bayling_local.languages import resolve

    return lang if Path(data).is_file() else resolve(lang).code


@dataclass(frozen=True)
class ChoiceTask:
    name: str
    description: str
    splits: tuple[str, ...]
    default_split: str
    choices: int
    languages: Callable[[str | Path], list[str]]
    """The languages the data holds."""
    code_of: Callable[[str | Path, str], str]
    """The data's name for a language the user named any way."""
    items: Callable[[str | Path, str, str, int | None, str], list[ChoiceItem]]
    """(data, language, split, limit, connector style) -> items."""

    @property
    def chance(self) -> float:
        return 1.0 / self.choices


TASKS: dict[str, ChoiceTask] = {
    task.name: task
    for task in (
        ChoiceTask(
            "xcopa",
            "XCOPA causal commonsense, 2 choices (11 languages)",
            ("test", "val"),
            "test",
            2,
            _xcopa_languages,
            _xcopa_code_of,
            _xcopa_items,
        ),
        ChoiceTask(
            "belebele",
            "Belebele reading comprehension on FLORES passages, 4 choices",
            ("test",),
            "test",
            4,
            _belebele_languages,
            _belebele_code_of,
            _belebele_items,
        ),
    )
}


def get_task(name: str) -> ChoiceTask:
    task = TASKS.get(name.strip().lower())
    if task is None:
        raise UnknownTaskError(f"unknown task '{name}'; choose one of: {', '.join(TASKS)}")
    return task


# --- running --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChoiceSettings:
    task: str = "xcopa"
    split: str | None = None
    """None: the task's default split (XCOPA: test)."""
    limit: int | None = None
    """Only the first N items per language."""
    connectors: str = "english"
    """XCOPA connectors: `english` (one prompt for all languages) or `native` (lm-eval's)."""


@dataclass
class ChoiceReport:
    task: str
    settings: ChoiceSettings
    languages: list[LanguageAccuracy]
    chance: float
    average: dict = field(init=False)
    """Mean acc and acc_norm over languages."""

    def __post_init__(self):
        self.average = {
            "acc": statistics.fmean(a.acc for a in self.languages) if self.languages else None,
            "acc_norm": statistics.fmean(a.acc_norm for a in self.languages) if self.languages else None,
        }


def check_choice_request(
    data: str | Path, languages: Sequence[str] | None, settings: ChoiceSettings
) -> tuple[str, list[str]]:
    """The split and the data's language codes, or a usage error, before any model is loaded."""
    task = get_task(settings.task)
    split = settings.split or task.default_split
    if split not in task.splits:
        raise UsageError(f"{task.name} has no split '{split}'; choose {' or '.join(task.splits)}")
    if settings.connectors not in CONNECTOR_STYLES:
        raise UsageError(f"unknown connector style '{settings.connectors}'; choose {' or '.join(CONNECTOR_STYLES)}")
    codes = [task.code_of(data, lang) for lang in languages] if languages else task.languages(data)
    if not codes:
        raise UsageError(f"no {task.name} languages found in {data}")
    return split, list(dict.fromkeys(codes))


def run_choice_benchmark(
    model,
    data: str | Path,
    languages: Sequence[str] | None = None,
    settings: ChoiceSettings = ChoiceSettings(),
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> ChoiceReport:
    """Accuracy per language (all the data holds when `languages` is None)."""
    task = get_task(settings.task)
    split, codes = check_choice_request(data, languages, settings)
    results = []
    for code in codes:
        items = task.items(data, code, split, settings.limit, settings.connectors)
        results.append(accuracy(code, score_items(model, items, code, progress, cancel)))
    return ChoiceReport(task.name, settings, results, task.chance)


def score_items(
    model,
    items: list[ChoiceItem],
    stage: str = "choice",
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> list[ItemScore]:
    if not items:
        raise UsageError(f"no items to score for {stage}")
    scores = []
    for index, item in enumerate(items):
        check_cancelled(cancel)
        scores.append(score_item(model, item))
        report(progress, stage, index + 1, len(items))
    return scores


def choice_record(report: ChoiceReport, model, hardware, data: str | Path):
    """The results-log record of a multiple-choice run (`model`: a `jobs.ModelSummary`)."""
    from dataclasses import asdict

    from bayling_local.bench.results import new_record

    results = {"languages": report.languages, "average": report.average, "chance": report.chance}
    return new_record("choice", model, hardware, {**asdict(report.settings), "data": str(data)}, results)
