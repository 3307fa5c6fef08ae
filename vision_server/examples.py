"""Example requests served by ``GET /vision/examples``, fitted to the loaded model."""

from __future__ import annotations

from typing import Any

from thau.vision.model_defaults import ModelDefaults

# What a person asks for; steps and guidance come from the loaded model's defaults.
EXAMPLES: list[dict[str, Any]] = [
    {
        "title": "Landscape",
        "request": {
            "prompt": "a lighthouse on a cliff at dawn, soft light, detailed, oil painting",
            "negative_prompt": "blurry, low quality",
            "width": 768,
            "height": 512,
            "seed": 42,
        },
    },
    {
        "title": "Portrait",
        "request": {
            "prompt": "portrait of an old fisherman, studio lighting, 85mm photo",
            "negative_prompt": "deformed, extra fingers, watermark",
            "width": 512,
            "height": 768,
            "seed": 7,
        },
    },
    {
        "title": "Quick sketch",
        "request": {"prompt": "pencil sketch of a cat sleeping on a windowsill"},
    },
    {
        "title": "Icon",
        "request": {
            "prompt": "flat vector icon of a rocket, simple shapes, white background",
            "width": 256,
            "height": 256,
            "scheduler": "dpmpp_2m_karras",
        },
    },
]
STANDARD_ONLY = ("scheduler",)  # few-step models need their own sampler
NO_GUIDANCE_ONLY = ("negative_prompt",)  # without guidance a negative prompt does nothing


def examples_for(defaults: ModelDefaults | None) -> list[dict[str, Any]]:
    """The examples with the model's steps and guidance written out (none before a model is
    ready), minus what the model cannot use."""
    examples = []
    for example in EXAMPLES:
        request = dict(example["request"])
        if defaults is not None:
            request["num_inference_steps"] = defaults.num_inference_steps
            request["guidance_scale"] = defaults.guidance_scale
            if defaults.family != "standard":
                for key in STANDARD_ONLY:
                    request.pop(key, None)
            if defaults.guidance_scale <= 1:
                for key in NO_GUIDANCE_ONLY:
                    request.pop(key, None)
        examples.append({"title": example["title"], "request": request})
    return examples
