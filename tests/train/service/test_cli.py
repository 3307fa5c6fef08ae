"""``thau-train`` init, add, import-data, status, train, version, start and serve."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.train.service.conftest import QualityTrainer, good, quality_evaluate, wrong
from thau.train import service as service_module
from thau.train.cli import main
from thau.train.service import ServiceConfig, ServicePaths, Steps, TrainingService

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def initialised(dataset_dir: Path, capsys: pytest.CaptureFixture) -> ServicePaths:
    argv = ["init", "--size", "360m", "--min-new-examples", "2", "--dataset", str(dataset_dir)]
    argv += ["--base-gguf", "/models/smollm2-360m.gguf"]
    assert main([*argv, "--no-ollama", "--train-arg", "epochs=3"]) == 0
    assert "smollm2-360m" in capsys.readouterr().out
    return ServicePaths.default()


def test_init_writes_the_config_once(initialised: ServicePaths, capsys) -> None:
    config = ServiceConfig.load(initialised.config)
    assert (config.size, config.preset, config.min_new_examples) == ("360m", "smollm2-360m", 2)
    assert config.train_overrides == {"epochs": "3"} and config.ollama is False
    assert config.base_gguf == "/models/smollm2-360m.gguf"
    assert main(["init", "--size", "1.5b"]) == 1
    assert "--force" in capsys.readouterr().err
    assert main(["init", "--size", "1.5b", "--force"]) == 0
    assert ServiceConfig.load(initialised.config).preset == "qwen2.5-1.5b"


def test_init_chooses_what_the_first_version_starts_from(tmp_path: Path, capsys) -> None:
    from thau.chat.backends.embedded import default_adapter_path

    shipped = default_adapter_path()
    assert shipped is not None  # the package ships the 135m adapter
    assert main(["init", "--no-ollama"]) == 0
    assert ServiceConfig.load(ServicePaths.default().config).start_adapter == str(shipped)
    assert main(["init", "--force", "--size", "360m"]) == 0  # no shipped adapter for 360m
    assert ServiceConfig.load(ServicePaths.default().config).start_adapter is None

    mine = tmp_path / "mine.gguf"
    assert main(["init", "--force", "--start-adapter", str(mine)]) == 0
    assert ServiceConfig.load(ServicePaths.default().config).start_adapter == str(mine)
    assert f"starting from {mine}" in capsys.readouterr().out
    assert main(["init", "--force", "--from-base"]) == 0
    assert ServiceConfig.load(ServicePaths.default().config).start_adapter is None


def test_commands_before_init_say_what_to_do(capsys) -> None:
    assert main(["status"]) == 1
    assert "thau-train init" in capsys.readouterr().err


def test_add_import_status(initialised: ServicePaths, tmp_path: Path, capsys) -> None:
    assert main(["add", "What is 2+2?", "4", "--metadata", '{"by": "me"}']) == 0
    assert main(["add", "What is 2+2?", "4"]) == 0
    out = capsys.readouterr().out
    assert "added: example 1; 1 pending" in out and "already queued: example 1" in out

    data = tmp_path / "in.jsonl"
    lines = [
        json.dumps(good(1)),
        json.dumps({"messages": [{"role": "user", "content": "hi"}]}),
        "{oops",
        json.dumps(
            {"messages": [{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}]}
        ),
        json.dumps({"instruction": "Say hi", "output": "hi", "metadata": {"from": "file"}}),
    ]
    data.write_text("\n".join(lines) + "\n", "utf-8")
    assert main(["import-data", str(data)]) == 1
    err = capsys.readouterr().err
    assert f"{data}:2: the last message must be the assistant's" in err
    assert f"{data}:3: not JSON" in err and f"{data}:4: the last message" in err
    assert "3 invalid lines; nothing imported" in err
    assert main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["examples"]["pending"] == 1

    assert main(["import-data", str(data), "--skip-invalid"]) == 0
    assert "imported 2, 0 duplicates, 3 invalid lines skipped" in capsys.readouterr().out
    assert main(["import-data", str(data), "--skip-invalid"]) == 0
    assert "imported 0, 2 duplicates" in capsys.readouterr().out
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "pending" in out and '"pending": 3' in out and "smollm2-360m" in out


def test_train_and_version(initialised: ServicePaths, monkeypatch, capsys) -> None:
    trainer = QualityTrainer()
    steps = Steps(train=trainer, evaluate=quality_evaluate)
    monkeypatch.setattr(service_module, "default_steps", lambda config: steps)
    assert main(["version"]) == 0
    assert "no version yet" in capsys.readouterr().out

    assert main(["add", *good(1).values()]) == 0
    capsys.readouterr()
    assert main(["train", "--threshold", "--json"]) == 0  # 1 pending, 2 needed
    assert json.loads(capsys.readouterr().out)["status"] == "waiting"
    assert main(["train", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "promoted" and result["version"] == "thau-360m-v1"
    assert len(trainer.rows[0]) == 1 + 4  # one new example, replay_ratio 4
    assert trainer.jobs[0].overrides == {"epochs": "3"}

    assert main(["add", *wrong(1).values()]) == 0
    assert main(["add", *wrong(2).values()]) == 0
    capsys.readouterr()
    assert main(["train", "--threshold"]) == 0
    out = capsys.readouterr().out
    assert "refused" in out and "decision_accuracy" in out
    assert main(["status", "--json"]) == 0  # another process: the cycle comes from the history
    assert json.loads(capsys.readouterr().out)["last_cycle"]["status"] == "refused"
    assert main(["version"]) == 0
    assert capsys.readouterr().out.startswith("* thau-360m-v1")
    assert main(["version", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["current"]["name"] == "thau-360m-v1"


def test_serve_refuses_a_public_bind_without_a_token(initialised: ServicePaths, capsys) -> None:
    assert main(["serve", "--host", "0.0.0.0"]) == 1
    assert "THAU_TRAIN_API_KEY" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_answers_over_http(initialised: ServicePaths) -> None:
    port = _free_port()
    env = {**os.environ, "THAU_TRAIN_API_KEY": "tok"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "thau.train", "serve", "--port", str(port), "--no-scheduler"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 30
        while True:
            try:
                status = httpx.get(f"{url}/status").json()
                break
            except httpx.TransportError:
                assert time.time() < deadline and proc.poll() is None
                time.sleep(0.2)
        assert status["size"] == "360m" and status["scheduler"]["running"] is False
        assert httpx.post(f"{url}/training/add", json=good(1)).status_code == 401
        r = httpx.post(f"{url}/training/add", json=good(1), headers={"Authorization": "Bearer tok"})
        assert r.status_code == 201
    finally:
        proc.terminate()
        proc.wait(10)
    assert TrainingService.open().store.counts()["pending"] == 1


def test_start_runs_the_scheduler_until_sigterm(initialised: ServicePaths) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "thau.train", "start", "--interval-hours", "1"],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert "a cycle every 1 h" in proc.stderr.readline()
    proc.terminate()
    assert proc.wait(10) == 0
