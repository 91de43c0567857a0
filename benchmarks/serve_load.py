"""Load on `bayling-local serve` and on llama-cpp-python's own server (`python -m llama_cpp.server`):
the same GGUF, the same threads and context, 1/4/8/16 concurrent streaming clients of the `openai` client.

Prints the hardware line, each server's settings, then per concurrency: aggregate completion tokens/s and
p50/p95 time to first token. Loopback only; bounded (requests per client, max tokens, a deadline per
server) and stops its servers by itself. Never run in CI.

    .venv/bin/python benchmarks/serve_load.py --threads 2 --clients 1,4,8,16 --requests 1 --max-tokens 32
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how rain forms, step by step.",
    "Describe a busy market in the morning.",
    "Give advice to someone learning to cook.",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerFailed(Exception):
    """A server that exited or never answered; its last output says why."""


def start(command: list[str], port: int, deadline: float) -> subprocess.Popen:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last_lines: collections.deque[bytes] = collections.deque(maxlen=2)
    reader = threading.Thread(target=last_lines.extend, args=(process.stderr,), daemon=True)  # drains the pipe
    reader.start()
    url = f"http://127.0.0.1:{port}/v1/models"
    while time.monotonic() < deadline:
        if process.poll() is not None:  # e.g. llama.cpp's AMX kernels segfault on the bundled Q4_1 file
            reader.join(5)
            said = " | ".join(line.decode(errors="replace").strip() for line in last_lines)
            raise ServerFailed(f"exited with {describe_exit(process.returncode)}; last output: {said}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return process
        except OSError:
            time.sleep(0.25)
    stop(process)
    raise ServerFailed("did not become ready before the deadline")


def describe_exit(code: int) -> str:
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def one_request(client, model: str, prompt: str, max_tokens: int) -> tuple[float | None, int]:
    """(seconds to the first text, completion tokens) of one streamed chat request."""
    started, first, tokens, pieces = time.perf_counter(), None, None, 0
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
        if chunk.choices and chunk.choices[0].delta.content:
            first = first if first is not None else time.perf_counter() - started
            pieces += 1
    return first, tokens if tokens is not None else pieces


def load_round(base_url: str, model: str, clients: int, requests: int, max_tokens: int) -> dict:
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=300)
    jobs = [PROMPTS[i % len(PROMPTS)] for i in range(clients * requests)]
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        results = list(pool.map(lambda p: one_request(client, model, p, max_tokens), jobs))
    wall = time.perf_counter() - started
    ttfts = sorted(r[0] for r in results if r[0] is not None)
    tokens = sum(r[1] for r in results)
    if any(r[1] == 0 for r in results):
        print(f"  warning: {sum(r[1] == 0 for r in results)} of {len(results)} requests returned no tokens")
    return {
        "tokens_per_s": tokens / wall,
        "tokens": tokens,
        "p50_ttft": statistics.median(ttfts) if ttfts else float("nan"),
        "p95_ttft": ttfts[min(len(ttfts) - 1, int(0.95 * len(ttfts)))] if ttfts else float("nan"),
        "wall": wall,
    }


def servers(args, gguf: str) -> list[tuple[str, list[str], int, str]]:
    ours, theirs = free_port(), free_port()
    python = sys.executable
    return [
        (
            f"bayling-local serve --parallel {args.parallel}",
            [python, "-m", "bayling_local", "serve", "--model", gguf, "--port", str(ours), "--threads",
             str(args.threads), "--context", str(args.context), "--parallel", str(args.parallel),
             "--served-name", "bench"],
            ours,
            "bench",
        ),
        (
            "llama_cpp.server",
            [python, "-m", "llama_cpp.server", "--model", gguf, "--port", str(theirs), "--host", "127.0.0.1",
             "--n_threads", str(args.threads), "--n_threads_batch", str(args.threads), "--n_ctx",
             str(args.context), "--model_alias", "bench",
             # by default each new request interrupts the running one: every client but the last gets nothing
             "--interrupt_requests", "False"],
            theirs,
            "bench",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    parser.add_argument("--context", type=int, default=4096)
    parser.add_argument("--parallel", type=int, default=8, help="serve's engine slots")
    parser.add_argument("--clients", default="1,4,8,16")
    parser.add_argument("--requests", type=int, default=2, help="requests per client per round")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--deadline", type=float, default=600, help="seconds per server, start included")
    parser.add_argument("--only", choices=["serve", "llama_cpp"], default=None)
    args = parser.parse_args()

    from bayling_local.bench.hardware import detect_hardware
    from bayling_local.catalog import bundled_model_path

    gguf = str(bundled_model_path())
    print(f"hardware: {detect_hardware().describe()}")
    print(f"model: {gguf}; threads {args.threads}, context {args.context}, max_tokens {args.max_tokens}, "
          f"greedy, {args.requests} request(s) per client, streaming with include_usage")
    for label, command, port, name in servers(args, gguf):
        if args.only and not label.startswith({"serve": "bayling", "llama_cpp": "llama"}[args.only]):
            continue
        deadline = time.monotonic() + args.deadline
        print(f"\n{label}:")
        try:
            process = start(command, port, deadline)
        except ServerFailed as failure:
            print(f"  could not run: {failure}")
            continue
        try:
            one_request(_client(port), name, "Hi", 4)  # warm-up
            for clients in (int(c) for c in args.clients.split(",")):
                if time.monotonic() > deadline:
                    print(f"  {clients:>2} clients: skipped (deadline)")
                    continue
                r = load_round(f"http://127.0.0.1:{port}/v1", name, clients, args.requests, args.max_tokens)
                print(f"  {clients:>2} clients: {r['tokens_per_s']:7.1f} tokens/s aggregate ({r['tokens']} tokens "
                      f"in {r['wall']:.1f} s), TTFT p50 {r['p50_ttft'] * 1000:6.0f} ms, p95 {r['p95_ttft'] * 1000:6.0f} ms")
        except Exception as error:  # noqa: BLE001 - a server that dies mid-run is a result, not a traceback
            code = process.returncode if _ends_soon(process) else None
            cause = f"the server exited with {describe_exit(code)}" if code is not None else type(error).__name__
            print(f"  stopped: {cause} ({str(error).splitlines()[0] if str(error) else 'no message'})")
        finally:
            stop(process)


def _ends_soon(process: subprocess.Popen) -> bool:
    """Whether the server has ended or ends within a few seconds (a crash drops connections just before)."""
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        return False
    return True


def _client(port: int):
    import openai

    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=300)


if __name__ == "__main__":
    main()
