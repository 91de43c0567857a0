"""The mixer: per-group ratios, temperature sampling across languages, exact de-duplication, one seed.

A group's share of the mix is split across its languages in proportion to n_l^(1/T) (n_l: the
candidates of language l; T=1 keeps corpus proportions, large T approaches equal shares), then
across the sources of a language by size, then across tasks by the source's task weights. Pools
are drawn lazily in a seeded order; a candidate whose conversation was already taken is skipped,
and a pool that runs dry hands its shortfall to the others of its group.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass, field

from bayling_local.training.data.crosslingual import Pool
from bayling_local.training.data.records import DataError, Example


def allocate(total: int, weights: Mapping[Hashable, float], caps: Mapping[Hashable, int]) -> dict[Hashable, int]:
    """Split `total` in proportion to `weights`, no key above its cap (water-filling, then largest
    remainders; ties go to the earlier key). Gives every cap when `total` exceeds their sum."""
    keys = [key for key in weights if caps.get(key, 0) > 0 and weights[key] > 0]
    result = {key: 0 for key in weights}
    if total >= sum(caps[key] for key in keys):
        return {**result, **{key: caps[key] for key in keys}}
    shares = _capped_shares(total, {key: weights[key] for key in keys}, {key: caps[key] for key in keys})
    floors = {key: min(caps[key], math.floor(share)) for key, share in shares.items()}
    remaining = total - sum(floors.values())
    order = sorted(keys, key=lambda key: (-(shares[key] - floors[key]), keys.index(key)))
    for key in order:
        if remaining == 0:
            break
        if floors[key] < caps[key]:
            floors[key] += 1
            remaining -= 1
    return {**result, **floors}


def _capped_shares(total: int, weights: dict, caps: dict) -> dict:
    shares, free, left = {}, dict(weights), float(total)
    while free:
        scale = left / sum(free.values())
        over = {key for key, weight in free.items() if weight * scale >= caps[key]}
        if not over:
            shares.update({key: weight * scale for key, weight in free.items()})
            break
        for key in over:
            shares[key] = float(caps[key])
            left -= caps[key]
            del free[key]
    return shares


def temperature_weights(sizes: Mapping[str, int], temperature: float) -> dict[str, float]:
    """n_l^(1/T) for every language with candidates."""
    return {language: size ** (1.0 / temperature) for language, size in sizes.items() if size > 0}


@dataclass
class _Draw:
    """A pool being drawn from: its iterator and what it has given so far."""

    pool: Pool
    iterator: Iterator[Example]
    taken: list[Example] = field(default_factory=list)
    exhausted: bool = False


@dataclass
class GroupPlan:
    """What the mixer needs to know about one group."""

    name: str
    pools: list[Pool]
    task_weights: dict[str, dict[str, float]]  # source -> task -> weight


def plan_quotas(plan: GroupPlan, total: int, temperature: float, caps: Mapping[int, int]) -> dict[int, int]:
    """Quota per pool (by index in plan.pools): languages by temperature, sources by size, tasks by weight."""
    by_language: dict[str, list[int]] = defaultdict(list)
    for index, pool in enumerate(plan.pools):
        by_language[pool.language].append(index)
    language_caps = {language: sum(caps[i] for i in indices) for language, indices in by_language.items()}
    language_sizes = {language: sum(plan.pools[i].size for i in indices) for language, indices in by_language.items()}
    language_quota = allocate(total, temperature_weights(language_sizes, temperature), language_caps)
    quotas: dict[int, int] = {}
    for language, indices in by_language.items():
        quotas.update(_split_language(plan, indices, language_quota.get(language, 0), caps))
    return quotas


def _split_language(plan: GroupPlan, indices: list[int], quota: int, caps: Mapping[int, int]) -> dict[int, int]:
    by_source: dict[str, list[int]] = defaultdict(list)
    for index in indices:
        by_source[plan.pools[index].source].append(index)
    source_sizes = {source: float(sum(plan.pools[i].size for i in members)) for source, members in by_source.items()}
    source_caps = {source: sum(caps[i] for i in members) for source, members in by_source.items()}
    source_quota = allocate(quota, source_sizes, source_caps)
    quotas = {}
    for source, members in by_source.items():
        weights = {i: plan.task_weights.get(source, {}).get(plan.pools[i].task, 1.0) for i in members}
        quotas.update(allocate(source_quota[source], weights, {i: caps[i] for i in members}))
    return quotas


def draw_group(plan: GroupPlan, total: int, temperature: float, seed: int, seen: set[str]) -> list[Example]:
    """`total` distinct examples from the group's pools (adds their keys to `seen`)."""
    draws = [
        _Draw(pool, pool.draw(random.Random(f"{seed}/{pool.source}/{pool.language}/{pool.task}")))
        for pool in plan.pools
    ]
    caps = {index: pool.size for index, pool in enumerate(plan.pools)}
    while True:
        quotas = plan_quotas(plan, total, temperature, caps)
        for index, draw in enumerate(draws):
            _take(draw, quotas.get(index, 0), seen)
            if draw.exhausted:
                caps[index] = len(draw.taken)
        taken = sum(len(draw.taken) for draw in draws)
        if taken >= total or all(draw.exhausted or len(draw.taken) >= caps[i] for i, draw in enumerate(draws)):
            break
        if all(len(draw.taken) >= quotas.get(i, 0) for i, draw in enumerate(draws)):
            break
    return _trimmed(draws, total, plan.name)


def _take(draw: _Draw, quota: int, seen: set[str]) -> None:
    while len(draw.taken) < quota and not draw.exhausted:
        example = next(draw.iterator, None)
        if example is None:
            draw.exhausted = True
            return
        key = example.key()
        if key not in seen:
            seen.add(key)
            draw.taken.append(example)


def _trimmed(draws: list[_Draw], total: int, group: str) -> list[Example]:
    examples = [example for draw in draws for example in draw.taken]
    if len(examples) < total:
        raise DataError(
            f"group '{group}' has only {len(examples)} distinct examples but the mix asks for {total}; "
            "lower data.mix.total, raise this group's data, or lower its ratio"
        )
    return examples[:total]


def group_targets(ratios: Mapping[str, float], total: int) -> dict[str, int]:
    """Examples per group: `total` split by the normalised ratios (largest remainders)."""
    return allocate(total, dict(ratios), {group: total for group in ratios})


def default_total(ratios: Mapping[str, float], capacities: Mapping[str, int]) -> int:
    """The largest mix every group can fill at its ratio without repeating an example."""
    norm = sum(ratios.values())
    limits = [capacities[group] / (ratio / norm) for group, ratio in ratios.items() if ratio > 0]
    return math.floor(min(limits)) if limits else 0
