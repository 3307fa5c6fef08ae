"""``create_app``: the FastAPI application, built from settings (and optionally a pipeline)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from thau import __version__
from thau.http_security import BodySizeLimit, RateLimiter
from thau.vision.engine import ImageGenerator
from thau.vision.errors import InvalidParameter, VisionError
from thau.vision.routers import health, openai_images, sdapi, vision
from thau.vision.security import too_large_body
from thau.vision.service import VisionService
from thau.vision.settings import VisionSettings

log = logging.getLogger(__name__)


def create_app(settings: VisionSettings, pipeline: Any = None) -> FastAPI:
    """Build the app. With ``pipeline`` (a diffusers pipeline) it is used as is; otherwise
    ``settings.model`` is loaded in the background when the app starts (its lifespan)."""
    generator = (
        ImageGenerator.from_pipeline(pipeline, choice=settings.defaults_choice())
        if pipeline is not None
        else None
    )
    service = VisionService(settings, generator)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start_loading()
        yield
        service.close()

    app = FastAPI(
        title="THAU vision server",
        summary="Text-to-image generation with diffusers",
        version=__version__,
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.rate_limiter = RateLimiter(settings.rate_limit)
    for router in (health.router, vision.router, openai_images.router, sdapi.router):
        app.include_router(router)
    _add_error_handlers(app)
    if settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes, error_body=too_large_body)
    app.add_middleware(RequestMetrics, service=service)
    return app


def error_body(
    message: str, error_type: str, param: str | None = None, detail: Any = None
) -> dict[str, Any]:
    """The one error shape: OpenAI's ``error`` object plus FastAPI's ``detail``."""
    return {
        "success": False,
        "error": {"message": message, "type": error_type, "param": param},
        "detail": detail if detail is not None else message,
    }


def readable_validation_message(errors: list[dict[str, Any]]) -> str:
    """``width: Input should be a multiple of 8 (got 500); seed: ...``"""
    parts = []
    for error in errors:
        loc = [str(part) for part in error.get("loc", ()) if part != "body"]
        field = ".".join(loc) or "body"
        text = f"{field}: {error.get('msg', 'invalid')}"
        given = error.get("input")
        if error.get("type") != "missing" and isinstance(given, int | float | str | bool):
            text += f" (got {given!r})"
        parts.append(text)
    return "; ".join(parts)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        first = errors[0]["loc"] if errors else ()
        param = ".".join(str(part) for part in first if part != "body") or None
        body = error_body(
            readable_validation_message(errors),
            "invalid_request_error",
            param,
            jsonable_encoder(errors, custom_encoder={Exception: str}),
        )
        return JSONResponse(body, status_code=422)

    @app.exception_handler(VisionError)
    async def on_vision_error(request: Request, exc: VisionError) -> JSONResponse:
        service: VisionService = request.app.state.service
        if exc.status_code in (429, 503):
            service.metrics.rejected.labels(exc.error_type).inc()
        param = exc.param if isinstance(exc, InvalidParameter) else None
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        return JSONResponse(
            error_body(exc.message, exc.error_type, param),
            status_code=exc.status_code,
            headers=headers,
        )

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        return JSONResponse(
            error_body(message, _http_error_type(exc.status_code), detail=exc.detail),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(
            error_body(f"internal error: {type(exc).__name__}", "server_error"), status_code=500
        )


def _http_error_type(status_code: int) -> str:
    return {
        401: "authentication_error",
        404: "not_found",
        405: "method_not_allowed",
        413: "request_too_large",
    }.get(status_code, "invalid_request_error")


class RequestMetrics:
    """ASGI middleware: count answered requests by method, route template and status."""

    def __init__(self, app: ASGIApp, service: VisionService) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.service.metrics.requests.labels(scope["method"], route, str(status)).inc()
