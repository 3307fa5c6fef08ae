"""A training service in the data dir whose cycles promote versions with a GGUF adapter:
the tiny test trainer and evaluator, and an export step that copies a given GGUF."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from tests.train.service.conftest import (
    BASE_METRICS,
    SYSTEM,
    QualityTrainer,
    good,
    quality_evaluate,
)
from thau.train.service import ServiceConfig, ServicePaths, Steps, TrainingService
from thau.train.service_steps import Evaluator, Exporter
from thau.train_queue import normalize


class Holdout:
    """A held-out evaluator: the base scores :data:`BASE_METRICS`, an adapter ``score``
    (changed by the test); it keeps which adapters it scored."""

    def __init__(self, score: float = 0.8) -> None:
        self.score = score
        self.seen: list[Path | None] = []

    def __call__(self, adapter: Path | None) -> dict[str, Any]:
        self.seen.append(adapter)
        if adapter is None:
            return dict(BASE_METRICS)
        s = self.score
        return {
            "n": 20,
            "decision_accuracy": s,
            "json_valid_rate": 1.0,
            "args_match_rate": s,
            "false_tool_rate": round(1 - s, 4),
        }


def copy_export(gguf: Path) -> Exporter:
    """An export step that puts a copy of ``gguf`` in the version folder."""

    def export(folder: Path, config: ServiceConfig) -> dict[str, Any]:
        shutil.copy2(gguf, folder / "adapter.gguf")
        return {"gguf_adapter": "adapter.gguf"}

    return export


def open_service(
    dataset_dir: Path,
    gguf: Path | None,
    *,
    holdout: Evaluator | None = None,
    **values: Any,
) -> TrainingService:
    """A service set up (``config.json`` written) in the data dir, as `thau-train init`
    leaves it; ``gguf`` None: its versions have no GGUF adapter."""
    config = ServiceConfig.for_size(
        "135m",
        min_new_examples=1,
        replay_ratio=2.0,
        valid_size=2,
        dataset_dir=str(dataset_dir),
        ollama=False,
        **values,
    )
    paths = ServicePaths.default()
    config.save(paths.config)
    steps = Steps(
        train=QualityTrainer(),
        evaluate=quality_evaluate,
        export=copy_export(gguf) if gguf is not None else None,
        evaluate_holdout=holdout,
    )
    return TrainingService(config, paths, steps, system_prompt=SYSTEM)


def promote(service: TrainingService, index: int = 1) -> dict[str, Any]:
    """Queue a good example and run a cycle that promotes; the new version's record."""
    service.store.add(normalize(good(index)))
    result = service.run_cycle(force=True)
    assert result.status == "promoted", result.reason
    version = service.current_version()
    assert version is not None
    return version
