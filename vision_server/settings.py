"""Settings of the vision server: flags > ``THAU_VISION_*`` variables > ``[vision]`` in
``config.toml`` > defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    SettingsConfigDict,
)

from thau import paths
from thau.settings import ThauSettings, build_settings
from thau.vision.model_defaults import DefaultsChoice, FamilyName
from thau.vision.schedulers import SchedulerName

DeviceName = Literal["auto", "cpu", "cuda", "mps"]
DtypeName = Literal["auto", "float32", "float16", "bfloat16"]

TOML_TABLE = "vision"


def default_images_dir() -> Path:
    """``<data dir>/images``; the data dir comes from ``thau.paths``."""
    return paths.data_dir() / "images"


class VisionSettings(ThauSettings):
    """Everything ``thau-vision serve`` can be told."""

    toml_table = (TOML_TABLE,)  # flags > THAU_VISION_* > [vision] of config.toml

    model_config = SettingsConfigDict(
        env_prefix="THAU_VISION_", extra="ignore", validate_default=True
    )

    host: str = Field("127.0.0.1", description="address to bind; keep 127.0.0.1 unless needed")
    port: int = Field(8000, ge=1, le=65535)
    model: str | None = Field(
        None, description="hub id, local diffusers folder, or a .safetensors/.ckpt file"
    )
    pipeline_config: str | None = Field(
        None,
        description="diffusers folder or hub id holding the configs for a single-file model "
        "(needed offline)",
    )
    device: DeviceName = "auto"
    dtype: DtypeName = "auto"
    scheduler: SchedulerName | None = Field(None, description="default scheduler; None: model's")
    family: FamilyName | Literal["auto"] = Field(
        "auto", description="which defaults the model gets; auto: read from the loaded model"
    )
    default_steps: int | None = Field(None, ge=1, le=100, description="None: the family's")
    default_guidance: float | None = Field(None, ge=0, le=20, description="None: the family's")
    default_width: int | None = Field(None, ge=256, le=1024, multiple_of=8)
    default_height: int | None = Field(None, ge=256, le=1024, multiple_of=8)
    images_dir: Path = Field(default_factory=default_images_dir)
    api_key: SecretStr | None = Field(None, description="bearer key required when set")
    rate_limit: int = Field(30, ge=0, description="generation requests per minute per client")
    queue_size: int = Field(4, ge=0, le=1000, description="requests waiting behind the running one")
    max_body_bytes: int = Field(65536, ge=1024, description="largest accepted request body")
    max_images: int = Field(4, ge=1, le=16, description="most images one request may ask for")
    cors_origins: str = Field("", description="comma-separated origins; empty: CORS off")
    threads: int | None = Field(None, ge=1, le=256, description="torch CPU threads")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"

    @field_validator("model", "pipeline_config", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("api_key", mode="before")
    @classmethod
    def _blank_key_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    def defaults_choice(self) -> DefaultsChoice:
        """What these settings say about the defaults requests get."""
        return DefaultsChoice(
            family=self.family,
            num_inference_steps=self.default_steps,
            guidance_scale=self.default_guidance,
            width=self.default_width,
            height=self.default_height,
            keep_scheduler=self.scheduler is not None,
        )

    @property
    def cors_origin_list(self) -> list[str]:
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]


def load_settings(**overrides: Any) -> VisionSettings:
    """Build the settings; ``overrides`` are flags (``None`` means not given)."""
    where = f"flags, THAU_VISION_* variables and the [{TOML_TABLE}] table of {paths.config_file()}"
    return build_settings(VisionSettings, overrides, where=where)
