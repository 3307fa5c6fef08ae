"""The ``web_search`` tool: search the web through the configured backend.

Settings (environment): ``THAU_SEARCH_BACKEND`` (ddgs, searxng, ollama), ``THAU_SEARXNG_URL``,
``OLLAMA_API_KEY``, ``THAU_OLLAMA_SEARCH_URL``, ``THAU_SEARCH_TIMEOUT`` (s, default 10),
``THAU_SEARCH_CACHE_TTL`` (s, default 3600; 0 turns the cache off), ``THAU_SEARCH_RETRIES``
(attempts on rate limits, default 3) and ``THAU_SEARCH_BACKOFF`` (s, first wait, default 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field, field_validator
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from thau.errors import ToolError
from thau.tools.registry import Tool, ToolContext
from thau.tools.search_backends import RateLimited, SearchBackend, backend_from_env, float_env
from thau.tools.search_cache import SearchCache

MAX_WAIT_S = 30.0


class WebSearchArgs(BaseModel):
    """Arguments of ``web_search``."""

    query: str = Field(min_length=1, max_length=400, description="What to search for.")
    max_results: int = Field(5, ge=1, le=10, description="How many results (1-10).")

    @field_validator("query")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        value = " ".join(value.split())
        if not value:
            raise ValueError("the query is empty")
        return value


def search_with_retries(
    backend: SearchBackend, query: str, max_results: int, attempts: int, backoff_s: float
) -> list[dict[str, str]]:
    """``backend.search`` retried on :class:`RateLimited` with exponential backoff
    (``backoff_s``, doubled each time; a ``Retry-After`` the service sends wins)."""

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            return min(exc.retry_after, MAX_WAIT_S)
        return min(backoff_s * 2 ** (state.attempt_number - 1), MAX_WAIT_S)

    retrying = Retrying(
        stop=stop_after_attempt(max(1, attempts)),
        wait=wait,
        retry=retry_if_exception_type(RateLimited),
        reraise=True,
    )
    try:
        return [dict(r) for r in retrying(backend.search, query, max_results)]
    except RateLimited as exc:
        raise ToolError(
            f"{exc} Gave up after {attempts} attempts; wait a minute and try again."
        ) from None


def search(
    args: WebSearchArgs, context: ToolContext, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Run a search (cached); ``env`` defaults to the context's settings."""
    env = context.settings() if env is None else env
    backend = backend_from_env(env)
    ttl = float_env(env, "THAU_SEARCH_CACHE_TTL", 3600.0)
    attempts = int(float_env(env, "THAU_SEARCH_RETRIES", 3.0))
    backoff = float_env(env, "THAU_SEARCH_BACKOFF", 1.0)
    cache = SearchCache(context.data_dir / "cache" / "web_search.sqlite", ttl)
    key = cache.key(backend.cache_key(), args.query.lower(), args.max_results)
    cached = cache.get(key)
    if cached is not None:
        results, hit = cached, True
    else:
        results = search_with_retries(backend, args.query, args.max_results, attempts, backoff)
        hit = False
        if results:
            cache.put(key, results)
    return {"query": args.query, "backend": backend.name, "cached": hit, "results": results}


def run(args: WebSearchArgs, context: ToolContext) -> dict[str, Any]:
    return search(args, context)


tool = Tool(
    name="web_search",
    description=(
        "Search the web and return a list of results with title, url and snippet. "
        "Use it for current events or facts you do not know."
    ),
    args_model=WebSearchArgs,
    run=run,
    timeout=90.0,
)
