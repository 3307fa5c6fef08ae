"""The server's state: the model (loading, ready or not), the queue, the store and counters."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from thau import paths
from thau.vision.engine import GenerationParams, ImageGenerator
from thau.vision.errors import GenerationFailed, ModelNotReady
from thau.vision.metrics import VisionMetrics
from thau.vision.model_defaults import CPU_MODEL
from thau.vision.queue import GenerationQueue
from thau.vision.settings import VisionSettings
from thau.vision.storage import ImageStore

log = logging.getLogger(__name__)

ModelStatus = Literal["not_configured", "loading", "ready", "failed"]
LOADING_RETRY_AFTER = 5


@dataclass
class GenerationRecord:
    """One stored image and its metadata (what the sidecar holds)."""

    name: str
    path: Path
    metadata: dict[str, Any]

    def png_bytes(self) -> bytes:
        return self.path.read_bytes()


def how_to_configure() -> str:
    return (
        "Start the server with `thau-vision serve --model <hub id | diffusers folder | "
        'file.safetensors>`, set THAU_VISION_MODEL, or put `model = "..."` in the [vision] '
        f"table of {paths.config_file()}. On a CPU use a distilled model: `--model "
        f"{CPU_MODEL}` makes a 512x512 image in one step."
    )


class VisionService:
    """Everything the routes share. Generation goes through :attr:`queue`, one at a time."""

    def __init__(self, settings: VisionSettings, generator: ImageGenerator | None = None) -> None:
        self.settings = settings
        self.generator = generator
        self.status: ModelStatus = "ready" if generator else "not_configured"
        self.reason: str | None = None
        self.queue = GenerationQueue(settings.queue_size)
        self.store = ImageStore(settings.images_dir)
        self.metrics = VisionMetrics()
        self.started_at = time.time()
        self.images_generated = 0
        self.failures = 0
        self.total_generation_s = 0.0
        self.last_generation_s: float | None = None
        self._load_task: asyncio.Task[None] | None = None
        self.metrics.ready.set(1 if generator else 0)

    # -- model -------------------------------------------------------------------------------

    def start_loading(self) -> None:
        """Load the configured model in the background (the server answers meanwhile)."""
        if self.generator is not None:
            return
        if not self.settings.model:
            self.status, self.reason = "not_configured", "no model is configured"
            return
        self.status, self.reason = "loading", f"loading {self.settings.model}"
        self._load_task = asyncio.get_running_loop().create_task(self._load())

    async def _load(self) -> None:
        from thau.vision.loading import ModelLoadError, load_pipeline

        try:
            loaded = await asyncio.to_thread(load_pipeline, self.settings)
        except ModelLoadError as exc:
            self.status, self.reason = "failed", str(exc)
            log.error("model not loaded: %s. %s", exc, how_to_configure())
            return
        except Exception as exc:  # keep serving /health whatever went wrong
            self.status, self.reason = "failed", f"{type(exc).__name__}: {exc}"
            log.exception("model not loaded")
            return
        self.generator = ImageGenerator(
            loaded.pipeline,
            source=loaded.source,
            device=loaded.device,
            dtype=loaded.dtype,
            choice=self.settings.defaults_choice(),
        )
        log.info(
            "defaults for %s (%s): %s",
            loaded.source,
            self.generator.defaults.reason,
            self.generator.defaults.as_dict(),
        )
        self.status, self.reason = "ready", None
        self.metrics.ready.set(1)

    async def wait_loaded(self) -> None:
        """Wait for a background load to end (tests, benchmarks)."""
        if self._load_task is not None:
            await asyncio.shield(self._load_task)

    def ready_generator(self) -> ImageGenerator:
        """The generator, or :class:`ModelNotReady` saying why not and what to do."""
        if self.status == "ready" and self.generator is not None:
            return self.generator
        if self.status == "loading":
            raise ModelNotReady(
                f"the model {self.settings.model} is still loading; retry shortly",
                retry_after=LOADING_RETRY_AFTER,
            )
        if self.status == "failed":
            raise ModelNotReady(
                f"the model {self.settings.model!r} could not be loaded ({self.reason}). "
                + how_to_configure()
            )
        raise ModelNotReady("no image model is configured. " + how_to_configure())

    # -- generation --------------------------------------------------------------------------

    async def generate(self, batch: list[GenerationParams]) -> list[GenerationRecord]:
        """Queue ``batch`` (one image per entry) and return the stored images."""
        generator = self.ready_generator()
        batch = [generator.complete(params) for params in batch]  # bad values: 422 now
        self.metrics.queue_depth.set(self.queue.depth + 1)
        try:
            return await self.queue.submit(lambda: self._run(generator, batch))
        except GenerationFailed:
            self.failures += 1
            self.metrics.failures.inc()
            raise
        finally:
            self.metrics.queue_depth.set(self.queue.depth)

    def _run(
        self, generator: ImageGenerator, batch: list[GenerationParams]
    ) -> list[GenerationRecord]:
        """Worker thread: generate and save each image of ``batch``."""
        records = []
        for params in batch:
            result = generator.generate(params)
            metadata = {
                **result.params.as_dict(),
                "scheduler": result.scheduler,
                "model": generator.source,
                "device": generator.device,
                "dtype": generator.dtype,
                "duration_s": round(result.duration_s, 4),
                "nsfw_filtered": result.nsfw_filtered,
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            stored = self.store.save(result.image, metadata)
            self._count(result.duration_s)
            records.append(
                GenerationRecord(stored.name, stored.path, {**metadata, "image": stored.name})
            )
        return records

    def _count(self, duration_s: float) -> None:
        self.images_generated += 1
        self.total_generation_s += duration_s
        self.last_generation_s = duration_s
        self.metrics.images.inc()
        self.metrics.generation_seconds.observe(duration_s)

    # -- reports -----------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        ready = self.status == "ready"
        return {
            "status": "ok" if ready else "not_ready",
            "ready": ready,
            "model_status": self.status,
            "model": self.generator.source if self.generator else self.settings.model,
            "device": self.generator.device if self.generator else None,
            "dtype": self.generator.dtype if self.generator else None,
            "reason": None if ready else self.reason,
            "how_to_fix": None if ready or self.status == "loading" else how_to_configure(),
            "defaults": self.generator.defaults.as_dict() if ready and self.generator else None,
        }

    def stats(self) -> dict[str, Any]:
        done = self.images_generated
        health = self.health()
        return {
            **{key: health[key] for key in ("ready", "model_status", "model", "device")},
            "uptime_s": round(time.time() - self.started_at, 1),
            "images_generated": done,
            "failures": self.failures,
            "average_generation_s": round(self.total_generation_s / done, 4) if done else None,
            "last_generation_s": (
                round(self.last_generation_s, 4) if self.last_generation_s is not None else None
            ),
            "queue_depth": self.queue.depth,
            "queue_capacity": self.queue.capacity,
            "busy": self.queue.running,
            "images_on_disk": self.store.count(),
            "images_dir": str(self.store.directory),
        }

    def close(self) -> None:
        self.queue.shutdown()
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
