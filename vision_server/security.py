"""Auth and per-client rate limits of the vision server, on :mod:`thau.http_security`."""

from __future__ import annotations

import json
import math

from fastapi import HTTPException, Request, status

from thau.http_security import RateLimiter, bearer_ok
from thau.vision.errors import RateLimited


def require_api_key(request: Request) -> None:
    """Dependency: when a key is configured, ``Authorization: Bearer <key>`` must match it."""
    expected = request.app.state.service.settings.api_key
    if expected is None:
        return
    if not bearer_ok(request.headers.get("authorization", ""), expected.get_secret_value()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="a valid API key is required: send `Authorization: Bearer <key>` "
            "(the server's THAU_VISION_API_KEY)",
            headers={"WWW-Authenticate": "Bearer"},
        )


def check_rate(limiter: RateLimiter, client: str, now: float | None = None) -> None:
    """Count one request from ``client``; raises :class:`RateLimited` past the limit."""
    wait = limiter.check(client, now)
    if wait is not None:
        seconds = math.ceil(wait)
        raise RateLimited(
            f"rate limit reached: {limiter.limit} generation requests per minute; "
            f"retry in {seconds} s",
            retry_after=max(1, seconds),
        )


def client_id(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def rate_limit(request: Request) -> None:
    """Dependency for the generation routes."""
    check_rate(request.app.state.rate_limiter, client_id(request))


def too_large_body(max_bytes: int) -> bytes:
    """The 413 answer of :class:`thau.http_security.BodySizeLimit`, in the server's error shape."""
    return json.dumps(
        {
            "success": False,
            "error": {
                "message": f"request body larger than {max_bytes} bytes",
                "type": "request_too_large",
                "param": None,
            },
            "detail": "request body too large",
        }
    ).encode()
