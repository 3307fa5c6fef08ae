"""``/health`` (open to all) and ``/metrics`` (Prometheus text)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from thau.vision.dependencies import Service
from thau.vision.schemas import HealthResponse
from thau.vision.security import require_api_key

router = APIRouter(tags=["service"])


@router.get("/health", response_model=HealthResponse)
async def health(service: Service) -> HealthResponse:
    """Whether a model is ready; if not, why and how to configure one. Always 200."""
    return HealthResponse.model_validate(service.health())


@router.get(
    "/metrics",
    dependencies=[Depends(require_api_key)],
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
async def metrics(service: Service) -> Response:
    """Prometheus metrics."""
    service.metrics.queue_depth.set(service.queue.depth)
    return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)
