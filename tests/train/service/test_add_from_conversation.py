"""``thau-train add --from-conversation ID [--turn N] [--fix TEXT]`` on a saved chat."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.train.service.conftest import write_dataset
from tests.train.service.promoted import open_service
from thau.paths import data_dir
from thau.train.cli import main
from thau.train.service import TrainingService

ROOT = Path(__file__).resolve().parents[3]
SYSTEM = "You are THAU (the chat's prompt)."


@pytest.fixture
def service(tmp_path: Path) -> TrainingService:
    svc = open_service(write_dataset(tmp_path / "dataset"), None)
    yield svc
    svc.close()


@pytest.fixture
def conversation() -> str:
    """A saved chat of two turns, as `thau-chat` writes it; its id."""
    folder = data_dir() / "conversations"
    folder.mkdir(parents=True)
    run = {
        "backend": "ollama",
        "model": "thau-135m",
        "adapter": None,
        "adapter_version": None,
        "system_prompt": SYSTEM,
    }
    doc = {
        "id": "20260101-120000-abcdef",
        "system": None,
        "messages": [
            {"role": "user", "content": "Hola"},
            {"role": "assistant", "content": "¡Hola! ¿En qué te ayudo?"},
            {"role": "user", "content": "Busca noticias de llama.cpp"},
            {"role": "assistant", "content": "No puedo buscar en internet."},
        ],
        "runs": [{"from": 0, **run}],
    }
    (folder / f"{doc['id']}.json").write_text(json.dumps(doc), "utf-8")
    return doc["id"]


def pending(service: TrainingService) -> list:
    return service.store.select("pending")


def test_a_turn_as_it_was_and_a_fixed_one(
    service: TrainingService, conversation: str, capsys: pytest.CaptureFixture
) -> None:
    assert main(["add", "--from-conversation", conversation[:12], "--turn", "1"]) == 0
    out = capsys.readouterr().out
    assert "queued example 1 for training: turn 1 as it was, 0 earlier messages kept" in out
    fix = '<TOOL:web_search>{"query": "noticias llama.cpp"}</TOOL>'
    assert main(["add", "--from-conversation", conversation, "--fix", fix]) == 0
    assert "turn 2 with the call to web_search, 2 earlier messages kept" in capsys.readouterr().out
    first, second = pending(service)
    assert first.example.messages == [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Hola"},
        {"role": "assistant", "content": "¡Hola! ¿En qué te ayudo?"},
    ]
    assert second.example.messages[-1] == {
        "role": "assistant",
        "content": '<TOOL:web_search>{"query":"noticias llama.cpp"}</TOOL>',
    }
    meta = second.example.metadata
    assert (meta["source"], meta["kind"], meta["model"], meta["turn"]) == (
        "chat",
        "fix",
        "thau-135m",
        2,
    )
    assert meta["original"] == "No puedo buscar en internet."


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["--fix", '<TOOL:web_search>{"max_results": 3}</TOOL>'], "query: Field required"),
        (["--fix", "<TOOL:web_serch>{}</TOOL>"], "unknown tool 'web_serch'"),
        (["--fix", '<TOOL:web_search>{"query": "x"</TOOL>'], "not valid JSON"),
        (["--fix", ""], "the fix is empty"),
        (["--turn", "3"], "no turn 3: this conversation has turns 1 to 2"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_stored(
    service: TrainingService,
    conversation: str,
    argv: list[str],
    reason: str,
    capsys: pytest.CaptureFixture,
) -> None:
    assert main(["add", "--from-conversation", conversation, *argv]) == 1
    assert reason in capsys.readouterr().err
    assert pending(service) == []


def test_argument_mistakes_say_what_to_do(
    service: TrainingService, conversation: str, capsys: pytest.CaptureFixture
) -> None:
    assert main(["add", "--from-conversation", "nope"]) == 1
    assert "No conversation 'nope'" in capsys.readouterr().err
    assert main(["add", "--from-conversation", conversation, "Q", "A"]) == 1
    assert "takes no QUESTION" in capsys.readouterr().err
    assert main(["add", "Q", "A", "--fix", "x"]) == 1
    assert "go with --from-conversation" in capsys.readouterr().err
    assert main(["add", "only a question"]) == 1
    assert "give QUESTION and ANSWER" in capsys.readouterr().err
    assert pending(service) == []


def test_the_command_line_as_a_script_uses_it(service: TrainingService, conversation: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "thau.train", "add", "--from-conversation", conversation]
    done = subprocess.run(
        [*cmd, "--fix", "no tool: No tengo acceso a internet; prueba con un buscador."],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "turn 2 answered without a tool" in done.stdout
    [row] = pending(service)
    assert row.example.messages[-1]["content"].startswith("No tengo acceso a internet")
