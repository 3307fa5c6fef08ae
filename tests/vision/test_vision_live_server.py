"""The real thing: ``python -m thau.vision serve`` under uvicorn on 127.0.0.1."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from vision_support import SMALL, png_pixels

KEY = "live-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
ROOT = Path(__file__).absolute().parents[2]  # the repository root


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "thau.vision", "serve", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_until(base: str, process: subprocess.Popen, ready: bool, timeout_s: float = 240) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited:\n{process.stdout.read()}")
        try:
            health = httpx.get(f"{base}/health", timeout=5).json()
            if health["model_status"] != "loading" and (health["ready"] or not ready):
                return health
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError("the server did not come up")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def live(tmp_path_factory, tiny_model_dir) -> Iterator[tuple[str, Path]]:
    """A server with the tiny model, a key from the environment and a queue of 2."""
    data = tmp_path_factory.mktemp("live-data")
    port = free_port()
    args = ["--port", str(port), "--model", str(tiny_model_dir), "--queue-size", "2"]
    env = {
        "THAU_DATA_DIR": str(data),
        "THAU_CONFIG_DIR": str(data / "config"),
        "THAU_VISION_API_KEY": KEY,
        "THAU_VISION_RATE_LIMIT": "0",
        "THAU_VISION_THREADS": "1",
        "THAU_VISION_LOG_LEVEL": "warning",
        "HF_HUB_OFFLINE": "1",
    }
    process = start_server(args, env)
    base = f"http://127.0.0.1:{port}"
    try:
        health = wait_until(base, process, ready=True)
        assert health["ready"] is True, health
        yield base, data / "images"
    finally:
        stop(process)


def test_twenty_parallel_requests_each_succeed_or_get_503(live):
    base, images = live
    barrier = threading.Barrier(20)

    def one(index: int) -> httpx.Response:
        with httpx.Client(base_url=base, headers=AUTH, timeout=120) as client:
            barrier.wait()
            return client.post(
                "/vision/generate", json={"prompt": f"fox number {index}", **SMALL, "seed": index}
            )

    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(one, range(20)))
    statuses = [response.status_code for response in responses]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= 3 and statuses.count(503) >= 1, statuses
    for response in responses:
        if response.status_code == 503:
            assert int(response.headers["retry-after"]) >= 1
            assert response.json()["error"]["type"] == "queue_full"
            continue
        body = response.json()
        png = httpx.get(base + body["image_url"], headers=AUTH, timeout=30)
        assert png_pixels(png.content).shape == (256, 256, 3)
        assert (images / body["image_url"].rsplit("/", 1)[1]).read_bytes() == png.content
    stats = httpx.get(f"{base}/vision/stats", headers=AUTH).json()
    assert stats["failures"] == 0 and stats["queue_depth"] == 0
    assert stats["images_generated"] == statuses.count(200)


def test_the_openai_client_library_works_against_the_server(live):
    base, _ = live
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0)
    extra = {"num_inference_steps": 10, "seed": 5}
    result = client.images.generate(
        model="tiny",
        prompt="a red fox",
        n=1,
        size="256x256",
        response_format="b64_json",
        extra_body=extra,
    )
    pixels = png_pixels(base64.b64decode(result.data[0].b64_json))
    assert pixels.shape == (256, 256, 3)
    result = client.images.generate(
        prompt="a red fox", size="256x256", response_format="url", extra_body=extra
    )
    url = result.data[0].url
    assert url.startswith(f"{base}/vision/image/")
    assert (png_pixels(httpx.get(url, headers=AUTH).content) == pixels).all()

    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client.images.generate(prompt="a red fox", size="1792x1024")
    assert "size" in str(caught.value)
    wrong = openai.OpenAI(base_url=f"{base}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.images.generate(prompt="a red fox", size="256x256")


def test_metrics_over_http(live):
    base, _ = live
    text = httpx.get(f"{base}/metrics", headers=AUTH).text
    assert "thau_vision_ready 1.0" in text
    assert "thau_vision_requests_total" in text


def test_serve_without_a_model_still_starts(tmp_path):
    port = free_port()
    process = start_server(
        ["--port", str(port)],
        {"THAU_DATA_DIR": str(tmp_path), "THAU_CONFIG_DIR": str(tmp_path / "config")},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        health = wait_until(base, process, ready=False)
        assert health["ready"] is False and health["model_status"] == "not_configured"
        assert "stabilityai/sd-turbo" in health["how_to_fix"]
        response = httpx.post(f"{base}/vision/generate", json={"prompt": "fox"})
        assert response.status_code == 503
        assert "thau-vision serve --model" in response.json()["error"]["message"]
    finally:
        stop(process)
    said = process.stdout.read()
    assert "thau-vision serve --model stabilityai/sd-turbo" in said  # which model for a CPU
    assert "hf download stabilityai/sd-turbo" in said  # and how to fetch it


def test_cli_rejects_bad_settings_with_a_message(tmp_path):
    env = {**os.environ, "THAU_CONFIG_DIR": str(tmp_path), "THAU_DATA_DIR": str(tmp_path)}
    command = [sys.executable, "-m", "thau.vision", "serve"]
    done = subprocess.run(
        [*command, "--port", "0"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "port" in done.stderr and "THAU_VISION_" in done.stderr
    done = subprocess.run(
        [*command, "--help"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "--model" in done.stdout and "--scheduler" in done.stdout
