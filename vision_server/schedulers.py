"""The schedulers (samplers) a request may pick, by short name."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

SchedulerName = Literal[
    "ddim", "pndm", "euler", "euler_a", "heun", "dpmpp_2m", "dpmpp_2m_karras", "unipc", "lcm", "tcd"
]
SCHEDULER_NAMES: tuple[str, ...] = get_args(SchedulerName)


@dataclass(frozen=True)
class SchedulerSpec:
    """A diffusers scheduler class name and the config values that make the variant."""

    class_name: str
    options: dict[str, Any] = field(default_factory=dict)


SCHEDULERS: dict[str, SchedulerSpec] = {
    "ddim": SchedulerSpec("DDIMScheduler"),
    "pndm": SchedulerSpec("PNDMScheduler", {"skip_prk_steps": True}),
    "euler": SchedulerSpec("EulerDiscreteScheduler"),
    "euler_a": SchedulerSpec("EulerAncestralDiscreteScheduler"),
    "heun": SchedulerSpec("HeunDiscreteScheduler"),
    "dpmpp_2m": SchedulerSpec("DPMSolverMultistepScheduler", {"use_karras_sigmas": False}),
    "dpmpp_2m_karras": SchedulerSpec("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "unipc": SchedulerSpec("UniPCMultistepScheduler"),
    "lcm": SchedulerSpec("LCMScheduler"),  # for LCM models and LCM-LoRAs
    "tcd": SchedulerSpec("TCDScheduler"),  # for TCD-LoRAs
}

# AUTOMATIC1111 sampler names and the scheduler each maps onto.
A1111_SAMPLERS: dict[str, str] = {
    "DDIM": "ddim",
    "PLMS": "pndm",
    "Euler": "euler",
    "Euler a": "euler_a",
    "Heun": "heun",
    "DPM++ 2M": "dpmpp_2m",
    "DPM++ 2M Karras": "dpmpp_2m_karras",
    "UniPC": "unipc",
    "LCM": "lcm",
}


def a1111_scheduler(sampler: str) -> str | None:
    """The scheduler for an A1111 sampler name (any case), or None if there is none."""
    wanted = sampler.strip().lower()
    return next((name for key, name in A1111_SAMPLERS.items() if key.lower() == wanted), None)


def build_scheduler(name: str, base_config: Any) -> Any:
    """A fresh scheduler ``name`` made from the model's own scheduler config."""
    return make_scheduler(SCHEDULERS[name], base_config)


def make_scheduler(spec: SchedulerSpec, base_config: Any) -> Any:
    """A fresh scheduler of ``spec`` made from the model's own scheduler config."""
    import diffusers

    scheduler_class = getattr(diffusers, spec.class_name)
    return scheduler_class.from_config(base_config, **spec.options)


def scheduler_config(scheduler: Any) -> Mapping[str, Any]:
    """The scheduler's config (empty for an object that has none)."""
    config = getattr(scheduler, "config", None)
    return config if isinstance(config, Mapping) else {}


def most_steps(scheduler: Any) -> int | None:
    """The most steps ``scheduler`` can take (LCM and TCD: the distillation's step count),
    or None when it has no limit."""
    limit = scheduler_config(scheduler).get("original_inference_steps")
    return limit if isinstance(limit, int) else None
