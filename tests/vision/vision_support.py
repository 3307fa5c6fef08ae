"""Helpers shared by the vision tests (fixtures live in ``conftest.py``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SMALL = {"width": 256, "height": 256, "num_inference_steps": 10}


def make_settings(tmp_path: Path, **overrides: Any) -> Any:
    """Settings for a test app: images in ``tmp_path``, no rate limit, one torch thread."""
    from thau.vision.settings import VisionSettings

    values: dict[str, Any] = {
        "images_dir": tmp_path / "images",
        "rate_limit": 0,
        "threads": 1,
    }
    values.update(overrides)
    return VisionSettings(**values)


@contextmanager
def running_client(app: Any, timeout_s: float = 120.0) -> Iterator[Any]:
    """A TestClient with the app started, after the background model load has ended."""
    from fastapi.testclient import TestClient

    with TestClient(app) as client:
        deadline = time.monotonic() + timeout_s
        while client.get("/health").json()["model_status"] == "loading":
            if time.monotonic() > deadline:
                raise TimeoutError("the model did not finish loading")
            time.sleep(0.05)
        yield client


def png_pixels(data: bytes) -> Any:
    """Decode PNG bytes fully (raises on a broken file) and return the pixel array."""
    import io

    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(data)) as probe:
        probe.verify()
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))
