"""A tiny random-weight Stable Diffusion pipeline, built in code, for tests and benchmarks.

It draws noise, not pictures, but it goes through the same diffusers code as a real model:
``save_tiny_pipeline(folder)`` writes a diffusers folder that ``--model folder`` loads.
A 256x256, 10-step image takes a fraction of a second on one CPU core.
"""

from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path
from typing import Any

TOKENIZER_MAX_LENGTH = 77
HIDDEN = 16


def tiny_vocabulary() -> list[str]:
    """Letters, digits and their word-final forms, plus CLIP's start and end tokens."""
    symbols = list(string.ascii_lowercase + string.digits)
    return ["<|startoftext|>", "<|endoftext|>", *symbols, *(f"{s}</w>" for s in symbols)]


def build_tiny_pipeline(seed: int = 0) -> Any:
    """A ``StableDiffusionPipeline`` with tiny UNet, VAE, CLIP text model and tokenizer."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    pipeline = StableDiffusionPipeline(
        **tiny_parts(seed),
        scheduler=PNDMScheduler(skip_prk_steps=True, steps_offset=1),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def build_tiny_lcm_pipeline(seed: int = 0) -> Any:
    """A tiny ``LatentConsistencyModelPipeline``: its UNet takes the guidance scale as an
    input, as LCM-distilled models' do."""
    from diffusers import LatentConsistencyModelPipeline, LCMScheduler

    pipeline = LatentConsistencyModelPipeline(
        **tiny_parts(seed, time_cond_proj_dim=HIDDEN),
        scheduler=LCMScheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def tiny_parts(seed: int = 0, time_cond_proj_dim: int | None = None) -> dict[str, Any]:
    """The tiny UNet, VAE, text encoder and tokenizer, seeded."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        block_out_channels=(4, 4, 4, 8),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"),
        cross_attention_dim=HIDDEN,
        attention_head_dim=2,
        norm_num_groups=4,
        time_cond_proj_dim=time_cond_proj_dim,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(2, 2, 2, 2),  # four levels: latents are 1/8 of the image side
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=0,
        norm_num_groups=2,
        mid_block_add_attention=False,
    )
    vocabulary = tiny_vocabulary()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocabulary),
            hidden_size=HIDDEN,
            intermediate_size=2 * HIDDEN,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=TOKENIZER_MAX_LENGTH,
            projection_dim=HIDDEN,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    with tempfile.TemporaryDirectory() as folder:
        vocab_file, merges_file = Path(folder, "vocab.json"), Path(folder, "merges.txt")
        vocab_file.write_text(json.dumps({token: i for i, token in enumerate(vocabulary)}))
        merges_file.write_text("#version: 0.2\n")
        tokenizer = CLIPTokenizer(
            str(vocab_file), str(merges_file), model_max_length=TOKENIZER_MAX_LENGTH
        )
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer}


def save_tiny_pipeline(folder: Path, seed: int = 0) -> Path:
    """Write the tiny pipeline as a diffusers folder and return the folder."""
    build_tiny_pipeline(seed).save_pretrained(str(folder))
    return folder
