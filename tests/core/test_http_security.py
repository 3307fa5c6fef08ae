"""The shared HTTP guards: loopback check, bearer check, rate limiter and body cap."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient
from starlette.types import Message, Receive, Scope, Send

from thau.http_security import (
    BodySizeLimit,
    RateLimiter,
    bearer_ok,
    detail_error_body,
    is_loopback,
)


@pytest.mark.parametrize(
    "host", ["localhost", "127.0.0.1", "127.0.0.2", "127.255.255.254", "::1", "0:0:0:0:0:0:0:1"]
)
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize(
    "host",
    ["0.0.0.0", "::", "192.168.1.2", "10.0.0.1", "fe80::1", "example.org", "", "[::1]", "LOCAL"],
)
def test_hosts_beyond_this_machine(host: str) -> None:
    assert not is_loopback(host)


@pytest.mark.parametrize("header", ["Bearer s3cret", "bearer s3cret", "BEARER  s3cret "])
def test_bearer_accepts_the_right_token(header: str) -> None:
    assert bearer_ok(header, "s3cret")


@pytest.mark.parametrize(
    "header",
    ["", "Bearer", "Bearer ", "Bearer wrong", "Bearer s3cret2", "s3cret", "Basic s3cret"],
)
def test_bearer_refuses_a_wrong_or_missing_token_or_scheme(header: str) -> None:
    assert not bearer_ok(header, "s3cret")


def test_bearer_with_no_expected_token_matches_nothing() -> None:
    assert not bearer_ok("Bearer ", "")
    assert not bearer_ok("Bearer x", "")


def test_bearer_compares_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import hmac

    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    bearer_ok("Bearer nope", "k")
    assert calls == [(b"nope", b"k")]


def test_limiter_window_slides_per_client() -> None:
    limiter = RateLimiter(2, window_s=60)
    assert limiter.check("a", now=0) is None
    assert limiter.check("a", now=10) is None
    assert limiter.check("b", now=10) is None  # other clients have their own allowance
    assert limiter.check("a", now=20) == 40  # until the hit at 0 leaves the window
    assert limiter.check("a", now=59.5) == pytest.approx(0.5)  # refusals are not counted
    assert limiter.check("a", now=60) is None
    assert limiter.check("a", now=65) == 5  # hits at 10 and 60 are in the window


def test_limiter_zero_is_off() -> None:
    limiter = RateLimiter(0)
    assert all(limiter.check("a", now=0) is None for _ in range(1000))


def test_limiter_forgets_idle_clients() -> None:
    limiter = RateLimiter(1, window_s=60, max_clients=2)
    limiter.check("a", now=0)
    limiter.check("b", now=30)
    limiter.check("c", now=70)  # over the cap: "a" has left the window, "b" has not
    assert set(limiter._hits) == {"b", "c"}
    assert limiter.check("b", now=71) == pytest.approx(19)


async def echo_length(scope: Scope, receive: Receive, send: Send) -> None:
    """A bare ASGI app that answers with the size of the body it read."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    answer = json.dumps({"received": len(body)}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": answer})


def custom_error(max_bytes: int) -> bytes:
    return json.dumps({"error": {"type": "request_too_large", "limit": max_bytes}}).encode()


@pytest.fixture
def client() -> TestClient:
    return TestClient(BodySizeLimit(echo_length, max_bytes=100))  # no lifespan: bare ASGI


def test_small_bodies_pass_whole(client: TestClient) -> None:
    response = client.post("/", content=b"x" * 100)
    assert response.status_code == 200
    assert response.json() == {"received": 100}


def test_declared_too_large_gets_413_with_the_detail_body(client: TestClient) -> None:
    response = client.post("/", content=b"x" * 101)
    assert response.status_code == 413
    assert response.content == b'{"detail":"request body larger than 100 bytes"}'
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(response.content)


def test_streamed_too_large_gets_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(5):
            yield b"z" * 30

    response = client.post("/", content=chunks())
    assert response.status_code == 413
    assert response.json() == {"detail": "request body larger than 100 bytes"}

    def small() -> Iterator[bytes]:
        yield b"z" * 50
        yield b"z" * 50

    assert client.post("/", content=small()).json() == {"received": 100}


def test_each_service_writes_its_own_error_body() -> None:
    app = BodySizeLimit(echo_length, max_bytes=10, error_body=custom_error)
    response = TestClient(app).post("/", content=b"x" * 11)
    assert response.status_code == 413
    assert response.content == custom_error(10)


def test_detail_body_matches_starlettes_json_response() -> None:
    from starlette.responses import JSONResponse

    expected = JSONResponse({"detail": "request body larger than 7 bytes"}).body
    assert detail_error_body(7) == expected


def run_chunks(chunks: list[bytes], max_bytes: int) -> tuple[list[Message], list[Message]]:
    """Send ``chunks`` as separate ``http.request`` messages through the cap; returns what
    the app received and what was sent back."""
    incoming: list[Message] = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    received: list[Message] = []
    sent: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        received.append(await receive())
        await send({"type": "http.response.start", "status": 200, "headers": []})

    async def receive() -> Message:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": []}
    asyncio.run(BodySizeLimit(app, max_bytes=max_bytes)(scope, receive, send))
    return received, sent


def test_chunks_are_counted_as_they_arrive() -> None:
    received, sent = run_chunks([b"a" * 40, b"b" * 40, b"c" * 40], max_bytes=100)
    assert received == []  # the app never saw it
    assert sent[0]["status"] == 413

    received, sent = run_chunks([b"a" * 50, b"b" * 50], max_bytes=100)
    assert received == [{"type": "http.request", "body": b"a" * 50 + b"b" * 50, "more_body": False}]
    assert sent[0]["status"] == 200


def test_a_disconnect_is_handed_on() -> None:
    seen: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(await receive())
        seen.append(await receive())

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        raise AssertionError(f"nothing should be sent: {message}")

    scope = {"type": "http", "method": "POST", "path": "/", "headers": []}
    asyncio.run(BodySizeLimit(app, max_bytes=10)(scope, receive, send))
    assert [m["type"] for m in seen] == ["http.disconnect", "http.disconnect"]


def test_importing_it_loads_no_web_framework() -> None:
    code = (
        "import sys, thau.http_security\n"
        "print(sorted(m for m in ('fastapi', 'starlette') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "[]", done.stderr
