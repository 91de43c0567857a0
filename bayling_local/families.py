"""Artifact families: the GGUF and ONNX conversions of one checkpoint in the model store, and which of them
`--backend auto` runs on this CPU.

A family is the store entries converted from the same checkpoint (the checkpoint hash `convert` records
inside every GGUF and ONNX export, so imports count too) at the same weight width: an int4 export stands in
for a Q4_0 or Q4_K_M GGUF, never for a Q8_0. `auto` compares this machine's own `bench speed`
records of the two when they cover both, else reads the measured table in backends/choice.py.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from bayling_local.backends import registered_backends
from bayling_local.backends.choice import (
    BACKEND_OF_FORMAT,
    Pick,
    cpu_class,
    speed_pick,
    table_pick,
    weight_bits,
)
from bayling_local.errors import BaylingError, UsageError
from bayling_local.store import StoredModel, list_models

AUTO = "auto"
BACKEND_ALIASES = {"onnx": "onnxruntime", "llamacpp": "llama.cpp", "gguf": "llama.cpp"}
"""Names `--backend` also accepts for a registered backend."""
FAMILY_FORMATS = tuple(BACKEND_OF_FORMAT)
SOURCE_SHA256_KEY = "general.source.sha256"
"""The GGUF key convert/gguf.py records the source checkpoint's hash under."""


@dataclass(frozen=True)
class FamilyChoice:
    """The entry to load, the backend to load it with, and why (None: there was nothing to choose)."""

    entry: StoredModel
    backend: str | None
    reason: str | None = None


def backend_name(requested: str) -> str:
    """A registered backend's name for `--backend` (aliases: onnx, llamacpp, gguf), or `auto`."""
    name = BACKEND_ALIASES.get(requested.strip().lower(), requested.strip())
    known = registered_backends()
    if name != AUTO and name not in known:
        raise UsageError(f"unknown backend '{requested}'; choose one of: auto, {', '.join(known)}, onnx")
    return name


def family_members(entry: StoredModel) -> list[StoredModel]:
    """Other GGUF/ONNX entries converted from `entry`'s checkpoint at the same weight width, by name."""
    bits = weight_bits(entry.manifest.quant)
    key = checkpoint_key(entry) if bits is not None else None
    if key is None:
        return []
    return [
        other for other in list_models()
        if other.name != entry.name and other.manifest.format in FAMILY_FORMATS
        and weight_bits(other.manifest.quant) == bits and checkpoint_key(other) == key
    ]


def checkpoint_key(entry: StoredModel) -> str | None:
    """What names the checkpoint a GGUF/ONNX entry was converted from: the checkpoint hash its converter
    recorded inside it (GGUF `general.source.sha256`, ONNX bayling_onnx.json's provenance), which survives
    `models import` and bundles; else the manifest's source (a conversion into the store records the
    checkpoint folder there). None for other formats and unreadable artifacts."""
    if entry.manifest.format not in FAMILY_FORMATS:
        return None
    try:
        digest = _recorded_checkpoint_sha256(entry)
    except BaylingError:
        return None
    if digest:
        return f"sha256:{digest}"
    return f"source:{entry.manifest.source}" if entry.manifest.source else None


def _recorded_checkpoint_sha256(entry: StoredModel) -> str | None:
    if entry.manifest.format == "gguf":
        from bayling_local.gguf_header import read_gguf_header

        found = read_gguf_header(entry.path).metadata.get(SOURCE_SHA256_KEY)
    else:
        from bayling_local.backends.onnxrt import read_export_config

        provenance = read_export_config(entry.path).get("provenance")
        found = provenance.get("sha256") if isinstance(provenance, dict) else None
    return found if isinstance(found, str) and found else None


def choose_in_family(
    entry: StoredModel, backend: str, threads: int | None = None, on_cpu: Callable[[], bool] = lambda: True
) -> FamilyChoice:
    """What `--backend BACKEND` loads for the store entry `entry` (`auto` or a backend's name). `auto` keeps
    `entry` unless its family has an artifact of the other format and the model runs `on_cpu()`: the
    measured speeds are CPU speeds."""
    backend = backend_name(backend)
    if backend != AUTO:
        return _forced(entry, backend)
    if entry.manifest.format not in FAMILY_FORMATS:
        return FamilyChoice(entry, None)
    others = [m for m in family_members(entry) if m.manifest.format != entry.manifest.format]
    if not others or not on_cpu():
        return FamilyChoice(entry, None)
    pair = {entry.manifest.format: entry, others[0].manifest.format: _with_records_first(others)}
    pick = auto_pick(pair, threads)
    chosen = pair[pick.format]
    return FamilyChoice(chosen, pick.backend, f"--backend auto chose {chosen.name} on {pick.reason}")


def _forced(entry: StoredModel, backend: str) -> FamilyChoice:
    formats = registered_backends()[backend].formats
    if entry.manifest.format in formats:
        return FamilyChoice(entry, backend)
    sibling = next((m for m in family_members(entry) if m.manifest.format in formats), None)
    if sibling is None:
        raise UsageError(
            f"'{entry.name}' is a {entry.manifest.format} artifact and the store has no {'/'.join(formats)} "
            f"conversion of its checkpoint at the same weight width for --backend {backend}; convert one "
            f"(`bayling-local convert CHECKPOINT --to ...`) or pass --backend auto"
        )
    return FamilyChoice(sibling, backend, f"--backend {backend} loads {sibling.name}, the {sibling.manifest.format} "
                                          f"of {entry.name}'s checkpoint")


def auto_pick(pair: dict[str, StoredModel], threads: int | None = None) -> Pick:
    """The faster of a GGUF and an ONNX entry on this CPU: from this machine's bench speed records when
    they cover both, else from the measured table for this CPU class."""
    measured = recorded_decode_speeds(pair, threads)
    if measured is not None:
        speeds, recorded_threads = measured
        threads_note = f"{recorded_threads} threads" if recorded_threads else "default threads"
        return speed_pick(speeds["gguf"], speeds["onnx"], f"in this machine's bench speed records ({threads_note})")
    return table_pick(cpu_class(), weight_bits(pair["gguf"].manifest.quant))


def recorded_decode_speeds(pair: dict[str, StoredModel], threads: int | None = None):
    """({format: median decode tok/s}, threads) from this CPU's `bench speed` records of both entries at one
    thread count (`threads` when both were measured so, else the most recently measured count); None when
    the records do not cover both."""
    by_threads: dict[object, dict[str, list[tuple[str, float]]]] = defaultdict(lambda: defaultdict(list))
    for record in _this_cpus_speed_records():
        tps = (record.results.get("generation_tps") or {}).get("mean")
        for artifact_format, entry in pair.items():
            if tps and _records(record, entry):
                by_threads[record.settings.get("threads")][artifact_format].append((record.timestamp, float(tps)))
    covered = {t: runs for t, runs in by_threads.items() if set(runs) == set(pair)}
    if not covered:
        return None
    latest = lambda t: max(stamp for runs in covered[t].values() for stamp, _ in runs)
    chosen = threads if threads in covered else max(covered, key=latest)
    return {f: statistics.median(tps for _, tps in runs) for f, runs in covered[chosen].items()}, chosen


def _with_records_first(entries: list[StoredModel]) -> StoredModel:
    """The entry this CPU's speed records cover, when several of one format could stand in."""
    records = _this_cpus_speed_records()
    return next((e for e in entries if any(_records(r, e) for r in records)), entries[0])


def _records(record, entry: StoredModel) -> bool:
    return record.model == entry.name or record.model_details.get("path") == str(entry.path)


def _this_cpus_speed_records() -> list:
    """`bench speed` records measured on the CPU of this machine (same model name and instruction sets)."""
    from bayling_local.backends.device import cpu_instruction_sets
    from bayling_local.bench.hardware import cpu_model
    from bayling_local.bench.results import read_records

    cpu, sets = cpu_model(), list(cpu_instruction_sets())
    return [
        r for r in read_records().records
        if r.kind == "speed" and r.settings.get("device") == "cpu"
        and r.hardware.get("cpu") == cpu and list(r.hardware.get("instruction_sets") or []) == sets
    ]


# --- what `doctor` says about `--backend auto` -------------------------------------------------------------


def auto_on_this_cpu() -> list[str]:
    """Lines for `doctor`: what `--backend auto` picks on this CPU's class for each measured weight width,
    and for each family in the store that has both a GGUF and an ONNX artifact."""
    from bayling_local.backends.choice import MEASURED_RATIOS

    cpu = cpu_class()
    widths = sorted({row.bits for row in MEASURED_RATIOS if row.cpu_class == cpu.key})
    lines = [f"--backend auto on this CPU ({cpu.label}):"]
    lines += [f"  {bits}-bit weights: {table_pick(cpu, bits).reason}" for bits in widths]
    if not widths:
        lines.append(f"  {table_pick(cpu, None).reason}")
    lines.append("  (this machine's `bench speed` records of both artifacts of a model, at one thread count, come first)")
    lines += [f"  {entry.name}: {choose_in_family(entry, AUTO).reason}" for entry in families_with_both_formats()]
    return lines


def families_with_both_formats() -> list[StoredModel]:
    """One GGUF entry per family that also has an ONNX artifact (the entry a user would name)."""
    return [
        entry for entry in list_models()
        if entry.manifest.format == "gguf"
        and any(m.manifest.format == "onnx" for m in family_members(entry))
    ]
