"""``POST /sdapi/v1/txt2img``: the AUTOMATIC1111 fields that map onto diffusers."""

from __future__ import annotations

import base64
import json
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from thau.vision.dependencies import Service
from thau.vision.engine import MAX_SEED, GenerationParams, random_seed
from thau.vision.errors import InvalidParameter
from thau.vision.schedulers import A1111_SAMPLERS, a1111_scheduler
from thau.vision.schemas import (
    ERROR_RESPONSES,
    MAX_PROMPT_CHARS,
    MODEL_DEFAULT,
    Guidance,
    PromptText,
    Side,
    Steps,
)
from thau.vision.security import rate_limit, require_api_key

router = APIRouter(
    prefix="/sdapi/v1", tags=["automatic1111"], dependencies=[Depends(require_api_key)]
)

KARRAS = "karras"


class Txt2ImgRequest(BaseModel):
    """A1111 ``txt2img`` fields; others (styles, restore_faces, ...) are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    prompt: PromptText
    negative_prompt: str = Field("", max_length=MAX_PROMPT_CHARS)
    steps: Steps | None = Field(None, description=MODEL_DEFAULT)
    cfg_scale: Guidance | None = Field(None, description=MODEL_DEFAULT)
    width: Side | None = Field(None, description=MODEL_DEFAULT)
    height: Side | None = Field(None, description=MODEL_DEFAULT)
    seed: int = Field(-1, ge=-1, le=MAX_SEED, description="-1: random")
    sampler_name: str | None = Field(None, description='e.g. "Euler a", "DPM++ 2M", "DDIM"')
    sampler_index: str | None = Field(None, description="older name of sampler_name")
    scheduler: str | None = Field(None, description='"Automatic" or "Karras"')
    batch_size: int = Field(1, ge=1, le=16)
    n_iter: int = Field(1, ge=1, le=16)
    enable_hr: bool = Field(False, description="hires fix is not supported: must be false")

    def scheduler_name(self) -> str | None:
        """This server's scheduler for the A1111 sampler (None: the server's default)."""
        sampler = (self.sampler_name or self.sampler_index or "").strip()
        if not sampler:
            return None
        if (self.scheduler or "").strip().lower() == KARRAS and not sampler.lower().endswith(
            KARRAS
        ):
            sampler = f"{sampler} Karras"
        scheduler = a1111_scheduler(sampler)
        if scheduler is None:
            raise InvalidParameter(
                f"unknown sampler {sampler!r}; this server has: {', '.join(A1111_SAMPLERS)}",
                param="sampler_name",
            )
        return scheduler


class Txt2ImgResponse(BaseModel):
    images: list[str] = Field(description="base64 PNGs")
    parameters: dict[str, Any]
    info: str = Field(description="JSON text: seeds, prompt, and per-image metadata")


class Sampler(BaseModel):
    name: str
    aliases: list[str]
    options: dict[str, str] = {}


@router.post(
    "/txt2img",
    response_model=Txt2ImgResponse,
    responses=ERROR_RESPONSES,
    dependencies=[Depends(rate_limit)],
)
async def txt2img(body: Txt2ImgRequest, service: Service) -> Txt2ImgResponse:
    """Generate ``batch_size * n_iter`` images; image ``i`` uses seed ``seed + i``."""
    if body.enable_hr:
        raise InvalidParameter("hires fix (enable_hr) is not supported", param="enable_hr")
    count = body.batch_size * body.n_iter
    if count > service.settings.max_images:
        raise InvalidParameter(
            f"batch_size * n_iter must be at most {service.settings.max_images} "
            f"on this server (got {count})",
            param="batch_size",
        )
    scheduler = body.scheduler_name()
    seed = body.seed if body.seed >= 0 else random_seed()
    batch = [
        GenerationParams(
            prompt=body.prompt,
            negative_prompt=body.negative_prompt or None,
            num_inference_steps=body.steps,
            guidance_scale=body.cfg_scale,
            width=body.width,
            height=body.height,
            seed=(seed + index) % (MAX_SEED + 1),
            scheduler=scheduler,
        )
        for index in range(count)
    ]
    records = await service.generate(batch)
    seeds = [record.metadata["seed"] for record in records]
    used = records[0].metadata  # what the model's defaults filled in, too
    filled = {
        "steps": used["num_inference_steps"],
        "cfg_scale": used["guidance_scale"],
        "width": used["width"],
        "height": used["height"],
    }
    info = {
        "prompt": body.prompt,
        "negative_prompt": body.negative_prompt,
        "seed": seeds[0],
        "all_seeds": seeds,
        **filled,
        "sampler_name": used["scheduler"],
        "images": [record.metadata for record in records],
    }
    return Txt2ImgResponse(
        images=[base64.b64encode(record.png_bytes()).decode() for record in records],
        parameters={**body.model_dump(), **filled},
        info=json.dumps(info),
    )


@router.get("/samplers", response_model=list[Sampler])
async def samplers() -> list[Sampler]:
    """The A1111 sampler names this server understands."""
    return [Sampler(name=name, aliases=[alias]) for name, alias in A1111_SAMPLERS.items()]
