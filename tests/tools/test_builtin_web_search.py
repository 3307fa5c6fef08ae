"""web_search against local SearXNG- and Ollama-compatible servers, and ddgs with its
``DDGS.text`` replaced at the class level. Nothing here reaches the internet."""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ddgs.exceptions import DDGSException, RatelimitException, TimeoutException

from thau.errors import ToolArgumentsInvalid, ToolError
from thau.tools import web_search
from thau.tools.registry import ToolContext, ToolRegistry
from thau.tools.search_backends import (
    DDGSBackend,
    OllamaSearchBackend,
    SearxngBackend,
    backend_from_env,
)

SEARCH_ENV = (
    "THAU_SEARCH_BACKEND",
    "THAU_SEARXNG_URL",
    "OLLAMA_API_KEY",
    "THAU_OLLAMA_SEARCH_URL",
    "THAU_SEARCH_TIMEOUT",
    "THAU_SEARCH_CACHE_TTL",
    "THAU_SEARCH_RETRIES",
    "THAU_SEARCH_BACKOFF",
)
SEARXNG_RESULTS = [
    {"title": "Python  (language)", "url": "https://python.org", "content": "A   language.\n"},
    {"title": "No URL", "content": "dropped: a result without a url"},
    {"title": "Docs", "url": "https://docs.python.org", "content": "x" * 900},
    {"title": "PyPI", "url": "https://pypi.org", "content": "Packages"},
]
DDGS_CLASS = importlib.import_module("ddgs.ddgs").DDGS  # the class ddgs.DDGS stands for


@pytest.fixture(autouse=True)
def search_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in SEARCH_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("THAU_SEARCH_BACKOFF", "0.01")
    return monkeypatch


def searxng_app(state: dict[str, Any]) -> Callable[[Any], tuple]:
    """A SearXNG look-alike that also reproduces its real failures (``state["modes"]`` is
    consumed one per request; the last one stays)."""

    def app(request: Any) -> tuple:
        state["requests"].append(request)
        modes = state["modes"]
        mode = modes.pop(0) if len(modes) > 1 else modes[0]
        if request.path != "/search":
            return 404, b"Not Found", {"Content-Type": "text/html"}
        if mode == "json-disabled" or request.query.get("format") != "json":
            return 403, b"<html>403 Forbidden</html>", {"Content-Type": "text/html"}
        if mode == "rate-limited":
            return 429, b"Too Many Requests", {"Content-Type": "text/plain", "Retry-After": "0"}
        if mode == "slow":
            time.sleep(1.5)
        if mode == "malformed":
            return 200, b'{"results": [', {"Content-Type": "application/json"}
        if mode == "empty":
            return 200, {"query": request.query["q"], "results": [], "unresponsive_engines": []}
        return 200, {"query": request.query["q"], "results": SEARXNG_RESULTS}

    return app


@pytest.fixture
def searxng(serve: Callable[..., str], search_env: pytest.MonkeyPatch) -> dict[str, Any]:
    state: dict[str, Any] = {"requests": [], "modes": ["ok"]}
    state["url"] = serve(searxng_app(state))
    search_env.setenv("THAU_SEARXNG_URL", state["url"])
    return state


def search(context: ToolContext, query: str = "python", max_results: int = 5) -> dict[str, Any]:
    return web_search.run(web_search.WebSearchArgs(query=query, max_results=max_results), context)


def test_searxng_results_are_normalised(searxng: dict[str, Any], context: ToolContext) -> None:
    result = search(context, "  python   language ", max_results=2)
    assert result["backend"] == "searxng" and result["cached"] is False
    assert result["query"] == "python language"
    assert result["results"] == [
        {"title": "Python (language)", "url": "https://python.org", "snippet": "A language."},
        {"title": "Docs", "url": "https://docs.python.org", "snippet": "x" * 499 + "…"},
    ]
    request = searxng["requests"][0]
    assert request.query == {"q": "python language", "format": "json"}


def test_results_are_cached_for_the_ttl(
    searxng: dict[str, Any], context: ToolContext, search_env: pytest.MonkeyPatch
) -> None:
    search_env.setenv("THAU_SEARCH_CACHE_TTL", "0.5")
    first = search(context)
    second = search(context, "PYTHON")
    assert second["cached"] is True and second["results"] == first["results"]
    assert len(searxng["requests"]) == 1
    assert (context.data_dir / "cache" / "web_search.sqlite").is_file()
    search(context, max_results=3)  # another question, another entry
    assert len(searxng["requests"]) == 2
    time.sleep(0.6)
    assert search(context)["cached"] is False
    assert len(searxng["requests"]) == 3


def test_a_ttl_of_zero_turns_the_cache_off(
    searxng: dict[str, Any], context: ToolContext, search_env: pytest.MonkeyPatch
) -> None:
    search_env.setenv("THAU_SEARCH_CACHE_TTL", "0")
    search(context)
    assert search(context)["cached"] is False
    assert len(searxng["requests"]) == 2


def test_json_format_not_enabled_says_how_to_enable_it(
    searxng: dict[str, Any], context: ToolContext
) -> None:
    searxng["modes"] = ["json-disabled"]
    with pytest.raises(ToolError, match=r"HTTP 403.*search\.formats"):
        search(context)


def test_rate_limits_are_retried_with_backoff(
    searxng: dict[str, Any], context: ToolContext
) -> None:
    searxng["modes"] = ["rate-limited", "rate-limited", "ok"]
    result = search(context)
    assert len(result["results"]) == 3
    assert len(searxng["requests"]) == 3


def test_rate_limits_give_up_after_the_attempts(
    searxng: dict[str, Any], context: ToolContext, search_env: pytest.MonkeyPatch
) -> None:
    search_env.setenv("THAU_SEARCH_RETRIES", "2")
    searxng["modes"] = ["rate-limited"]
    with pytest.raises(ToolError, match=r"HTTP 429.*after 2 attempts"):
        search(context)
    assert len(searxng["requests"]) == 2


def test_a_slow_answer_hits_the_timeout(
    searxng: dict[str, Any], context: ToolContext, search_env: pytest.MonkeyPatch
) -> None:
    search_env.setenv("THAU_SEARCH_TIMEOUT", "0.3")
    searxng["modes"] = ["slow"]
    started = time.monotonic()
    with pytest.raises(ToolError, match=r"did not answer within 0\.3 s"):
        search(context)
    assert time.monotonic() - started < 1.4


def test_malformed_json_is_reported(searxng: dict[str, Any], context: ToolContext) -> None:
    searxng["modes"] = ["malformed"]
    with pytest.raises(ToolError, match="not JSON"):
        search(context)


def test_empty_results_are_an_empty_list(searxng: dict[str, Any], context: ToolContext) -> None:
    searxng["modes"] = ["empty"]
    result = search(context)
    assert result["results"] == [] and result["cached"] is False
    search(context)
    assert len(searxng["requests"]) == 2  # nothing cached for an empty answer


def test_offline_is_a_clear_error(
    closed_port: int, context: ToolContext, search_env: pytest.MonkeyPatch
) -> None:
    search_env.setenv("THAU_SEARXNG_URL", f"http://127.0.0.1:{closed_port}")
    with pytest.raises(ToolError, match=r"Cannot reach SearXNG.*offline"):
        search(context)


def ollama_app(state: dict[str, Any]) -> Callable[[Any], tuple]:
    def app(request: Any) -> tuple:
        state["requests"].append(request)
        if request.method != "POST" or request.path != "/api/web_search":
            return 404, {"error": "not found"}
        if request.headers.get("authorization") != "Bearer test-key":
            return 401, {"error": "unauthorized"}
        body = request.json()
        items = [
            {"title": f"Result {i}", "url": f"https://example.org/{i}", "content": f"Text {i}"}
            for i in range(body["max_results"])
        ]
        return 200, {"results": items}

    return app


@pytest.fixture
def ollama(serve: Callable[..., str], search_env: pytest.MonkeyPatch) -> dict[str, Any]:
    state: dict[str, Any] = {"requests": []}
    url = serve(ollama_app(state)) + "/api/web_search"
    search_env.setenv("THAU_SEARCH_BACKEND", "ollama")
    search_env.setenv("THAU_OLLAMA_SEARCH_URL", url)
    search_env.setenv("OLLAMA_API_KEY", "test-key")
    return state


def test_ollama_web_search(ollama: dict[str, Any], context: ToolContext) -> None:
    result = search(context, "ollama", max_results=3)
    assert result["backend"] == "ollama"
    assert [r["url"] for r in result["results"]] == [f"https://example.org/{i}" for i in range(3)]
    assert result["results"][0] == {
        "title": "Result 0",
        "url": "https://example.org/0",
        "snippet": "Text 0",
    }
    assert ollama["requests"][0].json() == {"query": "ollama", "max_results": 3}


def test_ollama_with_a_wrong_key(
    ollama: dict[str, Any], context: ToolContext, search_env: pytest.MonkeyPatch
) -> None:
    search_env.setenv("OLLAMA_API_KEY", "wrong")
    with pytest.raises(ToolError, match=r"rejected the key \(HTTP 401\).*OLLAMA_API_KEY"):
        search(context)


def fake_text(outcomes: list[Any], calls: list[dict[str, Any]]) -> Callable[..., Any]:
    """A ``DDGS.text`` that raises or returns ``outcomes`` in turn."""

    def text(self: Any, query: str, **kwargs: Any) -> list[dict[str, Any]]:
        calls.append({"query": query, "timeout": self._timeout, **kwargs})
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    return text


def test_ddgs_is_the_default_and_retries_rate_limits(
    context: ToolContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []
    hits = [{"title": "Example", "href": "https://example.com", "body": "An example."}]
    outcomes = [RatelimitException("https://duckduckgo.com 202 Ratelimit"), hits]
    monkeypatch.setattr(DDGS_CLASS, "text", fake_text(outcomes, calls))
    result = search(context, "example", max_results=4)
    assert result["backend"] == "ddgs"
    assert result["results"] == [
        {"title": "Example", "url": "https://example.com", "snippet": "An example."}
    ]
    assert calls == [{"query": "example", "timeout": 10, "max_results": 4}] * 2


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (TimeoutException("timed out"), r"DuckDuckGo did not answer within 10 s"),
        (DDGSException("error sending request: dns error"), r"Are you offline\?"),
        (RatelimitException("202 Ratelimit"), r"rate limiting.*after 3 attempts"),
    ],
)
def test_ddgs_failures(
    context: ToolContext, monkeypatch: pytest.MonkeyPatch, error: Exception, message: str
) -> None:
    monkeypatch.setattr(DDGS_CLASS, "text", fake_text([error] * 3, []))
    with pytest.raises(ToolError, match=message):
        search(context)


def test_ddgs_no_results_is_an_empty_list(
    context: ToolContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(DDGS_CLASS, "text", fake_text([DDGSException("No results found.")], []))
    assert search(context)["results"] == []


def test_backend_choice_from_the_environment() -> None:
    assert isinstance(backend_from_env({}), DDGSBackend)
    searx = backend_from_env({"THAU_SEARXNG_URL": "http://s:8888"})
    assert isinstance(searx, SearxngBackend) and searx.base_url == "http://s:8888"
    forced = backend_from_env({"THAU_SEARXNG_URL": "http://s", "THAU_SEARCH_BACKEND": "ddgs"})
    assert isinstance(forced, DDGSBackend)
    ollama = backend_from_env({"THAU_SEARCH_BACKEND": "ollama", "OLLAMA_API_KEY": "k"})
    assert isinstance(ollama, OllamaSearchBackend)
    assert ollama.url == "https://ollama.com/api/web_search"
    with pytest.raises(ToolError, match="THAU_SEARXNG_URL"):
        backend_from_env({"THAU_SEARCH_BACKEND": "searxng"})
    with pytest.raises(ToolError, match="OLLAMA_API_KEY"):
        backend_from_env({"THAU_SEARCH_BACKEND": "ollama"})
    with pytest.raises(ToolError, match="ddgs, searxng or ollama"):
        backend_from_env({"THAU_SEARCH_BACKEND": "bing"})


@pytest.mark.parametrize(
    "arguments",
    [{}, {"query": "   "}, {"query": "x", "max_results": 0}, {"query": "x", "max_results": 11}],
)
def test_invalid_arguments_are_refused(arguments: dict[str, Any]) -> None:
    with pytest.raises(ToolArgumentsInvalid):
        ToolRegistry([web_search.tool]).validate("web_search", arguments)


def test_through_the_registry(
    searxng: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = ToolRegistry([web_search.tool])
    tool, args = registry.validate("web_search", {"query": "python"})
    assert args.max_results == 5 and not tool.needs_approval
    outcome = registry.execute(tool, args, ToolContext(data_dir=tmp_path))
    assert outcome.ok and len(outcome.result["results"]) == 3
    searxng["modes"] = ["json-disabled"]
    monkeypatch.setenv("THAU_SEARCH_CACHE_TTL", "0")
    failed = registry.execute(tool, args, ToolContext(data_dir=tmp_path))
    assert not failed.ok and "search.formats" in failed.error
