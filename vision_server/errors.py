"""Errors the vision server raises on purpose; each maps to one HTTP answer."""

from __future__ import annotations

from thau.errors import ThauError


class VisionError(ThauError):
    """Base class of the vision server's errors."""

    status_code = 500
    error_type = "server_error"

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class ModelNotReady(VisionError):
    """No pipeline to generate with: none configured, still loading, or failed to load."""

    status_code = 503
    error_type = "model_not_ready"


class QueueFull(VisionError):
    """The generation queue is full; the client should come back after ``retry_after``."""

    status_code = 503
    error_type = "queue_full"


class RateLimited(VisionError):
    """This client sent more generation requests than its per-minute allowance."""

    status_code = 429
    error_type = "rate_limited"


class GenerationFailed(VisionError):
    """The pipeline raised while generating."""

    status_code = 500
    error_type = "generation_failed"


class OutOfMemory(GenerationFailed):
    """The device ran out of memory; a smaller image may fit."""

    status_code = 503
    error_type = "out_of_memory"


class InvalidParameter(VisionError):
    """A value passed validation of its own but not the server's limits."""

    status_code = 422
    error_type = "invalid_request_error"

    def __init__(self, message: str, *, param: str) -> None:
        super().__init__(message)
        self.param = param


class ImageNotFound(VisionError):
    """No stored image has that name (or the name is not a plain image name)."""

    status_code = 404
    error_type = "not_found"
