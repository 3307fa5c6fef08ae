"""The gate also runs the held-out cases: a candidate that gains on dev but loses on
holdout (it fits what it was picked on) is refused, and the current version stays."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.train.service.conftest import (
    BASE_METRICS,
    SYSTEM,
    QualityTrainer,
    good,
    quality_evaluate,
)
from tests.train.service.promoted import Holdout
from thau.resources import eval_dir
from thau.train import service_steps
from thau.train.service import ServiceConfig, Steps, TrainingService
from thau.train_queue import normalize


def service_with(config: ServiceConfig, holdout: Holdout | None) -> TrainingService:
    steps = Steps(train=QualityTrainer(), evaluate=quality_evaluate, evaluate_holdout=holdout)
    return TrainingService(config, steps=steps, system_prompt=SYSTEM)


def add_good(service: TrainingService, *numbers: int) -> None:
    service.store.add_many(normalize(good(i)) for i in numbers)


def test_dev_gains_holdout_losses_are_refused(config: ServiceConfig) -> None:
    holdout = Holdout(0.8)
    service = service_with(config, holdout)
    add_good(service, 1, 2, 3)
    first = service.run_cycle()
    assert first.status == "promoted" and first.version == "thau-135m-v1"
    assert first.holdout is not None and first.holdout["decision_accuracy"] == 0.8
    assert first.holdout_baseline["decision_accuracy"] == BASE_METRICS["decision_accuracy"]
    assert "held-out" in first.reason
    v1 = service.current_version()
    assert v1["holdout_metrics"]["decision_accuracy"] == 0.8
    folder = service.version_folder(v1)
    assert json.loads((folder / "holdout_report.json").read_text("utf-8"))["n"] == 20

    holdout.score = 0.7  # dev stays perfect, holdout falls past the margin
    add_good(service, 4, 5, 6)
    refused = service.run_cycle()
    assert refused.status == "refused" and refused.metrics["decision_accuracy"] == 1.0
    assert refused.reason.startswith("held-out evaluation regressed: decision_accuracy 0.8000")
    assert service.current_version()["name"] == "thau-135m-v1"
    assert all("held-out" in (r.note or "") for r in service.store.select("rejected"))
    assert service.history(1)[0]["holdout"]["decision_accuracy"] == 0.7

    holdout.score = 0.81
    add_good(service, 7, 8, 9)
    assert service.run_cycle().version == "thau-135m-v2"


def test_a_version_from_before_the_gate_is_measured_once(config: ServiceConfig) -> None:
    old = service_with(config, None)  # promoted without a held-out run
    add_good(old, 1, 2, 3)
    assert old.run_cycle().status == "promoted"
    assert old.current_version()["holdout_metrics"] is None
    old.close()

    holdout = Holdout(0.8)
    service = service_with(config, holdout)
    v1_adapter = service.version_folder(service.current_version()) / "adapter"
    add_good(service, 4, 5, 6)
    assert service.run_cycle().version == "thau-135m-v2"
    assert holdout.seen[-1] == v1_adapter  # v1 measured as the bar
    assert service.state()["holdout_baseline"]["version"] == 1


def test_without_a_holdout_step_the_gate_is_dev_only(config: ServiceConfig) -> None:
    service = service_with(config, None)
    add_good(service, 1, 2, 3)
    result = service.run_cycle()
    assert result.status == "promoted" and result.holdout is None
    assert result.reason == "no watched metric regressed past the margin"


def test_the_default_steps_evaluate_dev_then_holdout(
    config: ServiceConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    commands: list[list[str]] = []

    def run(cmd: list[str], what: str) -> str:
        commands.append(cmd)
        return json.dumps({"n": 1, "decision_accuracy": 1.0})

    monkeypatch.setattr(service_steps, "_run", run)
    steps = service_steps.default_steps(config)
    assert steps.evaluate_holdout is not None
    steps.evaluate(None)
    steps.evaluate_holdout(Path("/v/adapter.gguf"))
    dev, held = commands
    assert dev[dev.index("--cases") + 1] == str(eval_dir() / "dev.jsonl")
    assert dev[dev.index("--adapter") + 1] == "none"  # the base, not what thau-chat loads
    assert held[held.index("--cases") + 1] == str(eval_dir() / "holdout.jsonl")
    assert held[held.index("--adapter") + 1] == "/v/adapter.gguf"

    config.holdout_cases = "/cases/mine.jsonl"
    commands.clear()
    service_steps.default_steps(config).evaluate_holdout(None)
    assert commands[0][commands[0].index("--cases") + 1] == "/cases/mine.jsonl"
    assert (eval_dir() / "holdout.jsonl").is_file()
