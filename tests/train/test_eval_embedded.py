"""End to end: the real SmolLM2-135M base (no adapter) through the evaluator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from thau.chat.backends.embedded import EmbeddedBackend, default_model_path
from thau.chat.config import load_settings
from thau.chat.session import build_session
from thau.resources import datasets_dir
from thau.train import evaluate
from thau.train.dataset import builtin_registry

pytestmark = pytest.mark.slow


@pytest.mark.timeout(900)  # a loaded shared CPU is slow; one thread copes best
def test_base_model_on_five_dev_cases(tmp_path: Path) -> None:
    cases = evaluate.load_cases(datasets_dir() / "eval" / "dev.jsonl")
    with_tool = [c for c in cases if c.expected_tool]
    picked = with_tool[:3] + [c for c in cases if not c.expected_tool][:2]
    registry = builtin_registry()
    backend = EmbeddedBackend(default_model_path(), None, n_ctx=2048, n_threads=1)
    assert backend.adapter_path is None
    agent = evaluate.make_agent(backend, registry, max_tokens=32)
    # the system prompt thau-chat gives this model (the base, no adapter)
    settings = load_settings(backend="embedded", model=str(default_model_path()))
    chat = build_session(settings, registry=registry).agent
    assert agent.system_prompt() == chat.system_prompt()

    result, outcomes = evaluate.evaluate(agent, picked)

    assert result["n"] == 5 and [o.error for o in outcomes] == [None] * 5
    assert set(result["by_lang"]) <= {"es", "en"}
    assert sum(sum(row.values()) for row in result["confusion"].values()) == 5
    for key in evaluate.RATES:
        value = result[key]
        assert value is None or 0.0 <= value <= 1.0, key
    assert all(o.reply or o.predicted for o in outcomes)  # the model really answered
    paths = evaluate.write_outputs(result, outcomes, tmp_path, "base", "SmolLM2 base")
    assert json.loads(paths[0].read_text("utf-8")) == result
    assert paths[1].stat().st_size > 0
