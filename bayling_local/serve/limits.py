"""What keeps one client from exhausting the server: a request-body size limit and a bounded queue.

Past the queue's bound a request is refused at once with 429 and `Retry-After`, instead of waiting
behind work the server cannot finish soon.
"""

from __future__ import annotations

import threading

from bayling_local.serve.errors import ApiError

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
RETRY_AFTER_SECONDS = 1


class BodyLimitMiddleware:
    """Refuses a body over `max_bytes` with 413: by its Content-Length, or while it streams in."""

    def __init__(self, app, max_bytes: int = DEFAULT_MAX_BODY_BYTES):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._too_large().response()(scope, receive, send)
        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise self._too_large()
            return message

        await self.app(scope, counted_receive, send)

    def _too_large(self) -> ApiError:
        return ApiError(413, f"the request body is larger than {self.max_bytes} bytes", code="body_too_large")


class Admission:
    """Counts requests that hold a slot or wait for one; refuses new ones past `limit`."""

    def __init__(self, limit: int):
        self.limit = limit
        self.in_flight = 0
        self._lock = threading.Lock()

    def enter(self) -> None:
        with self._lock:
            if self.in_flight >= self.limit:
                raise ApiError(
                    429,
                    f"the server is busy ({self.in_flight} requests running or queued); retry shortly",
                    type="rate_limit_error",
                    code="rate_limit_exceeded",
                    headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                )
            self.in_flight += 1

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1
