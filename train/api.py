"""The training service's REST API: ``create_app(service, ...)`` builds the FastAPI app.

Reads (``GET``) are open to the bound interface; every write (``POST``) needs
``Authorization: Bearer <THAU_TRAIN_API_KEY>`` when a key is configured, and a key must be
configured when the server binds beyond localhost (:func:`check_bind`). Every client gets
a request budget per minute, bodies are capped, and pydantic models check every input.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field, model_validator

from thau import __version__
from thau.errors import ConfigError
from thau.http_security import BodySizeLimit, RateLimiter, bearer_ok, is_loopback
from thau.prompt_format import TOOL_NAME
from thau.train.service import Scheduler, TrainingService
from thau.train_queue import MAX_MESSAGES, MAX_TEXT, Example, InvalidExample, normalize

API_KEY_ENV = "THAU_TRAIN_API_KEY"
MAX_BATCH = 500


# -- models at the edge --------------------------------------------------------------------
class ToolCallIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=rf"^{TOOL_NAME}$", max_length=64)
    arguments: dict[str, Any] = Field(default_factory=dict)


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant", "tool"]
    content: str = Field(default="", max_length=MAX_TEXT)
    tool_calls: list[ToolCallIn] | None = Field(default=None, max_length=8)
    tool_name: str | None = Field(default=None, max_length=64)


class ExampleIn(BaseModel):
    """``{instruction, input?, output}`` or ``{messages}``, plus optional ``metadata``."""

    model_config = ConfigDict(extra="forbid")
    instruction: str | None = Field(default=None, min_length=1, max_length=MAX_TEXT)
    input: str | None = Field(default=None, max_length=MAX_TEXT)
    output: str | None = Field(default=None, min_length=1, max_length=MAX_TEXT)
    messages: list[MessageIn] | None = Field(default=None, min_length=2, max_length=MAX_MESSAGES)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def one_form(self) -> ExampleIn:
        if self.messages is None and (self.instruction is None or self.output is None):
            raise ValueError("give instruction and output, or messages")
        if self.messages is not None and (self.instruction or self.output or self.input):
            raise ValueError("give either messages or instruction/output, not both")
        return self


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    examples: list[ExampleIn] = Field(min_length=1, max_length=MAX_BATCH)


class AddOut(BaseModel):
    id: int
    duplicate: bool
    pending: int


class BatchOut(BaseModel):
    added: int
    duplicates: int
    ids: list[int]
    pending: int


class ActionOut(BaseModel):
    ok: bool
    message: str


# -- security ------------------------------------------------------------------------------
def check_bind(host: str, api_key: str | None) -> None:
    """Refuse to serve beyond localhost without an API key."""
    if not is_loopback(host) and not api_key:
        raise ConfigError(
            f"Binding {host} exposes the training API beyond this machine; set "
            f"{API_KEY_ENV} to a secret token first, or bind 127.0.0.1."
        )


def require_key(request: Request) -> None:
    """Dependency of every write: the bearer token must match, when one is configured."""
    expected: str | None = request.app.state.api_key
    if not expected:
        return
    if not bearer_ok(request.headers.get("authorization", ""), expected):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail=f"send `Authorization: Bearer <token>` with the server's {API_KEY_ENV}",
            headers={"WWW-Authenticate": "Bearer"},
        )


def rate_limit(request: Request) -> None:
    """Dependency of every route: the client's per-minute budget."""
    limiter: RateLimiter = request.app.state.rate_limiter
    wait = limiter.check(request.client.host if request.client else "unknown")
    if wait is not None:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            detail=f"rate limit: {limiter.limit} requests per {limiter.window_s:g} s",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )


# -- routes --------------------------------------------------------------------------------
router = APIRouter(dependencies=[Depends(rate_limit)])
WRITES = [Depends(require_key)]


def _service(request: Request) -> TrainingService:
    return request.app.state.service


def _scheduler(request: Request) -> Scheduler:
    return request.app.state.scheduler


def _example(example: ExampleIn, where: str = "") -> Example:
    try:
        return normalize(example.model_dump(exclude_none=True))
    except InvalidExample as exc:
        raise HTTPException(422, f"{where}{exc}") from None


@router.get("/status", summary="the current version, the queue and the scheduler")
def get_status(request: Request) -> dict[str, Any]:
    scheduler = _scheduler(request)
    out = _service(request).status()
    out["scheduler"] = {
        "running": scheduler.running,
        "next_run": scheduler.next_run,
        "busy": scheduler.busy,
    }
    return out


@router.get("/stats", summary="examples by status, versions and recent cycles")
def get_stats(request: Request) -> dict[str, Any]:
    return _service(request).stats()


@router.post("/training/add", dependencies=WRITES, status_code=201, response_model=AddOut)
def add_example(example: ExampleIn, request: Request) -> AddOut:
    """Queue one example (a duplicate returns the id it already has)."""
    store = _service(request).store
    new_id, new = store.add(_example(example))
    return AddOut(id=new_id, duplicate=not new, pending=store.counts()["pending"])


@router.post("/training/batch", dependencies=WRITES, status_code=201, response_model=BatchOut)
def add_batch(batch: BatchIn, request: Request) -> BatchOut:
    """Queue many examples at once: all of them, or none when one is invalid."""
    store = _service(request).store
    examples = [_example(e, f"examples[{i}]: ") for i, e in enumerate(batch.examples)]
    result = store.add_many(examples)
    return BatchOut(
        added=result.added,
        duplicates=result.duplicates,
        ids=result.ids,
        pending=store.counts()["pending"],
    )


@router.post("/training/force", dependencies=WRITES, status_code=202, response_model=ActionOut)
def force_training(request: Request) -> ActionOut:
    """Start a cycle now on every pending example, below the threshold too."""
    scheduler = _scheduler(request)
    if scheduler.busy:
        raise HTTPException(status.HTTP_409_CONFLICT, "a training cycle is already running")
    if _service(request).store.counts()["pending"] == 0:
        raise HTTPException(status.HTTP_409_CONFLICT, "no pending examples to train on")
    if not scheduler.trigger():
        raise HTTPException(status.HTTP_409_CONFLICT, "a training cycle is already running")
    return ActionOut(ok=True, message="training cycle started; follow it with GET /status")


@router.get("/examples/pending", summary="pending examples, oldest first")
def pending_examples(
    request: Request,
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0),
) -> dict[str, Any]:
    store = _service(request).store
    return {
        "total": store.counts()["pending"],
        "limit": limit,
        "offset": offset,
        "examples": [row.as_dict() for row in store.select("pending", limit, offset)],
    }


@router.post("/service/start", dependencies=WRITES, response_model=ActionOut)
def start_scheduler(request: Request) -> ActionOut:
    started = _scheduler(request).start()
    return ActionOut(ok=True, message="scheduler started" if started else "already running")


@router.post("/service/stop", dependencies=WRITES, response_model=ActionOut)
def stop_scheduler(request: Request, cancel: bool = False) -> ActionOut:
    """Stop the schedule; ``?cancel=true`` also kills a running training."""
    stopped = _scheduler(request).stop(cancel=cancel)
    return ActionOut(ok=True, message="scheduler stopped" if stopped else "was not running")


def create_app(
    service: TrainingService,
    *,
    api_key: str | None = None,
    host: str = "127.0.0.1",
    scheduler: Scheduler | None = None,
    start_scheduler: bool = False,
    rate_limit_per_minute: int = 120,
    max_body_bytes: int = 2 * 1024 * 1024,
) -> FastAPI:
    """The app over ``service``. ``host`` is where it will bind (see :func:`check_bind`);
    ``start_scheduler`` starts the schedule with the app, which stops it on shutdown."""
    check_bind(host, api_key)
    scheduler = scheduler or Scheduler(service)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if start_scheduler:
            scheduler.start()
        yield
        scheduler.stop()

    app = FastAPI(
        title="THAU training service",
        summary="Queue examples, train LoRA versions incrementally, promote what evaluates well",
        version=__version__,
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.scheduler = scheduler
    app.state.api_key = api_key or None
    app.state.rate_limiter = RateLimiter(rate_limit_per_minute)
    app.include_router(router)
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    return app
