"""SIGKILL during a real training subprocess: nothing is lost, stuck or half-visible."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.train.service.conftest import SYSTEM, QualityTrainer, good, quality_evaluate
from thau.train.service import (
    ProcessLock,
    ServiceConfig,
    ServicePaths,
    Steps,
    TrainingService,
    pid_alive,
    subprocess_train,
)
from thau.train_queue import normalize

ROOT = Path(__file__).resolve().parents[3]


def wait_for(check, timeout: float, what: str, alive: subprocess.Popen | None = None):
    """Poll ``check`` until it is true; fail early when the ``alive`` process has exited."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if alive is not None and alive.poll() is not None:
            output = alive.stdout.read() if alive.stdout else ""
            raise AssertionError(f"exited ({alive.returncode}) waiting for {what}: {output}")
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def tiny_config(dataset_dir: Path, tiny_base: Path, **overrides: object) -> ServiceConfig:
    train = {"base": str(tiny_base), "batch_size": 2, "max_length": 1024, "lr": 0.01}
    return ServiceConfig.for_size(
        "135m",
        min_new_examples=2,
        replay_ratio=1.0,
        valid_size=2,
        dataset_dir=str(dataset_dir),
        ollama=False,
        train_overrides={**train, **overrides},
    )


def test_a_real_cycle_on_a_tiny_model(dataset_dir: Path, tiny_base: Path) -> None:
    """The default train step runs `python -m train run` on the tiny base."""
    seen = {}

    def evaluate(adapter: Path | None) -> dict:
        if adapter is None:
            return {"decision_accuracy": 0.25}
        report = json.loads((adapter.parent / "report.json").read_text("utf-8"))
        seen["report"] = report
        losses = [e["loss"] for e in report["losses"]["train_epochs"]]
        return {"decision_accuracy": 1.0 if losses[-1] < losses[0] else 0.0}

    config = tiny_config(dataset_dir, tiny_base, epochs=2)
    service = TrainingService(
        config, steps=Steps(train=subprocess_train, evaluate=evaluate), system_prompt=SYSTEM
    )
    service.store.add_many(normalize(good(i)) for i in range(2))
    result = service.run_cycle()
    assert result.status == "promoted", result.reason
    report = seen["report"]
    assert report["status"] == "complete" and report["data"]["train_examples"] == 4
    assert report["settings"]["base"] == str(tiny_base) and report["epochs_done"] == 2
    adapter = service.version_folder(service.current_version()) / "adapter"
    assert (adapter / "adapter_model.safetensors").stat().st_size > 0


def test_sigkill_mid_training_loses_nothing(dataset_dir: Path, tiny_base: Path) -> None:
    paths = ServicePaths.default()
    # v1 exists already (made quickly with the test trainer)
    config = tiny_config(dataset_dir, tiny_base, epochs=100_000)
    first = TrainingService(
        config, paths, Steps(train=QualityTrainer(), evaluate=quality_evaluate), SYSTEM
    )
    first.store.add_many(normalize(good(i)) for i in range(2))
    made = first.run_cycle()
    assert made.version == "thau-135m-v1"
    first.store.add_many(normalize(good(i)) for i in range(10, 13))
    first.close()
    config.save(paths.config)
    state_before = paths.state.read_bytes()

    # `thau-train train` in its own process, with the real trainer as its subprocess
    service = subprocess.Popen(
        [sys.executable, "-m", "thau.train", "train"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    trainer_pid = None
    try:
        run = wait_for(
            lambda: (
                paths.active_run.is_file()
                and json.loads(paths.active_run.read_text()).get("trainer_pid")
                and json.loads(paths.active_run.read_text())
            ),
            60,
            "the trainer to start",
            service,
        )
        trainer_pid = run["trainer_pid"]
        run_dir = paths.runs / run["run_id"] / "run"
        # training has begun once the trainer wrote its settings and reported a step
        settings = run_dir / "settings.json"
        wait_for(settings.is_file, 120, "the trainer's settings", service)
        log = paths.runs / run["run_id"] / "train.log"
        wait_for(lambda: "training" in log.read_text("utf-8", "replace"), 120, "the loop", service)
        assert pid_alive(trainer_pid) and ProcessLock(paths.lock).holder() == service.pid
        reopened = TrainingService.open(paths, steps=Steps(QualityTrainer(), quality_evaluate))
        assert reopened.store.counts()["training"] == 3  # recovery waits for a live holder
        reopened.close()

        os.kill(service.pid, signal.SIGKILL)
        service.wait()
        # the trainer gets SIGKILL too, from the kernel (PR_SET_PDEATHSIG)
        wait_for(lambda: not pid_alive(trainer_pid), 10, "the trainer to die")
    finally:
        if service.poll() is None:
            service.kill()
            service.wait()
        if trainer_pid and pid_alive(trainer_pid):
            os.kill(trainer_pid, signal.SIGKILL)

    # what the kill left: examples marked training, a lock file naming a dead PID
    assert paths.lock.read_text().strip() == str(service.pid)
    assert ProcessLock(paths.lock).holder() is None
    assert paths.state.read_bytes() == state_before

    restarted = TrainingService(
        config, paths, Steps(train=QualityTrainer(), evaluate=quality_evaluate), SYSTEM
    )
    assert restarted.store.counts() == {"pending": 3, "training": 0, "trained": 2, "rejected": 0}
    assert restarted.current_version()["name"] == "thau-135m-v1"
    assert [p.name for p in paths.versions.iterdir()] == [made.run_id]
    assert list(paths.runs.iterdir()) == [] and not paths.active_run.exists()
    assert restarted.history()[-1]["status"] == "recovered"
    result = restarted.run_cycle()  # the lock is taken over; the counter goes on
    assert result.status == "promoted" and result.version == "thau-135m-v2"
    assert restarted.store.counts()["trained"] == 5
