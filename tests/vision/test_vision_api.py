"""The native /vision API against the tiny model loaded from its folder."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from vision_support import SMALL, png_pixels

NAME = re.compile(r"^\d{8}_\d{6}_[a-z0-9-]+(-\d+)?\.png$")


def generate(client, **fields):
    return client.post("/vision/generate", json={"prompt": "a red fox", **SMALL, **fields})


def test_health_reports_the_loaded_model(client, tiny_model_dir):
    body = client.get("/health").json()
    assert body["ready"] is True and body["status"] == "ok"
    assert body["model"] == str(tiny_model_dir)
    assert body["device"] == "cpu" and body["dtype"] == "float32"


def test_generate_returns_a_stored_png_with_its_parameters(client, tmp_path):
    response = generate(client, seed=1234, negative_prompt="blurry", guidance_scale=5.0)
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True and body["seed"] == 1234
    name = body["image_url"].removeprefix("/vision/image/")
    assert body["image_url"] == f"/vision/image/{name}" and NAME.match(name)
    meta = body["metadata"]
    assert meta["prompt"] == "a red fox" and meta["negative_prompt"] == "blurry"
    assert (meta["width"], meta["height"], meta["num_inference_steps"]) == (256, 256, 10)
    assert meta["guidance_scale"] == 5.0 and meta["image"] == name

    image = client.get(body["image_url"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert png_pixels(image.content).shape == (256, 256, 3)

    stored = tmp_path / "images" / name
    assert stored.read_bytes() == image.content
    sidecar = json.loads(stored.with_suffix(".json").read_text())
    assert sidecar == meta
    from PIL import Image

    with Image.open(stored) as png:
        assert json.loads(png.text["thau"])["seed"] == 1234
        assert "Seed: 1234" in png.text["parameters"]
        assert png.text["parameters"].startswith("a red fox\nNegative prompt: blurry\n")


def test_same_seed_and_parameters_give_the_same_image(client):
    first = generate(client, seed=7).json()
    second = generate(client, seed=7).json()
    other = generate(client, seed=8).json()
    assert first["image_url"] != second["image_url"]  # two files...
    a, b, c = (png_pixels(client.get(r["image_url"]).content) for r in (first, second, other))
    assert np.array_equal(a, b)  # ...with the same pixels
    assert not np.array_equal(a, c)
    assert a.std() > 0  # not a blank image


def test_without_seed_a_random_one_is_returned_and_reproduces_the_image(client):
    seeds, images = [], []
    for _ in range(2):
        body = generate(client).json()
        seeds.append(body["seed"])
        images.append(png_pixels(client.get(body["image_url"]).content))
    assert seeds[0] != seeds[1]
    assert all(0 <= seed < 2**32 for seed in seeds)
    again = generate(client, seed=seeds[0]).json()
    assert np.array_equal(images[0], png_pixels(client.get(again["image_url"]).content))


@pytest.mark.parametrize(
    "scheduler",
    [
        "ddim",
        "pndm",
        "euler",
        "euler_a",
        "heun",
        "dpmpp_2m",
        "dpmpp_2m_karras",
        "unipc",
        "lcm",
        "tcd",
    ],
)
def test_every_scheduler_generates(app_with, scheduler):
    client = app_with()
    body = generate(client, scheduler=scheduler, seed=3).json()
    assert body["metadata"]["scheduler"] == scheduler
    assert png_pixels(client.get(body["image_url"]).content).std() > 0


def test_default_scheduler_is_the_models_own_and_can_be_overridden(app_with):
    client = app_with()
    default = generate(client, seed=5).json()
    assert default["metadata"]["scheduler"] == "PNDMScheduler"  # the model's own
    euler = generate(client, seed=5, scheduler="euler").json()
    again = generate(client, seed=5).json()  # a request's scheduler does not stick
    assert again["metadata"]["scheduler"] == "PNDMScheduler"
    default_pixels = png_pixels(client.get(default["image_url"]).content)
    assert not np.array_equal(default_pixels, png_pixels(client.get(euler["image_url"]).content))
    assert np.array_equal(default_pixels, png_pixels(client.get(again["image_url"]).content))


INVALID = [
    ({"prompt": None}, "prompt"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": "x" * 2001}, "prompt"),
    ({"negative_prompt": "x" * 2001}, "negative_prompt"),
    ({"num_inference_steps": 0}, "num_inference_steps"),
    ({"num_inference_steps": 101}, "num_inference_steps"),
    ({"num_inference_steps": "many"}, "num_inference_steps"),
    ({"num_inference_steps": 4.5}, "num_inference_steps"),
    ({"guidance_scale": -0.5}, "guidance_scale"),
    ({"guidance_scale": 20.5}, "guidance_scale"),
    ({"width": 248}, "width"),
    ({"width": 1032}, "width"),
    ({"width": 300}, "width"),
    ({"height": 200}, "height"),
    ({"height": 2048}, "height"),
    ({"height": 513}, "height"),
    ({"seed": -1}, "seed"),
    ({"seed": 2**32}, "seed"),
    ({"scheduler": "warp_drive"}, "scheduler"),
    ({"steps": 20}, "steps"),
]


@pytest.mark.parametrize(("change", "field"), INVALID)
def test_invalid_values_get_422_with_a_readable_message(client, change, field):
    payload = {"prompt": "a red fox", **SMALL, **change}
    if change.get("prompt", "") is None:
        del payload["prompt"]
    response = client.post("/vision/generate", json=payload)
    assert response.status_code == 422
    body = response.json()
    assert body["success"] is False
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["param"] == field
    assert body["error"]["message"].startswith(f"{field}: ")
    assert isinstance(body["detail"], list) and body["detail"]


def test_messages_name_the_limit_and_the_value(client):
    message = generate(client, width=300).json()["error"]["message"]
    assert message == "width: Input should be a multiple of 8 (got 300)"
    message = generate(client, num_inference_steps=101).json()["error"]["message"]
    assert message == "num_inference_steps: Input should be less than or equal to 100 (got 101)"


def test_a_body_that_is_not_json_gets_422(client):
    response = client.post(
        "/vision/generate", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["success"] is False


def test_examples_are_valid_requests_with_the_models_defaults(client):
    from thau.vision.schemas import GenerateRequest

    examples = client.get("/vision/examples").json()
    assert len(examples) >= 3
    for example in examples:
        assert example["title"]
        GenerateRequest.model_validate(example["request"])
        assert example["request"]["num_inference_steps"] == 30  # a standard model's
        assert example["request"]["guidance_scale"] == 7.5
    assert any("scheduler" in example["request"] for example in examples)


def test_stats_count_generations(client):
    before = client.get("/vision/stats").json()
    assert before["images_generated"] == 0 and before["average_generation_s"] is None
    generate(client, seed=1)
    generate(client, seed=2)
    after = client.get("/vision/stats").json()
    assert after["images_generated"] == 2 and after["images_on_disk"] == 2
    assert after["average_generation_s"] > 0 and after["queue_depth"] == 0
    assert after["ready"] is True and after["failures"] == 0


def test_metrics_are_prometheus_text(client):
    generate(client, seed=1)
    client.post("/vision/generate", json={"prompt": ""})
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert "thau_vision_images_generated_total 1.0" in text
    assert "thau_vision_ready 1.0" in text
    assert 'route="/vision/generate",status="200"' in text
    assert 'route="/vision/generate",status="422"' in text
    assert "thau_vision_generation_seconds_count 1.0" in text


def test_openapi_lists_every_route(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/vision/generate",
        "/vision/image/{name}",
        "/vision/examples",
        "/vision/stats",
        "/health",
        "/metrics",
        "/v1/images/generations",
        "/sdapi/v1/txt2img",
    ):
        assert path in paths
