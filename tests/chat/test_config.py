"""Settings precedence: flags > THAU_* environment > config.toml > defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from thau import paths
from thau.chat.config import load_settings
from thau.errors import ConfigError


def write_config(text: str) -> Path:
    path = paths.config_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults(isolated_dirs: Path) -> None:
    s = load_settings()
    assert (s.backend, s.max_steps, s.tool_mode) == ("auto", 5, "auto")
    assert s.vision_url == "http://localhost:8000"
    assert s.data_dir == isolated_dirs / "data" / "thau"


def test_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    write_config('model = "from-file"\nmax_steps = 7\ntemperature = 0.5\napi = "http://file:1"\n')
    s = load_settings()
    assert (s.model, s.max_steps, s.temperature, s.vision_url) == (
        "from-file",
        7,
        0.5,
        "http://file:1",
    )
    monkeypatch.setenv("THAU_MODEL", "from-env")
    monkeypatch.setenv("THAU_VISION_URL", "http://env:2")
    s = load_settings()
    assert (s.model, s.max_steps, s.vision_url) == ("from-env", 7, "http://env:2")
    s = load_settings(model="from-flag", max_steps=None, vision_url="http://flag:3")
    assert (s.model, s.max_steps, s.vision_url) == ("from-flag", 7, "http://flag:3")


def test_data_dir_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("THAU_DATA_DIR", str(tmp_path / "elsewhere"))
    assert load_settings().data_dir == tmp_path / "elsewhere"


def test_invalid_values_are_clear_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="max_steps"):
        load_settings(max_steps=0)
    monkeypatch.setenv("THAU_BACKEND", "telepathy")
    with pytest.raises(ConfigError, match="backend"):
        load_settings()


def test_malformed_toml_is_a_clear_error() -> None:
    path = write_config("model = [unclosed\n")
    with pytest.raises(ConfigError, match=str(path)):
        load_settings()
