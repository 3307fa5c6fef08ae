"""Fixtures for the vision server: a tiny diffusers model saved to disk and loaded the real way."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Before huggingface_hub is imported: it reads this once. Nothing here may reach the network.
os.environ["HF_HUB_OFFLINE"] = "1"
sys.path.insert(0, str(Path(__file__).parent))  # vision_support, ldm_checkpoint

from vision_support import make_settings, running_client


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No THAU_* from the person running the tests; config and data in tmp; hub offline."""
    for key in list(os.environ):
        if key.startswith("THAU_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("THAU_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("THAU_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny pipeline saved as a diffusers folder (what ``--model <folder>`` reads)."""
    import torch

    from thau.vision.tiny import save_tiny_pipeline

    torch.set_num_threads(1)  # the CPU is shared; tiny models gain nothing from threads
    return save_tiny_pipeline(tmp_path_factory.mktemp("tiny-sd") / "pipeline")


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_model_dir: Path) -> Any:
    """The tiny folder loaded through the server's own loading code."""
    from thau.vision.loading import load_pipeline
    from thau.vision.settings import VisionSettings

    return load_pipeline(VisionSettings(model=str(tiny_model_dir), threads=1)).pipeline


@pytest.fixture
def client(tmp_path: Path, tiny_model_dir: Path) -> Iterator[Any]:
    """An app that loads the tiny model from its folder, as ``--model <folder>`` does."""
    from thau.vision import create_app

    with running_client(create_app(make_settings(tmp_path, model=str(tiny_model_dir)))) as c:
        yield c


@pytest.fixture
def app_with(tmp_path: Path, tiny_pipeline: Any) -> Iterator[Any]:
    """``app_with(**settings)``: a started client around the shared tiny pipeline."""
    from thau.vision import create_app

    stack: list[Any] = []

    def build(**overrides: Any) -> Any:
        manager = running_client(create_app(make_settings(tmp_path, **overrides), tiny_pipeline))
        stack.append(manager)
        return manager.__enter__()

    yield build
    for manager in reversed(stack):
        manager.__exit__(None, None, None)
