"""The native API: ``/vision/generate``, ``/vision/image/{name}``, examples and stats."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse

from thau.vision.dependencies import Service
from thau.vision.engine import GenerationParams, random_seed
from thau.vision.examples import examples_for
from thau.vision.schemas import (
    ERROR_RESPONSES,
    ErrorResponse,
    Example,
    GenerateRequest,
    GenerateResponse,
    StatsResponse,
)
from thau.vision.security import rate_limit, require_api_key

router = APIRouter(prefix="/vision", tags=["vision"], dependencies=[Depends(require_api_key)])


def image_url(name: str) -> str:
    return f"/vision/image/{name}"


@router.post(
    "/generate",
    response_model=GenerateResponse,
    responses=ERROR_RESPONSES,
    dependencies=[Depends(rate_limit)],
)
async def generate(body: GenerateRequest, service: Service) -> GenerateResponse:
    """Generate one image; without ``seed`` a random one is chosen and returned."""
    seed = body.seed if body.seed is not None else random_seed()
    params = GenerationParams(**body.model_dump(exclude={"seed"}), seed=seed)
    [record] = await service.generate([params])
    return GenerateResponse(image_url=image_url(record.name), seed=seed, metadata=record.metadata)


@router.get(
    "/image/{name}",
    response_class=FileResponse,
    responses={
        200: {"content": {"image/png": {}}},
        404: {"model": ErrorResponse, "description": "no such image"},
    },
)
async def get_image(name: str, service: Service) -> FileResponse:
    """A generated PNG by its name (only plain names inside the images folder)."""
    return FileResponse(service.store.path_for(name), media_type="image/png")


@router.get("/examples", response_model=list[Example], response_model_exclude_none=True)
async def examples(service: Service) -> list[Example]:
    """Example requests to start from, with the loaded model's steps and guidance."""
    generator = service.generator if service.status == "ready" else None
    defaults = generator.defaults if generator else None
    return [Example.model_validate(example) for example in examples_for(defaults)]


@router.get("/stats", response_model=StatsResponse)
async def stats(service: Service) -> StatsResponse:
    """Counters, timings and the queue."""
    return StatsResponse.model_validate(service.stats())
