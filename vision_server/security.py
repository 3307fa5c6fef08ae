"""Auth, per-client rate limits and request size limits."""

from __future__ import annotations

import hmac
import json
import math
import time
from collections import deque

from fastapi import HTTPException, Request, status
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from thau.vision.errors import RateLimited

RATE_WINDOW_S = 60.0


def require_api_key(request: Request) -> None:
    """Dependency: when a key is configured, ``Authorization: Bearer <key>`` must match it."""
    expected = request.app.state.service.settings.api_key
    if expected is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), expected.get_secret_value().encode()
    ):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="a valid API key is required: send `Authorization: Bearer <key>` "
            "(the server's THAU_VISION_API_KEY)",
            headers={"WWW-Authenticate": "Bearer"},
        )


class RateLimiter:
    """At most ``limit`` requests per client in any 60-second window (0: no limit)."""

    def __init__(self, limit: int, *, window_s: float = RATE_WINDOW_S) -> None:
        self.limit = limit
        self.window_s = window_s
        self._hits: dict[str, deque[float]] = {}

    def check(self, client: str, now: float | None = None) -> None:
        """Count one request from ``client``; raises :class:`RateLimited` past the limit."""
        if self.limit <= 0:
            return
        now = time.monotonic() if now is None else now
        hits = self._hits.setdefault(client, deque())
        while hits and now - hits[0] >= self.window_s:
            hits.popleft()
        if len(hits) >= self.limit:
            wait = math.ceil(self.window_s - (now - hits[0]))
            raise RateLimited(
                f"rate limit reached: {self.limit} generation requests per minute; "
                f"retry in {wait} s",
                retry_after=max(1, wait),
            )
        hits.append(now)
        if len(self._hits) > 10_000:  # forget idle clients
            self._hits = {key: value for key, value in self._hits.items() if value}


def client_id(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def rate_limit(request: Request) -> None:
    """Dependency for the generation routes."""
    request.app.state.rate_limiter.check(client_id(request))


class BodySizeLimit:
    """ASGI middleware: refuse request bodies larger than ``max_bytes`` with 413."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

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
        body = json.dumps(
            {
                "success": False,
                "error": {
                    "message": f"request body larger than {self.max_bytes} bytes",
                    "type": "request_too_large",
                    "param": None,
                },
                "detail": "request body too large",
            }
        ).encode()
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
