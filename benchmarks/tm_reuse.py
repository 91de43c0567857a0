"""Translation-memory reuse: an XLIFF of --segments units translated, then translated again after --edited of
its segments are changed; model calls and wall time of both runs.

Usage: python benchmarks/tm_reuse.py [--segments 2000] [--edited 0.1] [--to fra_Latn] [--max-tokens 16]
           [--model NAME] [--threads N] [--batch-size 8]

The XLIFF 1.2 is generated (distinct English sentences, every fifth with an inline `<g>`), the memory is a
fresh SQLite file in a temporary folder. "Model calls" are the pieces sent to the model (`report.translated`);
the second run should send only the edited ones. Greedy decoding, a small --max-tokens to keep it quick.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

SUBJECTS = ("The library", "Our team", "The river", "A small shop", "The old bridge", "My neighbour", "The train")
VERBS = ("opens", "closes", "changes", "grows", "waits", "moves", "returns")
TIMES = ("at nine", "in spring", "after the rain", "every Monday", "before noon", "at night", "on time")


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


def timed_run(model, path: Path, target, options):
    from bayling_local.translate.batch import prepare_batch, run_batch

    start = time.perf_counter()
    report = run_batch(model, prepare_batch(path, [target], options))
    return report, time.perf_counter() - start


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
    print(f"model {model.name}; backend settings {settings}; threads {args.threads or 'default'}; "
          f"batch size {args.batch_size}; max tokens {args.max_tokens}; greedy")
    target, edited = resolve(args.to), set(range(0, args.segments, max(1, round(1 / args.edited))))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.xlf"
        options = BatchOptions(
            source=resolve("en"), batch_size=args.batch_size, config=GenerationConfig(temperature=0.0),
            max_tokens=args.max_tokens, memory=Path(folder) / "memory.sqlite",
        )
        for name, changed in (("first run", set()), (f"after editing {len(edited)} segments", edited)):
            path.write_text(xliff(args.segments, changed), encoding="utf-8")
            report, seconds = timed_run(model, path, target, options)
            print(f"{name}: {args.segments} segments, model calls {report.translated}, memory exact hits "
                  f"{report.tm_exact}, fuzzy-assisted {report.tm_fuzzy}, wall {seconds:.1f} s")
    model.close()


if __name__ == "__main__":
    main()
