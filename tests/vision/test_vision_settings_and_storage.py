"""Settings sources and the image store."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from thau.errors import ConfigError
from thau.vision.errors import ImageNotFound
from thau.vision.settings import load_settings
from thau.vision.storage import ImageStore, slugify


def write_config(tmp_path: Path, text: str) -> None:
    folder = tmp_path / "config"
    folder.mkdir(exist_ok=True)
    (folder / "config.toml").write_text(text)


def test_defaults(tmp_path):
    settings = load_settings()
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.model is None and settings.api_key is None
    assert settings.images_dir == tmp_path / "data" / "images"
    assert settings.cors_origin_list == []


def test_flags_beat_environment_beat_config_file(tmp_path, monkeypatch):
    write_config(
        tmp_path,
        '[chat]\nmodel = "not-mine"\n\n[vision]\nmodel = "from-file"\nport = 9001\n'
        'scheduler = "euler"\nrate_limit = 5\n',
    )
    settings = load_settings()
    assert (settings.model, settings.port, settings.scheduler) == ("from-file", 9001, "euler")
    monkeypatch.setenv("THAU_VISION_MODEL", "from-env")
    monkeypatch.setenv("THAU_VISION_API_KEY", "k3y")
    settings = load_settings()
    assert (settings.model, settings.port, settings.rate_limit) == ("from-env", 9001, 5)
    assert settings.api_key.get_secret_value() == "k3y"
    assert "k3y" not in repr(settings)
    settings = load_settings(model="from-flag", port=None)
    assert (settings.model, settings.port) == ("from-flag", 9001)


def test_config_file_without_vision_table(tmp_path):
    write_config(tmp_path, '[chat]\nbackend = "ollama"\n')
    assert load_settings().model is None


@pytest.mark.parametrize(
    ("config", "env", "expected"),
    [
        ("[vision]\nport = 0\n", {}, "port"),
        ("[vision]\ndevice = 'tpu'\n", {}, "device"),
        ("", {"THAU_VISION_SCHEDULER": "warp"}, "scheduler"),
        ("", {"THAU_VISION_QUEUE_SIZE": "lots"}, "queue_size"),
        ("[vision\n", {}, "Cannot read"),
    ],
)
def test_bad_settings_are_config_errors(tmp_path, monkeypatch, config, env, expected):
    write_config(tmp_path, config)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert expected in str(caught.value)


@pytest.mark.parametrize(
    ("prompt", "slug"),
    [
        ("A Red Fox, at dawn!", "a-red-fox-at-dawn"),
        ("Café crème brûlée", "cafe-creme-brulee"),
        ("🦊🦊", "image"),
        ("../../etc/passwd", "etc-passwd"),
        ("x" * 100, "x" * 40),
    ],
)
def test_slugs_are_ascii(prompt, slug):
    assert slugify(prompt) == slug


def test_names_are_timestamped_and_unique(tmp_path):
    from PIL import Image

    store = ImageStore(tmp_path / "images")
    meta = {
        "prompt": "Fox",
        "negative_prompt": None,
        "num_inference_steps": 10,
        "guidance_scale": 7.5,
        "width": 8,
        "height": 8,
        "seed": 1,
        "scheduler": "ddim",
        "model": "m",
    }
    names = [store.save(Image.new("RGB", (8, 8)), meta).name for _ in range(3)]
    assert len(set(names)) == 3
    assert all(re.fullmatch(r"\d{8}_\d{6}_fox(-\d)?\.png", name) for name in names)
    assert store.count() == 3
    sidecar = json.loads((tmp_path / "images" / names[0]).with_suffix(".json").read_text())
    assert sidecar["image"] == names[0] and sidecar["seed"] == 1
    assert store.path_for(names[0]) == (tmp_path / "images" / names[0]).resolve()
    for bad in ("../x.png", "x.json", "a/b.png", ".png", names[0] + "/"):
        with pytest.raises(ImageNotFound):
            store.path_for(bad)


def test_importing_the_package_does_not_import_torch_or_diffusers():
    import subprocess
    import sys

    code = (
        "import sys, thau.vision, thau.vision.cli, thau.vision.app\n"
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).absolute().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
