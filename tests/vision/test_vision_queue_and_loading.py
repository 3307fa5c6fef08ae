"""The generation queue, model loading (folder, single file, failures) and not-ready answers."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from ldm_checkpoint import save_ldm_checkpoint
from vision_support import SMALL, make_settings, png_pixels, running_client

from thau.vision import create_app
from thau.vision.errors import QueueFull
from thau.vision.loading import ModelLoadError, load_pipeline
from thau.vision.queue import GenerationQueue


def test_queue_runs_one_job_at_a_time_and_refuses_past_capacity():
    running, overlaps, threads = [0], [], set()

    def job(value: int) -> int:
        running[0] += 1
        overlaps.append(running[0])
        threads.add(threading.get_ident())
        time.sleep(0.05)
        running[0] -= 1
        return value * 2

    async def scenario():
        queue = GenerationQueue(capacity=2)
        tasks = [asyncio.create_task(queue.submit(lambda v=v: job(v))) for v in range(3)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFull) as caught:
            await queue.submit(lambda: job(99))
        assert caught.value.retry_after >= 1
        assert queue.depth == 2
        results = await asyncio.gather(*tasks)
        await asyncio.sleep(0.01)  # the done-callbacks hand the places back
        assert queue.depth == 0 and not queue.running
        assert await queue.submit(lambda: job(5)) == 10  # room again
        queue.shutdown()
        return results

    assert asyncio.run(scenario()) == [0, 2, 4]
    assert max(overlaps) == 1  # never two jobs at once
    assert len(threads) == 1 and threading.get_ident() not in threads  # off the event loop


def test_single_file_checkpoint_loads_and_draws_like_the_folder(
    tmp_path, tiny_model_dir, tiny_pipeline
):
    checkpoint = save_ldm_checkpoint(tiny_pipeline, tmp_path / "tiny.safetensors")
    settings = make_settings(tmp_path, model=str(checkpoint), pipeline_config=str(tiny_model_dir))
    payload = {"prompt": "a red fox", **SMALL, "seed": 9}
    with running_client(create_app(settings)) as client:
        assert client.get("/health").json()["ready"] is True
        single = client.post("/vision/generate", json=payload).json()
        single_pixels = png_pixels(client.get(single["image_url"]).content)
    settings = make_settings(tmp_path, model=str(tiny_model_dir))
    with running_client(create_app(settings)) as client:
        folder = client.post("/vision/generate", json=payload).json()
        folder_pixels = png_pixels(client.get(folder["image_url"]).content)
    assert single["metadata"]["model"] == str(checkpoint)
    assert np.array_equal(single_pixels, folder_pixels)


def test_single_file_without_configs_offline_says_what_to_do(tmp_path, tiny_pipeline):
    checkpoint = save_ldm_checkpoint(tiny_pipeline, tmp_path / "tiny.safetensors")
    with pytest.raises(ModelLoadError, match="--pipeline-config"):
        load_pipeline(make_settings(tmp_path, model=str(checkpoint)))


def test_scheduler_setting_applies_at_load(tmp_path, tiny_model_dir):
    loaded = load_pipeline(make_settings(tmp_path, model=str(tiny_model_dir), scheduler="ddim"))
    assert type(loaded.pipeline.scheduler).__name__ == "DDIMScheduler"


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        (None, "no model is configured"),
        ("/nowhere/model.safetensors", "does not exist"),
        ("{tmp}/empty", "no model_index.json"),
        ("{tmp}/notes.txt", "not a .safetensors or .ckpt"),
        ("nobody/no-such-model", "Hugging Face cache"),
    ],
)
def test_server_starts_without_a_usable_model(tmp_path, model, reason):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("hello")
    if model:
        model = model.format(tmp=tmp_path)
    with running_client(create_app(make_settings(tmp_path, model=model))) as client:
        health = client.get("/health")
        assert health.status_code == 200
        body = health.json()
        assert body["ready"] is False and body["status"] == "not_ready"
        assert body["model_status"] == ("not_configured" if model is None else "failed")
        assert reason in body["reason"]
        assert "THAU_VISION_MODEL" in body["how_to_fix"] and "--model" in body["how_to_fix"]
        for path, payload in (
            ("/vision/generate", {"prompt": "fox", **SMALL}),
            ("/v1/images/generations", {"prompt": "fox"}),
            ("/sdapi/v1/txt2img", {"prompt": "fox"}),
        ):
            response = client.post(path, json=payload)
            assert response.status_code == 503
            error = response.json()["error"]
            assert error["type"] == "model_not_ready"
            assert "--model" in error["message"] and "THAU_VISION_MODEL" in error["message"]
        assert "thau_vision_ready 0.0" in client.get("/metrics").text
        assert client.get("/vision/stats").json()["ready"] is False


def test_a_pipeline_error_is_a_500_with_a_message_and_is_counted(tmp_path):
    class BrokenPipeline:
        scheduler = object()

        def __call__(self, prompt, **kwargs):
            raise RuntimeError("tensor shapes do not match")

    app = create_app(make_settings(tmp_path), BrokenPipeline())
    with running_client(app) as client:
        response = client.post("/vision/generate", json={"prompt": "fox", **SMALL})
        assert response.status_code == 500
        error = response.json()["error"]
        assert error["type"] == "generation_failed"
        assert "tensor shapes do not match" in error["message"]
        assert client.get("/vision/stats").json()["failures"] == 1
