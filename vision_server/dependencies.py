"""Shared FastAPI dependencies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from thau.vision.service import VisionService


def get_service(request: Request) -> VisionService:
    return request.app.state.service


Service = Annotated[VisionService, Depends(get_service)]
