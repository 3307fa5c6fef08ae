"""Write a diffusers Stable Diffusion pipeline as one original-layout (LDM) checkpoint file.

Only what the tests need: the single-file loading path must read a ``.safetensors`` file
laid out like the checkpoints people download. The renames follow the LDM layout of the
SD v1 UNet, the KL autoencoder and the CLIP text encoder.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."

UNET_FIXED = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
VAE_FIXED = {"conv_norm_out": "norm_out"}
VAE_RESNET = {"conv_shortcut": "nin_shortcut"}


def _rename_resnet(rest: str, table: dict[str, str]) -> str:
    head, _, tail = rest.partition(".")
    return f"{table.get(head, head)}.{tail}"


def unet_key(key: str, layers_per_block: int, up_with_attention: set[int]) -> str:
    per_block = layers_per_block + 1
    head, _, param = key.rpartition(".")
    if head in UNET_FIXED:
        return f"{UNET_FIXED[head]}.{param}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        index = 1 + int(m[1]) * per_block + int(m[2])
        return f"input_blocks.{index}.0.{_rename_resnet(m[3], UNET_RESNET)}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
        return f"input_blocks.{1 + int(m[1]) * per_block + int(m[2])}.1.{m[3]}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"input_blocks.{(int(m[1]) + 1) * per_block}.0.op.{m[2]}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"middle_block.{2 * int(m[1])}.{_rename_resnet(m[2], UNET_RESNET)}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        index = int(m[1]) * per_block + int(m[2])
        return f"output_blocks.{index}.0.{_rename_resnet(m[3], UNET_RESNET)}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
        return f"output_blocks.{int(m[1]) * per_block + int(m[2])}.1.{m[3]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        block = int(m[1])
        slot = 2 if block in up_with_attention else 1
        return f"output_blocks.{block * per_block + per_block - 1}.{slot}.conv.{m[2]}"
    raise KeyError(f"no LDM name for UNet key {key}")


def vae_key(key: str, up_blocks: int) -> str:
    side, _, rest = key.partition(".")
    head, _, param = rest.rpartition(".")
    if side in ("quant_conv", "post_quant_conv") or head in ("conv_in", "conv_out"):
        return key
    if head in VAE_FIXED:
        return f"{side}.{VAE_FIXED[head]}.{param}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", rest):
        return f"{side}.down.{m[1]}.block.{m[2]}.{_rename_resnet(m[3], VAE_RESNET)}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", rest):
        return f"{side}.down.{m[1]}.downsample.conv.{m[2]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", rest):
        level = up_blocks - 1 - int(m[1])
        return f"{side}.up.{level}.block.{m[2]}.{_rename_resnet(m[3], VAE_RESNET)}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", rest):
        return f"{side}.up.{up_blocks - 1 - int(m[1])}.upsample.conv.{m[2]}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", rest):
        return f"{side}.mid.block_{int(m[1]) + 1}.{_rename_resnet(m[2], VAE_RESNET)}"
    raise KeyError(f"no LDM name for VAE key {key}")


def ldm_state_dict(pipeline: Any) -> dict[str, Any]:
    """The pipeline's weights under their original-layout names."""
    unet_config = pipeline.unet.config
    up_with_attention = {
        index for index, kind in enumerate(unet_config.up_block_types) if "CrossAttn" in kind
    }
    state: dict[str, Any] = {}
    for key, tensor in pipeline.unet.state_dict().items():
        name = unet_key(key, unet_config.layers_per_block, up_with_attention)
        state[UNET_PREFIX + name] = tensor
    up_blocks = len(pipeline.vae.config.up_block_types)
    for key, tensor in pipeline.vae.state_dict().items():
        state[VAE_PREFIX + vae_key(key, up_blocks)] = tensor
    for key, tensor in pipeline.text_encoder.state_dict().items():
        # original checkpoints name the CLIP weights under ``text_model.``
        prefix = "" if key.startswith("text_model.") else "text_model."
        state[CLIP_PREFIX + prefix + key] = tensor
    return {key: tensor.contiguous().clone() for key, tensor in state.items()}


def save_ldm_checkpoint(pipeline: Any, path: Path) -> Path:
    from safetensors.torch import save_file

    save_file(ldm_state_dict(pipeline), str(path))
    return path
