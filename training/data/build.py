"""Build the language-alignment instruction mix a recipe's `data:` section describes.

Reads every source, turns parallel corpora into cross-lingual pools, mixes, shuffles with the seed,
and writes <output> (train), <output>.eval (held out), and the stats as JSON and Markdown. The
same recipe and seed give byte-identical files.
"""

from __future__ import annotations

import json
import os
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from bayling_local.languages import resolve
from bayling_local.training.config import DataConfig, Recipe, SourceConfig
from bayling_local.training.data.crosslingual import CrossLingualContext, Pool, crosslingual_pools
from bayling_local.training.data.instructions import read_instructions
from bayling_local.training.data.mixer import GroupPlan, default_total, draw_group, group_targets
from bayling_local.training.data.parallel import read_parallel
from bayling_local.training.data.records import DataError, Example
from bayling_local.training.data.stats import load_token_counter, mix_stats, stats_markdown
from bayling_local.training.data.wordings import Wordings, wordings_for


@dataclass(frozen=True)
class MixPaths:
    """Where one mix is written."""

    train: Path
    eval: Path
    stats_json: Path
    stats_markdown: Path

    @classmethod
    def for_output(cls, output: Path) -> MixPaths:
        stem, suffix = output.stem, output.suffix or ".jsonl"
        return cls(
            train=output,
            eval=output.with_name(f"{stem}.eval{suffix}"),
            stats_json=output.with_name(f"{stem}.stats.json"),
            stats_markdown=output.with_name(f"{stem}.stats.md"),
        )


@dataclass(frozen=True)
class MixResult:
    paths: MixPaths
    stats: dict


class _Dedup(set):
    """Keys already in the mix, counting the candidates turned away."""

    skipped = 0

    def __contains__(self, key: object) -> bool:
        found = super().__contains__(key)
        if found:
            self.skipped += 1
        return found


def build_mix(recipe: Recipe) -> MixResult:
    """Build and write the mix; returns where it went and its stats."""
    data = recipe.require_data()
    seen = _Dedup()
    plans = _group_plans(recipe, data, seen)
    total = _mix_total(data, plans)
    targets = group_targets(data.mix.ratios, total)
    examples: list[Example] = []
    for group in data.mix.ratios:
        examples += draw_group(plans[group], targets[group], data.mix.temperature, data.seed, seen)
    random.Random(f"{data.seed}/shuffle").shuffle(examples)
    paths = MixPaths.for_output(recipe.resolve(data.output))
    stats = _stats(recipe, data, examples, seen.skipped)
    _write_mix(paths, examples, data.eval_size, stats)
    return MixResult(paths, stats)


def _group_plans(recipe: Recipe, data: DataConfig, seen: _Dedup) -> dict[str, GroupPlan]:
    wordings = wordings_for(data.instruction_languages, [recipe.resolve(path) for path in data.wordings])
    hubs = [resolve(hub).code for hub in data.hub_languages]
    always = [resolve(name).code for name in data.instruction_languages]
    plans = {group: GroupPlan(group, [], {}) for group in data.mix.ratios}
    for source in data.sources:
        paths = [recipe.resolve(path) for path in source.all_paths()]
        if source.kind == "instructions":
            pools = _instruction_pools(source, paths, seen)
        else:
            pools = _parallel_pools(source, paths, hubs, always, wordings)
        plans[source.group_name].pools += pools
        plans[source.group_name].task_weights[source.name] = dict(source.tasks)
    return plans


def _instruction_pools(source: SourceConfig, paths: list[Path], seen: _Dedup) -> list[Pool]:
    by_language: dict[str, list[Example]] = defaultdict(list)
    keys: set[str] = set()
    for example in read_instructions(
        paths, source=source.name, group=source.group_name, task=source.task,
        language=source.language, fmt=source.format,
    ):
        key = example.key()
        if key in keys:
            seen.skipped += 1
            continue
        keys.add(key)
        by_language[example.language].append(example)
    return [
        Pool(source.name, source.group_name, language, source.task, len(items),
             lambda rng, items=items: iter(rng.sample(items, len(items))))
        for language, items in sorted(by_language.items())
    ]


def _parallel_pools(
    source: SourceConfig, paths: list[Path], hubs: list[str], always: list[str], wordings: dict[str, Wordings]
) -> list[Pool]:
    corpus = read_parallel(
        source.name, paths, fmt=source.format, languages=source.languages, split=source.split,
        max_lines=source.max_lines, optional=hubs,
    )
    present = tuple(hub for hub in hubs if hub in corpus.lines)
    if not present:
        raise DataError(
            f"source '{source.name}' has none of the hub languages ({', '.join(hubs)}), so no translation "
            "pairs can be built; add a file for one or change data.hub_languages"
        )
    context = CrossLingualContext(
        corpus=corpus, source=source.name, group=source.group_name, hubs=present,
        always=tuple(wordings[code] for code in always),
        by_language={code: w for code, w in wordings.items() if code not in always},
    )
    return crosslingual_pools(context, source.tasks)


def _mix_total(data: DataConfig, plans: dict[str, GroupPlan]) -> int:
    capacities = {group: sum(pool.size for pool in plan.pools) for group, plan in plans.items()}
    empty = [group for group, capacity in capacities.items() if capacity == 0 and data.mix.ratios[group] > 0]
    if empty:
        raise DataError(f"group '{empty[0]}' has no examples; check its sources")
    total = data.mix.total or default_total(data.mix.ratios, capacities)
    if total <= data.eval_size:
        raise DataError(f"the mix has {total} examples, not more than data.eval_size ({data.eval_size})")
    return total


def _stats(recipe: Recipe, data: DataConfig, examples: list[Example], skipped: int) -> dict:
    counter = load_token_counter(recipe.resolve(data.tokenizer), data.tokenizer) if data.tokenizer else None
    return mix_stats(
        examples, eval_size=data.eval_size, seed=data.seed, ratios=data.mix.ratios,
        duplicates_skipped=skipped, count_tokens=counter,
    )


def _write_mix(paths: MixPaths, examples: list[Example], eval_size: int, stats: dict) -> None:
    paths.train.parent.mkdir(parents=True, exist_ok=True)
    _write_text(paths.eval, "".join(example.to_json_line() for example in examples[:eval_size]))
    _write_text(paths.train, "".join(example.to_json_line() for example in examples[eval_size:]))
    _write_text(paths.stats_json, json.dumps(stats, indent=2, ensure_ascii=False) + "\n")
    _write_text(paths.stats_markdown, stats_markdown(stats))


def _write_text(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, "utf-8")
    os.replace(temporary, path)
