"""Request and response models of the native ``/vision`` API (validation and OpenAPI)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from thau.vision.engine import MAX_SEED
from thau.vision.schedulers import SchedulerName

MIN_SIDE, MAX_SIDE, SIDE_STEP = 256, 1024, 8
MIN_STEPS, MAX_STEPS = 1, 100
MIN_GUIDANCE, MAX_GUIDANCE = 0.0, 20.0
MODEL_DEFAULT = "leave out: the loaded model's default (see /health)"
MAX_PROMPT_CHARS = 2000

PromptText = Annotated[
    str, Field(min_length=1, max_length=MAX_PROMPT_CHARS, description="what to draw (English)")
]
NegativeText = Annotated[str, Field(max_length=MAX_PROMPT_CHARS, description="what to avoid")]
Steps = Annotated[
    int, Field(ge=MIN_STEPS, le=MAX_STEPS, description="denoising steps (distilled models: 1-8)")
]
Guidance = Annotated[
    float,
    Field(
        ge=MIN_GUIDANCE,
        le=MAX_GUIDANCE,
        description="prompt adherence (CFG scale); 0 or 1: off, as distilled models want",
    ),
]
SeedValue = Annotated[
    int, Field(ge=0, le=MAX_SEED, description="same seed and parameters give the same image")
]
Side = Annotated[
    int,
    Field(
        ge=MIN_SIDE,
        le=MAX_SIDE,
        multiple_of=SIDE_STEP,
        description=f"pixels, {MIN_SIDE}-{MAX_SIDE}, a multiple of {SIDE_STEP}",
    ),
]


class GenerateRequest(BaseModel):
    """``POST /vision/generate``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"prompt": "a lighthouse at dawn", "seed": 42}]},
    )

    prompt: PromptText
    negative_prompt: NegativeText | None = None
    num_inference_steps: Steps | None = Field(None, description=MODEL_DEFAULT)
    guidance_scale: Guidance | None = Field(None, description=MODEL_DEFAULT)
    width: Side | None = Field(None, description=MODEL_DEFAULT)
    height: Side | None = Field(None, description=MODEL_DEFAULT)
    seed: SeedValue | None = Field(None, description="None: a random seed, returned")
    scheduler: SchedulerName | None = Field(None, description="None: the server's default")


class GenerationMetadata(BaseModel):
    """How an image was made (also in the PNG and its JSON sidecar)."""

    prompt: str
    negative_prompt: str | None
    num_inference_steps: int
    guidance_scale: float
    width: int
    height: int
    seed: int
    scheduler: str
    model: str
    device: str
    dtype: str
    duration_s: float
    nsfw_filtered: bool
    created_at: str
    image: str


class GenerateResponse(BaseModel):
    success: Literal[True] = True
    image_url: str = Field(description="/vision/image/<name>")
    seed: int
    metadata: GenerationMetadata


class Example(BaseModel):
    title: str
    request: GenerateRequest


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None


class ErrorResponse(BaseModel):
    """Every error: ``error`` in the OpenAI shape, ``detail`` as FastAPI gives it."""

    success: Literal[False] = False
    error: ErrorBody
    detail: Any = None


class GenerationDefaults(BaseModel):
    """What a request gets for the values it leaves out, and why."""

    family: str = Field(description="standard, turbo, lightning, lcm, lcm-model or tcd")
    description: str
    reason: str = Field(description="how the family was recognised")
    num_inference_steps: int
    guidance_scale: float
    width: int
    height: int
    scheduler: str


class HealthResponse(BaseModel):
    status: Literal["ok", "not_ready"]
    ready: bool
    model_status: Literal["not_configured", "loading", "ready", "failed"]
    model: str | None
    device: str | None
    dtype: str | None
    reason: str | None
    how_to_fix: str | None
    defaults: GenerationDefaults | None = Field(None, description="None until a model is ready")


class StatsResponse(BaseModel):
    ready: bool
    model_status: str
    model: str | None
    device: str | None
    uptime_s: float
    images_generated: int
    failures: int
    average_generation_s: float | None
    last_generation_s: float | None
    queue_depth: int
    queue_capacity: int
    busy: bool
    images_on_disk: int
    images_dir: str


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        401: "missing or wrong bearer key",
        413: "request body too large",
        422: "invalid parameters",
        429: "rate limit reached (see Retry-After)",
        503: "no model ready, or the queue is full (see Retry-After)",
    }.items()
}
