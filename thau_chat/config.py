"""Settings: flags > ``THAU_*`` environment > ``config.toml`` > defaults (pydantic-settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import AliasChoices, Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from thau_chat import paths
from thau_chat.errors import ConfigError

BackendName = Literal["auto", "ollama", "openai", "embedded"]
ToolMode = Literal["auto", "text", "native"]

DEFAULT_OLLAMA_HOST = "http://localhost:11434"
DEFAULT_OPENAI_HOST = "http://localhost:8080/v1"
DEFAULT_VISION_URL = "http://localhost:8000"
DEFAULT_OLLAMA_MODEL = "thau-135m"

S = TypeVar("S", bound=BaseSettings)


class Settings(BaseSettings):
    """Everything a run of ``thau-chat`` can be told."""

    model_config = SettingsConfigDict(
        env_prefix="THAU_", extra="ignore", populate_by_name=True, validate_default=True
    )

    backend: BackendName = "auto"
    model: str | None = Field(None, description="model name (server backends) or GGUF path")
    host: str | None = Field(None, description="backend URL")
    api: str = Field(
        DEFAULT_VISION_URL,
        validation_alias=AliasChoices("api", "THAU_API", "THAU_VISION_URL"),
        description="vision server URL",
    )
    api_key: str | None = Field(
        None, validation_alias=AliasChoices("api_key", "THAU_API_KEY", "OPENAI_API_KEY")
    )
    yes: bool = False
    no_tools: bool = False
    max_steps: int = Field(5, ge=1, le=50)
    system: str | None = None
    temperature: float = Field(0.2, ge=0.0, le=2.0)
    tool_mode: ToolMode = "auto"
    adapter: str | None = Field(None, description="GGUF LoRA adapter for the embedded backend")
    grammar: bool = Field(True, description="constrain embedded tool-call bodies with a grammar")
    num_ctx: int = Field(4096, ge=256, le=131072)
    timeout: float = Field(120.0, gt=0)
    keep_alive: str = "5m"
    data_dir: Path = Field(default_factory=paths.data_dir)
    tool_result_limit: int = Field(4000, ge=200, description="tool-result chars the model sees")
    verbose: bool = Field(False, description="chat: print timings and speed after each answer")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=paths.config_file())
        return (init_settings, env_settings, toml)


def build_settings(cls: type[S], overrides: dict[str, Any], *, where: str) -> S:
    """Build ``cls`` from flags (``None`` means not given); errors become ``ConfigError``.

    ``where`` tells the person where the settings come from.
    """
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        return cls(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"Invalid settings ({problems}). Check {where}.") from None
    except (OSError, ValueError) as exc:  # unreadable or malformed TOML
        raise ConfigError(f"Cannot read {paths.config_file()}: {exc}") from None


def load_settings(**overrides: Any) -> Settings:
    """The chat settings; ``overrides`` are flags (``None`` means not given)."""
    where = f"flags, THAU_* variables and {paths.config_file()}"
    return build_settings(Settings, overrides, where=where)
