"""``POST /v1/images/generations``: the OpenAI Images API, so OpenAI clients work unchanged."""

from __future__ import annotations

import base64
import re
import time
from typing import Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from thau.vision.dependencies import Service
from thau.vision.engine import MAX_SEED, GenerationParams, random_seed
from thau.vision.errors import InvalidParameter
from thau.vision.schemas import (
    ERROR_RESPONSES,
    MAX_SIDE,
    MIN_SIDE,
    MODEL_DEFAULT,
    SIDE_STEP,
    Guidance,
    NegativeText,
    PromptText,
    SeedValue,
    Steps,
)
from thau.vision.security import rate_limit, require_api_key

router = APIRouter(prefix="/v1", tags=["openai"], dependencies=[Depends(require_api_key)])

SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")


class ImageGenerationRequest(BaseModel):
    """The OpenAI fields that map onto diffusers, plus this server's own extras."""

    model_config = ConfigDict(extra="ignore")

    prompt: PromptText
    model: str | None = Field(None, description="accepted and ignored: the server has one model")
    n: int = Field(1, ge=1, le=16, description="number of images (at most the server's max)")
    size: str = Field(
        "auto", description='"WxH" (256-1024, multiples of 8), or "auto": the model\'s size'
    )
    response_format: Literal["url", "b64_json"] = "url"
    output_format: Literal["png"] = "png"
    negative_prompt: NegativeText | None = None
    num_inference_steps: Steps | None = Field(None, description=MODEL_DEFAULT)
    guidance_scale: Guidance | None = Field(None, description=MODEL_DEFAULT)
    seed: SeedValue | None = None

    @field_validator("size")
    @classmethod
    def _check_size(cls, value: str) -> str:
        if value == "auto":
            return value
        match = SIZE.fullmatch(value)
        if not match:
            raise ValueError('size must look like "512x512" or be "auto"')
        for side in (int(match[1]), int(match[2])):
            if not MIN_SIDE <= side <= MAX_SIDE or side % SIDE_STEP:
                raise ValueError(
                    f"each side of size must be {MIN_SIDE}-{MAX_SIDE} and a multiple of "
                    f"{SIDE_STEP} (got {value})"
                )
        return value

    def dimensions(self) -> tuple[int | None, int | None]:
        """Width and height; None for ``auto`` (the model's default)."""
        if self.size == "auto":
            return None, None
        width, height = self.size.split("x")
        return int(width), int(height)


class ImageData(BaseModel):
    url: str | None = None
    b64_json: str | None = None
    revised_prompt: str | None = None


class ImagesResponse(BaseModel):
    created: int
    data: list[ImageData]


@router.post(
    "/images/generations",
    response_model=ImagesResponse,
    response_model_exclude_none=True,
    responses=ERROR_RESPONSES,
    dependencies=[Depends(rate_limit)],
)
async def create_images(
    body: ImageGenerationRequest, request: Request, service: Service
) -> ImagesResponse:
    """Generate ``n`` images; image ``i`` uses seed ``seed + i``."""
    if body.n > service.settings.max_images:
        raise InvalidParameter(
            f"n must be at most {service.settings.max_images} on this server (got {body.n})",
            param="n",
        )
    width, height = body.dimensions()
    seed = body.seed if body.seed is not None else random_seed()
    batch = [
        GenerationParams(
            prompt=body.prompt,
            negative_prompt=body.negative_prompt,
            num_inference_steps=body.num_inference_steps,
            guidance_scale=body.guidance_scale,
            width=width,
            height=height,
            seed=(seed + index) % (MAX_SEED + 1),
        )
        for index in range(body.n)
    ]
    records = await service.generate(batch)
    base = str(request.base_url).rstrip("/")
    if body.response_format == "b64_json":
        data = [ImageData(b64_json=base64.b64encode(r.png_bytes()).decode()) for r in records]
    else:
        data = [ImageData(url=f"{base}/vision/image/{record.name}") for record in records]
    return ImagesResponse(created=int(time.time()), data=data)
