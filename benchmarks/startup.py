"""Start-up figures: `bayling-local --help`, and the first generated token with the bundled model.

Usage: python benchmarks/startup.py [--runs N] [--top K] [--no-model]
Prints the hardware line, then the median and min over N runs of each, measured as a user sees them (whole
processes, wall clock and the child's CPU time, which shared cores disturb less), the split of `--help` into
importing the CLI and rendering, the `python -X importtime` entries that cost most, and the in-process split
of the first token into model load and first-token latency with the backend settings it ran with.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time

HELP_SPLIT = (
    "import time, io, contextlib; t0 = time.perf_counter(); from bayling_local.cli import main; "
    "t1 = time.perf_counter()\n"
    "with contextlib.redirect_stdout(io.StringIO()): main(['--help'])\n"
    "print(t1 - t0, time.perf_counter() - t1)"
)
GENERATE_ARGS = ("generate", "--max-tokens", "1", "--context", "2048", "Hello")


def time_command(args: list[str], runs: int) -> tuple[list[float], list[float]]:
    """(wall seconds, child CPU seconds: user + system) of each run of `args`."""
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return walls, cpus


def help_split(runs: int) -> tuple[list[float], list[float]]:
    """(seconds to import bayling_local.cli, seconds to render the root help), each in a fresh process."""
    pairs = [
        subprocess.run([sys.executable, "-c", HELP_SPLIT], check=True, capture_output=True, text=True).stdout.split()
        for _ in range(runs)
    ]
    return [float(p[0]) for p in pairs], [float(p[1]) for p in pairs]


def importtime_top(statement: str, top: int) -> list[tuple[int, int, str]]:
    """The `top` modules with the largest cumulative import time (µs) while running `statement`."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", statement], check=True, capture_output=True, text=True
    )
    rows = []
    for line in result.stderr.splitlines():
        fields = line.removeprefix("import time:").split("|")
        if len(fields) == 3 and fields[0].strip().isdigit():
            rows.append((int(fields[0]), int(fields[1]), fields[2].rstrip()))
    return sorted(rows, key=lambda row: row[1], reverse=True)[:top]


def first_token_in_process() -> tuple[float, float, dict[str, str]]:
    """(seconds to load the model, seconds from the request to the first streamed piece, backend settings)."""
    from bayling_local.backends.base import GenerationConfig, LoadOptions
    from bayling_local.model import open_model

    start = time.perf_counter()
    model = open_model(None, options=LoadOptions(context_length=2048))
    loaded = time.perf_counter()
    stream, _ = model.chat([{"role": "user", "content": "Hello!"}], GenerationConfig(max_tokens=8))
    next(iter(stream))
    first = time.perf_counter()
    settings = {"backend": model.backend.name, "model": model.name, **_runtime_settings(model.backend)}
    model.close()
    return loaded - start, first - loaded, settings


def _runtime_settings(backend) -> dict[str, str]:
    describe = getattr(backend, "runtime_settings", None)  # optional in the Backend protocol
    return describe() if describe else {}


def report(label: str, timings: list[float], unit: str = "ms") -> None:
    print(
        f"{label:<52} median {statistics.median(timings) * 1000:8.1f} {unit}   "
        f"min {min(timings) * 1000:8.1f} {unit}   (n={len(timings)})"
    )


def report_process(label: str, timings: tuple[list[float], list[float]]) -> None:
    walls, cpus = timings
    report(f"{label}, wall", walls)
    report(f"{label}, CPU", cpus)


def print_importtime(statement: str, top: int) -> None:
    print(f"\npython -X importtime -c {statement!r}: top {top} by cumulative time")
    print(f"  {'self ms':>8} {'cumul. ms':>9}  module")
    for own, cumulative, name in importtime_top(statement, top):
        print(f"  {own / 1000:8.1f} {cumulative / 1000:9.1f}  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--top", type=int, default=15, help="importtime entries to print")
    parser.add_argument("--no-model", action="store_true", help="skip the first-token figures")
    arguments = parser.parse_args()
    runs = arguments.runs

    from bayling_local.bench.hardware import detect_hardware

    print(f"hardware: {detect_hardware().describe()}")
    cli = [sys.executable, "-m", "bayling_local"]
    report_process("python -c pass (interpreter floor)", time_command([sys.executable, "-c", "pass"], runs))
    report_process("bayling-local --help (whole process)", time_command([*cli, "--help"], runs))
    report_process("bayling-local chat --help (whole process)", time_command([*cli, "chat", "--help"], runs))
    imports, render = help_split(runs)
    report("--help in-process: import bayling_local.cli", imports)
    report("--help in-process: render the root help", render)
    print_importtime("import bayling_local.cli", arguments.top)
    if arguments.no_model:
        return
    print(f"\nsettings: `{' '.join(GENERATE_ARGS)}`; in-process chat: context 2048, max_tokens 8, device auto")
    report_process("generate --max-tokens 1 (whole process, cold)", time_command([*cli, *GENERATE_ARGS], runs))
    load, first, settings = zip(*(first_token_in_process() for _ in range(runs)))
    print("backend settings: " + ", ".join(f"{key}={value}" for key, value in settings[-1].items()))
    report("in-process: load bundled model", list(load))
    report("in-process: chat request -> first token", list(first))


if __name__ == "__main__":
    main()
