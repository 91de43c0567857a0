"""Translation-memory reuse: an XLIFF of --segments units translated, then translated again after --edited of
its segments are changed; model calls and wall time of both runs.

Usage: python benchmarks/tm_reuse.py [--segments 2000] [--edited 0.1] [--to fra_Latn] [--max-tokens 16]
           [--model NAME] [--threads N] [--batch-size 8]

The XLIFF 1.2 is generated (distinct English sentences, every fifth with an inline `<g>`); the edited segments
are a fixed random sample, so tagged and plain ones are edited in proportion. The memory is a fresh SQLite
file in a temporary folder. "Model calls" are the conversations sent to the model, counted at the model
(a placeholder retry is a second call); the second run should call it only for the edited segments (plus
their retries) and write the unchanged units' targets exactly as the first run did. Greedy decoding, a small
--max-tokens to keep it quick.
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from pathlib import Path

SUBJECTS = ("The library", "Our team", "The river", "A small shop", "The old bridge", "My neighbour", "The train")
VERBS = ("opens", "closes", "changes", "grows", "waits", "moves", "returns")
TIMES = ("at nine", "in spring", "after the rain", "every Monday", "before noon", "at night", "on time")
XLIFF_NS = "urn:oasis:names:tc:xliff:document:1.2"
EDIT_SEED = 15


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=2000)
    parser.add_argument("--edited", type=float, default=0.1, help="share of segments changed before the 2nd run")
    parser.add_argument("--to", default="fra_Latn")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--model", default=None)
    parser.add_argument("--threads", type=int, default=None)
    return parser.parse_args()


class CountingModel:
    """The model, counting the conversations `run_batch` sends to it: the model calls."""

    def __init__(self, model):
        self._model = model
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self._model, name)

    def chat_batch(self, conversations, *args, **kwargs):
        self.calls += len(conversations)
        return self._model.chat_batch(conversations, *args, **kwargs)


def sentence(number: int, edited: bool) -> str:
    subject = SUBJECTS[number % len(SUBJECTS)]
    verb, when = VERBS[number // 7 % len(VERBS)], TIMES[number // 49 % len(TIMES)]
    text = f"{subject} {verb} {when}, item {number}" + (" (revised)" if edited else "") + "."
    return f'Note: <g id="g{number}">{text}</g>' if number % 5 == 0 else text


def xliff(segments: int, edited: set[int]) -> str:
    units = "\n".join(
        f'  <trans-unit id="{n}"><source>{sentence(n, n in edited)}</source></trans-unit>' for n in range(segments)
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<xliff version="1.2" xmlns="urn:oasis:names:tc:xliff:document:1.2">\n'
        f' <file original="bench" source-language="en" datatype="plaintext"><body>\n{units}\n </body></file>\n</xliff>\n'
    )


def edited_segments(segments: int, share: float) -> set[int]:
    return set(random.Random(EDIT_SEED).sample(range(segments), round(segments * share)))


def unit_targets(path: Path) -> dict[str, bytes]:
    """trans-unit id -> its <target> element as written (lxml reads the file, so it is well-formed XML)."""
    from lxml import etree

    units = etree.parse(str(path)).getroot().iter(f"{{{XLIFF_NS}}}trans-unit")
    return {unit.get("id"): etree.tostring(unit.find(f"{{{XLIFF_NS}}}target")) for unit in units}


def timed_run(model, path: Path, target, options):
    from bayling_local.translate.batch import prepare_batch, run_batch

    counting = CountingModel(model)
    start = time.perf_counter()
    report = run_batch(counting, prepare_batch(path, [target], options))
    return report, counting.calls, time.perf_counter() - start


def describe_run(name: str, segments: int, report, calls: int, seconds: float) -> str:
    return (
        f"{name}: {segments} segments, model calls {calls} ({report.translated} pieces translated, "
        f"{len(report.flagged)} flagged), memory exact hits {report.tm_exact}, fuzzy-assisted {report.tm_fuzzy}, "
        f"fresh {report.fresh}, wall {seconds:.1f} s"
    )


def main() -> None:
    from bayling_local.backends.base import GenerationConfig, LoadOptions
    from bayling_local.bench.hardware import detect_hardware
    from bayling_local.languages import resolve
    from bayling_local.model import open_model
    from bayling_local.translate.batch import BatchOptions

    args = parse_arguments()
    print(detect_hardware().describe())
    model = open_model(args.model, options=LoadOptions(device="cpu", threads=args.threads, context_length=2048))
    settings = getattr(model.backend, "runtime_settings", dict)()
    print(
        f"model {model.name}; backend settings {settings}; threads {args.threads or 'default'}; "
        f"batch size {args.batch_size}; max tokens {args.max_tokens}; greedy"
    )
    target, edited = resolve(args.to), edited_segments(args.segments, args.edited)
    with tempfile.TemporaryDirectory() as folder:
        path, first_output = Path(folder) / "bench.xlf", Path(folder) / "first.xlf"
        output = Path(folder) / f"bench.{target.code}.xlf"
        options = BatchOptions(
            source=resolve("en"),
            batch_size=args.batch_size,
            config=GenerationConfig(temperature=0.0),
            max_tokens=args.max_tokens,
            memory=Path(folder) / "memory.sqlite",
        )
        runs = (("first run", set()), (f"after editing {len(edited)} segments", edited))
        seconds_per_run = []
        for number, (name, changed) in enumerate(runs):
            path.write_text(xliff(args.segments, changed), encoding="utf-8")
            report, calls, seconds = timed_run(model, path, target, options)
            seconds_per_run.append(seconds)
            print(describe_run(name, args.segments, report, calls, seconds), flush=True)
            if number == 0:
                shutil.copyfile(output, first_output)
        before, after = unit_targets(first_output), unit_targets(output)
        unchanged = [unit for unit in before if int(unit) not in edited]
        same = sum(before[unit] == after[unit] for unit in unchanged)
        print(f"unchanged units written identically in the second run: {same}/{len(unchanged)}")
        print(f"second run wall time: {seconds_per_run[1] / seconds_per_run[0]:.1%} of the first")
    model.close()


if __name__ == "__main__":
    main()
