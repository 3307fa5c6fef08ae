"""End to end: a correction typed in the chat reaches the queue, a cycle promotes a version
trained on it, and the next chat loads that version's adapter; a failing gate keeps it.

The chat runs as the real ``thau-chat`` in a pseudo-terminal (first against the fake
Ollama server that replays scripted replies, then on the embedded backend); the cycle
uses the tiny test trainer, whose export step copies the shipped adapter, so the one-shot
at the end really runs SmolLM2-135M with the promoted file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

from tests.chat.repl.test_pty import ANSI, TIMEOUT, Child
from tests.servers.fake_ollama import FakeOllama
from tests.train.service.promoted import Holdout, open_service
from thau.chat.backends.embedded import default_adapter_path
from thau.train.service import ServicePaths
from thau.train_queue import ExampleStore, StoredExample

ROOT = Path(__file__).resolve().parents[3]
FIX = '<TOOL:web_search>{"query": "noticias de llama.cpp"}</TOOL>'
CANONICAL = '<TOOL:web_search>{"query":"noticias de llama.cpp"}</TOOL>'  # as the queue keeps it

pytestmark = pytest.mark.slow  # the one-shot loads the real SmolLM2-135M


def child_env(tmp_path: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("THAU_", "XDG_")) and key != "OLLAMA_HOST"
    }
    env.update(
        TERM="xterm-256color",
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        XDG_DATA_HOME=str(tmp_path / "data"),  # the data dir of this test's service too
        PYTHONPATH=str(ROOT),
        PROMPT_TOOLKIT_NO_CPR="1",
        PYTHONUNBUFFERED="1",
    )
    return env


def thau_chat() -> str:
    return shutil.which("thau-chat", path=str(Path(sys.executable).parent)) or "thau-chat"


def start_chat(tmp_path: Path, *args: str) -> tuple[Child, str]:
    """``thau-chat ARGS`` in a pty, and what it said before its first prompt."""
    proc = pexpect.spawn(
        thau_chat(),
        list(args),
        env=child_env(tmp_path),
        cwd=str(tmp_path),
        dimensions=(30, 200),
        encoding="utf-8",
        codec_errors="replace",
        timeout=TIMEOUT,
    )
    chat = Child(proc, tmp_path / "data")
    return chat, chat.prompt()


def one_line(text: str) -> str:
    return " ".join(ANSI.sub("", text).split())


def pending() -> list[StoredExample]:
    store = ExampleStore(ServicePaths.default().queue)
    try:
        return store.select("pending")
    finally:
        store.close()


def test_fix_in_chat_trains_a_version_the_next_chat_loads(
    tmp_path: Path, fake_ollama: FakeOllama, dataset_dir: Path
) -> None:
    queue = ServicePaths.default().queue
    fake_ollama.script(["¡Hola! ¿En qué te ayudo?"], ["No puedo buscar en internet."])
    chat, _ = start_chat(
        tmp_path, "--backend", "ollama", "--host", fake_ollama.url, "--model", "thau-135m"
    )
    chat.say("Hola")
    chat.prompt()
    chat.say("Busca noticias de llama.cpp")
    assert "No puedo buscar" in chat.prompt()
    for bad, reason in [
        ("/fix <TOOL:web_serch>{}</TOOL>", "unknown tool 'web_serch'; available tools:"),
        ('/fix <TOOL:web_search>{"query": </TOOL>', "body is not valid JSON: Expecting value"),
        ("/fix", "the fix is empty"),
    ]:
        chat.say(bad)
        shown = one_line(chat.prompt())
        assert reason in shown and "(nothing was queued)" in shown
    assert not queue.exists()
    chat.say(f"/fix {FIX}")
    shown = one_line(chat.prompt())
    assert (
        "queued example 1 for training: turn 2 with the call to web_search, "
        "2 earlier messages kept · 1 pending · no training service yet" in shown
    )
    assert chat.finish() == 0
    conversation = chat.conversations()[-1]

    [row] = pending()
    sent = fake_ollama.chat_requests[-1]["messages"][0]
    assert sent["role"] == "system"
    assert row.example.messages == [
        {"role": "system", "content": sent["content"]},
        {"role": "user", "content": "Hola"},
        {"role": "assistant", "content": "¡Hola! ¿En qué te ayudo?"},
        {"role": "user", "content": "Busca noticias de llama.cpp"},
        {"role": "assistant", "content": CANONICAL},
    ]
    meta = row.example.metadata
    assert (meta["source"], meta["backend"], meta["model"]) == ("chat", "ollama", "thau-135m")
    assert meta["conversation"] == conversation["id"] and meta["adapter"] is None

    # `thau-train init` set up a service; a cycle trains on the chat's example and promotes
    shipped = default_adapter_path()
    assert shipped is not None
    holdout = Holdout(0.8)
    service = open_service(dataset_dir, shipped, holdout=holdout)
    promoted = service.run_cycle(force=True)
    assert promoted.status == "promoted" and promoted.version == "thau-135m-v1"
    rows = service.steps.train.rows[0]  # type: ignore[attr-defined]
    assert row.example.messages in [r["messages"] for r in rows]
    v1 = service.current_version()
    gguf = service.version_folder(v1) / "adapter.gguf"

    # a new chat loads the promoted adapter, says so, and /model shows its file
    chat, said = start_chat(tmp_path, "--backend", "embedded", "--model", "thau-135m")
    assert "adapter: thau-135m-v1 (promoted 20" in one_line(said)
    chat.say("/model")
    shown = "".join(ANSI.sub("", chat.prompt()).split())
    assert "adapter:thau-135m-v1(promoted" in shown and str(gguf) in shown
    assert chat.finish() == 0

    # ...and so does the one-shot, whose JSON names the file and the version
    cmd = [
        thau_chat(),
        "--backend",
        "embedded",
        "--model",
        "thau-135m",
        "--temperature",
        "0",
        "--json",
    ]
    done = subprocess.run(
        [*cmd, "--message", "Hola"],
        capture_output=True,
        text=True,
        env=child_env(tmp_path),
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["adapter"] == str(gguf) and doc["adapter_version"] == "thau-135m-v1"
    assert doc["error"] is None and doc["answer"]

    # a correction from a script; the candidate fits dev but loses on holdout: refused
    add = [sys.executable, "-m", "thau.train", "add", "--from-conversation", conversation["id"]]
    queued = subprocess.run(
        [*add, "--turn", "1"], capture_output=True, text=True, env=child_env(tmp_path)
    )
    assert queued.returncode == 0, queued.stderr
    assert "queued example 2 for training: turn 1 as it was" in queued.stdout
    holdout.score = 0.6
    refused = service.run_cycle(force=True)
    assert refused.status == "refused" and refused.reason.startswith("held-out evaluation")
    assert refused.metrics["decision_accuracy"] == 1.0  # dev alone would have promoted it
    service.close()

    chat, said = start_chat(tmp_path, "--backend", "embedded", "--model", "thau-135m")
    assert "adapter: thau-135m-v1 (promoted" in one_line(said)
    assert chat.finish() == 0
    chat, said = start_chat(
        tmp_path, "--backend", "embedded", "--model", "thau-135m", "--adapter", "shipped"
    )
    assert "adapter: thau-135m-lora.gguf (shipped)" in one_line(said)
    assert chat.finish() == 0
