"""Settings: flags > ``THAU_*`` environment > ``config.toml`` > defaults (pydantic-settings)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from thau import paths
from thau.settings import ThauSettings, build_settings

BackendName = Literal["auto", "ollama", "openai", "embedded"]
ToolMode = Literal["auto", "text", "native"]

DEFAULT_OLLAMA_HOST = "http://localhost:11434"
DEFAULT_OPENAI_HOST = "http://localhost:8080/v1"
DEFAULT_VISION_URL = "http://localhost:8000"
DEFAULT_OLLAMA_MODEL = "thau-135m"


class Settings(ThauSettings):
    """Everything a run of ``thau-chat`` can be told."""

    model_config = SettingsConfigDict(
        env_prefix="THAU_", extra="ignore", populate_by_name=True, validate_default=True
    )

    backend: BackendName = "auto"
    model: str | None = Field(None, description="model name (server backends) or GGUF path")
    host: str | None = Field(None, description="backend URL")
    vision_url: str = Field(
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
    adapter: str | None = Field(
        None, description="embedded backend's LoRA: a GGUF path, shipped or none (None: promoted)"
    )
    grammar: bool = Field(True, description="constrain embedded tool-call bodies with a grammar")
    tool_gate: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="embedded THAU adapters: open a tool call only when the model gives its "
        "first token at least this probability (0: measure only; unset: the default, off)",
    )
    num_ctx: int = Field(4096, ge=256, le=131072)
    timeout: float = Field(120.0, gt=0)
    keep_alive: str = "5m"
    data_dir: Path = Field(default_factory=paths.data_dir)
    tool_result_limit: int = Field(4000, ge=200, description="tool-result chars the model sees")
    verbose: bool = Field(False, description="chat: print timings and speed after each answer")
    mcp_config: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="mcpServers JSON files (THAU_MCP_CONFIG: paths joined by the path separator)",
    )
    mcp_servers: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="config.toml [mcp_servers.NAME] tables"
    )

    @field_validator("mcp_config", mode="before")
    @classmethod
    def _split_paths(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part for part in value.split(os.pathsep) if part]
        return value


def load_settings(**overrides: Any) -> Settings:
    """The chat settings; ``overrides`` are flags (``None`` means not given)."""
    where = f"flags, THAU_* variables and {paths.config_file()}"
    return build_settings(Settings, overrides, where=where)
