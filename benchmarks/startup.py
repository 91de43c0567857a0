"""Start-up figures: `bayling-local --help`, and the first generated token with the bundled model.

Usage: python benchmarks/startup.py [--runs N]
Prints the median and min over N runs of each, measured as a user sees them (whole processes), plus
the in-process split of the first token into model load and first-token latency.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def time_command(args: list[str], runs: int) -> list[float]:
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True)
        timings.append(time.perf_counter() - start)
    return timings


def first_token_in_process() -> tuple[float, float]:
    """(seconds to load the model, seconds from the request to the first streamed piece)."""
    from bayling_local.backends.base import GenerationConfig, LoadOptions
    from bayling_local.model import open_model

    start = time.perf_counter()
    model = open_model(None, options=LoadOptions(context_length=2048))
    loaded = time.perf_counter()
    stream, _ = model.chat([{"role": "user", "content": "Hello!"}], GenerationConfig(max_tokens=8))
    next(iter(stream))
    first = time.perf_counter()
    model.close()
    return loaded - start, first - loaded


def report(label: str, timings: list[float]) -> None:
    print(f"{label:<48} median {statistics.median(timings) * 1000:8.1f} ms   min {min(timings) * 1000:8.1f} ms   (n={len(timings)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    cli = [sys.executable, "-m", "bayling_local"]
    report("bayling-local --help (whole process)", time_command([*cli, "--help"], runs))
    report(
        "generate --max-tokens 1 (whole process, cold)",
        time_command([*cli, "generate", "--max-tokens", "1", "--context", "2048", "Hello"], runs),
    )
    load, first = zip(*(first_token_in_process() for _ in range(runs)))
    report("in-process: load bundled model", list(load))
    report("in-process: chat request -> first token", list(first))


if __name__ == "__main__":
    main()
