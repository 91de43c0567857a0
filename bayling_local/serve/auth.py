"""Bearer-key authentication, as ASGI middleware so it guards streaming routes before any work starts.

The key is compared in constant time (`hmac.compare_digest`); `/health` stays open so a load balancer
or a supervisor can probe the server without the key.
"""

from __future__ import annotations

import hmac

from bayling_local.serve.errors import ApiError

OPEN_PATHS = frozenset({"/health"})


class ApiKeyMiddleware:
    def __init__(self, app, api_key: str):
        self.app = app
        self._expected = f"Bearer {api_key}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or self._authorized(scope):
            return await self.app(scope, receive, send)
        refusal = ApiError(
            401,
            "a valid API key is required: send `Authorization: Bearer KEY`",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
        await refusal.response()(scope, receive, send)

    def _authorized(self, scope) -> bool:
        given = dict(scope["headers"]).get(b"authorization", b"")
        return hmac.compare_digest(given, self._expected)
