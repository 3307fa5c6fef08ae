"""The OpenAI Images API and the AUTOMATIC1111 txt2img API, in process."""

from __future__ import annotations

import base64
import json

import numpy as np
from vision_support import png_pixels


def test_openai_b64_and_url_formats(app_with):
    client = app_with()
    common = {"prompt": "a red fox", "size": "256x256", "num_inference_steps": 10, "seed": 11}
    b64 = client.post(
        "/v1/images/generations",
        json={**common, "response_format": "b64_json", "model": "dall-e-3", "quality": "hd"},
    )
    assert b64.status_code == 200
    body = b64.json()
    assert isinstance(body["created"], int) and len(body["data"]) == 1
    pixels = png_pixels(base64.b64decode(body["data"][0]["b64_json"]))
    assert pixels.shape == (256, 256, 3)

    url = client.post("/v1/images/generations", json=common).json()["data"][0]["url"]
    assert url.startswith("http://testserver/vision/image/")
    assert np.array_equal(png_pixels(client.get(url).content), pixels)


def test_openai_n_images_use_consecutive_seeds(app_with, tmp_path):
    client = app_with()
    body = client.post(
        "/v1/images/generations",
        json={
            "prompt": "two foxes",
            "n": 2,
            "size": "256x264",
            "num_inference_steps": 10,
            "seed": 100,
        },
    ).json()
    names = [item["url"].rsplit("/", 1)[1] for item in body["data"]]
    seeds = [
        json.loads((tmp_path / "images" / name).with_suffix(".json").read_text())["seed"]
        for name in names
    ]
    assert seeds == [100, 101] and len(set(names)) == 2
    assert png_pixels(client.get(body["data"][0]["url"]).content).shape == (264, 256, 3)


def test_openai_validation(app_with):
    client = app_with(max_images=2)
    for change, param in (
        ({"size": "1792x1024"}, "size"),
        ({"size": "big"}, "size"),
        ({"size": "250x256"}, "size"),
        ({"n": 3}, "n"),
        ({"n": 0}, "n"),
        ({"response_format": "jpeg"}, "response_format"),
        ({"output_format": "webp"}, "output_format"),
        ({"prompt": ""}, "prompt"),
    ):
        response = client.post("/v1/images/generations", json={"prompt": "fox", **change})
        assert response.status_code == 422, change
        error = response.json()["error"]
        assert error["param"] == param and param in error["message"]


def test_sdapi_txt2img_matches_the_native_api(app_with):
    client = app_with()
    response = client.post(
        "/sdapi/v1/txt2img",
        json={
            "prompt": "a red fox",
            "negative_prompt": "blurry",
            "steps": 10,
            "cfg_scale": 6,
            "width": 256,
            "height": 256,
            "seed": 42,
            "sampler_name": "Euler a",
            "restore_faces": False,
            "styles": [],
        },
    )
    assert response.status_code == 200
    body = response.json()
    info = json.loads(body["info"])
    assert info["seed"] == 42 and info["all_seeds"] == [42]
    assert info["sampler_name"] == "euler_a"
    assert body["parameters"]["steps"] == 10
    a1111 = png_pixels(base64.b64decode(body["images"][0]))

    native = client.post(
        "/vision/generate",
        json={
            "prompt": "a red fox",
            "negative_prompt": "blurry",
            "num_inference_steps": 10,
            "guidance_scale": 6,
            "width": 256,
            "height": 256,
            "seed": 42,
            "scheduler": "euler_a",
        },
    ).json()
    assert np.array_equal(png_pixels(client.get(native["image_url"]).content), a1111)


def test_sdapi_batches_random_seed_and_karras(app_with):
    client = app_with()
    body = client.post(
        "/sdapi/v1/txt2img",
        json={
            "prompt": "fox",
            "steps": 10,
            "width": 256,
            "height": 256,
            "seed": -1,
            "batch_size": 2,
            "sampler_name": "DPM++ 2M",
            "scheduler": "Karras",
        },
    ).json()
    info = json.loads(body["info"])
    assert len(body["images"]) == 2
    first = info["all_seeds"][0]
    assert 0 <= first < 2**32 and info["all_seeds"] == [first, (first + 1) % 2**32]
    assert info["sampler_name"] == "dpmpp_2m_karras"
    names = [sampler["name"] for sampler in client.get("/sdapi/v1/samplers").json()]
    assert "Euler a" in names and "DPM++ 2M Karras" in names


def test_sdapi_validation(app_with):
    client = app_with(max_images=2)
    for change, param in (
        ({"sampler_name": "DPM adaptive"}, "sampler_name"),
        ({"enable_hr": True}, "enable_hr"),
        ({"batch_size": 2, "n_iter": 2}, "batch_size"),
        ({"steps": 0}, "steps"),
        ({"steps": 101}, "steps"),
        ({"cfg_scale": -1}, "cfg_scale"),
        ({"cfg_scale": 30}, "cfg_scale"),
        ({"width": 100}, "width"),
        ({"seed": -2}, "seed"),
    ):
        response = client.post("/sdapi/v1/txt2img", json={"prompt": "fox", **change})
        assert response.status_code == 422, change
        assert response.json()["error"]["param"] == param
