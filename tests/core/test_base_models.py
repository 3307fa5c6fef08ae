"""Packaged bases: Gemma 3 270M is assembled offline from its PyPI chunks, checked by
sha256, and resolves by size, preset and model name; a wrong file is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from thau.base_models import (
    BY_MODEL_NAME,
    BY_SIZE,
    GEMMA3_270M,
    check_sha256,
    file_sha256,
    models_dir,
    packaged_base_path,
)
from thau.errors import ModelNotFound
from thau.train_service_files import SIZES, ServiceConfig


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No hub: transformers and huggingface_hub may only read local files."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def test_gemma_is_assembled_once_and_matches_its_sha256(offline: None) -> None:
    path = packaged_base_path("gemma3-270m")
    assert path == models_dir() / "gemma-3-270m-q4_k_m.gguf"
    assert path.stat().st_size == 253_113_024
    assert file_sha256(path) == GEMMA3_270M.sha256
    mark = json.loads(path.with_name(path.name + ".sha256.json").read_text("utf-8"))
    assert mark["sha256"] == GEMMA3_270M.sha256
    assert packaged_base_path("gemma3-270m") == path  # the second call finds it


def test_a_file_with_the_wrong_sha256_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "gemma-3-270m-q4_k_m.gguf"
    bad.write_bytes(b"GGUF not really")
    with pytest.raises(ModelNotFound, match="not the expected model file") as caught:
        check_sha256(bad, GEMMA3_270M.sha256 or "")
    assert "Delete it and run again" in str(caught.value)
    assert not bad.with_name(bad.name + ".sha256.json").exists()


def test_a_changed_file_is_checked_again(tmp_path: Path) -> None:
    data = tmp_path / "m.gguf"
    data.write_bytes(b"one")
    expected = file_sha256(data)
    check_sha256(data, expected)
    data.write_bytes(b"two, longer")  # size and time change: the mark no longer vouches
    with pytest.raises(ModelNotFound):
        check_sha256(data, expected)


def test_a_damaged_assembled_base_is_refused_with_a_clear_message() -> None:
    target = models_dir() / "gemma-3-270m-q4_k_m.gguf"
    target.parent.mkdir(parents=True, exist_ok=True)
    saved = target.read_bytes() if target.is_file() else None
    try:
        target.write_bytes(b"truncated")
        with pytest.raises(ModelNotFound, match="sha256"):
            packaged_base_path("gemma3-270m")
    finally:
        if saved is not None:
            target.write_bytes(saved)
        else:
            target.unlink()


def test_unknown_packaged_base_is_named() -> None:
    with pytest.raises(ModelNotFound, match="gemma3-270m"):
        packaged_base_path("gemma9")


def test_size_preset_and_model_name_resolve_offline(offline: None) -> None:
    from thau.train.base_model import chat_template, resolve_base
    from thau.train.presets import load_preset

    assert BY_SIZE["270m"] is GEMMA3_270M and BY_MODEL_NAME["thau-270m"] is GEMMA3_270M
    assert SIZES["270m"] == "gemma3-270m"
    config = load_preset(SIZES["270m"])
    assert config.base == "gemma3-270m"
    source = resolve_base(config.base)
    assert Path(source.location, source.gguf_file or "") == packaged_base_path("gemma3-270m")
    assert chat_template(source).name == "gemma"
    service = ServiceConfig.for_size("270m")
    assert service.base_path() == str(packaged_base_path("gemma3-270m"))
    assert ServiceConfig.for_size("135m").base_path() is None  # the default base


def test_without_the_extra_the_message_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain install has no Gemma chunks: the error names `thau[gemma]`."""
    import importlib

    real = importlib.import_module

    def without_gemma(name: str, *args: object) -> object:
        if name.startswith("gemma3_270m"):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real(name, *args)

    monkeypatch.setattr("thau.base_models.models_dir", lambda: tmp_path / "models")
    monkeypatch.setattr("thau.base_models.importlib.import_module", without_gemma)
    with pytest.raises(ModelNotFound, match=r"pip install 'thau\[gemma\]'"):
        packaged_base_path("gemma3-270m")
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())
