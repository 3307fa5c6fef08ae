"""Web search backends: DuckDuckGo (``ddgs``), SearXNG and Ollama's web search API.

Each backend answers ``search(query, max_results)`` with results normalised to
``{"title", "url", "snippet"}``, raises :class:`RateLimited` when the service asks to slow
down (the caller retries) and :class:`SearchUnavailable` with what to do next otherwise.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypedDict

import httpx

from thau.errors import ToolError

DEFAULT_OLLAMA_SEARCH_URL = "https://ollama.com/api/web_search"
DEFAULT_TIMEOUT_S = 10.0
SNIPPET_CHARS = 500


class SearchResult(TypedDict):
    title: str
    url: str
    snippet: str


class SearchUnavailable(ToolError):
    """The search service cannot answer (offline, misconfigured, broken answer)."""


class RateLimited(ToolError):
    """The search service asked us to slow down; ``retry_after`` is in seconds if it said."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SearchBackend(Protocol):
    name: str

    def cache_key(self) -> str:
        """What, besides the query, decides the results (the backend and its address)."""
        ...

    def search(self, query: str, max_results: int) -> list[SearchResult]: ...


def normalise(
    items: Iterable[Any], title: str, url: str, snippet: str, limit: int
) -> list[SearchResult]:
    """Results with a URL, as ``{title, url, snippet}``, at most ``limit`` of them."""
    results: list[SearchResult] = []
    for item in items:
        if not isinstance(item, Mapping) or not item.get(url):
            continue
        text = " ".join(str(item.get(snippet) or "").split())
        if len(text) > SNIPPET_CHARS:
            text = text[: SNIPPET_CHARS - 1].rstrip() + "…"
        results.append(
            SearchResult(
                title=" ".join(str(item.get(title) or "").split()),
                url=str(item[url]),
                snippet=text,
            )
        )
        if len(results) >= limit:
            break
    return results


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "")))
    except ValueError:
        return None


def _json(response: httpx.Response, service: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise SearchUnavailable(
            f"{service} answered with something that is not JSON "
            f"(HTTP {response.status_code}, {response.headers.get('content-type', 'no type')})."
        ) from None


def _request(service: str, send: Any, timeout: float) -> httpx.Response:
    """Run ``send()``, turning transport failures into messages that say what to do."""
    try:
        return send()
    except httpx.TimeoutException:
        raise SearchUnavailable(f"{service} did not answer within {timeout:g} s.") from None
    except httpx.TransportError as exc:
        raise SearchUnavailable(
            f"Cannot reach {service} ({exc or type(exc).__name__}). Are you offline? "
            "Check the connection, or choose another backend with THAU_SEARCH_BACKEND."
        ) from None


@dataclass
class DDGSBackend:
    """DuckDuckGo and friends through the ``ddgs`` package; no key needed."""

    timeout: float = DEFAULT_TIMEOUT_S
    name: str = "ddgs"

    def cache_key(self) -> str:
        return self.name

    def search(self, query: str, max_results: int) -> list[SearchResult]:
        from ddgs import DDGS
        from ddgs.exceptions import DDGSException, RatelimitException, TimeoutException

        try:
            raw = DDGS(timeout=math.ceil(self.timeout)).text(query, max_results=max_results)
        except RatelimitException as exc:
            raise RateLimited(f"DuckDuckGo is rate limiting this machine ({exc}).") from None
        except TimeoutException as exc:
            raise SearchUnavailable(
                f"DuckDuckGo did not answer within {self.timeout:g} s ({exc})."
            ) from None
        except DDGSException as exc:
            if "no results found" in str(exc).lower():
                return []
            raise SearchUnavailable(
                f"DuckDuckGo search failed ({exc}). Are you offline? Check the connection, "
                "or set THAU_SEARXNG_URL to a SearXNG instance."
            ) from None
        return normalise(raw or [], "title", "href", "body", max_results)


@dataclass
class SearxngBackend:
    """A SearXNG instance's JSON API (``GET /search?q=...&format=json``)."""

    base_url: str
    timeout: float = DEFAULT_TIMEOUT_S
    name: str = "searxng"

    def cache_key(self) -> str:
        return f"{self.name} {self.base_url.rstrip('/')}"

    def search(self, query: str, max_results: int) -> list[SearchResult]:
        url = f"{self.base_url.rstrip('/')}/search"
        service = f"SearXNG at {self.base_url}"
        params = {"q": query, "format": "json"}
        response = _request(
            service, lambda: httpx.get(url, params=params, timeout=self.timeout), self.timeout
        )
        if response.status_code == 403:
            raise SearchUnavailable(
                f"{service} refuses JSON answers (HTTP 403). Enable them: add `json` to "
                "`search.formats` in its settings.yml and restart it."
            )
        return _results(response, service, max_results)


@dataclass
class OllamaSearchBackend:
    """Ollama's hosted web search (``POST /api/web_search`` with a bearer key)."""

    api_key: str
    url: str = DEFAULT_OLLAMA_SEARCH_URL
    timeout: float = DEFAULT_TIMEOUT_S
    name: str = "ollama"

    def cache_key(self) -> str:
        return f"{self.name} {self.url}"

    def search(self, query: str, max_results: int) -> list[SearchResult]:
        service = f"Ollama web search at {self.url}"
        response = _request(
            service,
            lambda: httpx.post(
                self.url,
                json={"query": query, "max_results": max_results},
                headers={"Authorization": f"Bearer {self.api_key}"},
                timeout=self.timeout,
            ),
            self.timeout,
        )
        if response.status_code in (401, 403):
            raise SearchUnavailable(
                f"{service} rejected the key (HTTP {response.status_code}). Check "
                "OLLAMA_API_KEY (create one at https://ollama.com/settings/keys)."
            )
        return _results(response, service, max_results)


def _results(response: httpx.Response, service: str, max_results: int) -> list[SearchResult]:
    """The normalised ``results`` of a JSON answer; rate limits and errors raised."""
    if response.status_code == 429:
        raise RateLimited(f"{service} is rate limiting us (HTTP 429).", _retry_after(response))
    if response.status_code != 200:
        raise SearchUnavailable(f"{service} answered HTTP {response.status_code}.")
    data = _json(response, service)
    if not isinstance(data, dict) or not isinstance(data.get("results", []), list):
        raise SearchUnavailable(f"{service} answered JSON without a `results` list.")
    return normalise(data.get("results", []), "title", "url", "content", max_results)


def float_env(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ToolError(f"{name}={raw!r} is not a number") from None
    if value < 0:
        raise ToolError(f"{name} must not be negative, not {raw!r}")
    return value


def backend_from_env(env: Mapping[str, str] | None = None) -> SearchBackend:
    """``THAU_SEARCH_BACKEND`` (ddgs, searxng, ollama); by default SearXNG when
    ``THAU_SEARXNG_URL`` is set, else DuckDuckGo. ``THAU_SEARCH_TIMEOUT`` in seconds."""
    env = os.environ if env is None else env
    timeout = float_env(env, "THAU_SEARCH_TIMEOUT", DEFAULT_TIMEOUT_S) or DEFAULT_TIMEOUT_S
    searxng_url = env.get("THAU_SEARXNG_URL", "").strip()
    name = env.get("THAU_SEARCH_BACKEND", "").strip().lower() or (
        "searxng" if searxng_url else "ddgs"
    )
    if name == "ddgs":
        return DDGSBackend(timeout=timeout)
    if name == "searxng":
        if not searxng_url:
            raise ToolError(
                "THAU_SEARCH_BACKEND=searxng needs THAU_SEARXNG_URL "
                "(for example http://localhost:8888)."
            )
        return SearxngBackend(searxng_url, timeout=timeout)
    if name == "ollama":
        key = env.get("OLLAMA_API_KEY", "").strip()
        if not key:
            raise ToolError(
                "THAU_SEARCH_BACKEND=ollama needs OLLAMA_API_KEY "
                "(create one at https://ollama.com/settings/keys)."
            )
        url = env.get("THAU_OLLAMA_SEARCH_URL", "").strip() or DEFAULT_OLLAMA_SEARCH_URL
        return OllamaSearchBackend(key, url=url, timeout=timeout)
    raise ToolError(f"THAU_SEARCH_BACKEND={name!r}: use ddgs, searxng or ollama.")
