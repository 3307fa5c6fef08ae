"""One settings system for every part: flags > ``THAU_*`` environment > ``config.toml`` >
defaults.

Each part declares its settings as a pydantic-settings class on :class:`ThauSettings`
(the chat's ``Settings``, the vision server's ``VisionSettings``) and builds it with
:func:`build_settings`. Tools get theirs through their context as
:func:`tool_environment`: every ``THAU_*`` name a tool reads, from the environment or
from ``config.toml``, where ``THAU_SANDBOX_TIMEOUT`` is written ``sandbox_timeout = 10``
at the top level or ``timeout = 10`` under ``[sandbox]``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings, InitSettingsSource, PydanticBaseSettingsSource

from thau import paths
from thau.errors import ConfigError

S = TypeVar("S", bound=BaseSettings)


class ThauSettings(BaseSettings):
    """Settings read from flags (init values), then ``THAU_*`` variables, then
    ``config.toml`` (its top level, or the table named by ``toml_table``)."""

    toml_table: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        table: Any = read_config_file()
        for key in cls.toml_table:  # an absent table is empty, not an error
            table = table.get(key, {}) if isinstance(table, dict) else table
        if not isinstance(table, dict):
            raise ValueError(
                f"[{'.'.join(cls.toml_table)}] in {paths.config_file()} must be a table"
            )
        toml = InitSettingsSource(settings_cls, init_kwargs=table)
        return (init_settings, env_settings, toml)


def build_settings(cls: type[S], overrides: Mapping[str, Any], *, where: str) -> S:
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


def read_config_file(path: Path | None = None) -> dict[str, Any]:
    """``config.toml`` as a dict (empty when there is none); a broken file is a
    ``ConfigError`` that names it."""
    path = path or paths.config_file()
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"Cannot read {path}: {exc}") from None


def tool_environment(
    env: Mapping[str, str] | None = None, config: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """The ``THAU_*`` settings tools read: ``env`` (default ``os.environ``) over the
    config file's keys (``key`` -> ``THAU_KEY``, ``[table] key`` -> ``THAU_TABLE_KEY``)."""
    env = os.environ if env is None else env
    config = read_config_file() if config is None else config
    merged: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            for inner, item in value.items():
                if not isinstance(item, dict):
                    merged[f"THAU_{key}_{inner}".upper()] = _text(item)
        else:
            merged[f"THAU_{key}".upper()] = _text(value)
    merged.update(env)  # the whole environment: tools also read e.g. OLLAMA_API_KEY, TERM
    return merged


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)
