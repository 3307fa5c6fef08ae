"""The guards every THAU HTTP server shares: the loopback check, the bearer-token check,
a per-client rate limit and a cap on request bodies.

Only the standard library at run time: the body cap is plain ASGI, so the vision server,
the training API and ``thau-mcp`` use this module without it importing a web framework.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

RATE_WINDOW_S = 60.0
MAX_TRACKED_CLIENTS = 10_000

ErrorBody = Callable[[int], bytes]
"""Renders the JSON body of the 413 answer from the limit in bytes."""


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps a server on this machine (``localhost``, 127/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bearer_ok(authorization: str, expected: str) -> bool:
    """Whether an ``Authorization`` header value is ``Bearer <expected>``.

    The scheme is case-insensitive and the token is compared in constant time; an empty
    ``expected`` matches nothing, so callers decide what "no key configured" means.
    """
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer" or not expected:
        return False
    return hmac.compare_digest(given.strip().encode(), expected.encode())


class RateLimiter:
    """At most ``limit`` requests per client in any ``window_s`` seconds (0: no limit)."""

    def __init__(
        self,
        limit: int,
        window_s: float = RATE_WINDOW_S,
        *,
        max_clients: int = MAX_TRACKED_CLIENTS,
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_clients = max_clients
        self._hits: dict[str, deque[float]] = {}

    def check(self, client: str, now: float | None = None) -> float | None:
        """Count one request from ``client``: ``None`` when allowed, else the seconds until
        the window lets it in (a refused request is not counted)."""
        if self.limit <= 0:
            return None
        now = time.monotonic() if now is None else now
        hits = self._hits.setdefault(client, deque())
        while hits and now - hits[0] >= self.window_s:
            hits.popleft()
        if len(hits) >= self.limit:
            return self.window_s - (now - hits[0])
        hits.append(now)
        if len(self._hits) > self.max_clients:
            self._forget_idle(now)
        return None

    def _forget_idle(self, now: float) -> None:
        """Drop the clients whose every hit has left the window."""
        self._hits = {
            client: hits
            for client, hits in self._hits.items()
            if hits and now - hits[-1] < self.window_s
        }


def detail_error_body(max_bytes: int) -> bytes:
    """``{"detail": ...}`` written the way Starlette's ``JSONResponse`` writes it."""
    return json.dumps(
        {"detail": f"request body larger than {max_bytes} bytes"},
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode()


class BodySizeLimit:
    """ASGI middleware: answer 413 to a request body over ``max_bytes``, declared in
    ``Content-Length`` or counted as it arrives; ``error_body`` writes the JSON answer."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, error_body: ErrorBody = detail_error_body
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.error_body = error_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send)
            return
        # Bodies here are small: read all of it (up to the limit), then hand it on.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, _replay([message]), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([body], then=receive), send)

    async def _refuse(self, send: Send) -> None:
        body = self.error_body(self.max_bytes)
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _replay(messages: list[Message], then: Receive | None = None) -> Receive:
    """A ``receive`` that gives ``messages`` first, then defers to ``then``."""
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", []):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
