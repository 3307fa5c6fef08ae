"""Pytest fixtures for the fake servers (loaded by ``tests/conftest.py``).

Each fake runs for one test on 127.0.0.1, with proxies bypassed for local hosts, and
the test fails if anything went wrong inside a fake (``server.errors``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.servers.base import FakeServer, free_port
from tests.servers.fake_ollama import FakeOllama
from tests.servers.fake_openai import FakeOpenAI

LOCAL = "127.0.0.1,localhost"


@pytest.fixture
def no_proxy_for_localhost(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", LOCAL)
    monkeypatch.setenv("no_proxy", LOCAL)


def _finish(server: FakeServer) -> None:
    server.stop()
    assert server.errors == [], f"errors inside {type(server).__name__}: {server.errors!r}"


@pytest.fixture
def fake_ollama(no_proxy_for_localhost: None) -> Iterator[FakeOllama]:
    server = FakeOllama()
    server.start()
    yield server
    _finish(server)


@pytest.fixture
def start_fake_openai(no_proxy_for_localhost: None) -> Iterator[Callable[..., FakeOpenAI]]:
    """A factory: ``start_fake_openai(api_key="k", accepts_stream_options=False)``."""
    started: list[FakeOpenAI] = []

    def start(**kwargs: Any) -> FakeOpenAI:
        server = FakeOpenAI(**kwargs)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
    for server in started:
        _finish(server)


@pytest.fixture
def fake_openai(start_fake_openai: Callable[..., FakeOpenAI]) -> FakeOpenAI:
    return start_fake_openai()


@pytest.fixture
def dead_url(no_proxy_for_localhost: None) -> str:
    """``http://127.0.0.1:PORT`` with nothing listening."""
    return f"http://127.0.0.1:{free_port()}"
