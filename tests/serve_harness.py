"""A real `serve` (uvicorn on a free loopback port) in a thread of the test process, so tests can read
the engine's stats while they drive it over HTTP."""

from __future__ import annotations

import contextlib
import json
import threading
import urllib.error
import urllib.request

from bayling_local.serve.server import ServeSettings, build_app, build_state, listen
from tests.processes import wait_until


class RunningServer:
    def __init__(self, state, server, thread, port: int):
        self.state, self.server, self.thread, self.port = state, server, thread, port

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root}/v1"

    @property
    def engine(self):
        return self.state.engine


@contextlib.contextmanager
def serving(model, engine_factory=None, **settings):
    """Serve `model` (already loaded) until the block ends; the engine is closed at shutdown."""
    import uvicorn

    from bayling_local.engine import create_engine

    config = ServeSettings(port=0, **settings)
    state = build_state(config)
    sock = listen(config.host, 0)
    server = uvicorn.Server(uvicorn.Config(build_app(state, config), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    running = RunningServer(state, server, thread, sock.getsockname()[1])
    # uvicorn sets `started` once it accepts connections; a dead thread never will.
    wait_until(lambda: server.started or not thread.is_alive(), what="uvicorn to start", timeout=60)
    assert server.started, "uvicorn did not start"
    if model is not None:  # None: a server whose model is still loading
        factory = engine_factory or (lambda m: create_engine(m, parallel=config.parallel))
        state.load_in_background(lambda: (model, factory(model))).join()
        wait_healthy(running.root)
    try:
        yield running
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        state.close()


def post(url: str, body, headers: dict | None = None):
    """(status, headers, parsed JSON) of a POST; `body` bytes are sent as they are."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json", **(headers or {})}, method="POST"
    )
    return _answer(request)


def get(url: str, headers: dict | None = None):
    return _answer(urllib.request.Request(url, headers=headers or {}))


def _answer(request):
    try:
        with urllib.request.urlopen(request, timeout=300) as answer:
            return answer.status, _lower(answer.headers), json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, _lower(error.headers), json.loads(error.read() or b"null")


def wait_healthy(root: str, timeout: float = 60.0) -> None:
    """Poll /health until 200 (a hang detector, not a timing assertion)."""
    wait_until(lambda: _healthy(root), what=f"{root}/health to turn 200", timeout=timeout, interval=0.1)


def _healthy(root: str) -> bool:
    try:
        with urllib.request.urlopen(f"{root}/health", timeout=5) as answer:
            return answer.status == 200
    except OSError:
        return False


def _lower(headers) -> dict:
    return {name.lower(): value for name, value in headers.items()}
