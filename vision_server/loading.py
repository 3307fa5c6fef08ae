"""Loading a diffusers text-to-image pipeline from a hub id, a folder or a single file."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thau.vision.schedulers import build_scheduler
from thau.vision.settings import VisionSettings

log = logging.getLogger(__name__)

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
DTYPES = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}
XL_MARKER_PREFIX = "conditioner.embedders."  # SDXL checkpoints keep their text encoders here


class ModelLoadError(Exception):
    """The configured model could not be loaded; the message says why and what to try."""


@dataclass
class LoadedPipeline:
    """A pipeline ready to run, and where it came from."""

    pipeline: Any
    source: str
    device: str
    dtype: str


def resolve_device(requested: str) -> str:
    """``auto`` picks cuda, then mps, then cpu; an unavailable device is an error."""
    import torch

    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    if requested == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if requested == "cuda" and not cuda:
        raise ModelLoadError("--device cuda was asked for but torch sees no CUDA device.")
    if requested == "mps" and not mps:
        raise ModelLoadError("--device mps was asked for but torch sees no MPS device.")
    return requested


def resolve_dtype(requested: str, device: str) -> Any:
    """``auto`` is float16 on cuda and float32 elsewhere."""
    import torch

    name = requested if requested != "auto" else ("float16" if device == "cuda" else "float32")
    return getattr(torch, DTYPES[name])


def load_pipeline(settings: VisionSettings) -> LoadedPipeline:
    """Load ``settings.model`` onto the configured device; raises :class:`ModelLoadError`."""
    if not settings.model:
        raise ModelLoadError("no model is configured")
    import torch

    if settings.threads:
        torch.set_num_threads(settings.threads)
    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    source = settings.model
    try:
        pipeline = _from_source(source, settings.pipeline_config, dtype)
        pipeline.to(device)
    except ModelLoadError:
        raise
    except Exception as exc:  # diffusers raises many kinds; all mean "cannot load"
        raise ModelLoadError(f"cannot load {source!r}: {type(exc).__name__}: {exc}") from exc
    if hasattr(pipeline, "set_progress_bar_config"):
        pipeline.set_progress_bar_config(disable=True)
    if settings.scheduler:
        pipeline.scheduler = build_scheduler(settings.scheduler, pipeline.scheduler.config)
    dtype_name = str(dtype).removeprefix("torch.")
    log.info("loaded %s on %s (%s)", source, device, dtype_name)
    return LoadedPipeline(pipeline=pipeline, source=source, device=device, dtype=dtype_name)


def _from_source(source: str, pipeline_config: str | None, dtype: Any) -> Any:
    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix.lower() not in SINGLE_FILE_SUFFIXES:
            raise ModelLoadError(
                f"{path} is a file but not a .safetensors or .ckpt checkpoint; give a diffusers "
                "folder, a hub id, or a single-file checkpoint."
            )
        return _from_single_file(path, pipeline_config, dtype)
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ModelLoadError(
                f"{path} has no model_index.json, so it is not a diffusers pipeline folder."
            )
        return _from_pretrained(str(path), dtype)
    if source.lower().endswith(SINGLE_FILE_SUFFIXES) or source.startswith((".", "/", "~")):
        raise ModelLoadError(f"{source} does not exist.")
    try:  # a hub id: downloaded, or read from the local cache when offline
        return _from_pretrained(source, dtype)
    except OSError as exc:
        raise ModelLoadError(
            f"cannot load {source!r}: {str(exc).rstrip('.')}. As a hub id it must be "
            "downloadable or already in the Hugging Face cache (offline: download it "
            "beforehand); otherwise give a diffusers folder or a .safetensors file."
        ) from exc


def _from_pretrained(source: str, dtype: Any) -> Any:
    from diffusers import AutoPipelineForText2Image

    return AutoPipelineForText2Image.from_pretrained(source, dtype=dtype)


def _from_single_file(path: Path, pipeline_config: str | None, dtype: Any) -> Any:
    import diffusers

    pipeline_class = getattr(diffusers, _single_file_pipeline_class(path, pipeline_config))
    kwargs: dict[str, Any] = {"dtype": dtype}
    if pipeline_config:
        config_dir = Path(pipeline_config).expanduser()
        kwargs["config"] = str(config_dir) if config_dir.is_dir() else pipeline_config
    try:
        return pipeline_class.from_single_file(str(path), **kwargs)
    except OSError as exc:
        if pipeline_config:
            raise
        raise ModelLoadError(
            f"cannot load {path}: {str(exc).rstrip('.')}. A single-file checkpoint needs its "
            "pipeline configs; offline, point --pipeline-config (THAU_VISION_PIPELINE_CONFIG) "
            "at a local diffusers folder of the same architecture."
        ) from exc


def _single_file_pipeline_class(path: Path, pipeline_config: str | None) -> str:
    """The class named by the config folder, else SDXL or SD by the checkpoint's key names."""
    if pipeline_config:
        index = Path(pipeline_config).expanduser() / "model_index.json"
        if index.is_file():
            return str(json.loads(index.read_text())["_class_name"])
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as checkpoint:
            if any(key.startswith(XL_MARKER_PREFIX) for key in checkpoint.keys()):  # noqa: SIM118
                return "StableDiffusionXLPipeline"
    return "StableDiffusionPipeline"
