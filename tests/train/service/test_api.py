"""The REST API: every endpoint with good and bad input, auth, rate and size limits."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.train.service.conftest import good
from thau.errors import ConfigError
from thau.train.api import check_bind, create_app
from thau.train.service import Scheduler, TrainingService
from thau.train_queue import normalize

KEY = "s3cret-token"
AUTH = {"Authorization": f"Bearer {KEY}"}
CHAT = {
    "messages": [
        {"role": "user", "content": "Draw a cat"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"name": "generate_image", "arguments": {"prompt": "a cat"}}],
        },
    ],
    "metadata": {"source": "test"},
}


def client(service: TrainingService, **kwargs: Any) -> TestClient:
    return TestClient(create_app(service, **kwargs))


def test_add_batch_and_list_pending(service: TrainingService) -> None:
    with client(service) as c:
        r = c.post("/training/add", json=good(1))
        assert r.status_code == 201 and r.json() == {"id": 1, "duplicate": False, "pending": 1}
        assert c.post("/training/add", json=good(1)).json()["duplicate"] is True
        r = c.post("/training/batch", json={"examples": [CHAT, good(2), good(1)]})
        assert r.status_code == 201
        assert r.json() == {"added": 2, "duplicates": 1, "ids": [3, 4], "pending": 3}
        page = c.get("/examples/pending", params={"limit": 2, "offset": 1}).json()
        assert page["total"] == 3 and [e["id"] for e in page["examples"]] == [3, 4]
        assert page["examples"][0]["metadata"] == {"source": "test"}
        assert page["examples"][0]["messages"][1]["tool_calls"][0]["name"] == "generate_image"
        assert page["examples"][1]["instruction"] == "What is 2 plus 2?"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"instruction": "only a question"},
        {"instruction": "", "output": "x"},
        {"instruction": "q", "output": "a", "extra": 1},
        {"messages": [{"role": "user", "content": "hi"}]},
        {"messages": [{"role": "boss", "content": "hi"}, {"role": "assistant", "content": "x"}]},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "x"}]},
        {"messages": CHAT["messages"], "instruction": "q"},
        {"instruction": "q" * 20_001, "output": "a"},
    ],
)
def test_bad_examples_get_422_and_nothing_is_queued(service: TrainingService, body: dict) -> None:
    with client(service) as c:
        assert c.post("/training/add", json=body).status_code == 422
        batch = {"examples": [good(1), body]}
        r = c.post("/training/batch", json=batch)
        assert r.status_code == 422
    assert service.store.counts()["pending"] == 0


def test_batch_limits_and_pending_query_checks(service: TrainingService) -> None:
    with client(service) as c:
        assert c.post("/training/batch", json={"examples": []}).status_code == 422
        many = {"examples": [good(i) for i in range(501)]}
        assert c.post("/training/batch", json=many).status_code == 422
        assert c.get("/examples/pending", params={"limit": 0}).status_code == 422
        assert c.get("/examples/pending", params={"offset": -1}).status_code == 422
        broken = c.post(
            "/training/add", content=b"{not", headers={"content-type": "application/json"}
        )
        assert broken.status_code == 422


def test_status_stats_force_and_scheduler(service: TrainingService) -> None:
    scheduler = Scheduler(service, interval_s=3600)
    with client(service, scheduler=scheduler) as c:
        status = c.get("/status").json()
        assert status["current_version"] is None and status["pending"] == 0
        assert status["scheduler"] == {"running": False, "next_run": None, "busy": False}
        r = c.post("/training/force")
        assert r.status_code == 409 and "no pending" in r.json()["detail"]

        c.post("/training/batch", json={"examples": [good(1), good(2)]})
        r = c.post("/training/force")
        assert r.status_code == 202 and r.json()["ok"] is True
        scheduler.wait(30)
        status = c.get("/status").json()
        assert status["current_version"] == "thau-135m-v1" and status["pending"] == 0
        assert status["last_cycle"]["status"] == "promoted"
        stats = c.get("/stats").json()
        assert stats["examples"]["trained"] == 2
        assert [v["name"] for v in stats["versions"]] == ["thau-135m-v1"]
        assert stats["history"][-1]["status"] == "promoted"

        assert c.post("/service/start").json() == {"ok": True, "message": "scheduler started"}
        assert c.post("/service/start").json()["message"] == "already running"
        running = c.get("/status").json()["scheduler"]
        assert running["running"] is True and running["next_run"] > time.time() + 3000
        assert c.post("/service/stop").json() == {"ok": True, "message": "scheduler stopped"}
        assert c.post("/service/stop").json()["message"] == "was not running"
        assert c.get("/status").json()["scheduler"]["running"] is False


def test_force_is_refused_while_a_cycle_runs(service: TrainingService) -> None:
    import threading

    release = threading.Event()
    trainer = service.steps.train

    def slow(job):
        release.wait(30)
        return trainer(job)

    service.steps.train = slow
    scheduler = Scheduler(service, interval_s=3600)
    with client(service, scheduler=scheduler) as c:
        try:
            c.post("/training/add", json=good(1))
            assert c.post("/training/force").status_code == 202
            r = c.post("/training/force")
            assert r.status_code == 409 and "already running" in r.json()["detail"]
            deadline = time.time() + 10
            while (training := c.get("/status").json()["training"]) is None:
                assert time.time() < deadline, "the cycle never showed in /status"
                time.sleep(0.05)
            assert training["examples"] == 1 and training["pid"] == os.getpid()
        finally:
            release.set()
            scheduler.wait(30)
    assert service.current_version()["name"] == "thau-135m-v1"


def test_the_scheduler_trains_on_its_interval_when_enough_are_pending(
    service: TrainingService,
) -> None:
    scheduler = Scheduler(service, interval_s=0.2)
    service.store.add_many(normalize(good(i)) for i in range(2))
    scheduler.start()
    time.sleep(0.7)
    assert service.current_version() is None  # 2 pending, 3 needed: nothing trained
    service.store.add(normalize(good(9)))
    deadline = time.time() + 10
    while service.current_version() is None and time.time() < deadline:
        time.sleep(0.1)
    scheduler.stop()
    assert service.current_version()["name"] == "thau-135m-v1"
    assert service.history()[-1]["status"] == "promoted"


def test_writes_need_the_token_when_one_is_set(service: TrainingService) -> None:
    with client(service, api_key=KEY) as c:
        for path, body in [
            ("/training/add", good(1)),
            ("/training/batch", {"examples": [good(1)]}),
            ("/training/force", None),
            ("/service/start", None),
            ("/service/stop", None),
        ]:
            missing = c.post(path, json=body)
            wrong = c.post(path, json=body, headers={"Authorization": "Bearer nope"})
            scheme = c.post(path, json=body, headers={"Authorization": f"Basic {KEY}"})
            for r in (missing, wrong, scheme):
                assert r.status_code == 401, path
                assert r.headers["www-authenticate"] == "Bearer"
        assert service.store.counts()["pending"] == 0
        assert c.get("/status").status_code == 200  # reads stay open on localhost
        assert c.post("/training/add", json=good(1), headers=AUTH).status_code == 201
        assert c.post("/service/stop", headers=AUTH).status_code == 200


def test_binding_beyond_localhost_needs_a_token(service: TrainingService) -> None:
    for host in ("0.0.0.0", "192.168.1.20", "::", "example.org"):
        with pytest.raises(ConfigError, match="THAU_TRAIN_API_KEY"):
            create_app(service, host=host)
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        check_bind(host, None)
    with client(service, host="0.0.0.0", api_key=KEY) as c:
        assert c.post("/training/add", json=good(1)).status_code == 401
        assert c.post("/training/add", json=good(1), headers=AUTH).status_code == 201


def test_rate_limit_per_client(service: TrainingService) -> None:
    app = create_app(service, rate_limit_per_minute=3)
    with TestClient(app) as c, TestClient(app, client=("10.0.0.9", 5000)) as other:
        assert [c.get("/status").status_code for _ in range(3)] == [200, 200, 200]
        r = c.post("/training/add", json=good(1))
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert "3 requests per 60 s" in r.json()["detail"]
        assert other.get("/status").status_code == 200  # another client has its own budget
    assert service.store.counts()["pending"] == 0


def test_request_size_limit(service: TrainingService) -> None:
    with client(service, max_body_bytes=2048) as c:
        big = {"instruction": "q" * 3000, "output": "a"}
        r = c.post("/training/add", json=big)
        assert r.status_code == 413 and "2048 bytes" in r.json()["detail"]

        def chunks():
            yield b'{"instruction": "'
            yield b"q" * 4000
            yield b'", "output": "a"}'

        r = c.post("/training/add", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert c.post("/training/add", json=good(1)).status_code == 201
    assert service.store.counts()["pending"] == 1


def test_openapi_docs(service: TrainingService) -> None:
    with client(service) as c:
        assert c.get("/docs").status_code == 200
        paths = c.get("/openapi.json").json()["paths"]
        assert {
            "/status",
            "/stats",
            "/training/add",
            "/training/batch",
            "/training/force",
            "/examples/pending",
            "/service/start",
            "/service/stop",
        } <= set(paths)
        schema = paths["/training/add"]["post"]["requestBody"]["content"]["application/json"]
        assert schema["schema"]["$ref"].endswith("/ExampleIn")
