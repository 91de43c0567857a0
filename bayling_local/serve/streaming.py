"""Reading an engine's handle from the event loop, and the SSE framing of OpenAI streams.

A handle yields pieces on the engine's thread; `handle_pieces` moves them onto the loop through a pump
thread, so no request holds a worker thread of the server's pool. Whatever ends the reader (the client
disconnecting, the server shutting down) cancels the request: its slot is freed at the engine's next step.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable

from bayling_local.engine import RequestHandle

_END = object()
DONE = "[DONE]"


async def handle_pieces(handle: RequestHandle) -> AsyncIterator[str]:
    """The handle's text pieces as they come; cancels the request if the reader stops early."""
    loop = asyncio.get_running_loop()
    arrived: asyncio.Queue = asyncio.Queue()
    threading.Thread(target=_pump, args=(handle, loop, arrived.put_nowait), daemon=True).start()
    try:
        while (piece := await arrived.get()) is not _END:
            if isinstance(piece, BaseException):
                raise piece
            yield piece
    finally:
        handle.cancel()  # a no-op once the request has finished


def _pump(handle: RequestHandle, loop: asyncio.AbstractEventLoop, put: Callable) -> None:
    try:
        for piece in handle:
            loop.call_soon_threadsafe(put, piece)
    except Exception as error:
        loop.call_soon_threadsafe(put, error)
    try:
        loop.call_soon_threadsafe(put, _END)
    except RuntimeError:
        pass  # the loop closed (server stopped) before the request ended


async def collect(handle: RequestHandle) -> str:
    """The whole text of a request (non-streaming routes)."""
    return "".join([piece async for piece in handle_pieces(handle)])


def sse_event(payload: dict | str) -> dict:
    """One `data:` event for sse-starlette: a JSON object, or the closing `[DONE]`."""
    return {"data": payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)}
