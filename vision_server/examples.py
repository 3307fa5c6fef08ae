"""Example requests served by ``GET /vision/examples``."""

from __future__ import annotations

from typing import Any

EXAMPLES: list[dict[str, Any]] = [
    {
        "title": "Landscape",
        "request": {
            "prompt": "a lighthouse on a cliff at dawn, soft light, detailed, oil painting",
            "negative_prompt": "blurry, low quality",
            "num_inference_steps": 30,
            "guidance_scale": 7.5,
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
            "num_inference_steps": 40,
            "guidance_scale": 7.0,
            "width": 512,
            "height": 768,
            "seed": 7,
        },
    },
    {
        "title": "Quick sketch",
        "request": {
            "prompt": "pencil sketch of a cat sleeping on a windowsill",
            "num_inference_steps": 15,
            "guidance_scale": 6.0,
            "width": 512,
            "height": 512,
            "scheduler": "euler_a",
        },
    },
    {
        "title": "Icon",
        "request": {
            "prompt": "flat vector icon of a rocket, simple shapes, white background",
            "num_inference_steps": 25,
            "guidance_scale": 9.0,
            "width": 256,
            "height": 256,
            "scheduler": "dpmpp_2m_karras",
        },
    },
]
