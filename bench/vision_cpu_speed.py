"""Seconds per image on this CPU: the tiny test pipeline, and full-size architectures built
in code with random weights.

No model can be downloaded here, so the full-size figures come from pipelines that have the
real models' shapes (UNet, text encoder, VAE) and random weights. The arithmetic per image
is the same as with trained weights, so the time is too; the pictures are noise. Each case
runs through the server's own engine with the defaults the server would give that model
(steps, guidance, size, scheduler), after one warm-up image. Wall seconds depend on what
else the machine runs, so CPU seconds (all threads together) are reported beside them, with
the load average. Prints one JSON object.

    python bench/vision_cpu_speed.py [--threads 2] [--runs 2] [--cases tiny,sd-turbo,...]

Cases: ``tiny`` (the test pipeline), ``sd-turbo`` (SD 2.1-base shapes: 1 step, 512x512),
``lcm-sd15`` (SD 1.5 shapes with an LCM UNet, as LCM Dreamshaper v7: 4 steps, 512x512),
``sd15`` (SD 1.5: 30 steps, guidance 7.5, 512x512; not timed yet, expect many minutes).
A full-size case needs 6-7 GB of free memory (float32 weights plus work space); a case
is skipped, and says so, when less is available.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPT = "a lighthouse on a cliff at dawn, oil painting"
# The published configs of the real models' parts (diffusers names).
SD15_UNET = {"cross_attention_dim": 768, "attention_head_dim": 8}
SD21_UNET = {
    "cross_attention_dim": 1024,
    "attention_head_dim": (5, 10, 20, 20),
    "use_linear_projection": True,
}
CLIP_L = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
          "num_attention_heads": 12, "hidden_act": "quick_gelu"}  # fmt: skip
OPENCLIP_H = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 23,
              "num_attention_heads": 16, "hidden_act": "gelu"}  # fmt: skip


def full_size_pipeline(kind: str) -> tuple[Any, str]:
    """A random-weight pipeline with the shapes of ``kind``, and the name the server would
    see (which picks its defaults)."""
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerAncestralDiscreteScheduler,
        LatentConsistencyModelPipeline,
        LCMScheduler,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    from thau.vision.tiny import tiny_parts

    torch.manual_seed(0)
    unet_shape = SD21_UNET if kind == "sd-turbo" else SD15_UNET
    unet = UNet2DConditionModel(
        sample_size=64,
        block_out_channels=(320, 640, 1280, 1280),
        time_cond_proj_dim=256 if kind == "lcm-sd15" else None,
        **unet_shape,
    )
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        latent_channels=4,
        sample_size=512,
    )
    text = OPENCLIP_H if kind == "sd-turbo" else CLIP_L
    text_encoder = CLIPTextModel(
        CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, **text)
    )
    tokenizer = tiny_parts()["tokenizer"]  # 77 tokens either way: the cost is the encoder's
    parts = {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer}
    common = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    if kind == "lcm-sd15":
        return LatentConsistencyModelPipeline(**parts, scheduler=LCMScheduler(), **common), kind
    if kind == "sd-turbo":
        scheduler = EulerAncestralDiscreteScheduler(timestep_spacing="trailing")
        return StableDiffusionPipeline(**parts, scheduler=scheduler, **common), "sd-turbo"
    scheduler = PNDMScheduler(skip_prk_steps=True, steps_offset=1)
    return StableDiffusionPipeline(**parts, scheduler=scheduler, **common), "sd15"


NEEDS_GB = {"sd-turbo": 7.0, "lcm-sd15": 6.0, "sd15": 6.0}  # weights, activations, margin


def available_gb() -> float | None:
    """MemAvailable from /proc/meminfo (None where there is none)."""
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return None


def time_case(kind: str, runs: int) -> dict[str, Any]:
    from thau.vision.engine import GenerationParams, ImageGenerator
    from thau.vision.tiny import build_tiny_pipeline

    free = available_gb()
    if free is not None and free < NEEDS_GB.get(kind, 0):
        return {"case": kind, "skipped": f"needs {NEEDS_GB[kind]:g} GB free, {free:.1f} GB are"}
    started = time.perf_counter()
    if kind == "tiny":
        pipeline, name = build_tiny_pipeline(), "tiny"
    else:
        pipeline, name = full_size_pipeline(kind)
    built_s = time.perf_counter() - started
    generator = ImageGenerator.from_pipeline(pipeline, source=name)
    weights = sum(
        p.numel()
        for part in ("unet", "vae", "text_encoder")
        for p in getattr(pipeline, part).parameters()
    )
    warm = GenerationParams(prompt=PROMPT, num_inference_steps=1, seed=0)
    generator.generate(warm)
    seconds, cpu_seconds = [], []
    for run in range(runs):
        cpu_started = time.process_time()
        seconds.append(generator.generate(GenerationParams(prompt=PROMPT, seed=run)).duration_s)
        cpu_seconds.append(time.process_time() - cpu_started)
    defaults = generator.defaults
    return {
        "case": kind,
        "family": defaults.family,
        "steps": defaults.num_inference_steps,
        "guidance_scale": defaults.guidance_scale,
        "size": f"{defaults.width}x{defaults.height}",
        "scheduler": defaults.scheduler,
        "weights": weights,
        "seconds_per_image": [round(s, 2) for s in seconds],
        "median_s": round(statistics.median(seconds), 2),
        "cpu_seconds_per_image": [round(s, 2) for s in cpu_seconds],  # all threads together
        "build_s": round(built_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--cases", default="tiny,sd-turbo,lcm-sd15")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    load_before = [round(x, 2) for x in os.getloadavg()]
    results = [time_case(kind, args.runs) for kind in args.cases.split(",")]
    print(
        json.dumps(
            {
                "threads": args.threads,
                "cpu": platform.processor() or platform.machine(),
                "cpus_seen": os.cpu_count(),
                "load_average_before": load_before,
                "load_average_after": [round(x, 2) for x in os.getloadavg()],
                "torch": torch.__version__,
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
