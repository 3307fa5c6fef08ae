"""The loaded model's defaults: recognised from the pipeline, reported, applied to requests
that leave values out, and never applied over values a request gives."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from vision_support import make_settings, png_pixels, running_client

from thau.vision import create_app
from thau.vision.engine import GenerationParams, ImageGenerator
from thau.vision.model_defaults import DefaultsChoice, detect_family, resolve_defaults


def with_scheduler(pipeline: Any, class_name: str, **options: Any) -> Any:
    """The same tiny parts behind another scheduler (the shared pipeline is left alone)."""
    import diffusers

    scheduler = getattr(diffusers, class_name).from_config(pipeline.scheduler.config, **options)
    parts = {**pipeline.components, "scheduler": scheduler}
    copy = type(pipeline)(**parts, requires_safety_checker=False)
    copy.set_progress_bar_config(disable=True)
    return copy


def direct_pixels(pipeline: Any, **call: Any) -> np.ndarray:
    """What the pipeline draws when called directly, as the engine calls it."""
    import torch

    seed = call.pop("seed")
    image = pipeline(
        prompt="a red fox", generator=torch.Generator("cpu").manual_seed(seed), **call
    ).images[0]
    return np.asarray(image.convert("RGB"))


def pixels(client: Any, body: dict[str, Any]) -> np.ndarray:
    return png_pixels(client.get(body["image_url"]).content)


# -- recognising the family ---------------------------------------------------------------------

# (scheduler class and options or None: the tiny model's PNDM, model name) ->
# (family, steps, guidance, side, scheduler the server runs by default)
CASES = [
    ((None, {}), "~/models/sd15", ("standard", 30, 7.5, 256, "PNDMScheduler")),
    (("LCMScheduler", {}), "~/models/sd15", ("lcm", 4, 0.0, 256, "LCMScheduler")),
    (("TCDScheduler", {}), "~/models/sd15", ("tcd", 4, 0.0, 256, "TCDScheduler")),
    (
        ("EulerAncestralDiscreteScheduler", {"timestep_spacing": "trailing"}),
        "~/models/my-model",
        ("turbo", 1, 0.0, 512, "EulerAncestralDiscreteScheduler"),
    ),
    (
        ("EulerDiscreteScheduler", {"timestep_spacing": "trailing"}),
        "~/models/my-model",
        ("lightning", 4, 0.0, 256, "EulerDiscreteScheduler"),
    ),
    ((None, {}), "stabilityai/sd-turbo", ("turbo", 1, 0.0, 512, "EulerAncestralDiscreteScheduler")),
    (
        (None, {}),
        "~/models/sdxl_lightning_2step.safetensors",
        ("lightning", 2, 0.0, 256, "EulerDiscreteScheduler"),
    ),
    ((None, {}), "~/models/LCM_Dreamshaper_v7", ("lcm", 4, 0.0, 256, "LCMScheduler")),
    ((None, {}), "h1t/TCD-SD15", ("tcd", 4, 0.0, 256, "TCDScheduler")),
    # a word inside another word, or a folder far up the path, is no sign
    ((None, {}), "/srv/turbo/models/a/b/sd15", ("standard", 30, 7.5, 256, "PNDMScheduler")),
    ((None, {}), "~/models/turbomachinery-sd", ("standard", 30, 7.5, 256, "PNDMScheduler")),
    # trailing spacing on a scheduler no distilled family uses is no sign either
    (
        ("DDIMScheduler", {"timestep_spacing": "trailing"}),
        "m",
        ("standard", 30, 7.5, 256, "DDIMScheduler"),
    ),
]


@pytest.mark.parametrize(("scheduler", "source", "expected"), CASES)
def test_the_family_is_read_from_scheduler_and_name(tiny_pipeline, scheduler, source, expected):
    class_name, options = scheduler
    pipeline = with_scheduler(tiny_pipeline, class_name, **options) if class_name else tiny_pipeline
    defaults, _ = resolve_defaults(pipeline, source)
    family, steps, guidance, side, scheduler_class = expected
    assert defaults.family == family, defaults.reason
    assert (defaults.num_inference_steps, defaults.guidance_scale) == (steps, guidance)
    assert (defaults.width, defaults.height) == (side, side)
    assert defaults.scheduler == scheduler_class


def test_a_family_found_by_name_gets_its_scheduler_with_trailing_timesteps(tiny_pipeline):
    defaults, scheduler = resolve_defaults(tiny_pipeline, "stabilityai/sd-turbo")
    assert defaults.reason == "its name contains 'turbo'"
    assert type(scheduler).__name__ == "EulerAncestralDiscreteScheduler"
    assert scheduler.config.timestep_spacing == "trailing"
    assert type(tiny_pipeline.scheduler).__name__ == "PNDMScheduler"  # the pipeline is unchanged
    already, none = resolve_defaults(
        with_scheduler(
            tiny_pipeline, "EulerAncestralDiscreteScheduler", timestep_spacing="trailing"
        ),
        "stabilityai/sd-turbo",
    )
    assert already.family == "turbo" and none is None  # it already has the right one


def test_a_latent_consistency_model_keeps_guidance_as_an_input():
    from thau.vision.tiny import build_tiny_lcm_pipeline

    pipeline = build_tiny_lcm_pipeline()
    assert detect_family(pipeline, "m")[0] == "lcm-model"
    defaults, _ = resolve_defaults(pipeline, "m")
    assert (defaults.num_inference_steps, defaults.guidance_scale) == (4, 8.0)
    generator = ImageGenerator.from_pipeline(pipeline)
    made = generator.generate(GenerationParams(prompt="a red fox", seed=3))
    assert made.params.num_inference_steps == 4 and made.params.guidance_scale == 8.0
    assert made.image.size == (256, 256) and np.asarray(made.image).std() > 0


def test_settings_name_the_family_or_single_values(tiny_pipeline):
    forced, scheduler = resolve_defaults(tiny_pipeline, "m", DefaultsChoice(family="lcm"))
    assert (forced.family, forced.reason) == ("lcm", "set in the settings")
    assert type(scheduler).__name__ == "LCMScheduler"
    mixed, _ = resolve_defaults(
        tiny_pipeline,
        "stabilityai/sd-turbo",
        DefaultsChoice(num_inference_steps=2, width=384, keep_scheduler=True),
    )
    assert (mixed.family, mixed.num_inference_steps, mixed.guidance_scale) == ("turbo", 2, 0.0)
    assert (mixed.width, mixed.height) == (384, 512)
    assert mixed.scheduler == "PNDMScheduler"  # a configured scheduler is kept


def test_settings_reach_the_defaults_from_flags_variables_and_config(tmp_path, monkeypatch):
    from thau.vision.cli import build_parser
    from thau.vision.settings import load_settings

    config = tmp_path / "config" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text('[vision]\nfamily = "lcm"\ndefault_width = 384\n')
    monkeypatch.setenv("THAU_VISION_DEFAULT_STEPS", "3")
    flags = build_parser().parse_args(["serve", "--family", "turbo", "--default-guidance", "0.5"])
    overrides = {key: value for key, value in vars(flags).items() if key != "command"}
    choice = load_settings(**overrides).defaults_choice()
    assert choice == DefaultsChoice(
        family="turbo", num_inference_steps=3, guidance_scale=0.5, width=384
    )
    assert load_settings(scheduler="euler").defaults_choice().keep_scheduler is True
    assert load_settings().defaults_choice().family == "lcm"


@pytest.mark.parametrize(
    ("setting", "value"),
    [("family", "fast"), ("default_steps", 0), ("default_guidance", 21), ("default_width", 300)],
)
def test_bad_default_settings_are_refused(setting, value):
    from thau.errors import ConfigError
    from thau.vision.settings import load_settings

    with pytest.raises(ConfigError):
        load_settings(**{setting: value})


# -- over HTTP ------------------------------------------------------------------------------


def test_a_standard_model_reports_and_applies_its_defaults(app_with, tiny_pipeline):
    client = app_with(default_steps=3)  # 30 would be slow; the override is what is tested
    defaults = client.get("/health").json()["defaults"]
    assert defaults["family"] == "standard" and defaults["reason"] == "no sign of a distilled model"
    assert defaults["num_inference_steps"] == 3 and defaults["guidance_scale"] == 7.5
    assert (defaults["width"], defaults["height"]) == (256, 256)  # the tiny UNet's native size
    assert defaults["scheduler"] == "PNDMScheduler"

    body = client.post("/vision/generate", json={"prompt": "a red fox", "seed": 4}).json()
    meta = body["metadata"]
    assert (meta["num_inference_steps"], meta["guidance_scale"]) == (3, 7.5)
    assert (meta["width"], meta["height"], meta["scheduler"]) == (256, 256, "PNDMScheduler")
    expected = direct_pixels(
        tiny_pipeline, num_inference_steps=3, guidance_scale=7.5, width=256, height=256, seed=4
    )
    assert np.array_equal(pixels(client, body), expected)


def test_a_distilled_scheduler_gets_few_steps_and_no_guidance(tmp_path, tiny_pipeline):
    lcm = with_scheduler(tiny_pipeline, "LCMScheduler")
    with running_client(create_app(make_settings(tmp_path), lcm)) as client:
        defaults = client.get("/health").json()["defaults"]
        assert defaults["family"] == "lcm" and defaults["reason"] == "its scheduler is LCMScheduler"
        assert 1 <= defaults["num_inference_steps"] <= 4 and defaults["guidance_scale"] == 0
        body = client.post("/vision/generate", json={"prompt": "a red fox", "seed": 9}).json()
        meta = body["metadata"]
        assert (meta["num_inference_steps"], meta["guidance_scale"]) == (4, 0.0)
        assert meta["scheduler"] == "LCMScheduler"
        expected = direct_pixels(lcm, num_inference_steps=4, guidance_scale=0.0, seed=9)
        assert np.array_equal(pixels(client, body), expected)

        examples = client.get("/vision/examples").json()
        for example in examples:
            request = example["request"]
            assert (request["num_inference_steps"], request["guidance_scale"]) == (4, 0.0)
            assert "scheduler" not in request and "negative_prompt" not in request

        too_many = client.post(
            "/vision/generate", json={"prompt": "fox", "num_inference_steps": 60}
        )
        assert too_many.status_code == 422
        error = too_many.json()["error"]
        assert error["param"] == "num_inference_steps"
        assert error["message"] == (
            "num_inference_steps: Input should be at most 50 with LCMScheduler (got 60)"
        )


def test_a_turbo_model_loaded_from_its_folder(tmp_path, tiny_model_dir):
    folder = shutil.copytree(tiny_model_dir, tmp_path / "sd-turbo")
    with running_client(create_app(make_settings(tmp_path, model=str(folder)))) as client:
        defaults = client.get("/health").json()["defaults"]
        assert defaults["family"] == "turbo"
        assert (defaults["num_inference_steps"], defaults["guidance_scale"]) == (1, 0.0)
        assert (defaults["width"], defaults["height"]) == (512, 512)
        assert defaults["scheduler"] == "EulerAncestralDiscreteScheduler"
        body = client.post("/vision/generate", json={"prompt": "a red fox", "seed": 1}).json()
        meta = body["metadata"]
        assert (meta["num_inference_steps"], meta["width"]) == (1, 512)
        assert meta["scheduler"] == "EulerAncestralDiscreteScheduler"
        assert pixels(client, body).std() > 0


def test_old_range_requests_are_unchanged_on_any_model(app_with, tiny_pipeline):
    old = {"num_inference_steps": 10, "guidance_scale": 7.5, "width": 256, "height": 256}
    standard = app_with()
    body = standard.post("/vision/generate", json={"prompt": "a red fox", "seed": 2, **old}).json()
    assert {key: body["metadata"][key] for key in old} == old
    expected = direct_pixels(tiny_pipeline, seed=2, **old)
    assert np.array_equal(pixels(standard, body), expected)

    distilled = app_with(family="turbo")  # given values win over any model's defaults
    body = distilled.post("/vision/generate", json={"prompt": "a red fox", "seed": 2, **old})
    assert {key: body.json()["metadata"][key] for key in old} == old


@pytest.mark.parametrize(
    "change",
    [
        {"num_inference_steps": 0},
        {"num_inference_steps": 101},
        {"guidance_scale": -1},
        {"guidance_scale": 21},
        {"width": 300},
        {"scheduler": "lcm_turbo"},
    ],
)
def test_bad_values_are_still_422_on_a_distilled_model(app_with, change):
    client = app_with(family="turbo")
    response = client.post("/vision/generate", json={"prompt": "a red fox", **change})
    assert response.status_code == 422
    assert response.json()["error"]["param"] == next(iter(change))


def test_the_other_apis_get_the_defaults_too(app_with):
    import json

    client = app_with(family="lcm")
    openai_made = client.post("/v1/images/generations", json={"prompt": "fox", "seed": 1})
    assert openai_made.status_code == 200
    a1111 = client.post("/sdapi/v1/txt2img", json={"prompt": "fox", "seed": 1}).json()
    assert a1111["parameters"]["steps"] == 4 and a1111["parameters"]["cfg_scale"] == 0.0
    info = json.loads(a1111["info"])
    assert (info["steps"], info["width"], info["sampler_name"]) == (4, 256, "LCMScheduler")


def test_examples_before_a_model_is_ready_leave_steps_out(tmp_path):
    with running_client(create_app(make_settings(tmp_path))) as client:
        assert client.get("/health").json()["defaults"] is None
        for example in client.get("/vision/examples").json():
            assert "num_inference_steps" not in example["request"]


# -- the generate_image tool against the real server ---------------------------------------------


@contextmanager
def served(app: Any) -> Iterator[str]:
    """``app`` under uvicorn on 127.0.0.1 (a real socket), in a thread."""
    import socket

    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_the_tool_sends_only_what_was_asked_so_the_model_defaults_apply(
    tmp_path, tiny_pipeline, monkeypatch
):
    from thau.tools.generate_image import GenerateImageArgs, generate
    from thau.tools.registry import ToolContext

    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    lcm = with_scheduler(tiny_pipeline, "LCMScheduler")
    with served(create_app(make_settings(tmp_path), lcm)) as url:
        context = ToolContext(data_dir=tmp_path / "data", vision_url=url)
        result = generate(GenerateImageArgs(prompt="a red fox", seed=5), context)
        meta = result["metadata"]
        assert (meta["num_inference_steps"], meta["guidance_scale"]) == (4, 0.0)
        assert (result["width"], result["height"]) == (256, 256)
        assert Path(result["path"]).is_file() and result["seed"] == 5

        asked = GenerateImageArgs(prompt="a red fox", width=384, num_inference_steps=2)
        meta = generate(asked, context)["metadata"]
        assert (meta["num_inference_steps"], meta["width"], meta["height"]) == (2, 384, 256)
