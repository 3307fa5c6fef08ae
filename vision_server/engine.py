"""Running one generation on a loaded pipeline (called from the single worker thread)."""

from __future__ import annotations

import inspect
import secrets
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

from thau.vision.errors import GenerationFailed, InvalidParameter, OutOfMemory
from thau.vision.model_defaults import (
    DefaultsChoice,
    ModelDefaults,
    given_or,
    resolve_defaults,
)
from thau.vision.schedulers import build_scheduler, most_steps

MAX_SEED = 2**32 - 1


def random_seed() -> int:
    return secrets.randbelow(MAX_SEED + 1)


@dataclass(frozen=True)
class GenerationParams:
    """What one image is made from; the same values give the same image. None: the
    loaded model's default (:meth:`ImageGenerator.complete` fills it in)."""

    prompt: str
    negative_prompt: str | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    width: int | None = None
    height: int | None = None
    seed: int = 0
    scheduler: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GeneratedImage:
    """A PIL image and how it was made."""

    image: Any
    params: GenerationParams
    scheduler: str
    duration_s: float
    nsfw_filtered: bool = False


class ImageGenerator:
    """Wraps a diffusers pipeline. Not thread-safe: call it from one thread at a time."""

    def __init__(
        self,
        pipeline: Any,
        *,
        source: str,
        device: str,
        dtype: str,
        choice: DefaultsChoice | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.source = source
        self.device = device
        self.dtype = dtype
        self.defaults, family_scheduler = resolve_defaults(pipeline, source, choice)
        self._default_scheduler = family_scheduler or pipeline.scheduler
        self._schedulers: dict[str, Any] = {}  # by name, built on first use
        self._accepts_negative = (
            "negative_prompt" in inspect.signature(pipeline.__call__).parameters
        )

    @classmethod
    def from_pipeline(
        cls,
        pipeline: Any,
        *,
        source: str = "in-memory pipeline",
        choice: DefaultsChoice | None = None,
    ) -> ImageGenerator:
        """Wrap a pipeline built in code (tests, benchmarks)."""
        if hasattr(pipeline, "set_progress_bar_config"):
            pipeline.set_progress_bar_config(disable=True)
        device = str(getattr(pipeline, "device", "cpu"))
        dtype = str(getattr(pipeline, "dtype", "float32")).removeprefix("torch.")
        return cls(pipeline, source=source, device=device, dtype=dtype, choice=choice)

    def scheduler_name(self, requested: str | None) -> str:
        return requested or type(self._default_scheduler).__name__

    def _scheduler(self, requested: str | None) -> Any:
        if not requested:
            return self._default_scheduler
        if requested not in self._schedulers:
            self._schedulers[requested] = build_scheduler(requested, self._default_scheduler.config)
        return self._schedulers[requested]

    def complete(self, params: GenerationParams) -> GenerationParams:
        """``params`` with the model's defaults for what they leave out; raises
        :class:`InvalidParameter` for steps the scheduler cannot take."""
        defaults: ModelDefaults = self.defaults
        done = replace(
            params,
            num_inference_steps=given_or(params.num_inference_steps, defaults.num_inference_steps),
            guidance_scale=given_or(params.guidance_scale, defaults.guidance_scale),
            width=given_or(params.width, defaults.width),
            height=given_or(params.height, defaults.height),
        )
        scheduler = self._scheduler(params.scheduler)
        limit = most_steps(scheduler)
        if limit is not None and (done.num_inference_steps or 0) > limit:
            raise InvalidParameter(
                f"num_inference_steps: Input should be at most {limit} with "
                f"{type(scheduler).__name__} (got {done.num_inference_steps})",
                param="num_inference_steps",
            )
        return done

    def generate(self, params: GenerationParams) -> GeneratedImage:
        """Make one image; the CPU generator seeded with ``params.seed`` makes it repeatable."""
        import torch

        params = self.complete(params)
        model_scheduler = self.pipeline.scheduler
        self.pipeline.scheduler = self._scheduler(params.scheduler)
        kwargs: dict[str, Any] = {
            "prompt": params.prompt,
            "num_inference_steps": params.num_inference_steps,
            "guidance_scale": params.guidance_scale,
            "width": params.width,
            "height": params.height,
            "generator": torch.Generator("cpu").manual_seed(params.seed),
            "output_type": "pil",
        }
        if self._accepts_negative and params.negative_prompt:
            kwargs["negative_prompt"] = params.negative_prompt
        started = time.perf_counter()
        try:
            with torch.inference_mode():
                result = self.pipeline(**kwargs)
        except torch.cuda.OutOfMemoryError as exc:
            raise OutOfMemory(
                f"the {self.device} device ran out of memory at {params.width}x{params.height}; "
                "try a smaller size"
            ) from exc
        except Exception as exc:
            raise GenerationFailed(f"generation failed: {type(exc).__name__}: {exc}") from exc
        finally:
            self.pipeline.scheduler = model_scheduler
        flagged = getattr(result, "nsfw_content_detected", None) or [False]
        return GeneratedImage(
            image=result.images[0],
            params=params,
            scheduler=self.scheduler_name(params.scheduler),
            duration_s=time.perf_counter() - started,
            nsfw_filtered=bool(flagged[0]),
        )
