"""Good defaults for the loaded model: steps, guidance, size and scheduler.

Standard models want about 30 steps with guidance 7.5; distilled (few-step) models such as
SD-Turbo, SDXL-Lightning, LCM and TCD want 1-8 steps and no classifier-free guidance. The
family is read from what a loaded pipeline shows (its class, its scheduler, its name);
settings may name the family or any single value. Requests that leave a value out get these.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import PurePath
from typing import Any, Literal, TypeVar, get_args

from thau.vision.schedulers import SchedulerSpec, make_scheduler, scheduler_config

FamilyName = Literal["standard", "turbo", "lightning", "lcm", "lcm-model", "tcd"]
FAMILY_NAMES: tuple[str, ...] = get_args(FamilyName)
CPU_MODEL = "stabilityai/sd-turbo"  # what to suggest for a CPU: 1 step at 512x512
MIN_SIDE, MAX_SIDE, SIDE_STEP, FALLBACK_SIDE = 256, 1024, 8, 512
TRAILING = {"timestep_spacing": "trailing"}
T = TypeVar("T")


@dataclass(frozen=True)
class Family:
    """What a kind of model generates best with."""

    name: str
    what: str
    num_inference_steps: int
    guidance_scale: float
    size: int | None = None  # None: the model's native size
    scheduler: SchedulerSpec | None = None  # None: the model's own scheduler


LCM, TCD = SchedulerSpec("LCMScheduler"), SchedulerSpec("TCDScheduler")
FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family("standard", "a standard model", 30, 7.5),
        Family(
            "turbo",
            "SD-Turbo or SDXL-Turbo (adversarial diffusion distillation)",
            1,
            0.0,
            size=512,
            scheduler=SchedulerSpec("EulerAncestralDiscreteScheduler", TRAILING),
        ),
        Family(
            "lightning",
            "SDXL-Lightning (progressive adversarial distillation)",
            4,
            0.0,
            scheduler=SchedulerSpec("EulerDiscreteScheduler", TRAILING),
        ),
        Family("lcm", "a model with an LCM-LoRA merged in", 4, 0.0, scheduler=LCM),
        Family(
            "lcm-model",
            "a latent consistency model (guidance is a UNet input)",
            4,
            8.0,
            scheduler=LCM,
        ),
        Family("tcd", "a model with a TCD-LoRA merged in", 4, 0.0, scheduler=TCD),
    )
}
# How a family shows: its scheduler class, a word in its name, a trailing-spaced Euler sampler.
BY_SCHEDULER = {"LCMScheduler": "lcm", "TCDScheduler": "tcd"}
BY_NAME = {"lightning": "lightning", "turbo": "turbo", "tcd": "tcd", "lcm": "lcm"}
BY_TRAILING_SCHEDULER = {
    "EulerAncestralDiscreteScheduler": "turbo",
    "EulerDiscreteScheduler": "lightning",
}
STEPS_IN_NAME = re.compile(r"^(\d)steps?$")  # sdxl_lightning_4step -> 4


@dataclass(frozen=True)
class DefaultsChoice:
    """What the settings say: a family (``auto``: detect it) and single values (None: the
    family's); ``keep_scheduler`` when a scheduler was configured explicitly."""

    family: str = "auto"
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    width: int | None = None
    height: int | None = None
    keep_scheduler: bool = False


@dataclass(frozen=True)
class ModelDefaults:
    """The values a request gets for what it leaves out, and why (``/health`` shows them)."""

    family: str
    description: str
    reason: str
    num_inference_steps: int
    guidance_scale: float
    width: int
    height: int
    scheduler: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def name_words(source: str) -> set[str]:
    """Lower-case words of the model's last path parts (hub id, folder or file name)."""
    parts = PurePath(source.replace("\\", "/")).parts[-3:]
    return {word for part in parts for word in re.split(r"[^a-z0-9]+", part.lower()) if word}


def guidance_is_an_input(pipeline: Any) -> bool:
    """True for latent consistency models: the UNet is conditioned on the guidance scale."""
    if type(pipeline).__name__ == "LatentConsistencyModelPipeline":
        return True
    config = getattr(getattr(pipeline, "unet", None), "config", None) or {}
    return config.get("time_cond_proj_dim") is not None


def detect_family(pipeline: Any, source: str) -> tuple[str, str]:
    """The family of a loaded pipeline and the sign it was recognised by."""
    if guidance_is_an_input(pipeline):
        return "lcm-model", f"{type(pipeline).__name__} with a guidance-conditioned UNet"
    scheduler_class = type(pipeline.scheduler).__name__
    if scheduler_class in BY_SCHEDULER:
        return BY_SCHEDULER[scheduler_class], f"its scheduler is {scheduler_class}"
    words = name_words(source)
    for word, family in BY_NAME.items():
        if word in words:
            return family, f"its name contains {word!r}"
    spacing = scheduler_config(pipeline.scheduler).get("timestep_spacing")
    if spacing == "trailing" and scheduler_class in BY_TRAILING_SCHEDULER:
        family = BY_TRAILING_SCHEDULER[scheduler_class]
        return family, f"its scheduler is {scheduler_class} with trailing timesteps"
    return "standard", "no sign of a distilled model"


def native_side(pipeline: Any) -> int:
    """The side the model was trained at (UNet sample size x VAE factor), within the API's
    limits; 512 when the pipeline does not say."""
    config = getattr(getattr(pipeline, "unet", None), "config", None) or {}
    sample = config.get("sample_size")
    if isinstance(sample, list | tuple):
        sample = sample[0] if sample else None
    if not isinstance(sample, int):
        return FALLBACK_SIDE
    side = sample * int(getattr(pipeline, "vae_scale_factor", 8))
    return max(MIN_SIDE, min(MAX_SIDE, side - side % SIDE_STEP))


def family_steps(family: Family, source: str) -> int:
    """The family's steps, or the count a distilled model's name gives (``..._4step``)."""
    if family.name != "standard":
        for word in name_words(source):
            if match := STEPS_IN_NAME.match(word):
                return max(1, int(match[1]))
    return family.num_inference_steps


def resolve_defaults(
    pipeline: Any, source: str, choice: DefaultsChoice | None = None
) -> tuple[ModelDefaults, Any | None]:
    """The model's defaults, and the scheduler its family needs when the pipeline has
    another one (None: keep the pipeline's)."""
    choice = choice or DefaultsChoice()
    if choice.family == "auto":
        name, reason = detect_family(pipeline, source)
    else:
        name, reason = choice.family, "set in the settings"
    family = FAMILIES[name]
    scheduler = None
    wanted = None if choice.keep_scheduler else family.scheduler
    if wanted and not _is(pipeline.scheduler, wanted):
        scheduler = make_scheduler(wanted, pipeline.scheduler.config)
    side = family.size or native_side(pipeline)
    defaults = ModelDefaults(
        family=name,
        description=family.what,
        reason=reason,
        num_inference_steps=given_or(choice.num_inference_steps, family_steps(family, source)),
        guidance_scale=given_or(choice.guidance_scale, family.guidance_scale),
        width=given_or(choice.width, side),
        height=given_or(choice.height, side),
        scheduler=type(scheduler or pipeline.scheduler).__name__,
    )
    return defaults, scheduler


def _is(scheduler: Any, spec: SchedulerSpec) -> bool:
    config = scheduler_config(scheduler)
    return type(scheduler).__name__ == spec.class_name and all(
        config.get(key) == value for key, value in spec.options.items()
    )


def given_or(value: T | None, default: T) -> T:
    """``value`` unless it is None."""
    return default if value is None else value
