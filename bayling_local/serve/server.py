"""Running `serve`: check the bind address against the key, start uvicorn, load the model behind it.

Loopback needs no key; any other address does, because the API runs a model for whoever reaches it.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import socket
from dataclasses import dataclass

from bayling_local.errors import BackendUnavailableError, UsageError
from bayling_local.serve.limits import DEFAULT_MAX_BODY_BYTES, Admission
from bayling_local.serve.state import ServerState

GRACEFUL_SHUTDOWN_SECONDS = 10
"""On SIGTERM, open requests get this long to finish before the engine cancels them."""


@dataclass(frozen=True)
class ServeSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    parallel: int = 1
    """Requests decoded together (the engine's slots)."""
    max_queue: int = 64
    """Requests that may wait for a slot; past that, 429."""
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    served_name: str | None = None


def check_bind(host: str, api_key: str | None) -> None:
    """Refuse a non-loopback bind without a key."""
    if not api_key and not is_loopback(host):
        raise UsageError(f"binding {host} exposes the model to the network; give --api-key KEY (or bind 127.0.0.1)")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_state(settings: ServeSettings) -> ServerState:
    return ServerState(settings.served_name, Admission(settings.parallel + settings.max_queue))


def build_app(state: ServerState, settings: ServeSettings):
    from bayling_local.serve.app import create_app

    return create_app(state, api_key=settings.api_key, max_body_bytes=settings.max_body_bytes)


def check_installed() -> None:
    missing = [name for name in SERVER_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise BackendUnavailableError(
            f"serve needs {', '.join(missing)}; run `pip install 'bayling-local[serve]'`"
        )


SERVER_PACKAGES = ("fastapi", "uvicorn", "sse_starlette")


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so a taken port is one line, and port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    return sock


def run_server(settings: ServeSettings, load, on_listening=None) -> None:
    """Serve until SIGTERM/SIGINT; `load()` returns (model, engine) and runs while the server listens.

    `on_listening(host, port)` is called once the socket is bound (the CLI prints the address)."""
    check_installed()
    check_bind(settings.host, settings.api_key)
    sock = listen(settings.host, settings.port)
    import uvicorn

    state = build_state(settings)
    app = build_app(state, settings)
    config = uvicorn.Config(
        app,
        log_level="warning",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    server = _server_class(uvicorn)(config)
    if on_listening is not None:
        on_listening(*sock.getsockname()[:2])
    state.load_in_background(load)
    server.run(sockets=[sock])


def _server_class(uvicorn):
    """uvicorn's server, exiting 0 after a graceful SIGTERM/SIGINT shutdown.

    uvicorn re-raises the captured signal once it has shut down, so the process would end as "killed by
    SIGTERM" although it stopped cleanly; supervisors and scripts read that as a failure."""
    import contextlib
    import signal

    class QuietExitServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return QuietExitServer
